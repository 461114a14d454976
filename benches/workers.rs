//! Several workers on one PostgreSQL store: 200 integrations, each with a
//! small daily file (300 accounts) waiting in its own folder, synced by one
//! `dropsync daemon`, then by three started together on the same config
//! (each in a directory of its own, as on three machines). Times, from the
//! first daemon's start, until the store's history holds every run, and
//! checks that each file was applied once.
//!
//! `scripts/bench workers` runs it. WORKERS_INTEGRATIONS (200),
//! WORKERS_ROWS (300 rows a file), WORKERS_COUNTS (`1,3`), BENCH_RUNS (3,
//! interleaved) and BENCH_BIN (the dropsync measured; a release build is
//! the one worth measuring) change what runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "shared/cluster.rs"]
mod cluster;
use cluster::Cluster;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The config every worker reads: `integrations` folder integrations of
/// the accounts dataset, each watching its own folder under `drops`.
fn config(url: &str, drops: &Path, integrations: u64) -> String {
    let mut text =
        format!("[store]\nurl = \"{url}\"\nsslmode = \"disable\"\n\n[daemon]\nsettle_secs = 1\n\n");
    for i in 0..integrations {
        text.push_str(&format!(
            "[integrations.feed_{i:03}]\ndataset = \"accounts\"\nsource = {{ type = \"folder\", path = \"{}\" }}\npattern = \"accounts_{{date:%Y%m%d}}.csv\"\n\n",
            drops.join(format!("feed_{i:03}")).display()
        ));
    }
    text
}

/// One file a folder: `rows` accounts, ten parents with their products.
fn write_drops(drops: &Path, integrations: u64, rows: u64) {
    for i in 0..integrations {
        let dir = drops.join(format!("feed_{i:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = String::from("AccountID,ParentID,Name,Type,Plan,Seats,CreatedDate\n");
        for r in 0..rows {
            let parent = if r % 10 == 0 {
                String::new()
            } else {
                format!("F{i}-{}", r - r % 10)
            };
            let kind = if parent.is_empty() {
                "parent"
            } else {
                "product"
            };
            text.push_str(&format!(
                "F{i}-{r},{parent},Account {r},{kind},pro,{},2020-01-01\n",
                r % 97
            ));
        }
        std::fs::write(dir.join("accounts_20261101.csv"), text).unwrap();
    }
}

/// Starts `n` daemons on the same config (each in its own directory) and
/// waits until the store records `integrations` finished runs. Returns the
/// wall time and how many runs each daemon finished.
fn run_workers(
    bin: &Path,
    cluster: &Cluster,
    root: &Path,
    drops: &Path,
    integrations: u64,
    n: usize,
    db: &str,
) -> (Duration, Vec<usize>) {
    cluster.admin(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    cluster.admin(&format!("CREATE DATABASE {db}"));
    let text = config(&cluster.url(db), drops, integrations);
    let started = Instant::now();
    let mut daemons: Vec<(Child, PathBuf)> = Vec::new();
    for w in 0..n {
        let dir = root.join(format!("{db}-worker{w}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("dropsync.toml"), &text).unwrap();
        let log = dir.join("daemon.log");
        let child = Command::new(bin)
            .arg("--config")
            .arg(dir.join("dropsync.toml"))
            .arg("daemon")
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("a daemon starts");
        daemons.push((child, log));
    }
    let mut client = cluster.connect(db);
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        // The tables appear with the first daemon's migrations.
        let done: i64 = client
            .query_one(
                "SELECT CASE WHEN to_regclass('dropsync_runs') IS NULL THEN 0
                 ELSE (SELECT count(*) FROM dropsync_runs WHERE status <> 'running') END",
                &[],
            )
            .map(|r| r.get(0))
            .unwrap_or(0);
        if done >= integrations as i64 {
            break;
        }
        for (child, log) in &mut daemons {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "a daemon exited ({status}): {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        }
        assert!(Instant::now() < deadline, "the runs did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    let wall = started.elapsed();
    let applied: Vec<(String, i64)> = client
        .query(
            "SELECT status, count(*) FROM dropsync_runs GROUP BY status",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        applied,
        vec![("success".to_string(), integrations as i64)],
        "every file applied once"
    );
    let mut shares = Vec::new();
    for (child, log) in &mut daemons {
        // SAFETY: signals a daemon this bench started.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let _ = child.wait();
        let text = std::fs::read_to_string(&*log).unwrap_or_default();
        shares.push(text.matches("run finished").count());
    }
    cluster.admin(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    (wall, shares)
}

fn main() {
    let integrations = env_or("WORKERS_INTEGRATIONS", 200);
    let rows = env_or("WORKERS_ROWS", 300);
    let runs = env_or("BENCH_RUNS", 3) as usize;
    let counts: Vec<usize> = std::env::var("WORKERS_COUNTS")
        .unwrap_or_else(|_| "1,3".into())
        .split(',')
        .map(|s| s.trim().parse().expect("WORKERS_COUNTS: worker counts"))
        .collect();
    let bin = std::env::var_os("BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_dropsync")));
    assert!(bin.is_file(), "no dropsync binary at {}", bin.display());
    let temp = tempfile::tempdir().expect("temp dir");
    let root = temp.path().to_path_buf();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cluster = Cluster::start(&root);
    println!(
        "PostgreSQL {} on 127.0.0.1:{}; dropsync {}; {integrations} integrations, {rows} rows a file; load average {}",
        cluster.server_version(),
        cluster.port,
        bin.display(),
        load_average()
    );
    let drops = root.join("drops");
    write_drops(&drops, integrations, rows);
    // Files older than the daemons' settle time are taken at once.
    std::thread::sleep(Duration::from_secs(2));

    let mut walls: Vec<Vec<Duration>> = vec![Vec::new(); counts.len()];
    for run in 0..runs {
        for (c, &n) in counts.iter().enumerate() {
            let (wall, shares) = run_workers(
                &bin,
                &cluster,
                &root,
                &drops,
                integrations,
                n,
                &format!("workers{n}_run{run}"),
            );
            println!(
                "run {run}, {n} worker(s): {:.2} s; runs finished per worker {shares:?}",
                wall.as_secs_f64()
            );
            walls[c].push(wall);
        }
    }
    let median = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        v[v.len() / 2]
    };
    println!("\n{integrations} integrations, {runs} runs each, interleaved (s):");
    for (c, &n) in counts.iter().enumerate() {
        let all: Vec<String> = walls[c]
            .iter()
            .map(|t| format!("{:.2}", t.as_secs_f64()))
            .collect();
        println!(
            "  {n} worker(s): {}  median {:.2} s",
            all.join(" "),
            median(&walls[c]).as_secs_f64()
        );
    }
    if counts.len() >= 2 {
        let first = median(&walls[0]).as_secs_f64();
        let last = median(&walls[counts.len() - 1]).as_secs_f64();
        println!(
            "median wall time: {} worker(s) {first:.2} s, {} worker(s) {last:.2} s: {:.2}x faster ({} cores on this machine)",
            counts[0],
            counts[counts.len() - 1],
            first / last,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
    }
    println!("load average at the end: {}", load_average());
}

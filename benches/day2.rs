//! The day-2 benchmark: a 1,000,000-row accounts snapshot is applied, then
//! the next day's export (1% updated, 0.5% deleted, 0.5% inserted) is synced
//! by the real binary: validate + diff + apply + history. Next to it, in the
//! same run and interleaved with it, DuckDB merely loads the same CSV into a
//! typed table (read_csv), the floor any CSV sync stands on.
//!
//! `scripts/bench` runs it. BENCH_ROWS and BENCH_RUNS change the size and
//! the number of timed runs. Prints medians, the ratio, and peak memory.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const PLANS: [&str; 4] = ["free", "starter", "pro", "enterprise"];

/// A small deterministic generator, so every run benchmarks the same files.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Account {
    id: u64,
    parent: Option<u64>,
    seats: u64,
    plan: usize,
    day: u64,
}

fn accounts(rows: u64, rng: &mut Rng) -> Vec<Account> {
    (0..rows)
        .map(|id| {
            // One account in ten is a parent; products hang under the
            // nearest parent before them.
            let parent = (id % 10 != 0).then_some(id - id % 10);
            Account {
                id,
                parent,
                seats: rng.below(5000),
                plan: rng.below(4) as usize,
                day: rng.below(3000),
            }
        })
        .collect()
}

fn write_csv(path: &Path, rows: &[Account]) -> u64 {
    let mut out = BufWriter::new(std::fs::File::create(path).expect("create bench file"));
    writeln!(out, "AccountID,ParentID,Name,Type,Plan,Seats,CreatedDate").unwrap();
    let epoch = chrono::NaiveDate::from_ymd_opt(2017, 1, 1).unwrap();
    for a in rows {
        let parent = a.parent.map(|p| format!("ACC{p:07}")).unwrap_or_default();
        let kind = if a.parent.is_some() {
            "product"
        } else {
            "parent"
        };
        let created = epoch + chrono::Days::new(a.day);
        writeln!(
            out,
            "ACC{:07},{parent},Account {:07} Group,{kind},{},{},{created}",
            a.id, a.id, PLANS[a.plan], a.seats
        )
        .unwrap();
    }
    out.flush().unwrap();
    std::fs::metadata(path).unwrap().len()
}

/// Day 2: 1% of rows updated, 0.5% deleted (products only, so no parent
/// goes missing), 0.5% inserted.
fn next_day(mut rows: Vec<Account>, rng: &mut Rng) -> Vec<Account> {
    let n = rows.len() as u64;
    let mut deleted = vec![false; rows.len()];
    let mut to_delete = n / 200;
    while to_delete > 0 {
        let i = rng.below(n) as usize;
        if rows[i].parent.is_some() && !deleted[i] {
            deleted[i] = true;
            to_delete -= 1;
        }
    }
    let mut to_update = n / 100;
    while to_update > 0 {
        let i = rng.below(n) as usize;
        if !deleted[i] {
            rows[i].seats += 1 + rng.below(50);
            to_update -= 1;
        }
    }
    let mut kept: Vec<Account> = rows
        .into_iter()
        .zip(deleted)
        .filter(|(_, d)| !d)
        .map(|(a, _)| a)
        .collect();
    for k in 0..n / 200 {
        let id = n + k;
        kept.push(Account {
            id,
            parent: Some(rng.below(n / 10) * 10),
            seats: rng.below(5000),
            plan: rng.below(4) as usize,
            day: rng.below(3000),
        });
    }
    kept
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs a command, returning its wall time and peak resident memory (KiB).
// The child is reaped by wait4 rather than Child::wait, to read its rusage.
#[allow(clippy::zombie_processes)]
fn run_measured(cmd: &mut Command) -> (Duration, i64, std::process::ExitStatus) {
    let start = Instant::now();
    let child = cmd.spawn().expect("start dropsync");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child; `usage` is a valid out-pointer.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4 failed");
    let elapsed = start.elapsed();
    use std::os::unix::process::ExitStatusExt;
    (
        elapsed,
        usage.ru_maxrss,
        std::process::ExitStatus::from_raw(status),
    )
}

fn main() {
    let rows: u64 = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_dropsync"));
    let dir = tempfile::tempdir().expect("temp dir");
    let drops = dir.path().join("drops");
    std::fs::create_dir_all(&drops).unwrap();

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let day1 = accounts(rows, &mut rng);
    let day1_path = drops.join("accounts_20261101.csv");
    let day1_size = write_csv(&day1_path, &day1);
    let day2 = next_day(day1, &mut rng);
    let day2_path = drops.join("accounts_20261102.csv");
    let day2_size = write_csv(&day2_path, &day2);
    println!(
        "day 1: {rows} rows, {:.1} MB; day 2: {} rows, {:.1} MB",
        day1_size as f64 / 1e6,
        day2.len(),
        day2_size as f64 / 1e6
    );

    let config = |store: &Path| {
        let path = store.with_extension("toml");
        std::fs::write(
            &path,
            format!(
                "[store]\npath = \"{}\"\nstaging = \"{}\"\n\n[integrations.accounts]\ndataset = \"accounts\"\nsource = {{ type = \"folder\", path = \"{}\" }}\npattern = \"accounts_{{date:%Y%m%d}}.csv\"\n",
                store.display(),
                dir.path().join("staging").display(),
                drops.display()
            ),
        )
        .unwrap();
        path
    };
    let ingest = |cfg: &Path, file: &Path| {
        let mut cmd = Command::new(&bin);
        cmd.arg("--config")
            .arg(cfg)
            .arg("ingest")
            .arg("accounts")
            .arg(file);
        cmd.stdout(std::process::Stdio::null());
        cmd
    };

    // Day 1, once; every timed run starts from a copy of this store.
    let base = dir.path().join("day1.duckdb");
    let base_cfg = config(&base);
    let (t, rss, status) = run_measured(&mut ingest(&base_cfg, &day1_path));
    assert!(status.success(), "day 1 failed");
    println!(
        "day 1 sync (initial load): {:.2} s, peak RSS {:.0} MB",
        t.as_secs_f64(),
        rss as f64 / 1024.0
    );

    let columns = "{'AccountID': 'VARCHAR', 'ParentID': 'VARCHAR', 'Name': 'VARCHAR', 'Type': 'VARCHAR', 'Plan': 'VARCHAR', 'Seats': 'BIGINT', 'CreatedDate': 'DATE'}";
    let mut sync_times = Vec::new();
    let mut load_times = Vec::new();
    let mut peak = 0;
    for i in 0..runs {
        // Baseline: DuckDB loads the day-2 CSV into a typed table in a new file.
        let load_db = dir.path().join(format!("load{i}.duckdb"));
        let conn = duckdb::Connection::open(&load_db).unwrap();
        let start = Instant::now();
        conn.execute_batch(&format!(
            "CREATE TABLE accounts AS SELECT * FROM read_csv('{}', header = true, columns = {columns}, parallel = true)",
            day2_path.display()
        ))
        .unwrap();
        load_times.push(start.elapsed());
        drop(conn);
        let _ = std::fs::remove_file(&load_db);

        // dropsync: the full day-2 sync, as a user runs it.
        let store = dir.path().join(format!("run{i}.duckdb"));
        std::fs::copy(&base, &store).unwrap();
        let cfg = config(&store);
        let (t, rss, status) = run_measured(&mut ingest(&cfg, &day2_path));
        assert!(status.success(), "day 2 sync failed");
        sync_times.push(t);
        peak = peak.max(rss);
        let _ = std::fs::remove_file(&store);
    }
    let sync = median(sync_times.clone());
    let load = median(load_times.clone());
    let secs = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "duckdb read_csv load, {runs} runs (s): {}",
        secs(&load_times)
    );
    println!(
        "dropsync day-2 sync, {runs} runs (s): {}",
        secs(&sync_times)
    );
    println!(
        "median: dropsync day-2 sync {:.2} s, duckdb load {:.2} s, ratio {:.2}x (target <= 1.5x)",
        sync.as_secs_f64(),
        load.as_secs_f64(),
        sync.as_secs_f64() / load.as_secs_f64()
    );
    println!(
        "peak RSS of the day-2 sync: {:.0} MB (target < 1024 MB)",
        peak as f64 / 1024.0
    );

    // One more day-2 run with stage timings in the log, for where time goes.
    let store = dir.path().join("stages.duckdb");
    std::fs::copy(&base, &store).unwrap();
    let cfg = config(&store);
    let out = ingest(&cfg, &day2_path)
        .env("DROPSYNC_LOG", "dropsync=debug")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    for line in log
        .lines()
        .filter(|l| l.contains("stage") || l.contains("step"))
    {
        println!("  {}", line.trim());
    }
}

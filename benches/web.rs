//! The web console at size: 200 integrations, 100,000 runs in the history
//! and one run with 1,000,000 rejected rows, served by the real binary
//! (`dropsync web`). Times the overview, an integration's history page, the
//! JSON run list, a deep page of rejected rows and the whole CSV download.
//!
//! `scripts/bench web` runs it. WEB_RUNS, WEB_INTEGRATIONS, WEB_ERRORS and
//! BENCH_RUNS change the sizes and the number of timed requests.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let integrations = env_or("WEB_INTEGRATIONS", 200);
    let runs = env_or("WEB_RUNS", 100_000);
    let errors = env_or("WEB_ERRORS", 1_000_000);
    let timed = env_or("BENCH_RUNS", 10) as usize;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = dir.path();

    let mut config = String::new();
    for i in 0..integrations {
        config.push_str(&format!(
            "[integrations.feed_{i:03}]\ndataset = \"accounts\"\nsource = {{ type = \"folder\", path = \"drops\" }}\n\
             pattern = \"feed_{i:03}_{{date:%Y%m%d}}.csv\"\nschedule = \"daily 02:00\"\nexpect = \"daily by 07:00\"\n\n"
        ));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    config.push_str(&format!("[web]\nlisten = \"127.0.0.1:{port}\"\n"));
    std::fs::create_dir_all(root.join("drops")).unwrap();
    std::fs::write(root.join("dropsync.toml"), &config).unwrap();

    let started = Instant::now();
    let store_path = root.join("dropsync.duckdb");
    {
        let store = dropsync::store::Store::open(&store_path).expect("a store");
        drop(store);
        let conn = duckdb::Connection::open(&store_path).unwrap();
        conn.execute_batch(&format!(
            "INSERT INTO dropsync_runs (execution_id, integration, dataset, mode, trigger, status, message,
                file_name, business_date, input_rows, success_rows, error_rows, inserted, updated, deleted,
                started_at, completed_at, attempt)
             SELECT printf('run-%08d', i), printf('feed_%03d', i % {integrations}), 'accounts', 'snapshot',
                'schedule', CASE WHEN i % 17 = 0 THEN 'partial' WHEN i % 53 = 0 THEN 'failed' ELSE 'success' END,
                CASE WHEN i % 17 = 0 THEN '3 rows rejected' END,
                printf('feed_%03d_%s.csv', i % {integrations}, strftime(DATE '2026-11-25' - CAST(i // {integrations} AS INTEGER), '%Y%m%d')),
                DATE '2026-11-25' - CAST(i // {integrations} AS INTEGER), 1000, 997, 3, 5, 7, 1,
                TIMESTAMP '2026-11-25 02:00:00' - to_seconds(i * 60), TIMESTAMP '2026-11-25 02:00:05' - to_seconds(i * 60), 1
             FROM range({runs}) t(i);
             INSERT INTO dropsync_row_errors
             SELECT 'run-00000000', i, i + 2, printf('A%d', i), 'Seats', printf('`x%d` is not an integer', i),
                printf('A%d,,<b>Name %d</b>,parent,pro,x%d,2020-01-01', i, i, i)
             FROM range({errors}) t(i);"
        ))
        .expect("generate the history");
    }
    println!(
        "generated {integrations} integrations, {runs} runs, {errors} rejected rows in {:.1?}",
        started.elapsed()
    );

    let bin = PathBuf::from(env!("CARGO_BIN_EXE_dropsync"));
    let mut child = Command::new(&bin)
        .arg("--config")
        .arg(root.join("dropsync.toml"))
        .arg("web")
        .current_dir(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dropsync web starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the console did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let base = format!("http://127.0.0.1:{port}");
    let targets = [
        ("overview", "/".to_string()),
        ("integration history", "/integrations/feed_007".to_string()),
        (
            "integration history, page 10, partial",
            "/integrations/feed_007?status=partial&offset=450".to_string(),
        ),
        ("api runs", "/api/runs?limit=100&offset=50000".to_string()),
        (
            "run, rejected rows deep page",
            "/runs/run-00000000?errors_offset=900000".to_string(),
        ),
        (
            "run, rejected rows searched",
            "/runs/run-00000000?q=Name%20999999".to_string(),
        ),
    ];
    for (what, path) in &targets {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..timed {
            let t = Instant::now();
            let mut reply = agent.get(format!("{base}{path}")).call().unwrap();
            assert_eq!(reply.status().as_u16(), 200, "{path}");
            bytes = reply.body_mut().read_to_vec().unwrap().len();
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "{what:<40} median {:>8.1?}  max {:>8.1?}  ({bytes} bytes)",
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
    let t = Instant::now();
    let mut reply = agent
        .get(format!("{base}/api/runs/run-00000000/errors.csv"))
        .call()
        .unwrap();
    let mut reader = reply.body_mut().with_config().limit(u64::MAX).reader();
    let size = std::io::copy(&mut reader, &mut std::io::sink()).unwrap();
    println!(
        "{:<40} {:>8.1?}  ({size} bytes)",
        "csv of 1M rejected rows",
        t.elapsed()
    );
    let rss = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM unknown")
        .split_whitespace()
        .skip(1)
        .collect::<Vec<_>>()
        .join(" ");
    println!("console peak memory (VmHWM): {rss}");
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

//! The web console at size: 200 integrations, 100,000 runs in the history
//! and one run with 1,000,000 rejected rows, served by the real binary
//! (`dropsync web`). Times the overview, an integration's history page, the
//! JSON run list, a deep page of rejected rows and the whole CSV download.
//!
//! `scripts/bench web` runs it. WEB_RUNS, WEB_INTEGRATIONS, WEB_ERRORS and
//! BENCH_RUNS change the sizes and the number of timed requests; WEB_BIN
//! serves the console with another build of dropsync, to compare.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median time of `times` calls of `each`.
fn median(times: usize, mut each: impl FnMut()) -> Duration {
    let mut all: Vec<Duration> = (0..times.max(1))
        .map(|_| {
            let t = Instant::now();
            each();
            t.elapsed()
        })
        .collect();
    all.sort();
    all[all.len() / 2]
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

    // Baselines, in-process on the same store before the console opens it:
    // the cards' history read one integration at a time (as the overview
    // did) next to the batched read it does now, and DuckDB's own COPY of
    // the 1M rejected rows to CSV next to the console's streamed download.
    {
        let store = dropsync::store::Store::open_read_only(&store_path).expect("the store");
        let since = chrono::NaiveDate::from_ymd_opt(2026, 11, 17)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        let names: Vec<String> = (0..integrations).map(|i| format!("feed_{i:03}")).collect();
        let one_at_a_time = median(timed.min(3), || {
            for name in &names {
                store.runs(Some(name), 1).unwrap();
                store.arrivals(name, since).unwrap();
                store
                    .undelivered(name, dropsync::notify::DeliveryKind::Alert)
                    .unwrap();
            }
        });
        let wanted: Vec<_> = names.iter().map(|n| (n.clone(), since)).collect();
        let batched = median(timed, || {
            store.glances(&wanted).unwrap();
        });
        println!(
            "{:<40} median {one_at_a_time:>8.1?}  (before: one integration at a time)",
            "cards' history, per integration"
        );
        println!(
            "{:<40} median {batched:>8.1?}  (now: all integrations at once)",
            "cards' history, batched"
        );
        drop(store);
        let conn = duckdb::Connection::open(&store_path).unwrap();
        let out = root.join("copy.csv");
        let copy = median(timed.min(3), || {
            conn.execute_batch(&format!(
                "COPY (SELECT line, record_key, field, message, raw FROM dropsync_row_errors
                   WHERE execution_id = 'run-00000000' ORDER BY position) TO '{}' (HEADER)",
                out.display()
            ))
            .unwrap();
        });
        let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::remove_file(&out);
        println!(
            "{:<40} median {copy:>8.1?}  ({size} bytes; baseline for the CSV download)",
            "duckdb COPY of 1M rejected rows"
        );
    }

    // WEB_BIN serves the console with another build (an older one, to
    // compare against).
    let bin = std::env::var_os("WEB_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_dropsync")));
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
        (
            "stylesheet (round-trip floor)",
            "/assets/style.css".to_string(),
        ),
        ("overview", "/".to_string()),
        ("api integrations", "/api/integrations".to_string()),
        ("integration history", "/integrations/feed_007".to_string()),
        (
            "integration history, page 10, partial",
            "/integrations/feed_007?status=partial&offset=450".to_string(),
        ),
        ("api runs", "/api/runs?limit=100&offset=50000".to_string()),
        (
            "run, rejected rows first page",
            "/runs/run-00000000".to_string(),
        ),
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
        let mut bytes = 0;
        let time = median(timed, || {
            let mut reply = agent.get(format!("{base}{path}")).call().unwrap();
            assert_eq!(reply.status().as_u16(), 200, "{path}");
            bytes = reply.body_mut().read_to_vec().unwrap().len();
        });
        println!("{what:<40} median {time:>8.1?}  ({bytes} bytes)");
    }
    let mut size = 0;
    let csv = median(timed.min(3), || {
        let mut reply = agent
            .get(format!("{base}/api/runs/run-00000000/errors.csv"))
            .call()
            .unwrap();
        let mut reader = reply.body_mut().with_config().limit(u64::MAX).reader();
        size = std::io::copy(&mut reader, &mut std::io::sink()).unwrap();
    });
    println!(
        "{:<40} median {csv:>8.1?}  ({size} bytes)",
        "errors.csv of 1M rejected rows"
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

//! Several `dropsync daemon` workers on one PostgreSQL store, as on several
//! machines: each worker has its own directory (config, socket, staging),
//! all read the same drop folders and share the store. They split the
//! integrations, run each schedule slot once, and a worker killed with
//! SIGKILL mid-run has its integration taken over by another: nothing lost,
//! nothing applied twice.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{ACCOUNTS_HEADER, BIN, PgDatabase, pg_cluster};

/// A shared PostgreSQL store, drop folders, and the workers' directories.
struct Fleet {
    _dir: tempfile::TempDir,
    root: PathBuf,
    pg: PgDatabase,
    config: String,
}

impl Fleet {
    /// `integrations` configs (TOML tables), on a fresh database.
    fn new(integrations: &str) -> Fleet {
        let dir = tempfile::Builder::new()
            .prefix("dropsync-workers-")
            .tempdir()
            .unwrap();
        let root = dir.path().to_path_buf();
        let pg = PgDatabase::new();
        let config = format!(
            "[store]\nurl = \"{}\"\npassword_file = \"pg.pass\"\nsslmode = \"disable\"\n\n[daemon]\nsettle_secs = 1\n\n{}",
            pg.url(),
            integrations.replace("@DROPS@", &root.join("drops").display().to_string())
        );
        Fleet {
            _dir: dir,
            root,
            pg,
            config,
        }
    }

    /// The directory of worker `n`: its config, its password file.
    fn worker_dir(&self, n: usize) -> PathBuf {
        let dir = self.root.join(format!("worker{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("dropsync.toml"), &self.config).unwrap();
        std::fs::write(dir.join("pg.pass"), format!("{}\n", pg_cluster().password)).unwrap();
        dir
    }

    fn drop_file(&self, integration: &str, name: &str, content: &str) {
        let dir = self.root.join("drops").join(integration);
        std::fs::create_dir_all(&dir).unwrap();
        // Written aside and renamed in, as a careful sender does.
        let aside = dir.join(format!(".incoming-{name}"));
        std::fs::write(&aside, content).unwrap();
        std::fs::rename(&aside, dir.join(name)).unwrap();
    }

    fn start(&self, n: usize) -> Worker {
        Worker::start(&self.worker_dir(n))
    }

    /// Waits until `n` runs succeeded; on timeout, says what the store and
    /// the workers' logs hold.
    #[track_caller]
    fn wait_for_successes(&self, n: usize, workers: &[Worker], what: &str) {
        let deadline = Instant::now() + Duration::from_secs(300);
        while self.count("SELECT count(*) FROM dropsync_runs WHERE status = 'success'") < n as i64 {
            if Instant::now() > deadline {
                let runs = self.rows(
                    "SELECT integration, status, trigger, coalesce(message, '') FROM dropsync_runs ORDER BY started_at",
                );
                let logs: Vec<String> = workers
                    .iter()
                    .map(|w| {
                        let log = w.log();
                        let lines: Vec<&str> = log.lines().collect();
                        lines[lines.len().saturating_sub(30)..].join("\n")
                    })
                    .collect();
                panic!(
                    "waited for {what}: runs {runs:?}\nlogs:\n{}",
                    logs.join("\n----\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn count(&self, sql: &str) -> i64 {
        self.pg.client().query_one(sql, &[]).unwrap().get(0)
    }

    fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        self.pg
            .client()
            .simple_query(sql)
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).unwrap_or("").to_string())
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    }
}

/// A `dropsync daemon`, stopped with SIGTERM when dropped.
struct Worker {
    child: Option<Child>,
    log: PathBuf,
    dir: PathBuf,
}

impl Worker {
    fn start(dir: &Path) -> Worker {
        let socket = dir.join("dropsync.sock");
        let _ = std::fs::remove_file(&socket);
        let log = dir.join("daemon.log");
        let child = Command::new(BIN)
            .arg("--config")
            .arg(dir.join("dropsync.toml"))
            .arg("daemon")
            .current_dir(dir)
            .env("DROPSYNC_LOG", "dropsync=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let worker = Worker {
            child: Some(child),
            log,
            dir: dir.to_path_buf(),
        };
        wait_for(Duration::from_secs(60), "a worker's socket", || {
            socket.exists()
        });
        worker
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The integrations whose runs this worker finished.
    fn finished(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("run finished"))
            .filter_map(|l| {
                let at = l.find("integration=")? + "integration=".len();
                Some(
                    l[at..]
                        .split_whitespace()
                        .next()?
                        .trim_matches('"')
                        .to_string(),
                )
            })
            .collect()
    }

    fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }

    fn status(&self) -> serde_json::Value {
        let out = Command::new(BIN)
            .arg("--config")
            .arg(self.dir.join("dropsync.toml"))
            .args(["status", "--json"])
            .current_dir(&self.dir)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status --json: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.wait();
        }
    }
}

#[track_caller]
fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `n` folder integrations `feed_00`.. of the accounts dataset, each
/// reading its own folder under the shared drops.
fn feeds(n: usize, extra: &str) -> String {
    (0..n)
        .map(|i| {
            format!(
                "[integrations.feed_{i:02}]\ndataset = \"accounts\"\nsource = {{ type = \"folder\", path = \"@DROPS@/feed_{i:02}\" }}\npattern = \"accounts_{{date:%Y%m%d}}.csv\"\nmax_delete_ratio = 1.0\n{extra}\n"
            )
        })
        .collect()
}

/// `rows` parent accounts, keyed `{prefix}{i}`.
fn accounts_file(prefix: &str, rows: usize) -> String {
    let mut s = ACCOUNTS_HEADER.to_string();
    for i in 0..rows {
        s.push_str(&format!(
            "{prefix}{i},,Account {i},parent,pro,{},2020-01-01\n",
            i % 100
        ));
    }
    s
}

/// Three workers started on the same config split the integrations whose
/// files arrive: every file is applied once, by one worker, and more than
/// one worker does the work. Their first runs all create the one
/// `accounts` table at once: they take turns (it failed one run or two with
/// "duplicate key value violates unique constraint pg_type_typname_nsp_index"
/// before they did).
#[test]
fn three_workers_split_the_integrations_and_apply_each_file_once() {
    const FEEDS: usize = 24;
    let fleet = Fleet::new(&feeds(FEEDS, ""));
    for i in 0..FEEDS {
        std::fs::create_dir_all(fleet.root.join(format!("drops/feed_{i:02}"))).unwrap();
    }
    let workers: Vec<Worker> = (1..=3).map(|n| fleet.start(n)).collect();
    for i in 0..FEEDS {
        fleet.drop_file(
            &format!("feed_{i:02}"),
            "accounts_20260101.csv",
            &accounts_file(&format!("F{i}-"), 200),
        );
    }
    fleet.wait_for_successes(FEEDS, &workers, "every file applied");
    // Late duplicates would show within a few sweeps.
    std::thread::sleep(Duration::from_secs(3));
    let runs = fleet.rows(
        "SELECT integration, status, count(*), string_agg(coalesce(message, ''), ' | ') FROM dropsync_runs GROUP BY integration, status ORDER BY integration",
    );
    assert_eq!(
        runs.len(),
        FEEDS,
        "one kind of run per integration: {runs:?}"
    );
    assert!(
        runs.iter().all(|r| r[1] == "success" && r[2] == "1"),
        "each file applied once: {runs:?}"
    );
    assert_eq!(
        fleet.count("SELECT count(*) FROM accounts"),
        (FEEDS * 200) as i64,
        "every row once"
    );
    let shares: Vec<Vec<String>> = workers.iter().map(Worker::finished).collect();
    assert_eq!(
        shares.iter().map(Vec::len).sum::<usize>(),
        FEEDS,
        "each run finished by exactly one worker: {shares:?}"
    );
    assert!(
        shares.iter().filter(|s| !s.is_empty()).count() >= 2,
        "the work was split: {shares:?}"
    );
}

/// A schedule slot missed while every worker was down is run once, by one
/// of the three workers that start together, and recorded as run.
#[test]
fn a_due_schedule_slot_runs_once_among_several_workers() {
    const FEEDS: usize = 8;
    let fleet = Fleet::new(&feeds(FEEDS, "schedule = \"daily 02:00\"\n"));
    for i in 0..FEEDS {
        std::fs::create_dir_all(fleet.root.join(format!("drops/feed_{i:02}"))).unwrap();
    }
    // A first worker records when the schedules were first looked at.
    drop(fleet.start(1));
    fleet
        .pg
        .client()
        .batch_execute("UPDATE dropsync_schedule SET last_fired = last_fired - INTERVAL '3 days'")
        .unwrap();
    for i in 0..FEEDS {
        fleet.drop_file(
            &format!("feed_{i:02}"),
            "accounts_20260101.csv",
            &accounts_file(&format!("S{i}-"), 50),
        );
    }
    let workers: Vec<Worker> = (1..=3).map(|n| fleet.start(n)).collect();
    fleet.wait_for_successes(FEEDS, &workers, "every slot run");
    std::thread::sleep(Duration::from_secs(6));
    let runs = fleet.rows(
        "SELECT integration, trigger, count(*) FROM dropsync_runs GROUP BY integration, trigger ORDER BY integration",
    );
    // Each file applied once: by its missed slot's run, or by a worker
    // that looked at the folder on start (the slot's run then finds nothing
    // new, and is still recorded as run).
    assert_eq!(runs.len(), FEEDS, "{runs:?}");
    assert!(
        runs.iter()
            .all(|r| (r[1] == "schedule" || r[1] == "watch") && r[2] == "1"),
        "each integration synced once: {runs:?}"
    );
    assert_eq!(
        fleet.count("SELECT count(*) FROM dropsync_runs WHERE status <> 'success'"),
        0
    );
    // Every slot is recorded as run: none is due any more.
    let last = fleet.rows(
        "SELECT integration, date_trunc('second', max(last_fired))::text FROM dropsync_schedule GROUP BY integration",
    );
    let today = chrono::Utc::now().date_naive();
    let latest_slot =
        if chrono::Utc::now().time() >= chrono::NaiveTime::from_hms_opt(2, 0, 0).unwrap() {
            today
        } else {
            today.pred_opt().unwrap()
        };
    assert_eq!(last.len(), FEEDS, "{last:?}");
    for row in &last {
        assert_eq!(
            row[1],
            format!("{latest_slot} 02:00:00"),
            "{}'s latest slot recorded as run",
            row[0]
        );
    }
    drop(workers);
}

/// A worker killed with SIGKILL in the middle of applying a big file: its
/// session ends, its transaction is rolled back and its hold on the
/// integration goes with it; another worker notices within the bounded
/// delay, records the dead run interrupted and applies the file: every row
/// once. Meanwhile `status` shows which worker syncs the integration.
#[test]
fn a_killed_worker_has_its_integration_taken_over_with_nothing_lost_or_doubled() {
    const ROWS: usize = 300_000;
    let fleet = Fleet::new(&feeds(1, ""));
    fleet.drop_file(
        "feed_00",
        "accounts_20260101.csv",
        &accounts_file("K", ROWS),
    );
    let first = fleet.start(1);
    wait_for(Duration::from_secs(120), "the first worker's run", || {
        fleet.count("SELECT count(*) FROM dropsync_runs WHERE status = 'running'") == 1
    });
    let second = fleet.start(2);
    // Its first look at the folder finds the integration taken; what
    // follows is the takeover, not that look.
    wait_for(
        Duration::from_secs(60),
        "the second worker's first look",
        || second.log().contains("left to it"),
    );
    // The second worker sees who holds the integration.
    let status = second.status();
    assert_eq!(
        status[0]["worker"]
            .as_str()
            .map(|w| w.ends_with(&format!(":{}", first.pid()))),
        Some(true),
        "status names the worker syncing feed_00: {status}"
    );
    let still_running =
        fleet.count("SELECT count(*) FROM dropsync_runs WHERE status = 'running'") == 1;
    assert!(
        still_running,
        "the run must still be in progress to be killed mid-run"
    );
    first.kill();
    let killed_at = chrono::Utc::now().timestamp_millis();
    wait_for(Duration::from_secs(300), "the takeover's run", || {
        fleet.count("SELECT count(*) FROM dropsync_runs WHERE status = 'success'") == 1
    });
    let runs = fleet.rows("SELECT status, trigger FROM dropsync_runs ORDER BY started_at");
    assert_eq!(
        runs,
        vec![
            vec!["interrupted".to_string(), "watch".to_string()],
            vec!["success".to_string(), "takeover".to_string()],
        ],
        "the killed worker's run is interrupted, the other's applied"
    );
    let log = second.log();
    assert!(log.contains("taking it over"), "{log}");
    // Taken over within a sweep or two (5 s each), not at some later scan:
    // the killed process's session ended with it.
    let taken_at = fleet.count(
        "SELECT (extract(epoch FROM started_at) * 1000)::bigint FROM dropsync_runs WHERE status = 'success'",
    );
    assert!(
        taken_at - killed_at < 20_000,
        "the takeover started {} ms after the kill",
        taken_at - killed_at
    );
    assert_eq!(
        fleet.count("SELECT count(*) FROM accounts"),
        ROWS as i64,
        "every row once"
    );
    assert_eq!(
        fleet.count("SELECT count(DISTINCT \"AccountID\") FROM accounts"),
        ROWS as i64,
        "no row twice"
    );
}

//! The daemon as a real process: watched folders (a file renamed into place,
//! one copied slowly), schedules, the command line while it holds the store,
//! SIGTERM; a run killed with SIGKILL; and the systemd units.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{ACCOUNTS_HEADER, BIN, Workspace, six_accounts};

/// A running `dropsync daemon`, stopped with SIGTERM when dropped.
struct Daemon {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(ws: &Workspace) -> Daemon {
        // A daemon stopped before it set up its signal handling leaves its
        // socket behind; waiting for the socket must wait for this one's.
        let _ = std::fs::remove_file(ws.path("dropsync.duckdb.sock"));
        let log = ws.path("daemon.log");
        let child = Command::new(BIN)
            .arg("--config")
            .arg(ws.config_path())
            .arg("daemon")
            .current_dir(&ws.root)
            .env_remove("DROPSYNC_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let daemon = Daemon {
            child: Some(child),
            log,
        };
        wait_for(Duration::from_secs(20), "the daemon's socket", || {
            ws.path("dropsync.duckdb.sock").exists()
        });
        daemon
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status and the log.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        signal(&child, "TERM");
        let status = wait_exit(&mut child, Duration::from_secs(30));
        (status, self.log())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "TERM");
            let _ = wait_exit(&mut child, Duration::from_secs(30));
        }
    }
}

fn signal(child: &Child, name: &str) {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
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

/// The finished runs, through the daemon's API while it runs (which
/// answers at once, showing a run in flight as `running`).
fn runs(ws: &Workspace) -> Vec<serde_json::Value> {
    let out = ws.dropsync(&["history", "--json"]);
    out.code(0);
    let mut runs = out.json().as_array().cloned().unwrap_or_default();
    runs.retain(|r| r["status"] != "running");
    runs.reverse();
    runs
}

const WATCHED: &str = r#"
[daemon]
settle_secs = 1

[integrations.accounts]
dataset = "accounts"
source = { type = "folder", path = "drops" }
pattern = "accounts_{date:%Y%m%d}.csv"
"#;

#[test]
fn the_daemon_syncs_files_that_settle_in_a_watched_folder() {
    let ws = Workspace::new(WATCHED);
    let daemon = Daemon::start(&ws);

    // Written elsewhere, then renamed into place.
    ws.write("drops/.accounts_20260101.csv.tmp", six_accounts());
    std::fs::rename(
        ws.path("drops/.accounts_20260101.csv.tmp"),
        ws.path("drops/accounts_20260101.csv"),
    )
    .unwrap();
    wait_for(Duration::from_secs(20), "the first file's run", || {
        runs(&ws).len() == 1
    });
    let first = &runs(&ws)[0];
    assert_eq!(first["status"], "success");
    assert_eq!(first["trigger"], "watch");
    assert_eq!(first["input_rows"], 6);

    // Copied slowly, straight into the folder: one row every 300 ms.
    let path = ws.path("drops/accounts_20260102.csv");
    std::fs::write(&path, ACCOUNTS_HEADER).unwrap();
    for i in 1..=8 {
        std::thread::sleep(Duration::from_millis(300));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(
            &mut f,
            format!("A{i},,Account {i},parent,pro,{i},2020-01-01\n").as_bytes(),
        )
        .unwrap();
        assert_eq!(runs(&ws).len(), 1, "nothing taken while the copy goes on");
    }
    wait_for(Duration::from_secs(20), "the slow file's run", || {
        runs(&ws).len() == 2
    });
    std::thread::sleep(Duration::from_secs(2));
    let all = runs(&ws);
    assert_eq!(all.len(), 2, "one run for the slow file: {all:?}");
    assert_eq!(all[1]["file_name"], "accounts_20260102.csv");
    assert_eq!(all[1]["input_rows"], 8, "the whole file, not a part of it");

    let (status, log) = daemon.stop();
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(
        !ws.path("dropsync.duckdb.sock").exists(),
        "the socket is removed"
    );
}

#[test]
fn schedules_fire_and_the_command_line_works_while_the_daemon_holds_the_store() {
    let ws = Workspace::new(
        r#"
[integrations.accounts]
dataset = "accounts"
source = { type = "folder", path = "drops" }
pattern = "accounts_{date:%Y%m%d}.csv"
schedule = "* * * * * *"
timezone = "Europe/Berlin"

[integrations.later]
dataset = "accounts"
table = "later_accounts"
source = { type = "folder", path = "later" }
pattern = "accounts_{date:%Y%m%d}.csv"
schedule = "daily 02:00"
"#,
    );
    std::fs::create_dir_all(ws.path("later")).unwrap();
    // Arrived an hour ago: the first fire of the schedule takes it.
    let path = ws.drop_file("accounts_20260101.csv", six_accounts());
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let daemon = Daemon::start(&ws);
    wait_for(Duration::from_secs(20), "the scheduled run", || {
        !runs(&ws).is_empty()
    });
    let run = runs(&ws)[0].clone();
    assert_eq!(
        (run["status"].as_str(), run["trigger"].as_str()),
        (Some("success"), Some("schedule"))
    );

    // Everything a user runs by hand works, through the daemon.
    let id = run["execution_id"].as_str().unwrap();
    ws.dropsync(&["show", &id[id.len() - 8..]])
        .code(0)
        .stdout_has(&["status         success", "trigger        schedule"]);
    ws.dropsync(&["history"])
        .code(0)
        .stdout_has(&["accounts_20260101.csv"]);
    let status = ws.dropsync(&["status", "--json"]);
    status.code(0);
    let cards = status.json();
    assert_eq!(cards[0]["last_run"]["status"], "success");
    assert_eq!(cards[1]["integration"], "later");
    assert!(
        cards[1]["next_run"].as_str().unwrap().contains("T02:00:00"),
        "{cards}"
    );
    ws.dropsync(&["status"]).code(0).stdout_has(&[
        "accounts  (accounts, snapshot)",
        "  schedule  * * * * * * (Europe/Berlin), next ",
        "  last run  success at ",
    ]);
    ws.dropsync(&["run", "accounts", "--date", "2026-01-01"])
        .code(0)
        .stdout_has(&["skipped", "the same content was already applied"]);
    ws.write(
        "elsewhere/accounts_20260102.csv",
        six_accounts().replace("pro,10", "pro,11"),
    );
    ws.dropsync(&["ingest", "accounts", "elsewhere/accounts_20260102.csv"])
        .code(0)
        .stdout_has(&["accounts  2026-01-02  accounts_20260102.csv  success  rows 6 ok 6 rejected 0 skipped 0  +0 ~1 -0"]);
    let log = daemon.log();
    assert!(!log.contains("lock"), "{log}");

    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    // Without the daemon, the same commands read the store directly.
    ws.dropsync(&["history"])
        .code(0)
        .stdout_has(&["accounts_20260102.csv"]);
}

#[test]
fn a_run_killed_mid_batch_leaves_nothing_half_applied() {
    let ws = Workspace::new(
        r#"
[integrations.accounts]
dataset = "accounts"
source = { type = "folder", path = "drops" }
pattern = "accounts_{date:%Y%m%d}.csv"
"#,
    );
    let mut big = ACCOUNTS_HEADER.to_string();
    for i in 0..300_000 {
        big.push_str(&format!(
            "A{i:07},,Account {i:07},parent,pro,{},2020-01-01\n",
            i % 100
        ));
    }
    ws.drop_file("accounts_20260101.csv", &big);
    // Killed once its file is parsed: the run is recorded `running` by then,
    // and nothing is applied before validation and the diff. A fixed wait
    // after staging could kill it before its run row existed on a busy machine.
    let log = ws.path("run.log");
    let mut run = Command::new(BIN)
        .args(["--config", "dropsync.toml", "run"])
        .current_dir(&ws.root)
        .env("DROPSYNC_LOG", "dropsync=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(120), "the file to be parsed", || {
        std::fs::read_to_string(&log).is_ok_and(|l| {
            l.lines()
                .any(|l| l.contains("stage done") && l.contains("parse"))
        })
    });
    signal(&run, "KILL");
    let _ = run.wait();

    // Nothing holds the store now: the run is reported as interrupted...
    let history = ws.dropsync(&["history", "--json"]);
    history.code(0);
    assert_eq!(history.json()[0]["status"], "interrupted", "{history}");
    // ...and the next start records it so, and syncs the file anew.
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&["accounts_20260101.csv  success  rows 300000 ok 300000"]);
    let db = ws.db();
    let runs = db.runs();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0].status, "interrupted");
    assert_eq!(runs[0].inserted, 0);
    assert_eq!(db.count("SELECT count(*) FROM accounts"), 300_000);
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM accounts WHERE _execution_id = '{}'",
            runs[0].execution_id
        )),
        0,
        "nothing of the killed run was applied"
    );
}

#[test]
fn the_systemd_units_verify() {
    let dir = tempfile::tempdir().unwrap();
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    for (from, to) in [
        ("dropsync.service", "dropsync.service"),
        ("dropsync-run@.service", "dropsync-run@crm_accounts.service"),
        ("dropsync-run@.timer", "dropsync-run@crm_accounts.timer"),
    ] {
        let text = std::fs::read_to_string(units.join(from)).unwrap();
        // verify checks that ExecStart's program exists.
        std::fs::write(
            dir.path().join(to),
            text.replace("/usr/local/bin/dropsync", BIN),
        )
        .unwrap();
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args([
            "dropsync.service",
            "dropsync-run@crm_accounts.service",
            "dropsync-run@crm_accounts.timer",
        ])
        .current_dir(dir.path())
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "{}\n{stderr}",
        out.status
    );
    let service = std::fs::read_to_string(units.join("dropsync.service")).unwrap();
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "Restart=on-failure",
        "User=dropsync",
        "ReadWritePaths=/var/lib/dropsync",
    ] {
        assert!(
            service.contains(hardening),
            "dropsync.service lacks {hardening}"
        );
    }
}

/// After downtime the daemon syncs what its missed schedules would have:
/// every new file oldest first, or with `catch_up = "latest"` the newest.
#[test]
fn missed_schedules_are_caught_up_after_downtime() {
    for (catch_up, want) in [
        (
            "all",
            vec![
                "accounts_20260101.csv",
                "accounts_20260102.csv",
                "accounts_20260103.csv",
            ],
        ),
        ("latest", vec!["accounts_20260103.csv"]),
    ] {
        let ws = Workspace::new(&format!(
            r#"
[integrations.accounts]
dataset = "accounts"
source = {{ type = "folder", path = "drops" }}
pattern = "accounts_{{date:%Y%m%d}}.csv"
schedule = "daily 02:00"
catch_up = "{catch_up}"
max_delete_ratio = 1.0
"#
        ));
        // A first start records when the schedule was last looked at.
        Daemon::start(&ws).stop();
        // Down for three days, while three nightly files arrived.
        {
            let conn = duckdb::Connection::open(ws.store_path()).unwrap();
            conn.execute_batch(
                "UPDATE dropsync_schedule SET last_fired = now()::TIMESTAMP - INTERVAL 3 DAY",
            )
            .unwrap();
        }
        for day in 1..=3 {
            let path = ws.drop_file(
                &format!("accounts_2026010{day}.csv"),
                six_accounts().replace("pro,10", &format!("pro,1{day}")),
            );
            let arrived = std::time::SystemTime::now() - Duration::from_secs(86_400 * (4 - day));
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(arrived)
                .unwrap();
        }
        let daemon = Daemon::start(&ws);
        wait_for(Duration::from_secs(20), "the catch-up", || {
            runs(&ws).len() >= want.len()
        });
        std::thread::sleep(Duration::from_millis(500));
        let all = runs(&ws);
        let files: Vec<&str> = all
            .iter()
            .map(|r| r["file_name"].as_str().unwrap())
            .collect();
        assert_eq!(files, want, "catch_up = {catch_up}");
        assert!(all.iter().all(|r| r["trigger"] == "schedule"), "{all:?}");
        let (status, log) = daemon.stop();
        assert!(
            status.success() && log.contains("catching up missed schedules"),
            "{log}"
        );
    }
}

#[test]
fn logs_can_be_json_lines() {
    let ws = Workspace::new(WATCHED);
    ws.drop_file("accounts_20260101.csv", six_accounts());
    let out = ws.dropsync(&["--log-format", "json", "-vv", "run"]);
    out.code(0);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(!lines.is_empty(), "{out}");
    for line in lines {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            event["timestamp"].is_string() && event["level"].is_string(),
            "{line}"
        );
    }
    assert!(out.stderr.contains(r#""stage":"validate""#), "{out}");
}

/// A stop asked for the moment the daemon's socket appears (systemd
/// stopping a unit it has just started) must still be a clean stop: exit 0
/// and the socket removed. A socket left behind made the next start's
/// commands take the new daemon for a dead one and fail on the store's lock.
#[test]
fn a_daemon_stopped_as_soon_as_its_socket_appears_stops_cleanly() {
    let ws = Workspace::new(&format!("{WATCHED}schedule = \"daily 02:00\"\n"));
    let socket = ws.path("dropsync.duckdb.sock");
    for attempt in 0..10 {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(ws.config_path())
            .arg("daemon")
            .current_dir(&ws.root)
            .env_remove("DROPSYNC_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "waited for the daemon's socket");
            std::thread::sleep(Duration::from_micros(200));
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let status = wait_exit(&mut child, Duration::from_secs(30));
        assert!(status.success(), "attempt {attempt}: {status:?}");
        assert!(
            !socket.exists(),
            "attempt {attempt}: the socket was left behind"
        );
    }
}

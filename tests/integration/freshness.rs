//! Freshness: `expect` deadlines in an integration's time zone; `status`
//! and `status --json` showing fresh, due, overdue or failing; `dropsync
//! check` for cron and monitoring probes; and the daemon noticing a missing
//! file at its deadline.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::common::{BIN, StoreKind, Workspace, accounts_config, six_accounts, workspace_on};

/// `HH:MM` (or with `seconds`, `HH:MM:SS`) of `t` in `zone`.
fn local_time(t: DateTime<Utc>, zone: &str, seconds: bool) -> String {
    let zone: Tz = zone.parse().unwrap();
    let format = if seconds { "%H:%M:%S" } else { "%H:%M" };
    t.with_timezone(&zone).format(format).to_string()
}

fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A deadline that passed two minutes ago (in Kolkata's time, UTC+05:30)
/// with no file: overdue in `status`, `status --json` and `check`; the file
/// arriving makes it fresh again.
fn a_passed_deadline_without_a_file_is_overdue_until_the_file_comes(kind: StoreKind) {
    let by = local_time(
        Utc::now() - chrono::Duration::minutes(2),
        "Asia/Kolkata",
        false,
    );
    let ws = workspace_on(
        kind,
        &accounts_config(&format!(
            "expect = \"daily by {by}\"\ntimezone = \"Asia/Kolkata\""
        )),
    );

    let out = ws.dropsync(&["status"]);
    out.code(0).stdout_has(&[
        "freshness overdue by 2m (1 deadline missed since",
        &format!("expected daily by {by}, next by"),
        "IST",
    ]);
    let json = ws.dropsync(&["status", "--json"]).code(0).json();
    let freshness = &json[0]["freshness"];
    assert_eq!(freshness["state"], "overdue", "{json}");
    assert_eq!(freshness["missed_deadlines"], 1, "{json}");
    let late = freshness["late_secs"].as_i64().unwrap();
    assert!((120..300).contains(&late), "{json}");

    let out = ws.dropsync(&["check"]);
    out.code(1);
    assert_eq!(out.stdout.lines().count(), 1, "{out}");
    out.stdout_has(&[
        "DROPSYNC WARNING - accounts overdue by 2m (daily by",
        "| fresh=0 due=0 overdue=1 failing=0 untracked=0",
    ]);

    ws.drop_file("accounts_20260101.csv", six_accounts());
    ws.dropsync(&["run"]).code(0);
    ws.dropsync(&["status"])
        .code(0)
        .stdout_has(&["freshness fresh: expected daily by"]);
    let out = ws.dropsync(&["check"]);
    out.code(0)
        .stdout_has(&["DROPSYNC OK - 1 integrations, none overdue or failing | fresh=1 "]);
}

/// A last run that failed makes the integration failing, with or without a
/// deadline: `check` is CRITICAL (2) and names the run; a good file after it
/// clears it.
fn a_failed_last_run_is_critical_until_a_good_file_is_applied(kind: StoreKind) {
    let ws = workspace_on(kind, &accounts_config(""));
    ws.dropsync(&["check"]).code(0).stdout_has(&[
        "DROPSYNC OK - 1 integrations, none overdue or failing | fresh=0 due=0 overdue=0 failing=0 untracked=1",
    ]);
    ws.drop_file("accounts_20260101.csv", "");
    ws.dropsync(&["run"]).code(1);
    let failed = ws.db().runs()[0].execution_id.clone();

    let out = ws.dropsync(&["check"]);
    out.code(2).stdout_has(&[&format!(
        "DROPSYNC CRITICAL - accounts failing (last run {failed} did not succeed) | fresh=0 due=0 overdue=0 failing=1"
    )]);
    ws.dropsync(&["status"])
        .code(0)
        .stdout_has(&[&format!("freshness failing (run {failed} did not succeed)")]);
    let json = ws.dropsync(&["status", "--json"]).code(0).json();
    assert_eq!(json[0]["freshness"]["state"], "failing", "{json}");
    assert_eq!(
        json[0]["freshness"]["failed_run"],
        failed.as_str(),
        "{json}"
    );

    ws.drop_file("accounts_20260102.csv", six_accounts());
    ws.dropsync(&["run"]).code(0);
    ws.dropsync(&["check"]).code(0).stdout_has(&["DROPSYNC OK"]);
}

/// A malformed `expect` is a config error naming the file, the line and what
/// to write; `check` on it says UNKNOWN (3) in one line.
#[test]
fn a_bad_expect_is_a_config_error_and_check_says_unknown() {
    let ws = Workspace::new(&accounts_config("expect = \"every morning\""));
    let config = ws.config_path().display().to_string();
    ws.dropsync(&["status"]).code(2).stderr_has(&[
        &config,
        "line 5",
        "expect `every morning`: use `daily by HH:MM`, `weekly DAY by HH:MM` or `monthly day D by HH:MM`",
    ]);
    let out = ws.dropsync(&["check"]);
    out.code(3);
    assert_eq!(out.stdout.lines().count(), 1, "{out}");
    out.stdout_has(&["DROPSYNC UNKNOWN - invalid config ", "every morning"]);
}

/// A running daemon notices at the deadline that no file came (it says so in
/// its log then, not when the next file arrives) and sends exactly one
/// `file_missing` alert; `check` through it is a WARNING; the file dropped
/// afterwards is synced, sends `recovered`, and all is OK again.
#[test]
fn the_daemon_notices_a_missing_file_at_its_deadline() {
    let port = crate::servers::free_port();
    let receiver = crate::alerts::Receiver::start(port, &[]);
    // Whole seconds, as `expect` writes them.
    let deadline =
        DateTime::from_timestamp((Utc::now() + chrono::Duration::seconds(6)).timestamp(), 0)
            .unwrap();
    let by = local_time(deadline, "UTC", true);
    let ws = Workspace::new(&format!(
        "{}{}",
        accounts_config(&format!(
            "expect = \"daily by {by}\"\n\n[daemon]\nsettle_secs = 1"
        )),
        crate::alerts::webhook(port, "\"file_missing\", \"recovered\"")
    ));
    let daemon = start_daemon(&ws, &[]);
    assert!(
        Utc::now() < deadline,
        "the daemon took too long to start for this test"
    );
    assert!(!daemon.log().contains("file missing"), "{}", daemon.log());
    assert!(receiver.hooks().is_empty());

    wait_for(
        Duration::from_secs(20),
        "the missing file to be noticed",
        || daemon.log().contains("file missing"),
    );
    assert!(Utc::now() >= deadline);
    let log = daemon.log();
    let line = log.lines().find(|l| l.contains("file missing")).unwrap();
    assert!(
        line.contains("integration=\"accounts\"") || line.contains("integration=accounts"),
        "{line}"
    );
    ws.dropsync(&["check"])
        .code(1)
        .stdout_has(&["DROPSYNC WARNING - accounts overdue by"]);
    wait_for(Duration::from_secs(20), "the missing-file alert", || {
        !receiver.accepted().is_empty()
    });
    let hook = &receiver.accepted()[0];
    assert_eq!(hook.kind(), "file_missing");
    let text = hook.body["text"].as_str().unwrap();
    assert!(
        text.starts_with("dropsync: accounts: file missing: nothing arrived by"),
        "{text}"
    );

    ws.drop_file("accounts_20260101.csv", six_accounts());
    wait_for(
        Duration::from_secs(20),
        "the dropped file to be synced",
        || ws.dropsync(&["check"]).code == 0,
    );
    ws.dropsync(&["status"])
        .code(0)
        .stdout_has(&["freshness fresh: expected daily by"]);
    wait_for(Duration::from_secs(20), "the recovered alert", || {
        receiver.accepted().len() == 2
    });
    std::thread::sleep(Duration::from_secs(2));
    // Noticed once, at the deadline: not again when the file came.
    let kinds: Vec<String> = receiver
        .accepted()
        .iter()
        .map(|h| h.kind().to_string())
        .collect();
    assert_eq!(kinds, ["file_missing", "recovered"]);
    assert_eq!(
        daemon.log().matches("file missing").count(),
        1,
        "{}",
        daemon.log()
    );
}

/// `dropsync daemon` on a workspace, logging to `daemon.log` there; ready
/// once its socket is.
pub(crate) fn start_daemon(ws: &Workspace, env: &[(&str, &str)]) -> DaemonProcess {
    let log = ws.path("daemon.log");
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let child = Command::new(BIN)
        .arg("--config")
        .arg(ws.config_path())
        .arg("daemon")
        .current_dir(&ws.root)
        .env_remove("DROPSYNC_LOG")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let socket = ws.path("dropsync.duckdb.sock");
    let daemon = DaemonProcess { child, log };
    wait_for(Duration::from_secs(20), "the daemon's socket", || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    daemon
}

/// A running daemon, stopped with SIGTERM when the test ends, however it
/// ends.
pub(crate) struct DaemonProcess {
    child: Child,
    log: std::path::PathBuf,
}

impl DaemonProcess {
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to finish anything.
    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let limit = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() && Instant::now() < limit {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

crate::on_both_stores! {
    a_passed_deadline_without_a_file_is_overdue_until_the_file_comes => a_passed_deadline_without_a_file_is_overdue_until_the_file_comes;
    a_failed_last_run_is_critical_until_a_good_file_is_applied => a_failed_last_run_is_critical_until_a_good_file_is_applied;
}

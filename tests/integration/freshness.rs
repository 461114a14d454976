//! Freshness: `expect` deadlines in an integration's time zone; `status`
//! and `status --json` showing fresh, due, overdue or failing; `dropsync
//! check` for cron and monitoring probes; and the daemon noticing a missing
//! file at its deadline.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::common::{BIN, Workspace, accounts_config, six_accounts};

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
#[test]
fn a_passed_deadline_without_a_file_is_overdue_until_the_file_comes() {
    let by = local_time(
        Utc::now() - chrono::Duration::minutes(2),
        "Asia/Kolkata",
        false,
    );
    let ws = Workspace::new(&accounts_config(&format!(
        "expect = \"daily by {by}\"\ntimezone = \"Asia/Kolkata\""
    )));

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
#[test]
fn a_failed_last_run_is_critical_until_a_good_file_is_applied() {
    let ws = Workspace::new(&accounts_config(""));
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
/// its log then, not when the next file arrives); `check` through it is a
/// WARNING; the file dropped afterwards is synced and all is OK again.
#[test]
fn the_daemon_notices_a_missing_file_at_its_deadline() {
    // Whole seconds, as `expect` writes them.
    let deadline =
        DateTime::from_timestamp((Utc::now() + chrono::Duration::seconds(6)).timestamp(), 0)
            .unwrap();
    let by = local_time(deadline, "UTC", true);
    let ws = Workspace::new(&accounts_config(&format!(
        "expect = \"daily by {by}\"\n\n[daemon]\nsettle_secs = 1"
    )));
    let log = ws.path("daemon.log");
    let mut daemon = DaemonProcess(
        Command::new(BIN)
            .arg("--config")
            .arg(ws.config_path())
            .arg("daemon")
            .current_dir(&ws.root)
            .env_remove("DROPSYNC_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for(Duration::from_secs(20), "the daemon's socket", || {
        ws.path("dropsync.duckdb.sock").exists()
    });
    assert!(
        Utc::now() < deadline,
        "the daemon took too long to start for this test"
    );
    assert!(!read_log().contains("file missing"), "{}", read_log());

    wait_for(
        Duration::from_secs(20),
        "the missing file to be noticed",
        || read_log().contains("file missing"),
    );
    assert!(Utc::now() >= deadline);
    let line = read_log()
        .lines()
        .find(|l| l.contains("file missing"))
        .unwrap()
        .to_string();
    assert!(
        line.contains("integration=\"accounts\"") || line.contains("integration=accounts"),
        "{line}"
    );
    ws.dropsync(&["check"])
        .code(1)
        .stdout_has(&["DROPSYNC WARNING - accounts overdue by"]);

    ws.drop_file("accounts_20260101.csv", six_accounts());
    wait_for(
        Duration::from_secs(20),
        "the dropped file to be synced",
        || ws.dropsync(&["check"]).code == 0,
    );
    ws.dropsync(&["status"])
        .code(0)
        .stdout_has(&["freshness fresh: expected daily by"]);
    // Noticed once, at the deadline: not again when the file came.
    assert_eq!(
        read_log().matches("file missing").count(),
        1,
        "{}",
        read_log()
    );
    daemon.stop();
}

/// Stopped with SIGTERM when the test ends, however it ends.
struct DaemonProcess(Child);

impl DaemonProcess {
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let limit = Instant::now() + Duration::from_secs(30);
        while self.0.try_wait().unwrap().is_none() && Instant::now() < limit {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

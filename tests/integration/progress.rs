//! Progress on long runs: a line redrawn on a terminal (run under a real
//! pseudo-terminal with util-linux `script`), nothing extra when standard
//! error is piped or with `--quiet`, and lines in the daemon's log.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{ACCOUNTS_HEADER, BIN, Workspace, accounts_config};

/// An accounts snapshot big enough that its run takes a while.
fn big_snapshot(rows: usize) -> String {
    let mut s = String::with_capacity(rows * 48);
    s.push_str(ACCOUNTS_HEADER);
    for i in 0..rows {
        s.push_str(&format!(
            "A{i},,Account {i},parent,pro,{},2020-01-01\n",
            i % 5000
        ));
    }
    s
}

const ROWS: usize = 200_000;

/// Runs dropsync with a pseudo-terminal as its standard input, output and
/// error; what the terminal received (both streams, as a user sees them).
fn on_a_terminal(ws: &Workspace, args: &[&str]) -> (i32, String) {
    let mut command = format!("{BIN} --config {}", ws.config_path().display());
    for arg in args {
        command.push(' ');
        command.push_str(arg);
    }
    let out = Command::new("script")
        .args(["-q", "-e", "-f", "-c", &command, "/dev/null"])
        .current_dir(&ws.root)
        .env_remove("DROPSYNC_LOG")
        .env_remove("NO_COLOR")
        .env("COLUMNS", "120")
        .stdin(Stdio::null())
        .output()
        .expect("util-linux script runs");
    let seen = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!seen.contains("panicked"), "dropsync crashed: {seen}");
    (out.status.code().unwrap_or(-1), seen)
}

fn big_drop(ws: &Workspace) -> std::path::PathBuf {
    ws.drop_file("accounts_20260101.csv", big_snapshot(ROWS))
}

#[test]
fn a_long_ingest_on_a_terminal_shows_its_stage_bytes_and_rows_then_clears_the_line() {
    let ws = Workspace::new(&accounts_config(""));
    let file = big_drop(&ws);
    let (code, seen) = on_a_terminal(&ws, &["ingest", "accounts", &file.display().to_string()]);
    assert_eq!(code, 0, "{seen}");
    // The line names the file and a stage, is redrawn in place (carriage
    // return, erase to the end of the line), and is cleared before the
    // result is printed.
    let lines: Vec<&str> = seen
        .split('\r')
        .filter(|l| l.starts_with("accounts_20260101.csv  "))
        .collect();
    assert!(!lines.is_empty(), "no progress line: {seen:?}");
    assert!(
        lines.iter().any(|l| ["parsing", "validating", "diffing"]
            .iter()
            .any(|stage| l.contains(stage))),
        "no stage named: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" rows") || l.contains(" MB")),
        "no bytes or rows: {lines:?}"
    );
    let result = seen.rfind("accounts  2026-01-01  accounts_20260101.csv  ");
    let last_clear = seen.rfind("\r\x1b[K").expect("the line is cleared");
    assert!(
        result.is_some_and(|r| r > last_clear),
        "the result comes after the line is cleared: {seen:?}"
    );
    assert_eq!(ws.db().count("SELECT count(*) FROM accounts"), ROWS as i64);
}

#[test]
fn piped_output_and_quiet_show_no_progress() {
    let ws = Workspace::new(&accounts_config(""));
    let file = big_drop(&ws);
    let file = file.display().to_string();
    // Standard error piped: the result, nothing else.
    let out = ws.dropsync(&["ingest", "accounts", &file]);
    out.code(0);
    assert!(
        !out.stderr.contains('\r') && !out.stderr.contains("parsing"),
        "progress on a pipe: {:?}",
        out.stderr
    );
    // A terminal, but --quiet.
    let ws = Workspace::new(&accounts_config(""));
    let file = big_drop(&ws);
    let (code, seen) = on_a_terminal(
        &ws,
        &["ingest", "--quiet", "accounts", &file.display().to_string()],
    );
    assert_eq!(code, 0, "{seen}");
    assert!(
        !seen.contains("\x1b[K") && !seen.contains("parsing") && !seen.contains("diffing"),
        "progress with --quiet: {seen:?}"
    );
    // `run` honours it too.
    let ws = Workspace::new(&accounts_config(""));
    big_drop(&ws);
    let (code, seen) = on_a_terminal(&ws, &["run", "-q"]);
    assert_eq!(code, 0, "{seen}");
    assert!(!seen.contains("\x1b[K"), "progress with -q: {seen:?}");
}

#[test]
fn a_long_run_in_the_daemon_logs_its_progress() {
    let ws = Workspace::new(&format!(
        "[daemon]\nsettle_secs = 1\n\n{}",
        accounts_config("")
    ));
    let _ = std::fs::remove_file(ws.path("dropsync.duckdb.sock"));
    let log_path = ws.path("daemon.log");
    let mut daemon = Command::new(BIN)
        .arg("--config")
        .arg(ws.config_path())
        .arg("daemon")
        .current_dir(&ws.root)
        .env_remove("DROPSYNC_LOG")
        // Every 100 ms instead of every 10 s, so a run of a second or two
        // is long enough to be logged.
        .env("DROPSYNC_PROGRESS_SECS", "0.1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_for(Duration::from_secs(60), "the daemon's socket", || {
        ws.path("dropsync.duckdb.sock").exists()
    });
    write_then_rename(
        &ws.path("drops"),
        "accounts_20260101.csv",
        &big_snapshot(ROWS),
    );
    let finished = wait_for(Duration::from_secs(300), "the run", || {
        let out = ws.dropsync(&["history", "--json"]);
        out.json()
            .as_array()
            .is_some_and(|runs| runs.iter().any(|r| r["status"] == "success"))
    });
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(daemon.id().to_string())
        .status();
    let status = daemon.wait().unwrap();
    let log = log();
    assert!(status.success(), "{status}: {log}");
    let progress: Vec<&str> = log.lines().filter(|l| l.contains("progress: ")).collect();
    assert!(
        !progress.is_empty(),
        "no progress in the log of a {finished:?} run: {log}"
    );
    assert!(
        progress
            .iter()
            .all(|l| l.contains("accounts_20260101.csv") && l.contains("stage=")),
        "{progress:?}"
    );
    assert!(!log.contains("\x1b[K"), "the daemon draws no terminal line");
}

fn write_then_rename(dir: &Path, name: &str, content: &str) {
    let temp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&temp, content).unwrap();
    std::fs::rename(&temp, dir.join(name)).unwrap();
}

/// Waits for `done`; how long it took.
#[track_caller]
fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
    start.elapsed()
}

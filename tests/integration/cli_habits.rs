//! Command-line habits from the hardening issue: an error's cause said once,
//! a closed pipe ending quietly, `--color` and NO_COLOR, one exit code for
//! one failure whichever command met it, config values cut short in errors,
//! text from files escaped before it reaches the terminal, and a long answer
//! written in large blocks.

use std::process::{Command, Stdio};

use crate::common::{
    ACCOUNTS_HEADER, BIN, Workspace, accounts_config, six_accounts, with_six_accounts,
};

const ESC: char = '\u{1b}';

/// A DuckDB error printed its message twice, then "Error code 1: Unknown
/// error code".
#[test]
fn an_error_names_its_cause_once() {
    let ws = Workspace::new(&accounts_config(""));
    ws.write("dropsync.duckdb", vec![0x5a; 10_000]);
    for args in [&["history"][..], &["run"][..]] {
        let out = ws.dropsync(args);
        out.code(1);
        let cause = "not a valid DuckDB database file";
        assert_eq!(out.stderr.matches(cause).count(), 1, "{out}");
        assert!(!out.stderr.contains("Unknown error code"), "{out}");
        assert_eq!(out.stderr.lines().count(), 1, "{out}");
    }
}

/// Runs the binary with its standard output a pipe nobody reads any more.
fn with_closed_stdout(ws: &Workspace, args: &[&str]) -> (i32, String) {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(ws.config_path())
        .args(args)
        .current_dir(&ws.root)
        .env_remove("DROPSYNC_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `dropsync history | head` ended with "dropsync: Broken pipe (os error
/// 32)" and exit code 1.
#[test]
fn a_closed_pipe_ends_quietly() {
    let ws = with_six_accounts("");
    let id = ws.db().last_run().execution_id;
    for args in [&["history"][..], &["history", "--json"], &["show", &id]] {
        let (code, stderr) = with_closed_stdout(&ws, args);
        assert_eq!((code, stderr.as_str()), (0, ""), "dropsync {args:?}");
    }
    // A sync goes on without its reader, and its exit code still says how
    // the runs went.
    ws.drop_file(
        "accounts_20260102.csv",
        format!("{ACCOUNTS_HEADER}A1,,Account 1,parent,pro,10,2020-01-01\n"),
    );
    let (code, stderr) = with_closed_stdout(&ws, &["run"]);
    assert_eq!(code, 1, "the mass-delete guard refuses day 2: {stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    assert_eq!(ws.db().last_run().status, "failed");
}

/// `--color auto|always|never` and NO_COLOR.
#[test]
fn color_follows_the_flag_and_no_color() {
    let ws = with_six_accounts("");
    let green = format!("{ESC}[32msuccess{ESC}[0m");
    // (arguments, environment, whether the statuses are colored)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], bool);
    let cases: [Case; 6] = [
        (&["history"], &[], false),
        (&["history", "--color", "auto"], &[], false),
        (&["history", "--color", "never"], &[], false),
        (&["history", "--color", "always"], &[], true),
        (&["history", "--color", "auto"], &[("NO_COLOR", "1")], false),
        // An explicit request wins over the environment.
        (
            &["history", "--color", "always"],
            &[("NO_COLOR", "1")],
            true,
        ),
    ];
    for (args, env, colored) in cases {
        let out = ws.dropsync_env(args, env);
        out.code(0);
        assert_eq!(out.stdout.contains(&green), colored, "{env:?} {out}");
        if !colored {
            assert!(!out.stdout.contains(ESC), "{out}");
        }
    }
    ws.dropsync(&[
        "run",
        "--date",
        "2026-01-01",
        "--force",
        "--color",
        "always",
    ])
    .code(0)
    .stdout_has(&[&green]);
    ws.dropsync(&["--color", "sometimes", "history"]).code(2);
}

/// A store that fails to read while `run --date` looks up its staged files
/// exited 2, "the command line or the config is wrong"; `ingest` meeting
/// the same failure exits 1.
#[test]
fn the_same_failure_exits_the_same_from_run_and_ingest() {
    let base = with_six_accounts("");
    let file = base.drop_file(
        "accounts_20260102.csv",
        six_accounts().replace("pro,10,", "pro,11,"),
    );
    base.dropsync(&["run"]).code(0);
    let file = file.display().to_string();
    let commands: [&[&str]; 2] = [
        &["run", "--date", "2026-01-02"],
        &["ingest", "accounts", &file],
    ];
    for command in commands {
        let mut failed = 0;
        for when in 1.. {
            let ws = Workspace::new("");
            crate::common::copy_dir(&base.root, &ws.root);
            let trace = ws.path("trace.txt");
            let out = Command::new("strace")
                .arg("-f")
                .arg("-o")
                .arg(&trace)
                .arg("-P")
                .arg(ws.store_path())
                .arg(format!("--inject=pread64:error=EIO:when={when}+"))
                .arg(BIN)
                .arg("--config")
                .arg(ws.config_path())
                .args(command)
                .current_dir(&ws.root)
                .output()
                .expect("strace runs");
            if !std::fs::read_to_string(&trace)
                .unwrap()
                .contains("(INJECTED)")
            {
                break;
            }
            let code = out.status.code().unwrap_or(-1);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                code == 1 || (code == 0 && stdout.contains("skipped")),
                "{command:?} with a read error at pread64 #{when}: exit {code}\n{stdout}{stderr}"
            );
            failed += usize::from(code == 1);
        }
        assert!(failed > 0, "{command:?}: no read was made to fail");
    }
    // Failures of the file itself: the same code from both commands.
    let ws = with_six_accounts("on_error = { policy = \"reject\" }");
    let bad = ws.write(
        "elsewhere/accounts_20260102.csv",
        format!("{ACCOUNTS_HEADER}A1,,Account 1,parent,pro,many,2020-01-01\n"),
    );
    ws.dropsync(&["ingest", "accounts", &bad.display().to_string()])
        .code(1);
    ws.drop_file(
        "accounts_20260103.csv",
        format!("{ACCOUNTS_HEADER}A1,,Account 1,parent,pro,several,2020-01-01\n"),
    );
    ws.dropsync(&["run"]).code(1);
}

/// A config value echoed in an error is cut to a sensible length: a
/// 100,000-character value came back whole.
#[test]
fn a_long_config_value_is_cut_in_errors() {
    let long = "x".repeat(100_000);
    let configs = [
        accounts_config(&format!("mode = \"{long}\"")),
        accounts_config(&format!("table = \"{long}\"")),
        format!(
            "[integrations.\"bad name {long}\"]\ndataset = \"accounts\"\n\
             source = {{ type = \"folder\", path = \"drops\" }}\npattern = \"*.csv\"\n"
        ),
        accounts_config("").replace("accounts_{date:%Y%m%d}.csv", &format!("{long}{{date:%Q}}")),
    ];
    for config in configs {
        let ws = Workspace::new(&config);
        let out = ws.dropsync(&["run"]);
        out.code(2);
        assert!(
            out.stderr.len() < 2_000 && out.stderr.contains("xxxxxxxxxx"),
            "{} bytes of error: {}",
            out.stderr.len(),
            &out.stderr[..out.stderr.len().min(600)]
        );
    }
    let ws = Workspace::new(&accounts_config(""));
    let out = ws.dropsync(&["run", &long]);
    out.code(2);
    assert!(out.stderr.len() < 2_000, "{} bytes", out.stderr.len());
}

/// Escape sequences and newlines from file names and rejected rows were
/// printed raw by `run`, `history` and `show`.
#[test]
fn text_from_files_is_escaped_for_the_terminal() {
    let ws = Workspace::new(
        &accounts_config("on_error = { policy = \"skip\", max_ratio = 0.5 }")
            .replace("accounts_{date:%Y%m%d}.csv", "accounts_{date:%Y%m%d}_*.csv"),
    );
    ws.drop_file("accounts_20260101_plain.csv", six_accounts());
    ws.dropsync(&["run"]).code(0);
    let name = format!("accounts_20260102_{ESC}]0;owned\u{7}{ESC}[2J\nfake.csv");
    let mut rows = six_accounts();
    rows.push_str(&format!(
        "A7,,Evil {ESC}[31mred,parent,pro,{ESC}[2J,2020-01-07\n"
    ));
    ws.drop_file(&name, rows);
    let run = ws.dropsync(&["run"]);
    run.code(3);
    let history = ws.dropsync(&["history"]);
    let id = ws.db().last_run().execution_id;
    let show = ws.dropsync(&["show", &id]);
    for out in [&run, &history, &show] {
        assert!(!out.stdout.contains(ESC), "raw escape: {out}");
        assert!(!out.stdout.contains('\u{7}'), "raw bell: {out}");
        assert!(
            out.stdout
                .contains("accounts_20260102_\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\nfake.csv"),
            "{out}"
        );
    }
    show.stdout_has(&["Evil \\u{1b}[31mred"]);
    // JSON keeps the text as it is (escaped the JSON way).
    let json = ws.dropsync(&["show", &id, "--json"]).json();
    assert_eq!(json["run"]["file_name"], name.as_str());
}

/// A long answer reaches standard output in large writes, not a line at a
/// time: standard output is line-buffered and pretty JSON is a line per
/// field, so a change log of a million changes took a system call per
/// line (17 s, 10 s of it the kernel's).
#[test]
fn a_long_json_answer_is_written_in_large_blocks() {
    let ws = Workspace::new(&accounts_config(""));
    let rows: String = (0..400)
        .map(|i| format!("B{i},,Account {i},parent,pro,{i},2020-01-01\n"))
        .collect();
    ws.drop_file("accounts_20260101.csv", format!("{ACCOUNTS_HEADER}{rows}"));
    ws.dropsync(&["run"]).code(0);
    let trace = ws.path("trace.txt");
    let out = Command::new("strace")
        .arg("-f")
        .arg("-o")
        .arg(&trace)
        .arg("-e")
        .arg("trace=write")
        .arg(BIN)
        .arg("--config")
        .arg(ws.config_path())
        .args(["changes", "accounts", "--json"])
        .current_dir(&ws.root)
        .output()
        .expect("strace runs (scripts/test-servers installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let changes: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(changes.as_array().map(Vec::len), Some(400));
    let writes = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter(|l| l.contains("write(1,"))
        .count();
    assert!(
        writes <= 10,
        "{writes} writes to standard output for {} bytes",
        out.stdout.len()
    );
}

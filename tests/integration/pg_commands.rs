//! Every command on a PostgreSQL store, next to the same on a DuckDB store:
//! `export TABLE [--as-of D]` in each format, `status`, `check`, `show`,
//! `history`, the web console, the daemon and its senders, and the outbox's
//! claims on a store several workers share.

use crate::common::*;

const SCENARIO: &str = r#"
[store]
schemas = "schemas"

[integrations.accounts]
dataset = "accounts"
source = { type = "folder", path = "drops" }
pattern = "accounts_{date:%Y%m%d}.csv"
max_delete_ratio = 1.0

[integrations.newsletter]
dataset = "subscribers"
source = { type = "folder", path = "drops" }
pattern = "subscribers_{date:%Y%m%d}.csv"

[integrations.ledger]
dataset = "ledger"
source = { type = "folder", path = "drops" }
pattern = "ledger_{date:%Y%m%d}.csv"
max_delete_ratio = 1.0
"#;

const SUBSCRIBERS_HEADER: &str =
    "ListID,Email,Status,UnsubscribedDate,UnsubscribeReason,FirstName,LastName\n";

/// Text a partner's export may hold: quotes, commas, line breaks, formulas,
/// non-ASCII, nothing at all.
const AWKWARD_TEXT: &[&str] = &[
    "Account",
    "=HYPERLINK(\"x\")",
    "@Acme, Inc.",
    "line one\nline two",
    "Zoë's \"quoted\" name",
    "+1 555",
    "",
];

fn csv_cell(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// One day's exports: an accounts snapshot, a subscribers delta and a
/// ledger snapshot.
fn exports(rng: &mut Random) -> [(&'static str, String); 3] {
    let mut accounts = ACCOUNTS_HEADER.to_string();
    for i in 1..=6 {
        if rng.below(4) == 0 {
            continue;
        }
        let plan = ["free", "pro", "enterprise"][rng.below(3)];
        let seats = match rng.below(4) {
            0 => String::new(),
            n => (n * 10).to_string(),
        };
        accounts.push_str(&format!(
            "A{i},,{},parent,{plan},{seats},2020-01-0{i}\n",
            csv_cell(&format!("{} {i}", awkward(rng)))
        ));
    }
    let mut subscribers = SUBSCRIBERS_HEADER.to_string();
    for who in ["ann", "bob", "cy", "dee", "Émile", "zed"] {
        match rng.below(3) {
            0 => {}
            1 => subscribers.push_str(&format!("NEWS,{who}@x.org,subscribed,,,{who},X\n")),
            _ => subscribers.push_str(&format!(
                "NEWS,{who}@x.org,unsubscribed,2026-11-01,moved,{who},{}\n",
                csv_cell(awkward(rng))
            )),
        }
    }
    let mut ledger = "Entry,Amount,Paid,Booked,Due,At,Year,Note\n".to_string();
    for entry in [1, 2, 3, 10, 200] {
        if rng.below(4) == 0 {
            continue;
        }
        let amount = format!("{}.{}", rng.below(100_000), rng.below(100));
        let amount = sometimes_empty(rng, amount);
        let paid = ["true", "false"][rng.below(2)].to_string();
        let paid = sometimes_empty(rng, paid);
        let (d, h, m, sec) = (
            1 + rng.below(9),
            rng.below(10),
            rng.below(10),
            rng.below(10),
        );
        let booked = sometimes_empty(rng, format!("2026-11-0{d}T1{h}:2{m}:3{sec}Z"));
        let (month, day) = (1 + rng.below(9), rng.below(10));
        let due = sometimes_empty(rng, format!("2027-0{month}-1{day}"));
        let hour = rng.below(10);
        let at = sometimes_empty(rng, format!("0{hour}:30:00"));
        let year = 20 + rng.below(10);
        let year = sometimes_empty(rng, format!("20{year}"));
        let note = csv_cell(awkward(rng));
        ledger.push_str(&format!(
            "{entry},{amount},{paid},{booked},{due},{at},{year},{note}\n"
        ));
    }
    [
        ("accounts", accounts),
        ("subscribers", subscribers),
        ("ledger", ledger),
    ]
}

fn day_date(day: usize) -> String {
    format!("2026-11-{day:02}")
}

/// The same drops, in the same order, on a workspace of each store.
fn both_stores(config: &str) -> [StoreWorkspace; 2] {
    [
        workspace_on(StoreKind::DuckDb, config),
        workspace_on(StoreKind::Postgres, config),
    ]
}

/// issue 12: `export TABLE [--as-of D]` on a PostgreSQL store writes the
/// same file, byte for byte, as on a DuckDB store fed the same drops, in
/// every format, now and as of every past date (snapshots applied out of
/// order, forced replays of old dates, late deltas), for every column type.
#[test]
fn export_and_export_as_of_are_the_same_file_on_both_stores() {
    const DAYS: usize = 5;
    let mut rng = Random(0x0012_2026_1126);
    let stores = both_stores(SCENARIO);
    for ws in &stores {
        ws.write("schemas/ledger.json", LEDGER_SCHEMA);
    }
    let mut order: Vec<(usize, bool)> = (1..=DAYS).map(|d| (d, false)).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    for _ in 0..3 {
        order.push((1 + rng.below(DAYS), rng.below(2) == 0));
    }
    for &(day, force) in &order {
        let files = exports(&mut rng);
        let date = day_date(day);
        let mut args = vec!["run", "--date", &date];
        if force {
            args.push("--force");
        }
        let mut outputs = Vec::new();
        for ws in &stores {
            for (name, content) in &files {
                ws.drop_file(&format!("{name}_202611{day:02}.csv"), content);
            }
            let out = ws.dropsync(&args);
            assert!(out.code == 0 || out.code == 3, "{out}");
            outputs.push(filter_ids(&out.stdout));
        }
        assert_eq!(outputs[0], outputs[1], "the runs of {date} on both stores");
    }
    for ws in &stores {
        std::fs::create_dir_all(ws.path("out")).unwrap();
    }
    let mut dates: Vec<Option<String>> =
        vec![None, Some("2026-10-31".into()), Some("2030-01-01".into())];
    dates.extend((1..=DAYS).map(|d| Some(day_date(d))));
    for table in ["accounts", "subscribers", "ledger"] {
        let mut distinct = std::collections::HashSet::new();
        for date in &dates {
            // Every date as CSV; now and one past date in each format.
            let formats: &[&str] = match date.as_deref() {
                None | Some("2026-11-03") => &["csv", "json", "parquet"],
                Some(_) => &["csv"],
            };
            for &format in formats {
                let files: Vec<Vec<u8>> = stores
                    .iter()
                    .map(|ws| {
                        let mut args =
                            vec!["export", table, "--format", format, "-o", "out/export"];
                        if let Some(d) = date {
                            args.extend(["--as-of", d]);
                        }
                        ws.dropsync(&args).code(0);
                        std::fs::read(ws.path("out/export")).unwrap()
                    })
                    .collect();
                assert!(
                    files[0] == files[1],
                    "{table} as of {date:?} as {format}:\nDuckDB:\n{}\nPostgreSQL:\n{}",
                    String::from_utf8_lossy(&files[0]),
                    String::from_utf8_lossy(&files[1])
                );
                if format == "csv" {
                    distinct.insert(files[0].clone());
                }
            }
        }
        // The dates differ: the comparison is of states, not of empties.
        assert!(distinct.len() >= 3, "{table}: {} states", distinct.len());
    }
}

/// Run output with its execution ids and timings blanked.
fn filter_ids(text: &str) -> String {
    text.lines()
        .map(|l| {
            l.split_whitespace()
                .map(|w| {
                    if w.len() >= 20 && w.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                        "<id>"
                    } else {
                        w
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// An export file is private to its owner, its CSV text cells never run
/// as formulas, its JSON and Parquet are typed, and a table nothing was
/// synced into is refused: on either store.
fn export_file_is_private_typed_and_free_of_live_formulas(kind: StoreKind) {
    use serde_json::json;
    let ws = workspace_on(kind, &accounts_config(""));
    ws.drop_file(
        "accounts_20260101.csv",
        format!("{ACCOUNTS_HEADER}A1,,=HYPERLINK(\"http://x\"),parent,pro,5,2020-01-01\n"),
    );
    ws.dropsync(&["run"]).code(0);
    ws.dropsync(&["export", "accounts", "-o", "out/accounts.csv"])
        .code(1)
        .stderr_has(&["cannot create a file in out"]);
    std::fs::create_dir_all(ws.path("out")).unwrap();
    ws.dropsync(&["export", "accounts", "-o", "out/accounts.csv"])
        .code(0);
    let csv = std::fs::read_to_string(ws.path("out/accounts.csv")).unwrap();
    assert_eq!(
        csv,
        "AccountID,ParentID,Name,Type,Plan,Seats,CreatedDate,_attributes,_integration\n\
         A1,,\"'=HYPERLINK(\"\"http://x\"\")\",parent,pro,5,2020-01-01,,accounts\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ws.path("out/accounts.csv"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "not readable by others: {mode:o}");
    // Nothing of the rows is left beside the export.
    let left: Vec<_> = std::fs::read_dir(ws.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["accounts.csv"]);
    ws.dropsync(&[
        "export",
        "accounts",
        "--format",
        "json",
        "--as-of",
        "2026-01-01",
        "-o",
        "out/a.json",
    ])
    .code(0);
    let json: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(ws.path("out/a.json"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(json["Seats"], json!(5));
    assert_eq!(json["Name"], json!("=HYPERLINK(\"http://x\")"));
    ws.dropsync(&[
        "export",
        "accounts",
        "--format",
        "parquet",
        "-o",
        "out/a.parquet",
    ])
    .code(0);
    assert!(
        std::fs::read(ws.path("out/a.parquet"))
            .unwrap()
            .starts_with(b"PAR1")
    );
    // To standard output, as of before anything: the header alone.
    ws.dropsync(&["export", "accounts", "--as-of", "2025-12-31"])
        .code(0)
        .stdout_has(&[
            "AccountID,ParentID,Name,Type,Plan,Seats,CreatedDate,_attributes,_integration\n",
        ]);
    ws.dropsync(&["export", "nosuch"])
        .code(2)
        .stderr_has(&["no integration", "syncs into a table `nosuch`"]);
    ws.dropsync(&["export", "unsubscribes"])
        .code(0)
        .stdout_has(&["ListID,Email,UnsubscribedDate"]);
}

crate::on_both_stores! {
    export_file_is_private_typed_and_free_of_live_formulas_on => export_file_is_private_typed_and_free_of_live_formulas;
}

fn awkward(rng: &mut Random) -> &'static str {
    AWKWARD_TEXT[rng.below(AWKWARD_TEXT.len())]
}

/// `value`, or one time in five nothing.
fn sometimes_empty(rng: &mut Random, value: String) -> String {
    if rng.below(5) == 0 {
        String::new()
    } else {
        value
    }
}

/// Accounts with rejected rows allowed, a deadline, an alert receiver that
/// is down and a change feed into a folder.
fn reading_config(hook_port: u16) -> String {
    format!(
        "{}{}\n[[subscribe]]\nname = \"crm-feed\"\ntype = \"folder\"\npath = \"feed\"\n",
        accounts_config(
            "on_error = { policy = \"skip\", max_rows = 100, max_ratio = 0.9 }\nexpect = \"daily by 23:59\""
        ),
        crate::alerts::webhook(hook_port, "\"run_failed\", \"run_partial\"")
    )
}

/// Two runs, the second with two rejected rows.
fn sync_two_days(ws: &Workspace) {
    ws.drop_file("accounts_20260101.csv", six_accounts());
    ws.dropsync(&["run"]).code(0);
    let mut day2 = six_accounts().replace("Account 3", "Renamed 3");
    day2.push_str("A7,,Seven,parent,pro,seven,2020-01-07\n");
    day2.push_str("=cmd|A8,,Eight,parent,pro,8,2020-01-08\n");
    ws.drop_file("accounts_20260102.csv", day2);
    // The alert receiver is down: the run says so, and still applies.
    ws.dropsync(&["run"]).code(3);
}

/// What differs between two stores' answers by nature: run ids, times and
/// durations, the store's name.
fn comparable(text: &str, ws: &StoreWorkspace) -> String {
    let text = match &ws.pg {
        Some(pg) => text.replace(&pg.url(), "<store>"),
        None => text.replace(&ws.store_path().display().to_string(), "<store>"),
    };
    let text = text.replace(&ws.root.display().to_string(), "<workspace>");
    let patterns = [
        (
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "<id>",
        ),
        (r"\b[0-9a-f]{8}\b", "<id>"),
        (
            r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d| UTC)?",
            "<time>",
        ),
        (r#""duration_ms": ?\d+"#, "\"duration_ms\":0"),
        (r"\d+(\.\d+)? ?(ms|s)\b", "<duration>"),
        (r"\d+ (seconds?|minutes?|hours?) ago", "<ago>"),
    ];
    patterns.iter().fold(text, |text, (pattern, with)| {
        regex::Regex::new(pattern)
            .unwrap()
            .replace_all(&text, *with)
            .into_owned()
    })
}

/// issue 12: `status` (and `--json`), `check`, `history` (and `--json`)
/// and `show` (and `--json`) answer the same on a PostgreSQL store as on a
/// DuckDB store that synced the same files: counts, rejected rows,
/// freshness, undelivered alerts and changes.
#[test]
fn status_check_history_and_show_answer_the_same_on_both_stores() {
    let hook_port = crate::servers::free_port();
    let stores = both_stores(&reading_config(hook_port));
    for ws in &stores {
        sync_two_days(ws);
    }
    let ask = |args: &[&str], code: i32| -> Vec<String> {
        stores
            .iter()
            .map(|ws| {
                let out = ws.dropsync(args);
                out.code(code);
                comparable(&out.stdout, ws)
            })
            .collect()
    };
    let run_id = |ws: &StoreWorkspace| -> String {
        ws.dropsync(&["history", "--json"]).code(0).json()[0]["execution_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for (args, code) in [
        (vec!["status"], 0),
        (vec!["status", "--json"], 0),
        (vec!["check"], 1),
        (vec!["history"], 0),
        (vec!["history", "--json"], 0),
        (vec!["history", "accounts", "--limit", "1"], 0),
    ] {
        let answers = ask(&args, code);
        assert_eq!(answers[0], answers[1], "dropsync {args:?}");
        assert!(!answers[0].trim().is_empty(), "dropsync {args:?}");
    }
    let status = stores[1].dropsync(&["status"]);
    status.stdout_has(&["accounts", "alerts    1 undelivered"]);
    let shown: Vec<String> = stores
        .iter()
        .map(|ws| {
            let id = run_id(ws);
            let text = ws.dropsync(&["show", &id]).code(0).stdout.clone();
            let json = ws
                .dropsync(&["show", &id[id.len() - 12..], "--json"])
                .code(0)
                .stdout
                .clone();
            comparable(&format!("{text}\n{json}"), ws)
        })
        .collect();
    assert_eq!(shown[0], shown[1]);
    assert!(
        shown[1].contains("`seven` is not an integer"),
        "{}",
        shown[1]
    );
}

/// A running `dropsync daemon` (the console too when `[web]` is set),
/// stopped with SIGTERM when dropped.
struct DaemonProcess {
    child: Option<std::process::Child>,
    log: std::path::PathBuf,
}

impl DaemonProcess {
    fn start(ws: &StoreWorkspace) -> DaemonProcess {
        // The daemon's socket: beside the store file, else beside the config.
        let socket = match ws.pg {
            Some(_) => ws.path("dropsync.sock"),
            None => ws.path("dropsync.duckdb.sock"),
        };
        let _ = std::fs::remove_file(&socket);
        let log = ws.path("daemon.log");
        let child = std::process::Command::new(BIN)
            .arg("--config")
            .arg(ws.config_path())
            .arg("daemon")
            .current_dir(&ws.root)
            .env_remove("DROPSYNC_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut daemon = DaemonProcess {
            child: Some(child),
            log,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Some(status) = daemon.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the daemon exited {status}: {}", daemon.log());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no socket: {}",
                daemon.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        daemon
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM; whether it exited cleanly, and its log.
    fn stop(mut self) -> (bool, String) {
        let child = self.child.take().unwrap();
        (terminate(child), self.log())
    }
}

fn terminate(mut child: std::process::Child) -> bool {
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child);
        }
    }
}

/// The files in `dir` (none if it does not exist), but for hidden ones
/// (a file being written).
fn files_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

/// issue 12: a daemon on either store syncs a file that settles in its
/// watched folder, its alert sender delivers the run's alert and its feed
/// sender the run's changes (each on a session of its own), the console it
/// serves answers its API and pages from the store, and the command line
/// reaches it through its socket; SIGTERM stops it cleanly.
fn daemon_syncs_alerts_feeds_and_serves_the_console(kind: StoreKind) {
    use std::time::Duration;
    let hook_port = crate::servers::free_port();
    let web_port = crate::servers::free_port();
    let ws = workspace_on(
        kind,
        &format!(
            "{}{}\n[[subscribe]]\nname = \"crm-feed\"\ntype = \"folder\"\npath = \"feed\"\n\
             \n[web]\nlisten = \"127.0.0.1:{web_port}\"\n",
            accounts_config("\n[daemon]\nsettle_secs = 1"),
            crate::alerts::webhook(hook_port, "\"run_succeeded\"")
        ),
    );
    let receiver = crate::alerts::Receiver::start(hook_port, &[]);
    let daemon = DaemonProcess::start(&ws);
    ws.drop_file("accounts_20260101.csv", six_accounts());
    crate::alerts::wait_for(Duration::from_secs(90), "the run's alert", || {
        !receiver.accepted().is_empty()
    });
    let hooks = receiver.accepted();
    assert_eq!(hooks[0].kind(), "run_succeeded", "{hooks:?}");
    crate::alerts::wait_for(Duration::from_secs(60), "the run's changes", || {
        !files_in(&ws.path("feed")).is_empty()
    });
    let feed = std::fs::read_to_string(&files_in(&ws.path("feed"))[0]).unwrap();
    assert_eq!(feed.lines().count(), 6, "{feed}");

    // The command line, through the daemon.
    let status = ws.dropsync(&["status", "--json"]).code(0).json();
    assert_eq!(status[0]["last_run"]["status"], "success", "{status}");
    assert_eq!(status[0]["last_run"]["trigger"], "watch", "{status}");
    ws.dropsync(&["status"])
        .code(0)
        .stdout_lacks(&["undelivered"]);
    let history = ws.dropsync(&["history", "--json"]).code(0).json();
    let id = history[0]["execution_id"].as_str().unwrap().to_string();
    ws.dropsync(&["show", &id])
        .code(0)
        .stdout_has(&["accounts_20260101.csv", "success"]);

    // The console the daemon serves.
    let base = format!("http://127.0.0.1:{web_port}");
    let get = |path: &str| -> (u16, String) {
        let mut reply = crate::web_api::agent()
            .get(format!("{base}{path}"))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}: {}", daemon.log()));
        let status = reply.status().as_u16();
        (status, reply.body_mut().read_to_string().unwrap())
    };
    let (code, cards) = get("/api/integrations");
    assert_eq!(code, 200, "{cards}");
    let cards: serde_json::Value = serde_json::from_str(&cards).unwrap();
    assert_eq!(cards[0]["integration"], "accounts");
    assert_eq!(cards[0]["last_run"], status[0]["last_run"]);
    let (code, runs) = get("/api/runs");
    assert_eq!(code, 200, "{runs}");
    let runs: serde_json::Value = serde_json::from_str(&runs).unwrap();
    assert_eq!(runs["total"], 1, "{runs}");
    assert_eq!(runs["runs"][0]["execution_id"], id.as_str());
    let (code, page) = get("/");
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("accounts") && page.contains("success"),
        "{page}"
    );
    let (code, page) = get(&format!("/runs/{id}"));
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("accounts_20260101.csv"), "{page}");

    let (clean, log) = daemon.stop();
    assert!(clean, "{log}");
    assert!(!log.contains("hook-s3cret"), "{log}");
}

crate::on_both_stores! {
    daemon_syncs_alerts_feeds_and_serves_the_console_on => daemon_syncs_alerts_feeds_and_serves_the_console;
}

/// issue 12: on a store several workers share, a claim on an alert is not
/// released by the next process that opens the store (another worker may
/// be sending it), but it expires: a worker killed while sending leaves its
/// claim, which nobody takes while it is fresh and another worker takes
/// once it is older than its bound, sending the alert once more with the
/// same idempotency key; after that it is delivered and sent no more.
#[test]
fn a_claim_left_by_a_killed_sender_expires_on_a_shared_store() {
    use std::io::BufReader;
    use std::time::{Duration, Instant};
    let hook_port = crate::servers::free_port();
    let ws = workspace_on(
        StoreKind::Postgres,
        &format!(
            "{}{}",
            accounts_config(""),
            crate::alerts::webhook(hook_port, "\"run_succeeded\"")
        ),
    );
    // A receiver that takes the request and never answers.
    let hanging = std::net::TcpListener::bind(("127.0.0.1", hook_port)).unwrap();
    ws.drop_file("accounts_20260101.csv", six_accounts());
    let mut sender = std::process::Command::new(BIN)
        .arg("--config")
        .arg(ws.config_path())
        .arg("run")
        .current_dir(&ws.root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    hanging.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let held = loop {
        match hanging.accept() {
            Ok((stream, _)) => break stream,
            Err(_) => {
                assert!(Instant::now() < deadline, "the run never sent its alert");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    held.set_nonblocking(false).unwrap();
    let first = crate::alerts::read_request(&mut BufReader::new(&held)).unwrap();
    // Killed while sending: its claim stays.
    sender.kill().unwrap();
    sender.wait().unwrap();
    drop((held, hanging));
    let mut client = ws.pg.as_ref().unwrap().client();
    let claimed = |client: &mut postgres::Client| -> i64 {
        client
            .query_one(
                "SELECT count(*) FROM dropsync_outbox WHERE claimed_at IS NOT NULL AND delivered_at IS NULL",
                &[],
            )
            .unwrap()
            .get(0)
    };
    assert_eq!(claimed(&mut client), 1);

    // Another worker, while the claim is fresh: it leaves it alone.
    let receiver = crate::alerts::Receiver::start(hook_port, &[]);
    ws.dropsync(&["run"]).code(0);
    assert!(receiver.hooks().is_empty(), "{:?}", receiver.hooks());
    ws.dropsync(&["status"])
        .code(0)
        .stdout_has(&["alerts    1 undelivered"]);
    assert_eq!(claimed(&mut client), 1);

    // Time passes (the claim is older than a few timeouts of 5 s, and a
    // minute): the next worker takes it over and sends it, once.
    client
        .batch_execute("UPDATE dropsync_outbox SET claimed_at = claimed_at - interval '2 minutes'")
        .unwrap();
    ws.dropsync(&["run"]).code(0);
    let hooks = receiver.hooks();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0].kind(), "run_succeeded");
    assert_eq!(hooks[0].idempotency_key, first.idempotency_key);
    assert_eq!(claimed(&mut client), 0);
    ws.dropsync(&["run"]).code(0);
    assert_eq!(receiver.hooks().len(), 1);
    ws.dropsync(&["status"])
        .code(0)
        .stdout_lacks(&["undelivered"]);
}

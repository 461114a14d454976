//! The command line itself: history and show, JSON output, config and usage
//! errors, `validate`, and what a crash or a busy store looks like.

use sha2::Digest;

use crate::common::{
    ACCOUNTS_HEADER, StoreKind, StoreWorkspace, Workspace, accounts, accounts_config, dropsync_in,
    six_accounts, table, with_six_accounts, with_six_accounts_on,
};

/// Six accounts on day 1, then a day 2 with one bad row (partial).
fn two_days(kind: StoreKind) -> StoreWorkspace {
    let ws = with_six_accounts_on(kind, "on_error = { max_ratio = 0.5 }");
    ws.drop_file(
        "accounts_20260102.csv",
        six_accounts()
            .replace("A2,,Account 2,parent,pro,20", "A2,,Account 2,parent,pro,-1")
            .replace(
                "A3,,Account 3,parent,pro,30",
                "A3,,Account 3,parent,gold,-3",
            ),
    );
    ws.dropsync(&["run"]).code(3);
    ws
}

fn history_lists_runs_newest_first(kind: StoreKind) {
    let ws = two_days(kind);
    let runs = ws.db().runs();
    assert_eq!(runs.len(), 2);
    let out = ws.dropsync(&["history"]);
    out.code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "EXECUTION",
            "ID",
            "INTEGRATION",
            "DATE",
            "STATUS",
            "ROWS",
            "REJECTED",
            "INSERTED",
            "UPDATED",
            "DELETED",
            "STARTED",
            "(UTC)",
            "FILE"
        ]
    );
    let row = |line: &str| {
        let cols: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        // Leave out the start time (two columns).
        [&cols[..9], &cols[11..]].concat()
    };
    assert_eq!(
        row(lines[1]),
        [
            runs[1].execution_id.as_str(),
            "accounts",
            "2026-01-02",
            "partial",
            "6",
            "2",
            "0",
            "0",
            "0",
            "accounts_20260102.csv"
        ]
    );
    assert_eq!(
        row(lines[2]),
        [
            runs[0].execution_id.as_str(),
            "accounts",
            "2026-01-01",
            "success",
            "6",
            "0",
            "6",
            "0",
            "0",
            "accounts_20260101.csv"
        ]
    );

    let out = ws.dropsync(&["history", "--limit", "1"]);
    assert_eq!(out.code(0).stdout.lines().count(), 2, "{out}");
    ws.dropsync(&["history", "other"])
        .code(0)
        .stdout_has(&["no runs yet"]);
    ws.dropsync(&["history", "accounts"])
        .code(0)
        .stdout_has(&[&runs[0].execution_id, &runs[1].execution_id]);
}

fn history_json_has_every_field(kind: StoreKind) {
    let ws = two_days(kind);
    let runs = ws.db().runs();
    let json = ws.dropsync(&["history", "--json"]).code(0).json();
    let list = json.as_array().expect("an array of runs");
    assert_eq!(list.len(), 2);
    let newest = &list[0];
    assert_eq!(newest["execution_id"], runs[1].execution_id.as_str());
    for (field, want) in [
        ("integration", serde_json::json!("accounts")),
        ("dataset", serde_json::json!("accounts")),
        ("mode", serde_json::json!("snapshot")),
        ("trigger", serde_json::json!("manual")),
        ("status", serde_json::json!("partial")),
        ("message", serde_json::json!("2 rows rejected")),
        ("file_name", serde_json::json!("accounts_20260102.csv")),
        ("business_date", serde_json::json!("2026-01-02")),
        ("forced", serde_json::json!(false)),
        ("input_rows", serde_json::json!(6)),
        ("success_rows", serde_json::json!(4)),
        ("error_rows", serde_json::json!(2)),
        ("skipped_rows", serde_json::json!(0)),
        ("inserted", serde_json::json!(0)),
        ("updated", serde_json::json!(0)),
        ("deleted", serde_json::json!(0)),
        ("unchanged", serde_json::json!(4)),
        ("subscribed", serde_json::json!(0)),
        ("unsubscribed", serde_json::json!(0)),
    ] {
        assert_eq!(newest[field], want, "{field} in {newest}");
    }
    assert_eq!(
        newest["content_hash"].as_str().map(str::len),
        Some(64),
        "{newest}"
    );
    for field in ["started_at", "completed_at", "staged_path"] {
        assert!(newest[field].is_string(), "{field} in {newest}");
    }
    assert_eq!(list[1]["status"], "success");
}

fn show_finds_a_run_by_a_unique_part_of_its_id(kind: StoreKind) {
    let ws = two_days(kind);
    let runs = ws.db().runs();
    let id = &runs[1].execution_id;
    let other = &runs[0].execution_id;
    // The shortest prefix of `id` that no other id starts with.
    let unique = (1..=id.len())
        .map(|n| &id[..n])
        .find(|p| !other.contains(p))
        .unwrap();
    let out = ws.dropsync(&["show", unique]);
    out.code(0).stdout_has(&[
        &format!("execution id   {id}\n"),
        "integration    accounts (dataset accounts, mode snapshot)\n",
        "status         partial\n",
        "message        2 rows rejected\n",
        "file           accounts_20260102.csv\n",
        "business date  2026-01-02\n",
        "trigger        manual\n",
        "rows           6 in, 4 ok, 2 rejected, 0 skipped\n",
        "changes        0 inserted, 0 updated, 0 deleted, 4 unchanged\n",
        "rejected rows:\n",
        "  line 3 [A2] Seats: `-1` is less than the minimum 0\n      A2,,Account 2,parent,pro,-1,2020-01-02\n",
        "  line 4 [A3] Plan: `gold` is not one of: enterprise, free, pro, starter\n",
        "  line 4 [A3] Seats: `-3` is less than the minimum 0\n",
    ]);
    // The full id works too, and --errors limits the rejected rows listed.
    ws.dropsync(&["show", id, "--errors", "1"])
        .code(0)
        .stdout_has(&["  line 3 [A2] Seats", "  ... (more with --errors N)\n"])
        .stdout_lacks(&["line 4"]);

    let json = ws.dropsync(&["show", unique, "--json"]).code(0).json();
    assert_eq!(json["run"]["execution_id"], id.as_str());
    assert_eq!(json["run"]["status"], "partial");
    let errors = json["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 3);
    assert_eq!(
        errors[0],
        serde_json::json!({
            "line": 3,
            "key": "A2",
            "field": "Seats",
            "message": "`-1` is less than the minimum 0",
            "raw": "A2,,Account 2,parent,pro,-1,2020-01-02",
        })
    );

    // Every id starts with the same timestamp digits: ambiguous.
    let common: String = id
        .chars()
        .zip(other.chars())
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a)
        .collect();
    assert!(!common.is_empty());
    ws.dropsync(&["show", &common])
        .code(1)
        .stderr_has(&[&format!(
            "`{common}` matches several runs; give more of the execution id"
        )]);
    ws.dropsync(&["show", "no-such-run"])
        .code(1)
        .stderr_has(&["no run has the execution id `no-such-run` (see `dropsync history`)"]);
}

fn run_and_ingest_print_json(kind: StoreKind) {
    let ws = with_six_accounts_on(kind, "");
    ws.drop_file(
        "accounts_20260102.csv",
        six_accounts().replace("Account 1,parent,pro,10", "Account 1,parent,pro,11"),
    );
    let json = ws.dropsync(&["run", "--json"]).code(0).json();
    let list = json.as_array().unwrap();
    assert_eq!(list.len(), 1, "{json}");
    let one = &list[0];
    assert_eq!(one["dry_run"], false);
    assert_eq!(one["run"]["status"], "success");
    assert_eq!(one["run"]["file_name"], "accounts_20260102.csv");
    assert_eq!(one["changes"]["updated"], 1);
    assert_eq!(one["changes"]["unchanged"], 5);
    assert_eq!(one["changes"]["existing"], 6);
    assert_eq!(one["errors"], serde_json::json!([]));
    assert_eq!(
        one["run"]["execution_id"],
        ws.db().last_run().execution_id.as_str()
    );

    let json = ws.dropsync(&["run", "--json"]).code(0).json();
    assert_eq!(json, serde_json::json!([]), "nothing new");

    let file = ws.path("drops/accounts_20260102.csv");
    let json = ws
        .dropsync(&["ingest", "accounts", file.to_str().unwrap(), "--json"])
        .code(0)
        .json();
    assert_eq!(json[0]["run"]["status"], "skipped");
    assert_eq!(json[0]["run"]["trigger"], "ingest");
    assert_eq!(json[0]["changes"], serde_json::Value::Null);
}

#[test]
fn config_and_usage_errors_exit_2() {
    let integration = "[integrations.accounts]\n\
                       dataset = \"accounts\"\n\
                       source = { type = \"folder\", path = \"drops\" }\n\
                       pattern = \"accounts_{date:%Y%m%d}.csv\"\n";
    let cases: Vec<(&str, String, Vec<&str>, Vec<&str>)> = vec![
        (
            "unknown key in an integration",
            format!("[store]\npath = \"x.duckdb\"\n\n{integration}max_delete_ration = 0.5\n"),
            vec!["run"],
            vec![
                "invalid config",
                "dropsync.toml",
                "line 8",
                "unknown field `max_delete_ration`",
            ],
        ),
        (
            "unknown key in [store]",
            format!("[store]\nstaging_dir = \"s\"\n\n{integration}"),
            vec!["history"],
            vec!["dropsync.toml", "line 2", "unknown field `staging_dir`"],
        ),
        (
            "unknown key in the csv dialect",
            format!("{integration}csv = {{ delimeter = \";\" }}\n"),
            vec!["run"],
            vec!["line 5", "unknown field `delimeter`"],
        ),
        (
            "TOML syntax",
            format!("{integration}max_delete_ratio = \n"),
            vec!["run"],
            vec!["invalid config", "line 5"],
        ),
        (
            "ratio out of range",
            format!("{integration}max_delete_ratio = 1.5\n"),
            vec!["run"],
            vec!["integration `accounts`: max_delete_ratio must be between 0 and 1"],
        ),
        (
            "bad pattern",
            integration.replace("%Y%m%d", "%Q"),
            vec!["run"],
            vec![
                "integration `accounts`",
                "date format `%Q` is not supported",
            ],
        ),
        (
            "unknown dataset",
            integration.replace("\"accounts\"", "\"acounts\""),
            vec!["run"],
            vec!["unknown dataset `acounts` (known: accounts, results, subscribers, usage, users)"],
        ),
        (
            "unknown mode",
            format!("{integration}mode = \"mirror\"\n"),
            vec!["run"],
            vec!["line 5", "mirror"],
        ),
        (
            "wide results without metrics",
            integration.replace("\"accounts\"\n", "\"results\"\nlayout = \"wide\"\n"),
            vec!["run"],
            vec!["a wide results report needs its metrics declared"],
        ),
        (
            "unknown integration named",
            integration.to_string(),
            vec!["run", "acounts"],
            vec!["no integration named `acounts`", "(known: accounts)"],
        ),
        (
            "unknown integration to ingest",
            integration.to_string(),
            vec!["ingest", "acounts", "x.csv"],
            vec!["no integration named `acounts`"],
        ),
        (
            "bad date",
            integration.to_string(),
            vec!["run", "--date", "2026-13-01"],
            vec!["`2026-13-01` is not a date (expected YYYY-MM-DD)"],
        ),
        (
            "--all with names",
            integration.to_string(),
            vec!["run", "--all", "accounts"],
            vec!["cannot be used with"],
        ),
        (
            "unknown subcommand",
            integration.to_string(),
            vec!["sync"],
            vec!["unrecognized subcommand 'sync'"],
        ),
    ];
    for (case, config, args, needles) in cases {
        let ws = Workspace::new(&config);
        let out = ws.dropsync(&args);
        assert_eq!(out.code, 2, "{case}: {out}");
        assert!(
            !ws.store_path().exists(),
            "{case}: a usage error leaves no store behind"
        );
        for needle in needles {
            assert!(
                out.stderr.contains(needle),
                "{case}: lacks {needle:?}: {out}"
            );
        }
    }

    // No config file at all.
    let dir = tempfile::tempdir().unwrap();
    dropsync_in(dir.path(), &["run"])
        .code(2)
        .stderr_has(&["cannot read config dropsync.toml"]);
    dropsync_in(dir.path(), &["--help"])
        .code(0)
        .stdout_has(&["Usage: dropsync"]);
}

#[test]
fn history_before_anything_was_synced() {
    let ws = Workspace::new(&accounts_config(""));
    ws.dropsync(&["history"])
        .code(1)
        .stderr_has(&["no store yet: nothing has been synced (run `dropsync run` first)"]);
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&["nothing new to sync"]);
    ws.dropsync(&["history"])
        .code(0)
        .stdout_has(&["no runs yet"]);
    ws.dropsync(&["history", "--json"])
        .code(0)
        .stdout_has(&["[]"]);
}

#[test]
fn validate_needs_no_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let write = |name: &str, text: &str| {
        let p = root.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let good = write("good.csv", &six_accounts());
    dropsync_in(root, &["validate", "--dataset", "accounts", &good])
        .code(0)
        .stdout_has(&[&format!(
            "{good}: 6 rows, 6 valid, 0 rejected, 0 duplicates skipped\n"
        )]);

    let bad = write(
        "bad.csv",
        &format!(
            "{ACCOUNTS_HEADER}\
             A1,,One,parent,pro,1,2020-01-01\n\
             A2,,Two,parent,pro,x,2020-01-02\n\
             A3,,Three,child,pro,3,2020-01-03\n\
             A4,A9,Four,product,pro,4,2020-01-04\n"
        ),
    );
    dropsync_in(
        root,
        &["validate", "--dataset", "accounts", &bad, "--errors", "2"],
    )
    .code(1)
    .stdout_has(&[
        &format!("{bad}: 4 rows, 1 valid, 3 rejected, 0 duplicates skipped\n"),
        "  line 3 [A2] Seats: `x` is not an integer\n",
        "  line 4 [A3] Type: `child` is not one of: parent, product\n",
        "  ... 1 more errors (--errors N)\n",
    ]);
    let json = dropsync_in(root, &["validate", "--dataset", "accounts", &bad, "--json"])
        .code(1)
        .json();
    assert_eq!(json["valid"], false);
    assert_eq!(json["rows"], 4);
    assert_eq!(json["rejected"], 3);
    assert_eq!(json["errors"].as_array().unwrap().len(), 3);
    assert_eq!(json["errors"][2]["field"], "ParentID");
    assert_eq!(
        json["errors"][2]["message"],
        "`A9` does not exist: no row of this file has that AccountID"
    );

    // Dialect flags: semicolons, no header.
    let semi = write("semi.csv", &six_accounts().replace(',', ";"));
    dropsync_in(
        root,
        &[
            "validate",
            "--dataset",
            "accounts",
            "--delimiter",
            ";",
            &semi,
        ],
    )
    .code(0)
    .stdout_has(&["6 rows, 6 valid"]);
    let headless: String = six_accounts()
        .lines()
        .skip(1)
        .map(|l| format!("{l}\n"))
        .collect();
    let headless = write("headless.csv", &headless);
    dropsync_in(
        root,
        &[
            "validate",
            "--dataset",
            "accounts",
            "--no-header",
            &headless,
        ],
    )
    .code(0)
    .stdout_has(&["6 rows, 6 valid"]);
    dropsync_in(root, &["validate", "--dataset", "accounts", &headless])
        .code(1)
        .stderr_has(&["headless.csv: line 1: the header does not fit the schema"]);
    let json = dropsync_in(
        root,
        &["validate", "--dataset", "accounts", &headless, "--json"],
    )
    .code(1)
    .json();
    assert_eq!(json["valid"], false);
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("line 1: the header does not fit the schema"),
        "{json}"
    );

    // References to other datasets are left to syncing.
    let users = write(
        "users.csv",
        "UserID,AccountID,FirstName,LastName,Role,Active,LastLogin\nu@example.org,NOPE,U,Ser,admin,true,\n",
    );
    dropsync_in(root, &["validate", "--dataset", "users", &users])
        .code(0)
        .stdout_has(&[
            "1 row, 1 valid",
            "references to accounts are checked when syncing, not here",
        ]);

    dropsync_in(root, &["validate", "--dataset", "nope", &good])
        .code(2)
        .stderr_has(&["unknown dataset `nope`"]);

    let created: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".csv"))
        .collect();
    assert!(created.is_empty(), "validate wrote {created:?}");
}

#[test]
fn validate_as_an_integration_reads_its_dialect() {
    let ws = Workspace::new(&accounts_config(
        "csv = { delimiter = \";\" }\ncolumns = { \"Account Id\" = \"AccountID\" }",
    ));
    let file = ws.write(
        "in.csv",
        six_accounts()
            .replace(',', ";")
            .replacen("AccountID", "Account Id", 1),
    );
    ws.dropsync(&[
        "validate",
        "--integration",
        "accounts",
        file.to_str().unwrap(),
    ])
    .code(0)
    .stdout_has(&["6 rows, 6 valid, 0 rejected"]);
    assert!(!ws.store_path().exists());
}

fn a_run_left_running_by_a_crash_is_marked_interrupted(kind: StoreKind) {
    let ws = with_six_accounts_on(kind, "");
    let day2 = six_accounts().replace("Account 1,parent,pro,10", "Account 1,parent,pro,11");
    ws.drop_file("accounts_20260102.csv", &day2);
    let hash = format!("{:x}", sha2::Sha256::digest(day2.as_bytes()));
    // A process that died while syncing day 2: its run is still `running`.
    ws.alter_store(&format!(
        "INSERT INTO dropsync_runs (execution_id, integration, dataset, mode, trigger, status,
            file_name, content_hash, business_date, started_at)
         VALUES ('crashed-run-0001', 'accounts', 'accounts', 'snapshot', 'manual', 'running',
            'accounts_20260102.csv', '{hash}', DATE '2026-01-02',
            CAST(now() AS TIMESTAMP) - INTERVAL '1 hour')"
    ));
    ws.dropsync(&["history"])
        .code(0)
        .stdout_has(&["crashed-run-0001"]);

    // The next run marks it interrupted, and syncs the file it never finished.
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&[
            "accounts  2026-01-02  accounts_20260102.csv  success",
            "+0 ~1 -0",
        ])
        .stderr_has(&["marked interrupted"]);
    let out = ws.dropsync(&["history"]);
    let line = out.lines_with("crashed-run-0001");
    assert_eq!(line.len(), 1, "{out}");
    assert!(line[0].contains(" interrupted "), "{out}");
    ws.dropsync(&["show", "crashed-run-0001"]).code(0).stdout_has(&[
        "status         interrupted\n",
        "message        the process stopped before the run finished; nothing of it was applied\n",
    ]);
    let db = ws.db();
    assert_eq!(
        db.rows("SELECT status, count(*) FROM dropsync_runs GROUP BY status ORDER BY status"),
        table(&[["interrupted", "1"], ["success", "2"]])
    );
    assert_eq!(
        db.value(r#"SELECT "Seats" FROM accounts WHERE "AccountID" = 'A1'"#),
        "11"
    );
}

#[test]
fn a_busy_store_is_a_clear_error() {
    let ws = with_six_accounts("");
    ws.drop_file(
        "accounts_20260102.csv",
        six_accounts().replace("Account 1,parent,pro,10", "Account 1,parent,pro,11"),
    );
    let holder = duckdb::Connection::open(ws.store_path()).unwrap();
    let out = ws.dropsync(&["run"]);
    out.code(1).stderr_has(&[
        "is in use by another dropsync process (a daemon or a run still going); wait for it or stop it.",
    ]);
    drop(holder);
    assert_eq!(accounts(&ws.db())[0], ["A1", "Account 1", "10"]);
    ws.dropsync(&["run"]).code(0).stdout_has(&["+0 ~1 -0"]);
}

crate::on_both_stores! {
    history_lists_runs_newest_first => history_lists_runs_newest_first;
    history_json_has_every_field => history_json_has_every_field;
    show_finds_a_run_by_a_unique_part_of_its_id => show_finds_a_run_by_a_unique_part_of_its_id;
    run_and_ingest_print_json => run_and_ingest_print_json;
    a_run_left_running_by_a_crash_is_marked_interrupted => a_run_left_running_by_a_crash_is_marked_interrupted;
}

//! The pipeline end to end: snapshots, repeats, dry runs, the mass-delete
//! guard, older dates, and append mode.

use crate::common::{
    ACCOUNTS_HEADER, StoreKind, Workspace, accounts, accounts_config, six_accounts,
    six_accounts_table, table, with_six_accounts_on, workspace_on,
};

/// Day 2 of `six_accounts`: A2's seats change, A5 is gone, A7 is new.
fn day2() -> String {
    format!(
        "{ACCOUNTS_HEADER}\
         A1,,Account 1,parent,pro,10,2020-01-01\n\
         A2,,Account 2,parent,pro,25,2020-01-02\n\
         A3,,Account 3,parent,pro,30,2020-01-03\n\
         A4,,Account 4,parent,pro,40,2020-01-04\n\
         A6,,Account 6,parent,pro,60,2020-01-06\n\
         A7,,Account 7,parent,starter,70,2020-01-07\n"
    )
}

fn day2_table() -> Vec<Vec<String>> {
    table(&[
        ["A1", "Account 1", "10"],
        ["A2", "Account 2", "25"],
        ["A3", "Account 3", "30"],
        ["A4", "Account 4", "40"],
        ["A6", "Account 6", "60"],
        ["A7", "Account 7", "70"],
    ])
}

fn snapshot_inserts_updates_and_deletes(kind: StoreKind) {
    let ws = workspace_on(kind, &accounts_config(""));
    ws.drop_file("accounts_20260101.csv", six_accounts());
    ws.dropsync(&["run"]).code(0).stdout_has(&[
        "accounts  2026-01-01  accounts_20260101.csv  success  rows 6 ok 6 rejected 0 skipped 0  +6 ~0 -0",
    ]);
    assert_eq!(accounts(&ws.db()), six_accounts_table());

    ws.drop_file("accounts_20260102.csv", day2());
    let out = ws.dropsync(&["run"]);
    out.code(0).stdout_has(&[
        "accounts  2026-01-02  accounts_20260102.csv  success  rows 6 ok 6 rejected 0 skipped 0  +1 ~1 -1",
    ]);
    let db = ws.db();
    assert_eq!(accounts(&db), day2_table());
    let runs = db.runs();
    assert_eq!(runs.len(), 2);
    let (first, second) = (&runs[0], &runs[1]);
    assert_eq!(
        (second.status.as_str(), second.trigger.as_str()),
        ("success", "manual")
    );
    assert_eq!(
        (
            second.inserted,
            second.updated,
            second.deleted,
            second.unchanged
        ),
        (1, 1, 1, 4)
    );
    assert_eq!(second.business_date.as_deref(), Some("2026-01-02"));
    assert!(
        out.stdout
            .contains(&format!("    run {}\n", second.execution_id)),
        "{out}"
    );
    // Only changed rows are rewritten; each row says which run wrote it.
    assert_eq!(
        db.rows(
            r#"SELECT "AccountID", _integration, _execution_id, _business_date FROM accounts
             WHERE "AccountID" IN ('A1', 'A2', 'A7') ORDER BY "AccountID""#
        ),
        table(&[
            ["A1", "accounts", &first.execution_id, "2026-01-01"],
            ["A2", "accounts", &second.execution_id, "2026-01-02"],
            ["A7", "accounts", &second.execution_id, "2026-01-02"],
        ])
    );
}

fn same_content_is_applied_once_unless_forced(kind: StoreKind) {
    let ws = with_six_accounts_on(kind, "");
    let first = ws.db().last_run();

    // A folder scan passes it over without a trace.
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&["nothing new to sync"]);
    assert_eq!(ws.db().runs().len(), 1);

    // Asked for explicitly, it is recorded as skipped.
    let file = ws.path("drops/accounts_20260101.csv");
    let file = file.to_str().unwrap();
    let out = ws.dropsync(&["ingest", "accounts", file]);
    out.code(0).stdout_has(&[
        "accounts  2026-01-01  accounts_20260101.csv  skipped",
        &format!(
            "the same content was already applied by run {} (accounts_20260101.csv); use --force to apply it again",
            first.execution_id
        ),
    ]);
    let skipped = ws.db().last_run();
    assert_eq!(
        (skipped.status.as_str(), skipped.trigger.as_str()),
        ("skipped", "ingest")
    );
    ws.dropsync(&["run", "--date", "2026-01-01"])
        .code(0)
        .stdout_has(&["skipped", "the same content was already applied"]);
    assert_eq!(ws.db().last_run().status, "skipped");

    // --force applies it again: nothing changes, and the run says it was forced.
    ws.dropsync(&["ingest", "accounts", file, "--force"])
        .code(0)
        .stdout_has(&[
            "accounts_20260101.csv  success  rows 6 ok 6 rejected 0 skipped 0  +0 ~0 -0",
        ]);
    let db = ws.db();
    let forced = db.last_run();
    assert_eq!(
        (forced.status.as_str(), forced.forced, forced.unchanged),
        ("success", true, 6)
    );
    assert_eq!(db.runs().len(), 4);
    assert_eq!(accounts(&db), six_accounts_table());
    drop(db);

    // The same bytes for another date are that date's export: applied,
    // changing nothing, and the state now stands as of that date.
    ws.drop_file("accounts_20260102.csv", six_accounts());
    ws.dropsync(&["run"]).code(0).stdout_has(&[
        "accounts  2026-01-02  accounts_20260102.csv  success  rows 6 ok 6 rejected 0 skipped 0  +0 ~0 -0",
    ]);
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&["nothing new to sync"]);
    assert_eq!(ws.db().runs().len(), 5);
}

fn a_changed_file_under_an_old_name_is_new_content(kind: StoreKind) {
    let ws = with_six_accounts_on(kind, "");
    ws.drop_file(
        "accounts_20260101.csv",
        six_accounts().replace(
            "A3,,Account 3,parent,pro,30",
            "A3,,Account 3,parent,pro,333",
        ),
    );
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&["accounts_20260101.csv  success", "+0 ~1 -0"]);
    assert_eq!(
        ws.db()
            .value(r#"SELECT "Seats" FROM accounts WHERE "AccountID" = 'A3'"#),
        "333"
    );
}

fn dry_run_prints_the_changes_and_writes_nothing(kind: StoreKind) {
    let ws = with_six_accounts_on(kind, "");
    ws.drop_file("accounts_20260102.csv", day2());
    let out = ws.dropsync(&["run", "--dry-run"]);
    out.code(0)
        .stdout_has(&[
            "accounts  2026-01-02  accounts_20260102.csv  success (dry run)  rows 6 ok 6 rejected 0 skipped 0  +1 ~1 -1",
            "    would delete A5\n",
            "    would insert A7\n",
            "    would update A2: Seats: 20 -> 25\n",
        ])
        .stdout_lacks(&["    run "]);
    let db = ws.db();
    assert_eq!(accounts(&db), six_accounts_table());
    assert_eq!(db.runs().len(), 1, "a dry run is not recorded");
    drop(db);

    // The file was not marked as seen: a real run applies it.
    ws.dropsync(&["run"]).code(0).stdout_has(&["+1 ~1 -1"]);
    assert_eq!(accounts(&ws.db()), day2_table());
}

fn dry_run_on_a_fresh_store_creates_no_table(kind: StoreKind) {
    let ws = workspace_on(kind, &accounts_config(""));
    ws.drop_file("accounts_20260101.csv", six_accounts());
    ws.dropsync(&["run", "--dry-run"]).code(0).stdout_has(&[
        "success (dry run)",
        "+6 ~0 -0",
        "would insert A1",
    ]);
    let db = ws.db();
    assert!(!db.table_exists("accounts"));
    assert!(db.runs().is_empty());
}

fn mass_delete_guard_refuses_a_truncated_snapshot_unless_forced(kind: StoreKind) {
    let ws = with_six_accounts_on(kind, "");
    let truncated = format!(
        "{ACCOUNTS_HEADER}A1,,Account 1,parent,pro,10,2020-01-01\nA2,,Account 2,parent,pro,20,2020-01-02\n"
    );
    ws.drop_file("accounts_20260102.csv", &truncated);
    let refusal = "refused: the file would delete 4 of the 6 rows held (66.7%, more than max_delete_ratio 20.0%); a truncated export? Re-run with --force if the deletes are meant";
    ws.dropsync(&["run"]).code(1).stdout_has(&[
        "accounts  2026-01-02  accounts_20260102.csv  failed  rows 2 ok 0 rejected 0 skipped 0  +0 ~0 -4",
        refusal,
    ]);
    let db = ws.db();
    assert_eq!(accounts(&db), six_accounts_table());
    let run = db.last_run();
    assert_eq!(run.status, "failed");
    assert_eq!(run.message.as_deref(), Some(refusal));
    assert_eq!((run.inserted, run.deleted), (0, 0), "nothing was applied");
    drop(db);

    // Not retried by a scan; a dry run says the same; --force applies it.
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&["nothing new to sync"]);
    ws.dropsync(&["run", "--date", "2026-01-02", "--dry-run"])
        .code(1)
        .stdout_has(&["failed (dry run)", refusal]);
    ws.dropsync(&["run", "--date", "2026-01-02", "--force"])
        .code(0)
        .stdout_has(&["accounts_20260102.csv  success", "+0 ~0 -4"]);
    let db = ws.db();
    assert_eq!(
        accounts(&db),
        table(&[["A1", "Account 1", "10"], ["A2", "Account 2", "20"]])
    );
    let run = db.last_run();
    assert_eq!(
        (run.status.as_str(), run.forced, run.deleted),
        ("success", true, 4)
    );
}

fn mass_delete_guard_threshold(kind: StoreKind) {
    // (max_delete_ratio, accounts kept of 6, refused?)
    let cases = [
        ("", 5, false),    // 1/6 = 16.7% <= 20% default
        ("", 4, true),     // 2/6 = 33.3% > 20%
        ("0.5", 3, false), // exactly 50% is allowed
        ("0.5", 2, true),
        ("0", 5, true),
        ("1", 0, false),
    ];
    for (ratio, kept, refused) in cases {
        let extra = if ratio.is_empty() {
            String::new()
        } else {
            format!("max_delete_ratio = {ratio}")
        };
        let ws = with_six_accounts_on(kind, &extra);
        let mut file = ACCOUNTS_HEADER.to_string();
        for line in six_accounts().lines().skip(1).take(kept) {
            file.push_str(line);
            file.push('\n');
        }
        ws.drop_file("accounts_20260102.csv", &file);
        let out = ws.dropsync(&["run"]);
        let case = format!("max_delete_ratio {ratio:?}, {kept} kept");
        let db = ws.db();
        if refused {
            assert_eq!(out.code, 1, "{case}: {out}");
            assert!(
                out.stdout.contains("refused: the file would delete"),
                "{case}: {out}"
            );
            assert_eq!(db.count("SELECT count(*) FROM accounts"), 6, "{case}");
            assert_eq!(db.last_run().status, "failed", "{case}");
        } else {
            assert_eq!(out.code, 0, "{case}: {out}");
            assert_eq!(
                db.count("SELECT count(*) FROM accounts"),
                kept as i64,
                "{case}"
            );
            assert_eq!(db.last_run().deleted, 6 - kept as i64, "{case}");
        }
    }
}

fn an_older_snapshot_does_not_roll_back_newer_state(kind: StoreKind) {
    let ws = with_six_accounts_on(kind, "");
    ws.drop_file("accounts_20260102.csv", day2());
    ws.dropsync(&["run"]).code(0);
    let old = six_accounts().replace("Account 1,parent,pro,10", "Account 1,parent,pro,11");
    ws.drop_file("accounts_20251231.csv", &old);
    let message = "a newer snapshot (2026-01-02) is already applied; applying 2025-12-31 would roll the data back. Use --force to apply it anyway";
    ws.dropsync(&["run"]).code(0).stdout_has(&[
        "accounts  2025-12-31  accounts_20251231.csv  skipped",
        message,
    ]);
    let db = ws.db();
    assert_eq!(accounts(&db), day2_table());
    let run = db.last_run();
    assert_eq!(
        (run.status.as_str(), run.message.as_deref()),
        ("skipped", Some(message))
    );
    drop(db);

    ws.dropsync(&["run", "--date", "2025-12-31"])
        .code(0)
        .stdout_has(&["skipped", message]);
    assert_eq!(accounts(&ws.db()), day2_table());

    ws.dropsync(&["run", "--date", "2025-12-31", "--force"])
        .code(0)
        .stdout_has(&["accounts_20251231.csv  success", "+1 ~2 -1"]);
    let db = ws.db();
    assert_eq!(
        db.rows(r#"SELECT "AccountID", "Seats" FROM accounts ORDER BY "AccountID""#),
        table(&[
            ["A1", "11"],
            ["A2", "20"],
            ["A3", "30"],
            ["A4", "40"],
            ["A5", "50"],
            ["A6", "60"],
        ])
    );
    assert!(db.last_run().forced);
}

fn a_stale_snapshot_is_reported_once_then_passed_over(kind: StoreKind) {
    let ws = with_six_accounts_on(kind, "");
    ws.drop_file("accounts_20260102.csv", day2());
    ws.dropsync(&["run"]).code(0);
    ws.drop_file(
        "accounts_20251231.csv",
        six_accounts().replace(",10,", ",11,"),
    );
    ws.dropsync(&["run"]).code(0).stdout_has(&["skipped"]);
    let runs = ws.db().runs().len();
    // The file has been seen and reported; the next scan has nothing new.
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&["nothing new to sync"]);
    assert_eq!(ws.db().runs().len(), runs, "no new run recorded");
}

const USAGE_CONFIG: &str = r#"
[integrations.usage]
dataset = "usage"
source = { type = "folder", path = "drops" }
pattern = "usage_{date:%Y-%m-%d}.csv"
"#;

const USAGE_HEADER: &str = "UserID,AccountID,Action,Module,Timestamp\n";

fn append_mode_stores_each_event_once(kind: StoreKind) {
    let ws = workspace_on(kind, USAGE_CONFIG);
    ws.drop_file(
        "usage_2026-01-01.csv",
        format!(
            "{USAGE_HEADER}\
             ada@example.org,A1,login,web,2026-01-01T08:00:00Z\n\
             ada@example.org,A1,export,reports,2026-01-01T08:05:00Z\n\
             bob@example.org,A2,login,web,2026-01-01T09:00:00+01:00\n\
             ada@example.org,A1,login,web,2026-01-01T08:00:00Z\n"
        ),
    );
    ws.dropsync(&["run"]).code(0).stdout_has(&[
        "usage  2026-01-01  usage_2026-01-01.csv  success  rows 4 ok 3 rejected 0 skipped 1  +3 ~0 -0",
    ]);
    // Day 2 re-delivers two events and brings one new one; day 1's events stay.
    ws.drop_file(
        "usage_2026-01-02.csv",
        format!(
            "{USAGE_HEADER}\
             ada@example.org,A1,export,reports,2026-01-01T08:05:00Z\n\
             bob@example.org,A2,login,web,2026-01-01T08:00:00Z\n\
             bob@example.org,A2,logout,web,2026-01-02T17:00:00Z\n"
        ),
    );
    ws.dropsync(&["run"]).code(0).stdout_has(&[
        "usage  2026-01-02  usage_2026-01-02.csv  success",
        "+1 ~0 -0",
    ]);
    let db = ws.db();
    assert_eq!(
        db.rows(
            r#"SELECT "UserID", "Action", CAST("Timestamp" AS VARCHAR) FROM usage
               ORDER BY "Timestamp", "UserID", "Action""#
        ),
        table(&[
            ["ada@example.org", "login", "2026-01-01 08:00:00"],
            ["bob@example.org", "login", "2026-01-01 08:00:00"],
            ["ada@example.org", "export", "2026-01-01 08:05:00"],
            ["bob@example.org", "logout", "2026-01-02 17:00:00"],
        ])
    );
    let run = db.last_run();
    assert_eq!(
        (run.input_rows, run.inserted, run.skipped_rows, run.deleted),
        (3, 1, 2, 0)
    );
}

fn append_mode_counts_add_up(kind: StoreKind) {
    let ws = workspace_on(kind, USAGE_CONFIG);
    let event = "ada@example.org,A1,login,web,2026-01-01T08:00:00Z\n";
    ws.drop_file("usage_2026-01-01.csv", format!("{USAGE_HEADER}{event}"));
    ws.dropsync(&["run"]).code(0);
    ws.drop_file(
        "usage_2026-01-02.csv",
        format!("{USAGE_HEADER}{event}bob@example.org,A2,login,web,2026-01-02T08:00:00Z\n"),
    );
    let out = ws.dropsync(&["run"]);
    let run = ws.db().last_run();
    assert_eq!(
        run.input_rows,
        run.success_rows + run.error_rows + run.skipped_rows,
        "{run:?}"
    );
    out.code(0)
        .stdout_has(&["rows 2 ok 1 rejected 0 skipped 1  +1 ~0 -0"]);
}

fn run_syncs_only_the_integrations_named(kind: StoreKind) {
    let ws = workspace_on(kind, &format!("{}{USAGE_CONFIG}", accounts_config("")));
    ws.drop_file("accounts_20260101.csv", six_accounts());
    ws.drop_file(
        "usage_2026-01-01.csv",
        format!("{USAGE_HEADER}ada@example.org,A1,login,web,2026-01-01T08:00:00Z\n"),
    );
    ws.dropsync(&["run", "usage"])
        .code(0)
        .stdout_has(&["usage  2026-01-01  usage_2026-01-01.csv  success"])
        .stdout_lacks(&["accounts_20260101.csv"]);
    assert!(!ws.db().table_exists("accounts"));
    ws.dropsync(&["run", "--all"])
        .code(0)
        .stdout_has(&["accounts  2026-01-01  accounts_20260101.csv  success"])
        .stdout_lacks(&["usage_2026-01-01.csv"]);
    assert_eq!(ws.db().runs().len(), 2);
}

#[test]
fn files_still_being_written_are_left_alone() {
    let ws = Workspace::new(
        "[integrations.accounts]\n\
         dataset = \"accounts\"\n\
         source = { type = \"folder\", path = \"drops\" }\n\
         pattern = \"accounts*\"\n",
    );
    for name in [
        ".accounts_20260101.csv",
        "accounts_20260101.csv.partial",
        "accounts_20260101.csv.tmp",
        "accounts_20260101.csv.filepart",
        "accounts_20260101.csv.crdownload",
    ] {
        ws.drop_file(name, six_accounts());
    }
    std::fs::create_dir_all(ws.path("drops/accounts_dir")).unwrap();
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&["nothing new to sync"]);
    ws.drop_file("accounts_full.csv", six_accounts());
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&["accounts_full.csv  success"]);
    assert_eq!(ws.db().runs().len(), 1);
}

crate::on_both_stores! {
    snapshot_inserts_updates_and_deletes => snapshot_inserts_updates_and_deletes;
    same_content_is_applied_once_unless_forced => same_content_is_applied_once_unless_forced;
    a_changed_file_under_an_old_name_is_new_content => a_changed_file_under_an_old_name_is_new_content;
    dry_run_prints_the_changes_and_writes_nothing => dry_run_prints_the_changes_and_writes_nothing;
    dry_run_on_a_fresh_store_creates_no_table => dry_run_on_a_fresh_store_creates_no_table;
    mass_delete_guard_refuses_a_truncated_snapshot_unless_forced => mass_delete_guard_refuses_a_truncated_snapshot_unless_forced;
    mass_delete_guard_threshold => mass_delete_guard_threshold;
    an_older_snapshot_does_not_roll_back_newer_state => an_older_snapshot_does_not_roll_back_newer_state;
    a_stale_snapshot_is_reported_once_then_passed_over => a_stale_snapshot_is_reported_once_then_passed_over;
    append_mode_stores_each_event_once => append_mode_stores_each_event_once;
    append_mode_counts_add_up => append_mode_counts_add_up;
    run_syncs_only_the_integrations_named => run_syncs_only_the_integrations_named;
}

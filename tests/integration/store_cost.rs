//! What the store writes for a batch, pinned while the statements that
//! write it are made cheaper: the change log's numbering over a batch large
//! enough for DuckDB to split it between threads, and its JSON for every
//! type a column can have, values JSON cannot hold included.

use serde_json::json;

use crate::common::*;
use crate::on_both_stores;

/// A user-defined dataset with every type a column can have.
const LEDGER: &str = r#"
[store]
schemas = "schemas"

[integrations.ledger]
dataset = "ledger"
source = { type = "folder", path = "drops" }
pattern = "ledger_{date:%Y%m%d}.csv"
max_delete_ratio = 1.0
"#;

const LEDGER_HEADER: &str = "Entry,Amount,Paid,Booked,Due,At,Year,Note\n";

fn every_type_is_logged_as_json_with_its_value(kind: StoreKind) {
    let ws = workspace_on(kind, LEDGER);
    ws.write("schemas/ledger.json", LEDGER_SCHEMA);
    // Values JSON cannot hold as numbers (NaN, infinities), text that needs
    // escaping, empty values, the ends of ranges.
    ws.drop_file(
        "ledger_20260101.csv",
        format!(
            "{LEDGER_HEADER}\
             1,NaN,true,2026-01-01T10:00:00Z,2026-01-31,08:30:00,2026,\"Zoë's \"\"quoted\"\" \\ note, line one\nline two\"\n\
             2,INF,false,2026-01-02T00:00:00.5Z,0001-01-01,23:59:59,1999,\n\
             3,-INF,,,,,,plain\n\
             4,1200,true,2026-01-04T12:00:00Z,2026-01-04,00:00:00,2026,\"tab\there\"\n\
             5,0.1,false,2026-01-05T00:00:00Z,2026-01-05,12:00:00,2026,five\n"
        ),
    );
    ws.dropsync(&["run"]).code(0);
    // Day 2: 1 gone, 2 and 4 changed (a NaN and an infinity among the old
    // and new values), 3 and 5 as they were, 6 new.
    ws.drop_file(
        "ledger_20260102.csv",
        format!(
            "{LEDGER_HEADER}\
             2,NaN,true,2026-01-02T00:00:00.5Z,0001-01-01,23:59:59,1999,now set\n\
             3,-INF,,,,,,plain\n\
             4,-0.5,true,2026-01-04T12:00:00Z,2026-01-04,00:00:00,2026,\"tab\there\"\n\
             5,0.1,false,2026-01-05T00:00:00Z,2026-01-05,12:00:00,2026,five\n\
             6,1e300,,,,,,\n"
        ),
    );
    ws.dropsync(&["run"]).code(0);

    // A number JSON cannot hold is logged as its text, which each store
    // spells its own way.
    let (nan, inf, minus_inf) = match kind {
        StoreKind::DuckDb => ("nan", "inf", "-inf"),
        StoreKind::Postgres => ("NaN", "Infinity", "-Infinity"),
    };
    let first_note = "Zoë's \"quoted\" \\ note, line one\nline two";
    let row = |entry: i64,
               amount: serde_json::Value,
               paid: serde_json::Value,
               booked: serde_json::Value,
               due: serde_json::Value,
               at: serde_json::Value,
               year: serde_json::Value,
               note: serde_json::Value| {
        json!({"Entry": entry, "Amount": amount, "Paid": paid, "Booked": booked, "Due": due,
               "At": at, "Year": year, "Note": note})
    };
    let null = serde_json::Value::Null;
    let one = row(
        1,
        json!(nan),
        json!(true),
        json!("2026-01-01 10:00:00"),
        json!("2026-01-31"),
        json!("08:30:00"),
        json!(2026),
        json!(first_note),
    );
    let two = row(
        2,
        json!(inf),
        json!(false),
        json!("2026-01-02 00:00:00.5"),
        json!("0001-01-01"),
        json!("23:59:59"),
        json!(1999),
        null.clone(),
    );
    let three = row(
        3,
        json!(minus_inf),
        null.clone(),
        null.clone(),
        null.clone(),
        null.clone(),
        null.clone(),
        json!("plain"),
    );
    let four = row(
        4,
        json!(1200.0),
        json!(true),
        json!("2026-01-04 12:00:00"),
        json!("2026-01-04"),
        json!("00:00:00"),
        json!(2026),
        json!("tab\there"),
    );
    let five = row(
        5,
        json!(0.1),
        json!(false),
        json!("2026-01-05 00:00:00"),
        json!("2026-01-05"),
        json!("12:00:00"),
        json!(2026),
        json!("five"),
    );
    let six = row(
        6,
        json!(1e300),
        null.clone(),
        null.clone(),
        null.clone(),
        null.clone(),
        null.clone(),
        null.clone(),
    );
    let change = |kind: &str, entry: i64, fields: serde_json::Value| {
        (kind.to_string(), json!({ "Entry": entry }), fields)
    };
    let mut want = vec![
        change("insert", 1, one.clone()),
        change("insert", 2, two),
        change("insert", 3, three),
        change("insert", 4, four),
        change("insert", 5, five),
        change("delete", 1, one),
        change(
            "update",
            2,
            json!({"Amount": [inf, nan], "Paid": [false, true], "Note": [null, "now set"]}),
        ),
        change("update", 4, json!({"Amount": [1200.0, -0.5]})),
        change("insert", 6, six),
    ];
    want.sort_by_key(|(kind, key, _)| (key.to_string(), kind.clone()));
    let mut logged = crate::changelog::logged(&ws, &["ledger"]);
    logged.sort_by_key(|(kind, key, _)| (key.to_string(), kind.clone()));
    assert_eq!(logged, want);
}

on_both_stores! {
    every_type_is_logged_as_json_with_its_value => every_type_is_logged_as_json_with_its_value;
}

/// More changes than one of DuckDB's row groups holds (122,880 rows), so
/// that the statements logging them run on several threads.
const LARGE_BATCH: usize = 130_000;

#[test]
fn a_batch_split_between_threads_numbers_its_changes_without_gaps_or_repeats() {
    let ws = Workspace::new(&accounts_config("max_delete_ratio = 1.0"));
    let mut day1 = String::from(ACCOUNTS_HEADER);
    for i in 0..LARGE_BATCH {
        day1.push_str(&format!("A{i},,Account {i},parent,pro,{i},2020-01-01\n"));
    }
    ws.drop_file("accounts_20260101.csv", &day1);
    ws.dropsync(&["run"]).code(0);
    // Day 2: every tenth account renamed, the last 1,000 gone, 1,000 new.
    let mut day2 = String::from(ACCOUNTS_HEADER);
    for i in 0..LARGE_BATCH - 1_000 {
        let name = if i % 10 == 0 {
            format!("Renamed {i}")
        } else {
            format!("Account {i}")
        };
        day2.push_str(&format!("A{i},,{name},parent,pro,{i},2020-01-01\n"));
    }
    for i in 0..1_000 {
        day2.push_str(&format!("N{i},,New {i},parent,free,1,2020-01-02\n"));
    }
    ws.drop_file("accounts_20260102.csv", &day2);
    ws.dropsync(&["run"]).code(0);

    let db = ws.db();
    let per_run = db.rows(
        "SELECT count(*), count(DISTINCT seq), min(seq), max(seq),
                count(*) FILTER (WHERE action = 'insert'), count(*) FILTER (WHERE action = 'update'),
                count(*) FILTER (WHERE action = 'delete')
         FROM dropsync_changes GROUP BY execution_id ORDER BY min(seq)",
    );
    let day1_rows = LARGE_BATCH.to_string();
    let updates = (LARGE_BATCH - 1_000).div_ceil(10);
    let day2_rows = (updates + 2_000).to_string();
    assert_eq!(
        per_run,
        vec![
            vec![
                day1_rows.clone(),
                day1_rows.clone(),
                "1".to_string(),
                day1_rows.clone(),
                day1_rows.clone(),
                "0".to_string(),
                "0".to_string(),
            ],
            vec![
                day2_rows.clone(),
                day2_rows.clone(),
                (LARGE_BATCH + 1).to_string(),
                (LARGE_BATCH + updates + 2_000).to_string(),
                "1000".to_string(),
                updates.to_string(),
                "1000".to_string(),
            ],
        ]
    );
    // Each run's place in the log is the highest number when it committed.
    assert_eq!(
        db.rows("SELECT last_seq FROM dropsync_change_runs ORDER BY last_seq"),
        vec![
            vec![day1_rows],
            vec![(LARGE_BATCH + updates + 2_000).to_string()]
        ]
    );
}

/// Day 2 of `with_six_accounts`: A1..A3 as they were, A4 and A5 changed,
/// A6 gone, A7 new.
fn day_two() -> String {
    let mut s = ACCOUNTS_HEADER.to_string();
    for i in 1..=3 {
        s.push_str(&format!(
            "A{i},,Account {i},parent,pro,{},2020-01-0{i}\n",
            i * 10
        ));
    }
    s.push_str("A4,,Account 4,parent,pro,41,2020-01-04\n");
    s.push_str("A5,,Account Five,parent,pro,50,2020-01-05\n");
    s.push_str("A7,,Account 7,parent,pro,70,2020-01-07\n");
    s
}

/// A DuckDB store keeps a hash of each row, and a sync trusts it only to
/// say "unchanged": rows whose stored hash is missing (a store made before
/// rows kept one) or made another way (another DuckDB) are compared value
/// by value, counted and logged as what they are, and get their hash back.
#[test]
fn rows_whose_stored_hash_cannot_be_trusted_are_compared_by_value() {
    let after_day_two = table(&[
        ["A1", "Account 1", "10"],
        ["A2", "Account 2", "20"],
        ["A3", "Account 3", "30"],
        ["A4", "Account 4", "41"],
        ["A5", "Account Five", "50"],
        ["A7", "Account 7", "70"],
    ]);
    for breakage in [
        // A store of a version before rows kept a hash.
        "ALTER TABLE accounts DROP COLUMN _row_hash",
        // Hashes that match no row: unchanged A1, A2 and changed A4 among them.
        "UPDATE accounts SET _row_hash = 42 WHERE \"AccountID\" IN ('A1', 'A2', 'A4')",
    ] {
        let ws = with_six_accounts_on(StoreKind::DuckDb, "");
        ws.alter_store(breakage);
        ws.drop_file("accounts_20260102.csv", day_two());
        ws.dropsync(&["run"]).code(0);
        // What `changes` says day 2 changed, as (kind, AccountID) sorted.
        let mut day_two_changes: Vec<(String, String)> =
            crate::changelog::logged(&ws, &["accounts", "--since", "2026-01-02"])
                .into_iter()
                .map(|(kind, key, _)| (kind, key["AccountID"].as_str().unwrap().to_string()))
                .collect();
        day_two_changes.sort();
        let db = ws.db();
        let run = db.last_run();
        assert_eq!(
            (run.inserted, run.updated, run.deleted, run.unchanged),
            (1, 2, 1, 3),
            "{breakage}"
        );
        assert_eq!(accounts(&db), after_day_two, "{breakage}");
        assert_eq!(
            day_two_changes,
            [
                ("delete", "A6"),
                ("insert", "A7"),
                ("update", "A4"),
                ("update", "A5")
            ]
            .map(|(kind, key)| (kind.to_string(), key.to_string())),
            "{breakage}"
        );
        // Every row now holds the hash a sync makes: the same file again
        // finds every row unchanged, with no row left to compare.
        assert_eq!(
            db.count("SELECT count(DISTINCT _row_hash) FROM accounts WHERE _row_hash <> 42"),
            6,
            "{breakage}"
        );
        drop(db);
        ws.dropsync(&["run", "--date", "2026-01-02", "--force"])
            .code(0);
        let run = ws.db().last_run();
        assert_eq!(
            (run.inserted, run.updated, run.deleted, run.unchanged),
            (0, 0, 0, 6),
            "{breakage}"
        );
    }
}

/// In delta mode a record re-sent unchanged is confirmed (its date moves
/// up) even when its stored hash cannot be trusted, and the same pass gives
/// it its hash; a late file of an older date then finds it newer.
#[test]
fn a_delta_confirms_a_resent_record_whose_stored_hash_cannot_be_trusted() {
    use crate::changelog::{NEWSLETTER, SUBSCRIBERS_HEADER};
    let ws = workspace_on(StoreKind::DuckDb, NEWSLETTER);
    ws.drop_file(
        "subscribers_20261101.csv",
        format!("{SUBSCRIBERS_HEADER}NEWS,ann@x.org,subscribed,,,Ann,Ash\nNEWS,bob@x.org,subscribed,,,Bob,Birch\n"),
    );
    ws.dropsync(&["run"]).code(0);
    ws.alter_store("UPDATE subscribers SET _row_hash = 42");
    ws.drop_file(
        "subscribers_20261103.csv",
        format!("{SUBSCRIBERS_HEADER}NEWS,ann@x.org,subscribed,,,Ann,Ash\nNEWS,bob@x.org,unsubscribed,2026-11-03,moved,Bob,Birch\n"),
    );
    ws.dropsync(&["run"]).code(0).stdout_has(&[
        "subscribers_20261103.csv  success  rows 2 ok 2 rejected 0 skipped 0  +0 ~1 -0  subscribed 0 unsubscribed 1\n",
    ]);
    assert_eq!(
        ws.db().rows(
            r#"SELECT "Email", CAST(_business_date AS VARCHAR), _row_hash = 42 FROM subscribers ORDER BY "Email""#
        ),
        table(&[
            ["ann@x.org", "2026-11-03", "false"],
            ["bob@x.org", "2026-11-03", "false"],
        ])
    );
    ws.drop_file(
        "subscribers_20261102.csv",
        format!("{SUBSCRIBERS_HEADER}NEWS,ann@x.org,unsubscribed,2026-11-02,spam,Ann,Ash\n"),
    );
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&["1 row left alone: the stored row is from a later business date"]);
    // Ann's record was confirmed, not changed: of 2026-11-03, the log
    // holds Bob's update only.
    assert_eq!(
        ws.db()
            .count("SELECT count(*) FROM dropsync_changes WHERE business_date = DATE '2026-11-03'"),
        1
    );
}

/// Two integrations of one dataset share its table. A snapshot sync looks
/// its file's rows up among its own integration's stored rows only: a row
/// the other integration holds with the same values is still new to it.
fn a_row_another_integration_holds_alike_is_still_new(kind: StoreKind) {
    let two = "[integrations.crm_us]\n\
               dataset = \"accounts\"\n\
               source = { type = \"folder\", path = \"drops\" }\n\
               pattern = \"us_{date:%Y%m%d}.csv\"\n\
               [integrations.crm_eu]\n\
               dataset = \"accounts\"\n\
               source = { type = \"folder\", path = \"drops\" }\n\
               pattern = \"eu_{date:%Y%m%d}.csv\"\n";
    let ws = workspace_on(kind, two);
    let row = |i: usize| format!("A{i},,Account {i},parent,pro,{},2020-01-0{i}\n", i * 10);
    ws.drop_file("us_20260101.csv", six_accounts());
    ws.drop_file("eu_20260101.csv", format!("{ACCOUNTS_HEADER}{}", row(1)));
    ws.dropsync(&["run"]).code(0);
    // The EU export adds A2, which the US integration holds with the same values.
    ws.drop_file(
        "eu_20260102.csv",
        format!("{ACCOUNTS_HEADER}{}{}", row(1), row(2)),
    );
    ws.dropsync(&["run"]).code(0);
    let db = ws.db();
    let run = db.last_run();
    assert_eq!(run.integration, "crm_eu");
    assert_eq!(
        (run.inserted, run.updated, run.deleted, run.unchanged),
        (1, 0, 0, 1)
    );
    assert_eq!(
        db.rows(
            r#"SELECT _integration, count(*), string_agg("AccountID", ',' ORDER BY "AccountID")
               FROM accounts GROUP BY _integration ORDER BY _integration"#
        ),
        table(&[
            ["crm_eu", "2", "A1,A2"],
            ["crm_us", "6", "A1,A2,A3,A4,A5,A6"]
        ])
    );
}

on_both_stores! {
    a_row_another_integration_holds_alike_is_still_new => a_row_another_integration_holds_alike_is_still_new;
}

//! Table Schema conformance through the real binary: typed comparisons,
//! the types and constraints the spec defines, and a clear refusal of what
//! dropsync does not support. The cell-by-cell table is the unit test
//! `schema::conformance`; these check that a user sees the same.

use crate::common::{StoreKind, Workspace, table, workspace_on};

const BILLING_CONFIG: &str = r#"
[store]
schemas = "schemas"

[integrations.billing]
dataset = "billing"
source = { type = "folder", path = "drops" }
pattern = "billing_{date:%Y%m%d}.csv"
on_error = { policy = "skip", max_ratio = 0.9 }
"#;

/// A billing export's schema, with the types CRM and billing exports carry.
const BILLING_SCHEMA: &str = r#"{
  "fields": [
    {"name": "Invoice", "type": "integer"},
    {"name": "Plan", "type": "integer", "constraints": {"enum": ["1", "2"]}},
    {"name": "Rate", "type": "number", "constraints": {"enum": [1.5, 2], "exclusiveMinimum": 0}},
    {"name": "Paid", "type": "boolean", "constraints": {"enum": [true]}},
    {"name": "Contact", "type": "string", "format": "email"},
    {"name": "Issued", "type": "datetime"},
    {"name": "Due", "type": "date", "format": "fmt:%d/%m/%Y"},
    {"name": "Cutoff", "type": "time"},
    {"name": "FiscalYear", "type": "year"},
    {"name": "Period", "type": "yearmonth"},
    {"name": "Term", "type": "duration"}
  ],
  "primaryKey": "Invoice",
  "fieldsMatch": "equal",
  "dropsync": {"mode": "snapshot"}
}"#;

const BILLING_HEADER: &str =
    "Invoice,Plan,Rate,Paid,Contact,Issued,Due,Cutoff,FiscalYear,Period,Term\n";

/// issue 13: constraints apply to parsed values, keys are typed, and the
/// types and spellings the spec defines are read, and stored typed.
fn billing_export_is_checked_by_typed_value(kind: StoreKind) {
    let ws = workspace_on(kind, BILLING_CONFIG);
    ws.write("schemas/billing.json", BILLING_SCHEMA);
    ws.drop_file(
        "billing_20260201.csv",
        format!(
            "{BILLING_HEADER}\
             01,01,2.0,TRUE,ann@example.com,2026-01-31T10:20:30Z,28/02/2026,17:30:00,2026,2026-01,P1M\n\
             2,2,1.5,true,a@@b.example,2026-01-31T10:20:30Z,28/02/2026,17:30:00,2026,2026-01,P1M\n\
             3,2,1.5,true,bob@example.com,2026-01-31T10:20Z,28/02/2026,17:30:00,2026,2026-01,P1M\n\
             4,2,1.5,true,cy@example.com,2026-01-31T10:20:30Z,28/02/2026,17:30,2026,2026-13,P1M\n\
             5,2,1.5,true,di@example.com,2026-01-31T10:20:30Z,28/02/2026,17:30:00,2026,2026-02,P2W\n\
             05,2,1.5,true,ed@example.com,2026-01-31T10:20:30Z,28/02/2026,17:30:00,2026,2026-02,P1D\n"
        ),
    );
    let out = ws.dropsync(&["run"]);
    out.code(3).stdout_has(&[
        "billing  2026-02-01  billing_20260201.csv  partial  rows 6 ok 1 rejected 5 skipped 0  +1 ~0 -0\n",
        "line 3 [2] Contact: `a@@b.example` is not a valid email\n",
        "line 4 [3] Issued: `2026-01-31T10:20Z` is not a datetime",
        "line 5 [4] Cutoff: `17:30` is not a time",
        "line 5 [4] Period: `2026-13` is not a year and month",
        "line 6 [5] Invoice: duplicate key `5` (lines 6, 7)\n",
    ]);
    let db = ws.db();
    let run = db.last_run();
    let line7: Vec<String> = db
        .row_errors(&run.execution_id)
        .into_iter()
        .filter(|e| e.line == 7)
        .map(|e| format!("{:?} {}", e.record_key, e.message))
        .collect();
    assert_eq!(line7, [r#"Some("05") duplicate key `5` (lines 6, 7)"#]);
    assert_eq!(
        db.rows(
            r#"SELECT "Invoice", "Plan", "Rate", "Paid", CAST("Issued" AS VARCHAR), CAST("Due" AS VARCHAR),
                    CAST("Cutoff" AS VARCHAR), "FiscalYear", "Period", "Term"
             FROM billing"#
        ),
        table(&[[
            "1",
            "1",
            "2",
            "true",
            "2026-01-31 10:20:30",
            "2026-02-28",
            "17:30:00",
            "2026",
            "2026-01",
            "P1M",
        ]])
    );
    // A time of day is stored as one, by the name each database gives it.
    assert_eq!(
        db.value(
            "SELECT lower(data_type) FROM information_schema.columns
             WHERE table_name = 'billing' AND column_name = 'Cutoff'"
        ),
        match kind {
            StoreKind::DuckDb => "time",
            StoreKind::Postgres => "time without time zone",
        }
    );

    drop(db);

    // The next day's export spells the same invoice `1`: it is the same row.
    ws.drop_file(
        "billing_20260202.csv",
        format!(
            "{BILLING_HEADER}\
             1,1,2,1,ann@example.com,2026-01-31T11:20:30+01:00,28/02/2026,17:30:00,2026,2026-01,P1M\n"
        ),
    );
    ws.dropsync(&["run"]).code(0).stdout_has(&[
        "billing  2026-02-02  billing_20260202.csv  success  rows 1 ok 1 rejected 0 skipped 0  +0 ~0 -0\n",
    ]);
}

/// A schema asking for something dropsync would not enforce is refused by
/// name, not loaded and ignored.
#[test]
fn unsupported_schema_features_are_refused_by_name() {
    let ws = Workspace::new(BILLING_CONFIG);
    let file = ws.write("drops/points.csv", "Where\n1 2\n");
    let cases = [
        (
            r#"{"fields": [{"name": "Where", "type": "geopoint"}]}"#,
            "field type `geopoint` is not supported by dropsync",
        ),
        (
            r#"{"fields": [{"name": "Where", "type": "string", "format": "hostname"}]}"#,
            "field `Where`: string format `hostname` is not supported",
        ),
        (
            r#"{"fields": [{"name": "Where", "type": "string", "constraints": {"jsonSchema": {}}}]}"#,
            "unknown field `jsonSchema`",
        ),
        (
            r#"{"fields": [{"name": "Where", "type": "duration", "constraints": {"minimum": "P1D"}}]}"#,
            "field `Where`: constraint `minimum` is not supported for type duration",
        ),
    ];
    for (schema, message) in cases {
        ws.write("schemas/points.json", schema);
        ws.dropsync(&[
            "validate",
            "--dataset",
            "points",
            "--schemas",
            ws.path("schemas").to_str().unwrap(),
            file.to_str().unwrap(),
        ])
        .code(2)
        .stderr_has(&["points.json", message]);
    }
}

/// Hardening issue: `a@@b.example` and `x@y@z.example` passed the email
/// format, so a user was inserted, then deleted the next day.
#[test]
fn user_ids_that_are_not_addresses_are_rejected() {
    let ws = Workspace::new(BILLING_CONFIG);
    let file = ws.write(
        "drops/users.csv",
        "UserID,AccountID,FirstName,LastName,Role,Active,LastLogin\n\
         ann@example.com,A1,Ann,A,admin,true,\n\
         a@@b.example,A1,B,B,member,true,\n\
         x@y@z.example,A1,X,Y,member,true,\n\
         \"Cy <cy@example.com>\",A1,Cy,C,member,true,\n\
         \"d@example.com,e@example.com\",A1,D,E,member,true,\n",
    );
    ws.dropsync(&["validate", "--dataset", "users", file.to_str().unwrap()])
        .code(1)
        .stdout_has(&[
            "5 rows, 1 valid, 4 rejected",
            "line 3 [a@@b.example] UserID: `a@@b.example` is not a valid email",
            "line 4 [x@y@z.example] UserID: `x@y@z.example` is not a valid email",
            "line 5 [Cy <cy@example.com>] UserID:",
            "line 6 [d@example.com,e@example.com] UserID:",
        ]);
}

/// A row rejected today keeps its stored copy, found by its typed key:
/// today's file spells the key `01` and `11:20:30.25+01:00`, the store holds
/// `1` and `10:20:30.25`.
fn a_rejected_row_keeps_its_stored_copy_whatever_the_key_spelling(kind: StoreKind) {
    let ws = workspace_on(
        kind,
        r#"
[store]
schemas = "schemas"

[integrations.meters]
dataset = "meters"
source = { type = "folder", path = "drops" }
pattern = "meters_{date:%Y%m%d}.csv"
on_error = { policy = "skip", max_ratio = 0.5 }
"#,
    );
    ws.write(
        "schemas/meters.json",
        r#"{
          "fields": [
            {"name": "Meter", "type": "integer"},
            {"name": "ReadAt", "type": "datetime"},
            {"name": "Reading", "type": "number", "constraints": {"minimum": 0}}
          ],
          "primaryKey": ["Meter", "ReadAt"],
          "dropsync": {"mode": "snapshot"}
        }"#,
    );
    let day = |n: u32, first: &str| {
        let mut text = format!("Meter,ReadAt,Reading\n{first}\n");
        for meter in 2..=5 {
            text.push_str(&format!("{meter},2026-01-31T10:20:30Z,{n}\n"));
        }
        text
    };
    ws.drop_file(
        "meters_20260201.csv",
        day(1, "1,2026-01-31T10:20:30.250Z,7.5"),
    );
    ws.dropsync(&["run"]).code(0).stdout_has(&["+5 ~0 -0\n"]);
    ws.drop_file(
        "meters_20260202.csv",
        day(2, "01,2026-01-31T11:20:30.25+01:00,-1"),
    );
    ws.dropsync(&["run"]).code(3).stdout_has(&[
        "rows 5 ok 4 rejected 1 skipped 0  +0 ~4 -0\n",
        "line 2 [01|2026-01-31T11:20:30.25+01:00] Reading: `-1` is less than the minimum 0\n",
    ]);
    assert_eq!(
        ws.db().rows(
            r#"SELECT "Meter", CAST("ReadAt" AS VARCHAR), "Reading" FROM meters WHERE "Meter" = 1"#
        ),
        table(&[["1", "2026-01-31 10:20:30.25", "7.5"]])
    );
}

crate::on_both_stores! {
    billing_export_is_checked_by_typed_value => billing_export_is_checked_by_typed_value;
    a_rejected_row_keeps_its_stored_copy_whatever_the_key_spelling => a_rejected_row_keeps_its_stored_copy_whatever_the_key_spelling;
}

//! One test per bug found, named after it, and for the rules added with the
//! fixes: each pins what a user saw go wrong.

use crate::common::{StoreKind, Workspace, dropsync_in, table, workspace_on};

const SUBSCRIBERS: &str = r#"
[integrations.newsletter]
dataset = "subscribers"
source = { type = "folder", path = "drops" }
pattern = "subscribers_{date:%Y%m%d}.csv"
"#;

const SUB_HEADER: &str =
    "ListID,Email,Status,UnsubscribedDate,UnsubscribeReason,FirstName,LastName\n";

/// A late file of changed records must not roll back what a later date
/// already said about the same record; --force applies it anyway.
fn a_late_delta_file_does_not_override_newer_records(kind: StoreKind) {
    let ws = workspace_on(kind, SUBSCRIBERS);
    ws.drop_file(
        "subscribers_20260105.csv",
        format!("{SUB_HEADER}NEWS,ann@example.org,unsubscribed,2026-01-05,bounced,Ann,Ash\n"),
    );
    ws.dropsync(&["run"]).code(0);
    ws.drop_file(
        "subscribers_20260103.csv",
        format!(
            "{SUB_HEADER}NEWS,ann@example.org,subscribed,,,Ann,Ash\nNEWS,bob@example.org,subscribed,,,Bob,Birch\n"
        ),
    );
    ws.dropsync(&["run"]).code(0).stdout_has(&[
        "newsletter  2026-01-03  subscribers_20260103.csv  success  rows 2 ok 1 rejected 0 skipped 1  +1 ~0 -0  subscribed 1 unsubscribed 0\n",
        "1 row left alone: the stored row is from a later business date (--force applies them)",
    ]);
    let status = r#"SELECT "Email", "Status", CAST(_business_date AS VARCHAR) FROM subscribers ORDER BY "Email""#;
    assert_eq!(
        ws.db().rows(status),
        table(&[
            ["ann@example.org", "unsubscribed", "2026-01-05"],
            ["bob@example.org", "subscribed", "2026-01-03"],
        ])
    );
    ws.dropsync(&["run", "--date", "2026-01-03", "--force"])
        .code(0)
        .stdout_has(&["+0 ~1 -0  subscribed 1 unsubscribed 0\n"]);
    assert_eq!(
        ws.db().rows(status),
        table(&[
            ["ann@example.org", "subscribed", "2026-01-03"],
            ["bob@example.org", "subscribed", "2026-01-03"],
        ])
    );
}

const USAGE: &str = r#"
[integrations.usage]
dataset = "usage"
source = { type = "folder", path = "drops" }
pattern = "usage_{date:%Y%m%d}.csv"
on_error = { policy = "skip", max_ratio = 0.9 }
"#;

/// The same invalid event twice counts as two rejected rows, not as a
/// rejected row plus a skipped duplicate (the counts overran the input).
fn a_repeated_invalid_event_is_rejected_not_skipped(kind: StoreKind) {
    let ws = workspace_on(kind, USAGE);
    ws.drop_file(
        "usage_20260101.csv",
        "UserID,AccountID,Action,Module,Timestamp\n\
         a@x.io,A,login,web,yesterday\n\
         a@x.io,A,login,web,yesterday\n\
         b@x.io,A,login,web,2026-01-01T00:00:00Z\n\
         b@x.io,A,login,web,2026-01-01T00:00:00Z\n",
    );
    ws.dropsync(&["run"])
        .code(3)
        .stdout_has(&["partial  rows 4 ok 1 rejected 2 skipped 1  +1 ~0 -0\n"]);
    let out = dropsync_in(
        &ws.root,
        &["validate", "--dataset", "usage", "drops/usage_20260101.csv"],
    );
    out.code(1).stdout_has(&[
        "drops/usage_20260101.csv: 4 rows, 1 valid, 2 rejected, 1 duplicates skipped\n",
    ]);
}

const ACCOUNTS: &str = r#"
[integrations.accounts]
dataset = "accounts"
source = { type = "folder", path = "drops" }
pattern = "accounts_{date:%Y%m%d}.csv"
"#;

/// A file fetched before and unchanged (same name, size and modification
/// time) is recognised without being read or staged again.
#[test]
fn a_scan_does_not_stage_known_files_again() {
    let ws = Workspace::new(ACCOUNTS);
    ws.drop_file(
        "accounts_20260101.csv",
        "AccountID,ParentID,Name,Type,Plan,Seats,CreatedDate\nA,,Acme,parent,pro,3,2020-01-01\n",
    );
    ws.dropsync(&["run"]).code(0);
    let staging = ws.path("staging/accounts");
    let staged: Vec<_> = std::fs::read_dir(&staging).unwrap().flatten().collect();
    assert_eq!(staged.len(), 1, "one staged copy");
    std::fs::remove_file(staged[0].path()).unwrap();
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&["nothing new to sync\n"]);
    assert_eq!(
        std::fs::read_dir(&staging).unwrap().count(),
        0,
        "the known file was not staged again"
    );
    // Asked for by date, it is read again, and reported as already applied.
    ws.dropsync(&["run", "--date", "2026-01-01"])
        .code(0)
        .stdout_has(&["skipped", "the same content was already applied by run"]);
    ws.dropsync(&["run", "--date", "2026-01-02"])
        .code(0)
        .stdout_has(&["no file for 2026-01-02\n"]);
}

/// A user adds a dataset by adding a Table Schema file; its types, formats
/// and constraints are applied as the schema says.
fn a_schema_file_adds_a_dataset(kind: StoreKind) {
    let ws = workspace_on(
        kind,
        r#"
[store]
schemas = "schemas"

[integrations.invoices]
dataset = "invoices"
source = { type = "folder", path = "drops" }
pattern = "invoices_{date:%Y%m%d}.csv"
csv = { delimiter = ";" }
on_error = { policy = "skip", max_ratio = 0.9 }
"#,
    );
    ws.write(
        "schemas/invoices.json",
        r#"{
          "fields": [
            {"name": "Invoice", "type": "string", "constraints": {"minLength": 3}},
            {"name": "Issued", "type": "date", "format": "%d/%m/%Y",
             "constraints": {"minimum": "2020-01-01"}},
            {"name": "Amount", "type": "number", "bareNumber": false,
             "decimalChar": ",", "groupChar": ".", "constraints": {"maximum": 100000}},
            {"name": "Paid", "type": "boolean", "trueValues": ["ja"], "falseValues": ["nein"]},
            {"name": "Lines", "type": "integer", "missingValues": ["-"]}
          ],
          "primaryKey": "Invoice",
          "missingValues": [""],
          "fieldsMatch": "equal",
          "dropsync": {"mode": "delta"}
        }"#,
    );
    ws.drop_file(
        "invoices_20260101.csv",
        "Paid;Invoice;Issued;Amount;Lines\n\
         ja;INV-1;31/12/2025;€ 1.234,50;3\n\
         nein;INV-2;01/01/2026;99,9 EUR;-\n\
         ja;I3;01/01/2026;1;1\n\
         ja;INV-4;31/12/2019;1;1\n\
         vielleicht;INV-5;2026-01-01;200.000,00;x\n",
    );
    let out = ws.dropsync(&["run"]);
    out.code(3).stdout_has(&[
        "invoices  2026-01-01  invoices_20260101.csv  partial  rows 5 ok 2 rejected 3 skipped 0  +2 ~0 -0\n",
        "line 4 [I3] Invoice: is 2 characters, fewer than 3\n",
        "line 5 [INV-4] Issued: `31/12/2019` is less than the minimum 2020-01-01\n",
    ]);
    let db = ws.db();
    assert_eq!(
        db.rows(
            r#"SELECT "Invoice", CAST("Issued" AS VARCHAR), "Amount", "Paid",
                    coalesce(CAST("Lines" AS VARCHAR), 'NULL')
             FROM invoices ORDER BY "Invoice""#
        ),
        table(&[
            ["INV-1", "2025-12-31", "1234.5", "true", "3"],
            ["INV-2", "2026-01-01", "99.9", "false", "NULL"],
        ])
    );
    let run = db.runs().pop().expect("one run");
    let errors: Vec<String> = db
        .row_errors(&run.execution_id)
        .into_iter()
        .filter(|e| e.line == 6)
        .map(|e| format!("{}: {}", e.field.unwrap_or_default(), e.message))
        .collect();
    assert_eq!(
        errors,
        [
            "Issued: `2026-01-01` is not a date in the format `%d/%m/%Y`",
            "Amount: `200.000,00` is more than the maximum 100000",
            "Paid: `vielleicht` is not a boolean",
            "Lines: `x` is not an integer",
        ]
    );
}

crate::on_both_stores! {
    a_late_delta_file_does_not_override_newer_records => a_late_delta_file_does_not_override_newer_records;
    a_repeated_invalid_event_is_rejected_not_skipped => a_repeated_invalid_event_is_rejected_not_skipped;
    a_schema_file_adds_a_dataset => a_schema_file_adds_a_dataset;
}

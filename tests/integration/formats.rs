//! Drop formats beyond CSV: JSON, JSON Lines, xlsx, and any of them in gzip
//! or zip. Each goes through the real binary and must end as the same CSV
//! would: the same rows stored, the same rows rejected on the same lines
//! (sheet rows, JSON lines), with the record's own text as its raw row.

use std::io::Write;

#[path = "xlsx_writer.rs"]
pub mod xlsx_writer;

use crate::common::{ACCOUNTS_HEADER, Workspace, table};
use xlsx_writer::{Cell, date, text, workbook, zip_of};

/// An accounts integration reading `accounts_YYYYMMDD.EXT`.
fn config(extension: &str, extra: &str) -> String {
    format!(
        "[integrations.accounts]\n\
         dataset = \"accounts\"\n\
         source = {{ type = \"folder\", path = \"drops\" }}\n\
         pattern = \"accounts_{{date:%Y%m%d}}.{extension}\"\n\
         on_error = {{ max_ratio = 0.5 }}\n\
         {extra}\n"
    )
}

/// Seven accounts, A7 with negative seats (rejected: line 8 in every
/// format below), A1 with a Region beyond the schema.
fn accounts_csv() -> String {
    let mut s = ACCOUNTS_HEADER.trim_end().to_string() + ",Region\n";
    for i in 1..=7 {
        let seats = if i == 7 { -5 } else { i * 10 };
        let region = if i == 1 { "EMEA" } else { "" };
        s.push_str(&format!(
            "A{i},,Account {i},parent,pro,{seats},2020-01-0{i},{region}\n"
        ));
    }
    s
}

/// The same accounts as JSON objects, one a line.
fn account_objects() -> Vec<String> {
    (1..=7)
        .map(|i| {
            let seats = if i == 7 { -5 } else { i * 10 };
            let region = if i == 1 { r#", "Region": "EMEA""# } else { "" };
            format!(
                r#"{{"AccountID": "A{i}", "ParentID": null, "Name": "Account {i}", "Type": "parent", "Plan": "pro", "Seats": {seats}.0, "CreatedDate": "2020-01-0{i}"{region}}}"#
            )
        })
        .collect()
}

fn stored(ws: &Workspace) -> Vec<Vec<String>> {
    ws.db().rows(
        "SELECT AccountID, coalesce(ParentID, 'NULL'), Name, Type, Plan, Seats,
                CAST(CreatedDate AS VARCHAR), coalesce(_attributes, 'NULL')
         FROM accounts ORDER BY AccountID",
    )
}

/// What the CSV export of the same accounts leaves in the store.
fn as_csv_stores() -> Vec<Vec<String>> {
    let ws = Workspace::new(&config("csv", ""));
    ws.drop_file("accounts_20260101.csv", accounts_csv());
    ws.dropsync(&["run"]).code(3);
    let rows = stored(&ws);
    assert_eq!(rows.len(), 6, "{rows:?}");
    assert_eq!(rows[0][7], r#"{"Region":"EMEA"}"#);
    rows
}

fn gzip(content: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(content).unwrap();
    encoder.finish().unwrap()
}

/// The one row error of the last run: (line, field, message, raw).
fn only_error(ws: &Workspace) -> (i64, Option<String>, String, Option<String>) {
    let run = ws.db().last_run();
    let errors = ws.db().row_errors(&run.execution_id);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = errors.into_iter().next().unwrap();
    (e.line, e.field, e.message, e.raw)
}

#[test]
fn a_json_array_syncs_as_its_csv_would_with_lines_and_raw_objects_in_errors() {
    let ws = Workspace::new(&config("json", ""));
    let objects = account_objects();
    ws.drop_file(
        "accounts_20260101.json",
        format!("[\n{}\n]\n", objects.join(",\n")),
    );
    ws.dropsync(&["run"]).code(3).stdout_has(&[
        "accounts_20260101.json  partial  rows 7 ok 6 rejected 1",
        "line 8 [A7] Seats:",
    ]);
    assert_eq!(stored(&ws), as_csv_stores());
    let (line, field, _, raw) = only_error(&ws);
    assert_eq!((line, field.as_deref()), (8, Some("Seats")));
    assert_eq!(raw.as_deref(), Some(objects[6].as_str()));
}

#[test]
fn gzipped_json_lines_sync_as_their_csv_would_and_a_malformed_line_is_a_row_error() {
    let ws = Workspace::new(&config("jsonl.gz", ""));
    let mut lines = account_objects();
    // Line 8: cut short, as a crashed exporter leaves it. (No header line:
    // A7 is on line 7 here.)
    lines.push(r#"{"AccountID": "A8", "Name": "Acc"#.to_string());
    ws.drop_file(
        "accounts_20260101.jsonl.gz",
        gzip(format!("{}\n", lines.join("\n")).as_bytes()),
    );
    ws.dropsync(&["run"]).code(3).stdout_has(&[
        "rows 8 ok 6 rejected 2",
        "line 7 [A7] Seats:",
        "line 8: malformed JSON at column 32: EOF while parsing a string",
    ]);
    assert_eq!(stored(&ws), as_csv_stores());
    let run = ws.db().last_run();
    let errors = ws.db().row_errors(&run.execution_id);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(
        (errors[0].line, errors[0].raw.as_deref()),
        (7, Some(lines[6].as_str()))
    );
    assert_eq!(errors[1].line, 8);
    assert!(
        errors[1].message.starts_with("malformed JSON at column "),
        "{errors:?}"
    );
    assert_eq!(errors[1].raw.as_deref(), Some(lines[7].as_str()));
}

/// The accounts as a sheet: numbers as floats (`10.0`), dates as date
/// cells, A7 rejected on sheet row 8.
fn accounts_sheet() -> Vec<Vec<Cell>> {
    let mut rows = vec![
        ACCOUNTS_HEADER
            .trim_end()
            .split(',')
            .chain(["Region"])
            .map(text)
            .collect::<Vec<_>>(),
    ];
    for i in 1..=7 {
        let seats = if i == 7 { -5.0 } else { f64::from(i * 10) };
        rows.push(vec![
            text(&format!("A{i}")),
            Cell::Empty,
            text(&format!("Account {i}")),
            text("parent"),
            text("pro"),
            Cell::Number(seats),
            date(&format!("2020-01-0{i}")),
            if i == 1 { text("EMEA") } else { Cell::Empty },
        ]);
    }
    rows
}

#[test]
fn an_xlsx_sheet_syncs_as_its_csv_would_with_sheet_rows_in_errors() {
    let ws = Workspace::new(&config("xlsx", "sheet = \"Accounts\""));
    let notes = vec![vec![text("Exported by Finance")]];
    ws.drop_file(
        "accounts_20260101.xlsx",
        workbook(&[("Notes", notes), ("Accounts", accounts_sheet())]),
    );
    ws.dropsync(&["run"])
        .code(3)
        .stdout_has(&["rows 7 ok 6 rejected 1", "line 8 [A7] Seats:"]);
    assert_eq!(stored(&ws), as_csv_stores());
    let (line, field, _, raw) = only_error(&ws);
    assert_eq!((line, field.as_deref()), (8, Some("Seats")));
    assert_eq!(
        raw.as_deref(),
        Some("A7,,Account 7,parent,pro,-5,2020-01-07,")
    );
    let message = ws.db().last_run().message.unwrap();
    assert!(message.contains("read sheet `Accounts`"), "{message}");
}

#[test]
fn an_xlsx_drop_reads_its_first_sheet_unless_told_and_errors_name_the_sheet() {
    let ws = Workspace::new(&config("xlsx", ""));
    let notes = vec![vec![text("Exported by Finance")]];
    ws.drop_file(
        "accounts_20260101.xlsx",
        workbook(&[("Notes", notes), ("Accounts", accounts_sheet())]),
    );
    ws.dropsync(&["run"]).code(1);
    let message = ws.db().last_run().message.unwrap();
    assert!(
        message
            .starts_with("accounts_20260101.xlsx, sheet `Notes`: line 1: the header does not fit"),
        "{message}"
    );

    let ws = Workspace::new(&config("xlsx", "sheet = \"Totals\""));
    ws.drop_file(
        "accounts_20260101.xlsx",
        workbook(&[("Accounts", accounts_sheet())]),
    );
    ws.dropsync(&["run"]).code(1);
    let message = ws.db().last_run().message.unwrap();
    assert_eq!(
        message,
        "accounts_20260101.xlsx: the workbook has no sheet `Totals`; its sheets: Accounts"
    );
}

#[test]
fn a_spreadsheet_error_cell_rejects_its_row_naming_the_field() {
    let ws = Workspace::new(&config("xlsx", ""));
    let mut sheet = accounts_sheet();
    sheet[3][5] = Cell::Error("#DIV/0!");
    ws.drop_file("accounts_20260101.xlsx", workbook(&[("Accounts", sheet)]));
    ws.dropsync(&["run"]).code(3);
    let run = ws.db().last_run();
    let errors = ws.db().row_errors(&run.execution_id);
    assert_eq!(errors[0].line, 4, "{errors:?}");
    assert_eq!(errors[0].field.as_deref(), Some("Seats"));
    assert!(
        errors[0].message.contains("spreadsheet error"),
        "{errors:?}"
    );
}

#[test]
fn a_file_that_is_not_what_its_name_says_fails_with_a_clear_error() {
    let ws = Workspace::new(&config("xlsx", ""));
    ws.drop_file("accounts_20260101.xlsx", accounts_csv());
    ws.dropsync(&["run"]).code(1);
    let message = ws.db().last_run().message.unwrap();
    assert!(
        message.starts_with("accounts_20260101.xlsx: not an xlsx workbook"),
        "{message}"
    );

    let ws = Workspace::new(&config("csv.gz", ""));
    ws.drop_file("accounts_20260101.csv.gz", accounts_csv());
    ws.dropsync(&["run"]).code(1);
    let message = ws.db().last_run().message.unwrap();
    assert!(
        message.starts_with(
            "accounts_20260101.csv.gz: the gzip file is damaged or not what its name says"
        ),
        "{message}"
    );
}

#[test]
fn malformed_json_fails_the_file_with_its_line_and_column_and_applies_nothing() {
    let ws = Workspace::new(&config("json", ""));
    let objects = account_objects();
    ws.drop_file(
        "accounts_20260101.json",
        format!("[\n{}\n]\n", objects[..6].join(",\n")),
    );
    ws.dropsync(&["run"]).code(0);
    let before = stored(&ws);
    ws.drop_file(
        "accounts_20260102.json",
        "[\n  {\"AccountID\": \"A1\"},\n  {\"AccountID\": \"A2\" \"Name\": \"x\"}\n]\n",
    );
    ws.dropsync(&["run"]).code(1);
    let message = ws.db().last_run().message.unwrap();
    assert!(
        message.starts_with(
            "accounts_20260102.json: line 3, column 22: malformed JSON: expected `,` or `}`"
        ),
        "{message}"
    );
    assert!(message.contains("nothing was applied"), "{message}");
    assert_eq!(stored(&ws), before);
}

#[test]
fn nested_json_is_refused_for_a_field_and_kept_in_attributes_otherwise() {
    let ws = Workspace::new(&config("jsonl", ""));
    ws.drop_file(
        "accounts_20260101.jsonl",
        "{\"AccountID\": \"A1\", \"Name\": \"One\", \"Tags\": [\"a\", \"b\"], \"Active\": true}\n\
         \n\
         {\"AccountID\": \"A2\", \"Name\": {\"first\": \"Two\"}}\n\
         {\"AccountID\": \"A3\", \"Name\": \"Three\", \"Seats\": \"1,200\"}\n",
    );
    ws.dropsync(&["run"]).code(3);
    assert_eq!(
        ws.db().rows(
            "SELECT AccountID, Name, coalesce(CAST(Seats AS VARCHAR), 'NULL'), coalesce(_attributes, 'NULL')
             FROM accounts ORDER BY AccountID"
        ),
        table(&[
            ["A1", "One", "NULL", r#"{"Active":"true","Tags":"[\"a\",\"b\"]"}"#],
            ["A3", "Three", "1200", "NULL"],
        ])
    );
    let (line, field, message, raw) = only_error(&ws);
    assert_eq!((line, field.as_deref()), (3, Some("Name")));
    assert!(
        message.starts_with("an object is no value for a string field"),
        "{message}"
    );
    assert_eq!(
        raw.as_deref(),
        Some("{\"AccountID\": \"A2\", \"Name\": {\"first\": \"Two\"}}")
    );
}

#[test]
fn a_zip_with_several_files_needs_a_member_and_reads_the_one_named() {
    let archive = zip_of(&[
        ("README.txt".to_string(), b"Accounts export".to_vec()),
        (
            "export/accounts.csv".to_string(),
            accounts_csv().into_bytes(),
        ),
    ]);
    let ws = Workspace::new(&config("zip", ""));
    ws.drop_file("accounts_20260101.zip", &archive);
    ws.dropsync(&["run"]).code(1);
    let message = ws.db().last_run().message.unwrap();
    assert_eq!(
        message,
        "accounts_20260101.zip: the zip archive holds 2 files: `README.txt`, `export/accounts.csv`; set the integration's member = \"NAME\" to say which to read"
    );

    let ws = Workspace::new(&config("zip", "member = \"accounts.csv\""));
    ws.drop_file("accounts_20260101.zip", &archive);
    ws.dropsync(&["run"]).code(3);
    assert_eq!(stored(&ws), as_csv_stores());
    let message = ws.db().last_run().message.unwrap();
    assert!(
        message.contains("read `export/accounts.csv` from the zip archive"),
        "{message}"
    );

    // An xlsx inside a zip: its own format, from the member's name.
    let ws = Workspace::new(&config("zip", ""));
    ws.drop_file(
        "accounts_20260101.zip",
        zip_of(&[(
            "accounts.xlsx".to_string(),
            workbook(&[("Accounts", accounts_sheet())]),
        )]),
    );
    ws.dropsync(&["run"]).code(3);
    assert_eq!(stored(&ws), as_csv_stores());
}

#[test]
fn a_decompression_bomb_is_refused_by_size_and_by_ratio() {
    // 2 MiB of one repeated row: a thousand-fold compression.
    let row = "A1,,Account 1,parent,pro,10,2020-01-01\n";
    let mut big = ACCOUNTS_HEADER.to_string();
    while big.len() < 2 << 20 {
        big.push_str(row);
    }
    let ws = Workspace::new(&config("csv.gz", "decompress = { max_bytes = 1048576 }"));
    ws.drop_file("accounts_20260101.csv.gz", gzip(big.as_bytes()));
    ws.dropsync(&["run"]).code(1);
    let message = ws.db().last_run().message.unwrap();
    assert!(
        message.starts_with("accounts_20260101.csv.gz: the gzip file expands to more than decompress.max_bytes (1048576 bytes); nothing was applied"),
        "{message}"
    );
    assert!(!ws.db().table_exists("accounts"));

    let mut bomb = big.clone();
    while bomb.len() < 20 << 20 {
        bomb.push_str(&big);
    }
    let ws = Workspace::new(&config("csv.zip", "decompress = { max_ratio = 50 }"));
    ws.drop_file(
        "accounts_20260101.csv.zip",
        zip_of(&[("accounts.csv".to_string(), bomb.into_bytes())]),
    );
    ws.dropsync(&["run"]).code(1);
    let message = ws.db().last_run().message.unwrap();
    assert!(
        message.contains(
            "`accounts.csv` in the zip archive expands more than decompress.max_ratio (50) times"
        ),
        "{message}"
    );
    assert!(!ws.db().table_exists("accounts"));
}

#[test]
fn an_unknown_extension_is_a_config_error_naming_it_and_format_reads_it_anyway() {
    let ws = Workspace::new(&config("txt", ""));
    ws.drop_file("accounts_20260101.txt", accounts_csv());
    ws.dropsync(&["run"]).code(2).stderr_has(&[
        "integration `accounts`: cannot tell the format of `accounts_{date:%Y%m%d}.txt` from its extension `.txt`",
        "format = \"csv\"",
    ]);

    let ws = Workspace::new(&config("txt", "format = \"csv\""));
    ws.drop_file("accounts_20260101.txt", accounts_csv());
    ws.dropsync(&["run"]).code(3);
    assert_eq!(stored(&ws), as_csv_stores());
}

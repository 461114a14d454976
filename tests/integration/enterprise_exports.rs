//! Enterprise-size exports: CRM and billing tools quote every field, end
//! lines with CRLF and put line breaks inside values. Files that size are
//! parsed in stretches side by side; what a user sees (the lines row errors
//! name, the rows stored) is what a read from start to end gives.

use crate::common::{RowError, Workspace, accounts_config};

/// Records (0-based) whose seat count is negative.
const NEGATIVE_SEATS: [usize; 3] = [70_001, 99_999, 119_998];
/// A record one field short, on one line.
const SHORT_RECORD: usize = 110_000;
const RECORDS: usize = 120_000;

/// A fully quoted CRLF accounts export of `RECORDS` records, each with a
/// line break (CRLF) inside its name, so record `i` starts on line
/// `2 + 2 * i`. About 12 MB: big enough to be cut into stretches.
fn quoted_crlf_export() -> String {
    let mut text = String::from(
        "\"AccountID\",\"ParentID\",\"Name\",\"Type\",\"Plan\",\"Seats\",\"CreatedDate\"\r\n",
    );
    for i in 0..RECORDS {
        if i == SHORT_RECORD {
            text.push_str(&format!(
                "\"A{i:07}\",\"\",\"short, \"\"one field\"\" missing\",\"parent\",\"pro\",\"5\"\r\n\r\n"
            ));
            continue;
        }
        let seats = if NEGATIVE_SEATS.contains(&i) {
            "-1".to_string()
        } else {
            (i % 500).to_string()
        };
        text.push_str(&format!(
            "\"A{i:07}\",\"\",\"ACME, \"\"Unit\"\" {i}\r\nBuilding {i}\",\"parent\",\"pro\",\"{seats}\",\"2024-01-01\"\r\n"
        ));
    }
    text
}

#[test]
fn a_fully_quoted_crlf_export_reports_the_lines_records_start_on() {
    let ws = Workspace::new(&accounts_config(
        r#"on_error = { policy = "skip", max_rows = 10 }"#,
    ));
    let text = quoted_crlf_export();
    assert!(text.len() > 10 << 20, "{} bytes", text.len());
    ws.drop_file("accounts_20260101.csv", &text);
    let out = ws.dropsync(&["run"]);
    assert_eq!(out.code, 3, "partly applied: {out}");
    let line = |i: usize| 2 + 2 * i;
    out.stdout_has(&[
        &format!(
            "rows {RECORDS} ok {} rejected 4",
            RECORDS - NEGATIVE_SEATS.len() - 1
        ),
        &format!(
            "    line {} [A{:07}] Seats: `-1` is less than the minimum 0\n",
            line(NEGATIVE_SEATS[0]),
            NEGATIVE_SEATS[0]
        ),
    ]);

    let db = ws.db();
    let run = db.last_run();
    assert_eq!(run.status, "partial", "{run:?}");
    assert_eq!(
        (run.input_rows, run.error_rows, run.inserted),
        (RECORDS as i64, 4, (RECORDS - 4) as i64)
    );
    let negative = |i: usize| RowError {
        line: line(i) as i64,
        record_key: Some(format!("A{i:07}")),
        field: Some("Seats".to_string()),
        message: "`-1` is less than the minimum 0".to_string(),
        raw: Some(format!(
            "\"A{i:07}\",\"\",\"ACME, \"\"Unit\"\" {i}\r\nBuilding {i}\",\"parent\",\"pro\",\"-1\",\"2024-01-01\""
        )),
    };
    let short = RowError {
        line: line(SHORT_RECORD) as i64,
        record_key: Some(format!("A{SHORT_RECORD:07}")),
        field: None,
        message: "expected 7 fields, found 6 (a stray delimiter, or an unbalanced quote?)"
            .to_string(),
        raw: Some(format!(
            "\"A{SHORT_RECORD:07}\",\"\",\"short, \"\"one field\"\" missing\",\"parent\",\"pro\",\"5\""
        )),
    };
    // In line order.
    let expected = vec![
        negative(NEGATIVE_SEATS[0]),
        negative(NEGATIVE_SEATS[1]),
        short,
        negative(NEGATIVE_SEATS[2]),
    ];
    assert_eq!(db.row_errors(&run.execution_id), expected);

    // Values with quotes, delimiters and line breaks are stored whole, on
    // both sides of every cut.
    for i in [0, 59_999, 60_000, RECORDS - 1] {
        assert_eq!(
            db.value(&format!(
                "SELECT Name FROM accounts WHERE AccountID = 'A{i:07}'"
            )),
            format!("ACME, \"Unit\" {i}\r\nBuilding {i}")
        );
    }
}

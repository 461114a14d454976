//! Files read a chunk at a time: with a tiny chunk size, small files span
//! many chunks, and every check across rows must still see the whole file.
//! Each case runs the same drop twice: read in chunks of a few dozen bytes,
//! and read whole (the same ASCII text declared Latin-1, which is decoded
//! in one piece), and both must end the same: exit code, run record, row
//! errors, table. Then what a user sees is checked outright.

use crate::common::{
    ACCOUNTS_HEADER, Output, RowError, Run, StoreKind, accounts_config, table, workspace_on,
};

/// A chunk of a few rows: a 40-row file spans a dozen chunks.
const TINY: &str = "64";

/// What a sync ended with, as a user would compare two.
#[derive(Debug, PartialEq)]
struct Ending {
    code: i32,
    run: Run,
    errors: Vec<RowError>,
    table: Vec<Vec<String>>,
    handoff_left: usize,
}

/// Syncs day 1 (`day1`, if any) then `day2` with `extra` config, the files
/// read in chunks of `chunk` bytes (or whole when `chunk` is `None`).
fn sync(
    kind: StoreKind,
    extra: &str,
    day1: Option<&str>,
    day2: &str,
    chunk: Option<&str>,
) -> (Ending, Output) {
    let extra = match chunk {
        Some(_) => extra.to_string(),
        None => format!("{extra}\ncsv = {{ encoding = \"latin-1\" }}"),
    };
    let ws = workspace_on(kind, &accounts_config(&extra));
    let env: Vec<(&str, &str)> = chunk
        .map(|c| ("DROPSYNC_CHUNK_BYTES", c))
        .into_iter()
        .collect();
    if let Some(day1) = day1 {
        ws.drop_file("accounts_20260101.csv", day1);
        ws.dropsync_env(&["run"], &env).code(0);
    }
    ws.drop_file("accounts_20260102.csv", day2);
    let out = ws.dropsync_env(&["run", "--date", "2026-01-02"], &env);
    let db = ws.db();
    let mut run = db.last_run();
    let errors = db.row_errors(&run.execution_id);
    // Two runs never share these.
    run.execution_id.clear();
    run.content_hash = None;
    let table = db.rows(
        r#"SELECT "AccountID", "ParentID", "Name", "Seats" FROM accounts ORDER BY "AccountID""#,
    );
    let handoff_left = std::fs::read_dir(ws.path("staging/.work")).map_or(0, |d| d.count());
    let ending = Ending {
        code: out.code,
        run,
        errors,
        table,
        handoff_left,
    };
    (ending, out)
}

/// Syncs in tiny chunks and whole; both must end alike. Returns the chunked
/// ending and output.
#[track_caller]
fn same_in_chunks_as_whole(
    kind: StoreKind,
    extra: &str,
    day1: Option<&str>,
    day2: &str,
) -> (Ending, Output) {
    same_in_chunks_of_as_whole(kind, TINY, extra, day1, day2)
}

/// `same_in_chunks_as_whole`, in chunks of `chunk` bytes.
fn same_in_chunks_of_as_whole(
    kind: StoreKind,
    chunk: &str,
    extra: &str,
    day1: Option<&str>,
    day2: &str,
) -> (Ending, Output) {
    let (chunked, out) = sync(kind, extra, day1, day2, Some(chunk));
    let (whole, whole_out) = sync(kind, extra, day1, day2, None);
    assert_eq!(chunked, whole, "chunked:\n{out}\nwhole:\n{whole_out}");
    assert_eq!(chunked.handoff_left, 0, "hand-off files left: {out}");
    (chunked, out)
}

fn row(id: &str, parent: &str, seats: i64) -> String {
    let kind = if parent.is_empty() {
        "parent"
    } else {
        "product"
    };
    format!("{id},{parent},Account {id},{kind},pro,{seats},2020-01-01\n")
}

/// `n` parent accounts P01.., with `changes` put in at the given lines
/// (line 2 is the first row).
fn file(n: usize, changes: &[(u64, String)]) -> String {
    let mut text = ACCOUNTS_HEADER.to_string();
    let mut line = 2u64;
    let mut i = 1;
    while i <= n {
        if let Some((_, row)) = changes.iter().find(|(l, _)| *l == line) {
            text.push_str(row);
        } else {
            text.push_str(&row(&format!("P{i:02}"), "", i as i64));
            i += 1;
        }
        line += 1;
    }
    text
}

fn a_key_repeated_in_later_chunks_rejects_every_copy(kind: StoreKind) {
    // P03 on line 4, again on lines 30 and 41, many chunks apart.
    let day2 = file(40, &[(30, row("P03", "", 300)), (41, row("P03", "", 301))]);
    let day1 = file(40, &[]);
    let (ending, out) =
        same_in_chunks_as_whole(kind, "on_error = { max_ratio = 0.2 }", Some(&day1), &day2);
    assert_eq!(ending.code, 3, "{out}");
    assert_eq!(ending.run.status, "partial", "{out}");
    assert_eq!((ending.run.input_rows, ending.run.error_rows), (42, 3));
    let dup: Vec<(i64, &str)> = ending
        .errors
        .iter()
        .map(|e| (e.line, e.message.as_str()))
        .collect();
    let message = "duplicate key `P03` (lines 4, 30, 41)";
    assert_eq!(dup, [(4, message), (30, message), (41, message)]);
    assert_eq!(
        ending.errors[2].raw.as_deref(),
        Some("P03,,Account P03,parent,pro,301,2020-01-01")
    );
    // The stored P03 is neither deleted nor replaced by any copy.
    assert!(
        ending.table.contains(&vec![
            "P03".into(),
            "NULL".into(),
            "Account P03".into(),
            "3".into()
        ]),
        "{:?}",
        ending.table
    );
}

fn a_key_repeated_by_new_rows_is_told_from_chunks_whose_stored_rows_were_left_out(kind: StoreKind) {
    // Every P row is as day 1 stored it (on a DuckDB store, left out
    // unread); N1 is new, on lines 10 and 35, chunks of several rows apart.
    // Each copy is described from its chunk read again, with its own line
    // and text.
    let day1 = file(40, &[]);
    let day2 = file(40, &[(10, row("N1", "", 100)), (35, row("N1", "", 101))]);
    let (ending, out) = same_in_chunks_of_as_whole(
        kind,
        "400",
        "on_error = { max_ratio = 0.2 }",
        Some(&day1),
        &day2,
    );
    assert_eq!(ending.code, 3, "{out}");
    assert_eq!((ending.run.input_rows, ending.run.error_rows), (42, 2));
    assert_eq!((ending.run.inserted, ending.run.unchanged), (0, 40));
    let message = "duplicate key `N1` (lines 10, 35)";
    let dup: Vec<(i64, &str, Option<&str>)> = ending
        .errors
        .iter()
        .map(|e| (e.line, e.message.as_str(), e.raw.as_deref()))
        .collect();
    assert_eq!(
        dup,
        [
            (
                10,
                message,
                Some("N1,,Account N1,parent,pro,100,2020-01-01")
            ),
            (
                35,
                message,
                Some("N1,,Account N1,parent,pro,101,2020-01-01")
            )
        ]
    );
}

fn a_reference_to_a_row_in_another_chunk_holds_and_one_to_no_row_is_rejected(kind: StoreKind) {
    // C1 on line 3 names P35 further on; C2 on line 38 names P02 far back;
    // C3 names a parent no row of the file has.
    let day2 = file(
        40,
        &[
            (3, row("C1", "P35", 1)),
            (38, row("C2", "P02", 2)),
            (20, row("C3", "P99", 3)),
        ],
    );
    let (ending, out) = same_in_chunks_as_whole(kind, "", None, &day2);
    assert_eq!(ending.code, 3, "{out}");
    assert_eq!(
        ending
            .errors
            .iter()
            .map(|e| (e.line, e.field.as_deref(), e.message.as_str()))
            .collect::<Vec<_>>(),
        [(
            20,
            Some("ParentID"),
            "`P99` does not exist: no row of this file has that AccountID"
        )]
    );
    assert_eq!(
        ending.errors[0].raw.as_deref(),
        Some("C3,P99,Account C3,product,pro,3,2020-01-01")
    );
    assert_eq!(ending.errors[0].record_key.as_deref(), Some("C3"));
    let children: Vec<&Vec<String>> = ending
        .table
        .iter()
        .filter(|r| r[0].starts_with('C'))
        .collect();
    assert_eq!(
        children,
        [
            &vec![
                "C1".to_string(),
                "P35".into(),
                "Account C1".into(),
                "1".into()
            ],
            &vec![
                "C2".to_string(),
                "P02".into(),
                "Account C2".into(),
                "2".into()
            ],
        ]
    );
}

fn a_bad_row_in_the_last_chunk_names_its_line(kind: StoreKind) {
    let day2 = file(
        40,
        &[(41, "P41,,Account P41,parent,pro,-5,2020-01-01\n".into())],
    );
    let (ending, out) = same_in_chunks_as_whole(kind, "", None, &day2);
    assert_eq!(ending.code, 3, "{out}");
    assert_eq!(ending.errors.len(), 1);
    assert_eq!(ending.errors[0].line, 41);
    assert_eq!(ending.errors[0].message, "`-5` is less than the minimum 0");
    out.stdout_has(&["    line 41 [P41] Seats: `-5` is less than the minimum 0\n"]);
    assert_eq!(ending.table.len(), 40);
}

fn the_error_policy_counts_bad_rows_across_chunks(kind: StoreKind) {
    // One bad row in each of four chunks far apart: no chunk alone has more
    // than max_rows, the file does.
    let bad = |id: &str| format!("{id},,Account {id},parent,pro,many,2020-01-01\n");
    let day2 = file(
        40,
        &[
            (5, bad("B1")),
            (15, bad("B2")),
            (25, bad("B3")),
            (40, bad("B4")),
        ],
    );
    let day1 = file(40, &[]);
    let (ending, out) = same_in_chunks_as_whole(
        kind,
        r#"on_error = { policy = "skip", max_ratio = 0.5, max_rows = 3 }"#,
        Some(&day1),
        &day2,
    );
    assert_eq!(ending.code, 1, "{out}");
    assert_eq!(ending.run.status, "failed");
    assert_eq!(
        ending.run.message.as_deref(),
        Some("4 of 44 rows failed validation, more than on_error.max_rows (3); nothing applied")
    );
    assert_eq!(
        ending.errors.iter().map(|e| e.line).collect::<Vec<_>>(),
        [5, 15, 25, 40]
    );
    // Day 1 stands as it was.
    assert_eq!(ending.table.len(), 40);
    assert_eq!(ending.table[0][3], "1");
}

fn a_quoted_line_break_across_a_chunk_boundary_stays_in_its_field(kind: StoreKind) {
    // Fully quoted with CRLF line ends; a name with a line break in it, long
    // enough to straddle any 64-byte boundary, and a bad row after it.
    let mut day2 = String::from(
        "\"AccountID\",\"ParentID\",\"Name\",\"Type\",\"Plan\",\"Seats\",\"CreatedDate\"\r\n",
    );
    for i in 1..=20 {
        let name = if i == 7 {
            "Line one, \"\"quoted\"\"\r\nline two of a name long enough to cross a chunk"
                .to_string()
        } else {
            format!("Account {i}")
        };
        let seats = if i == 12 {
            "-1".to_string()
        } else {
            i.to_string()
        };
        day2.push_str(&format!(
            "\"Q{i:02}\",\"\",\"{name}\",\"parent\",\"pro\",\"{seats}\",\"2020-01-01\"\r\n"
        ));
    }
    let (ending, out) = same_in_chunks_as_whole(kind, "", None, &day2);
    assert_eq!(ending.code, 3, "{out}");
    // Q07 takes lines 8 and 9: Q12 is on line 14.
    assert_eq!(ending.errors.len(), 1, "{out}");
    assert_eq!(ending.errors[0].line, 14);
    assert_eq!(ending.errors[0].record_key.as_deref(), Some("Q12"));
    let q07 = ending
        .table
        .iter()
        .find(|r| r[0] == "Q07")
        .expect("Q07 applied");
    assert_eq!(
        q07[2],
        "Line one, \"quoted\"\r\nline two of a name long enough to cross a chunk"
    );
    assert_eq!(ending.table.len(), 19);
}

fn a_file_refused_after_many_chunks_leaves_nothing_applied(kind: StoreKind) {
    let day1 = file(40, &[]);
    // Refused by the duplicate found in the last chunk, every earlier chunk
    // handed off already.
    let day2 = file(40, &[(41, row("P01", "", 100))]);
    let day2: String = day2.replace(",pro,", ",enterprise,");
    let (ending, out) = same_in_chunks_as_whole(
        kind,
        r#"on_error = { policy = "reject" }"#,
        Some(&day1),
        &day2,
    );
    assert_eq!(ending.code, 1, "{out}");
    assert_eq!(ending.run.status, "failed");
    assert_eq!(
        (ending.run.inserted, ending.run.updated, ending.run.deleted),
        (0, 0, 0)
    );
    assert_eq!(ending.table, sync_day1_table());

    // And by an unbalanced quote far into the file.
    let mut day2 = file(40, &[]).replace(",pro,", ",enterprise,");
    day2.push_str("Z1,,\"never closed,parent,pro,1,2020-01-01\n");
    day2.push_str(&file(10, &[])[ACCOUNTS_HEADER.len()..].replace('P', "R"));
    let (ending, out) = same_in_chunks_as_whole(
        kind,
        r#"on_error = { policy = "reject" }"#,
        Some(&day1),
        &day2,
    );
    assert_eq!(ending.code, 1, "{out}");
    let message = ending.run.message.clone().unwrap_or_default();
    assert!(
        message.contains("line 42: a quoted field opened in this record runs on to line 52")
            && message.ends_with("Nothing was applied"),
        "{message}"
    );
    assert_eq!(ending.table, sync_day1_table());
}

/// What day 1 (`file(40, &[])`) leaves in the table.
fn sync_day1_table() -> Vec<Vec<String>> {
    let rows: Vec<[String; 4]> = (1..=40)
        .map(|i| {
            [
                format!("P{i:02}"),
                "NULL".to_string(),
                format!("Account P{i:02}"),
                i.to_string(),
            ]
        })
        .collect();
    let rows: Vec<[&str; 4]> = rows
        .iter()
        .map(|r| [r[0].as_str(), r[1].as_str(), r[2].as_str(), r[3].as_str()])
        .collect();
    table(&rows)
}

crate::on_both_stores! {
    a_key_repeated_in_later_chunks_rejects_every_copy => a_key_repeated_in_later_chunks_rejects_every_copy;
    a_key_repeated_by_new_rows_is_told_from_chunks_whose_stored_rows_were_left_out => a_key_repeated_by_new_rows_is_told_from_chunks_whose_stored_rows_were_left_out;
    a_reference_to_a_row_in_another_chunk_holds_and_one_to_no_row_is_rejected => a_reference_to_a_row_in_another_chunk_holds_and_one_to_no_row_is_rejected;
    a_bad_row_in_the_last_chunk_names_its_line => a_bad_row_in_the_last_chunk_names_its_line;
    the_error_policy_counts_bad_rows_across_chunks => the_error_policy_counts_bad_rows_across_chunks;
    a_quoted_line_break_across_a_chunk_boundary_stays_in_its_field => a_quoted_line_break_across_a_chunk_boundary_stays_in_its_field;
    a_file_refused_after_many_chunks_leaves_nothing_applied => a_file_refused_after_many_chunks_leaves_nothing_applied;
}

//! Files that are broken in the ways real exports are: each gets a clear
//! message naming the file (and the line and field where there is one), no
//! panic, and nothing half-applied.

use crate::common::{
    ACCOUNTS_HEADER, StoreKind, accounts, accounts_config, six_accounts, table, with_six_accounts,
    with_six_accounts_on, workspace_on,
};

/// `six_accounts` with row `n` (1-based, A{n}) replaced by `line`.
fn replace_row(n: usize, line: &str) -> Vec<u8> {
    let mut out = ACCOUNTS_HEADER.as_bytes().to_vec();
    for (i, row) in six_accounts().lines().skip(1).enumerate() {
        if i + 1 == n {
            out.extend_from_slice(line.as_bytes());
        } else {
            out.extend_from_slice(row.as_bytes());
        }
        out.push(b'\n');
    }
    out
}

#[test]
fn broken_files_are_refused_with_a_clear_message() {
    let name = "accounts_20260102.csv";
    // The header, `first_rows`, then the six accounts' rows from the third.
    let with_first_rows = |first_rows: &[u8]| -> Vec<u8> {
        let mut file = ACCOUNTS_HEADER.as_bytes().to_vec();
        file.extend_from_slice(first_rows);
        file.extend(
            six_accounts()
                .lines()
                .skip(3)
                .flat_map(|l| format!("{l}\n").into_bytes()),
        );
        file
    };
    let invalid_utf8 = with_first_rows(
        b"A1,,Account 1,parent,pro,10,2020-01-01\nA2,,Caf\xe9 Bar,parent,pro,20,2020-01-02\n",
    );
    // "é" cut in two by the delimiter: each field is invalid, though the
    // fields' bytes put together are not.
    let split_character = with_first_rows(
        b"A1,,Account 1,parent,pro,10,2020-01-01\nA2,,Caf\xc3,\xa9parent,pro,20,2020-01-02\n",
    );
    let gzip: Vec<u8> = vec![
        0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x4b, 0x4c, 0x4a, 0x06, 0x00,
        0xc2, 0x41, 0x24, 0x35, 0x03, 0x00, 0x00, 0x00,
    ];
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "empty file",
            Vec::new(),
            vec!["    accounts_20260102.csv: the file is empty (no header, no rows)\n"],
        ),
        (
            "only blank lines",
            b"\n\r\n  \n".to_vec(),
            vec!["    accounts_20260102.csv: the file is empty (no header, no rows)\n"],
        ),
        (
            "header only: a snapshot with no rows",
            ACCOUNTS_HEADER.as_bytes().to_vec(),
            vec![
                "rows 0 ok 0 rejected 0 skipped 0  +0 ~0 -6",
                "    refused: the file would delete 6 of the 6 rows held (100.0%, more than max_delete_ratio 20.0%)",
            ],
        ),
        (
            "ragged row: a field short",
            replace_row(2, "A2,,Account 2,parent,pro,20"),
            vec![
                "rows 6 rejected 1",
                "    line 3 [A2]: expected 7 fields, found 6 (a stray delimiter, or an unbalanced quote?)\n",
            ],
        ),
        (
            "ragged row: a field too many",
            replace_row(4, "A4,,Account 4,parent,pro,40,2020-01-04,"),
            vec![
                "    line 5 [A4]: expected 7 fields, found 8 (a stray delimiter, or an unbalanced quote?)\n",
            ],
        ),
        (
            "unbalanced quote on the last row",
            replace_row(6, r#"A6,,"Account 6,parent,pro,60,2020-01-06"#),
            vec![
                "    line 7 [A6]: expected 7 fields, found 3 (a stray delimiter, or an unbalanced quote?)\n",
            ],
        ),
        (
            "invalid UTF-8 in a field",
            invalid_utf8,
            vec![
                "    line 3 [A2] Name: not valid UTF-8 (byte 4 of the value); if the file is Latin-1, set csv.encoding = \"latin-1\"\n",
            ],
        ),
        (
            "a character split between two fields",
            split_character,
            vec![
                "    line 3 [A2] Name: not valid UTF-8 (byte 4 of the value); if the file is Latin-1, set csv.encoding = \"latin-1\"\n",
                "    line 3 [A2] Type: not valid UTF-8 (byte 1 of the value)",
            ],
        ),
        (
            "duplicate header names",
            six_accounts()
                .replacen("CreatedDate\n", "CreatedDate,Name\n", 1)
                .replace("-01\n", "-01,x\n")
                .replace("-02\n", "-02,x\n")
                .replace("-03\n", "-03,x\n")
                .replace("-04\n", "-04,x\n")
                .replace("-05\n", "-05,x\n")
                .replace("-06\n", "-06,x\n")
                .into_bytes(),
            vec![
                "    accounts_20260102.csv: line 1: column `Name` appears twice in the header (columns 3 and 8)\n",
            ],
        ),
        (
            "missing required column",
            six_accounts()
                .replacen("AccountID,", "Key,", 1)
                .into_bytes(),
            vec![
                "    accounts_20260102.csv: line 1: the header does not fit the schema (fieldsMatch `partial`): missing AccountID; found: Key, ParentID, Name, Type, Plan, Seats, CreatedDate\n",
            ],
        ),
        (
            "wrong delimiter",
            six_accounts().replace(',', ";").into_bytes(),
            vec![
                "    accounts_20260102.csv: line 1: the header does not fit the schema (fieldsMatch `partial`): missing AccountID; found: AccountID;ParentID;Name;Type;Plan;Seats;CreatedDate\n",
            ],
        ),
        (
            "a gzip file by mistake",
            gzip,
            vec![
                "    accounts_20260102.csv: line 1: the header does not fit the schema (fieldsMatch `partial`): missing AccountID; found: ",
            ],
        ),
        (
            "duplicate keys",
            replace_row(6, "A2,,Account 2 again,parent,pro,21,2020-01-02"),
            vec![
                "rows 6 rejected 2",
                "    line 3 [A2] AccountID: duplicate key `A2` (lines 3, 7)\n",
                "    line 7 [A2] AccountID: duplicate key `A2` (lines 3, 7)\n",
            ],
        ),
    ];
    for (case, bytes, needles) in cases {
        let ws = with_six_accounts(r#"on_error = { policy = "reject" }"#);
        ws.drop_file(name, &bytes);
        let out = ws.dropsync(&["run"]);
        assert_eq!(out.code, 1, "{case}: {out}");
        assert!(
            out.stdout
                .contains("accounts  2026-01-02  accounts_20260102.csv  failed"),
            "{case}: the summary names the file: {out}"
        );
        for needle in needles {
            assert!(
                out.stdout.contains(needle),
                "{case}: lacks {needle:?}: {out}"
            );
        }
        let db = ws.db();
        assert_eq!(
            accounts(&db),
            table(&[
                ["A1", "Account 1", "10"],
                ["A2", "Account 2", "20"],
                ["A3", "Account 3", "30"],
                ["A4", "Account 4", "40"],
                ["A5", "Account 5", "50"],
                ["A6", "Account 6", "60"],
            ]),
            "{case}: the table is unchanged"
        );
        let run = db.last_run();
        assert_eq!(run.status, "failed", "{case}");
        assert_eq!(run.file_name.as_deref(), Some(name), "{case}");
        assert_eq!(
            (run.inserted, run.updated, run.deleted),
            (0, 0, 0),
            "{case}"
        );
    }
}

fn duplicate_keys_reject_every_copy_and_keep_the_stored_record(kind: StoreKind) {
    let ws = with_six_accounts_on(kind, "on_error = { max_ratio = 0.5 }");
    ws.drop_file(
        "accounts_20260102.csv",
        replace_row(6, "A2,,Account 2 again,parent,pro,21,2020-01-02"),
    );
    // A2 twice: neither copy is applied; A6 is absent, so deleted.
    ws.dropsync(&["run"])
        .code(3)
        .stdout_has(&["partial  rows 6 ok 4 rejected 2 skipped 0  +0 ~0 -1"]);
    assert_eq!(
        accounts(&ws.db()),
        table(&[
            ["A1", "Account 1", "10"],
            ["A2", "Account 2", "20"],
            ["A3", "Account 3", "30"],
            ["A4", "Account 4", "40"],
            ["A5", "Account 5", "50"],
        ])
    );
}

fn an_unbalanced_quote_does_not_delete_the_rows_it_swallows(kind: StoreKind) {
    // Default policy (skip up to 10%) and guard (20%): 20 accounts, and on
    // the next day an unbalanced quote on row 19 runs to the end of the file.
    let ws = workspace_on(kind, &accounts_config(""));
    let rows = |quote_on: Option<usize>| {
        let mut s = ACCOUNTS_HEADER.to_string();
        for i in 1..=20 {
            let q = if quote_on == Some(i) { "\"" } else { "" };
            s.push_str(&format!(
                "B{i:02},,{q}Account {i},parent,pro,{i},2020-01-01\n"
            ));
        }
        s
    };
    ws.drop_file("accounts_20260101.csv", rows(None));
    ws.dropsync(&["run"]).code(0);
    ws.drop_file("accounts_20260102.csv", rows(Some(19)));
    let out = ws.dropsync(&["run"]);
    out.stdout_has(&["accounts_20260102.csv", "line 20", "unbalanced quote"]);
    let db = ws.db();
    assert_eq!(
        db.count(r#"SELECT count(*) FROM accounts WHERE "AccountID" = 'B20'"#),
        1,
        "B20 is in the file, after the runaway quote: it must not be deleted. {out}"
    );
    assert_eq!(db.last_run().deleted, 0, "{out}");
}

fn a_utf8_bom_and_crlf_line_ends_are_read_as_usual(kind: StoreKind) {
    let ws = workspace_on(kind, &accounts_config(""));
    let text = format!("\u{feff}{}", six_accounts().replace('\n', "\r\n"));
    ws.drop_file("accounts_20260101.csv", &text);
    ws.dropsync(&["run"]).code(0).stdout_has(&[
        "accounts  2026-01-01  accounts_20260101.csv  success  rows 6 ok 6 rejected 0 skipped 0  +6 ~0 -0",
    ]);
    let db = ws.db();
    assert_eq!(
        db.rows(
            r#"SELECT "AccountID", CAST("CreatedDate" AS VARCHAR) FROM accounts ORDER BY "AccountID" LIMIT 2"#
        ),
        table(&[["A1", "2020-01-01"], ["A2", "2020-01-02"]])
    );
    drop(db);
    // `validate` sees the first column too.
    let file = ws.path("drops/accounts_20260101.csv");
    ws.dropsync(&["validate", "--dataset", "accounts", file.to_str().unwrap()])
        .code(0)
        .stdout_has(&[
            "accounts_20260101.csv: 6 rows, 6 valid, 0 rejected, 0 duplicates skipped\n",
        ]);
}

fn latin1_files_are_read_when_the_dialect_says_so(kind: StoreKind) {
    let ws = workspace_on(kind, &accounts_config(r#"csv = { encoding = "latin-1" }"#));
    let utf8 = format!(
        "{ACCOUNTS_HEADER}\
         L1,,Société Générale,parent,pro,10,2020-01-01\n\
         L2,L1,Müller & Söhne,product,pro,5,2020-01-02\n\
         L3,,\"Ñandú, Açaí\",parent,free,1,2020-01-03\n"
    );
    // Every character here is in Latin-1: one byte each.
    let latin1: Vec<u8> = utf8.chars().map(|c| u8::try_from(c).unwrap()).collect();
    assert!(std::str::from_utf8(&latin1).is_err());
    ws.drop_file("accounts_20260101.csv", &latin1);
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&["success  rows 3 ok 3 rejected 0 skipped 0  +3 ~0 -0"]);
    assert_eq!(
        ws.db()
            .rows(r#"SELECT "AccountID", "Name" FROM accounts ORDER BY "AccountID""#),
        table(&[
            ["L1", "Société Générale"],
            ["L2", "Müller & Söhne"],
            ["L3", "Ñandú, Açaí"],
        ])
    );
    // `validate --encoding latin-1` agrees; without it, the rows are rejected.
    let file = ws.path("drops/accounts_20260101.csv");
    let file = file.to_str().unwrap();
    ws.dropsync(&[
        "validate",
        "--dataset",
        "accounts",
        "--encoding",
        "latin-1",
        file,
    ])
    .code(0)
    .stdout_has(&["3 rows, 3 valid, 0 rejected"]);
    ws.dropsync(&["validate", "--dataset", "accounts", file])
        .code(1)
        .stdout_has(&[
            "3 rows, 0 valid, 3 rejected",
            "  line 2 [L1] Name: not valid UTF-8 (byte 5 of the value)",
        ]);
}

const SUBSCRIBERS: &str = r#"
[integrations.subs]
dataset = "subscribers"
source = { type = "folder", path = "drops" }
pattern = "subscribers_{date:%Y%m%d}.csv"
on_error = { max_ratio = 0.5 }

[integrations.subs_small_fields]
dataset = "subscribers"
table = "subscribers_small"
source = { type = "folder", path = "drops" }
pattern = "subscribers_{date:%Y%m%d}.csv"
on_error = { max_ratio = 0.5 }
csv = { max_field_bytes = 1000000 }
"#;

fn a_10_mb_field_is_a_value_under_the_default_limit_and_a_row_error_under_a_smaller_one(
    kind: StoreKind,
) {
    let ws = workspace_on(kind, SUBSCRIBERS);
    let big = "x".repeat(10_000_000);
    ws.drop_file(
        "subscribers_20260101.csv",
        format!(
            "ListID,Email,Status,UnsubscribedDate,UnsubscribeReason,FirstName,LastName\n\
             NEWS,big@example.org,subscribed,,,{big},Big\n\
             NEWS,small@example.org,subscribed,,,Sam,Small\n"
        ),
    );
    let out = ws.dropsync(&["run"]);
    // The default limit is 16 MiB: the 10 MB name is stored as it is.
    out.code(3).stdout_has(&[
        "subs  2026-01-01  subscribers_20260101.csv  success  rows 2 ok 2 rejected 0 skipped 0  +2 ~0 -0",
        "subs_small_fields  2026-01-01  subscribers_20260101.csv  partial  rows 2 ok 1 rejected 1 skipped 0  +1 ~0 -0",
        "    line 2 [NEWS|big@example.org] FirstName: value is 10000000 bytes, more than csv.max_field_bytes (1000000); an unbalanced quote?\n",
    ]);
    let db = ws.db();
    assert_eq!(
        db.rows(r#"SELECT "Email", length("FirstName") FROM subscribers ORDER BY "Email""#),
        table(&[["big@example.org", "10000000"], ["small@example.org", "3"]])
    );
    assert_eq!(
        db.rows(r#"SELECT "Email", "FirstName" FROM subscribers_small"#),
        table(&[["small@example.org", "Sam"]])
    );
    let run = db
        .runs()
        .into_iter()
        .find(|r| r.integration == "subs_small_fields")
        .unwrap();
    let errors = db.row_errors(&run.execution_id);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].field.as_deref(), Some("FirstName"));
    // The raw row is kept, shortened.
    let raw = errors[0].raw.as_deref().unwrap();
    assert!(
        raw.starts_with("NEWS,big@example.org,subscribed,,,xxxx"),
        "{}",
        &raw[..60]
    );
    assert!(
        raw.ends_with("… (10000039 bytes in all)"),
        "{}",
        &raw[raw.len() - 60..]
    );
    assert!(raw.len() < 5000, "{}", raw.len());
}

#[test]
fn a_file_that_cannot_be_read_is_a_clear_failure() {
    let ws = with_six_accounts("");
    let missing = ws.path("drops/accounts_20260109.csv");
    let out = ws.dropsync(&["ingest", "accounts", missing.to_str().unwrap()]);
    out.code(1).stdout_has(&[
        &format!(
            "accounts  {}  error: cannot read {}",
            missing.display(),
            missing.display()
        ),
        "No such file or directory",
    ]);
    ws.dropsync(&[
        "validate",
        "--dataset",
        "accounts",
        missing.to_str().unwrap(),
    ])
    .code(1)
    .stderr_has(&["accounts_20260109.csv: cannot read: No such file or directory"]);
    assert_eq!(ws.db().runs().len(), 1);
}

crate::on_both_stores! {
    duplicate_keys_reject_every_copy_and_keep_the_stored_record => duplicate_keys_reject_every_copy_and_keep_the_stored_record;
    an_unbalanced_quote_does_not_delete_the_rows_it_swallows => an_unbalanced_quote_does_not_delete_the_rows_it_swallows;
    latin1_files_are_read_when_the_dialect_says_so => latin1_files_are_read_when_the_dialect_says_so;
    a_10_mb_field_is_a_value_under_the_default_limit_and_a_row_error_under_a_smaller_one => a_10_mb_field_is_a_value_under_the_default_limit_and_a_row_error_under_a_smaller_one;
    a_utf8_bom_and_crlf_line_ends_are_read_as_usual => a_utf8_bom_and_crlf_line_ends_are_read_as_usual;
}

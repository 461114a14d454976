//! What happens to a file with bad rows: the integration's `on_error` policy
//! rejects the whole file, or skips the bad rows within limits.

use crate::common::{
    ACCOUNTS_HEADER, RowError, StoreKind, accounts, six_accounts_table, table, with_six_accounts_on,
};

/// Day 2 of `six_accounts` with two bad rows among seven: A3's seats are
/// negative, A6 has a field too many. A1 changes, A7 is new.
fn two_bad_rows() -> String {
    format!(
        "{ACCOUNTS_HEADER}\
         A1,,Account 1,parent,pro,11,2020-01-01\n\
         A2,,Account 2,parent,pro,20,2020-01-02\n\
         A3,,Account 3 renamed,parent,pro,-5,2020-01-03\n\
         A4,,Account 4,parent,pro,40,2020-01-04\n\
         A5,,Account 5,parent,pro,50,2020-01-05\n\
         A6,,Account 6,parent,pro,60,2020-01-06,surplus\n\
         A7,,Account 7,parent,pro,70,2020-01-07\n"
    )
}

/// The good rows applied; the bad ones kept as they were, not deleted.
fn good_rows_applied() -> Vec<Vec<String>> {
    table(&[
        ["A1", "Account 1", "11"],
        ["A2", "Account 2", "20"],
        ["A3", "Account 3", "30"],
        ["A4", "Account 4", "40"],
        ["A5", "Account 5", "50"],
        ["A6", "Account 6", "60"],
        ["A7", "Account 7", "70"],
    ])
}

fn error_policies(kind: StoreKind) {
    struct Case {
        on_error: &'static str,
        code: i32,
        status: &'static str,
        message: &'static str,
        applied: bool,
    }
    let cases = [
        Case {
            on_error: r#"on_error = { policy = "reject" }"#,
            code: 1,
            status: "failed",
            message: r#"2 of 7 rows failed validation; on_error.policy = "reject" refuses the file"#,
            applied: false,
        },
        Case {
            // The default: skip, up to 10% of the rows.
            on_error: "",
            code: 1,
            status: "failed",
            message: "2 of 7 rows failed validation (28.6%, more than on_error.max_ratio 10.0%); nothing applied",
            applied: false,
        },
        Case {
            on_error: "on_error = { max_ratio = 0.3 }",
            code: 3,
            status: "partial",
            message: "2 rows rejected",
            applied: true,
        },
        Case {
            on_error: r#"on_error = { policy = "skip", max_ratio = 0.5, max_rows = 1 }"#,
            code: 1,
            status: "failed",
            message: "2 of 7 rows failed validation, more than on_error.max_rows (1); nothing applied",
            applied: false,
        },
        Case {
            on_error: r#"on_error = { policy = "skip", max_ratio = 0.5, max_rows = 2 }"#,
            code: 3,
            status: "partial",
            message: "2 rows rejected",
            applied: true,
        },
    ];
    for case in cases {
        let ws = with_six_accounts_on(kind, case.on_error);
        ws.drop_file("accounts_20260102.csv", two_bad_rows());
        let out = ws.dropsync(&["run"]);
        let what = format!("with `{}`", case.on_error);
        assert_eq!(out.code, case.code, "{what}: {out}");
        let summary = if case.applied {
            "accounts  2026-01-02  accounts_20260102.csv  partial  rows 7 ok 5 rejected 2 skipped 0  +1 ~1 -0"
        } else {
            "accounts  2026-01-02  accounts_20260102.csv  failed  rows 7 rejected 2"
        };
        for needle in [
            summary,
            &format!("    {}\n", case.message),
            "    line 4 [A3] Seats: `-5` is less than the minimum 0\n",
            "    line 7 [A6]: expected 7 fields, found 8 (a stray delimiter, or an unbalanced quote?)\n",
        ] {
            assert!(
                out.stdout.contains(needle),
                "{what}: lacks {needle:?}: {out}"
            );
        }
        let db = ws.db();
        let expected = if case.applied {
            good_rows_applied()
        } else {
            six_accounts_table()
        };
        assert_eq!(accounts(&db), expected, "{what}");
        let run = db.last_run();
        assert_eq!(run.status, case.status, "{what}");
        assert_eq!(run.message.as_deref(), Some(case.message), "{what}");
        assert_eq!((run.input_rows, run.error_rows), (7, 2), "{what}: {run:?}");
        let (success, inserted, updated) = if case.applied { (5, 1, 1) } else { (0, 0, 0) };
        assert_eq!(
            (run.success_rows, run.inserted, run.updated, run.deleted),
            (success, inserted, updated, 0),
            "{what}: {run:?}"
        );
        assert_eq!(db.row_errors(&run.execution_id).len(), 2, "{what}");
    }
}

fn rejected_rows_are_recorded_with_line_key_field_message_and_raw_row(kind: StoreKind) {
    let ws = with_six_accounts_on(kind, r#"on_error = { policy = "reject" }"#);
    ws.drop_file(
        "accounts_20260102.csv",
        format!(
            "{ACCOUNTS_HEADER}\
             A1,,Account 1,parent,pro,10,2020-01-01\n\
             A2,,,parent,gold,20,2020-01-02\n\
             A3,,Account 3,parent,pro,30,2020-01-03,x\n\
             A4,,Account 4,parent,pro,forty,2020-01-04\n\
             A5,,Account 5,parent,pro,50,2020-01-05\n\
             A6,,Account 6,parent,pro,60,2020-01-06\n"
        ),
    );
    ws.dropsync(&["run"]).code(1);
    let db = ws.db();
    let run = db.last_run();
    assert_eq!((run.status.as_str(), run.error_rows), ("failed", 3));
    let err = |line, key: &str, field: Option<&str>, message: &str, raw: &str| RowError {
        line,
        record_key: Some(key.into()),
        field: field.map(Into::into),
        message: message.into(),
        raw: Some(raw.into()),
    };
    let mut errors = db.row_errors(&run.execution_id);
    errors.sort_by(|a, b| (a.line, &a.field).cmp(&(b.line, &b.field)));
    assert_eq!(
        errors,
        [
            err(
                3,
                "A2",
                Some("Plan"),
                "`gold` is not one of: enterprise, free, pro, starter",
                "A2,,,parent,gold,20,2020-01-02"
            ),
            err(
                4,
                "A3",
                None,
                "expected 7 fields, found 8 (a stray delimiter, or an unbalanced quote?)",
                "A3,,Account 3,parent,pro,30,2020-01-03,x"
            ),
            err(
                5,
                "A4",
                Some("Seats"),
                "`forty` is not an integer",
                "A4,,Account 4,parent,pro,forty,2020-01-04"
            ),
        ]
    );
    assert_eq!(accounts(&db), six_accounts_table());
    drop(db);

    // `show` prints them too, raw rows included.
    ws.dropsync(&["show", &run.execution_id]).code(0).stdout_has(&[
        "status         failed\n",
        "rows           6 in, 0 ok, 3 rejected, 0 skipped\n",
        "rejected rows:\n",
        "  line 3 [A2] Plan: `gold` is not one of: enterprise, free, pro, starter\n      A2,,,parent,gold,20,2020-01-02\n",
        "  line 5 [A4] Seats: `forty` is not an integer\n      A4,,Account 4,parent,pro,forty,2020-01-04\n",
    ]);
}

fn a_rejected_row_keeps_its_stored_record_in_a_snapshot(kind: StoreKind) {
    // Under `skip`, a row that fails validation is left out of the snapshot:
    // its stored record must neither change nor be deleted.
    let ws = with_six_accounts_on(kind, "on_error = { max_ratio = 0.5 }");
    ws.drop_file(
        "accounts_20260102.csv",
        format!(
            "{ACCOUNTS_HEADER}\
             A1,,Account 1,parent,pro,10,2020-01-01\n\
             A2,,Account 2 new name,parent,pro,-20,2020-01-02\n\
             A3,,Account 3,parent,pro,30,2020-01-03\n\
             A4,,Account 4,parent,pro,40,not-a-date\n\
             A5,,Account 5,parent,pro,50,2020-01-05\n\
             A6,,Account 6,parent,pro,60,2020-01-06\n"
        ),
    );
    ws.dropsync(&["run"])
        .code(3)
        .stdout_has(&["partial  rows 6 ok 4 rejected 2 skipped 0  +0 ~0 -0"]);
    let db = ws.db();
    assert_eq!(accounts(&db), six_accounts_table());
    assert_eq!(
        db.value(r#"SELECT CAST("CreatedDate" AS VARCHAR) FROM accounts WHERE "AccountID" = 'A4'"#),
        "2020-01-04"
    );
}

crate::on_both_stores! {
    error_policies => error_policies;
    rejected_rows_are_recorded_with_line_key_field_message_and_raw_row => rejected_rows_are_recorded_with_line_key_field_message_and_raw_row;
    a_rejected_row_keeps_its_stored_record_in_a_snapshot => a_rejected_row_keeps_its_stored_record_in_a_snapshot;
}

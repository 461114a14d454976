//! Referential rules: users belong to existing accounts; product accounts
//! hang under a parent account of the same file.

use crate::common::{ACCOUNTS_HEADER, StoreKind, six_accounts, table, workspace_on};

/// Users sort before accounts by name: the run must still sync accounts
/// first on each date, since users refer to them.
const CONFIG: &str = r#"
[integrations.a_users]
dataset = "users"
source = { type = "folder", path = "drops" }
pattern = "users_{date:%Y%m%d}.csv"
on_error = { max_ratio = 0.5 }

[integrations.b_accounts]
dataset = "accounts"
source = { type = "folder", path = "drops" }
pattern = "accounts_{date:%Y%m%d}.csv"
on_error = { max_ratio = 0.5 }
max_delete_ratio = 0.5
"#;

const USERS_HEADER: &str = "UserID,AccountID,FirstName,LastName,Role,Active,LastLogin\n";

fn a_user_whose_account_does_not_exist_is_rejected(kind: StoreKind) {
    let ws = workspace_on(kind, CONFIG);
    ws.drop_file("accounts_20260101.csv", six_accounts());
    ws.drop_file(
        "users_20260101.csv",
        format!(
            "{USERS_HEADER}\
             u1@example.org,A1,Una,One,admin,true,2026-01-01T08:00:00Z\n\
             u2@example.org,A6,Dos,Two,member,yes,\n\
             ghost@example.org,GHOST,Gus,Host,member,true,\n"
        ),
    );
    let out = ws.dropsync(&["run"]);
    out.code(3).stdout_has(&[
        "b_accounts  2026-01-01  accounts_20260101.csv  success",
        "a_users  2026-01-01  users_20260101.csv  partial  rows 3 ok 2 rejected 1 skipped 0  +2 ~0 -0",
        "    line 4 [ghost@example.org] AccountID: `GHOST` does not exist: no accounts record has that AccountID\n",
    ]);
    let accounts_at = out.stdout.find("b_accounts  2026-01-01").unwrap();
    let users_at = out.stdout.find("a_users  2026-01-01").unwrap();
    assert!(
        accounts_at < users_at,
        "accounts are synced before the users that refer to them: {out}"
    );
    assert_eq!(
        ws.db()
            .rows(r#"SELECT "UserID", "AccountID" FROM users ORDER BY "UserID""#),
        table(&[["u1@example.org", "A1"], ["u2@example.org", "A6"]])
    );

    // Day 2: A6 is gone from the accounts, so its user is now refused.
    let accounts_day2: String = six_accounts()
        .lines()
        .filter(|l| !l.starts_with("A6"))
        .map(|l| format!("{l}\n"))
        .collect();
    ws.drop_file("accounts_20260102.csv", accounts_day2);
    ws.drop_file(
        "users_20260102.csv",
        format!(
            "{USERS_HEADER}\
             u1@example.org,A1,Una,One,admin,true,2026-01-02T08:00:00Z\n\
             u2@example.org,A6,Dos,Two,member,yes,\n"
        ),
    );
    ws.dropsync(&["run"]).code(3).stdout_has(&[
        "b_accounts  2026-01-02  accounts_20260102.csv  success  rows 5 ok 5 rejected 0 skipped 0  +0 ~0 -1",
        "a_users  2026-01-02  users_20260102.csv  partial  rows 2 ok 1 rejected 1 skipped 0  +0 ~1 -0",
        "    line 3 [u2@example.org] AccountID: `A6` does not exist: no accounts record has that AccountID\n",
    ]);
    let db = ws.db();
    let run = db.last_run();
    assert_eq!(
        (run.integration.as_str(), run.status.as_str()),
        ("a_users", "partial")
    );
    assert_eq!(
        db.row_errors(&run.execution_id)[0].field.as_deref(),
        Some("AccountID")
    );
}

fn account_hierarchy_rules(kind: StoreKind) {
    let ws = workspace_on(kind, CONFIG);
    ws.drop_file(
        "accounts_20260101.csv",
        format!(
            "{ACCOUNTS_HEADER}\
             KID,MOM,Kid,product,pro,1,2020-01-01\n\
             MOM,,Mom,parent,pro,2,2020-01-01\n\
             ORPHAN,,Orphan,product,pro,3,2020-01-01\n\
             LOST,NOWHERE,Lost,product,pro,4,2020-01-01\n\
             P1,,Parent one,parent,pro,5,2020-01-01\n\
             P1-A,P1,Product A,product,pro,6,2020-01-01\n"
        ),
    );
    ws.dropsync(&["run", "b_accounts"]).code(3).stdout_has(&[
        "rows 6 ok 4 rejected 2 skipped 0  +4 ~0 -0",
        "    line 4 [ORPHAN] ParentID: a product account must have a parent\n",
        "    line 5 [LOST] ParentID: `NOWHERE` does not exist: no row of this file has that AccountID\n",
    ]);
    assert_eq!(
        ws.db()
            .rows(r#"SELECT "AccountID", "ParentID", "Type" FROM accounts ORDER BY "AccountID""#),
        table(&[
            // A parent later in the file is found.
            ["KID", "MOM", "product"],
            ["MOM", "NULL", "parent"],
            ["P1", "NULL", "parent"],
            ["P1-A", "P1", "product"],
        ])
    );

    // The parent must be in the same file: one only in the store does not count.
    ws.drop_file(
        "accounts_20260102.csv",
        format!(
            "{ACCOUNTS_HEADER}\
             KID,MOM,Kid,product,pro,1,2020-01-01\n\
             MOM,,Mom,parent,pro,2,2020-01-01\n\
             P1-A,P1,Product A,product,pro,6,2020-01-01\n\
             P2,,Parent two,parent,pro,7,2020-01-01\n\
             P3,,Parent three,parent,pro,8,2020-01-01\n"
        ),
    );
    ws.dropsync(&["run", "b_accounts"]).code(3).stdout_has(&[
        "rows 5 ok 4 rejected 1 skipped 0  +2 ~0 -1",
        "    line 4 [P1-A] ParentID: `P1` does not exist: no row of this file has that AccountID\n",
    ]);
}

crate::on_both_stores! {
    a_user_whose_account_does_not_exist_is_rejected => a_user_whose_account_does_not_exist_is_rejected;
    account_hierarchy_rules => account_hierarchy_rules;
}

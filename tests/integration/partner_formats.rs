//! Files as partners really write them: their own header spellings, exports
//! named by month, week or year, Windows code pages labelled Latin-1, and
//! headers that would make every row's attributes huge.

use crate::common::{ACCOUNTS_HEADER, Workspace, accounts_config, table};

/// A Totango-style accounts export: AccountID, ParentID, then attributes of
/// its own. It has no Type column, so nothing marks product accounts.
const TOTANGO_ACCOUNTS: &str = "AccountID,ParentID,Name,Industry,ContractValue,RenewalDate,Region\n\
    ACME,,Acme Corp,Manufacturing,120000,2027-01-31,EMEA\n\
    ACME-EU,ACME,Acme Europe,Manufacturing,40000,2027-01-31,EMEA\n\
    GLOBEX,,Globex,,5000,,AMER\n";

/// Accounts, users and usage, each read from `drops/` as its partner names it.
const PARTNER_CONFIG: &str = r#"
[integrations.accounts]
dataset = "accounts"
source = { type = "folder", path = "drops" }
pattern = "accounts_{date:%Y%m%d}.csv"

[integrations.users]
dataset = "users"
source = { type = "folder", path = "drops" }
pattern = "users_{date:%Y%m%d}.csv"

[integrations.usage]
dataset = "usage"
source = { type = "folder", path = "drops" }
pattern = "usage_{date:%Y%m%d}.csv"
"#;

#[test]
fn a_totango_accounts_export_validates_as_written() {
    let ws = Workspace::new(&accounts_config("on_error = { max_ratio = 0.5 }"));
    ws.drop_file("accounts_20261110.csv", TOTANGO_ACCOUNTS);
    ws.dropsync(&["run"]).code(0).stdout_has(&[
        "accounts  2026-11-10  accounts_20261110.csv  success  rows 3 ok 3 rejected 0 skipped 0  +3 ~0 -0\n",
        "columns not in the schema, kept in _attributes: Industry, ContractValue, RenewalDate, Region",
    ]);
    assert_eq!(
        ws.db().rows(
            "SELECT AccountID, coalesce(ParentID, 'NULL'), Name, coalesce(Type, 'NULL'), _attributes
             FROM accounts ORDER BY AccountID"
        ),
        table(&[
            [
                "ACME",
                "NULL",
                "Acme Corp",
                "NULL",
                r#"{"ContractValue":"120000","Industry":"Manufacturing","Region":"EMEA","RenewalDate":"2027-01-31"}"#
            ],
            [
                "ACME-EU",
                "ACME",
                "Acme Europe",
                "NULL",
                r#"{"ContractValue":"40000","Industry":"Manufacturing","Region":"EMEA","RenewalDate":"2027-01-31"}"#
            ],
            [
                "GLOBEX",
                "NULL",
                "Globex",
                "NULL",
                r#"{"ContractValue":"5000","Region":"AMER"}"#
            ],
        ])
    );

    // A file that marks product accounts still needs their parents, and a
    // parent must be in the export.
    ws.drop_file(
        "accounts_20261111.csv",
        "AccountID,ParentID,Type,Region\n\
         ACME,,parent,EMEA\n\
         ACME-EU,ACME,product,EMEA\n\
         ACME-US,,product,AMER\n\
         STARK-1,STARK,product,AMER\n\
         GLOBEX,,parent,AMER\n",
    );
    ws.dropsync(&["run"]).code(3).stdout_has(&[
        "line 4 [ACME-US] ParentID: a product account must have a parent",
        "line 5 [STARK-1] ParentID: `STARK` does not exist: no row of this file has that AccountID",
    ]);
}

#[test]
fn users_and_usage_exports_with_partner_header_names_validate() {
    let ws = Workspace::new(PARTNER_CONFIG);
    ws.drop_file("accounts_20261110.csv", TOTANGO_ACCOUNTS);
    ws.drop_file(
        "users_20261110.csv",
        "User id,AccountId,Role\n\
         ann@acme.example,ACME-EU,admin\n\
         bob@globex.example,GLOBEX,viewer\n",
    );
    ws.drop_file(
        "usage_20261110.csv",
        "User id,AccountId,Action,Module,Timestamp\n\
         ann@acme.example,ACME-EU,login,web,2026-11-10T08:00:00Z\n\
         bob@globex.example,GLOBEX,export,reports,2026-11-10T09:30:00Z\n",
    );
    let note = "header names matched ignoring case, spaces and underscores: `User id` as UserID, `AccountId` as AccountID";
    let out = ws.dropsync(&["run"]);
    out.code(0).stdout_has(&[
        "users  2026-11-10  users_20261110.csv  success  rows 2 ok 2 rejected 0 skipped 0  +2 ~0 -0\n",
        "usage  2026-11-10  usage_20261110.csv  success  rows 2 ok 2 rejected 0 skipped 0  +2 ~0 -0\n",
    ]);
    assert_eq!(
        out.stdout.matches(note).count(),
        2,
        "said once a file: {out}"
    );
    let runs = ws.db().runs();
    for integration in ["users", "usage"] {
        let run = runs.iter().find(|r| r.integration == integration).unwrap();
        assert_eq!(run.message.as_deref(), Some(note), "{integration}");
    }
    assert_eq!(
        ws.db()
            .rows("SELECT UserID, AccountID, Role FROM users ORDER BY UserID"),
        table(&[
            ["ann@acme.example", "ACME-EU", "admin"],
            ["bob@globex.example", "GLOBEX", "viewer"],
        ])
    );
    assert_eq!(
        ws.db()
            .count("SELECT count(*) FROM usage WHERE AccountID IN ('ACME-EU', 'GLOBEX')"),
        2
    );

    // Two spellings of one field are one column twice, not a guess.
    ws.drop_file(
        "users_20261111.csv",
        "UserID,AccountId,user_id\nann@acme.example,ACME-EU,x\n",
    );
    ws.dropsync(&["run", "users"]).code(1).stdout_has(&[
        "users_20261111.csv: line 1: column `UserID` appears twice in the header (columns 1 and 3 `user_id`)",
    ]);
}

/// Patterns naming a month, an ISO week or a year date their files at the
/// period's first day, in scans and in `ingest`.
#[test]
fn monthly_weekly_and_yearly_exports_are_dated_at_their_first_day() {
    let ws = Workspace::new(
        r#"
[integrations.monthly]
dataset = "accounts"
source = { type = "folder", path = "drops/monthly" }
pattern = "accounts_{date:%Y%m}.csv"

[integrations.weekly]
dataset = "accounts"
source = { type = "folder", path = "drops/weekly" }
pattern = "accounts_{date:%G-W%V}.csv"
table = "weekly_accounts"

[integrations.yearly]
dataset = "accounts"
source = { type = "folder", path = "drops/yearly" }
pattern = "accounts_{date:%Y}.csv"
table = "yearly_accounts"
"#,
    );
    ws.drop_file("monthly/accounts_202610.csv", TOTANGO_ACCOUNTS);
    ws.drop_file("weekly/accounts_2026-W01.csv", TOTANGO_ACCOUNTS);
    ws.drop_file("yearly/accounts_2025.csv", TOTANGO_ACCOUNTS);
    ws.dropsync(&["run"]).code(0).stdout_has(&[
        "monthly  2026-10-01  accounts_202610.csv  success",
        // ISO week 1 of 2026 starts on Monday 29 December 2025.
        "weekly  2025-12-29  accounts_2026-W01.csv  success",
        "yearly  2025-01-01  accounts_2025.csv  success",
    ]);

    let november = ws.write(
        "elsewhere/accounts_202611.csv",
        TOTANGO_ACCOUNTS.replace("Acme Corp", "Acme Corporation"),
    );
    ws.dropsync(&["ingest", "monthly", &november.display().to_string()])
        .code(0)
        .stdout_has(&["monthly  2026-11-01  accounts_202611.csv  success"]);
    assert_eq!(
        ws.db().value(
            "SELECT CAST(business_date AS VARCHAR) FROM dropsync_runs
             WHERE file_name = 'accounts_202611.csv'"
        ),
        "2026-11-01"
    );
}

#[test]
fn a_date_template_that_can_never_yield_a_date_is_a_config_error() {
    for (template, why) in [
        ("%m%d", "it has no year"),
        ("%Y%d", "it has a day (%d) but no month"),
        (
            "%V",
            "an ISO week needs both %G (its year) and %V (its number)",
        ),
    ] {
        let ws = Workspace::new(&accounts_config("").replace("%Y%m%d", template));
        ws.dropsync(&["run"]).code(2).stderr_has(&[
            &format!("pattern `accounts_{{date:{template}}}.csv`: the date template `{template}` can never yield a date: {why}"),
        ]);
    }
}

#[test]
fn windows_1252_files_labelled_latin1_keep_the_euro_sign() {
    let ws = Workspace::new(&accounts_config(r#"csv = { encoding = "latin1" }"#));
    // 0x80 is `€` in Windows-1252, 0xE9 is `é`; ISO-8859-1 proper has a
    // control character at 0x80.
    let file = b"AccountID,ParentID,Name,Region\nCAFE,,Caf\xe9 \x80uro,EMEA\n".to_vec();
    ws.drop_file("accounts_20261110.csv", file);
    ws.dropsync(&["run"]).code(0);
    assert_eq!(ws.db().value("SELECT Name FROM accounts"), "Café €uro");

    // Any WHATWG label works; a byte the encoding lacks fails the file at
    // its line instead of storing a replacement character.
    let ws = Workspace::new(&accounts_config(r#"csv = { encoding = "shift_jis" }"#));
    ws.drop_file(
        "accounts_20261110.csv",
        b"AccountID,ParentID,Name\nJP1,,\x93\xfa\x96\x7b\nJP2,,\x82\n",
    );
    ws.dropsync(&["run"]).code(1).stdout_has(&[
        "accounts_20261110.csv: line 3: byte 40 of the file is not valid Shift_JIS; is csv.encoding right?",
    ]);

    let ws = Workspace::new(&accounts_config(r#"csv = { encoding = "klingon" }"#));
    ws.dropsync(&["run"])
        .code(2)
        .stderr_has(&["unknown encoding `klingon`: use a WHATWG encoding label"]);
}

/// A header name of 1 MiB used to be copied into every row's attributes
/// (2,000 rows took `ingest` past 5 GB).
#[test]
fn a_huge_header_name_is_refused() {
    let ws = Workspace::new(&accounts_config(""));
    let mut file = format!("{},{}\n", ACCOUNTS_HEADER.trim_end(), "N".repeat(1 << 20));
    for i in 0..2000 {
        file.push_str(&format!("A{i},,Account {i},parent,pro,1,2020-01-01,x\n"));
    }
    let path = ws.write("accounts_20261110.csv", &file);
    ws.dropsync(&["ingest", "accounts", &path.display().to_string()])
        .code(1)
        .stdout_has(&[
            "accounts_20261110.csv: line 1: the name of column 8 is 1048576 bytes long, more than the 1024 a header name may have: is the first line really a header?",
        ]);
}

/// Attribute values, and a row's attributes object as a whole, are held to
/// csv.max_field_bytes like the schema's own fields.
#[test]
fn attributes_are_bounded_by_max_field_bytes() {
    let ws = Workspace::new(&accounts_config(
        r#"csv = { max_field_bytes = 64 }
on_error = { policy = "skip", max_ratio = 0.9 }"#,
    ));
    let long = "x".repeat(65);
    let name = "n".repeat(30);
    ws.drop_file(
        "accounts_20261110.csv",
        format!(
            "AccountID,ParentID,Notes,{name}\n\
             A1,,short,\n\
             A2,,{long},\n\
             A3,,{},{}\n",
            "y".repeat(20),
            "z".repeat(20)
        ),
    );
    let out = ws.dropsync(&["run"]);
    out.code(3).stdout_has(&[
        "rows 3 ok 1 rejected 2",
        "line 3 [A2] Notes: value is 65 bytes, more than csv.max_field_bytes (64); an unbalanced quote?",
        "line 4 [A3]: the columns not in the schema make an _attributes object of more than csv.max_field_bytes (64) bytes",
    ]);
    assert_eq!(
        ws.db().rows("SELECT AccountID, _attributes FROM accounts"),
        table(&[["A1", r#"{"Notes":"short"}"#]])
    );
}

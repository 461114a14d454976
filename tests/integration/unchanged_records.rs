//! A snapshot sync leaves out, unread, the records of its file whose bytes
//! are those a stored row was read from. What a user sees must not tell:
//! the same rows, counts, errors and change log as a sync that read every
//! record, whatever changed around those bytes.

use crate::common::*;

const ITEMS: &str = r#"
[store]
schemas = "schemas"

[integrations.items]
dataset = "items"
source = { type = "folder", path = "drops" }
pattern = "items_{date:%Y%m%d}.csv"
"#;

fn items_schema(max_length: usize) -> String {
    format!(
        r#"{{
  "name": "items",
  "fields": [
    {{ "name": "id", "type": "string", "constraints": {{ "required": true }} }},
    {{ "name": "name", "type": "string", "constraints": {{ "maxLength": {max_length} }} }}
  ],
  "primaryKey": ["id"]
}}"#
    )
}

/// A record the store holds as it is in today's file is still checked by
/// today's schema: a tightened rule rejects it though its bytes did not
/// change.
#[test]
fn a_record_the_store_holds_is_checked_again_when_the_schema_changes() {
    let ws = workspace_on(StoreKind::DuckDb, ITEMS);
    ws.write("schemas/items.json", items_schema(20));
    let file = "id,name\ni1,short\ni2,a longer name\n";
    ws.drop_file("items_20260101.csv", file);
    ws.dropsync(&["run"]).code(0);
    ws.write("schemas/items.json", items_schema(10));
    ws.drop_file("items_20260102.csv", file);
    ws.dropsync(&["run"]).code(1).stdout_has(&[
        "items  2026-01-02  items_20260102.csv  failed  rows 2 rejected 1",
        "    line 3 [i2] name: is 13 characters, more than 10\n",
    ]);
    let db = ws.db();
    let run = db.last_run();
    assert_eq!(
        (run.status.as_str(), run.input_rows, run.error_rows),
        ("failed", 2, 1)
    );
    let errors = db.row_errors(&run.execution_id);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        (errors[0].line, errors[0].field.as_deref()),
        (3, Some("name")),
        "{errors:?}"
    );
}

/// Records spelled as the store's rows were read, and records spelled
/// another way with the same values (another line end, leading zeros),
/// are all unchanged; every stored row keeps the hash of the record it was
/// read from.
#[test]
fn records_as_stored_and_respelled_are_unchanged() {
    let ws = with_six_accounts_on(StoreKind::DuckDb, "");
    let day_two = six_accounts()
        .replace(
            "A2,,Account 2,parent,pro,20,2020-01-02\n",
            "A2,,Account 2,parent,pro,20,2020-01-02\r\n",
        )
        .replace(",30,", ",0030,");
    assert_ne!(day_two, six_accounts());
    ws.drop_file("accounts_20260102.csv", day_two);
    ws.dropsync(&["run"]).code(0);
    let db = ws.db();
    let run = db.last_run();
    assert_eq!(
        (
            run.input_rows,
            run.inserted,
            run.updated,
            run.deleted,
            run.unchanged
        ),
        (6, 0, 0, 0, 6)
    );
    assert_eq!(accounts(&db), six_accounts_table());
    assert_eq!(
        db.count("SELECT count(*) FROM accounts WHERE _raw_hash IS NULL"),
        0
    );
    assert_eq!(
        db.count("SELECT count(*) FROM dropsync_changes WHERE business_date = DATE '2026-01-02'"),
        0
    );
}

/// A record left out as unchanged and a new record with its key are both
/// rejected, each naming the other's line, exactly as when neither is
/// left out; the stored row stays.
#[test]
fn a_key_repeated_by_a_record_as_stored_rejects_both_copies() {
    let ws = with_six_accounts_on(StoreKind::DuckDb, "");
    let day_two = format!(
        "{}A3,,Account 3 again,parent,pro,31,2020-01-03\n",
        six_accounts()
    );
    ws.drop_file("accounts_20260102.csv", day_two);
    ws.dropsync(&["run"]).code(1).stdout_has(&[
        "accounts  2026-01-02  accounts_20260102.csv  failed  rows 7 rejected 2",
        "    line 4 [A3] AccountID: duplicate key `A3` (lines 4, 8)\n",
        "    line 8 [A3] AccountID: duplicate key `A3` (lines 4, 8)\n",
    ]);
    assert_eq!(accounts(&ws.db()), six_accounts_table());
}

/// The same when the new record comes first, in a chunk of its own: a
/// record left out as unchanged is checked against the keys of the records
/// kept in the chunks before it.
#[test]
fn a_key_repeated_before_a_record_as_stored_rejects_both_copies() {
    let ws = with_six_accounts_on(StoreKind::DuckDb, "");
    let stored = six_accounts();
    let (header, rows) = stored.split_once('\n').expect("a header line");
    let day_two = format!("{header}\nA3,,Account 3 again,parent,pro,31,2020-01-03\n{rows}");
    ws.drop_file("accounts_20260102.csv", day_two);
    let record_a_chunk = [("DROPSYNC_CHUNK_BYTES", "40")];
    ws.dropsync_env(&["run"], &record_a_chunk)
        .code(1)
        .stdout_has(&[
            "accounts  2026-01-02  accounts_20260102.csv  failed  rows 7 rejected 2",
            "    line 2 [A3] AccountID: duplicate key `A3` (lines 2, 5)\n",
            "    line 5 [A3] AccountID: duplicate key `A3` (lines 2, 5)\n",
        ]);
    assert_eq!(accounts(&ws.db()), six_accounts_table());
}

/// A changed record whose parent is a record left out as unchanged, before
/// it or after it, in a chunk of its own, finds that parent; a parent that
/// is gone is still missed.
#[test]
fn a_changed_record_finds_its_parent_among_the_records_as_stored() {
    let ws = workspace_on(StoreKind::DuckDb, &accounts_config(""));
    let day_one = format!(
        "{ACCOUNTS_HEADER}\
         MOM,,Mom,parent,pro,2,2020-01-01\n\
         KID,MOM,Kid,product,pro,1,2020-01-01\n\
         TWIN,DAD,Twin,product,pro,3,2020-01-01\n\
         DAD,,Dad,parent,pro,4,2020-01-01\n"
    );
    ws.drop_file("accounts_20260101.csv", day_one);
    ws.dropsync(&["run"]).code(0);
    let record_a_chunk = [("DROPSYNC_CHUNK_BYTES", "40")];
    ws.drop_file(
        "accounts_20260102.csv",
        format!(
            "{ACCOUNTS_HEADER}\
             MOM,,Mom,parent,pro,2,2020-01-01\n\
             KID,MOM,Kid renamed,product,pro,1,2020-01-01\n\
             TWIN,DAD,Twin renamed,product,pro,3,2020-01-01\n\
             DAD,,Dad,parent,pro,4,2020-01-01\n"
        ),
    );
    ws.dropsync_env(&["run"], &record_a_chunk)
        .code(0)
        .stdout_has(&["rows 4 ok 4 rejected 0 skipped 0  +0 ~2 -0"]);
    ws.drop_file(
        "accounts_20260103.csv",
        format!(
            "{ACCOUNTS_HEADER}\
             KID,MOM,Kid renamed again,product,pro,1,2020-01-01\n\
             TWIN,DAD,Twin renamed,product,pro,3,2020-01-01\n\
             DAD,,Dad,parent,pro,4,2020-01-01\n"
        ),
    );
    ws.dropsync_env(&["run"], &record_a_chunk)
        .code(1)
        .stdout_has(&[
            "    line 2 [KID] ParentID: `MOM` does not exist: no row of this file has that AccountID\n",
        ]);
}

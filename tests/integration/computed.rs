//! Calculated fields: `computed = { FullName = "...", ARR = "MRR * 12" }`
//! in an integration. The values land in the table, in `export`, in dry
//! runs and in the change log; a value that breaks its field's constraints
//! is a row error with its line; an expression that cannot work is a
//! config error before any file is read.

use serde_json::json;

use crate::common::{StoreKind, StoreWorkspace, table, workspace_on};

/// A CRM's accounts: names and monthly revenue come from the file; the full
/// name and the annual revenue are computed, and checked by the schema.
const SCHEMA: &str = r#"{
  "fields": [
    {"name": "AccountID", "type": "string"},
    {"name": "FirstName", "type": "string"},
    {"name": "LastName", "type": "string"},
    {"name": "FullName", "type": "string", "constraints": {"maxLength": 20}},
    {"name": "MRR", "type": "number", "bareNumber": false, "groupChar": ","},
    {"name": "ARR", "type": "number", "constraints": {"maximum": 120000}},
    {"name": "Seats", "type": "string"},
    {"name": "SeatCount", "type": "integer", "constraints": {"minimum": 1}}
  ],
  "primaryKey": "AccountID",
  "fieldsMatch": "equal"
}"#;

const HEADER: &str = "AccountID,FirstName,LastName,MRR,Seats\n";

const COMPUTED: &str = r#"computed = { FullName = "FirstName || ' ' || LastName", ARR = "MRR * 12", SeatCount = "Seats" }"#;

/// A workspace with the `crm_accounts` dataset and an integration of it
/// whose config ends with `extra`.
fn workspace(extra: &str) -> StoreWorkspace {
    workspace_of(StoreKind::DuckDb, extra)
}

/// `workspace`, on a store of `kind`.
fn workspace_of(kind: StoreKind, extra: &str) -> StoreWorkspace {
    let ws = workspace_on(
        kind,
        &format!(
            "[store]\n\
         schemas = \"schemas\"\n\n\
         [integrations.crm_accounts]\n\
         dataset = \"crm_accounts\"\n\
         source = {{ type = \"folder\", path = \"drops\" }}\n\
         pattern = \"accounts_{{date:%Y%m%d}}.csv\"\n\
         {extra}\n"
        ),
    );
    ws.write("schemas/crm_accounts.json", SCHEMA);
    ws
}

fn day1() -> String {
    format!("{HEADER}A1,Ada,Lovelace,€100,1\nA2,Grace,Hopper,200,2\nA3,Alan,Turing,\"1,000\",3\n")
}

const STORED: &str = r#"SELECT "AccountID", "FullName", "MRR", "ARR", "SeatCount" FROM crm_accounts ORDER BY "AccountID""#;

#[test]
fn computed_fields_land_in_the_table_and_in_export() {
    let ws = workspace(COMPUTED);
    ws.drop_file("accounts_20260101.csv", day1());
    ws.dropsync(&["run"]).code(0);
    assert_eq!(
        ws.db().rows(STORED),
        table(&[
            ["A1", "Ada Lovelace", "100", "1200", "1"],
            ["A2", "Grace Hopper", "200", "2400", "2"],
            ["A3", "Alan Turing", "1000", "12000", "3"],
        ])
    );
    // Typed by the schema, as the store keeps the field's type.
    assert_eq!(
        ws.db().rows(
            "SELECT column_name, data_type FROM information_schema.columns
             WHERE table_name = 'crm_accounts' AND column_name IN ('ARR', 'FullName', 'SeatCount')
             ORDER BY column_name"
        ),
        table(&[
            ["ARR", "DOUBLE"],
            ["FullName", "VARCHAR"],
            ["SeatCount", "BIGINT"]
        ])
    );
    let out = ws.dropsync(&["export", "crm_accounts"]);
    out.code(0).stdout_has(&[
        "AccountID,FirstName,LastName,FullName,MRR,ARR,Seats,SeatCount",
        "A1,Ada,Lovelace,Ada Lovelace,100.0,1200.0,1,1",
        "A3,Alan,Turing,Alan Turing,1000.0,12000.0,3,3",
    ]);
}

#[test]
fn an_expression_that_cannot_work_is_refused_when_the_config_loads() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "a parse error",
            r#"computed = { ARR = "MRR * " }"#,
            &["computed field `ARR`: does not parse: syntax error"],
        ),
        (
            "an unknown column",
            r#"computed = { ARR = "MRRR * 12" }"#,
            &[
                "computed field `ARR`: unknown column `MRRR` (columns: AccountID, FirstName, LastName, FullName, MRR, Seats, SeatCount)",
            ],
        ),
        (
            "a name the schema lacks",
            r#"computed = { TCV = "MRR * 36" }"#,
            &["computed field `TCV`: not a field of the dataset's schema"],
        ),
        (
            "a name the file also has",
            "columns = { \"Annual\" = \"ARR\" }\ncomputed = { ARR = \"MRR * 12\" }",
            &[
                "computed field `ARR`: `columns` maps the file's column `Annual` to it; a field is read from the file or computed, not both",
            ],
        ),
        (
            "a second statement",
            r#"computed = { ARR = "1; SELECT 2" }"#,
            &["computed field `ARR`: must be one SQL expression (no `;`"],
        ),
        (
            "a subquery reading a file",
            r#"computed = { ARR = "(SELECT count(*) FROM read_csv('/etc/passwd'))" }"#,
            &["computed field `ARR`: subqueries are not allowed"],
        ),
        (
            "an aggregate",
            r#"computed = { ARR = "sum(MRR)" }"#,
            &["computed field `ARR`: aggregate functions are not allowed"],
        ),
        (
            "a window function",
            r#"computed = { ARR = "sum(MRR) OVER ()" }"#,
            &["computed field `ARR`: window functions are not allowed"],
        ),
        (
            "another computed field",
            r#"computed = { ARR = "MRR * 12", FullName = "ARR" }"#,
            &["computed field `FullName`: refers to computed field `ARR`"],
        ),
        (
            "a type the field cannot hold",
            r#"computed = { ARR = "DATE '2026-01-01'" }"#,
            &["computed field `ARR`: its value cannot be a number (DOUBLE)"],
        ),
        (
            "the key",
            r#"computed = { AccountID = "FirstName" }"#,
            &["computed field `AccountID`: it is part of the primary key"],
        ),
    ];
    for (what, config, needles) in cases {
        let ws = workspace(config);
        ws.drop_file("accounts_20260101.csv", day1());
        let out = ws.dropsync(&["run"]);
        out.code(2);
        let mut all = vec!["integration `crm_accounts`: "];
        all.extend_from_slice(needles);
        out.stderr_has(&all);
        assert!(
            !ws.store_path().exists() || !ws.db().table_exists("crm_accounts"),
            "{what}: nothing is synced"
        );
        let out = ws.dropsync(&["check"]);
        out.code(3);
        let mut all = vec!["DROPSYNC UNKNOWN - integration `crm_accounts`: "];
        all.extend_from_slice(needles);
        out.stdout_has(&all);
    }
}

fn a_computed_value_that_breaks_a_constraint_is_a_row_error_with_its_line(kind: StoreKind) {
    let ws = workspace_of(
        kind,
        &format!("{COMPUTED}\non_error = {{ policy = \"skip\", max_ratio = 0.8 }}"),
    );
    // Line 3: a name too long once joined; line 4: an ARR over the maximum;
    // line 5: a seat count that is no integer (a failed cast); line 6: 0
    // seats, under the minimum.
    ws.drop_file(
        "accounts_20260101.csv",
        format!(
            "{HEADER}A1,Ada,Lovelace,100,1\nA2,Grace,Hopper-Montgomery,200,2\nA3,Alan,Turing,20000,3\nA4,Edsger,Dijkstra,300,many\nA5,Barbara,Liskov,400,0\n"
        ),
    );
    let out = ws.dropsync(&["run"]);
    // Exit 3: applied, with rows rejected.
    out.code(3).stdout_has(&[
        "partial",
        "line 3 [A2] FullName: is 23 characters, more than 20 (computed as `FirstName || ' ' || LastName`)",
        "line 4 [A3] ARR: `240000.0` is more than the maximum 120000 (computed as `MRR * 12`)",
        "line 5 [A4] SeatCount: the expression `Seats` failed: Conversion Error: Could not convert string 'many' to INT64",
        "line 6 [A5] SeatCount: `0` is less than the minimum 1 (computed as `Seats`)",
    ]);
    let run = ws.db().last_run();
    assert_eq!((run.input_rows, run.error_rows), (5, 4));
    // `validate` checks a file as the integration reads it, computed fields too.
    let file = ws.path("drops/accounts_20260101.csv").display().to_string();
    ws.dropsync(&["validate", "--integration", "crm_accounts", &file])
        .code(1)
        .stdout_has(&[
            "5 rows, 1 valid, 4 rejected",
            "line 4 [A3] ARR: `240000.0` is more than the maximum 120000",
        ]);
    let errors = ws.db().row_errors(&run.execution_id);
    let lines: Vec<(u64, Option<&str>)> = errors
        .iter()
        .map(|e| (e.line as u64, e.field.as_deref()))
        .collect();
    assert_eq!(
        lines,
        vec![
            (3, Some("FullName")),
            (4, Some("ARR")),
            (5, Some("SeatCount")),
            (6, Some("SeatCount"))
        ]
    );
    assert_eq!(
        errors[2].raw.as_deref(),
        Some("A4,Edsger,Dijkstra,300,many")
    );
    // The other rows kept their values.
    assert_eq!(
        ws.db().rows(STORED),
        table(&[["A1", "Ada Lovelace", "100", "1200", "1"]])
    );

    // Under `reject`, the same file is refused as a whole.
    let ws = workspace_of(
        kind,
        &format!("{COMPUTED}\non_error = {{ policy = \"reject\" }}"),
    );
    ws.drop_file(
        "accounts_20260101.csv",
        format!("{HEADER}A1,Ada,Lovelace,100,1\nA3,Alan,Turing,20000,3\n"),
    );
    ws.dropsync(&["run"]).code(1).stdout_has(&[
        "1 of 2 rows failed validation; on_error.policy = \"reject\" refuses the file",
        "line 3 [A3] ARR:",
    ]);
    assert!(
        !ws.db().table_exists("crm_accounts")
            || ws.db().count("SELECT count(*) FROM crm_accounts") == 0
    );
}

fn a_file_that_carries_a_computed_column_is_refused(kind: StoreKind) {
    // The schema matches the header loosely: the column would otherwise be
    // kept aside in _attributes while the expression said something else.
    let ws = workspace_on(
        kind,
        "[store]\nschemas = \"schemas\"\n\n[integrations.crm_accounts]\ndataset = \"crm_accounts\"\nsource = { type = \"folder\", path = \"drops\" }\npattern = \"accounts_{date:%Y%m%d}.csv\"\ncomputed = { ARR = \"MRR * 12\" }\n",
    );
    ws.write(
        "schemas/crm_accounts.json",
        SCHEMA
            .replace(r#""fieldsMatch": "equal""#, r#""fieldsMatch": "subset""#)
            .replace(
                r#",
    {"name": "SeatCount", "type": "integer", "constraints": {"minimum": 1}}"#,
                "",
            ),
    );
    ws.drop_file(
        "accounts_20260101.csv",
        "AccountID,FirstName,LastName,FullName,MRR,Seats,ARR\nA1,Ada,Lovelace,Ada Lovelace,100,1,99\n",
    );
    ws.dropsync(&["run"]).code(1).stdout_has(&[
        "failed",
        "the file has a column `ARR`, which integration `crm_accounts` computes (computed.ARR)",
    ]);
    assert!(!ws.db().table_exists("crm_accounts"));
}

fn a_dry_run_previews_computed_values_and_a_changed_one_is_an_update_in_the_change_log(
    kind: StoreKind,
) {
    let ws = workspace_of(kind, COMPUTED);
    ws.drop_file("accounts_20260101.csv", day1());
    ws.dropsync(&["run"]).code(0);
    // Day 2: A1's MRR grows, so its ARR does; A2 gets married.
    ws.drop_file(
        "accounts_20260102.csv",
        format!(
            "{HEADER}A1,Ada,Lovelace,€150,1\nA2,Grace,Murray,200,2\nA3,Alan,Turing,\"1,000\",3\n"
        ),
    );
    ws.dropsync(&["run", "--dry-run"]).code(0).stdout_has(&[
        "would update A1: MRR: 100.0 -> 150.0, ARR: 1200.0 -> 1800.0",
        "would update A2: LastName: Hopper -> Murray, FullName: Grace Hopper -> Grace Murray",
    ]);
    assert_eq!(
        ws.db()
            .value(r#"SELECT "ARR" FROM crm_accounts WHERE "AccountID" = 'A1'"#),
        "1200",
        "a dry run changes nothing"
    );
    ws.dropsync(&["run"]).code(0);
    let out = ws.dropsync(&["changes", "crm_accounts", "--since", "2026-01-02", "--json"]);
    out.code(0);
    let changes: Vec<(String, serde_json::Value, serde_json::Value)> = out
        .json()
        .as_array()
        .expect("an array of changes")
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap().to_string(),
                c["key"].clone(),
                c["fields"].clone(),
            )
        })
        .collect();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[0].0, "update");
    assert_eq!(changes[0].1, json!({"AccountID": "A1"}));
    assert_eq!(
        changes[0].2,
        json!({"ARR": [1200.0, 1800.0], "MRR": [100.0, 150.0]}),
        "{changes:?}"
    );
    assert_eq!(changes[1].1, json!({"AccountID": "A2"}));
    assert_eq!(
        changes[1].2,
        json!({"FullName": ["Grace Hopper", "Grace Murray"], "LastName": ["Hopper", "Murray"]}),
        "{changes:?}"
    );
}

crate::on_both_stores! {
    a_computed_value_that_breaks_a_constraint_is_a_row_error_with_its_line => a_computed_value_that_breaks_a_constraint_is_a_row_error_with_its_line;
    a_file_that_carries_a_computed_column_is_refused => a_file_that_carries_a_computed_column_is_refused;
    a_dry_run_previews_computed_values_and_a_changed_one_is_an_update_in_the_change_log => a_dry_run_previews_computed_values_and_a_changed_one_is_an_update_in_the_change_log;
}

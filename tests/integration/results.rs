//! Campaign results: wide reports (one column per metric) and long rows
//! (entity, metric, value), typed per metric, upserted by
//! (entity, metric, period).

use crate::common::{StoreKind, StoreWorkspace, table, workspace_on};

const CONFIG: &str = r#"
[integrations.wide]
dataset = "results"
table = "wide_results"
source = { type = "folder", path = "drops" }
pattern = "wide_{date:%Y%m%d}.csv"
layout = "wide"
on_error = { max_ratio = 0.5 }
metrics = { Sent = "number", Spend = "currency", OpenRate = "percentage", Launch = "date", Subject = "text" }

[integrations.long]
dataset = "results"
table = "long_results"
source = { type = "folder", path = "drops" }
pattern = "long_{date:%Y%m%d}.csv"
on_error = { max_ratio = 0.5 }
metrics = { Sent = "number", Spend = "currency", OpenRate = "percentage", Launch = "date", Subject = "text" }

[integrations.untyped]
dataset = "results"
table = "untyped_results"
source = { type = "folder", path = "drops" }
pattern = "untyped_{date:%Y%m%d}.csv"
"#;

const WIDE_HEADER: &str = "EntityID,Period,Sent,OpenRate,Spend,Launch,Subject\n";
const LONG_HEADER: &str = "EntityID,Period,Metric,Value\n";

fn metrics(ws: &StoreWorkspace, table: &str) -> Vec<Vec<String>> {
    ws.db().rows(&format!(
        r#"SELECT "EntityID", "Period", "Metric", "MetricType", "Value", "NumberValue", "DateValue"
         FROM {table} ORDER BY "EntityID", "Period", "Metric""#
    ))
}

fn a_wide_report_becomes_typed_metric_rows(kind: StoreKind) {
    let ws = workspace_on(kind, CONFIG);
    ws.drop_file(
        "wide_20260105.csv",
        format!(
            "{WIDE_HEADER}\
             C1,2026-01-01,\"12,000\",12.5%,\"€1,200.50\",2025-12-28,Hello\n\
             C2,,800,3%,$99,2025-12-30,\"Hi, there\"\n\
             C3,2026-01-01,lots,1%,€5,2026-01-01,Typo\n"
        ),
    );
    ws.dropsync(&["run", "wide"]).code(3).stdout_has(&[
        "wide  2026-01-05  wide_20260105.csv  partial  rows 3 ok 2 rejected 1 skipped 0  +10 ~0 -0",
        "    line 4 [C3] Sent: `lots` is not a number\n",
    ]);
    let c1 = [
        [
            "C1",
            "2026-01-01",
            "Launch",
            "date",
            "2025-12-28",
            "NULL",
            "2025-12-28",
        ],
        [
            "C1",
            "2026-01-01",
            "OpenRate",
            "percentage",
            "12.5%",
            "12.5",
            "NULL",
        ],
        [
            "C1",
            "2026-01-01",
            "Sent",
            "number",
            "12,000",
            "12000",
            "NULL",
        ],
        [
            "C1",
            "2026-01-01",
            "Spend",
            "currency",
            "€1,200.50",
            "1200.5",
            "NULL",
        ],
        [
            "C1",
            "2026-01-01",
            "Subject",
            "text",
            "Hello",
            "NULL",
            "NULL",
        ],
    ];
    // No period: the file's business date.
    let c2 = [
        [
            "C2",
            "2026-01-05",
            "Launch",
            "date",
            "2025-12-30",
            "NULL",
            "2025-12-30",
        ],
        [
            "C2",
            "2026-01-05",
            "OpenRate",
            "percentage",
            "3%",
            "3",
            "NULL",
        ],
        ["C2", "2026-01-05", "Sent", "number", "800", "800", "NULL"],
        ["C2", "2026-01-05", "Spend", "currency", "$99", "99", "NULL"],
        [
            "C2",
            "2026-01-05",
            "Subject",
            "text",
            "Hi, there",
            "NULL",
            "NULL",
        ],
    ];
    let mut expected = table(&c1);
    expected.extend(table(&c2));
    assert_eq!(metrics(&ws, "wide_results"), expected);

    // Re-sent with one value changed, and C3 corrected: an upsert, not new rows.
    ws.drop_file(
        "wide_20260106.csv",
        format!(
            "{WIDE_HEADER}\
             C1,2026-01-01,\"12,000\",13.0%,\"€1,200.50\",2025-12-28,Hello\n\
             C3,2026-01-01,500,1%,€5,,\n"
        ),
    );
    ws.dropsync(&["run", "wide"]).code(0).stdout_has(&[
        "wide  2026-01-06  wide_20260106.csv  success  rows 2 ok 2 rejected 0 skipped 0  +3 ~1 -0",
    ]);
    let db = ws.db();
    assert_eq!(
        db.rows(
            r#"SELECT "Value", "NumberValue" FROM wide_results
             WHERE "EntityID" = 'C1' AND "Metric" = 'OpenRate'"#
        ),
        table(&[["13.0%", "13"]])
    );
    assert_eq!(db.count("SELECT count(*) FROM wide_results"), 13);
    assert_eq!(
        db.rows(
            r#"SELECT "Metric", "NumberValue" FROM wide_results WHERE "EntityID" = 'C3' ORDER BY "Metric""#
        ),
        table(&[["OpenRate", "1"], ["Sent", "500"], ["Spend", "5"]])
    );
    assert_eq!(db.last_run().unchanged, 4);
}

fn a_wide_report_with_an_undeclared_column_is_refused(kind: StoreKind) {
    let ws = workspace_on(kind, CONFIG);
    ws.drop_file(
        "wide_20260105.csv",
        "EntityID,Period,Sent,Clicks\nC1,2026-01-01,10,3\n",
    );
    ws.dropsync(&["run", "wide"]).code(1).stdout_has(&[
        "wide  2026-01-05  wide_20260105.csv  failed",
        "    wide_20260105.csv: line 1: the header does not fit the schema (fieldsMatch `superset`): unexpected column Clicks; found: EntityID, Period, Sent, Clicks\n",
    ]);
}

fn long_rows_are_typed_by_their_metric(kind: StoreKind) {
    let ws = workspace_on(kind, CONFIG);
    ws.drop_file(
        "long_20260105.csv",
        format!(
            "{LONG_HEADER}\
             C1,2026-01-01,Sent,\"12,000\"\n\
             C1,2026-01-01,Spend,\"€1,200.50\"\n\
             C1,2026-01-01,OpenRate,12.5%\n\
             C1,2026-01-01,Launch,30/12/2025\n\
             C1,2026-01-01,Subject,\"Hello, world\"\n\
             C2,,Sent,abc\n\
             C2,,Clicks,5\n\
             C2,,Spend,€3\n"
        ),
    );
    ws.dropsync(&["run", "long"]).code(3).stdout_has(&[
        "long  2026-01-05  long_20260105.csv  partial  rows 8 ok 6 rejected 2 skipped 0  +6 ~0 -0",
        "    line 7 [C2] Value: `abc` is not a number (number metric `Sent`)\n",
        "    line 8 [C2] Metric: metric `Clicks` is not declared (declared: Launch, OpenRate, Sent, Spend, Subject)\n",
    ]);
    assert_eq!(
        metrics(&ws, "long_results"),
        table(&[
            [
                "C1",
                "2026-01-01",
                "Launch",
                "date",
                "30/12/2025",
                "NULL",
                "2025-12-30"
            ],
            [
                "C1",
                "2026-01-01",
                "OpenRate",
                "percentage",
                "12.5%",
                "12.5",
                "NULL"
            ],
            [
                "C1",
                "2026-01-01",
                "Sent",
                "number",
                "12,000",
                "12000",
                "NULL"
            ],
            [
                "C1",
                "2026-01-01",
                "Spend",
                "currency",
                "€1,200.50",
                "1200.5",
                "NULL"
            ],
            [
                "C1",
                "2026-01-01",
                "Subject",
                "text",
                "Hello, world",
                "NULL",
                "NULL"
            ],
            ["C2", "2026-01-05", "Spend", "currency", "€3", "3", "NULL"],
        ])
    );
    let db = ws.db();
    let run = db.last_run();
    let errors = db.row_errors(&run.execution_id);
    assert_eq!(
        errors
            .iter()
            .map(|e| (
                e.line,
                e.field.as_deref().unwrap(),
                e.raw.as_deref().unwrap()
            ))
            .collect::<Vec<_>>(),
        [(7, "Value", "C2,,Sent,abc"), (8, "Metric", "C2,,Clicks,5")]
    );
    drop(db);

    // Upserted by (entity, metric, period): a changed value updates the row.
    ws.drop_file(
        "long_20260106.csv",
        format!(
            "{LONG_HEADER}\
             C1,2026-01-01,Spend,\"€1,300.00\"\n\
             C1,2026-01-01,Sent,\"12,000\"\n\
             C3,2026-01-02,Spend,€10\n"
        ),
    );
    ws.dropsync(&["run", "long"]).code(0).stdout_has(&[
        "long  2026-01-06  long_20260106.csv  success  rows 3 ok 3 rejected 0 skipped 0  +1 ~1 -0",
    ]);
    let db = ws.db();
    assert_eq!(
        db.rows(
            r#"SELECT "EntityID", "Period", "Value", "NumberValue" FROM long_results
             WHERE "Metric" = 'Spend' ORDER BY "EntityID", "Period""#
        ),
        table(&[
            ["C1", "2026-01-01", "€1,300.00", "1300"],
            ["C2", "2026-01-05", "€3", "3"],
            ["C3", "2026-01-02", "€10", "10"],
        ])
    );
    assert_eq!(db.count("SELECT count(*) FROM long_results"), 7);
}

fn undeclared_metrics_are_text(kind: StoreKind) {
    let ws = workspace_on(kind, CONFIG);
    ws.drop_file(
        "untyped_20260105.csv",
        format!("{LONG_HEADER}C1,2026-01-01,Sent,42\nC1,2026-01-01,Note,n/a\n"),
    );
    ws.dropsync(&["run", "untyped"])
        .code(0)
        .stdout_has(&["+2 ~0 -0"]);
    assert_eq!(
        metrics(&ws, "untyped_results"),
        table(&[
            ["C1", "2026-01-01", "Note", "text", "n/a", "NULL", "NULL"],
            ["C1", "2026-01-01", "Sent", "text", "42", "NULL", "NULL"],
        ])
    );
}

fn one_file_may_hold_several_periods(kind: StoreKind) {
    let ws = workspace_on(kind, CONFIG);
    ws.drop_file(
        "long_20260105.csv",
        format!("{LONG_HEADER}C1,2026-01-01,Sent,100\nC1,2026-01-02,Sent,200\n"),
    );
    ws.drop_file(
        "wide_20260105.csv",
        format!("{WIDE_HEADER}C1,2026-01-01,100,,,,\nC1,2026-01-02,200,,,,\n"),
    );
    let out = ws.dropsync(&["run", "long", "wide"]);
    out.code(0).stdout_lacks(&["duplicate key"]);
    for table_name in ["long_results", "wide_results"] {
        assert_eq!(
            ws.db().rows(&format!(
                r#"SELECT "Period", "NumberValue" FROM {table_name} WHERE "Metric" = 'Sent' ORDER BY "Period""#
            )),
            table(&[["2026-01-01", "100"], ["2026-01-02", "200"]]),
            "{table_name}: {out}"
        );
    }
}

crate::on_both_stores! {
    a_wide_report_becomes_typed_metric_rows => a_wide_report_becomes_typed_metric_rows;
    a_wide_report_with_an_undeclared_column_is_refused => a_wide_report_with_an_undeclared_column_is_refused;
    long_rows_are_typed_by_their_metric => long_rows_are_typed_by_their_metric;
    undeclared_metrics_are_text => undeclared_metrics_are_text;
    one_file_may_hold_several_periods => one_file_may_hold_several_periods;
}

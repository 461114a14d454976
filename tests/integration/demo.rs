//! The demo in samples/: four days of drops for every dataset, good and bad.

use std::path::Path;

use crate::common::{Db, copy_dir, dropsync_in, table};

const CONFIG: &str = "samples/dropsync.toml";

/// Copies samples/ to TMP/samples; its config keeps the store in TMP/demo.
fn demo_dir() -> tempfile::TempDir {
    let tmp = tempfile::Builder::new()
        .prefix("dropsync-demo-")
        .tempdir()
        .unwrap();
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    copy_dir(&samples, &tmp.path().join("samples"));
    tmp
}

#[test]
fn demo_syncs_every_dataset_and_refuses_the_truncated_export() {
    let tmp = demo_dir();
    let root = tmp.path();
    let out = dropsync_in(root, &["--config", CONFIG, "run"]);
    // Day 5's accounts export holds 2 of 10 accounts: refused, so exit 1.
    out.code(1).stdout_has(&[
        "crm_accounts  2026-11-05  accounts_20261105.csv  failed",
        "refused: the file would delete 8 of the 10 rows held (80.0%, more than max_delete_ratio 25.0%)",
        "line 4 [CMP-1004] Sent: `lots` is not a number",
        "line 12 [PIED-BOX] ParentID: a product account must have a parent",
        "line 13 [STARK-1] ParentID: `STARK` does not exist: no row of this file has that AccountID",
        "line 7 [ghost@nowhere.example] AccountID: `GHOST` does not exist: no accounts record has that AccountID",
        "columns not in the schema, kept in _attributes: Region",
        "line 4 [ZETA] Plan:",
        "line 4",
        "Pipeline: the cell holds the spreadsheet error #REF!",
    ]);
    let store = root.join("demo/dropsync.duckdb");
    assert!(
        store.is_file(),
        "the store is at ../demo relative to the config"
    );
    let db = Db::open(&store);

    // Accounts: day 4 applied (partially), day 5 refused.
    assert_eq!(
        db.rows("SELECT AccountID, ParentID, Plan, Seats FROM accounts ORDER BY AccountID"),
        table(&[
            ["ACME", "NULL", "enterprise", "1200"],
            ["ACME-EU", "ACME", "pro", "300"],
            ["ACME-US", "ACME", "pro", "700"],
            ["GLOBEX", "NULL", "starter", "25"],
            ["HOOLI", "NULL", "enterprise", "500"],
            ["HOOLI-X", "HOOLI", "pro", "120"],
            ["INITECH", "NULL", "starter", "3"],
            ["PIED", "NULL", "starter", "12"],
            // Rejected on day 4 (Seats -5): kept as it was, not deleted.
            ["UMB-LAB", "UMBRELLA", "pro", "40"],
            ["UMBRELLA", "NULL", "pro", "80"],
        ])
    );
    assert_eq!(
        db.value("SELECT Name FROM accounts WHERE AccountID = 'ACME'"),
        "Acme Corp",
        "the BOM before the first header name of day 2 is stripped"
    );
    assert_eq!(
        db.rows(
            "SELECT AccountID, coalesce(_attributes, 'NULL') FROM accounts
             WHERE AccountID IN ('PIED', 'UMB-LAB') ORDER BY AccountID"
        ),
        table(&[
            // Day 4's extra column is kept with the row it came with.
            ["PIED", r#"{"Region":"AMER"}"#],
            // A rejected row keeps the stored row, attributes and all.
            ["UMB-LAB", "NULL"],
        ]),
    );

    assert_eq!(
        db.rows("SELECT UserID, AccountID, Role, Active FROM users ORDER BY UserID"),
        table(&[
            ["ada@acme.example", "ACME-EU", "admin", "true"],
            ["barbara@hooli.example", "HOOLI-X", "admin", "true"],
            ["edsger@umbrella.example", "UMB-LAB", "member", "true"],
            ["grace@acme.example", "ACME-US", "member", "true"],
            ["kat@initech.example", "INITECH", "member", "true"],
        ])
    );
    assert_eq!(
        db.value(
            "SELECT CAST(LastLogin AS VARCHAR) FROM users WHERE UserID = 'grace@acme.example'"
        ),
        "2026-11-01 13:02:11",
        "an offset timestamp is stored in UTC"
    );

    // Usage: 4 distinct events on day 2, 2 new ones on day 3.
    assert_eq!(db.count("SELECT count(*) FROM usage"), 6);
    assert_eq!(
        db.count(
            "SELECT count(*) FROM usage WHERE UserID = 'edsger@umbrella.example' AND Action = 'query'"
        ),
        1,
        "the same event delivered three times is stored once"
    );

    // Subscribers, from a Latin-1, semicolon-separated file with its own headers.
    assert_eq!(
        db.rows(
            "SELECT ListID, Email, Status, UnsubscribedDate, UnsubscribeReason, FirstName, LastName
             FROM subscribers ORDER BY ListID, Email"
        ),
        table(&[
            [
                "NEWS",
                "bjorn@example.org",
                "subscribed",
                "NULL",
                "NULL",
                "Björn",
                "Ødegaard"
            ],
            [
                "NEWS",
                "francois@example.org",
                "unsubscribed",
                "2026-11-02",
                "too many emails",
                "François",
                "Müller"
            ],
            [
                "NEWS",
                "zoe@example.org",
                "removed",
                "NULL",
                "NULL",
                "Zoë",
                "Ångström"
            ],
            [
                "PROMO",
                "jose@example.org",
                "subscribed",
                "NULL",
                "NULL",
                "José",
                "Núñez"
            ],
            [
                "PROMO",
                "zoe@example.org",
                "unsubscribed",
                "2026-11-03",
                "not interested",
                "Zoë",
                "Ångström"
            ],
        ])
    );

    // Results: a wide report turned into typed long rows.
    assert_eq!(
        db.rows(
            "SELECT Metric, MetricType, Value, NumberValue, DateValue FROM results
             WHERE EntityID = 'CMP-1001' AND Period = DATE '2026-11-01' ORDER BY Metric"
        ),
        table(&[
            ["LaunchDate", "date", "2026-10-28", "NULL", "2026-10-28"],
            ["OpenRate", "percentage", "30.4%", "30.4", "NULL"],
            ["Opens", "number", "3650", "3650", "NULL"],
            ["Sent", "number", "12,000", "12000", "NULL"],
            ["Spend", "currency", "€1,250.00", "1250", "NULL"],
            ["Subject", "text", "Autumn launch", "NULL", "NULL"],
        ])
    );
    assert_eq!(
        db.rows(
            "SELECT Metric, Period, NumberValue FROM results WHERE EntityID = 'CMP-1003' ORDER BY Metric"
        ),
        table(&[
            ["LaunchDate", "2026-11-03", "NULL"],
            ["Sent", "2026-11-03", "5000"],
            ["Spend", "2026-11-03", "99"],
            ["Subject", "2026-11-03", "NULL"],
        ]),
        "an empty period is the file's business date; empty metrics are not stored"
    );
    assert_eq!(db.count("SELECT count(*) FROM results"), 16);
    assert_eq!(
        db.count("SELECT count(*) FROM results WHERE EntityID = 'CMP-1004'"),
        0
    );

    // The history: every file once, oldest date first, referenced datasets first.
    let runs: Vec<_> = db
        .runs()
        .into_iter()
        .map(|r| {
            format!(
                "{} {} {} {} in={} err={} +{} ~{} -{}",
                r.integration,
                r.business_date.unwrap_or_default(),
                r.file_name.unwrap_or_default(),
                r.status,
                r.input_rows,
                r.error_rows,
                r.inserted,
                r.updated,
                r.deleted
            )
        })
        .collect();
    assert_eq!(
        runs,
        [
            "campaign_results 2026-11-02 campaigns_20261102.csv success in=2 err=0 +12 ~0 -0",
            "crm_accounts 2026-11-02 accounts_20261102.csv success in=8 err=0 +8 ~0 -0",
            "newsletter 2026-11-02 subscribers_20261102.csv success in=4 err=0 +4 ~0 -0",
            "partner_accounts 2026-11-02 partner_accounts_20261102.json partial in=3 err=1 +2 ~0 -0",
            "partner_results 2026-11-02 workspan_results_20261102.xlsx partial in=4 err=1 +15 ~0 -0",
            "product_usage 2026-11-02 usage_2026-11-02.csv success in=5 err=0 +4 ~0 -0",
            "crm_users 2026-11-02 users_20261102.csv success in=5 err=0 +5 ~0 -0",
            "campaign_results 2026-11-03 campaigns_20261103.csv partial in=3 err=1 +4 ~2 -0",
            "crm_accounts 2026-11-03 accounts_20261103.csv success in=9 err=0 +2 ~2 -1",
            "newsletter 2026-11-03 subscribers_20261103.csv success in=4 err=0 +1 ~3 -0",
            "product_usage 2026-11-03 usage_2026-11-03.csv partial in=5 err=1 +2 ~0 -0",
            "crm_users 2026-11-03 users_20261103.csv success in=5 err=0 +1 ~1 -1",
            "crm_accounts 2026-11-04 accounts_20261104.csv partial in=13 err=4 +1 ~8 -0",
            "newsletter 2026-11-04 subscribers_20261104.csv partial in=2 err=1 +0 ~1 -0",
            "crm_users 2026-11-04 users_20261104.csv partial in=8 err=3 +0 ~0 -0",
            "crm_accounts 2026-11-05 accounts_20261105.csv failed in=2 err=0 +0 ~0 -0",
        ]
    );
    // The JSON and xlsx drops: typed like any CSV, nested JSON kept aside.
    assert_eq!(
        db.rows(
            "SELECT AccountID, coalesce(ParentID, 'NULL'), Seats, coalesce(_attributes, 'NULL')
             FROM partner_accounts ORDER BY AccountID"
        ),
        table(&[
            [
                "NOVA",
                "NULL",
                "400",
                r#"{"Address":"{\"city\":\"Lyon\",\"country\":\"FR\"}"}"#
            ],
            ["NOVA-LAB", "NOVA", "35", r#"{"Partner":"true"}"#],
        ])
    );
    assert_eq!(
        db.rows(
            "SELECT Metric, Value, NumberValue, DateValue FROM partner_results WHERE EntityID = 'WS-OPP-102' ORDER BY Metric"
        ),
        table(&[
            ["CloseDate", "2027-01-31", "NULL", "2027-01-31"],
            ["DealsWon", "1", "1", "NULL"],
            ["Pipeline", "48000.5", "48000.5", "NULL"],
            ["Stage", "Best case", "NULL", "NULL"],
            ["WinRate", "25%", "25", "NULL"],
        ])
    );
    let all = db.runs();
    drop(db);

    // `history` lists every run, newest first, with its status.
    let history = dropsync_in(root, &["--config", CONFIG, "history"]);
    history.code(0);
    let lines: Vec<&str> = history.stdout.lines().collect();
    assert!(lines[0].starts_with("EXECUTION ID"), "{history}");
    assert_eq!(lines.len(), 1 + all.len(), "{history}");
    for (line, run) in lines[1..].iter().zip(all.iter().rev()) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[0], run.execution_id, "{line}");
        assert_eq!(cols[1], run.integration, "{line}");
        assert_eq!(cols[3], run.status, "{line}");
    }

    // Nothing new the second time.
    dropsync_in(root, &["--config", CONFIG, "run"])
        .code(0)
        .stdout_has(&["nothing new to sync"]);
    assert_eq!(Db::open(&store).runs().len(), all.len());

    dropsync_in(root, &["--config", CONFIG, "export", "unsubscribes"])
        .code(0)
        .stdout_has(&[
            "ListID,Email,UnsubscribedDate,UnsubscribeReason,FirstName,LastName\n\
             NEWS,francois@example.org,2026-11-02,too many emails,François,Müller\n\
             PROMO,zoe@example.org,2026-11-03,not interested,Zoë,Ångström\n",
        ]);
}

//! Subscriber lists: changed records only, the status drives subscribes and
//! unsubscribes, and unsubscribers are exported back out, filtered.

use crate::common::{StoreKind, StoreWorkspace, table, workspace_on};

const CONFIG: &str = r#"
[integrations.newsletter]
dataset = "subscribers"
source = { type = "folder", path = "drops" }
pattern = "subscribers_{date:%Y%m%d}.csv"
"#;

const HEADER: &str = "ListID,Email,Status,UnsubscribedDate,UnsubscribeReason,FirstName,LastName\n";
const EXPORT_HEADER: &str = "ListID,Email,UnsubscribedDate,UnsubscribeReason,FirstName,LastName\n";

/// Three days of changes to three lists.
fn three_days(kind: StoreKind) -> StoreWorkspace {
    let ws = workspace_on(kind, CONFIG);
    ws.drop_file(
        "subscribers_20260101.csv",
        format!(
            "{HEADER}\
             NEWS,ann@example.org,subscribed,,,Ann,Ash\n\
             NEWS,bob@example.org,subscribed,,,Bob,Birch\n\
             PROMO,ann@example.org,subscribed,,,Ann,Ash\n\
             PROMO,cy@example.org,subscribed,,,Cy,Cedar\n\
             EVENTS,di@example.org,pending,,,Di,Dogwood\n"
        ),
    );
    ws.drop_file(
        "subscribers_20260102.csv",
        format!(
            "{HEADER}\
             NEWS,ann@example.org,unsubscribed,2026-01-01,too many emails,Ann,Ash\n\
             PROMO,cy@example.org,unsubscribed,2026-01-02,not interested,Cy,Cedar\n\
             EVENTS,di@example.org,subscribed,,,Di,Dogwood\n\
             EVENTS,ed@example.org,unsubscribed,2026-01-02,bounced,Ed,Elm\n"
        ),
    );
    ws.drop_file(
        "subscribers_20260103.csv",
        format!(
            "{HEADER}\
             PROMO,ann@example.org,unsubscribed,2026-01-03,,Ann,Ash\n\
             NEWS,bob@example.org,unsubscribed,2026-01-03,too many emails,Bob,\"Birch, Jr.\"\n\
             NEWS,ann@example.org,unsubscribed,2026-01-01,too many emails,Ann,Ash\n"
        ),
    );
    let out = ws.dropsync(&["run"]);
    out.code(0).stdout_has(&[
        // The pending record is stored, but is no subscribe.
        "newsletter  2026-01-01  subscribers_20260101.csv  success  rows 5 ok 5 rejected 0 skipped 0  +5 ~0 -0  subscribed 4 unsubscribed 0\n",
        // A record new and already unsubscribed counts as an unsubscribe.
        "newsletter  2026-01-02  subscribers_20260102.csv  success  rows 4 ok 4 rejected 0 skipped 0  +1 ~3 -0  subscribed 1 unsubscribed 3\n",
        // An unchanged unsubscribed record is not unsubscribed again.
        "newsletter  2026-01-03  subscribers_20260103.csv  success  rows 3 ok 3 rejected 0 skipped 0  +0 ~2 -0  subscribed 0 unsubscribed 2\n",
    ]);
    ws
}

fn statuses_drive_subscribes_and_unsubscribes(kind: StoreKind) {
    let ws = three_days(kind);
    let db = ws.db();
    let counts: Vec<_> = db
        .runs()
        .iter()
        .map(|r| {
            (
                r.inserted,
                r.updated,
                r.unchanged,
                r.subscribed,
                r.unsubscribed,
            )
        })
        .collect();
    assert_eq!(counts, [(5, 0, 0, 4, 0), (1, 3, 0, 1, 3), (0, 2, 1, 0, 2)]);
    // Delta mode: records absent from later files are kept.
    assert_eq!(
        db.rows(
            r#"SELECT "ListID", "Email", "Status", "UnsubscribedDate", "UnsubscribeReason" FROM subscribers
             ORDER BY "ListID", "Email""#
        ),
        table(&[
            ["EVENTS", "di@example.org", "subscribed", "NULL", "NULL"],
            [
                "EVENTS",
                "ed@example.org",
                "unsubscribed",
                "2026-01-02",
                "bounced"
            ],
            [
                "NEWS",
                "ann@example.org",
                "unsubscribed",
                "2026-01-01",
                "too many emails"
            ],
            [
                "NEWS",
                "bob@example.org",
                "unsubscribed",
                "2026-01-03",
                "too many emails"
            ],
            [
                "PROMO",
                "ann@example.org",
                "unsubscribed",
                "2026-01-03",
                "NULL"
            ],
            [
                "PROMO",
                "cy@example.org",
                "unsubscribed",
                "2026-01-02",
                "not interested"
            ],
        ])
    );
    let runs = db.runs();
    drop(db);
    ws.dropsync(&["show", &runs[1].execution_id])
        .code(0)
        .stdout_has(&["subscriptions  1 subscribed, 3 unsubscribed\n"]);
}

fn an_unsubscribe_needs_its_date(kind: StoreKind) {
    let ws = workspace_on(kind, CONFIG);
    ws.drop_file(
        "subscribers_20260101.csv",
        format!(
            "{HEADER}\
             NEWS,ann@example.org,unsubscribed,,bounced,Ann,Ash\n\
             NEWS,bob@example.org,gone,,,Bob,Birch\n\
             NEWS,not-an-address,subscribed,,,Cy,Cedar\n\
             NEWS,di@example.org,subscribed,,,Di,Dogwood\n"
        ),
    );
    ws.dropsync(&["run"]).code(1).stdout_has(&[
        "failed  rows 4 rejected 3",
        "    line 2 [NEWS|ann@example.org] UnsubscribedDate: an unsubscribed record needs its unsubscription date\n",
        "    line 3 [NEWS|bob@example.org] Status: `gone` is not one of: pending, removed, subscribed, unsubscribed\n",
        "    line 4 [NEWS|not-an-address] Email: `not-an-address` is not a valid email\n",
    ]);
    assert!(!ws.db().table_exists("subscribers"));
}

fn export_unsubscribes_with_filters(kind: StoreKind) {
    let ws = three_days(kind);
    let row = |r: &str| format!("{r}\n");
    let ann_news = row("NEWS,ann@example.org,2026-01-01,too many emails,Ann,Ash");
    let ed_events = row("EVENTS,ed@example.org,2026-01-02,bounced,Ed,Elm");
    let cy_promo = row("PROMO,cy@example.org,2026-01-02,not interested,Cy,Cedar");
    let bob_news = row("NEWS,bob@example.org,2026-01-03,too many emails,Bob,\"Birch, Jr.\"");
    let ann_promo = row("PROMO,ann@example.org,2026-01-03,,Ann,Ash");
    let cases: Vec<(Vec<&str>, Vec<&String>)> = vec![
        (
            vec![],
            vec![&ann_news, &ed_events, &cy_promo, &bob_news, &ann_promo],
        ),
        (vec!["--list", "NEWS"], vec![&ann_news, &bob_news]),
        (
            vec!["--list", "NEWS", "--list", "PROMO"],
            vec![&ann_news, &cy_promo, &bob_news, &ann_promo],
        ),
        (
            vec!["--exclude-list", "NEWS"],
            vec![&ed_events, &cy_promo, &ann_promo],
        ),
        (
            vec!["--exclude-list", "NEWS", "--exclude-list", "EVENTS"],
            vec![&cy_promo, &ann_promo],
        ),
        (
            vec!["--reason", "too many emails"],
            vec![&ann_news, &bob_news],
        ),
        (
            vec!["--reason", "bounced", "--reason", "not interested"],
            vec![&ed_events, &cy_promo],
        ),
        // Excluding a reason keeps the records that give none.
        (
            vec!["--exclude-reason", "too many emails"],
            vec![&ed_events, &cy_promo, &ann_promo],
        ),
        (
            vec!["--since", "2026-01-02"],
            vec![&ed_events, &cy_promo, &bob_news, &ann_promo],
        ),
        (vec!["--until", "2026-01-01"], vec![&ann_news]),
        (
            vec!["--since", "2026-01-02", "--until", "2026-01-02"],
            vec![&ed_events, &cy_promo],
        ),
        (
            vec!["--list", "PROMO", "--exclude-reason", "not interested"],
            vec![&ann_promo],
        ),
        (
            vec![
                "--list",
                "NEWS",
                "--since",
                "2026-01-02",
                "--reason",
                "too many emails",
            ],
            vec![&bob_news],
        ),
        (vec!["--list", "NOSUCH"], vec![]),
        (vec!["--since", "2026-02-01"], vec![]),
    ];
    for (args, rows) in cases {
        let mut full = vec!["export", "unsubscribes"];
        full.extend(&args);
        let out = ws.dropsync(&full);
        out.code(0);
        let expected: String = std::iter::once(EXPORT_HEADER)
            .chain(rows.iter().map(|r| r.as_str()))
            .collect();
        assert_eq!(out.stdout, expected, "export unsubscribes {args:?}");
    }

    // --output writes the same CSV to a file, and nothing to stdout.
    let path = ws.path("out/unsubscribes.csv");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let out = ws.dropsync(&[
        "export",
        "unsubscribes",
        "--list",
        "NEWS",
        "--output",
        path.to_str().unwrap(),
    ]);
    out.code(0);
    assert_eq!(out.stdout, "");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{EXPORT_HEADER}{ann_news}{bob_news}")
    );

    ws.dropsync(&[
        "export",
        "unsubscribes",
        "--since",
        "2026-01-01",
        "--previous-day",
    ])
    .code(2)
    .stderr_has(&["--previous-day"]);
    ws.dropsync(&["export", "unsubscribes", "--since", "yesterday"])
        .code(2)
        .stderr_has(&["`yesterday` is not a date (expected YYYY-MM-DD)"]);
}

fn export_unsubscribes_of_the_previous_day(kind: StoreKind) {
    let today = chrono::Utc::now().date_naive();
    let day = |n: u64| today - chrono::Days::new(n);
    let ws = workspace_on(kind, CONFIG);
    ws.drop_file(
        "subscribers_20260101.csv",
        format!(
            "{HEADER}\
             NEWS,old@example.org,unsubscribed,{},bounced,Old,One\n\
             NEWS,yday@example.org,unsubscribed,{},bounced,Yes,Terday\n\
             NEWS,today@example.org,unsubscribed,{},bounced,To,Day\n",
            day(2),
            day(1),
            day(0)
        ),
    );
    ws.dropsync(&["run"]).code(0);
    let out = ws.dropsync(&["export", "unsubscribes", "--previous-day"]);
    out.code(0);
    assert_eq!(
        out.stdout,
        format!(
            "{EXPORT_HEADER}NEWS,yday@example.org,{},bounced,Yes,Terday\n",
            day(1)
        )
    );
}

fn export_before_any_subscriber_is_just_a_header(kind: StoreKind) {
    let ws = workspace_on(kind, CONFIG);
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&["nothing new to sync"]);
    let out = ws.dropsync(&["export", "unsubscribes"]);
    out.code(0);
    assert_eq!(out.stdout, EXPORT_HEADER);
}

crate::on_both_stores! {
    statuses_drive_subscribes_and_unsubscribes => statuses_drive_subscribes_and_unsubscribes;
    an_unsubscribe_needs_its_date => an_unsubscribe_needs_its_date;
    export_unsubscribes_with_filters => export_unsubscribes_with_filters;
    export_unsubscribes_of_the_previous_day => export_unsubscribes_of_the_previous_day;
    export_before_any_subscriber_is_just_a_header => export_before_any_subscriber_is_just_a_header;
}

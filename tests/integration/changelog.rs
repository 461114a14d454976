//! The change log, state as of a date, and the change feed: every change a
//! run applies is kept, with its old and new values, in the run's own
//! transaction; `changes` lists them, `export --as-of` walks them back to
//! any past date, and `[[subscribe]]` receivers are told about them.

use serde_json::json;

use crate::common::{
    ACCOUNTS_HEADER, Random, StoreKind, Workspace, accounts_config, six_accounts, table,
    workspace_on,
};

pub(crate) const SUBSCRIBERS_HEADER: &str =
    "ListID,Email,Status,UnsubscribedDate,UnsubscribeReason,FirstName,LastName\n";

pub(crate) const NEWSLETTER: &str = r#"
[integrations.newsletter]
dataset = "subscribers"
source = { type = "folder", path = "drops" }
pattern = "subscribers_{date:%Y%m%d}.csv"
"#;

/// `changes --json`, as (kind, key, fields) triples.
pub(crate) fn logged(
    ws: &Workspace,
    args: &[&str],
) -> Vec<(String, serde_json::Value, serde_json::Value)> {
    let mut all = vec!["changes"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = ws.dropsync(&all);
    out.code(0);
    out.json()
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
        .collect()
}

fn each_applied_change_is_logged_with_its_old_and_new_values(kind: StoreKind) {
    let ws = workspace_on(kind, &accounts_config("max_delete_ratio = 1.0"));
    ws.drop_file("accounts_20260101.csv", six_accounts());
    ws.dropsync(&["run"]).code(0);
    // Day 2: A2 renamed and grown, A3 gone, A7 new; the rest unchanged.
    let mut day2 = ACCOUNTS_HEADER.to_string();
    for i in [1, 4, 5, 6] {
        day2.push_str(&format!(
            "A{i},,Account {i},parent,pro,{},2020-01-0{i}\n",
            i * 10
        ));
    }
    day2.push_str("A2,,Acme Two,parent,pro,25,2020-01-02\n");
    day2.push_str("A7,,Account 7,parent,free,,2020-01-07\n");
    ws.drop_file("accounts_20260102.csv", day2);
    ws.dropsync(&["run"]).code(0);

    let day2_changes = logged(&ws, &["accounts", "--since", "2026-01-02"]);
    assert_eq!(
        sorted(day2_changes),
        sorted(vec![
            (
                "update".to_string(),
                json!({"AccountID": "A2"}),
                json!({"Name": ["Account 2", "Acme Two"], "Seats": [20, 25]})
            ),
            (
                "delete".to_string(),
                json!({"AccountID": "A3"}),
                json!({"AccountID": "A3", "ParentID": null, "Name": "Account 3", "Type": "parent",
                       "Plan": "pro", "Seats": 30, "CreatedDate": "2020-01-03", "_attributes": null})
            ),
            (
                "insert".to_string(),
                json!({"AccountID": "A7"}),
                json!({"AccountID": "A7", "ParentID": null, "Name": "Account 7", "Type": "parent",
                       "Plan": "free", "Seats": null, "CreatedDate": "2020-01-07", "_attributes": null})
            ),
        ])
    );
    // Storage follows the changes: 6 inserts on day 1, 3 changes on day 2.
    assert_eq!(ws.db().count("SELECT count(*) FROM dropsync_changes"), 9);
    assert_eq!(logged(&ws, &["accounts", "--kind", "insert"]).len(), 7);
    assert_eq!(
        logged(&ws, &["accounts", "--kind", "update", "--kind", "delete"]).len(),
        2
    );
    // A run names its changes; a table on the terminal says what changed.
    let day2_run = ws
        .db()
        .value("SELECT execution_id FROM dropsync_runs WHERE business_date = DATE '2026-01-02'");
    assert_eq!(
        logged(
            &ws,
            &["accounts", "--run", &day2_run[day2_run.len() - 12..]]
        )
        .len(),
        3
    );
    ws.dropsync(&["changes", "accounts", "--run", &day2_run])
        .code(0)
        .stdout_has(&[
            "KIND",
            "update       A2",
            "Name: Account 2 -> Acme Two, Seats: 20 -> 25",
            "delete       A3",
            "insert       A7",
        ]);
    let csv = ws.dropsync(&["changes", "accounts", "--csv", "--kind", "update"]);
    csv.code(0).stdout_has(&[
        "seq,integration,dataset,table,execution_id,business_date,kind,key,fields,recorded_at\n",
        "2026-01-02,update,\"{\"\"AccountID\"\":\"\"A2\"\"}\"",
    ]);
    // Every change of a run carries its execution id and business date,
    // and the sequence numbers follow the order of the runs.
    let rows = ws.db().rows(
        "SELECT c.execution_id = r.execution_id, CAST(c.business_date AS VARCHAR), count(*), min(seq), max(seq)
         FROM dropsync_changes c JOIN dropsync_runs r USING (execution_id)
         GROUP BY 1, 2 ORDER BY 2",
    );
    assert_eq!(
        rows,
        table(&[
            ["true", "2026-01-01", "6", "1", "6"],
            ["true", "2026-01-02", "3", "7", "9"]
        ])
    );
}

/// Changes in a stable order (kind, then key), for comparing.
fn sorted(
    mut v: Vec<(String, serde_json::Value, serde_json::Value)>,
) -> Vec<(String, serde_json::Value, serde_json::Value)> {
    v.sort_by_key(|(kind, key, _)| (kind.clone(), key.to_string()));
    v
}

fn replays_and_late_files_log_only_what_really_changed(kind: StoreKind) {
    let ws = workspace_on(kind, NEWSLETTER);
    ws.drop_file(
        "subscribers_20261101.csv",
        format!("{SUBSCRIBERS_HEADER}NEWS,ann@x.org,subscribed,,,Ann,Ash\nNEWS,bob@x.org,subscribed,,,Bob,Birch\n"),
    );
    ws.drop_file(
        "subscribers_20261103.csv",
        format!("{SUBSCRIBERS_HEADER}NEWS,ann@x.org,subscribed,,,Ann,Ash\nNEWS,bob@x.org,unsubscribed,2026-11-03,moved,Bob,Birch\n"),
    );
    ws.dropsync(&["run"]).code(0);
    assert_eq!(
        sorted(logged(&ws, &["newsletter"])),
        sorted(vec![
            (
                "subscribe".to_string(),
                json!({"ListID": "NEWS", "Email": "ann@x.org"}),
                json!({"ListID": "NEWS", "Email": "ann@x.org", "Status": "subscribed",
                       "UnsubscribedDate": null, "UnsubscribeReason": null,
                       "FirstName": "Ann", "LastName": "Ash", "_attributes": null})
            ),
            (
                "subscribe".to_string(),
                json!({"ListID": "NEWS", "Email": "bob@x.org"}),
                json!({"ListID": "NEWS", "Email": "bob@x.org", "Status": "subscribed",
                       "UnsubscribedDate": null, "UnsubscribeReason": null,
                       "FirstName": "Bob", "LastName": "Birch", "_attributes": null})
            ),
            (
                "unsubscribe".to_string(),
                json!({"ListID": "NEWS", "Email": "bob@x.org"}),
                json!({"Status": ["subscribed", "unsubscribed"],
                       "UnsubscribedDate": [null, "2026-11-03"],
                       "UnsubscribeReason": [null, "moved"]})
            ),
        ])
    );
    // A late 11-02 file about Ann: her stored row is from 11-03, so nothing
    // changes and nothing is logged; its own new subscriber is.
    ws.drop_file(
        "subscribers_20261102.csv",
        format!("{SUBSCRIBERS_HEADER}NEWS,ann@x.org,unsubscribed,2026-11-02,spam,Ann,Ash\nNEWS,cy@x.org,pending,,,Cy,Cole\n"),
    );
    ws.dropsync(&["run"]).code(0);
    assert_eq!(
        logged(&ws, &["newsletter", "--since", "2026-11-02"])
            .into_iter()
            .filter(|(_, key, _)| key["Email"] != "bob@x.org")
            .map(|(kind, key, _)| (kind, key["Email"].as_str().unwrap().to_string()))
            .collect::<Vec<_>>(),
        vec![("insert".to_string(), "cy@x.org".to_string())]
    );
    // A forced replay of the same bytes changes nothing and logs nothing.
    let before = ws.db().count("SELECT count(*) FROM dropsync_changes");
    ws.dropsync(&["run", "--date", "2026-11-03", "--force"])
        .code(0);
    assert_eq!(
        ws.db().count("SELECT count(*) FROM dropsync_changes"),
        before
    );
    ws.dropsync(&["changes", "nowhere"])
        .code(2)
        .stderr_has(&["no integration named `nowhere`"]);
}

const SCENARIO: &str = r#"
[integrations.accounts]
dataset = "accounts"
source = { type = "folder", path = "drops" }
pattern = "accounts_{date:%Y%m%d}.csv"
max_delete_ratio = 1.0

[integrations.newsletter]
dataset = "subscribers"
source = { type = "folder", path = "drops" }
pattern = "subscribers_{date:%Y%m%d}.csv"
"#;

fn day_date(day: usize) -> String {
    format!("2026-11-{day:02}")
}

/// One day's exports: an accounts snapshot and a subscribers delta.
fn exports(rng: &mut Random) -> (String, String) {
    let mut accounts = ACCOUNTS_HEADER.to_string();
    for i in 1..=6 {
        if rng.below(4) == 0 {
            continue;
        }
        let plan = ["free", "pro", "enterprise"][rng.below(3)];
        let name = ["Account", "=HYPERLINK(\"x\")", "@Acme, Inc."][rng.below(3)];
        let seats = match rng.below(4) {
            0 => String::new(),
            n => (n * 10).to_string(),
        };
        accounts.push_str(&format!(
            "A{i},,\"{} {i}\",parent,{plan},{seats},2020-01-0{i}\n",
            name.replace('"', "\"\"")
        ));
    }
    let mut subscribers = SUBSCRIBERS_HEADER.to_string();
    for who in ["ann", "bob", "cy", "dee"] {
        match rng.below(3) {
            0 => {}
            1 => subscribers.push_str(&format!("NEWS,{who}@x.org,subscribed,,,{who},X\n")),
            _ => subscribers.push_str(&format!(
                "NEWS,{who}@x.org,unsubscribed,2026-11-01,moved,{who},Y\n"
            )),
        }
    }
    (accounts, subscribers)
}

#[test]
fn export_as_of_every_past_date_is_the_state_right_after_that_dates_last_run() {
    const DAYS: usize = 5;
    let mut rng = Random(0x0011_2026_1126);
    for scenario in 0..3 {
        let ws = Workspace::new(SCENARIO);
        // Days in a shuffled order, then a few old dates again: some forced
        // (an older snapshot applied over a newer one), some not (skipped,
        // or a late delta whose newer records are left alone).
        let mut order: Vec<(usize, bool)> = (1..=DAYS).map(|d| (d, false)).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        for _ in 0..3 {
            order.push((1 + rng.below(DAYS), rng.below(2) == 0));
        }
        // For each table, its export right after each applied run, in the
        // order the runs were applied: (business date, CSV).
        let mut captured: std::collections::BTreeMap<&str, Vec<(usize, String)>> =
            Default::default();
        let mut seen_runs = 0;
        for (step, &(day, force)) in order.iter().enumerate() {
            let (accounts, subscribers) = exports(&mut rng);
            // A replay of a date brings that date's file again, maybe new bytes.
            let compact = format!("202611{day:02}");
            ws.drop_file(&format!("accounts_{compact}.csv"), accounts);
            ws.drop_file(&format!("subscribers_{compact}.csv"), subscribers);
            let mut args = vec!["run", "--date"];
            let date = day_date(day);
            args.push(&date);
            if force {
                args.push("--force");
            }
            ws.dropsync(&args).code(0);
            let applied = ws.db().rows(&format!(
                "SELECT integration FROM (SELECT *, row_number() OVER (ORDER BY started_at) AS n FROM dropsync_runs)
                 WHERE n > {seen_runs} AND status IN ('success', 'partial')"
            ));
            seen_runs = ws.db().count("SELECT count(*) FROM dropsync_runs");
            for row in applied {
                let table = if row[0] == "accounts" {
                    "accounts"
                } else {
                    "subscribers"
                };
                let out = ws.dropsync(&["export", table]);
                out.code(0);
                captured
                    .entry(table)
                    .or_default()
                    .push((day, out.stdout.clone()));
            }
            let _ = step;
        }
        for (table, states) in &captured {
            let empty = ws
                .dropsync(&["export", table, "--as-of", "2026-10-31"])
                .stdout;
            assert_eq!(
                empty.lines().count(),
                1,
                "{table}: only a header before day 1"
            );
            for day in 1..=DAYS {
                let want = states
                    .iter()
                    .rev()
                    .find(|(d, _)| *d <= day)
                    .map(|(_, csv)| csv.clone())
                    .unwrap_or_else(|| empty.clone());
                let got = ws.dropsync(&["export", table, "--as-of", &day_date(day)]);
                got.code(0);
                assert_eq!(
                    got.stdout,
                    want,
                    "scenario {scenario}, {table} as of {}, steps {order:?}",
                    day_date(day)
                );
            }
            // As of today is the current state.
            let now = ws.dropsync(&["export", table]).stdout;
            assert_eq!(
                ws.dropsync(&["export", table, "--as-of", "2030-01-01"])
                    .stdout,
                now
            );
        }
    }
}

crate::on_both_stores! {
    each_applied_change_is_logged_with_its_old_and_new_values => each_applied_change_is_logged_with_its_old_and_new_values;
    replays_and_late_files_log_only_what_really_changed => replays_and_late_files_log_only_what_really_changed;
}

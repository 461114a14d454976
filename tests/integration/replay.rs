//! Re-running dates after a bad night: backfills in date order, late and
//! re-run dates that never roll newer state back, and replays from staged
//! copies when the source no longer has the file.

use crate::common::{StoreKind, StoreWorkspace, Workspace, table, workspace_on};

const CONFIG: &str = r#"
[integrations.accounts]
dataset = "accounts"
source = { type = "folder", path = "drops" }
pattern = "accounts_{date:%Y%m%d}.csv"
max_delete_ratio = 0.6

[integrations.newsletter]
dataset = "subscribers"
source = { type = "folder", path = "drops" }
pattern = "subscribers_{date:%Y%m%d}.csv"

[integrations.usage]
dataset = "usage"
source = { type = "folder", path = "drops" }
pattern = "usage_{date:%Y%m%d}.csv"
"#;

/// Three days of every kind of feed, each day changing what came before.
fn drop_three_days(ws: &Workspace) {
    let accounts = |rows: &[&str]| {
        let mut s = "AccountID,ParentID,Name,Type,Plan,Seats,CreatedDate\n".to_string();
        for r in rows {
            s.push_str(r);
            s.push('\n');
        }
        s
    };
    ws.drop_file(
        "accounts_20260101.csv",
        accounts(&[
            "A,,Acme,parent,pro,1,2020-01-01",
            "B,,Beta,parent,pro,1,2020-01-01",
        ]),
    );
    ws.drop_file(
        "accounts_20260102.csv",
        accounts(&[
            "A,,Acme,parent,pro,2,2020-01-01",
            "C,,Gamma,parent,pro,1,2020-01-01",
        ]),
    );
    ws.drop_file(
        "accounts_20260103.csv",
        accounts(&[
            "A,,Acme,parent,pro,3,2020-01-01",
            "C,,Gamma,parent,pro,1,2020-01-01",
            "D,,Delta,parent,pro,1,2020-01-01",
        ]),
    );
    let header = "ListID,Email,Status,UnsubscribedDate,UnsubscribeReason,FirstName,LastName\n";
    ws.drop_file(
        "subscribers_20260101.csv",
        format!("{header}N,ann@x.org,subscribed,,,Ann,A\nN,bob@x.org,subscribed,,,Bob,B\n"),
    );
    ws.drop_file(
        "subscribers_20260102.csv",
        format!("{header}N,ann@x.org,unsubscribed,2026-01-02,spam,Ann,A\n"),
    );
    ws.drop_file(
        "subscribers_20260103.csv",
        format!(
            "{header}N,bob@x.org,unsubscribed,2026-01-03,moved,Bob,B\nN,cy@x.org,pending,,,Cy,C\n"
        ),
    );
    let events = "UserID,AccountID,Action,Module,Timestamp\n";
    for day in 1..=3 {
        ws.drop_file(
            &format!("usage_2026010{day}.csv"),
            format!("{events}u@x.org,A,login,web,2026-01-0{day}T08:00:00Z\nu@x.org,A,login,web,2026-01-01T08:00:00Z\n"),
        );
    }
}

/// What the store holds, without the columns that say when it was written.
fn state(ws: &StoreWorkspace) -> Vec<Vec<Vec<String>>> {
    let db = ws.db();
    vec![
        db.rows(
            r#"SELECT "AccountID", "Seats", CAST(_business_date AS VARCHAR) FROM accounts ORDER BY 1"#,
        ),
        db.rows(
            r#"SELECT "Email", "Status", coalesce("UnsubscribeReason", ''), CAST(_business_date AS VARCHAR)
             FROM subscribers ORDER BY 1"#,
        ),
        db.rows(r#"SELECT CAST("Timestamp" AS VARCHAR) FROM usage ORDER BY 1"#),
    ]
}

fn rerunning_old_dates_ends_where_an_in_order_replay_does(kind: StoreKind) {
    // In order, one day at a time.
    let in_order = workspace_on(kind, CONFIG);
    drop_three_days(&in_order);
    for day in ["2026-01-01", "2026-01-02", "2026-01-03"] {
        in_order.dropsync(&["run", "--date", day]).code(0);
    }
    let want = state(&in_order);
    assert_eq!(
        want[0],
        table(&[
            ["A", "3", "2026-01-03"],
            // Unchanged since the day it came.
            ["C", "1", "2026-01-02"],
            ["D", "1", "2026-01-03"],
        ])
    );

    // The newest days first, then the first day re-run late (after a bad
    // night), then everything again: the same end state.
    let late = workspace_on(kind, CONFIG);
    drop_three_days(&late);
    late.dropsync(&["run", "--from", "2026-01-02", "--to", "2026-01-03"])
        .code(0);
    late.dropsync(&["run", "--date", "2026-01-01"])
        .code(0)
        .stdout_has(&[
            "accounts  2026-01-01  accounts_20260101.csv  skipped",
            "a newer snapshot (2026-01-03) is already applied",
            "newsletter  2026-01-01  subscribers_20260101.csv  success",
            "2 rows left alone: the stored row is from a later business date",
        ]);
    assert_eq!(state(&late), want);
    late.dropsync(&["run", "--from", "2026-01-01", "--to", "2026-01-03"])
        .code(0);
    assert_eq!(state(&late), want);
}

fn a_backfill_runs_in_date_order_and_a_date_the_source_lost_replays_from_staging(kind: StoreKind) {
    let ws = workspace_on(kind, CONFIG);
    drop_three_days(&ws);
    let out = ws.dropsync(&[
        "run",
        "accounts",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-02",
    ]);
    out.code(0);
    let lines = out.lines_with("accounts  2026-01-0");
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains("2026-01-01") && lines[1].contains("2026-01-02"),
        "{out}"
    );
    assert!(!out.stdout.contains("2026-01-03"), "{out}");

    // The drop is gone from the folder; its staged copy replays it.
    std::fs::remove_file(ws.path("drops/accounts_20260101.csv")).unwrap();
    ws.dropsync(&["run", "accounts", "--date", "2026-01-01", "--force"])
        .code(0)
        .stdout_has(&["accounts  2026-01-01  accounts_20260101.csv  success"]);
    let runs = ws.db().runs();
    let last = runs.last().unwrap();
    assert_eq!((last.trigger.as_str(), last.forced), ("replay", true));
    ws.dropsync(&["run", "--from", "2026-01-05", "--to", "2026-01-04"])
        .code(2)
        .stderr_has(&["--from 2026-01-05 is after --to 2026-01-04"]);
}

#[test]
fn staged_copies_are_kept_for_keep_staged_days() {
    let ws = Workspace::new(&format!("[store]\nkeep_staged_days = 30\n{CONFIG}"));
    drop_three_days(&ws);
    ws.dropsync(&["run", "accounts", "--date", "2026-01-01"])
        .code(0);
    let staged: Vec<_> = std::fs::read_dir(ws.path("staging/accounts"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(staged.len(), 1);
    // Thirty-one days later, the copy is gone; a younger one stays.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(31 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&staged[0])
        .unwrap()
        .set_modified(old)
        .unwrap();
    ws.dropsync(&["run", "accounts", "--date", "2026-01-02"])
        .code(0);
    let left: Vec<_> = std::fs::read_dir(ws.path("staging/accounts"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(left.len(), 1);
    assert_ne!(left[0], staged[0]);
}

crate::on_both_stores! {
    rerunning_old_dates_ends_where_an_in_order_replay_does => rerunning_old_dates_ends_where_an_in_order_replay_does;
    a_backfill_runs_in_date_order_and_a_date_the_source_lost_replays_from_staging => a_backfill_runs_in_date_order_and_a_date_the_source_lost_replays_from_staging;
}

//! What must hold on either store that the behavioural tests converted to
//! `on_both_stores!` did not already pin: a batch killed outright while it
//! is being applied leaves nothing half-applied, and its run is recorded as
//! interrupted once its integration is next synced (on a shared PostgreSQL
//! store, by whoever syncs that integration, and only then).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    ACCOUNTS_HEADER, BIN, StoreKind, accounts, accounts_config, six_accounts, six_accounts_table,
    workspace_on,
};

const USAGE: &str = r#"
[integrations.usage]
dataset = "usage"
source = { type = "folder", path = "drops" }
pattern = "usage_{date:%Y%m%d}.csv"
"#;

/// Waits for `done`, failing the test past `limit`.
#[track_caller]
fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Day 2: the six accounts of day 1 and 300 000 new ones, a batch that
/// takes a while to apply.
fn big_day_two() -> String {
    let mut file = six_accounts();
    debug_assert!(file.starts_with(ACCOUNTS_HEADER));
    for i in 0..300_000 {
        file.push_str(&format!(
            "B{i:07},,Account {i:07},parent,pro,{},2020-01-01\n",
            i % 100
        ));
    }
    file
}

/// SIGKILL while the batch is being applied (its rows handed to the store,
/// the transaction open): the store keeps day 1 exactly, the killed run is
/// `interrupted` once the integration is synced again, and that sync
/// applies the file whole. A sync of another integration in between does
/// not touch the killed run on a shared store (another worker may still be
/// running it, for all it knows); a DuckDB store, one process's alone,
/// marks it as soon as it is opened.
fn a_batch_killed_mid_apply_leaves_nothing_half_applied(kind: StoreKind) {
    let ws = workspace_on(kind, &format!("{}{USAGE}", accounts_config("")));
    ws.drop_file("accounts_20260101.csv", six_accounts());
    ws.dropsync(&["run"]).code(0);
    ws.drop_file("accounts_20260102.csv", big_day_two());

    let log = ws.path("run.log");
    let mut run = Command::new(BIN)
        .args(["--config", "dropsync.toml", "run", "accounts"])
        .current_dir(&ws.root)
        .env("DROPSYNC_LOG", "dropsync=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The rows are handed off: what follows is the diff and apply, in one
    // transaction.
    wait_for(
        Duration::from_secs(300),
        "the rows to be handed off",
        || {
            std::fs::read_to_string(&log).is_ok_and(|l| {
                l.lines()
                    .any(|l| l.contains("stage done") && l.contains("hand-off"))
            })
        },
    );
    if let Some(pg) = &ws.pg {
        // The server shows the batch's transaction open, with writes.
        let mut client = pg.client();
        wait_for(Duration::from_secs(120), "the apply transaction", || {
            client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid()
                       AND backend_xid IS NOT NULL",
                    &[],
                )
                .unwrap()
                .get::<_, i64>(0)
                > 0
        });
    }
    assert!(
        run.try_wait().unwrap().is_none(),
        "the batch was applied before it could be killed: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    run.kill().unwrap();
    let _ = run.wait();

    let killed = {
        let db = ws.db();
        assert_eq!(accounts(&db), six_accounts_table(), "nothing half-applied");
        let runs = db.runs();
        assert_eq!(runs.len(), 2, "{runs:?}");
        runs[1].clone()
    };
    assert_eq!(killed.file_name.as_deref(), Some("accounts_20260102.csv"));

    // Another integration's sync leaves the killed run to whoever syncs
    // accounts next (on DuckDB, opening the store already marked it).
    ws.drop_file(
        "usage_20260102.csv",
        "UserID,AccountID,Action,Module,Timestamp\nu@x.org,A1,login,web,2026-01-02T08:00:00Z\n",
    );
    ws.dropsync(&["run", "usage"]).code(0);
    let status = ws.db().runs()[1].status.clone();
    match kind {
        StoreKind::DuckDb => assert_eq!(status, "interrupted"),
        StoreKind::Postgres => assert_eq!(status, "running"),
    }

    ws.dropsync(&["run", "accounts"])
        .code(0)
        .stdout_has(&["accounts_20260102.csv  success  rows 300006 ok 300006"]);
    let db = ws.db();
    let runs = db.runs();
    let killed = runs
        .iter()
        .find(|r| r.execution_id == killed.execution_id)
        .unwrap();
    assert_eq!(
        (killed.status.as_str(), killed.inserted),
        ("interrupted", 0),
        "{killed:?}"
    );
    assert_eq!(
        killed.message.as_deref(),
        Some("the process stopped before the run finished; nothing of it was applied")
    );
    assert_eq!(db.count("SELECT count(*) FROM accounts"), 300_006);
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM accounts WHERE _execution_id = '{}'",
            killed.execution_id
        )),
        0,
        "nothing of the killed run was applied"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM dropsync_runs WHERE status = 'running'"),
        0
    );
}

crate::on_both_stores! {
    a_batch_killed_mid_apply_leaves_nothing_half_applied => a_batch_killed_mid_apply_leaves_nothing_half_applied;
}

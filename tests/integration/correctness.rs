//! Correctness over many days: the end state never depends on the order
//! files arrive in, repeats of earlier exports, or re-runs of old dates.
//! Many small random scenarios are compared with a reference built from the
//! README (apply every date in order); the regression tests below pin the
//! cases the comparison found, plus the bounded row errors of a refused file
//! and the retries of runs that failed for a transient reason.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::{
    ACCOUNTS_HEADER, Db, Random, StoreKind, StoreWorkspace, accounts, accounts_config, table,
    workspace_on,
};

const SUBSCRIBERS_HEADER: &str =
    "ListID,Email,Status,UnsubscribedDate,UnsubscribeReason,FirstName,LastName\n";

const SCENARIO_CONFIG: &str = r#"
[integrations.accounts]
dataset = "accounts"
source = { type = "folder", path = "drops" }
pattern = "accounts_{date:%Y%m%d}.csv"
max_delete_ratio = 1.0

[integrations.newsletter]
dataset = "subscribers"
source = { type = "folder", path = "drops" }
pattern = "subscribers_{date:%Y%m%d}.csv"

[integrations.campaigns]
dataset = "results"
source = { type = "folder", path = "drops" }
pattern = "results_{date:%Y%m%d}.csv"
layout = "long"
metrics = { Sent = "number", Subject = "text" }
"#;

fn date(day: usize) -> String {
    format!("2026-11-{day:02}")
}

fn compact(day: usize) -> String {
    format!("202611{day:02}")
}

/// A subscriber's stored state: (Status, UnsubscribedDate, UnsubscribeReason).
type Subscriber = (String, String, String);

/// One day's exports, as rows, and as the file text dropped.
#[derive(Clone)]
struct Day {
    /// AccountID -> (Plan, Seats).
    accounts: BTreeMap<String, (String, String)>,
    /// (ListID, Email) -> state.
    subscribers: BTreeMap<(String, String), Subscriber>,
    /// (EntityID, Metric, Period) -> Value.
    results: BTreeMap<(String, String, String), String>,
}

impl Day {
    fn accounts_file(&self) -> String {
        let mut s = ACCOUNTS_HEADER.to_string();
        for (id, (plan, seats)) in &self.accounts {
            s.push_str(&format!(
                "{id},,Account {id},parent,{plan},{seats},2020-01-01\n"
            ));
        }
        s
    }

    fn subscribers_file(&self) -> String {
        let mut s = SUBSCRIBERS_HEADER.to_string();
        for ((list, email), (status, unsubscribed, reason)) in &self.subscribers {
            s.push_str(&format!(
                "{list},{email},{status},{unsubscribed},{reason},First,Last\n"
            ));
        }
        s
    }

    fn results_file(&self) -> String {
        let mut s = "EntityID,Period,Metric,Value\n".to_string();
        for ((entity, metric, period), value) in &self.results {
            s.push_str(&format!("{entity},{period},{metric},{value}\n"));
        }
        s
    }
}

/// Generates `days` days of exports; a day's export of a feed is now and
/// then a byte-identical copy of an earlier day's.
fn generate(rng: &mut Random, days: usize) -> Vec<Day> {
    let account_ids: Vec<String> = (1..=5).map(|i| format!("A{i}")).collect();
    let subscriber_keys: Vec<(String, String)> = ["NEWS", "PROMO"]
        .iter()
        .flat_map(|l| {
            ["ann@x.org", "bob@x.org", "cy@x.org"]
                .iter()
                .map(move |e| (l.to_string(), e.to_string()))
        })
        .collect();
    let result_keys: Vec<(String, String, String)> = ["C1", "C2"]
        .iter()
        .flat_map(|c| {
            ["Sent", "Subject"].iter().flat_map(move |m| {
                ["2026-11-01", "2026-11-02"]
                    .iter()
                    .map(move |p| (c.to_string(), m.to_string(), p.to_string()))
            })
        })
        .collect();
    let mut out: Vec<Day> = Vec::new();
    for day in 1..=days {
        let accounts = match out.len() {
            n if n > 0 && rng.chance(3) => out[rng.below(n)].accounts.clone(),
            _ => rng
                .subset(&account_ids, 5)
                .into_iter()
                .map(|id| {
                    let plan = rng.pick(&["pro", "free"]).to_string();
                    (id, (plan, (1 + rng.below(3)).to_string()))
                })
                .collect(),
        };
        let subscribers = match out.len() {
            n if n > 0 && rng.chance(3) => out[rng.below(n)].subscribers.clone(),
            _ => rng
                .subset(&subscriber_keys, 4)
                .into_iter()
                .map(|key| {
                    let status = *rng.pick(&["subscribed", "unsubscribed", "pending", "removed"]);
                    let state = if status == "unsubscribed" {
                        let reason = rng.pick(&["spam", "moved"]).to_string();
                        (status.to_string(), date(day), reason)
                    } else {
                        (status.to_string(), String::new(), String::new())
                    };
                    (key, state)
                })
                .collect(),
        };
        let results = match out.len() {
            n if n > 0 && rng.chance(3) => out[rng.below(n)].results.clone(),
            _ => rng
                .subset(&result_keys, 4)
                .into_iter()
                .map(|key| {
                    let value = match key.1.as_str() {
                        "Sent" => (100 * (1 + rng.below(5))).to_string(),
                        _ => format!("Subject {}", rng.below(4)),
                    };
                    (key, value)
                })
                .collect(),
        };
        out.push(Day {
            accounts,
            subscribers,
            results,
        });
    }
    out
}

/// The README's promise, as a model: the state after applying every date
/// that has arrived, in date order. A snapshot is its newest date's export;
/// a delta keeps, for every key, the record of the newest date that sent
/// it, and that date.
struct Reference<'a> {
    days: &'a [Day],
    arrived: BTreeSet<usize>,
}

impl Reference<'_> {
    fn accounts(&self) -> Vec<Vec<String>> {
        let Some(&newest) = self.arrived.last() else {
            return Vec::new();
        };
        self.days[newest - 1]
            .accounts
            .iter()
            .map(|(id, (plan, seats))| vec![id.clone(), plan.clone(), seats.clone()])
            .collect()
    }

    /// (ListID, Email) -> (state, business date of the newest file that sent it).
    fn subscribers(&self) -> BTreeMap<(String, String), (Subscriber, usize)> {
        let mut state = BTreeMap::new();
        for &day in &self.arrived {
            for (key, record) in &self.days[day - 1].subscribers {
                state.insert(key.clone(), (record.clone(), day));
            }
        }
        state
    }

    fn subscriber_rows(&self) -> Vec<Vec<String>> {
        self.subscribers()
            .into_iter()
            .map(|((list, email), ((status, unsubscribed, reason), day))| {
                let unsubscribed = if unsubscribed.is_empty() {
                    "NULL".to_string()
                } else {
                    unsubscribed
                };
                let reason = if reason.is_empty() {
                    "NULL".to_string()
                } else {
                    reason
                };
                vec![list, email, status, unsubscribed, reason, date(day)]
            })
            .collect()
    }

    fn results(&self) -> Vec<Vec<String>> {
        let mut state = BTreeMap::new();
        for &day in &self.arrived {
            for (key, value) in &self.days[day - 1].results {
                state.insert(key.clone(), value.clone());
            }
        }
        state
            .into_iter()
            .map(|((entity, metric, period), value)| vec![entity, period, metric, value])
            .collect()
    }

    /// What syncing `day`'s subscriber file prints when it arrives now: the
    /// records whose key a newer file already sent are skipped.
    fn subscriber_line(&self, day: usize) -> String {
        let before = self.subscribers();
        let file = &self.days[day - 1].subscribers;
        let (mut inserted, mut updated, mut skipped, mut subscribed, mut unsubscribed) =
            (0, 0, 0, 0, 0);
        for (key, record) in file {
            let old_status = match before.get(key) {
                Some((_, newer)) if *newer > day => {
                    skipped += 1;
                    continue;
                }
                Some((old, _)) if old == record => continue,
                Some((old, _)) => {
                    updated += 1;
                    Some(old.0.as_str())
                }
                None => {
                    inserted += 1;
                    None
                }
            };
            if old_status != Some(record.0.as_str()) {
                match record.0.as_str() {
                    "subscribed" => subscribed += 1,
                    "unsubscribed" => unsubscribed += 1,
                    _ => {}
                }
            }
        }
        let rows = file.len();
        let mut line = format!(
            "newsletter  {}  subscribers_{}.csv  success  rows {rows} ok {} rejected 0 skipped {skipped}  +{inserted} ~{updated} -0",
            date(day),
            compact(day),
            rows - skipped
        );
        if subscribed + unsubscribed > 0 {
            line.push_str(&format!(
                "  subscribed {subscribed} unsubscribed {unsubscribed}"
            ));
        }
        line.push('\n');
        line
    }
}

fn stored_accounts(db: &Db) -> Vec<Vec<String>> {
    db.rows(r#"SELECT "AccountID", "Plan", CAST("Seats" AS VARCHAR) FROM accounts ORDER BY "AccountID""#)
}

fn stored_subscribers(db: &Db) -> Vec<Vec<String>> {
    db.rows(
        r#"SELECT "ListID", "Email", "Status", CAST("UnsubscribedDate" AS VARCHAR), "UnsubscribeReason",
                CAST(_business_date AS VARCHAR)
         FROM subscribers ORDER BY "ListID", "Email""#,
    )
}

fn stored_results(db: &Db) -> Vec<Vec<String>> {
    db.rows(
        r#"SELECT "EntityID", CAST("Period" AS VARCHAR), "Metric", "Value" FROM results
         ORDER BY "EntityID", "Metric", "Period""#,
    )
}

/// Random scenarios: four days of exports for a snapshot feed (accounts)
/// and two delta feeds (subscribers, results), arriving in a random order,
/// some byte-identical to earlier days, each picked up by a scan or by
/// `run --date`, with old dates re-run now and then. After every step the
/// store must equal the reference, and every subscriber file must report
/// what applying it in that place does.
fn random_multi_day_scenarios_end_where_applying_every_date_in_order_does(kind: StoreKind) {
    const SCENARIOS: usize = 5;
    const DAYS: usize = 4;
    let mut rng = Random(0x00D2_0951_2026_1103);
    for scenario in 0..SCENARIOS {
        let days = generate(&mut rng, DAYS);
        let mut order: Vec<usize> = (1..=DAYS).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let ws = workspace_on(kind, SCENARIO_CONFIG);
        let mut reference = Reference {
            days: &days,
            arrived: BTreeSet::new(),
        };
        let mut steps: Vec<String> = Vec::new();
        for &day in &order {
            let export = &days[day - 1];
            ws.drop_file(
                &format!("accounts_{}.csv", compact(day)),
                export.accounts_file(),
            );
            ws.drop_file(
                &format!("subscribers_{}.csv", compact(day)),
                export.subscribers_file(),
            );
            ws.drop_file(
                &format!("results_{}.csv", compact(day)),
                export.results_file(),
            );
            let want_line = reference.subscriber_line(day);
            let by_date = rng.chance(2);
            let out = if by_date {
                steps.push(format!("run --date {}", date(day)));
                ws.dropsync(&["run", "--date", &date(day)])
            } else {
                steps.push(format!("drop {} and scan", date(day)));
                ws.dropsync(&["run"])
            };
            let context = format!("scenario {scenario}, steps {steps:?}");
            assert_eq!(out.code, 0, "{context}: {out}");
            assert!(
                out.stdout.contains(&want_line),
                "{context}: expected {want_line:?} in {out}"
            );
            reference.arrived.insert(day);

            // Now and then an old date is asked for again: nothing changes.
            if rng.chance(3) {
                let again = *rng.pick(&reference.arrived.iter().copied().collect::<Vec<_>>());
                steps.push(format!("run --date {} again", date(again)));
                let out = ws.dropsync(&["run", "--date", &date(again)]);
                assert_eq!(out.code, 0, "{context}: {out}");
                assert!(
                    !out.stdout.contains("  success  "),
                    "{context}: a re-run applied something: {out}"
                );
            }

            let context = format!("scenario {scenario}, steps {steps:?}");
            let db = ws.db();
            assert_eq!(
                stored_accounts(&db),
                reference.accounts(),
                "accounts, {context}"
            );
            assert_eq!(
                stored_subscribers(&db),
                reference.subscriber_rows(),
                "subscribers, {context}"
            );
            assert_eq!(
                stored_results(&db),
                reference.results(),
                "results, {context}"
            );
        }
        let db = ws.db();
        assert_eq!(
            db.count(
                "SELECT count(*) FROM dropsync_runs WHERE status NOT IN ('success', 'skipped')
                    OR least(input_rows, success_rows, error_rows, skipped_rows, inserted,
                             updated, deleted, unchanged, subscribed, unsubscribed) < 0"
            ),
            0,
            "scenario {scenario}: every run succeeded or was skipped, with no negative count"
        );
    }
}

const NEWSLETTER: &str = r#"
[integrations.newsletter]
dataset = "subscribers"
source = { type = "folder", path = "drops" }
pattern = "subscribers_{date:%Y%m%d}.csv"
"#;

fn unsubscribed_emails(ws: &StoreWorkspace) -> String {
    let out = ws.dropsync(&["export", "unsubscribes"]);
    out.code(0);
    out.stdout
}

/// Issue 7: a subscriber re-sent unchanged on 11-03 kept the 11-01 date on
/// its row, so a late 11-02 file unsubscribed them although the 11-03
/// export says subscribed.
fn a_late_delta_file_does_not_undo_a_record_a_newer_file_resent_unchanged(kind: StoreKind) {
    let ws = workspace_on(kind, NEWSLETTER);
    ws.drop_file(
        "subscribers_20261101.csv",
        format!("{SUBSCRIBERS_HEADER}NEWS,ann@x.org,subscribed,,,Ann,Ash\nNEWS,bob@x.org,subscribed,,,Bob,Birch\n"),
    );
    ws.drop_file(
        "subscribers_20261103.csv",
        format!("{SUBSCRIBERS_HEADER}NEWS,ann@x.org,subscribed,,,Ann,Ash\nNEWS,bob@x.org,unsubscribed,2026-11-03,moved,Bob,Birch\n"),
    );
    ws.dropsync(&["run"]).code(0).stdout_has(&[
        "subscribers_20261103.csv  success  rows 2 ok 2 rejected 0 skipped 0  +0 ~1 -0  subscribed 0 unsubscribed 1\n",
    ]);
    ws.drop_file(
        "subscribers_20261102.csv",
        format!("{SUBSCRIBERS_HEADER}NEWS,ann@x.org,unsubscribed,2026-11-02,spam,Ann,Ash\n"),
    );
    ws.dropsync(&["run"]).code(0).stdout_has(&[
        "newsletter  2026-11-02  subscribers_20261102.csv  success  rows 1 ok 0 rejected 0 skipped 1  +0 ~0 -0\n",
        "1 row left alone: the stored row is from a later business date",
    ]);
    ws.dropsync(&["run", "--date", "2026-11-02"])
        .code(0)
        .stdout_has(&["skipped", "the same content was already applied"]);
    assert_eq!(
        ws.db().rows(
            r#"SELECT "Email", "Status", CAST(_business_date AS VARCHAR) FROM subscribers ORDER BY "Email""#
        ),
        table(&[
            ["ann@x.org", "subscribed", "2026-11-03"],
            ["bob@x.org", "unsubscribed", "2026-11-03"],
        ])
    );
    let export = unsubscribed_emails(&ws);
    assert!(
        export.contains("bob@x.org") && !export.contains("ann@x.org"),
        "{export}"
    );
}

/// Issue 7: the same, when the newer file is byte-identical to an older one
/// (it was passed over as "same content", so nothing recorded its date).
fn a_delta_file_identical_to_an_older_one_still_speaks_for_its_date(kind: StoreKind) {
    let ws = workspace_on(kind, NEWSLETTER);
    let same = format!("{SUBSCRIBERS_HEADER}NEWS,ann@x.org,subscribed,,,Ann,Ash\n");
    ws.drop_file("subscribers_20261101.csv", &same);
    ws.drop_file("subscribers_20261103.csv", &same);
    ws.dropsync(&["run"]).code(0).stdout_has(&[
        "subscribers_20261101.csv  success  rows 1 ok 1 rejected 0 skipped 0  +1 ~0 -0  subscribed 1 unsubscribed 0\n",
        "subscribers_20261103.csv  success  rows 1 ok 1 rejected 0 skipped 0  +0 ~0 -0\n",
    ]);
    ws.drop_file(
        "subscribers_20261102.csv",
        format!("{SUBSCRIBERS_HEADER}NEWS,ann@x.org,unsubscribed,2026-11-02,spam,Ann,Ash\n"),
    );
    ws.dropsync(&["run"]).code(0).stdout_has(&[
        "subscribers_20261102.csv  success  rows 1 ok 0 rejected 0 skipped 1  +0 ~0 -0\n",
    ]);
    assert_eq!(
        ws.db()
            .value(r#"SELECT "Status" FROM subscribers WHERE "Email" = 'ann@x.org'"#),
        "subscribed"
    );
    assert!(!unsubscribed_emails(&ws).contains("ann@x.org"));
}

/// Issue 7: exports A, B, then A again byte for byte: the third was passed
/// over as "same content" and the account deleted on day 2 never came back.
fn a_snapshot_that_repeats_an_older_export_is_applied_again(kind: StoreKind) {
    let ws = workspace_on(kind, &accounts_config(""));
    let a = format!(
        "{ACCOUNTS_HEADER}A1,,Acme,parent,pro,10,2020-01-01\nA2,,Beta,parent,pro,20,2020-01-01\n\
         A3,,Cern,parent,pro,30,2020-01-01\nA4,,Dyad,parent,pro,40,2020-01-01\n\
         A5,,Echo,parent,pro,50,2020-01-01\nA6,,Fern,parent,pro,60,2020-01-01\n"
    );
    let b = a.replace("A6,,Fern,parent,pro,60,2020-01-01\n", "");
    ws.drop_file("accounts_20261101.csv", &a);
    ws.drop_file("accounts_20261102.csv", &b);
    ws.drop_file("accounts_20261103.csv", &a);
    ws.dropsync(&["run"]).code(0).stdout_has(&[
        "accounts_20261102.csv  success  rows 5 ok 5 rejected 0 skipped 0  +0 ~0 -1",
        "accounts  2026-11-03  accounts_20261103.csv  success  rows 6 ok 6 rejected 0 skipped 0  +1 ~0 -0",
    ]);
    assert_eq!(accounts(&ws.db()).len(), 6);
    // Asked for again, a date whose content is what it applied is skipped.
    ws.dropsync(&["run", "--date", "2026-11-03"])
        .code(0)
        .stdout_has(&["skipped", "the same content was already applied"]);
    // A scan finds nothing new.
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&["nothing new to sync"]);
    assert_eq!(ws.db().runs().len(), 4);
}

const USAGE: &str = r#"
[integrations.usage]
dataset = "usage"
source = { type = "folder", path = "drops" }
pattern = "usage_{date:%Y%m%d}.csv"
"#;

/// Issue 7: events compared as text: one instant written two ways in one
/// file was stored twice, and the next file holding it once said `ok -1`.
fn one_instant_written_several_ways_is_one_event(kind: StoreKind) {
    let ws = workspace_on(kind, USAGE);
    let header = "UserID,AccountID,Action,Module,Timestamp\n";
    ws.drop_file(
        "usage_20261103.csv",
        format!(
            "{header}u@x.org,A,login,web,2026-11-02T23:57:16Z\n\
             u@x.org,A,login,web,2026-11-03T00:57:16+01:00\n\
             u@x.org,A,login,web,2026-11-02T23:57:16.000Z\n\
             u@x.org,A,login,web,2026-11-02 23:57:16+00:00\n\
             u@x.org,A,login,web,2026-11-02T23:57:16Z\n"
        ),
    );
    ws.dropsync(&["run"]).code(0).stdout_has(&[
        "usage  2026-11-03  usage_20261103.csv  success  rows 5 ok 1 rejected 0 skipped 4  +1 ~0 -0\n",
    ]);
    ws.drop_file(
        "usage_20261104.csv",
        format!(
            "{header}u@x.org,A,login,web,2026-11-03T00:57:16+01:00\n\
             u@x.org,A,logout,web,2026-11-03T08:00:00Z\n"
        ),
    );
    ws.dropsync(&["run"]).code(0).stdout_has(&[
        "usage  2026-11-04  usage_20261104.csv  success  rows 2 ok 1 rejected 0 skipped 1  +1 ~0 -0\n",
    ]);
    let db = ws.db();
    assert_eq!(
        db.rows(r#"SELECT "Action", CAST("Timestamp" AS VARCHAR) FROM usage ORDER BY "Timestamp""#),
        table(&[
            ["login", "2026-11-02 23:57:16"],
            ["logout", "2026-11-03 08:00:00"],
        ])
    );
    let runs = db.runs();
    assert_eq!(
        runs.iter()
            .map(|r| (r.success_rows, r.skipped_rows, r.inserted))
            .collect::<Vec<_>>(),
        [(1, 4, 1), (1, 1, 1)]
    );
}

/// Issue 7: a 3M-row export whose dates all switched format kept all its
/// row errors although the file was refused. A refused file keeps a sample
/// and says how many rows were rejected in all.
fn a_refused_file_keeps_a_sample_of_its_row_errors(kind: StoreKind) {
    let ws = workspace_on(kind, &accounts_config(""));
    let mut file = ACCOUNTS_HEADER.to_string();
    for i in 0..2500 {
        file.push_str(&format!("A{i},,Account {i},parent,pro,1,11/03/2020\n"));
    }
    ws.drop_file("accounts_20261103.csv", &file);
    let out = ws.dropsync(&["run"]);
    out.code(1).stdout_has(&[
        "accounts_20261103.csv  failed",
        "2500 of 2500 rows failed validation",
        "the history keeps the first 1000 row errors, of 2500 rows rejected in all",
    ]);
    let db = ws.db();
    let run = db.last_run();
    assert_eq!((run.status.as_str(), run.error_rows), ("failed", 2500));
    let errors = db.row_errors(&run.execution_id);
    assert_eq!(errors.len(), 1000);
    assert_eq!((errors[0].line, errors[999].line), (2, 1001));
    assert_eq!(errors[0].field.as_deref(), Some("CreatedDate"));

    // A file the policy applies keeps every one of its row errors.
    let ws = workspace_on(kind, &accounts_config("on_error = { max_ratio = 1.0 }"));
    ws.drop_file("accounts_20261103.csv", &file);
    ws.dropsync(&["run"]).code(3);
    let db = ws.db();
    assert_eq!(db.row_errors(&db.last_run().execution_id).len(), 2500);
}

/// A store the batch cannot be written to: the accounts table has a
/// required column dropsync knows nothing of, so every insert fails, the
/// way a full disk or a lost server fails a run, until someone fixes it.
fn break_the_accounts_table(ws: &StoreWorkspace) {
    ws.dropsync(&["history"]);
    ws.alter_store(
        "CREATE TABLE accounts (_integration VARCHAR NOT NULL, _execution_id VARCHAR NOT NULL,
            _business_date DATE, _updated_at TIMESTAMP NOT NULL, blocker INTEGER NOT NULL)",
    );
}

fn repair_the_accounts_table(ws: &StoreWorkspace) {
    ws.alter_store("ALTER TABLE accounts DROP COLUMN blocker");
}

fn failures(ws: &StoreWorkspace) -> Vec<Vec<String>> {
    ws.db().rows(
        "SELECT status, coalesce(failure, '-'), CAST(attempt AS VARCHAR) FROM dropsync_runs
         ORDER BY started_at",
    )
}

/// Issue 7: a run that failed for a transient reason was never retried by
/// later scans; the feed stalled until someone ran `--date`.
fn a_transiently_failed_file_is_retried_by_the_next_scans(kind: StoreKind) {
    let ws = workspace_on(kind, &accounts_config(""));
    break_the_accounts_table(&ws);
    ws.drop_file("accounts_20261103.csv", crate::common::six_accounts());
    ws.dropsync(&["run"]).code(1).stdout_has(&[
        "accounts  2026-11-03  accounts_20261103.csv  failed",
        "(attempt 1 of 3; the next scheduled run tries again)",
    ]);
    let failed = ws.db().last_run();
    ws.dropsync(&["show", &failed.execution_id])
        .code(0)
        .stdout_has(&["status         failed\nfailure        transient, attempt 1\n"]);
    repair_the_accounts_table(&ws);
    ws.dropsync(&["run"]).code(0).stdout_has(&[
        "accounts_20261103.csv  success  rows 6 ok 6 rejected 0 skipped 0  +6 ~0 -0",
    ]);
    assert_eq!(
        failures(&ws),
        table(&[["failed", "transient", "1"], ["success", "-", "2"]])
    );
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&["nothing new to sync"]);
}

fn retries_stop_after_three_attempts_and_wait_for_a_person(kind: StoreKind) {
    let ws = workspace_on(kind, &accounts_config(""));
    break_the_accounts_table(&ws);
    ws.drop_file("accounts_20261103.csv", crate::common::six_accounts());
    ws.dropsync(&["run"])
        .code(1)
        .stdout_has(&["(attempt 1 of 3;"]);
    ws.dropsync(&["run"])
        .code(1)
        .stdout_has(&["(attempt 2 of 3;"]);
    ws.dropsync(&["run"])
        .code(1)
        .stdout_has(&["(attempt 3 of 3; not retried any more: run it with --date or ingest)"]);
    repair_the_accounts_table(&ws);
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&["nothing new to sync"]);
    ws.dropsync(&["run", "--date", "2026-11-03"])
        .code(0)
        .stdout_has(&["accounts_20261103.csv  success"]);
    assert_eq!(
        failures(&ws),
        table(&[
            ["failed", "transient", "1"],
            ["failed", "transient", "2"],
            ["failed", "transient", "3"],
            ["success", "-", "4"],
        ])
    );
}

/// A file refused for its content is not retried: the same bytes would be
/// refused the same way.
fn a_file_refused_for_its_content_waits_for_a_person(kind: StoreKind) {
    let ws = crate::common::with_six_accounts_on(kind, "");
    ws.drop_file(
        "accounts_20260102.csv",
        format!("{ACCOUNTS_HEADER}A1,,Account 1,parent,pro,10,2020-01-01\n"),
    );
    ws.dropsync(&["run"])
        .code(1)
        .stdout_has(&["refused: the file would delete"]);
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&["nothing new to sync"]);
    assert_eq!(
        failures(&ws),
        table(&[["success", "-", "1"], ["failed", "content", "1"]])
    );
}

crate::on_both_stores! {
    random_multi_day_scenarios_end_where_applying_every_date_in_order_does => random_multi_day_scenarios_end_where_applying_every_date_in_order_does;
    a_late_delta_file_does_not_undo_a_record_a_newer_file_resent_unchanged => a_late_delta_file_does_not_undo_a_record_a_newer_file_resent_unchanged;
    a_delta_file_identical_to_an_older_one_still_speaks_for_its_date => a_delta_file_identical_to_an_older_one_still_speaks_for_its_date;
    a_snapshot_that_repeats_an_older_export_is_applied_again => a_snapshot_that_repeats_an_older_export_is_applied_again;
    one_instant_written_several_ways_is_one_event => one_instant_written_several_ways_is_one_event;
    a_refused_file_keeps_a_sample_of_its_row_errors => a_refused_file_keeps_a_sample_of_its_row_errors;
    a_transiently_failed_file_is_retried_by_the_next_scans => a_transiently_failed_file_is_retried_by_the_next_scans;
    retries_stop_after_three_attempts_and_wait_for_a_person => retries_stop_after_three_attempts_and_wait_for_a_person;
    a_file_refused_for_its_content_waits_for_a_person => a_file_refused_for_its_content_waits_for_a_person;
}

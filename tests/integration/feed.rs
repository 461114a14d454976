//! The change feed with real receivers: a folder the changes of each run
//! are written to, an HTTP server on loopback that is down, then answers
//! 500, then accepts, and a daemon killed with SIGKILL while a run's changes
//! wait in the outbox.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use crate::alerts::{Receiver, wait_for};
use crate::common::{
    ACCOUNTS_HEADER, StoreKind, Workspace, accounts_config, six_accounts, workspace_on,
};
use crate::freshness::start_daemon;
use crate::servers::free_port;

/// Day 2 of the accounts: A2 renamed and grown, A3 gone, A7 new, A4's
/// plan changed; the rest unchanged.
fn day2() -> String {
    let mut s = ACCOUNTS_HEADER.to_string();
    for i in [1, 5, 6] {
        s.push_str(&format!(
            "A{i},,Account {i},parent,pro,{},2020-01-0{i}\n",
            i * 10
        ));
    }
    s.push_str("A2,,Acme Two,parent,pro,25,2020-01-02\n");
    s.push_str("A4,,Account 4,parent,enterprise,40,2020-01-04\n");
    s.push_str("A7,,Account 7,parent,free,,2020-01-07\n");
    s
}

/// `changes --run ID --json`.
fn logged(ws: &Workspace, execution_id: &str) -> Vec<serde_json::Value> {
    let out = ws.dropsync(&["changes", "accounts", "--run", execution_id, "--json"]);
    out.code(0);
    out.json().as_array().expect("an array of changes").clone()
}

/// The files in `dir` (not the hidden ones), sorted by name.
fn files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

fn folder(name: &str, path: &str, extra: &str) -> String {
    format!("\n[[subscribe]]\nname = \"{name}\"\ntype = \"folder\"\npath = \"{path}\"\n{extra}\n")
}

/// A run's file of a folder subscriber holds exactly what `changes --json`
/// says of that run, each change with its `EXECUTION_ID:SEQ` key, in a file
/// of the owner's alone named by time and execution id; a dry run writes
/// nothing, and a subscriber in CSV gets the same changes.
fn a_folder_subscribers_files_match_the_change_log_and_a_dry_run_writes_nothing(kind: StoreKind) {
    let ws = workspace_on(
        kind,
        &format!(
            "{}{}{}",
            accounts_config("max_delete_ratio = 1.0"),
            folder("warehouse", "feed", ""),
            folder(
                "sheet",
                "feed-csv",
                "format = \"csv\"\nfile_mode = \"0640\""
            ),
        ),
    );
    ws.drop_file("accounts_20260101.csv", six_accounts());
    ws.dropsync(&["run"]).code(0);
    ws.drop_file("accounts_20260102.csv", day2());
    ws.dropsync(&["run"]).code(0);
    let mut runs = ws.db().runs();
    runs.sort_by(|a, b| a.business_date.cmp(&b.business_date));
    let ids: Vec<String> = runs.iter().map(|r| r.execution_id.clone()).collect();

    let written = files(&ws.path("feed"));
    assert_eq!(written.len(), 2, "{written:?}");
    for (file, id) in written.iter().zip(&ids) {
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(name.ends_with(&format!("_accounts_{id}.jsonl")), "{name}");
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let changes = logged(&ws, id);
        assert_eq!(lines.len(), changes.len());
        for (mut line, change) in lines.into_iter().zip(&changes) {
            let key = line.as_object_mut().unwrap().remove("idempotency_key");
            assert_eq!(
                key,
                Some(format!("{id}:{}", change["seq"]).into()),
                "{change}"
            );
            assert_eq!(&line, change);
        }
    }
    // Day 2 as the log has it: the update keeps old and new, the key its
    // parts.
    let day2_changes = logged(&ws, &ids[1]);
    let kinds: Vec<&str> = day2_changes
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 4, "{day2_changes:?}");
    let renamed = day2_changes
        .iter()
        .find(|c| c["key"]["AccountID"] == "A2")
        .unwrap();
    assert_eq!(renamed["kind"], "update");
    assert_eq!(
        renamed["fields"]["Name"],
        serde_json::json!(["Account 2", "Acme Two"])
    );
    assert_eq!(renamed["business_date"], "2026-01-02");

    let csv_files = files(&ws.path("feed-csv"));
    assert_eq!(csv_files.len(), 2, "{csv_files:?}");
    // A folder dropsync creates lets in whom the files' mode lets read them.
    let dir_mode = |dir: &str| {
        std::fs::metadata(ws.path(dir))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(dir_mode("feed"), 0o700);
    assert_eq!(dir_mode("feed-csv"), 0o750);
    let mode = std::fs::metadata(&csv_files[1])
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o640);
    let text = std::fs::read_to_string(&csv_files[1]).unwrap();
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("idempotency_key,seq,integration,dataset,table,execution_id,business_date,kind,key,fields"),
        "{text}"
    );
    assert_eq!(lines.count(), 4, "{text}");

    // A dry run applies nothing, so tells nothing.
    let mut day3 = day2();
    day3.push_str("A8,,Account 8,parent,free,,2020-01-08\n");
    ws.drop_file("accounts_20260103.csv", day3);
    ws.dropsync(&["run", "--dry-run"]).code(0);
    assert_eq!(files(&ws.path("feed")).len(), 2);
    assert_eq!(files(&ws.path("feed-csv")).len(), 2);
    assert_eq!(
        ws.db()
            .count("SELECT count(*) FROM dropsync_outbox WHERE delivery = 'feed'"),
        4
    );
    // ... and no temporary file is left behind.
    let all: Vec<_> = std::fs::read_dir(ws.path("feed")).unwrap().collect();
    assert_eq!(all.len(), 2);
}

/// Each subscriber gets only what its filters let through: by integration,
/// dataset, kind and field (an update only when a named field changed); a
/// mass delete that is refused tells nothing.
fn filters_choose_the_changes_each_subscriber_gets(kind: StoreKind) {
    let ws = workspace_on(
        kind,
        &format!(
            "{}{}{}{}",
            accounts_config(""),
            folder(
                "seats",
                "seats",
                "kinds = [\"update\"]\nfields = [\"Seats\"]"
            ),
            folder(
                "arrivals",
                "arrivals",
                "integrations = [\"accounts\"]\ndatasets = [\"accounts\"]\nkinds = [\"insert\", \"delete\"]"
            ),
            folder("plans", "plans", "fields = [\"Plan\"]"),
        ),
    );
    ws.drop_file("accounts_20260101.csv", six_accounts());
    ws.dropsync(&["run"]).code(0);
    ws.drop_file("accounts_20260102.csv", day2());
    // Deleting 1 of 6 (A3) is within the default ratio.
    ws.dropsync(&["run"]).code(0);

    let read = |dir: &str| -> Vec<Vec<(String, String)>> {
        files(&ws.path(dir))
            .iter()
            .map(|f| {
                std::fs::read_to_string(f)
                    .unwrap()
                    .lines()
                    .map(|l| {
                        let v: serde_json::Value = serde_json::from_str(l).unwrap();
                        (
                            v["kind"].as_str().unwrap().to_string(),
                            v["key"]["AccountID"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect()
            })
            .collect()
    };
    let pair = |k: &str, a: &str| (k.to_string(), a.to_string());
    // Only A2's update changed Seats; the first run had no update at all.
    assert_eq!(read("seats"), [vec![pair("update", "A2")]]);
    let arrivals = read("arrivals");
    assert_eq!(arrivals.len(), 2);
    assert_eq!(arrivals[0].len(), 6);
    let mut day2_arrivals = arrivals[1].clone();
    day2_arrivals.sort();
    assert_eq!(day2_arrivals, [pair("delete", "A3"), pair("insert", "A7")]);
    // Plan: every insert and delete touches it; of the updates, A4's only.
    let mut plans = read("plans")[1].clone();
    plans.sort();
    assert_eq!(
        plans,
        [
            pair("delete", "A3"),
            pair("insert", "A7"),
            pair("update", "A4")
        ]
    );

    // A file that would delete all but one is refused: nothing to tell.
    let mut day3 = ACCOUNTS_HEADER.to_string();
    day3.push_str("A1,,Account 1,parent,pro,10,2020-01-01\n");
    ws.drop_file("accounts_20260103.csv", day3);
    ws.dropsync(&["run"]).code(1);
    assert_eq!(read("arrivals").len(), 2);
    assert_eq!(read("plans").len(), 2);
}

/// A filter that names something the config does not have is refused when
/// the config is read, naming the entry and what is unknown.
#[test]
fn unknown_names_in_a_subscribers_filters_are_config_errors() {
    for (filters, says) in [
        (
            "integrations = [\"acounts\"]",
            "integrations: no integration named `acounts` (known: accounts)",
        ),
        (
            "datasets = [\"users\"]",
            "datasets: no integration syncs a dataset named `users` (known: accounts)",
        ),
        (
            "kinds = [\"upsert\"]",
            "kinds: no kind of change named `upsert`",
        ),
        ("fields = [\"Seat\"]", "fields: no field named `Seat`"),
        ("", "a folder subscriber needs a path"),
    ] {
        let path = if filters.is_empty() {
            String::new()
        } else {
            "path = \"feed\"\n".into()
        };
        let ws = Workspace::new(&format!(
            "{}\n[[subscribe]]\nname = \"crm-feed\"\ntype = \"folder\"\n{path}{filters}\n",
            accounts_config("")
        ));
        ws.drop_file("accounts_20260101.csv", six_accounts());
        let out = ws.dropsync(&["run"]);
        out.code(2)
            .stderr_has(&["invalid config", "[[subscribe]] `crm-feed`", says]);
        assert!(!ws.path("feed").exists());
    }
}

/// One request the change feed's webhook receiver got.
#[derive(Debug, Clone)]
struct Page {
    idempotency_key: String,
    /// The size of the request's body.
    bytes: usize,
    headers: BTreeMap<String, String>,
    body: serde_json::Value,
    status: u16,
}

impl Page {
    fn keys(&self) -> Vec<String> {
        self.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["idempotency_key"].as_str().unwrap().to_string())
            .collect()
    }
}

/// The webhook receiver of the feed tests: it keeps every header and the
/// body's size, to check pages against `page_bytes`.
type FeedReceiver = Receiver<Page>;

impl Receiver<Page> {
    fn start_feed(port: u16, script: &[u16]) -> FeedReceiver {
        Receiver::start_recording(port, script, |request, status| Page {
            idempotency_key: request.idempotency_key,
            bytes: request.body.len(),
            headers: request.headers,
            body: serde_json::from_slice(&request.body).unwrap_or_default(),
            status,
        })
    }

    fn pages(&self) -> Vec<Page> {
        self.recorded()
    }

    fn accepted(&self) -> Vec<Page> {
        self.pages()
            .into_iter()
            .filter(|p| p.status < 300)
            .collect()
    }

    /// The change keys of every accepted page, in order.
    fn accepted_keys(&self) -> Vec<String> {
        self.accepted().iter().flat_map(Page::keys).collect()
    }
}

/// `[[subscribe]]` for a webhook (its URL in `webhook_env`): pages of at most `page_bytes`,
/// a URL with a secret token from the environment, a header from another.
fn webhook(page_bytes: usize) -> String {
    format!(
        "\n[[subscribe]]\nname = \"crm-feed\"\ntype = \"webhook\"\nurl_env = \"FEED_URL\"\n\
         headers_env = {{ Authorization = \"FEED_TOKEN\" }}\npage_bytes = {page_bytes}\n\
         retry_secs = 1\ntimeout_secs = 5\n"
    )
}

fn webhook_env(port: u16) -> [(&'static str, String); 2] {
    [
        (
            "FEED_URL",
            format!("http://127.0.0.1:{port}/changes?token=feed-s3cret"),
        ),
        ("FEED_TOKEN", "Bearer header-s3cret".to_string()),
    ]
}

/// The receiver is down when the run commits, then answers 500 in the
/// middle of the run's pages, then accepts: every change arrives, in pages
/// no larger than asked, each change once per key (a retry starts after
/// the last page accepted); `status` and `check` tell of the delivery
/// waiting meanwhile, and no secret is ever printed.
#[test]
fn a_webhook_down_then_failing_then_back_gets_every_change_once_per_key() {
    let port = free_port();
    let ws = Workspace::new(&format!(
        "{}{}",
        accounts_config("\n[daemon]\nsettle_secs = 1"),
        webhook(1000)
    ));
    let env = webhook_env(port);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ws.drop_file("accounts_20260101.csv", six_accounts());
    let out = ws.dropsync_env(&["run"], &env);
    out.code(0)
        .stderr_has(&["changes not delivered", &format!("http://127.0.0.1:{port}")]);
    assert!(
        !out.stderr.contains("feed-s3cret") && !out.stderr.contains("header-s3cret"),
        "{out}"
    );
    ws.dropsync(&["status"])
        .code(0)
        .stdout_has(&["feed      1 undelivered (last try: http://127.0.0.1:"]);
    ws.dropsync(&["check"])
        .stdout_has(&["accounts has 1 feed delivery undelivered"]);
    let run = ws.db().runs()[0].execution_id.clone();
    // `changes` reads the store itself: asked before the daemon holds it.
    let logged: Vec<String> = logged(&ws, &run)
        .iter()
        .map(|c| format!("{run}:{}", c["seq"]))
        .collect();

    // Page 1 is accepted, page 2 fails, then everything is accepted.
    let receiver = FeedReceiver::start_feed(port, &[200, 500]);
    let daemon = start_daemon(&ws, &env);
    wait_for(Duration::from_secs(60), "every change accepted", || {
        receiver.accepted_keys().len() >= 6
    });
    std::thread::sleep(Duration::from_secs(2));
    let pages = receiver.pages();
    assert!(pages.len() >= 4, "{pages:?}");
    assert_eq!(pages[1].status, 500, "{pages:?}");
    // The page that failed is sent again, as it was, and nothing before it.
    assert_eq!(pages[2].idempotency_key, pages[1].idempotency_key);
    assert_eq!(pages[2].keys(), pages[1].keys());
    assert_eq!(logged.len(), 6);
    assert_eq!(receiver.accepted_keys(), logged, "{pages:?}");
    // Each request, the changes and what wraps them, within page_bytes.
    for page in &pages {
        assert!(page.bytes <= 1000, "{} bytes: {page:?}", page.bytes);
        assert_eq!(page.headers["authorization"], "Bearer header-s3cret");
        assert_eq!(page.body["execution_id"], run.as_str());
        assert_eq!(page.body["subscriber"], "crm-feed");
        let first = &page.keys()[0];
        assert!(page.idempotency_key.starts_with(first.as_str()), "{page:?}");
    }
    let accepted = receiver.accepted();
    assert_eq!(accepted.last().unwrap().body["last_page"], true);
    assert!(
        accepted[..accepted.len() - 1]
            .iter()
            .all(|p| p.body["last_page"] == false)
    );
    let event = &accepted[0].body["events"][0];
    assert_eq!(event["integration"], "accounts");
    assert_eq!(event["dataset"], "accounts");
    assert_eq!(event["kind"], "insert");
    assert_eq!(event["key"], serde_json::json!({"AccountID": "A1"}));
    assert_eq!(event["fields"]["Name"], "Account 1");
    assert_eq!(event["business_date"], "2026-01-01");
    ws.dropsync(&["status"])
        .code(0)
        .stdout_lacks(&["undelivered"]);
    let log = daemon.log();
    assert!(
        !log.contains("feed-s3cret") && !log.contains("header-s3cret"),
        "{log}"
    );
}

/// SIGKILL while a run's changes wait in the outbox (committed with the
/// run, not yet delivered): after a restart every change is delivered, once
/// per key.
#[test]
fn changes_committed_before_a_crash_are_delivered_after_restart() {
    let port = free_port();
    let ws = Workspace::new(&format!(
        "{}{}",
        accounts_config("\n[daemon]\nsettle_secs = 1"),
        webhook(1 << 20)
    ));
    let env = webhook_env(port);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut daemon = start_daemon(&ws, &env);
    ws.drop_file("accounts_20260101.csv", six_accounts());
    wait_for(Duration::from_secs(60), "the undelivered changes", || {
        daemon.log().contains("changes not delivered")
    });
    daemon.kill9();
    drop(daemon);

    let receiver = FeedReceiver::start_feed(port, &[]);
    let daemon = start_daemon(&ws, &env);
    wait_for(
        Duration::from_secs(60),
        "the changes after the restart",
        || !receiver.pages().is_empty(),
    );
    std::thread::sleep(Duration::from_secs(3));
    let pages = receiver.pages();
    assert_eq!(pages.len(), 1, "{pages:?}");
    drop(daemon);
    let run = ws.db().runs()[0].execution_id.clone();
    let keys: Vec<String> = logged(&ws, &run)
        .iter()
        .map(|c| format!("{run}:{}", c["seq"]))
        .collect();
    assert_eq!(pages[0].keys(), keys);
    ws.dropsync(&["status"])
        .code(0)
        .stdout_lacks(&["undelivered"]);
}

/// A subscriber applies changes in order, so it gets runs in the order
/// they were applied: a run whose delivery failed holds back the later
/// runs' until it is accepted, rather than being overtaken while it waits
/// out its backoff.
#[test]
fn a_later_run_waits_for_an_earlier_run_that_was_not_yet_delivered() {
    let port = free_port();
    let ws = Workspace::new(&format!(
        "{}{}",
        accounts_config("\n[daemon]\nsettle_secs = 1"),
        webhook(1 << 20).replace("retry_secs = 1", "retry_secs = 10")
    ));
    let env = webhook_env(port);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // The first run's changes are refused once; the second run follows at once.
    let receiver = FeedReceiver::start_feed(port, &[500]);
    ws.drop_file("accounts_20260101.csv", six_accounts());
    ws.dropsync_env(&["run"], &env)
        .code(0)
        .stderr_has(&["changes not delivered", "answered 500"]);
    ws.drop_file("accounts_20260102.csv", day2());
    ws.dropsync_env(&["run"], &env).code(0);
    let mut runs = ws.db().runs();
    runs.sort_by(|a, b| a.business_date.cmp(&b.business_date));

    let daemon = start_daemon(&ws, &env);
    wait_for(Duration::from_secs(90), "both runs accepted", || {
        receiver.accepted().len() == 2
    });
    drop(daemon);
    let order: Vec<String> = receiver
        .accepted()
        .iter()
        .map(|p| p.body["execution_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        order,
        [runs[0].execution_id.clone(), runs[1].execution_id.clone()]
    );
}

/// A replay is a run of its own: the changes it applies again are
/// delivered under its execution id, with keys of their own.
#[test]
fn a_replays_changes_are_delivered_as_a_new_runs() {
    let ws = Workspace::new(&format!(
        "{}{}",
        accounts_config("max_delete_ratio = 1.0"),
        folder("warehouse", "feed", "")
    ));
    ws.drop_file("accounts_20260101.csv", six_accounts());
    ws.dropsync(&["run"]).code(0);
    ws.drop_file("accounts_20260102.csv", day2());
    ws.dropsync(&["run"]).code(0);
    // Day 1 again: its snapshot undoes day 2.
    ws.dropsync(&["run", "accounts", "--date", "2026-01-01", "--force"])
        .code(0);
    let written = files(&ws.path("feed"));
    assert_eq!(written.len(), 3, "{written:?}");
    let runs = ws.db().runs();
    let replay = runs
        .iter()
        .find(|r| r.forced)
        .expect("the replay's run")
        .execution_id
        .clone();
    let name = written[2]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(name.ends_with(&format!("_{replay}.jsonl")), "{name}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&written[2])
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines.iter().all(|l| {
        l["execution_id"] == replay.as_str()
            && l["idempotency_key"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{replay}:"))
    }));
    let renamed_back = lines
        .iter()
        .find(|l| l["key"]["AccountID"] == "A2")
        .unwrap();
    assert_eq!(
        renamed_back["fields"]["Name"],
        serde_json::json!(["Acme Two", "Account 2"])
    );
}

crate::on_both_stores! {
    a_folder_subscribers_files_match_the_change_log_and_a_dry_run_writes_nothing => a_folder_subscribers_files_match_the_change_log_and_a_dry_run_writes_nothing;
    filters_choose_the_changes_each_subscriber_gets => filters_choose_the_changes_each_subscriber_gets;
}

//! Running unattended: alerts sent beside the runs, not between them, and
//! what an operator sees of them.

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::alerts::wait_for;
use crate::common::{Workspace, accounts_config, six_accounts};
use crate::freshness::start_daemon;
use crate::servers::free_port;

/// One POST a receiver took: when it came, and its event's kind and id.
#[derive(Debug, Clone)]
struct Taken {
    at: DateTime<Utc>,
    kind: String,
    idempotency_key: String,
}

/// A real HTTP server on 127.0.0.1 that reads each POST, then keeps the
/// sender waiting before it answers 200 (the n-th POST `hangs[n]`, the
/// ones after the last not at all): a chat service having a bad night.
struct SlowReceiver {
    taken: Arc<Mutex<Vec<Taken>>>,
}

impl SlowReceiver {
    fn start(port: u16, hangs: &[Duration]) -> SlowReceiver {
        let hangs = hangs.to_vec();
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let taken = Arc::new(Mutex::new(Vec::new()));
        let record = taken.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let record = record.clone();
                let hangs = hangs.clone();
                std::thread::spawn(move || {
                    if let Some(request) = read_post(&stream) {
                        let hang = {
                            let mut taken = record.lock().unwrap();
                            taken.push(request);
                            hangs.get(taken.len() - 1).copied().unwrap_or_default()
                        };
                        std::thread::sleep(hang);
                        let _ = (&stream).write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    }
                });
            }
        });
        SlowReceiver { taken }
    }

    fn taken(&self) -> Vec<Taken> {
        self.taken.lock().unwrap().clone()
    }
}

fn read_post(stream: &std::net::TcpStream) -> Option<Taken> {
    let at = Utc::now();
    let request = crate::alerts::read_request(&mut BufReader::new(stream))?;
    let body: serde_json::Value = serde_json::from_slice(&request.body).ok()?;
    Some(Taken {
        at,
        kind: body["event"]["kind"].as_str()?.to_string(),
        idempotency_key: request.idempotency_key,
    })
}

/// `integration`'s runs in `history --json`, with their start (UTC).
fn run_starts(ws: &Workspace, integration: &str) -> Vec<DateTime<Utc>> {
    let out = ws.dropsync(&["history", "--json"]);
    out.code(0);
    out.json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["integration"] == integration && r["status"] != "running")
        .map(|r| {
            let started = r["started_at"].as_str().unwrap();
            NaiveDateTime::parse_from_str(started, "%Y-%m-%dT%H:%M:%S%.f")
                .unwrap_or_else(|e| panic!("{started}: {e}"))
                .and_utc()
        })
        .collect()
}

/// Alerts used to be sent on the daemon's worker, between runs: a webhook
/// that took its time (up to `timeout_secs`) held every run waiting. Now a
/// receiver that hangs for many seconds delays no run, and its alert,
/// claimed before it was sent, is not sent again meanwhile.
#[test]
fn a_receiver_that_hangs_does_not_delay_a_scheduled_run_of_another_integration() {
    const HANG: Duration = Duration::from_secs(45);
    let port = free_port();
    let receiver = SlowReceiver::start(port, &[HANG]);
    let ws = Workspace::new(&format!(
        "{}\n[integrations.ticker]\ndataset = \"accounts\"\ntable = \"ticker_accounts\"\n\
         source = {{ type = \"folder\", path = \"ticker\" }}\n\
         pattern = \"accounts_{{date:%Y%m%d}}.csv\"\nschedule = \"* * * * * *\"\n\
         \n[[notify]]\nname = \"slow-chat\"\ntype = \"webhook\"\n\
         url = \"http://127.0.0.1:{port}/hook\"\nevents = [\"run_failed\"]\n\
         retry_secs = 1\ntimeout_secs = 120\n",
        accounts_config("\n[daemon]\nsettle_secs = 1"),
    ));
    std::fs::create_dir_all(ws.path("ticker")).unwrap();
    let _daemon = start_daemon(&ws, &[]);

    // A failed run: its alert goes to the receiver, which hangs.
    ws.drop_file("accounts_20260101.csv", "");
    wait_for(
        Duration::from_secs(60),
        "the alert to reach the receiver",
        || !receiver.taken().is_empty(),
    );
    let hung_at = receiver.taken()[0].at;

    // The ticker's next file is taken by its schedule (it fires every
    // second) while the receiver still keeps the alert's sender waiting.
    let file = ws.write("ticker/accounts_20260102.csv", six_accounts());
    std::fs::File::options()
        .write(true)
        .open(file)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    wait_for(Duration::from_secs(120), "the ticker's run", || {
        !run_starts(&ws, "ticker").is_empty()
    });
    let started = run_starts(&ws, "ticker")[0];
    let delay = (started - hung_at).to_std().unwrap_or_default();
    assert!(
        delay < Duration::from_secs(30),
        "the ticker's run started {delay:?} after the receiver began to hang (for {HANG:?})"
    );

    // The hanging receiver answers in the end: its alert is delivered,
    // sent once (claimed while it was being sent), and `status` is clear.
    wait_for(
        Duration::from_secs(120),
        "the alert to be delivered",
        || !ws.dropsync(&["status"]).stdout.contains("undelivered"),
    );
    let taken = receiver.taken();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0].kind, "run_failed");
    assert!(!taken[0].idempotency_key.is_empty());
}

/// SIGKILL while an alert is being sent (claimed, the receiver not yet
/// answering): the claim dies with the process, and the next start sends
/// the alert again, with the same idempotency key, until it is delivered.
#[test]
fn an_alert_being_sent_when_the_daemon_is_killed_is_sent_again_after_restart() {
    let port = free_port();
    let receiver = SlowReceiver::start(port, &[Duration::from_secs(600)]);
    let ws = Workspace::new(&format!(
        "{}
[[notify]]
name = \"slow-chat\"
type = \"webhook\"
\
         url = \"http://127.0.0.1:{port}/hook\"\nevents = [\"run_failed\"]\n\
         retry_secs = 1\ntimeout_secs = 900\n",
        accounts_config("\n[daemon]\nsettle_secs = 1"),
    ));
    let mut daemon = start_daemon(&ws, &[]);
    ws.drop_file("accounts_20260101.csv", "");
    wait_for(
        Duration::from_secs(60),
        "the alert to reach the receiver",
        || !receiver.taken().is_empty(),
    );
    daemon.kill9();
    drop(daemon);

    let daemon = start_daemon(&ws, &[]);
    wait_for(Duration::from_secs(60), "the alert to be delivered", || {
        !ws.dropsync(&["status"]).stdout.contains("undelivered")
    });
    let taken = receiver.taken();
    assert_eq!(taken.len(), 2, "{taken:?}");
    assert_eq!(taken[0].idempotency_key, taken[1].idempotency_key);
    assert_eq!(taken[1].kind, "run_failed");
    let log = daemon.log();
    assert!(log.contains("sent again"), "{log}");
}

/// Each `[[notify]]` gets only what it asked for: one receiver follows one
/// integration's partial runs and refused mass deletes (its URL, with the
/// chat's token in it, from a file); another gets every integration's
/// events but `run_succeeded` (its URL from the environment). Neither URL's
/// secret is ever printed.
#[test]
fn receivers_get_only_the_integrations_and_events_they_asked_for() {
    let (one_port, all_port) = (free_port(), free_port());
    let one = crate::alerts::Receiver::start(one_port, &[]);
    let all = crate::alerts::Receiver::start(all_port, &[]);
    let ws = Workspace::new(&format!(
        "{}\n[integrations.other]\ndataset = \"accounts\"\ntable = \"other_accounts\"\n\
         source = {{ type = \"folder\", path = \"other\" }}\n\
         pattern = \"accounts_{{date:%Y%m%d}}.csv\"\n\
         \n[[notify]]\nname = \"accounts-ops\"\ntype = \"webhook\"\nurl_file = \"hook.url\"\n\
         integrations = [\"accounts\"]\nevents = [\"run_partial\", \"mass_delete_refused\"]\n\
         \n[[notify]]\nname = \"everything\"\ntype = \"webhook\"\nurl_env = \"ALL_HOOK_URL\"\n",
        accounts_config(
            "max_delete_ratio = 0.5\non_error = { policy = \"skip\", max_ratio = 0.5 }"
        ),
    ));
    ws.write(
        "hook.url",
        format!("http://127.0.0.1:{one_port}/one?token=file-s3cret\n"),
    );
    let all_url = format!("http://127.0.0.1:{all_port}/all?token=env-s3cret");
    let env = [("ALL_HOOK_URL", all_url.as_str())];
    let mut printed = String::new();
    let mut run = |args: &[&str], code: i32| {
        let out = ws.dropsync_env(args, &env);
        out.code(code);
        printed.push_str(&out.stdout);
        printed.push_str(&out.stderr);
    };

    // A good first file: `run_succeeded`, which nobody asked for.
    ws.drop_file("accounts_20260101.csv", six_accounts());
    run(&["run", "accounts"], 0);
    // Another integration's failure: for `everything` only.
    ws.write("other/accounts_20260101.csv", "");
    run(&["run", "other"], 1);
    // One row rejected, the rest applied: both.
    ws.drop_file(
        "accounts_20260102.csv",
        six_accounts().replace("pro,30,", "pro,thirty,"),
    );
    run(&["run", "accounts"], 3);
    // Five of six accounts gone: refused, told to both.
    let one_left: String = six_accounts()
        .lines()
        .take(2)
        .map(|l| format!("{l}\n"))
        .collect();
    ws.drop_file("accounts_20260103.csv", one_left);
    run(&["run", "accounts"], 1);
    run(&["status"], 0);
    run(&["notify", "test"], 0);

    let kinds = |r: &crate::alerts::Receiver| -> Vec<(String, String)> {
        r.accepted()
            .iter()
            .filter(|h| h.kind() != "test")
            .map(|h| {
                (
                    h.body["event"]["integration"].as_str().unwrap().to_string(),
                    h.kind().to_string(),
                )
            })
            .collect()
    };
    let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
        p.iter()
            .map(|(i, k)| (i.to_string(), k.to_string()))
            .collect()
    };
    assert_eq!(
        kinds(&one),
        pairs(&[
            ("accounts", "run_partial"),
            ("accounts", "mass_delete_refused")
        ])
    );
    assert_eq!(
        kinds(&all),
        pairs(&[
            ("other", "run_failed"),
            ("accounts", "run_partial"),
            ("accounts", "mass_delete_refused"),
        ])
    );
    // The secrets reached the receivers, and nothing else.
    assert!(
        one.accepted()
            .iter()
            .all(|h| h.path == "/one?token=file-s3cret")
    );
    assert!(
        all.accepted()
            .iter()
            .all(|h| h.path == "/all?token=env-s3cret")
    );
    assert!(
        !printed.contains("s3cret"),
        "a webhook's secret was printed: {printed}"
    );
}

/// A run killed mid-batch (SIGKILL, out of memory, a power cut) used to be
/// marked `interrupted` at the next start without a word to anyone: now it
/// is a `run_failed` alert, sent by the process that finds it, before the
/// `recovered` of the run that applies the file.
#[test]
fn a_run_killed_mid_batch_is_told_as_a_failed_run_at_the_next_start() {
    let port = free_port();
    let receiver = crate::alerts::Receiver::start(port, &[]);
    let ws = Workspace::new(&format!(
        "{}{}",
        accounts_config(""),
        crate::alerts::webhook(port, "\"run_failed\", \"recovered\"")
    ));
    let mut big = crate::common::ACCOUNTS_HEADER.to_string();
    for i in 0..300_000 {
        big.push_str(&format!(
            "A{i:07},,Account {i:07},parent,pro,{},2020-01-01\n",
            i % 100
        ));
    }
    ws.drop_file("accounts_20260101.csv", &big);
    // Killed once its file is parsed: the run is recorded `running` by
    // then, and nothing is applied before validation and the diff.
    let log = ws.path("run.log");
    let mut run = std::process::Command::new(crate::common::BIN)
        .args(["--config", "dropsync.toml", "run"])
        .current_dir(&ws.root)
        .env("DROPSYNC_LOG", "dropsync=debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(120), "the file to be parsed", || {
        std::fs::read_to_string(&log).is_ok_and(|l| {
            l.lines()
                .any(|l| l.contains("stage done") && l.contains("parse"))
        })
    });
    run.kill().unwrap();
    let _ = run.wait();
    let history = ws.dropsync(&["history", "--json"]);
    assert_eq!(history.json()[0]["status"], "interrupted", "{history}");
    assert!(receiver.hooks().is_empty());

    ws.dropsync(&["run"]).code(0);
    let hooks = receiver.accepted();
    let kinds: Vec<&str> = hooks.iter().map(|h| h.kind()).collect();
    assert_eq!(kinds, ["run_failed", "recovered"], "{hooks:?}");
    let text = hooks[0].body["text"].as_str().unwrap();
    assert!(
        text.starts_with("dropsync: accounts: run interrupted: the process stopped"),
        "{text}"
    );
    let interrupted = ws.db().runs()[0].execution_id.clone();
    assert_eq!(hooks[0].body["event"]["execution_id"], interrupted.as_str());
    // Told once: the next start finds nothing left running.
    ws.dropsync(&["run"]).code(0);
    assert_eq!(receiver.accepted().len(), 2);
}

/// Alerts that cannot be delivered (a receiver down, or refusing) used to
/// show only in `status`: the monitoring probe said OK while nobody could
/// be told anything. `check` now warns until they are delivered.
#[test]
fn check_warns_while_alerts_cannot_be_delivered() {
    let port = free_port();
    let ws = Workspace::new(&format!(
        "{}{}",
        accounts_config(""),
        crate::alerts::webhook(port, "\"run_succeeded\"")
    ));
    ws.drop_file("accounts_20260101.csv", six_accounts());
    // Nobody listens: the run is applied, its alert waits.
    ws.dropsync(&["run"]).code(0);
    let out = ws.dropsync(&["check"]);
    out.code(1).stdout_has(&[&format!(
        "DROPSYNC WARNING - accounts has 1 alert undelivered (last try: http://127.0.0.1:{port}"
    )]);
    assert!(!out.stdout.contains("hook-s3cret"), "{out}");

    // The receiver is back; the next command that runs delivers it.
    let receiver = crate::alerts::Receiver::start(port, &[]);
    wait_for(Duration::from_secs(30), "the alert to be delivered", || {
        ws.dropsync(&["run"]).code(0);
        !receiver.accepted().is_empty()
    });
    ws.dropsync(&["check"])
        .code(0)
        .stdout_has(&["DROPSYNC OK - 1 integrations, none overdue or failing"]);
}

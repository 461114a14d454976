//! Running unattended: alerts sent beside the runs, not between them, and
//! what an operator sees of them.

use std::io::{BufRead, BufReader, Read, Write};
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
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let (mut length, mut key) = (0usize, String::new());
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "idempotency-key" => key = value.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let body: serde_json::Value = serde_json::from_slice(&body).ok()?;
    Some(Taken {
        at,
        kind: body["event"]["kind"].as_str()?.to_string(),
        idempotency_key: key,
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

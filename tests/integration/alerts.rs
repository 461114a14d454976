//! Alerts with real receivers on loopback: an HTTP server that is down,
//! then answers 500, then accepts; aiosmtpd taking mail over STARTTLS with a
//! login; and a daemon killed with SIGKILL while an alert waits in the
//! outbox.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{Workspace, accounts_config, six_accounts};
use crate::freshness::start_daemon;
use crate::servers::free_port;

/// One request the webhook receiver got.
#[derive(Debug, Clone)]
pub struct Hook {
    pub path: String,
    pub idempotency_key: String,
    pub body: serde_json::Value,
    /// What the receiver answered.
    pub status: u16,
}

impl Hook {
    pub fn kind(&self) -> &str {
        self.body["event"]["kind"].as_str().unwrap_or_default()
    }
}

/// A real HTTP server on 127.0.0.1 that records each POST (as `T`, made
/// from the request and the status it was answered) and answers the next
/// status of its script (200 when the script is empty).
pub struct Receiver<T = Hook> {
    recorded: Arc<Mutex<Vec<T>>>,
    stop: Arc<AtomicBool>,
}

impl<T: Clone + Send + 'static> Receiver<T> {
    pub fn start_recording(port: u16, script: &[u16], record: fn(Request, u16) -> T) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script = Arc::new(Mutex::new(
            script.iter().copied().collect::<VecDeque<u16>>(),
        ));
        let (r, s) = (recorded.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let status = script.lock().unwrap().pop_front().unwrap_or(200);
                        if let Some(request) = serve(stream, status) {
                            r.lock().unwrap().push(record(request, status));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Receiver { recorded, stop }
    }

    /// Every request, in the order they came.
    pub fn recorded(&self) -> Vec<T> {
        self.recorded.lock().unwrap().clone()
    }
}

impl Receiver<Hook> {
    pub fn start(port: u16, script: &[u16]) -> Receiver<Hook> {
        Receiver::start_recording(port, script, |request, status| Hook {
            path: request.path,
            idempotency_key: request.idempotency_key,
            body: serde_json::from_slice(&request.body).unwrap_or_default(),
            status,
        })
    }

    pub fn hooks(&self) -> Vec<Hook> {
        self.recorded()
    }

    /// The requests it accepted (answered 2xx).
    pub fn accepted(&self) -> Vec<Hook> {
        self.hooks()
            .into_iter()
            .filter(|h| h.status < 300)
            .collect()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Reads one request and answers it with `status`.
fn serve(stream: std::net::TcpStream, status: u16) -> Option<Request> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let request = read_request(&mut reader)?;
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        if status < 300 { "OK" } else { "Server Error" }
    );
    Some(request)
}

/// One HTTP request as a receiver sees it.
pub struct Request {
    pub path: String,
    pub idempotency_key: String,
    /// Every header, by its lowercase name.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// Reads one request: its path, its headers and its body.
pub fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.insert(name.to_ascii_lowercase(), value.trim().to_string());
    }
    let length: usize = match headers.get("content-length") {
        Some(value) => value.parse().ok()?,
        None => 0,
    };
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        path,
        idempotency_key: headers.get("idempotency-key").cloned().unwrap_or_default(),
        headers,
        body,
    })
}

pub fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `[[notify]]` for a webhook on `port`, whose URL holds a secret token.
pub fn webhook(port: u16, events: &str) -> String {
    format!(
        "\n[[notify]]\nname = \"ops-hook\"\ntype = \"webhook\"\n\
         url = \"http://127.0.0.1:{port}/hook?token=hook-s3cret\"\n\
         events = [{events}]\nretry_secs = 1\ntimeout_secs = 5\n"
    )
}

/// A failed run's alert survives a receiver that is down, then one that
/// answers 500: it is retried with backoff and accepted once, every attempt
/// with the same idempotency key; the next good file sends `recovered`.
#[test]
fn a_webhook_that_is_down_then_fails_then_recovers_gets_each_alert_once() {
    let port = free_port();
    let ws = Workspace::new(&format!(
        "{}{}",
        accounts_config("\n[daemon]\nsettle_secs = 1"),
        webhook(port, "\"run_failed\", \"recovered\", \"run_succeeded\"")
    ));
    ws.drop_file("accounts_20260101.csv", "");
    // Nobody listens yet: the run fails, its alert waits in the outbox.
    let out = ws.dropsync(&["run"]);
    out.code(1)
        .stderr_has(&["alert not delivered", &format!("http://127.0.0.1:{port}")]);
    assert!(!out.stderr.contains("hook-s3cret"), "{out}");
    ws.dropsync(&["status"])
        .code(0)
        .stdout_has(&["alerts    1 undelivered (last try: http://127.0.0.1:"]);
    let failed = ws.db().runs()[0].execution_id.clone();

    let receiver = Receiver::start(port, &[500, 500]);
    let daemon = start_daemon(&ws, &[]);
    wait_for(Duration::from_secs(30), "the alert to be accepted", || {
        !receiver.accepted().is_empty()
    });
    let hooks = receiver.hooks();
    assert_eq!(
        hooks.iter().map(|h| h.status).collect::<Vec<_>>(),
        [500, 500, 200],
        "{hooks:?}"
    );
    let key = &hooks[0].idempotency_key;
    assert!(!key.is_empty());
    assert!(hooks.iter().all(|h| &h.idempotency_key == key), "{hooks:?}");
    let hook = &hooks[2];
    assert_eq!(hook.path, "/hook?token=hook-s3cret");
    assert_eq!(hook.kind(), "run_failed");
    assert_eq!(hook.body["event"]["id"], key.as_str());
    assert_eq!(hook.body["event"]["execution_id"], failed.as_str());
    let text = hook.body["text"].as_str().unwrap();
    assert!(
        text.starts_with("dropsync: accounts: run failed:"),
        "{text}"
    );
    ws.dropsync(&["status"])
        .code(0)
        .stdout_lacks(&["undelivered"]);

    ws.drop_file("accounts_20260102.csv", six_accounts());
    wait_for(Duration::from_secs(30), "recovered and succeeded", || {
        receiver.accepted().len() == 3
    });
    std::thread::sleep(Duration::from_secs(2));
    let kinds: Vec<String> = receiver
        .accepted()
        .iter()
        .map(|h| h.kind().to_string())
        .collect();
    assert_eq!(kinds, ["run_failed", "recovered", "run_succeeded"]);
    let log = daemon.log();
    assert!(!log.contains("hook-s3cret"), "{log}");
}

/// SIGKILL while an alert waits in the outbox (committed with its run, not
/// yet delivered): after a restart it is delivered, once.
#[test]
fn an_alert_committed_before_a_crash_is_delivered_once_after_restart() {
    let port = free_port();
    let ws = Workspace::new(&format!(
        "{}{}",
        accounts_config("\n[daemon]\nsettle_secs = 1"),
        webhook(port, "\"run_failed\"")
    ));
    let mut daemon = start_daemon(&ws, &[]);
    ws.drop_file("accounts_20260101.csv", "");
    wait_for(Duration::from_secs(30), "the failed run", || {
        daemon.log().contains("alert not delivered")
    });
    daemon.kill9();
    drop(daemon);

    let receiver = Receiver::start(port, &[]);
    let daemon = start_daemon(&ws, &[]);
    wait_for(
        Duration::from_secs(30),
        "the alert after the restart",
        || !receiver.hooks().is_empty(),
    );
    std::thread::sleep(Duration::from_secs(3));
    let hooks = receiver.hooks();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0].kind(), "run_failed");
    drop(daemon);
    ws.dropsync(&["status"])
        .code(0)
        .stdout_lacks(&["undelivered"]);
}

/// A test CA and a certificate for 127.0.0.1 signed by it, in `dir`.
fn certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (scripts/test-servers installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=dropsync test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-CAcreateserial",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
}

/// aiosmtpd requiring STARTTLS and a login; each message lands in a file.
struct SmtpServer {
    child: Child,
    port: u16,
    mail: std::path::PathBuf,
}

const SMTP_SERVER: &str = r#"
import os, ssl, sys
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
port, cert, key, mail = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
class Save:
    async def handle_DATA(self, server, session, envelope):
        n = len(os.listdir(mail))
        path = os.path.join(mail, "%04d.eml" % n)
        with open(path + ".tmp", "wb") as f:
            f.write(b"X-Test-TLS: %s\r\n" % (b"yes" if session.ssl else b"no"))
            f.write(envelope.original_content)
        os.rename(path + ".tmp", path)
        return "250 OK"
def login(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == b"alerts" and data.password == b"smtp-s3cret"
    return AuthResult(success=ok)
tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
tls.load_cert_chain(cert, key)
server = Controller(Save(), hostname="127.0.0.1", port=port, tls_context=tls,
                    require_starttls=True, authenticator=login, auth_required=True,
                    auth_require_tls=True)
server.start()
print("ready", flush=True)
sys.stdin.read()
server.stop()
"#;

impl SmtpServer {
    fn start(dir: &Path) -> SmtpServer {
        certificates(dir);
        let mail = dir.join("mail");
        std::fs::create_dir_all(&mail).unwrap();
        let port = free_port();
        let mut child = Command::new("python3")
            // aiosmtpd warns about its own API on every login.
            .args(["-W", "ignore", "-c"])
            .arg(SMTP_SERVER)
            .arg(port.to_string())
            .arg(dir.join("cert.pem"))
            .arg(dir.join("key.pem"))
            .arg(&mail)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with aiosmtpd (scripts/test-servers installs it)");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready", "aiosmtpd did not start");
        SmtpServer { child, port, mail }
    }

    fn messages(&self) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(&self.mail)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Email over STARTTLS with a login whose password comes from the
/// environment: `notify test`, then a failed run's alert; the password is
/// never printed, even when it is wrong.
#[test]
fn email_alerts_go_over_starttls_with_a_password_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(dir.path());
    let ws = Workspace::new(&format!(
        "{}\n[[notify]]\nname = \"ops-mail\"\ntype = \"email\"\nsmtp_host = \"127.0.0.1\"\n\
         smtp_port = {}\nca_file = \"{}\"\nusername = \"alerts\"\npassword_env = \"ALERT_SMTP_PASSWORD\"\n\
         from = \"dropsync <dropsync@example.com>\"\nto = [\"ops@example.com\"]\nevents = [\"run_failed\"]\n",
        accounts_config(""),
        smtp.port,
        dir.path().join("ca.pem").display()
    ));
    let good = [("ALERT_SMTP_PASSWORD", "smtp-s3cret")];
    ws.dropsync_env(&["notify", "test"], &good)
        .code(0)
        .stdout_has(&["ops-mail: sent"]);
    let out = ws.dropsync_env(
        &["notify", "test", "ops-mail"],
        &[("ALERT_SMTP_PASSWORD", "wrong-pw")],
    );
    out.code(1)
        .stdout_has(&["ops-mail: failed: smtp://127.0.0.1:"]);
    assert!(
        !out.stdout.contains("wrong-pw") && !out.stderr.contains("wrong-pw"),
        "{out}"
    );
    let out = ws.dropsync(&["notify", "test"]);
    out.code(1)
        .stdout_has(&["environment variable ALERT_SMTP_PASSWORD is not set"]);

    ws.drop_file("accounts_20260101.csv", "");
    let out = ws.dropsync_env(&["run"], &good);
    out.code(1);
    assert!(!out.stderr.contains("smtp-s3cret"), "{out}");
    let failed = ws.db().runs()[0].execution_id.clone();
    let messages = smtp.messages();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages[0].contains("a test alert"), "{}", messages[0]);
    let mail = &messages[1];
    for needle in [
        "X-Test-TLS: yes",
        "Subject: dropsync: accounts run failed",
        "To: ops@example.com",
        &failed,
        "@dropsync>",
    ] {
        assert!(mail.contains(needle), "{needle}: {mail}");
    }
    ws.dropsync(&["status"])
        .code(0)
        .stdout_lacks(&["undelivered"]);
}

//! Local security and limits: the daemon's socket and who may use it, the
//! modes of the store and the staged copies, the export's temporary file
//! and its cells, staged copies changed behind dropsync's back, settings out
//! of range, and the command line while a batch is in flight. Other local
//! users are played by `nobody`, through a raw socket client (the tests run
//! as root, and `nobody` cannot load the build's libduckdb).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{ACCOUNTS_HEADER, BIN, Output, Workspace, accounts_config, six_accounts};

const NOBODY: u32 = 65534;

/// A `dropsync` process started with `umask`, as a user's shell would.
fn command_with_umask(ws: &Workspace, umask: u32, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("--config")
        .arg(ws.config_path())
        .args(args)
        .current_dir(&ws.root)
        .env_remove("DROPSYNC_CONFIG")
        .env_remove("DROPSYNC_LOG");
    // SAFETY: umask(2) is async-signal-safe and touches no memory.
    unsafe {
        command.pre_exec(move || {
            libc::umask(umask as libc::mode_t);
            Ok(())
        });
    }
    command
}

fn run_with_umask(ws: &Workspace, umask: u32, args: &[&str]) -> Output {
    let out = command_with_umask(ws, umask, args).output().unwrap();
    let output = Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        args: args.iter().map(|a| a.to_string()).collect(),
    };
    assert!(!output.stderr.contains("panicked"), "{output}");
    output
}

/// A running `dropsync daemon`, stopped with SIGTERM when dropped.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(ws: &Workspace, umask: u32) -> Daemon {
        let log = ws.path("daemon.log");
        let child = command_with_umask(ws, umask, &["daemon"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let socket = ws.path("dropsync.duckdb.sock");
        wait_for(Duration::from_secs(20), "the daemon's socket", || {
            socket.exists()
        });
        Daemon { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}

#[track_caller]
fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends one raw request line to the daemon's socket as `uid`, and returns
/// what came back (or why the connection failed).
fn raw_request(socket: &Path, uid: u32, request: &str) -> String {
    const CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("connect failed:", e.strerror)
    sys.exit(0)
try:
    s.sendall(sys.argv[2].encode() + b"\n")
except OSError:
    pass  # a refusal may come, and the connection close, before the request is sent
data = b""
while not data.endswith(b"\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print(data.decode(errors="replace"))
"#;
    let out = Command::new("/usr/bin/python3")
        .args(["-c", CLIENT])
        .arg(socket)
        .arg(request)
        .uid(uid)
        .gid(uid)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A workspace another user can walk into (a test's temporary directory
/// is its owner's alone), so that only the socket's own mode decides.
fn open_workspace(config: &str) -> Workspace {
    let ws = Workspace::new(config);
    std::fs::set_permissions(&ws.root, std::fs::Permissions::from_mode(0o755)).unwrap();
    ws
}

#[test]
fn the_daemon_socket_is_its_users_alone_whatever_the_umask() {
    let ws = open_workspace(&accounts_config(""));
    let _daemon = Daemon::start(&ws, 0o000);
    let socket = ws.path("dropsync.duckdb.sock");
    assert_eq!(mode(&socket), 0o600, "socket mode");
    let answer = raw_request(&socket, NOBODY, r#"{"op":"status"}"#);
    assert_eq!(answer.trim(), "connect failed: Permission denied");
}

#[test]
fn the_daemon_refuses_a_caller_that_is_not_its_user() {
    let ws = open_workspace(&accounts_config(""));
    let daemon = Daemon::start(&ws, 0o022);
    let socket = ws.path("dropsync.duckdb.sock");
    // As if an administrator had opened the socket up (or a group shares it).
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let answer = raw_request(&socket, NOBODY, r#"{"op":"status"}"#);
    assert!(
        answer.contains(
            "refused: the daemon serves only its own user (uid 0) and root, not uid 65534"
        ),
        "{answer}"
    );
    assert!(!answer.contains("\"status\""), "{answer}");
    // Root is still served.
    let answer = raw_request(&socket, 0, r#"{"op":"status"}"#);
    assert!(answer.contains(r#""kind":"status""#), "{answer}");
    assert!(
        daemon.log().contains("API request refused"),
        "{}",
        daemon.log()
    );
}

#[test]
fn the_daemon_never_opens_a_file_a_client_names() {
    let ws = open_workspace(&accounts_config(""));
    let _daemon = Daemon::start(&ws, 0o022);
    let socket = ws.path("dropsync.duckdb.sock");
    let secret = ws.write(
        "secret_20260101.csv",
        "root:$y$j9T$not-for-anyone:19000:0:99999:7:::\n",
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let request = format!(
        r#"{{"op":"ingest","integration":"accounts","file":"{}","force":false,"dry_run":false}}"#,
        secret.display()
    );
    let answer = raw_request(&socket, 0, &request);
    assert!(answer.contains(r#""kind":"error""#), "{answer}");
    assert!(!answer.contains("not-for-anyone"), "{answer}");
    let staged: Vec<_> = std::fs::read_dir(ws.path("staging/accounts"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(staged.is_empty(), "staged: {staged:?}");

    // The command line sends the content itself, and that works.
    let file = ws.write("elsewhere/accounts_20260101.csv", six_accounts());
    ws.dropsync(&["ingest", "accounts", file.to_str().unwrap()])
        .code(0)
        .stdout_has(&["accounts  2026-01-01  accounts_20260101.csv  success  rows 6 ok 6"]);
}

#[test]
fn the_store_and_staged_copies_are_private_under_umask_022() {
    let ws = Workspace::new(&accounts_config(
        "[store]\npath = \"state/dropsync.duckdb\"\n",
    ));
    ws.drop_file("accounts_20260101.csv", six_accounts());
    run_with_umask(&ws, 0o022, &["run"]).code(0);
    assert_eq!(mode(&ws.path("state")), 0o700, "store directory");
    assert_eq!(mode(&ws.path("state/dropsync.duckdb")), 0o600, "store");
    assert_eq!(mode(&ws.path("staging")), 0o700, "staging");
    assert_eq!(
        mode(&ws.path("staging/accounts")),
        0o700,
        "staging/accounts"
    );
    let copies: Vec<PathBuf> = std::fs::read_dir(ws.path("staging/accounts"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(mode(&copies[0]), 0o600, "staged copy");
}

const SUBSCRIBERS: &str = r#"
[integrations.newsletter]
dataset = "subscribers"
source = { type = "folder", path = "drops" }
pattern = "subscribers_{date:%Y%m%d}.csv"
"#;

fn with_an_unsubscriber(first_name: &str, reason: &str) -> Workspace {
    let ws = Workspace::new(SUBSCRIBERS);
    ws.drop_file(
        "subscribers_20260101.csv",
        format!(
            "ListID,Email,Status,UnsubscribedDate,UnsubscribeReason,FirstName,LastName\n\
             NEWS,a@example.org,unsubscribed,2026-01-01,\"{reason}\",\"{first_name}\",-5\n\
             NEWS,b@example.org,subscribed,,,Bea,Smith\n"
        ),
    );
    ws.dropsync(&["run"]).code(0);
    ws
}

#[test]
fn the_export_does_not_write_through_a_planted_symlink() {
    let ws = with_an_unsubscriber("Ann", "too many");
    let victim = ws.write("victim.txt", "precious\n");
    // The old temporary name was `.NAME.PID.tmp`; exec keeps the shell's pid.
    let script = format!(
        "ln -s {} .out.csv.$$.tmp && exec {BIN} --config {} export unsubscribes -o out.csv",
        victim.display(),
        ws.config_path().display()
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .current_dir(&ws.root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let written = std::fs::symlink_metadata(ws.path("out.csv")).unwrap();
    assert!(written.file_type().is_file(), "out.csv is a plain file");
    assert!(
        std::fs::read_to_string(ws.path("out.csv"))
            .unwrap()
            .contains("a@example.org")
    );
}

#[test]
fn the_export_neutralises_cells_a_spreadsheet_would_run() {
    let ws = with_an_unsubscriber(
        "=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\")",
        "@SUM(A1)",
    );
    let out = ws.dropsync(&["export", "unsubscribes"]);
    out.code(0);
    assert_eq!(
        out.stdout,
        "ListID,Email,UnsubscribedDate,UnsubscribeReason,FirstName,LastName\n\
         NEWS,a@example.org,2026-01-01,'@SUM(A1),\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\")\",'-5\n"
    );
    let out = ws.dropsync(&["export", "unsubscribes", "--allow-formulas"]);
    out.code(0);
    assert_eq!(
        out.stdout,
        "ListID,Email,UnsubscribedDate,UnsubscribeReason,FirstName,LastName\n\
         NEWS,a@example.org,2026-01-01,@SUM(A1),\"=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\")\",-5\n"
    );
}

#[test]
fn the_export_follows_the_schema_status_rule() {
    let ws = Workspace::new(&format!("[store]\nschemas = \"schemas\"\n{SUBSCRIBERS}"));
    ws.write(
        "schemas/subscribers.json",
        r#"{
  "fields": [
    {"name": "ListID", "type": "string"},
    {"name": "Email", "type": "string"},
    {"name": "State", "type": "string"},
    {"name": "UnsubscribedDate", "type": "date"},
    {"name": "Country", "type": "string"}
  ],
  "primaryKey": ["ListID", "Email"],
  "dropsync": {
    "mode": "delta",
    "status": {"field": "State", "changes": {"in": "subscribe", "opted-out": "unsubscribe", "bounced": "unsubscribe"}}
  }
}"#,
    );
    ws.drop_file(
        "subscribers_20260101.csv",
        "ListID,Email,State,UnsubscribedDate,Country\n\
         NEWS,a@example.org,opted-out,2026-01-02,FR\n\
         NEWS,b@example.org,in,,DE\n\
         NEWS,c@example.org,bounced,2026-01-01,IT\n",
    );
    ws.dropsync(&["run"]).code(0);
    let out = ws.dropsync(&["export", "unsubscribes"]);
    out.code(0);
    assert_eq!(
        out.stdout,
        "ListID,Email,UnsubscribedDate,Country\n\
         NEWS,c@example.org,2026-01-01,IT\n\
         NEWS,a@example.org,2026-01-02,FR\n"
    );
    ws.dropsync(&["export", "unsubscribes", "--reason", "moved"])
        .code(1)
        .stderr_has(&["table `subscribers` has no `UnsubscribeReason` column to filter on"]);
}

#[test]
fn a_replay_refuses_a_staged_copy_changed_after_staging() {
    let ws = Workspace::new(&accounts_config(""));
    let drop = ws.drop_file("accounts_20260101.csv", six_accounts());
    ws.dropsync(&["run"]).code(0);
    std::fs::remove_file(drop).unwrap();
    let copy = std::fs::read_dir(ws.path("staging/accounts"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .next()
        .unwrap();
    let altered = format!("{ACCOUNTS_HEADER}A1,,Mallory,parent,pro,999,2020-01-01\n");
    std::fs::write(&copy, altered).unwrap();

    let out = ws.dropsync(&["run", "accounts", "--date", "2026-01-01", "--force"]);
    out.code(1)
        .stdout_has(&["was changed after it was staged", "it is not replayed"]);
    let db = ws.db();
    assert_eq!(db.runs().len(), 1, "{:?}", db.runs());
    assert_eq!(
        db.value("SELECT string_agg(Name, ',' ORDER BY AccountID) FROM accounts"),
        "Account 1,Account 2,Account 3,Account 4,Account 5,Account 6"
    );
}

#[test]
fn settings_out_of_range_are_refused_with_their_key_line_and_range() {
    let ws = Workspace::new(&format!(
        "[daemon]\nsettle_secs = 18446744073709551615\n\n{}",
        accounts_config("")
    ));
    // It used to start, and lose its folder watching to a panic.
    let (code, stderr) = exit_within(&ws, &["daemon"], Duration::from_secs(20));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            ", line 2: `settle_secs` = 18446744073709551615 is out of range: it takes 0 to 86400 seconds"
        ),
        "{stderr}"
    );
    assert!(!ws.path("dropsync.duckdb.sock").exists());

    let ws = Workspace::new(
        "[integrations.partner]\ndataset = \"accounts\"\npattern = \"a_{date:%Y%m%d}.csv\"\n\
         [integrations.partner.source]\ntype = \"sftp\"\nhost = \"127.0.0.1\"\nuser = \"u\"\n\
         min_age_secs = 9223372036854775808\n",
    );
    ws.dropsync(&["run"]).code(2).stderr_has(&[
        ", line 8: `min_age_secs` = 9223372036854775808 is out of range: it takes 0 to 2592000 seconds",
    ]);
}

/// Runs `dropsync ARGS` and waits at most `limit` for it to exit: the exit
/// code (`None`: it was still running, and was killed) and its stderr.
fn exit_within(ws: &Workspace, args: &[&str], limit: Duration) -> (Option<i32>, String) {
    let mut child = command_with_umask(ws, 0o022, args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (code, stderr)
}

#[test]
fn reads_answer_while_a_batch_waits_on_a_silent_server() {
    // A server that accepts connections and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let ws = Workspace::new(&format!(
        "{}\n[integrations.partner]\ndataset = \"accounts\"\npattern = \"p_{{date:%Y%m%d}}.csv\"\n\
         [integrations.partner.source]\ntype = \"ftp\"\ntls = \"none\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         user = \"u\"\npassword_file = \"ftp.pw\"\nretries = 0\ntimeout_secs = 20\n",
        accounts_config("")
    ));
    ws.write("ftp.pw", "pw\n");
    ws.drop_file("accounts_20260101.csv", six_accounts());
    let _daemon = Daemon::start(&ws, 0o022);
    ws.dropsync(&["run", "accounts"]).code(0);

    let config = ws.config_path().display().to_string();
    let mut batch = Command::new(BIN)
        .args(["--config", &config, "run", "partner"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    ws.dropsync(&["status"]).code(0).stdout_has(&["accounts"]);
    ws.dropsync(&["history"])
        .code(0)
        .stdout_has(&["accounts_20260101.csv"]);
    let took = started.elapsed();
    assert!(
        batch.try_wait().unwrap().is_none(),
        "the batch should still be waiting on the silent server"
    );
    assert!(
        took < Duration::from_secs(5),
        "status and history took {took:?}"
    );
    let _ = batch.wait();
}

#[test]
fn the_command_line_gives_up_on_a_daemon_that_does_not_answer() {
    let ws = Workspace::new(&accounts_config("[daemon]\nanswer_timeout_secs = 1\n"));
    // Something listening on the daemon's socket that never answers.
    let _stuck = std::os::unix::net::UnixListener::bind(ws.path("dropsync.duckdb.sock")).unwrap();
    let started = Instant::now();
    let (code, stderr) = exit_within(&ws, &["status"], Duration::from_secs(15));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        stderr.contains("the daemon did not answer within 1 s"),
        "{stderr}"
    );
}

//! Real servers for the remote-source tests, each started on a free port of
//! 127.0.0.1 with its own configuration in a temporary directory: OpenSSH's
//! sshd (SFTP) and vsftpd (FTP and FTPS), from Debian's packages, which
//! scripts/test installs. They log in a local account, `dropsync-test`, whose
//! password each test run sets anew. A TCP proxy that cuts a connection
//! partway stands in for a server that drops it mid-transfer.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub const USER: &str = "dropsync-test";

/// The test account's password, set once per test process.
pub fn password() -> &'static str {
    static PASSWORD: OnceLock<String> = OnceLock::new();
    PASSWORD.get_or_init(|| {
        let password = format!("pw-{}", uuid_like());
        if !Command::new("id")
            .arg(USER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            run(Command::new("useradd").args(["--create-home", "--shell", "/bin/bash", USER]));
        }
        let mut chpasswd = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .expect("chpasswd (the tests run as root, as scripts/test does)");
        writeln!(chpasswd.stdin.take().unwrap(), "{USER}:{password}").unwrap();
        assert!(chpasswd.wait().unwrap().success(), "chpasswd failed");
        password
    })
}

fn uuid_like() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", t, std::process::id())
}

#[track_caller]
fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (scripts/test installs what the tests need)")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("{what} exited ({status}) before listening: {err}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on port {port} within 10 s");
}

/// A directory the test account can read and write: the servers' file area.
fn shared_dir(dir: &Path) -> PathBuf {
    let outbox = dir.join("outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    for d in [dir, &outbox] {
        set_mode(d, 0o777);
    }
    outbox
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A server process, stopped when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
    /// Where the served files are.
    pub outbox: PathBuf,
    /// The server's own files (keys, certificates, config).
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Puts a file in the served directory, readable and deletable by the test account.
    pub fn put(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.outbox.join(name);
        std::fs::write(&path, content).unwrap();
        set_mode(&path, 0o666);
        path
    }

    /// Sets a served file's modification time to `secs` seconds ago.
    pub fn age(&self, name: &str, secs: u64) {
        let path = self.outbox.join(name);
        let when = std::time::SystemTime::now() - Duration::from_secs(secs);
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(when).unwrap();
    }

    /// Names in the served directory, sorted.
    pub fn files(&self, sub: &str) -> Vec<String> {
        let dir = self.outbox.join(sub);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// OpenSSH's sshd serving SFTP, with a fresh host key; also writes a
/// known_hosts file and a client key pair the account accepts.
pub fn sshd() -> Server {
    sshd_with_host_keys(&["ed25519"])
}

/// sshd with fresh host keys of these types (`ed25519`, `rsa`, `ecdsa`),
/// each in `host_key_<type>.pub`; known_hosts records the first.
pub fn sshd_with_host_keys(types: &[&str]) -> Server {
    let _ = password();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let outbox = shared_dir(&dir);
    std::fs::create_dir_all("/run/sshd").unwrap();
    let keygen = |path: &Path, key_type: &str| {
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", key_type, "-N", "", "-f"])
            .arg(path));
    };
    let mut host_keys = String::new();
    for key_type in types {
        let path = dir.join(format!("host_key_{key_type}"));
        keygen(&path, key_type);
        host_keys.push_str(&format!("HostKey {}\n", path.display()));
    }
    keygen(&dir.join("client_key"), "ed25519");
    std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
    set_mode(&dir.join("authorized_keys"), 0o644);
    let port = free_port();
    let host_pub = std::fs::read_to_string(dir.join(format!("host_key_{}.pub", types[0]))).unwrap();
    let mut parts = host_pub.split_whitespace();
    let (kind, key) = (parts.next().unwrap(), parts.next().unwrap());
    std::fs::write(
        dir.join("known_hosts"),
        format!("[127.0.0.1]:{port} {kind} {key}\n"),
    )
    .unwrap();
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\n{host_keys}PidFile {d}/sshd.pid\n\
         AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
         PasswordAuthentication yes\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
         PermitRootLogin no\nAllowUsers {USER}\nSubsystem sftp internal-sftp\nLogLevel ERROR\n",
        d = dir.display()
    );
    std::fs::write(dir.join("sshd_config"), config).unwrap();
    let mut child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/sbin/sshd (scripts/test installs openssh-server)");
    wait_for_port(port, &mut child, "sshd");
    Server {
        child,
        port,
        outbox,
        dir,
        _tmp: tmp,
    }
}

/// vsftpd serving FTP, or FTPS (explicit TLS, with its default TLS session
/// reuse requirement) with a certificate signed by a test CA (`ca.pem`).
pub fn vsftpd(tls: bool) -> Server {
    let _ = password();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let outbox = shared_dir(&dir);
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    set_mode(&empty, 0o755);
    if tls {
        let d = |f: &str| dir.join(f);
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=dropsync test CA",
            ])
            .arg("-keyout")
            .arg(d("ca.key"))
            .arg("-out")
            .arg(d("ca.pem")));
        run(Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .arg("-keyout")
            .arg(d("key.pem"))
            .arg("-out")
            .arg(d("server.csr")));
        std::fs::write(
            d("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(d("server.csr"))
            .arg("-CA")
            .arg(d("ca.pem"))
            .arg("-CAkey")
            .arg(d("ca.key"))
            .arg("-extfile")
            .arg(d("ext.cnf"))
            .arg("-out")
            .arg(d("cert.pem")));
    }
    let port = free_port();
    let pasv = free_port();
    let mut config = format!(
        "listen=YES\nlisten_address=127.0.0.1\nlisten_port={port}\nbackground=NO\n\
         anonymous_enable=NO\nlocal_enable=YES\nwrite_enable=YES\nlocal_umask=022\n\
         local_root={outbox}\npasv_enable=YES\npasv_address=127.0.0.1\n\
         pasv_min_port={pasv}\npasv_max_port={pasv_max}\nseccomp_sandbox=NO\n\
         secure_chroot_dir={empty}\npam_service_name=vsftpd\nuserlist_enable=NO\n\
         xferlog_enable=NO\nuse_localtime=NO\n",
        outbox = outbox.display(),
        empty = empty.display(),
        pasv_max = pasv.saturating_add(20),
    );
    if tls {
        config.push_str(&format!(
            "ssl_enable=YES\nrsa_cert_file={d}/cert.pem\nrsa_private_key_file={d}/key.pem\n\
             force_local_logins_ssl=YES\nforce_local_data_ssl=YES\n",
            d = dir.display()
        ));
    }
    std::fs::write(dir.join("vsftpd.conf"), config).unwrap();
    let mut child = Command::new("/usr/sbin/vsftpd")
        .arg(dir.join("vsftpd.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/sbin/vsftpd (scripts/test installs vsftpd)");
    wait_for_port(port, &mut child, "vsftpd");
    Server {
        child,
        port,
        outbox,
        dir,
        _tmp: tmp,
    }
}

/// pyftpdlib serving plain FTP from `outbox`, with a user of its own
/// (`USER`, `password()`): unlike vsftpd, it lists with MLSD.
pub fn pyftpdlib() -> Server {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let outbox = shared_dir(&dir);
    let port = free_port();
    let pasv = free_port();
    let mut child = Command::new("python3")
        .args(["-m", "pyftpdlib", "-i", "127.0.0.1", "-w", "-u", USER])
        .arg("-P")
        .arg(password())
        .arg("-p")
        .arg(port.to_string())
        .arg("-r")
        .arg(format!("{pasv}-{}", pasv.saturating_add(20)))
        .arg("-d")
        .arg(&outbox)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m pyftpdlib (scripts/test installs pyftpdlib)");
    wait_for_port(port, &mut child, "pyftpdlib");
    Server {
        child,
        port,
        outbox,
        dir,
        _tmp: tmp,
    }
}

/// pyftpdlib serving plain FTP like `pyftpdlib()`, but answering the
/// `refused` commands (e.g. MDTM, MLSD) with "500 not understood", as
/// servers without those features do; every command it receives is logged
/// in `dir/commands.log` (see `commands_received`).
pub fn pyftpdlib_refusing(refused: &[&str]) -> Server {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let outbox = shared_dir(&dir);
    let port = free_port();
    let pasv = free_port();
    let script = r#"
import logging, sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.log import config_logging
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

port, pasv, user, password, root, log, refused = sys.argv[1:8]
refused = set(refused.split(",")) - {""}

class Handler(FTPHandler):
    proto_cmds = {k: v for k, v in FTPHandler.proto_cmds.items() if k not in refused}

    def pre_process_command(self, line, cmd, arg):
        with open(log, "a") as f:
            f.write(cmd + "\n")
        return super().pre_process_command(line, cmd, arg)

authorizer = DummyAuthorizer()
authorizer.add_user(user, password, root, perm="elradfmwMT")
Handler.authorizer = authorizer
Handler.passive_ports = range(int(pasv), int(pasv) + 21)
# Quiet: nobody reads its standard error while it runs.
config_logging(level=logging.ERROR)
FTPServer(("127.0.0.1", int(port)), Handler).serve_forever()
"#;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(port.to_string())
        .arg(pasv.to_string())
        .arg(USER)
        .arg(password())
        .arg(&outbox)
        .arg(dir.join("commands.log"))
        .arg(refused.join(","))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with pyftpdlib (scripts/test installs pyftpdlib)");
    wait_for_port(port, &mut child, "pyftpdlib");
    Server {
        child,
        port,
        outbox,
        dir,
        _tmp: tmp,
    }
}

/// The commands a `pyftpdlib_refusing` server received so far, in order.
pub fn commands_received(server: &Server) -> Vec<String> {
    std::fs::read_to_string(server.dir.join("commands.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Forwards 127.0.0.1:port to `target`; connection number `cut` (from 0)
/// is cut once `cut_after` bytes came back from the server. Stops when dropped.
pub struct FlakyProxy {
    pub port: u16,
    pub connections: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

pub fn flaky_proxy(target: u16, cut: usize, cut_after: usize) -> FlakyProxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (count, halt) = (connections.clone(), stop.clone());
    std::thread::spawn(move || {
        for client in listener.incoming() {
            if halt.load(Ordering::SeqCst) {
                break;
            }
            let Ok(client) = client else { continue };
            let this = count.fetch_add(1, Ordering::SeqCst);
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            let limit = if this == cut { cut_after } else { usize::MAX };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || pipe(c2, s2, usize::MAX));
            std::thread::spawn(move || pipe(server, client, limit));
        }
    });
    FlakyProxy {
        port,
        connections,
        stop,
    }
}

/// Copies `from` to `to` until EOF or `limit` bytes, then closes both.
fn pipe(mut from: TcpStream, mut to: TcpStream, limit: usize) {
    let mut buf = [0u8; 16 * 1024];
    let mut sent = 0usize;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = n.min(limit - sent);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
        if sent >= limit {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

//! A throwaway PostgreSQL cluster for the benches: `initdb` into a
//! directory of the bench's, a free loopback port, trust authentication
//! (loopback only, as the bench's own superuser), stopped and removed when
//! dropped, and by a watchdog should the bench be killed.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The superuser the cluster is created with; dropsync logs in as it too.
pub const ROLE: &str = "bench";

/// A throwaway PostgreSQL cluster, stopped and removed when dropped (and
/// by a watchdog should the bench be killed).
pub struct Cluster {
    pub port: u16,
    dir: PathBuf,
    server: std::process::Child,
}

impl Cluster {
    pub fn start(root: &Path) -> Cluster {
        let bin = pg_bin_dir();
        let dir = root.join("cluster");
        std::fs::create_dir_all(&dir).unwrap();
        // The server refuses to run as root: it runs as Debian's `postgres`
        // account then.
        let account = if unsafe { libc::geteuid() } == 0 {
            let name = std::ffi::CString::new("postgres").unwrap();
            // SAFETY: getpwnam returns a pointer to a static record or null.
            let pw = unsafe { libc::getpwnam(name.as_ptr()) };
            assert!(
                !pw.is_null(),
                "no `postgres` account (scripts/test-servers installs Debian's postgresql)"
            );
            // SAFETY: checked non-null above.
            let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
            let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: chown on a directory this process created.
            assert_eq!(unsafe { libc::chown(path.as_ptr(), uid, gid) }, 0);
            Some((uid, gid))
        } else {
            None
        };
        let as_server = |program: &str| {
            let mut cmd = Command::new(bin.join(program));
            if let Some((uid, gid)) = account {
                use std::os::unix::process::CommandExt;
                cmd.uid(uid).gid(gid);
            }
            cmd
        };
        let data = dir.join("data");
        let out = as_server("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", ROLE, "--auth=trust", "-E", "UTF8", "--no-locale"])
            .arg("--no-sync")
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        // Durable commits as shipped (fsync on); WAL may grow to a few GB
        // between checkpoints, so a 1M-row load is not timed against forced
        // checkpoints, the first thing a DBA raises for bulk loads.
        let server = as_server("postgres")
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(&dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "shared_buffers=512MB", "-c", "max_wal_size=4GB"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("postgres starts");
        let _ = Command::new("sh")
            .arg("-c")
            .arg(
                "while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; kill -INT \"$2\" 2>/dev/null; sleep 3; rm -rf \"$3\"",
            )
            .args([
                "watchdog",
                &std::process::id().to_string(),
                &server.id().to_string(),
            ])
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let cluster = Cluster { port, dir, server };
        let deadline = Instant::now() + Duration::from_secs(120);
        while cluster.try_connect("postgres").is_err() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start: {}",
                std::fs::read_to_string(cluster.dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    pub fn try_connect(&self, db: &str) -> Result<postgres::Client, postgres::Error> {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user(ROLE)
            .dbname(db)
            .connect(postgres::NoTls)
    }

    pub fn connect(&self, db: &str) -> postgres::Client {
        self.try_connect(db)
            .unwrap_or_else(|e| panic!("connect to {db}: {e}"))
    }

    pub fn admin(&self, sql: &str) {
        self.connect("postgres")
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A new database holding what `template` holds.
    pub fn copy_database(&self, template: &str, name: &str) {
        self.admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        self.admin(&format!("CREATE DATABASE {name} TEMPLATE {template}"));
    }

    pub fn drop_database(&self, name: &str) {
        self.admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{db}", self.port)
    }

    pub fn server_version(&self) -> String {
        self.connect("postgres")
            .query_one("SHOW server_version", &[])
            .map(|r| r.get(0))
            .unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGINT: the server's fast shutdown.
        // SAFETY: signals the server this process started.
        unsafe { libc::kill(self.server.id() as i32, libc::SIGINT) };
        let _ = self.server.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Debian's PostgreSQL server programs (the newest major version installed).
fn pg_bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/test-servers installs Debian's postgresql)")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((major, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("a PostgreSQL server under /usr/lib/postgresql/*/bin")
        .1
}

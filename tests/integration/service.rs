//! Installing dropsync as a service: `scripts/install` into a temporary
//! prefix, then the installed binary and the shipped unit's command line run
//! as an unprivileged system user whose HOME (the builder's) it cannot read,
//! and the installed units verified by systemd-analyze, man pages included.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{BIN, six_accounts};

/// A system user made by `scripts/install --system-user`, removed again when
/// the test ends, however it ends.
pub struct SystemUser(pub String);

impl Drop for SystemUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.0).output();
    }
}

/// Runs `program args` as `user`, with only the environment `env` (and
/// PATH), the way a service or another login would.
pub fn as_user(user: &str, env: &[(&str, &str)], program: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", user, "--regid", user, "--clear-groups", "--"])
        .arg("env")
        .arg("-i")
        .arg("PATH=/usr/bin:/bin");
    for (k, v) in env {
        cmd.arg(format!("{k}={v}"));
    }
    cmd.arg(program).args(args);
    cmd
}

pub fn text(out: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The regression test for issue 8's install report: the binary used to
/// find libduckdb only in the builder's home cache, so a service user could
/// not start it (`libduckdb.so: cannot open shared object file`).
#[test]
fn installed_binary_and_unit_run_as_a_system_user_without_the_builders_home() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let prefix = root.join("prefix");
    let state = root.join("state");
    let etc = root.join("etc");
    let user = SystemUser(format!("dsit{}", std::process::id()));

    let out = Command::new(repo.join("scripts/install"))
        .arg("--prefix")
        .arg(&prefix)
        .args(["--system-user", "--user", &user.0])
        .arg("--state-dir")
        .arg(&state)
        .arg("--config-dir")
        .arg(&etc)
        .arg("--binary")
        .arg(BIN)
        .output()
        .unwrap();
    assert!(out.status.success(), "install: {}", text(&out));

    let installed = prefix.join("bin/dropsync");
    for file in [
        "bin/dropsync",
        "lib/dropsync/libduckdb.so",
        "share/man/man1/dropsync.1",
        "share/man/man1/dropsync-run.1",
        "share/man/man1/dropsync-check.1",
        "share/bash-completion/completions/dropsync",
        "share/zsh/site-functions/_dropsync",
        "share/fish/vendor_completions.d/dropsync.fish",
        "lib/systemd/system/dropsync.service",
    ] {
        assert!(prefix.join(file).is_file(), "{file} was not installed");
    }
    // The generated pages and completions come from the same definitions
    // as --help.
    let man_run = std::fs::read_to_string(prefix.join("share/man/man1/dropsync-run.1")).unwrap();
    assert!(man_run.contains("dry\\-run"), "{man_run}");
    let bash =
        std::fs::read_to_string(prefix.join("share/bash-completion/completions/dropsync")).unwrap();
    assert!(
        bash.contains("check") && bash.contains("--dry-run"),
        "{bash}"
    );

    // The user and its directories exist, and the user is not root.
    let passwd = Command::new("getent")
        .args(["passwd", &user.0])
        .output()
        .unwrap();
    assert!(passwd.status.success(), "no user {}", user.0);
    let uid: u32 = String::from_utf8_lossy(&passwd.stdout)
        .split(':')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(uid, 0);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&state).unwrap().uid(), uid);

    // The builder's home is out of the user's reach; the binary as built,
    // copied where the user can run it (as the report did, to a bin
    // directory), cannot start: its library is in that home.
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let home_mode = std::fs::metadata(&home).unwrap().permissions().mode();
    let env = [("HOME", home.as_str())];
    if home_mode & 0o005 == 0 {
        let copied = root.join("copied-dropsync");
        std::fs::copy(BIN, &copied).unwrap();
        std::fs::set_permissions(&copied, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = as_user(&user.0, &env, &copied, &["--version"])
            .output()
            .unwrap();
        assert!(
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("libduckdb.so"),
            "the uninstalled binary should not find libduckdb as {}: {}",
            user.0,
            text(&out)
        );
    }

    // The installed one does, and says which DuckDB it runs on.
    let out = as_user(&user.0, &env, &installed, &["--version"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let version = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        version.starts_with(&format!("dropsync {} (DuckDB v", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let pinned = std::fs::read_to_string(repo.join("scripts/env.sh")).unwrap();
    let pinned = pinned
        .lines()
        .find_map(|l| l.strip_prefix("DUCKDB_VERSION=\""))
        .and_then(|v| v.split('-').next())
        .unwrap();
    assert!(version.contains(&format!("DuckDB v{pinned})")), "{version}");

    // The shipped unit's command line, as the unit runs it.
    std::fs::create_dir_all(state.join("drops")).unwrap();
    let config = etc.join("dropsync.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{state}/dropsync.duckdb\"\nstaging = \"{state}/staging\"\n\n\
             [integrations.accounts]\ndataset = \"accounts\"\n\
             source = {{ type = \"folder\", path = \"{state}/drops\" }}\n\
             pattern = \"accounts_{{date:%Y%m%d}}.csv\"\n",
            state = state.display()
        ),
    )
    .unwrap();
    Command::new("chown")
        .arg("-R")
        .arg(format!("{0}:{0}", user.0))
        .arg(state.join("drops"))
        .status()
        .unwrap();
    let unit = std::fs::read_to_string(prefix.join("lib/systemd/system/dropsync.service")).unwrap();
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("the unit has no {key}"))
            .to_string()
    };
    assert_eq!(value("User="), user.0);
    let config_env = value("Environment=");
    let (config_key, config_value) = config_env.split_once('=').unwrap();
    assert_eq!(config_value, config.display().to_string());
    let exec = value("ExecStart=");
    let mut words = exec.split_whitespace();
    let program = PathBuf::from(words.next().unwrap());
    assert_eq!(program, installed);
    let args: Vec<&str> = words.collect();
    let env = [("HOME", home.as_str()), (config_key, config_value)];
    let log = root.join("daemon.log");
    let mut daemon = as_user(&user.0, &env, &program, &args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let socket = state.join("dropsync.duckdb.sock");
    wait_for("the daemon's socket", || {
        socket.exists() || daemon.try_wait().unwrap().is_some()
    });
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon stopped: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let drop = state.join("drops/accounts_20260105.csv");
    std::fs::write(&drop, six_accounts()).unwrap();
    let history = || {
        as_user(&user.0, &env, &installed, &["history"])
            .output()
            .unwrap()
    };
    // History answers while a run is in flight (showing it `running`):
    // wait for the run to have finished.
    wait_for("the daemon to sync the dropped file", || {
        let listed = String::from_utf8_lossy(&history().stdout).into_owned();
        listed.contains("accounts_20260105.csv") && !listed.contains("running")
    });
    let out = history();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("success"),
        "{}",
        text(&out)
    );
    // SIGTERM, as systemd stops it.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = daemon.wait().unwrap();
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{status}: {log}");
    assert!(
        log.lines().all(|l| l.starts_with('{')),
        "not JSON lines: {log}"
    );

    // The installed units verify, man page included (no --man=no).
    let units = tempfile::tempdir().unwrap();
    for (from, to) in [
        ("dropsync.service", "dropsync.service"),
        ("dropsync-run@.service", "dropsync-run@crm_accounts.service"),
        ("dropsync-run@.timer", "dropsync-run@crm_accounts.timer"),
    ] {
        std::fs::copy(
            prefix.join("lib/systemd/system").join(from),
            units.path().join(to),
        )
        .unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args([
            "dropsync.service",
            "dropsync-run@crm_accounts.service",
            "dropsync-run@crm_accounts.timer",
        ])
        .current_dir(units.path())
        .env("MANPATH", prefix.join("share/man"))
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        text(&out)
    );
}

//! The Debian package: `scripts/package` builds it with cargo-deb (from the
//! debug binary these tests run, stripped), and what it holds is checked
//! the way dpkg sees it, then extracted into a temporary root whose binary
//! runs as an unprivileged system user that cannot read the builder's home.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{BIN, six_accounts};
use crate::service::{SystemUser, as_user, text};

/// Makes sure cargo-deb is there (scripts/test-servers installs it), or
/// says why the package cannot be built here.
fn cargo_deb(repo: &Path) -> Result<(), String> {
    let out = Command::new(repo.join("scripts/package"))
        .arg("--install-cargo-deb")
        .output()
        .unwrap();
    match out.status.code() {
        Some(0) => Ok(()),
        // scripts/package: cargo-deb cannot be installed.
        Some(3) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        _ => panic!("scripts/package --install-cargo-deb: {}", text(&out)),
    }
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .expect("dpkg-deb (Debian's dpkg)");
    assert!(out.status.success(), "dpkg-deb {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_debian_package_holds_a_binary_that_runs_as_a_system_user() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Err(why) = cargo_deb(repo) {
        println!("SKIPPED: the Debian package cannot be built here: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = dir.path().join("debs");
    // The binary these tests run: debug, in CARGO_TARGET_DIR/debug.
    let target_dir = Path::new(BIN).parent().unwrap().parent().unwrap();
    let out = Command::new(repo.join("scripts/package"))
        .args(["--profile", "dev", "--no-build", "--fast", "--output"])
        .arg(&output)
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/package: {}", text(&out));
    let debs: Vec<PathBuf> = std::fs::read_dir(&output)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    let deb = &debs[0];
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("dropsync_{}", env!("CARGO_PKG_VERSION")))
            && name.ends_with("_amd64.deb"),
        "{name}"
    );
    // Debug information stays out (the debug binary is about a gigabyte).
    let size = std::fs::metadata(deb).unwrap().len();
    assert!(size < 150 << 20, "{name} is {} MiB", size >> 20);

    let info = dpkg_deb(&["--info"], deb);
    for needle in [
        "Package: dropsync",
        "Section: admin",
        "adduser",
        "libstdc++6",
        " postinst",
        " postrm",
        " prerm",
    ] {
        assert!(info.contains(needle), "{needle}: {info}");
    }
    let contents = dpkg_deb(&["--contents"], deb);
    let listed = |path: &str| {
        contents
            .lines()
            .any(|l| l.split_whitespace().last() == Some(path))
    };
    for path in [
        "./usr/bin/dropsync",
        "./usr/lib/dropsync/libduckdb.so",
        "./usr/share/bash-completion/completions/dropsync",
        "./usr/share/zsh/vendor-completions/_dropsync",
        "./usr/share/fish/vendor_completions.d/dropsync.fish",
        "./lib/systemd/system/dropsync.service",
        "./lib/systemd/system/dropsync-run@.service",
        "./lib/systemd/system/dropsync-run@.timer",
        "./usr/share/doc/dropsync/examples/dropsync.toml",
    ] {
        assert!(listed(path), "{path} is not in {name}:\n{contents}");
    }
    for page in [
        "dropsync",
        "dropsync-run",
        "dropsync-check",
        "dropsync-daemon",
    ] {
        assert!(
            listed(&format!("./usr/share/man/man1/{page}.1.gz"))
                || listed(&format!("./usr/share/man/man1/{page}.1")),
            "no man page {page}(1) in {name}:\n{contents}"
        );
    }

    // Unpacked as dpkg would, into a root of its own.
    let root = dir.path().join("root");
    let out = Command::new("dpkg-deb")
        .arg("--extract")
        .arg(deb)
        .arg(&root)
        .output()
        .unwrap();
    assert!(out.status.success(), "dpkg-deb --extract: {}", text(&out));
    let bash = std::fs::read_to_string(root.join("usr/share/bash-completion/completions/dropsync"))
        .unwrap();
    assert!(
        bash.contains("check") && bash.contains("--dry-run") && !bash.contains("generate"),
        "{bash}"
    );

    // The packaged binary finds the packaged libduckdb ($ORIGIN/../lib/dropsync)
    // as a user who cannot read the builder's home, with no LD_LIBRARY_PATH.
    let user = SystemUser(format!("dspk{}", std::process::id()));
    let out = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            &user.0,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "useradd: {}", text(&out));
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let env = [("HOME", home.as_str())];
    let binary = root.join("usr/bin/dropsync");
    let out = as_user(&user.0, &env, &binary, &["--version"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        version.starts_with(&format!("dropsync {} (DuckDB v", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );

    // A sync and `dropsync check` over it, as that user.
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("drops")).unwrap();
    std::fs::write(work.join("drops/accounts_20260105.csv"), six_accounts()).unwrap();
    let config = work.join("dropsync.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{work}/dropsync.duckdb\"\nstaging = \"{work}/staging\"\n\n\
             [integrations.accounts]\ndataset = \"accounts\"\n\
             source = {{ type = \"folder\", path = \"{work}/drops\" }}\n\
             pattern = \"accounts_{{date:%Y%m%d}}.csv\"\n",
            work = work.display()
        ),
    )
    .unwrap();
    let chown = Command::new("chown")
        .arg("-R")
        .arg(format!("{0}:{0}", user.0))
        .arg(&work)
        .status()
        .unwrap();
    assert!(chown.success());
    let config_env = config.display().to_string();
    let env = [
        ("HOME", home.as_str()),
        ("DROPSYNC_CONFIG", config_env.as_str()),
    ];
    let out = as_user(&user.0, &env, &binary, &["run"]).output().unwrap();
    assert!(out.status.success(), "dropsync run: {}", text(&out));
    let out = as_user(&user.0, &env, &binary, &["check"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("DROPSYNC OK"),
        "dropsync check: {}",
        text(&out)
    );

    maintainer_scripts(deb, dir.path());

    // The packaged units name the packaged binary and verify, man page
    // included; the copies checked here point at the unpacked binary, which
    // is not installed in /usr/bin.
    let units = tempfile::tempdir().unwrap();
    for (from, to) in [
        ("dropsync.service", "dropsync.service"),
        ("dropsync-run@.service", "dropsync-run@crm_accounts.service"),
        ("dropsync-run@.timer", "dropsync-run@crm_accounts.timer"),
    ] {
        let unit = std::fs::read_to_string(root.join("lib/systemd/system").join(from)).unwrap();
        if from.ends_with(".service") {
            assert!(
                unit.lines()
                    .any(|l| l.starts_with("ExecStart=/usr/bin/dropsync ")),
                "{from}: {unit}"
            );
        }
        let unit = unit.replace("/usr/bin/dropsync", &binary.display().to_string());
        std::fs::write(units.path().join(to), unit).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args([
            "dropsync.service",
            "dropsync-run@crm_accounts.service",
            "dropsync-run@crm_accounts.timer",
        ])
        .current_dir(units.path())
        .env("MANPATH", root.join("usr/share/man"))
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        text(&out)
    );
}

/// The package's postinst and postrm, run as dpkg runs them: they make the
/// `dropsync` system user and its directories, again without harm, and a
/// purge keeps the data unless asked. They act on the machine itself
/// (`dropsync`, /var/lib/dropsync, /etc/dropsync), so they run only where
/// none of those exists, and take away what they made.
fn maintainer_scripts(deb: &Path, dir: &Path) {
    let state = Path::new("/var/lib/dropsync");
    let etc = Path::new("/etc/dropsync");
    let user_exists = || {
        Command::new("getent")
            .args(["passwd", "dropsync"])
            .output()
            .unwrap()
            .status
            .success()
    };
    if user_exists() || state.exists() || etc.exists() {
        println!(
            "the maintainer scripts are not run: this machine has a dropsync user, {} or {} already",
            state.display(),
            etc.display()
        );
        return;
    }
    let control = dir.join("control");
    let out = Command::new("dpkg-deb")
        .arg("--control")
        .arg(deb)
        .arg(&control)
        .output()
        .unwrap();
    assert!(out.status.success(), "dpkg-deb --control: {}", text(&out));
    /// Whatever the test ends with, the machine is left as it was found.
    struct MadeByPostinst;
    impl Drop for MadeByPostinst {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all("/var/lib/dropsync");
            let _ = std::fs::remove_dir_all("/etc/dropsync");
            let _ = Command::new("userdel").arg("dropsync").output();
            let _ = Command::new("groupdel").arg("dropsync").output();
        }
    }
    let _made = MadeByPostinst;
    let script = |name: &str, args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(control.join(name))
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success(), "{name} {args:?}: {}", text(&out));
        out
    };
    use std::os::unix::fs::MetadataExt;
    let uid_of = |name: &str| -> u32 {
        let out = Command::new("id").args(["-u", name]).output().unwrap();
        assert!(out.status.success(), "no user {name}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    for _ in 0..2 {
        script("postinst", &["configure"], &[]);
        let uid = uid_of("dropsync");
        assert!(uid > 0 && uid < 1000, "not a system user: uid {uid}");
        let meta = std::fs::metadata(state).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (uid, 0o750));
        let meta = std::fs::metadata(etc).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o750));
        // A store in use, as the daemon leaves it.
        std::fs::write(state.join("dropsync.duckdb"), "the store").unwrap();
    }
    let out = script("postrm", &["purge"], &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("kept /var/lib/dropsync"),
        "{}",
        text(&out)
    );
    assert!(
        state.join("dropsync.duckdb").exists(),
        "a purge removed the store"
    );
    assert!(user_exists());
    script("postrm", &["purge"], &[("DROPSYNC_PURGE_DATA", "yes")]);
    assert!(!state.exists() && !etc.exists() && !user_exists());
}

//! Regression tests for remote sources, each against a real server (sshd,
//! vsftpd, pyftpdlib): host keys recorded the way older OpenSSH wrote them,
//! archiving a file whose name was archived before, FTP servers without
//! MDTM and MLSD, certificates that cannot be verified, hosts with more than
//! one address, and secrets in trace logs.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{BIN, Output, Workspace, six_accounts};
use crate::remote::{PASSWORD_ENV, ftp_source, sftp_source, with_password, workspace};
use crate::servers::{self, Server};

/// Whether `archived` (names in an archive directory) holds `name` archived
/// under dropsync's rule: `<stem>.<UTC time>-<first 12 hex of its content
/// hash><ext>`.
pub(crate) fn archived_as(archived: &[String], name: &str, content_hash: &str) -> bool {
    let (stem, ext) = name.rsplit_once('.').unwrap();
    archived.iter().any(|a| {
        a.strip_prefix(&format!("{stem}."))
            .and_then(|rest| rest.strip_suffix(&format!("-{}.{ext}", &content_hash[..12])))
            .is_some_and(|time| {
                chrono::NaiveDateTime::parse_from_str(time, "%Y%m%dT%H%M%SZ").is_ok()
            })
    })
}

/// The public key line (type and base64) of a key file's `.pub`.
fn public_key(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut parts = text.split_whitespace();
    format!("{} {}", parts.next().unwrap(), parts.next().unwrap())
}

#[test]
fn sftp_connects_when_known_hosts_holds_only_the_servers_rsa_or_ecdsa_key() {
    // The server has three host keys; libssh2 alone would negotiate ECDSA
    // or ed25519 and compare it with whatever key is recorded.
    let server = servers::sshd_with_host_keys(&["ed25519", "rsa", "ecdsa"]);
    server.put("accounts_20260101.csv", six_accounts());
    let known_hosts = server.dir.join("known_hosts");
    let entry = |key_type: &str| {
        format!(
            "[127.0.0.1]:{} {}\n",
            server.port,
            public_key(&server.dir.join(format!("host_key_{key_type}.pub")))
        )
    };
    let ws = workspace(&sftp_source(&server, ""));

    std::fs::write(&known_hosts, entry("rsa")).unwrap();
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&["accounts_20260101.csv  success  rows 6 ok 6"]);

    std::fs::write(&known_hosts, entry("ecdsa")).unwrap();
    ws.dropsync(&["run", "--date", "2026-01-01", "--force"])
        .code(0)
        .stdout_has(&["accounts_20260101.csv  success"]);

    // Hashed, as `HashKnownHosts yes` (Debian's default) writes it.
    std::fs::write(&known_hosts, entry("rsa")).unwrap();
    let hashed = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&known_hosts)
        .output()
        .unwrap();
    assert!(hashed.status.success(), "{hashed:?}");
    assert!(
        std::fs::read_to_string(&known_hosts)
            .unwrap()
            .starts_with("|1|")
    );
    ws.dropsync(&["run", "--date", "2026-01-01", "--force"])
        .code(0)
        .stdout_has(&["accounts_20260101.csv  success"]);

    // A different RSA key recorded: that one really changed.
    let other = server.dir.join("other_rsa");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::write(
        &known_hosts,
        format!(
            "[127.0.0.1]:{} {}\n",
            server.port,
            public_key(&other.with_extension("pub"))
        ),
    )
    .unwrap();
    ws.dropsync(&["run", "--date", "2026-01-01", "--force"])
        .code(1)
        .stdout_has(&[
            "the server's host key has CHANGED",
            &format!("ssh-keygen -R '[127.0.0.1]:{}'", server.port),
        ]);
}

#[test]
fn sftp_an_entry_for_port_22_does_not_make_a_server_on_another_port_look_changed() {
    let server = servers::sshd();
    server.put("accounts_20260101.csv", six_accounts());
    let known_hosts = server.dir.join("known_hosts");
    // Another machine's key, recorded for 127.0.0.1 on port 22.
    let other = server.dir.join("port22_key");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::write(
        &known_hosts,
        format!("127.0.0.1 {}\n", public_key(&other.with_extension("pub"))),
    )
    .unwrap();
    let ws = workspace(&sftp_source(&server, ""));
    let out = ws.dropsync(&["run"]);
    // What OpenSSH says too: this server is unknown, not changed.
    out.code(1)
        .stdout_has(&[
            "the server's host key is not in",
            &format!("ssh-keyscan -p {} 127.0.0.1", server.port),
        ])
        .stdout_lacks(&["CHANGED", "impersonating"]);
}

/// Puts an earlier archived copy of `name` into the server's `done/`.
fn archived_before(server: &Server, name: &str, content: &str) {
    let done = server.outbox.join("done");
    std::fs::create_dir_all(&done).unwrap();
    set_mode(&done, 0o777);
    server.put(&format!("done/{name}"), content);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A corrected file re-delivered under a name archived before: archived
/// next to the earlier copy, which stays as it was.
fn assert_archived_beside_the_earlier_copy(server: &Server, ws: &Workspace, out: &Output) {
    out.code(0)
        .stdout_has(&["accounts_20260101.csv  success  rows 6 ok 6"])
        .stdout_lacks(&["after-sync action failed"]);
    assert_eq!(server.files(""), Vec::<String>::new());
    let archived = server.files("done");
    assert_eq!(archived.len(), 2, "{archived:?}");
    assert_eq!(
        std::fs::read_to_string(server.outbox.join("done/accounts_20260101.csv")).unwrap(),
        "the earlier delivery\n",
        "the earlier archived copy is kept as it was"
    );
    let hash = ws.db().runs()[0].content_hash.clone().unwrap();
    assert!(
        archived_as(&archived, "accounts_20260101.csv", &hash),
        "{archived:?}"
    );
}

#[test]
fn sftp_archive_when_the_archive_already_has_that_name() {
    let server = servers::sshd();
    archived_before(&server, "accounts_20260101.csv", "the earlier delivery\n");
    server.put("accounts_20260101.csv", six_accounts());
    let done = server.outbox.join("done");
    let ws = workspace(&sftp_source(
        &server,
        &format!(
            "after = \"archive\"\narchive_directory = \"{}\"\n",
            done.display()
        ),
    ));
    let out = ws.dropsync(&["run"]);
    assert_archived_beside_the_earlier_copy(&server, &ws, &out);
    // And the next night is quiet: nothing left to archive, nothing failing.
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&["nothing new to sync\n"]);
}

#[test]
fn ftp_archive_when_the_archive_already_has_that_name() {
    let server = servers::vsftpd(false);
    archived_before(&server, "accounts_20260101.csv", "the earlier delivery\n");
    server.put("accounts_20260101.csv", six_accounts());
    let ws = workspace(&ftp_source(
        &server,
        false,
        "after = \"archive\"\narchive_directory = \"done\"\n",
    ));
    let out = ws.dropsync_env(&["run"], &with_password());
    assert_archived_beside_the_earlier_copy(&server, &ws, &out);
}

#[test]
fn ftp_without_mdtm_and_mlsd_uses_list_times() {
    let server = servers::pyftpdlib_refusing(&["MDTM", "MLSD"]);
    server.put("accounts_20260101.csv", six_accounts());
    server.age("accounts_20260101.csv", 600);
    // Still being uploaded: modified just now.
    let second_night = six_accounts().replace("Account 2,parent,pro,20", "Account 2,parent,pro,25");
    server.put("accounts_20260102.csv", &second_night);
    // Files of other feeds in the same directory.
    for i in 0..40 {
        server.put(&format!("invoices_{i:03}.csv"), "x\n");
    }
    let ws = Workspace::new(&format!(
        "[integrations.partner]\ndataset = \"accounts\"\npattern = \"accounts_{{date:%Y%m%d}}.csv\"\n\n\
         [integrations.partner.source]\n{}min_age_secs = 120\nretry_delay_ms = 50\ntimeout_secs = 10\n",
        ftp_source(&server, false, "")
    ));
    let out = ws.dropsync_env(&["run"], &with_password());
    out.code(0)
        .stdout_has(&["accounts_20260101.csv  success  rows 6 ok 6"])
        .stdout_lacks(&["accounts_20260102.csv"]);
    let commands = servers::commands_received(&server);
    let count = |cmd: &str| commands.iter().filter(|c| *c == cmd).count();
    assert_eq!(
        count("MDTM"),
        1,
        "MDTM asked once, for a name that fits the pattern, then never again: {commands:?}"
    );
    assert_eq!(
        count("SIZE"),
        2,
        "SIZE only for the names that fit the pattern: {commands:?}"
    );

    // Once old enough, it is taken.
    server.age("accounts_20260102.csv", 600);
    ws.dropsync_env(&["run"], &with_password())
        .code(0)
        .stdout_has(&["accounts_20260102.csv  success  rows 6 ok 6"])
        .stdout_lacks(&["accounts_20260101.csv"]);

    // The next night: nothing new, and nothing downloaded again.
    std::fs::remove_dir_all(ws.path("staging/partner")).unwrap();
    ws.dropsync_env(&["run"], &with_password())
        .code(0)
        .stdout_has(&["nothing new to sync\n"]);
    assert!(
        !ws.path("staging/partner").exists(),
        "known files are not fetched again"
    );
    let commands = servers::commands_received(&server);
    assert_eq!(
        commands.iter().filter(|c| *c == "RETR").count(),
        2,
        "each file downloaded once: {commands:?}"
    );
}

#[test]
fn ftps_a_certificate_that_fails_verification_fails_at_once_with_the_fix() {
    let server = servers::vsftpd(true);
    server.put("accounts_20260101.csv", six_accounts());
    // No ca_file: the test CA is not among the system's roots. The default
    // retry delays (1 s, 2 s, 4 s) would show in the time taken.
    let source = ftp_source(&server, true, "").replace(
        &format!("ca_file = \"{}/ca.pem\"\n", server.dir.display()),
        "",
    );
    let ws = Workspace::new(&format!(
        "[integrations.partner]\ndataset = \"accounts\"\npattern = \"accounts_{{date:%Y%m%d}}.csv\"\n\n\
         [integrations.partner.source]\n{source}min_age_secs = 0\n"
    ));
    let started = Instant::now();
    let out = ws.dropsync_env(&["run"], &with_password());
    let took = started.elapsed();
    out.code(1)
        .stdout_has(&[
            "TLS negotiation failed",
            "UnknownIssuer",
            "the server's certificate is not signed by the system's trusted roots",
            "set ca_file",
        ])
        .stdout_lacks(&["attempts"]);
    assert!(!out.stderr.contains("retry_in_ms"), "not retried: {out}");
    assert!(
        took < Duration::from_secs(3),
        "failed at once, not after retries: {took:?}"
    );
}

/// Runs the binary with `hosts` as its /etc/hosts (in a mount namespace of
/// its own), so a name can resolve to several addresses.
fn dropsync_with_hosts(ws: &Workspace, hosts: &str, args: &[&str]) -> Output {
    let hosts_file = ws.write("hosts", hosts);
    let config = ws.config_path();
    let out = Command::new("unshare")
        .args(["--mount", "sh", "-c"])
        .arg("mount --bind \"$1\" /etc/hosts && shift && exec \"$@\"")
        .arg("sh")
        .arg(&hosts_file)
        .arg(BIN)
        .arg("--config")
        .arg(&config)
        .args(args)
        .current_dir(&ws.root)
        .env_remove("DROPSYNC_LOG")
        .env(PASSWORD_ENV, servers::password())
        .output()
        .expect("unshare (util-linux) runs");
    let output = Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        args: args.iter().map(|a| a.to_string()).collect(),
    };
    assert!(!output.stderr.contains("panicked"), "{output}");
    output
}

#[test]
fn every_address_of_a_host_is_tried() {
    // "partnerhost" resolves to ::1 first, where nothing listens, then to
    // 127.0.0.1, where the servers do.
    let hosts = "::1 partnerhost\n127.0.0.1 partnerhost\n";
    let sshd = servers::sshd();
    sshd.put("accounts_20260101.csv", six_accounts());
    let known_hosts = sshd.dir.join("known_hosts");
    let recorded = std::fs::read_to_string(&known_hosts).unwrap();
    std::fs::write(
        &known_hosts,
        recorded.replace("[127.0.0.1]", "[partnerhost]"),
    )
    .unwrap();
    let ws = workspace(
        &sftp_source(&sshd, "").replace("host = \"127.0.0.1\"", "host = \"partnerhost\""),
    );
    let out = dropsync_with_hosts(&ws, hosts, &["run"]);
    out.code(0)
        .stdout_has(&["accounts_20260101.csv  success  rows 6 ok 6"]);

    let vsftpd = servers::vsftpd(false);
    vsftpd.put("accounts_20260101.csv", six_accounts());
    let ws = workspace(
        &ftp_source(&vsftpd, false, "").replace("host = \"127.0.0.1\"", "host = \"partnerhost\""),
    );
    dropsync_with_hosts(&ws, hosts, &["run"])
        .code(0)
        .stdout_has(&["accounts_20260101.csv  success  rows 6 ok 6"]);

    // Nothing listening anywhere: every address is named in the failure.
    drop(vsftpd);
    let out = dropsync_with_hosts(&ws, hosts, &["run", "--date", "2026-01-02"]);
    out.code(1)
        .stdout_has(&["cannot connect", "[::1]:", "127.0.0.1:"]);
}

#[test]
fn no_log_level_shows_a_password() {
    let password = servers::password();
    let check = |what: &str, out: &Output| {
        assert!(
            !out.stdout.contains(password) && !out.stderr.contains(password),
            "{what}: the password is in the output: {out}"
        );
    };
    for (tls, server) in [
        (false, servers::vsftpd(false)),
        (true, servers::vsftpd(true)),
    ] {
        server.put("accounts_20260101.csv", six_accounts());
        let ws = workspace(&ftp_source(&server, tls, ""));
        for filter in [
            "trace",
            "suppaftp=trace",
            "suppaftp::sync_ftp::control=trace",
        ] {
            for format in ["human", "json"] {
                let out = ws.dropsync_env(
                    &[
                        "--log-format",
                        format,
                        "run",
                        "--date",
                        "2026-01-01",
                        "--force",
                    ],
                    &[(PASSWORD_ENV, password), ("DROPSYNC_LOG", filter)],
                );
                out.code(0);
                check(&format!("FTP (tls {tls}), {filter}, {format}"), &out);
            }
        }
        // The library's log was on, but for its command trace.
        let out = ws.dropsync_env(
            &["run", "--date", "2026-01-01", "--force"],
            &[(PASSWORD_ENV, password), ("DROPSYNC_LOG", "trace")],
        );
        out.code(0).stderr_has(&["suppaftp", "Login OK"]);
    }
    // SFTP with a password (ssh2 and libssh2).
    let sshd = servers::sshd();
    sshd.put("accounts_20260101.csv", six_accounts());
    let source = sftp_source(&sshd, &format!("password_env = \"{PASSWORD_ENV}\"\n")).replace(
        &format!("private_key = \"{}/client_key\"\n", sshd.dir.display()),
        "",
    );
    let ws = workspace(&source);
    let out = ws.dropsync_env(
        &["run"],
        &[(PASSWORD_ENV, password), ("DROPSYNC_LOG", "trace")],
    );
    out.code(0);
    check("SFTP, trace", &out);
}

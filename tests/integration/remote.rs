//! Pulling drops from real SFTP (OpenSSH) and FTP/FTPS (vsftpd) servers on
//! 127.0.0.1: nightly pulls, credentials, host keys, TLS, files still being
//! written, dropped connections, after-sync actions and hostile names.

use crate::common::{ACCOUNTS_HEADER, Workspace, accounts, six_accounts, six_accounts_table};
use crate::servers::{self, Server, USER};

pub(crate) const PASSWORD_ENV: &str = "DROPSYNC_TEST_PASSWORD";

/// A workspace whose `partner` integration pulls accounts from `source`
/// (the body of its `[integrations.partner.source]` table).
pub(crate) fn workspace(source: &str) -> Workspace {
    Workspace::new(&format!(
        "[integrations.partner]\ndataset = \"accounts\"\npattern = \"accounts_{{date:%Y%m%d}}.csv\"\n\n\
         [integrations.partner.source]\n{source}\nmin_age_secs = 0\nretry_delay_ms = 50\ntimeout_secs = 10\n"
    ))
}

pub(crate) fn sftp_source(server: &Server, extra: &str) -> String {
    format!(
        "type = \"sftp\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{USER}\"\n\
         private_key = \"{d}/client_key\"\nknown_hosts = \"{d}/known_hosts\"\ndirectory = \"{}\"\n{extra}",
        server.port,
        server.outbox.display(),
        d = server.dir.display()
    )
}

pub(crate) fn ftp_source(server: &Server, tls: bool, extra: &str) -> String {
    let tls = if tls {
        format!(
            "tls = \"explicit\"\nca_file = \"{}/ca.pem\"\n",
            server.dir.display()
        )
    } else {
        "tls = \"none\"\n".to_string()
    };
    format!(
        "type = \"ftp\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{USER}\"\n\
         password_env = \"{PASSWORD_ENV}\"\n{tls}{extra}",
        server.port
    )
}

pub(crate) fn with_password() -> [(&'static str, &'static str); 1] {
    [(PASSWORD_ENV, servers::password())]
}

/// Three nights of exports on the server, pulled in one run, in date order.
fn three_nights(server: &Server) {
    server.put("accounts_20260101.csv", six_accounts());
    server.put(
        "accounts_20260102.csv",
        six_accounts().replace("Account 2,parent,pro,20", "Account 2,parent,pro,25"),
    );
    server.put(
        "accounts_20260103.csv",
        six_accounts()
            .replace("Account 2,parent,pro,20", "Account 2,parent,pro,25")
            .replace("Account 3,parent,pro,30", "Account 3,parent,pro,35"),
    );
}

fn assert_three_nights_pulled(ws: &Workspace, out: &crate::common::Output) {
    out.code(0).stdout_has(&[
        "partner  2026-01-01  accounts_20260101.csv  success  rows 6 ok 6 rejected 0 skipped 0  +6 ~0 -0\n",
        "partner  2026-01-02  accounts_20260102.csv  success  rows 6 ok 6 rejected 0 skipped 0  +0 ~1 -0\n",
        "partner  2026-01-03  accounts_20260103.csv  success  rows 6 ok 6 rejected 0 skipped 0  +0 ~1 -0\n",
    ]);
    let mut want = six_accounts_table();
    want[1][2] = "25".into();
    want[2][2] = "35".into();
    assert_eq!(accounts(&ws.db()), want);
}

#[test]
fn sftp_nightly_pull_with_a_key() {
    let server = servers::sshd();
    three_nights(&server);
    let ws = workspace(&sftp_source(&server, ""));
    let out = ws.dropsync(&["run"]);
    assert_three_nights_pulled(&ws, &out);
    // The next night: nothing new, and nothing downloaded again.
    std::fs::remove_dir_all(ws.path("staging/partner")).unwrap();
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&["nothing new to sync\n"]);
    assert!(
        !ws.path("staging/partner").exists(),
        "known files are not fetched again"
    );
    // The same bytes under a new name are the next date's export: applied,
    // changing nothing.
    std::fs::rename(
        server.outbox.join("accounts_20260103.csv"),
        server.outbox.join("accounts_20260104.csv"),
    )
    .unwrap();
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&["accounts_20260104.csv  success", "+0 ~0 -0"]);
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&["nothing new to sync\n"]);
    assert_eq!(ws.db().runs().len(), 4);
}

#[test]
fn sftp_password_login_and_a_wrong_password() {
    let server = servers::sshd();
    server.put("accounts_20260101.csv", six_accounts());
    let source = sftp_source(&server, &format!("password_env = \"{PASSWORD_ENV}\"\n")).replace(
        &format!("private_key = \"{}/client_key\"\n", server.dir.display()),
        "",
    );
    let ws = workspace(&source);
    let out = ws.dropsync_env(&["run"], &[(PASSWORD_ENV, "not the password")]);
    out.code(1).stdout_has(&[
        "partner  -  -  failed",
        &format!("sftp://{USER}@127.0.0.1:{}/", server.port),
        "password login refused",
    ]);
    assert!(
        !out.stdout.contains("not the password") && !out.stderr.contains("not the password"),
        "no secret in the output: {out}"
    );
    assert_eq!(ws.db().runs()[0].status, "failed");
    ws.dropsync_env(&["run"], &with_password())
        .code(0)
        .stdout_has(&["accounts_20260101.csv  success  rows 6 ok 6"]);
    // An unset variable is named, never guessed.
    ws.dropsync(&["run", "--date", "2026-01-01"]).code(1).stdout_has(&[
        "the SFTP password is to come from the environment variable DROPSYNC_TEST_PASSWORD, which is not set",
    ]);
}

#[test]
fn sftp_refuses_an_unknown_or_changed_host_key() {
    let server = servers::sshd();
    server.put("accounts_20260101.csv", six_accounts());
    let known_hosts = server.dir.join("known_hosts");
    let recorded = std::fs::read_to_string(&known_hosts).unwrap();

    std::fs::write(&known_hosts, "").unwrap();
    let ws = workspace(&sftp_source(&server, ""));
    ws.dropsync(&["run"]).code(1).stdout_has(&[
        "the server's host key is not in",
        &format!(
            "ssh-keyscan -p {} 127.0.0.1 >> {}",
            server.port,
            known_hosts.display()
        ),
    ]);

    // Another key recorded for this server: refused as changed.
    let other = server.dir.join("other_key");
    std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let mut parts = other_pub.split_whitespace();
    std::fs::write(
        &known_hosts,
        format!(
            "[127.0.0.1]:{} {} {}\n",
            server.port,
            parts.next().unwrap(),
            parts.next().unwrap()
        ),
    )
    .unwrap();
    ws.dropsync(&["run"])
        .code(1)
        .stdout_has(&["the server's host key has CHANGED", "ssh-keygen -R"]);
    assert!(!ws.db().table_exists("accounts"), "nothing was fetched");

    // Checking turned off: it connects, and says so loudly.
    let ws = workspace(&sftp_source(&server, "host_key_checking = false\n"));
    let out = ws.dropsync(&["run"]);
    out.code(0)
        .stderr_has(&["host key checking is OFF for this source"]);
    std::fs::write(&known_hosts, recorded).unwrap();
}

#[test]
fn ftps_nightly_pull_then_archive() {
    let server = servers::vsftpd(true);
    three_nights(&server);
    let ws = workspace(&ftp_source(
        &server,
        true,
        "after = \"archive\"\narchive_directory = \"done\"\n",
    ));
    let out = ws.dropsync_env(&["run"], &with_password());
    assert_three_nights_pulled(&ws, &out);
    assert_eq!(
        server.files(""),
        Vec::<String>::new(),
        "all moved out of the drop directory"
    );
    let archived = server.files("done");
    assert_eq!(archived.len(), 3, "{archived:?}");
    for run in ws.db().runs() {
        let (name, hash) = (run.file_name.unwrap(), run.content_hash.unwrap());
        assert!(
            crate::remote_hardening::archived_as(&archived, &name, &hash),
            "{name} archived: {archived:?}"
        );
    }
}

#[test]
fn ftp_lists_with_mlsd_where_the_server_has_it() {
    let server = servers::pyftpdlib();
    three_nights(&server);
    let ws = workspace(&ftp_source(&server, false, ""));
    let out = ws.dropsync_env(
        &["run"],
        &[
            (PASSWORD_ENV, servers::password()),
            ("DROPSYNC_LOG", "dropsync=debug"),
        ],
    );
    assert_three_nights_pulled(&ws, &out);
    out.stderr_has(&["listed with MLSD"]);
    assert!(!out.stderr.contains("no MLSD"), "{out}");

    // vsftpd has no MLSD: LIST, then MDTM and SIZE.
    let vsftpd = servers::vsftpd(false);
    vsftpd.put("accounts_20260101.csv", six_accounts());
    let ws = workspace(&ftp_source(&vsftpd, false, ""));
    ws.dropsync_env(
        &["run"],
        &[
            (PASSWORD_ENV, servers::password()),
            ("DROPSYNC_LOG", "dropsync=debug"),
        ],
    )
    .code(0)
    .stderr_has(&["no MLSD: listed with LIST, then MDTM and SIZE per file"]);
}

#[test]
fn ftps_refuses_a_certificate_it_cannot_verify() {
    let server = servers::vsftpd(true);
    server.put("accounts_20260101.csv", six_accounts());
    // No ca_file: the test CA is not among the system's roots.
    let source = ftp_source(&server, true, "").replace(
        &format!("ca_file = \"{}/ca.pem\"\n", server.dir.display()),
        "",
    );
    let ws = workspace(&source);
    ws.dropsync_env(&["run"], &with_password())
        .code(1)
        .stdout_has(&["TLS negotiation failed", "UnknownIssuer"]);
}

#[test]
fn ftp_wrong_password_then_delete_after_sync() {
    let server = servers::vsftpd(false);
    server.put("accounts_20260101.csv", six_accounts());
    let ws = workspace(&ftp_source(&server, false, "after = \"delete\"\n"));
    let out = ws.dropsync_env(&["run"], &[(PASSWORD_ENV, "wrong")]);
    // The server's own reply is in the message.
    out.code(1).stdout_has(&["login refused", "530"]);
    assert_eq!(
        server.files(""),
        ["accounts_20260101.csv"],
        "nothing deleted after a failure"
    );
    let out = ws.dropsync_env(&["run"], &with_password());
    out.code(0)
        .stdout_has(&["accounts_20260101.csv  success  rows 6 ok 6"])
        .stderr_has(&["plain FTP"]);
    assert_eq!(
        server.files(""),
        Vec::<String>::new(),
        "deleted once synced"
    );
    assert_eq!(accounts(&ws.db()), six_accounts_table());
    // The same bytes as the next date's export: applied, changing nothing,
    // and cleared away too.
    server.put("accounts_20260102.csv", six_accounts());
    ws.dropsync_env(&["run"], &with_password())
        .code(0)
        .stdout_has(&[
            "accounts_20260102.csv  success  rows 6 ok 6 rejected 0 skipped 0  +0 ~0 -0",
        ]);
    assert_eq!(
        server.files(""),
        Vec::<String>::new(),
        "the repeat is deleted"
    );
    // A file whose run failed stays where it is.
    server.put(
        "accounts_20260103.csv",
        format!("{ACCOUNTS_HEADER}A1,,Account 1,parent,pro,10,2020-01-01\n"),
    );
    ws.dropsync_env(&["run"], &with_password())
        .code(1)
        .stdout_has(&["accounts_20260103.csv  failed", "max_delete_ratio"]);
    assert_eq!(server.files(""), ["accounts_20260103.csv"]);
}

#[test]
fn a_file_still_being_written_is_left_for_the_next_run() {
    let server = servers::sshd();
    server.put("accounts_20260101.csv", six_accounts());
    server.age("accounts_20260101.csv", 600);
    server.put("accounts_20260102.csv", six_accounts());
    let ws = Workspace::new(&format!(
        "[integrations.partner]\ndataset = \"accounts\"\npattern = \"accounts_{{date:%Y%m%d}}.csv\"\n\n\
         [integrations.partner.source]\n{}min_age_secs = 120\nretry_delay_ms = 50\n",
        sftp_source(&server, "")
    ));
    // Modified just now: maybe still being written.
    let out = ws.dropsync(&["run"]);
    out.code(0)
        .stdout_has(&["accounts_20260101.csv  success"])
        .stdout_lacks(&["accounts_20260102.csv"]);

    // Growing between two listings: left alone too.
    let ws = workspace(&sftp_source(&server, "settle_secs = 1\n"));
    let path = server.outbox.join("accounts_20260102.csv");
    let writer = std::thread::spawn(move || {
        for i in 0..16 {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            std::io::Write::write_all(
                &mut f,
                format!("B{i},,Growing {i},parent,pro,1,2020-01-01\n").as_bytes(),
            )
            .unwrap();
        }
    });
    let out = ws.dropsync(&["run"]);
    writer.join().unwrap();
    out.code(0)
        .stdout_has(&["accounts_20260101.csv  success"])
        .stdout_lacks(&["accounts_20260102.csv"]);
    // Once it stopped changing, it is taken, whole.
    ws.dropsync(&["run"])
        .code(0)
        .stdout_has(&["accounts_20260102.csv  success  rows 22 ok 22"]);
}

#[test]
fn a_connection_dropped_mid_transfer_is_retried_and_never_stages_a_truncated_file() {
    let server = servers::sshd();
    let mut big = ACCOUNTS_HEADER.to_string();
    for i in 0..20_000 {
        big.push_str(&format!(
            "A{i:06},,Account {i:06} with a longer name,parent,pro,{i},2020-01-01\n"
        ));
    }
    server.put("accounts_20260101.csv", &big);
    // The first connection lists; the second, the download, is cut.
    let proxy = servers::flaky_proxy(server.port, 1, 200_000);
    let mut source = sftp_source(&server, "");
    source = source.replace(
        &format!("port = {}", server.port),
        &format!("port = {}", proxy.port),
    );
    // The host key is the server's, recorded for the proxy's port.
    let known = std::fs::read_to_string(server.dir.join("known_hosts"))
        .unwrap()
        .replace(&server.port.to_string(), &proxy.port.to_string());
    std::fs::write(server.dir.join("known_hosts_proxy"), known).unwrap();
    source = source.replace("known_hosts\"", "known_hosts_proxy\"");
    let ws = workspace(&source);
    let out = ws.dropsync(&["run"]);
    out.code(0)
        .stdout_has(&["accounts_20260101.csv  success  rows 20000 ok 20000"])
        .stderr_has(&["failed", "retry_in_ms"]);
    assert!(
        proxy.connections.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "listing, the cut download, the retry"
    );
    let staged: Vec<_> = std::fs::read_dir(ws.path("staging/partner"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(staged.len(), 1, "only the whole file is staged: {staged:?}");
    assert_eq!(std::fs::read(staged[0].path()).unwrap(), big.as_bytes());

    // A server that stays down: bounded retries, then a failed run with the reason.
    drop(proxy);
    drop(server);
    let out = ws.dropsync(&["run", "--date", "2026-01-02"]);
    out.code(1)
        .stdout_has(&["failed", "cannot connect", "(after 4 attempts)"]);
}

#[test]
fn hostile_remote_names_are_refused() {
    let server = servers::sshd();
    server.put("accounts_20260101.csv", six_accounts());
    // Names a server could send back: a path separator inside, a parent.
    server.put("..\\..\\accounts_20260102.csv", six_accounts());
    server.put("..accounts_20260103.csv", six_accounts());
    let ws = workspace(&sftp_source(&server, ""));
    let out = ws.dropsync(&["run"]);
    out.code(0)
        .stdout_has(&["accounts_20260101.csv  success"])
        .stdout_lacks(&["20260102", "20260103"])
        .stderr_has(&["remote file name refused: it holds a path separator"]);
    let staged: Vec<_> = std::fs::read_dir(ws.path("staging/partner"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(staged.len(), 1);
}

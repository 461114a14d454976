//! The pull benchmark: one 100 MB export fetched over loopback from a real
//! SFTP server (OpenSSH), FTP and FTPS server (vsftpd), by dropsync (its
//! fetch stage: download, hash, fsync, into staging) and, interleaved in the
//! same run, by the usual clients: `sftp` and `curl`.
//!
//! `scripts/bench pull` runs it (as root, like the tests: the servers log in
//! a local test account). PULL_MB and BENCH_RUNS change the size and runs.

#[path = "../tests/integration/servers.rs"]
#[allow(dead_code)]
mod servers;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NAME: &str = "accounts_20260101.csv";

fn main() {
    let mb: usize = std::env::var("PULL_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let bin = env!("CARGO_BIN_EXE_dropsync");

    // A valid accounts export of about `mb` MB.
    let mut csv = String::from("AccountID,ParentID,Name,Type,Plan,Seats,CreatedDate\n");
    let mut i = 0u64;
    while csv.len() < mb * 1_000_000 {
        csv.push_str(&format!(
            "ACC{i:08},,Account {i:08} Group,parent,pro,{},2021-01-01\n",
            i % 5000
        ));
        i += 1;
    }
    println!("file: {:.1} MB, {i} rows", csv.len() as f64 / 1e6);

    let sshd = servers::sshd();
    let ftp = servers::vsftpd(false);
    let ftps = servers::vsftpd(true);
    for server in [&sshd, &ftp, &ftps] {
        server.put(NAME, &csv);
        server.age(NAME, 3600);
    }
    let password = servers::password();
    let work = tempfile::tempdir().unwrap();

    let sources = [
        (
            "sftp",
            &sshd,
            format!(
                "type = \"sftp\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\nprivate_key = \"{d}/client_key\"\nknown_hosts = \"{d}/known_hosts\"\ndirectory = \"{}\"\n",
                sshd.port,
                servers::USER,
                sshd.outbox.display(),
                d = sshd.dir.display()
            ),
        ),
        (
            "ftp",
            &ftp,
            format!(
                "type = \"ftp\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\npassword_env = \"PULL_PASSWORD\"\ntls = \"none\"\n",
                ftp.port,
                servers::USER
            ),
        ),
        (
            "ftps",
            &ftps,
            format!(
                "type = \"ftp\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\npassword_env = \"PULL_PASSWORD\"\nca_file = \"{}/ca.pem\"\n",
                ftps.port,
                servers::USER,
                ftps.dir.display()
            ),
        ),
    ];

    println!(
        "{:<6} {:>14} {:>14} {:>8}   (median of {runs} runs, MB/s in brackets)",
        "server", "dropsync fetch", "client", "ratio"
    );
    for (kind, server, source) in &sources {
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for run in 0..runs {
            // dropsync: a fresh store each time, so the file is new to it.
            let dir = work.path().join(format!("{kind}-{run}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("dropsync.toml"),
                format!(
                    "[integrations.partner]\ndataset = \"accounts\"\npattern = \"accounts_{{date:%Y%m%d}}.csv\"\n\n[integrations.partner.source]\n{source}"
                ),
            )
            .unwrap();
            let out = Command::new(bin)
                .args(["--config", "dropsync.toml", "run"])
                .current_dir(&dir)
                .env("PULL_PASSWORD", password)
                .env("DROPSYNC_LOG", "dropsync=debug")
                .output()
                .unwrap();
            let log = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "dropsync failed: {log}");
            ours.push(Duration::from_millis(fetch_ms(&log)));
            std::fs::remove_dir_all(&dir).unwrap();

            // The usual client, to a local file.
            let target = work.path().join(format!("{kind}-{run}.csv"));
            let started = Instant::now();
            client(kind, server, password, &target);
            theirs.push(started.elapsed());
            assert_eq!(
                std::fs::metadata(&target).unwrap().len() as usize,
                csv.len()
            );
            std::fs::remove_file(&target).unwrap();
        }
        let (a, b) = (median(ours), median(theirs));
        let rate = |d: Duration| csv.len() as f64 / 1e6 / d.as_secs_f64();
        println!(
            "{kind:<6} {:>7.2} s [{:>4.0}] {:>7.2} s [{:>4.0}] {:>7.2}x",
            a.as_secs_f64(),
            rate(a),
            b.as_secs_f64(),
            rate(b),
            a.as_secs_f64() / b.as_secs_f64()
        );
    }
    println!(
        "client: sftp (OpenSSH) for SFTP, curl for FTP and FTPS; dropsync's fetch also hashes the file and syncs it to disk"
    );
}

fn fetch_ms(log: &str) -> u64 {
    log.lines()
        .find(|l| l.contains("stage=\"fetch\""))
        .and_then(|l| l.split("ms=").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no fetch timing in the log: {log}"))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn client(kind: &str, server: &servers::Server, password: &str, target: &Path) {
    let status = match kind {
        "sftp" => {
            let mut child = Command::new("sftp")
                .args(["-q", "-b", "-", "-P", &server.port.to_string()])
                .arg("-i")
                .arg(server.dir.join("client_key"))
                .arg("-o")
                .arg(format!(
                    "UserKnownHostsFile={}",
                    server.dir.join("known_hosts").display()
                ))
                .arg(format!("{}@127.0.0.1", servers::USER))
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            writeln!(
                child.stdin.take().unwrap(),
                "get {} {}",
                server.outbox.join(NAME).display(),
                target.display()
            )
            .unwrap();
            child.wait().unwrap()
        }
        _ => {
            let mut cmd = Command::new("curl");
            cmd.args(["-sS", "--fail", "-o"])
                .arg(target)
                .arg("-u")
                .arg(format!("{}:{password}", servers::USER))
                .arg(format!("ftp://127.0.0.1:{}/{NAME}", server.port));
            if kind == "ftps" {
                cmd.arg("--ssl-reqd")
                    .arg("--cacert")
                    .arg(server.dir.join("ca.pem"));
            }
            cmd.status().unwrap()
        }
    };
    assert!(status.success(), "{kind} client failed");
}

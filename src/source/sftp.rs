//! SFTP servers, through ssh2 (libssh2). The server's host key is checked
//! against a known_hosts file before any credential is sent: an unknown or
//! changed key refuses the connection, with what to do about it. Logins by
//! key (with an optional passphrase) or password.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ssh2::{CheckResult, KnownHostFileKind, Session};

use super::remote::{self, RemoteEntry};
use super::{Candidate, FilePattern, Source, SourceError, StagedFile};
use crate::config::{AfterSync, SftpConfig};

pub struct SftpSource {
    config: SftpConfig,
    pattern: FilePattern,
}

impl SftpSource {
    pub fn new(config: SftpConfig, pattern: FilePattern) -> SftpSource {
        SftpSource { config, pattern }
    }

    fn fail(&self, what: &str, e: impl std::fmt::Display, transient: bool) -> SourceError {
        remote::failure(&self.config.url(), what, e, transient)
    }

    fn known_hosts_path(&self) -> PathBuf {
        self.config.known_hosts.clone().unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".ssh").join("known_hosts")
        })
    }

    /// Connects, checks the host key, logs in and opens SFTP.
    fn connect(&self) -> Result<(Session, ssh2::Sftp), SourceError> {
        let c = &self.config;
        let timeout = Duration::from_secs(c.remote.timeout_secs.max(1));
        let addr: SocketAddr = (c.host.as_str(), c.port)
            .to_socket_addrs()
            .map_err(|e| self.fail("cannot resolve the host", e, true))?
            .next()
            .ok_or_else(|| self.fail("cannot resolve the host", "no address", true))?;
        let tcp = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| self.fail("cannot connect", e, true))?;
        let mut session = Session::new().map_err(|e| self.fail("cannot start SSH", e, false))?;
        session.set_tcp_stream(tcp);
        session.set_timeout(timeout.as_millis().min(u32::MAX as u128) as u32);
        session
            .handshake()
            .map_err(|e| self.fail("SSH handshake failed", e, true))?;
        self.check_host_key(&session)?;

        if let Some(key) = &c.private_key {
            let passphrase = remote::secret(c.passphrase_env.as_deref(), None, "key passphrase")?;
            session
                .userauth_pubkey_file(&c.user, None, key, passphrase.as_deref())
                .map_err(|e| {
                    self.fail(
                        &format!("key login with {} refused", key.display()),
                        e,
                        false,
                    )
                })?;
        } else {
            let password = remote::secret(
                c.password_env.as_deref(),
                c.password_file.as_deref(),
                "SFTP password",
            )?
            .ok_or_else(|| {
                self.fail(
                    "no credentials",
                    "set private_key, password_env or password_file",
                    false,
                )
            })?;
            session
                .userauth_password(&c.user, &password)
                .map_err(|e| self.fail("password login refused", e, false))?;
        }
        if !session.authenticated() {
            return Err(self.fail("login refused", "not authenticated", false));
        }
        let sftp = session
            .sftp()
            .map_err(|e| self.fail("cannot open SFTP", e, true))?;
        Ok((session, sftp))
    }

    fn check_host_key(&self, session: &Session) -> Result<(), SourceError> {
        let c = &self.config;
        if !c.host_key_checking {
            tracing::warn!(
                server = self.config.url(),
                "host key checking is OFF for this source: the server's identity is not verified"
            );
            return Ok(());
        }
        let (key, _) = session
            .host_key()
            .ok_or_else(|| self.fail("host key check", "the server sent no host key", false))?;
        let path = self.known_hosts_path();
        let mut known = session
            .known_hosts()
            .map_err(|e| self.fail("host key check", e, false))?;
        if path.exists() {
            known
                .read_file(&path, KnownHostFileKind::OpenSSH)
                .map_err(|e| {
                    self.fail(
                        &format!("cannot read known_hosts {}", path.display()),
                        e,
                        false,
                    )
                })?;
        }
        let scan = if c.port == 22 {
            format!("ssh-keyscan {} >> {}", c.host, path.display())
        } else {
            format!("ssh-keyscan -p {} {} >> {}", c.port, c.host, path.display())
        };
        match known.check_port(&c.host, c.port, key) {
            CheckResult::Match => Ok(()),
            CheckResult::NotFound => Err(self.fail(
                "host key check",
                format!(
                    "the server's host key is not in {}; if you trust this server, add it (check its fingerprint first): {scan}",
                    path.display()
                ),
                false,
            )),
            CheckResult::Mismatch => Err(self.fail(
                "host key check",
                format!(
                    "the server's host key has CHANGED since it was recorded in {}: someone may be impersonating it. If the server's key was replaced on purpose, remove the old entry (ssh-keygen -R '[{}]:{}' -f {}) and add the new one",
                    path.display(),
                    c.host,
                    c.port,
                    path.display()
                ),
                false,
            )),
            CheckResult::Failure => Err(self.fail("host key check", "libssh2 could not check the key", false)),
        }
    }

    fn listing(&self) -> Result<Vec<RemoteEntry>, SourceError> {
        let dir = &self.config.remote.directory;
        remote::with_retries(&self.config.remote, "listing", || {
            let (_session, sftp) = self.connect()?;
            let entries = sftp
                .readdir(Path::new(dir))
                .map_err(|e| self.fail(&format!("cannot list {dir}"), e, false))?;
            Ok(entries
                .into_iter()
                .filter(|(_, stat)| stat.is_file())
                .filter_map(|(path, stat)| {
                    let name = path.file_name()?.to_string_lossy().into_owned();
                    Some(RemoteEntry {
                        name,
                        size: stat.size.unwrap_or(0),
                        modified: stat
                            .mtime
                            .and_then(|t| chrono::DateTime::from_timestamp(t as i64, 0))
                            .map(|t| t.naive_utc()),
                    })
                })
                .collect())
        })
    }
}

impl Source for SftpSource {
    fn list(&self) -> Result<Vec<Candidate>, SourceError> {
        remote::list(&self.config.remote, &self.pattern, || self.listing())
    }

    fn fetch(&self, candidate: &Candidate, staging: &Path) -> Result<StagedFile, SourceError> {
        remote::with_retries(&self.config.remote, "download", || {
            let (_session, sftp) = self.connect()?;
            let mut file = sftp.open(&candidate.location).map_err(|e| {
                self.fail(
                    &format!("cannot open {}", candidate.location.display()),
                    e,
                    false,
                )
            })?;
            remote::download(&mut file, candidate, staging)
        })
    }

    fn finish(&self, candidate: &Candidate) -> Result<(), SourceError> {
        let options = &self.config.remote;
        if options.after == AfterSync::Leave {
            return Ok(());
        }
        remote::with_retries(options, "after-sync action", || {
            let (_session, sftp) = self.connect()?;
            let from = &candidate.location;
            match (options.after, &options.archive_directory) {
                (AfterSync::Archive, Some(dir)) => {
                    let _ = sftp.mkdir(Path::new(dir), 0o755);
                    let to = PathBuf::from(remote::remote_path(dir, &candidate.name));
                    sftp.rename(from, &to, None).map_err(|e| {
                        self.fail(
                            &format!("cannot move {} to {}", from.display(), to.display()),
                            e,
                            false,
                        )
                    })
                }
                _ => sftp
                    .unlink(from)
                    .map_err(|e| self.fail(&format!("cannot delete {}", from.display()), e, false)),
            }
        })
    }
}

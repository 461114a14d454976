//! SFTP servers, through ssh2 (libssh2). The server's host key is checked
//! against a known_hosts file before any credential is sent: an unknown or
//! changed key refuses the connection, with what to do about it. Logins by
//! key (with an optional passphrase) or password.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ssh2::{MethodType, Session};

use super::known_hosts::{self, HostKeyVerdict, KnownHostKeys};
use super::remote::{self, RemoteEntry, TimePrecision};
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
        let timeout = Duration::from_secs(c.remote.timeout_secs.get());
        let tcp = remote::connect_tcp(&c.host, c.port, timeout)
            .map_err(|e| self.fail("cannot connect", e, true))?;
        let mut session = Session::new().map_err(|e| self.fail("cannot start SSH", e, false))?;
        session.set_tcp_stream(tcp);
        session.set_timeout(timeout.as_millis().min(u32::MAX as u128) as u32);
        let known = if c.host_key_checking {
            Some(self.known_host_keys(&session)?)
        } else {
            None
        };
        session
            .handshake()
            .map_err(|e| self.fail("SSH handshake failed", e, true))?;
        self.check_host_key(&session, known.as_ref())?;

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

    /// The keys known_hosts records for this server; the handshake is told
    /// to ask for their algorithms first, as OpenSSH does, so a server with
    /// several host keys proves itself with one that was recorded.
    fn known_host_keys(&self, session: &Session) -> Result<KnownHostKeys, SourceError> {
        let c = &self.config;
        let path = self.known_hosts_path();
        let known = KnownHostKeys::read(&path, &c.host, c.port).map_err(|e| {
            self.fail(
                &format!("cannot read known_hosts {}", path.display()),
                e,
                false,
            )
        })?;
        let supported = session
            .supported_algs(MethodType::HostKey)
            .map_err(|e| self.fail("cannot start SSH", e, false))?;
        let preference = known.algorithm_preference(&supported).join(",");
        session
            .method_pref(MethodType::HostKey, &preference)
            .map_err(|e| self.fail("cannot start SSH", e, false))?;
        Ok(known)
    }

    /// Refuses the server unless known_hosts records the key it presented;
    /// `known` is `None` when checking is turned off.
    fn check_host_key(
        &self,
        session: &Session,
        known: Option<&KnownHostKeys>,
    ) -> Result<(), SourceError> {
        let c = &self.config;
        let Some(known) = known else {
            tracing::warn!(
                server = self.config.url(),
                "host key checking is OFF for this source: the server's identity is not verified"
            );
            return Ok(());
        };
        let (key, _) = session
            .host_key()
            .ok_or_else(|| self.fail("host key check", "the server sent no host key", false))?;
        let key_type = known_hosts::blob_key_type(key).unwrap_or("unknown");
        let path = self.known_hosts_path();
        let (host_entry, scan) = if c.port == 22 {
            (
                c.host.clone(),
                format!("ssh-keyscan {} >> {}", c.host, path.display()),
            )
        } else {
            (
                format!("[{}]:{}", c.host, c.port),
                format!("ssh-keyscan -p {} {} >> {}", c.port, c.host, path.display()),
            )
        };
        let refuse = |why: String| Err(self.fail("host key check", why, false));
        match known.check(key) {
            HostKeyVerdict::Known => Ok(()),
            HostKeyVerdict::Unknown { other_types } if other_types.is_empty() => refuse(format!(
                "the server's host key is not in {}; if you trust this server, add it (check its fingerprint first): {scan}",
                path.display()
            )),
            HostKeyVerdict::Unknown { other_types } => refuse(format!(
                "the server's host key ({key_type}) is not in {}, which records only {} keys for {host_entry}, and the server no longer offers those; if the server's keys were replaced on purpose, check the new key's fingerprint and add it: {scan}",
                path.display(),
                other_types.join(", "),
            )),
            HostKeyVerdict::Changed => refuse(format!(
                "the server's host key has CHANGED since it was recorded in {}: someone may be impersonating it. If the server's key was replaced on purpose, remove the old entry (ssh-keygen -R '{host_entry}' -f {}) and add the new one",
                path.display(),
                path.display()
            )),
            HostKeyVerdict::Revoked => refuse(format!(
                "the server's host key ({key_type}) is marked @revoked in {}",
                path.display()
            )),
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
                        precision: TimePrecision::Second,
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

    fn finish(&self, candidate: &Candidate, content_hash: &str) -> Result<(), SourceError> {
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
                    let archived =
                        remote::archive_name(&candidate.name, content_hash, chrono::Utc::now());
                    let to = PathBuf::from(remote::remote_path(dir, &archived));
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

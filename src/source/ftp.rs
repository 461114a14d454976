//! FTP and FTPS (explicit TLS) servers, through suppaftp with rustls:
//! passive mode, binary transfers, MLSD where the server has it, else LIST
//! with MDTM and SIZE for exact times and sizes. Certificates are verified
//! against the system's roots or a CA file; TLS sessions are resumed on data
//! connections, as vsftpd requires.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use suppaftp::list::ListParser;
use suppaftp::types::FileType;
use suppaftp::{FtpError, ImplFtpStream, RustlsConnector, RustlsFtpStream, TlsStream};

use super::remote::{self, RemoteEntry};
use super::{Candidate, FilePattern, Source, SourceError, StagedFile};
use crate::config::{AfterSync, FtpConfig, FtpTls};

pub struct FtpSource {
    config: FtpConfig,
    pattern: FilePattern,
}

impl FtpSource {
    pub fn new(config: FtpConfig, pattern: FilePattern) -> FtpSource {
        FtpSource { config, pattern }
    }

    fn fail(&self, what: &str, e: impl std::fmt::Display, transient: bool) -> SourceError {
        remote::failure(&self.config.url(), what, e, transient)
    }

    fn ftp_error(&self, what: &str, e: FtpError) -> SourceError {
        // Connection trouble is worth another try; a refusal is not.
        let transient = matches!(e, FtpError::ConnectionError(_));
        self.fail(what, e, transient)
    }

    /// Connects, secures and logs in; in the remote directory, binary mode.
    fn connect(&self) -> Result<Session, SourceError> {
        let c = &self.config;
        let timeout = Duration::from_secs(c.remote.timeout_secs.max(1));
        let addr: SocketAddr = (c.host.as_str(), c.port)
            .to_socket_addrs()
            .map_err(|e| self.fail("cannot resolve the host", e, true))?
            .next()
            .ok_or_else(|| self.fail("cannot resolve the host", "no address", true))?;
        let password = remote::secret(
            c.password_env.as_deref(),
            c.password_file.as_deref(),
            "FTP password",
        )?
        .unwrap_or_default();
        // Every socket, control and data, times out rather than hangs.
        let socket = move |addr: SocketAddr| -> std::io::Result<TcpStream> {
            let stream = TcpStream::connect_timeout(&addr, timeout)?;
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            Ok(stream)
        };
        let control = socket(addr).map_err(|e| self.fail("cannot connect", e, true))?;
        let data = move |addr| socket(addr).map_err(FtpError::ConnectionError);
        let mut session = match c.tls {
            FtpTls::None => {
                tracing::warn!(
                    server = self.config.url(),
                    "plain FTP: the password and the files cross the network unencrypted"
                );
                let stream = suppaftp::FtpStream::connect_with_stream(control)
                    .map_err(|e| self.ftp_error("cannot connect", e))?
                    .passive_stream_builder(data);
                Session::Plain(stream)
            }
            FtpTls::Explicit => {
                let stream = RustlsFtpStream::connect_with_stream(control)
                    .map_err(|e| self.ftp_error("cannot connect", e))?
                    .passive_stream_builder(data);
                let tls = self.tls_config()?;
                let stream = stream
                    .into_secure(RustlsConnector::from(tls), &c.host)
                    .map_err(|e| self.ftp_error("TLS negotiation failed", e))?;
                Session::Tls(stream)
            }
        };
        session
            .with(|s| s.login(c.user.as_str(), password.as_str()))
            .map_err(|e| match e {
                FtpError::UnexpectedResponse(_) => self.fail("login refused", e, false),
                e => self.ftp_error("login failed", e),
            })?;
        session
            .with(|s| s.transfer_type(FileType::Binary))
            .map_err(|e| self.ftp_error("cannot switch to binary mode", e))?;
        Ok(session)
    }

    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, SourceError> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.config.ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    self.fail(&format!("cannot read ca_file {}", path.display()), e, false)
                })?;
                for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| {
                        self.fail(&format!("bad certificate in {}", path.display()), e, false)
                    })?;
                    roots.add(cert).map_err(|e| {
                        self.fail(&format!("bad certificate in {}", path.display()), e, false)
                    })?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                for cert in native.certs {
                    let _ = roots.add(cert);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| self.fail("TLS setup", e, false))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    fn listing(&self) -> Result<Vec<RemoteEntry>, SourceError> {
        remote::with_retries(&self.config.remote, "listing", || {
            let mut session = self.connect()?;
            let dir = &self.config.remote.directory;
            let entries = session.with(|s| s.list_entries(dir));
            let _ = session.with(|s| s.quit());
            entries.map_err(|e| self.ftp_error(&format!("cannot list {dir}"), e))
        })
    }
}

/// MLSD where the server has it; else LIST, with MDTM and SIZE per file
/// (LIST often gives times to the minute only).
fn list_directory<T: TlsStream + Send>(
    s: &mut ImplFtpStream<T>,
    dir: &str,
) -> Result<Vec<RemoteEntry>, FtpError> {
    let path = (dir != ".").then_some(dir);
    if let Ok(lines) = s.mlsd(path) {
        tracing::debug!(directory = dir, "listed with MLSD");
        return Ok(lines
            .iter()
            .filter_map(|line| ListParser::parse_mlsd(line).ok())
            .filter(|f| f.is_file())
            .map(|f| RemoteEntry {
                name: f.name().to_string(),
                size: f.size() as u64,
                modified: Some(chrono::DateTime::<chrono::Utc>::from(f.modified()).naive_utc()),
            })
            .collect());
    }
    let lines = s.list(path)?;
    tracing::debug!(
        directory = dir,
        "no MLSD: listed with LIST, then MDTM and SIZE per file"
    );
    let mut out = Vec::new();
    for line in &lines {
        let Ok(file) = ListParser::parse_posix(line).or_else(|_| ListParser::parse_dos(line))
        else {
            continue;
        };
        if !file.is_file() || remote::unsafe_name(file.name()).is_some() {
            // Unsafe names are reported by the caller; never sent back to the server.
            if file.is_file() {
                out.push(RemoteEntry {
                    name: file.name().to_string(),
                    size: file.size() as u64,
                    modified: None,
                });
            }
            continue;
        }
        let full = remote::remote_path(dir, file.name());
        let modified = s.mdtm(&full).ok();
        let size = s
            .size(&full)
            .map(|n| n as u64)
            .unwrap_or(file.size() as u64);
        out.push(RemoteEntry {
            name: file.name().to_string(),
            size,
            modified,
        });
    }
    Ok(out)
}

/// A logged-in connection, plain or secured.
enum Session {
    Plain(suppaftp::FtpStream),
    Tls(RustlsFtpStream),
}

impl Session {
    fn with<R>(&mut self, plain_or_tls: impl FnOnce(&mut dyn FtpOps) -> R) -> R {
        match self {
            Session::Plain(s) => plain_or_tls(s),
            Session::Tls(s) => plain_or_tls(s),
        }
    }
}

/// The operations dropsync needs, over either kind of connection.
trait FtpOps {
    fn login(&mut self, user: &str, password: &str) -> Result<(), FtpError>;
    fn transfer_type(&mut self, t: FileType) -> Result<(), FtpError>;
    fn quit(&mut self) -> Result<(), FtpError>;
    fn list_entries(&mut self, dir: &str) -> Result<Vec<RemoteEntry>, FtpError>;
    fn download(
        &mut self,
        path: &str,
        into: &mut dyn FnMut(&mut dyn std::io::Read) -> Result<StagedFile, SourceError>,
    ) -> Result<Result<StagedFile, SourceError>, FtpError>;
    fn rm(&mut self, path: &str) -> Result<(), FtpError>;
    fn rename(&mut self, from: &str, to: &str) -> Result<(), FtpError>;
    fn mkdir(&mut self, path: &str) -> Result<(), FtpError>;
}

impl<T: TlsStream + Send + 'static> FtpOps for ImplFtpStream<T> {
    fn login(&mut self, user: &str, password: &str) -> Result<(), FtpError> {
        ImplFtpStream::login(self, user, password)
    }
    fn transfer_type(&mut self, t: FileType) -> Result<(), FtpError> {
        ImplFtpStream::transfer_type(self, t)
    }
    fn quit(&mut self) -> Result<(), FtpError> {
        ImplFtpStream::quit(self)
    }
    fn list_entries(&mut self, dir: &str) -> Result<Vec<RemoteEntry>, FtpError> {
        list_directory(self, dir)
    }
    fn download(
        &mut self,
        path: &str,
        into: &mut dyn FnMut(&mut dyn std::io::Read) -> Result<StagedFile, SourceError>,
    ) -> Result<Result<StagedFile, SourceError>, FtpError> {
        let mut stream = self.retr_as_stream(path)?;
        let staged = into(&mut stream);
        match &staged {
            Ok(_) => stream.finish()?,
            Err(_) => drop(stream),
        }
        Ok(staged)
    }
    fn rm(&mut self, path: &str) -> Result<(), FtpError> {
        ImplFtpStream::rm(self, path)
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<(), FtpError> {
        ImplFtpStream::rename(self, from, to)
    }
    fn mkdir(&mut self, path: &str) -> Result<(), FtpError> {
        ImplFtpStream::mkdir(self, path)
    }
}

impl Source for FtpSource {
    fn list(&self) -> Result<Vec<Candidate>, SourceError> {
        remote::list(&self.config.remote, &self.pattern, || self.listing())
    }

    fn fetch(&self, candidate: &Candidate, staging: &Path) -> Result<StagedFile, SourceError> {
        remote::with_retries(&self.config.remote, "download", || {
            let mut session = self.connect()?;
            let path = candidate.location.to_string_lossy().into_owned();
            let result = session.with(|s| {
                s.download(&path, &mut |reader| {
                    remote::download(reader, candidate, staging)
                })
            });
            let _ = session.with(|s| s.quit());
            match result {
                Ok(staged) => staged,
                Err(e) => Err(self.ftp_error(&format!("cannot download {path}"), e)),
            }
        })
    }

    fn finish(&self, candidate: &Candidate) -> Result<(), SourceError> {
        let options = &self.config.remote;
        if options.after == AfterSync::Leave {
            return Ok(());
        }
        remote::with_retries(options, "after-sync action", || {
            let mut session = self.connect()?;
            let path = candidate.location.to_string_lossy().into_owned();
            let done = match (options.after, &options.archive_directory) {
                (AfterSync::Archive, Some(dir)) => {
                    let _ = session.with(|s| s.mkdir(dir));
                    let to = remote::remote_path(dir, &candidate.name);
                    session
                        .with(|s| s.rename(&path, &to))
                        .map_err(|e| self.ftp_error(&format!("cannot move {path} to {to}"), e))
                }
                _ => session
                    .with(|s| s.rm(&path))
                    .map_err(|e| self.ftp_error(&format!("cannot delete {path}"), e)),
            };
            let _ = session.with(|s| s.quit());
            done
        })
    }
}

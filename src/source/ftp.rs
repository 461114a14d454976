//! FTP and FTPS (explicit TLS) servers, through suppaftp with rustls:
//! passive mode, binary transfers, MLSD where the server has it, else LIST
//! with MDTM and SIZE for exact times and sizes. Certificates are verified
//! against the system's roots or a CA file; TLS sessions are resumed on data
//! connections, as vsftpd requires.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use suppaftp::Status;
use suppaftp::list::ListParser;
use suppaftp::types::FileType;
use suppaftp::{FtpError, ImplFtpStream, RustlsConnector, RustlsFtpStream, TlsStream};

use super::remote::{self, RemoteEntry, TimePrecision};
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
        if let Some(tls) = tls_error(&e) {
            // The same certificate will fail the same way on every retry.
            return self.fail(what, format!("{e}; {}", self.tls_hint(tls)), false);
        }
        // Connection trouble is worth another try; a refusal is not.
        let transient = matches!(e, FtpError::ConnectionError(_));
        self.fail(what, e, transient)
    }

    /// What to do about a TLS failure.
    fn tls_hint(&self, e: &rustls::Error) -> String {
        use rustls::{CertificateError, Error};
        let c = &self.config;
        let trust = match &c.ca_file {
            Some(path) => format!("the CA in ca_file {}", path.display()),
            None => "the system's trusted roots".to_string(),
        };
        match e {
            Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
                "the server's certificate is not signed by {trust}: if the server uses a private CA, set ca_file to that CA's PEM file"
            ),
            Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => format!(
                "the server's certificate is not issued for {}: set host to a name the certificate holds",
                c.host
            ),
            Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            ) => "the server's certificate has expired: its operator must renew it".to_string(),
            Error::InvalidCertificate(_) => format!(
                "the server's certificate cannot be verified against {trust}: if the server uses a private CA, set ca_file to that CA's PEM file (a self-signed server certificate cannot be trusted: the server needs one signed by a CA)"
            ),
            _ => "the server's TLS setup is not one dropsync accepts (TLS 1.2 or later, with a verifiable certificate)".to_string(),
        }
    }

    /// Connects, secures and logs in; in the remote directory, binary mode.
    fn connect(&self) -> Result<Session, SourceError> {
        let c = &self.config;
        let timeout = Duration::from_secs(c.remote.timeout_secs.get());
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
        let control = remote::connect_tcp(&c.host, c.port, timeout)
            .and_then(|stream| {
                stream
                    .set_read_timeout(Some(timeout))
                    .and_then(|()| stream.set_write_timeout(Some(timeout)))
                    .map_err(|e| e.to_string())?;
                Ok(stream)
            })
            .map_err(|e| self.fail("cannot connect", e, true))?;
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
            let wanted = |name: &str| remote::wanted(name, &self.pattern);
            let entries = session.with(|s| s.list_entries(dir, &wanted));
            let _ = session.with(|s| s.quit());
            entries.map_err(|e| self.ftp_error(&format!("cannot list {dir}"), e))
        })
    }
}

/// Whether a log line may be written at all, whatever `DROPSYNC_LOG` asks
/// for: suppaftp traces every command it sends on the control connection,
/// `PASS <password>` among them, so its trace level never gets through.
pub fn log_line_allowed(meta: &tracing::Metadata<'_>) -> bool {
    let suppaftp = meta.target() == "suppaftp" || meta.target().starts_with("suppaftp::");
    !(suppaftp && *meta.level() == tracing::Level::TRACE)
}

/// The TLS failure behind an FTP error, if that is what it is: rustls's
/// error travels inside the I/O error of the connection it broke.
fn tls_error(e: &FtpError) -> Option<&rustls::Error> {
    match e {
        FtpError::ConnectionError(io) => io.get_ref()?.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

/// MLSD where the server has it; else LIST, with MDTM and SIZE for the
/// names `wanted` accepts (LIST often gives times to the minute only). A
/// server that refuses MDTM or SIZE outright is not asked again: the LIST
/// line's time (to the minute) and size stand, which still tell a file seen
/// before from a new one and a young file from an old one.
fn list_directory<T: TlsStream + Send>(
    s: &mut ImplFtpStream<T>,
    dir: &str,
    wanted: &dyn Fn(&str) -> bool,
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
                modified: Some(utc(f.modified())),
                precision: TimePrecision::Second,
            })
            .collect());
    }
    let lines = s.list(path)?;
    let (mut mdtm, mut size) = (true, true);
    let mut out = Vec::new();
    for line in &lines {
        let Ok(file) = ListParser::parse_posix(line).or_else(|_| ListParser::parse_dos(line))
        else {
            continue;
        };
        if !file.is_file() {
            continue;
        }
        let mut entry = RemoteEntry {
            name: file.name().to_string(),
            size: file.size() as u64,
            modified: Some(utc(file.modified())),
            precision: TimePrecision::Minute,
        };
        // Unsafe names are reported by the caller, and never sent back to the server.
        if !wanted(&entry.name) {
            out.push(entry);
            continue;
        }
        let full = remote::remote_path(dir, &entry.name);
        if mdtm {
            match s.mdtm(&full) {
                Ok(time) => {
                    entry.modified = Some(time);
                    entry.precision = TimePrecision::Second;
                }
                Err(e) if refused_outright(&e) => {
                    tracing::debug!(
                        directory = dir,
                        "the server has no MDTM: LIST times, to the minute"
                    );
                    mdtm = false;
                }
                Err(_) => {}
            }
        }
        if size {
            match s.size(&full) {
                Ok(n) => entry.size = n as u64,
                Err(e) if refused_outright(&e) => size = false,
                Err(_) => {}
            }
        }
        out.push(entry);
    }
    tracing::debug!(
        directory = dir,
        "no MLSD: listed with LIST{}",
        match (mdtm, size) {
            (true, true) => ", then MDTM and SIZE per file",
            (true, false) => ", then MDTM per file",
            (false, true) => ", then SIZE per file",
            (false, false) => " alone",
        }
    );
    Ok(out)
}

/// Whether the server does not know the command at all (as opposed to a
/// refusal for this one file).
fn refused_outright(e: &FtpError) -> bool {
    matches!(
        e,
        FtpError::UnexpectedResponse(r)
            if matches!(r.status, Status::BadCommand | Status::NotImplemented | Status::NotImplementedParameter)
    )
}

fn utc(time: std::time::SystemTime) -> chrono::NaiveDateTime {
    chrono::DateTime::<chrono::Utc>::from(time).naive_utc()
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
    fn list_entries(
        &mut self,
        dir: &str,
        wanted: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<RemoteEntry>, FtpError>;
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
    fn list_entries(
        &mut self,
        dir: &str,
        wanted: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<RemoteEntry>, FtpError> {
        list_directory(self, dir, wanted)
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

    fn finish(&self, candidate: &Candidate, content_hash: &str) -> Result<(), SourceError> {
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
                    let archived =
                        remote::archive_name(&candidate.name, content_hash, chrono::Utc::now());
                    let to = remote::remote_path(dir, &archived);
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

//! Where a PostgreSQL store is and how to reach it: `[store] url`, its
//! password (from the environment or a file, never the config text) and
//! TLS. Parsed once, when the config is read, into a `PgConnect`; the
//! password is read only when connecting, and no text made here (a display
//! form, an error) ever holds it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;

/// `sslmode`, as libpq means it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, else plain; the certificate is not
    /// verified (libpq's default).
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is not verified.
    Require,
    /// TLS or no connection; the server's certificate must chain to
    /// `sslrootcert` (else the system's roots) and name the host.
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Result<SslMode, String> {
        match text {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(format!(
                "sslmode `{}`: use disable, prefer, require or verify-full",
                crate::config::echo(other)
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where the password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// None: the server trusts the user (peer, trust) or wants none.
    None,
    /// The whole value of this environment variable.
    Env(String),
    /// The first line of this file.
    File(PathBuf),
}

/// A PostgreSQL store's address, checked: `postgres://user@host:port/db`,
/// with the password's source and the TLS settings beside it.
#[derive(Debug, Clone)]
pub struct PgConnect {
    /// Host, port, user and database; never a password.
    address: postgres::Config,
    pub password: PasswordSource,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
}

/// What `[store]` says about a PostgreSQL store, before it is checked.
pub struct PgSettings<'a> {
    pub url: &'a str,
    pub password_env: Option<&'a str>,
    pub password_file: Option<&'a Path>,
    pub sslmode: Option<&'a str>,
    pub sslrootcert: Option<&'a Path>,
}

/// Why a PostgreSQL store could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum PgConnectError {
    #[error("cannot reach the PostgreSQL store {url}: the password: {message}")]
    Password { url: String, message: String },
    #[error("cannot reach the PostgreSQL store {url}: sslrootcert {path}: {message}")]
    RootCert {
        url: String,
        path: PathBuf,
        message: String,
    },
    #[error("cannot reach the PostgreSQL store {url}: {message}")]
    Connect { url: String, message: String },
}

impl PgConnect {
    /// Checks `[store] url` and its companions.
    pub fn parse(settings: &PgSettings<'_>) -> Result<PgConnect, String> {
        let url = settings.url;
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(format!(
                "url `{}`: a PostgreSQL store's url starts with postgres:// (postgres://user@host:port/database)",
                crate::config::echo(&mask_password(url))
            ));
        }
        if url.contains('?') {
            return Err(format!(
                "url `{}`: give options as keys of [store] (sslmode, sslrootcert, password_env, password_file), not in the url",
                crate::config::echo(&mask_password(url))
            ));
        }
        let address: postgres::Config = url
            .parse()
            .map_err(|e| format!("url `{}`: {e}", crate::config::echo(&mask_password(url))))?;
        if address.get_password().is_some() {
            return Err(format!(
                "url `{}` holds a password: keep it out of the config, in password_env or password_file",
                crate::config::echo(&mask_password(url))
            ));
        }
        if address.get_user().is_none() {
            return Err(format!(
                "url `{}` names no user (postgres://user@host:port/database)",
                crate::config::echo(url)
            ));
        }
        if address.get_dbname().is_none() {
            return Err(format!(
                "url `{}` names no database (postgres://user@host:port/database)",
                crate::config::echo(url)
            ));
        }
        let password = match (settings.password_env, settings.password_file) {
            (Some(_), Some(_)) => {
                return Err("give password_env or password_file, not both".into());
            }
            (Some(var), None) => PasswordSource::Env(var.to_string()),
            (None, Some(file)) => PasswordSource::File(file.to_path_buf()),
            (None, None) => PasswordSource::None,
        };
        let sslmode = settings
            .sslmode
            .map(SslMode::parse)
            .transpose()?
            .unwrap_or_default();
        if settings.sslrootcert.is_some() && sslmode != SslMode::VerifyFull {
            return Err(format!(
                "sslrootcert is only used with sslmode = \"verify-full\" (sslmode is {})",
                sslmode.as_str()
            ));
        }
        Ok(PgConnect {
            address,
            password,
            sslmode,
            sslrootcert: settings.sslrootcert.map(Path::to_path_buf),
        })
    }

    /// The store as a user sees it: `postgres://user@host:port/db` (it
    /// never holds a password).
    pub fn display(&self) -> String {
        let host = match self.address.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) if h.contains(':') => format!("[{h}]"),
            Some(postgres::config::Host::Tcp(h)) => h.clone(),
            Some(postgres::config::Host::Unix(dir)) => dir.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.address.get_ports().first().copied().unwrap_or(5432);
        format!(
            "postgres://{}@{host}:{port}/{}",
            self.address.get_user().unwrap_or_default(),
            self.address.get_dbname().unwrap_or_default()
        )
    }

    /// The paths `[store]` names, so the config can anchor relative ones.
    pub fn paths_mut(&mut self) -> impl Iterator<Item = &mut PathBuf> {
        let file = match &mut self.password {
            PasswordSource::File(path) => Some(path),
            _ => None,
        };
        file.into_iter().chain(self.sslrootcert.as_mut())
    }

    /// Opens a session, reading the password now.
    pub fn connect(&self) -> Result<postgres::Client, PgConnectError> {
        let url = self.display();
        let mut config = self.address.clone();
        // Workers of a shared store know each other by this name (`status`
        // shows which one syncs what).
        config.application_name(&super::workers::application_name());
        config.connect_timeout(Duration::from_secs(10));
        // A worker holds an integration with a lock on its session: if its
        // machine vanishes, the server must end that session (rolling back
        // its batch, dropping the lock) within a bound, not after the
        // kernel's two hours. Asked of the server for this session: probes
        // after 10 s of silence, 5 s apart, 3 unanswered end it; data left
        // unacknowledged for 30 s ends it too. The same on this side, so a
        // worker notices a vanished server as soon.
        // Every session of the store keeps times in UTC, whatever the
        // server's zone, and keeps the server's notices to itself (dropping
        // a temporary table that is not there is no news).
        config.options(
            "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3 -c tcp_user_timeout=30000 -c TimeZone=UTC -c client_min_messages=warning",
        );
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        config.keepalives_interval(Duration::from_secs(5));
        config.keepalives_retries(3);
        let password = match &self.password {
            PasswordSource::None => None,
            PasswordSource::Env(var) => Some(crate::secret::read(Some(var), None)),
            PasswordSource::File(path) => Some(crate::secret::read(None, Some(path))),
        };
        if let Some(read) = password {
            let secret = read.map_err(|e| PgConnectError::Password {
                url: url.clone(),
                message: match e {
                    crate::secret::SecretError::Unset { var } => {
                        format!("password_env {var} is not set")
                    }
                    crate::secret::SecretError::Unreadable { path, source } => {
                        format!("cannot read password_file {}: {source}", path.display())
                    }
                },
            })?;
            config.password(secret.unwrap_or_default());
        }
        config.ssl_mode(match self.sslmode {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyFull => postgres::config::SslMode::Require,
        });
        let connected = if self.sslmode == SslMode::Disable {
            config.connect(postgres::NoTls)
        } else {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(self.tls_config()?);
            config.connect(tls)
        };
        connected.map_err(|e| PgConnectError::Connect {
            url: url.clone(),
            message: describe(&e),
        })
    }

    fn tls_config(&self) -> Result<rustls::ClientConfig, PgConnectError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| PgConnectError::Connect {
                url: self.display(),
                message: format!("TLS setup: {e}"),
            })?;
        if self.sslmode != SslMode::VerifyFull {
            // libpq's prefer and require encrypt without checking who
            // answers; verify-full is the mode that does.
            return Ok(builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
                .with_no_client_auth());
        }
        let mut roots = rustls::RootCertStore::empty();
        match &self.sslrootcert {
            Some(path) => {
                let fail = |message: String| PgConnectError::RootCert {
                    url: self.display(),
                    path: path.clone(),
                    message,
                };
                let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
                for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| fail(format!("bad certificate: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| fail(format!("bad certificate: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(fail("holds no PEM certificate".into()));
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        Ok(builder.with_root_certificates(roots).with_no_client_auth())
    }
}

/// Brings a PostgreSQL store's tables up to date with `migrations`, the
/// same list the DuckDB store runs (its SQL is common to both), in one
/// transaction. An advisory lock held for the transaction makes several
/// processes opening a new store at once take turns; the second finds the
/// work done.
pub(super) fn migrate(client: &mut postgres::Client, migrations: &[&str]) -> Result<(), String> {
    /// Any fixed number: the lock is the store's own.
    const MIGRATION_LOCK: i64 = 0x6472_6f70_7379_6e63;
    let mut tx = client.transaction().map_err(|e| describe(&e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(|e| format!("waiting for another process's migration: {}", describe(&e)))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS dropsync_meta (version INTEGER NOT NULL)")
        .map_err(|e| format!("creating the metadata table: {}", describe(&e)))?;
    let version: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM dropsync_meta", &[])
        .and_then(|row| row.try_get(0))
        .map_err(|e| format!("reading the schema version: {}", describe(&e)))?;
    let done = usize::try_from(version).unwrap_or(0);
    if done >= migrations.len() {
        return Ok(());
    }
    for (i, sql) in migrations.iter().enumerate().skip(done) {
        tx.batch_execute(sql)
            .map_err(|e| format!("migration {}: {}", i + 1, describe(&e)))?;
    }
    let latest = i32::try_from(migrations.len()).unwrap_or(i32::MAX);
    tx.execute("DELETE FROM dropsync_meta", &[])
        .and_then(|_| tx.execute("INSERT INTO dropsync_meta VALUES ($1)", &[&latest]))
        .map_err(|e| format!("recording the schema version: {}", describe(&e)))?;
    tx.commit().map_err(|e| describe(&e))
}

/// The server's own words for why a session failed, without the client's
/// wrapping ("db error: ..."); never anything of the password.
pub(super) fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
}

/// `url` with any password replaced by `***`, for echoing a URL a user
/// wrote.
pub fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Accepts any certificate (TLS without verification: libpq's `prefer`
/// and `require`), still checking that the handshake is signed by it.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> PgSettings<'_> {
        PgSettings {
            url,
            password_env: None,
            password_file: None,
            sslmode: None,
            sslrootcert: None,
        }
    }

    #[test]
    fn a_url_is_shown_without_its_password() {
        assert_eq!(
            mask_password("postgres://sync:s3cret@db.example:5432/dropsync"),
            "postgres://sync:***@db.example:5432/dropsync"
        );
        assert_eq!(
            mask_password("postgres://sync@db.example/dropsync"),
            "postgres://sync@db.example/dropsync"
        );
        let refused =
            PgConnect::parse(&settings("postgres://sync:s3cret@db.example/dropsync")).unwrap_err();
        assert!(refused.contains("password_env"), "{refused}");
        assert!(!refused.contains("s3cret"), "{refused}");
    }

    #[test]
    fn a_url_parses_into_its_parts() {
        let pg = PgConnect::parse(&settings("postgres://sync@db.example:6543/dropsync")).unwrap();
        assert_eq!(pg.display(), "postgres://sync@db.example:6543/dropsync");
        assert_eq!(pg.sslmode, SslMode::Prefer);
        let pg = PgConnect::parse(&settings("postgresql://sync@db.example/dropsync")).unwrap();
        assert_eq!(pg.display(), "postgres://sync@db.example:5432/dropsync");
    }

    #[test]
    fn bad_store_settings_say_what_to_write() {
        for (url, needle) in [
            ("mysql://a@b/c", "starts with postgres://"),
            ("postgres://db.example/dropsync", "names no user"),
            ("postgres://sync@db.example", "names no database"),
            (
                "postgres://sync@db.example/d?sslmode=require",
                "keys of [store]",
            ),
        ] {
            let e = PgConnect::parse(&settings(url)).unwrap_err();
            assert!(e.contains(needle), "{url}: {e}");
        }
        let mut s = settings("postgres://sync@db.example/d");
        s.sslmode = Some("verify-ca");
        assert!(PgConnect::parse(&s).unwrap_err().contains("verify-full"));
        s.sslmode = Some("require");
        s.sslrootcert = Some(Path::new("ca.pem"));
        assert!(PgConnect::parse(&s).unwrap_err().contains("sslrootcert"));
        let mut s = settings("postgres://sync@db.example/d");
        s.password_env = Some("A");
        s.password_file = Some(Path::new("p"));
        assert!(PgConnect::parse(&s).unwrap_err().contains("not both"));
    }
}

//! `dropsync.toml`: the store, and one entry per integration. The config
//! describes the pipeline; CLI flags describe one invocation. Every struct
//! denies unknown keys so a typo is an error that names the key and its line,
//! never a silently ignored setting.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::schema::formats::InputFormat;
use crate::source::FilePattern;

/// What went wrong reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {}", echo_lines(.message))]
    Parse { path: PathBuf, message: String },
    /// A number outside its setting's range (`message` names the setting).
    #[error("invalid config {path}, line {line}: {message}")]
    OutOfRange {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("invalid config {path}: integration `{}`: {message}", echo(.integration))]
    Integration {
        path: PathBuf,
        integration: String,
        message: String,
    },
    #[error("invalid config {path}: [[notify]] `{name}`: {message}")]
    Notify {
        path: PathBuf,
        name: String,
        message: String,
    },
    #[error("invalid config {path}: [[subscribe]] `{}`: {message}", echo(.name))]
    Subscribe {
        path: PathBuf,
        name: String,
        message: String,
    },
}

/// How many characters of a config value an error echoes.
const ECHO_CHARS: usize = 60;

/// A config value as an error echoes it: cut to `ECHO_CHARS` characters, so
/// a pasted blob or a runaway value names itself without flooding the
/// terminal (or the log).
pub fn echo(value: &str) -> String {
    match value.char_indices().nth(ECHO_CHARS) {
        None => value.to_string(),
        Some((cut, _)) => format!("{}... ({} bytes)", &value[..cut], value.len()),
    }
}

/// `echo` for each line of a message that quotes the config's text (the
/// TOML parser shows the offending line).
fn echo_lines(message: &str) -> String {
    message
        .lines()
        .map(|line| match line.char_indices().nth(ECHO_CHARS * 2) {
            None => line.to_string(),
            Some((cut, _)) => format!("{}... ({} bytes)", &line[..cut], line.len()),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where dropsync keeps its database and staged files.
    #[serde(default)]
    pub store: StoreConfig,
    /// How `dropsync daemon` behaves.
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// The web console and HTTP API, served by the daemon when set.
    #[serde(default)]
    pub web: Option<crate::web::WebConfig>,
    /// The configured feeds, by name: `[integrations.crm_accounts]`.
    #[serde(default)]
    pub integrations: BTreeMap<String, IntegrationConfig>,
    /// Who is told about which events: `[[notify]]` entries, by webhook or
    /// email.
    #[serde(default)]
    pub notify: Vec<crate::notify::NotifierConfig>,
    /// Who is told of the changes applied runs make: `[[subscribe]]`
    /// entries, by webhook or as files in a folder (the change feed).
    #[serde(default)]
    pub subscribe: Vec<crate::feed::SubscriberConfig>,
    /// The file this was read from; relative paths inside it are resolved
    /// against its directory.
    #[serde(skip)]
    pub path: PathBuf,
}

/// `[store]`
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "StoreSection")]
pub struct StoreConfig {
    /// Where the target tables and the history live.
    pub location: StoreLocation,
    /// Where fetched files are kept, content-addressed, for replays.
    pub staging: PathBuf,
    /// A directory of extra Table Schema files.
    pub schemas: Option<PathBuf>,
    /// How many days staged copies are kept (0: forever).
    pub keep_staged_days: Count<KeepStagedDays>,
}

/// Where the store is, checked once when the config is read.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    /// An embedded DuckDB file (the default).
    DuckDb(PathBuf),
    /// A PostgreSQL database, shared by every dropsync pointed at it.
    Postgres(Box<crate::store::PgConnect>),
}

impl StoreLocation {
    /// The store as a user sees it: the DuckDB file, or the PostgreSQL
    /// URL (never with a password).
    pub fn display(&self) -> String {
        match self {
            StoreLocation::DuckDb(path) => path.display().to_string(),
            StoreLocation::Postgres(pg) => pg.display(),
        }
    }
}

/// `[store]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreSection {
    /// The DuckDB database file. Default: `dropsync.duckdb` beside the
    /// config. Not with `url`.
    #[serde(default)]
    path: Option<PathBuf>,
    /// A PostgreSQL store instead of the DuckDB file:
    /// `postgres://user@host:port/database`, without a password.
    #[serde(default)]
    url: Option<String>,
    /// The environment variable holding the PostgreSQL password.
    #[serde(default)]
    password_env: Option<String>,
    /// A file whose first line is the PostgreSQL password.
    #[serde(default)]
    password_file: Option<PathBuf>,
    /// TLS to PostgreSQL: `disable`, `prefer` (default), `require`, or
    /// `verify-full` (the certificate must chain to `sslrootcert`, else the
    /// system's roots, and name the host).
    #[serde(default)]
    sslmode: Option<String>,
    /// The CA certificates (PEM) a `verify-full` server must chain to.
    #[serde(default)]
    sslrootcert: Option<PathBuf>,
    /// Where fetched files are kept, content-addressed, for replays.
    /// Default: `staging` beside the config.
    #[serde(default = "default_staging")]
    staging: PathBuf,
    /// A directory of extra Table Schema files (`NAME.json` defines dataset
    /// NAME). Built-in datasets can be overridden the same way.
    #[serde(default)]
    schemas: Option<PathBuf>,
    /// Staged copies are kept this many days, for replays without the
    /// source; 0 keeps them forever. Default 90.
    #[serde(default = "default_keep_staged_days")]
    keep_staged_days: Count<KeepStagedDays>,
}

impl TryFrom<StoreSection> for StoreConfig {
    type Error = String;

    fn try_from(section: StoreSection) -> Result<StoreConfig, String> {
        let location = match (section.path, section.url) {
            (Some(_), Some(_)) => {
                return Err(
                    "[store]: give path (a DuckDB file) or url (PostgreSQL), not both".into(),
                );
            }
            (path, None) => {
                let postgres_only = [
                    ("password_env", section.password_env.is_some()),
                    ("password_file", section.password_file.is_some()),
                    ("sslmode", section.sslmode.is_some()),
                    ("sslrootcert", section.sslrootcert.is_some()),
                ];
                if let Some((key, _)) = postgres_only.iter().find(|(_, set)| *set) {
                    return Err(format!(
                        "[store]: {key} is for a PostgreSQL store (url = \"postgres://...\"); a DuckDB store needs none"
                    ));
                }
                StoreLocation::DuckDb(path.unwrap_or_else(default_db))
            }
            (None, Some(url)) => StoreLocation::Postgres(Box::new(
                crate::store::PgConnect::parse(&crate::store::PgSettings {
                    url: &url,
                    password_env: section.password_env.as_deref(),
                    password_file: section.password_file.as_deref(),
                    sslmode: section.sslmode.as_deref(),
                    sslrootcert: section.sslrootcert.as_deref(),
                })
                .map_err(|e| format!("[store]: {e}"))?,
            )),
        };
        Ok(StoreConfig {
            location,
            staging: section.staging,
            schemas: section.schemas,
            keep_staged_days: section.keep_staged_days,
        })
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            location: StoreLocation::DuckDb(default_db()),
            staging: default_staging(),
            schemas: None,
            keep_staged_days: default_keep_staged_days(),
        }
    }
}

fn default_keep_staged_days() -> Count<KeepStagedDays> {
    Count::known(90)
}

/// `[daemon]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// A file dropped into a watched folder is synced once it has not
    /// changed for this many seconds. Default 2.
    #[serde(default = "default_settle")]
    pub settle_secs: Seconds<DaemonSettleSecs>,
    /// The local API socket the command line reaches the daemon through.
    /// Default: the store's path with `.sock` added.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// How long `status`, `history` and `show` wait for the daemon's
    /// answer before giving up on it. Default 30.
    #[serde(default = "default_answer_timeout")]
    pub answer_timeout_secs: Seconds<AnswerTimeoutSecs>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            settle_secs: default_settle(),
            socket: None,
            answer_timeout_secs: default_answer_timeout(),
        }
    }
}

fn default_settle() -> Seconds<DaemonSettleSecs> {
    Seconds::known(2)
}

fn default_answer_timeout() -> Seconds<AnswerTimeoutSecs> {
    Seconds::known(30)
}

fn default_db() -> PathBuf {
    PathBuf::from("dropsync.duckdb")
}

fn default_staging() -> PathBuf {
    PathBuf::from("staging")
}

/// `[integrations.NAME]`: one feed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationConfig {
    /// The dataset (schema) its files hold: `accounts`, `users`, `usage`,
    /// `subscribers`, `results`, or one defined in the schemas directory.
    pub dataset: String,
    /// Where its files come from.
    pub source: SourceConfig,
    /// File name pattern, with globs and an optional business-date template:
    /// `accounts_{date:%Y%m%d}.csv`, `*_{date:%Y-%m-%d}_export.csv`.
    pub pattern: String,
    /// `snapshot`, `delta` or `append`. Default: the dataset's own.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// The table the changes are applied to. Default: the dataset's name.
    #[serde(default)]
    pub table: Option<String>,
    /// When the daemon syncs it (`daily 02:00`, `weekly mon 06:00`,
    /// `monthly 1 03:00`, or a cron expression).
    #[serde(default)]
    pub schedule: Option<String>,
    /// The IANA time zone the schedule's and `expect`'s times are in.
    /// Default UTC.
    #[serde(default)]
    pub timezone: Option<String>,
    /// When its file is expected: `daily by 07:00`, `weekly mon by 09:00`,
    /// `monthly day 3 by 12:00` (local time in `timezone`). A deadline that
    /// passes without a file makes the integration overdue in `status` and
    /// `check`, and the daemon says so at the deadline.
    #[serde(default)]
    pub expect: Option<crate::freshness::Expectation>,
    /// After downtime, the daemon syncs what the missed schedules would
    /// have: `all` new files, oldest business date first (the default), or
    /// only the `latest`.
    #[serde(default)]
    pub catch_up: CatchUp,
    /// What its files are: `csv`, `xlsx`, `json` (one array of objects) or
    /// `jsonl` (one object a line). Default: each file name's extension
    /// (`.csv`, `.xlsx`, `.json`, `.jsonl` or `.ndjson`, with `.gz` or `.zip`
    /// on top).
    #[serde(default)]
    pub format: Option<InputFormat>,
    /// For xlsx files: the sheet to read. Default: the first.
    #[serde(default)]
    pub sheet: Option<String>,
    /// For zip archives: the member to read. Default: the archive's only file.
    #[serde(default)]
    pub member: Option<String>,
    /// Limits on what a compressed file may expand to.
    #[serde(default)]
    pub decompress: DecompressLimits,
    /// How its files are written.
    #[serde(default)]
    pub csv: CsvDialect,
    /// Source header -> schema field, for exports whose headers differ:
    /// `"Account Id" = "AccountID"`.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Calculated fields: schema field -> one SQL expression over the
    /// columns read from the file (schema names, after `columns`):
    /// `ARR = "MRR * 12"`, `FullName = "FirstName || ' ' || LastName"`.
    /// Typed and checked like the schema's other fields; checked when the
    /// config loads.
    #[serde(default)]
    pub computed: BTreeMap<String, String>,
    /// What to do with rows that fail validation.
    #[serde(default)]
    pub on_error: ErrorPolicy,
    /// A snapshot that would delete more than this share of the rows the
    /// integration holds is refused unless forced. Default 0.2.
    #[serde(default = "default_max_delete_ratio")]
    pub max_delete_ratio: f64,
    /// For `results`: `long` (entity, metric, value rows) or `wide` (one
    /// column per metric). Default `long`.
    #[serde(default)]
    pub layout: ResultsLayout,
    /// For `results`: each metric's type: `text`, `number`, `currency`,
    /// `percentage` or `date`. In a wide report these name the metric columns.
    #[serde(default)]
    pub metrics: BTreeMap<String, MetricType>,
}

fn default_max_delete_ratio() -> f64 {
    0.2
}

/// Where an integration's files come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    /// A local (or mounted) directory.
    Folder {
        /// The directory to scan; relative to the config file.
        path: PathBuf,
    },
    /// An FTP server, with explicit TLS (FTPS) unless `tls = "none"`.
    Ftp(FtpConfig),
    /// An SFTP (SSH) server.
    Sftp(SftpConfig),
}

/// `type = "ftp"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FtpConfig {
    pub host: String,
    /// Default 21.
    #[serde(default = "default_ftp_port")]
    pub port: u16,
    pub user: String,
    /// The password, from this environment variable...
    #[serde(default)]
    pub password_env: Option<String>,
    /// ...or from this file (its first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// `explicit` (AUTH TLS, certificates verified; the default) or `none`
    /// (plain FTP: credentials and data cross the network in clear).
    #[serde(default)]
    pub tls: FtpTls,
    /// PEM file of the CA(s) that signed the server's certificate, for
    /// private CAs. Default: the system's trusted roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(flatten)]
    pub remote: RemoteOptions,
}

fn default_ftp_port() -> u16 {
    21
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FtpTls {
    #[default]
    Explicit,
    None,
}

/// `type = "sftp"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftpConfig {
    pub host: String,
    /// Default 22.
    #[serde(default = "default_sftp_port")]
    pub port: u16,
    pub user: String,
    /// A private key file (OpenSSH format) to log in with.
    #[serde(default)]
    pub private_key: Option<PathBuf>,
    /// The private key's passphrase, from this environment variable.
    #[serde(default)]
    pub passphrase_env: Option<String>,
    /// The password, from this environment variable...
    #[serde(default)]
    pub password_env: Option<String>,
    /// ...or from this file (its first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The OpenSSH known_hosts file the server's host key is checked
    /// against. Default: `~/.ssh/known_hosts`.
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
    /// `false` turns host key checking off: anyone who can intercept the
    /// connection can then pose as the server. Logged loudly at every
    /// connection. Default true.
    #[serde(default = "default_true")]
    pub host_key_checking: bool,
    #[serde(flatten)]
    pub remote: RemoteOptions,
}

fn default_sftp_port() -> u16 {
    22
}

/// What FTP and SFTP sources share.
#[derive(Debug, Clone, Deserialize)]
pub struct RemoteOptions {
    /// The remote directory holding the files. Default: the login directory.
    #[serde(default = "default_directory")]
    pub directory: String,
    /// What to do with a remote file once its run succeeded: `leave` (the
    /// default), `delete`, or `archive` (move to `archive_directory` as
    /// `<stem>.<UTC time>-<hash><ext>`, which never clashes with an earlier
    /// copy of the same name).
    #[serde(default)]
    pub after: AfterSync,
    #[serde(default)]
    pub archive_directory: Option<String>,
    /// A file modified less than this many seconds ago is left for the next
    /// run: it may still be being written. Default 30.
    #[serde(default = "default_min_age")]
    pub min_age_secs: Seconds<MinAgeSecs>,
    /// When set, the directory is listed twice, this many seconds apart, and
    /// a file whose size or modification time changed in between is left for
    /// the next run. Default 0 (one listing).
    #[serde(default = "default_remote_settle")]
    pub settle_secs: Seconds<RemoteSettleSecs>,
    /// Attempts after a failed connection or transfer. Default 3.
    #[serde(default = "default_retries")]
    pub retries: Count<Retries>,
    /// Wait before the first retry, doubled for each next one. Default 1000.
    #[serde(default = "default_retry_delay")]
    pub retry_delay_ms: Millis<RetryDelayMs>,
    /// Network timeout, in seconds. Default 30.
    #[serde(default = "default_timeout")]
    pub timeout_secs: Seconds<TimeoutSecs>,
}

fn default_directory() -> String {
    ".".to_string()
}
fn default_min_age() -> Seconds<MinAgeSecs> {
    Seconds::known(30)
}
fn default_remote_settle() -> Seconds<RemoteSettleSecs> {
    Seconds::known(0)
}
fn default_retries() -> Count<Retries> {
    Count::known(3)
}
fn default_retry_delay() -> Millis<RetryDelayMs> {
    Millis::known(1000)
}
fn default_timeout() -> Seconds<TimeoutSecs> {
    Seconds::known(30)
}

/// What happens to a remote file after a successful run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterSync {
    #[default]
    Leave,
    Delete,
    Archive,
}

/// What the daemon syncs after missing scheduled runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    #[default]
    All,
    Latest,
}

/// How absent, changed and unchanged keys are treated (see DESIGN.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Full export: absent keys are deleted.
    Snapshot,
    /// Changed records only: absent keys are left alone.
    Delta,
    /// Events: new ones are added, repeats skipped, nothing updated.
    Append,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Snapshot => "snapshot",
            Mode::Delta => "delta",
            Mode::Append => "append",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "snapshot" => Ok(Mode::Snapshot),
            "delta" => Ok(Mode::Delta),
            "append" => Ok(Mode::Append),
            other => Err(format!(
                "unknown mode `{}` (expected snapshot, delta or append)",
                echo(other)
            )),
        }
    }
}

/// `[integrations.NAME.decompress]`: a guard against decompression bombs
/// (a few kilobytes that expand to terabytes).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecompressLimits {
    /// Most bytes a gzip or zip drop may expand to. Default 4 GiB.
    #[serde(default = "default_max_decompressed_bytes")]
    pub max_bytes: Count<MaxDecompressedBytes>,
    /// Most times larger than the compressed file its content may be, once
    /// past 16 MiB. Real exports compress 5 to 50 times; bombs a million.
    /// Default 1000.
    #[serde(default = "default_max_compression_ratio")]
    pub max_ratio: Count<MaxCompressionRatio>,
}

impl Default for DecompressLimits {
    fn default() -> Self {
        DecompressLimits {
            max_bytes: default_max_decompressed_bytes(),
            max_ratio: default_max_compression_ratio(),
        }
    }
}

fn default_max_decompressed_bytes() -> Count<MaxDecompressedBytes> {
    Count::known(4 << 30)
}
fn default_max_compression_ratio() -> Count<MaxCompressionRatio> {
    Count::known(1000)
}

/// `[integrations.NAME.csv]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvDialect {
    /// Field separator, one byte. Default `,`.
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// Quote character, one byte. Default `"`.
    #[serde(default = "default_quote")]
    pub quote: char,
    /// Whether the first row names the columns. Without a header, columns
    /// are taken in the schema's field order. Default true.
    #[serde(default = "default_true")]
    pub header: bool,
    /// Any WHATWG encoding label: `utf-8` (a BOM is stripped),
    /// `windows-1252` (what `latin1` and `iso-8859-1` mean),
    /// `iso-8859-15`, `shift_jis`, `utf-16le`, ... Default `utf-8`.
    #[serde(default)]
    pub encoding: Encoding,
    /// Longest field accepted, in bytes; a longer one is a row error (it is
    /// most often a runaway quote). Default 16 MiB.
    #[serde(default = "default_max_field_bytes")]
    pub max_field_bytes: Count<MaxFieldBytes>,
}

impl Default for CsvDialect {
    fn default() -> Self {
        CsvDialect {
            delimiter: default_delimiter(),
            quote: default_quote(),
            header: true,
            encoding: Encoding::default(),
            max_field_bytes: default_max_field_bytes(),
        }
    }
}

fn default_delimiter() -> char {
    ','
}
fn default_quote() -> char {
    '"'
}
fn default_true() -> bool {
    true
}
fn default_max_field_bytes() -> Count<MaxFieldBytes> {
    Count::known(16 * 1024 * 1024)
}

/// Text encoding of a file: any WHATWG encoding label (`utf-8`,
/// `windows-1252`, `iso-8859-15`, `shift_jis`, `utf-16le`, ...), decoded by
/// encoding_rs. As in browsers, `latin1` and `iso-8859-1` mean
/// windows-1252: files labelled Latin-1 are nearly always written by
/// Windows, where 0x80 is `€`, not a control character. `latin-1` is
/// accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding(&'static encoding_rs::Encoding);

impl Encoding {
    /// The encoding a label names; `None` for an unknown label, and for
    /// WHATWG's `replacement` encoding, which reads every file as one
    /// error.
    pub fn from_label(label: &str) -> Option<Encoding> {
        let label = label.trim();
        let encoding = if label.eq_ignore_ascii_case("latin-1") {
            encoding_rs::WINDOWS_1252
        } else {
            encoding_rs::Encoding::for_label_no_replacement(label.as_bytes())?
        };
        Some(Encoding(encoding))
    }

    pub fn is_utf8(self) -> bool {
        self.0 == encoding_rs::UTF_8
    }

    /// The encoding_rs decoder's encoding.
    pub fn codec(self) -> &'static encoding_rs::Encoding {
        self.0
    }

    /// The encoding's canonical name (`windows-1252`).
    pub fn name(self) -> &'static str {
        self.0.name()
    }
}

impl Default for Encoding {
    fn default() -> Self {
        Encoding(encoding_rs::UTF_8)
    }
}

impl<'de> Deserialize<'de> for Encoding {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let label = String::deserialize(deserializer)?;
        Encoding::from_label(&label).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown encoding `{label}`: use a WHATWG encoding label such as utf-8, windows-1252, iso-8859-15, shift_jis or utf-16le"
            ))
        })
    }
}

/// `[integrations.NAME.on_error]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorPolicy {
    /// `reject`: any bad row fails the whole file. `skip`: bad rows are
    /// recorded and left out, the rest applied (status `partial`), as long as
    /// they stay within the limits below. Default `skip`.
    #[serde(default)]
    pub policy: OnError,
    /// Most bad rows tolerated under `skip`. Default: no count limit.
    #[serde(default)]
    pub max_rows: Option<u64>,
    /// Largest share of bad rows tolerated under `skip` (0.05 = 5%).
    /// Default 0.1.
    #[serde(default = "default_max_ratio")]
    pub max_ratio: f64,
}

impl Default for ErrorPolicy {
    fn default() -> Self {
        ErrorPolicy {
            policy: OnError::default(),
            max_rows: None,
            max_ratio: default_max_ratio(),
        }
    }
}

fn default_max_ratio() -> f64 {
    0.1
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    Reject,
    #[default]
    Skip,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultsLayout {
    #[default]
    Long,
    Wide,
}

/// The type of one campaign or activity metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    Text,
    Number,
    Currency,
    Percentage,
    Date,
}

impl MetricType {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Text => "text",
            MetricType::Number => "number",
            MetricType::Currency => "currency",
            MetricType::Percentage => "percentage",
            MetricType::Date => "date",
        }
    }
}

/// A setting's allowed range, and the key it is read from: a value outside
/// it is an error naming the key, its line (toml adds it) and the range,
/// never a wrap-around or an overflow later.
pub trait Bounds {
    const KEY: &'static str;
    const MIN: u64;
    const MAX: u64;
    /// What the number counts, as the error says it.
    const UNIT: &'static str;
}

macro_rules! bounded_settings {
    ($($(#[$doc:meta])* $name:ident = $key:literal, $min:literal ..= $max:literal $unit:literal;)*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq)]
            pub enum $name {}
            impl Bounds for $name {
                const KEY: &'static str = $key;
                const MIN: u64 = $min;
                const MAX: u64 = $max;
                const UNIT: &'static str = $unit;
            }
        )*
    };
}

bounded_settings! {
    /// `[store] keep_staged_days`: up to a century (0 keeps copies forever).
    KeepStagedDays = "keep_staged_days", 0..=36_500 "days";
    /// `[daemon] settle_secs`: up to a day.
    DaemonSettleSecs = "settle_secs", 0..=86_400 "seconds";
    /// `[daemon] answer_timeout_secs`: a second to an hour.
    AnswerTimeoutSecs = "answer_timeout_secs", 1..=3_600 "seconds";
    /// A remote source's `min_age_secs`: up to 30 days.
    MinAgeSecs = "min_age_secs", 0..=2_592_000 "seconds";
    /// A remote source's `settle_secs` (the run waits this long): up to an hour.
    RemoteSettleSecs = "settle_secs", 0..=3_600 "seconds";
    /// A remote source's `retries`: each retry waits twice the one before.
    Retries = "retries", 0..=10 "retries";
    /// A remote source's `retry_delay_ms`: up to a minute before doubling.
    RetryDelayMs = "retry_delay_ms", 0..=60_000 "milliseconds";
    /// A remote source's `timeout_secs`: a second to an hour.
    TimeoutSecs = "timeout_secs", 1..=3_600 "seconds";
    /// `csv.max_field_bytes`: a byte to 1 GiB.
    MaxFieldBytes = "max_field_bytes", 1..=1_073_741_824 "bytes";
    /// `[web] max_upload_bytes`: a byte to 1 TiB.
    MaxUploadBytes = "max_upload_bytes", 1..=1_099_511_627_776 "bytes";
    /// `decompress.max_bytes`: a kilobyte to 1 TiB.
    MaxDecompressedBytes = "max_bytes", 1_024..=1_099_511_627_776 "bytes";
    /// `decompress.max_ratio`: 1 to a million.
    MaxCompressionRatio = "max_ratio", 1..=1_000_000 "times";
}

fn bounded<'de, B: Bounds, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct Within<B>(PhantomData<B>);
    impl<B: Bounds> serde::de::Visitor<'_> for Within<B> {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(
                f,
                "a whole number of {} from {} to {}",
                B::UNIT,
                B::MIN,
                B::MAX
            )
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            if (B::MIN..=B::MAX).contains(&v) {
                Ok(v)
            } else {
                Err(out_of_range::<B, E>(&v))
            }
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(out_of_range::<B, E>(&v)),
            }
        }
    }
    d.deserialize_u64(Within::<B>(PhantomData))
}

fn out_of_range<B: Bounds, E: serde::de::Error>(v: &dyn std::fmt::Display) -> E {
    E::custom(format!(
        "`{}` = {v}{OUT_OF_RANGE}{} to {} {}",
        B::KEY,
        B::MIN,
        B::MAX,
        B::UNIT
    ))
}

const OUT_OF_RANGE: &str = " is out of range: it takes ";

/// The line of an out-of-range setting that toml reported at `at` (a byte
/// offset): toml points at the value, except inside a table read with
/// `flatten` (a remote source's options), where it points at the table's
/// header; the setting is then the first line after it that sets the key to
/// the value.
fn out_of_range_line(text: &str, at: usize, message: &str) -> Option<usize> {
    let (key, rest) = message.strip_prefix('`')?.split_once("` = ")?;
    let (value, _) = rest.split_once(OUT_OF_RANGE)?;
    let reported = text.get(..at)?.matches('\n').count();
    let sets = |line: &str| {
        line.split([',', '{']).any(|part| {
            part.split_once('=').is_some_and(|(k, v)| {
                k.trim().trim_matches('"') == key && v.trim().trim_end_matches('}').trim() == value
            })
        })
    };
    text.lines()
        .enumerate()
        .skip(reported)
        .find(|(_, line)| sets(line))
        .map(|(i, _)| i + 1)
}

macro_rules! bounded_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name<B: Bounds>(u64, PhantomData<B>);

        impl<B: Bounds> $name<B> {
            /// A default (`defaults_are_within_their_bounds` checks it).
            pub(crate) const fn known(v: u64) -> Self {
                $name(v, PhantomData)
            }
            /// The number as written in the config.
            pub fn get(self) -> u64 {
                self.0
            }
        }

        impl<'de, B: Bounds> Deserialize<'de> for $name<B> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                bounded::<B, D>(d).map(|v| $name(v, PhantomData))
            }
        }

        impl<B: Bounds> std::fmt::Display for $name<B> {
            fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

bounded_type! {
    /// A number of seconds within `B`'s range.
    Seconds
}
bounded_type! {
    /// A number of milliseconds within `B`'s range.
    Millis
}
bounded_type! {
    /// A count (of days, retries, bytes) within `B`'s range.
    Count
}

impl<B: Bounds> Seconds<B> {
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

impl<B: Bounds> Millis<B> {
    pub fn duration(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses config text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .and_then(|span| out_of_range_line(text, span.start, e.message()));
            match line {
                Some(line) => ConfigError::OutOfRange {
                    path: path.to_path_buf(),
                    line,
                    message: e.message().trim_end().to_string(),
                },
                None => ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string().trim_end().to_string(),
                },
            }
        })?;
        config.path = path.to_path_buf();
        let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        match &mut config.store.location {
            StoreLocation::DuckDb(path) => resolve(path),
            StoreLocation::Postgres(pg) => pg.paths_mut().for_each(resolve),
        }
        resolve(&mut config.store.staging);
        if let Some(dir) = config.store.schemas.as_mut() {
            resolve(dir);
        }
        if let Some(socket) = config.daemon.socket.as_mut() {
            resolve(socket);
        }
        if let Some(web) = config.web.as_mut() {
            if let Some(file) = web.token_file.as_mut() {
                resolve(file);
            }
            if let Some(file) = web.read_token_file.as_mut() {
                resolve(file);
            }
            web.check().map_err(|message| ConfigError::Parse {
                path: path.to_path_buf(),
                message: format!("[web]: {message}"),
            })?;
        }
        for (name, integration) in config.integrations.iter_mut() {
            let fail = |message: String| ConfigError::Integration {
                path: path.to_path_buf(),
                integration: name.clone(),
                message,
            };
            if !is_identifier(name) {
                return Err(fail(
                    "names may hold only letters, digits, `_` and `-`".into(),
                ));
            }
            match &mut integration.source {
                SourceConfig::Folder { path } => resolve(path),
                SourceConfig::Ftp(ftp) => {
                    if let Some(p) = ftp.password_file.as_mut() {
                        resolve(p);
                    }
                    if let Some(p) = ftp.ca_file.as_mut() {
                        resolve(p);
                    }
                    check_remote(&ftp.remote).map_err(fail)?;
                    if ftp.password_env.is_some() && ftp.password_file.is_some() {
                        return Err(fail("give password_env or password_file, not both".into()));
                    }
                }
                SourceConfig::Sftp(sftp) => {
                    for p in [
                        sftp.password_file.as_mut(),
                        sftp.private_key.as_mut(),
                        sftp.known_hosts.as_mut(),
                    ]
                    .into_iter()
                    .flatten()
                    {
                        resolve(p);
                    }
                    check_remote(&sftp.remote).map_err(fail)?;
                    if sftp.password_env.is_some() && sftp.password_file.is_some() {
                        return Err(fail("give password_env or password_file, not both".into()));
                    }
                }
            }
            FilePattern::parse(&integration.pattern).map_err(|e| fail(e.to_string()))?;
            crate::schema::formats::check_config(integration).map_err(fail)?;
            if let Some(schedule) = &integration.schedule {
                crate::schedule::Schedule::parse(schedule, integration.timezone.as_deref())
                    .map_err(|e| fail(e.to_string()))?;
            } else if integration.timezone.is_some() && integration.expect.is_none() {
                return Err(fail(
                    "timezone is set but there is neither a schedule nor an expect".into(),
                ));
            }
            if let Some(name) = &integration.timezone
                && name.parse::<chrono_tz::Tz>().is_err()
            {
                return Err(fail(format!(
                    "unknown time zone `{name}` (use an IANA name like Europe/Berlin)"
                )));
            }
            let table = integration.table_name();
            if !is_identifier(table) || table.starts_with("dropsync_") {
                return Err(fail(format!(
                    "table `{}`: names may hold only letters, digits, `_` and `-`, and not start with `dropsync_`",
                    echo(table)
                )));
            }
            if !(0.0..=1.0).contains(&integration.max_delete_ratio) {
                return Err(fail("max_delete_ratio must be between 0 and 1".into()));
            }
            if !(0.0..=1.0).contains(&integration.on_error.max_ratio) {
                return Err(fail("on_error.max_ratio must be between 0 and 1".into()));
            }
            let csv = &integration.csv;
            for (what, c) in [("delimiter", csv.delimiter), ("quote", csv.quote)] {
                if !c.is_ascii() {
                    return Err(fail(format!("csv.{what} must be a single ASCII character")));
                }
            }
        }
        let mut names = std::collections::HashSet::new();
        for notifier in config.notify.iter_mut() {
            for p in [
                notifier.url_file.as_mut(),
                notifier.password_file.as_mut(),
                notifier.ca_file.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                resolve(p);
            }
        }
        for notifier in &config.notify {
            let fail = |message: String| ConfigError::Notify {
                path: path.to_path_buf(),
                name: notifier.name.clone(),
                message,
            };
            if !names.insert(notifier.name.clone()) {
                return Err(fail("another [[notify]] has this name".into()));
            }
            notifier.check(&config).map_err(fail)?;
        }
        for subscriber in config.subscribe.iter_mut() {
            for p in [subscriber.url_file.as_mut(), subscriber.path.as_mut()]
                .into_iter()
                .flatten()
            {
                resolve(p);
            }
        }
        let mut names = std::collections::HashSet::new();
        for subscriber in &config.subscribe {
            let fail = |message: String| ConfigError::Subscribe {
                path: path.to_path_buf(),
                name: subscriber.name.clone(),
                message,
            };
            if !names.insert(subscriber.name.clone()) {
                return Err(fail("another [[subscribe]] has this name".into()));
            }
            subscriber.check(&config).map_err(fail)?;
        }
        Ok(config)
    }

    /// The integration called `name`, or an error listing the known ones.
    pub fn integration(&self, name: &str) -> Result<&IntegrationConfig, String> {
        self.integrations.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.integrations.keys().map(String::as_str).collect();
            format!(
                "no integration named `{}` in {} (known: {})",
                echo(name),
                self.path.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )
        })
    }
}

impl SourceConfig {
    /// Where the files come from, as a user reads it (never a secret).
    pub fn describe(&self) -> String {
        match self {
            SourceConfig::Folder { path } => format!("folder {}", path.display()),
            SourceConfig::Ftp(f) => f.url(),
            SourceConfig::Sftp(s) => s.url(),
        }
    }
}

/// `scheme://user@host:port/directory`: a server as messages show it, with
/// the user and never a password.
fn server_url(scheme: &str, user: &str, host: &str, port: u16, remote: &RemoteOptions) -> String {
    format!(
        "{scheme}://{user}@{host}:{port}/{}",
        remote.directory.trim_start_matches('/')
    )
}

impl FtpConfig {
    pub fn url(&self) -> String {
        let scheme = if self.tls == FtpTls::None {
            "ftp"
        } else {
            "ftps"
        };
        server_url(scheme, &self.user, &self.host, self.port, &self.remote)
    }
}

impl SftpConfig {
    pub fn url(&self) -> String {
        server_url("sftp", &self.user, &self.host, self.port, &self.remote)
    }
}

impl Config {
    /// Where the daemon's API socket is.
    pub fn socket_path(&self) -> PathBuf {
        self.daemon
            .socket
            .clone()
            .unwrap_or_else(|| match &self.store.location {
                StoreLocation::DuckDb(store) => {
                    let mut path = store.clone().into_os_string();
                    path.push(".sock");
                    PathBuf::from(path)
                }
                // No file to sit beside: the config's directory, which is
                // this machine's (several machines share the database).
                StoreLocation::Postgres(_) => self
                    .path
                    .parent()
                    .unwrap_or(Path::new(""))
                    .join("dropsync.sock"),
            })
    }
}

impl IntegrationConfig {
    /// The time zone its schedule and deadlines are in (checked when the
    /// config was read).
    pub fn zone(&self) -> chrono_tz::Tz {
        self.timezone
            .as_deref()
            .and_then(|name| name.parse().ok())
            .unwrap_or(chrono_tz::Tz::UTC)
    }

    /// The table its changes land in.
    pub fn table_name(&self) -> &str {
        self.table.as_deref().unwrap_or(&self.dataset)
    }
}

fn check_remote(remote: &RemoteOptions) -> Result<(), String> {
    match (remote.after, &remote.archive_directory) {
        (AfterSync::Archive, None) => Err("after = \"archive\" needs archive_directory".into()),
        (AfterSync::Archive, Some(dir)) if dir.trim().is_empty() => {
            Err("archive_directory is empty".into())
        }
        _ => Ok(()),
    }
}

/// Names that are safe as DuckDB identifiers and file names.
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_the_key_and_line() {
        let text = "[store]\npath = \"x.duckdb\"\n\n[integrations.a]\ndataset = \"accounts\"\npattern = \"a.csv\"\nsource = { type = \"folder\", path = \"in\" }\nmax_delete_ration = 0.5\n";
        let err = Config::parse(text, Path::new("/etc/dropsync.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_delete_ration"), "{err}");
        assert!(err.contains("line 8"), "{err}");
        assert!(err.contains("/etc/dropsync.toml"), "{err}");
    }

    #[test]
    fn a_bad_expect_names_the_file_the_line_and_what_to_write() {
        let text = "[integrations.a]\ndataset = \"accounts\"\npattern = \"a.csv\"\nsource = { type = \"folder\", path = \"in\" }\nexpect = \"daily at 07:00\"\n";
        let err = Config::parse(text, Path::new("/etc/dropsync.toml"))
            .unwrap_err()
            .to_string();
        for needle in ["/etc/dropsync.toml", "line 5", "expect", "daily by HH:MM"] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
        let text = "[integrations.a]\ndataset = \"accounts\"\npattern = \"a.csv\"\nsource = { type = \"folder\", path = \"in\" }\nexpect = \"daily by 07:00\"\ntimezone = \"Mars/Olympus\"\n";
        let err = Config::parse(text, Path::new("/etc/dropsync.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown time zone `Mars/Olympus`"), "{err}");
        let text = "[integrations.a]\ndataset = \"accounts\"\npattern = \"a.csv\"\nsource = { type = \"folder\", path = \"in\" }\nexpect = \"weekly mon by 09:00\"\ntimezone = \"Europe/Berlin\"\n";
        let config = Config::parse(text, Path::new("/etc/dropsync.toml")).unwrap();
        assert_eq!(
            config.integrations["a"].zone(),
            chrono_tz::Tz::Europe__Berlin
        );
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let text = "[integrations.a]\ndataset = \"accounts\"\npattern = \"a_{date:%Y%m%d}.csv\"\nsource = { type = \"folder\", path = \"in\" }\n";
        let config = Config::parse(text, Path::new("/srv/sync/dropsync.toml")).unwrap();
        assert!(matches!(
            &config.store.location,
            StoreLocation::DuckDb(p) if p == Path::new("/srv/sync/dropsync.duckdb")
        ));
        let SourceConfig::Folder { path } = &config.integrations["a"].source else {
            panic!("a folder source");
        };
        assert_eq!(path, &PathBuf::from("/srv/sync/in"));
    }

    #[test]
    fn a_postgres_store_is_read_once_into_its_parts() {
        let text = "[store]\nurl = \"postgres://sync@db.example:5433/dropsync\"\npassword_file = \"pg.pass\"\nsslmode = \"verify-full\"\nsslrootcert = \"ca.pem\"\n";
        let config = Config::parse(text, Path::new("/srv/sync/dropsync.toml")).unwrap();
        let StoreLocation::Postgres(pg) = &config.store.location else {
            panic!("a PostgreSQL store");
        };
        assert_eq!(pg.display(), "postgres://sync@db.example:5433/dropsync");
        assert_eq!(
            pg.password,
            crate::store::PasswordSource::File("/srv/sync/pg.pass".into())
        );
        assert_eq!(pg.sslmode, crate::store::SslMode::VerifyFull);
        assert_eq!(
            pg.sslrootcert.as_deref(),
            Some(Path::new("/srv/sync/ca.pem"))
        );
        assert_eq!(config.socket_path(), Path::new("/srv/sync/dropsync.sock"));

        for (text, needle) in [
            (
                "[store]\npath = \"a.duckdb\"\nurl = \"postgres://u@h/d\"\n",
                "not both",
            ),
            (
                "[store]\npath = \"a.duckdb\"\npassword_env = \"PG\"\n",
                "password_env is for a PostgreSQL store",
            ),
            (
                "[store]\nurl = \"postgres://u:hunter2@h/d\"\n",
                "postgres://u:***@h/d",
            ),
        ] {
            let err = Config::parse(text, Path::new("/srv/sync/dropsync.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{needle}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn defaults_are_within_their_bounds() {
        fn check<B: Bounds>(v: u64) {
            assert!((B::MIN..=B::MAX).contains(&v), "{} default {v}", B::KEY);
        }
        let d = DaemonConfig::default();
        check::<DaemonSettleSecs>(d.settle_secs.get());
        check::<AnswerTimeoutSecs>(d.answer_timeout_secs.get());
        check::<KeepStagedDays>(StoreConfig::default().keep_staged_days.get());
        check::<MaxFieldBytes>(CsvDialect::default().max_field_bytes.get());
        check::<MaxUploadBytes>(crate::web::WebConfig::default().max_upload_bytes.get());
        check::<MaxDecompressedBytes>(DecompressLimits::default().max_bytes.get());
        check::<MaxCompressionRatio>(DecompressLimits::default().max_ratio.get());
        check::<MinAgeSecs>(default_min_age().get());
        check::<RemoteSettleSecs>(default_remote_settle().get());
        check::<Retries>(default_retries().get());
        check::<RetryDelayMs>(default_retry_delay().get());
        check::<TimeoutSecs>(default_timeout().get());
    }

    #[test]
    fn a_setting_out_of_range_names_the_key_its_line_and_the_range() {
        let text =
            "[store]\nkeep_staged_days = 90\n\n[daemon]\nsettle_secs = 18446744073709551615\n";
        let err = Config::parse(text, Path::new("/etc/dropsync.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/dropsync.toml, line 5: "), "{err}");
        assert!(
            err.contains(
                "`settle_secs` = 18446744073709551615 is out of range: it takes 0 to 86400 seconds"
            ),
            "{err}"
        );

        let text = "[integrations.a]\ndataset = \"accounts\"\npattern = \"a.csv\"\nsource = { type = \"sftp\", host = \"h\", user = \"u\", min_age_secs = 9223372036854775808 }\n";
        let err = Config::parse(text, Path::new("/etc/dropsync.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 4: "), "{err}");
        assert!(err.contains("`min_age_secs` = 9223372036854775808 is out of range: it takes 0 to 2592000 seconds"), "{err}");

        let text = "[integrations.a]\ndataset = \"accounts\"\npattern = \"a.csv\"\n[integrations.a.source]\ntype = \"ftp\"\nhost = \"h\"\nuser = \"u\"\nretries = 11\n";
        let err = Config::parse(text, Path::new("/etc/dropsync.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 8: `retries` = 11 is out of range: it takes 0 to 10 retries"),
            "{err}"
        );

        let text = "[daemon]\nanswer_timeout_secs = -1\n";
        let err = Config::parse(text, Path::new("/etc/dropsync.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`answer_timeout_secs` = -1 is out of range: it takes 1 to 3600 seconds"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod echo_tests {
    use super::echo;

    #[test]
    fn a_long_value_is_cut_and_says_how_long_it_was() {
        assert_eq!(echo("short"), "short");
        let long = "é".repeat(100);
        let shown = echo(&long);
        assert!(shown.starts_with(&"é".repeat(60)), "{shown}");
        assert!(shown.ends_with("... (200 bytes)"), "{shown}");
    }
}

//! Helpers shared by the integration tests: a temporary workspace holding a
//! `dropsync.toml` and a drop folder, the real `dropsync` binary run against
//! it, and read-only queries of the DuckDB store it leaves behind.

use std::path::{Path, PathBuf};
use std::process::Command;

use duckdb::types::{TimeUnit, Value};

/// The binary under test, built by cargo for this test target.
pub const BIN: &str = env!("CARGO_BIN_EXE_dropsync");

/// What one invocation of the binary did.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub args: Vec<String>,
}

impl Output {
    /// Asserts the exit code, showing everything printed when it differs.
    #[track_caller]
    pub fn code(&self, want: i32) -> &Output {
        assert_eq!(self.code, want, "exit code of {self}");
        self
    }

    /// Asserts stdout contains every needle.
    #[track_caller]
    pub fn stdout_has(&self, needles: &[&str]) -> &Output {
        for n in needles {
            assert!(self.stdout.contains(n), "stdout lacks {n:?}: {self}");
        }
        self
    }

    /// Asserts stdout contains none of the needles.
    #[track_caller]
    pub fn stdout_lacks(&self, needles: &[&str]) -> &Output {
        for n in needles {
            assert!(!self.stdout.contains(n), "stdout has {n:?}: {self}");
        }
        self
    }

    /// Asserts stderr contains every needle.
    #[track_caller]
    pub fn stderr_has(&self, needles: &[&str]) -> &Output {
        for n in needles {
            assert!(self.stderr.contains(n), "stderr lacks {n:?}: {self}");
        }
        self
    }

    /// The output's lines that mention `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<&str> {
        self.stdout.lines().filter(|l| l.contains(needle)).collect()
    }

    /// Parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self}"))
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`dropsync {}` exited {}\n--- stdout\n{}--- stderr\n{}---",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }
}

/// Runs the real binary in `cwd`. Never panics silently: a panic of the
/// binary fails the calling test whatever it expected.
#[track_caller]
pub fn dropsync_in(cwd: &Path, args: &[&str]) -> Output {
    dropsync_env(cwd, args, &[])
}

/// `dropsync_in`, with these environment variables set.
#[track_caller]
pub fn dropsync_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_remove("DROPSYNC_CONFIG")
        .env_remove("DROPSYNC_LOG")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .output()
        .expect("the dropsync binary runs");
    let output = Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        args: args.iter().map(|a| a.to_string()).collect(),
    };
    assert!(
        !output.stderr.contains("panicked") && output.code != 101 && output.code != -1,
        "dropsync crashed: {output}"
    );
    output
}

/// A temporary directory with a `dropsync.toml`; the store, the staging
/// directory and the drop folder `drops/` live beside it.
pub struct Workspace {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl Workspace {
    pub fn new(config: &str) -> Workspace {
        let dir = tempfile::Builder::new()
            .prefix("dropsync-it-")
            .tempdir()
            .expect("a temporary directory");
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join("drops")).unwrap();
        std::fs::write(root.join("dropsync.toml"), config).unwrap();
        Workspace { _dir: dir, root }
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("dropsync.toml")
    }

    pub fn store_path(&self) -> PathBuf {
        self.root.join("dropsync.duckdb")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Writes a file under the workspace, creating its directory.
    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    /// Drops a file into `drops/`.
    pub fn drop_file(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        self.write(&format!("drops/{name}"), content)
    }

    /// Runs `dropsync --config <this workspace's config> ARGS`.
    #[track_caller]
    pub fn dropsync(&self, args: &[&str]) -> Output {
        self.dropsync_env(args, &[])
    }

    /// `dropsync`, with these environment variables set.
    #[track_caller]
    pub fn dropsync_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let config = self.config_path().display().to_string();
        let mut all = vec!["--config", config.as_str()];
        all.extend_from_slice(args);
        dropsync_env(&self.root, &all, env)
    }

    /// The store, opened read-only (closed again when dropped).
    #[track_caller]
    pub fn db(&self) -> Db {
        Db::open(&self.store_path())
    }
}

/// A read-only view of a store: its DuckDB file, or a session in its
/// PostgreSQL database. Values read either way are rendered as the same
/// text, so a test body reads the same on both stores.
pub struct Db {
    conn: Conn,
}

enum Conn {
    DuckDb(duckdb::Connection),
    /// `postgres::Client` wants `&mut` for every query; a test holds the
    /// view by `&`, as it does a DuckDB connection.
    Postgres(std::cell::RefCell<postgres::Client>),
}

/// One row of `dropsync_runs`, as the tests look at it.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub execution_id: String,
    pub integration: String,
    pub trigger: String,
    pub status: String,
    pub message: Option<String>,
    pub file_name: Option<String>,
    pub content_hash: Option<String>,
    pub business_date: Option<String>,
    pub forced: bool,
    pub input_rows: i64,
    pub success_rows: i64,
    pub error_rows: i64,
    pub skipped_rows: i64,
    pub inserted: i64,
    pub updated: i64,
    pub deleted: i64,
    pub unchanged: i64,
    pub subscribed: i64,
    pub unsubscribed: i64,
}

/// One row of `dropsync_row_errors`.
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    pub line: i64,
    pub record_key: Option<String>,
    pub field: Option<String>,
    pub message: String,
    pub raw: Option<String>,
}

impl Db {
    #[track_caller]
    pub fn open(path: &Path) -> Db {
        assert!(path.exists(), "no store at {}", path.display());
        let config = duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .unwrap();
        let conn = duckdb::Connection::open_with_flags(path, config)
            .unwrap_or_else(|e| panic!("cannot open {} read-only: {e}", path.display()));
        Db {
            conn: Conn::DuckDb(conn),
        }
    }

    /// A session in a PostgreSQL store's database, reading times in UTC
    /// (as the store writes them).
    #[track_caller]
    pub fn postgres(database: &PgDatabase) -> Db {
        let mut client = database.client();
        client
            .batch_execute("SET TIME ZONE 'UTC'; SET default_transaction_read_only = on")
            .expect("the test session is set up");
        Db {
            conn: Conn::Postgres(std::cell::RefCell::new(client)),
        }
    }

    /// Every row of a query, each value rendered as text (`None` for null).
    #[track_caller]
    fn cells(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        match &self.conn {
            Conn::DuckDb(conn) => {
                let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                let mut rows = stmt.query([]).unwrap_or_else(|e| panic!("{sql}: {e}"));
                let mut out = Vec::new();
                while let Some(row) = rows.next().unwrap() {
                    let n = row.as_ref().column_count();
                    out.push(
                        (0..n)
                            .map(|i| text(row.get::<_, Value>(i).unwrap()))
                            .collect(),
                    );
                }
                out
            }
            Conn::Postgres(client) => client
                .borrow_mut()
                .query(sql, &[])
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .iter()
                .map(|row| {
                    (0..row.len())
                        .map(|i| {
                            row.try_get::<_, Option<PgText>>(i)
                                .unwrap_or_else(|e| panic!("{sql}: column {i}: {e}"))
                                .map(|PgText(s)| s)
                        })
                        .collect()
                })
                .collect(),
        }
    }

    /// Every row of a query, each value as text (`NULL` for null).
    #[track_caller]
    pub fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        self.cells(sql)
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|v| v.unwrap_or_else(|| "NULL".into()))
                    .collect()
            })
            .collect()
    }

    /// The single value of a query, as text.
    #[track_caller]
    pub fn value(&self, sql: &str) -> String {
        let rows = self.rows(sql);
        assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
        rows[0][0].clone()
    }

    #[track_caller]
    pub fn count(&self, sql: &str) -> i64 {
        let value = self.value(sql);
        value
            .parse()
            .unwrap_or_else(|e| panic!("{sql}: {value:?} is not a count: {e}"))
    }

    pub fn table_exists(&self, table: &str) -> bool {
        self.count(&format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = '{table}'"
        )) > 0
    }

    /// Every run, oldest first.
    pub fn runs(&self) -> Vec<Run> {
        let sql =
            "SELECT execution_id, integration, trigger, status, message, file_name, content_hash,
                CAST(business_date AS VARCHAR), forced, input_rows, success_rows, error_rows,
                skipped_rows, inserted, updated, deleted, unchanged, subscribed, unsubscribed
             FROM dropsync_runs ORDER BY started_at, execution_id";
        self.cells(sql)
            .into_iter()
            .map(|r| {
                let text = |i: usize| {
                    r[i].clone()
                        .unwrap_or_else(|| panic!("{sql}: column {i} is NULL"))
                };
                let int = |i: usize| text(i).parse::<i64>().unwrap();
                Run {
                    execution_id: text(0),
                    integration: text(1),
                    trigger: text(2),
                    status: text(3),
                    message: r[4].clone(),
                    file_name: r[5].clone(),
                    content_hash: r[6].clone(),
                    business_date: r[7].clone(),
                    forced: text(8) == "true",
                    input_rows: int(9),
                    success_rows: int(10),
                    error_rows: int(11),
                    skipped_rows: int(12),
                    inserted: int(13),
                    updated: int(14),
                    deleted: int(15),
                    unchanged: int(16),
                    subscribed: int(17),
                    unsubscribed: int(18),
                }
            })
            .collect()
    }

    /// The newest run.
    #[track_caller]
    pub fn last_run(&self) -> Run {
        self.runs().pop().expect("at least one run")
    }

    /// A run's row errors, in line order, then in the schema's field order.
    pub fn row_errors(&self, execution_id: &str) -> Vec<RowError> {
        let sql = format!(
            "SELECT line, record_key, field, message, raw FROM dropsync_row_errors
             WHERE execution_id = '{}' ORDER BY position",
            execution_id.replace('\'', "''")
        );
        self.cells(&sql)
            .into_iter()
            .map(|r| RowError {
                line: r[0].as_deref().unwrap().parse().unwrap(),
                record_key: r[1].clone(),
                field: r[2].clone(),
                message: r[3].clone().unwrap(),
                raw: r[4].clone(),
            })
            .collect()
    }
}

/// A DuckDB value as text: dates as YYYY-MM-DD, numbers as Rust prints them.
fn text(v: Value) -> Option<String> {
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
    Some(match v {
        Value::Null => return None,
        Value::Boolean(b) => b.to_string(),
        Value::TinyInt(i) => i.to_string(),
        Value::SmallInt(i) => i.to_string(),
        Value::Int(i) => i.to_string(),
        Value::BigInt(i) => i.to_string(),
        Value::HugeInt(i) => i.to_string(),
        Value::UTinyInt(i) => i.to_string(),
        Value::USmallInt(i) => i.to_string(),
        Value::UInt(i) => i.to_string(),
        Value::UBigInt(i) => i.to_string(),
        Value::Float(x) => x.to_string(),
        Value::Double(x) => x.to_string(),
        Value::Text(s) => s,
        Value::Date32(d) => (epoch + chrono::Days::new(d as u64)).to_string(),
        Value::Timestamp(unit, t) => {
            let micros = match unit {
                TimeUnit::Second => t * 1_000_000,
                TimeUnit::Millisecond => t * 1_000,
                TimeUnit::Microsecond => t,
                TimeUnit::Nanosecond => t / 1_000,
            };
            chrono::DateTime::from_timestamp_micros(micros)
                .unwrap()
                .naive_utc()
                .to_string()
        }
        other => format!("{other:?}"),
    })
}

/// A PostgreSQL value rendered as `text` renders its DuckDB counterpart:
/// booleans `true`/`false`, numbers as Rust prints them (a numeric
/// exactly, as DuckDB prints a HUGEINT sum), dates ISO, timestamps as
/// chrono prints a `NaiveDateTime` (UTC).
struct PgText(String);

impl<'a> postgres::types::FromSql<'a> for PgText {
    fn from_sql(
        ty: &postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::Type;
        Ok(PgText(match *ty {
            Type::BOOL => bool::from_sql(ty, raw)?.to_string(),
            Type::INT2 => i16::from_sql(ty, raw)?.to_string(),
            Type::INT4 => i32::from_sql(ty, raw)?.to_string(),
            Type::INT8 => i64::from_sql(ty, raw)?.to_string(),
            Type::OID => u32::from_sql(ty, raw)?.to_string(),
            Type::FLOAT4 => f32::from_sql(ty, raw)?.to_string(),
            Type::FLOAT8 => f64::from_sql(ty, raw)?.to_string(),
            Type::NUMERIC => numeric_text(raw)?,
            Type::DATE => chrono::NaiveDate::from_sql(ty, raw)?.to_string(),
            Type::TIMESTAMP => chrono::NaiveDateTime::from_sql(ty, raw)?.to_string(),
            Type::TIMESTAMPTZ => chrono::DateTime::<chrono::Utc>::from_sql(ty, raw)?
                .naive_utc()
                .to_string(),
            Type::JSONB => std::str::from_utf8(raw.get(1..).unwrap_or_default())?.to_string(),
            _ => std::str::from_utf8(raw)?.to_string(),
        }))
    }

    fn accepts(ty: &postgres::types::Type) -> bool {
        use postgres::types::Type;
        [
            Type::BOOL,
            Type::INT2,
            Type::INT4,
            Type::INT8,
            Type::OID,
            Type::FLOAT4,
            Type::FLOAT8,
            Type::NUMERIC,
            Type::DATE,
            Type::TIMESTAMP,
            Type::TIMESTAMPTZ,
            Type::TEXT,
            Type::VARCHAR,
            Type::BPCHAR,
            Type::NAME,
            Type::UNKNOWN,
            Type::JSON,
            Type::JSONB,
        ]
        .contains(ty)
    }
}

/// A PostgreSQL numeric's binary form (base-10000 digits) as decimal text,
/// with as many fraction digits as its scale.
fn numeric_text(raw: &[u8]) -> Result<String, Box<dyn std::error::Error + Sync + Send>> {
    let word = |i: usize| -> Result<u16, Box<dyn std::error::Error + Sync + Send>> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "a short numeric".into())
    };
    let (ndigits, weight, sign, scale) = (
        word(0)? as usize,
        word(1)? as i16 as i32,
        word(2)?,
        word(3)? as usize,
    );
    if sign == 0xC000 {
        return Ok("NaN".into());
    }
    let digit = |power: i32| -> Result<u16, Box<dyn std::error::Error + Sync + Send>> {
        let index = weight - power;
        if index < 0 || index as usize >= ndigits {
            Ok(0)
        } else {
            word(4 + index as usize)
        }
    };
    let mut int = String::new();
    for power in (0..=weight.max(0)).rev() {
        let d = digit(power)?;
        if int.is_empty() {
            if d != 0 {
                int = d.to_string();
            }
        } else {
            int.push_str(&format!("{d:04}"));
        }
    }
    if int.is_empty() {
        int.push('0');
    }
    let mut fraction = String::new();
    let mut power = -1;
    while fraction.len() < scale {
        fraction.push_str(&format!("{:04}", digit(power)?));
        power -= 1;
    }
    fraction.truncate(scale);
    let sign = if sign == 0x4000 { "-" } else { "" };
    Ok(if scale == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{fraction}")
    })
}

/// Rows written as string slices, for comparing with `Db::rows`.
pub fn table<const N: usize>(rows: &[[&str; N]]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| r.iter().map(|v| v.to_string()).collect())
        .collect()
}

/// A config holding one `accounts` integration (snapshot mode) reading
/// `drops/accounts_YYYYMMDD.csv`, with `extra` lines added to it.
pub fn accounts_config(extra: &str) -> String {
    format!(
        "[integrations.accounts]\n\
         dataset = \"accounts\"\n\
         source = {{ type = \"folder\", path = \"drops\" }}\n\
         pattern = \"accounts_{{date:%Y%m%d}}.csv\"\n\
         {extra}\n"
    )
}

pub const ACCOUNTS_HEADER: &str = "AccountID,ParentID,Name,Type,Plan,Seats,CreatedDate\n";

/// Six parent accounts A1..A6, Seats 10..60: a first snapshot.
pub fn six_accounts() -> String {
    let mut s = ACCOUNTS_HEADER.to_string();
    for i in 1..=6 {
        s.push_str(&format!(
            "A{i},,Account {i},parent,pro,{},2020-01-0{i}\n",
            i * 10
        ));
    }
    s
}

/// The accounts table as (AccountID, Name, Seats), by key.
/// (Column names are quoted: a PostgreSQL store keeps their case.)
pub fn accounts(db: &Db) -> Vec<Vec<String>> {
    db.rows(r#"SELECT "AccountID", "Name", "Seats" FROM accounts ORDER BY "AccountID""#)
}

/// A workspace whose `accounts` integration already applied `six_accounts`
/// as the snapshot of 2026-01-01.
pub fn with_six_accounts(extra: &str) -> Workspace {
    let ws = Workspace::new(&accounts_config(extra));
    ws.drop_file("accounts_20260101.csv", six_accounts());
    ws.dropsync(&["run"]).code(0);
    ws
}

/// `with_six_accounts`, on a store of `kind`.
pub fn with_six_accounts_on(kind: StoreKind, extra: &str) -> StoreWorkspace {
    let ws = workspace_on(kind, &accounts_config(extra));
    ws.drop_file("accounts_20260101.csv", six_accounts());
    ws.dropsync(&["run"]).code(0);
    ws
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// What `six_accounts()` leaves in the accounts table: (AccountID, Name, Seats).
pub fn six_accounts_table() -> Vec<Vec<String>> {
    table(&[
        ["A1", "Account 1", "10"],
        ["A2", "Account 2", "20"],
        ["A3", "Account 3", "30"],
        ["A4", "Account 4", "40"],
        ["A5", "Account 5", "50"],
        ["A6", "Account 6", "60"],
    ])
}

/// A small deterministic generator (SplitMix64): the same seed gives the
/// same scenarios on every machine.
pub struct Random(pub u64);

impl Random {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A random non-empty subset of `items`, at most `max` long, in order.
    pub fn subset<T: Clone>(&mut self, items: &[T], max: usize) -> Vec<T> {
        let mut indexes: Vec<usize> = (0..items.len()).collect();
        for i in (1..indexes.len()).rev() {
            indexes.swap(i, self.below(i + 1));
        }
        let mut chosen: Vec<usize> = indexes[..1 + self.below(max.min(items.len()))].to_vec();
        chosen.sort();
        chosen.into_iter().map(|i| items[i].clone()).collect()
    }
}

/// A throwaway PostgreSQL cluster, one per test process: `initdb` into a
/// temporary directory (as the unprivileged `postgres` account when the
/// tests run as root, since the server refuses root), started on a free
/// loopback port with its socket in that directory, password (SCRAM)
/// authentication for every TCP login. Stopped and removed when the test
/// process ends, and by a watchdog should the process be killed.
pub struct PgCluster {
    pub port: u16,
    dir: PathBuf,
    pid: u32,
    admin_password: String,
    /// The role the stores log in as, with this password.
    pub role: String,
    pub password: String,
}

/// The superuser that creates each test's database.
const PG_ADMIN: &str = "dropsync_admin";

/// The cluster of this test process, started on first use.
pub fn pg_cluster() -> &'static PgCluster {
    static CLUSTER: std::sync::OnceLock<PgCluster> = std::sync::OnceLock::new();
    CLUSTER.get_or_init(|| {
        let cluster = PgCluster::start();
        extern "C" fn stop_cluster() {
            if let Some(cluster) = CLUSTER.get() {
                cluster.stop();
            }
        }
        // SAFETY: registers a plain function to run at process exit.
        unsafe { libc::atexit(stop_cluster) };
        cluster
    })
}

/// The directory of Debian's PostgreSQL server programs (the newest
/// installed major version).
fn pg_bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/test-servers installs Debian's postgresql)")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((major, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("a PostgreSQL server under /usr/lib/postgresql/*/bin")
        .1
}

impl PgCluster {
    fn start() -> PgCluster {
        let bin = pg_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("dropsync-pg-")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        // The server runs as an ordinary account: `postgres` when we are
        // root (Debian's package creates it), else ourselves.
        let account = if unsafe { libc::geteuid() } == 0 {
            let name = std::ffi::CString::new("postgres").unwrap();
            // SAFETY: getpwnam returns a pointer to a static record or null.
            let pw = unsafe { libc::getpwnam(name.as_ptr()) };
            assert!(
                !pw.is_null(),
                "no `postgres` account (scripts/test-servers installs Debian's postgresql)"
            );
            // SAFETY: checked non-null above.
            let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
            let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: chown on a path we own.
            assert_eq!(unsafe { libc::chown(path.as_ptr(), uid, gid) }, 0);
            Some((uid, gid))
        } else {
            None
        };
        let as_server = |program: &str| {
            let mut cmd = Command::new(bin.join(program));
            if let Some((uid, gid)) = account {
                use std::os::unix::process::CommandExt;
                cmd.uid(uid).gid(gid);
            }
            cmd
        };
        let admin_password = format!("admin-{}", unique_suffix());
        let password = format!("pw-{}", unique_suffix());
        let pwfile = dir.join("admin.pw");
        std::fs::write(&pwfile, &admin_password).unwrap();
        if let Some((uid, gid)) = account {
            let path = std::ffi::CString::new(pwfile.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: chown on a file we just wrote.
            unsafe { libc::chown(path.as_ptr(), uid, gid) };
        }
        // TLS with a certificate for 127.0.0.1 signed by a test CA
        // (`ca.pem`), so `verify-full` has something to verify.
        make_ca(&dir, "ca");
        openssl(
            &dir,
            "req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr",
        );
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        openssl(
            &dir,
            "x509 -req -days 2 -CAcreateserial -in server.csr -CA ca.pem -CAkey ca.key -extfile server.ext -out server.pem",
        );
        for file in ["server.key", "server.pem"] {
            let path = dir.join(file);
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            if let Some((uid, gid)) = account {
                let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
                // SAFETY: chown on a file we just wrote.
                unsafe { libc::chown(path.as_ptr(), uid, gid) };
            }
        }
        let data = dir.join("data");
        let out = as_server("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                PG_ADMIN,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .args(["-E", "UTF8", "--no-locale", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_file(&pwfile);
        let port = crate::servers::free_port();
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let child = as_server("postgres")
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(&dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "password_encryption=scram-sha-256"])
            .args(["-c", "max_connections=200", "-c", "ssl=on"])
            .arg("-c")
            .arg(format!(
                "ssl_cert_file={}",
                dir.join("server.pem").display()
            ))
            .arg("-c")
            .arg(format!("ssl_key_file={}", dir.join("server.key").display()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("postgres starts");
        let pid = child.id();
        // Should this process be killed outright, nothing runs at exit: a
        // watchdog stops the server and removes its directory then.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(
                "while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; kill -QUIT \"$2\" 2>/dev/null; sleep 2; rm -rf \"$3\"",
            )
            .args(["watchdog", &std::process::id().to_string(), &pid.to_string()])
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        std::mem::forget(child);
        let cluster = PgCluster {
            port,
            dir,
            pid,
            admin_password,
            role: "dropsync_test".into(),
            password,
        };
        let mut admin = cluster.wait_for_admin();
        admin
            .batch_execute(&format!(
                "CREATE ROLE {} LOGIN PASSWORD '{}'",
                cluster.role, cluster.password
            ))
            .expect("the test role is created");
        cluster
    }

    /// The CA that signed the server's certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A session as the superuser, once the server accepts it.
    fn wait_for_admin(&self) -> postgres::Client {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            match self.admin() {
                Ok(client) => return client,
                Err(e) if std::time::Instant::now() > deadline => {
                    let log =
                        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                    panic!("PostgreSQL did not start: {e}\n{log}");
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
    }

    pub fn admin(&self) -> Result<postgres::Client, postgres::Error> {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user(PG_ADMIN)
            .password(&self.admin_password)
            .dbname("postgres")
            .connect(postgres::NoTls)
    }

    fn stop(&self) {
        // SIGINT: the server's fast shutdown.
        // SAFETY: signals the server this process started.
        unsafe { libc::kill(self.pid as i32, libc::SIGINT) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
            && std::time::Instant::now() < deadline
        {
            // Reap it: it is this process's child.
            // SAFETY: waitpid on our own child, without blocking.
            unsafe { libc::waitpid(self.pid as i32, std::ptr::null_mut(), libc::WNOHANG) };
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A self-signed CA, `NAME.pem` with its key `NAME.key`, in `dir`.
pub fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &format!(
            "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN={name} -keyout {name}.key -out {name}.pem"
        ),
    );
}

#[track_caller]
fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .args(args.split(' '))
        .current_dir(dir)
        .output()
        .expect("openssl runs (scripts/test-servers installs it)");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn unique_suffix() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", t, std::process::id())
}

/// A fresh database in the process's cluster, owned by the test role;
/// dropped (with any session still in it) when this is.
pub struct PgDatabase {
    pub name: String,
}

impl PgDatabase {
    pub fn new() -> PgDatabase {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let cluster = pg_cluster();
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        cluster
            .admin()
            .and_then(|mut admin| {
                admin.batch_execute(&format!("CREATE DATABASE {name} OWNER {}", cluster.role))
            })
            .expect("a test database is created");
        PgDatabase { name }
    }

    /// `postgres://role@127.0.0.1:port/name`: never a password.
    pub fn url(&self) -> String {
        let cluster = pg_cluster();
        format!(
            "postgres://{}@127.0.0.1:{}/{}",
            cluster.role, cluster.port, self.name
        )
    }

    /// A session as the test role, to look at what a store holds.
    pub fn client(&self) -> postgres::Client {
        let cluster = pg_cluster();
        postgres::Config::new()
            .host("127.0.0.1")
            .port(cluster.port)
            .user(&cluster.role)
            .password(&cluster.password)
            .dbname(&self.name)
            .connect(postgres::NoTls)
            .expect("the test role logs in")
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Ok(mut admin) = pg_cluster().admin() {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// Which store a behavioural test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    DuckDb,
    Postgres,
}

/// A workspace whose store is `kind`: the config as given for DuckDB; for
/// PostgreSQL, a fresh database named by `[store] url`, the password in a
/// file beside the config.
pub fn workspace_on(kind: StoreKind, config: &str) -> StoreWorkspace {
    match kind {
        StoreKind::DuckDb => StoreWorkspace {
            ws: Workspace::new(config),
            pg: None,
        },
        StoreKind::Postgres => {
            let pg = PgDatabase::new();
            let store = format!(
                "url = \"{}\"\npassword_file = \"pg.pass\"\nsslmode = \"disable\"\n",
                pg.url()
            );
            let config = if config.contains("[store]\n") {
                config.replacen("[store]\n", &format!("[store]\n{store}"), 1)
            } else {
                format!("[store]\n{store}\n{config}")
            };
            let ws = Workspace::new(&config);
            ws.write("pg.pass", format!("{}\n", pg_cluster().password));
            StoreWorkspace { ws, pg: Some(pg) }
        }
    }
}

/// A workspace with its store (the PostgreSQL database lives as long as it).
pub struct StoreWorkspace {
    pub ws: Workspace,
    pub pg: Option<PgDatabase>,
}

impl StoreWorkspace {
    /// Runs statements on the store as a person repairing (or breaking) it
    /// would, outside dropsync.
    #[track_caller]
    pub fn alter_store(&self, sql: &str) {
        match &self.pg {
            // In UTC, as the store keeps its times.
            Some(pg) => pg
                .client()
                .batch_execute(&format!("SET TIME ZONE 'UTC'; {sql}")),
            None => {
                return duckdb::Connection::open(self.store_path())
                    .and_then(|conn| conn.execute_batch(sql))
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The store, whichever it is, opened to read (closed when dropped).
    #[track_caller]
    pub fn db(&self) -> Db {
        match &self.pg {
            Some(pg) => Db::postgres(pg),
            None => self.ws.db(),
        }
    }
}

impl std::ops::Deref for StoreWorkspace {
    type Target = Workspace;
    fn deref(&self) -> &Workspace {
        &self.ws
    }
}

/// Generates one test per store from one body, in the calling module:
/// `NAME::duckdb` and `NAME::postgres`, each calling `body(StoreKind)`
/// (a function beside the macro call).
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident => $body:ident;)+) => {
        $(
            mod $name {
                #[test]
                fn duckdb() {
                    super::$body($crate::common::StoreKind::DuckDb)
                }
                #[test]
                fn postgres() {
                    super::$body($crate::common::StoreKind::Postgres)
                }
            }
        )+
    };
}

/// A user-defined dataset with every type a column can have.
pub const LEDGER_SCHEMA: &str = r#"{
  "fields": [
    {"name": "Entry", "type": "integer"},
    {"name": "Amount", "type": "number"},
    {"name": "Paid", "type": "boolean"},
    {"name": "Booked", "type": "datetime"},
    {"name": "Due", "type": "date"},
    {"name": "At", "type": "time"},
    {"name": "Year", "type": "year"},
    {"name": "Note", "type": "string"}
  ],
  "primaryKey": "Entry",
  "dropsync": {"mode": "snapshot"}
}"#;

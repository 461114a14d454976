//! The DuckDB store: the integrations' target tables, which double as their
//! snapshots (every row carries the integration it came from), and the
//! history of every run with its row errors. One file, one writer.

mod apply;
mod browse;
mod changelog;
mod db;
mod export;
mod fetched;
mod handoff;
mod history;
mod outbox;
mod overview;
mod postgres;
mod unchanged;
mod unsubscribes;
mod workers;

use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;
use duckdb::Connection;

pub(crate) use db::{Backend, Db, DbError, Row, Value};

pub use apply::{ApplyRequest, ChangeSet, FieldChange, Outcome, Prefiltered, Sample, TargetTable};
pub use browse::{RunFilter, RunPage};
pub use changelog::{ChangeFilter, ChangeKind, ChangeRecord, RowAction, json_text};
pub use export::{ExportFormat, TableExport};
pub use handoff::Handoff;
pub use history::{FailureKind, RunRecord, RunStatus};
pub use outbox::{PendingDelivery, Undelivered};
pub use overview::HistoryGlance;
pub use postgres::{PasswordSource, PgConnect, PgConnectError, PgSettings, SslMode, mask_password};
pub use unchanged::{LoadedHashes, RAW_HASH, ROW_HASH, StoredHashes, row_hashes};
pub use unsubscribes::{FormulaCells, UnsubscribeColumns, UnsubscribeFilter, spreadsheet_safe};
pub use workers::{Hold, SharedState, Taken, worker_id};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the store {path} is in use by another dropsync process (a daemon or a run still going); wait for it or stop it. ({detail})"
    )]
    Locked { path: PathBuf, detail: String },
    #[error("cannot open the store {path}: {source}")]
    Open {
        path: PathBuf,
        source: Box<duckdb::Error>,
    },
    #[error("store {path}: {context}: {source}")]
    Query {
        path: PathBuf,
        context: String,
        source: Box<DbError>,
    },
    #[error("store {path}: {message}")]
    Other { path: PathBuf, message: String },
    /// A PostgreSQL store that cannot be reached (or logged in to).
    #[error(transparent)]
    Unreachable(#[from] PgConnectError),
    /// A PostgreSQL store answered with an error.
    #[error("store {store}: {message}")]
    Postgres { store: String, message: String },
    /// Committed changes could not be written into the store file and
    /// synced to disk (a failed write or fsync).
    #[error("store {path}: cannot write the committed changes to disk: {source}")]
    Flush {
        path: PathBuf,
        source: Box<duckdb::Error>,
    },
}

/// An open store.
pub struct Store {
    db: Db,
    /// The DuckDB file, or a PostgreSQL store's URL without its password:
    /// what messages name.
    path: PathBuf,
    /// Opened read-only: no process holds the store for writing, so no run
    /// can be in progress.
    read_only: bool,
    /// Who wants which events (`[[notify]]`): each event a run makes gets a
    /// delivery per receiver that wants it, in the run's own transaction.
    notifiers: Vec<crate::notify::NotifierConfig>,
    /// Who wants the changes applied runs make (`[[subscribe]]`): each
    /// applied run gets a delivery per subscriber that may want them.
    subscribers: Vec<crate::feed::SubscriberConfig>,
    /// What DuckDB may hold while it applies a batch, once
    /// `limit_memory` has set it.
    memory: std::cell::RefCell<Option<handoff::MemoryLimits>>,
}

const MIGRATIONS: &[&str] = &[
    // 1: run history and row errors.
    "
     CREATE TABLE dropsync_runs (
        execution_id VARCHAR NOT NULL,
        integration VARCHAR NOT NULL,
        dataset VARCHAR NOT NULL,
        mode VARCHAR NOT NULL,
        trigger VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        message VARCHAR,
        file_name VARCHAR,
        source VARCHAR,
        staged_path VARCHAR,
        content_hash VARCHAR,
        file_size BIGINT,
        business_date DATE,
        forced BOOLEAN NOT NULL DEFAULT false,
        input_rows BIGINT NOT NULL DEFAULT 0,
        success_rows BIGINT NOT NULL DEFAULT 0,
        error_rows BIGINT NOT NULL DEFAULT 0,
        skipped_rows BIGINT NOT NULL DEFAULT 0,
        inserted BIGINT NOT NULL DEFAULT 0,
        updated BIGINT NOT NULL DEFAULT 0,
        deleted BIGINT NOT NULL DEFAULT 0,
        unchanged BIGINT NOT NULL DEFAULT 0,
        subscribed BIGINT NOT NULL DEFAULT 0,
        unsubscribed BIGINT NOT NULL DEFAULT 0,
        started_at TIMESTAMP NOT NULL,
        completed_at TIMESTAMP
     );
     CREATE TABLE dropsync_row_errors (
        execution_id VARCHAR NOT NULL,
        position BIGINT NOT NULL,
        line BIGINT NOT NULL,
        record_key VARCHAR,
        field VARCHAR,
        message VARCHAR NOT NULL,
        raw VARCHAR
     );",
    // 2: files fetched, so a scan recognises them without reading them again.
    "CREATE TABLE dropsync_fetched (
        integration VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        size BIGINT NOT NULL,
        modified TIMESTAMP,
        content_hash VARCHAR NOT NULL,
        fetched_at TIMESTAMP NOT NULL
     );",
    // 3: when the daemon last fired each schedule, to catch up after downtime.
    "CREATE TABLE dropsync_schedule (
        integration VARCHAR NOT NULL,
        last_fired TIMESTAMP NOT NULL
     );",
    // 4: why a run failed (transient: retried by scans; content: waits for a
    // person), and which attempt at its file a run is.
    "ALTER TABLE dropsync_runs ADD COLUMN failure VARCHAR;
     ALTER TABLE dropsync_runs ADD COLUMN attempt BIGINT DEFAULT 1;",
    // 5: events (alerts), and their deliveries to each receiver.
    "CREATE TABLE dropsync_events (
        event_id VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        integration VARCHAR NOT NULL,
        execution_id VARCHAR,
        summary VARCHAR NOT NULL,
        dedup_key VARCHAR,
        created_at TIMESTAMP NOT NULL
     );
     CREATE TABLE dropsync_outbox (
        event_id VARCHAR NOT NULL,
        notifier VARCHAR NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_at TIMESTAMP NOT NULL,
        delivered_at TIMESTAMP,
        last_error VARCHAR
     );",
    // 6: a delivery being sent: claimed by the sender before it sends, so
    // no other sender takes it meanwhile; cleared when marked.
    "ALTER TABLE dropsync_outbox ADD COLUMN claimed_at TIMESTAMP;",
    // 7: the change log: every row an applied batch changed, and each
    // applied run's place in it (the highest sequence number at its commit).
    "CREATE TABLE dropsync_changes (
        seq BIGINT NOT NULL,
        execution_id VARCHAR NOT NULL,
        integration VARCHAR NOT NULL,
        dataset VARCHAR NOT NULL,
        target_table VARCHAR NOT NULL,
        business_date DATE,
        record_key JSON NOT NULL,
        kind VARCHAR NOT NULL,
        action VARCHAR NOT NULL,
        fields JSON NOT NULL,
        recorded_at TIMESTAMP NOT NULL
     );
     CREATE TABLE dropsync_change_runs (
        execution_id VARCHAR NOT NULL,
        integration VARCHAR NOT NULL,
        target_table VARCHAR NOT NULL,
        business_date DATE,
        last_seq BIGINT NOT NULL,
        applied_at TIMESTAMP NOT NULL
     );",
    // 8: the change feed's deliveries share the outbox with alerts: which
    // kind each is, and how far a subscriber has accepted a run's changes.
    "ALTER TABLE dropsync_outbox ADD COLUMN delivery VARCHAR DEFAULT 'alert';
     ALTER TABLE dropsync_outbox ADD COLUMN feed_cursor BIGINT;",
];

impl Store {
    /// Opens (creating if needed) the store at `path`, brings its tables up
    /// to date, and marks runs a crash left `running` as `interrupted`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_notifying(path, &[])
    }

    /// `open`, routing events to `notifiers` from the start: a run a crash
    /// interrupted is a failed run to them, told as the store is opened.
    pub fn open_notifying(
        path: &Path,
        notifiers: &[crate::notify::NotifierConfig],
    ) -> Result<Store, StoreError> {
        keep_new_files_private();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::source::create_private_dir(dir).map_err(|e| StoreError::Other {
                path: path.to_path_buf(),
                message: format!("cannot create {}: {e}", dir.display()),
            })?;
        }
        let conn = Connection::open(path).map_err(|source| open_error(path, source))?;
        // Nothing here reads a table in the order its rows went in (every
        // listing and export says ORDER BY; the change log has its sequence
        // numbers). Keeping that order costs a large batch dearly: DuckDB
        // holds each finished part of an INSERT … SELECT until the parts
        // before it are written, which under the memory limit spills and
        // reloads them (a 10-million-row first load spent most of its time
        // there).
        conn.execute_batch("SET preserve_insertion_order = false")
            .map_err(|source| open_error(path, source))?;
        let store = Store {
            db: Db::DuckDb(conn),
            path: path.to_path_buf(),
            read_only: false,
            notifiers: notifiers.to_vec(),
            subscribers: Vec::new(),
            memory: Default::default(),
        };
        store.migrate()?;
        store.mark_interrupted()?;
        store.release_claims()?;
        Ok(store)
    }

    /// Opens the configured store for writing (`open_notifying` for a
    /// DuckDB file).
    pub fn open_at(
        location: &crate::config::StoreLocation,
        notifiers: &[crate::notify::NotifierConfig],
    ) -> Result<Store, StoreError> {
        match location {
            crate::config::StoreLocation::DuckDb(path) => Store::open_notifying(path, notifiers),
            crate::config::StoreLocation::Postgres(pg) => Store::open_postgres(pg, notifiers),
        }
    }

    /// Opens a PostgreSQL store, bringing its tables up to date (the schema
    /// is common to both stores). Unlike a DuckDB file, a PostgreSQL store
    /// is shared: other workers' runs may be in progress, so nothing is
    /// marked interrupted or released here; that happens per integration,
    /// by the worker that takes it over.
    fn open_postgres(
        pg: &PgConnect,
        notifiers: &[crate::notify::NotifierConfig],
    ) -> Result<Store, StoreError> {
        // Files this process writes for the store (the rows it copies in)
        // hold partners' data.
        keep_new_files_private();
        let mut client = pg.connect()?;
        postgres::migrate(&mut client, MIGRATIONS).map_err(|message| StoreError::Postgres {
            store: pg.display(),
            message,
        })?;
        Ok(Store {
            db: Db::Postgres {
                client: std::cell::RefCell::new(client),
                connect: Box::new(pg.clone()),
            },
            path: PathBuf::from(pg.display()),
            read_only: false,
            notifiers: notifiers.to_vec(),
            subscribers: Vec::new(),
            memory: Default::default(),
        })
    }

    /// Opens the configured store to read it (`open_read_only` for a
    /// DuckDB file).
    pub fn open_read_only_at(location: &crate::config::StoreLocation) -> Result<Store, StoreError> {
        match location {
            crate::config::StoreLocation::DuckDb(path) => Store::open_read_only(path),
            // A PostgreSQL store is never read-only in that sense: other
            // workers may be running batches while it is read.
            crate::config::StoreLocation::Postgres(pg) => Store::open_postgres(pg, &[]),
        }
    }

    /// Opens an existing store read-only (history, show, export). Fails with
    /// a clear message if another process holds it for writing.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        if !path.exists() {
            return Err(StoreError::Other {
                path: path.to_path_buf(),
                message: "no store yet: nothing has been synced (run `dropsync run` first)".into(),
            });
        }
        let config = duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .map_err(|source| open_error(path, source))?;
        let conn =
            Connection::open_with_flags(path, config).map_err(|source| open_error(path, source))?;
        Ok(Store {
            db: Db::DuckDb(conn),
            path: path.to_path_buf(),
            read_only: true,
            notifiers: Vec::new(),
            subscribers: Vec::new(),
            memory: Default::default(),
        })
    }

    /// This store, routing the changes of each applied run to
    /// `subscribers` (the change feed).
    pub fn feeding(mut self, subscribers: &[crate::feed::SubscriberConfig]) -> Store {
        self.subscribers = subscribers.to_vec();
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves a flushed DuckDB store open, for the process's exit to close:
    /// closing it would only join DuckDB's worker threads and hand their
    /// memory back, 30 to 45 ms of a nightly sync of a million rows. Nothing
    /// is lost: the store file holds every commit (`flush`), what a
    /// checkpoint put off is in the write-ahead log, and the file's lock
    /// goes with the process. A PostgreSQL session is closed as usual, so
    /// the server sees it end.
    pub fn leave_to_exit(self) {
        if self.db.duck().is_some() {
            std::mem::forget(self);
        }
    }

    /// Writes everything committed into the store file and syncs it to disk
    /// (DuckDB's CHECKPOINT). DuckDB checkpoints on its own when the store
    /// is closed, but a failure there (a failed fsync) is swallowed: this
    /// is where dropsync sees it.
    ///
    /// A checkpoint cannot run while another connection of this process (a
    /// console or API reader, the outbox) has a transaction open. That is no
    /// durability failure: DuckDB syncs its write-ahead log at every commit
    /// and fails the commit when that sync fails, so what was committed is
    /// on disk in the log. The checkpoint is tried again for a moment, then
    /// left to the next flush.
    pub fn flush(&self) -> Result<(), StoreError> {
        // PostgreSQL has made a commit durable before it answers it.
        let Some(conn) = self.db.duck().filter(|_| !self.read_only) else {
            return Ok(());
        };
        const ATTEMPTS: u32 = 40;
        let started = std::time::Instant::now();
        for attempt in 1..=ATTEMPTS {
            match conn.execute_batch("CHECKPOINT") {
                Ok(()) => {
                    tracing::debug!(
                        step = "checkpoint",
                        ms = started.elapsed().as_millis() as u64,
                        "store flushed"
                    );
                    return Ok(());
                }
                Err(e) if held_off_by_other_transactions(&e) => {
                    if attempt == ATTEMPTS {
                        tracing::warn!(
                            store = %self.path.display(),
                            "checkpoint put off: other transactions stay open; the committed changes are in the write-ahead log"
                        );
                        return Ok(());
                    }
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                Err(source) => {
                    return Err(StoreError::Flush {
                        path: self.path.clone(),
                        source: Box::new(source),
                    });
                }
            }
        }
        Ok(())
    }

    pub(crate) fn query_error<E: Into<DbError>>(
        &self,
        context: impl Into<String>,
    ) -> impl FnOnce(E) -> StoreError + '_ {
        let context = context.into();
        move |source| StoreError::Query {
            path: self.path.clone(),
            context,
            source: Box::new(source.into()),
        }
    }

    fn migrate(&self) -> Result<(), StoreError> {
        self.db
            .batch("CREATE TABLE IF NOT EXISTS dropsync_meta (version INTEGER NOT NULL);")
            .map_err(self.query_error("creating the metadata table"))?;
        let version: i64 = self
            .db
            .value("SELECT coalesce(max(version), 0) FROM dropsync_meta", &[])
            .map_err(self.query_error("reading the schema version"))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let step = i + 1;
            let batch = format!(
                "BEGIN TRANSACTION; {sql}; DELETE FROM dropsync_meta; INSERT INTO dropsync_meta VALUES ({step}); COMMIT;"
            );
            if let Err(e) = self.db.batch(&batch) {
                self.db.rollback();
                return Err(self.query_error(format!("migration {step}"))(e));
            }
        }
        Ok(())
    }

    /// Marks the runs a stopped process left `running` as `interrupted`,
    /// with a `run_failed` event for each, in one transaction.
    fn mark_interrupted(&self) -> Result<(), StoreError> {
        self.mark_interrupted_where(None)
    }

    /// `mark_interrupted`, for the runs of one integration only: on a
    /// shared (PostgreSQL) store, other workers' runs of other
    /// integrations may be in progress, so a worker marks only what it is
    /// about to sync, and only while no one else syncs it.
    pub fn mark_interrupted_of(&self, integration: &str) -> Result<(), StoreError> {
        self.mark_interrupted_where(Some(integration))
    }

    fn mark_interrupted_where(&self, integration: Option<&str>) -> Result<(), StoreError> {
        let context = "marking interrupted runs";
        let (only, params): (&str, Vec<&dyn db::ToValue>) = match &integration {
            Some(name) => (" AND integration = ?", vec![name]),
            None => ("", Vec::new()),
        };
        let n = self
            .db
            .in_transaction(|| {
                let left: Vec<(String, String, Option<String>)> = self
                    .db
                    .query(
                        &format!(
                            "SELECT execution_id, integration, file_name FROM dropsync_runs
                             WHERE status = 'running'{only} ORDER BY started_at"
                        ),
                        &params,
                    )?
                    .iter()
                    .map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .collect::<Result<_, DbError>>()?;
                let completed = now();
                let mut update: Vec<&dyn db::ToValue> = vec![&completed];
                update.extend(params.iter().copied());
                self.db.execute(
                    &format!(
                        "UPDATE dropsync_runs SET status = 'interrupted', completed_at = ?, message = '{INTERRUPTED}'
                         WHERE status = 'running'{only}"
                    ),
                    &update,
                )?;
                let events: Vec<crate::notify::Event> = left
                    .iter()
                    .map(|(id, integration, file)| {
                        crate::notify::Event::new(
                            crate::notify::EventKind::RunFailed,
                            integration,
                            Some(id),
                            format!(
                                "run interrupted: {INTERRUPTED} ({}, run {id})",
                                file.as_deref().unwrap_or("no file")
                            ),
                        )
                    })
                    .collect();
                self.enqueue_in(&events, None)?;
                Ok::<_, DbError>(left.len())
            })
            .map_err(self.query_error(context))?;
        if n > 0 {
            tracing::warn!(
                runs = n,
                "runs left running by a stopped process are now marked interrupted"
            );
        }
        Ok(())
    }

    /// Whether other processes may sync on this store at the same time (a
    /// PostgreSQL store, shared by workers), so that what a crashed process
    /// left behind is taken over per integration, not when it is opened.
    pub fn is_shared(&self) -> bool {
        self.db.backend() == db::Backend::Postgres
    }

    /// The store's database.
    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    /// Values of `columns` (joined with `|`) present in `table`, for foreign
    /// keys. An absent table has none.
    pub fn key_values(
        &self,
        table: &str,
        columns: &[String],
    ) -> Result<foldhash::HashSet<String>, StoreError> {
        if !self.table_exists(table)? {
            return Ok(Default::default());
        }
        let expr = key_text(columns, None);
        let sql = format!("SELECT DISTINCT {expr} FROM {}", ident(table));
        let mut out = foldhash::HashSet::default();
        self.db
            .for_each(&sql, &[], |r| {
                if let Some(v) = r.get::<Option<String>>(0)? {
                    out.insert(v);
                }
                Ok::<(), DbError>(())
            })
            .map_err(self.query_error(format!("reading keys of {table}")))?;
        Ok(out)
    }

    /// When the daemon last fired `integration`'s schedule (UTC).
    pub fn last_fired(&self, integration: &str) -> Result<Option<NaiveDateTime>, StoreError> {
        self.db
            .value(
                "SELECT max(last_fired) FROM dropsync_schedule WHERE integration = ?",
                &[&integration],
            )
            .map_err(self.query_error("reading schedule state"))
    }

    /// Remembers that `integration`'s schedule fired at `at` (UTC).
    pub fn record_fired(&self, integration: &str, at: NaiveDateTime) -> Result<(), StoreError> {
        self.db
            .in_transaction(|| {
                self.db.execute(
                    "DELETE FROM dropsync_schedule WHERE integration = ?",
                    &[&integration],
                )?;
                self.db.execute(
                    "INSERT INTO dropsync_schedule VALUES (?, ?)",
                    &[&integration, &at],
                )
            })
            .map(drop)
            .map_err(self.query_error("recording schedule state"))
    }

    pub fn column_exists(&self, table: &str, column: &str) -> Result<bool, StoreError> {
        let n: i64 = self
            .db
            .value(
                "SELECT count(*) FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = ? AND column_name = ?",
                &[&table, &column],
            )
            .map_err(self.query_error("looking up a column"))?;
        Ok(n > 0)
    }

    pub fn table_exists(&self, table: &str) -> Result<bool, StoreError> {
        let n: i64 = self
            .db
            .value(
                "SELECT count(*) FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_name = ?",
                &[&table],
            )
            .map_err(self.query_error("looking up a table"))?;
        Ok(n > 0)
    }
}

/// DuckDB creates the database file, its write-ahead log and its spill
/// files with the process's umask, and so does the hand-off of valid rows;
/// all of them hold partners' data. From here on this process creates files
/// for their owner only (a umask of 022 would make them world-readable).
pub fn keep_new_files_private() {
    // SAFETY: umask(2) only swaps the process's file creation mask; it
    // cannot fail and touches no memory.
    unsafe {
        let old = libc::umask(0o077);
        libc::umask(old | 0o077);
    }
}

fn open_error(path: &Path, source: duckdb::Error) -> StoreError {
    let text = source.to_string();
    if text.contains("Could not set lock") || text.contains("Conflicting lock") {
        StoreError::Locked {
            path: path.to_path_buf(),
            detail: text.lines().next().unwrap_or_default().to_string(),
        }
    } else {
        StoreError::Open {
            path: path.to_path_buf(),
            source: Box::new(source),
        }
    }
}

/// The version of the DuckDB library this process runs on, as it says
/// itself (`v1.5.6`).
pub fn duckdb_version() -> String {
    // SAFETY: duckdb_library_version takes nothing and returns a pointer to
    // a static, NUL-terminated string owned by the library.
    let version = unsafe { std::ffi::CStr::from_ptr(duckdb::ffi::duckdb_library_version()) };
    version.to_string_lossy().into_owned()
}

/// What an interrupted run's record says.
const INTERRUPTED: &str = "the process stopped before the run finished; nothing of it was applied";

/// A quoted SQL identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// SQL for a key as text, parts joined with `|` (as row errors show keys).
pub(crate) fn key_text(columns: &[String], alias: Option<&str>) -> String {
    let parts: Vec<String> = columns
        .iter()
        .map(|c| match alias {
            Some(a) => format!("CAST({a}.{} AS VARCHAR)", ident(c)),
            None => format!("CAST({} AS VARCHAR)", ident(c)),
        })
        .collect();
    format!("concat_ws('|', {})", parts.join(", "))
}

/// Now, in UTC, as the store keeps times.
pub(crate) fn now() -> NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

/// DuckDB refuses a CHECKPOINT while other transactions are open; it says so
/// only in its message (a transaction-context error, not an I/O one).
fn held_off_by_other_transactions(error: &duckdb::Error) -> bool {
    let text = error.to_string();
    text.contains("Cannot CHECKPOINT") && text.contains("transactions")
}

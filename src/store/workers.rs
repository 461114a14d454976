//! Several daemons (workers) on one PostgreSQL store share the
//! integrations: an integration is synced by one worker at a time.
//!
//! A worker takes an integration with a session-level advisory lock, on the
//! very session whose transactions apply its batches, and holds it to the
//! end of the run. A worker that dies takes both with it: its session ends,
//! the server rolls back the open transaction and drops the lock together,
//! so no worker can ever commit a batch for an integration another worker
//! has since taken (fencing, without lease clocks). A process killed on a
//! live machine closes its socket at once; a machine that vanishes is
//! noticed by TCP keepalives (see `PgConnect::connect`), within about 30
//! seconds. Another worker then finds the integration free, marks the dead
//! worker's run interrupted, and syncs it again.
//!
//! A DuckDB store has one writer process: there, taking an integration
//! always succeeds and holds nothing.

use std::collections::HashMap;

use sha2::Digest;

use super::{Store, StoreError};

/// This process, as the workers of a shared store name each other
/// (`host:pid`); its sessions carry it as their `application_name`.
pub fn worker_id() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into `buf`.
    let host = if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "localhost".into()
    };
    format!("{host}:{}", std::process::id())
}

/// What a worker's sessions call themselves in `pg_stat_activity`.
pub(crate) fn application_name() -> String {
    format!("{APPLICATION_PREFIX}{}", worker_id())
}

const APPLICATION_PREFIX: &str = "dropsync ";

/// The advisory lock key of an integration: 64 bits of a SHA-256 of its
/// name, in a space of dropsync's own (the prefix), so two integrations
/// practically never share one.
pub(crate) fn integration_key(name: &str) -> i64 {
    let digest = sha2::Sha256::digest(format!("dropsync integration\0{name}").as_bytes());
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// What a target table needs before a batch is applied to it.
pub(super) enum TableState {
    /// A DuckDB store: one writer, the DDL is done as it always was.
    OneWriter,
    /// A shared store's table with every column and its index: no DDL.
    AsWanted,
    /// A shared store's table to create, widen or index.
    NeedsDdl,
}

/// An integration this worker holds for a run; let go when dropped.
#[must_use = "the integration is let go when this is dropped"]
pub struct Hold<'a> {
    store: &'a Store,
    /// The lock held (none on a DuckDB store).
    key: Option<i64>,
    integration: String,
}

impl std::fmt::Debug for Hold<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold")
            .field("integration", &self.integration)
            .finish()
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let Some(mut session) = self.store.pg_session() else {
            return;
        };
        // A session that failed has lost the lock with it.
        if let Err(e) = session.execute("SELECT pg_advisory_unlock($1)", &[&key]) {
            tracing::warn!(
                integration = self.integration,
                "cannot let go of the integration: {e}"
            );
        }
    }
}

/// Whether an integration could be taken.
#[derive(Debug)]
pub enum Taken<'a> {
    /// It is this worker's until the hold is dropped.
    Held(Hold<'a>),
    /// Another worker is syncing it.
    Busy {
        /// That worker (`host:pid`), as its session names it.
        worker: String,
    },
}

/// What a worker of a shared store looks at to find work no live worker
/// holds: the schedules' state and the runs in progress.
#[derive(Debug, Default)]
pub struct SharedState {
    /// When each integration's schedule last ran its slot (UTC).
    pub last_fired: HashMap<String, chrono::NaiveDateTime>,
    /// Integrations with a run recorded `running`.
    pub running: Vec<String>,
    /// Integrations some worker holds now (this one included).
    pub held: std::collections::HashSet<String>,
}

impl Store {
    /// The state a worker of a shared store looks for unheld work in, for
    /// `integrations`; empty on a DuckDB store.
    pub fn shared_state(&self, integrations: &[&str]) -> Result<SharedState, StoreError> {
        let Some(mut session) = self.pg_session() else {
            return Ok(SharedState::default());
        };
        let context = "looking for work no worker holds";
        let last_fired = session
            .query(
                "SELECT integration, max(last_fired) FROM dropsync_schedule GROUP BY integration",
                &[],
            )
            .map_err(|e| self.pg_error(context, &e))?
            .iter()
            .filter_map(|row| Some((row.try_get(0).ok()?, row.try_get(1).ok()?)))
            .collect();
        let running = session
            .query(
                "SELECT DISTINCT integration FROM dropsync_runs WHERE status = 'running'",
                &[],
            )
            .map_err(|e| self.pg_error(context, &e))?
            .iter()
            .filter_map(|row| row.try_get(0).ok())
            .collect();
        drop(session);
        let held = self.holders(integrations)?.into_keys().collect();
        Ok(SharedState {
            last_fired,
            running,
            held,
        })
    }

    /// Takes `integration` for a run, unless another worker is syncing it.
    /// Taken on a PostgreSQL store, any run of it still recorded `running`
    /// is a dead worker's (no live one holds it): it is marked interrupted.
    pub fn take(&self, integration: &str) -> Result<Taken<'_>, StoreError> {
        let key = integration_key(integration);
        let got = match self.pg_session() {
            None => {
                return Ok(Taken::Held(Hold {
                    store: self,
                    key: None,
                    integration: integration.to_string(),
                }));
            }
            Some(mut session) => session
                .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                .and_then(|row| row.try_get::<_, bool>(0))
                .map_err(|e| self.pg_error("taking the integration", &e))?,
        };
        if !got {
            let holders = self.holders(&[integration])?;
            let worker = holders
                .get(integration)
                .cloned()
                .unwrap_or_else(|| "another worker".into());
            return Ok(Taken::Busy { worker });
        }
        let hold = Hold {
            store: self,
            key: Some(key),
            integration: integration.to_string(),
        };
        self.mark_interrupted_of(integration)?;
        Ok(Taken::Held(hold))
    }

    /// Which worker (`host:pid`) holds each of `integrations` now; those
    /// nobody syncs are absent. Empty on a DuckDB store.
    pub fn holders(&self, integrations: &[&str]) -> Result<HashMap<String, String>, StoreError> {
        let Some(mut session) = self.pg_session() else {
            return Ok(HashMap::new());
        };
        // An advisory lock on one bigint shows in pg_locks as its high half
        // (classid) and low half (objid), with objsubid 1.
        let rows = session
            .query(
                "SELECT (l.classid::bigint << 32) | l.objid::bigint, a.application_name
                 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                 WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
                   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[],
            )
            .map_err(|e| self.pg_error("reading which worker holds what", &e))?;
        let by_key: HashMap<i64, String> = rows
            .iter()
            .filter_map(|row| {
                let key: i64 = row.try_get(0).ok()?;
                let name: Option<String> = row.try_get(1).ok()?;
                let name = name.unwrap_or_default();
                let worker = name.strip_prefix(APPLICATION_PREFIX).unwrap_or(&name);
                Some((key, worker.to_string()))
            })
            .collect();
        Ok(integrations
            .iter()
            .filter_map(|name| {
                let worker = by_key.get(&integration_key(name))?;
                Some((name.to_string(), worker.clone()))
            })
            .collect())
    }

    /// The PostgreSQL session of this store; none on a DuckDB store.
    fn pg_session(&self) -> Option<std::cell::RefMut<'_, postgres::Client>> {
        self.db.pg()
    }

    /// Whether `target` needs creating, new columns or its index on a
    /// shared store, where such DDL must be done only when needed and in
    /// turns: even `CREATE INDEX IF NOT EXISTS` on an existing index locks
    /// the table against writes until commit, which turns two workers'
    /// batches into the same table into a deadlock (one holds that lock and
    /// waits for the change log's, the other the reverse).
    pub(super) fn table_state(
        &self,
        target: &super::TargetTable,
        index: &str,
    ) -> Result<TableState, StoreError> {
        let Some(mut session) = self.pg_session() else {
            return Ok(TableState::OneWriter);
        };
        let context = "reading the table's columns";
        let existing: Vec<String> = session
            .query(
                "SELECT column_name::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1::text",
                &[&target.name],
            )
            .map_err(|e| self.pg_error(context, &e))?
            .iter()
            .filter_map(|row| row.try_get(0).ok())
            .collect();
        let indexed: i64 = session
            .query_one(
                "SELECT count(*) FROM pg_indexes
                 WHERE schemaname = current_schema() AND tablename = $1::text AND indexname = $2::text",
                &[&target.name, &index],
            )
            .and_then(|row| row.try_get(0))
            .map_err(|e| self.pg_error(context, &e))?;
        let complete = !existing.is_empty()
            && indexed > 0
            && target.columns.iter().all(|c| existing.contains(&c.name));
        Ok(if complete {
            TableState::AsWanted
        } else {
            TableState::NeedsDdl
        })
    }

    fn pg_error(&self, context: &str, e: &postgres::Error) -> StoreError {
        StoreError::Postgres {
            store: self.path.display().to_string(),
            message: format!("{context}: {}", super::postgres::describe(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_integration_has_its_own_lock_key() {
        let names: Vec<String> = (0..10_000).map(|i| format!("feed_{i:05}")).collect();
        let keys: std::collections::HashSet<i64> =
            names.iter().map(|n| integration_key(n)).collect();
        assert_eq!(keys.len(), names.len());
        // The same name is the same key in every worker.
        assert_eq!(integration_key("accounts"), integration_key("accounts"));
    }

    #[test]
    fn a_worker_is_named_by_host_and_process() {
        let id = worker_id();
        let (host, pid) = id.rsplit_once(':').unwrap();
        assert!(!host.is_empty());
        assert_eq!(pid, std::process::id().to_string());
        assert_eq!(application_name(), format!("dropsync {id}"));
    }
}

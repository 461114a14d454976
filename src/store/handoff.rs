//! The validated rows of one batch, as the store reads them: Parquet files
//! written by the pipeline, one per chunk of the file, which DuckDB reads
//! together as one relation. A list of files rather than one, so that the
//! pipeline never holds more than a chunk of rows; every part has the same
//! columns, in the same order.

use std::path::PathBuf;

/// The Parquet files one batch's valid rows are in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Handoff {
    pub parts: Vec<PathBuf>,
}

impl Handoff {
    /// The rows as one DuckDB relation: `read_parquet(['a', 'b', ...])`.
    pub fn relation(&self) -> String {
        let files: Vec<String> = self
            .parts
            .iter()
            .map(|p| format!("'{}'", p.display().to_string().replace('\'', "''")))
            .collect();
        format!("read_parquet([{}])", files.join(", "))
    }
}

/// What DuckDB may hold in memory while it diffs and applies a batch; past
/// it, its joins, sorts and temporary tables spill to disk instead of
/// growing. DuckDB's own default is 80% of the machine's memory, which lets
/// one large sync take the machine from every other process. With 1 GB a
/// 10-million-row day-1 load and day-2 sync each peaked at 1.3 GB for the
/// whole process (the target is 2 GB); the price is spilling on the largest
/// loads. 1.5 GB was weighed on the same 10-million-row day-1 load, one run
/// after the other on the same machine: 9:48 instead of 16:38 (the change
/// log's 10 million rows and their insert spill less), but a peak of
/// 1,970 MiB, too close to 2 GB to promise it. `DROPSYNC_DUCKDB_MEMORY`
/// (e.g. `1.5GB`, `4GB`) sets another where memory allows.
const MEMORY_LIMIT: &str = "1GB";

/// What DuckDB may hold while it joins the file's keys with the stored
/// ones (a two-step sync against stored rows, such as a delta or a file
/// read whole: `Store::joining_keys`; a snapshot read in chunks compares
/// only the rows its lookups left). That join
/// holds a key, a hash and a place for every stored row: at 10 million
/// rows it no longer fit under 1 GB, and spilling it cost 1.2 to 1.9 s of
/// a 5.2 to 5.8 s classify. It runs when nothing else is held: the file's checks are
/// freed, no chunk is in memory, and DuckDB writes nothing yet (the bulk
/// writes are what take DuckDB past its limit on a first load: 2.35 GB of
/// process under 1.5 GB). With 1.5 GB for the join, a 10-million-row day-2
/// sync peaked at 1.10 GB.
const KEY_JOIN_MEMORY_LIMIT: &str = "1.5GB";

/// DuckDB's memory limits while a batch is applied: sizes such as `512MB`
/// or `4GB`, digits and a unit, nothing to quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemoryLimits {
    /// For every step but the key join.
    bulk: String,
    /// For the join of every stored key with the file's.
    key_join: String,
}

impl MemoryLimits {
    /// The limits `DROPSYNC_DUCKDB_MEMORY` sets (one size for every step),
    /// or the defaults when it is unset or not a size.
    fn from_env() -> MemoryLimits {
        let configured = std::env::var("DROPSYNC_DUCKDB_MEMORY").ok();
        match configured.as_deref().map(str::trim).filter(|v| {
            !v.is_empty()
                && v.starts_with(|c: char| c.is_ascii_digit())
                && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
        }) {
            Some(size) => MemoryLimits {
                bulk: size.to_string(),
                key_join: size.to_string(),
            },
            None => MemoryLimits {
                bulk: MEMORY_LIMIT.to_string(),
                key_join: KEY_JOIN_MEMORY_LIMIT.to_string(),
            },
        }
    }
}

impl super::Store {
    /// Limits DuckDB's memory for the batches to come, spilling into
    /// `spill` (created owner-only: it holds the rows being applied).
    pub fn limit_memory(&self, spill: &std::path::Path) -> Result<(), super::StoreError> {
        // A PostgreSQL server's memory is its own configuration's.
        if self.db().duck().is_none() {
            return Ok(());
        }
        crate::source::create_private_dir(spill).map_err(|e| super::StoreError::Other {
            path: self.path().to_path_buf(),
            message: format!("cannot create {}: {e}", spill.display()),
        })?;
        self.limit_memory_to(spill, MemoryLimits::from_env())
    }

    fn limit_memory_to(
        &self,
        spill: &std::path::Path,
        limits: MemoryLimits,
    ) -> Result<(), super::StoreError> {
        let Some(conn) = self.db().duck() else {
            return Ok(());
        };
        let spill = spill.display().to_string().replace('\'', "''");
        conn.execute_batch(&format!(
            "SET memory_limit = '{}'; SET temp_directory = '{spill}';",
            limits.bulk
        ))
        .map_err(self.query_error("limiting DuckDB's memory"))?;
        *self.memory.borrow_mut() = Some(limits);
        Ok(())
    }

    /// Runs `join` (the statements that join every stored key with the
    /// file's) under the key join's memory limit, and sets the bulk limit
    /// back after it, whatever it returned.
    pub(crate) fn joining_keys<T>(
        &self,
        join: impl FnOnce() -> Result<T, super::StoreError>,
    ) -> Result<T, super::StoreError> {
        let limits = self.memory.borrow().clone();
        let (Some(conn), Some(limits)) = (self.db().duck(), limits) else {
            return join();
        };
        if limits.key_join == limits.bulk {
            return join();
        }
        let set = |size: &str| {
            conn.execute_batch(&format!("SET memory_limit = '{size}'"))
                .map_err(self.query_error("limiting DuckDB's memory"))
        };
        set(&limits.key_join)?;
        let joined = join();
        let restored = set(&limits.bulk);
        let joined = joined?;
        restored.map(|_| joined)
    }
}

impl super::Store {
    /// The batch's rows as a relation this store's database reads: DuckDB
    /// reads the Parquet parts where they are; PostgreSQL gets them copied
    /// in bulk (COPY) into the temporary table `incoming`, in the open
    /// transaction, so the diff runs inside the server.
    pub(crate) fn incoming(&self, rows: &Handoff) -> Result<String, super::StoreError> {
        let Some(mut client) = self.db().pg() else {
            return Ok(rows.relation());
        };
        let context = "copying the rows into PostgreSQL";
        let pg = super::Backend::Postgres;
        // The parts are read by an in-memory DuckDB of this process, which
        // knows Parquet; the server gets CSV, which COPY reads fastest.
        let reader = duckdb::Connection::open_in_memory().map_err(self.query_error(context))?;
        let columns: Vec<(String, String)> = {
            let mut stmt = reader
                .prepare(&format!("DESCRIBE SELECT * FROM {}", rows.relation()))
                .map_err(self.query_error(context))?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(self.query_error(context))?
                .collect::<Result<_, _>>()
                .map_err(self.query_error(context))?
        };
        let definitions = columns
            .iter()
            .map(|(name, ty)| format!("{} {}", super::ident(name), pg.column_type(ty)))
            .collect::<Vec<_>>()
            .join(", ");
        client
            .batch_execute(&pg.create_temp("incoming", &definitions))
            .map_err(self.query_error(context))?;
        let Some(first) = rows.parts.first() else {
            return Ok(pg.temp("incoming"));
        };
        let csv = first.with_extension("copy.csv");
        let quoted = csv.display().to_string().replace('\'', "''");
        let copied = (|| -> Result<(), super::DbError> {
            reader.execute_batch(&format!(
                "COPY (SELECT * FROM {}) TO '{quoted}' (FORMAT csv, HEADER false)",
                rows.relation()
            ))?;
            let mut file = std::fs::File::open(&csv)
                .map_err(|e| super::DbError::Other(format!("{}: {e}", csv.display())))?;
            let mut writer = client.copy_in("COPY pg_temp.incoming FROM STDIN (FORMAT csv)")?;
            std::io::copy(&mut file, &mut writer)
                .map_err(|e| super::DbError::Other(format!("sending the rows: {e}")))?;
            writer.finish()?;
            Ok(())
        })();
        let _ = std::fs::remove_file(&csv);
        copied.map_err(self.query_error(context))?;
        Ok(pg.temp("incoming"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_join_gets_its_own_limit_and_gives_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("store.duckdb")).unwrap();
        let limits = MemoryLimits {
            bulk: "512MB".into(),
            key_join: "768MB".into(),
        };
        store
            .limit_memory_to(&dir.path().join("spill"), limits)
            .unwrap();
        let limit = || -> String {
            store
                .db()
                .value("SELECT current_setting('memory_limit')", &[])
                .unwrap()
        };
        let bulk = limit();
        let during = store.joining_keys(|| Ok(limit())).unwrap();
        assert_ne!(during, bulk, "the join runs under its own limit");
        assert_eq!(limit(), bulk, "the bulk limit is back after the join");
        let failed: Result<(), _> = store.joining_keys(|| {
            Err(crate::store::StoreError::Other {
                path: dir.path().into(),
                message: "the join failed".into(),
            })
        });
        assert!(failed.is_err());
        assert_eq!(limit(), bulk, "and after a join that failed");
    }
}

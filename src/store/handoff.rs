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

impl super::Store {
    /// Limits DuckDB's memory for the batches to come, spilling into
    /// `spill` (created owner-only: it holds the rows being applied).
    pub fn limit_memory(&self, spill: &std::path::Path) -> Result<(), super::StoreError> {
        // A PostgreSQL server's memory is its own configuration's.
        let Some(conn) = self.db().duck() else {
            return Ok(());
        };
        crate::source::create_private_dir(spill).map_err(|e| super::StoreError::Other {
            path: self.path().to_path_buf(),
            message: format!("cannot create {}: {e}", spill.display()),
        })?;
        let configured = std::env::var("DROPSYNC_DUCKDB_MEMORY").ok();
        // A size such as `512MB` or `4GB`: digits and a unit, nothing to quote.
        let limit = configured
            .as_deref()
            .map(str::trim)
            .filter(|v| {
                !v.is_empty()
                    && v.starts_with(|c: char| c.is_ascii_digit())
                    && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
            })
            .unwrap_or(MEMORY_LIMIT);
        let spill = spill.display().to_string().replace('\'', "''");
        conn.execute_batch(&format!(
            "SET memory_limit = '{limit}'; SET temp_directory = '{spill}';"
        ))
        .map_err(self.query_error("limiting DuckDB's memory"))
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

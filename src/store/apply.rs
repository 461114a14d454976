//! Diff and apply. The validated rows arrive as Parquet files (columnar,
//! straight from polars, one per chunk of the file); DuckDB compares them
//! with what the integration holds in its target table, classifies every key (insert, update, delete,
//! unchanged, duplicate) and applies the changes, the run record and its row
//! errors in ONE transaction. Anything that fails rolls the whole batch back.

use serde::{Deserialize, Serialize};

use super::{Backend, DbError, RunRecord, Store, StoreError, Value, ident, now};
use crate::config::Mode;
use crate::schema::{RowError, StatusRule, StoredColumn};

/// Where an integration's rows live.
#[derive(Debug, Clone)]
pub struct TargetTable {
    pub name: String,
    /// The data columns, as validated rows carry them.
    pub columns: Vec<StoredColumn>,
    pub key: Vec<String>,
}

/// One batch to diff and apply.
pub struct ApplyRequest<'a> {
    pub integration: &'a str,
    pub table: &'a TargetTable,
    pub mode: Mode,
    pub status: Option<&'a StatusRule>,
    /// The validated rows, as Parquet.
    pub rows: &'a super::Handoff,
    /// Keys of rows rejected today: a snapshot does not delete them.
    pub protected_keys: &'a [String],
    pub max_delete_ratio: f64,
    pub force: bool,
    pub dry_run: bool,
    /// How many example keys of each kind of change to report.
    pub sample: usize,
    /// The rows of the file found unchanged while it was read, when they
    /// were left out of `rows` (a snapshot sync on DuckDB).
    pub prefiltered: Option<Prefiltered>,
}

/// What a snapshot sync learnt of the stored rows while it read the file,
/// matching each valid row's hash with theirs (`unchanged`): the rows that
/// matched one are unchanged and not in the hand-off; the stored rows no
/// row matched are the only ones to compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefiltered {
    /// The file's valid rows, in the hand-off or left out.
    pub valid_rows: u64,
    /// The hashes of the stored rows no row of the file matched.
    pub unmatched: Vec<u64>,
}

/// What a batch changes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChangeSet {
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
    pub unchanged: u64,
    /// Rows already stored (append mode), skipped.
    pub duplicates: u64,
    /// Rows older than the stored row of their key (delta mode), skipped.
    pub stale: u64,
    pub subscribed: u64,
    pub unsubscribed: u64,
    /// Rows the integration held before the batch.
    pub existing: u64,
    /// Examples of each kind of change (dry runs).
    pub samples: Vec<Sample>,
}

/// One changed key, as a dry run shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    /// `insert`, `update` or `delete`.
    pub kind: String,
    /// The key, parts joined with `|`.
    pub key: String,
    /// For an update: each changed field, `Field: old -> new`.
    pub detail: Option<String>,
    /// Each field the change touches: for an update the fields that
    /// differ, for an insert those it sets, for a delete those it removes.
    #[serde(default)]
    pub fields: Vec<FieldChange>,
}

/// One field of a sampled change, as text; `None` is an empty value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

impl Sample {
    /// `Field: old -> new, ...`, as the command line prints an update.
    fn describe(fields: &[FieldChange]) -> String {
        let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "(empty)".into());
        fields
            .iter()
            .map(|f| format!("{}: {} -> {}", f.field, text(&f.old), text(&f.new)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// How a batch ended.
pub enum Outcome {
    /// Applied and committed, with the run record.
    Applied(ChangeSet),
    /// Not applied: the batch breaks a guard. Nothing was written.
    Refused { changes: ChangeSet, reason: String },
    /// Computed and rolled back.
    DryRun(ChangeSet),
}

impl Store {
    /// Diffs `req.rows` against the integration's rows and applies the
    /// changes together with `run` (whose counts are filled in) and `errors`.
    pub fn apply(
        &self,
        req: &ApplyRequest<'_>,
        run: &mut RunRecord,
        errors: &[RowError],
    ) -> Result<Outcome, StoreError> {
        let db = self.db();
        db.begin().map_err(self.query_error("starting the batch"))?;
        let result = self.apply_in_transaction(req, run, errors);
        let outcome = match result {
            Ok(Outcome::Applied(changes)) => {
                let step = step_timer("commit");
                let committed = db.commit_into_file();
                step.next("");
                if let Err(e) = committed {
                    db.rollback();
                    return Err(self.query_error("committing the batch")(e));
                }
                Outcome::Applied(changes)
            }
            Ok(other) => {
                db.rollback();
                other
            }
            Err(e) => {
                db.rollback();
                return Err(e);
            }
        };
        let backend = db.backend();
        let _ = db.batch(&format!(
            "DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {};",
            backend.temp("changes"),
            backend.temp("classified"),
            backend.temp("protected"),
            backend.temp("incoming"),
            backend.temp("unmatched"),
        ));
        Ok(outcome)
    }

    fn apply_in_transaction(
        &self,
        req: &ApplyRequest<'_>,
        run: &mut RunRecord,
        errors: &[RowError],
    ) -> Result<Outcome, StoreError> {
        let db = self.db();
        let backend = db.backend();
        let table = ident(&req.table.name);
        self.ensure_table(req.table)?;
        let step = step_timer("load");
        let incoming = self.incoming(req.rows)?;
        let step = step.next("classify");
        db.batch(&backend.create_temp("protected", "k VARCHAR"))
            .and_then(|_| {
                db.insert_rows(
                    &backend.temp("protected"),
                    &["k"],
                    req.protected_keys
                        .iter()
                        .map(|k| vec![Value::Text(k.clone())]),
                )
            })
            .map_err(self.query_error("loading rejected keys"))?;

        let key = &req.table.key;
        let join = key
            .iter()
            .map(|k| format!("t.{0} = i.{0}", ident(k)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let differs = req
            .table
            .columns
            .iter()
            .filter(|c| !key.contains(&c.name))
            .map(|c| format!("t.{0} IS DISTINCT FROM i.{0}", ident(&c.name)))
            .collect::<Vec<_>>();
        let differs = if differs.is_empty() {
            "false".to_string()
        } else {
            differs.join(" OR ")
        };
        let (old_status, new_status) = match req.status {
            Some(s) => (
                format!("t.{}", ident(&s.field)),
                format!("i.{}", ident(&s.field)),
            ),
            None => ("NULL".to_string(), "NULL".to_string()),
        };
        let business_date = run
            .business_date
            .map(|d| format!("DATE '{d}'"))
            .unwrap_or_else(|| "NULL".into());
        // In delta mode a stored row's `_business_date` is the newest date
        // whose file spoke about its key, changed or not: a record re-sent
        // unchanged is `confirm`ed (its date moves up), so a late file of an
        // older date finds it newer and leaves it alone (`stale`).
        let confirm = format!(
            "WHEN t._business_date IS NULL OR t._business_date < {business_date} THEN 'confirm'"
        );
        // How a key both sides hold is classified, given SQL telling whether
        // its values differ and the kind a difference makes.
        let present_kind = |differs: &str, changed: &str| match req.mode {
            Mode::Append => "'duplicate'".to_string(),
            Mode::Delta if !req.force => format!(
                "CASE WHEN t._business_date > {business_date} THEN 'stale'
                      WHEN {differs} THEN '{changed}' {confirm} ELSE 'unchanged' END"
            ),
            Mode::Delta => {
                format!("CASE WHEN {differs} THEN '{changed}' {confirm} ELSE 'unchanged' END")
            }
            Mode::Snapshot => {
                format!("CASE WHEN {differs} THEN '{changed}' ELSE 'unchanged' END")
            }
        };
        let integration = req.integration.replace('\'', "''");
        let partition_by_key = key.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", ");
        // Each stored row comes with its rowid: the apply deletes and
        // confirms the rows it classified by rowid, not by joining the whole
        // table on the key again. Rowids hold still within the transaction.
        let rowid = backend.row_id();
        let mine = match req.mode {
            // An event is its typed key: one stored copy per instant, however
            // the store came to hold it, so each incoming row matches once.
            Mode::Append => format!(
                "(SELECT * FROM (SELECT *, {rowid} AS _rowid,
                    row_number() OVER (PARTITION BY {partition_by_key}) AS _copy
                  FROM {table} WHERE _integration = '{integration}') stored WHERE _copy = 1)"
            ),
            _ => format!(
                "(SELECT *, {rowid} AS _rowid FROM {table} WHERE _integration = '{integration}')"
            ),
        };
        // Events are the same when their values are, not their text:
        // `2026-11-02T23:57:16Z` and `2026-11-03T00:57:16+01:00` are one
        // instant. Validation compares keys as written, so repeats that only
        // typing reveals are left out here (and counted as duplicates).
        let distinct_incoming = match req.mode {
            Mode::Append => format!(
                "(SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY {partition_by_key}) AS _copy
                  FROM {incoming}) incoming WHERE _copy = 1)"
            ),
            _ => incoming.clone(),
        };
        let (join_kind, only_stored) = match req.mode {
            Mode::Snapshot => ("FULL OUTER JOIN", format!("i.{} IS NULL", ident(&key[0]))),
            _ => ("LEFT JOIN", "false".to_string()),
        };
        let key_aliases: Vec<String> = (0..key.len()).map(|n| format!("_key{n}")).collect();
        let keys = key
            .iter()
            .zip(&key_aliases)
            .map(|(k, alias)| format!("coalesce(i.{0}, t.{0}) AS {alias}", ident(k)))
            .collect::<Vec<_>>()
            .join(", ");
        let key_as_text = format!(
            "concat_ws('|', {})",
            key_aliases
                .iter()
                .map(|a| format!("CAST({a} AS VARCHAR)"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let stored_values = req
            .table
            .columns
            .iter()
            .enumerate()
            .map(|(n, c)| format!("t.{} AS _was{n}", ident(&c.name)))
            .collect::<Vec<_>>()
            .join(", ");
        let not_protected =
            format!("NOT (_kind = 'delete' AND {key_as_text} IN (SELECT k FROM protected))");
        let status_values = format!(
            "CAST({old_status} AS VARCHAR) AS _old_status, CAST({new_status} AS VARCHAR) AS _new_status"
        );
        // `changes` keeps each changed key (`_key0`, ...) with its new row,
        // the stored row's rowid (`_rowid`) and values (`_was0`, ... in the
        // order of the table's columns), so neither the apply nor the change
        // log reads the table again; unchanged keys are counted, not kept.
        // On DuckDB it also keeps the new row's hash (`_row_hash`), which
        // each handed-off row carries (`unchanged`).
        let hashed = backend == Backend::DuckDb;
        // Rows found unchanged while the file was read (snapshots only,
        // which compare whole files) are not in the hand-off.
        let prefiltered = req
            .prefiltered
            .as_ref()
            .filter(|_| hashed && req.mode == Mode::Snapshot);
        let count = |sql: &str| -> Result<u64, StoreError> {
            db.value::<i64>(sql, &[])
                .map(|n| n as u64)
                .map_err(self.query_error("counting rows"))
        };
        let existing = count(&format!("SELECT count(*) FROM {mine} mine"))?;
        // Against no stored rows (a first load) every row is an insert,
        // and one pass that keeps them all is the cheaper. Rows found
        // unchanged before the diff leave few to compare, in one pass too.
        let two_steps = hashed && req.mode != Mode::Append && existing > 0 && prefiltered.is_none();
        let compared = match prefiltered {
            Some(prefiltered) => {
                self.load_unmatched(&prefiltered.unmatched)?;
                // The stored rows no row of the file matched, and those
                // whose hash was never made.
                format!(
                    "(SELECT *, {rowid} AS _rowid FROM {table}
                      WHERE _integration = '{integration}'
                        AND (_row_hash IS NULL OR _row_hash IN (SELECT h FROM {})))",
                    backend.temp("unmatched")
                )
            }
            _ => mine.clone(),
        };
        let classify = if two_steps {
            // Two steps, so that the join of every key carries a hash, not
            // whole stored rows. First the keys, each new row with its hash
            // against each stored row's key, hash and rowid: a key on one
            // side only is an insert or a delete; a key whose stored hash
            // matches the new row's is unchanged (not kept); any other is
            // kept, with its new row, to be compared in full.
            let key_columns = key.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", ");
            // The join's stored side is all it holds in memory (or spills):
            // only what tells the kinds apart. A delta compares dates too.
            let stored_date = if req.mode == Mode::Delta {
                ", _business_date"
            } else {
                ""
            };
            let bookkeeping = key_aliases
                .iter()
                .map(String::as_str)
                .chain(["_rowid", "_kind", "_row_hash"])
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "{};
                 {}",
                backend.create_temp_as(
                    "classified",
                    &format!(
                        "SELECT * FROM (
                            SELECT {keys}, t._rowid AS _rowid, i.*,
                                   CASE WHEN t._rowid IS NULL THEN 'insert'
                                        WHEN {only_stored} THEN 'delete'
                                        ELSE {} END AS _kind
                            FROM {incoming} i
                            {join_kind} (SELECT {key_columns}, _row_hash, {rowid} AS _rowid{stored_date}
                                         FROM {table} WHERE _integration = '{integration}') t
                            ON {join}
                         ) classified
                         WHERE _kind <> 'unchanged' AND {not_protected}",
                        present_kind("t._row_hash IS DISTINCT FROM i._row_hash", "compare")
                    )
                ),
                // Then the stored rows of the keys kept, by rowid: a
                // compared key whose values turn out equal (its hash made
                // before a column was added, or by another DuckDB) is
                // `rehash`ed: unchanged, its stored hash corrected.
                backend.create_temp_as(
                    "changes",
                    &format!(
                        "SELECT {}, i._rowid AS _rowid, {stored_values},
                                i.* EXCLUDE ({bookkeeping}),
                                CASE WHEN i._kind = 'compare'
                                     THEN CASE WHEN {differs} THEN 'update' {} ELSE 'rehash' END
                                     ELSE i._kind END AS _kind,
                                {status_values}, i._row_hash AS _row_hash
                         FROM classified i LEFT JOIN {mine} t ON t._rowid = i._rowid",
                        key_aliases
                            .iter()
                            .map(|a| format!("i.{a}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        if req.mode == Mode::Delta { confirm.as_str() } else { "" },
                    )
                )
            )
        } else {
            // One join classifies every key. Snapshots join both ways, so a
            // key only the store has is a delete, unless its row was
            // rejected today. Compared with the stored rows no row of the
            // file matched, a key whose values are the same is `rehash`ed:
            // its stored hash was made another way.
            let present = if prefiltered.is_some() {
                format!(
                    "CASE WHEN {differs} THEN 'update'
                          WHEN t._row_hash IS DISTINCT FROM i._row_hash THEN 'rehash'
                          ELSE 'unchanged' END"
                )
            } else {
                present_kind(&differs, "update")
            };
            backend.create_temp_as(
                "changes",
                &format!(
                    "SELECT * FROM (
                    SELECT {keys}, t._rowid AS _rowid, {stored_values}, i.*,
                           CASE WHEN t._integration IS NULL THEN 'insert'
                                WHEN {only_stored} THEN 'delete'
                                ELSE {present} END AS _kind,
                           {status_values}
                    FROM {distinct_incoming} i {join_kind} {compared} t ON {join}
                 ) classified
                 WHERE _kind <> 'unchanged' AND {not_protected}"
                ),
            )
        };
        let classified = || {
            db.batch(&classify)
                .map_err(self.query_error("comparing with the last snapshot"))
        };
        if two_steps {
            // The first step joins every stored key with the file's.
            self.joining_keys(classified)?;
        } else {
            classified()?;
        }
        let step = step.next("count");

        let mut changes = ChangeSet::default();
        for (kind, n) in self.pairs::<i64>(
            "SELECT _kind, count(*) FROM changes GROUP BY _kind",
            "counting changes",
        )? {
            let n = n as u64;
            match kind.as_str() {
                "insert" => changes.inserted = n,
                "update" => changes.updated = n,
                "delete" => changes.deleted = n,
                "stale" => changes.stale = n,
                "duplicate" => changes.duplicates = n,
                // Unchanged, its business date moved up: counted as unchanged.
                _ => {}
            }
        }
        let incoming_rows = match prefiltered {
            Some(prefiltered) => prefiltered.valid_rows,
            None => count(&format!("SELECT count(*) FROM {incoming}"))?,
        };
        if req.mode == Mode::Append {
            changes.duplicates += incoming_rows.saturating_sub(count(&format!(
                "SELECT count(*) FROM {distinct_incoming} distinct_incoming"
            ))?);
        }
        changes.unchanged = incoming_rows.saturating_sub(
            changes.inserted + changes.updated + changes.stale + changes.duplicates,
        );
        changes.existing = existing;
        if let Some(status) = req.status {
            let moves = self.pairs::<i64>(
                "SELECT _new_status, count(*) FROM changes WHERE _kind IN ('insert', 'update')
                 AND _old_status IS DISTINCT FROM _new_status AND _new_status IS NOT NULL
                 GROUP BY _new_status",
                "counting status changes",
            )?;
            for (value, n) in moves {
                match status.changes.get(&value).map(String::as_str) {
                    Some("subscribe") => changes.subscribed += n as u64,
                    Some("unsubscribe") => changes.unsubscribed += n as u64,
                    _ => {}
                }
            }
        }
        if req.sample > 0 {
            // Which fields each sampled change touches, from what to what,
            // as JSON: one value per row, however many columns the table has.
            let fields = req
                .table
                .columns
                .iter()
                .filter(|col| !key.contains(&col.name))
                .map(|col| {
                    let c = ident(&col.name);
                    let name = col.name.replace('\'', "''");
                    let old = backend.as_text(&format!("t.{c}"), col.sql_type);
                    let new = backend.as_text(&format!("c.{c}"), col.sql_type);
                    let change = match backend {
                        Backend::DuckDb => {
                            format!("{{'field': '{name}', 'old': {old}, 'new': {new}}}")
                        }
                        Backend::Postgres => format!(
                            "json_build_object('field', '{name}', 'old', {old}, 'new', {new})"
                        ),
                    };
                    format!("CASE WHEN t.{c} IS DISTINCT FROM c.{c} THEN {change} END")
                })
                .collect::<Vec<_>>();
            let fields = match backend {
                _ if fields.is_empty() => "'[]'".to_string(),
                Backend::DuckDb => format!(
                    "CAST(to_json(list_filter([{}], f -> f IS NOT NULL)) AS VARCHAR)",
                    fields.join(", ")
                ),
                Backend::Postgres => format!(
                    "(SELECT CAST(json_agg(f) AS VARCHAR) FROM unnest(ARRAY[{}]::json[]) f
                      WHERE f IS NOT NULL)",
                    fields.join(", ")
                ),
            };
            let on_key = key
                .iter()
                .zip(&key_aliases)
                .map(|(k, alias)| format!("t.{} = c.{alias}", ident(k)))
                .collect::<Vec<_>>()
                .join(" AND ");
            let sql = format!(
                "SELECT kind, key, fields FROM (
                    SELECT c._kind AS kind, {key_as_text} AS key, {fields} AS fields,
                           row_number() OVER (PARTITION BY c._kind ORDER BY {}) AS n
                    FROM changes c LEFT JOIN {mine} t ON {on_key}
                    WHERE c._kind IN ('insert', 'update', 'delete')
                 ) sampled
                 WHERE n <= {}
                 ORDER BY kind, key",
                key_aliases
                    .iter()
                    .map(|a| format!("c.{a}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                req.sample
            );
            changes.samples = db
                .query(&sql, &[])
                .and_then(|rows| {
                    rows.iter()
                        .map(|r| {
                            let kind: String = r.get(0)?;
                            let fields: Vec<FieldChange> = r
                                .get::<Option<String>>(2)?
                                .and_then(|json| serde_json::from_str(&json).ok())
                                .unwrap_or_default();
                            Ok(Sample {
                                detail: (kind == "update").then(|| Sample::describe(&fields)),
                                kind,
                                key: r.get(1)?,
                                fields,
                            })
                        })
                        .collect::<Result<Vec<_>, DbError>>()
                })
                .map_err(self.query_error("sampling changes"))?;
        }

        if req.mode == Mode::Snapshot && !req.force && changes.existing > 0 {
            let share = changes.deleted as f64 / changes.existing as f64;
            if share > req.max_delete_ratio {
                let reason = format!(
                    "{} {} of the {} rows held ({:.1}%, more than max_delete_ratio {:.1}%); a truncated export? Re-run with --force if the deletes are meant",
                    super::outbox::REFUSED,
                    changes.deleted,
                    changes.existing,
                    share * 100.0,
                    req.max_delete_ratio * 100.0
                );
                return Ok(Outcome::Refused { changes, reason });
            }
        }
        if req.dry_run {
            return Ok(Outcome::DryRun(changes));
        }

        let step = step.next("log the changes");
        let logged = if super::changelog::skipped_for_benchmark() {
            0
        } else {
            self.log_changes_in(&super::changelog::LoggedBatch {
                integration: req.integration,
                dataset: &run.dataset,
                execution_id: &run.execution_id,
                business_date_sql: &business_date,
                table: req.table,
                status: req.status,
                key_aliases: &key_aliases,
            })?
        };
        let step = step.next("delete and insert");
        crate::activity::enter(req.integration, crate::activity::Stage::Applying);
        crate::progress::report(crate::progress::Event::Stage(
            crate::progress::Stage::Applying,
        ));
        let data_cols = req
            .table
            .columns
            .iter()
            .map(|c| ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let execution_id = run.execution_id.replace('\'', "''");
        let updated_at = backend.timestamp(now());
        let replaced =
            backend.row_in("SELECT _rowid FROM changes WHERE _kind IN ('update', 'delete')");
        // Confirmed rows get their new date; on DuckDB, in the same pass,
        // confirmed and `rehash`ed rows get the hash of their values.
        let (hash_col, confirm_rows) = if hashed {
            (
                ", _row_hash, _raw_hash",
                format!(
                    "UPDATE {table} SET _row_hash = c._row_hash, _raw_hash = c._raw_hash,
                        _business_date = CASE WHEN c._kind = 'confirm' THEN {business_date}
                                              ELSE {table}._business_date END
                     FROM changes c
                     WHERE {table}.rowid = c._rowid AND c._kind IN ('confirm', 'rehash')"
                ),
            )
        } else {
            (
                "",
                format!(
                    "UPDATE {table} SET _business_date = {business_date} WHERE {}",
                    backend.row_in("SELECT _rowid FROM changes WHERE _kind = 'confirm'")
                ),
            )
        };
        db.batch(&format!(
            "DELETE FROM {table} WHERE {replaced};
             INSERT INTO {table} ({data_cols}, _integration, _execution_id, _business_date, _updated_at{hash_col})
                SELECT {data_cols}, '{integration}', '{execution_id}', {business_date}, {updated_at}{hash_col}
                FROM changes WHERE _kind IN ('insert', 'update');
             {confirm_rows};"
        ))
        .map_err(self.query_error(format!("applying changes to {}", req.table.name)))?;

        run.inserted = changes.inserted as i64;
        run.updated = changes.updated as i64;
        run.deleted = changes.deleted as i64;
        run.unchanged = changes.unchanged as i64;
        run.subscribed = changes.subscribed as i64;
        run.unsubscribed = changes.unsubscribed as i64;
        // Rows the store already had (or has newer) were valid, but skipped.
        run.skipped_rows += (changes.duplicates + changes.stale) as i64;
        run.success_rows = (run.success_rows - (changes.duplicates + changes.stale) as i64).max(0);
        if changes.stale > 0 {
            let note = format!(
                "{} left alone: the stored row is from a later business date (--force applies them)",
                crate::rows(changes.stale)
            );
            run.message = Some(match run.message.take() {
                Some(m) => format!("{m}; {note}"),
                None => note,
            });
        }
        run.completed_at = Some(now());
        let step = step.next("record the run");
        self.finish_run_in(run, errors)
            .and_then(|_| self.enqueue_feed_in(run, logged))
            .map_err(self.query_error("recording the run"))?;
        step.next("");
        Ok(Outcome::Applied(changes))
    }

    /// Loads the hashes of the stored rows no row of the file matched
    /// into the temporary table `unmatched` (`h`).
    fn load_unmatched(&self, hashes: &[u64]) -> Result<(), StoreError> {
        let db = self.db();
        let context = "loading the unmatched rows' hashes";
        db.batch(&db.backend().create_temp("unmatched", "h UBIGINT"))
            .map_err(self.query_error(context))?;
        let Some(conn) = db.duck() else {
            return Ok(());
        };
        (|| {
            let mut appender =
                conn.appender_with_columns_to_catalog_and_db("unmatched", "temp", "main", &["h"])?;
            for &hash in hashes {
                appender.append_row([hash])?;
            }
            appender.flush()
        })()
        .map_err(self.query_error(context))
    }

    /// Rows of (text, count) from `sql`.
    fn pairs<T: super::db::FromValue>(
        &self,
        sql: &str,
        context: &str,
    ) -> Result<Vec<(String, T)>, StoreError> {
        self.db()
            .query(sql, &[])
            .and_then(|rows| {
                rows.iter()
                    .map(|r| Ok((r.get::<String>(0)?, r.get::<T>(1)?)))
                    .collect()
            })
            .map_err(self.query_error(context))
    }

    /// Creates the target table, or adds the columns a grown schema brings.
    fn ensure_table(&self, target: &TargetTable) -> Result<(), StoreError> {
        let db = self.db();
        let backend = db.backend();
        let table = ident(&target.name);
        let mut columns: Vec<String> = target
            .columns
            .iter()
            .map(|c| format!("{} {}", ident(&c.name), backend.column_type(c.sql_type)))
            .collect();
        columns.extend([
            "_integration VARCHAR NOT NULL".to_string(),
            "_execution_id VARCHAR NOT NULL".to_string(),
            "_business_date DATE".to_string(),
            "_updated_at TIMESTAMP NOT NULL".to_string(),
        ]);
        if backend == Backend::DuckDb {
            columns.push("_row_hash UBIGINT".to_string());
            columns.push("_raw_hash UBIGINT".to_string());
        }
        let index = format!("{}_integration", target.name);
        match self.table_state(target, &index)? {
            super::workers::TableState::OneWriter => {}
            super::workers::TableState::AsWanted => return Ok(()),
            super::workers::TableState::NeedsDdl => {
                // On a shared store DDL waits for the lock every batch takes
                // before it writes a target table (the change log's), and
                // holds it to commit: workers creating the same table at
                // once take turns (IF NOT EXISTS alone lets both try, and
                // one fail), and no batch waits for a table this one has
                // locked while this one waits for the batch.
                db.execute(
                    "SELECT pg_advisory_xact_lock(?1)",
                    &[&super::changelog::CHANGE_LOG_LOCK],
                )
                .map_err(self.query_error(format!("waiting to create table {}", target.name)))?;
                // Another worker may have done it meanwhile.
                if let super::workers::TableState::AsWanted = self.table_state(target, &index)? {
                    return Ok(());
                }
            }
        }
        db.batch(&format!(
            "CREATE TABLE IF NOT EXISTS {table} ({})",
            columns.join(", ")
        ))
        .map_err(self.query_error(format!("creating table {}", target.name)))?;
        if backend == Backend::Postgres {
            // Many integrations may share a dataset's table; each sync reads
            // only its own rows, through this index. (DuckDB skips row groups
            // by their min/max instead.)
            db.batch(&format!(
                "CREATE INDEX IF NOT EXISTS {} ON {table} (_integration)",
                ident(&index)
            ))
            .map_err(self.query_error(format!("indexing table {}", target.name)))?;
        }
        let existing: Vec<String> = db
            .query(
                "SELECT column_name FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = ?",
                &[&target.name],
            )
            .and_then(|rows| rows.iter().map(|r| r.get::<String>(0)).collect())
            .map_err(self.query_error("reading columns"))?;
        if backend == Backend::DuckDb && !existing.iter().any(|c| c == "_row_hash") {
            // A table made before rows kept their hash: each row gets one
            // the first time a sync compares it (a `rehash`).
            db.batch(&format!("ALTER TABLE {table} ADD COLUMN _row_hash UBIGINT"))
                .map_err(self.query_error(format!("adding column _row_hash to {}", target.name)))?;
        }
        if backend == Backend::DuckDb && !existing.iter().any(|c| c == "_raw_hash") {
            // A table made before rows kept the hash of their record: each
            // row gets one when a sync writes it.
            db.batch(&format!("ALTER TABLE {table} ADD COLUMN _raw_hash UBIGINT"))
                .map_err(self.query_error(format!("adding column _raw_hash to {}", target.name)))?;
        }
        for c in &target.columns {
            if !existing.contains(&c.name) {
                db.batch(&format!(
                    "ALTER TABLE {table} ADD COLUMN {} {}",
                    ident(&c.name),
                    backend.column_type(c.sql_type)
                ))
                .map_err(
                    self.query_error(format!("adding column {} to {}", c.name, target.name)),
                )?;
            }
        }
        Ok(())
    }
}

/// Logs how long each step of a batch takes (at debug level).
struct StepTimer {
    name: &'static str,
    started: std::time::Instant,
}

fn step_timer(name: &'static str) -> StepTimer {
    StepTimer {
        name,
        started: std::time::Instant::now(),
    }
}

impl StepTimer {
    fn next(self, name: &'static str) -> StepTimer {
        tracing::debug!(
            step = self.name,
            ms = self.started.elapsed().as_millis() as u64,
            "apply step done"
        );
        step_timer(name)
    }
}

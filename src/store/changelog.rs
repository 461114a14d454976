//! The change log: every row a batch changes, kept with what it changed
//! from and to, written in the batch's own transaction by set-based SQL from
//! the classified diff (the `changes` temp table `apply` builds), so it
//! holds exactly what was applied, whatever fed the diff. It is what the
//! `changes` command reads, what `export --as-of` walks back, and what the
//! change feed sends.
//!
//! Storage grows with the changes: an update keeps only the fields that
//! changed (`{field: [old, new]}`), an insert its new row, a delete the row
//! it removed. Each applied run also leaves a watermark (the highest
//! sequence number when it committed, in `dropsync_change_runs`), which
//! says where "after the last run of date D" is in the log, runs that
//! changed nothing included.

use chrono::{NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};

use super::db::ToValue;
use super::{Backend, DbError, Store, StoreError, TargetTable, Value, ident};
use crate::schema::StatusRule;

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Insert,
    Update,
    Delete,
    /// Inserted or updated into a status its dataset counts as subscribed.
    Subscribe,
    /// Inserted or updated into a status its dataset counts as unsubscribed.
    Unsubscribe,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Insert => "insert",
            ChangeKind::Update => "update",
            ChangeKind::Delete => "delete",
            ChangeKind::Subscribe => "subscribe",
            ChangeKind::Unsubscribe => "unsubscribe",
        }
    }

    pub fn parse(s: &str) -> Option<ChangeKind> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }
}

impl std::fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to the stored row, whatever the kind says: a subscribe
/// is an insert or an update. Walking the log back needs to know which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowAction {
    Insert,
    Update,
    Delete,
}

/// One logged change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// Order in the log: later changes have higher numbers.
    pub seq: i64,
    pub integration: String,
    pub dataset: String,
    pub table: String,
    /// The key, typed as the store keeps it: `{"AccountID": "A1"}`.
    pub key: serde_json::Value,
    pub kind: ChangeKind,
    pub action: RowAction,
    /// Update: `{field: [old, new]}` for each changed field; insert: the new
    /// row; delete: the row removed.
    pub fields: serde_json::Value,
    pub execution_id: String,
    pub business_date: Option<NaiveDate>,
    pub recorded_at: NaiveDateTime,
}

impl ChangeRecord {
    /// The columns of a change in CSV (`changes --csv`, a folder feed), in
    /// the order of `csv_cells`.
    pub const CSV_COLUMNS: [&'static str; 10] = [
        "seq",
        "integration",
        "dataset",
        "table",
        "execution_id",
        "business_date",
        "kind",
        "key",
        "fields",
        "recorded_at",
    ];

    /// The change as CSV cells, the key and fields as JSON.
    pub fn csv_cells(&self) -> [String; 10] {
        [
            self.seq.to_string(),
            self.integration.clone(),
            self.dataset.clone(),
            self.table.clone(),
            self.execution_id.clone(),
            self.business_date
                .map(|d| d.to_string())
                .unwrap_or_default(),
            self.kind.as_str().to_string(),
            self.key.to_string(),
            self.fields.to_string(),
            self.recorded_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        ]
    }

    /// The key as one line of text, parts joined with `|`.
    pub fn key_text(&self) -> String {
        match &self.key {
            serde_json::Value::Object(parts) => {
                parts.values().map(json_text).collect::<Vec<_>>().join("|")
            }
            other => json_text(other),
        }
    }

    /// Whether one of `fields` changed: for an update, among its changed
    /// fields; an insert or a delete changes every field.
    pub fn touches_any(&self, fields: &[String]) -> bool {
        if fields.is_empty() {
            return true;
        }
        match &self.fields {
            serde_json::Value::Object(map) => fields.iter().any(|f| map.contains_key(f)),
            _ => false,
        }
    }
}

/// A JSON value as a person reads it: strings without their quotes.
pub fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Which logged changes to read.
#[derive(Debug, Clone, Default)]
pub struct ChangeFilter {
    pub integration: Option<String>,
    /// Changes of runs with this business date or a later one.
    pub since: Option<NaiveDate>,
    /// Changes of this run only.
    pub execution_id: Option<String>,
    /// Only these kinds (all when empty).
    pub kinds: Vec<ChangeKind>,
    /// Only changes after this sequence number (the change feed's cursor).
    pub after_seq: Option<i64>,
    /// At most this many (the change feed reads a large run in chunks).
    pub limit: Option<usize>,
}

/// What the change log needs to know about a batch being applied.
pub(crate) struct LoggedBatch<'a> {
    pub integration: &'a str,
    pub dataset: &'a str,
    pub execution_id: &'a str,
    /// SQL: the business date (`DATE '2026-11-03'` or `NULL`).
    pub business_date_sql: &'a str,
    pub table: &'a TargetTable,
    pub status: Option<&'a StatusRule>,
    /// The `changes` table's key columns (`_key0`, ...), in key order. It
    /// holds each change's new row under the table's column names and the
    /// stored row it replaces as `_was0`, ... (in the order of the table's
    /// columns).
    pub key_aliases: &'a [String],
}

/// A column's value as JSON text (never SQL NULL: JSON `null`). A number
/// that JSON cannot hold (NaN, infinity) is kept as its text, which casts
/// back to the same DOUBLE.
pub(crate) fn json_value_sql(expr: &str, sql_type: &str, backend: Backend) -> String {
    match (backend, sql_type) {
        (Backend::DuckDb, "DOUBLE") => format!(
            "coalesce(CASE WHEN isfinite({expr}) THEN CAST(to_json({expr}) AS VARCHAR)
                           ELSE CAST(to_json(CAST({expr} AS VARCHAR)) AS VARCHAR) END, 'null')"
        ),
        // PostgreSQL writes a whole double without its `.0` (`1200`, read
        // back as an integer); written as DuckDB casts it to text, both
        // stores log `1200.0`.
        (Backend::Postgres, "DOUBLE") => format!(
            "coalesce(CASE WHEN {expr} IN ('Infinity', '-Infinity', 'NaN')
                           THEN CAST(to_json(CAST({expr} AS VARCHAR)) AS VARCHAR)
                           ELSE {} END, 'null')",
            backend.as_text(expr, sql_type)
        ),
        // PostgreSQL writes a timestamp in JSON with a `T`; as text it
        // reads as DuckDB writes it, so both stores log the same value.
        (Backend::Postgres, "TIMESTAMP") => {
            format!("coalesce(CAST(to_json(CAST({expr} AS VARCHAR)) AS VARCHAR), 'null')")
        }
        _ => format!("coalesce(CAST(to_json({expr}) AS VARCHAR), 'null')"),
    }
}

/// A column's value as DuckDB builds it into a JSON object with
/// `json_object`, which writes each value exactly as `to_json` writes it
/// alone (`json_value_sql`), without the text ever being parsed again. A
/// number JSON cannot hold (NaN, infinity) goes in as its text, as there.
fn json_object_value(expr: &str, sql_type: &str) -> String {
    match sql_type {
        "DOUBLE" => format!(
            "CASE WHEN isfinite({expr}) THEN to_json({expr}) ELSE to_json(CAST({expr} AS VARCHAR)) END"
        ),
        _ => expr.to_string(),
    }
}

/// SQL for a JSON object of `columns`, typed JSON, built by DuckDB's
/// `json_object` (`{"a": 1, ...}`, each value read by `value` from the
/// column's position and name): the same text `row_object` makes, without
/// the concatenation and the parse that a cast of that text to JSON costs.
fn json_object_sql(columns: &[(&str, &str)], value: impl Fn(usize, &str) -> String) -> String {
    if columns.is_empty() {
        return "CAST('{}' AS JSON)".into();
    }
    let members = columns
        .iter()
        .enumerate()
        .map(|(n, (name, sql_type))| {
            format!(
                "'{}', {}",
                name.replace('\'', "''"),
                json_object_value(&value(n, name), sql_type)
            )
        })
        .collect::<Vec<_>>();
    format!("json_object({})", members.join(", "))
}

/// `"name":` as SQL text.
fn json_member(name: &str) -> String {
    let key = serde_json::to_string(name).unwrap_or_else(|_| "\"\"".into());
    format!("'{}:'", key.replace('\'', "''"))
}

/// SQL: the value of a table column after the change (in `changes` under
/// its own name).
fn new_value(name: &str) -> String {
    format!("c.{}", ident(name))
}

/// SQL: the stored value of the `n`th table column before the change.
fn old_value(n: usize) -> String {
    format!("c._was{n}")
}

/// SQL for a JSON object of `columns` (`{"a": 1, ...}`), each value read by
/// `value` from the column's position and name.
fn row_object(
    columns: &[(&str, &str)],
    backend: Backend,
    value: impl Fn(usize, &str) -> String,
) -> String {
    if columns.is_empty() {
        return "'{}'".into();
    }
    let members = columns
        .iter()
        .enumerate()
        .map(|(n, (name, sql_type))| {
            format!(
                "{} || {}",
                json_member(name),
                json_value_sql(&value(n, name), sql_type, backend)
            )
        })
        .collect::<Vec<_>>();
    format!("'{{' || concat_ws(',', {}) || '}}'", members.join(", "))
}

/// Whether this process syncs without the change log: only `scripts/bench
/// changelog` asks for that, to measure what the log costs. It is no
/// setting: a log that misses a run makes `export --as-of` and `changes`
/// wrong for every date after it, so nothing a user configures turns it off.
/// The PostgreSQL advisory lock that orders writers of the change log (any
/// fixed number, the store's own).
pub(super) const CHANGE_LOG_LOCK: i64 = 0x6472_6f70_6368_6c67;

pub(crate) fn skipped_for_benchmark() -> bool {
    std::env::var_os("DROPSYNC_BENCH_NO_CHANGE_LOG").is_some()
}

impl Store {
    /// Logs every change of the batch in the `changes` temp table, in the
    /// caller's transaction: one INSERT … SELECT from it, which holds both
    /// sides of each change, so the target table is not read again.
    /// Returns the number of changes logged.
    pub(crate) fn log_changes_in(&self, batch: &LoggedBatch<'_>) -> Result<u64, StoreError> {
        let backend = self.db().backend();
        if backend == Backend::Postgres {
            // Several workers may apply batches at once. Each takes the log's
            // lock before numbering its changes and holds it until it
            // commits, so sequence numbers are unique and follow commit
            // order, as the change feed delivers them.
            self.db()
                .execute("SELECT pg_advisory_xact_lock(?)", &[&CHANGE_LOG_LOCK])
                .map_err(self.query_error("waiting for the change log"))?;
        }
        let recorded_at = backend.timestamp(super::now());
        let key = &batch.table.key;
        let data: Vec<(&str, &str)> = batch
            .table
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.sql_type))
            .collect();
        // With each column's position among the table's columns, where its
        // old value is found.
        let non_key: Vec<(usize, &str, &str)> = data
            .iter()
            .enumerate()
            .filter(|(_, (name, _))| !key.iter().any(|k| k == name))
            .map(|(n, (name, sql_type))| (n, *name, *sql_type))
            .collect();
        let key_columns: Vec<(&str, &str)> = key
            .iter()
            .map(|k| {
                let sql_type = data
                    .iter()
                    .find(|(name, _)| name == k)
                    .map(|(_, t)| *t)
                    .unwrap_or("VARCHAR");
                (k.as_str(), sql_type)
            })
            .collect();
        let key_part = |n: usize, _: &str| format!("c.{}", batch.key_aliases[n]);
        let diff = if non_key.is_empty() {
            "'{}'".to_string()
        } else {
            let members = non_key
                .iter()
                .map(|(n, name, sql_type)| {
                    let (old, new) = (old_value(*n), new_value(name));
                    format!(
                        "CASE WHEN {old} IS DISTINCT FROM {new} THEN {} || '[' || {} || ',' || {} || ']' END",
                        json_member(name),
                        json_value_sql(&old, sql_type, backend),
                        json_value_sql(&new, sql_type, backend)
                    )
                })
                .collect::<Vec<_>>();
            format!("'{{' || concat_ws(',', {}) || '}}'", members.join(", "))
        };
        let status_kind = match batch.status {
            Some(rule) => {
                let arms = rule
                    .changes
                    .iter()
                    .filter(|(_, change)| matches!(change.as_str(), "subscribe" | "unsubscribe"))
                    .map(|(value, change)| {
                        format!("WHEN '{}' THEN '{change}'", value.replace('\'', "''"))
                    })
                    .collect::<Vec<_>>();
                if arms.is_empty() {
                    "NULL".to_string()
                } else {
                    format!(
                        "CASE WHEN c._old_status IS DISTINCT FROM c._new_status
                              THEN CASE c._new_status {} END END",
                        arms.join(" ")
                    )
                }
            }
            None => "NULL".to_string(),
        };
        let integration = batch.integration.replace('\'', "''");
        let dataset = batch.dataset.replace('\'', "''");
        let table = batch.table.name.replace('\'', "''");
        let execution_id = batch.execution_id.replace('\'', "''");
        let business_date = batch.business_date_sql;
        let context = "logging the changes";
        // The batch's changes are numbered on from the log's highest number
        // (taken once: the batch's own rows are the only ones added meanwhile).
        let base: i64 = self
            .db()
            .value("SELECT coalesce(max(seq), 0) FROM dropsync_changes", &[])
            .map_err(self.query_error(context))?;
        let sql = match backend {
            // Each row's JSON is built by DuckDB's own JSON functions: typed
            // JSON as it is made, no text to concatenate and parse again
            // (what a cast to JSON costs), and the statement runs on every
            // thread when the numbering allows it (`seq_of_change`). An
            // update's few changed fields are still joined as text, the one
            // object whose members depend on the row.
            Backend::DuckDb => format!(
                "INSERT INTO dropsync_changes
                 SELECT {seq}, '{execution_id}', '{integration}', '{dataset}', '{table}', {business_date},
                        {key_json},
                        coalesce(CASE WHEN c._kind <> 'delete' THEN {status_kind} END, c._kind),
                        c._kind,
                        CASE c._kind WHEN 'insert' THEN {inserted}
                                     WHEN 'delete' THEN {deleted}
                                     ELSE CAST({diff} AS JSON) END,
                        {recorded_at}
                 FROM changes c
                 WHERE c._kind IN ('insert', 'update', 'delete')",
                seq = self.seq_of_change(base)?,
                key_json = json_object_sql(&key_columns, key_part),
                inserted = json_object_sql(&data, |_, name| new_value(name)),
                deleted = json_object_sql(&data, |n, _| old_value(n)),
            ),
            Backend::Postgres => format!(
                "INSERT INTO dropsync_changes
                 SELECT {base} + row_number() OVER (),
                        '{execution_id}', '{integration}', '{dataset}', '{table}', {business_date},
                        CAST(key_json AS JSON),
                        coalesce(CASE WHEN action <> 'delete' THEN status_kind END, action),
                        action, CAST(fields_json AS JSON), {recorded_at}
                 FROM (
                    SELECT {key_object} AS key_json, c._kind AS action, {status_kind} AS status_kind,
                           CASE c._kind WHEN 'insert' THEN {inserted}
                                        WHEN 'delete' THEN {deleted}
                                        ELSE {diff} END AS fields_json
                    FROM changes c
                    WHERE c._kind IN ('insert', 'update', 'delete')
                 ) logged",
                key_object = row_object(&key_columns, backend, key_part),
                inserted = row_object(&data, backend, |_, name| new_value(name)),
                deleted = row_object(&data, backend, |n, _| old_value(n)),
            ),
        };
        let logged = self
            .db()
            .execute(&sql, &[])
            .map_err(self.query_error(context))?;
        // The log's highest number once this batch is in it.
        let last_seq = base + logged as i64;
        self.db()
            .execute(
                &format!(
                    "INSERT INTO dropsync_change_runs
                     VALUES ('{execution_id}', '{integration}', '{table}', {business_date},
                             {last_seq}, {recorded_at})"
                ),
                &[],
            )
            .map_err(self.query_error(context))?;
        Ok(logged as u64)
    }

    /// SQL: the sequence number of the change in row `c` of `changes`,
    /// counting on from `base`. When every row there is a logged change and
    /// the temp table's rowids run 0, 1, ... without a gap (as a table just
    /// filled by one statement has them), a row's number is its rowid, and
    /// the log's INSERT runs on every thread. Otherwise (a delta's
    /// confirmations, an append's duplicates are in `changes` too) the rows
    /// are counted in one stream with `row_number()`, which DuckDB runs on
    /// one thread. Either way the numbers are those of a scan of `changes`
    /// in rowid order.
    fn seq_of_change(&self, base: i64) -> Result<String, StoreError> {
        let (rows, last_rowid, unlogged) = self
            .db()
            .query_row(
                "SELECT count(*), coalesce(max(rowid), -1),
                        count(*) FILTER (WHERE _kind NOT IN ('insert', 'update', 'delete'))
                 FROM changes",
                &[],
                |r| Ok((r.get::<i64>(0)?, r.get::<i64>(1)?, r.get::<i64>(2)?)),
            )
            .map_err(self.query_error("numbering the changes"))?;
        Ok(if unlogged == 0 && last_rowid + 1 == rows {
            format!("{base} + c.rowid + 1")
        } else {
            format!("{base} + row_number() OVER ()")
        })
    }

    /// Logged changes matching `filter`, oldest first.
    pub fn changes(&self, filter: &ChangeFilter) -> Result<Vec<ChangeRecord>, StoreError> {
        let mut out = Vec::new();
        self.each_change(filter, |change| {
            out.push(change);
            Ok::<(), StoreError>(())
        })?;
        Ok(out)
    }

    /// Logged changes matching `filter`, oldest first, each handed to
    /// `each` as it is read: however long the log, one change at a time is
    /// held. Stops at the first error `each` returns.
    pub fn each_change<E: From<StoreError>>(
        &self,
        filter: &ChangeFilter,
        mut each: impl FnMut(ChangeRecord) -> Result<(), E>,
    ) -> Result<(), E> {
        /// Why the read stopped: the database, or `each`.
        enum Stop<E> {
            Db(DbError),
            Each(E),
        }
        impl<E> From<DbError> for Stop<E> {
            fn from(e: DbError) -> Self {
                Stop::Db(e)
            }
        }
        if !self.table_exists("dropsync_changes")? {
            return Ok(());
        }
        let mut sql = String::from(
            "SELECT seq, integration, dataset, target_table, CAST(record_key AS VARCHAR), kind, action,
                    CAST(fields AS VARCHAR), execution_id, business_date, recorded_at
             FROM dropsync_changes WHERE true",
        );
        let mut params: Vec<Value> = Vec::new();
        if let Some(integration) = &filter.integration {
            sql.push_str(" AND integration = ?");
            params.push(Value::Text(integration.clone()));
        }
        if let Some(since) = filter.since {
            sql.push_str(" AND business_date >= ?");
            params.push(Value::Date(since));
        }
        if let Some(id) = &filter.execution_id {
            sql.push_str(" AND execution_id = ?");
            params.push(Value::Text(id.clone()));
        }
        if !filter.kinds.is_empty() {
            sql.push_str(&format!(
                " AND kind IN ({})",
                filter
                    .kinds
                    .iter()
                    .map(|k| format!("'{}'", k.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Some(after) = filter.after_seq {
            sql.push_str(" AND seq > ?");
            params.push(Value::Int(after));
        }
        sql.push_str(" ORDER BY seq");
        if let Some(limit) = filter.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        let refs: Vec<&dyn ToValue> = params.iter().map(|v| v as &dyn ToValue).collect();
        self.db()
            .for_each(&sql, &refs, |r| {
                let change = self.change_of(&r).map_err(|e| Stop::Each(E::from(e)))?;
                each(change).map_err(Stop::Each)
            })
            .map_err(|stop| match stop {
                Stop::Db(e) => E::from(self.query_error(READING_THE_LOG)(e)),
                Stop::Each(e) => e,
            })
    }

    /// The change a row of `each_change`'s query holds.
    fn change_of(&self, r: &super::db::Row) -> Result<ChangeRecord, StoreError> {
        let read = || -> Result<_, DbError> {
            Ok((
                r.get::<i64>(0)?,
                r.get::<String>(1)?,
                r.get::<String>(2)?,
                r.get::<String>(3)?,
                r.get::<String>(4)?,
                r.get::<String>(5)?,
                r.get::<String>(6)?,
                r.get::<String>(7)?,
                r.get::<String>(8)?,
                r.get::<Option<NaiveDate>>(9)?,
                r.get::<NaiveDateTime>(10)?,
            ))
        };
        let (seq, integration, dataset, table, key, kind, action, fields, id, date, at) =
            read().map_err(self.query_error(READING_THE_LOG))?;
        let bad = |what: &str| StoreError::Other {
            path: self.path().to_path_buf(),
            message: format!("change {seq} in the change log has an unreadable {what}"),
        };
        Ok(ChangeRecord {
            seq,
            integration,
            dataset,
            table,
            key: serde_json::from_str(&key).map_err(|_| bad("key"))?,
            kind: ChangeKind::parse(&kind).ok_or_else(|| bad("kind"))?,
            action: serde_json::from_value(serde_json::Value::String(action))
                .map_err(|_| bad("action"))?,
            fields: serde_json::from_str(&fields).map_err(|_| bad("fields"))?,
            execution_id: id,
            business_date: date,
            recorded_at: at,
        })
    }
}

/// What a failed read of the change log was doing, in its error.
const READING_THE_LOG: &str = "reading the change log";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_filter_passes_updates_that_changed_a_named_field_and_every_insert() {
        let record = |action, fields: serde_json::Value| ChangeRecord {
            seq: 1,
            integration: "crm".into(),
            dataset: "accounts".into(),
            table: "accounts".into(),
            key: serde_json::json!({"AccountID": "A1"}),
            kind: ChangeKind::Update,
            action,
            fields,
            execution_id: "x".into(),
            business_date: None,
            recorded_at: NaiveDateTime::default(),
        };
        let update = record(RowAction::Update, serde_json::json!({"Name": ["a", "b"]}));
        assert!(update.touches_any(&["Name".into()]));
        assert!(!update.touches_any(&["Seats".into()]));
        assert!(update.touches_any(&[]));
        let insert = record(
            RowAction::Insert,
            serde_json::json!({"AccountID": "A1", "Name": "a", "Seats": null}),
        );
        assert!(insert.touches_any(&["Seats".into()]));
        assert_eq!(insert.key_text(), "A1");
    }
}

//! One way to talk to the store's database, whichever it is: an embedded
//! DuckDB file or a PostgreSQL server. Statements are written once, with
//! `?` (or `?N`) parameters, and take typed values; rows come back as typed
//! values too. Where the two dialects differ, `Backend` says which one a
//! statement is for; nothing else in the store names a driver.

use std::cell::{RefCell, RefMut};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// The database behind a store.
pub(crate) enum Db {
    DuckDb(duckdb::Connection),
    /// One session, used by one thread at a time (as a DuckDB connection
    /// is): the store's transactions are the session's.
    Postgres {
        client: RefCell<postgres::Client>,
        /// How to open another session (`try_clone`).
        connect: Box<super::PgConnect>,
    },
}

/// Which dialect a statement must be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    DuckDb,
    Postgres,
}

/// The SQL type of a parameter: what a NULL stands for, and how
/// PostgreSQL is told a parameter's type (it cannot always infer one, as
/// in `? IS NULL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    Text,
    Int,
    Float,
    Bool,
    Date,
    Timestamp,
}

/// A value passed to, or read from, the database.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null(SqlType),
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Date(NaiveDate),
    Timestamp(NaiveDateTime),
}

impl Value {
    fn sql_type(&self) -> SqlType {
        match self {
            Value::Null(t) => *t,
            Value::Bool(_) => SqlType::Bool,
            Value::Int(_) => SqlType::Int,
            Value::Float(_) => SqlType::Float,
            Value::Text(_) => SqlType::Text,
            Value::Date(_) => SqlType::Date,
            Value::Timestamp(_) => SqlType::Timestamp,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::Null(_) => "NULL",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Text(_) => "text",
            Value::Date(_) => "a date",
            Value::Timestamp(_) => "a timestamp",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    DuckDb(#[from] duckdb::Error),
    #[error("{}", super::postgres::describe(.0))]
    Postgres(#[from] postgres::Error),
    #[error("column {column} holds {found}, not {expected}")]
    Type {
        column: usize,
        expected: &'static str,
        found: &'static str,
    },
    #[error("the query returned no rows")]
    NoRows,
    #[error("{0}")]
    Other(String),
}

/// A value a statement can take as a parameter.
pub trait ToValue {
    fn to_value(&self) -> Value;
    /// What a missing value of this type is.
    fn sql_type() -> SqlType
    where
        Self: Sized;
}

macro_rules! to_value {
    ($t:ty, $sql:ident, |$v:ident| $e:expr) => {
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                let $v = self;
                $e
            }
            fn sql_type() -> SqlType {
                SqlType::$sql
            }
        }
    };
}

to_value!(&str, Text, |v| Value::Text(v.to_string()));
to_value!(String, Text, |v| Value::Text(v.clone()));
to_value!(i64, Int, |v| Value::Int(*v));
to_value!(i32, Int, |v| Value::Int(i64::from(*v)));
to_value!(u32, Int, |v| Value::Int(i64::from(*v)));
to_value!(u64, Int, |v| Value::Int(
    i64::try_from(*v).unwrap_or(i64::MAX)
));
to_value!(usize, Int, |v| Value::Int(
    i64::try_from(*v).unwrap_or(i64::MAX)
));
to_value!(bool, Bool, |v| Value::Bool(*v));
to_value!(f64, Float, |v| Value::Float(*v));
to_value!(NaiveDate, Date, |v| Value::Date(*v));
to_value!(NaiveDateTime, Timestamp, |v| Value::Timestamp(*v));

impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
    fn sql_type() -> SqlType {
        SqlType::Text
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        match self {
            Some(v) => v.to_value(),
            None => Value::Null(T::sql_type()),
        }
    }
    fn sql_type() -> SqlType {
        T::sql_type()
    }
}

/// A value a row's column can be read as.
pub trait FromValue: Sized {
    fn from_value(value: &Value, column: usize) -> Result<Self, DbError>;
}

fn mismatch<T>(value: &Value, column: usize, expected: &'static str) -> Result<T, DbError> {
    Err(DbError::Type {
        column,
        expected,
        found: value.kind(),
    })
}

impl FromValue for String {
    fn from_value(value: &Value, column: usize) -> Result<Self, DbError> {
        match value {
            Value::Text(s) => Ok(s.clone()),
            Value::Int(i) => Ok(i.to_string()),
            Value::Float(f) => Ok(f.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            Value::Date(d) => Ok(d.to_string()),
            Value::Timestamp(t) => Ok(t.to_string()),
            Value::Null(_) => mismatch(value, column, "text"),
        }
    }
}

impl FromValue for i64 {
    fn from_value(value: &Value, column: usize) -> Result<Self, DbError> {
        match value {
            Value::Int(i) => Ok(*i),
            // PostgreSQL's sum() of integers is a numeric.
            Value::Float(f) if f.fract() == 0.0 => Ok(*f as i64),
            _ => mismatch(value, column, "an integer"),
        }
    }
}

impl FromValue for i32 {
    fn from_value(value: &Value, column: usize) -> Result<Self, DbError> {
        i64::from_value(value, column)
            .and_then(|i| i32::try_from(i).or_else(|_| mismatch(value, column, "a 32-bit integer")))
    }
}

impl FromValue for f64 {
    fn from_value(value: &Value, column: usize) -> Result<Self, DbError> {
        match value {
            Value::Float(f) => Ok(*f),
            Value::Int(i) => Ok(*i as f64),
            _ => mismatch(value, column, "a number"),
        }
    }
}

impl FromValue for bool {
    fn from_value(value: &Value, column: usize) -> Result<Self, DbError> {
        match value {
            Value::Bool(b) => Ok(*b),
            _ => mismatch(value, column, "a boolean"),
        }
    }
}

impl FromValue for NaiveDate {
    fn from_value(value: &Value, column: usize) -> Result<Self, DbError> {
        match value {
            Value::Date(d) => Ok(*d),
            _ => mismatch(value, column, "a date"),
        }
    }
}

impl FromValue for NaiveDateTime {
    fn from_value(value: &Value, column: usize) -> Result<Self, DbError> {
        match value {
            Value::Timestamp(t) => Ok(*t),
            _ => mismatch(value, column, "a timestamp"),
        }
    }
}

impl FromValue for Value {
    fn from_value(value: &Value, _column: usize) -> Result<Self, DbError> {
        Ok(value.clone())
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value, column: usize) -> Result<Self, DbError> {
        match value {
            Value::Null(_) => Ok(None),
            v => T::from_value(v, column).map(Some),
        }
    }
}

/// One row of a result.
#[derive(Debug, Clone)]
pub struct Row(Vec<Value>);

impl Row {
    /// Column `column` (from 0), as `T`.
    pub fn get<T: FromValue>(&self, column: usize) -> Result<T, DbError> {
        match self.0.get(column) {
            Some(v) => T::from_value(v, column),
            None => Err(DbError::Other(format!(
                "the row has {} columns, not {}",
                self.0.len(),
                column + 1
            ))),
        }
    }
}

pub type Params<'a> = &'a [&'a dyn ToValue];

impl Db {
    /// Another connection to the same database: DuckDB's sees its own
    /// snapshot of the same file; PostgreSQL's is a new session.
    pub fn try_clone(&self) -> Result<Db, DbError> {
        match self {
            Db::DuckDb(c) => Ok(Db::DuckDb(c.try_clone()?)),
            Db::Postgres { connect, .. } => Ok(Db::Postgres {
                client: RefCell::new(
                    connect
                        .connect()
                        .map_err(|e| DbError::Other(e.to_string()))?,
                ),
                connect: connect.clone(),
            }),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::DuckDb(_) => Backend::DuckDb,
            Db::Postgres { .. } => Backend::Postgres,
        }
    }

    /// The DuckDB connection, for what only DuckDB does (appenders, its
    /// own COPY, checkpoints).
    pub fn duck(&self) -> Option<&duckdb::Connection> {
        match self {
            Db::DuckDb(c) => Some(c),
            Db::Postgres { .. } => None,
        }
    }

    /// The PostgreSQL session, for what only PostgreSQL does (COPY FROM
    /// STDIN, advisory locks).
    pub fn pg(&self) -> Option<RefMut<'_, postgres::Client>> {
        match self {
            Db::DuckDb(_) => None,
            Db::Postgres { client: c, .. } => Some(c.borrow_mut()),
        }
    }

    /// Runs statements without parameters (`;`-separated).
    pub fn batch(&self, sql: &str) -> Result<(), DbError> {
        match self {
            Db::DuckDb(c) => Ok(c.execute_batch(sql)?),
            Db::Postgres { client: c, .. } => Ok(c.borrow_mut().batch_execute(sql)?),
        }
    }

    pub fn begin(&self) -> Result<(), DbError> {
        self.batch("BEGIN TRANSACTION")
    }

    pub fn commit(&self) -> Result<(), DbError> {
        self.batch("COMMIT")
    }

    /// Commits the open transaction straight into the store file: on
    /// DuckDB the commit checkpoints, so a batch's changes are written to
    /// the file once, not first to the write-ahead log and then again by
    /// the checkpoint that follows every batch (`Store::flush`). Atomic as
    /// any commit: the file's header names the new blocks only once they
    /// are written and synced, and a commit that fails applies nothing.
    pub fn commit_into_file(&self) -> Result<(), DbError> {
        if self.duck().is_none() {
            return self.commit();
        }
        self.batch("SET checkpoint_threshold = '0B'")?;
        let committed = self.commit();
        // Left as it is, later commits would checkpoint too: slower, and
        // no less safe; the commit's own outcome is what counts.
        if let Err(e) = self.batch("RESET checkpoint_threshold") {
            tracing::debug!(error = %e, "checkpoint threshold not reset");
        }
        committed
    }

    /// Rolls back the open transaction, if any; what failed is what the
    /// caller reports.
    pub fn rollback(&self) {
        let _ = self.batch("ROLLBACK");
    }

    /// Runs `work` in a transaction: committed if it succeeds, rolled back
    /// if it fails.
    pub fn in_transaction<T, E: From<DbError>>(
        &self,
        work: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        self.begin()?;
        match work() {
            Ok(v) => match self.commit() {
                Ok(()) => Ok(v),
                Err(e) => {
                    self.rollback();
                    Err(e.into())
                }
            },
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }

    /// Runs one statement; how many rows it changed.
    pub fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, DbError> {
        let values: Vec<Value> = params.iter().map(|p| p.to_value()).collect();
        match self {
            Db::DuckDb(c) => {
                let n = c.execute(sql, duckdb::params_from_iter(values.iter()))?;
                Ok(n as u64)
            }
            Db::Postgres { client: c, .. } => {
                let mut client = c.borrow_mut();
                let mut rows = client.query_typed_raw(&dollar_params(sql), typed(&values))?;
                while postgres::fallible_iterator::FallibleIterator::next(&mut rows)?.is_some() {}
                Ok(rows.rows_affected().unwrap_or(0))
            }
        }
    }

    /// Every row of a query.
    pub fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, DbError> {
        let mut out = Vec::new();
        self.for_each(sql, params, |row| {
            out.push(row);
            Ok::<(), DbError>(())
        })?;
        Ok(out)
    }

    /// Each row of a query in turn, without holding them all. `each` must
    /// not use the database.
    pub fn for_each<E: From<DbError>>(
        &self,
        sql: &str,
        params: Params<'_>,
        mut each: impl FnMut(Row) -> Result<(), E>,
    ) -> Result<(), E> {
        let values: Vec<Value> = params.iter().map(|p| p.to_value()).collect();
        match self {
            Db::DuckDb(c) => {
                let mut stmt = c.prepare(sql).map_err(DbError::from)?;
                let mut rows = stmt
                    .query(duckdb::params_from_iter(values.iter()))
                    .map_err(DbError::from)?;
                while let Some(r) = rows.next().map_err(DbError::from)? {
                    let n = r.as_ref().column_count();
                    let row = (0..n)
                        .map(|i| r.get::<_, duckdb::types::Value>(i).map(from_duck))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(DbError::from)?;
                    each(Row(row))?;
                }
                Ok(())
            }
            Db::Postgres { client: c, .. } => {
                use postgres::fallible_iterator::FallibleIterator;
                let mut client = c.borrow_mut();
                let mut rows = client
                    .query_typed_raw(&dollar_params(sql), typed(&values))
                    .map_err(DbError::from)?;
                while let Some(r) = rows.next().map_err(DbError::from)? {
                    each(from_pg(&r)?)?;
                }
                Ok(())
            }
        }
    }

    /// The first row of a query, read by `read`; `DbError::NoRows` if there
    /// is none.
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        read: impl FnOnce(&Row) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        match self.query_opt(sql, params)? {
            Some(row) => read(&row),
            None => Err(DbError::NoRows),
        }
    }

    /// The first row of a query, if there is one.
    pub fn query_opt(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, DbError> {
        let mut first = None;
        self.for_each(sql, params, |row| {
            if first.is_none() {
                first = Some(row);
            }
            Ok::<(), DbError>(())
        })?;
        Ok(first)
    }

    /// The one value of a one-row, one-column query.
    pub fn value<T: FromValue>(&self, sql: &str, params: Params<'_>) -> Result<T, DbError> {
        self.query_row(sql, params, |r| r.get(0))
    }

    /// Adds `rows` to `table` in bulk (DuckDB's appender, PostgreSQL's
    /// COPY), in the open transaction. Each row holds a value for each of
    /// `columns`, in order.
    pub fn insert_rows(
        &self,
        table: &str,
        columns: &[&str],
        rows: impl IntoIterator<Item = Vec<Value>>,
    ) -> Result<u64, DbError> {
        match self {
            Db::DuckDb(c) => {
                // An appender fills every column of the table, in order;
                // naming the columns keeps the others at their defaults.
                let mut appender = match table.strip_prefix("temp.") {
                    Some(name) => {
                        c.appender_with_columns_to_catalog_and_db(name, "temp", "main", columns)?
                    }
                    None => c.appender_with_columns(table, columns)?,
                };
                let mut n = 0u64;
                for row in rows {
                    appender.append_row(duckdb::appender_params_from_iter(row.iter()))?;
                    n += 1;
                }
                appender.flush()?;
                Ok(n)
            }
            Db::Postgres { client: c, .. } => {
                use std::io::Write;
                let mut client = c.borrow_mut();
                let columns = columns
                    .iter()
                    .map(|c| super::ident(c))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut writer = client.copy_in(&format!(
                    "COPY {table} ({columns}) FROM STDIN (FORMAT text)"
                ))?;
                let mut line = String::new();
                let mut n = 0u64;
                for row in rows {
                    line.clear();
                    for (i, v) in row.iter().enumerate() {
                        if i > 0 {
                            line.push('\t');
                        }
                        copy_text(v, &mut line);
                    }
                    line.push('\n');
                    writer
                        .write_all(line.as_bytes())
                        .map_err(|e| DbError::Other(format!("copying rows into {table}: {e}")))?;
                    n += 1;
                }
                writer.finish()?;
                Ok(n)
            }
        }
    }
}

impl Backend {
    /// A temporary table's name, qualified so that it is never a table of
    /// the store's own schema.
    pub fn temp(self, name: &str) -> String {
        match self {
            Backend::DuckDb => format!("temp.{name}"),
            Backend::Postgres => format!("pg_temp.{name}"),
        }
    }

    /// Statements that make `name` a new temporary table holding what
    /// `select` selects.
    pub fn create_temp_as(self, name: &str, select: &str) -> String {
        match self {
            Backend::DuckDb => format!("CREATE OR REPLACE TEMP TABLE {name} AS {select}"),
            Backend::Postgres => {
                format!("DROP TABLE IF EXISTS pg_temp.{name}; CREATE TEMP TABLE {name} AS {select}")
            }
        }
    }

    /// Statements that make `name` a new, empty temporary table.
    pub fn create_temp(self, name: &str, columns: &str) -> String {
        match self {
            Backend::DuckDb => format!("CREATE OR REPLACE TEMP TABLE {name} ({columns})"),
            Backend::Postgres => {
                format!("DROP TABLE IF EXISTS pg_temp.{name}; CREATE TEMP TABLE {name} ({columns})")
            }
        }
    }

    /// The pseudo-column that names a stored row's place, stable within a
    /// transaction until the row is changed.
    pub fn row_id(self) -> &'static str {
        match self {
            Backend::DuckDb => "rowid",
            Backend::Postgres => "ctid",
        }
    }

    /// A condition: the row's place is one of those `places` (a query of
    /// one column of `row_id`s) selects. PostgreSQL fetches each by its
    /// place from an array (a TID scan) instead of scanning the table.
    pub fn row_in(self, places: &str) -> String {
        match self {
            Backend::DuckDb => format!("rowid IN ({places})"),
            Backend::Postgres => format!("ctid = ANY(ARRAY({places}))"),
        }
    }

    /// The column type a DuckDB type name (as schemas give them, or as
    /// DuckDB describes the Parquet hand-off) is here. PostgreSQL keeps
    /// times and timestamps to the microsecond, as the store does.
    pub fn column_type(self, duckdb_type: &str) -> String {
        match (self, duckdb_type) {
            (Backend::Postgres, "DOUBLE") => "DOUBLE PRECISION".into(),
            (Backend::Postgres, "HUGEINT" | "UBIGINT") => "NUMERIC".into(),
            (Backend::Postgres, "UINTEGER") => "BIGINT".into(),
            (Backend::Postgres, "TINYINT" | "UTINYINT") => "SMALLINT".into(),
            (Backend::Postgres, "USMALLINT") => "INTEGER".into(),
            (Backend::Postgres, "BLOB") => "BYTEA".into(),
            (Backend::Postgres, "TIMESTAMP_NS" | "TIMESTAMP_MS" | "TIMESTAMP_S") => {
                "TIMESTAMP".into()
            }
            (Backend::Postgres, "TIMESTAMP WITH TIME ZONE") => "TIMESTAMPTZ".into(),
            // A time of day read back from the batch's Parquet parts.
            (Backend::Postgres, "TIME_NS") => "TIME".into(),
            (_, other) => other.into(),
        }
    }

    /// `expr`, a value of DuckDB type `duckdb_type`, as the text DuckDB
    /// casts it to, so that what a run prints of a value (a dry run's
    /// `old -> new`) is the same on either store: PostgreSQL writes a
    /// whole double without its `.0`.
    pub fn as_text(self, expr: &str, duckdb_type: &str) -> String {
        match (self, duckdb_type) {
            (Backend::Postgres, "DOUBLE" | "FLOAT" | "REAL") => {
                format!("regexp_replace(CAST({expr} AS VARCHAR), '^(-?[0-9]+)$', '\\1.0')")
            }
            _ => format!("CAST({expr} AS VARCHAR)"),
        }
    }

    /// `at` as an SQL timestamp literal.
    pub fn timestamp(self, at: NaiveDateTime) -> String {
        format!("TIMESTAMP '{}'", at.format("%Y-%m-%d %H:%M:%S%.6f"))
    }
}

/// A value as COPY's text format writes it.
fn copy_text(value: &Value, out: &mut String) {
    match value {
        Value::Null(_) => out.push_str("\\N"),
        Value::Bool(b) => out.push(if *b { 't' } else { 'f' }),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::Float(f) => out.push_str(&f.to_string()),
        Value::Date(d) => out.push_str(&d.to_string()),
        Value::Timestamp(t) => out.push_str(&t.format("%Y-%m-%d %H:%M:%S%.f").to_string()),
        Value::Text(s) => {
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
        }
    }
}

/// `sql` with DuckDB-style parameters (`?`, `?2`) as PostgreSQL's (`$1`,
/// `$2`); quoted text and identifiers are left as they are.
pub(crate) fn dollar_params(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut next = 1;
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    out.push(c);
                }
                '?' => {
                    out.push('$');
                    if chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                            out.push(*d);
                            chars.next();
                        }
                    } else {
                        out.push_str(&next.to_string());
                        next += 1;
                    }
                }
                c => out.push(c),
            },
        }
    }
    out
}

fn pg_type(t: SqlType) -> postgres::types::Type {
    use postgres::types::Type;
    match t {
        SqlType::Text => Type::TEXT,
        SqlType::Int => Type::INT8,
        SqlType::Float => Type::FLOAT8,
        SqlType::Bool => Type::BOOL,
        SqlType::Date => Type::DATE,
        SqlType::Timestamp => Type::TIMESTAMP,
    }
}

fn typed(values: &[Value]) -> Vec<(&Value, postgres::types::Type)> {
    values.iter().map(|v| (v, pg_type(v.sql_type()))).collect()
}

impl postgres::types::ToSql for Value {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null(_) => Ok(postgres::types::IsNull::Yes),
            Value::Bool(b) => b.to_sql(ty, out),
            Value::Int(i) => i.to_sql(ty, out),
            Value::Float(f) => f.to_sql(ty, out),
            Value::Text(s) => s.to_sql(ty, out),
            Value::Date(d) => d.to_sql(ty, out),
            Value::Timestamp(t) => t.to_sql(ty, out),
        }
    }

    fn accepts(_ty: &postgres::types::Type) -> bool {
        // Each value is sent with the type its variant names (`typed`).
        true
    }

    postgres::types::to_sql_checked!();
}

impl duckdb::ToSql for Value {
    fn to_sql(&self) -> duckdb::Result<duckdb::types::ToSqlOutput<'_>> {
        use duckdb::types::{TimeUnit, ToSqlOutput, Value as D};
        Ok(ToSqlOutput::Owned(match self {
            Value::Null(_) => D::Null,
            Value::Bool(b) => D::Boolean(*b),
            Value::Int(i) => D::BigInt(*i),
            Value::Float(f) => D::Double(*f),
            Value::Text(s) => D::Text(s.clone()),
            Value::Date(d) => D::Date32(
                (*d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date")).num_days() as i32,
            ),
            Value::Timestamp(t) => {
                D::Timestamp(TimeUnit::Microsecond, t.and_utc().timestamp_micros())
            }
        }))
    }
}

/// A DuckDB value as the store reads it.
fn from_duck(v: duckdb::types::Value) -> Value {
    use duckdb::types::Value as D;
    match v {
        D::Null => Value::Null(SqlType::Text),
        D::Boolean(b) => Value::Bool(b),
        D::TinyInt(i) => Value::Int(i.into()),
        D::SmallInt(i) => Value::Int(i.into()),
        D::Int(i) => Value::Int(i.into()),
        D::BigInt(i) => Value::Int(i),
        D::UTinyInt(i) => Value::Int(i.into()),
        D::USmallInt(i) => Value::Int(i.into()),
        D::UInt(i) => Value::Int(i.into()),
        D::UBigInt(i) => i64::try_from(i)
            .map(Value::Int)
            .unwrap_or(Value::Float(i as f64)),
        D::HugeInt(i) => i64::try_from(i)
            .map(Value::Int)
            .unwrap_or(Value::Float(i as f64)),
        D::UHugeInt(i) => i64::try_from(i)
            .map(Value::Int)
            .unwrap_or(Value::Float(i as f64)),
        D::Float(f) => Value::Float(f.into()),
        D::Double(f) => Value::Float(f),
        D::Decimal(d) => d
            .to_string()
            .parse::<f64>()
            .map(Value::Float)
            .unwrap_or_else(|_| Value::Text(d.to_string())),
        D::Timestamp(unit, t) => DateTime::<Utc>::from_timestamp_micros(unit.to_micros(t))
            .map(|t| Value::Timestamp(t.naive_utc()))
            .unwrap_or(Value::Null(SqlType::Timestamp)),
        D::Date32(days) => NaiveDate::from_ymd_opt(1970, 1, 1)
            .and_then(|e| e.checked_add_signed(chrono::Duration::days(days.into())))
            .map(Value::Date)
            .unwrap_or(Value::Null(SqlType::Date)),
        D::Text(s) | D::Enum(s) => Value::Text(s),
        D::Blob(b) => Value::Text(String::from_utf8_lossy(&b).into_owned()),
        other => Value::Text(format!("{other:?}")),
    }
}

/// A PostgreSQL row as the store reads it.
fn from_pg(row: &postgres::Row) -> Result<Row, DbError> {
    use postgres::types::Type;
    let mut out = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let v = if *ty == Type::BOOL {
            row.try_get::<_, Option<bool>>(i)?
                .map(Value::Bool)
                .unwrap_or(Value::Null(SqlType::Bool))
        } else if *ty == Type::INT2 {
            opt_int(row.try_get::<_, Option<i16>>(i)?.map(i64::from))
        } else if *ty == Type::INT4 {
            opt_int(row.try_get::<_, Option<i32>>(i)?.map(i64::from))
        } else if *ty == Type::INT8 {
            opt_int(row.try_get::<_, Option<i64>>(i)?)
        } else if *ty == Type::OID {
            opt_int(row.try_get::<_, Option<u32>>(i)?.map(i64::from))
        } else if *ty == Type::FLOAT4 {
            opt_float(row.try_get::<_, Option<f32>>(i)?.map(f64::from))
        } else if *ty == Type::FLOAT8 {
            opt_float(row.try_get::<_, Option<f64>>(i)?)
        } else if *ty == Type::NUMERIC {
            match row.try_get::<_, Option<Numeric>>(i)? {
                Some(Numeric(v)) => v,
                None => Value::Null(SqlType::Float),
            }
        } else if *ty == Type::DATE {
            row.try_get::<_, Option<NaiveDate>>(i)?
                .map(Value::Date)
                .unwrap_or(Value::Null(SqlType::Date))
        } else if *ty == Type::TIMESTAMP {
            row.try_get::<_, Option<NaiveDateTime>>(i)?
                .map(Value::Timestamp)
                .unwrap_or(Value::Null(SqlType::Timestamp))
        } else if *ty == Type::TIMESTAMPTZ {
            row.try_get::<_, Option<DateTime<Utc>>>(i)?
                .map(|t| Value::Timestamp(t.naive_utc()))
                .unwrap_or(Value::Null(SqlType::Timestamp))
        } else {
            row.try_get::<_, Option<AnyText>>(i)?
                .map(|AnyText(s)| Value::Text(s))
                .unwrap_or(Value::Null(SqlType::Text))
        };
        out.push(v);
    }
    Ok(Row(out))
}

fn opt_int(v: Option<i64>) -> Value {
    v.map(Value::Int).unwrap_or(Value::Null(SqlType::Int))
}

fn opt_float(v: Option<f64>) -> Value {
    v.map(Value::Float).unwrap_or(Value::Null(SqlType::Float))
}

/// A column of text PostgreSQL sends as text: text, varchar, name, json,
/// jsonb (after its version byte).
struct AnyText(String);

impl<'a> postgres::types::FromSql<'a> for AnyText {
    fn from_sql(
        ty: &postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let raw = if *ty == postgres::types::Type::JSONB {
            raw.get(1..).unwrap_or_default()
        } else {
            raw
        };
        Ok(AnyText(std::str::from_utf8(raw)?.to_string()))
    }

    fn accepts(ty: &postgres::types::Type) -> bool {
        use postgres::types::Type;
        [
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

/// A PostgreSQL numeric (what `sum` of integers gives), read from its
/// binary form: an integer when it has no fraction and fits, else a
/// float.
struct Numeric(Value);

impl<'a> postgres::types::FromSql<'a> for Numeric {
    fn from_sql(
        _ty: &postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let word = |i: usize| -> Result<u16, Box<dyn std::error::Error + Sync + Send>> {
            raw.get(i * 2..i * 2 + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or_else(|| "a short numeric".into())
        };
        let ndigits = word(0)? as usize;
        let weight = word(1)? as i16;
        let sign = word(2)?;
        const NAN: u16 = 0xC000;
        if sign == NAN {
            return Ok(Numeric(Value::Float(f64::NAN)));
        }
        let mut int: i128 = 0;
        let mut exact = true;
        let mut float = 0f64;
        for d in 0..ndigits {
            let digit = word(4 + d)?;
            let power = i32::from(weight) - d as i32;
            float += f64::from(digit) * 10000f64.powi(power);
            if power < 0 {
                exact &= digit == 0;
            } else {
                match 10000i128
                    .checked_pow(power as u32)
                    .and_then(|p| p.checked_mul(i128::from(digit)))
                    .and_then(|v| v.checked_add(int))
                {
                    Some(v) => int = v,
                    None => exact = false,
                }
            }
        }
        let negative = sign == 0x4000;
        Ok(Numeric(match i64::try_from(int) {
            Ok(i) if exact => Value::Int(if negative { -i } else { i }),
            _ => Value::Float(if negative { -float } else { float }),
        }))
    }

    fn accepts(ty: &postgres::types::Type) -> bool {
        *ty == postgres::types::Type::NUMERIC
    }
}

#[cfg(test)]
mod tests {
    use super::{Backend, dollar_params};

    #[test]
    fn duckdb_types_without_a_postgres_name_get_the_nearest_one() {
        let pg = Backend::Postgres;
        assert_eq!(pg.column_type("TIME_NS"), "TIME");
        assert_eq!(pg.column_type("TIMESTAMP_NS"), "TIMESTAMP");
        assert_eq!(pg.column_type("UINTEGER"), "BIGINT");
        assert_eq!(pg.column_type("VARCHAR"), "VARCHAR");
        assert_eq!(Backend::DuckDb.column_type("TIME_NS"), "TIME_NS");
    }

    #[test]
    fn a_double_is_text_with_its_fraction_on_either_store() {
        assert_eq!(
            Backend::Postgres.as_text("t.x", "DOUBLE"),
            r"regexp_replace(CAST(t.x AS VARCHAR), '^(-?[0-9]+)$', '\1.0')"
        );
        assert_eq!(
            Backend::DuckDb.as_text("t.x", "DOUBLE"),
            "CAST(t.x AS VARCHAR)"
        );
        assert_eq!(
            Backend::Postgres.as_text("t.x", "INTEGER"),
            "CAST(t.x AS VARCHAR)"
        );
    }

    #[test]
    fn question_marks_become_numbered_parameters_outside_quotes() {
        assert_eq!(
            dollar_params("SELECT a FROM t WHERE b = ? AND c = '?' AND \"d?\" = ?"),
            "SELECT a FROM t WHERE b = $1 AND c = '?' AND \"d?\" = $2"
        );
        assert_eq!(
            dollar_params("WHERE (?2::VARCHAR IS NULL OR n = ?2) AND m = ?3"),
            "WHERE ($2::VARCHAR IS NULL OR n = $2) AND m = $3"
        );
        assert_eq!(dollar_params("SELECT 'it''s ?'"), "SELECT 'it''s ?'");
    }
}

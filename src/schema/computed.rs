//! Calculated fields: `computed = { ARR = "MRR * 12" }` in an integration.
//! Each is one SQL expression over the columns a file gives (by their
//! schema names), evaluated by DuckDB over a batch's validated, typed rows.
//! Its value is then checked as the schema's field of that name, so a value
//! that breaks a constraint is a row error like any other, and the field is
//! stored, diffed and exported like the others.
//!
//! An expression runs in an in-memory DuckDB that can reach no file and
//! whose settings are locked, and must be one scalar expression: no second
//! statement, no subquery, no aggregate or window function. A config whose
//! expression does not parse, names an unknown column, or cannot be cast to
//! its field's type is refused when it loads, before any file is read.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use duckdb::Connection;
use duckdb::arrow::array::{Array, ArrayRef, AsArray};
use duckdb::arrow::datatypes::{DataType as ArrowType, UInt32Type};
use polars::prelude::*;
use regex::Regex;

use super::validate::{self, RowError, ValidRows};
use super::{Field, RawTable, TableSchema};
use crate::store::ident;

/// The column that carries each row's position in the batch through DuckDB.
/// Schema fields cannot start with `_`, so it never clashes with one.
const ROW: &str = "__row";

/// Why a batch's calculated fields could not be computed at all (a bad
/// value is a row error, not this): the scratch file or DuckDB failed.
#[derive(Debug, thiserror::Error)]
pub enum ComputedError {
    #[error("cannot compute the calculated fields: cannot {operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot compute the calculated fields: {operation}: {message}")]
    Engine {
        operation: &'static str,
        message: String,
    },
}

/// An integration's calculated fields, checked against its dataset's schema.
#[derive(Debug, Clone)]
pub struct ComputedFields {
    /// In schema order.
    fields: Vec<ComputedField>,
    /// The fields read from the file: what the expressions may name.
    inputs: Vec<Field>,
    /// The dataset's schema: missing values and requirements.
    schema: TableSchema,
}

#[derive(Debug, Clone)]
struct ComputedField {
    field: Field,
    expression: String,
}

/// One computed value that failed, by its row in the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub row: u32,
    pub field: String,
    pub message: String,
}

/// A batch with its calculated fields added.
#[derive(Debug)]
pub struct Computed {
    /// Every row of the batch, with one typed column per calculated field,
    /// in schema order (a failed value is null).
    pub frame: DataFrame,
    /// Each failed value, described.
    pub problems: Vec<Problem>,
    /// Rows whose value failed past the number of problems asked to be
    /// described: rejected all the same.
    pub undescribed: Vec<u32>,
}

impl ComputedFields {
    /// Checks an integration's `computed` table against `schema`, with
    /// `columns` (its header renames); `Ok(None)` when it has none. The
    /// error names the calculated field and says what is wrong with it.
    pub fn check(
        schema: &TableSchema,
        computed: &BTreeMap<String, String>,
        columns: &BTreeMap<String, String>,
    ) -> Result<Option<ComputedFields>, String> {
        if computed.is_empty() {
            return Ok(None);
        }
        for name in computed.keys() {
            let fail = |message: String| format!("computed field `{name}`: {message}");
            let Some(field) = schema.field(name) else {
                let known: Vec<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
                return Err(fail(format!(
                    "not a field of the dataset's schema (fields: {}); a computed field takes its type and constraints from the schema, so add it there",
                    known.join(", ")
                )));
            };
            if let Some((header, _)) = columns.iter().find(|(_, to)| *to == name) {
                return Err(fail(format!(
                    "`columns` maps the file's column `{header}` to it; a field is read from the file or computed, not both"
                )));
            }
            if let Some(role) = cross_row_role(schema, field) {
                return Err(fail(format!(
                    "it is {role}, which is checked across the file's rows before calculated fields exist; read it from the file instead"
                )));
            }
        }
        let fields: Vec<ComputedField> = schema
            .fields
            .iter()
            .filter_map(|f| {
                computed.get(&f.name).map(|expression| ComputedField {
                    field: f.clone(),
                    expression: expression.clone(),
                })
            })
            .collect();
        let inputs: Vec<Field> = schema
            .fields
            .iter()
            .filter(|f| !computed.contains_key(&f.name))
            .cloned()
            .collect();
        if inputs.is_empty() {
            return Err("every field is computed: at least one must come from the file".into());
        }
        let conn = locked_connection()
            .map_err(|e| format!("cannot check the computed fields: {}", first_line(&e)))?;
        // One row of nulls typed like the file's columns: binding finds
        // unknown columns and aggregates, running finds casts no value of
        // the column's type could make.
        let probe = format!(
            "(SELECT 0::UINTEGER AS {}, {}) AS batch",
            ident(ROW),
            inputs
                .iter()
                .map(|f| format!("NULL::{} AS {}", f.kind.sql_type(), ident(&f.name)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let computed_names: Vec<&str> = computed.keys().map(String::as_str).collect();
        for c in &fields {
            let fail = |message: String| format!("computed field `{}`: {message}", c.field.name);
            check_shape(&conn, &c.expression).map_err(fail)?;
            let sql = format!("SELECT {}, {} FROM {probe}", ident(ROW), value_sql(c));
            conn.query_row(&sql, [], |_| Ok(()))
                .map_err(|e| fail(bind_message(&e, &c.field, &inputs, &computed_names)))?;
        }
        Ok(Some(ComputedFields {
            fields,
            inputs,
            schema: schema.clone(),
        }))
    }

    /// Whether `name` is a calculated field.
    pub fn contains(&self, name: &str) -> bool {
        self.fields.iter().any(|c| c.field.name == name)
    }

    /// `schema` without the calculated fields: what a file is read with.
    pub fn file_schema(&self, schema: &TableSchema) -> TableSchema {
        let mut file = schema.clone();
        file.fields.retain(|f| !self.contains(&f.name));
        file
    }

    /// Adds the calculated fields to a batch's valid rows. A row whose
    /// value fails (the expression, the type or a constraint) becomes a row
    /// error naming its line and the field, and leaves the batch; past
    /// `keep_errors` described problems, rows are still rejected and
    /// counted. `scratch` is a directory for the batch's copy to DuckDB.
    pub fn add_to(
        &self,
        valid: ValidRows,
        raw: &RawTable,
        scratch: &Path,
        keep_errors: usize,
    ) -> Result<ValidRows, ComputedError> {
        let ValidRows {
            frame,
            rows,
            mut errors,
            input_rows,
            mut error_rows,
            skipped_rows,
            mut rejected_keys,
            ignored_columns,
        } = valid;
        let computed = self.evaluate(&frame, scratch, keep_errors)?;
        drop(frame);
        let mut bad = vec![false; rows.len()];
        // Keys and raw text are the file's: `inputs` is the file schema.
        let key_fields: Vec<(usize, &Field)> = self
            .schema
            .primary_key()
            .iter()
            .filter_map(|k| {
                self.inputs
                    .iter()
                    .position(|f| &f.name == k)
                    .map(|i| (i, &self.inputs[i]))
            })
            .collect();
        let written_key = |raw_row: usize| -> Option<String> {
            let parts: Vec<&str> = key_fields
                .iter()
                .map(|(i, _)| raw.columns[*i].get(raw_row).unwrap_or(""))
                .collect();
            (!parts.is_empty()).then(|| parts.join("|"))
        };
        // As the store spells the key, so that a snapshot keeps the stored
        // copy of a rejected row: these rows passed validation, so their
        // key values read.
        let stored_key = |raw_row: usize| -> Option<String> {
            let mut parts = Vec::with_capacity(key_fields.len());
            for (i, field) in &key_fields {
                let v = raw.columns[*i].get(raw_row)?;
                parts.push(validate::canonical(field, v).ok()?.into_owned());
            }
            (!parts.is_empty()).then(|| parts.join("|"))
        };
        let mut reject = |row: u32, bad: &mut [bool]| {
            let row = row as usize;
            if !bad[row] {
                bad[row] = true;
                if rejected_keys.len() < keep_errors {
                    rejected_keys.extend(stored_key(rows[row] as usize));
                }
            }
        };
        for &row in &computed.undescribed {
            reject(row, &mut bad);
        }
        let described = !computed.problems.is_empty();
        for problem in computed.problems {
            reject(problem.row, &mut bad);
            let raw_row = rows[problem.row as usize] as usize;
            errors.push(RowError {
                line: raw.lines[raw_row],
                key: written_key(raw_row),
                field: Some(problem.field),
                message: problem.message,
                raw: raw.raw_row(raw_row),
            });
        }
        if described {
            errors.sort_by_key(|e| e.line);
        }
        let rejected = bad.iter().filter(|b| **b).count();
        error_rows += rejected as u64;
        let (frame, rows) = if rejected == 0 {
            (computed.frame, rows)
        } else {
            let keep: BooleanChunked = bad.iter().map(|b| !b).collect();
            let frame = computed
                .frame
                .filter(&keep)
                .expect("the mask has one value per row");
            let rows = rows
                .into_iter()
                .zip(&bad)
                .filter(|(_, b)| !**b)
                .map(|(r, _)| r)
                .collect();
            (frame, rows)
        };
        Ok(ValidRows {
            frame,
            rows,
            errors,
            input_rows,
            error_rows,
            skipped_rows,
            rejected_keys,
            ignored_columns,
        })
    }

    /// Computes the calculated fields of every row of `frame` (a batch's
    /// validated rows, one column per field read from the file) and checks
    /// each value as its field's.
    pub fn evaluate(
        &self,
        frame: &DataFrame,
        scratch: &Path,
        keep_errors: usize,
    ) -> Result<Computed, ComputedError> {
        let n = frame.height();
        let mut problems: Vec<Problem> = Vec::new();
        let mut undescribed: Vec<u32> = Vec::new();
        // Rows whose expression failed, per field: their value is not
        // checked again (it has none).
        let mut failed_rows: Vec<HashSet<u32>> = vec![HashSet::new(); self.fields.len()];
        let started = std::time::Instant::now();
        let texts: Vec<StringChunked> = if n == 0 {
            vec![StringChunked::full_null("".into(), 0); self.fields.len()]
        } else {
            let conn = self.load(frame, scratch)?;
            tracing::debug!(
                ms = started.elapsed().as_millis() as u64,
                "computed fields: batch loaded"
            );
            match self.all_at_once(&conn, n)? {
                Some(texts) => texts,
                None => {
                    let mut texts = Vec::with_capacity(self.fields.len());
                    for (c, failed_rows) in self.fields.iter().zip(&mut failed_rows) {
                        let budget = keep_errors.saturating_sub(problems.len());
                        let unread_before = undescribed.len();
                        let (values, failed) =
                            self.row_by_row(&conn, c, n, budget, &mut undescribed)?;
                        failed_rows.extend(
                            failed
                                .iter()
                                .map(|(row, _)| *row)
                                .chain(undescribed[unread_before..].iter().copied()),
                        );
                        problems.extend(failed.into_iter().map(|(row, message)| Problem {
                            row,
                            field: c.field.name.clone(),
                            message: format!(
                                "the expression `{}` failed: {message}",
                                crate::config::echo(&c.expression)
                            ),
                        }));
                        texts.push(values.iter().map(Option::as_deref).collect());
                    }
                    texts
                }
            }
        };
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "computed fields: computed"
        );

        let mut columns: Vec<Column> = Vec::with_capacity(frame.width() + self.fields.len());
        let mut computed: Vec<Option<Column>> = Vec::with_capacity(self.fields.len());
        for ((c, values), failed) in self.fields.iter().zip(&texts).zip(&failed_rows) {
            let missing = c.field.missing_values(&self.schema);
            let present: Vec<Option<&str>> = values
                .iter()
                .map(|v| v.filter(|v| !missing.iter().any(|m| m == v)))
                .collect();
            let (series, issues) = validate::check_column(&c.field, &self.schema, &present);
            for (row, message) in issues {
                if failed.contains(&(row as u32)) {
                    continue;
                }
                if problems.len() < keep_errors {
                    problems.push(Problem {
                        row: row as u32,
                        field: c.field.name.clone(),
                        message: format!(
                            "{message} (computed as `{}`)",
                            crate::config::echo(&c.expression)
                        ),
                    });
                } else {
                    undescribed.push(row as u32);
                }
            }
            computed.push(Some(series.into_column()));
        }
        drop(texts);
        // Schema order, then the file's other columns (`_attributes`).
        let mut placed: HashSet<&str> = HashSet::new();
        for f in &self.schema.fields {
            if let Some(i) = self.fields.iter().position(|c| c.field.name == f.name) {
                columns.push(
                    computed[i]
                        .take()
                        .expect("each computed column is placed once"),
                );
            } else if let Ok(column) = frame.column(&f.name) {
                columns.push(column.clone());
            }
            placed.insert(f.name.as_str());
        }
        for column in frame.columns() {
            if !placed.contains(column.name().as_str()) {
                columns.push(column.clone());
            }
        }
        let frame = DataFrame::new(n, columns).expect("columns built with one value per row");
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "computed fields: checked"
        );
        problems.sort_by_key(|p| p.row);
        Ok(Computed {
            frame,
            problems,
            undescribed,
        })
    }

    /// Every field of every row in one query, as text in row order; `None`
    /// when a value fails (the rows are then computed by ranges, to find
    /// which).
    fn all_at_once(
        &self,
        conn: &Connection,
        n: usize,
    ) -> Result<Option<Vec<StringChunked>>, ComputedError> {
        let sql = format!(
            "SELECT {}, {} FROM batch",
            ident(ROW),
            self.fields
                .iter()
                .map(value_sql)
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut stmt = conn
            .prepare(&sql)
            .map_err(engine("preparing the expressions"))?;
        if let Err(e) = stmt.execute([]) {
            let message = first_line(&e);
            if is_engine_failure(&message) {
                return Err(ComputedError::Engine {
                    operation: "computing the fields",
                    message,
                });
            }
            return Ok(None);
        }
        let mut builders: Vec<Vec<Option<&str>>> = Vec::new();
        let mut chunks = Vec::new();
        while let Some(chunk) = stmt.step().map_err(engine("reading computed values"))? {
            chunks.push(chunk);
        }
        let mut next_row: u32 = 0;
        let mut texts = Vec::with_capacity(self.fields.len());
        for _ in &self.fields {
            builders.push(Vec::with_capacity(n));
        }
        let mut owned = Vec::with_capacity(chunks.len() * self.fields.len());
        for chunk in &chunks {
            for i in 0..self.fields.len() {
                owned.push(utf8(chunk.column(i + 1))?);
            }
        }
        for (k, chunk) in chunks.iter().enumerate() {
            // DuckDB keeps a table's insertion order in results without
            // ORDER BY (`preserve_insertion_order`); checked, not assumed.
            let rows = chunk.column(0).as_primitive::<UInt32Type>();
            for i in 0..chunk.len() {
                if rows.value(i) != next_row {
                    return Ok(None);
                }
                next_row += 1;
            }
            for (f, builder) in builders.iter_mut().enumerate() {
                let text = owned[k * self.fields.len() + f].as_string::<i32>();
                builder.extend((0..text.len()).map(|i| (!text.is_null(i)).then(|| text.value(i))));
            }
        }
        if next_row as usize != n {
            return Ok(None);
        }
        for builder in builders {
            texts.push(builder.into_iter().collect::<StringChunked>());
        }
        Ok(Some(texts))
    }

    /// One field over ranges of rows, finding the rows whose value fails.
    fn row_by_row(
        &self,
        conn: &Connection,
        c: &ComputedField,
        n: usize,
        budget: usize,
        undescribed: &mut Vec<u32>,
    ) -> Result<(Vec<Option<String>>, Vec<FailedValue>), ComputedError> {
        let sql = format!(
            "SELECT {row}, {value} FROM batch WHERE {row} >= ? AND {row} < ?",
            row = ident(ROW),
            value = value_sql(c)
        );
        let mut stmt = conn
            .prepare(&sql)
            .map_err(engine("preparing an expression"))?;
        let mut values: Vec<Option<String>> = vec![None; n];
        let mut failed = Vec::new();
        RangeRun {
            stmt: &mut stmt,
            values: &mut values,
            failed: &mut failed,
            undescribed,
            budget,
        }
        .range(0, n as u32)?;
        Ok((values, failed))
    }

    /// A locked in-memory DuckDB holding the batch's input columns as
    /// table `batch`, with each row's position in column `__row`.
    fn load(&self, frame: &DataFrame, scratch: &Path) -> Result<Connection, ComputedError> {
        let io = |operation, path: &Path| {
            let path = path.to_path_buf();
            move |source| ComputedError::Io {
                operation,
                path,
                source,
            }
        };
        std::fs::create_dir_all(scratch).map_err(io("create", scratch))?;
        let mut file = tempfile::Builder::new()
            .prefix("computed-")
            .suffix(".parquet")
            .tempfile_in(scratch)
            .map_err(io("create a file in", scratch))?;
        let path = file.path().to_path_buf();
        let n = frame.height() as u32;
        let mut columns: Vec<Column> = vec![Column::new(ROW.into(), (0..n).collect::<Vec<u32>>())];
        for f in &self.inputs {
            if let Ok(column) = frame.column(&f.name) {
                columns.push(column.clone());
            }
        }
        let mut inputs = DataFrame::new(n as usize, columns).expect("columns of the batch");
        ParquetWriter::new(&mut file)
            .with_compression(ParquetCompression::Uncompressed)
            .finish(&mut inputs)
            .map_err(|e| ComputedError::Engine {
                operation: "writing the batch for DuckDB",
                message: e.to_string(),
            })?;
        drop(inputs);
        let conn = Connection::open_in_memory().map_err(engine("opening DuckDB"))?;
        conn.execute_batch(&format!(
            "CREATE TABLE batch AS SELECT * FROM read_parquet('{}')",
            path.display().to_string().replace('\'', "''")
        ))
        .map_err(engine("reading the batch into DuckDB"))?;
        drop(file);
        lock(&conn).map_err(engine("locking DuckDB down"))?;
        Ok(conn)
    }
}

/// A row whose expression failed, with DuckDB's reason.
type FailedValue = (u32, String);

/// Evaluates one expression over ranges of rows. DuckDB stops a whole query
/// at the first value it cannot compute (a failed cast), so a range that
/// fails is halved until the failing rows stand alone: the others keep
/// their values, each failing row gets the error. Errors are rare, so this
/// costs one query per field in the common case, and about two per halving
/// per failing row otherwise.
struct RangeRun<'a, 'c> {
    stmt: &'a mut duckdb::Statement<'c>,
    values: &'a mut [Option<String>],
    failed: &'a mut Vec<FailedValue>,
    undescribed: &'a mut Vec<u32>,
    budget: usize,
}

impl RangeRun<'_, '_> {
    fn range(&mut self, lo: u32, hi: u32) -> Result<(), ComputedError> {
        let error = match self.query(lo, hi) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let message = first_line(&error);
        if is_engine_failure(&message) {
            return Err(ComputedError::Engine {
                operation: "computing a field",
                message,
            });
        }
        if hi - lo == 1 {
            self.failed.push((lo, message));
        } else if self.failed.len() >= self.budget {
            // Enough described: the rest of the range is rejected unread.
            self.undescribed.extend(lo..hi);
        } else {
            let mid = lo + (hi - lo) / 2;
            self.range(lo, mid)?;
            self.range(mid, hi)?;
        }
        Ok(())
    }

    fn query(&mut self, lo: u32, hi: u32) -> Result<(), duckdb::Error> {
        self.stmt.execute([lo as i64, hi as i64])?;
        let mut got: Vec<(u32, Option<String>)> = Vec::with_capacity((hi - lo) as usize);
        while let Some(chunk) = self.stmt.step()? {
            let rows = chunk.column(0).as_primitive::<UInt32Type>();
            let text = utf8(chunk.column(1))
                .map_err(|e| duckdb::Error::ToSqlConversionFailure(Box::new(e)))?;
            let text = text.as_string::<i32>();
            for i in 0..chunk.len() {
                let value = (!text.is_null(i)).then(|| text.value(i).to_string());
                got.push((rows.value(i), value));
            }
        }
        for (row, value) in got {
            self.values[row as usize] = value;
        }
        Ok(())
    }
}

/// A column of DuckDB's text as Arrow UTF-8 (DuckDB may hand out string
/// views).
fn utf8(column: &ArrayRef) -> Result<ArrayRef, ComputedError> {
    match column.data_type() {
        ArrowType::Utf8 => Ok(column.clone()),
        _ => duckdb::arrow::compute::cast(column, &ArrowType::Utf8).map_err(|e| {
            ComputedError::Engine {
                operation: "reading computed values",
                message: e.to_string(),
            }
        }),
    }
}

/// An in-memory DuckDB that can reach no file and whose settings cannot
/// be changed: an expression can only compute.
fn locked_connection() -> Result<Connection, duckdb::Error> {
    let conn = Connection::open_in_memory()?;
    lock(&conn)?;
    Ok(conn)
}

fn lock(conn: &Connection) -> Result<(), duckdb::Error> {
    conn.execute_batch(
        "SET enable_external_access = false; SET autoload_known_extensions = false; SET autoinstall_known_extensions = false; SET lock_configuration = true;",
    )
}

/// The SQL for a field's value: the expression, cast to the field's stored
/// type (as SQL casts: a fraction cast to an integer rounds), as text. The
/// expression sits on lines of its own so a trailing `--` comment ends
/// with it.
fn value_sql(c: &ComputedField) -> String {
    format!(
        "CAST(CAST((\n{}\n) AS {}) AS VARCHAR)",
        c.expression,
        c.field.kind.sql_type()
    )
}

/// Refuses anything but one scalar expression, from DuckDB's own parse of
/// it (`json_serialize_sql`) as it will be run: a second statement, a
/// `FROM` smuggled in, a subquery or a window function.
fn check_shape(conn: &Connection, expression: &str) -> Result<(), String> {
    let text = format!("SELECT (\n{expression}\n)");
    let json: String = conn
        .query_row("SELECT json_serialize_sql(?::VARCHAR)", [&text], |r| {
            r.get(0)
        })
        .map_err(|e| format!("cannot be parsed: {}", first_line(&e)))?;
    let tree: serde_json::Value =
        serde_json::from_str(&json).map_err(|e| format!("cannot be parsed: {e}"))?;
    let not_one = || "must be one SQL expression (no `;`, no `FROM`, no clauses)".to_string();
    if tree["error"] == serde_json::Value::Bool(true) {
        let message = tree["error_message"].as_str().unwrap_or("syntax error");
        if message.ends_with("at or near \";\"") {
            return Err(not_one());
        }
        return Err(format!("does not parse: {message}"));
    }
    let statements = tree["statements"].as_array().ok_or_else(not_one)?;
    let [statement] = statements.as_slice() else {
        return Err(not_one());
    };
    let node = &statement["node"];
    let empty = |key: &str| match &node[key] {
        serde_json::Value::Null => true,
        serde_json::Value::Array(items) => items.is_empty(),
        _ => false,
    };
    let select = node["select_list"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let one_expression = node["type"] == "SELECT_NODE"
        && select.len() == 1
        && node["from_table"]["type"] == "EMPTY"
        && [
            "where_clause",
            "group_expressions",
            "having",
            "qualify",
            "modifiers",
            "sample",
        ]
        .iter()
        .all(|k| empty(k))
        && node["cte_map"]["map"]
            .as_array()
            .is_none_or(|m| m.is_empty());
    if !one_expression {
        return Err(not_one());
    }
    let mut found = None;
    find_class(&select[0], &mut found);
    match found {
        Some("SUBQUERY") => {
            Err("subqueries are not allowed: a computed field is computed from its own row".into())
        }
        Some(_) => Err(
            "window functions are not allowed: a computed field is computed from its own row"
                .into(),
        ),
        None => Ok(()),
    }
}

/// The first subquery or window function in a parsed expression.
fn find_class<'a>(node: &'a serde_json::Value, found: &mut Option<&'a str>) {
    if found.is_some() {
        return;
    }
    match node {
        serde_json::Value::Object(map) => {
            if let Some(class @ ("SUBQUERY" | "WINDOW")) =
                map.get("class").and_then(serde_json::Value::as_str)
            {
                *found = Some(class);
                return;
            }
            for value in map.values() {
                find_class(value, found);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                find_class(item, found);
            }
        }
        _ => {}
    }
}

/// What a failed check of an expression against the file's columns means,
/// in the config's terms.
fn bind_message(
    error: &duckdb::Error,
    field: &Field,
    inputs: &[Field],
    computed: &[&str],
) -> String {
    let message = first_line(error);
    let column = Regex::new(r#"(?:Referenced column|have a column named) "([^"]+)""#)
        .expect("a valid pattern")
        .captures(&message)
        .map(|c| c[1].to_string());
    if let Some(column) = column {
        if let Some(other) = computed.iter().find(|c| c.eq_ignore_ascii_case(&column)) {
            return format!(
                "refers to computed field `{other}`: a computed field is computed from the file's columns only (repeat its expression instead)"
            );
        }
        let names: Vec<&str> = inputs.iter().map(|f| f.name.as_str()).collect();
        return format!("unknown column `{column}` (columns: {})", names.join(", "));
    }
    if message.contains("must appear in the GROUP BY clause")
        || message.contains("aggregate function")
    {
        return "aggregate functions are not allowed: a computed field is computed from its own row"
            .into();
    }
    if message.starts_with("Conversion Error") {
        return format!(
            "its value cannot be a {} ({}): {message}",
            field.kind.name(),
            field.kind.sql_type()
        );
    }
    format!("cannot be computed: {message}")
}

/// DuckDB's message without the excerpt of the query it adds.
fn first_line(error: &duckdb::Error) -> String {
    error
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Failures of DuckDB itself rather than of a value: the batch fails, it
/// is not a row error.
fn is_engine_failure(message: &str) -> bool {
    [
        "Out of Memory Error",
        "IO Error",
        "INTERNAL Error",
        "FATAL Error",
        "Interrupt",
    ]
    .iter()
    .any(|kind| message.starts_with(kind))
}

fn engine(operation: &'static str) -> impl Fn(duckdb::Error) -> ComputedError {
    move |e| ComputedError::Engine {
        operation,
        message: first_line(&e),
    }
}

/// Whether the field takes part in a rule validation checks across rows
/// (or against the store) before calculated fields exist.
fn cross_row_role(schema: &TableSchema, field: &Field) -> Option<&'static str> {
    let name = &field.name;
    if schema.primary_key().contains(name) {
        return Some("part of the primary key");
    }
    for fk in &schema.foreign_keys {
        if fk.fields.to_vec().contains(name) {
            return Some("part of a foreign key");
        }
        if fk.reference.resource.is_empty() && fk.reference.fields.to_vec().contains(name) {
            return Some("referred to by a foreign key");
        }
    }
    if schema.unique_keys.iter().any(|k| k.contains(name)) || field.constraints.unique {
        return Some("unique");
    }
    let rules = &schema.dropsync;
    if rules
        .required_when
        .iter()
        .any(|r| &r.field == name || &r.when == name)
    {
        return Some("named by a requiredWhen rule");
    }
    if rules.status.as_ref().is_some_and(|s| &s.field == name) {
        return Some("the status field");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> TableSchema {
        serde_json::from_str(
            r#"{"fields": [
                {"name": "ID", "type": "string"},
                {"name": "Seats", "type": "string"},
                {"name": "Note", "type": "string"},
                {"name": "SeatCount", "type": "integer"}
            ], "primaryKey": "ID"}"#,
        )
        .unwrap()
    }

    fn fields(computed: &[(&str, &str)]) -> Result<Option<ComputedFields>, String> {
        let computed = computed
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ComputedFields::check(&schema(), &computed, &BTreeMap::new())
    }

    #[test]
    fn a_semicolon_in_a_string_and_a_trailing_comment_are_one_expression() {
        assert!(fields(&[("Note", "Seats || ';' || ID -- why")]).is_ok());
        let err = fields(&[("Note", "Seats; DROP TABLE batch")]).unwrap_err();
        assert!(err.contains("must be one SQL expression"), "{err}");
        let err = fields(&[("Note", "Seats) FROM batch, (SELECT 1")]).unwrap_err();
        assert!(err.contains("must be one SQL expression"), "{err}");
    }

    #[test]
    fn a_value_that_fails_to_compute_rejects_its_row_only() {
        let computed = fields(&[("SeatCount", "Seats")]).unwrap().unwrap();
        let n = 10_000;
        // Rows 0, 4_097 and 9_999 hold no number: the cast fails on them.
        let seats: Vec<String> = (0..n)
            .map(|i| match i {
                0 | 4_097 | 9_999 => format!("x{i}"),
                _ => i.to_string(),
            })
            .collect();
        let frame = DataFrame::new(
            n,
            vec![
                Column::new(
                    "ID".into(),
                    (0..n).map(|i| format!("K{i}")).collect::<Vec<_>>(),
                ),
                Column::new("Seats".into(), seats),
                Column::new("Note".into(), vec![None::<&str>; n]),
            ],
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = computed.evaluate(&frame, dir.path(), usize::MAX).unwrap();
        let rows: Vec<u32> = out.problems.iter().map(|p| p.row).collect();
        assert_eq!(rows, vec![0, 4_097, 9_999]);
        assert!(
            out.problems[1]
                .message
                .contains("Could not convert string 'x4097'"),
            "{:?}",
            out.problems[1]
        );
        let names: Vec<&str> = out
            .frame
            .columns()
            .iter()
            .map(|c| c.name().as_str())
            .collect();
        assert_eq!(names, ["ID", "Seats", "Note", "SeatCount"]);
        let counts = out
            .frame
            .column("SeatCount")
            .unwrap()
            .i64()
            .unwrap()
            .clone();
        assert_eq!(counts.get(1), Some(1));
        assert_eq!(counts.get(4_096), Some(4_096));
        assert_eq!(counts.get(4_097), None);
        assert_eq!(counts.get(9_998), Some(9_998));
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "the batch's copy for DuckDB is removed"
        );

        // Without a failing value, every field comes from one query, in
        // row order across DuckDB's chunks.
        let good: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
        let mut all_good = frame.clone();
        all_good
            .replace("Seats", Column::new("Seats".into(), good))
            .unwrap();
        let out = computed
            .evaluate(&all_good, dir.path(), usize::MAX)
            .unwrap();
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        let counts = out
            .frame
            .column("SeatCount")
            .unwrap()
            .i64()
            .unwrap()
            .clone();
        let expected: Vec<Option<i64>> = (1..=n as i64).map(Some).collect();
        assert_eq!(counts.iter().collect::<Vec<_>>(), expected);

        // Past the errors asked to be described, rows are rejected unread.
        let out = computed.evaluate(&frame, dir.path(), 1).unwrap();
        assert_eq!(out.problems.len(), 1);
        assert!(out.undescribed.contains(&9_999), "{:?}", out.undescribed);
    }
}

//! A table's rows, exported: as they stand now, or as they stood after the
//! last run of a past business date, reconstructed from the change log.
//!
//! The past is reached by walking the log back from the current rows, not
//! forward from nothing: the current table is typed and columnar, and only
//! the keys changed after the date need undoing, so the work grows with the
//! changes since that date, not with every row ever inserted. Per key and
//! field, the value at the date is the old side of the first later change
//! that touched that field (a delete holds the whole old row); a key whose
//! first later change is an insert did not exist yet; a field no later
//! change touched is the current one.
//!
//! "After the last run of date D" is, per integration, the highest change
//! sequence number any applied run of business date D or earlier left
//! (`dropsync_change_runs`): sequence numbers grow in the order runs were
//! applied, so that is the position of the last such run in the log, replays
//! and late re-runs of old dates included.

use std::path::Path;

use chrono::NaiveDate;

use super::{Backend, Db, Store, StoreError, ident};

/// What the DuckDB that writes a PostgreSQL store's export may hold in
/// memory.
const EXPORT_MEMORY: &str = "128MB";

/// The file format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ExportFormat {
    #[default]
    Csv,
    Parquet,
    /// One JSON object a line (JSON Lines).
    Json,
}

/// Which rows to export.
#[derive(Debug, Clone)]
pub struct TableExport {
    pub table: String,
    /// The table's key columns.
    pub key: Vec<String>,
    /// Rows as they stood after the last run of this business date or an
    /// earlier one; the current rows when `None`.
    pub as_of: Option<NaiveDate>,
    /// Only this integration's rows.
    pub integration: Option<String>,
    pub format: ExportFormat,
    /// CSV: text cells a spreadsheet would run as formulas get a leading `'`.
    pub neutralise_formulas: bool,
}

/// One exported column.
struct Column {
    name: String,
    sql_type: String,
}

impl Store {
    /// Writes the rows `export` asks for to `path` (which the caller has
    /// created, private to its owner). Returns how many rows were written.
    ///
    /// DuckDB writes the file on either store, so that an export is the
    /// same file whichever store it comes from (its CSV quoting, its JSON,
    /// its Parquet). A PostgreSQL store computes the rows itself (the
    /// as-of reconstruction included) and streams them out with COPY TO
    /// STDOUT into a private file beside the destination, which DuckDB
    /// reads as it writes: neither side holds the table in memory.
    pub fn export_table(&self, export: &TableExport, path: &Path) -> Result<u64, StoreError> {
        if !self.table_exists(&export.table)? {
            return Err(self.export_error(format!(
                "no table `{}` in the store: nothing has been synced into it",
                export.table
            )));
        }
        let backend = self.db().backend();
        let columns = self.export_columns(&export.table)?;
        let query = match export.as_of {
            None => current_rows_sql(export, &columns),
            Some(date) => self.rows_as_of_sql(export, &columns, date, backend)?,
        };
        let written = match self.db() {
            Db::DuckDb(conn) => {
                let order = export
                    .key
                    .iter()
                    .map(|k| ident(k))
                    .chain(["\"_integration\"".to_string()])
                    .collect::<Vec<_>>()
                    .join(", ");
                write_export(
                    conn,
                    &format!("({query})"),
                    &format!("ORDER BY {order}"),
                    &columns,
                    export,
                    path,
                )
                .map_err(self.query_error(format!("exporting {}", export.table)))?
            }
            Db::Postgres { client, .. } => {
                let staged =
                    self.stream_out(&mut client.borrow_mut(), export, &columns, &query, path)?;
                let conn = duckdb::Connection::open_in_memory()
                    .map_err(self.query_error("opening the export writer"))?;
                // The writer's memory stays small whatever the table's
                // size: what DuckDB buffers beyond it spills beside the
                // staged rows (private, like them).
                let spill = staged.path().with_extension("spill");
                conn.execute_batch(&format!(
                    "SET memory_limit = '{EXPORT_MEMORY}'; SET threads = 2; SET temp_directory = '{}'",
                    spill.display().to_string().replace('\'', "''")
                ))
                .map_err(self.query_error("opening the export writer"))?;
                write_export(
                    &conn,
                    &read_staged_sql(staged.path(), &columns),
                    "",
                    &columns,
                    export,
                    path,
                )
                .map_err(self.query_error(format!("exporting {}", export.table)))?
            }
        };
        Ok(written as u64)
    }

    fn export_error(&self, message: String) -> StoreError {
        StoreError::Other {
            path: self.path().to_path_buf(),
            message,
        }
    }

    /// PostgreSQL: the rows of `query`, in the export's order, as CSV in a
    /// private temporary file beside `path` (removed when dropped).
    fn stream_out(
        &self,
        client: &mut postgres::Client,
        export: &TableExport,
        columns: &[Column],
        query: &str,
        path: &Path,
    ) -> Result<tempfile::NamedTempFile, StoreError> {
        use std::io::Write;
        let postgres_error = |e: postgres::Error| StoreError::Postgres {
            store: self.path().display().to_string(),
            message: format!(
                "exporting {}: {}",
                export.table,
                super::postgres::describe(&e)
            ),
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut staged = tempfile::Builder::new()
            .prefix(".dropsync-export-rows-")
            .suffix(".csv")
            .tempfile_in(dir)
            .map_err(|e| {
                self.export_error(format!("cannot create a file in {}: {e}", dir.display()))
            })?;
        // Text sorts byte by byte, as DuckDB sorts it, whatever the
        // database's collation.
        let sort_key = |name: &str| {
            let text = columns
                .iter()
                .any(|c| c.name == name && c.sql_type == "VARCHAR");
            if text {
                format!("{} COLLATE \"C\"", ident(name))
            } else {
                ident(name)
            }
        };
        let order = export
            .key
            .iter()
            .map(|k| sort_key(k))
            .chain([sort_key("_integration")])
            .collect::<Vec<_>>()
            .join(", ");
        let names = columns
            .iter()
            .map(|c| ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        // Dates, times and numbers as text DuckDB reads back exactly.
        client
            .batch_execute("SET DateStyle = 'ISO, YMD'; SET extra_float_digits = 1")
            .map_err(postgres_error)?;
        let mut rows = client
            .copy_out(&format!(
                "COPY (SELECT {names} FROM ({query}) AS exported ORDER BY {order}) TO STDOUT (FORMAT csv)"
            ))
            .map_err(postgres_error)?;
        let written = {
            let mut out = std::io::BufWriter::new(staged.as_file_mut());
            std::io::copy(&mut rows, &mut out).and_then(|_| out.flush())
        };
        written.map_err(|e| {
            self.export_error(format!(
                "exporting {}: cannot write {}: {e}",
                export.table,
                staged.path().display()
            ))
        })?;
        Ok(staged)
    }

    /// The columns an export holds: the data columns and `_integration`
    /// (the run bookkeeping columns are left out), with their DuckDB types.
    fn export_columns(&self, table: &str) -> Result<Vec<Column>, StoreError> {
        let backend = self.db().backend();
        self.db()
            .query(
                "SELECT column_name, data_type FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = ?
                   AND column_name NOT IN ('_execution_id', '_business_date', '_updated_at', '_row_hash', '_raw_hash')
                 ORDER BY ordinal_position",
                &[&table],
            )
            .and_then(|rows| {
                rows.iter()
                    .map(|r| {
                        let sql_type: String = r.get(1)?;
                        Ok(Column {
                            name: r.get(0)?,
                            sql_type: match backend {
                                Backend::DuckDb => sql_type,
                                Backend::Postgres => duckdb_type(&sql_type).to_string(),
                            },
                        })
                    })
                    .collect()
            })
            .map_err(self.query_error("reading columns"))
    }

    fn rows_as_of_sql(
        &self,
        export: &TableExport,
        columns: &[Column],
        date: NaiveDate,
        backend: Backend,
    ) -> Result<String, StoreError> {
        let table = ident(&export.table);
        let table_text = export.table.replace('\'', "''");
        let json = Json(backend);
        let is_key = |name: &str| export.key.iter().any(|k| k == name);
        let data: Vec<&Column> = columns
            .iter()
            .filter(|c| c.name != "_integration")
            .collect();
        for k in &export.key {
            if !data.iter().any(|c| &c.name == k) {
                return Err(
                    self.export_error(format!("table `{}` has no key column `{k}`", export.table))
                );
            }
        }
        let key_columns: Vec<&Column> = export
            .key
            .iter()
            .filter_map(|k| data.iter().find(|c| &c.name == k).copied())
            .collect();
        // Per undone key: its typed key, how its first later change found it,
        // and for each field the value the first later change that touched
        // it (or a delete) says it had.
        let mut undone_select: Vec<String> = vec!["integration".into()];
        for c in &key_columns {
            undone_select.push(format!(
                "{} AS {}",
                json.typed(&json.member("record_key", &c.name), c),
                ident(&c.name)
            ));
        }
        undone_select.push(format!("{} AS _first_action", json.first("action", None)));
        for (n, c) in data.iter().enumerate().filter(|(_, c)| !is_key(&c.name)) {
            let touched = format!(
                "action = 'delete' OR (action <> 'insert' AND {})",
                json.has("fields", &c.name)
            );
            undone_select.push(format!("count(*) FILTER (WHERE {touched}) AS _touched{n}"));
            let member = json.member("fields", &c.name);
            undone_select.push(format!(
                "{} AS _old{n}",
                json.first(
                    &format!(
                        "CASE WHEN action = 'delete' THEN {member} ELSE {} END",
                        json.element(&member, 0)
                    ),
                    Some(&touched)
                )
            ));
        }
        let on_key = key_columns
            .iter()
            .map(|c| format!("cur.{0} = u.{0}", ident(&c.name)))
            .chain(["cur._integration = u.integration".to_string()])
            .collect::<Vec<_>>()
            .join(" AND ");
        let rebuilt = columns
            .iter()
            .map(|c| {
                let name = ident(&c.name);
                if c.name == "_integration" {
                    format!("u.integration AS {name}")
                } else if is_key(&c.name) {
                    format!("u.{name}")
                } else {
                    let n = data.iter().position(|d| d.name == c.name).unwrap_or(0);
                    format!(
                        "CASE WHEN u._touched{n} > 0 THEN {} ELSE cur.{name} END AS {name}",
                        json.typed(&format!("u._old{n}"), c)
                    )
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let current = columns
            .iter()
            .map(|c| format!("cur.{}", ident(&c.name)))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(format!(
            "WITH cut AS (
                SELECT integration, max(last_seq) AS seq FROM dropsync_change_runs
                WHERE target_table = '{table_text}' AND business_date <= DATE '{date}'
                GROUP BY integration
             ),
             later AS (
                SELECT c.integration, {record_key} AS record_key, c.seq, c.action, {fields} AS fields
                FROM dropsync_changes c LEFT JOIN cut USING (integration)
                WHERE c.target_table = '{table_text}' AND c.seq > coalesce(cut.seq, 0)
                  AND {later_filter}
             ),
             undone AS (
                SELECT {undone_select} FROM later GROUP BY integration, record_key
             )
             SELECT {current} FROM {table} cur
             WHERE {current_filter}
               AND NOT EXISTS (SELECT 1 FROM undone u WHERE {on_key})
             UNION ALL
             SELECT {rebuilt} FROM undone u LEFT JOIN {table} cur ON {on_key}
             WHERE u._first_action <> 'insert'",
            record_key = json.column("c.record_key"),
            fields = json.column("c.fields"),
            later_filter = integration_filter("c.integration", export.integration.as_deref()),
            current_filter = integration_filter("cur._integration", export.integration.as_deref()),
            undone_select = undone_select.join(", "),
        ))
    }
}

/// The change log's JSON, read in each store's dialect.
#[derive(Clone, Copy)]
struct Json(Backend);

impl Json {
    /// A logged JSON column, comparable and groupable (PostgreSQL's `json`
    /// has no equality; its `jsonb` does).
    fn column(self, expr: &str) -> String {
        match self.0 {
            Backend::DuckDb => expr.to_string(),
            Backend::Postgres => format!("CAST({expr} AS jsonb)"),
        }
    }

    /// The member `name` of the object `json`, as JSON.
    fn member(self, json: &str, name: &str) -> String {
        match self.0 {
            Backend::DuckDb => {
                let quoted = serde_json::to_string(name).unwrap_or_default();
                format!("json_extract({json}, '$.{}')", quoted.replace('\'', "''"))
            }
            Backend::Postgres => format!("({json} -> '{}')", name.replace('\'', "''")),
        }
    }

    /// The `n`th element of the array `json`, as JSON.
    fn element(self, json: &str, n: usize) -> String {
        match self.0 {
            Backend::DuckDb => format!("json_extract({json}, '$[{n}]')"),
            Backend::Postgres => format!("({json} -> {n})"),
        }
    }

    /// Whether the object `json` has a member `name`.
    fn has(self, json: &str, name: &str) -> String {
        match self.0 {
            Backend::DuckDb => {
                let quoted = serde_json::to_string(name).unwrap_or_default();
                format!("json_exists({json}, '$.{}')", quoted.replace('\'', "''"))
            }
            Backend::Postgres => format!("jsonb_exists({json}, '{}')", name.replace('\'', "''")),
        }
    }

    /// The JSON scalar `json` as a value of `column`'s type.
    fn typed(self, json: &str, column: &Column) -> String {
        let text = match self.0 {
            Backend::DuckDb => format!("json_extract_string({json}, '$')"),
            Backend::Postgres => format!("({json} #>> '{{}}')"),
        };
        if column.sql_type == "VARCHAR" {
            text
        } else {
            format!("CAST({text} AS {})", self.0.column_type(&column.sql_type))
        }
    }

    /// The aggregate: `expr` of the group's first change (by sequence)
    /// for which `filter` holds.
    fn first(self, expr: &str, filter: Option<&str>) -> String {
        let filter = filter
            .map(|f| format!(" FILTER (WHERE {f})"))
            .unwrap_or_default();
        match self.0 {
            Backend::DuckDb => format!("first({expr} ORDER BY seq){filter}"),
            Backend::Postgres => format!("(array_agg({expr} ORDER BY seq){filter})[1]"),
        }
    }
}

/// DuckDB writes the export: `source`'s rows (in `order`), formulas
/// neutralised in CSV text cells, in the export's format.
fn write_export(
    conn: &duckdb::Connection,
    source: &str,
    order: &str,
    columns: &[Column],
    export: &TableExport,
    path: &Path,
) -> Result<usize, duckdb::Error> {
    let selected = columns
        .iter()
        .map(|c| {
            let name = ident(&c.name);
            if export.format == ExportFormat::Csv
                && export.neutralise_formulas
                && c.sql_type == "VARCHAR"
            {
                // As `spreadsheet_safe` does, in the query.
                format!(
                    "CASE WHEN regexp_matches({name}, '^[=+\\-@\\t\\r]') THEN '''' || {name} ELSE {name} END AS {name}"
                )
            } else {
                name
            }
        })
        .collect::<Vec<_>>();
    let format = match export.format {
        ExportFormat::Csv => "FORMAT csv, HEADER true",
        ExportFormat::Parquet => "FORMAT parquet",
        ExportFormat::Json => "FORMAT json",
    };
    let target = path.display().to_string().replace('\'', "''");
    conn.execute(
        &format!(
            "COPY (SELECT {} FROM {source} {order}) TO '{target}' ({format})",
            selected.join(", ")
        ),
        [],
    )
}

/// DuckDB SQL reading the rows PostgreSQL wrote as CSV, typed as the
/// columns are: an unquoted empty field is NULL, a quoted one empty text.
fn read_staged_sql(staged: &Path, columns: &[Column]) -> String {
    let text = |s: &str| s.replace('\'', "''");
    let types = columns
        .iter()
        .map(|c| format!("'{}': '{}'", text(&c.name), text(&c.sql_type)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "read_csv('{}', header = false, auto_detect = false, delim = ',', quote = '\"', escape = '\"',
                  allow_quoted_nulls = false, columns = {{{types}}})",
        text(&staged.display().to_string())
    )
}

/// The DuckDB type a PostgreSQL store's column is (`Backend::column_type`
/// goes the other way).
fn duckdb_type(postgres_type: &str) -> &'static str {
    match postgres_type {
        "bigint" => "BIGINT",
        "integer" => "INTEGER",
        "smallint" => "SMALLINT",
        "double precision" => "DOUBLE",
        "real" => "FLOAT",
        "numeric" => "HUGEINT",
        "boolean" => "BOOLEAN",
        "date" => "DATE",
        "timestamp without time zone" => "TIMESTAMP",
        "timestamp with time zone" => "TIMESTAMP WITH TIME ZONE",
        "time without time zone" => "TIME",
        _ => "VARCHAR",
    }
}

fn current_rows_sql(export: &TableExport, columns: &[Column]) -> String {
    let names = columns
        .iter()
        .map(|c| ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT {names} FROM {} WHERE {}",
        ident(&export.table),
        integration_filter("_integration", export.integration.as_deref())
    )
}

/// SQL: `column` is `integration`, or `true` when no integration is named.
fn integration_filter(column: &str, integration: Option<&str>) -> String {
    match integration {
        Some(i) => format!("{column} = '{}'", i.replace('\'', "''")),
        None => "true".into(),
    }
}

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

use super::{Store, StoreError, ident};

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
    pub fn export_table(&self, export: &TableExport, path: &Path) -> Result<u64, StoreError> {
        let other = |message: String| StoreError::Other {
            path: self.path().to_path_buf(),
            message,
        };
        if !self.table_exists(&export.table)? {
            return Err(other(format!(
                "no table `{}` in the store: nothing has been synced into it",
                export.table
            )));
        }
        let columns = self.export_columns(&export.table)?;
        let query = match export.as_of {
            None => self.current_rows_sql(export, &columns),
            Some(date) => self.rows_as_of_sql(export, &columns, date)?,
        };
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
        let order = export
            .key
            .iter()
            .map(|k| ident(k))
            .chain(["\"_integration\"".to_string()])
            .collect::<Vec<_>>()
            .join(", ");
        let format = match export.format {
            ExportFormat::Csv => "FORMAT csv, HEADER true",
            ExportFormat::Parquet => "FORMAT parquet",
            ExportFormat::Json => "FORMAT json",
        };
        let target = path.display().to_string().replace('\'', "''");
        let written = self
            .duck("export")?
            .execute(
                &format!(
                    "COPY (SELECT {} FROM ({query}) ORDER BY {order}) TO '{target}' ({format})",
                    selected.join(", ")
                ),
                [],
            )
            .map_err(self.query_error(format!("exporting {}", export.table)))?;
        Ok(written as u64)
    }

    /// The columns an export holds: the data columns and `_integration`
    /// (the run bookkeeping columns are left out).
    fn export_columns(&self, table: &str) -> Result<Vec<Column>, StoreError> {
        let mut stmt = self
            .duck("export")?
            .prepare(
                "SELECT column_name, data_type FROM information_schema.columns
                 WHERE table_schema = 'main' AND table_name = ?
                   AND column_name NOT IN ('_execution_id', '_business_date', '_updated_at')
                 ORDER BY ordinal_position",
            )
            .map_err(self.query_error("reading columns"))?;
        let rows = stmt
            .query_map([table], |r| {
                Ok(Column {
                    name: r.get(0)?,
                    sql_type: r.get(1)?,
                })
            })
            .map_err(self.query_error("reading columns"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.query_error("reading columns"))
    }

    fn current_rows_sql(&self, export: &TableExport, columns: &[Column]) -> String {
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

    fn rows_as_of_sql(
        &self,
        export: &TableExport,
        columns: &[Column],
        date: NaiveDate,
    ) -> Result<String, StoreError> {
        let table = ident(&export.table);
        let table_text = export.table.replace('\'', "''");
        let typed = |json: &str, c: &Column| -> String {
            if c.sql_type == "VARCHAR" {
                format!("json_extract_string({json}, '$')")
            } else {
                format!("CAST(json_extract_string({json}, '$') AS {})", c.sql_type)
            }
        };
        let path = |name: &str| {
            let quoted = serde_json::to_string(name).unwrap_or_default();
            format!("'$.{}'", quoted.replace('\'', "''"))
        };
        let is_key = |name: &str| export.key.iter().any(|k| k == name);
        let data: Vec<&Column> = columns
            .iter()
            .filter(|c| c.name != "_integration")
            .collect();
        for k in &export.key {
            if !data.iter().any(|c| &c.name == k) {
                return Err(StoreError::Other {
                    path: self.path().to_path_buf(),
                    message: format!("table `{}` has no key column `{k}`", export.table),
                });
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
                typed(&format!("json_extract(record_key, {})", path(&c.name)), c),
                ident(&c.name)
            ));
        }
        undone_select.push("first(action ORDER BY seq) AS _first_action".into());
        for (n, c) in data.iter().enumerate().filter(|(_, c)| !is_key(&c.name)) {
            let p = path(&c.name);
            let touched =
                format!("action = 'delete' OR (action <> 'insert' AND json_exists(fields, {p}))");
            undone_select.push(format!("count(*) FILTER (WHERE {touched}) AS _touched{n}"));
            undone_select.push(format!(
                "first(CASE WHEN action = 'delete' THEN json_extract(fields, {p})
                            ELSE json_extract(json_extract(fields, {p}), '$[0]') END ORDER BY seq)
                     FILTER (WHERE {touched}) AS _old{n}"
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
                        typed(&format!("u._old{n}"), c)
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
                SELECT c.integration, c.record_key, c.seq, c.action, c.fields
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
            later_filter = integration_filter("c.integration", export.integration.as_deref()),
            current_filter = integration_filter("cur._integration", export.integration.as_deref()),
            undone_select = undone_select.join(", "),
        ))
    }
}

/// SQL: `column` is `integration`, or `true` when no integration is named.
fn integration_filter(column: &str, integration: Option<&str>) -> String {
    match integration {
        Some(i) => format!("{column} = '{}'", i.replace('\'', "''")),
        None => "true".into(),
    }
}

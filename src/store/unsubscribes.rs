//! Unsubscribers, exported back out so other systems can honour them:
//! filtered by list, by date and by reason.

use chrono::NaiveDate;

use super::db::ToValue;
use super::{DbError, Store, StoreError, Value, ident};
use crate::schema::TableSchema;

/// What the export does with a cell a spreadsheet would run as a formula
/// (one starting with `=`, `+`, `-`, `@`, a tab or a carriage return): the
/// values come from partners' files, so `=HYPERLINK(...)` as a subscriber's
/// name must not become a live formula in whoever opens the export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FormulaCells {
    /// Prefixed with `'`, which spreadsheets take as "this is text"
    /// (OWASP's advice for CSV injection).
    #[default]
    Neutralise,
    /// Written as they are, for consumers that are not spreadsheets.
    Keep,
}

impl FormulaCells {
    fn cell(self, value: String) -> String {
        match self {
            FormulaCells::Neutralise => spreadsheet_safe(&value).into_owned(),
            FormulaCells::Keep => value,
        }
    }
}

/// A cell a spreadsheet would run as a formula gets a leading `'`, so
/// opening the file runs nothing. Every CSV dropsync writes from partners'
/// values (this export, the console's rejected rows) goes through here.
pub fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

/// Which unsubscribed records to export.
#[derive(Debug, Clone, Default)]
pub struct UnsubscribeFilter {
    /// Only these lists (all when empty).
    pub lists: Vec<String>,
    /// Never these lists.
    pub exclude_lists: Vec<String>,
    /// Unsubscribed on or after this date.
    pub since: Option<NaiveDate>,
    /// Unsubscribed on or before this date.
    pub until: Option<NaiveDate>,
    /// Only these reasons (all when empty).
    pub reasons: Vec<String>,
    /// Never these reasons.
    pub exclude_reasons: Vec<String>,
}

/// What an unsubscribe export reads, from the dataset's schema: the
/// dataset's fields (its status field aside, every exported record has the
/// same status), and the status values its status rule counts as
/// unsubscribes. The filters use the subscribers' own column names.
#[derive(Debug, Clone)]
pub struct UnsubscribeColumns {
    /// Exported, in the schema's order.
    pub columns: Vec<String>,
    pub status_field: String,
    /// Status values that are unsubscribes.
    pub unsubscribed: Vec<String>,
    /// The key, for a stable order.
    pub key: Vec<String>,
}

/// The columns the export's filters read.
const LIST: &str = "ListID";
const DATE: &str = "UnsubscribedDate";
const REASON: &str = "UnsubscribeReason";

impl UnsubscribeColumns {
    /// From `schema`'s status rule; an error (naming `dataset`) when it has
    /// none, or no status that counts as an unsubscribe.
    pub fn from_schema(dataset: &str, schema: &TableSchema) -> Result<Self, String> {
        let Some(rule) = &schema.dropsync.status else {
            return Err(format!(
                "dataset `{dataset}` has no status rule (`dropsync.status` in its schema): it cannot say who unsubscribed"
            ));
        };
        let unsubscribed: Vec<String> = rule
            .changes
            .iter()
            .filter(|(_, change)| change.as_str() == "unsubscribe")
            .map(|(status, _)| status.clone())
            .collect();
        if unsubscribed.is_empty() {
            return Err(format!(
                "dataset `{dataset}`: no status in its status rule counts as an unsubscribe"
            ));
        }
        Ok(UnsubscribeColumns {
            columns: schema
                .fields
                .iter()
                .map(|f| f.name.clone())
                .filter(|n| *n != rule.field)
                .collect(),
            status_field: rule.field.clone(),
            unsubscribed,
            key: schema
                .primary_key
                .as_ref()
                .map(|k| k.to_vec())
                .unwrap_or_default(),
        })
    }

    fn has(&self, column: &str) -> bool {
        self.columns.iter().any(|c| c == column)
    }
}

impl Store {
    /// Writes the unsubscribed records of `table` matching `filter` as CSV.
    /// Returns how many were written.
    pub fn export_unsubscribes(
        &self,
        table: &str,
        spec: &UnsubscribeColumns,
        filter: &UnsubscribeFilter,
        formulas: FormulaCells,
        out: &mut dyn std::io::Write,
    ) -> Result<u64, StoreError> {
        let mut writer = csv::Writer::from_writer(out);
        let io = |e: csv::Error| StoreError::Other {
            path: self.path().to_path_buf(),
            message: format!("cannot write the export: {e}"),
        };
        let other = |message: String| StoreError::Other {
            path: self.path().to_path_buf(),
            message,
        };
        for (column, used) in [
            (
                LIST,
                !filter.lists.is_empty() || !filter.exclude_lists.is_empty(),
            ),
            (DATE, filter.since.is_some() || filter.until.is_some()),
            (
                REASON,
                !filter.reasons.is_empty() || !filter.exclude_reasons.is_empty(),
            ),
        ] {
            if used && !spec.has(column) {
                return Err(other(format!(
                    "table `{table}` has no `{column}` column to filter on"
                )));
            }
        }
        writer.write_record(&spec.columns).map_err(io)?;
        if !self.table_exists(table)? {
            writer.flush().map_err(|e| io(e.into()))?;
            return Ok(0);
        }
        let selected: Vec<String> = spec
            .columns
            .iter()
            .map(|c| format!("CAST({} AS VARCHAR)", ident(c)))
            .collect();
        let mut sql = format!(
            "SELECT {} FROM {} WHERE {} IN ({})",
            selected.join(", "),
            ident(table),
            ident(&spec.status_field),
            vec!["?"; spec.unsubscribed.len()].join(", ")
        );
        let mut params: Vec<Value> = spec
            .unsubscribed
            .iter()
            .map(|v| Value::Text(v.clone()))
            .collect();
        let mut any_of = |column: &str, values: &[String], negate: bool| {
            if values.is_empty() {
                return;
            }
            let column = ident(column);
            let marks = vec!["?"; values.len()].join(", ");
            let not = if negate { "NOT " } else { "" };
            let null_ok = if negate {
                format!(" OR {column} IS NULL")
            } else {
                String::new()
            };
            sql.push_str(&format!(" AND ({column} {not}IN ({marks}){null_ok})"));
            params.extend(values.iter().map(|v| Value::Text(v.clone())));
        };
        any_of(LIST, &filter.lists, false);
        any_of(LIST, &filter.exclude_lists, true);
        any_of(REASON, &filter.reasons, false);
        any_of(REASON, &filter.exclude_reasons, true);
        if let Some(d) = filter.since {
            sql.push_str(&format!(" AND {} >= ?", ident(DATE)));
            params.push(Value::Date(d));
        }
        if let Some(d) = filter.until {
            sql.push_str(&format!(" AND {} <= ?", ident(DATE)));
            params.push(Value::Date(d));
        }
        let order: Vec<String> = spec
            .has(DATE)
            .then_some(DATE)
            .into_iter()
            .chain(spec.key.iter().map(String::as_str))
            .map(ident)
            .collect();
        if !order.is_empty() {
            sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
        }
        let refs: Vec<&dyn ToValue> = params.iter().map(|v| v as &dyn ToValue).collect();
        let mut n = 0;
        let mut unwritten = None;
        self.db()
            .for_each(&sql, &refs, |r| {
                let row = (0..spec.columns.len())
                    .map(|i| {
                        r.get::<Option<String>>(i)
                            .map(|v| formulas.cell(v.unwrap_or_default()))
                    })
                    .collect::<Result<Vec<String>, _>>()?;
                if let Err(e) = writer.write_record(&row) {
                    unwritten = Some(e);
                    return Err(DbError::Other("stopped: the output failed".into()));
                }
                n += 1;
                Ok(())
            })
            .map_err(|e| match unwritten.take() {
                Some(e) => io(e),
                None => self.query_error("exporting unsubscribes")(e),
            })?;
        writer.flush().map_err(|e| io(e.into()))?;
        Ok(n)
    }
}

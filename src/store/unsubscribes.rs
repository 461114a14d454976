//! Unsubscribers, exported back out so other systems can honour them:
//! filtered by list, by date and by reason.

use chrono::NaiveDate;

use super::{Store, StoreError, ident};

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

impl Store {
    /// Writes the unsubscribed records of `table` matching `filter` as CSV.
    /// Returns how many were written.
    pub fn export_unsubscribes(
        &self,
        table: &str,
        filter: &UnsubscribeFilter,
        out: &mut dyn std::io::Write,
    ) -> Result<u64, StoreError> {
        let mut writer = csv::Writer::from_writer(out);
        let header = [
            "ListID",
            "Email",
            "UnsubscribedDate",
            "UnsubscribeReason",
            "FirstName",
            "LastName",
        ];
        let io = |e: csv::Error| StoreError::Other {
            path: self.path().to_path_buf(),
            message: format!("cannot write the export: {e}"),
        };
        writer.write_record(header).map_err(io)?;
        if !self.table_exists(table)? {
            writer.flush().map_err(|e| io(e.into()))?;
            return Ok(0);
        }
        let mut sql = format!(
            "SELECT ListID, Email, CAST(UnsubscribedDate AS VARCHAR), UnsubscribeReason, FirstName, LastName
             FROM {} WHERE Status = 'unsubscribed'",
            ident(table)
        );
        let mut params: Vec<Box<dyn duckdb::ToSql>> = Vec::new();
        let mut any_of = |column: &str, values: &[String], negate: bool| {
            if values.is_empty() {
                return;
            }
            let marks = vec!["?"; values.len()].join(", ");
            let not = if negate { "NOT " } else { "" };
            let null_ok = if negate {
                format!(" OR {column} IS NULL")
            } else {
                String::new()
            };
            sql.push_str(&format!(" AND ({column} {not}IN ({marks}){null_ok})"));
            params.extend(
                values
                    .iter()
                    .map(|v| Box::new(v.clone()) as Box<dyn duckdb::ToSql>),
            );
        };
        any_of("ListID", &filter.lists, false);
        any_of("ListID", &filter.exclude_lists, true);
        any_of("UnsubscribeReason", &filter.reasons, false);
        any_of("UnsubscribeReason", &filter.exclude_reasons, true);
        if let Some(d) = filter.since {
            sql.push_str(" AND UnsubscribedDate >= ?");
            params.push(Box::new(d));
        }
        if let Some(d) = filter.until {
            sql.push_str(" AND UnsubscribedDate <= ?");
            params.push(Box::new(d));
        }
        sql.push_str(" ORDER BY UnsubscribedDate, ListID, Email");
        let mut stmt = self
            .conn()
            .prepare(&sql)
            .map_err(self.query_error("exporting unsubscribes"))?;
        let refs: Vec<&dyn duckdb::ToSql> = params.iter().map(|b| b.as_ref()).collect();
        let rows = stmt
            .query_map(refs.as_slice(), |r| {
                (0..header.len())
                    .map(|i| r.get::<_, Option<String>>(i).map(Option::unwrap_or_default))
                    .collect::<Result<Vec<String>, _>>()
            })
            .map_err(self.query_error("exporting unsubscribes"))?;
        let mut n = 0;
        for row in rows {
            let row = row.map_err(self.query_error("exporting unsubscribes"))?;
            writer.write_record(&row).map_err(io)?;
            n += 1;
        }
        writer.flush().map_err(|e| io(e.into()))?;
        Ok(n)
    }
}

//! Typed metrics (the `results` dataset): campaign or activity results come
//! as long rows (entity, metric, value) or wide reports (one column per
//! metric). Both end as one long, typed row per (entity, metric, period), the
//! key results are upserted by. A metric's type (text, number, currency,
//! percentage, date) is declared per integration.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDate;
use polars::prelude::*;

use super::validate::{RowError, ValidRows, parse_date};
use super::{Constraints, Field, FieldType, FieldsMatch, RawTable, StoredColumn, TableSchema};
use crate::config::{MetricType, ResultsLayout};

/// How an integration's results are laid out and typed.
#[derive(Debug, Clone)]
pub struct MetricsSpec {
    pub layout: ResultsLayout,
    pub metrics: BTreeMap<String, MetricType>,
}

const ENTITY: &str = "EntityID";
const PERIOD: &str = "Period";
const METRIC: &str = "Metric";
const VALUE: &str = "Value";

/// The columns typed metrics are stored in, key first.
pub fn stored_columns() -> Vec<StoredColumn> {
    [
        (ENTITY, "VARCHAR"),
        (METRIC, "VARCHAR"),
        (PERIOD, "DATE"),
        ("MetricType", "VARCHAR"),
        (VALUE, "VARCHAR"),
        ("NumberValue", "DOUBLE"),
        ("DateValue", "DATE"),
    ]
    .into_iter()
    .map(|(name, sql_type)| StoredColumn {
        name: name.to_string(),
        sql_type,
    })
    .collect()
}

pub fn key() -> Vec<String> {
    vec![ENTITY.into(), METRIC.into(), PERIOD.into()]
}

/// A field that validates one metric's values.
fn metric_field(name: &str, kind: MetricType) -> Field {
    let (field_type, bare) = match kind {
        MetricType::Text => (FieldType::String, true),
        MetricType::Number => (FieldType::Number, true),
        MetricType::Currency | MetricType::Percentage => (FieldType::Number, false),
        MetricType::Date => (FieldType::Date, true),
    };
    Field {
        name: name.to_string(),
        kind: field_type,
        format: (field_type == FieldType::Date).then(|| "any".to_string()),
        constraints: Constraints::default(),
        true_values: None,
        false_values: None,
        bare_number: bare,
        group_char: (field_type == FieldType::Number).then(|| ",".to_string()),
        decimal_char: None,
        missing_values: None,
        categories: None,
        categories_ordered: false,
    }
}

impl MetricsSpec {
    /// The schema a file of this layout is read with. A wide report has the
    /// base schema's entity and period, then one column per declared metric.
    pub fn file_schema(&self, base: &TableSchema) -> TableSchema {
        match self.layout {
            ResultsLayout::Long => {
                let mut schema = base.clone();
                // The period may be left to the file's business date.
                schema.primary_key =
                    Some(super::OneOrMany::Many(vec![ENTITY.into(), METRIC.into()]));
                schema
            }
            ResultsLayout::Wide => {
                let mut fields: Vec<Field> = base
                    .fields
                    .iter()
                    .filter(|f| f.name == ENTITY || f.name == PERIOD)
                    .cloned()
                    .collect();
                fields.extend(self.metrics.iter().map(|(m, t)| metric_field(m, *t)));
                TableSchema {
                    fields,
                    primary_key: Some(super::OneOrMany::One(ENTITY.into())),
                    foreign_keys: Vec::new(),
                    fields_match: FieldsMatch::Superset,
                    ..base.clone()
                }
            }
        }
    }

    /// Turns validated rows into long, typed metric rows. Rows whose period
    /// is empty take `business_date`. In long layout each value is checked
    /// against its metric's type here. A (entity, metric, period) given twice
    /// rejects every file row that gives it: which one is right cannot be told.
    pub fn to_long(&self, valid: ValidRows, raw: &RawTable, business_date: NaiveDate) -> ValidRows {
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
        let text = |name: &str| -> Vec<Option<String>> {
            frame
                .column(name)
                .ok()
                .and_then(|c| c.cast(&DataType::String).ok())
                .map(|c| {
                    c.str()
                        .expect("cast to string")
                        .iter()
                        .map(|v| v.map(str::to_string))
                        .collect()
                })
                .unwrap_or_else(|| vec![None; frame.height()])
        };
        let entity = text(ENTITY);
        let period = text(PERIOD);
        let period_of = |row: usize| {
            period[row]
                .as_deref()
                .and_then(|p| NaiveDate::parse_from_str(p, "%Y-%m-%d").ok())
                .unwrap_or(business_date)
        };
        // Every metric value, with the frame row it came from.
        let mut long: Vec<LongRow> = Vec::new();
        let mut problems: Vec<(usize, &str, String)> = Vec::new();
        match self.layout {
            ResultsLayout::Wide => {
                let names = self.file_schema_names();
                let columns: Vec<(&String, MetricType, Vec<Option<String>>)> = self
                    .metrics
                    .iter()
                    .map(|(m, t)| (m, *t, raw_column(raw, &rows, &names, m)))
                    .collect();
                for row in 0..frame.height() {
                    for (metric, kind, values) in &columns {
                        let Some(value) = values[row].as_deref() else {
                            continue;
                        };
                        match typed_value(*kind, metric, value) {
                            Ok((number, date)) => long.push(LongRow {
                                row,
                                metric: metric.to_string(),
                                period: period_of(row),
                                kind: *kind,
                                value: value.to_string(),
                                number,
                                date,
                            }),
                            Err(message) => problems.push((row, metric.as_str(), message)),
                        }
                    }
                }
            }
            ResultsLayout::Long => {
                let metric = text(METRIC);
                let value = text(VALUE);
                for row in 0..frame.height() {
                    let (Some(m), Some(v)) = (metric[row].as_deref(), value[row].as_deref()) else {
                        continue;
                    };
                    let kind = match self.metrics.get(m) {
                        Some(kind) => *kind,
                        None if self.metrics.is_empty() => MetricType::Text,
                        None => {
                            let declared: Vec<&str> =
                                self.metrics.keys().map(String::as_str).collect();
                            problems.push((
                                row,
                                METRIC,
                                format!(
                                    "metric `{m}` is not declared (declared: {})",
                                    declared.join(", ")
                                ),
                            ));
                            continue;
                        }
                    };
                    match typed_value(kind, m, v) {
                        Ok((number, date)) => long.push(LongRow {
                            row,
                            metric: m.to_string(),
                            period: period_of(row),
                            kind,
                            value: v.to_string(),
                            number,
                            date,
                        }),
                        Err(message) => problems.push((row, VALUE, message)),
                    }
                }
            }
        }
        // The key results are upserted by must be unique in the file.
        let mut by_key: HashMap<ResultKey, Vec<usize>> = HashMap::new();
        for r in &long {
            let e = entity[r.row].as_deref().unwrap_or("");
            by_key
                .entry((e, &r.metric, r.period))
                .or_default()
                .push(r.row);
        }
        let mut repeated: Vec<(ResultKey, Vec<usize>)> = by_key
            .into_iter()
            .filter(|(_, rows)| rows.len() > 1)
            .collect();
        repeated.sort_by_key(|(_, rows)| rows[0]);
        for ((e, m, p), frame_rows) in &repeated {
            let lines: Vec<String> = frame_rows
                .iter()
                .map(|&r| raw.lines[rows[r] as usize].to_string())
                .collect();
            for &r in frame_rows {
                problems.push((
                    r,
                    METRIC,
                    format!(
                        "{e} has {m} for {p} more than once (lines {})",
                        lines.join(", ")
                    ),
                ));
            }
        }

        let mut bad: HashSet<usize> = HashSet::new();
        for (row, field, message) in problems {
            let raw_row = rows[row] as usize;
            if bad.insert(row) {
                error_rows += 1;
                rejected_keys.extend(entity[row].clone());
            }
            errors.push(RowError {
                line: raw.lines[raw_row],
                key: entity[row].clone(),
                field: Some(field.to_string()),
                message,
                raw: raw.raw_row(raw_row),
            });
        }
        errors.sort_by_key(|e| e.line);
        let mut out = LongRows::default();
        let mut out_rows = Vec::new();
        for r in long.into_iter().filter(|r| !bad.contains(&r.row)) {
            out_rows.push(rows[r.row]);
            out.push(&entity[r.row], r);
        }
        ValidRows {
            frame: out.finish(),
            rows: out_rows,
            errors,
            input_rows,
            error_rows,
            skipped_rows,
            rejected_keys,
            ignored_columns,
        }
    }

    fn file_schema_names(&self) -> Vec<String> {
        let mut names = vec![ENTITY.to_string(), PERIOD.to_string()];
        names.extend(self.metrics.keys().cloned());
        names
    }
}

/// The raw text of column `name` for the given kept rows.
fn raw_column(raw: &RawTable, rows: &[u32], names: &[String], name: &str) -> Vec<Option<String>> {
    let Some(index) = names.iter().position(|n| n == name) else {
        return vec![None; rows.len()];
    };
    // Wide file schemas keep only the entity and period fields that the base
    // schema has, both of which it does; metric columns follow them.
    let column = &raw.columns[index];
    rows.iter()
        .map(|&r| {
            column
                .get(r as usize)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        })
        .collect()
}

fn typed_value(
    kind: MetricType,
    metric: &str,
    value: &str,
) -> Result<(Option<f64>, Option<i32>), String> {
    let field = metric_field(metric, kind);
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    match field.kind {
        FieldType::Number => super::validate::parse_number(&field, value)
            .map(|x| (Some(x), None))
            .map_err(|m| format!("{m} ({} metric `{metric}`)", kind.as_str())),
        FieldType::Date => parse_date(Some("any"), value)
            .map(|d| (None, Some((d - epoch).num_days() as i32)))
            .map_err(|m| format!("{m} (date metric `{metric}`)")),
        _ => Ok((None, None)),
    }
}

/// (entity, metric, period): what results are upserted by.
type ResultKey<'a> = (&'a str, &'a str, NaiveDate);

/// One metric value of one file row.
struct LongRow {
    row: usize,
    metric: String,
    period: NaiveDate,
    kind: MetricType,
    value: String,
    number: Option<f64>,
    date: Option<i32>,
}

#[derive(Default)]
struct LongRows {
    entity: Vec<Option<String>>,
    metric: Vec<String>,
    period: Vec<i32>,
    kind: Vec<&'static str>,
    value: Vec<String>,
    number: Vec<Option<f64>>,
    date: Vec<Option<i32>>,
}

impl LongRows {
    fn push(&mut self, entity: &Option<String>, r: LongRow) {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
        self.entity.push(entity.clone());
        self.metric.push(r.metric);
        self.period.push((r.period - epoch).num_days() as i32);
        self.kind.push(r.kind.as_str());
        self.value.push(r.value);
        self.number.push(r.number);
        self.date.push(r.date);
    }

    fn finish(self) -> DataFrame {
        let height = self.metric.len();
        let date = |name: &str, v: Series| {
            v.cast(&DataType::Date)
                .expect("i32 casts to date")
                .with_name(name.into())
                .into_column()
        };
        let columns = vec![
            Series::new(ENTITY.into(), self.entity).into_column(),
            Series::new(METRIC.into(), self.metric).into_column(),
            date(PERIOD, Series::new(PERIOD.into(), self.period)),
            Series::new("MetricType".into(), self.kind).into_column(),
            Series::new(VALUE.into(), self.value).into_column(),
            Series::new("NumberValue".into(), self.number).into_column(),
            date("DateValue", Series::new("DateValue".into(), self.date)),
        ];
        DataFrame::new(height, columns).expect("columns of equal length")
    }
}

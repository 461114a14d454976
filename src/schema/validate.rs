//! Text columns -> typed polars columns, checked against the schema one
//! column at a time. Every value that fails becomes a `RowError` naming the
//! line, the record's key, the field and what is wrong; a row with any error
//! is left out of `ValidRows`. Nothing is dropped without a trace: rows left
//! out as repeats of an event are counted as skipped.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use foldhash::{HashMap as FastMap, HashMapExt, HashSet as FastSet};

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use polars::prelude::*;
use regex::Regex;

use super::{Field, FieldType, RawTable, TableSchema};

/// A row that was not applied, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RowError {
    /// Line in the file where the record starts (the header is line 1).
    pub line: u64,
    /// The record's key as written (parts joined with `|`), when readable.
    pub key: Option<String>,
    /// The field at fault; none when the record as a whole is.
    pub field: Option<String>,
    pub message: String,
    /// The record as it stands in the file (shortened when huge).
    pub raw: String,
}

/// What validation needs to know beyond the file.
#[derive(Debug, Default)]
pub struct Context {
    /// Known keys of other datasets, for foreign keys: dataset -> values
    /// (composite keys joined with `|`).
    pub references: HashMap<String, FastSet<String>>,
    /// Repeated keys are the same event delivered twice (append mode):
    /// skipped, not errors.
    pub repeats_are_duplicates: bool,
    /// The key is only complete later (typed metrics take their period from
    /// the business date), so its uniqueness is checked there.
    pub key_checked_later: bool,
}

/// The rows that passed, typed, with everything known about those that did not.
#[derive(Debug)]
pub struct ValidRows {
    /// One column per schema field, typed; only rows that passed.
    pub frame: DataFrame,
    /// For each row of `frame`, its index among the raw table's kept records.
    pub rows: Vec<u32>,
    /// Every problem found, in line order.
    pub errors: Vec<RowError>,
    /// Data records in the file.
    pub input_rows: u64,
    /// Records rejected (a record with three bad fields counts once).
    pub error_rows: u64,
    /// Records left out as repeats of an earlier one (append mode).
    pub skipped_rows: u64,
    /// Keys (as in `RowError::key`) of rejected records: a snapshot must not
    /// delete them just because today's copy was unreadable.
    pub rejected_keys: Vec<String>,
    /// Header names the schema does not know.
    pub ignored_columns: Vec<String>,
}

/// An error found in one row of a raw table, before it gets its key and raw text.
struct Issue {
    row: u32,
    field: Option<String>,
    message: String,
}

/// Validates a raw table against `schema`.
pub fn validate(raw: &RawTable, schema: &TableSchema, ctx: &Context) -> ValidRows {
    let n = raw.lines.len();
    let fields: Vec<(usize, &Field, &StringChunked)> = schema
        .fields
        .iter()
        .zip(&raw.columns)
        .enumerate()
        .map(|(i, (f, c))| (i, f, c))
        .collect();

    // Values after missing-value substitution, per field.
    let present: Vec<Vec<Option<&str>>> = in_parallel(&fields, |(_, field, col)| {
        let missing = field.missing_values(schema);
        col.iter()
            .map(|v| v.filter(|v| !missing.iter().any(|m| m == v)))
            .collect()
    });

    // Each field converts and checks its own values: columns are independent.
    let checked: Vec<(Column, Vec<Issue>)> = in_parallel(&fields, |(index, field, raw_column)| {
        let values = &present[*index];
        let mut issues = Vec::new();
        let mut push = |row: usize, message: String| {
            issues.push(Issue {
                row: row as u32,
                field: Some(field.name.clone()),
                message,
            })
        };
        if field.is_required(schema) {
            for (row, v) in values.iter().enumerate() {
                if v.is_none() {
                    push(row, "a value is required".into());
                }
            }
        }
        let series = convert(field, values, raw_column, &mut push);
        check_constraints(field, values, &mut push);
        (series.into_column(), issues)
    });
    let mut columns: Vec<Column> = Vec::with_capacity(fields.len() + 1);
    let mut issues: Vec<Issue> = Vec::new();
    for (column, field_issues) in checked {
        columns.push(column);
        issues.extend(field_issues);
    }
    if schema.keeps_extra_columns() {
        let attributes = raw
            .attributes
            .clone()
            .unwrap_or_else(|| StringChunked::full_null(super::ATTRIBUTES.into(), n));
        columns.push(attributes.into_series().into_column());
    }

    // Rules across fields and rows: references, and the key.
    let (mut cross, duplicate_rows) = std::thread::scope(|scope| {
        let references = scope.spawn(|| {
            let mut issues = Vec::new();
            check_required_when(schema, &present, &mut issues);
            check_foreign_keys(schema, &present, ctx, &mut issues);
            issues
        });
        let mut key_issues = Vec::new();
        let duplicates = if ctx.key_checked_later {
            HashSet::new()
        } else {
            check_keys(schema, &present, raw, ctx, &mut key_issues)
        };
        let mut cross = references.join().expect("reference checks do not panic");
        cross.extend(key_issues);
        (cross, duplicates)
    });
    issues.append(&mut cross);

    // Errors, with keys and raw text, in line order.
    let key_fields: Vec<usize> = schema
        .primary_key()
        .iter()
        .filter_map(|k| schema.fields.iter().position(|f| &f.name == k))
        .collect();
    let key_of = |row: usize| -> Option<String> {
        let parts: Vec<&str> = key_fields
            .iter()
            .map(|&f| raw.columns[f].get(row).unwrap_or(""))
            .collect();
        (!parts.is_empty()).then(|| parts.join("|"))
    };
    let field_order = |f: &Option<String>| {
        f.as_ref()
            .and_then(|f| schema.fields.iter().position(|x| &x.name == f))
            .unwrap_or(usize::MAX)
    };
    issues.sort_by_key(|i| (i.row, field_order(&i.field)));
    let mut bad = vec![false; n];
    let mut errors: Vec<RowError> = raw.errors.clone();
    let mut rejected_keys: Vec<String> = raw.errors.iter().filter_map(|e| e.key.clone()).collect();
    for issue in issues {
        let row = issue.row as usize;
        if !bad[row] {
            bad[row] = true;
            rejected_keys.extend(key_of(row));
        }
        errors.push(RowError {
            line: raw.lines[row],
            key: key_of(row),
            field: issue.field,
            message: issue.message,
            raw: raw.raw_row(row),
        });
    }
    errors.sort_by_key(|e| e.line);
    let error_rows = raw
        .errors
        .iter()
        .map(|e| e.line)
        .collect::<HashSet<_>>()
        .len() as u64
        + bad.iter().filter(|b| **b).count() as u64;

    let keep: BooleanChunked = (0..n)
        .map(|row| !bad[row] && !duplicate_rows.contains(&(row as u32)))
        .collect();
    let rows: Vec<u32> = (0..n as u32)
        .filter(|&row| keep.get(row as usize) == Some(true))
        .collect();
    let frame = DataFrame::new(n, columns)
        .and_then(|df| {
            if rows.len() == n {
                Ok(df)
            } else {
                df.filter(&keep)
            }
        })
        .expect("columns built with one value per row");
    ValidRows {
        frame,
        rows,
        errors,
        input_rows: raw.records,
        error_rows,
        // A repeat that is also invalid counts as rejected, not skipped.
        skipped_rows: duplicate_rows
            .iter()
            .filter(|&&row| !bad[row as usize])
            .count() as u64,
        rejected_keys,
        ignored_columns: raw.ignored_columns.clone(),
    }
}

/// Maps `f` over `items` on as many threads as there are cores, keeping order.
fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let f = &f;
    let mut results: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..items.len())
                        .step_by(threads)
                        .map(|i| (i, f(&items[i])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for worker in workers {
            for (i, r) in worker.join().expect("validation workers do not panic") {
                results[i] = Some(r);
            }
        }
    });
    results
        .into_iter()
        .map(|r| r.expect("every item mapped"))
        .collect()
}

/// Converts a field's values to its type; each value that does not convert
/// is reported and becomes null.
fn convert(
    field: &Field,
    values: &[Option<&str>],
    raw: &StringChunked,
    report: &mut dyn FnMut(usize, String),
) -> Series {
    let name: PlSmallStr = field.name.as_str().into();
    // Each value that does not convert is reported and becomes null.
    let mut typed = |parse: &dyn Fn(&str) -> Result<(), String>| {
        for (row, v) in values.iter().enumerate() {
            if let Some(v) = v
                && let Err(message) = parse(v)
            {
                report(row, message);
            }
        }
    };
    match field.kind {
        FieldType::String | FieldType::Any => {
            if let Some(format) = field.format.as_deref() {
                typed(&|v| check_string_format(format, v));
            }
            // Text stays as read unless missing values became nulls.
            let missing = values.iter().filter(|v| v.is_none()).count();
            if missing == raw.null_count() {
                raw.clone().with_name(name).into_series()
            } else {
                Series::new(name, values)
            }
        }
        FieldType::Integer => Series::new(
            name,
            typed_values(values, report, |v| parse_integer(field, v)),
        ),
        FieldType::Number => Series::new(
            name,
            typed_values(values, report, |v| parse_number(field, v)),
        ),
        FieldType::Boolean => Series::new(
            name,
            typed_values(values, report, |v| parse_boolean(field, v)),
        ),
        FieldType::Date => {
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
            let days = typed_values(values, report, |v| {
                parse_date(field.format.as_deref(), v).map(|d| (d - epoch).num_days() as i32)
            });
            Series::new(name, days)
                .cast(&DataType::Date)
                .expect("i32 casts to date")
        }
        FieldType::Datetime => {
            let micros = typed_values(values, report, |v| {
                parse_datetime(field.format.as_deref(), v).map(|t| t.and_utc().timestamp_micros())
            });
            Series::new(name, micros)
                .cast(&DataType::Datetime(TimeUnit::Microseconds, None))
                .expect("i64 casts to datetime")
        }
    }
}

/// Parses every present value; one that does not parse is reported and
/// becomes null.
fn typed_values<T>(
    values: &[Option<&str>],
    report: &mut dyn FnMut(usize, String),
    parse: impl Fn(&str) -> Result<T, String>,
) -> Vec<Option<T>> {
    values
        .iter()
        .enumerate()
        .map(|(row, v)| {
            v.and_then(|v| match parse(v) {
                Ok(x) => Some(x),
                Err(message) => {
                    report(row, message);
                    None
                }
            })
        })
        .collect()
}

fn check_string_format(format: &str, v: &str) -> Result<(), String> {
    let ok = match format {
        "email" => is_email(v),
        "uri" => v.split_once(':').is_some_and(|(scheme, rest)| {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                && !rest.is_empty()
        }),
        "uuid" => uuid::Uuid::parse_str(v).is_ok(),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("`{v}` is not a valid {format}"))
    }
}

fn is_email(v: &str) -> bool {
    let Some((local, domain)) = v.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !v.chars().any(|c| c.is_whitespace() || c.is_control())
        && !domain.contains('@')
}

/// Strips what a non-bare number may carry around it ("€ 1,200.50",
/// "95 %"), then the group character; gives the text Rust can parse.
fn numeric_text(field: &Field, v: &str) -> Option<String> {
    let mut s = v.trim();
    let mut negative = false;
    if !field.bare_number {
        let is_numeric_start = |c: char| c.is_ascii_digit() || c == '.' || c == ',';
        let start = s.find(is_numeric_start)?;
        negative = s[..start].contains('-');
        let end = s
            .rfind(|c: char| c.is_ascii_digit())
            .map(|i| i + 1)
            .unwrap_or(s.len());
        s = &s[start..end.max(start)];
    }
    let mut out = String::with_capacity(s.len() + 1);
    if negative {
        out.push('-');
    }
    let group = field.group_char.as_deref().unwrap_or("");
    let decimal = field.decimal_char.as_deref().unwrap_or(".");
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if !group.is_empty() && rest.starts_with(group) {
            rest = &rest[group.len()..];
        } else if decimal != "." && rest.starts_with(decimal) {
            out.push('.');
            rest = &rest[decimal.len()..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    Some(out)
}

fn parse_integer(field: &Field, v: &str) -> Result<i64, String> {
    if let Some(i) = plain_number(field, v).and_then(|v| v.parse().ok()) {
        return Ok(i);
    }
    numeric_text(field, v)
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| format!("`{v}` is not an integer"))
}

pub(crate) fn parse_number(field: &Field, v: &str) -> Result<f64, String> {
    if let Some(x) = plain_number(field, v).and_then(|v| v.parse().ok()) {
        return Ok(x);
    }
    numeric_text(field, v)
        .and_then(|s| match s.as_str() {
            "NaN" => Some(f64::NAN),
            "INF" => Some(f64::INFINITY),
            "-INF" => Some(f64::NEG_INFINITY),
            s if s
                .bytes()
                .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
            {
                s.parse().ok()
            }
            _ => None,
        })
        .ok_or_else(|| format!("`{v}` is not a number"))
}

/// The value itself when it is a plain number (digits, sign, `.`), which
/// most are: parsed without the rewriting `numeric_text` does.
fn plain_number<'a>(field: &Field, v: &'a str) -> Option<&'a str> {
    let plain = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == b'+' || b == b'.')
        && field.decimal_char.as_deref().is_none_or(|d| d == ".");
    plain.then_some(v)
}

fn parse_boolean(field: &Field, v: &str) -> Result<bool, String> {
    const TRUE: &[&str] = &["true", "True", "TRUE", "1"];
    const FALSE: &[&str] = &["false", "False", "FALSE", "0"];
    let is_in = |list: &Option<Vec<String>>, default: &[&str]| match list {
        Some(l) => l.iter().any(|x| x == v),
        None => default.contains(&v),
    };
    if is_in(&field.true_values, TRUE) {
        Ok(true)
    } else if is_in(&field.false_values, FALSE) {
        Ok(false)
    } else {
        Err(format!("`{v}` is not a boolean"))
    }
}

/// A date: ISO (`2024-11-03`) by default, a strftime `format`, or `any` of
/// the common forms.
pub(crate) fn parse_date(format: Option<&str>, v: &str) -> Result<NaiveDate, String> {
    let parsed = match format {
        None | Some("default") => iso_date(v),
        Some("any") => ["%Y-%m-%d", "%Y%m%d", "%d/%m/%Y", "%d.%m.%Y", "%Y/%m/%d"]
            .iter()
            .find_map(|f| NaiveDate::parse_from_str(v, f).ok())
            .or_else(|| parse_datetime(Some("default"), v).ok().map(|t| t.date())),
        Some(f) => NaiveDate::parse_from_str(v, f).ok(),
    };
    parsed.ok_or_else(|| match format {
        None | Some("default") => format!("`{v}` is not a date (expected YYYY-MM-DD)"),
        Some(f) => format!("`{v}` is not a date in the format `{f}`"),
    })
}

/// `YYYY-MM-DD`, read directly: the common case, many times faster than a
/// format-driven parse.
fn iso_date(v: &str) -> Option<NaiveDate> {
    let b = v.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |s: &[u8]| -> Option<u32> {
        s.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    NaiveDate::from_ymd_opt(num(&b[..4])? as i32, num(&b[5..7])?, num(&b[8..])?)
}

/// A timestamp, in UTC: ISO 8601 by default (an offset is converted to UTC,
/// none means UTC), or a strftime `format`.
pub(crate) fn parse_datetime(format: Option<&str>, v: &str) -> Result<NaiveDateTime, String> {
    let parsed = match format {
        None | Some("default") | Some("any") => DateTime::parse_from_rfc3339(v)
            .map(|t| t.naive_utc())
            .ok()
            .or_else(|| {
                [
                    "%Y-%m-%dT%H:%M:%S%.f",
                    "%Y-%m-%d %H:%M:%S%.f",
                    "%Y-%m-%dT%H:%M",
                ]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(v, f).ok())
            })
            .or_else(|| {
                DateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S%.f%:z")
                    .ok()
                    .map(|t| t.naive_utc())
            })
            .or_else(|| {
                (format == Some("any"))
                    .then(|| NaiveDate::parse_from_str(v, "%Y-%m-%d").ok())
                    .flatten()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
            }),
        Some(f) => NaiveDateTime::parse_from_str(v, f).ok(),
    };
    parsed.ok_or_else(|| match format {
        None | Some("default") | Some("any") => {
            format!("`{v}` is not a datetime (expected ISO 8601, like 2024-11-03T09:30:00Z)")
        }
        Some(f) => format!("`{v}` is not a datetime in the format `{f}`"),
    })
}

fn check_constraints(
    field: &Field,
    values: &[Option<&str>],
    report: &mut dyn FnMut(usize, String),
) {
    let c = &field.constraints;
    if let Some(allowed) = &c.allowed {
        let allowed: FastSet<String> = allowed.iter().map(json_text).collect();
        let mut listed: Vec<&String> = allowed.iter().collect();
        listed.sort();
        let listed = listed
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        for (row, v) in values.iter().enumerate() {
            if let Some(v) = v
                && !allowed.contains(*v)
            {
                report(row, format!("`{v}` is not one of: {listed}"));
            }
        }
    }
    if let Some(pattern) = &c.pattern {
        let re = Regex::new(&format!("^(?:{pattern})$")).expect("checked when loaded");
        for (row, v) in values.iter().enumerate() {
            if let Some(v) = v
                && !re.is_match(v)
            {
                report(row, format!("`{v}` does not match the pattern `{pattern}`"));
            }
        }
    }
    if c.min_length.is_some() || c.max_length.is_some() {
        for (row, v) in values.iter().enumerate() {
            let Some(v) = v else { continue };
            let len = v.chars().count();
            if let Some(min) = c.min_length
                && len < min
            {
                report(row, format!("is {len} characters, fewer than {min}"));
            }
            if let Some(max) = c.max_length
                && len > max
            {
                report(row, format!("is {len} characters, more than {max}"));
            }
        }
    }
    if c.minimum.is_some() || c.maximum.is_some() {
        check_bounds(field, values, report);
    }
    if c.unique {
        let mut first: FastMap<&str, usize> = FastMap::with_capacity(values.len());
        for (row, v) in values.iter().enumerate() {
            if let Some(v) = v
                && first.insert(v, row).is_some()
            {
                report(
                    row,
                    format!("`{v}` is not unique (it appears on an earlier row)"),
                );
            }
        }
    }
}

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn check_bounds(field: &Field, values: &[Option<&str>], report: &mut dyn FnMut(usize, String)) {
    let c = &field.constraints;
    // Compare in a common order: numbers as f64, dates and datetimes by value.
    let key = |text: &str| -> Option<f64> {
        match field.kind {
            FieldType::Integer => parse_integer(field, text).ok().map(|i| i as f64),
            FieldType::Number => parse_number(field, text).ok(),
            FieldType::Date => parse_date(None, text)
                .or_else(|_| parse_date(field.format.as_deref(), text))
                .ok()
                .map(|d| d.to_epoch_days() as f64),
            FieldType::Datetime => parse_datetime(None, text)
                .or_else(|_| parse_datetime(field.format.as_deref(), text))
                .ok()
                .map(|t| t.and_utc().timestamp() as f64),
            _ => None,
        }
    };
    let bound = |b: &Option<serde_json::Value>| -> Option<(f64, String)> {
        let b = b.as_ref()?;
        let text = json_text(b);
        let k = b.as_f64().or_else(|| key(&text))?;
        Some((k, text))
    };
    let (min, max) = (bound(&c.minimum), bound(&c.maximum));
    for (row, v) in values.iter().enumerate() {
        let Some(x) = v.and_then(key) else { continue };
        if let Some((m, text)) = &min
            && x < *m
        {
            report(
                row,
                format!("`{}` is less than the minimum {text}", v.unwrap_or("")),
            );
        }
        if let Some((m, text)) = &max
            && x > *m
        {
            report(
                row,
                format!("`{}` is more than the maximum {text}", v.unwrap_or("")),
            );
        }
    }
}

fn check_required_when(
    schema: &TableSchema,
    present: &[Vec<Option<&str>>],
    issues: &mut Vec<Issue>,
) {
    let index = |name: &str| schema.fields.iter().position(|f| f.name == name);
    for rule in &schema.dropsync.required_when {
        let (Some(field), Some(when)) = (index(&rule.field), index(&rule.when)) else {
            continue;
        };
        for (row, (value, condition)) in present[field].iter().zip(&present[when]).enumerate() {
            if value.is_none() && *condition == Some(rule.equals.as_str()) {
                issues.push(Issue {
                    row: row as u32,
                    field: Some(rule.field.clone()),
                    message: rule.message.clone().unwrap_or_else(|| {
                        format!(
                            "a value is required when {} is `{}`",
                            rule.when, rule.equals
                        )
                    }),
                });
            }
        }
    }
}

/// Joins the values of `fields` in `row` with `|`; none if any is missing.
/// A single-field key borrows its value.
fn composite<'a>(
    present: &[Vec<Option<&'a str>>],
    fields: &[usize],
    row: usize,
) -> Option<Cow<'a, str>> {
    if let [f] = fields {
        return present[*f][row].map(Cow::Borrowed);
    }
    let mut parts = Vec::with_capacity(fields.len());
    for &f in fields {
        parts.push(present[f][row]?);
    }
    Some(Cow::Owned(parts.join("|")))
}

fn check_foreign_keys(
    schema: &TableSchema,
    present: &[Vec<Option<&str>>],
    ctx: &Context,
    issues: &mut Vec<Issue>,
) {
    let index = |name: &String| schema.fields.iter().position(|f| &f.name == name);
    let rows = present.first().map_or(0, Vec::len);
    let no_keys = FastSet::default();
    for fk in &schema.foreign_keys {
        let fields: Vec<usize> = fk.fields.to_vec().iter().filter_map(index).collect();
        let names = fk.fields.to_vec().join(", ");
        let target_names = fk.reference.fields.to_vec().join(", ");
        let mut report = |row: usize, value: &str, whose: &str| {
            issues.push(Issue {
                row: row as u32,
                field: Some(names.clone()),
                message: format!("`{value}` does not exist: {whose}"),
            })
        };
        if fk.reference.resource.is_empty() {
            let targets: Vec<usize> = fk
                .reference
                .fields
                .to_vec()
                .iter()
                .filter_map(index)
                .collect();
            let known: FastSet<Cow<str>> = (0..rows)
                .filter_map(|row| composite(present, &targets, row))
                .collect();
            let whose = format!("no row of this file has that {target_names}");
            for row in 0..rows {
                if let Some(value) = composite(present, &fields, row)
                    && !known.contains(&value)
                {
                    report(row, &value, &whose);
                }
            }
        } else {
            let known = ctx
                .references
                .get(&fk.reference.resource)
                .unwrap_or(&no_keys);
            let whose = format!(
                "no {} record has that {target_names}",
                fk.reference.resource
            );
            for row in 0..rows {
                if let Some(value) = composite(present, &fields, row)
                    && !known.contains(value.as_ref())
                {
                    report(row, &value, &whose);
                }
            }
        }
    }
}

/// Checks the primary key is unique in the file. Repeats are errors (every
/// copy: which one is right cannot be told), or, for events, duplicates to
/// skip: the returned rows.
fn check_keys(
    schema: &TableSchema,
    present: &[Vec<Option<&str>>],
    raw: &RawTable,
    ctx: &Context,
    issues: &mut Vec<Issue>,
) -> HashSet<u32> {
    let key: Vec<usize> = schema
        .primary_key()
        .iter()
        .filter_map(|k| schema.fields.iter().position(|f| &f.name == k))
        .collect();
    let mut skipped = HashSet::new();
    if key.is_empty() {
        return skipped;
    }
    let rows = present.first().map_or(0, Vec::len);
    // First row of every key; the rows of keys seen more than once.
    let mut first: FastMap<Cow<str>, u32> = FastMap::with_capacity(rows);
    let mut repeated: FastMap<Cow<str>, Vec<u32>> = FastMap::new();
    for row in 0..rows {
        if let Some(k) = composite(present, &key, row) {
            match first.entry(k) {
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(row as u32);
                }
                std::collections::hash_map::Entry::Occupied(e) => {
                    let first_row = *e.get();
                    repeated
                        .entry(e.key().clone())
                        .or_insert_with(|| vec![first_row])
                        .push(row as u32);
                }
            }
        }
    }
    drop(first);
    let names = schema.primary_key().join(", ");
    let mut repeated: Vec<(Cow<str>, Vec<u32>)> = repeated.into_iter().collect();
    repeated.sort_by_key(|(_, rows)| rows[0]);
    for (k, rows) in repeated {
        if ctx.repeats_are_duplicates {
            skipped.extend(rows[1..].iter().copied());
            continue;
        }
        let lines: Vec<String> = rows
            .iter()
            .map(|&r| raw.lines[r as usize].to_string())
            .collect();
        for &row in &rows {
            issues.push(Issue {
                row,
                field: Some(names.clone()),
                message: format!("duplicate key `{k}` (lines {})", lines.join(", ")),
            });
        }
    }
    skipped
}

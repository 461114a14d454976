//! Text columns -> typed polars columns, checked against the schema one
//! column at a time. Every value that fails becomes a `RowError` naming the
//! line, the record's key, the field and what is wrong; a row with any error
//! is left out of `ValidRows`. Nothing is dropped without a trace: rows left
//! out as repeats of an event are counted as skipped.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use foldhash::{HashMap as FastMap, HashMapExt, HashSet as FastSet};

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use polars::prelude::*;
use regex::Regex;

use super::key_table::{ByRegion, KeySet, KeyTable};
use super::raw_rows::UnchangedRows;
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
    /// How many problems of each kind to keep in full (message, key, raw
    /// text); `None` keeps all. Past it, rows are still rejected and counted,
    /// but not described: a file with that many bad rows is refused by its
    /// error policy anyway, and describing millions of them costs gigabytes.
    pub keep_errors: Option<usize>,
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
    validate_rows(raw, schema, ctx, None).0
}

/// Validates one chunk of a file against `schema`. The rules across rows
/// (the key, unique keys, references within the file) are checked against
/// the chunks before it through `across`; what only the rest of the file
/// can settle (every copy of a repeated key, a reference to a row further
/// on) comes out of `FileChecks::finish`. A row that repeats a key is left
/// out here and described then. Also returns the kept records skipped as
/// repeats of an earlier event (append mode), ascending.
pub fn validate_chunk(
    raw: &RawTable,
    schema: &TableSchema,
    ctx: &Context,
    across: &mut FileChecks,
) -> (ValidRows, Vec<u32>) {
    across.note_unchanged(&raw.unchanged, schema);
    let valid = validate_rows(raw, schema, ctx, Some(across));
    across.chunk += 1;
    valid
}

fn validate_rows(
    raw: &RawTable,
    schema: &TableSchema,
    ctx: &Context,
    across: Option<&mut FileChecks>,
) -> (ValidRows, Vec<u32>) {
    let n = raw.lines.len();
    let keep_errors = ctx.keep_errors.unwrap_or(usize::MAX);
    // A row can have a few problems in one field (missing, mistyped, out of
    // range), so each field keeps a few per row it describes.
    let issue_cap = keep_errors.saturating_mul(4);
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
    // Rules across fields and rows compare typed values: `01` and `1` are
    // one integer key, one reference, one unique value. The fields they use
    // get their values' canonical spelling, made from the converted column.
    let compared = compared_fields(schema);
    type Checked = (Column, Vec<Issue>, Vec<u32>, Option<Vec<Option<String>>>);
    let checked: Vec<Checked> = in_parallel(&fields, |(index, field, raw_column)| {
        let values = &present[*index];
        let mut issues = Vec::new();
        // Rows rejected past `keep_errors`: a bare row number each.
        let mut undescribed: Vec<u32> = Vec::new();
        let mut push = |row: usize, message: String| {
            if issues.len() < issue_cap {
                issues.push(Issue {
                    row: row as u32,
                    field: Some(field.name.clone()),
                    message,
                })
            } else {
                undescribed.push(row as u32);
            }
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
        check_categories(field, values, &mut push);
        let typed =
            (compared[*index] && !field.kind.is_text()).then(|| canonical_column(field, &series));
        (series.into_column(), issues, undescribed, typed)
    });
    let mut columns: Vec<Column> = Vec::with_capacity(fields.len() + 1);
    let mut issues: Vec<Issue> = Vec::new();
    let mut undescribed: Vec<u32> = Vec::new();
    let mut typed: Vec<Option<Vec<Option<String>>>> = Vec::with_capacity(fields.len());
    for (column, field_issues, field_undescribed, field_typed) in checked {
        columns.push(column);
        issues.extend(field_issues);
        undescribed.extend(field_undescribed);
        typed.push(field_typed);
    }
    if schema.keeps_extra_columns() {
        let attributes = raw
            .attributes
            .clone()
            .unwrap_or_else(|| StringChunked::full_null(super::ATTRIBUTES.into(), n));
        columns.push(attributes.into_series().into_column());
    }

    let comparable = Comparable {
        present: &present,
        typed,
    };

    // Rules across fields and rows: references, unique keys, and the key.
    let (mut cross, duplicate_rows, repeated_rows): (Vec<Issue>, _, Vec<u32>) = match across {
        None => std::thread::scope(|scope| {
            let references = scope.spawn(|| {
                let mut issues = Vec::new();
                check_required_when(schema, &comparable, &mut issues);
                check_foreign_keys(schema, &comparable, ctx, &mut issues);
                check_unique_keys(schema, &comparable, raw, &mut issues);
                issues
            });
            let mut key_issues = Vec::new();
            let duplicates = if ctx.key_checked_later {
                HashSet::new()
            } else {
                check_keys(schema, &comparable, raw, ctx, &mut key_issues)
            };
            let mut cross = references.join().expect("reference checks do not panic");
            cross.extend(key_issues);
            (cross, duplicates, Vec::new())
        }),
        Some(across) => {
            let mut issues = Vec::new();
            check_required_when(schema, &comparable, &mut issues);
            // Keys first: a reference to the key finds this chunk's rows too.
            let (duplicates, repeated) = across.check_keys(schema, &comparable, raw, ctx);
            across.check_foreign_keys(schema, &comparable, raw, ctx, &mut issues);
            across.check_unique_keys(schema, &comparable, raw, &mut issues);
            (issues, duplicates, repeated)
        }
    };
    if cross.len() > issue_cap {
        cross.sort_by_key(|i| i.row);
        undescribed.extend(cross.drain(issue_cap..).map(|i| i.row));
    }
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
    // A rejected row protects its stored copy by key: the typed key, spelled
    // as the store spells it, when the key's values read.
    let stored_key_of = |row: usize| -> Option<String> {
        if key_fields.is_empty() {
            return None;
        }
        composite(&comparable, &key_fields, row)
            .map(Cow::into_owned)
            .or_else(|| key_of(row))
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
    // Keys protect rows from a snapshot's deletes, which only matters when
    // the file is applied, that is when it has at most `keep_errors` bad rows.
    let mut reject = |row: usize, bad: &mut [bool]| {
        if !bad[row] {
            bad[row] = true;
            if rejected_keys.len() < keep_errors {
                rejected_keys.extend(stored_key_of(row));
            }
        }
    };
    for &row in &undescribed {
        reject(row as usize, &mut bad);
    }
    drop(undescribed);
    // Copies of a repeated key: described once the file has been read.
    for &row in &repeated_rows {
        reject(row as usize, &mut bad);
    }
    for issue in issues {
        let row = issue.row as usize;
        reject(row, &mut bad);
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

    // Rows kept: neither rejected nor a repeat; a flag a row, not a set
    // lookup a row.
    let mut kept: Vec<bool> = bad.iter().map(|b| !b).collect();
    for &row in &duplicate_rows {
        kept[row as usize] = false;
    }
    let rows: Vec<u32> = (0..n as u32).filter(|&row| kept[row as usize]).collect();
    let frame = DataFrame::new(n, columns)
        .and_then(|df| {
            if rows.len() == n {
                Ok(df)
            } else {
                df.filter(&BooleanChunked::from_iter_values(
                    PlSmallStr::EMPTY,
                    kept.iter().copied(),
                ))
            }
        })
        .expect("columns built with one value per row");
    let mut skipped: Vec<u32> = duplicate_rows
        .iter()
        .copied()
        .filter(|&row| !bad[row as usize])
        .collect();
    skipped.sort_unstable();
    let valid = ValidRows {
        frame,
        rows,
        errors,
        input_rows: raw.records,
        error_rows,
        // A repeat that is also invalid counts as rejected, not skipped.
        skipped_rows: skipped.len() as u64,
        rejected_keys,
        ignored_columns: raw.ignored_columns.clone(),
    };
    (valid, skipped)
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
        FieldType::Time => {
            // The store keeps microseconds; nanoseconds beyond them are dropped
            // here, so that what is compared is what is stored.
            let nanos = typed_values(values, report, |v| {
                parse_time(field.format.as_deref(), v).map(|t| time_micros(t) * 1000)
            });
            Series::new(name, nanos)
                .cast(&DataType::Time)
                .expect("i64 casts to time")
        }
        FieldType::Year => Series::new(name, typed_values(values, report, parse_year)),
        FieldType::YearMonth => Series::new(
            name,
            typed_values(values, report, |v| {
                parse_yearmonth(v).map(|(y, m)| format!("{y:04}-{m:02}"))
            }),
        ),
        FieldType::Duration => Series::new(
            name,
            typed_values(values, report, |v| parse_duration(v).map(|d| d.to_string())),
        ),
    }
}

/// A cell's value in one spelling per value of its type: what enum, unique,
/// keys and references compare, so `01` and `1` are one integer and `TRUE`
/// and `true` one boolean. Text is its own spelling. Typed values are spelled
/// as the store writes the stored value as text (`CAST(x AS VARCHAR)`), so
/// that a rejected row's key finds its stored copy.
pub(crate) fn canonical<'a>(field: &Field, v: &'a str) -> Result<Cow<'a, str>, String> {
    let format = field.format.as_deref();
    Ok(match field.kind {
        FieldType::String | FieldType::Any => Cow::Borrowed(v),
        FieldType::Integer => Cow::Owned(parse_integer(field, v)?.to_string()),
        FieldType::Number => Cow::Owned(number_text(parse_number(field, v)?)),
        FieldType::Boolean => Cow::Borrowed(if parse_boolean(field, v)? {
            "true"
        } else {
            "false"
        }),
        FieldType::Date => Cow::Owned(date_text(parse_date(format, v)?)),
        FieldType::Datetime => Cow::Owned(datetime_text(parse_datetime(format, v)?)),
        FieldType::Time => Cow::Owned(time_text(time_micros(parse_time(format, v)?))),
        FieldType::Year => Cow::Owned(parse_year(v)?.to_string()),
        FieldType::YearMonth => {
            let (y, m) = parse_yearmonth(v)?;
            Cow::Owned(format!("{y:04}-{m:02}"))
        }
        FieldType::Duration => Cow::Owned(parse_duration(v)?.to_string()),
    })
}

/// A value given in the schema itself (an `enum` item, a category) in the
/// canonical spelling of `field`'s type. Text is read as a cell would be
/// (then in the type's default format); JSON numbers and booleans as what
/// they are.
pub(crate) fn canonical_json(field: &Field, value: &serde_json::Value) -> Result<String, String> {
    use serde_json::Value;
    let wrong = || {
        format!(
            "`{}` is not of type {}",
            json_text(value),
            field.kind.name()
        )
    };
    match (value, field.kind) {
        (Value::String(s), _) => canonical(field, s)
            .or_else(|e| canonical(&plain_field(field), s).map_err(|_| e))
            .map(Cow::into_owned),
        (Value::Number(n), FieldType::Integer | FieldType::Year) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|x| x.fract() == 0.0 && x.abs() < 9.0e15)
                    .map(|x| x as i64)
            })
            .map(|i| i.to_string())
            .ok_or_else(wrong),
        (Value::Number(n), FieldType::Number) => n.as_f64().map(number_text).ok_or_else(wrong),
        (Value::Bool(b), FieldType::Boolean) => Ok(b.to_string()),
        (Value::Number(_) | Value::Bool(_), kind) if kind.is_text() => Ok(value.to_string()),
        _ => Err(wrong()),
    }
}

/// Checks a column of values that come from no file (a computed field's,
/// spelled as the store writes values of the field's type) the way a file's
/// column of `field` is checked: required, type, format, constraints and
/// categories. Returns the typed column and each problem, by row.
pub(crate) fn check_column(
    field: &Field,
    schema: &TableSchema,
    values: &[Option<&str>],
) -> (Series, Vec<(usize, String)>) {
    // The store's spelling is the type's default one: the file's own
    // spellings (a date format, `groupChar`, `trueValues`) do not apply.
    let read_as = Field {
        format: field
            .format
            .clone()
            .filter(|_| field.kind == FieldType::String),
        constraints: field.constraints.clone(),
        categories: field.categories.clone(),
        ..plain_field(field)
    };
    let mut issues = Vec::new();
    let mut push = |row: usize, message: String| issues.push((row, message));
    if field.is_required(schema) {
        for (row, v) in values.iter().enumerate() {
            if v.is_none() {
                push(row, "a value is required".into());
            }
        }
    }
    let text: StringChunked = values.iter().copied().collect();
    let series = convert(&read_as, values, &text, &mut push);
    check_constraints(&read_as, values, &mut push);
    check_categories(&read_as, values, &mut push);
    (series, issues)
}

/// `field` with only its name and type: how values the store gives back as
/// text are read (default formats, `true`/`false`, `.` decimals).
fn plain_field(field: &Field) -> Field {
    Field {
        name: field.name.clone(),
        kind: field.kind,
        format: None,
        constraints: Default::default(),
        true_values: None,
        false_values: None,
        bare_number: true,
        group_char: None,
        decimal_char: None,
        missing_values: None,
        categories: None,
        categories_ordered: false,
    }
}

/// A double as text: whole numbers keep a `.0`, as the store writes them;
/// zero has one sign.
fn number_text(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf".into() } else { "-inf".into() }
    } else if x == 0.0 {
        "0.0".into()
    } else if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

/// The canonical spelling of each value `convert` made of a field the rules
/// across rows compare: the same as `canonical` gives for its cell, without
/// reading the cell a second time.
fn canonical_column(field: &Field, series: &Series) -> Vec<Option<String>> {
    const CONVERTED: &str = "a converted column has its field's type";
    match field.kind {
        FieldType::Integer => series
            .i64()
            .expect(CONVERTED)
            .iter()
            .map(|v| v.map(|i| i.to_string()))
            .collect(),
        FieldType::Number => series
            .f64()
            .expect(CONVERTED)
            .iter()
            .map(|v| v.map(number_text))
            .collect(),
        FieldType::Boolean => series
            .bool()
            .expect(CONVERTED)
            .iter()
            .map(|v| v.map(|b| b.to_string()))
            .collect(),
        FieldType::Date => series
            .date()
            .expect(CONVERTED)
            .physical()
            .iter()
            .map(|days| days.and_then(NaiveDate::from_epoch_days).map(date_text))
            .collect(),
        FieldType::Datetime => series
            .datetime()
            .expect(CONVERTED)
            .physical()
            .iter()
            .map(|micros| {
                micros
                    .and_then(DateTime::from_timestamp_micros)
                    .map(|t| datetime_text(t.naive_utc()))
            })
            .collect(),
        FieldType::Time => series
            .time()
            .expect(CONVERTED)
            .physical()
            .iter()
            .map(|nanos| nanos.map(|n| time_text(n / 1000)))
            .collect(),
        FieldType::Year => series
            .i32()
            .expect(CONVERTED)
            .iter()
            .map(|v| v.map(|y| y.to_string()))
            .collect(),
        FieldType::String | FieldType::Any | FieldType::YearMonth | FieldType::Duration => series
            .str()
            .expect(CONVERTED)
            .iter()
            .map(|v| v.map(str::to_string))
            .collect(),
    }
}

/// Writes `n` as `width` digits (zero-padded): a hand-rolled `{n:0width$}`,
/// since keys are spelled once per row.
fn push_padded(out: &mut String, n: u32, width: u32) {
    for place in (0..width).rev() {
        out.push(char::from(b'0' + (n / 10u32.pow(place) % 10) as u8));
    }
}

/// `2026-01-31`, as the store writes a DATE.
fn date_text(d: NaiveDate) -> String {
    let mut out = String::with_capacity(26);
    push_date(&mut out, d);
    out
}

fn push_date(out: &mut String, d: NaiveDate) {
    if !(0..=9999).contains(&d.year()) {
        out.push_str(&d.format("%Y-%m-%d").to_string());
        return;
    }
    push_padded(out, d.year() as u32, 4);
    out.push('-');
    push_padded(out, d.month(), 2);
    out.push('-');
    push_padded(out, d.day(), 2);
}

/// `2026-01-31 10:20:30.25`, as the store writes a TIMESTAMP: microseconds,
/// trailing zeros of the fraction left out.
fn datetime_text(t: NaiveDateTime) -> String {
    let mut out = String::with_capacity(26);
    push_date(&mut out, t.date());
    out.push(' ');
    push_time(&mut out, time_micros(t.time()));
    out
}

/// `10:20:30.25`, as the store writes a TIME.
fn time_text(micros: i64) -> String {
    let mut out = String::with_capacity(15);
    push_time(&mut out, micros);
    out
}

fn push_time(out: &mut String, micros: i64) {
    let seconds = (micros / 1_000_000) as u32;
    let fraction = (micros % 1_000_000) as u32;
    push_padded(out, seconds / 3600, 2);
    out.push(':');
    push_padded(out, seconds / 60 % 60, 2);
    out.push(':');
    push_padded(out, seconds % 60, 2);
    if fraction != 0 {
        let mut digits = 6;
        let mut fraction = fraction;
        while fraction.is_multiple_of(10) {
            fraction /= 10;
            digits -= 1;
        }
        out.push('.');
        push_padded(out, fraction, digits);
    }
}

fn time_micros(t: NaiveTime) -> i64 {
    i64::from(t.num_seconds_from_midnight()) * 1_000_000 + i64::from(t.nanosecond() / 1000)
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
        "uri" => is_uri(v),
        "uuid" => uuid::Uuid::parse_str(v).is_ok(),
        "binary" => is_base64(v),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("`{v}` is not a valid {format}"))
    }
}

/// A mailbox as RFC 5321 defines it (`Local-part "@" Domain`), with the
/// UTF-8 that RFC 6531 allows: the local part is dot-separated atoms or a
/// quoted string, the domain dot-separated labels (at least two: an address
/// a partner sends is never local to a host) or an address literal. Display
/// forms (`Name <a@b.example>`) and lists are not addresses.
fn is_email(v: &str) -> bool {
    // The domain holds no `@`; a quoted local part may.
    let Some((local, domain)) = v.rsplit_once('@') else {
        return false;
    };
    v.len() <= 254 && is_local_part(local) && is_mail_domain(domain)
}

fn is_local_part(local: &str) -> bool {
    if local.is_empty() || local.len() > 64 {
        return false;
    }
    if let Some(quoted) = local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            let ok = match c {
                '\\' => chars.next().is_some_and(|c| (' '..='~').contains(&c)),
                '"' => false,
                c => (' '..='~').contains(&c) || (!c.is_ascii() && !c.is_control()),
            };
            if !ok {
                return false;
            }
        }
        return true;
    }
    let atext = |c: char| {
        c.is_ascii_alphanumeric()
            || "!#$%&'*+-/=?^_`{|}~".contains(c)
            || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
    };
    local
        .split('.')
        .all(|atom| !atom.is_empty() && atom.chars().all(atext))
}

fn is_mail_domain(domain: &str) -> bool {
    if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        return match literal.strip_prefix("IPv6:") {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => literal.parse::<std::net::Ipv4Addr>().is_ok(),
        };
    }
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| {
                c.is_ascii_alphanumeric() || c == '-' || (!c.is_ascii() && c.is_alphanumeric())
            })
    };
    domain.len() <= 253 && domain.contains('.') && domain.split('.').all(label)
}

/// An absolute URI (RFC 3986): a scheme that starts with a letter, a colon,
/// then something, with no whitespace or control characters anywhere.
fn is_uri(v: &str) -> bool {
    let Some((scheme, rest)) = v.split_once(':') else {
        return false;
    };
    let mut scheme_chars = scheme.chars();
    scheme_chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme_chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !rest.is_empty()
        && !v.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Standard base64 (RFC 4648), padded: what Table Schema's `binary` holds.
fn is_base64(v: &str) -> bool {
    let b = v.as_bytes();
    let padding = b.iter().rev().take_while(|&&c| c == b'=').count();
    b.len().is_multiple_of(4)
        && padding <= 2
        && b[..b.len() - padding]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
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
        } else if decimal != "." && c == '.' {
            // With another decimal character a `.` is neither that nor a
            // group separator: `1.5` is not a number there.
            return None;
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
    if let Some(i) = grouped_digits(field, v) {
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
    // Table Schema's special values, in any case.
    for (name, x) in [
        ("nan", f64::NAN),
        ("inf", f64::INFINITY),
        ("+inf", f64::INFINITY),
        ("-inf", f64::NEG_INFINITY),
    ] {
        if v.trim().eq_ignore_ascii_case(name) {
            return Ok(x);
        }
    }
    numeric_text(field, v)
        .and_then(|s| match s.as_str() {
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

/// A grouped whole number as exports write them (`51,750`: a digit first,
/// then digits and a one-byte group character), read without the new
/// string `numeric_text` makes; `None` for anything else, which
/// `numeric_text` reads (or refuses) as before.
fn grouped_digits(field: &Field, v: &str) -> Option<i64> {
    let &[group] = field.group_char.as_deref()?.as_bytes() else {
        return None;
    };
    if group.is_ascii_digit() || !v.as_bytes().first()?.is_ascii_digit() {
        return None;
    }
    v.bytes().try_fold(0i64, |n, b| match b {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(i64::from(b - b'0')),
        b if b == group => Some(n),
        _ => None,
    })
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
        // Seconds are part of the default form, with an offset or without:
        // `10:20` and `10:20Z` are refused alike.
        None | Some("default") | Some("any") => DateTime::parse_from_rfc3339(v)
            .map(|t| t.naive_utc())
            .ok()
            .or_else(|| {
                ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                    .iter()
                    .find_map(|f| NaiveDateTime::parse_from_str(v, f).ok())
            })
            .or_else(|| {
                DateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S%.f%:z")
                    .ok()
                    .map(|t| t.naive_utc())
            })
            .or_else(|| {
                if format != Some("any") {
                    return None;
                }
                let utc = v.strip_suffix('Z').unwrap_or(v);
                ["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]
                    .iter()
                    .find_map(|f| NaiveDateTime::parse_from_str(utc, f).ok())
                    .or_else(|| {
                        NaiveDate::parse_from_str(v, "%Y-%m-%d")
                            .ok()
                            .and_then(|d| d.and_hms_opt(0, 0, 0))
                    })
            }),
        // A pattern with an offset gives an instant, kept in UTC.
        Some(f) => DateTime::parse_from_str(v, f)
            .map(|t| t.naive_utc())
            .ok()
            .or_else(|| NaiveDateTime::parse_from_str(v, f).ok()),
    };
    parsed.ok_or_else(|| match format {
        None | Some("default") | Some("any") => {
            format!("`{v}` is not a datetime (expected ISO 8601, like 2024-11-03T09:30:00Z)")
        }
        Some(f) => format!("`{v}` is not a datetime in the format `{f}`"),
    })
}

/// A time of day: ISO 8601 `hh:mm:ss` (a fraction allowed, `Z` allowed)
/// by default, a strftime `format`, or `any` of the common forms.
pub(crate) fn parse_time(format: Option<&str>, v: &str) -> Result<NaiveTime, String> {
    let parsed = match format {
        None | Some("default") => {
            NaiveTime::parse_from_str(v.strip_suffix('Z').unwrap_or(v), "%H:%M:%S%.f").ok()
        }
        Some("any") => {
            let v = v.strip_suffix('Z').unwrap_or(v);
            ["%H:%M:%S%.f", "%H:%M", "%I:%M:%S %p", "%I:%M %p", "%H%M%S"]
                .iter()
                .find_map(|f| NaiveTime::parse_from_str(v, f).ok())
        }
        Some(f) => NaiveTime::parse_from_str(v, f).ok(),
    };
    parsed.ok_or_else(|| match format {
        None | Some("default") | Some("any") => {
            format!("`{v}` is not a time (expected hh:mm:ss, like 09:30:00)")
        }
        Some(f) => format!("`{v}` is not a time in the format `{f}`"),
    })
}

/// A calendar year, `YYYY`.
pub(crate) fn parse_year(v: &str) -> Result<i32, String> {
    if v.len() == 4 && v.bytes().all(|b| b.is_ascii_digit()) {
        v.parse()
            .map_err(|_| format!("`{v}` is not a year (expected YYYY)"))
    } else {
        Err(format!("`{v}` is not a year (expected YYYY)"))
    }
}

/// A month of a year, `YYYY-MM`.
pub(crate) fn parse_yearmonth(v: &str) -> Result<(i32, u32), String> {
    let wrong = || format!("`{v}` is not a year and month (expected YYYY-MM)");
    let (year, month) = v.split_once('-').ok_or_else(wrong)?;
    let year = parse_year(year).map_err(|_| wrong())?;
    if month.len() != 2 || !month.bytes().all(|b| b.is_ascii_digit()) {
        return Err(wrong());
    }
    let month: u32 = month.parse().map_err(|_| wrong())?;
    if !(1..=12).contains(&month) {
        return Err(wrong());
    }
    Ok((year, month))
}

/// An ISO 8601 duration, as Table Schema's `duration` holds it: `P1Y2M10D`,
/// `PT2H30M`, `P2W`, `-P1D`, a fraction on the seconds only. Its text form
/// leaves out zero parts and counts weeks as days, so one length of time
/// written two ways compares equal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct IsoDuration {
    negative: bool,
    years: u64,
    months: u64,
    days: u64,
    hours: u64,
    minutes: u64,
    seconds: u64,
    /// Fraction of a second, in nanoseconds.
    nanos: u32,
}

impl std::fmt::Display for IsoDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let date = [(self.years, 'Y'), (self.months, 'M'), (self.days, 'D')];
        let time = [(self.hours, 'H'), (self.minutes, 'M')];
        let no_time = self.hours == 0 && self.minutes == 0 && self.seconds == 0 && self.nanos == 0;
        if no_time && date.iter().all(|(n, _)| *n == 0) {
            return f.write_str("PT0S");
        }
        if self.negative {
            f.write_str("-")?;
        }
        f.write_str("P")?;
        for (n, unit) in date {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        if !no_time {
            f.write_str("T")?;
            for (n, unit) in time {
                if n != 0 {
                    write!(f, "{n}{unit}")?;
                }
            }
            if self.seconds != 0 || self.nanos != 0 {
                let fraction = format!(".{:09}", self.nanos);
                let fraction = fraction.trim_end_matches('0').trim_end_matches('.');
                write!(f, "{}{fraction}S", self.seconds)?;
            }
        }
        Ok(())
    }
}

pub(crate) fn parse_duration(v: &str) -> Result<IsoDuration, String> {
    let wrong = || format!("`{v}` is not a duration (expected ISO 8601, like P1Y2M10DT2H30M)");
    let (negative, rest) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let rest = rest.strip_prefix('P').ok_or_else(wrong)?;
    let (date, time) = match rest.split_once('T') {
        Some((_, "")) => return Err(wrong()),
        Some((date, time)) => (date, Some(time)),
        None => (rest, None),
    };
    let mut d = IsoDuration {
        negative,
        ..IsoDuration::default()
    };
    let date_parts = duration_parts(date, "YMWD", false, &mut d).ok_or_else(wrong)?;
    let time_parts = match time {
        Some(time) => match duration_parts(time, "HMS", true, &mut d) {
            Some(0) | None => return Err(wrong()),
            Some(n) => n,
        },
        None => 0,
    };
    if date_parts + time_parts == 0 {
        return Err(wrong());
    }
    Ok(d)
}

/// Reads the date or the time half of a duration into `d`: each part is
/// digits then its unit, units in the order of `units`, each at most once.
/// Gives how many parts there were.
fn duration_parts(text: &str, units: &str, time_part: bool, d: &mut IsoDuration) -> Option<usize> {
    let mut rest = text;
    let mut allowed = units;
    let mut parts = 0;
    while !rest.is_empty() {
        let end = rest.find(|c: char| !c.is_ascii_digit() && c != '.' && c != ',')?;
        let (number, tail) = rest.split_at(end);
        let unit = tail.chars().next()?;
        let at = allowed.find(unit)?;
        allowed = &allowed[at + unit.len_utf8()..];
        rest = &tail[unit.len_utf8()..];
        let (whole, fraction) = match number.split_once(['.', ',']) {
            Some((w, f)) if time_part && unit == 'S' && !f.is_empty() && f.len() <= 9 => {
                (w, Some(f))
            }
            Some(_) => return None,
            None => (number, None),
        };
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u64 = whole.parse().ok()?;
        match (time_part, unit) {
            (false, 'Y') => d.years = n,
            (false, 'M') => d.months = n,
            (false, 'W') => d.days = d.days.checked_add(n.checked_mul(7)?)?,
            (false, 'D') => d.days = d.days.checked_add(n)?,
            (true, 'H') => d.hours = n,
            (true, 'M') => d.minutes = n,
            (true, 'S') => {
                d.seconds = n;
                if let Some(f) = fraction {
                    if !f.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    d.nanos = format!("{f:0<9}").parse().ok()?;
                }
            }
            _ => return None,
        }
        parts += 1;
    }
    Some(parts)
}

fn check_constraints(
    field: &Field,
    values: &[Option<&str>],
    report: &mut dyn FnMut(usize, String),
) {
    let c = &field.constraints;
    if let Some(allowed) = &c.allowed {
        check_one_of(field, allowed.iter(), values, "one of", report);
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
    if c.minimum.is_some()
        || c.maximum.is_some()
        || c.exclusive_minimum.is_some()
        || c.exclusive_maximum.is_some()
    {
        check_bounds(field, values, report);
    }
    if c.unique {
        // Typed: `1` and `01` are one integer. A value that does not read as
        // its type is already an error of its own.
        let mut first: FastMap<Cow<str>, usize> = FastMap::with_capacity(values.len());
        for (row, v) in values.iter().enumerate() {
            if let Some(v) = v
                && let Ok(value) = canonical(field, v)
                && first.insert(value, row).is_some()
            {
                report(
                    row,
                    format!("`{v}` is not unique (it appears on an earlier row)"),
                );
            }
        }
    }
}

/// A categorical field's values must be among its categories.
fn check_categories(field: &Field, values: &[Option<&str>], report: &mut dyn FnMut(usize, String)) {
    if let Some(categories) = &field.categories {
        let allowed = categories.iter().map(super::Category::value);
        check_one_of(field, allowed, values, "one of the categories", report);
    }
}

/// Reports each value whose typed value is not among `allowed` (an `enum`,
/// the categories).
fn check_one_of<'v>(
    field: &Field,
    allowed: impl Iterator<Item = &'v serde_json::Value>,
    values: &[Option<&str>],
    what: &str,
    report: &mut dyn FnMut(usize, String),
) {
    let allowed: Vec<&serde_json::Value> = allowed.collect();
    let typed: FastSet<String> = allowed
        .iter()
        .filter_map(|a| canonical_json(field, a).ok())
        .collect();
    let mut listed: Vec<String> = allowed.iter().map(|a| json_text(a)).collect();
    listed.sort();
    listed.dedup();
    let listed = listed.join(", ");
    for (row, v) in values.iter().enumerate() {
        if let Some(v) = v
            && let Ok(value) = canonical(field, v)
            && !typed.contains(value.as_ref())
        {
            report(row, format!("`{v}` is not {what}: {listed}"));
        }
    }
}

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Where a value of an ordered type stands: integers, days, microseconds
/// and months as integers; numbers as doubles.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ordinal {
    Int(i64),
    Float(f64),
}

impl PartialEq for Ordinal {
    fn eq(&self, other: &Ordinal) -> bool {
        self.partial_cmp(other) == Some(std::cmp::Ordering::Equal)
    }
}

impl PartialOrd for Ordinal {
    fn partial_cmp(&self, other: &Ordinal) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Ordinal::Int(a), Ordinal::Int(b)) => Some(a.cmp(b)),
            _ => self.as_f64().partial_cmp(&other.as_f64()),
        }
    }
}

impl Ordinal {
    fn as_f64(self) -> f64 {
        match self {
            Ordinal::Int(i) => i as f64,
            Ordinal::Float(x) => x,
        }
    }
}

/// Where a cell of `field` stands in its type's order; none for a value
/// that does not read, or a type without an order.
fn ordinal(field: &Field, v: &str) -> Option<Ordinal> {
    let format = field.format.as_deref();
    Some(match field.kind {
        FieldType::Integer => Ordinal::Int(parse_integer(field, v).ok()?),
        FieldType::Number => Ordinal::Float(parse_number(field, v).ok()?),
        FieldType::Date => Ordinal::Int(i64::from(parse_date(format, v).ok()?.to_epoch_days())),
        FieldType::Datetime => {
            Ordinal::Int(parse_datetime(format, v).ok()?.and_utc().timestamp_micros())
        }
        FieldType::Time => Ordinal::Int(time_micros(parse_time(format, v).ok()?)),
        FieldType::Year => Ordinal::Int(i64::from(parse_year(v).ok()?)),
        FieldType::YearMonth => {
            let (y, m) = parse_yearmonth(v).ok()?;
            Ordinal::Int(i64::from(y) * 12 + i64::from(m) - 1)
        }
        FieldType::String | FieldType::Any | FieldType::Boolean | FieldType::Duration => {
            return None;
        }
    })
}

/// A bound given in the schema (`minimum`, `exclusiveMaximum`, ...): a JSON
/// number for numeric types, else text in the type's default form or the
/// field's format.
pub(crate) fn bound(field: &Field, value: &serde_json::Value) -> Result<Ordinal, String> {
    let wrong = || {
        format!(
            "`{}` is not of type {}",
            json_text(value),
            field.kind.name()
        )
    };
    match value {
        serde_json::Value::Number(n)
            if matches!(field.kind, FieldType::Integer | FieldType::Year) =>
        {
            Ok(n.as_i64().map_or_else(
                || Ordinal::Float(n.as_f64().unwrap_or(f64::NAN)),
                Ordinal::Int,
            ))
        }
        serde_json::Value::Number(n) if field.kind == FieldType::Number => {
            n.as_f64().map(Ordinal::Float).ok_or_else(wrong)
        }
        serde_json::Value::String(s) => ordinal(&plain_field(field), s)
            .or_else(|| ordinal(field, s))
            .ok_or_else(wrong),
        _ => Err(wrong()),
    }
}

fn check_bounds(field: &Field, values: &[Option<&str>], report: &mut dyn FnMut(usize, String)) {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let c = &field.constraints;
    // Each bound, with the orders it forbids and how to say so.
    let limits: Vec<(Ordinal, String, &[std::cmp::Ordering], &str)> = [
        (&c.minimum, &[Less][..], "is less than the minimum"),
        (&c.maximum, &[Greater][..], "is more than the maximum"),
        (
            &c.exclusive_minimum,
            &[Less, Equal][..],
            "is not more than the exclusive minimum",
        ),
        (
            &c.exclusive_maximum,
            &[Greater, Equal][..],
            "is not less than the exclusive maximum",
        ),
    ]
    .into_iter()
    .filter_map(|(b, forbidden, message)| {
        let b = b.as_ref()?;
        Some((bound(field, b).ok()?, json_text(b), forbidden, message))
    })
    .collect();
    for (row, v) in values.iter().enumerate() {
        let Some(v) = v else { continue };
        let Some(x) = ordinal(field, v) else { continue };
        for (limit, text, forbidden, message) in &limits {
            if let Some(order) = x.partial_cmp(limit)
                && forbidden.contains(&order)
            {
                report(row, format!("`{v}` {message} {text}"));
            }
        }
    }
}

/// Each field's values as the rules across rows compare them: text as read,
/// typed values (of the fields those rules use) in their canonical spelling.
struct Comparable<'a> {
    present: &'a [Vec<Option<&'a str>>],
    typed: Vec<Option<Vec<Option<String>>>>,
}

impl Comparable<'_> {
    fn get(&self, field: usize, row: usize) -> Option<&str> {
        match &self.typed[field] {
            Some(typed) => typed[row].as_deref(),
            None => self.present[field][row],
        }
    }

    fn rows(&self) -> usize {
        self.present.first().map_or(0, Vec::len)
    }
}

/// The fields `compared_fields` marks, in schema order.
pub fn compared_field_indexes(schema: &TableSchema) -> Vec<usize> {
    compared_fields(schema)
        .iter()
        .enumerate()
        .filter_map(|(f, &compared)| compared.then_some(f))
        .collect()
}

/// Which fields the rules across rows compare: keys, references, unique
/// keys, and the conditions of `requiredWhen`.
fn compared_fields(schema: &TableSchema) -> Vec<bool> {
    let mut names: Vec<String> = schema.primary_key();
    for fk in &schema.foreign_keys {
        names.extend(fk.fields.to_vec());
        if fk.reference.resource.is_empty() {
            names.extend(fk.reference.fields.to_vec());
        }
    }
    names.extend(schema.unique_keys.iter().flatten().cloned());
    names.extend(schema.dropsync.required_when.iter().map(|r| r.when.clone()));
    schema
        .fields
        .iter()
        .map(|f| names.contains(&f.name))
        .collect()
}

fn check_required_when(schema: &TableSchema, values: &Comparable, issues: &mut Vec<Issue>) {
    let index = |name: &str| schema.fields.iter().position(|f| f.name == name);
    for rule in &schema.dropsync.required_when {
        let (Some(field), Some(when)) = (index(&rule.field), index(&rule.when)) else {
            continue;
        };
        // The condition is a value of the `when` field: compared typed.
        let equals = canonical(&schema.fields[when], &rule.equals)
            .unwrap_or(Cow::Borrowed(rule.equals.as_str()));
        for row in 0..values.rows() {
            if values.present[field][row].is_none()
                && values.get(when, row) == Some(equals.as_ref())
            {
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
fn composite<'a>(values: &'a Comparable, fields: &[usize], row: usize) -> Option<Cow<'a, str>> {
    if let [f] = fields {
        return values.get(*f, row).map(Cow::Borrowed);
    }
    let mut parts = Vec::with_capacity(fields.len());
    for &f in fields {
        parts.push(values.get(f, row)?);
    }
    Some(Cow::Owned(parts.join("|")))
}

fn check_foreign_keys(
    schema: &TableSchema,
    values: &Comparable,
    ctx: &Context,
    issues: &mut Vec<Issue>,
) {
    let index = |name: &String| schema.fields.iter().position(|f| &f.name == name);
    let rows = values.rows();
    for fk in &schema.foreign_keys {
        if !fk.reference.resource.is_empty() {
            check_stored_reference(schema, fk, values, ctx, issues);
            continue;
        }
        let fields: Vec<usize> = fk.fields.to_vec().iter().filter_map(index).collect();
        let targets: Vec<usize> = fk
            .reference
            .fields
            .to_vec()
            .iter()
            .filter_map(index)
            .collect();
        let known: FastSet<Cow<str>> = (0..rows)
            .filter_map(|row| composite(values, &targets, row))
            .collect();
        for row in 0..rows {
            if let Some(value) = composite(values, &fields, row)
                && !known.contains(&value)
            {
                issues.push(missing_in_file(fk, row, &value));
            }
        }
    }
}

/// A reference within the file to a row no row of it has.
fn missing_in_file(fk: &super::ForeignKey, row: usize, value: &str) -> Issue {
    Issue {
        row: row as u32,
        field: Some(fk.fields.to_vec().join(", ")),
        message: format!(
            "`{value}` does not exist: no row of this file has that {}",
            fk.reference.fields.to_vec().join(", ")
        ),
    }
}

/// A reference to another dataset's rows, checked against what the store
/// holds of it.
fn check_stored_reference(
    schema: &TableSchema,
    fk: &super::ForeignKey,
    values: &Comparable,
    ctx: &Context,
    issues: &mut Vec<Issue>,
) {
    let index = |name: &String| schema.fields.iter().position(|f| &f.name == name);
    let no_keys = FastSet::default();
    let fields: Vec<usize> = fk.fields.to_vec().iter().filter_map(index).collect();
    let names = fk.fields.to_vec().join(", ");
    let target_names = fk.reference.fields.to_vec().join(", ");
    let stored = ctx
        .references
        .get(&fk.reference.resource)
        .unwrap_or(&no_keys);
    let typed = typed_references(schema, &fields, stored);
    let known = typed.as_ref().unwrap_or(stored);
    let whose = format!(
        "no {} record has that {target_names}",
        fk.reference.resource
    );
    for row in 0..values.rows() {
        if let Some(value) = composite(values, &fields, row)
            && !known.contains(value.as_ref())
        {
            issues.push(Issue {
                row: row as u32,
                field: Some(names.clone()),
                message: format!("`{value}` does not exist: {whose}"),
            });
        }
    }
}

/// The keys another dataset holds, as the store gives them back as text,
/// respelled the way this file's typed values are (a stored `2.0` is the
/// number `2`); none when every field of the reference is text, which needs
/// no respelling.
fn typed_references(
    schema: &TableSchema,
    fields: &[usize],
    stored: &FastSet<String>,
) -> Option<FastSet<String>> {
    let plain: Vec<Field> = fields
        .iter()
        .map(|&f| plain_field(&schema.fields[f]))
        .collect();
    if plain.iter().all(|f| f.kind.is_text()) {
        return None;
    }
    let respell = |text: &str| -> Option<String> {
        let parts: Vec<&str> = if plain.len() == 1 {
            vec![text]
        } else {
            text.split('|').collect()
        };
        if parts.len() != plain.len() {
            return None;
        }
        let typed: Vec<Cow<str>> = parts
            .iter()
            .zip(&plain)
            .map(|(p, f)| canonical(f, p).ok())
            .collect::<Option<_>>()?;
        Some(typed.join("|"))
    };
    Some(stored.iter().filter_map(|k| respell(k)).collect())
}

/// Each of the schema's `uniqueKeys` must be unique in the file. A row
/// with any of the key's values missing is unique, as in SQL; a repeat is
/// reported on every row after the first.
fn check_unique_keys(
    schema: &TableSchema,
    values: &Comparable,
    raw: &RawTable,
    issues: &mut Vec<Issue>,
) {
    for names in &schema.unique_keys {
        let fields: Vec<usize> = names
            .iter()
            .filter_map(|n| schema.fields.iter().position(|f| &f.name == n))
            .collect();
        let label = names.join(", ");
        let mut first: FastMap<Cow<str>, u32> = FastMap::with_capacity(values.rows());
        for row in 0..values.rows() {
            let Some(value) = composite(values, &fields, row) else {
                continue;
            };
            match first.entry(value) {
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(row as u32);
                }
                std::collections::hash_map::Entry::Occupied(e) => {
                    issues.push(Issue {
                        row: row as u32,
                        field: Some(label.clone()),
                        message: format!(
                            "`{}` is not unique for {label} (line {} has it too)",
                            e.key(),
                            raw.lines[*e.get() as usize]
                        ),
                    });
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
    values: &Comparable,
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
    let rows = values.rows();
    // First row of every key; the rows of keys seen more than once.
    let mut first: FastMap<Cow<str>, u32> = FastMap::with_capacity(rows);
    let mut repeated: FastMap<Cow<str>, Vec<u32>> = FastMap::new();
    for row in 0..rows {
        if let Some(k) = composite(values, &key, row) {
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

/// Where a record is: its line, the chunk of the file it was read in, and
/// its index among that chunk's kept records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordAt {
    pub line: u64,
    pub chunk: u32,
    pub row: u32,
}

/// What the rules across rows remember of a file's chunks already
/// validated, so that they see the whole file while only one chunk is in
/// memory. Values are remembered as a 128-bit hash of their canonical
/// spelling (with a key chosen at random per file, so no file can be made
/// to collide on purpose), with where their first row is: a 32-byte slot
/// a key, three slots in four taken, so about 45 bytes a row. A chance
/// collision (about 1 in 10^24 for 10 million keys) is not worth a copy of
/// every key.
pub struct FileChecks {
    hashers: [foldhash::quality::RandomState; 2],
    /// The chunk being validated.
    chunk: u32,
    /// Primary key -> its first row, of the records kept.
    keys: KeyTable,
    /// The primary keys of the records left out as unchanged, and their
    /// references to keys within the file: most of a nightly snapshot's.
    /// Gathered by region of their hash and checked once the file is read
    /// (`settle_unchanged`), a region at a time, where looking each one up
    /// in a table of every key as it came cost a cache miss and a page walk
    /// a key (0.9 s of a 10M-row sync). Only their hashes: such a record
    /// can be told no error, only read again.
    unchanged_keys: ByRegion<u128>,
    unchanged_refs: ByRegion<u128>,
    /// Keys seen more than once: every copy, in file order, and the key.
    repeated: FastMap<u128, (String, Vec<RecordAt>)>,
    /// Per unique key: value -> line of its first row.
    unique: Vec<FastMap<u128, u64>>,
    /// Per foreign key within the file: its target values seen so far;
    /// `None` when the target is the primary key, which `keys` holds.
    targets: Vec<Option<FastSet<u128>>>,
    /// References to values no chunk so far has: (foreign key, value, row).
    pending: Vec<(u32, u128, RecordAt)>,
    /// Whether a record left out as unchanged shares its key with another
    /// record of the file, or refers to a key no record has
    /// (`settle_unchanged`): the file must be read again, every record
    /// kept, for the rules to tell each copy.
    read_again: bool,
}

/// Where a key's hash goes in a `ByRegion`: its first half.
fn region_of(hash: u128) -> u64 {
    (hash >> 64) as u64
}

/// A problem with a row that only the whole file shows, found after the
/// row's chunk was validated (and perhaps handed on).
#[derive(Debug, Clone)]
pub struct LateIssue {
    pub at: RecordAt,
    pub problem: LateProblem,
}

#[derive(Debug, Clone)]
pub enum LateProblem {
    /// The row's key is in other rows too: every copy is rejected.
    Duplicate {
        /// The key, spelled as the store spells it.
        key: std::sync::Arc<str>,
        message: std::sync::Arc<str>,
    },
    /// The row refers, through foreign key number `fk`, to a row that no
    /// row of the file is.
    MissingReference { fk: usize },
}

impl FileChecks {
    pub fn new(schema: &TableSchema) -> FileChecks {
        let index = |name: &String| schema.fields.iter().position(|f| &f.name == name);
        let key: Vec<usize> = schema.primary_key().iter().filter_map(index).collect();
        let targets = schema
            .foreign_keys
            .iter()
            .map(|fk| {
                let targets: Vec<usize> = fk
                    .reference
                    .fields
                    .to_vec()
                    .iter()
                    .filter_map(index)
                    .collect();
                (!(fk.reference.resource.is_empty() && !key.is_empty() && targets == key))
                    .then(FastSet::default)
            })
            .collect();
        FileChecks {
            hashers: Default::default(),
            chunk: 0,
            keys: KeyTable::default(),
            unchanged_keys: ByRegion::default(),
            unchanged_refs: ByRegion::default(),
            repeated: FastMap::new(),
            unique: schema.unique_keys.iter().map(|_| FastMap::new()).collect(),
            targets,
            pending: Vec::new(),
            read_again: false,
        }
    }

    /// Notes the records of the next chunk left out as unchanged: their
    /// keys, and their references within the file (values of the fields of
    /// `compared_field_indexes`, as written), checked once the file is read
    /// (`settle_unchanged`). Such a record can be told no error (it is not
    /// kept), so one whose key another record has too, or whose reference
    /// no record answers, is only noted (`must_read_again`): the file
    /// must then be read again, every record kept.
    pub fn note_unchanged(&mut self, rows: &UnchangedRows, schema: &TableSchema) {
        if rows.is_empty() {
            return;
        }
        let fields = compared_field_indexes(schema);
        let index = |name: &String| schema.fields.iter().position(|f| &f.name == name);
        // Field -> its place among a record's values.
        let place = |name: &String| index(name).and_then(|f| fields.iter().position(|&c| c == f));
        let key: Vec<Option<usize>> = schema.primary_key().iter().map(place).collect();
        let references: Vec<(usize, Vec<Option<usize>>)> = schema
            .foreign_keys
            .iter()
            .enumerate()
            .filter(|(_, fk)| fk.reference.resource.is_empty())
            .map(|(number, fk)| (number, fk.fields.to_vec().iter().map(place).collect()))
            .collect();
        let missing: Vec<&[String]> = fields
            .iter()
            .map(|&f| schema.fields[f].missing_values(schema))
            .collect();
        // The hash of the values at `places` as the checks compare them
        // (joined with `|`); `None` when one is missing.
        let hash_of = |values: &[Option<&str>], places: &[Option<usize>]| -> Option<u128> {
            let value = |place: &Option<usize>| {
                let at = (*place)?;
                values[at].filter(|v| !missing[at].iter().any(|m| m == v))
            };
            match places {
                [one] => value(one).map(|v| self.hash(v)),
                _ => {
                    let parts: Option<Vec<&str>> = places.iter().map(value).collect();
                    parts.map(|parts| self.hash(&parts.join("|")))
                }
            }
        };
        // Hashed first, then noted.
        let mut values = Vec::with_capacity(fields.len());
        let mut keys = Vec::with_capacity(rows.len());
        let mut refs: Vec<Vec<Option<u128>>> =
            vec![Vec::with_capacity(rows.len()); references.len()];
        for row in 0..rows.len() {
            rows.values(row, &mut values);
            keys.push(hash_of(&values, &key));
            for ((_, places), hashes) in references.iter().zip(&mut refs) {
                hashes.push(hash_of(&values, places));
            }
        }
        for hash in keys {
            match hash {
                Some(hash) => self.unchanged_keys.push(region_of(hash), hash),
                // A stored row always has its key: read again to be sure.
                None => self.read_again = true,
            }
        }
        for ((number, _), hashes) in references.iter().zip(&refs) {
            // Only references to the key are checked here (the only ones
            // a sync that leaves records out has: `reads_raw_rows`).
            if self.targets[*number].is_some() {
                self.read_again = true;
                continue;
            }
            for hash in hashes.iter().flatten() {
                self.unchanged_refs.push(region_of(*hash), *hash);
            }
        }
    }

    /// Checks the keys and references of the records left out as
    /// unchanged (`note_unchanged`), a region of their hashes at a time:
    /// a key another record has too, or a reference no record answers,
    /// is noted (`must_read_again`); a kept record's reference that
    /// only a left-out record answers is answered. Once the file is read.
    fn settle_unchanged(&mut self) {
        let keys = std::mem::take(&mut self.unchanged_keys);
        let refs = std::mem::take(&mut self.unchanged_refs);
        let total = keys.len() + refs.len();
        if total == 0 {
            return;
        }
        let mut kept: Vec<Vec<u128>> = vec![Vec::new(); 256];
        for hash in self.keys.hashes() {
            kept[(region_of(hash) >> 56) as usize].push(hash);
        }
        let mut waiting: Vec<Vec<usize>> = vec![Vec::new(); 256];
        for (n, (number, hash, _)) in self.pending.iter().enumerate() {
            if self.targets[*number as usize].is_none() {
                waiting[(region_of(*hash) >> 56) as usize].push(n);
            }
        }
        // One region's keys, by the other half of their hash: in a region
        // the first half starts alike. Gives whether a check failed, and
        // the pending references answered.
        let within = |hash: u128| hash.rotate_left(64);
        let (known, pending) = (&self.keys, &self.pending);
        let check = |first: usize, regions: &[(Vec<u128>, Vec<u128>)]| -> (bool, Vec<usize>) {
            let (mut failed, mut answered) = (false, Vec::new());
            let mut region = KeySet::default();
            for (n, (keys, refs)) in regions.iter().enumerate() {
                let r = first + n;
                region.clear_for(keys.len());
                for &hash in keys {
                    failed |= region.insert(within(hash), ()).is_err();
                }
                // A record left out has a kept record's key.
                failed |= kept[r].iter().any(|&hash| region.contains(within(hash)));
                failed |= refs
                    .iter()
                    .any(|&hash| !region.contains(within(hash)) && !known.contains(hash));
                answered.extend(
                    waiting[r]
                        .iter()
                        .filter(|&&n| region.contains(within(pending[n].1))),
                );
            }
            (failed, answered)
        };
        let regions: Vec<(Vec<u128>, Vec<u128>)> =
            keys.into_regions().zip(refs.into_regions()).collect();
        let (low, high) = regions.split_at(regions.len() / 2);
        // Half the regions each on two threads, for files worth it.
        let ((failed, mut answered), (also_failed, more)) = if total < 1 << 16 {
            (check(0, low), check(low.len(), high))
        } else {
            std::thread::scope(|scope| {
                let other = scope.spawn(|| check(low.len(), high));
                let mine = check(0, low);
                let theirs = other
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (mine, theirs)
            })
        };
        self.read_again |= failed || also_failed;
        answered.extend(more);
        let mut is_answered = vec![false; self.pending.len()];
        for n in answered {
            is_answered[n] = true;
        }
        let mut answers = is_answered.into_iter();
        self.pending.retain(|_| !answers.next().unwrap_or(false));
    }

    /// Whether a record left out as unchanged shares its key with another
    /// record, or refers to a key no record has: what the checks say is
    /// then incomplete. Once the file is read.
    pub fn must_read_again(&mut self) -> bool {
        self.settle_unchanged();
        self.read_again
    }

    /// Makes room for the keys of `rows` rows in all, `left_out` of them
    /// records left out as unchanged (with `left_out_refs` references), at
    /// once: growing a table of millions of keys step by step holds the old
    /// and the new table together at every step.
    pub fn expect_rows(&mut self, rows: usize, left_out: usize, left_out_refs: usize) {
        self.keys.reserve_total(rows.saturating_sub(left_out));
        self.unchanged_keys.reserve_total(left_out);
        self.unchanged_refs.reserve_total(left_out_refs);
    }

    /// The references within the file noted so far of records left out.
    pub fn left_out_refs(&self) -> usize {
        self.unchanged_refs.len()
    }

    /// A value's hash; never 0, which `KeyTable` keeps for an empty slot
    /// (the lowest bit is always set: 127 bits are plenty).
    fn hash(&self, value: &str) -> u128 {
        use std::hash::BuildHasher;
        (u128::from(self.hashers[0].hash_one(value)) << 64)
            | u128::from(self.hashers[1].hash_one(value))
            | 1
    }

    /// Each row's hash of its values in `fields`; `None` where one is
    /// missing.
    fn hashes(&self, values: &Comparable, fields: &[usize]) -> Vec<Option<u128>> {
        (0..values.rows())
            .map(|row| composite(values, fields, row).map(|value| self.hash(&value)))
            .collect()
    }

    /// Notes each row's key. Returns the rows to skip as repeats of an
    /// earlier event (append mode), and the rows of this chunk that share a
    /// key with another row of the file (rejected; described by `finish`).
    fn check_keys(
        &mut self,
        schema: &TableSchema,
        values: &Comparable,
        raw: &RawTable,
        ctx: &Context,
    ) -> (HashSet<u32>, Vec<u32>) {
        let key: Vec<usize> = schema
            .primary_key()
            .iter()
            .filter_map(|k| schema.fields.iter().position(|f| &f.name == k))
            .collect();
        let (mut skipped, mut repeats) = (HashSet::new(), Vec::new());
        if key.is_empty() || ctx.key_checked_later {
            return (skipped, repeats);
        }
        let chunk = self.chunk;
        self.keys.reserve_total(self.keys.len() + values.rows());
        // Hashed first, so that each key's slot can be fetched ahead.
        let hashes = self.hashes(values, &key);
        for (row, hash) in hashes.iter().enumerate() {
            self.keys.prefetch_ahead(&hashes, row);
            let Some(hash) = *hash else {
                continue;
            };
            let here = RecordAt {
                line: raw.lines[row],
                chunk,
                row: row as u32,
            };
            let Err(first) = self.keys.insert(hash, here) else {
                continue;
            };
            if ctx.repeats_are_duplicates {
                skipped.insert(row as u32);
                continue;
            }
            let (_, copies) = self.repeated.entry(hash).or_insert_with(|| {
                if first.chunk == chunk {
                    repeats.push(first.row);
                }
                let k = composite(values, &key, row).expect("the row has a key: it was hashed");
                (k.into_owned(), vec![first])
            });
            copies.push(here);
            repeats.push(row as u32);
        }
        (skipped, repeats)
    }

    /// References to other datasets as `validate` checks them; references
    /// within the file against every row so far, the rest left for `finish`.
    fn check_foreign_keys(
        &mut self,
        schema: &TableSchema,
        values: &Comparable,
        raw: &RawTable,
        ctx: &Context,
        issues: &mut Vec<Issue>,
    ) {
        let index = |name: &String| schema.fields.iter().position(|f| &f.name == name);
        let chunk = self.chunk;
        for (number, fk) in schema.foreign_keys.iter().enumerate() {
            if !fk.reference.resource.is_empty() {
                check_stored_reference(schema, fk, values, ctx, issues);
                continue;
            }
            let fields: Vec<usize> = fk.fields.to_vec().iter().filter_map(index).collect();
            if self.targets[number].is_some() {
                let targets: Vec<usize> = fk
                    .reference
                    .fields
                    .to_vec()
                    .iter()
                    .filter_map(index)
                    .collect();
                let hashes = self.hashes(values, &targets);
                self.targets[number]
                    .as_mut()
                    .expect("checked above")
                    .extend(hashes.into_iter().flatten());
            }
            let hashes = self.hashes(values, &fields);
            let by_key = self.targets[number].is_none();
            for (row, hash) in hashes.iter().enumerate() {
                if by_key {
                    self.keys.prefetch_ahead(&hashes, row);
                }
                if let Some(hash) = *hash
                    && !self.knows(number, hash)
                {
                    let at = RecordAt {
                        line: raw.lines[row],
                        chunk,
                        row: row as u32,
                    };
                    self.pending.push((number as u32, hash, at));
                }
            }
        }
    }

    fn knows(&self, fk: usize, hash: u128) -> bool {
        match &self.targets[fk] {
            Some(targets) => targets.contains(&hash),
            None => self.keys.contains(hash),
        }
    }

    /// Unique keys against every row so far: a repeat is reported on the
    /// later row, naming the first.
    fn check_unique_keys(
        &mut self,
        schema: &TableSchema,
        values: &Comparable,
        raw: &RawTable,
        issues: &mut Vec<Issue>,
    ) {
        for (number, names) in schema.unique_keys.iter().enumerate() {
            let fields: Vec<usize> = names
                .iter()
                .filter_map(|n| schema.fields.iter().position(|f| &f.name == n))
                .collect();
            let label = names.join(", ");
            for row in 0..values.rows() {
                let Some(value) = composite(values, &fields, row) else {
                    continue;
                };
                let hash = self.hash(&value);
                match self.unique[number].entry(hash) {
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(raw.lines[row]);
                    }
                    std::collections::hash_map::Entry::Occupied(e) => {
                        issues.push(Issue {
                            row: row as u32,
                            field: Some(label.clone()),
                            message: format!(
                                "`{value}` is not unique for {label} (line {} has it too)",
                                e.get()
                            ),
                        });
                    }
                }
            }
        }
    }

    /// What only the whole file shows, in line order: every copy of a
    /// repeated key, and references within the file that no row answered.
    pub fn finish(mut self) -> Vec<LateIssue> {
        self.settle_unchanged();
        let mut late = Vec::new();
        for (number, hash, at) in &self.pending {
            if !self.knows(*number as usize, *hash) {
                late.push(LateIssue {
                    at: *at,
                    problem: LateProblem::MissingReference {
                        fk: *number as usize,
                    },
                });
            }
        }
        drop(self.keys);
        drop(self.targets);
        for (key, copies) in self.repeated.into_values() {
            let lines: Vec<String> = copies.iter().map(|c| c.line.to_string()).collect();
            let message: std::sync::Arc<str> =
                format!("duplicate key `{key}` (lines {})", lines.join(", ")).into();
            let key: std::sync::Arc<str> = key.into();
            for at in copies {
                late.push(LateIssue {
                    at,
                    problem: LateProblem::Duplicate {
                        key: key.clone(),
                        message: message.clone(),
                    },
                });
            }
        }
        // References before the key on one row, as `validate` orders them.
        late.sort_by_key(|i| {
            (
                i.at.line,
                matches!(i.problem, LateProblem::Duplicate { .. }),
            )
        });
        late
    }
}

/// A late issue as the row error it is, from the row's chunk read again,
/// and the row's key as the store spells it (to protect its stored copy).
pub fn describe_late(
    raw: &RawTable,
    schema: &TableSchema,
    issue: &LateIssue,
) -> (RowError, Option<String>) {
    let row = issue.at.row as usize;
    let index = |name: &String| schema.fields.iter().position(|f| &f.name == name);
    let key_fields: Vec<usize> = schema.primary_key().iter().filter_map(index).collect();
    let written = super::parse::written_key(raw, &key_fields, row);
    // A value as the rules across rows compare it: missing values are
    // none, typed values in their canonical spelling.
    let compared = |fields: &[usize]| -> Option<String> {
        let mut parts = Vec::with_capacity(fields.len());
        for &f in fields {
            let field = &schema.fields[f];
            let v = raw.columns[f].get(row)?;
            if field.missing_values(schema).iter().any(|m| m == v) {
                return None;
            }
            parts.push(canonical(field, v).ok()?.into_owned());
        }
        Some(parts.join("|"))
    };
    let (field, message, stored) = match &issue.problem {
        LateProblem::Duplicate { key, message } => (
            schema.primary_key().join(", "),
            message.to_string(),
            Some(key.to_string()),
        ),
        LateProblem::MissingReference { fk } => {
            let fk = &schema.foreign_keys[*fk];
            let fields: Vec<usize> = fk.fields.to_vec().iter().filter_map(index).collect();
            let value = compared(&fields).unwrap_or_default();
            let Issue { field, message, .. } = missing_in_file(fk, row, &value);
            let stored = compared(&key_fields).or_else(|| written.clone());
            (field.unwrap_or_default(), message, stored)
        }
    };
    let error = RowError {
        line: issue.at.line,
        key: written,
        field: Some(field),
        message,
        raw: raw.raw_row(row),
    };
    (error, stored)
}

/// Puts row errors in the order `validate` gives them: by line, then by
/// field in schema order (a stable sort: problems of one field keep theirs).
pub fn sort_errors(errors: &mut [RowError], schema: &TableSchema) {
    let field_order = |f: &Option<String>| {
        f.as_ref()
            .and_then(|f| schema.fields.iter().position(|x| &x.name == f))
            .unwrap_or(usize::MAX)
    };
    errors.sort_by_key(|e| (e.line, field_order(&e.field)));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shortcut for grouped whole numbers reads what the general path
    /// reads, and leaves the rest to it.
    #[test]
    fn grouped_integers_read_as_the_general_path_reads_them() {
        let schema = super::super::Dataset::load("accounts", None)
            .unwrap()
            .schema;
        let seats = schema.fields.iter().find(|f| f.name == "Seats").unwrap();
        assert_eq!(seats.group_char.as_deref(), Some(","));
        for v in [
            "51,750",
            "1,000,000",
            "0,5",
            "5,,1",
            "007",
            "9,223,372,036,854,775,807",
            "9,223,372,036,854,775,808",
            "1.5",
            ",5",
            "-5,000",
            "5,000-",
            "5 000",
            "",
        ] {
            let general = numeric_text(seats, v)
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| format!("`{v}` is not an integer"));
            assert_eq!(parse_integer(seats, v), general, "{v:?}");
        }
        assert_eq!(grouped_digits(seats, "51,750"), Some(51750));
    }

    /// A file whose dates all switched format: every row is rejected and
    /// counted, but only the first `keep_errors` are described.
    #[test]
    fn rows_past_keep_errors_are_rejected_and_counted_but_not_described() {
        let schema = super::super::Dataset::load("accounts", None)
            .unwrap()
            .schema;
        let mut text = "AccountID,ParentID,Name,Type,Plan,Seats,CreatedDate\n".to_string();
        for i in 0..50 {
            text.push_str(&format!("A{i},,Acme,parent,pro,1,11/03/2020\n"));
        }
        text.push_str("B,,Beta,parent,pro,1,2020-11-03\n");
        let raw = super::super::parse::parse_bytes(
            text.into_bytes(),
            "accounts.csv",
            &crate::config::CsvDialect::default(),
            &Default::default(),
            &schema,
        )
        .unwrap();
        let ctx = Context {
            keep_errors: Some(10),
            ..Default::default()
        };
        let valid = validate(&raw, &schema, &ctx);
        assert_eq!((valid.input_rows, valid.error_rows), (51, 50));
        assert_eq!(valid.frame.height(), 1, "the good row stays");
        // Each field describes at most a few problems per kept row.
        assert!(
            (10..=40).contains(&valid.errors.len()),
            "{}",
            valid.errors.len()
        );
        assert_eq!(valid.errors[0].line, 2);
        assert_eq!(valid.rejected_keys.len(), 10);

        let all = validate(&raw, &schema, &Context::default());
        assert_eq!((all.error_rows, all.errors.len()), (50, 50));
    }

    /// Keys are spelled from the converted column, single values from their
    /// cell: both must spell a value the same, or a key would not find
    /// itself.
    #[test]
    fn a_cell_and_its_converted_value_are_spelled_alike() {
        let cases = [
            (r#"{"name": "v", "type": "integer"}"#, "007"),
            (r#"{"name": "v", "type": "number"}"#, "2.50"),
            (r#"{"name": "v", "type": "number"}"#, "1e20"),
            (r#"{"name": "v", "type": "number"}"#, "-0"),
            (r#"{"name": "v", "type": "boolean"}"#, "TRUE"),
            (
                r#"{"name": "v", "type": "date", "format": "%d/%m/%Y"}"#,
                "05/01/0999",
            ),
            (
                r#"{"name": "v", "type": "datetime"}"#,
                "2026-01-31T11:20:30.250+01:00",
            ),
            (
                r#"{"name": "v", "type": "datetime"}"#,
                "2026-01-31T10:20:30.000001Z",
            ),
            (r#"{"name": "v", "type": "time"}"#, "23:59:59.5"),
            (r#"{"name": "v", "type": "time"}"#, "00:00:00"),
            (r#"{"name": "v", "type": "year"}"#, "2026"),
            (r#"{"name": "v", "type": "yearmonth"}"#, "2026-02"),
            (r#"{"name": "v", "type": "duration"}"#, "P1Y2W"),
        ];
        for (descriptor, cell) in cases {
            let field: Field = serde_json::from_str(descriptor).unwrap();
            let raw = StringChunked::new("v".into(), [Some(cell)]);
            let series = convert(&field, &[Some(cell)], &raw, &mut |_, m| panic!("{m}"));
            let from_column = canonical_column(&field, &series);
            let from_cell = canonical(&field, cell).unwrap();
            assert_eq!(
                from_column,
                [Some(from_cell.to_string())],
                "{descriptor} {cell}"
            );
        }
    }
}

//! CSV -> columns of text, one per schema field. The csv crate does the
//! parsing because it knows where every record starts (line and byte), which
//! is what a row error must name; values land straight in polars string
//! columns. Problems with the file as a whole (empty, no usable header) are a
//! `ParseError`; problems with one record (ragged, invalid UTF-8, a runaway
//! field) are a `RowError` and the record is left out.
//!
//! Header names are matched to schema fields ignoring case, spaces and
//! underscores, because partners write `User id` and `AccountId` for
//! `UserID` and `AccountID`. Everything a header can make grow per row is
//! bounded: a header name's length, and a row's `_attributes` object, whose
//! keys are escaped once per file rather than once per row.

use std::collections::HashMap;
use std::path::Path;

use polars::prelude::*;

use super::validate::RowError;
use super::{FieldsMatch, TableSchema};
use crate::config::{CsvDialect, Encoding};

/// The longest raw row kept in a row error.
pub(crate) const RAW_ROW_LIMIT: usize = 4096;

/// The longest header name accepted, in bytes. Real headers are words or
/// short phrases; a longer one is a file that has no header, or garbage, and
/// each extra column's name is repeated in every row's `_attributes`.
pub const MAX_HEADER_NAME_BYTES: usize = 1024;

/// Header names listed in a message, at most.
const NAMES_SHOWN: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: the file is empty (no header, no rows)")]
    Empty { file: String },
    #[error("{file}: line {line}: {message}")]
    Header {
        file: String,
        line: u64,
        message: String,
    },
    #[error("{file}: line {line}: {message}")]
    Csv {
        file: String,
        line: u64,
        message: String,
    },
    #[error(
        "{file}: line {line}: byte {byte} of the file is not valid {encoding}; is csv.encoding right?"
    )]
    Encoding {
        file: String,
        line: u64,
        byte: usize,
        encoding: &'static str,
    },
}

/// A file's records as text columns, before any typing.
#[derive(Debug)]
pub struct RawTable {
    /// The file's name, as errors show it.
    pub file: String,
    /// One string column per schema field, in schema order; a field the file
    /// lacks is all null.
    pub columns: Vec<StringChunked>,
    /// The file's other columns, per record, as a JSON object (or null).
    pub attributes: Option<StringChunked>,
    /// Line and byte span in `text` of each kept record.
    pub lines: Vec<u64>,
    pub spans: Vec<(u64, u64)>,
    /// Records that could not be read into columns.
    pub errors: Vec<RowError>,
    /// Data records in the file, kept or not.
    pub records: u64,
    /// Header names the schema does not know (kept out of the store).
    pub ignored_columns: Vec<String>,
    /// Header names that matched a field only once case, spaces and
    /// underscores were ignored: (header, field).
    pub renamed_columns: Vec<(String, String)>,
    /// The file's text (already decoded into UTF-8), for raw rows.
    pub text: Vec<u8>,
}

impl RawTable {
    /// Says which header names were read as which fields, when any had to
    /// be matched loosely; `None` when every name matched as written.
    pub fn header_note(&self) -> Option<String> {
        if self.renamed_columns.is_empty() {
            return None;
        }
        let pairs: Vec<String> = self
            .renamed_columns
            .iter()
            .map(|(header, field)| format!("`{header}` as {field}"))
            .collect();
        Some(format!(
            "header names matched ignoring case, spaces and underscores: {}",
            pairs.join(", ")
        ))
    }

    /// The raw text of the kept record `row`, shortened if huge.
    pub fn raw_row(&self, row: usize) -> String {
        let (start, end) = self.spans[row];
        raw_text(&self.text, start, end)
    }
}

pub(crate) fn raw_text(text: &[u8], start: u64, end: u64) -> String {
    let end = (end as usize).min(text.len());
    let start = (start as usize).min(end);
    let mut slice = &text[start..end];
    while let [rest @ .., b'\n' | b'\r'] = slice {
        slice = rest;
    }
    let shortened = slice.len() > RAW_ROW_LIMIT;
    if shortened {
        slice = &slice[..RAW_ROW_LIMIT];
    }
    let mut s = String::from_utf8_lossy(slice).into_owned();
    if shortened {
        s.push_str(&format!("… ({} bytes in all)", end - start));
    }
    s
}

/// Reads `path` into a `RawTable` for `schema`. `columns` maps source header
/// names to schema field names.
pub fn read_table(
    path: &Path,
    file: &str,
    dialect: &CsvDialect,
    columns: &std::collections::BTreeMap<String, String>,
    schema: &TableSchema,
) -> Result<RawTable, ParseError> {
    let bytes = std::fs::read(path).map_err(|source| ParseError::Io {
        file: file.to_string(),
        source,
    })?;
    parse_bytes(bytes, file, dialect, columns, schema)
}

pub(crate) fn parse_bytes(
    bytes: Vec<u8>,
    file: &str,
    dialect: &CsvDialect,
    mapping: &std::collections::BTreeMap<String, String>,
    schema: &TableSchema,
) -> Result<RawTable, ParseError> {
    let mut text = decode(bytes, dialect.encoding, file)?;
    // A BOM glued to the first header name is the classic CSV bug: drop it.
    if text.starts_with(b"\xEF\xBB\xBF") {
        text.drain(..3);
    }
    if text.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ParseError::Empty {
            file: file.to_string(),
        });
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(dialect.delimiter as u8)
        .quote(dialect.quote as u8)
        .from_reader(text.as_slice());
    let mut record = csv::ByteRecord::new();
    let csv_err = |e: csv::Error, line: u64| ParseError::Csv {
        file: file.to_string(),
        line,
        message: e.to_string(),
    };

    // Which file column feeds which schema field.
    let (layout, first_line) = if dialect.header {
        let found = reader
            .read_byte_record(&mut record)
            .map_err(|e| csv_err(e, 1))?;
        if !found {
            return Err(ParseError::Empty {
                file: file.to_string(),
            });
        }
        let line = record.position().map_or(1, |p| p.line());
        let header_error = |message| ParseError::Header {
            file: file.to_string(),
            line,
            message,
        };
        if let Some((column, name)) = record
            .iter()
            .enumerate()
            .find(|(_, h)| h.len() > MAX_HEADER_NAME_BYTES)
        {
            return Err(header_error(format!(
                "the name of column {} is {} bytes long, more than the {MAX_HEADER_NAME_BYTES} a header name may have: is the first line really a header?",
                column + 1,
                name.len()
            )));
        }
        let header: Vec<String> = record
            .iter()
            .map(|h| String::from_utf8_lossy(h).trim().to_string())
            .collect();
        let matched = match_header(&header, mapping, schema).map_err(header_error)?;
        (matched, line + 1)
    } else {
        let matched = HeaderMatch {
            layout: (0..schema.fields.len()).map(Some).collect(),
            extras: Vec::new(),
            renamed: Vec::new(),
        };
        (matched, 1)
    };
    let HeaderMatch {
        layout,
        extras: extra_columns,
        renamed,
    } = layout;
    let extras = attribute_keys(&extra_columns);
    let width = if dialect.header {
        record.len()
    } else {
        schema.fields.len()
    };
    let key_fields: Vec<usize> = schema
        .primary_key()
        .iter()
        .filter_map(|k| schema.fields.iter().position(|f| &f.name == k))
        .collect();

    let body_start = if dialect.header {
        reader.position().byte() as usize
    } else {
        0
    };
    drop(reader);
    let shape = RecordShape {
        file,
        dialect,
        schema,
        layout: &layout,
        extras: &extras,
        key_fields: &key_fields,
        width,
    };
    let chunks = split_body(&text, body_start, first_line, dialect.quote as u8);
    let parsed: Vec<Result<Chunk, ParseError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = chunks
            .iter()
            .map(|&(start, end, line)| {
                let (text, shape) = (&text, &shape);
                scope.spawn(move || parse_chunk(text, start, end, line, shape))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("parsing does not panic"))
            .collect()
    });
    let mut columns: Option<Vec<StringChunked>> = None;
    let mut attributes: Option<StringChunked> = None;
    let (mut lines, mut spans, mut errors, mut records) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for chunk in parsed {
        let chunk = chunk?;
        match (attributes.as_mut(), chunk.attributes) {
            (None, more) => attributes = more,
            (Some(attributes), Some(more)) => attributes
                .append(&more)
                .expect("chunks of one file have the same columns"),
            (Some(_), None) => {}
        }
        match columns.as_mut() {
            None => columns = Some(chunk.columns),
            Some(columns) => {
                for (column, more) in columns.iter_mut().zip(&chunk.columns) {
                    column
                        .append(more)
                        .expect("chunks of one file have the same columns");
                }
            }
        }
        lines.extend(chunk.lines);
        spans.extend(chunk.spans);
        errors.extend(chunk.errors);
        records += chunk.records;
    }
    let columns = columns.unwrap_or_else(|| empty_columns(schema));
    Ok(RawTable {
        file: file.to_string(),
        columns,
        attributes,
        lines,
        spans,
        errors,
        records,
        ignored_columns: extra_columns.into_iter().map(|(_, h)| h).collect(),
        renamed_columns: renamed,
        text,
    })
}

/// What every record of a file must look like.
struct RecordShape<'a> {
    file: &'a str,
    dialect: &'a CsvDialect,
    schema: &'a TableSchema,
    /// Schema field -> file column.
    layout: &'a [Option<usize>],
    /// File columns the schema does not know, in `_attributes` key order.
    extras: &'a [AttributeKey],
    key_fields: &'a [usize],
    /// Fields a record must have.
    width: usize,
}

/// The records of one stretch of a file.
struct Chunk {
    columns: Vec<StringChunked>,
    attributes: Option<StringChunked>,
    lines: Vec<u64>,
    spans: Vec<(u64, u64)>,
    errors: Vec<RowError>,
    records: u64,
}

/// The column that keeps, as a JSON object, the values of a file's columns
/// the schema does not name ("then any attributes").
pub const ATTRIBUTES: &str = "_attributes";

/// A file column the schema does not know, as it appears in `_attributes`.
pub(crate) struct AttributeKey {
    column: usize,
    header: String,
    /// `"header":`, escaped once for the whole file.
    json_key: String,
}

/// The extra columns' keys, sorted by name as a JSON object's keys are
/// (so a file that reorders its columns does not change every row).
pub(crate) fn attribute_keys(extras: &[(usize, String)]) -> Vec<AttributeKey> {
    let mut keys: Vec<AttributeKey> = extras
        .iter()
        .map(|(column, header)| AttributeKey {
            column: *column,
            header: header.clone(),
            json_key: format!("{}:", serde_json::Value::String(header.clone())),
        })
        .collect();
    keys.sort_by(|a, b| a.header.cmp(&b.header));
    keys
}

/// A record's extra columns as a JSON object of the non-empty ones, written
/// into `json` (cleared first); `Ok(false)` when they are all empty. A value
/// or an object larger than `limit` bytes is refused: (field, message).
pub(crate) fn attributes_json(
    record: &csv::ByteRecord,
    extras: &[AttributeKey],
    limit: usize,
    json: &mut String,
) -> Result<bool, (Option<String>, String)> {
    json.clear();
    for key in extras {
        let raw = record.get(key.column).unwrap_or_default();
        if raw.is_empty() {
            continue;
        }
        if raw.len() > limit {
            return Err((
                Some(key.header.clone()),
                format!(
                    "value is {} bytes, more than csv.max_field_bytes ({limit}); an unbalanced quote?",
                    raw.len()
                ),
            ));
        }
        let value = std::str::from_utf8(raw).map_err(|e| {
            (
                Some(key.header.clone()),
                format!(
                    "not valid UTF-8 (byte {} of the value); is csv.encoding right?",
                    e.valid_up_to() + 1
                ),
            )
        })?;
        json.push(if json.is_empty() { '{' } else { ',' });
        json.push_str(&key.json_key);
        json.push_str(&serde_json::Value::String(value.to_string()).to_string());
        if json.len() > limit {
            return Err((
                None,
                format!(
                    "the columns not in the schema make an _attributes object of more than csv.max_field_bytes ({limit}) bytes"
                ),
            ));
        }
    }
    if json.is_empty() {
        return Ok(false);
    }
    json.push('}');
    Ok(true)
}

pub(crate) fn empty_columns(schema: &TableSchema) -> Vec<StringChunked> {
    schema
        .fields
        .iter()
        .map(|f| StringChunkedBuilder::new(f.name.as_str().into(), 0).finish())
        .collect()
}

/// Where to cut the records after the header into stretches parsed side by
/// side: (start byte, end byte, line of the first record). Only a file with
/// no quote character at all is cut, at line ends: there, every line end
/// ends a record. Others, and small files, are one stretch.
fn split_body(text: &[u8], start: usize, first_line: u64, quote: u8) -> Vec<(usize, usize, u64)> {
    const MIN_STRETCH: usize = 4 << 20;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let body = &text[start..];
    if threads < 2 || body.len() < 2 * MIN_STRETCH || body.contains(&quote) {
        return vec![(start, text.len(), first_line)];
    }
    let pieces = threads.min(body.len() / MIN_STRETCH);
    let mut out = Vec::with_capacity(pieces);
    let (mut from, mut line) = (start, first_line);
    for i in 1..pieces {
        let target = start + body.len() * i / pieces;
        let Some(cut) = text[target..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| target + p + 1)
        else {
            break;
        };
        if cut <= from {
            continue;
        }
        out.push((from, cut, line));
        line += text[from..cut].iter().filter(|&&b| b == b'\n').count() as u64;
        from = cut;
    }
    out.push((from, text.len(), line));
    out
}

/// Parses the records in `text[start..end]`, the first on line `first_line`.
fn parse_chunk(
    text: &[u8],
    start: usize,
    end: usize,
    first_line: u64,
    shape: &RecordShape<'_>,
) -> Result<Chunk, ParseError> {
    let RecordShape {
        file,
        dialect,
        schema,
        layout,
        extras,
        key_fields,
        width,
    } = *shape;
    let mut attributes =
        (!extras.is_empty()).then(|| StringChunkedBuilder::new(ATTRIBUTES.into(), 1024));
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(dialect.delimiter as u8)
        .quote(dialect.quote as u8)
        .from_reader(&text[start..end]);
    let mut record = csv::ByteRecord::new();
    let mut builders: Vec<StringChunkedBuilder> = schema
        .fields
        .iter()
        .map(|f| StringChunkedBuilder::new(f.name.as_str().into(), 1024))
        .collect();
    let mut lines = Vec::new();
    let mut spans = Vec::new();
    let mut errors = Vec::new();
    let mut records = 0u64;
    // Lines and bytes the csv reader counts within this stretch -> in the file.
    let line_of = |l: u64| first_line + l - 1;
    let byte_of = |b: u64| start as u64 + b;
    let mut last_line = first_line;
    let mut json = String::new();
    loop {
        let more = reader
            .read_byte_record(&mut record)
            .map_err(|e| ParseError::Csv {
                file: file.to_string(),
                line: last_line,
                message: e.to_string(),
            })?;
        if !more {
            break;
        }
        records += 1;
        let pos = record
            .position()
            .cloned()
            .unwrap_or_else(csv::Position::new);
        let (line, record_start) = (line_of(pos.line()), byte_of(pos.byte()));
        let record_end = byte_of(reader.position().byte());
        let next_line = line_of(reader.position().line());
        last_line = line;
        let key = || -> Option<String> {
            let parts: Vec<String> = key_fields
                .iter()
                .filter_map(|&f| layout[f].and_then(|c| record.get(c)))
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect();
            (!parts.is_empty()).then(|| parts.join("|"))
        };
        let reject = |field: Option<&str>, message: String| RowError {
            line,
            key: key(),
            field: field.map(str::to_string),
            message,
            raw: raw_text(text, record_start, record_end),
        };
        if record.len() != width && next_line > line + 1 {
            // A quoted field that runs over several lines and leaves the
            // record ragged is an unbalanced quote: the records it swallowed
            // cannot be told apart, so none of the file can be trusted.
            return Err(ParseError::Csv {
                file: file.to_string(),
                line,
                message: format!(
                    "a quoted field opened in this record runs on to line {} and leaves it with {} fields instead of {width}: an unbalanced quote? Nothing was applied",
                    next_line.saturating_sub(1),
                    record.len()
                ),
            });
        }
        if record.len() != width {
            errors.push(reject(
                None,
                format!(
                    "expected {width} fields, found {} (a stray delimiter, or an unbalanced quote?)",
                    record.len()
                ),
            ));
            continue;
        }
        let mut values: Vec<Option<&str>> = Vec::with_capacity(layout.len());
        let mut bad = false;
        for (field_index, column) in layout.iter().enumerate() {
            let Some(column) = *column else {
                values.push(None);
                continue;
            };
            let raw = record.get(column).unwrap_or_default();
            let name = &schema.fields[field_index].name;
            if raw.len() as u64 > dialect.max_field_bytes.get() {
                errors.push(reject(
                    Some(name),
                    format!(
                        "value is {} bytes, more than csv.max_field_bytes ({}); an unbalanced quote?",
                        raw.len(),
                        dialect.max_field_bytes
                    ),
                ));
                bad = true;
                continue;
            }
            match std::str::from_utf8(raw) {
                Ok(v) => values.push(Some(v)),
                Err(e) => {
                    errors.push(reject(
                        Some(name),
                        format!(
                            "not valid UTF-8 (byte {} of the value); if the file is Latin-1, set csv.encoding = \"latin-1\"",
                            e.valid_up_to() + 1
                        ),
                    ));
                    bad = true;
                }
            }
        }
        if bad {
            continue;
        }
        let has_attributes = if attributes.is_some() {
            match attributes_json(
                &record,
                extras,
                dialect.max_field_bytes.get() as usize,
                &mut json,
            ) {
                Ok(has) => has,
                Err((field, message)) => {
                    errors.push(reject(field.as_deref(), message));
                    continue;
                }
            }
        } else {
            false
        };
        for (builder, value) in builders.iter_mut().zip(&values) {
            match value {
                Some(v) => builder.append_value(v),
                None => builder.append_null(),
            }
        }
        if let Some(builder) = attributes.as_mut() {
            if has_attributes {
                builder.append_value(&json);
            } else {
                builder.append_null();
            }
        }
        lines.push(line);
        spans.push((record_start, record_end));
    }
    Ok(Chunk {
        columns: builders.into_iter().map(|b| b.finish()).collect(),
        attributes: attributes.map(|b| b.finish()),
        lines,
        spans,
        errors,
        records,
    })
}

/// How a header feeds the schema.
pub(crate) struct HeaderMatch {
    /// Schema field -> file column.
    pub(crate) layout: Vec<Option<usize>>,
    /// The file's other columns: (column, header).
    pub(crate) extras: Vec<(usize, String)>,
    /// Header names matched only loosely: (header, field).
    pub(crate) renamed: Vec<(String, String)>,
}

/// A header name reduced to what tells fields apart: `User id`, `user_id`
/// and `UserID` are all `userid`.
fn loose_name(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_whitespace() && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// The schema field (or mapped name) a header name stands for, and whether
/// it took loose matching to find it.
fn resolve_name<'a>(
    header: &'a str,
    mapping: &'a std::collections::BTreeMap<String, String>,
    schema: &'a TableSchema,
) -> (&'a str, bool) {
    if let Some(name) = mapping.get(header) {
        return (name, false);
    }
    if schema.field(header).is_some() {
        return (header, false);
    }
    let loose = loose_name(header);
    if let Some(name) = mapping
        .iter()
        .find(|(from, _)| loose_name(from) == loose)
        .map(|(_, to)| to)
    {
        return (name, true);
    }
    match schema.fields.iter().find(|f| loose_name(&f.name) == loose) {
        Some(field) => (&field.name, true),
        None => (header, false),
    }
}

/// `a, b, c`, or the first names and how many there are in all.
fn list_names<S: AsRef<str>>(names: &[S]) -> String {
    let shown: Vec<&str> = names.iter().take(NAMES_SHOWN).map(AsRef::as_ref).collect();
    if names.len() > NAMES_SHOWN {
        format!("{}, … ({} in all)", shown.join(", "), names.len())
    } else {
        shown.join(", ")
    }
}

/// For each schema field, the header column that feeds it; and the header
/// names that feed nothing. Errors say what is missing and what was found.
pub(crate) fn match_header(
    header: &[String],
    mapping: &std::collections::BTreeMap<String, String>,
    schema: &TableSchema,
) -> Result<HeaderMatch, String> {
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    let mut names: Vec<&str> = Vec::with_capacity(header.len());
    let mut ignored = Vec::new();
    let mut renamed = Vec::new();
    for (i, h) in header.iter().enumerate() {
        let (name, loose) = resolve_name(h, mapping, schema);
        if let Some(first) = by_name.insert(name, i) {
            let written = |c: usize| {
                if header[c] == name {
                    String::new()
                } else {
                    format!(" `{}`", header[c])
                }
            };
            return Err(format!(
                "column `{name}` appears twice in the header (columns {}{} and {}{})",
                first + 1,
                written(first),
                i + 1,
                written(i)
            ));
        }
        names.push(name);
        if schema.field(name).is_none() {
            ignored.push((i, h.clone()));
        } else if loose {
            renamed.push((h.clone(), name.to_string()));
        }
    }
    let layout: Vec<Option<usize>> = schema
        .fields
        .iter()
        .map(|f| by_name.get(f.name.as_str()).copied())
        .collect();
    let missing: Vec<&str> = schema
        .fields
        .iter()
        .zip(&layout)
        .filter(|(_, c)| c.is_none())
        .map(|(f, _)| f.name.as_str())
        .collect();
    let missing_required: Vec<&str> = schema
        .fields
        .iter()
        .zip(&layout)
        .filter(|(f, c)| c.is_none() && f.is_required(schema))
        .map(|(f, _)| f.name.as_str())
        .collect();
    let found = || format!("found: {}", list_names(header));
    let rule = schema.fields_match;
    let fail = |what: String| {
        Err(format!(
            "the header does not fit the schema (fieldsMatch `{}`): {what}; {}",
            format!("{rule:?}").to_lowercase(),
            found()
        ))
    };
    if !missing_required.is_empty() {
        return fail(format!("missing {}", missing_required.join(", ")));
    }
    match rule {
        FieldsMatch::Exact => {
            let expected: Vec<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
            if names != expected {
                return fail(format!("expected exactly {}", expected.join(", ")));
            }
        }
        FieldsMatch::Equal | FieldsMatch::Subset if !missing.is_empty() => {
            return fail(format!("missing {}", missing.join(", ")));
        }
        FieldsMatch::Partial if layout.iter().all(Option::is_none) => {
            return fail("no column of the schema".into());
        }
        _ => {}
    }
    if matches!(rule, FieldsMatch::Equal | FieldsMatch::Superset) && !ignored.is_empty() {
        let names: Vec<&str> = ignored.iter().map(|(_, h)| h.as_str()).collect();
        return fail(format!("unexpected column {}", list_names(&names)));
    }
    Ok(HeaderMatch {
        layout,
        extras: ignored,
        renamed,
    })
}

/// The file's text as UTF-8. UTF-8 is kept as read: an invalid byte there
/// is a row error naming its field. Other encodings are decoded whole; a
/// byte sequence the encoding does not define fails the file, naming its
/// line, since decoding it to a replacement character would store a value
/// the file never held.
fn decode(bytes: Vec<u8>, encoding: Encoding, file: &str) -> Result<Vec<u8>, ParseError> {
    let codec = encoding.codec();
    if encoding.is_utf8() || (codec.is_ascii_compatible() && bytes.is_ascii()) {
        return Ok(bytes);
    }
    let mut decoder = codec.new_decoder_with_bom_removal();
    let mut text = String::with_capacity(bytes.len() + bytes.len() / 4 + 16);
    let mut read = 0;
    loop {
        let (result, consumed) =
            decoder.decode_to_string_without_replacement(&bytes[read..], &mut text, true);
        read += consumed;
        match result {
            encoding_rs::DecoderResult::InputEmpty => break,
            encoding_rs::DecoderResult::OutputFull => {
                text.reserve((bytes.len() - read) * 2 + 16);
            }
            encoding_rs::DecoderResult::Malformed(bad, after) => {
                return Err(ParseError::Encoding {
                    file: file.to_string(),
                    line: text.bytes().filter(|&b| b == b'\n').count() as u64 + 1,
                    byte: read - after as usize - bad as usize + 1,
                    encoding: codec.name(),
                });
            }
        }
    }
    Ok(text.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Dataset;

    /// Partners' spellings of a header name find their field; the rest are
    /// attributes, and two spellings of one field are a duplicate.
    #[test]
    fn header_names_match_ignoring_case_spaces_and_underscores() {
        let schema = Dataset::load("users", None).unwrap().schema;
        let header =
            |names: &[&str]| -> Vec<String> { names.iter().map(|n| n.to_string()).collect() };
        let matched = match_header(
            &header(&["User id", "ACCOUNT_ID", "Role", "Account Name"]),
            &Default::default(),
            &schema,
        )
        .unwrap();
        assert_eq!(matched.layout[0], Some(0));
        assert_eq!(matched.layout[1], Some(1));
        assert_eq!(
            matched.renamed,
            [
                ("User id".to_string(), "UserID".to_string()),
                ("ACCOUNT_ID".to_string(), "AccountID".to_string()),
            ]
        );
        assert_eq!(matched.extras, [(3, "Account Name".to_string())]);

        // A mapping wins over the schema's own names, and is matched loosely too.
        let mapping = [("E-mail".to_string(), "UserID".to_string())].into();
        let matched = match_header(&header(&["e-mail", "AccountID"]), &mapping, &schema).unwrap();
        assert_eq!(matched.layout[0], Some(0));

        let err = match_header(
            &header(&["UserID", "user_id", "AccountID"]),
            &Default::default(),
            &schema,
        )
        .err()
        .unwrap();
        assert_eq!(
            err,
            "column `UserID` appears twice in the header (columns 1 and 2 `user_id`)"
        );
    }

    #[test]
    fn encodings_decode_by_their_whatwg_label() {
        let label = |l: &str| Encoding::from_label(l).unwrap();
        let cases: &[(&str, &[u8], &str)] = &[
            ("latin1", b"\x80 caf\xe9", "€ café"),
            ("latin-1", b"\x80", "€"),
            ("iso-8859-15", b"\xa4", "€"),
            ("utf-16le", b"\xff\xfea\x00,\x00", "a,"),
            ("shift_jis", b"\x93\xfa\x96\x7b", "日本"),
        ];
        for (name, bytes, want) in cases {
            let text = decode(bytes.to_vec(), label(name), "f.csv").unwrap();
            assert_eq!(String::from_utf8(text).unwrap(), *want, "{name}");
        }
        let err = decode(b"a\nb\n\x82\n".to_vec(), label("shift_jis"), "f.csv")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "f.csv: line 3: byte 5 of the file is not valid Shift_JIS; is csv.encoding right?"
        );
        assert!(Encoding::from_label("replacement").is_none());
        assert!(Encoding::from_label("klingon").is_none());
    }

    /// A file big enough to be parsed in stretches gives the same lines,
    /// spans and errors as one read from start to end would.
    #[test]
    fn stretches_keep_lines_and_bytes() {
        let schema = Dataset::load("accounts", None).unwrap().schema;
        let mut text = String::from("AccountID,ParentID,Name,Type,Plan,Seats,CreatedDate\n");
        let rows = 150_000;
        let mut starts = Vec::new();
        for i in 0..rows {
            starts.push(text.len());
            if i == 120_000 {
                text.push_str("BROKEN,,too,few\n");
            } else {
                text.push_str(&format!(
                    "A{i:07},,Account number {i:07},parent,pro,{i},2024-01-01\n"
                ));
            }
        }
        assert!(text.len() > 8 << 20, "big enough to be cut");
        let bytes = text.clone().into_bytes();
        let raw = parse_bytes(
            bytes,
            "big.csv",
            &CsvDialect::default(),
            &Default::default(),
            &schema,
        )
        .unwrap();
        assert_eq!(raw.records, rows as u64);
        assert_eq!(raw.lines.len(), rows - 1);
        assert_eq!(raw.errors.len(), 1);
        assert_eq!(raw.errors[0].line, 120_000 + 2);
        assert_eq!(raw.errors[0].raw, "BROKEN,,too,few");
        for (row, (&line, &(start, _))) in raw.lines.iter().zip(&raw.spans).enumerate() {
            let i = if row >= 120_000 { row + 1 } else { row };
            assert_eq!(line, i as u64 + 2, "row {row}");
            assert_eq!(start, starts[i] as u64, "row {row}");
        }
        assert_eq!(
            raw.raw_row(rows - 2),
            format!(
                "A{:07},,Account number {:07},parent,pro,{},2024-01-01",
                rows - 1,
                rows - 1,
                rows - 1
            )
        );
        assert_eq!(raw.columns[0].get(130_000), Some("A0130001"));
    }
}

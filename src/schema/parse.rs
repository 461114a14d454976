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

use super::raw_rows::{RawIndex, RawRows, UnchangedRows, raw_hash, record_text};
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
    /// The raw hash of each kept record, when the file's records are
    /// hashed (`RawRows`); else empty.
    pub raw_hashes: Vec<u64>,
    /// Records left out as unchanged (not kept, but counted in `records`).
    pub unchanged: UnchangedRows,
}

impl RawTable {
    /// Says which header names were read as which fields, when any had to
    /// be matched loosely; `None` when every name matched as written.
    pub fn header_note(&self) -> Option<String> {
        header_note(&self.renamed_columns)
    }

    /// The raw text of the kept record `row`, shortened if huge.
    pub fn raw_row(&self, row: usize) -> String {
        let (start, end) = self.spans[row];
        raw_text(&self.text, start, end)
    }
}

/// Says which header names were read as which fields, when any had to be
/// matched loosely: (header, field) pairs.
pub fn header_note(renamed: &[(String, String)]) -> Option<String> {
    if renamed.is_empty() {
        return None;
    }
    let pairs: Vec<String> = renamed
        .iter()
        .map(|(header, field)| format!("`{header}` as {field}"))
        .collect();
    Some(format!(
        "header names matched ignoring case, spaces and underscores: {}",
        pairs.join(", ")
    ))
}

pub(crate) fn raw_text(text: &[u8], start: u64, end: u64) -> String {
    let end = (end as usize).min(text.len());
    let start = (start as usize).min(end);
    let mut slice = &text[start..end];
    while let [rest @ .., b'\n' | b'\r'] = slice {
        slice = rest;
    }
    // A record's span starts where the read before it stopped: after a CRLF
    // line end that is the LF, and blank lines before the record are in it.
    while let [b'\n' | b'\r', rest @ ..] = slice {
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
    parse_in_stretches(bytes, file, dialect, mapping, schema, None)
}

/// `parse_bytes`, cut into `stretches` pieces when given (tests compare
/// every cut with one read from start to end), else as many as pay.
fn parse_in_stretches(
    bytes: Vec<u8>,
    file: &str,
    dialect: &CsvDialect,
    mapping: &std::collections::BTreeMap<String, String>,
    schema: &TableSchema,
    stretches: Option<usize>,
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
    let (header, body_start, first_line) = read_header(&text, file, dialect, mapping, schema)?;
    parse_body(
        text, body_start, first_line, &header, file, dialect, schema, stretches, None,
    )
}

/// How a CSV file's columns feed the schema, read once from its header.
pub struct CsvHeader {
    /// Schema field -> file column.
    layout: Vec<Option<usize>>,
    /// File columns the schema does not know, in `_attributes` key order.
    extras: Vec<AttributeKey>,
    key_fields: Vec<usize>,
    /// Fields a record must have.
    width: usize,
    /// Header names the schema does not know.
    pub ignored_columns: Vec<String>,
    /// Header names matched only loosely: (header, field).
    pub renamed_columns: Vec<(String, String)>,
}

/// Reads the header at the start of `text` (already decoded, without a
/// BOM). Returns how the columns feed the schema, the byte where the
/// records start and the line of the first record.
fn read_header(
    text: &[u8],
    file: &str,
    dialect: &CsvDialect,
    mapping: &std::collections::BTreeMap<String, String>,
    schema: &TableSchema,
) -> Result<(CsvHeader, usize, u64), ParseError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(dialect.delimiter as u8)
        .quote(dialect.quote as u8)
        .from_reader(text);
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
    let header = CsvHeader {
        layout,
        extras,
        key_fields,
        width,
        ignored_columns: extra_columns.into_iter().map(|(_, h)| h).collect(),
        renamed_columns: renamed,
    };
    Ok((header, body_start, first_line))
}

/// Parses the records of `text[body_start..]`, the first on line
/// `first_line`, in `stretches` pieces side by side (as many as pay when
/// `None`). The table keeps `text` for raw rows.
#[allow(clippy::too_many_arguments)]
fn parse_body(
    text: Vec<u8>,
    body_start: usize,
    first_line: u64,
    header: &CsvHeader,
    file: &str,
    dialect: &CsvDialect,
    schema: &TableSchema,
    stretches: Option<usize>,
    raw: Option<&RawRows>,
) -> Result<RawTable, ParseError> {
    let shape = RecordShape {
        file,
        dialect,
        schema,
        layout: &header.layout,
        extras: &header.extras,
        key_fields: &header.key_fields,
        width: header.width,
        raw,
    };
    let pieces = stretches.unwrap_or_else(|| stretches_for(text.len() - body_start));
    let chunks = split_body(&text, body_start, first_line, dialect, pieces);
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
    let (mut raw_hashes, mut unchanged) = (Vec::new(), UnchangedRows::default());
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
        raw_hashes.extend(chunk.raw_hashes);
        unchanged.append(chunk.unchanged);
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
        ignored_columns: header.ignored_columns.clone(),
        renamed_columns: header.renamed_columns.clone(),
        text,
        raw_hashes,
        unchanged,
    })
}

/// A CSV file read a chunk at a time, so memory follows the chunk size, not
/// the file: the header once, then runs of whole records of about
/// `chunk_bytes` each, cut where `RecordStarts` finds a record start (a
/// line end inside a quoted field never cuts). Every chunk parses exactly
/// as the same records do in a read of the whole file: same lines, raw
/// rows and errors. UTF-8 files only: other encodings are decoded whole.
pub struct CsvChunks<'a> {
    source: std::fs::File,
    file: &'a str,
    dialect: &'a CsvDialect,
    schema: &'a TableSchema,
    header: CsvHeader,
    chunk_bytes: usize,
    /// Bytes read but not yet handed out; they start at a record start.
    carry: Vec<u8>,
    /// Where `carry` starts in the file, and its line.
    offset: u64,
    line: u64,
    /// Whether the file has been read to its end.
    eof: bool,
    /// Whether a chunk was handed out: a file of only a header still gives
    /// one, with no records.
    yielded: bool,
    /// How records are hashed, when they are.
    raw: Option<RawRows>,
}

/// One run of whole records of a file.
pub struct CsvChunk {
    pub table: RawTable,
    /// Where the chunk lies in the file: start and end byte, and the line
    /// its text starts on (to read it again).
    pub start: u64,
    pub end: u64,
    pub first_line: u64,
}

impl<'a> CsvChunks<'a> {
    /// Opens `path` and reads its header. Fails as a whole read would on an
    /// empty file or a header that does not fit the schema.
    pub fn open(
        path: &Path,
        file: &'a str,
        dialect: &'a CsvDialect,
        mapping: &std::collections::BTreeMap<String, String>,
        schema: &'a TableSchema,
        chunk_bytes: usize,
    ) -> Result<CsvChunks<'a>, ParseError> {
        debug_assert!(
            dialect.encoding.is_utf8(),
            "other encodings are decoded whole"
        );
        let source = std::fs::File::open(path).map_err(|source| ParseError::Io {
            file: file.to_string(),
            source,
        })?;
        let mut chunks = CsvChunks {
            source,
            file,
            dialect,
            schema,
            header: CsvHeader {
                layout: Vec::new(),
                extras: Vec::new(),
                key_fields: Vec::new(),
                width: 0,
                ignored_columns: Vec::new(),
                renamed_columns: Vec::new(),
            },
            chunk_bytes: chunk_bytes.max(1),
            carry: Vec::new(),
            offset: 0,
            line: 1,
            eof: false,
            yielded: false,
            raw: None,
        };
        // Read until the file shows something besides white space (or ends),
        // and its first record is whole: the header must be read entire.
        let mut first = true;
        loop {
            // Twice as much each time: a header longer than the chunk is
            // read in a few steps, not rescanned at every one.
            chunks.read_more(chunks.chunk_bytes.max(chunks.carry.len()))?;
            if std::mem::take(&mut first) && chunks.carry.starts_with(b"\xEF\xBB\xBF") {
                // A BOM glued to the first header name is the classic CSV bug: drop it.
                chunks.carry.drain(..3);
                chunks.offset = 3;
            }
            let blank = chunks.carry.iter().all(|b| b.is_ascii_whitespace());
            if blank && chunks.eof {
                return Err(ParseError::Empty {
                    file: file.to_string(),
                });
            }
            if blank {
                continue;
            }
            let whole_first_record = chunks.eof || chunks.last_cut(&[0]).is_some();
            if whole_first_record {
                break;
            }
        }
        let (header, body_start, first_line) =
            read_header(&chunks.carry, file, dialect, mapping, schema)?;
        chunks.header = header;
        chunks.carry.drain(..body_start);
        chunks.offset += body_start as u64;
        chunks.line = first_line;
        Ok(chunks)
    }

    /// The header as read: names the schema does not know, names matched loosely.
    pub fn header(&self) -> &CsvHeader {
        &self.header
    }

    /// Hashes each record read from now on (`RawTable::raw_hashes`), with
    /// the seed of this file's reading: the schema, the dialect, which
    /// column feeds which field, and `context` (what else the caller's
    /// reading depends on).
    pub fn hash_records(&mut self, context: &str, fields: Vec<usize>) {
        let extras: Vec<(usize, &str)> = self
            .header
            .extras
            .iter()
            .map(|key| (key.column, key.header.as_str()))
            .collect();
        let reading = format!(
            "{context}|{:?}|{:?}|{:?}|{:?}|{}",
            self.schema, self.dialect, self.header.layout, extras, self.header.width
        );
        self.raw = Some(RawRows {
            seed: super::raw_rows::seed(&reading),
            index: None,
            fields,
        });
    }

    /// From now on leaves out the records whose hash `index` holds, as
    /// unchanged (`RawTable::unchanged`); records must be hashed.
    pub fn leave_out_unchanged(&mut self, index: std::sync::Arc<RawIndex>) {
        if let Some(raw) = self.raw.as_mut() {
            raw.index = Some(index);
        }
    }

    /// Reads the next chunk's bytes, not parsing them yet: while the
    /// parser waits for the stored rows' raw hashes.
    pub fn read_next(&mut self) -> Result<(), ParseError> {
        if self.carry.len() < self.chunk_bytes && !self.eof {
            self.read_more(self.chunk_bytes - self.carry.len())?;
        }
        Ok(())
    }

    /// The next run of records; `None` past the end of the file.
    pub fn next_chunk(&mut self) -> Result<Option<CsvChunk>, ParseError> {
        loop {
            if self.carry.len() < self.chunk_bytes && !self.eof {
                self.read_more(self.chunk_bytes - self.carry.len())?;
            }
            if self.carry.is_empty() && self.eof {
                if self.yielded {
                    return Ok(None);
                }
                break;
            }
            if self.eof && self.carry.len() <= self.chunk_bytes {
                break;
            }
            // Cut after the last record that ends in what was read (looked
            // for past every sixteenth of it, in one pass); a record longer
            // than the chunk reads on.
            let len = self.carry.len();
            let targets: Vec<usize> = (0..16).map(|i| len * i / 16).collect();
            if let Some(cut) = self.last_cut(&targets) {
                let rest = self.carry.split_off(cut);
                let text = std::mem::replace(&mut self.carry, rest);
                return self.hand_out(text);
            }
            if self.eof {
                break;
            }
            // A record longer than what was read: read twice as much, so a
            // huge record costs a few scans, not one per chunk of it.
            self.read_more(self.chunk_bytes.max(self.carry.len()))?;
        }
        let text = std::mem::take(&mut self.carry);
        self.hand_out(text)
    }

    /// Parses the records of `text`, the next of the file.
    fn hand_out(&mut self, text: Vec<u8>) -> Result<Option<CsvChunk>, ParseError> {
        let (start, first_line) = (self.offset, self.line);
        let len = text.len() as u64;
        self.line += memchr::memchr_iter(b'\n', &text).count() as u64;
        self.offset += len;
        self.yielded = true;
        let table = parse_body(
            text,
            0,
            first_line,
            &self.header,
            self.file,
            self.dialect,
            self.schema,
            None,
            self.raw.as_ref(),
        )?;
        Ok(Some(CsvChunk {
            table,
            start,
            end: start + len,
            first_line,
        }))
    }

    /// Reads the chunk of the file between `start` and `end` again (its
    /// text starting on `first_line`), to describe rows found wrong only
    /// once the whole file was seen.
    pub fn reread(&self, start: u64, end: u64, first_line: u64) -> Result<RawTable, ParseError> {
        use std::os::unix::fs::FileExt;
        let mut text = vec![0; (end - start) as usize];
        self.source
            .read_exact_at(&mut text, start)
            .map_err(|source| ParseError::Io {
                file: self.file.to_string(),
                source,
            })?;
        parse_body(
            text,
            0,
            first_line,
            &self.header,
            self.file,
            self.dialect,
            self.schema,
            None,
            self.raw.as_ref(),
        )
    }

    /// The last of the record starts in `carry` found past each of
    /// `targets` (ascending), up to its end.
    fn last_cut(&self, targets: &[usize]) -> Option<usize> {
        RecordStarts::new(self.dialect.delimiter as u8, self.dialect.quote as u8)
            .near(&self.carry, 0, targets)
            .into_iter()
            .filter(|&cut| cut > 0 && cut <= self.carry.len())
            .max()
    }

    /// Appends up to `want` more bytes of the file to `carry`.
    fn read_more(&mut self, want: usize) -> Result<(), ParseError> {
        use std::io::Read;
        let have = self.carry.len();
        self.carry.reserve(want);
        let read = (&mut self.source)
            .take(want as u64)
            .read_to_end(&mut self.carry)
            .map_err(|source| ParseError::Io {
                file: self.file.to_string(),
                source,
            })?;
        if read == 0 || self.carry.len() - have < want {
            self.eof = true;
        }
        Ok(())
    }
}

/// The key of kept record `row` of `raw` as written (parts joined with `|`),
/// as a row error names it.
pub(crate) fn written_key(raw: &RawTable, key_fields: &[usize], row: usize) -> Option<String> {
    let parts: Vec<&str> = key_fields
        .iter()
        .map(|&f| raw.columns[f].get(row).unwrap_or(""))
        .collect();
    (!parts.is_empty()).then(|| parts.join("|"))
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
    /// How records are hashed, and which are left out as unchanged.
    raw: Option<&'a RawRows>,
}

/// How many line ends `parse_chunk` hashes ahead of the record it reads.
const READ_AHEAD: usize = 16;

/// The first fields of a record, read as the csv reader reads them. The
/// plain cases (an unquoted field, a quoted one with no quote inside) are
/// cut where they end; anything else (a doubled quote, text after a
/// closing quote) is left to the csv reader's own engine, with the same
/// dialect, reading the whole record.
struct LeadingFields {
    core: csv_core::Reader,
    delimiter: u8,
    quote: u8,
    out: Vec<u8>,
    /// Where each field read ends in `out`.
    ends: Vec<usize>,
}

impl LeadingFields {
    fn new(dialect: &CsvDialect) -> LeadingFields {
        LeadingFields {
            core: csv_core::ReaderBuilder::new()
                .delimiter(dialect.delimiter as u8)
                .quote(dialect.quote as u8)
                .build(),
            delimiter: dialect.delimiter as u8,
            quote: dialect.quote as u8,
            out: Vec::new(),
            ends: Vec::new(),
        }
    }

    /// Reads the first `count` fields of `record` (one whole record, line
    /// ends left out); false when it has fewer.
    fn read(&mut self, record: &[u8], count: usize) -> bool {
        self.ends.clear();
        self.out.clear();
        let mut at = 0;
        while self.ends.len() < count {
            let (value, next) = if record.get(at) == Some(&self.quote) {
                let body = at + 1;
                let Some(close) = memchr::memchr(self.quote, &record[body..]).map(|n| body + n)
                else {
                    return self.read_whole(record, count);
                };
                match record.get(close + 1) {
                    None => (&record[body..close], None),
                    Some(&b) if b == self.delimiter => (&record[body..close], Some(close + 2)),
                    // A doubled quote, or text after the closing one.
                    Some(_) => return self.read_whole(record, count),
                }
            } else {
                match memchr::memchr(self.delimiter, &record[at..]) {
                    Some(n) => (&record[at..at + n], Some(at + n + 1)),
                    None => (&record[at..], None),
                }
            };
            self.out.extend_from_slice(value);
            self.ends.push(self.out.len());
            match next {
                Some(next) => at = next,
                None => break,
            }
        }
        self.ends.len() >= count
    }

    /// `read`, by the csv reader's engine over the whole record.
    fn read_whole(&mut self, record: &[u8], count: usize) -> bool {
        use csv_core::ReadRecordResult;
        self.core.reset();
        self.out.clear();
        self.out.resize(record.len(), 0);
        self.ends.clear();
        self.ends.resize(record.len() + 1, 0);
        let (mut input, mut wrote, mut fields) = (record, 0, 0);
        loop {
            let (result, read, more, ended) =
                self.core
                    .read_record(input, &mut self.out[wrote..], &mut self.ends[fields..]);
            input = &input[read..];
            wrote += more;
            // The engine counts each record's ends from its start.
            fields += ended;
            match result {
                ReadRecordResult::InputEmpty => continue,
                ReadRecordResult::Record | ReadRecordResult::End => break,
                ReadRecordResult::OutputFull | ReadRecordResult::OutputEndsFull => return false,
            }
        }
        self.ends.truncate(fields);
        fields >= count
    }

    /// Field `column` as read, when it is text.
    fn field(&self, column: usize) -> Option<&str> {
        let end = *self.ends.get(column)?;
        let start = if column == 0 {
            0
        } else {
            self.ends[column - 1]
        };
        std::str::from_utf8(&self.out[start..end]).ok()
    }
}

/// The records of one stretch of a file.
struct Chunk {
    columns: Vec<StringChunked>,
    attributes: Option<StringChunked>,
    lines: Vec<u64>,
    spans: Vec<(u64, u64)>,
    errors: Vec<RowError>,
    records: u64,
    raw_hashes: Vec<u64>,
    unchanged: UnchangedRows,
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
        let value = simdutf8::compat::from_utf8(raw).map_err(|e| {
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
        push_json_string(json, value);
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

/// Appends `value` as a JSON string, escaped exactly as serde_json escapes
/// it (stored `_attributes` are compared as text from day to day), without
/// the two allocations a `serde_json::Value` would cost per cell.
fn push_json_string(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut plain = 0;
    for (at, byte) in value.bytes().enumerate() {
        // A short escape, or `None` for a control byte spelled `\u00XX`.
        let escape = match byte {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x08 => Some("\\b"),
            0x0c => Some("\\f"),
            0x00..=0x1f => None,
            _ => continue,
        };
        out.push_str(&value[plain..at]);
        match escape {
            Some(escape) => out.push_str(escape),
            None => {
                out.push_str("\\u00");
                out.push(HEX[(byte >> 4) as usize] as char);
                out.push(HEX[(byte & 0xf) as usize] as char);
            }
        }
        plain = at + 1;
    }
    out.push_str(&value[plain..]);
    out.push('"');
}

pub(crate) fn empty_columns(schema: &TableSchema) -> Vec<StringChunked> {
    schema
        .fields
        .iter()
        .map(|f| StringChunkedBuilder::new(f.name.as_str().into(), 0).finish())
        .collect()
}

/// The smallest stretch worth a thread of its own: below this, starting a
/// thread and joining its columns costs more than parsing side by side saves.
const MIN_STRETCH: usize = 4 << 20;

/// How many stretches to parse a body of `len` bytes in.
fn stretches_for(len: usize) -> usize {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || len < 2 * MIN_STRETCH {
        1
    } else {
        threads.min(len / MIN_STRETCH)
    }
}

/// Where to cut the records after the header into `pieces` stretches parsed
/// side by side: (start byte, end byte, line of the first record). Cuts fall
/// at record boundaries found by following the quote state from the body's
/// start (`RecordStarts`), so a line end inside a quoted field never cuts.
/// A quote left open runs to the end of the file: no cut after it, and its
/// stretch meets it exactly as a read from start to end would.
fn split_body(
    text: &[u8],
    start: usize,
    first_line: u64,
    dialect: &CsvDialect,
    pieces: usize,
) -> Vec<(usize, usize, u64)> {
    let body = text.len() - start;
    if pieces < 2 || body == 0 {
        return vec![(start, text.len(), first_line)];
    }
    let targets: Vec<usize> = (1..pieces).map(|i| start + body * i / pieces).collect();
    let cuts =
        RecordStarts::new(dialect.delimiter as u8, dialect.quote as u8).near(text, start, &targets);
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let (mut from, mut line) = (start, first_line);
    for cut in cuts {
        if cut <= from || cut >= text.len() {
            continue;
        }
        out.push((from, cut, line));
        line += memchr::memchr_iter(b'\n', &text[from..cut]).count() as u64;
        from = cut;
    }
    out.push((from, text.len(), line));
    out
}

/// Finds where records start by following only what decides it: whether a
/// byte is inside a quoted field. It reads quotes the way the csv reader
/// does: a quote opens a quoted field only at the start of a field (after a
/// delimiter or a line end), a doubled quote inside one is a quote, and a
/// quote in the middle of an unquoted field is an ordinary character. A line
/// end outside quotes ends a record.
///
/// Text with quotes is read 64 bytes at a time (`near_in_blocks`): a mask
/// of its quotes, whose running parity says which bytes are inside a
/// quoted field, as a doubled quote leaves and re-enters one. Parity is the
/// csv reader's reading only where every quote that opens a field is at a
/// field start and every quote that closes one is followed by a delimiter,
/// a line end or a quote; the blocks check both, and text where either
/// fails (a quote inside an unquoted field, text after a closing quote) is
/// read again quote by quote (`near_exact`). Jumping from quote to quote
/// with `memchr` cost two searches a field in a fully quoted export: 4 s
/// of a 10M-row file's read, on the one thread that cuts its chunks.
struct RecordStarts {
    delimiter: u8,
    quote: u8,
}

impl RecordStarts {
    fn new(delimiter: u8, quote: u8) -> RecordStarts {
        RecordStarts { delimiter, quote }
    }

    /// For each of `targets` (ascending byte offsets), a record start past
    /// it, reading from `start` (a record start). A cut must fall exactly
    /// where the csv reader, reading from the start, stops after a record:
    /// a record's position is where the read before it stopped, and that is
    /// where its line and span are counted from. A read stops just after
    /// the record's terminator: after the LF of an LF line end, after the CR
    /// of a CRLF one (the LF is skipped by the next read), and blank lines
    /// are skipped by the next read too. So a cut follows the terminator of
    /// a line that is not blank. Targets with no such line end after them
    /// (a quote open to the end of the file) get none: fewer cuts come back.
    fn near(&self, text: &[u8], start: usize, targets: &[usize]) -> Vec<usize> {
        if targets.is_empty() || memchr::memchr(self.quote, &text[start..]).is_none() {
            // No quote: the exact reading is one search for line ends.
            return self.near_exact(text, start, targets);
        }
        self.near_in_blocks(text, start, targets)
            .unwrap_or_else(|| self.near_exact(text, start, targets))
    }

    /// `near`, reading 64 bytes at a time; `None` where the quotes are not
    /// all at field starts and before field ends, which parity misreads.
    fn near_in_blocks(&self, text: &[u8], start: usize, targets: &[usize]) -> Option<Vec<usize>> {
        let mut cuts = Vec::with_capacity(targets.len());
        let mut pending = targets.iter().copied().peekable();
        // All ones while the block starts inside a quoted field.
        let mut inside = 0u64;
        // Whether a quote at the block's first byte may open a field: it is
        // `start`, or the byte before it ends a field or closes a quote.
        let mut opens_first = 1u64;
        let mut block_start = start;
        while block_start < text.len() && pending.peek().is_some() {
            let block = &text[block_start..text.len().min(block_start + 64)];
            let beyond = if block.len() == 64 {
                0
            } else {
                !0u64 << block.len()
            };
            let [quotes, delimiters, lfs, crs] = self.masks(block);
            let inside_mask = prefix_xor(quotes) ^ inside;
            let opening = quotes & inside_mask;
            let closing = quotes & !inside_mask;
            let field_ends = delimiters | lfs | crs;
            if opening & !(((field_ends | closing) << 1) | opens_first) != 0 {
                return None;
            }
            let next_ends = match text.get(block_start + 64) {
                None => 1,
                Some(&b) => {
                    u64::from(b == self.delimiter || b == self.quote || b == b'\n' || b == b'\r')
                }
            };
            if closing & !(((field_ends | quotes | beyond) >> 1) | (next_ends << 63)) != 0 {
                return None;
            }
            // Line ends outside quotes end records.
            let ends = lfs & !inside_mask;
            'targets: while let Some(&target) = pending.peek() {
                if target >= block_start + 64 {
                    break;
                }
                let mut candidates = ends & (!0u64 << target.saturating_sub(block_start));
                while candidates != 0 {
                    let lf = block_start + candidates.trailing_zeros() as usize;
                    candidates &= candidates - 1;
                    if let Some(cut) = Self::cut_after(text, start, lf) {
                        cuts.push(cut);
                        // Targets this cut already passes share it.
                        while pending.next_if(|&t| t <= cut).is_some() {}
                        continue 'targets;
                    }
                }
                break;
            }
            inside = if inside_mask >> 63 == 1 { !0 } else { 0 };
            opens_first = (field_ends | closing) >> 63;
            block_start += 64;
        }
        Some(cuts)
    }

    /// Where a record cut falls for the line end (LF) at `lf`: just after
    /// its terminator (the CR of a CRLF); `None` for a blank line, which the
    /// next read skips.
    fn cut_after(text: &[u8], start: usize, lf: usize) -> Option<usize> {
        let terminator = if lf > 0 && text[lf - 1] == b'\r' {
            lf - 1
        } else {
            lf
        };
        (terminator > start && !matches!(text[terminator - 1], b'\n' | b'\r'))
            .then_some(terminator + 1)
    }

    /// Bit `i` of each mask: whether byte `i` of `block` (at most 64
    /// bytes) is a quote, a delimiter, an LF, a CR.
    fn masks(&self, block: &[u8]) -> [u64; 4] {
        let mut bytes = [0u8; 64];
        bytes[..block.len()].copy_from_slice(block);
        let wanted = [self.quote, self.delimiter, b'\n', b'\r'];
        let mut masks = [0u64; 4];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{
                __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
            };
            // SAFETY: SSE2 is part of every x86_64 CPU; each load reads 16
            // bytes at offsets 0, 16, 32 and 48 of the 64-byte array.
            unsafe {
                for (lane, chunk) in bytes.chunks_exact(16).enumerate() {
                    let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
                    for (mask, &b) in masks.iter_mut().zip(&wanted) {
                        let hits = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8)));
                        *mask |= u64::from(hits as u16) << (lane * 16);
                    }
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        for (i, &byte) in bytes.iter().enumerate() {
            for (mask, &b) in masks.iter_mut().zip(&wanted) {
                *mask |= u64::from(byte == b) << i;
            }
        }
        let valid = if block.len() == 64 {
            !0
        } else {
            (1u64 << block.len()) - 1
        };
        masks.map(|m| m & valid)
    }

    /// `near`, quote by quote, exactly as the csv reader reads them.
    fn near_exact(&self, text: &[u8], start: usize, targets: &[usize]) -> Vec<usize> {
        let mut cuts = Vec::with_capacity(targets.len());
        let mut pending = targets.iter().copied().peekable();
        // Outside quotes from `pos`; `pos == start` is a field start.
        let mut pos = start;
        loop {
            let next_quote = memchr::memchr(self.quote, &text[pos..]).map(|q| pos + q);
            let unquoted_end = next_quote.unwrap_or(text.len());
            // Line ends in text[pos..unquoted_end] end records.
            'targets: while let Some(&target) = pending.peek() {
                let mut from = target.max(pos);
                loop {
                    if from >= unquoted_end {
                        break 'targets;
                    }
                    let Some(n) = memchr::memchr(b'\n', &text[from..unquoted_end]) else {
                        break 'targets;
                    };
                    let lf = from + n;
                    let Some(cut) = Self::cut_after(text, start, lf) else {
                        // A blank line: the next read skips it.
                        from = lf + 1;
                        continue;
                    };
                    cuts.push(cut);
                    // Targets this cut already passes share it.
                    while pending.next_if(|&t| t <= cut).is_some() {}
                    break;
                }
            }
            let Some(q) = next_quote else {
                return cuts;
            };
            if pending.peek().is_none() {
                return cuts;
            }
            let field_start = q == start
                || (q > pos && matches!(text[q - 1], b'\n' | b'\r'))
                || (q > pos && text[q - 1] == self.delimiter);
            if !field_start {
                // A quote inside an unquoted field is text.
                pos = q + 1;
                continue;
            }
            // Inside a quoted field: find its closing quote; a doubled
            // quote is a quote in the value.
            let mut inside = q + 1;
            loop {
                match memchr::memchr(self.quote, &text[inside..]) {
                    None => return cuts,
                    Some(c) if text.get(inside + c + 1) == Some(&self.quote) => inside += c + 2,
                    Some(c) => {
                        pos = inside + c + 1;
                        break;
                    }
                }
            }
        }
    }
}

/// Bit `i`: the parity of the set bits of `x` at `i` and below.
fn prefix_xor(mut x: u64) -> u64 {
    for shift in [1, 2, 4, 8, 16, 32] {
        x ^= x << shift;
    }
    x
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
        raw,
    } = *shape;
    let mut attributes =
        (!extras.is_empty()).then(|| StringChunkedBuilder::new(ATTRIBUTES.into(), 1024));
    let mut builders: Vec<StringChunkedBuilder> = schema
        .fields
        .iter()
        .map(|f| StringChunkedBuilder::new(f.name.as_str().into(), 1024))
        .collect();
    let mut lines = Vec::new();
    let mut spans = Vec::new();
    let mut errors = Vec::new();
    let mut records = 0u64;
    let (mut raw_hashes, mut unchanged) = (Vec::new(), UnchangedRows::default());
    let index = raw.and_then(|raw| raw.index.as_deref());
    // Lines and bytes the csv reader counts within this stretch -> in the file.
    let line_of = |l: u64| first_line + l - 1;
    let byte_of = |b: u64| start as u64 + b;
    let mut last_line = first_line;
    let mut json = String::new();
    // With the stored rows' raw hashes at hand, a record is first looked
    // for by the bytes up to the next line end, hashed before the csv
    // reader reads them: found, it is the stored row's record (parsing the
    // same bytes from a record's start ends the record at the same byte),
    // and only the fields the checks across rows need are read
    // (`LeadingFields`). The hashes of the next few line ends are asked of
    // the index ahead. Any other record (new, changed, or running over
    // several lines) is read by the csv reader, moved past the records
    // found since it last read.
    let fast = raw.zip(index);
    let needed = raw.map_or(0, |raw| {
        raw.fields
            .iter()
            .filter_map(|&f| layout[f])
            .max()
            .map_or(0, |c| c + 1)
    });
    let mut leading = LeadingFields::new(dialect);
    // The stored row after the last record found (`RawIndex::follow`).
    let mut follow = usize::MAX;
    // (start, where its text starts past line ends, end, hash)
    let mut ahead: std::collections::VecDeque<(usize, usize, usize, u64)> = Default::default();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(dialect.delimiter as u8)
        .quote(dialect.quote as u8)
        .buffer_capacity(if fast.is_some() { 4 << 10 } else { 8 << 10 })
        .from_reader(std::io::Cursor::new(&text[start..end]));
    let mut record = csv::ByteRecord::new();
    let mut moved = false;
    // Where the next record starts, and its line.
    let (mut next, mut next_line_at) = (start, first_line);
    while next < end {
        if let Some((raw, index)) = fast {
            if ahead.front().is_some_and(|&(at, _, _, _)| at != next) {
                ahead.clear();
            }
            let mut scan = ahead.back().map_or(next, |&(_, _, stop, _)| stop);
            while ahead.len() < READ_AHEAD && scan < end {
                // Line ends first (the LF of a CRLF, empty lines), then
                // the bytes through the next LF.
                let from = text[scan..end]
                    .iter()
                    .position(|b| !matches!(b, b'\r' | b'\n'))
                    .map_or(end, |n| scan + n);
                let mut stop =
                    memchr::memchr(b'\n', &text[from..end]).map_or(end, |n| from + n + 1);
                // The csv reader ends a CRLF record at its CR: the LF
                // starts the next one.
                if stop - from >= 2 && text[stop - 1] == b'\n' && text[stop - 2] == b'\r' {
                    stop -= 1;
                }
                let hash = raw_hash(raw.seed, &text[from..stop]);
                if !index.expects(hash, follow.wrapping_add(ahead.len())) {
                    index.prefetch(hash);
                }
                ahead.push_back((scan, from, stop, hash));
                scan = stop;
            }
            if let Some((at, from, stop, hash)) = ahead.pop_front()
                && let Some(stored) = index.follow(hash, &mut follow)
                && unchanged.has_room(stop - at)
                && leading.read(record_text(&text[from..stop]), needed)
                && raw
                    .fields
                    .iter()
                    .all(|&f| layout[f].is_none_or(|c| leading.field(c).is_some()))
            {
                // Its line, and the next record's, as the csv reader
                // counts them: from where it starts reading.
                records += 1;
                last_line = next_line_at;
                unchanged.push(
                    raw.fields
                        .iter()
                        .map(|&f| layout[f].and_then(|c| leading.field(c))),
                    next_line_at,
                    stored,
                );
                next_line_at += text[at..from].iter().filter(|&&b| b == b'\n').count() as u64
                    + u64::from(text[stop - 1] == b'\n');
                next = stop;
                continue;
            }
        }
        // The csv reader, moved here if records were found since it read.
        let here = (next - start) as u64;
        if reader.position().byte() != here {
            if !moved {
                // Else the first move reads a record to make the header of.
                reader.set_byte_headers(csv::ByteRecord::new());
                moved = true;
            }
            let mut position = csv::Position::new();
            position
                .set_byte(here)
                .set_line(next_line_at - first_line + 1)
                .set_record(records);
            reader
                .seek_raw(std::io::SeekFrom::Start(here), position)
                .map_err(|e| ParseError::Csv {
                    file: file.to_string(),
                    line: next_line_at,
                    message: e.to_string(),
                })?;
        }
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                return Err(ParseError::Csv {
                    file: file.to_string(),
                    line: last_line,
                    message: e.to_string(),
                });
            }
        }
        records += 1;
        let pos = record
            .position()
            .cloned()
            .unwrap_or_else(csv::Position::new);
        let (line, record_start) = (line_of(pos.line()), byte_of(pos.byte()));
        let record_end = byte_of(reader.position().byte());
        let next_line = line_of(reader.position().line());
        (next, next_line_at) = (record_end as usize, next_line);
        last_line = line;
        let record = &record;
        let key = |record: &csv::ByteRecord| -> Option<String> {
            let parts: Vec<String> = key_fields
                .iter()
                .filter_map(|&f| layout[f].and_then(|c| record.get(c)))
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect();
            (!parts.is_empty()).then(|| parts.join("|"))
        };
        let reject = |record: &csv::ByteRecord, field: Option<&str>, message: String| RowError {
            line,
            key: key(record),
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
                record,
                None,
                format!(
                    "expected {width} fields, found {} (a stray delimiter, or an unbalanced quote?)",
                    record.len()
                ),
            ));
            continue;
        }
        // A record whose bytes a stored row was read from is that row,
        // unchanged: only its key is kept, for the checks across rows.
        let raw_hash = raw
            .filter(|_| record.len() == width)
            .map(|raw| raw_hash(raw.seed, &text[record_start as usize..record_end as usize]));
        if let (Some(hash), Some(index), Some(raw)) = (raw_hash, index, raw)
            && let Some(stored) = index.follow(hash, &mut follow)
            && unchanged.has_room(record.as_slice().len())
        {
            let value = |f: &usize| layout[*f].and_then(|c| record.get(c));
            if raw
                .fields
                .iter()
                .filter_map(value)
                .all(|v| std::str::from_utf8(v).is_ok())
            {
                unchanged.push(
                    raw.fields
                        .iter()
                        .map(|f| value(f).map(|v| std::str::from_utf8(v).unwrap_or_default())),
                    line,
                    stored,
                );
                continue;
            }
        }
        // The common record: no field over the size limit and all of it
        // text. One UTF-8 check for the whole record (SIMD, which matters
        // once names are not ASCII) and no per-record allocation; each
        // field is then a slice of that text, cut where a character ends.
        // Any other record is looked at field by field below, to say which
        // field.
        let max_field_bytes = dialect.max_field_bytes.get();
        let fits = layout
            .iter()
            .flatten()
            .all(|&c| record.get(c).map_or(0, <[u8]>::len) as u64 <= max_field_bytes);
        let text = fits
            .then(|| simdutf8::basic::from_utf8(record.as_slice()).ok())
            .flatten()
            .filter(|text| {
                // Fields cut mid-character would each be invalid though
                // their bytes together are not.
                (0..record.len()).all(|c| {
                    record.range(c).is_some_and(|r| {
                        text.is_char_boundary(r.start) && text.is_char_boundary(r.end)
                    })
                })
            });
        if let Some(text) = text {
            let has_attributes = match attributes.is_some() {
                true => attributes_json(record, extras, max_field_bytes as usize, &mut json),
                false => Ok(false),
            };
            let has_attributes = match has_attributes {
                Ok(has) => has,
                Err((field, message)) => {
                    errors.push(reject(record, field.as_deref(), message));
                    continue;
                }
            };
            for (builder, column) in builders.iter_mut().zip(layout) {
                match column {
                    Some(c) => builder.append_value(
                        record
                            .range(*c)
                            .and_then(|r| text.get(r))
                            .unwrap_or_default(),
                    ),
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
            raw_hashes.extend(raw_hash);
            lines.push(line);
            spans.push((record_start, record_end));
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
                record,
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
                record,
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
                record,
                extras,
                dialect.max_field_bytes.get() as usize,
                &mut json,
            ) {
                Ok(has) => has,
                Err((field, message)) => {
                    errors.push(reject(record, field.as_deref(), message));
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
        raw_hashes.extend(raw_hash);
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
        raw_hashes,
        unchanged,
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

    /// Attribute values keep the spelling `serde_json` gave them: a stored
    /// `_attributes` that changed spelling would make every row an update.
    #[test]
    fn attribute_values_are_escaped_as_serde_json_escapes_them() {
        let mut values: Vec<String> = (0u8..0x80).map(|b| (b as char).to_string()).collect();
        values.extend(
            [
                "",
                "plain",
                "Zoë \"Ortega\"\r\n\ttab\\",
                "\u{7f}\u{80}\u{2028}€😀",
                "a\u{1}b\u{1f}c",
            ]
            .map(String::from),
        );
        for value in values {
            let mut ours = String::from("x");
            push_json_string(&mut ours, &value);
            let theirs = format!("x{}", serde_json::Value::String(value.clone()));
            assert_eq!(ours, theirs, "{value:?}");
        }
    }

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

    /// What a parse gives, spelled out so two parses compare: every column,
    /// line, span and row error, or the error that stopped the file.
    fn outcome(parsed: Result<RawTable, ParseError>) -> String {
        let raw = match parsed {
            Ok(raw) => raw,
            Err(e) => return format!("error: {e}"),
        };
        let values = |c: &StringChunked| -> Vec<Option<String>> {
            c.iter().map(|v| v.map(str::to_string)).collect()
        };
        let columns: Vec<_> = raw.columns.iter().map(values).collect();
        let raws: Vec<String> = (0..raw.lines.len()).map(|r| raw.raw_row(r)).collect();
        format!(
            "records {}\ncolumns {columns:?}\nattributes {:?}\nlines {:?}\nspans {:?}\nraw {raws:?}\nerrors {:#?}",
            raw.records,
            raw.attributes.as_ref().map(values),
            raw.lines,
            raw.spans,
            raw.errors
        )
    }

    /// Parses `text` read whole, then cut into 2 to 12 stretches, and checks
    /// every cut gives what the whole read gives. Returns the whole read.
    fn same_in_every_cut(text: &[u8], dialect: &CsvDialect) -> String {
        let schema = Dataset::load("accounts", None).unwrap().schema;
        let parse = |pieces| {
            outcome(parse_in_stretches(
                text.to_vec(),
                "f.csv",
                dialect,
                &Default::default(),
                &schema,
                Some(pieces),
            ))
        };
        let whole = parse(1);
        for pieces in 2..=12 {
            assert_eq!(parse(pieces), whole, "{pieces} stretches of {text:?}");
        }
        whole
    }

    /// One record per line kind that makes quotes hard, many times over so
    /// cuts land everywhere: quoted CRLF and LF inside fields, doubled quotes,
    /// quoted delimiters, a stray quote in an unquoted field, text after a
    /// closing quote, a quote-only record, blank lines, lone CRs.
    fn tricky_text(copies: usize) -> Vec<u8> {
        let mut text = String::from(
            "\u{feff}\"AccountID\",\"ParentID\",\"Name\",\"Type\",\"Plan\",\"Seats\",\"CreatedDate\",\"Region\"\r\n",
        );
        for i in 0..copies {
            text.push_str(&format!(
                "\"A{i}a\",\"\",\"Line one\r\nline two, \"\"quoted\"\"\",\"parent\",\"pro\",\"5\",\"2024-01-01\",\"EU, west\"\r\n\
                 A{i}b,,Bob's \"nick\" name,parent,pro,6,2024-01-02,\"\"\r\n\
                 \"A{i}c\",,\"ACME\"x,product,free,7,2024-01-03,\"\n\"\n\
                 \"\"\r\n\
                 \r\n\
                 \n\
                 A{i}d,,\"\"\"\",parent,pro,8,2024-01-04,\r\
                 A{i}e,,\"multi\n\nline\n\",parent,pro,9,2024-01-05,x\n\
                 A{i}f,,too,few\n"
            ));
        }
        text.into_bytes()
    }

    #[test]
    fn quoted_files_parse_the_same_in_stretches() {
        let whole = same_in_every_cut(&tricky_text(40), &CsvDialect::default());
        assert!(
            whole.contains("Line one\\r\\nline two, \\\"quoted\\\""),
            "{whole}"
        );
        assert!(whole.contains("Bob's \\\"nick\\\" name"), "{whole}");
        assert!(whole.contains("expected 8 fields, found 4"), "{whole}");
        // The cuts really fall inside the file, at record starts.
        let text = tricky_text(40);
        // The csv reader stops after the header's CR: the body starts at its LF.
        let body = text.iter().position(|&b| b == b'\n').unwrap();
        let stretches = split_body(&text, body, 2, &CsvDialect::default(), 7);
        assert_eq!(stretches.len(), 7, "{stretches:?}");
        for &(start, _, _) in &stretches[1..] {
            assert!(matches!(text[start - 1], b'\r' | b'\n'), "a cut at {start}");
        }
    }

    #[test]
    fn other_delimiters_quotes_and_encodings_parse_the_same_in_stretches() {
        let semicolons = CsvDialect {
            delimiter: ';',
            quote: '\'',
            ..CsvDialect::default()
        };
        let text = String::from_utf8(tricky_text(20))
            .unwrap()
            .replace('\'', "`")
            .replace(',', ";")
            .replace('"', "'");
        same_in_every_cut(text.as_bytes(), &semicolons);

        let latin1 = CsvDialect {
            encoding: Encoding::from_label("latin1").unwrap(),
            ..CsvDialect::default()
        };
        let mut text = b"AccountID,ParentID,Name,Type,Plan,Seats,CreatedDate\n".to_vec();
        for i in 0..50 {
            text.extend_from_slice(
                format!("A{i},,\"Caf\u{e9}, \"\"Bar\"\"\r\n\u{c9}t\u{e9}\",parent,pro,{i},2024-01-01\r\n")
                    .as_bytes(),
            );
        }
        // Write the text in Latin-1, as the file would be.
        let text: Vec<u8> = String::from_utf8(text)
            .unwrap()
            .chars()
            .map(|c| c as u32 as u8)
            .collect();
        let whole = same_in_every_cut(&text, &latin1);
        assert!(whole.contains("Café, \\\"Bar\\\"\\r\\nÉté"), "{whole}");
    }

    /// A quote that never closes swallows the rest of the file: cut or not,
    /// the file fails with the same message, naming the same line.
    #[test]
    fn an_unbalanced_quote_fails_the_same_in_stretches() {
        let plain: String = (0..200)
            .map(|i| format!("P{i},,plain,parent,pro,{i},2024-01-01,\r\n"))
            .collect();
        let mut text = String::from_utf8(tricky_text(20)).unwrap();
        text.push_str("A9,,\"never closed,parent,pro,1,2024-01-01,\r\n");
        text.push_str(&plain);
        let whole = same_in_every_cut(text.as_bytes(), &CsvDialect::default());
        assert!(whole.starts_with("error: f.csv: line 263: a quoted field opened in this record runs on to line 463 and leaves it with 3 fields instead of 8"), "{whole}");
        assert!(
            whole.ends_with("an unbalanced quote? Nothing was applied"),
            "{whole}"
        );

        // A record of one lone quote, the same.
        let mut text = String::from_utf8(tricky_text(10)).unwrap();
        text.push_str("\"\n");
        text.push_str(&plain);
        let whole = same_in_every_cut(text.as_bytes(), &CsvDialect::default());
        assert!(whole.starts_with("error: f.csv: line "), "{whole}");
        assert!(
            whole.contains("leaves it with 1 fields instead of 8: an unbalanced quote?"),
            "{whole}"
        );
    }

    /// What a parse gives without byte offsets (a chunk's are its own):
    /// every column, line, raw row and row error, or the error that stopped
    /// the file.
    fn records(raw: &RawTable) -> String {
        let values = |c: &StringChunked| -> Vec<Option<String>> {
            c.iter().map(|v| v.map(str::to_string)).collect()
        };
        let columns: Vec<_> = raw.columns.iter().map(values).collect();
        let raws: Vec<String> = (0..raw.lines.len()).map(|r| raw.raw_row(r)).collect();
        format!(
            "records {}\ncolumns {columns:?}\nattributes {:?}\nlines {:?}\nraw {raws:?}\nerrors {:#?}\n",
            raw.records,
            raw.attributes.as_ref().map(values),
            raw.lines,
            raw.errors
        )
    }

    /// Reads `text` from a file in chunks of `chunk_bytes`, each chunk's
    /// records spelled out as `records` does, one after the other.
    fn read_in_chunks(text: &[u8], dialect: &CsvDialect, chunk_bytes: usize) -> String {
        let schema = Dataset::load("accounts", None).unwrap().schema;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.csv");
        std::fs::write(&path, text).unwrap();
        let mut chunks = match CsvChunks::open(
            &path,
            "f.csv",
            dialect,
            &Default::default(),
            &schema,
            chunk_bytes,
        ) {
            Ok(chunks) => chunks,
            Err(e) => return format!("error: {e}"),
        };
        let mut out = String::new();
        loop {
            match chunks.next_chunk() {
                Ok(Some(chunk)) => {
                    // Read again from the file, the chunk is the same.
                    let again = chunks
                        .reread(chunk.start, chunk.end, chunk.first_line)
                        .unwrap();
                    assert_eq!(records(&again), records(&chunk.table));
                    out.push_str(&records(&chunk.table));
                }
                Ok(None) => return out,
                Err(e) => return format!("{out}error: {e}"),
            }
        }
    }

    /// Chunks of any size, down to one byte, give the records a whole read
    /// gives, in order: same lines, raw rows, values and errors.
    #[test]
    fn chunks_of_any_size_read_what_a_whole_read_reads() {
        let schema = Dataset::load("accounts", None).unwrap().schema;
        let check = |text: &[u8], dialect: &CsvDialect| {
            let whole = parse_bytes(
                text.to_vec(),
                "f.csv",
                dialect,
                &Default::default(),
                &schema,
            );
            for chunk_bytes in [1, 2, 7, 64, 200, 1000, 1 << 20] {
                let chunked = read_in_chunks(text, dialect, chunk_bytes);
                // Joined, the chunks' records are the whole read's.
                let joined = |parts: &str, what: &str| -> Vec<String> {
                    parts
                        .lines()
                        .filter(|l| l.starts_with(what))
                        .map(str::to_string)
                        .collect()
                };
                match &whole {
                    Err(e) => assert!(
                        chunked.ends_with(&format!("error: {e}")),
                        "{chunk_bytes}: {chunked}"
                    ),
                    Ok(raw) => {
                        assert!(!chunked.contains("error: "), "{chunk_bytes}: {chunked}");
                        let whole = records(raw);
                        let count = |s: &str| -> u64 {
                            joined(s, "records ")
                                .iter()
                                .map(|l| l["records ".len()..].parse::<u64>().unwrap())
                                .sum()
                        };
                        assert_eq!(count(&chunked), raw.records, "{chunk_bytes}");
                        let lines = |s: &str| -> Vec<u64> {
                            joined(s, "lines ")
                                .iter()
                                .flat_map(|l| {
                                    l["lines [".len()..l.len() - 1]
                                        .split(", ")
                                        .filter(|n| !n.is_empty())
                                        .map(|n| n.parse::<u64>().unwrap())
                                        .collect::<Vec<_>>()
                                })
                                .collect()
                        };
                        assert_eq!(lines(&chunked), lines(&whole), "{chunk_bytes}");
                        for (row, line) in raw.lines.iter().enumerate() {
                            let raw_row = format!("{:?}", raw.raw_row(row));
                            assert!(
                                chunked.contains(&raw_row),
                                "{chunk_bytes}: line {line} {raw_row} missing"
                            );
                        }
                        for error in &raw.errors {
                            assert!(
                                chunked.contains(&format!("line: {},", error.line)),
                                "{chunk_bytes}: {error:?}"
                            );
                        }
                    }
                }
            }
        };
        check(&tricky_text(12), &CsvDialect::default());
        let mut unbalanced = String::from_utf8(tricky_text(5)).unwrap();
        unbalanced.push_str("A9,,\"never closed,parent,pro,1,2024-01-01,\r\n");
        unbalanced.push_str("P1,,plain,parent,pro,1,2024-01-01,\r\n");
        check(unbalanced.as_bytes(), &CsvDialect::default());
        check(b"\xEF\xBB\xBFAccountID,Name\n", &CsvDialect::default());
        check(b"\n\n  \n", &CsvDialect::default());
        check(
            b"\n\nAccountID,Name\r\nA1,x\r\n\r\nA2,\"y\r\nz\"",
            &CsvDialect::default(),
        );
    }

    /// Reading 64 bytes at a time finds the record starts quote-by-quote
    /// reading finds, and well-formed quoting is always read in blocks.
    #[test]
    fn record_starts_in_blocks_are_the_exact_ones() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |below: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below as u64) as usize
        };
        let starts = RecordStarts::new(b',', b'"');
        let mut in_blocks = 0;
        for case in 0..3000 {
            // Even cases: records as an export quotes them (every quote at a
            // field's start or end, doubled inside); odd: any bytes at all.
            let well_formed = case % 2 == 0;
            let mut text = Vec::new();
            let len = 1 + next(700);
            while text.len() < len {
                if well_formed {
                    let values: &[&[u8]] = &[b"a", b"x y", b",", b"\"\"", b"\n", b"\r\n", b""];
                    text.push(b'"');
                    for _ in 0..next(4) {
                        text.extend_from_slice(values[next(values.len())]);
                    }
                    text.push(b'"');
                    let ends: &[&[u8]] = &[b",", b",", b"\n", b"\r\n", b"\n\n"];
                    text.extend_from_slice(ends[next(ends.len())]);
                } else {
                    let bytes: &[u8] = b"ab,,\"\"\n\r";
                    text.push(bytes[next(bytes.len())]);
                }
            }
            let start = if well_formed { 0 } else { next(text.len()) };
            let mut targets: Vec<usize> = (0..1 + next(5)).map(|_| next(text.len() + 1)).collect();
            targets.sort_unstable();
            let exact = starts.near_exact(&text, start, &targets);
            assert_eq!(
                starts.near(&text, start, &targets),
                exact,
                "{:?} from {start} near {targets:?}",
                String::from_utf8_lossy(&text)
            );
            if let Some(cuts) = starts.near_in_blocks(&text, start, &targets) {
                assert_eq!(cuts, exact);
                in_blocks += 1;
            } else {
                assert!(!well_formed, "{:?}", String::from_utf8_lossy(&text));
            }
        }
        assert!(in_blocks >= 1500, "{in_blocks} cases were read in blocks");
    }

    /// A reproducible stream of random numbers from `seed` (not 0).
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    /// `text`'s body read with records hashed, and each record whose hash
    /// `stored` holds left out (its hash's place in `stored` plus one being
    /// its row hash), in `stretches` stretches.
    fn read_leaving_out(text: &[u8], stored: Option<&[u64]>, stretches: usize) -> Option<RawTable> {
        let schema = Dataset::load("accounts", None).unwrap().schema;
        let dialect = CsvDialect::default();
        let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text).to_vec();
        let (header, body_start, first_line) =
            read_header(&text, "f.csv", &dialect, &Default::default(), &schema).ok()?;
        let pairs: Vec<(u64, u64)> = stored
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(n, &hash)| (hash, n as u64 + 1))
            .collect();
        let raw = RawRows {
            seed: super::super::raw_rows::seed("a test"),
            index: stored.map(|_| std::sync::Arc::new(RawIndex::new(&pairs))),
            fields: crate::schema::validate::compared_field_indexes(&schema),
        };
        parse_body(
            text,
            body_start,
            first_line,
            &header,
            "f.csv",
            &dialect,
            &schema,
            Some(stretches),
            Some(&raw),
        )
        .ok()
    }

    /// Records found by their raw hash are exactly the records a full read
    /// keeps with that hash, with the lines and key values it gives them;
    /// the records kept around them keep their lines, bytes and values,
    /// whatever the quoting and line ends, in one stretch or several.
    #[test]
    fn records_left_out_by_their_raw_hash_are_those_a_full_read_keeps() {
        let mut next = xorshift(0x2545_F491_4F6C_DD1D);
        let alphabet: &[&[u8]] = &[
            b"a",
            b"b",
            b",",
            b",",
            b"\"",
            b"\"",
            b"\n",
            b"\r\n",
            b"\r",
            b"x,y",
            b"A4,,n,parent,pro,4,2024-01-01",
            b"A1,,n,parent,pro,1,2024-01-01\n",
            b"\"A2\",\"\",\"n, \"\"x\"\"\",\"parent\",\"pro\",\"2\",\"2024-01-01\"\r\n",
            b"A3,A1,\"two\nlines\",product,pro,3,2024-01-01\n",
        ];
        let mut texts = vec![tricky_text(30)];
        for _ in 0..300 {
            let mut text = b"AccountID,ParentID,Name,Type,Plan,Seats,CreatedDate\n".to_vec();
            // Mostly whole records, with stray bytes between some.
            for _ in 0..20 + next() % 100 {
                let pick = if next().is_multiple_of(4) {
                    next() % alphabet.len() as u64
                } else {
                    alphabet.len() as u64 - 1 - next() % 3
                };
                text.extend_from_slice(alphabet[pick as usize]);
            }
            texts.push(text);
        }
        let schema = Dataset::load("accounts", None).unwrap().schema;
        let compared = crate::schema::validate::compared_field_indexes(&schema);
        let mut left_out_in_all = 0;
        for text in &texts {
            let Some(full) = read_leaving_out(text, None, 1) else {
                continue;
            };
            assert_eq!(full.raw_hashes.len(), full.lines.len());
            // Every other record's hash is stored.
            let mut stored: Vec<u64> = Vec::new();
            for &hash in full.raw_hashes.iter().step_by(2) {
                if !stored.contains(&hash) {
                    stored.push(hash);
                }
            }
            let values = |table: &RawTable, row: usize| -> Vec<Option<String>> {
                compared
                    .iter()
                    .map(|&f| table.columns[f].get(row).map(str::to_string))
                    .collect()
            };
            let (mut kept, mut left) = (Vec::new(), Vec::new());
            for row in 0..full.lines.len() {
                let place = stored.iter().position(|&h| h == full.raw_hashes[row]);
                match place {
                    Some(place) => {
                        left.push((full.lines[row], values(&full, row), place as u64 + 1))
                    }
                    None => kept.push((full.lines[row], full.spans[row], values(&full, row))),
                }
            }
            for stretches in [1, 3] {
                let read = read_leaving_out(text, Some(&stored), stretches)
                    .unwrap_or_else(|| panic!("{stretches} stretches of {text:?}"));
                let read_kept: Vec<_> = (0..read.lines.len())
                    .map(|row| (read.lines[row], read.spans[row], values(&read, row)))
                    .collect();
                assert_eq!(read_kept, kept, "{stretches} stretches of {text:?}");
                let mut buffer = Vec::new();
                let read_left: Vec<_> = (0..read.unchanged.len())
                    .map(|row| {
                        read.unchanged.values(row, &mut buffer);
                        let values = buffer.iter().map(|v| v.map(str::to_string)).collect();
                        (
                            read.unchanged.lines[row],
                            values,
                            read.unchanged.stored[row],
                        )
                    })
                    .collect();
                assert_eq!(read_left, left, "{stretches} stretches of {text:?}");
                assert_eq!(read.records, full.records);
                assert_eq!(
                    read.errors, full.errors,
                    "{stretches} stretches of {text:?}"
                );
            }
            left_out_in_all += left.len();
        }
        assert!(left_out_in_all > 300, "{left_out_in_all}");
    }

    /// Random mixes of the bytes that matter (quotes, delimiters, CR, LF)
    /// parse the same cut or whole: whatever the quoting, cuts fall only
    /// where the reader from the start sees a record begin.
    #[test]
    fn random_quoting_parses_the_same_in_stretches() {
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
        let alphabet: &[&[u8]] = &[
            b"a", b"b", b",", b",", b"\"", b"\"", b"\n", b"\r\n", b"\r", b"x,y",
        ];
        for _ in 0..300 {
            let mut text = b"AccountID,ParentID,Name\n".to_vec();
            let len = 20 + next() % 200;
            for _ in 0..len {
                text.extend_from_slice(alphabet[(next() % alphabet.len() as u64) as usize]);
            }
            same_in_every_cut(&text, &CsvDialect::default());
        }
    }
}

//! Records of text cells -> a `RawTable`, for the drop formats that are not
//! CSV. Each reader (JSON, JSON Lines, xlsx) finds its header and records its
//! own way; from there on a record is a list of cells with a position and a
//! raw text, matched to the schema exactly as a CSV header and row are, so
//! validation and everything after it cannot tell the formats apart.

use std::collections::BTreeMap;

use polars::prelude::*;

use super::super::parse::{
    self, ATTRIBUTES, AttributeKey, HeaderMatch, MAX_HEADER_NAME_BYTES, ParseError, RawTable,
};
use super::super::validate::RowError;
use super::super::{Field, TableSchema};

/// Builds a `RawTable` one record at a time.
pub(crate) struct TableBuilder<'a> {
    file: &'a str,
    schema: &'a TableSchema,
    /// Schema field -> header column.
    layout: Vec<Option<usize>>,
    extras: Vec<AttributeKey>,
    extra_headers: Vec<String>,
    renamed: Vec<(String, String)>,
    key_fields: Vec<usize>,
    max_field_bytes: usize,
    builders: Vec<StringChunkedBuilder>,
    attributes: Option<StringChunkedBuilder>,
    lines: Vec<u64>,
    spans: Vec<(u64, u64)>,
    errors: Vec<RowError>,
    records: u64,
    /// Every kept or rejected record's raw text, one after the other.
    text: Vec<u8>,
    /// Scratch: a record as the `_attributes` writer reads it.
    record: csv::ByteRecord,
    json: String,
}

impl<'a> TableBuilder<'a> {
    /// A builder for records whose cells follow `header`, found on
    /// `header_line` (as errors name it: a line, a sheet row).
    pub(crate) fn new(
        file: &'a str,
        header: &[String],
        header_line: u64,
        mapping: &BTreeMap<String, String>,
        schema: &'a TableSchema,
        max_field_bytes: usize,
    ) -> Result<TableBuilder<'a>, ParseError> {
        let header_error = |message| ParseError::Header {
            file: file.to_string(),
            line: header_line,
            message,
        };
        if let Some((column, name)) = header
            .iter()
            .enumerate()
            .find(|(_, h)| h.len() > MAX_HEADER_NAME_BYTES)
        {
            return Err(header_error(format!(
                "the name of column {} is {} bytes long, more than the {MAX_HEADER_NAME_BYTES} a header name may have",
                column + 1,
                name.len()
            )));
        }
        let HeaderMatch {
            layout,
            extras,
            renamed,
        } = parse::match_header(header, mapping, schema).map_err(header_error)?;
        let key_fields = schema
            .primary_key()
            .iter()
            .filter_map(|k| schema.fields.iter().position(|f| &f.name == k))
            .collect();
        let attribute_keys = parse::attribute_keys(&extras);
        Ok(TableBuilder {
            file,
            schema,
            layout,
            attributes: (!attribute_keys.is_empty())
                .then(|| StringChunkedBuilder::new(ATTRIBUTES.into(), 1024)),
            extras: attribute_keys,
            extra_headers: extras.into_iter().map(|(_, h)| h).collect(),
            renamed,
            key_fields,
            max_field_bytes,
            builders: schema
                .fields
                .iter()
                .map(|f| StringChunkedBuilder::new(f.name.as_str().into(), 1024))
                .collect(),
            lines: Vec::new(),
            spans: Vec::new(),
            errors: Vec::new(),
            records: 0,
            text: Vec::new(),
            record: csv::ByteRecord::new(),
            json: String::new(),
        })
    }

    /// The schema field header column `column` feeds, if any.
    pub(crate) fn field_at(&self, column: usize) -> Option<&'a Field> {
        let schema: &'a TableSchema = self.schema;
        self.layout
            .iter()
            .position(|c| *c == Some(column))
            .map(|f| &schema.fields[f])
    }

    /// The record's key as written, when its key cells are there.
    fn key(&self, cells: &[Option<String>]) -> Option<String> {
        let parts: Vec<&str> = self
            .key_fields
            .iter()
            .filter_map(|&f| self.layout[f].and_then(|c| cells.get(c)?.as_deref()))
            .collect();
        (!parts.is_empty()).then(|| parts.join("|"))
    }

    /// Keeps `raw` and returns its span.
    fn keep_raw(&mut self, raw: &str) -> (u64, u64) {
        let start = self.text.len() as u64;
        self.text.extend_from_slice(raw.as_bytes());
        (start, self.text.len() as u64)
    }

    /// A record that cannot be read into cells at all: rejected as a whole.
    pub(crate) fn reject(
        &mut self,
        line: u64,
        cells: &[Option<String>],
        field: Option<&str>,
        message: String,
        raw: &str,
    ) {
        self.records += 1;
        let key = self.key(cells);
        let (start, end) = self.keep_raw(raw);
        let raw = parse::raw_text(&self.text, start, end);
        // Rejected records' text is kept in the error, not in the table.
        self.text.truncate(start as usize);
        self.errors.push(RowError {
            line,
            key,
            field: field.map(str::to_string),
            message,
            raw,
        });
    }

    /// One record: `cells[c]` is header column `c`'s value (`None`: empty
    /// or absent). `raw` is the record as the error report shows it.
    pub(crate) fn push(&mut self, line: u64, cells: &[Option<String>], raw: &str) {
        let limit = self.max_field_bytes;
        for (field, column) in self.schema.fields.iter().zip(&self.layout) {
            if let Some(value) = column.and_then(|c| cells.get(c)?.as_deref())
                && value.len() > limit
            {
                let message = format!(
                    "value is {} bytes, more than csv.max_field_bytes ({limit})",
                    value.len()
                );
                let name = field.name.clone();
                return self.reject(line, cells, Some(&name), message, raw);
            }
        }
        let has_attributes = if self.attributes.is_some() {
            self.record.clear();
            for cell in cells {
                self.record
                    .push_field(cell.as_deref().unwrap_or_default().as_bytes());
            }
            match parse::attributes_json(&self.record, &self.extras, limit, &mut self.json) {
                Ok(has) => has,
                Err((field, message)) => {
                    return self.reject(line, cells, field.as_deref(), message, raw);
                }
            }
        } else {
            false
        };
        self.records += 1;
        for (builder, column) in self.builders.iter_mut().zip(&self.layout) {
            match column.and_then(|c| cells.get(c)?.as_deref()) {
                Some(v) => builder.append_value(v),
                None => builder.append_null(),
            }
        }
        if let Some(builder) = self.attributes.as_mut() {
            if has_attributes {
                builder.append_value(&self.json);
            } else {
                builder.append_null();
            }
        }
        self.lines.push(line);
        let span = self.keep_raw(raw);
        self.spans.push(span);
    }

    pub(crate) fn finish(mut self) -> RawTable {
        // Errors in file order, as the CSV reader gives them.
        self.errors.sort_by_key(|e| e.line);
        RawTable {
            file: self.file.to_string(),
            columns: self.builders.into_iter().map(|b| b.finish()).collect(),
            attributes: self.attributes.map(|b| b.finish()),
            lines: self.lines,
            spans: self.spans,
            errors: self.errors,
            records: self.records,
            ignored_columns: self.extra_headers,
            renamed_columns: self.renamed,
            text: self.text,
            raw_hashes: Vec::new(),
            unchanged: Default::default(),
        }
    }
}

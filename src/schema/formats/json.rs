//! JSON drops: one array of objects (`.json`) or one object a line (JSON
//! Lines, `.jsonl`/`.ndjson`). An object's keys are the header (matched to
//! schema fields as loosely as CSV headers); its values become the text the
//! validator reads. The file is read one object at a time, never as one
//! value tree: memory for the parse is one object's, whatever the file's
//! size. The keys are the union over every object in the order first seen,
//! which takes a first pass over the objects before the records are built.
//!
//! Nested objects and arrays are no value for a schema field (a row error
//! names the field); under a key the schema does not know they are kept in
//! `_attributes` as their JSON text.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::super::{Field, FieldType, TableSchema};
use super::DropError;
use super::records::TableBuilder;
use crate::schema::parse::{ParseError, RawTable};

/// Distinct keys accepted across a file's objects: a header, not a payload.
const MAX_KEYS: usize = 10_000;

/// One object (or whatever stood in its place) and where it is.
struct Element {
    /// The line it starts on.
    line: u64,
    /// Its text in the file.
    start: usize,
    end: usize,
    /// The value, or for JSON Lines a line that is not JSON: (column, message).
    value: Result<Value, (u64, String)>,
}

/// `serde_json`'s message without its own position (ours is in the file,
/// not in the slice it was given).
fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rsplit_once(" at line ") {
        Some((message, _)) => message.to_string(),
        None => text,
    }
}

/// Walks the elements of a top-level JSON array, one at a time.
struct ArrayElements<'t> {
    text: &'t [u8],
    file: &'t str,
    pos: usize,
    /// Line of `pos`, and the byte where that line starts.
    line: u64,
    line_start: usize,
    done: bool,
}

impl<'t> ArrayElements<'t> {
    fn new(text: &'t [u8], file: &'t str) -> Result<ArrayElements<'t>, DropError> {
        let mut walk = ArrayElements {
            text,
            file,
            pos: 0,
            line: 1,
            line_start: 0,
            done: false,
        };
        if text.starts_with(b"\xEF\xBB\xBF") {
            walk.pos = 3;
            walk.line_start = 3;
        }
        walk.skip_space();
        match walk.text.get(walk.pos) {
            None => {
                return Err(ParseError::Empty {
                    file: file.to_string(),
                }
                .into());
            }
            Some(b'[') => walk.pos += 1,
            Some(b'{') => {
                return Err(walk.malformed(
                    "the file holds an object where a .json drop holds an array of objects; if it has one object a line, name it .jsonl or set format = \"jsonl\"",
                ));
            }
            Some(_) => return Err(walk.malformed("expected an array of objects (`[`)")),
        }
        Ok(walk)
    }

    fn skip_space(&mut self) {
        while let Some(&b) = self.text.get(self.pos) {
            match b {
                b'\n' => {
                    self.line += 1;
                    self.line_start = self.pos + 1;
                }
                b' ' | b'\t' | b'\r' => {}
                _ => break,
            }
            self.pos += 1;
        }
    }

    fn column(&self) -> u64 {
        (self.pos - self.line_start) as u64 + 1
    }

    fn malformed(&self, message: &str) -> DropError {
        DropError::content(
            self.file,
            format!(
                "line {}, column {}: malformed JSON: {message}; nothing was applied",
                self.line,
                self.column()
            ),
        )
    }

    /// Moves past `text[self.pos..end]`, counting its lines.
    fn advance_to(&mut self, end: usize) {
        for (i, &b) in self.text[self.pos..end].iter().enumerate() {
            if b == b'\n' {
                self.line += 1;
                self.line_start = self.pos + i + 1;
            }
        }
        self.pos = end;
    }
}

impl Iterator for ArrayElements<'_> {
    type Item = Result<Element, DropError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.skip_space();
        if self.text.get(self.pos) == Some(&b']') {
            // Only an empty array or the end after the last element get
            // here: a `]` after a `,` is caught where the `,` is read.
            self.pos += 1;
            self.done = true;
            self.skip_space();
            if self.pos < self.text.len() {
                return Some(Err(self.malformed("text after the array's closing `]`")));
            }
            return None;
        }
        let (start, line) = (self.pos, self.line);
        let mut values =
            serde_json::Deserializer::from_slice(&self.text[start..]).into_iter::<Value>();
        let value = match values.next() {
            Some(Ok(value)) => value,
            Some(Err(e)) => {
                self.done = true;
                // The error's position is within the slice from `start`.
                let (e_line, e_column) = (e.line() as u64, e.column() as u64);
                let (line, column) = if e_line <= 1 {
                    (line, (start - self.line_start) as u64 + e_column.max(1))
                } else {
                    (line + e_line - 1, e_column.max(1))
                };
                return Some(Err(DropError::content(
                    self.file,
                    format!(
                        "line {line}, column {column}: malformed JSON: {}; nothing was applied",
                        json_message(&e)
                    ),
                )));
            }
            None => {
                self.done = true;
                return Some(Err(self.malformed("the array is not closed (`]` missing)")));
            }
        };
        let end = start + values.byte_offset();
        self.advance_to(end);
        self.skip_space();
        match self.text.get(self.pos) {
            Some(b',') => {
                self.pos += 1;
                self.skip_space();
                if self.text.get(self.pos) == Some(&b']') {
                    self.done = true;
                    return Some(Err(self.malformed("a `,` before the closing `]`")));
                }
            }
            Some(b']') => {}
            None => {
                self.done = true;
                return Some(Err(self.malformed("the array is not closed (`]` missing)")));
            }
            Some(_) => {
                self.done = true;
                return Some(Err(self.malformed("expected `,` or `]` after an element")));
            }
        }
        Some(Ok(Element {
            line,
            start,
            end,
            value: Ok(value),
        }))
    }
}

/// The lines of a JSON Lines file that hold something.
fn lines_of(text: &[u8]) -> impl Iterator<Item = Element> + '_ {
    let mut start = 0usize;
    let body = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    let offset = text.len() - body.len();
    body.split(|&b| b == b'\n')
        .enumerate()
        .filter_map(move |(i, line)| {
            let line_start = start;
            start += line.len() + 1;
            let trimmed = line.strip_suffix(b"\r").unwrap_or(line);
            if trimmed.iter().all(u8::is_ascii_whitespace) {
                return None;
            }
            let value = serde_json::from_slice::<Value>(trimmed)
                .map_err(|e| (e.column() as u64, json_message(&e)));
            Some(Element {
                line: i as u64 + 1,
                start: offset + line_start,
                end: offset + line_start + trimmed.len(),
                value,
            })
        })
}

pub(super) fn read_array(
    text: &[u8],
    file: &str,
    mapping: &BTreeMap<String, String>,
    schema: &TableSchema,
    max_field_bytes: usize,
) -> Result<RawTable, DropError> {
    // First pass: the keys, and that the whole file is well-formed, so a
    // broken file is refused before any work and loses nothing.
    let mut keys = KeyOrder::new(file);
    let mut first_line = None;
    for element in ArrayElements::new(text, file)? {
        let element = element?;
        first_line.get_or_insert(element.line);
        if let Ok(Value::Object(object)) = &element.value {
            keys.add(object, element.line)?;
        }
    }
    let Some(first_line) = first_line else {
        return Err(ParseError::Empty {
            file: file.to_string(),
        }
        .into());
    };
    let mut table = Records::new(file, keys, first_line, mapping, schema, max_field_bytes)?;
    for element in ArrayElements::new(text, file)? {
        table.add(element?, text);
    }
    Ok(table.builder.finish())
}

pub(super) fn read_lines(
    text: &[u8],
    file: &str,
    mapping: &BTreeMap<String, String>,
    schema: &TableSchema,
    max_field_bytes: usize,
) -> Result<RawTable, DropError> {
    let mut keys = KeyOrder::new(file);
    let mut first_line = None;
    for element in lines_of(text) {
        first_line.get_or_insert(element.line);
        if let Ok(Value::Object(object)) = &element.value {
            keys.add(object, element.line)?;
        }
    }
    let Some(first_line) = first_line else {
        return Err(ParseError::Empty {
            file: file.to_string(),
        }
        .into());
    };
    let mut table = Records::new(file, keys, first_line, mapping, schema, max_field_bytes)?;
    for element in lines_of(text) {
        table.add(element, text);
    }
    Ok(table.builder.finish())
}

/// Every key of a file's objects, in the order first seen.
struct KeyOrder<'f> {
    file: &'f str,
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl<'f> KeyOrder<'f> {
    fn new(file: &'f str) -> KeyOrder<'f> {
        KeyOrder {
            file,
            names: Vec::new(),
            index: HashMap::new(),
        }
    }

    fn add(&mut self, object: &serde_json::Map<String, Value>, line: u64) -> Result<(), DropError> {
        for key in object.keys() {
            if !self.index.contains_key(key) {
                if self.names.len() == MAX_KEYS {
                    return Err(DropError::content(
                        self.file,
                        format!(
                            "line {line}: the objects have more than {MAX_KEYS} different keys; they are not records of one kind"
                        ),
                    ));
                }
                self.index.insert(key.clone(), self.names.len());
                self.names.push(key.clone());
            }
        }
        Ok(())
    }
}

/// The second pass: each object into cells.
struct Records<'a> {
    builder: TableBuilder<'a>,
    index: HashMap<String, usize>,
    /// Header column -> the schema field it feeds.
    fields: Vec<Option<&'a Field>>,
    cells: Vec<Option<String>>,
}

impl<'a> Records<'a> {
    fn new(
        file: &'a str,
        keys: KeyOrder<'_>,
        first_line: u64,
        mapping: &BTreeMap<String, String>,
        schema: &'a TableSchema,
        max_field_bytes: usize,
    ) -> Result<Records<'a>, DropError> {
        let builder = TableBuilder::new(
            file,
            &keys.names,
            first_line,
            mapping,
            schema,
            max_field_bytes,
        )?;
        let fields = (0..keys.names.len()).map(|c| builder.field_at(c)).collect();
        Ok(Records {
            cells: vec![None; keys.names.len()],
            builder,
            index: keys.index,
            fields,
        })
    }

    fn add(&mut self, element: Element, text: &[u8]) {
        let raw = String::from_utf8_lossy(&text[element.start..element.end]);
        self.cells.iter_mut().for_each(|c| *c = None);
        let object = match element.value {
            Ok(Value::Object(object)) => object,
            Ok(other) => {
                let message = format!(
                    "{} where a record (a JSON object) was expected",
                    kind_of(&other)
                );
                return self
                    .builder
                    .reject(element.line, &self.cells, None, message, &raw);
            }
            Err((column, message)) => {
                let message = format!("malformed JSON at column {column}: {message}");
                return self
                    .builder
                    .reject(element.line, &self.cells, None, message, &raw);
            }
        };
        let mut nested: Option<(String, String)> = None;
        for (key, value) in &object {
            let Some(&column) = self.index.get(key) else {
                continue;
            };
            match cell_text(value, self.fields[column]) {
                Ok(text) => self.cells[column] = text,
                Err(message) => {
                    nested.get_or_insert((
                        self.fields[column].map_or(key.clone(), |f| f.name.clone()),
                        message,
                    ));
                }
            }
        }
        match nested {
            Some((field, message)) => {
                self.builder
                    .reject(element.line, &self.cells, Some(&field), message, &raw)
            }
            None => self.builder.push(element.line, &self.cells, &raw),
        }
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON value as the text the validator reads for `field` (`None` for a
/// key the schema does not know). Null is an empty cell.
fn cell_text(value: &Value, field: Option<&Field>) -> Result<Option<String>, String> {
    Ok(match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(number_text(n)),
        Value::Bool(b) => Some(boolean_text(*b, field)),
        Value::Array(_) | Value::Object(_) => match field {
            // Kept whole in `_attributes`, as the JSON it is.
            None => Some(value.to_string()),
            Some(field) => {
                return Err(format!(
                    "{} is no value for a {} field; nested JSON is kept only under keys the schema does not name (in _attributes)",
                    kind_of(value),
                    field.kind.name()
                ));
            }
        },
    })
}

/// A number as written, less float noise: `12.0` reads `12`.
pub(super) fn number_text(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() => float_text(f),
        _ => n.to_string(),
    }
}

/// A float with 15 significant digits at most (what a spreadsheet shows),
/// and no `.0` for a whole number: `0.1 + 0.2` reads `0.3`, `12.0` reads `12`.
pub(super) fn float_text(f: f64) -> String {
    if !f.is_finite() {
        return f.to_string();
    }
    let rounded: f64 = format!("{f:.14e}").parse().unwrap_or(f);
    let magnitude = rounded.abs();
    if rounded.fract() == 0.0 && magnitude < 1e15 {
        format!("{}", rounded as i64)
    } else if !(1e-6..1e15).contains(&magnitude) {
        // Not three hundred digits for 1.5e300.
        format!("{rounded:e}")
    } else {
        format!("{rounded}")
    }
}

/// `true`/`false` as the field spells them (its first `trueValues` or
/// `falseValues`), so a boolean field with `yes`/`no` takes JSON booleans.
pub(super) fn boolean_text(b: bool, field: Option<&Field>) -> String {
    let spelled = field
        .filter(|f| f.kind == FieldType::Boolean)
        .and_then(|f| {
            let values = if b { &f.true_values } else { &f.false_values };
            values.as_ref()?.first().cloned()
        });
    spelled.unwrap_or_else(|| b.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_without_float_noise() {
        for (json, text) in [
            ("12", "12"),
            ("12.0", "12"),
            ("-3.50", "-3.5"),
            ("0.30000000000000004", "0.3"),
            ("1e3", "1000"),
            ("123456789012345678", "123456789012345678"),
            ("1.5e300", "1.5e300"),
            ("0.0000001", "1e-7"),
        ] {
            let n: serde_json::Number = serde_json::from_str(json).unwrap();
            assert_eq!(number_text(&n), text, "{json}");
        }
    }

    #[test]
    fn array_elements_know_their_line_and_text() {
        let text = b"[\n  {\"a\": 1},\n  {\"a\":\n 2}\n]\n";
        let elements: Vec<Element> = ArrayElements::new(text, "f.json")
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(elements.len(), 2);
        assert_eq!(elements[0].line, 2);
        assert_eq!(&text[elements[0].start..elements[0].end], b"{\"a\": 1}");
        assert_eq!(elements[1].line, 3);
        assert_eq!(&text[elements[1].start..elements[1].end], b"{\"a\":\n 2}");
    }

    #[test]
    fn malformed_json_names_its_line_and_column() {
        let text = b"[\n  {\"a\": 1},\n  {\"a\": tru}\n]";
        let err = ArrayElements::new(text, "f.json")
            .unwrap()
            .find_map(Result::err)
            .unwrap()
            .to_string();
        assert!(err.starts_with("f.json: line 3, column "), "{err}");
        assert!(err.contains("malformed JSON"), "{err}");
        for (text, says) in [
            (&b"[{\"a\": 1},]"[..], "a `,` before the closing `]`"),
            (b"[{\"a\": 1}", "not closed"),
            (b"[{\"a\": 1}] x", "text after"),
            (b"{\"a\": 1}", "jsonl"),
        ] {
            let err = match ArrayElements::new(text, "f.json") {
                Err(e) => e.to_string(),
                Ok(mut walk) => walk.find_map(Result::err).unwrap().to_string(),
            };
            assert!(err.contains(says), "{err}");
        }
    }
}

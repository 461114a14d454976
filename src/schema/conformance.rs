//! Table Schema conformance, cell by cell: a field descriptor, a cell, and
//! whether the specification (v2, with frictionless-py as a second opinion
//! where the text is plain) calls the cell valid. Every type and constraint
//! dropsync supports has rows here; what it refuses has rows in `REFUSED`.

use super::parse::parse_bytes;
use super::validate::{Context, ValidRows, validate};
use super::{Dataset, SchemaError};
use crate::config::CsvDialect;

/// (field descriptor without its name, cell, valid per the spec).
#[rustfmt::skip]
const CELLS: &[(&str, &str, bool)] = &[
    // string and its formats
    (r#"{"type": "string"}"#, "anything at all", true),
    (r#"{"type": "string", "format": "email"}"#, "a@b.com", true),
    (r#"{"type": "string", "format": "email"}"#, "first.last+tag@mail.example.org", true),
    (r#"{"type": "string", "format": "email"}"#, "\"odd local\"@b.com", true),
    (r#"{"type": "string", "format": "email"}"#, "a@[192.0.2.1]", true),
    (r#"{"type": "string", "format": "email"}"#, "a@@b.com", false),
    (r#"{"type": "string", "format": "email"}"#, "x@y@z.example", false),
    (r#"{"type": "string", "format": "email"}"#, "<a@b.com>", false),
    (r#"{"type": "string", "format": "email"}"#, "Ann <a@b.com>", false),
    (r#"{"type": "string", "format": "email"}"#, "a@b.com,c@d.com", false),
    (r#"{"type": "string", "format": "email"}"#, "a@b.com c@d.com", false),
    (r#"{"type": "string", "format": "email"}"#, "a..b@c.com", false),
    (r#"{"type": "string", "format": "email"}"#, ".a@c.com", false),
    (r#"{"type": "string", "format": "email"}"#, "a@-c.com", false),
    (r#"{"type": "string", "format": "email"}"#, "a@c..com", false),
    (r#"{"type": "string", "format": "email"}"#, "a@localhost", false),
    (r#"{"type": "string", "format": "email"}"#, "@b.com", false),
    (r#"{"type": "string", "format": "uri"}"#, "http://x.y/path?q=1", true),
    (r#"{"type": "string", "format": "uri"}"#, "mailto:a@b.com", true),
    (r#"{"type": "string", "format": "uri"}"#, "1http://x.y", false),
    (r#"{"type": "string", "format": "uri"}"#, "http://x y", false),
    (r#"{"type": "string", "format": "uri"}"#, "no scheme", false),
    (r#"{"type": "string", "format": "uuid"}"#, "67e55044-10b1-426f-9247-bb680e5fe0c8", true),
    (r#"{"type": "string", "format": "uuid"}"#, "67e55044", false),
    (r#"{"type": "string", "format": "binary"}"#, "aGVsbG8=", true),
    (r#"{"type": "string", "format": "binary"}"#, "aGVsbG8gd29ybGQ=", true),
    (r#"{"type": "string", "format": "binary"}"#, "aGVsbG8", false),
    (r#"{"type": "string", "format": "binary"}"#, "not base64!", false),
    // integer
    (r#"{"type": "integer"}"#, "42", true),
    (r#"{"type": "integer"}"#, "-7", true),
    (r#"{"type": "integer"}"#, "01", true),
    (r#"{"type": "integer"}"#, "1.5", false),
    (r#"{"type": "integer"}"#, "1,000", false),
    (r#"{"type": "integer", "groupChar": ","}"#, "1,000", true),
    (r#"{"type": "integer", "bareNumber": false}"#, "EUR 95", true),
    (r#"{"type": "integer"}"#, "EUR 95", false),
    // number
    (r#"{"type": "number"}"#, "1.5", true),
    (r#"{"type": "number"}"#, "-1e3", true),
    (r#"{"type": "number"}"#, "NaN", true),
    (r#"{"type": "number"}"#, "nan", true),
    (r#"{"type": "number"}"#, "NAN", true),
    (r#"{"type": "number"}"#, "INF", true),
    (r#"{"type": "number"}"#, "inf", true),
    (r#"{"type": "number"}"#, "-inf", true),
    (r#"{"type": "number"}"#, "-INF", true),
    (r#"{"type": "number"}"#, "infinity and beyond", false),
    (r#"{"type": "number"}"#, "1,5", false),
    (r#"{"type": "number", "decimalChar": ","}"#, "1,5", true),
    (r#"{"type": "number", "decimalChar": ","}"#, "1.5", false),
    (r#"{"type": "number", "decimalChar": ","}"#, "1.000", false),
    (r#"{"type": "number", "decimalChar": ",", "groupChar": "."}"#, "1.000,5", true),
    (r#"{"type": "number", "groupChar": ","}"#, "1,200.50", true),
    (r#"{"type": "number", "bareNumber": false}"#, "95%", true),
    (r#"{"type": "number", "bareNumber": false}"#, "€1,200.50", false),
    (r#"{"type": "number", "bareNumber": false, "groupChar": ","}"#, "€1,200.50", true),
    // boolean
    (r#"{"type": "boolean"}"#, "true", true),
    (r#"{"type": "boolean"}"#, "FALSE", true),
    (r#"{"type": "boolean"}"#, "0", true),
    (r#"{"type": "boolean"}"#, "yes", false),
    (r#"{"type": "boolean", "trueValues": ["yes"], "falseValues": ["no"]}"#, "yes", true),
    (r#"{"type": "boolean", "trueValues": ["yes"], "falseValues": ["no"]}"#, "true", false),
    // date
    (r#"{"type": "date"}"#, "2026-01-31", true),
    (r#"{"type": "date"}"#, "2026-02-30", false),
    (r#"{"type": "date"}"#, "31/01/2026", false),
    (r#"{"type": "date", "format": "%d/%m/%Y"}"#, "31/01/2026", true),
    (r#"{"type": "date", "format": "fmt:%d/%m/%Y"}"#, "31/01/2026", true),
    (r#"{"type": "date", "format": "fmt:%d/%m/%Y"}"#, "2026-01-31", false),
    (r#"{"type": "date", "format": "any"}"#, "31.01.2026", true),
    // datetime
    (r#"{"type": "datetime"}"#, "2026-01-31T10:20:30Z", true),
    (r#"{"type": "datetime"}"#, "2026-01-31T10:20:30", true),
    (r#"{"type": "datetime"}"#, "2026-01-31T10:20:30.250+02:00", true),
    (r#"{"type": "datetime"}"#, "2026-01-31T10:20", false),
    (r#"{"type": "datetime"}"#, "2026-01-31T10:20Z", false),
    (r#"{"type": "datetime"}"#, "2026-01-31", false),
    (r#"{"type": "datetime", "format": "any"}"#, "2026-01-31T10:20", true),
    (r#"{"type": "datetime", "format": "any"}"#, "2026-01-31T10:20Z", true),
    (r#"{"type": "datetime", "format": "%d/%m/%Y %H:%M"}"#, "31/01/2026 10:20", true),
    (r#"{"type": "datetime", "format": "fmt:%d/%m/%Y %H:%M"}"#, "31/01/2026 10:20", true),
    // time
    (r#"{"type": "time"}"#, "10:20:30", true),
    (r#"{"type": "time"}"#, "10:20:30.5", true),
    (r#"{"type": "time"}"#, "10:20:30Z", true),
    (r#"{"type": "time"}"#, "10:20", false),
    (r#"{"type": "time"}"#, "25:00:00", false),
    (r#"{"type": "time", "format": "%H%M"}"#, "1020", true),
    (r#"{"type": "time", "format": "any"}"#, "10:20", true),
    // year
    (r#"{"type": "year"}"#, "2026", true),
    (r#"{"type": "year"}"#, "26", false),
    (r#"{"type": "year"}"#, "2026-01", false),
    // yearmonth
    (r#"{"type": "yearmonth"}"#, "2026-01", true),
    (r#"{"type": "yearmonth"}"#, "2026-13", false),
    (r#"{"type": "yearmonth"}"#, "2026-1", false),
    (r#"{"type": "yearmonth"}"#, "2026", false),
    // duration
    (r#"{"type": "duration"}"#, "P1Y2M10DT2H30M", true),
    (r#"{"type": "duration"}"#, "PT0.5S", true),
    (r#"{"type": "duration"}"#, "P2W", true),
    (r#"{"type": "duration"}"#, "-P1D", true),
    (r#"{"type": "duration"}"#, "P", false),
    (r#"{"type": "duration"}"#, "PT", false),
    (r#"{"type": "duration"}"#, "P1DT", false),
    (r#"{"type": "duration"}"#, "P1M1Y", false),
    (r#"{"type": "duration"}"#, "1 day", false),
    (r#"{"type": "duration"}"#, "P1.5D", false),
    // any
    (r#"{"type": "any"}"#, "whatever", true),
    // required, and missing values
    (r#"{"type": "integer", "constraints": {"required": true}}"#, "", false),
    (r#"{"type": "integer"}"#, "", true),
    // enum: the parsed value is compared
    (r#"{"type": "string", "constraints": {"enum": ["a", "b"]}}"#, "a", true),
    (r#"{"type": "string", "constraints": {"enum": ["a", "b"]}}"#, "A", false),
    (r#"{"type": "integer", "constraints": {"enum": ["1", "2"]}}"#, "01", true),
    (r#"{"type": "integer", "constraints": {"enum": [1, 2]}}"#, "2", true),
    (r#"{"type": "integer", "constraints": {"enum": [1, 2]}}"#, "3", false),
    (r#"{"type": "number", "constraints": {"enum": [1.5, 2]}}"#, "2.0", true),
    (r#"{"type": "number", "constraints": {"enum": [1.5, 2]}}"#, "1.50", true),
    (r#"{"type": "number", "constraints": {"enum": [1.5, 2]}}"#, "2.5", false),
    (r#"{"type": "boolean", "constraints": {"enum": [true]}}"#, "TRUE", true),
    (r#"{"type": "boolean", "constraints": {"enum": [true]}}"#, "false", false),
    (r#"{"type": "date", "constraints": {"enum": ["2026-01-31"]}}"#, "2026-01-31", true),
    (r#"{"type": "date", "format": "%d/%m/%Y", "constraints": {"enum": ["2026-01-31"]}}"#, "31/01/2026", true),
    (r#"{"type": "datetime", "constraints": {"enum": ["2026-01-31T10:00:00Z"]}}"#, "2026-01-31T11:00:00+01:00", true),
    (r#"{"type": "year", "constraints": {"enum": [2025, 2026]}}"#, "2026", true),
    (r#"{"type": "duration", "constraints": {"enum": ["P7D"]}}"#, "P1W", true),
    // categories
    (r#"{"type": "string", "categories": ["red", "green"]}"#, "red", true),
    (r#"{"type": "string", "categories": ["red", "green"]}"#, "blue", false),
    (r#"{"type": "integer", "categories": [{"value": 1, "label": "one"}, {"value": 2, "label": "two"}]}"#, "02", true),
    (r#"{"type": "integer", "categories": [{"value": 1, "label": "one"}]}"#, "3", false),
    // pattern, lengths
    (r#"{"type": "string", "constraints": {"pattern": "[A-Z]{2}[0-9]+"}}"#, "AB12", true),
    (r#"{"type": "string", "constraints": {"pattern": "[A-Z]{2}[0-9]+"}}"#, "xAB12", false),
    (r#"{"type": "string", "constraints": {"minLength": 2, "maxLength": 3}}"#, "ab", true),
    (r#"{"type": "string", "constraints": {"minLength": 2}}"#, "a", false),
    (r#"{"type": "string", "constraints": {"maxLength": 3}}"#, "abcd", false),
    // minimum and maximum, inclusive and exclusive
    (r#"{"type": "integer", "constraints": {"minimum": 1, "maximum": 10}}"#, "10", true),
    (r#"{"type": "integer", "constraints": {"minimum": 1}}"#, "0", false),
    (r#"{"type": "integer", "constraints": {"maximum": 10}}"#, "11", false),
    (r#"{"type": "integer", "constraints": {"exclusiveMinimum": 1}}"#, "1", false),
    (r#"{"type": "integer", "constraints": {"exclusiveMinimum": 1}}"#, "2", true),
    (r#"{"type": "integer", "constraints": {"exclusiveMaximum": 10}}"#, "10", false),
    (r#"{"type": "integer", "constraints": {"exclusiveMaximum": 10}}"#, "9", true),
    (r#"{"type": "number", "constraints": {"exclusiveMaximum": 1.5}}"#, "1.5", false),
    (r#"{"type": "number", "constraints": {"minimum": 0.5}}"#, "0.25", false),
    (r#"{"type": "date", "constraints": {"minimum": "2026-01-01"}}"#, "2025-12-31", false),
    (r#"{"type": "date", "constraints": {"exclusiveMaximum": "2026-01-01"}}"#, "2025-12-31", true),
    (r#"{"type": "datetime", "constraints": {"maximum": "2026-01-01T00:00:00Z"}}"#, "2026-01-01T00:00:01Z", false),
    (r#"{"type": "datetime", "constraints": {"maximum": "2026-01-01T00:00:00Z"}}"#, "2026-01-01T00:59:59+01:00", true),
    (r#"{"type": "time", "constraints": {"minimum": "09:00:00"}}"#, "08:59:59", false),
    (r#"{"type": "time", "constraints": {"minimum": "09:00:00"}}"#, "09:00:00", true),
    (r#"{"type": "year", "constraints": {"maximum": 2026}}"#, "2027", false),
    (r#"{"type": "yearmonth", "constraints": {"minimum": "2026-02"}}"#, "2026-01", false),
    (r#"{"type": "yearmonth", "constraints": {"exclusiveMinimum": "2026-01"}}"#, "2026-02", true),
];

/// Schemas dropsync refuses, with what the error must name.
#[rustfmt::skip]
const REFUSED: &[(&str, &str)] = &[
    (r#"{"type": "geopoint"}"#, "`geopoint` is not supported"),
    (r#"{"type": "geojson"}"#, "`geojson` is not supported"),
    (r#"{"type": "object"}"#, "`object` is not supported"),
    (r#"{"type": "array"}"#, "`array` is not supported"),
    (r#"{"type": "list"}"#, "`list` is not supported"),
    (r#"{"type": "strnig"}"#, "unknown field type `strnig`"),
    (r#"{"type": "string", "format": "hostname"}"#, "string format `hostname`"),
    (r#"{"type": "integer", "format": "weird"}"#, "format `weird`"),
    (r#"{"type": "date", "format": "%Q"}"#, "not a valid strftime pattern"),
    (r#"{"type": "string", "constraints": {"jsonSchema": {}}}"#, "jsonSchema"),
    (r#"{"type": "string", "constraints": {"minimum": 1}}"#, "`minimum` is not supported for type string"),
    (r#"{"type": "duration", "constraints": {"maximum": "P1D"}}"#, "`maximum` is not supported for type duration"),
    (r#"{"type": "boolean", "constraints": {"exclusiveMinimum": 1}}"#, "`exclusiveMinimum` is not supported"),
    (r#"{"type": "integer", "constraints": {"minimum": "ten"}}"#, "minimum: `ten` is not of type integer"),
    (r#"{"type": "integer", "constraints": {"enum": ["one"]}}"#, "enum: "),
    (r#"{"type": "date", "categories": ["2026-01-01"]}"#, "`categories` is not supported for type date"),
];

fn load(fields: &str, extra: &str) -> Result<Dataset, SchemaError> {
    let text = format!(r#"{{"fields": {fields}{extra}}}"#);
    Dataset::from_json("conformance", &text, "test schema")
}

/// The lines (2 = the first data row) `rows` are rejected on.
fn rejected_lines(dataset: &Dataset, header: &str, rows: &[&str]) -> Vec<u64> {
    let mut text = format!("{header}\n");
    for row in rows {
        text.push_str(row);
        text.push('\n');
    }
    let raw = parse_bytes(
        text.into_bytes(),
        "conformance.csv",
        &CsvDialect::default(),
        &Default::default(),
        &dataset.schema,
    )
    .expect("a well-formed file");
    let valid: ValidRows = validate(&raw, &dataset.schema, &Context::default());
    let mut lines: Vec<u64> = valid.errors.iter().map(|e| e.line).collect();
    lines.dedup();
    lines
}

fn quoted(cell: &str) -> String {
    format!("\"{}\"", cell.replace('"', "\"\""))
}

#[test]
fn cells_are_valid_as_the_spec_says() {
    let mut wrong = Vec::new();
    for (descriptor, cell, valid) in CELLS {
        let field = descriptor.replacen('{', r#"{"name": "value", "#, 1);
        let dataset = match load(&format!("[{field}]"), "") {
            Ok(d) => d,
            Err(e) => {
                wrong.push(format!("{descriptor}: schema refused: {e}"));
                continue;
            }
        };
        let accepted = rejected_lines(&dataset, "value", &[&quoted(cell)]).is_empty();
        if accepted != *valid {
            wrong.push(format!(
                "{descriptor} `{cell}`: {} but the spec says {}",
                if accepted { "accepted" } else { "rejected" },
                if *valid { "valid" } else { "invalid" }
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn unsupported_features_are_refused_by_name() {
    let mut wrong = Vec::new();
    for (descriptor, expected) in REFUSED {
        let field = descriptor.replacen('{', r#"{"name": "value", "#, 1);
        match load(&format!("[{field}]"), "") {
            Ok(_) => wrong.push(format!("{descriptor}: loaded")),
            Err(e) if !e.to_string().contains(expected) => {
                wrong.push(format!("{descriptor}: `{e}` does not say `{expected}`"))
            }
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// (fields, schema-level extra, header, rows, lines rejected).
type RowsCase = (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static [u64],
);

/// Uniqueness, keys and references across rows compare typed values.
#[test]
fn rows_are_compared_by_typed_value() {
    let cases: &[RowsCase] = &[
        (
            r#"[{"name": "n", "type": "integer", "constraints": {"unique": true}}]"#,
            "",
            "n",
            &["1", "01", "2"],
            &[3],
        ),
        (
            r#"[{"name": "x", "type": "number", "constraints": {"unique": true}}]"#,
            "",
            "x",
            &["2", "2.0", "2.5"],
            &[3],
        ),
        (
            r#"[{"name": "t", "type": "datetime", "constraints": {"unique": true}}]"#,
            "",
            "t",
            &["2026-11-02T23:57:16Z", "2026-11-03T00:57:16+01:00"],
            &[3],
        ),
        (
            r#"[{"name": "n", "type": "integer", "constraints": {"unique": true}}]"#,
            "",
            "n",
            &["", ""],
            &[],
        ),
        // a repeated primary key rejects every copy
        (
            r#"[{"name": "id", "type": "integer"}, {"name": "v", "type": "string"}]"#,
            r#", "primaryKey": "id""#,
            "id,v",
            &["1,a", "01,b", "2,c"],
            &[2, 3],
        ),
        // unique keys: a repeat is rejected; a missing part makes a row unique
        (
            r#"[{"name": "a", "type": "integer"}, {"name": "b", "type": "string"}]"#,
            r#", "uniqueKeys": [["a", "b"]]"#,
            "a,b",
            &["1,x", "01,x", "1,y", ",x", ",x"],
            &[3],
        ),
        // a same-file reference finds its target by typed value
        (
            r#"[{"name": "id", "type": "integer"}, {"name": "parent", "type": "integer"}]"#,
            r#", "foreignKeys": [{"fields": "parent", "reference": {"resource": "", "fields": "id"}}]"#,
            "id,parent",
            &["1,", "2,01", "3,4"],
            &[4],
        ),
    ];
    let mut wrong = Vec::new();
    for (fields, extra, header, rows, expected) in cases {
        let dataset = load(fields, extra).expect("a valid schema");
        let lines = rejected_lines(&dataset, header, rows);
        if lines != *expected {
            wrong.push(format!(
                "{fields}{extra} {rows:?}: rejected lines {lines:?}, expected {expected:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A reference to another dataset is checked against the keys the store
/// holds, which come back as the store writes them.
#[test]
fn references_to_the_store_compare_typed_values() {
    let dataset = load(
        r#"[{"name": "account", "type": "integer"}, {"name": "at", "type": "datetime"}]"#,
        r#", "foreignKeys": [{"fields": ["account", "at"], "reference": {"resource": "accounts", "fields": ["id", "created"]}}]"#,
    )
    .expect("a valid schema");
    let raw = parse_bytes(
        b"account,at\n007,2026-01-31T10:20:30Z\n8,2026-01-31T10:20:30Z\n".to_vec(),
        "refs.csv",
        &CsvDialect::default(),
        &Default::default(),
        &dataset.schema,
    )
    .unwrap();
    let mut ctx = Context::default();
    ctx.references.insert(
        "accounts".into(),
        ["7|2026-01-31 10:20:30".to_string()].into_iter().collect(),
    );
    let valid = validate(&raw, &dataset.schema, &ctx);
    let lines: Vec<u64> = valid.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [3], "{:?}", valid.errors);
}

#[test]
fn typed_values_are_stored_typed() {
    use polars::prelude::DataType;
    let dataset = load(
        r#"[{"name": "t", "type": "time"}, {"name": "y", "type": "year"},
            {"name": "ym", "type": "yearmonth"}, {"name": "d", "type": "duration"}]"#,
        "",
    )
    .unwrap();
    let raw = parse_bytes(
        b"t,y,ym,d\n10:20:30.5,2026,2026-01,P1W\n".to_vec(),
        "typed.csv",
        &CsvDialect::default(),
        &Default::default(),
        &dataset.schema,
    )
    .unwrap();
    let valid = validate(&raw, &dataset.schema, &Context::default());
    assert!(valid.errors.is_empty(), "{:?}", valid.errors);
    let frame = &valid.frame;
    assert_eq!(frame.column("t").unwrap().dtype(), &DataType::Time);
    assert_eq!(frame.column("y").unwrap().dtype(), &DataType::Int32);
    let text = |name: &str| {
        frame
            .column(name)
            .unwrap()
            .str()
            .unwrap()
            .get(0)
            .map(str::to_string)
    };
    assert_eq!(text("ym").as_deref(), Some("2026-01"));
    assert_eq!(text("d").as_deref(), Some("P7D"));
}

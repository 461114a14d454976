//! Datasets, described by Frictionless Table Schema files, so schemas written
//! for other tools work here. The built-in ones (`schemas/*.json`) are
//! compiled in; a schemas directory named in the config adds or overrides.
//!
//! dropsync's own additions live under the schema's `dropsync` key: the
//! default mode, conditional requirements, the status field that drives
//! subscribe/unsubscribe, and whether the dataset holds typed metrics.

pub mod computed;
#[cfg(test)]
mod conformance;
pub mod formats;
mod key_table;
pub(crate) use key_table::{ByRegion, PREFETCH_AHEAD, filled_in, prefetch};
mod parse;
pub mod raw_rows;
pub mod results;
pub mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::Mode;
pub use computed::{ComputedError, ComputedFields};
pub use parse::{ATTRIBUTES, CsvChunk, CsvChunks, ParseError, RawTable, header_note, read_table};
pub use results::MetricsSpec;
pub use validate::{
    FileChecks, LateIssue, RowError, ValidRows, describe_late, sort_errors, validate,
    validate_chunk,
};

const BUILTIN: &[(&str, &str)] = &[
    ("accounts", include_str!("../../schemas/accounts.json")),
    ("users", include_str!("../../schemas/users.json")),
    ("usage", include_str!("../../schemas/usage.json")),
    (
        "subscribers",
        include_str!("../../schemas/subscribers.json"),
    ),
    ("results", include_str!("../../schemas/results.json")),
];

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("unknown dataset `{}` (known: {known})", crate::config::echo(.name))]
    Unknown { name: String, known: String },
    #[error("cannot read schema {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid schema {origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// A Table Schema, as far as dropsync reads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableSchema {
    #[serde(default)]
    pub name: Option<String>,
    pub fields: Vec<Field>,
    #[serde(default)]
    pub primary_key: Option<OneOrMany>,
    #[serde(default)]
    pub foreign_keys: Vec<ForeignKey>,
    #[serde(default = "default_missing_values")]
    pub missing_values: Vec<String>,
    #[serde(default)]
    pub fields_match: FieldsMatch,
    /// Sets of fields whose values together must be unique in a file; a row
    /// with any of them missing is unique (as in SQL).
    #[serde(default)]
    pub unique_keys: Vec<Vec<String>>,
    #[serde(default)]
    pub dropsync: Extensions,
}

fn default_missing_values() -> Vec<String> {
    vec![String::new()]
}

/// A string or a list of strings, as Table Schema allows for keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ForeignKey {
    pub fields: OneOrMany,
    pub reference: Reference,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Reference {
    /// `""` for the same file; otherwise the dataset referred to.
    #[serde(default)]
    pub resource: String,
    pub fields: OneOrMany,
}

/// How a file's header must match the schema's fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldsMatch {
    /// The same fields, in the same order.
    #[default]
    Exact,
    /// The same fields, in any order.
    Equal,
    /// All the schema's fields, and possibly more.
    Subset,
    /// Only the schema's fields, possibly fewer.
    Superset,
    /// At least one of the schema's fields.
    Partial,
}

/// One column.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Field {
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: FieldType,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub constraints: Constraints,
    #[serde(default)]
    pub true_values: Option<Vec<String>>,
    #[serde(default)]
    pub false_values: Option<Vec<String>>,
    /// `false` lets numbers carry text around them: "€95", "95%".
    #[serde(default = "default_true")]
    pub bare_number: bool,
    #[serde(default)]
    pub group_char: Option<String>,
    #[serde(default)]
    pub decimal_char: Option<String>,
    /// Field-level override of the schema's missing values.
    #[serde(default)]
    pub missing_values: Option<Vec<String>>,
    /// The values a categorical field may take (string and integer fields).
    #[serde(default)]
    pub categories: Option<Vec<Category>>,
    /// Whether the categories have an order; informational only.
    #[serde(default)]
    pub categories_ordered: bool,
}

/// One category: a bare value, or a value with a label.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Category {
    /// `{"value": 1, "label": "..."}`: the label is for people, not checked.
    Labelled {
        value: serde_json::Value,
    },
    Value(serde_json::Value),
}

impl Category {
    pub fn value(&self) -> &serde_json::Value {
        match self {
            Category::Value(v) | Category::Labelled { value: v, .. } => v,
        }
    }
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum FieldType {
    #[default]
    String,
    Integer,
    Number,
    Boolean,
    Date,
    Datetime,
    Time,
    Year,
    YearMonth,
    Duration,
    Any,
}

/// Table Schema types dropsync does not read: a schema using one is refused.
const UNSUPPORTED_TYPES: &[&str] = &["geopoint", "geojson", "object", "array", "list"];

impl TryFrom<String> for FieldType {
    type Error = String;

    fn try_from(name: String) -> Result<FieldType, String> {
        Ok(match name.as_str() {
            "string" => FieldType::String,
            "integer" => FieldType::Integer,
            "number" => FieldType::Number,
            "boolean" => FieldType::Boolean,
            "date" => FieldType::Date,
            "datetime" => FieldType::Datetime,
            "time" => FieldType::Time,
            "year" => FieldType::Year,
            "yearmonth" => FieldType::YearMonth,
            "duration" => FieldType::Duration,
            "any" => FieldType::Any,
            other if UNSUPPORTED_TYPES.contains(&other) => {
                return Err(format!(
                    "field type `{other}` is not supported by dropsync (supported: {})",
                    FieldType::SUPPORTED
                ));
            }
            other => {
                return Err(format!(
                    "unknown field type `{other}` (supported: {})",
                    FieldType::SUPPORTED
                ));
            }
        })
    }
}

impl FieldType {
    const SUPPORTED: &'static str =
        "string, integer, number, boolean, date, datetime, time, year, yearmonth, duration, any";

    /// The DuckDB column type values of this field are stored as. A year-month
    /// and a duration are kept as their canonical ISO 8601 text (`2026-01`,
    /// `P1Y2M`): DuckDB has no year-month type, and an INTERVAL loses the
    /// difference between `P1M` and `P30D` that the file made.
    pub fn sql_type(self) -> &'static str {
        match self {
            FieldType::String | FieldType::Any | FieldType::YearMonth | FieldType::Duration => {
                "VARCHAR"
            }
            FieldType::Integer => "BIGINT",
            FieldType::Number => "DOUBLE",
            FieldType::Boolean => "BOOLEAN",
            FieldType::Date => "DATE",
            FieldType::Datetime => "TIMESTAMP",
            FieldType::Time => "TIME",
            FieldType::Year => "INTEGER",
        }
    }

    /// The name Table Schema gives the type.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Integer => "integer",
            FieldType::Number => "number",
            FieldType::Boolean => "boolean",
            FieldType::Date => "date",
            FieldType::Datetime => "datetime",
            FieldType::Time => "time",
            FieldType::Year => "year",
            FieldType::YearMonth => "yearmonth",
            FieldType::Duration => "duration",
            FieldType::Any => "any",
        }
    }

    /// Whether values of this type are compared as written: no parsing
    /// gives two spellings one value.
    pub fn is_text(self) -> bool {
        matches!(self, FieldType::String | FieldType::Any)
    }

    /// Whether `minimum` and `maximum` order values of this type.
    fn is_ordered(self) -> bool {
        matches!(
            self,
            FieldType::Integer
                | FieldType::Number
                | FieldType::Date
                | FieldType::Datetime
                | FieldType::Time
                | FieldType::Year
                | FieldType::YearMonth
        )
    }

    /// Whether a `format` other than `default` means something for this type.
    fn has_pattern_formats(self) -> bool {
        matches!(
            self,
            FieldType::Date | FieldType::Datetime | FieldType::Time
        )
    }
}

/// A field's constraints. A constraint dropsync does not know is refused
/// when the schema loads, never silently ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Constraints {
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub unique: bool,
    #[serde(default)]
    pub min_length: Option<usize>,
    #[serde(default)]
    pub max_length: Option<usize>,
    #[serde(default)]
    pub minimum: Option<serde_json::Value>,
    #[serde(default)]
    pub maximum: Option<serde_json::Value>,
    #[serde(default)]
    pub exclusive_minimum: Option<serde_json::Value>,
    #[serde(default)]
    pub exclusive_maximum: Option<serde_json::Value>,
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(rename = "enum", default)]
    pub allowed: Option<Vec<serde_json::Value>>,
}

/// dropsync's additions, under the schema's `dropsync` key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Extensions {
    /// The mode integrations of this dataset use unless they say otherwise.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Fields required only when another field has a given value.
    #[serde(default)]
    pub required_when: Vec<RequiredWhen>,
    /// The field whose changes are subscribes and unsubscribes.
    #[serde(default)]
    pub status: Option<StatusRule>,
    /// The dataset holds typed metrics (see `results`).
    #[serde(default)]
    pub metrics: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequiredWhen {
    pub field: String,
    pub when: String,
    pub equals: String,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRule {
    pub field: String,
    /// Status value -> the change a move into it counts as.
    pub changes: BTreeMap<String, String>,
}

/// A dataset: its name and schema.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub schema: TableSchema,
}

impl Dataset {
    /// Loads dataset `name` from `dir` (when given and the file exists),
    /// else from the built-in schemas.
    pub fn load(name: &str, dir: Option<&Path>) -> Result<Dataset, SchemaError> {
        if let Some(dir) = dir {
            let path = dir.join(format!("{name}.json"));
            if path.is_file() {
                let text = std::fs::read_to_string(&path).map_err(|source| SchemaError::Read {
                    path: path.clone(),
                    source,
                })?;
                return Dataset::from_json(name, &text, &path.display().to_string());
            }
        }
        match BUILTIN.iter().find(|(n, _)| *n == name) {
            Some((_, text)) => Dataset::from_json(name, text, &format!("built-in `{name}`")),
            None => Err(SchemaError::Unknown {
                name: name.to_string(),
                known: Dataset::known(dir).join(", "),
            }),
        }
    }

    /// Names of every dataset available: built-in and from `dir`.
    pub fn known(dir: Option<&Path>) -> Vec<String> {
        let mut names: Vec<String> = BUILTIN.iter().map(|(n, _)| n.to_string()).collect();
        if let Some(entries) = dir.and_then(|d| std::fs::read_dir(d).ok()) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "json")
                    && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
                {
                    names.push(stem.to_string());
                }
            }
        }
        names.sort();
        names.dedup();
        names
    }

    fn from_json(name: &str, text: &str, origin: &str) -> Result<Dataset, SchemaError> {
        let invalid = |message: String| SchemaError::Invalid {
            origin: origin.to_string(),
            message,
        };
        let mut schema: TableSchema =
            serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        for field in &mut schema.fields {
            // Table Schema v1 wrote patterns as `fmt:%d/%m/%Y`; v2 still
            // accepts that spelling.
            if let Some(format) = &mut field.format
                && let Some(pattern) = format.strip_prefix("fmt:")
            {
                *format = pattern.to_string();
            }
        }
        if schema.fields.is_empty() {
            return Err(invalid("a schema needs at least one field".into()));
        }
        let names: Vec<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(invalid(format!("field `{n}` is defined twice")));
            }
            if n.starts_with('_') {
                return Err(invalid(format!(
                    "field `{n}`: names starting with `_` are reserved for dropsync's own columns"
                )));
            }
        }
        let known = |f: &str| names.contains(&f);
        for key in schema.primary_key() {
            if !known(&key) {
                return Err(invalid(format!("primaryKey names unknown field `{key}`")));
            }
        }
        for fk in &schema.foreign_keys {
            for f in fk.fields.to_vec() {
                if !known(&f) {
                    return Err(invalid(format!("foreignKeys names unknown field `{f}`")));
                }
            }
            if fk.fields.to_vec().len() != fk.reference.fields.to_vec().len() {
                return Err(invalid(
                    "a foreign key's fields and reference fields differ in number".into(),
                ));
            }
        }
        for rule in &schema.dropsync.required_when {
            for f in [&rule.field, &rule.when] {
                if !known(f) {
                    return Err(invalid(format!("requiredWhen names unknown field `{f}`")));
                }
            }
        }
        if let Some(status) = &schema.dropsync.status
            && !known(&status.field)
        {
            return Err(invalid(format!(
                "status names unknown field `{}`",
                status.field
            )));
        }
        for key in &schema.unique_keys {
            if key.is_empty() {
                return Err(invalid("a uniqueKeys entry names no field".into()));
            }
            for f in key {
                if !known(f) {
                    return Err(invalid(format!("uniqueKeys names unknown field `{f}`")));
                }
            }
        }
        for field in &schema.fields {
            if let Some(p) = &field.constraints.pattern {
                regex::Regex::new(p)
                    .map_err(|e| invalid(format!("field `{}`: bad pattern: {e}", field.name)))?;
            }
            check_field(field).map_err(|m| invalid(format!("field `{}`: {m}", field.name)))?;
        }
        Ok(Dataset {
            name: name.to_string(),
            schema,
        })
    }

    /// The mode an integration of this dataset uses by default.
    pub fn default_mode(&self) -> Mode {
        self.schema.dropsync.mode.unwrap_or(Mode::Snapshot)
    }
}

/// The string formats dropsync checks.
const STRING_FORMATS: &[&str] = &["email", "uri", "uuid", "binary"];

/// Refuses what a field asks for that dropsync would not enforce: a format
/// or a constraint its type does not have, a bound or an allowed value that
/// is not a value of the type. The spec lets an implementation refuse what
/// it does not support; ignoring it would let bad values through unseen.
fn check_field(field: &Field) -> Result<(), String> {
    let kind = field.kind;
    let type_name = kind.name();
    match field.format.as_deref() {
        None | Some("default") => {}
        Some(f) if kind == FieldType::String => {
            if !STRING_FORMATS.contains(&f) {
                return Err(format!(
                    "string format `{f}` is not supported (supported: default, {})",
                    STRING_FORMATS.join(", ")
                ));
            }
        }
        Some("any") if kind.has_pattern_formats() => {}
        Some(f) if kind.has_pattern_formats() => {
            use chrono::format::{Item, StrftimeItems};
            if StrftimeItems::new(f).any(|item| matches!(item, Item::Error)) {
                return Err(format!("format `{f}` is not a valid strftime pattern"));
            }
        }
        Some(f) => {
            return Err(format!(
                "format `{f}` is not supported for type {type_name} (it has only `default`)"
            ));
        }
    }
    let c = &field.constraints;
    for (name, value) in [
        ("minimum", &c.minimum),
        ("maximum", &c.maximum),
        ("exclusiveMinimum", &c.exclusive_minimum),
        ("exclusiveMaximum", &c.exclusive_maximum),
    ] {
        let Some(value) = value else { continue };
        if !kind.is_ordered() {
            return Err(format!(
                "constraint `{name}` is not supported for type {type_name}"
            ));
        }
        validate::bound(field, value).map_err(|m| format!("{name}: {m}"))?;
    }
    for value in c.allowed.iter().flatten() {
        validate::canonical_json(field, value).map_err(|m| format!("enum: {m}"))?;
    }
    if let Some(categories) = &field.categories {
        if !matches!(kind, FieldType::String | FieldType::Integer) {
            return Err(format!(
                "`categories` is not supported for type {type_name} (only string and integer)"
            ));
        }
        for category in categories {
            validate::canonical_json(field, category.value())
                .map_err(|m| format!("categories: {m}"))?;
        }
    }
    Ok(())
}

impl TableSchema {
    pub fn primary_key(&self) -> Vec<String> {
        self.primary_key
            .as_ref()
            .map(OneOrMany::to_vec)
            .unwrap_or_default()
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Whether a file may carry columns the schema does not name; their
    /// values are kept, per row, in the `_attributes` column.
    pub fn keeps_extra_columns(&self) -> bool {
        matches!(
            self.fields_match,
            FieldsMatch::Subset | FieldsMatch::Partial
        )
    }
}

impl Field {
    /// Whether a value is required: by constraint, or by being part of the key.
    pub fn is_required(&self, schema: &TableSchema) -> bool {
        self.constraints.required || schema.primary_key().contains(&self.name)
    }

    pub fn missing_values<'a>(&'a self, schema: &'a TableSchema) -> &'a [String] {
        self.missing_values
            .as_deref()
            .unwrap_or(&schema.missing_values)
    }
}

/// One column as stored in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredColumn {
    pub name: String,
    pub sql_type: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_schemas_load() {
        for (name, _) in BUILTIN {
            let ds = Dataset::load(name, None).unwrap();
            assert!(!ds.schema.primary_key().is_empty(), "{name} has a key");
        }
    }

    #[test]
    fn unknown_dataset_lists_known_ones() {
        let err = Dataset::load("nope", None).unwrap_err().to_string();
        assert!(err.contains("accounts") && err.contains("results"), "{err}");
    }
}

//! Drop formats other than plain CSV: xlsx, JSON (an array of objects), JSON
//! Lines, and any of them (CSV too) inside gzip or zip. Each reader turns its
//! file into the same `RawTable` the CSV parser makes (text cells per schema
//! field, a position and a raw text per record), so validation, diff, apply
//! and the error report work the same whatever the format.
//!
//! The format is chosen once per file: from the integration's `format` when
//! set (parsed into `InputFormat` at config load), else from the file name's
//! extension. A compressed file is expanded while it is read from staging, so
//! the staged copy stays the file exactly as dropped (its hash is what the
//! history compares) and the expansion is bounded (`decompress.max_bytes`,
//! `decompress.max_ratio`).

mod archive;
mod json;
mod records;
mod xlsx;

use std::collections::BTreeMap;
use std::path::Path;

use super::TableSchema;
use super::parse::{self, ParseError, RawTable};
use crate::config::{CsvDialect, DecompressLimits, IntegrationConfig};

/// What a drop's content is, once expanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    Csv,
    Xlsx,
    /// One JSON array of objects.
    Json,
    /// One JSON object a line (JSON Lines, NDJSON).
    #[serde(rename = "jsonl")]
    JsonLines,
}

impl InputFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            InputFormat::Csv => "csv",
            InputFormat::Xlsx => "xlsx",
            InputFormat::Json => "json",
            InputFormat::JsonLines => "jsonl",
        }
    }

    /// The format an extension (lowercase, without the dot) names.
    fn of_extension(extension: &str) -> Option<InputFormat> {
        match extension {
            "csv" => Some(InputFormat::Csv),
            "xlsx" => Some(InputFormat::Xlsx),
            "json" => Some(InputFormat::Json),
            "jsonl" | "ndjson" => Some(InputFormat::JsonLines),
            _ => None,
        }
    }
}

/// How a drop is wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zip,
}

/// A file name's compression and, under it, the extension that names its
/// format (`None`: the name has no extension).
fn split_name(name: &str) -> (Compression, Option<String>) {
    let base = name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(name)
        .to_lowercase();
    let (compression, inner) = if let Some(inner) = base.strip_suffix(".gz") {
        (Compression::Gzip, inner)
    } else if let Some(inner) = base.strip_suffix(".zip") {
        (Compression::Zip, inner)
    } else {
        (Compression::None, base.as_str())
    };
    let extension = inner
        .rsplit_once('.')
        .filter(|(stem, _)| !stem.is_empty())
        .map(|(_, ext)| ext.to_string());
    (compression, extension)
}

const EXTENSIONS: &str = ".csv, .xlsx, .json, .jsonl and .ndjson (each may be in .gz or .zip)";

/// The format of the file `name` (or of the archive member `name`): the
/// configured one, else its extension's; a name without an extension is
/// CSV, as every drop was before formats could be chosen.
fn format_of(name: &str, configured: Option<InputFormat>) -> Result<InputFormat, String> {
    if let Some(format) = configured {
        return Ok(format);
    }
    match split_name(name).1 {
        None => Ok(InputFormat::Csv),
        Some(extension) => InputFormat::of_extension(&extension).ok_or_else(|| {
            format!(
                "cannot tell the format of `{}` from its extension `.{extension}`: dropsync reads {EXTENSIONS}; set the integration's format = \"csv\", \"xlsx\", \"json\" or \"jsonl\" to read it anyway",
                crate::config::echo(name)
            )
        }),
    }
}

/// Whether the drop `name` is plain CSV in UTF-8, which can be read a chunk
/// at a time straight from the file: not an archive, another format, or
/// another encoding (those are read whole).
pub fn is_plain_csv(name: &str, reading: &DropReading<'_>) -> bool {
    split_name(name).0 == Compression::None
        && format_of(name, reading.format) == Ok(InputFormat::Csv)
        && reading.csv.encoding.is_utf8()
}

/// Checks an integration's format settings at config load.
pub fn check_config(config: &IntegrationConfig) -> Result<(), String> {
    if config.sheet.is_some()
        && let Some(format) = config.format
        && format != InputFormat::Xlsx
    {
        return Err(format!(
            "`sheet` applies to xlsx files, but format = \"{}\"",
            format.as_str()
        ));
    }
    // A pattern that ends in a literal extension says what every file of
    // the integration will be: an unknown one is a mistake to say now,
    // not at 2 a.m. when the first file arrives.
    let pattern = &config.pattern;
    let literal = !pattern
        .rsplit('.')
        .next()
        .is_some_and(|tail| tail.contains(['*', '?', '[', '{', '}']));
    if literal && pattern.contains('.') {
        let (compression, _) = split_name(pattern);
        if config.member.is_some() && compression != Compression::Zip {
            return Err(format!(
                "`member` applies to zip archives, but the pattern `{}` names no .zip file",
                crate::config::echo(pattern)
            ));
        }
        if compression != Compression::Zip {
            format_of(pattern, config.format)?;
        }
    }
    Ok(())
}

/// Everything about an integration that says how to read its files.
#[derive(Debug, Clone, Copy)]
pub struct DropReading<'a> {
    pub format: Option<InputFormat>,
    pub sheet: Option<&'a str>,
    pub member: Option<&'a str>,
    pub limits: DecompressLimits,
    pub csv: &'a CsvDialect,
    pub columns: &'a BTreeMap<String, String>,
}

impl<'a> DropReading<'a> {
    pub fn of(config: &'a IntegrationConfig) -> DropReading<'a> {
        DropReading {
            format: config.format,
            sheet: config.sheet.as_deref(),
            member: config.member.as_deref(),
            limits: config.decompress,
            csv: &config.csv,
            columns: &config.columns,
        }
    }
}

/// Why a drop could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DropError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The staged copy could not be read: may read next time.
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    /// What the file holds cannot be read as its format: it never will.
    #[error("{file}: {message}")]
    Content { file: String, message: String },
}

impl DropError {
    /// Whether reading again may succeed (the disk, not the content).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            DropError::Io { .. } | DropError::Parse(ParseError::Io { .. })
        )
    }

    fn content(file: &str, message: impl Into<String>) -> DropError {
        DropError::Content {
            file: file.to_string(),
            message: message.into(),
        }
    }
}

/// A drop read into records.
#[derive(Debug)]
pub struct DropTable {
    pub table: RawTable,
    pub format: InputFormat,
    /// What the run's message should say about how the file was read (the
    /// sheet, the archive member), when anything.
    pub note: Option<String>,
}

/// Reads the staged file `path` (dropped as `name`) into a `RawTable`.
pub fn read_drop(
    path: &Path,
    name: &str,
    reading: &DropReading<'_>,
    schema: &TableSchema,
) -> Result<DropTable, DropError> {
    let io = |source| DropError::Io {
        file: name.to_string(),
        source,
    };
    let (compression, _) = split_name(name);
    let (format, content, mut notes) = match compression {
        Compression::None => {
            let format =
                format_of(name, reading.format).map_err(|m| DropError::content(name, m))?;
            let content = match format {
                // Read by the CSV parser (or calamine) straight from the file.
                InputFormat::Csv | InputFormat::Xlsx => None,
                InputFormat::Json | InputFormat::JsonLines => {
                    Some(std::fs::read(path).map_err(io)?)
                }
            };
            (format, content, Vec::new())
        }
        Compression::Gzip => {
            let format = format_of(&name[..name.len() - 3], reading.format)
                .map_err(|m| DropError::content(name, m))?;
            let bytes = archive::gunzip(path, name, reading.limits)?;
            (format, Some(bytes), Vec::new())
        }
        Compression::Zip => {
            let (member, bytes) = archive::unzip(path, name, reading.member, reading.limits)?;
            let format =
                format_of(&member, reading.format).map_err(|m| DropError::content(name, m))?;
            let note = format!("read `{member}` from the zip archive");
            (format, Some(bytes), vec![note])
        }
    };
    let max_field_bytes = reading.csv.max_field_bytes.get() as usize;
    let table = match (format, content) {
        (InputFormat::Csv, None) => {
            parse::read_table(path, name, reading.csv, reading.columns, schema)?
        }
        (InputFormat::Csv, Some(bytes)) => {
            parse::parse_bytes(bytes, name, reading.csv, reading.columns, schema)?
        }
        (InputFormat::Json, Some(bytes)) => {
            json::read_array(&bytes, name, reading.columns, schema, max_field_bytes)?
        }
        (InputFormat::JsonLines, Some(bytes)) => {
            json::read_lines(&bytes, name, reading.columns, schema, max_field_bytes)?
        }
        (InputFormat::Json | InputFormat::JsonLines, None) => {
            unreachable!("JSON is read into memory")
        }
        (InputFormat::Xlsx, content) => {
            let sheet = match content {
                None => {
                    let file = std::fs::File::open(path).map_err(io)?;
                    xlsx::read(std::io::BufReader::new(file), name, reading, schema)?
                }
                Some(bytes) => xlsx::read(std::io::Cursor::new(bytes), name, reading, schema)?,
            };
            notes.push(format!(
                "read sheet `{}` (line numbers are its row numbers)",
                sheet.sheet
            ));
            sheet.table
        }
    };
    Ok(DropTable {
        table,
        format,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_follows_the_extension_under_any_compression() {
        let cases = [
            ("accounts_20261101.csv", Compression::None, InputFormat::Csv),
            ("Accounts.XLSX", Compression::None, InputFormat::Xlsx),
            ("accounts.json", Compression::None, InputFormat::Json),
            ("accounts.jsonl", Compression::None, InputFormat::JsonLines),
            (
                "accounts.ndjson.gz",
                Compression::Gzip,
                InputFormat::JsonLines,
            ),
            ("accounts.csv.gz", Compression::Gzip, InputFormat::Csv),
            ("accounts", Compression::None, InputFormat::Csv),
        ];
        for (name, compression, format) in cases {
            assert_eq!(split_name(name).0, compression, "{name}");
            let inner = match compression {
                Compression::Gzip => &name[..name.len() - 3],
                _ => name,
            };
            assert_eq!(format_of(inner, None), Ok(format), "{name}");
        }
        assert_eq!(split_name("export.zip").0, Compression::Zip);
    }

    #[test]
    fn an_unknown_extension_is_an_error_naming_the_file_unless_a_format_is_set() {
        let err = format_of("accounts_20261101.txt", None).unwrap_err();
        assert!(err.contains("accounts_20261101.txt"), "{err}");
        assert!(err.contains("`.txt`") && err.contains("format = "), "{err}");
        assert_eq!(
            format_of("accounts_20261101.txt", Some(InputFormat::Csv)),
            Ok(InputFormat::Csv)
        );
    }
}

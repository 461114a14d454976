//! xlsx drops, read with calamine: the first sheet or the named one, its
//! first non-empty row the header. Cells become the text a CSV export of
//! the sheet would hold: dates as ISO dates, numbers as a spreadsheet shows
//! them (`12`, not `12.0`; no float noise), booleans `true`/`false`. A
//! record's position is its row number in the sheet; its raw text is its
//! cells joined as CSV.

use std::io::{Read, Seek};

use calamine::{Data, Reader, Xlsx};

use super::super::{Field, TableSchema};
use super::json::{boolean_text, float_text};
use super::records::TableBuilder;
use super::{DropError, DropReading};
use crate::schema::parse::{ParseError, RawTable};

/// A sheet read into records.
pub(super) struct SheetTable {
    pub sheet: String,
    pub table: RawTable,
}

pub(super) fn read<R: Read + Seek>(
    reader: R,
    file: &str,
    reading: &DropReading<'_>,
    schema: &TableSchema,
) -> Result<SheetTable, DropError> {
    let mut book = Xlsx::new(reader).map_err(|e| {
        DropError::content(
            file,
            format!("not an xlsx workbook ({e}); is it a CSV or an old .xls file? Set the integration's format to what it is"),
        )
    })?;
    let names = book.sheet_names();
    let sheet = match reading.sheet {
        Some(wanted) => names
            .iter()
            .find(|n| n.as_str() == wanted)
            .or_else(|| names.iter().find(|n| n.eq_ignore_ascii_case(wanted)))
            .cloned()
            .ok_or_else(|| {
                DropError::content(
                    file,
                    format!(
                        "the workbook has no sheet `{}`; its sheets: {}",
                        crate::config::echo(wanted),
                        names.join(", ")
                    ),
                )
            })?,
        None => names
            .first()
            .cloned()
            .ok_or_else(|| DropError::content(file, "the workbook has no sheet"))?,
    };
    let range = book
        .worksheet_range(&sheet)
        .map_err(|e| DropError::content(file, format!("sheet `{sheet}` cannot be read: {e}")))?;
    // Errors name the sheet with the file: "accounts.xlsx, sheet `Accounts`".
    let label = format!("{file}, sheet `{sheet}`");
    let empty = || {
        DropError::Parse(ParseError::Empty {
            file: label.clone(),
        })
    };
    let Some((first_row, _)) = range.start() else {
        return Err(empty());
    };
    let mut rows = range
        .rows()
        .enumerate()
        .map(|(i, cells)| (u64::from(first_row) + i as u64 + 1, cells))
        .filter(|(_, cells)| cells.iter().any(|c| !matches!(c, Data::Empty)));
    let Some((header_row, header_cells)) = rows.next() else {
        return Err(empty());
    };
    let header: Vec<String> = header_cells
        .iter()
        .map(|c| {
            cell_text(c, None)
                .ok()
                .flatten()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .collect();
    let max_field_bytes = reading.csv.max_field_bytes.get() as usize;
    let mut builder = TableBuilder::new(
        &label,
        &header,
        header_row,
        reading.columns,
        schema,
        max_field_bytes,
    )?;
    let fields: Vec<Option<&Field>> = (0..header.len()).map(|c| builder.field_at(c)).collect();
    let mut cells: Vec<Option<String>> = vec![None; header.len()];
    let mut raw = Vec::new();
    for (row, values) in rows {
        cells.iter_mut().for_each(|c| *c = None);
        let mut bad: Option<(String, String)> = None;
        for (column, value) in values.iter().enumerate().take(header.len()) {
            match cell_text(value, fields[column]) {
                Ok(text) => cells[column] = text,
                Err(message) => {
                    let name =
                        fields[column].map_or_else(|| header[column].clone(), |f| f.name.clone());
                    bad.get_or_insert((name, message));
                }
            }
        }
        let raw_row = csv_row(values, &mut raw);
        match bad {
            Some((field, message)) => builder.reject(row, &cells, Some(&field), message, &raw_row),
            None => builder.push(row, &cells, &raw_row),
        }
    }
    Ok(SheetTable {
        sheet,
        table: builder.finish(),
    })
}

/// A row's cells as one CSV line, for the error report.
fn csv_row(values: &[Data], buffer: &mut Vec<u8>) -> String {
    buffer.clear();
    {
        let mut writer = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(&mut *buffer);
        let texts = values.iter().map(|v| match v {
            Data::Error(e) => format!("#{e:?}"),
            other => cell_text(other, None).ok().flatten().unwrap_or_default(),
        });
        // Writing to memory does not fail.
        let _ = writer.write_record(texts);
        let _ = writer.flush();
    }
    while buffer.last() == Some(&b'\n') {
        buffer.pop();
    }
    String::from_utf8_lossy(buffer).into_owned()
}

/// A cell as the text a CSV export of the sheet would hold; `None` for an
/// empty cell, an error for a cell holding a formula's error.
fn cell_text(value: &Data, field: Option<&Field>) -> Result<Option<String>, String> {
    Ok(match value {
        Data::Empty => None,
        Data::String(s) => Some(s.clone()),
        Data::Int(i) => Some(i.to_string()),
        Data::Float(f) => Some(float_text(*f)),
        Data::Bool(b) => Some(boolean_text(*b, field)),
        Data::DateTimeIso(s) | Data::DurationIso(s) => Some(s.clone()),
        Data::DateTime(d) if d.is_duration() => Some(float_text(d.as_f64())),
        Data::DateTime(d) => match d.as_datetime() {
            Some(t) if t.time() == chrono::NaiveTime::MIN => {
                Some(t.date().format("%Y-%m-%d").to_string())
            }
            Some(t) => Some(t.format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
            None => Some(float_text(d.as_f64())),
        },
        Data::Error(e) => return Err(format!("the cell holds the spreadsheet error {e}")),
    })
}

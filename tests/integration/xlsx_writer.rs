//! The smallest xlsx workbook Excel and calamine read: inline strings,
//! numbers, booleans, dates (a date number format) and error cells, written
//! with the zip crate at a fixed timestamp, so the same cells always make
//! the same bytes. Used by the tests and by `examples/make_samples.rs`.

use std::io::Write;

/// One cell.
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub enum Cell {
    Empty,
    Text(String),
    Number(f64),
    Bool(bool),
    /// A date: its Excel serial number (days since 1899-12-30).
    Date(f64),
    /// A formula's error value, as `#DIV/0!`.
    Error(&'static str),
}

#[allow(dead_code)]
pub fn text(s: &str) -> Cell {
    Cell::Text(s.to_string())
}

/// `YYYY-MM-DD` as an Excel date cell.
#[allow(dead_code)]
pub fn date(iso: &str) -> Cell {
    let day = chrono::NaiveDate::parse_from_str(iso, "%Y-%m-%d").unwrap();
    let epoch = chrono::NaiveDate::from_ymd_opt(1899, 12, 30).unwrap();
    Cell::Date((day - epoch).num_days() as f64)
}

fn column_name(mut index: usize) -> String {
    let mut name = Vec::new();
    loop {
        name.push(b'A' + (index % 26) as u8);
        if index < 26 {
            break;
        }
        index = index / 26 - 1;
    }
    name.reverse();
    String::from_utf8(name).unwrap()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn sheet_xml(rows: &[Vec<Cell>]) -> String {
    let mut xml = String::from(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>"#,
    );
    for (r, row) in rows.iter().enumerate() {
        xml.push_str(&format!(r#"<row r="{}">"#, r + 1));
        for (c, cell) in row.iter().enumerate() {
            let at = format!("{}{}", column_name(c), r + 1);
            match cell {
                Cell::Empty => {}
                Cell::Text(s) => xml.push_str(&format!(
                    r#"<c r="{at}" t="inlineStr"><is><t xml:space="preserve">{}</t></is></c>"#,
                    escape(s)
                )),
                Cell::Number(n) => xml.push_str(&format!(r#"<c r="{at}"><v>{n}</v></c>"#)),
                Cell::Bool(b) => {
                    xml.push_str(&format!(r#"<c r="{at}" t="b"><v>{}</v></c>"#, u8::from(*b)))
                }
                Cell::Date(n) => xml.push_str(&format!(r#"<c r="{at}" s="1"><v>{n}</v></c>"#)),
                Cell::Error(e) => xml.push_str(&format!(r#"<c r="{at}" t="e"><v>{e}</v></c>"#)),
            }
        }
        xml.push_str("</row>");
    }
    xml.push_str("</sheetData></worksheet>");
    xml
}

/// A workbook of `(sheet name, rows)`, in order.
pub fn workbook(sheets: &[(&str, Vec<Vec<Cell>>)]) -> Vec<u8> {
    let mut types = String::from(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>"#,
    );
    let mut book = String::from(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets>"#,
    );
    let mut rels = String::from(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rIdStyles" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/>"#,
    );
    for (i, (name, _)) in sheets.iter().enumerate() {
        let n = i + 1;
        types.push_str(&format!(
            r#"<Override PartName="/xl/worksheets/sheet{n}.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>"#
        ));
        book.push_str(&format!(
            r#"<sheet name="{}" sheetId="{n}" r:id="rId{n}"/>"#,
            escape(name)
        ));
        rels.push_str(&format!(
            r#"<Relationship Id="rId{n}" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet{n}.xml"/>"#
        ));
    }
    types.push_str("</Types>");
    book.push_str("</sheets></workbook>");
    rels.push_str("</Relationships>");
    let styles = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><fonts count="1"><font/></fonts><fills count="1"><fill/></fills><borders count="1"><border/></borders><cellStyleXfs count="1"><xf/></cellStyleXfs><cellXfs count="2"><xf numFmtId="0"/><xf numFmtId="14" applyNumberFormat="1"/></cellXfs></styleSheet>"#;
    let root_rels = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#;

    let mut parts: Vec<(String, String)> = vec![
        ("[Content_Types].xml".into(), types),
        ("_rels/.rels".into(), root_rels.into()),
        ("xl/workbook.xml".into(), book),
        ("xl/_rels/workbook.xml.rels".into(), rels),
        ("xl/styles.xml".into(), styles.into()),
    ];
    for (i, (_, rows)) in sheets.iter().enumerate() {
        parts.push((format!("xl/worksheets/sheet{}.xml", i + 1), sheet_xml(rows)));
    }
    zip_of(&parts)
}

/// A zip archive of `(name, content)`, deflated, at zip's fixed default time.
pub fn zip_of<C: AsRef<[u8]>>(members: &[(String, C)]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(zip::DateTime::default());
        for (name, content) in members {
            zip.start_file(name.as_str(), options).unwrap();
            zip.write_all(content.as_ref()).unwrap();
        }
        zip.finish().unwrap();
    }
    out.into_inner()
}

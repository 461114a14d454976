//! What the commands print: short human summaries, or JSON for scripts.
//! Text that comes from files (names, rows, messages quoting them) is
//! escaped for the terminal: a control character or an escape sequence in a
//! partner's file must not move the cursor, retitle the window or hide a line.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};

use serde::Serialize;

use crate::schema::{RowError, ValidRows};
use crate::store::{ChangeRecord, RowAction, RunRecord, RunStatus, json_text, spreadsheet_safe};
use crate::sync::FileOutcome;

/// Whether what is printed carries color: run statuses, in the terminal's
/// own green, yellow and red.
#[derive(Debug, Clone, Copy, Default)]
pub struct Palette {
    pub color: bool,
}

impl Palette {
    /// A status word, colored when color is on; padded to `width` first so
    /// columns line up either way.
    fn status(self, status: RunStatus, text: &str, width: usize) -> String {
        let padding = " ".repeat(width.saturating_sub(text.chars().count()));
        let code = match status {
            _ if !self.color => return format!("{text}{padding}"),
            RunStatus::Success => "32",
            RunStatus::Partial | RunStatus::Interrupted => "33",
            RunStatus::Failed => "31",
            RunStatus::Skipped | RunStatus::Running => return format!("{text}{padding}"),
        };
        format!("\x1b[{code}m{text}\x1b[0m{padding}")
    }
}

/// `text` as it may be shown on a terminal: control characters (newlines,
/// escape sequences, C1 codes) and the invisible bidirectional overrides
/// written as `\n`, `\u{1b}`, ..., everything else as it is.
pub fn term(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Prints `value` as pretty JSON, through a buffer of its own: standard
/// output is line-buffered, and a line at a time, a million changes took
/// a system call per line.
pub fn json(out: &mut dyn Write, value: &impl Serialize) -> io::Result<()> {
    let mut out = io::BufWriter::with_capacity(1 << 16, out);
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    out.flush()
}

pub fn outcomes_json(outcomes: &[FileOutcome]) -> serde_json::Value {
    serde_json::Value::Array(
        outcomes
            .iter()
            .map(|o| match o {
                FileOutcome::Ran(r) => serde_json::json!({
                    "run": r.record,
                    "changes": r.changes,
                    "dry_run": r.dry_run,
                    "errors": r.errors,
                }),
                FileOutcome::Error {
                    integration,
                    file,
                    error,
                } => serde_json::json!({
                    "integration": integration, "file": file, "error": error,
                }),
            })
            .collect(),
    )
}

/// One line (and a few more for problems) per file synced.
pub fn file_outcome(
    out: &mut dyn Write,
    outcome: &FileOutcome,
    palette: Palette,
) -> io::Result<()> {
    let report = match outcome {
        FileOutcome::Ran(report) => report,
        FileOutcome::Error {
            integration,
            file,
            error,
        } => {
            let label = if palette.color {
                "\x1b[31merror\x1b[0m"
            } else {
                "error"
            };
            return writeln!(
                out,
                "{}  {}  {label}: {}",
                term(integration),
                term(file.as_deref().unwrap_or("-")),
                term(error)
            );
        }
    };
    let r = &report.record;
    let date = r
        .business_date
        .map(|d| d.to_string())
        .unwrap_or_else(|| "-".into());
    let status = palette.status(r.status, &r.status.to_string(), 0);
    let status = if report.dry_run {
        format!("{status} (dry run)")
    } else {
        status
    };
    write!(
        out,
        "{}  {}  {}  {status}",
        term(&r.integration),
        date,
        term(r.file_name.as_deref().unwrap_or("-"))
    )?;
    if let Some(c) = &report.changes {
        write!(out, "  {}", counts(r, c.inserted, c.updated, c.deleted))?;
        if c.subscribed + c.unsubscribed > 0 {
            write!(
                out,
                "  subscribed {} unsubscribed {}",
                c.subscribed, c.unsubscribed
            )?;
        }
    } else if r.input_rows > 0 {
        write!(out, "  rows {} rejected {}", r.input_rows, r.error_rows)?;
    }
    writeln!(out)?;
    if !report.dry_run {
        writeln!(out, "    run {}", r.execution_id)?;
    }
    if let Some(m) = &r.message {
        writeln!(out, "    {}", term(m))?;
    }
    for e in &report.errors {
        writeln!(out, "    {}", row_error(e))?;
    }
    if r.error_rows as usize > report.errors.len() && !report.dry_run {
        writeln!(
            out,
            "    (all rejected rows: dropsync show {} --errors {})",
            r.execution_id, r.error_rows
        )?;
    }
    if let Some(c) = report.changes.as_ref().filter(|_| report.dry_run) {
        // A few of each kind: enough to see what the batch does.
        let mut shown: std::collections::HashMap<&str, usize> = Default::default();
        for sample in &c.samples {
            let n = shown.entry(sample.kind.as_str()).or_default();
            *n += 1;
            if *n > CLI_SAMPLES {
                continue;
            }
            match &sample.detail {
                Some(detail) => writeln!(
                    out,
                    "    would {} {}: {}",
                    sample.kind,
                    term(&sample.key),
                    term(detail)
                )?,
                None => writeln!(out, "    would {} {}", sample.kind, term(&sample.key))?,
            }
        }
    }
    Ok(())
}

/// Changed keys of each kind a dry run prints.
const CLI_SAMPLES: usize = 5;

/// `rows 9 ok 9 rejected 0 skipped 0  +2 ~2 -1`
fn counts(r: &RunRecord, inserted: u64, updated: u64, deleted: u64) -> String {
    format!(
        "rows {} ok {} rejected {} skipped {}  +{inserted} ~{updated} -{deleted}",
        r.input_rows, r.success_rows, r.error_rows, r.skipped_rows
    )
}

fn row_error(e: &RowError) -> String {
    let mut s = format!("line {}", e.line);
    if let Some(k) = &e.key {
        s.push_str(&format!(" [{}]", term(k)));
    }
    if let Some(f) = &e.field {
        s.push_str(&format!(" {}", term(f)));
    }
    s.push_str(&format!(": {}", term(&e.message)));
    s
}

pub fn history(out: &mut dyn Write, runs: &[RunRecord], palette: Palette) -> io::Result<()> {
    if runs.is_empty() {
        return writeln!(out, "no runs yet");
    }
    writeln!(
        out,
        "{:<36}  {:<20}  {:<10}  {:<11}  {:>9}  {:>8}  {:>8}  {:>8}  {:>8}  {:<19}  FILE",
        "EXECUTION ID",
        "INTEGRATION",
        "DATE",
        "STATUS",
        "ROWS",
        "REJECTED",
        "INSERTED",
        "UPDATED",
        "DELETED",
        "STARTED (UTC)"
    )?;
    for r in runs {
        writeln!(
            out,
            "{:<36}  {:<20}  {:<10}  {}  {:>9}  {:>8}  {:>8}  {:>8}  {:>8}  {:<19}  {}",
            r.execution_id,
            term(&r.integration),
            r.business_date.map(|d| d.to_string()).unwrap_or_default(),
            palette.status(r.status, r.status.as_str(), 11),
            r.input_rows,
            r.error_rows,
            r.inserted,
            r.updated,
            r.deleted,
            r.started_at.format("%Y-%m-%d %H:%M:%S"),
            term(r.file_name.as_deref().unwrap_or("-"))
        )?;
    }
    Ok(())
}

pub fn show(
    out: &mut dyn Write,
    r: &RunRecord,
    errors: &[RowError],
    palette: Palette,
) -> io::Result<()> {
    let opt = |v: &Option<String>| term(v.as_deref().unwrap_or("-")).into_owned();
    writeln!(out, "execution id   {}", term(&r.execution_id))?;
    writeln!(
        out,
        "integration    {} (dataset {}, mode {})",
        term(&r.integration),
        term(&r.dataset),
        term(&r.mode)
    )?;
    writeln!(
        out,
        "status         {}",
        palette.status(r.status, r.status.as_str(), 0)
    )?;
    if let Some(failure) = r.failure {
        writeln!(
            out,
            "failure        {}, attempt {}",
            failure.as_str(),
            r.attempt
        )?;
    }
    if let Some(m) = &r.message {
        writeln!(out, "message        {}", term(m))?;
    }
    writeln!(out, "file           {}", opt(&r.file_name))?;
    writeln!(
        out,
        "business date  {}",
        r.business_date.map(|d| d.to_string()).unwrap_or("-".into())
    )?;
    writeln!(out, "content hash   {}", opt(&r.content_hash))?;
    writeln!(out, "staged at      {}", opt(&r.staged_path))?;
    writeln!(
        out,
        "trigger        {}{}",
        term(&r.trigger),
        if r.forced { " (forced)" } else { "" }
    )?;
    writeln!(
        out,
        "started        {}",
        r.started_at.format("%Y-%m-%d %H:%M:%S UTC")
    )?;
    if let Some(c) = r.completed_at {
        writeln!(out, "completed      {}", c.format("%Y-%m-%d %H:%M:%S UTC"))?;
    }
    writeln!(
        out,
        "rows           {} in, {} ok, {} rejected, {} skipped",
        r.input_rows, r.success_rows, r.error_rows, r.skipped_rows
    )?;
    writeln!(
        out,
        "changes        {} inserted, {} updated, {} deleted, {} unchanged",
        r.inserted, r.updated, r.deleted, r.unchanged
    )?;
    if r.subscribed + r.unsubscribed > 0 {
        writeln!(
            out,
            "subscriptions  {} subscribed, {} unsubscribed",
            r.subscribed, r.unsubscribed
        )?;
    }
    if !errors.is_empty() {
        writeln!(out, "rejected rows:")?;
        for e in errors {
            writeln!(out, "  {}", row_error(e))?;
            writeln!(out, "      {}", term(&e.raw))?;
        }
        if (errors.len() as i64) < r.error_rows {
            writeln!(out, "  ... (more with --errors N)")?;
        }
    }
    Ok(())
}

pub fn validation(
    out: &mut dyn Write,
    file: &str,
    valid: &ValidRows,
    unchecked: &[String],
    limit: usize,
    as_json: bool,
) -> io::Result<()> {
    if as_json {
        return json(
            out,
            &serde_json::json!({
                "file": file,
                "valid": valid.error_rows == 0,
                "rows": valid.input_rows,
                "rejected": valid.error_rows,
                "skipped": valid.skipped_rows,
                "ignored_columns": valid.ignored_columns,
                "unchecked_references": unchecked,
                "errors": valid.errors.iter().take(limit).collect::<Vec<_>>(),
            }),
        );
    }
    writeln!(
        out,
        "{}: {}, {} valid, {} rejected, {} duplicates skipped",
        term(file),
        crate::rows(valid.input_rows),
        valid
            .input_rows
            .saturating_sub(valid.error_rows + valid.skipped_rows),
        valid.error_rows,
        valid.skipped_rows
    )?;
    for e in valid.errors.iter().take(limit) {
        writeln!(out, "  {}", row_error(e))?;
    }
    if valid.errors.len() > limit {
        writeln!(
            out,
            "  ... {} more errors (--errors N)",
            valid.errors.len() - limit
        )?;
    }
    if !valid.ignored_columns.is_empty() {
        writeln!(
            out,
            "  columns not in the schema (kept in _attributes): {}",
            term(&valid.ignored_columns.join(", "))
        )?;
    }
    if !unchecked.is_empty() {
        writeln!(
            out,
            "  references to {} are checked when syncing, not here",
            unchecked.join(", ")
        )?;
    }
    Ok(())
}

/// One card per integration.
pub fn status(out: &mut dyn Write, cards: &[crate::status::Card]) -> io::Result<()> {
    for (i, c) in cards.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        writeln!(out, "{}  ({}, {})", c.integration, c.dataset, c.mode)?;
        writeln!(out, "  source    {}", c.source)?;
        match (&c.schedule, &c.next_run) {
            (Some(schedule), Some(next)) => writeln!(
                out,
                "  schedule  {schedule} ({}), next {}",
                c.timezone.as_deref().unwrap_or("UTC"),
                next.format("%Y-%m-%d %H:%M:%S UTC")
            )?,
            (Some(schedule), None) => writeln!(out, "  schedule  {schedule} (never fires again)")?,
            (None, _) => writeln!(
                out,
                "  schedule  none (run by hand, a timer, or a watched folder)"
            )?,
        }
        freshness(out, c)?;
        if let Some(worker) = &c.worker {
            writeln!(out, "  syncing   now, on worker {}", term(worker))?;
        }
        for (label, undelivered) in [
            ("alerts", &c.undelivered_alerts),
            ("feed", &c.undelivered_feed),
        ] {
            if undelivered.count > 0 {
                writeln!(
                    out,
                    "  {label:<9} {} undelivered{}",
                    undelivered.count,
                    match &undelivered.last_error {
                        Some(e) => format!(" (last try: {e})"),
                        None => String::new(),
                    }
                )?;
            }
        }
        match &c.last_run {
            Some(r) => {
                writeln!(
                    out,
                    "  last run  {} at {} ({}), {}",
                    r.status,
                    r.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    r.trigger,
                    term(r.file_name.as_deref().unwrap_or("no file"))
                )?;
                writeln!(
                    out,
                    "            {}",
                    counts(r, r.inserted as u64, r.updated as u64, r.deleted as u64)
                )?;
                if let Some(m) = &r.message {
                    writeln!(out, "            {}", term(m))?;
                }
            }
            None => writeln!(out, "  last run  never")?,
        }
    }
    Ok(())
}

/// `  freshness overdue by 2h 13m: expected daily by 07:00 (UTC), ...`
fn freshness(out: &mut dyn Write, c: &crate::status::Card) -> io::Result<()> {
    use crate::freshness::{FreshnessState, human_duration};
    let f = &c.freshness;
    let zone: chrono_tz::Tz = c
        .timezone
        .as_deref()
        .and_then(|z| z.parse().ok())
        .unwrap_or(chrono_tz::Tz::UTC);
    let local = |t: &chrono::DateTime<chrono::Utc>| {
        t.with_timezone(&zone)
            .format("%Y-%m-%d %H:%M %Z")
            .to_string()
    };
    let expected = match &f.expect {
        Some(expect) => format!("expected {expect}"),
        None => "no expected time".to_string(),
    };
    let state = match f.state {
        FreshnessState::Overdue => format!(
            "overdue by {} ({} missed since {})",
            human_duration(f.late_secs.unwrap_or(0)),
            match f.missed_deadlines {
                1 => "1 deadline".to_string(),
                n => format!("{n} deadlines"),
            },
            f.overdue_since.as_ref().map(local).unwrap_or_default()
        ),
        FreshnessState::Failing => format!(
            "failing (run {} did not succeed)",
            f.failed_run.as_deref().unwrap_or("-")
        ),
        FreshnessState::Due => "due".to_string(),
        FreshnessState::Fresh => match f.last_file_late_secs {
            Some(late) if late > 0 => format!("fresh (last file {} late)", human_duration(late)),
            _ => "fresh".to_string(),
        },
        FreshnessState::Untracked => "untracked".to_string(),
    };
    let next = match &f.next_deadline {
        Some(next) => format!(", next by {}", local(next)),
        None => String::new(),
    };
    writeln!(out, "  freshness {state}: {expected}{next}")
}

/// What one logged change did, in a line: `Name: Acme -> Acme Inc` for an
/// update, the row for an insert or a delete.
fn change_detail(c: &ChangeRecord) -> String {
    let serde_json::Value::Object(fields) = &c.fields else {
        return String::new();
    };
    fields
        .iter()
        .map(|(name, value)| match (c.action, value) {
            (RowAction::Update, serde_json::Value::Array(pair)) if pair.len() == 2 => {
                let side = |v: &serde_json::Value| match v {
                    serde_json::Value::Null => "(empty)".to_string(),
                    v => json_text(v),
                };
                format!("{name}: {} -> {}", side(&pair[0]), side(&pair[1]))
            }
            _ => format!("{name}={}", json_text(value)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Changes as `fill` hands them over, one at a time, to the function it is
/// given: a change log of any length is printed holding one change.
pub type EachChange<'a, E> = &'a mut dyn FnMut(&ChangeRecord) -> Result<(), E>;

/// `changes`, as a table.
pub fn changes<E: From<io::Error>>(
    out: &mut dyn Write,
    fill: impl FnOnce(EachChange<'_, E>) -> Result<(), E>,
) -> Result<(), E> {
    let mut out = io::BufWriter::with_capacity(1 << 16, out);
    let mut any = false;
    fill(&mut |c| {
        if !any {
            any = true;
            writeln!(
                out,
                "{:>8}  {:<10}  {:<36}  {:<11}  {:<24}  CHANGED",
                "SEQ", "DATE", "EXECUTION ID", "KIND", "KEY"
            )?;
        }
        writeln!(
            out,
            "{:>8}  {:<10}  {:<36}  {:<11}  {:<24}  {}",
            c.seq,
            c.business_date.map(|d| d.to_string()).unwrap_or_default(),
            c.execution_id,
            c.kind.as_str(),
            term(&c.key_text()),
            term(&change_detail(c))
        )?;
        Ok(())
    })?;
    if !any {
        writeln!(out, "no changes")?;
    }
    Ok(out.flush()?)
}

/// `changes --json`: the array `json` would print of them all.
pub fn changes_json<E: From<io::Error>>(
    out: &mut dyn Write,
    fill: impl FnOnce(EachChange<'_, E>) -> Result<(), E>,
) -> Result<(), E> {
    use serde::ser::{SerializeSeq, Serializer};
    let mut out = io::BufWriter::with_capacity(1 << 16, out);
    let mut json = serde_json::Serializer::pretty(&mut out);
    let mut array = json.serialize_seq(None).map_err(io::Error::from)?;
    fill(&mut |c| Ok(array.serialize_element(c).map_err(io::Error::from)?))?;
    array.end().map_err(io::Error::from)?;
    writeln!(out)?;
    Ok(out.flush()?)
}

/// `changes --csv`: one change a line, its key and fields as JSON; cells a
/// spreadsheet would run as formulas get a leading `'`.
pub fn changes_csv<E: From<io::Error>>(
    out: &mut dyn Write,
    fill: impl FnOnce(EachChange<'_, E>) -> Result<(), E>,
) -> Result<(), E> {
    let mut writer = csv::Writer::from_writer(out);
    writer
        .write_record(ChangeRecord::CSV_COLUMNS)
        .map_err(io::Error::from)?;
    fill(&mut |c| {
        let cells = c.csv_cells();
        writer
            .write_record(cells.iter().map(|cell| spreadsheet_safe(cell).into_owned()))
            .map_err(io::Error::from)?;
        Ok(())
    })?;
    Ok(writer.flush()?)
}

#[cfg(test)]
mod tests {
    use super::term;

    #[test]
    fn control_characters_and_bidi_overrides_are_escaped() {
        let cases = [
            ("plain name.csv", "plain name.csv"),
            ("Zürich €", "Zürich €"),
            ("a\nb\tc\rd", "a\\nb\\tc\\rd"),
            ("\u{1b}[31mred\u{1b}[0m", "\\u{1b}[31mred\\u{1b}[0m"),
            (
                "bell\u{7} del\u{7f} csi\u{9b}",
                "bell\\u{7} del\\u{7f} csi\\u{9b}",
            ),
            ("txt.\u{202e}exe", "txt.\\u{202e}exe"),
        ];
        for (raw, shown) in cases {
            assert_eq!(term(raw), shown, "{raw:?}");
        }
    }
}

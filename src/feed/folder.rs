//! A folder subscriber: each run's changes written as one file, named so
//! that the files sort by time and say which run they hold
//! (`20261126T045012.345Z_crm_EXECUTION_ID.jsonl`). The file appears whole
//! or not at all: it is written under a hidden temporary name in the same
//! folder, synced, then renamed, and the folder synced.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::{Changes, FeedEvent, FeedFormat, SubscriberConfig};
use crate::notify::Event;
use crate::store::ChangeRecord;

pub(super) fn send(
    subscriber: &SubscriberConfig,
    changes: &Changes<'_>,
    event: &Event,
) -> Result<(), String> {
    let Some(dir) = subscriber.path.as_deref() else {
        return Err("no folder configured".into());
    };
    let mode = subscriber.mode()?;
    let shown = |path: &Path, e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    if !dir.is_dir() {
        crate::source::create_private_dir(dir).map_err(|e| shown(dir, &e))?;
        // Whom the files' mode lets read them can open the folder too.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(folder_mode(mode)))
            .map_err(|e| shown(dir, &e))?;
    }
    let name = format!(
        "{}_{}_{}.{}",
        event.created_at.format("%Y%m%dT%H%M%S%.3fZ"),
        changes.integration,
        changes.execution_id,
        match subscriber.format {
            FeedFormat::Jsonl => "jsonl",
            FeedFormat::Csv => "csv",
        }
    );
    let path = dir.join(&name);
    let temp = dir.join(format!(".{name}.tmp"));
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temp)
        .map_err(|e| shown(&temp, &e))?;
    // The process's umask keeps new files private; a configured mode is
    // meant as given.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| shown(&temp, &e))?;
    let written = write_changes(subscriber.format, changes, &file)
        .and_then(|n| file.sync_all().map_err(|e| e.to_string()).map(|_| n));
    let written = match written {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            return Err(shown(&temp, &e));
        }
    };
    if written == 0 {
        // Nothing of the run is for this subscriber: no file.
        let _ = std::fs::remove_file(&temp);
        return Ok(());
    }
    std::fs::rename(&temp, &path).map_err(|e| shown(&path, &e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| shown(dir, &e))?;
    tracing::debug!(subscriber = subscriber.name, file = %path.display(), changes = written, "changes written");
    Ok(())
}

/// The mode of a folder created for files of `file_mode`: its owner's,
/// and searchable by the group or others when they may read the files.
fn folder_mode(file_mode: u32) -> u32 {
    let mut mode = 0o700;
    for (read, search) in [(0o040, 0o050), (0o004, 0o005)] {
        if file_mode & read != 0 {
            mode |= search;
        }
    }
    mode
}

/// Writes the wanted changes to `file`; returns how many.
fn write_changes(format: FeedFormat, changes: &Changes<'_>, file: &File) -> Result<u64, String> {
    let mut count = 0u64;
    match format {
        FeedFormat::Jsonl => {
            let mut out = BufWriter::new(file);
            changes.for_each(0, |change| {
                serde_json::to_writer(&mut out, &FeedEvent::new(change))
                    .map_err(|e| e.to_string())?;
                out.write_all(b"\n").map_err(|e| e.to_string())?;
                count += 1;
                Ok(())
            })?;
            out.flush().map_err(|e| e.to_string())?;
        }
        FeedFormat::Csv => {
            let mut out = csv::Writer::from_writer(BufWriter::new(file));
            let header = std::iter::once("idempotency_key").chain(ChangeRecord::CSV_COLUMNS);
            out.write_record(header).map_err(|e| e.to_string())?;
            changes.for_each(0, |c| {
                let key = FeedEvent::new(c).idempotency_key;
                out.write_record(std::iter::once(key).chain(c.csv_cells()))
                    .map_err(|e| e.to_string())?;
                count += 1;
                Ok(())
            })?;
            out.flush().map_err(|e| e.to_string())?;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_folder_is_opened_to_whom_its_files_are() {
        for (file, folder) in [
            (0o600, 0o700),
            (0o640, 0o750),
            (0o644, 0o755),
            (0o604, 0o705),
        ] {
            assert_eq!(super::folder_mode(file), folder, "{file:o}");
        }
    }
}

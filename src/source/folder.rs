//! A local (or mounted) directory: every regular file whose name fits the
//! pattern is a candidate. Dot-files and temporary names are never offered,
//! since writers use them while a file is still being written.

use std::path::{Path, PathBuf};

use super::{Candidate, FilePattern, Source, SourceError, StagedFile, mtime_date};

pub struct FolderSource {
    dir: PathBuf,
    pattern: FilePattern,
    min_age: std::time::Duration,
}

impl FolderSource {
    /// A folder whose files modified less than `min_age` ago are left alone.
    pub fn new(dir: PathBuf, pattern: FilePattern, min_age: std::time::Duration) -> FolderSource {
        FolderSource {
            dir,
            pattern,
            min_age,
        }
    }
}

/// Names writers use for files still in progress.
pub(crate) fn is_temporary_name(name: &str) -> bool {
    name.starts_with('.')
        || [".partial", ".tmp", ".filepart", ".part", ".crdownload"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
}

impl Source for FolderSource {
    fn list(&self) -> Result<Vec<Candidate>, SourceError> {
        let list_err = |source| SourceError::List {
            dir: self.dir.clone(),
            source,
        };
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(list_err)? {
            let entry = entry.map_err(list_err)?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if is_temporary_name(&name) {
                continue;
            }
            let Some(date) = self.pattern.matches(&name) else {
                continue;
            };
            let meta = entry.metadata().map_err(list_err)?;
            if !meta.is_file() {
                continue;
            }
            let age = meta.modified().ok().and_then(|m| m.elapsed().ok());
            if !self.min_age.is_zero() && age.is_none_or(|age| age < self.min_age) {
                tracing::info!(name, "left for a later run: it was modified moments ago");
                continue;
            }
            out.push(Candidate {
                business_date: date.unwrap_or_else(|| mtime_date(&meta)),
                size: meta.len(),
                modified: super::mtime(&meta),
                location: entry.path(),
                name,
            });
        }
        out.sort_by(|a, b| (a.business_date, &a.name).cmp(&(b.business_date, &b.name)));
        Ok(out)
    }

    fn fetch(&self, candidate: &Candidate, staging: &Path) -> Result<StagedFile, SourceError> {
        super::stage_from_reader(candidate, staging)
    }
}

//! Where files come from, and staging: every file is copied into the store's
//! staging directory under its content hash before anything reads it, so a
//! run works on an immutable local copy that is kept for replays.

mod folder;
mod ftp;
mod known_hosts;
mod pattern;
mod remote;
mod sftp;

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use sha2::{Digest, Sha256};

use crate::config::{IntegrationConfig, SourceConfig};
pub use folder::FolderSource;
pub use ftp::{FtpSource, log_line_allowed};
pub use pattern::{FilePattern, PatternError};
pub use remote::{RemoteEntry, unsafe_name};
pub use sftp::SftpSource;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot list {dir}: {source}")]
    List {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot stage {path} into {staging}: {source}")]
    Stage {
        path: PathBuf,
        staging: PathBuf,
        source: std::io::Error,
    },
    /// The staged copy could not be written to disk (a full or failing disk).
    #[error("the staged copy {path} could not be written to disk: {source}")]
    Unsynced {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A staged copy whose content no longer hashes to the hash it was
    /// staged (and recorded) under: it was changed after staging.
    #[error(
        "the staged copy {path} was changed after it was staged: its content hashes to {actual}, not to the {expected} it was recorded under; it is not replayed (drop the original file again, or restore the copy)"
    )]
    Altered {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// A remote server refused or failed; `transient` failures (a dropped
    /// connection, a timeout, a short transfer) are worth retrying.
    #[error("{message}")]
    Remote { message: String, transient: bool },
}

impl SourceError {
    /// Whether trying again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SourceError::Remote {
                transient: true,
                ..
            }
        )
    }
}

/// A file a source offers, not yet fetched.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The file's name at the source.
    pub name: String,
    /// Where it is (a local path for folder sources).
    pub location: PathBuf,
    pub size: u64,
    /// Its modification time at the source (UTC), when known.
    pub modified: Option<chrono::NaiveDateTime>,
    /// The day the file stands for: from its name, else its modification time.
    pub business_date: NaiveDate,
}

/// A fetched file: local, immutable, identified by its content hash.
#[derive(Debug, Clone)]
pub struct StagedFile {
    /// The file's original name.
    pub name: String,
    /// The staged copy.
    pub path: PathBuf,
    /// Lower-case hex SHA-256 of the content.
    pub content_hash: String,
    pub size: u64,
    pub business_date: NaiveDate,
    /// How many line ends (LF) the content has, when counted as it was
    /// staged: a read that needs it does not read the file once more.
    pub line_ends: Option<u64>,
}

/// The source of one integration.
pub trait Source {
    /// Files matching the integration's pattern, complete enough to fetch,
    /// oldest business date first.
    fn list(&self) -> Result<Vec<Candidate>, SourceError>;
    /// Copies a candidate into staging.
    fn fetch(&self, candidate: &Candidate, staging: &Path) -> Result<StagedFile, SourceError>;
    /// What the source does with a file once its content (of this hash)
    /// has been applied (remote sources: leave, delete or archive it).
    fn finish(&self, _candidate: &Candidate, _content_hash: &str) -> Result<(), SourceError> {
        Ok(())
    }
}

/// The source an integration is configured with; a folder leaves files
/// modified less than `folder_min_age` ago for a later run.
pub fn open(
    integration: &IntegrationConfig,
    folder_min_age: std::time::Duration,
) -> Result<Box<dyn Source>, SourceError> {
    let pattern = FilePattern::parse(&integration.pattern)?;
    Ok(match &integration.source {
        SourceConfig::Folder { path } => {
            Box::new(FolderSource::new(path.clone(), pattern, folder_min_age))
        }
        SourceConfig::Ftp(config) => Box::new(FtpSource::new(config.clone(), pattern)),
        SourceConfig::Sftp(config) => Box::new(SftpSource::new(config.clone(), pattern)),
    })
}

/// Stages a local file given on the command line (`dropsync ingest`). Its
/// business date comes from the pattern when the name fits it, else from
/// its modification time.
pub fn stage_local(
    path: &Path,
    pattern: &FilePattern,
    staging: &Path,
) -> Result<StagedFile, SourceError> {
    let meta = std::fs::metadata(path).map_err(|source| SourceError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let business_date = pattern
        .matches(&name)
        .flatten()
        .unwrap_or_else(|| mtime_date(&meta));
    let candidate = Candidate {
        name,
        location: path.to_path_buf(),
        size: meta.len(),
        modified: mtime(&meta),
        business_date,
    };
    stage_from_reader(&candidate, staging)
}

/// Stages a file whose content a client of the daemon sent (`dropsync
/// ingest` while a daemon holds the store): the client opened the file with
/// its own rights, so the daemon never opens a path a client names. `name`
/// and `modified` are what the client said of the file; the business date
/// comes from the pattern when the name fits it, else from `modified`.
pub fn stage_received(
    content: &mut dyn Read,
    name: &str,
    size: u64,
    modified: Option<chrono::NaiveDateTime>,
    pattern: &FilePattern,
    staging: &Path,
) -> Result<StagedFile, SourceError> {
    let business_date = pattern
        .matches(name)
        .flatten()
        .or(modified.map(|m| m.date()))
        .unwrap_or_else(|| chrono::Utc::now().date_naive());
    let candidate = Candidate {
        name: name.to_string(),
        location: PathBuf::from(name),
        size,
        modified,
        business_date,
    };
    stage_reader(content, &candidate, staging, Some(size))
}

/// Checks that a staged copy still holds the content it was staged under
/// before it is replayed: its name and the history both say that hash, and
/// applying other bytes under it would record a lie.
pub fn verify_staged(file: &StagedFile) -> Result<(), SourceError> {
    let read_err = |source| SourceError::Read {
        path: file.path.clone(),
        source,
    };
    let mut input = std::fs::File::open(&file.path).map_err(read_err)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut input, &mut hasher).map_err(read_err)?;
    let actual = hex(&hasher.finalize());
    if actual != file.content_hash {
        return Err(SourceError::Altered {
            path: file.path.clone(),
            expected: file.content_hash.clone(),
            actual,
        });
    }
    Ok(())
}

/// Creates `dir` and its missing parents readable by their owner only:
/// staging holds partners' raw data.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// A file's modification time, in UTC.
pub(crate) fn mtime(meta: &std::fs::Metadata) -> Option<chrono::NaiveDateTime> {
    meta.modified()
        .ok()
        .map(|t| chrono::DateTime::<chrono::Utc>::from(t).naive_utc())
}

/// The UTC date of a file's modification time (today if the platform has none).
pub(crate) fn mtime_date(meta: &std::fs::Metadata) -> NaiveDate {
    mtime(meta)
        .map(|t| t.date())
        .unwrap_or_else(|| chrono::Utc::now().date_naive())
}

/// Deletes staged copies older than `keep_days` days (0 keeps them all).
pub fn prune_staging(staging: &Path, keep_days: u64) {
    if keep_days == 0 {
        return;
    }
    let limit = std::time::Duration::from_secs(keep_days.saturating_mul(86_400));
    let Ok(integrations) = std::fs::read_dir(staging) else {
        return;
    };
    for dir in integrations.flatten().filter(|e| e.path().is_dir()) {
        let Ok(files) = std::fs::read_dir(dir.path()) else {
            continue;
        };
        for file in files.flatten() {
            let old = file
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > limit);
            if old && file.file_name().to_string_lossy().ends_with(".csv") {
                let _ = std::fs::remove_file(file.path());
            }
        }
    }
}

/// Removes what an interrupted process left in staging: partial copies and
/// hand-off files. Called only while holding the store, so no other dropsync
/// process is using them.
pub fn clean_staging(staging: &Path) {
    let Ok(entries) = std::fs::read_dir(staging) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == ".work" {
            let _ = std::fs::remove_dir_all(&path);
        } else if name.starts_with(".incoming-") {
            let _ = std::fs::remove_file(&path);
        } else if path.is_dir() {
            clean_staging(&path);
        }
    }
}

/// Copies the local file `candidate.location` into staging.
pub(crate) fn stage_from_reader(
    candidate: &Candidate,
    staging: &Path,
) -> Result<StagedFile, SourceError> {
    let mut input =
        std::fs::File::open(&candidate.location).map_err(|source| SourceError::Read {
            path: candidate.location.clone(),
            source,
        })?;
    stage_reader(&mut input, candidate, staging, None)
}

/// Copies `input` into `staging/<hash>.csv` while hashing it: written to a
/// temporary name, synced, then renamed, so a staged file is always whole.
/// With `expected_size`, a copy that ends short (or long) is refused.
pub(crate) fn stage_reader(
    input: &mut dyn Read,
    candidate: &Candidate,
    staging: &Path,
    expected_size: Option<u64>,
) -> Result<StagedFile, SourceError> {
    let stage_err = |source| SourceError::Stage {
        path: candidate.location.clone(),
        staging: staging.to_path_buf(),
        source,
    };
    create_private_dir(staging).map_err(stage_err)?;
    let (tmp_path, tmp) = tempfile_in(staging).map_err(stage_err)?;
    // Hashing and writing take turns on every block of a plain loop; here
    // the copy is written by a thread of its own while the next block is
    // read and hashed, both from the same buffer, so what is hashed is
    // exactly what is written. Buffers go back to the reader to be reused:
    // a few MB at most, however large the file.
    const BLOCK: usize = 1 << 20;
    let (to_writer, blocks) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
    let (give_back, written) = std::sync::mpsc::channel::<Vec<u8>>();
    let copied = std::thread::scope(|scope| {
        // The writer also counts the copy's line ends.
        let writer = scope.spawn(move || -> std::io::Result<u64> {
            let mut tmp = tmp;
            let mut line_ends = 0u64;
            for block in blocks {
                tmp.write_all(&block)?;
                line_ends += memchr::memchr_iter(b'\n', &block).count() as u64;
                let _ = give_back.send(block);
            }
            Ok(line_ends)
        });
        let read = (|| -> Result<(String, u64), SourceError> {
            let to_writer = to_writer;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            loop {
                let mut buf = written.try_recv().unwrap_or_default();
                buf.resize(BLOCK, 0);
                let n = match input.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(SourceError::Remote {
                            message: format!(
                                "reading {} failed after {size} bytes: {e}",
                                candidate.location.display()
                            ),
                            transient: true,
                        });
                    }
                };
                buf.truncate(n);
                hasher.update(&buf);
                size += n as u64;
                // A writer that stopped has failed: its error is the cause.
                if to_writer.send(buf).is_err() {
                    break;
                }
                crate::progress::report(crate::progress::Event::Bytes(size));
            }
            Ok((hex(&hasher.finalize()), size))
        })();
        let line_ends = writer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            .map_err(stage_err)?;
        let (content_hash, size) = read?;
        if let Some(expected) = expected_size
            && expected != size
        {
            return Err(SourceError::Remote {
                message: format!(
                    "the transfer of {} ended after {size} of {expected} bytes",
                    candidate.location.display()
                ),
                transient: true,
            });
        }
        Ok((content_hash, size, line_ends))
    });
    let (content_hash, size, line_ends) = match copied {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp_path);
            return Err(e);
        }
    };
    let path = staging.join(format!("{content_hash}.csv"));
    // Durable once the file and its directory are synced: `make_durable`.
    std::fs::rename(&tmp_path, &path).map_err(stage_err)?;
    Ok(StagedFile {
        name: candidate.name.clone(),
        path,
        content_hash,
        size,
        business_date: candidate.business_date,
        line_ends: Some(line_ends),
    })
}

/// Starts making a staged copy durable, without waiting: the copy and its
/// name go to disk on a thread of their own while the file is parsed, and
/// `Writeback::wait` later finds little or nothing left to wait for. Called
/// once the run's first record is committed: on ext4 a commit waits for the
/// data of files whose writeback has started, so started earlier, the copy
/// would be written before the run could begin.
pub fn start_writeback(file: &StagedFile) -> Writeback {
    let path = file.path.clone();
    Writeback {
        syncing: std::thread::spawn(move || sync_copy(&path)),
    }
}

/// A staged copy being made durable (`start_writeback`).
pub struct Writeback {
    syncing: std::thread::JoinHandle<std::io::Result<()>>,
}

impl Writeback {
    /// Waits until the copy is on disk, as `make_durable` does, and says
    /// what the sync met. A failed sync is not tried again: after a failed
    /// fsync Linux may report the next one as clean though the data is lost.
    pub fn wait(self, file: &StagedFile) -> Result<(), SourceError> {
        self.syncing
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            .map_err(unsynced(file))
    }
}

/// The error of a staged copy that could not be synced.
fn unsynced(file: &StagedFile) -> impl FnOnce(std::io::Error) -> SourceError + '_ {
    |source| SourceError::Unsynced {
        path: file.path.clone(),
        source,
    }
}

/// Syncs a staged copy and then its directory, so both its content and its
/// name survive a power loss (file systems that cannot sync a directory
/// say EINVAL).
fn sync_copy(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()?;
    let dir = path.parent().unwrap_or(Path::new("."));
    match std::fs::File::open(dir).and_then(|dir| dir.sync_all()) {
        Err(e) if e.kind() != std::io::ErrorKind::InvalidInput => Err(e),
        _ => Ok(()),
    }
}

/// Waits until a staged copy's content is on disk. Called before the batch
/// that records the copy commits, so a committed run never names a copy a
/// power loss could take. A run that read the file started this while it
/// read (`start_writeback`).
pub fn make_durable(file: &StagedFile) -> Result<(), SourceError> {
    sync_copy(&file.path).map_err(unsynced(file))
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    for attempt in 0..100u32 {
        let path = dir.join(format!(
            ".incoming-{}-{}-{attempt}.partial",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        ));
        // Owner-only whatever the umask: a staged copy is a partner's raw data.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("cannot create a temporary file"))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

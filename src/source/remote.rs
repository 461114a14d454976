//! What FTP and SFTP sources share: which remote names are trusted, which
//! files are complete enough to fetch, retries with backoff, secrets, and
//! downloading into staging so that a staged file is always whole.

use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDateTime;

use super::{Candidate, FilePattern, SourceError, StagedFile, folder::is_temporary_name};
use crate::config::RemoteOptions;
use crate::secret::SecretError;

/// One file in a remote listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEntry {
    pub name: String,
    pub size: u64,
    pub modified: Option<NaiveDateTime>,
    /// How exactly the server gave `modified`.
    pub precision: TimePrecision,
}

/// How exactly a listing gives a file's modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimePrecision {
    /// To the second: SFTP, FTP's MLSD and MDTM.
    Second,
    /// To the minute, rounded down: an FTP LIST line ("Nov 25 23:30"), all
    /// a server without MDTM and MLSD gives. The file may have been
    /// written up to a minute later than it says.
    Minute,
}

impl TimePrecision {
    /// How much later than the listed time the file may have changed.
    fn slack(self) -> chrono::Duration {
        match self {
            TimePrecision::Second => chrono::Duration::zero(),
            TimePrecision::Minute => chrono::Duration::seconds(59),
        }
    }
}

/// Whether a listed name could become a candidate: named safely, not a
/// temporary name, and fitting the pattern. Only such names are worth
/// asking the server more about.
pub fn wanted(name: &str, pattern: &FilePattern) -> bool {
    unsafe_name(name).is_none() && !is_temporary_name(name) && pattern.matches(name).is_some()
}

/// Why a remote name is refused, if it is: names come from the server and
/// end up in local paths and in commands sent back to it.
pub fn unsafe_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.contains('\0') {
        Some("it holds a NUL byte")
    } else if name.contains('/') || name.contains('\\') {
        Some("it holds a path separator")
    } else if name == "." || name == ".." || name.starts_with("..") {
        Some("it names a parent directory")
    } else {
        None
    }
}

/// The listing's files that fit the pattern, are named safely, are not
/// temporary names, and are old enough; oldest business date first.
pub fn candidates(
    entries: Vec<RemoteEntry>,
    pattern: &FilePattern,
    directory: &str,
    options: &RemoteOptions,
    now: NaiveDateTime,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    for entry in entries {
        if let Some(why) = unsafe_name(&entry.name) {
            tracing::warn!(
                name = entry.name.escape_debug().to_string(),
                directory,
                "remote file name refused: {why}"
            );
            continue;
        }
        if is_temporary_name(&entry.name) {
            continue;
        }
        let Some(date) = pattern.matches(&entry.name) else {
            continue;
        };
        // A LIST time is in whatever zone the server lists in; one well
        // ahead of now is most likely local time east of UTC.
        if entry.precision == TimePrecision::Minute
            && let Some(m) = entry.modified
            && (m - now).num_minutes() > 2
        {
            tracing::warn!(
                name = entry.name,
                ahead_minutes = (m - now).num_minutes(),
                "the server lists this file as modified in the future: its LIST times may be in a local time zone, which min_age_secs cannot correct for; settle_secs (two listings) does not depend on the time"
            );
        }
        // The latest the file may have been written, as far as the listing can tell.
        let young = entry.modified.is_some_and(|m| {
            (now - (m + entry.precision.slack())).num_seconds() < options.min_age_secs.get() as i64
        });
        if young {
            tracing::info!(
                name = entry.name,
                "left for the next run: modified less than min_age_secs ago, it may still be being written"
            );
            continue;
        }
        let business_date = date
            .or(entry.modified.map(|m| m.date()))
            .unwrap_or_else(|| now.date());
        out.push(Candidate {
            location: PathBuf::from(remote_path(directory, &entry.name)),
            name: entry.name,
            size: entry.size,
            modified: entry.modified,
            business_date,
        });
    }
    out.sort_by(|a, b| (a.business_date, &a.name).cmp(&(b.business_date, &b.name)));
    out
}

/// The candidates of a remote directory: listed once, or twice
/// `settle_secs` apart to leave out files still changing.
pub fn list(
    options: &RemoteOptions,
    pattern: &FilePattern,
    listing: impl Fn() -> Result<Vec<RemoteEntry>, SourceError>,
) -> Result<Vec<Candidate>, SourceError> {
    let mut entries = listing()?;
    if options.settle_secs.get() > 0 {
        std::thread::sleep(Duration::from_secs(options.settle_secs.get()));
        entries = settled(&entries, listing()?);
    }
    let now = chrono::Utc::now().naive_utc();
    Ok(candidates(
        entries,
        pattern,
        &options.directory,
        options,
        now,
    ))
}

/// Keeps the entries of `second` that `first` listed the same: a file whose
/// size or time moved between two listings is still being written.
pub fn settled(first: &[RemoteEntry], second: Vec<RemoteEntry>) -> Vec<RemoteEntry> {
    second
        .into_iter()
        .filter(|e| {
            let same = first.contains(e);
            if !same {
                tracing::info!(
                    name = e.name,
                    "left for the next run: it changed between two listings"
                );
            }
            same
        })
        .collect()
}

/// A server's failure: where, doing what, and what it said.
pub fn failure(url: &str, what: &str, e: impl std::fmt::Display, transient: bool) -> SourceError {
    SourceError::Remote {
        message: format!("{url}: {what}: {e}"),
        transient,
    }
}

/// Connects to `host` on `port`, trying each address the name resolves to
/// (IPv6 and IPv4, in the resolver's order) until one answers, each within
/// `timeout`. The error names every address tried and why it failed.
pub fn connect_tcp(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    let mut failures = Vec::new();
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(stream) => {
                if !failures.is_empty() {
                    tracing::info!(
                        %addr,
                        "connected after {} other address(es) of {host} failed: {}",
                        failures.len(),
                        failures.join("; ")
                    );
                }
                return Ok(stream);
            }
            Err(e) => failures.push(format!("{addr}: {e}")),
        }
    }
    Err(failures.join("; "))
}

/// The name a synced file is archived under: `<stem>.<UTC time>-<hash><ext>`,
/// e.g. `accounts_20261103.20261104T020013Z-3f2a9c1b7d4e.csv`, the time it
/// was archived to the second and the first 12 hex digits of its content
/// hash (its staged copy is `staging/<integration>/<hash>.csv`). A file
/// delivered again under the same name, corrected or not, never clashes
/// with an earlier copy: SFTP's rename would refuse it, and FTP servers
/// overwrite it.
pub fn archive_name(name: &str, content_hash: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => name.split_at(dot),
        _ => (name, ""),
    };
    let hash: String = content_hash.chars().take(12).collect();
    format!("{stem}.{}-{hash}{ext}", now.format("%Y%m%dT%H%M%SZ"))
}

/// `directory/name`, as the server sees it.
pub fn remote_path(directory: &str, name: &str) -> String {
    match directory.trim_end_matches('/') {
        "" if directory.starts_with('/') => format!("/{name}"),
        "" | "." => name.to_string(),
        dir => format!("{dir}/{name}"),
    }
}

/// Runs `attempt` until it succeeds, fails for good, or has failed
/// `1 + retries` times, waiting `retry_delay_ms`, then twice that, and so on.
pub fn with_retries<T>(
    options: &RemoteOptions,
    what: &str,
    mut attempt: impl FnMut() -> Result<T, SourceError>,
) -> Result<T, SourceError> {
    let mut delay = Duration::from_millis(options.retry_delay_ms.get());
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt() {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && tries <= options.retries.get() => {
                tracing::warn!(
                    attempt = tries,
                    retry_in_ms = delay.as_millis() as u64,
                    "{what} failed: {e}"
                );
                std::thread::sleep(delay);
                delay = delay.saturating_mul(2);
            }
            Err(e) if tries > 1 => {
                return Err(SourceError::Remote {
                    message: format!("{e} (after {tries} attempts)"),
                    transient: false,
                });
            }
            Err(e) => return Err(e),
        }
    }
}

/// A secret read from an environment variable or a file, never from the
/// config text. Errors name where it was looked for, never its value.
pub fn secret(
    env: Option<&str>,
    file: Option<&Path>,
    what: &str,
) -> Result<Option<String>, SourceError> {
    crate::secret::read(env, file).map_err(|e| SourceError::Remote {
        message: match e {
            SecretError::Unset { var } => format!(
                "the {what} is to come from the environment variable {var}, which is not set"
            ),
            SecretError::Unreadable { path, source } => {
                format!("cannot read the {what} file {}: {source}", path.display())
            }
        },
        transient: false,
    })
}

/// Downloads `reader` into staging. The bytes go to a temporary name and
/// are renamed only when complete: when the server said how big the file
/// is, a transfer that ends short is an error, never a staged file.
pub fn download(
    reader: &mut dyn Read,
    candidate: &Candidate,
    staging: &Path,
) -> Result<StagedFile, SourceError> {
    super::stage_reader(reader, candidate, staging, Some(candidate.size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_names_that_are_refused() {
        for (name, refused) in [
            ("accounts_20260101.csv", false),
            ("a..b.csv", false),
            ("", true),
            (".", true),
            ("..", true),
            ("../etc/passwd", true),
            ("..accounts.csv", true),
            ("/etc/passwd", true),
            ("dir/file.csv", true),
            ("..\\x.csv", true),
            ("x\\y.csv", true),
            ("nul\0byte.csv", true),
        ] {
            assert_eq!(unsafe_name(name).is_some(), refused, "{name:?}");
        }
    }

    #[test]
    fn archive_names_keep_the_extension_and_carry_time_and_hash() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-04T02:00:13Z")
            .unwrap()
            .to_utc();
        let hash = "3f2a9c1b7d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";
        for (name, archived) in [
            (
                "accounts_20261103.csv",
                "accounts_20261103.20261104T020013Z-3f2a9c1b7d4e.csv",
            ),
            (
                "export.tar.gz",
                "export.tar.20261104T020013Z-3f2a9c1b7d4e.gz",
            ),
            ("README", "README.20261104T020013Z-3f2a9c1b7d4e"),
        ] {
            assert_eq!(archive_name(name, hash, now), archived);
        }
    }

    #[test]
    fn remote_paths() {
        assert_eq!(remote_path(".", "a.csv"), "a.csv");
        assert_eq!(remote_path("/", "a.csv"), "/a.csv");
        assert_eq!(remote_path("/out/", "a.csv"), "/out/a.csv");
        assert_eq!(remote_path("out", "a.csv"), "out/a.csv");
    }

    #[test]
    fn young_temporary_and_unmatched_files_are_not_candidates() {
        let now = chrono::NaiveDate::from_ymd_opt(2026, 1, 2)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap();
        let entry = |name: &str, age_secs: i64| RemoteEntry {
            name: name.to_string(),
            size: 10,
            modified: Some(now - chrono::Duration::seconds(age_secs)),
            precision: TimePrecision::Second,
        };
        let options: RemoteOptions = toml::from_str("min_age_secs = 60").unwrap();
        let pattern = FilePattern::parse("a_{date:%Y%m%d}.csv").unwrap();
        let got = candidates(
            vec![
                entry("a_20260102.csv", 3600),
                entry("a_20260101.csv", 61),
                entry("a_20260103.csv", 59),
                entry("a_20260104.csv.partial", 3600),
                entry(".a_20260105.csv", 3600),
                entry("b_20260101.csv", 3600),
            ],
            &pattern,
            "/out",
            &options,
            now,
        );
        let names: Vec<(&str, String)> = got
            .iter()
            .map(|c| (c.name.as_str(), c.location.display().to_string()))
            .collect();
        assert_eq!(
            names,
            [
                ("a_20260101.csv", "/out/a_20260101.csv".to_string()),
                ("a_20260102.csv", "/out/a_20260102.csv".to_string()),
            ]
        );
    }

    #[test]
    fn a_time_to_the_minute_counts_from_the_end_of_that_minute() {
        let now = chrono::NaiveDate::from_ymd_opt(2026, 1, 2)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap();
        let listed = |name: &str, age_secs: i64| RemoteEntry {
            name: name.to_string(),
            size: 10,
            modified: Some(now - chrono::Duration::seconds(age_secs)),
            precision: TimePrecision::Minute,
        };
        let options: RemoteOptions = toml::from_str("min_age_secs = 60").unwrap();
        let pattern = FilePattern::parse("a_{date:%Y%m%d}.csv").unwrap();
        // Listed 90 s ago to the minute: it may have been written as late
        // as 31 s ago, too recently for min_age_secs = 60.
        let got = candidates(
            vec![listed("a_20260101.csv", 90), listed("a_20260102.csv", 120)],
            &pattern,
            "/out",
            &options,
            now,
        );
        let names: Vec<&str> = got.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a_20260102.csv"]);
    }

    #[test]
    fn files_that_changed_between_listings_are_left() {
        let e = |name: &str, size| RemoteEntry {
            name: name.into(),
            size,
            modified: None,
            precision: TimePrecision::Second,
        };
        let kept = settled(
            &[e("a", 1), e("b", 1)],
            vec![e("a", 1), e("b", 2), e("c", 1)],
        );
        assert_eq!(kept, [e("a", 1)]);
    }
}

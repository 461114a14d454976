//! How far a long run has got: the pipeline reports its stage, the bytes
//! and the rows done; whoever watches (a line redrawn on a terminal, the
//! daemon's log) reads them on its own clock.
//!
//! Reporting must cost next to nothing, since parsing reports once a chunk:
//! an event is an atomic store or add on counters, never a write to a
//! terminal or a log. The watcher samples the counters (a terminal ten
//! times a second, the daemon's log every few seconds).
//!
//! One sink per process, installed once, like tracing's global dispatcher:
//! a process runs one file at a time (the daemon's one worker owns the
//! store), so the counters describe the file in flight. With no sink
//! installed (a library user, a test), reporting does nothing.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Where a file's run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    /// Copying the file from its source into staging.
    Fetching = 1,
    /// Reading the CSV into rows.
    Parsing,
    /// Checking every row against the schema.
    Validating,
    /// Handing the valid rows to the store and telling new, changed and
    /// gone rows apart.
    Diffing,
    /// Deleting and inserting the changes, recording the run, committing.
    Applying,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Fetching => "fetching",
            Stage::Parsing => "parsing",
            Stage::Validating => "validating",
            Stage::Diffing => "diffing",
            Stage::Applying => "applying",
        }
    }

    fn from_u8(n: u8) -> Option<Stage> {
        Some(match n {
            1 => Stage::Fetching,
            2 => Stage::Parsing,
            3 => Stage::Validating,
            4 => Stage::Diffing,
            5 => Stage::Applying,
            _ => return None,
        })
    }
}

/// What the pipeline reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A file's run begins: its name, and its size when known. Resets the
    /// counters.
    File { name: &'a str, size: Option<u64> },
    /// A stage begins; bytes and rows count from zero in it.
    Stage(Stage),
    /// Bytes of the file done in this stage, counted from its start: a
    /// position, not an increment, so chunks finishing out of order on
    /// several threads may each report where they end (the highest wins).
    Bytes(u64),
    /// `n` more rows done in this stage (an increment: each chunk reports
    /// its own rows).
    Rows(u64),
    /// The file's run ended, whichever way.
    Done,
}

/// Receives the pipeline's events. Implementations must be cheap: events
/// come from the hot loop, on any thread.
pub trait Progress: Send + Sync {
    fn report(&self, event: Event<'_>);
}

static SINK: OnceLock<Arc<dyn Progress>> = OnceLock::new();

/// Makes `sink` receive every event of this process. Only the first call
/// counts: a process has one watcher.
pub fn install(sink: Arc<dyn Progress>) {
    let _ = SINK.set(sink);
}

/// Reports an event to the installed sink, if any.
#[inline]
pub fn report(event: Event<'_>) {
    if let Some(sink) = SINK.get() {
        sink.report(event);
    }
}

/// The counters a watcher samples; the usual sink.
#[derive(Debug)]
pub struct Tracker {
    stage: AtomicU8,
    bytes: AtomicU64,
    rows: AtomicU64,
    /// The file's size; 0 when not known.
    size: AtomicU64,
    /// Bumped at every `File` event, so a watcher tells two files apart.
    generation: AtomicU64,
    /// Whether a file is in flight.
    active: AtomicBool,
    /// Taken only at file and stage boundaries, never per chunk.
    file: Mutex<FileInFlight>,
}

#[derive(Debug)]
struct FileInFlight {
    name: String,
    started: Instant,
    stage_started: Instant,
}

/// What a watcher sees at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub file: String,
    pub generation: u64,
    pub stage: Option<Stage>,
    pub bytes: u64,
    pub rows: u64,
    pub size: Option<u64>,
    /// Since the file's run began.
    pub elapsed: Duration,
    /// Since the stage began.
    pub in_stage: Duration,
}

impl Default for Tracker {
    fn default() -> Tracker {
        Tracker {
            stage: AtomicU8::new(0),
            bytes: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            size: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            active: AtomicBool::new(false),
            file: Mutex::new(FileInFlight {
                name: String::new(),
                started: Instant::now(),
                stage_started: Instant::now(),
            }),
        }
    }
}

impl Tracker {
    /// What the file in flight has done; `None` between files.
    pub fn snapshot(&self) -> Option<Snapshot> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let size = self.size.load(Ordering::Relaxed);
        Some(Snapshot {
            file: file.name.clone(),
            generation: self.generation.load(Ordering::Relaxed),
            stage: Stage::from_u8(self.stage.load(Ordering::Relaxed)),
            bytes: self.bytes.load(Ordering::Relaxed),
            rows: self.rows.load(Ordering::Relaxed),
            size: (size > 0).then_some(size),
            elapsed: file.started.elapsed(),
            in_stage: file.stage_started.elapsed(),
        })
    }
}

impl Progress for Tracker {
    fn report(&self, event: Event<'_>) {
        match event {
            Event::Bytes(position) => {
                self.bytes.fetch_max(position, Ordering::Relaxed);
            }
            Event::Rows(n) => {
                self.rows.fetch_add(n, Ordering::Relaxed);
            }
            Event::Stage(stage) => {
                let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
                file.stage_started = Instant::now();
                self.bytes.store(0, Ordering::Relaxed);
                self.rows.store(0, Ordering::Relaxed);
                self.stage.store(stage as u8, Ordering::Relaxed);
            }
            Event::File { name, size } => {
                let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
                // The same file announced again (fetched, then synced): its
                // clock keeps running.
                if !(self.active.load(Ordering::Relaxed) && file.name == name) {
                    file.name = name.to_string();
                    file.started = Instant::now();
                    file.stage_started = file.started;
                    self.stage.store(0, Ordering::Relaxed);
                    self.bytes.store(0, Ordering::Relaxed);
                    self.rows.store(0, Ordering::Relaxed);
                    self.generation.fetch_add(1, Ordering::Relaxed);
                }
                self.size.store(size.unwrap_or(0), Ordering::Relaxed);
                self.active.store(true, Ordering::Release);
            }
            Event::Done => self.active.store(false, Ordering::Release),
        }
    }
}

/// Reports `Done` when dropped: a run that returns early, by error or
/// otherwise, still ends its progress.
#[must_use]
pub struct FileGuard(());

/// Reports a file's start; its end when the guard drops.
pub fn file(name: &str, size: Option<u64>) -> FileGuard {
    report(Event::File { name, size });
    FileGuard(())
}

impl Drop for FileGuard {
    fn drop(&mut self) {
        report(Event::Done);
    }
}

/// "45.2 MB".
pub fn bytes_text(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// "1,234,567".
pub fn count_text(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Snapshot {
    /// "parsing: 45.2 MB of 117.0 MB (38%), 310,000 rows, 3.2 s": the
    /// stage and what it has done, without the file's name.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if self.bytes > 0 {
            parts.push(match self.size {
                Some(size) if size >= self.bytes => format!(
                    "{} of {} ({}%)",
                    bytes_text(self.bytes),
                    bytes_text(size),
                    self.bytes * 100 / size.max(1)
                ),
                _ => bytes_text(self.bytes),
            });
        }
        if self.rows > 0 {
            parts.push(format!("{} rows", count_text(self.rows)));
        }
        parts.push(format!("{:.1} s", self.elapsed.as_secs_f64()));
        let stage = self.stage.map(Stage::as_str).unwrap_or("starting");
        format!("{stage}: {}", parts.join(", "))
    }
}

/// The daemon's watcher: logs the file in flight every `interval` (at info
/// level), once it has run that long, until the process ends.
pub fn log_every(tracker: Arc<Tracker>, interval: Duration) {
    let spawned = std::thread::Builder::new()
        .name("progress-log".into())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                if let Some(now) = tracker.snapshot()
                    && now.elapsed >= interval
                {
                    tracing::info!(
                        file = %now.file,
                        stage = now.stage.map(Stage::as_str).unwrap_or("starting"),
                        bytes = now.bytes,
                        rows = now.rows,
                        "progress: {}",
                        now.summary()
                    );
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the progress log: {e}");
    }
}

/// How often the daemon logs a long run's progress: DROPSYNC_PROGRESS_SECS
/// (fractions allowed), 10 s by default.
pub fn log_interval() -> Duration {
    std::env::var("DROPSYNC_PROGRESS_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_reset_the_counters_and_chunks_may_finish_out_of_order() {
        let tracker = Tracker::default();
        assert_eq!(tracker.snapshot(), None);
        tracker.report(Event::File {
            name: "accounts_20261102.csv",
            size: Some(1000),
        });
        tracker.report(Event::Stage(Stage::Parsing));
        tracker.report(Event::Bytes(600));
        tracker.report(Event::Rows(60));
        tracker.report(Event::Bytes(300));
        tracker.report(Event::Rows(30));
        let now = tracker.snapshot().unwrap();
        assert_eq!(
            (now.stage, now.bytes, now.rows, now.size),
            (Some(Stage::Parsing), 600, 90, Some(1000))
        );
        assert!(
            now.summary()
                .starts_with("parsing: 600 B of 1.0 kB (60%), 90 rows, ")
        );
        tracker.report(Event::Stage(Stage::Validating));
        let now = tracker.snapshot().unwrap();
        assert_eq!(
            (now.stage, now.bytes, now.rows),
            (Some(Stage::Validating), 0, 0)
        );
        tracker.report(Event::Done);
        assert_eq!(tracker.snapshot(), None);
    }

    #[test]
    fn the_same_file_announced_again_keeps_its_clock_and_generation() {
        let tracker = Tracker::default();
        tracker.report(Event::File {
            name: "a.csv",
            size: None,
        });
        tracker.report(Event::Stage(Stage::Fetching));
        let first = tracker.snapshot().unwrap();
        tracker.report(Event::File {
            name: "a.csv",
            size: Some(10),
        });
        let again = tracker.snapshot().unwrap();
        assert_eq!(again.generation, first.generation);
        assert_eq!(again.stage, Some(Stage::Fetching));
        assert_eq!(again.size, Some(10));
        tracker.report(Event::File {
            name: "b.csv",
            size: None,
        });
        assert_eq!(tracker.snapshot().unwrap().generation, first.generation + 1);
    }

    #[test]
    fn sizes_and_counts_read_as_people_write_them() {
        assert_eq!(bytes_text(999), "999 B");
        assert_eq!(bytes_text(1_170_000_000), "1.2 GB");
        assert_eq!(count_text(10_000_000), "10,000,000");
        assert_eq!(count_text(51), "51");
    }
}

//! Which integrations are being synced right now, by which execution, and
//! in which stage: fetching, validating, diffing, applying. The pipeline
//! notes each stage as it enters it; the web console shows it on the cards,
//! pushes every change to open pages, and answers scripts polling an
//! execution. (`progress` measures the one file in flight for a terminal
//! or the log; this keeps who is running, by integration, for watchers.)
//!
//! It lives in memory only (one process's runs; the history has the rest)
//! and is shared by the whole process, so no stage has to hand it along.
//! Dry runs leave no trace here: they change nothing anyone watches.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Taking the file from its source (or an upload) into staging.
    Fetching,
    /// Parsing and checking every row against the schema.
    Validating,
    /// Comparing the rows with what the integration holds.
    Diffing,
    /// Writing the changes, the run record and its row errors.
    Applying,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Fetching => "fetching",
            Stage::Validating => "validating",
            Stage::Diffing => "diffing",
            Stage::Applying => "applying",
        }
    }
}

/// One integration's run in progress.
#[derive(Debug, Clone, Serialize)]
pub struct Activity {
    pub integration: String,
    /// Known once the run has its record (after the fetch).
    pub execution_id: Option<String>,
    pub file: Option<String>,
    pub stage: Stage,
    pub since: DateTime<Utc>,
}

/// A change to what is in progress.
#[derive(Debug, Clone)]
pub enum Change {
    /// A run started or moved to another stage.
    Stage(Activity),
    /// A run is over: its record in the history says how it ended.
    Finished {
        integration: String,
        execution_id: Option<String>,
    },
}

struct Board {
    /// By integration: one file of an integration is synced at a time.
    active: Mutex<HashMap<String, Activity>>,
    changes: tokio::sync::broadcast::Sender<Change>,
}

static BOARD: LazyLock<Board> = LazyLock::new(|| Board {
    active: Mutex::default(),
    // A watcher that falls this far behind misses changes and is told so
    // (it reloads); the worker never waits for a watcher.
    changes: tokio::sync::broadcast::channel(256).0,
});

fn active() -> std::sync::MutexGuard<'static, HashMap<String, Activity>> {
    BOARD.active.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every run in progress.
pub fn current() -> Vec<Activity> {
    let mut all: Vec<Activity> = active().values().cloned().collect();
    all.sort_by(|a, b| a.integration.cmp(&b.integration));
    all
}

/// The run in progress of `integration`, if any.
pub fn of_integration(integration: &str) -> Option<Activity> {
    active().get(integration).cloned()
}

/// The run in progress with this execution id, if any.
pub fn of_execution(execution_id: &str) -> Option<Activity> {
    active()
        .values()
        .find(|a| a.execution_id.as_deref() == Some(execution_id))
        .cloned()
}

/// Every change from now on.
pub fn watch() -> tokio::sync::broadcast::Receiver<Change> {
    BOARD.changes.subscribe()
}

/// While held, `integration` has a run in progress; dropped, the run is
/// over. Nested begins (a fetch, then the file's run) share one entry,
/// which the outermost ends.
#[must_use = "the run is over when this is dropped"]
pub struct InProgress {
    integration: Option<String>,
}

/// Notes that `integration` entered `stage` (starting its run if none is
/// in progress).
pub fn begin(
    integration: &str,
    execution_id: Option<&str>,
    file: Option<&str>,
    stage: Stage,
) -> InProgress {
    let mut active = active();
    let owner = !active.contains_key(integration);
    let entry = active
        .entry(integration.to_string())
        .or_insert_with(|| Activity {
            integration: integration.to_string(),
            execution_id: None,
            file: None,
            stage,
            since: Utc::now(),
        });
    entry.stage = stage;
    if let Some(id) = execution_id {
        entry.execution_id = Some(id.to_string());
    }
    if let Some(file) = file {
        entry.file = Some(file.to_string());
    }
    let _ = BOARD.changes.send(Change::Stage(entry.clone()));
    InProgress {
        integration: owner.then(|| integration.to_string()),
    }
}

/// Notes that `integration`'s run in progress entered `stage`; nothing
/// when none is (a dry run).
pub fn enter(integration: &str, stage: Stage) {
    let mut active = active();
    if let Some(entry) = active.get_mut(integration)
        && entry.stage != stage
    {
        entry.stage = stage;
        let _ = BOARD.changes.send(Change::Stage(entry.clone()));
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        let Some(integration) = self.integration.take() else {
            return;
        };
        let ended = active().remove(&integration);
        let _ = BOARD.changes.send(Change::Finished {
            integration,
            execution_id: ended.and_then(|a| a.execution_id),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_moves_through_its_stages_and_ends_when_its_outermost_begin_drops() {
        let mut changes = watch();
        let fetch = begin("progress-test", None, Some("a.csv"), Stage::Fetching);
        let run = begin("progress-test", Some("id-1"), None, Stage::Validating);
        enter("progress-test", Stage::Diffing);
        let now = of_execution("id-1").unwrap();
        assert_eq!(now.stage, Stage::Diffing);
        assert_eq!(now.file.as_deref(), Some("a.csv"));
        drop(run);
        assert!(
            of_integration("progress-test").is_some(),
            "ended by the inner begin"
        );
        drop(fetch);
        assert!(of_integration("progress-test").is_none());
        let mut seen = Vec::new();
        while let Ok(change) = changes.try_recv() {
            match change {
                Change::Stage(a) if a.integration == "progress-test" => seen.push(a.stage.as_str()),
                Change::Finished {
                    integration,
                    execution_id,
                } if integration == "progress-test" => {
                    assert_eq!(execution_id.as_deref(), Some("id-1"));
                    seen.push("finished");
                }
                _ => {}
            }
        }
        assert_eq!(seen, ["fetching", "validating", "diffing", "finished"]);
    }
}

//! What the integration cards need of the history, for every integration
//! at once: its last run, when its applied files arrived, when it first
//! ran, how its last decisive run ended, and its undelivered alerts.
//!
//! One query per kind of fact covers all integrations (window functions
//! and `GROUP BY`), so the overview costs the same handful of scans with
//! 200 integrations as with one, instead of several queries each.

use std::collections::HashMap;

use chrono::NaiveDateTime;

use super::db::ToValue;
use super::history::{COLUMN_COUNT, COLUMNS, from_row};
use super::{DbError, RunRecord, RunStatus, Store, StoreError, Undelivered};
use crate::freshness::{Arrivals, LastOutcome, utc};
use crate::notify::DeliveryKind;

/// One integration's history, at a glance.
#[derive(Debug, Clone, Default)]
pub struct HistoryGlance {
    pub last_run: Option<RunRecord>,
    pub arrivals: Arrivals,
    /// Alerts about it no receiver has accepted yet.
    pub undelivered: Undelivered,
    /// Its runs' changes a change feed subscriber has not accepted yet.
    pub undelivered_feed: Undelivered,
}

impl Store {
    /// The glance of each integration in `wanted`, each with the instant
    /// from which its arrivals count (what `arrivals` takes one by one).
    /// An integration that never ran gets the empty glance.
    pub fn glances(
        &self,
        wanted: &[(String, NaiveDateTime)],
    ) -> Result<HashMap<String, HistoryGlance>, StoreError> {
        let mut out: HashMap<String, HistoryGlance> = wanted
            .iter()
            .map(|(name, _)| (name.clone(), HistoryGlance::default()))
            .collect();
        if wanted.is_empty() {
            return Ok(out);
        }
        let context = "reading the integrations' history";
        // A run still `running` is in progress, unless nothing holds the
        // store for writing: then a stopped process left it behind.
        let decisive = if self.read_only {
            "('success', 'partial', 'failed', 'interrupted', 'running')"
        } else {
            "('success', 'partial', 'failed', 'interrupted')"
        };
        // When each integration first ran, last ran, and last ran to a
        // decisive end: one aggregate over the history. The runs at those
        // instants are then found by joining on them, which DuckDB does
        // with a hash join; a window function ranking every run costs ten
        // times as much at 100,000 runs. Narrowing the aggregate to the
        // integrations asked about pays for a few (an integration's page);
        // for many (the overview), comparing every run's name costs more
        // than aggregating them all.
        let names: Vec<&dyn ToValue> = wanted
            .iter()
            .map(|(name, _)| name as &dyn ToValue)
            .collect();
        let (narrow, narrow_args) = if wanted.len() <= 20 {
            let marks = vec!["?"; wanted.len()].join(", ");
            (format!("WHERE integration IN ({marks})"), names)
        } else {
            (String::new(), Vec::new())
        };
        let instants = format!(
            "WITH instants AS (
               SELECT integration, min(started_at) AS first_at, max(started_at) AS last_at,
                 max(started_at) FILTER (WHERE status IN {decisive}) AS decisive_at
               FROM dropsync_runs {narrow} GROUP BY integration)"
        );
        // The integrations asked about and their `since`, as a table to
        // join (bound as parameters, never spliced into the SQL).
        let rows = vec!["(?, CAST(? AS TIMESTAMP))"; wanted.len()].join(", ");
        let wanted_args: Vec<&dyn ToValue> = wanted
            .iter()
            .flat_map(|(name, since)| [name as &dyn ToValue, since as &dyn ToValue])
            .collect();
        let with_wanted = format!("WITH wanted(integration, since) AS (VALUES {rows})");

        let columns: Vec<String> = COLUMNS
            .split(',')
            .map(|column| format!("r.{}", column.trim()))
            .collect();
        let columns = columns.join(", ");
        // The runs at an integration's last and last decisive instants, in
        // one pass over the history. Newest first, so the first row marked
        // last (or decisive) of an integration is the one (ties on the
        // instant go to the greatest execution id, as in `runs`).
        let runs = self
            .db()
            .query(
                &format!(
                    "{instants} SELECT {columns}, i.first_at, r.started_at = i.last_at,
                       coalesce(r.started_at = i.decisive_at, false) AND r.status IN {decisive}
                     FROM dropsync_runs r
                     JOIN instants i ON r.integration = i.integration
                       AND (r.started_at = i.last_at OR r.started_at = i.decisive_at)
                     ORDER BY r.integration, r.execution_id DESC"
                ),
                narrow_args.as_slice(),
            )
            .and_then(|rows| {
                rows.iter()
                    .map(|r| {
                        let run = from_row(r)?;
                        let first_at: NaiveDateTime = r.get(COLUMN_COUNT)?;
                        let is_last: bool = r.get(COLUMN_COUNT + 1)?;
                        let is_decisive: bool = r.get(COLUMN_COUNT + 2)?;
                        let outcome = is_decisive.then(|| LastOutcome {
                            execution_id: run.execution_id.clone(),
                            failed: !matches!(run.status, RunStatus::Success | RunStatus::Partial),
                            at: utc(run.started_at),
                        });
                        Ok((self.as_seen(run), first_at, is_last, outcome))
                    })
                    .collect::<Result<Vec<_>, DbError>>()
            })
            .map_err(self.query_error(context))?;
        for (run, first_at, is_last, outcome) in runs {
            let Some(glance) = out.get_mut(&run.integration) else {
                continue;
            };
            if let Some(outcome) = outcome
                && glance.arrivals.last_outcome.is_none()
            {
                glance.arrivals.last_outcome = Some(outcome);
            }
            if is_last && glance.last_run.is_none() {
                glance.arrivals.first_run = Some(utc(first_at));
                glance.last_run = Some(run);
            }
        }

        // Applied files from each integration's own `since`; a replay is
        // no arrival.
        let applied = self
            .db()
            .query(
                &format!(
                    "{with_wanted} SELECT r.integration, r.started_at FROM dropsync_runs r
                     JOIN wanted w ON r.integration = w.integration AND r.started_at >= w.since
                     WHERE r.status IN ('success', 'partial') AND r.trigger <> 'replay'
                     ORDER BY r.integration, r.started_at"
                ),
                wanted_args.as_slice(),
            )
            .map_err(self.query_error(context))?;
        for r in applied {
            let name: String = r.get(0).map_err(self.query_error(context))?;
            let at: NaiveDateTime = r.get(1).map_err(self.query_error(context))?;
            if let Some(glance) = out.get_mut(&name) {
                glance.arrivals.applied.push(utc(at));
            }
        }

        // A store last written by a version without alerts, opened
        // read-only, has no outbox yet.
        if self.table_exists("dropsync_outbox")? {
            // Before the change feed, every delivery was an alert.
            let kind = if self.column_exists("dropsync_outbox", "delivery")? {
                "o.delivery"
            } else {
                "'alert'"
            };
            let undelivered = self
                .db()
                .query(
                    &format!(
                        "SELECT e.integration, {kind}, count(*),
                           (array_agg(o.last_error ORDER BY o.next_attempt_at DESC))[1]
                         FROM dropsync_outbox o JOIN dropsync_events e USING (event_id)
                         WHERE o.delivered_at IS NULL GROUP BY e.integration, {kind}"
                    ),
                    &[],
                )
                .and_then(|rows| {
                    rows.iter()
                        .map(|r| {
                            Ok((
                                r.get::<String>(0)?,
                                r.get::<Option<String>>(1)?,
                                Undelivered {
                                    count: r.get::<i64>(2)?.max(0) as u64,
                                    last_error: r.get(3)?,
                                },
                            ))
                        })
                        .collect::<Result<Vec<_>, DbError>>()
                })
                .map_err(self.query_error("reading the outbox"))?;
            for (name, kind, undelivered) in undelivered {
                if let Some(glance) = out.get_mut(&name) {
                    match kind.as_deref().and_then(DeliveryKind::parse) {
                        Some(DeliveryKind::Feed) => glance.undelivered_feed = undelivered,
                        _ => glance.undelivered = undelivered,
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(integration: &str, status: RunStatus, trigger: &str, minute: u32) -> RunRecord {
        let mut run = RunRecord::new(integration, "accounts", "snapshot", trigger);
        run.status = status;
        run.started_at = chrono::NaiveDate::from_ymd_opt(2026, 11, 20)
            .unwrap()
            .and_hms_opt(2, minute, 0)
            .unwrap();
        run.error_rows = minute as i64;
        run
    }

    /// The batched glance says exactly what the queries of one integration
    /// at a time say, for every integration, so `status` and the console
    /// show the same numbers as before.
    #[test]
    fn glances_match_the_one_integration_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.duckdb")).unwrap();
        let runs = [
            run("a", RunStatus::Success, "schedule", 1),
            run("a", RunStatus::Failed, "schedule", 2),
            run("a", RunStatus::Skipped, "manual", 3),
            run("b", RunStatus::Partial, "replay", 4),
            run("b", RunStatus::Success, "schedule", 5),
            run("b", RunStatus::Interrupted, "schedule", 6),
            run("c", RunStatus::Success, "schedule", 7),
            // Two runs at one instant: the greater execution id is the last.
            run("d", RunStatus::Success, "schedule", 8),
            run("d", RunStatus::Failed, "schedule", 8),
            // A run left `running`: in progress, or interrupted read-only.
            run("e", RunStatus::Success, "schedule", 9),
            run("e", RunStatus::Running, "schedule", 10),
        ];
        for r in &runs {
            store.finish_run(r, &[]).unwrap();
        }
        let since = |minute| {
            chrono::NaiveDate::from_ymd_opt(2026, 11, 20)
                .unwrap()
                .and_hms_opt(2, minute, 0)
                .unwrap()
        };
        let wanted = vec![
            ("a".to_string(), since(0)),
            ("b".to_string(), since(5)),
            ("d".to_string(), since(0)),
            ("e".to_string(), since(0)),
            ("never".to_string(), since(0)),
        ];
        // Many integrations take the other way (the whole history is
        // aggregated): the same answers.
        let mut many = wanted.clone();
        many.extend((0..20).map(|i| (format!("quiet_{i}"), since(0))));
        let same_as_one_at_a_time = |store: &Store| {
            let glances = store.glances(&many).unwrap();
            assert_eq!(glances.len(), 25, "only the integrations asked about");
            for (name, since) in &many {
                let glance = &glances[name];
                let last = store.runs(Some(name), 1).unwrap().into_iter().next();
                assert_eq!(
                    glance
                        .last_run
                        .as_ref()
                        .map(|r| (&r.execution_id, r.status)),
                    last.as_ref().map(|r| (&r.execution_id, r.status)),
                    "{name}"
                );
                let one = store.arrivals(name, *since).unwrap();
                assert_eq!(glance.arrivals.last_outcome, one.last_outcome, "{name}");
                assert_eq!(glance.arrivals.applied, one.applied, "{name}");
            }
            let glances = store.glances(&wanted).unwrap();
            assert_eq!(glances.len(), 5, "only the integrations asked about");
            for (name, since) in &wanted {
                let glance = &glances[name];
                let one = store.arrivals(name, *since).unwrap();
                assert_eq!(glance.arrivals.applied, one.applied, "{name}");
                assert_eq!(glance.arrivals.first_run, one.first_run, "{name}");
                assert_eq!(glance.arrivals.last_outcome, one.last_outcome, "{name}");
                let last = store.runs(Some(name), 1).unwrap().into_iter().next();
                assert_eq!(
                    glance
                        .last_run
                        .as_ref()
                        .map(|r| (&r.execution_id, r.status)),
                    last.as_ref().map(|r| (&r.execution_id, r.status)),
                    "{name}"
                );
                assert_eq!(
                    glance.undelivered,
                    store.undelivered(name, DeliveryKind::Alert).unwrap()
                );
                assert_eq!(
                    glance.undelivered_feed,
                    store.undelivered(name, DeliveryKind::Feed).unwrap()
                );
            }
            glances
        };
        let glances = same_as_one_at_a_time(&store);
        assert_eq!(glances["a"].last_run.as_ref().unwrap().error_rows, 3);
        assert_eq!(
            glances["d"].last_run.as_ref().unwrap().execution_id,
            runs[8].execution_id
        );
        assert!(glances["never"].last_run.is_none());
        let path = store.path().to_path_buf();
        drop(store);
        let read_only = Store::open_read_only(&path).unwrap();
        let glances = same_as_one_at_a_time(&read_only);
        assert_eq!(
            glances["e"].last_run.as_ref().unwrap().status,
            RunStatus::Interrupted
        );
    }
}

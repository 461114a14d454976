//! The outbox: events, and one delivery per receiver that wants each, kept
//! in the store so that they commit (or not) with what caused them, and
//! survive a crash or a receiver that is down until they are delivered.

use chrono::{DateTime, NaiveDateTime, Utc};

use super::{DbError, RunRecord, RunStatus, Store, StoreError, now};
use crate::notify::{DeliveryKind, Event, EventKind};

/// The message a mass-delete refusal starts with (see `apply`).
pub(crate) const REFUSED: &str = "refused: the file would delete";

/// A delivery waiting for its turn.
#[derive(Debug, Clone)]
pub struct PendingDelivery {
    pub event: Event,
    /// The `[[notify]]` receiver's name, or the `[[subscribe]]` entry's.
    pub notifier: String,
    pub delivery: DeliveryKind,
    pub attempts: u32,
    /// Change feed: the last change (log sequence) the subscriber accepted;
    /// sending goes on after it.
    pub cursor: i64,
}

/// Deliveries not yet accepted by their receiver.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Undelivered {
    pub count: u64,
    /// Why the latest attempt failed (never a secret: see `notify`).
    pub last_error: Option<String>,
}

impl Store {
    /// A connection of its own for sending alerts (see `reader`): a
    /// receiver being waited for never holds up the connection that runs
    /// batches, and the sender sees only what was committed.
    pub fn sender(&self) -> Result<Store, StoreError> {
        self.reader()
    }

    /// The events a finished run makes, judged before its record is
    /// written (so "the run before" is another run).
    pub(crate) fn events_for_run(&self, run: &RunRecord) -> Result<Vec<Event>, DbError> {
        let file = run.file_name.as_deref().unwrap_or("no file");
        let id = Some(run.execution_id.as_str());
        let message = run.message.as_deref().unwrap_or("");
        let event = |kind, summary: String| {
            Event::new(
                kind,
                &run.integration,
                id,
                format!("{summary} ({file}, run {})", run.execution_id),
            )
        };
        let mut events = Vec::new();
        match run.status {
            RunStatus::Failed if message.starts_with(REFUSED) => events.push(event(
                EventKind::MassDeleteRefused,
                format!("mass delete refused: {message}"),
            )),
            RunStatus::Failed => events.push(event(
                EventKind::RunFailed,
                format!("run failed: {message}"),
            )),
            RunStatus::Partial | RunStatus::Success => {
                if let Some(after) = self.recovers_from(run)? {
                    events.push(event(
                        EventKind::Recovered,
                        format!("recovered after {after}"),
                    ));
                }
                events.push(if run.status == RunStatus::Partial {
                    event(
                        EventKind::RunPartial,
                        format!(
                            "applied with {} rejected",
                            crate::rows(run.error_rows as u64)
                        ),
                    )
                } else {
                    event(
                        EventKind::RunSucceeded,
                        format!(
                            "applied: {} rows, +{} ~{} -{}",
                            run.input_rows, run.inserted, run.updated, run.deleted
                        ),
                    )
                });
            }
            RunStatus::Skipped | RunStatus::Interrupted | RunStatus::Running => {}
        }
        Ok(events)
    }

    /// What an applied `run` ends, if anything: a failed last run, or a
    /// missing file noticed since the last applied one.
    fn recovers_from(&self, run: &RunRecord) -> Result<Option<&'static str>, DbError> {
        let (last_status, last_applied): (Option<String>, Option<NaiveDateTime>) = self.db().query_row(
            "SELECT
                (SELECT status FROM dropsync_runs WHERE integration = ?1 AND execution_id <> ?2
                   AND status IN ('success', 'partial', 'failed', 'interrupted')
                 ORDER BY started_at DESC, execution_id DESC LIMIT 1),
                (SELECT max(started_at) FROM dropsync_runs WHERE integration = ?1 AND execution_id <> ?2
                   AND status IN ('success', 'partial'))",
            &[&run.integration, &run.execution_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if matches!(last_status.as_deref(), Some("failed" | "interrupted")) {
            return Ok(Some("a failed run"));
        }
        let missing: i64 = self.db().value(
            "SELECT count(*) FROM dropsync_events WHERE integration = ?1 AND kind = 'file_missing'
               AND (?2::TIMESTAMP IS NULL OR created_at > ?2)",
            &[&run.integration, &last_applied],
        )?;
        Ok((missing > 0).then_some("a missing file"))
    }

    /// Writes `events` and a delivery for each receiver that wants it, in
    /// the caller's transaction.
    pub(crate) fn enqueue_in(
        &self,
        events: &[Event],
        dedup_key: Option<&str>,
    ) -> Result<(), DbError> {
        for event in events {
            self.db().execute(
                "INSERT INTO dropsync_events
                   (event_id, kind, integration, execution_id, summary, dedup_key, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
                &[
                    &event.id,
                    &event.kind.as_str(),
                    &event.integration,
                    &event.execution_id,
                    &event.summary,
                    &dedup_key,
                    &event.created_at.naive_utc(),
                ],
            )?;
            for notifier in self
                .notifiers
                .iter()
                .filter(|n| n.wants(event.kind, &event.integration))
            {
                self.db().execute(
                    "INSERT INTO dropsync_outbox (event_id, notifier, attempts, next_attempt_at)
                     VALUES (?, ?, 0, ?)",
                    &[&event.id, &notifier.name, &event.created_at.naive_utc()],
                )?;
            }
        }
        Ok(())
    }

    /// An applied run's delivery to each change feed subscriber that may
    /// want its changes, in the run's transaction: one event and one outbox
    /// row per subscriber, whatever the number of changes (they are read
    /// from the change log when sent). A run that changed nothing makes none.
    pub(crate) fn enqueue_feed_in(&self, run: &RunRecord, changed: u64) -> Result<(), DbError> {
        let subscribers: Vec<&str> = self
            .subscribers
            .iter()
            .filter(|s| s.wants_run(&run.integration, &run.dataset))
            .map(|s| s.name.as_str())
            .collect();
        if changed == 0 || subscribers.is_empty() {
            return Ok(());
        }
        let event = Event::new(
            EventKind::Changes,
            &run.integration,
            Some(&run.execution_id),
            format!(
                "{} changed ({}, run {})",
                crate::rows(changed),
                run.file_name.as_deref().unwrap_or("no file"),
                run.execution_id
            ),
        );
        self.db().execute(
            "INSERT INTO dropsync_events
               (event_id, kind, integration, execution_id, summary, dedup_key, created_at)
             VALUES (?, ?, ?, ?, ?, NULL, ?)",
            &[
                &event.id,
                &event.kind.as_str(),
                &event.integration,
                &event.execution_id,
                &event.summary,
                &event.created_at.naive_utc(),
            ],
        )?;
        for subscriber in subscribers {
            self.db().execute(
                "INSERT INTO dropsync_outbox
                   (event_id, notifier, attempts, next_attempt_at, delivery, feed_cursor)
                 VALUES (?, ?, 0, ?, ?, 0)",
                &[
                    &event.id,
                    &subscriber,
                    &event.created_at.naive_utc(),
                    &DeliveryKind::Feed.as_str(),
                ],
            )?;
        }
        Ok(())
    }

    /// Records that a subscriber accepted the changes up to `seq` of the
    /// run of `event_id`: a retry starts after them. The sender's claim is
    /// renewed.
    pub fn advance_feed_cursor(
        &self,
        event_id: &str,
        subscriber: &str,
        seq: i64,
    ) -> Result<(), StoreError> {
        self.db()
            .execute(
                // Progress renews the claim: a long run's pages are one
                // sending, however long they take together.
                "UPDATE dropsync_outbox SET feed_cursor = ?, claimed_at = ?
                 WHERE event_id = ? AND notifier = ? AND claimed_at IS NOT NULL",
                &[&seq, &now(), &event_id, &subscriber],
            )
            .map(drop)
            .map_err(self.query_error("recording the changes a subscriber accepted"))
    }

    /// Records `event` on its own (a missing file, a test), once per
    /// `dedup_key`: returns false when an event with that key exists.
    pub fn record_event(&self, event: &Event, dedup_key: Option<&str>) -> Result<bool, StoreError> {
        self.db()
            .in_transaction(|| {
                if let Some(key) = dedup_key {
                    let seen: i64 = self.db().value(
                        "SELECT count(*) FROM dropsync_events WHERE dedup_key = ?",
                        &[&key],
                    )?;
                    if seen > 0 {
                        return Ok(false);
                    }
                }
                self.enqueue_in(std::slice::from_ref(event), dedup_key)?;
                Ok::<_, DbError>(true)
            })
            .map_err(self.query_error("recording an event"))
    }

    /// Deliveries due at `now` and not being sent (unclaimed, or claimed
    /// before `claims_expired_before`), oldest event first: all of them, or
    /// only those of one kind to the receiver named. A change feed
    /// subscriber applies changes in order, so a run's changes wait while
    /// an earlier run's to the same subscriber are undelivered (being
    /// retried, or being sent).
    pub fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        only: Option<(DeliveryKind, &str)>,
        claims_expired_before: DateTime<Utc>,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        let context = "reading the outbox";
        self.db()
            .query(
                "SELECT e.event_id, e.kind, e.integration, e.execution_id, e.summary, e.created_at,
                        o.notifier, o.attempts, o.delivery, o.feed_cursor
                 FROM dropsync_outbox o JOIN dropsync_events e USING (event_id)
                 WHERE o.delivered_at IS NULL AND o.next_attempt_at <= ?1
                   AND (o.claimed_at IS NULL OR o.claimed_at < ?4)
                   AND (?2::VARCHAR IS NULL OR (o.notifier = ?2 AND o.delivery = ?3))
                   AND NOT (o.delivery = 'feed' AND EXISTS (
                       SELECT 1 FROM dropsync_outbox p JOIN dropsync_events pe USING (event_id)
                       WHERE p.delivery = 'feed' AND p.notifier = o.notifier
                         AND p.delivered_at IS NULL
                         AND (pe.created_at < e.created_at
                              OR (pe.created_at = e.created_at AND pe.event_id < e.event_id))))
                 ORDER BY e.created_at, e.event_id, o.notifier",
                &[
                    &now.naive_utc(),
                    &only.map(|(_, name)| name),
                    &only.map(|(kind, _)| kind.as_str()),
                    &claims_expired_before.naive_utc(),
                ],
            )
            .and_then(|rows| {
                rows.iter()
                    .map(|r| {
                        let kind: String = r.get(1)?;
                        Ok(PendingDelivery {
                            event: Event {
                                id: r.get(0)?,
                                kind: EventKind::parse(&kind).unwrap_or(EventKind::RunFailed),
                                integration: r.get(2)?,
                                execution_id: r.get(3)?,
                                summary: r.get(4)?,
                                created_at: r.get::<NaiveDateTime>(5)?.and_utc(),
                            },
                            notifier: r.get(6)?,
                            attempts: r.get::<i64>(7)? as u32,
                            delivery: r
                                .get::<Option<String>>(8)?
                                .as_deref()
                                .and_then(DeliveryKind::parse)
                                .unwrap_or(DeliveryKind::Alert),
                            cursor: r.get::<Option<i64>>(9)?.unwrap_or(0),
                        })
                    })
                    .collect()
            })
            .map_err(self.query_error(context))
    }

    /// Takes a due delivery for sending: false if another sender has it,
    /// or it was delivered meanwhile. The claim is committed before anything
    /// is sent, and cleared when the delivery is marked.
    ///
    /// A claim made before `expired_before` is taken over: on a store that
    /// several workers share, the one that made it stopped (or lost the
    /// store) while sending, since no sending lasts that long. The delivery
    /// goes again with the same event id, the receiver's idempotency key,
    /// so a sending that was in fact still going makes a duplicate the
    /// receiver drops, never a lost alert.
    pub fn claim(
        &self,
        event_id: &str,
        notifier: &str,
        expired_before: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.db()
            .execute(
                "UPDATE dropsync_outbox SET claimed_at = ?
                 WHERE event_id = ? AND notifier = ? AND delivered_at IS NULL
                   AND (claimed_at IS NULL OR claimed_at < ?)",
                &[&now(), &event_id, &notifier, &expired_before.naive_utc()],
            )
            .map(|claimed| claimed == 1)
            .map_err(self.query_error("claiming an alert for sending"))
    }

    /// Claims left by a process that stopped while sending: this one holds
    /// the (DuckDB) store now, so nobody is sending them. A shared
    /// PostgreSQL store has no such moment; its claims expire (`claim`). They go again, with the
    /// same event id (the receiver's idempotency key).
    pub(super) fn release_claims(&self) -> Result<(), StoreError> {
        let released = self
            .db()
            .execute(
                "UPDATE dropsync_outbox SET claimed_at = NULL WHERE claimed_at IS NOT NULL",
                &[],
            )
            .map_err(self.query_error("releasing the claims of a stopped process"))?;
        if released > 0 {
            tracing::warn!(
                alerts = released,
                "deliveries a stopped process was sending (alerts, changes) are sent again, with the same idempotency keys"
            );
        }
        Ok(())
    }

    pub fn mark_delivered(&self, event_id: &str, notifier: &str) -> Result<(), StoreError> {
        self.db()
            .execute(
                "UPDATE dropsync_outbox SET delivered_at = ?, attempts = attempts + 1, last_error = NULL,
                        claimed_at = NULL
                 WHERE event_id = ? AND notifier = ?",
                &[&now(), &event_id, &notifier],
            )
            .map(drop)
            .map_err(self.query_error("marking an alert delivered"))
    }

    pub fn mark_failed(
        &self,
        event_id: &str,
        notifier: &str,
        attempts: u32,
        next: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        self.db()
            .execute(
                "UPDATE dropsync_outbox SET attempts = ?, next_attempt_at = ?, last_error = ?,
                        claimed_at = NULL
                 WHERE event_id = ? AND notifier = ?",
                &[&attempts, &next.naive_utc(), &error, &event_id, &notifier],
            )
            .map(drop)
            .map_err(self.query_error("recording a failed delivery"))
    }

    /// `integration`'s deliveries of one kind not yet accepted.
    pub fn undelivered(
        &self,
        integration: &str,
        kind: DeliveryKind,
    ) -> Result<Undelivered, StoreError> {
        // A store last written by a version without alerts (or without the
        // change feed), opened read-only, has no outbox (or no feed in it).
        if !self.table_exists("dropsync_outbox")? {
            return Ok(Undelivered::default());
        }
        let feed = self.column_exists("dropsync_outbox", "delivery")?;
        if !feed && kind == DeliveryKind::Feed {
            return Ok(Undelivered::default());
        }
        let of_kind = if feed {
            "o.delivery = ?2"
        } else {
            "?2 = 'alert'"
        };
        self.db()
            .query_row(
                &format!(
                    "SELECT count(*), (array_agg(o.last_error ORDER BY o.next_attempt_at DESC))[1]
                     FROM dropsync_outbox o JOIN dropsync_events e USING (event_id)
                     WHERE o.delivered_at IS NULL AND e.integration = ?1 AND {of_kind}"
                ),
                &[&integration, &kind.as_str()],
                |r| {
                    Ok(Undelivered {
                        count: r.get::<i64>(0)? as u64,
                        last_error: r.get(1)?,
                    })
                },
            )
            .map_err(self.query_error("reading the outbox"))
    }
}

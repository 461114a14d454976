//! Alerts: events (a run failed, a file is missing, ...) told to the people
//! and systems that asked, by webhook or email.
//!
//! An event is written to the store's outbox in the same transaction as
//! what caused it (the run record, or the freshness check at a deadline),
//! one delivery per receiver that wants it. Delivery happens after commit,
//! with retries and doubling backoff, and marks each delivery done only once
//! the receiver accepted it: a crash or a receiver that is down loses no
//! alert. A crash between sending and marking sends again, with the same
//! event id (webhooks carry it as `Idempotency-Key`, emails as Message-ID)
//! so the receiver can tell the repeat.

mod email;
mod webhook;

pub(crate) use webhook::{check_url, shown};

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::feed::SubscriberConfig;
use crate::store::{PendingDelivery, Store, StoreError};

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    RunFailed,
    RunPartial,
    FileMissing,
    Recovered,
    MassDeleteRefused,
    RunSucceeded,
    /// `dropsync notify test`.
    Test,
    /// An applied run's changes, for the change feed's subscribers
    /// (`[[subscribe]]`), never for `[[notify]]` receivers.
    Changes,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RunFailed => "run_failed",
            EventKind::RunPartial => "run_partial",
            EventKind::FileMissing => "file_missing",
            EventKind::Recovered => "recovered",
            EventKind::MassDeleteRefused => "mass_delete_refused",
            EventKind::RunSucceeded => "run_succeeded",
            EventKind::Test => "test",
            EventKind::Changes => "changes",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }

    /// What a receiver gets when its `events` is not set: everything that
    /// needs a person, not the news that a run went well.
    fn default_set() -> Vec<EventKind> {
        vec![
            EventKind::RunFailed,
            EventKind::RunPartial,
            EventKind::FileMissing,
            EventKind::Recovered,
            EventKind::MassDeleteRefused,
        ]
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing to tell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique; the receiver's idempotency key.
    pub id: String,
    pub kind: EventKind,
    pub integration: String,
    pub execution_id: Option<String>,
    /// One line, for a person.
    pub summary: String,
    pub created_at: DateTime<Utc>,
}

impl Event {
    pub fn new(
        kind: EventKind,
        integration: &str,
        execution_id: Option<&str>,
        summary: String,
    ) -> Event {
        Event {
            id: uuid::Uuid::now_v7().to_string(),
            kind,
            integration: integration.to_string(),
            execution_id: execution_id.map(str::to_string),
            summary,
            created_at: Utc::now(),
        }
    }

    /// `dropsync: crm_accounts: run failed: ...`, as chat and mail show it.
    pub fn text(&self) -> String {
        format!("dropsync: {}: {}", self.integration, self.summary)
    }
}

/// `[[notify]]`: one receiver of events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierConfig {
    /// Names the receiver in `status`, logs and `dropsync notify test NAME`.
    pub name: String,
    /// `webhook` or `email`.
    #[serde(rename = "type")]
    pub kind: NotifierKind,
    /// Only events of these integrations. Default: all.
    #[serde(default)]
    pub integrations: Vec<String>,
    /// Only these events: `run_failed`, `run_partial`, `file_missing`,
    /// `recovered`, `mass_delete_refused`, `run_succeeded`. Default: all
    /// but `run_succeeded`.
    #[serde(default)]
    pub events: Option<Vec<EventKind>>,
    /// Webhook: the URL to POST to. Most chat webhooks hold their secret in
    /// the URL: give it by `url_env` or `url_file` instead.
    #[serde(default)]
    pub url: Option<String>,
    /// Webhook: the URL, from this environment variable...
    #[serde(default)]
    pub url_env: Option<String>,
    /// ...or from this file (its first line).
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// Email: the SMTP server.
    #[serde(default)]
    pub smtp_host: Option<String>,
    /// Email: default 587 (465 with `tls = "wrapper"`, 25 with `none`).
    #[serde(default)]
    pub smtp_port: Option<u16>,
    /// Email: `starttls` (required; the default), `wrapper` (TLS from the
    /// first byte, port 465) or `none` (a local relay only: in clear).
    #[serde(default)]
    pub tls: SmtpTls,
    /// Email: PEM file of the CA(s) that signed the server's certificate.
    /// Default: the system's trusted roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Email: the login, if the server wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// Email: the password, from this environment variable...
    #[serde(default)]
    pub password_env: Option<String>,
    /// ...or from this file (its first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Email: the sender, `dropsync <dropsync@example.com>`.
    #[serde(default)]
    pub from: Option<String>,
    /// Email: the recipients.
    #[serde(default)]
    pub to: Vec<String>,
    /// Wait before the first retry of a failed delivery, doubled for each
    /// next one up to an hour. Default 30.
    #[serde(default = "default_retry_secs")]
    pub retry_secs: u64,
    /// Network timeout, in seconds. Default 10.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_retry_secs() -> u64 {
    30
}
fn default_timeout_secs() -> u64 {
    10
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifierKind {
    Webhook,
    Email,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    #[default]
    Starttls,
    Wrapper,
    None,
}

impl NotifierConfig {
    /// Whether this receiver wants `kind` events of `integration`.
    pub fn wants(&self, kind: EventKind, integration: &str) -> bool {
        match kind {
            EventKind::Test => return true,
            EventKind::Changes => return false,
            _ => {}
        }
        let kinds = self.events.clone().unwrap_or_else(EventKind::default_set);
        kinds.contains(&kind)
            && (self.integrations.is_empty() || self.integrations.iter().any(|i| i == integration))
    }

    /// Checks what the config can: the fields the type needs, and no more.
    /// Secrets are read only when sending, so a missing variable is a
    /// delivery error that names it.
    pub fn check(&self, config: &Config) -> Result<(), String> {
        if !crate::config::is_identifier(&self.name) {
            return Err("names may hold only letters, digits, `_` and `-`".into());
        }
        for integration in &self.integrations {
            if !config.integrations.contains_key(integration) {
                return Err(format!(
                    "integrations: no integration named `{integration}`"
                ));
            }
        }
        if self
            .events
            .as_ref()
            .is_some_and(|e| e.contains(&EventKind::Test))
        {
            return Err("events: `test` is sent by `dropsync notify test`, always".into());
        }
        if self
            .events
            .as_ref()
            .is_some_and(|e| e.contains(&EventKind::Changes))
        {
            return Err("events: changes go to [[subscribe]] entries, not to [[notify]]".into());
        }
        let webhook = [
            self.url.is_some(),
            self.url_env.is_some(),
            self.url_file.is_some(),
        ];
        let email = self.smtp_host.is_some()
            || self.smtp_port.is_some()
            || self.from.is_some()
            || !self.to.is_empty()
            || self.username.is_some()
            || self.password_env.is_some()
            || self.password_file.is_some()
            || self.ca_file.is_some();
        match self.kind {
            NotifierKind::Webhook => {
                if webhook.iter().filter(|b| **b).count() != 1 {
                    return Err("a webhook needs one of url, url_env or url_file".into());
                }
                if email {
                    return Err("smtp_host, from, to, username and passwords are for email".into());
                }
                if let Some(url) = &self.url {
                    webhook::check_url(url)?;
                }
            }
            NotifierKind::Email => {
                if webhook.iter().any(|b| *b) {
                    return Err("url, url_env and url_file are for webhooks".into());
                }
                if self.smtp_host.is_none() || self.from.is_none() || self.to.is_empty() {
                    return Err("an email receiver needs smtp_host, from and to".into());
                }
                if self.password_env.is_some() && self.password_file.is_some() {
                    return Err("give password_env or password_file, not both".into());
                }
                if (self.password_env.is_some() || self.password_file.is_some())
                    && self.username.is_none()
                {
                    return Err("a password needs a username".into());
                }
                email::check_addresses(self)?;
            }
        }
        Ok(())
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }

    /// Sends `event`; the error says why, never with a secret in it.
    pub fn send(&self, event: &Event) -> Result<(), String> {
        match self.kind {
            NotifierKind::Webhook => webhook::send(self, event),
            NotifierKind::Email => email::send(self, event),
        }
    }

    /// The wait before attempt `attempts + 1`.
    fn backoff(&self, attempts: u32) -> Duration {
        let base = self.retry_secs.max(1);
        Duration::from_secs(base.saturating_mul(1 << attempts.min(16)).min(3600))
    }
}

/// A secret from an environment variable or a file's first line (trimmed).
pub(crate) fn secret(
    env: Option<&str>,
    file: Option<&PathBuf>,
    what: &str,
) -> Result<Option<String>, String> {
    use crate::secret::SecretError;
    let from_file = env.is_none();
    match crate::secret::read(env, file.map(PathBuf::as_path)) {
        Ok(value) if from_file => Ok(value.map(|v| v.trim().to_string())),
        Ok(value) => Ok(value),
        Err(SecretError::Unset { var }) => {
            Err(format!("{what}: environment variable {var} is not set"))
        }
        Err(SecretError::Unreadable { path, source }) => {
            Err(format!("{what}: cannot read {}: {source}", path.display()))
        }
    }
}

/// How one round of deliveries went.
#[derive(Debug, Default)]
pub struct Delivered {
    pub sent: usize,
    pub failed: usize,
}

/// Whose deliveries a round sends.
#[derive(Debug, Clone, Copy)]
pub enum Recipients<'a> {
    /// Every receiver's and subscriber's, and those to ones no longer in
    /// the config are marked so (`run` and `ingest`, as they finish).
    All,
    /// One receiver's: the daemon sends to each on a thread of its own, so
    /// a receiver that is slow or hangs holds up only its own alerts.
    Only(&'a NotifierConfig),
    /// One change feed subscriber's, likewise.
    Subscriber(&'a SubscriberConfig),
}

impl Recipients<'_> {
    /// Who, as logs name them.
    pub fn name(&self) -> &str {
        match self {
            Recipients::All => "all",
            Recipients::Only(notifier) => &notifier.name,
            Recipients::Subscriber(subscriber) => &subscriber.name,
        }
    }
}

/// Which kind of receiver a delivery in the outbox goes to: the outbox
/// holds the alerts to `[[notify]]` receivers and the change feed's runs to
/// `[[subscribe]]` entries alike, with one claim, retry and backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryKind {
    Alert,
    Feed,
}

impl DeliveryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryKind::Alert => "alert",
            DeliveryKind::Feed => "feed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryKind> {
        match s {
            "alert" => Some(DeliveryKind::Alert),
            "feed" => Some(DeliveryKind::Feed),
            _ => None,
        }
    }
}

/// Where a pending delivery goes, as the config has it now.
enum Destination<'a> {
    Notifier(&'a NotifierConfig),
    Subscriber(&'a SubscriberConfig),
}

impl Destination<'_> {
    fn send(&self, store: &Store, pending: &PendingDelivery) -> Result<(), String> {
        match self {
            Destination::Notifier(notifier) => notifier.send(&pending.event),
            Destination::Subscriber(subscriber) => {
                subscriber.send(store, &pending.event, pending.cursor)
            }
        }
    }

    fn backoff(&self, attempts: u32) -> Duration {
        match self {
            Destination::Notifier(notifier) => notifier.backoff(attempts),
            Destination::Subscriber(subscriber) => subscriber.backoff(attempts),
        }
    }

    fn timeout(&self) -> Duration {
        match self {
            Destination::Notifier(notifier) => notifier.timeout(),
            Destination::Subscriber(subscriber) => subscriber.timeout(),
        }
    }
}

/// How long a sender's claim on a delivery holds, for a receiver with this
/// network timeout. A claim older than that was left by a sender that
/// stopped (a worker killed or cut off from a shared store): no sending
/// lasts so long, since each request is bounded by the timeout and a
/// feed's pages renew the claim. A few timeouts, and at least a minute, as
/// a loaded machine may be slow between the claim and the request.
pub(crate) fn claim_lifetime(timeout: Duration) -> Duration {
    (timeout * 4).max(Duration::from_secs(60))
}

/// The time before which a claim made with `lifetime` has expired.
fn expired_before(lifetime: Duration) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::from_std(lifetime).unwrap_or_default()
}

/// Delivers the due deliveries in the outbox: each is claimed (committed)
/// before it is sent, then marked done, or failed with its next try. No
/// transaction is open while a receiver is waited for.
pub fn deliver_due(
    store: &Store,
    config: &Config,
    recipients: Recipients,
) -> Result<Delivered, StoreError> {
    let mut done = Delivered::default();
    let only = match recipients {
        Recipients::All => None,
        Recipients::Only(notifier) => Some((DeliveryKind::Alert, notifier.name.as_str())),
        Recipients::Subscriber(subscriber) => Some((DeliveryKind::Feed, subscriber.name.as_str())),
    };
    // Claims that may have expired: by the shortest lifetime of the
    // receivers in the config (each claim is checked against its own).
    let shortest = config
        .notify
        .iter()
        .map(NotifierConfig::timeout)
        .chain(config.subscribe.iter().map(SubscriberConfig::timeout))
        .min()
        .unwrap_or_default();
    let maybe_expired = expired_before(claim_lifetime(shortest));
    for pending in store.due_deliveries(Utc::now(), only, maybe_expired)? {
        let destination = match pending.delivery {
            DeliveryKind::Alert => config
                .notify
                .iter()
                .find(|n| n.name == pending.notifier)
                .map(Destination::Notifier),
            DeliveryKind::Feed => config
                .subscribe
                .iter()
                .find(|s| s.name == pending.notifier)
                .map(Destination::Subscriber),
        };
        let Some(destination) = destination else {
            // The receiver was removed from the config: say so in `status`,
            // and look again in an hour (it may come back).
            let error = match pending.delivery {
                DeliveryKind::Alert => {
                    format!("no [[notify]] named `{}` in the config", pending.notifier)
                }
                DeliveryKind::Feed => {
                    format!(
                        "no [[subscribe]] named `{}` in the config",
                        pending.notifier
                    )
                }
            };
            let next = Utc::now() + chrono::Duration::hours(1);
            store.mark_failed(
                &pending.event.id,
                &pending.notifier,
                pending.attempts,
                next,
                &error,
            )?;
            continue;
        };
        let expired = expired_before(claim_lifetime(destination.timeout()));
        if !store.claim(&pending.event.id, &pending.notifier, expired)? {
            continue;
        }
        let what = match pending.delivery {
            DeliveryKind::Alert => "alert",
            DeliveryKind::Feed => "changes",
        };
        match destination.send(store, &pending) {
            Ok(()) => {
                mark_after_sending(|| store.mark_delivered(&pending.event.id, &pending.notifier))?;
                tracing::info!(
                    notifier = pending.notifier,
                    event = pending.event.kind.as_str(),
                    integration = pending.event.integration,
                    event_id = pending.event.id,
                    "{what} delivered"
                );
                done.sent += 1;
            }
            Err(error) => {
                let attempts = pending.attempts + 1;
                let wait = destination.backoff(pending.attempts);
                let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
                mark_after_sending(|| {
                    store.mark_failed(&pending.event.id, &pending.notifier, attempts, next, &error)
                })?;
                tracing::warn!(
                    notifier = pending.notifier,
                    event = pending.event.kind.as_str(),
                    integration = pending.event.integration,
                    attempts,
                    retry_in_secs = wait.as_secs(),
                    "{what} not delivered: {error}"
                );
                done.failed += 1;
            }
        }
    }
    Ok(done)
}

/// Records how a claimed delivery went, trying a few times: the store's
/// other connections may be busy for a moment, and a delivery left claimed
/// waits for the next start of the process (or for its claim to expire)
/// to be sent again.
fn mark_after_sending(mark: impl Fn() -> Result<(), StoreError>) -> Result<(), StoreError> {
    let mut tries = 0;
    loop {
        match mark() {
            Ok(()) => return Ok(()),
            Err(e) if tries < 20 => {
                tries += 1;
                tracing::debug!("marking an alert: {e}; trying again");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

/// At or after a deadline: if `name` is overdue, records one `file_missing`
/// event for the deadline it missed last (never two for one deadline, even
/// across restarts). `only_if_ran`: at the daemon's start, an integration
/// that never ran is not told missing for deadlines before anyone watched.
pub fn notice_missing(
    store: &Store,
    name: &str,
    integration: &crate::config::IntegrationConfig,
    now: DateTime<Utc>,
    only_if_ran: bool,
) -> Result<Option<crate::freshness::Freshness>, StoreError> {
    let Some(expect) = &integration.expect else {
        return Ok(None);
    };
    let zone = integration.zone();
    let arrivals = store.arrivals(name, expect.judged_since(now, zone).naive_utc())?;
    if only_if_ran && arrivals.first_run.is_none() {
        return Ok(None);
    }
    let f = crate::freshness::assess(Some(expect), zone, &arrivals, now);
    if f.state != crate::freshness::FreshnessState::Overdue {
        return Ok(Some(f));
    }
    let Some(deadline) = f.last_deadline else {
        return Ok(Some(f));
    };
    let summary = format!(
        "file missing: nothing arrived by {} ({expect}){}",
        deadline.with_timezone(&zone).format("%Y-%m-%d %H:%M:%S %Z"),
        match f.missed_deadlines {
            0 | 1 => String::new(),
            n => format!("; {n} deadlines missed in a row"),
        }
    );
    let event = Event::new(EventKind::FileMissing, name, None, summary);
    let key = format!("file_missing:{name}:{}", deadline.to_rfc3339());
    if store.record_event(&event, Some(&key))? {
        tracing::warn!(
            integration = name,
            expect = %expect,
            deadline = %deadline,
            missed_deadlines = f.missed_deadlines,
            "file missing: no file arrived by the deadline"
        );
    }
    Ok(Some(f))
}

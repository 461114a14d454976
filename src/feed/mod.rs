//! The change feed: downstream systems (`[[subscribe]]`) are told of the
//! changes each applied run made, by webhook or as files in a folder.
//!
//! A run's delivery to each subscriber is one row of the alerts' outbox
//! (kind of delivery `feed`), written in the run's own transaction: a crash
//! after the commit still delivers, and a run of a million changes writes
//! one row per subscriber, not a million. The changes themselves are read
//! from the change log when the delivery is sent, in order of their log
//! sequence, filtered by the subscriber. Retries, backoff, claims and
//! their release after a crash are the outbox's (see `notify::deliver_due`).
//!
//! Each change goes out with an idempotency key, `EXECUTION_ID:SEQ`, so a
//! receiver can tell a repeat: delivery is at least once. A webhook gets
//! the changes in pages of bounded size; each page it accepts moves the
//! delivery's cursor, and a retry starts after the last page accepted.

mod folder;
mod webhook;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::notify::Event;
use crate::store::{ChangeFilter, ChangeKind, ChangeRecord, Store};

/// `[[subscribe]]`: one downstream system told of the changes runs apply.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriberConfig {
    /// Names the subscriber in `status`, logs and the files it is written.
    pub name: String,
    /// `webhook` or `folder`.
    #[serde(rename = "type")]
    pub kind: SubscriberKind,
    /// Only changes of these integrations. Default: all.
    #[serde(default)]
    pub integrations: Vec<String>,
    /// Only changes of integrations of these datasets. Default: all.
    #[serde(default)]
    pub datasets: Vec<String>,
    /// Only these kinds of change: `insert`, `update`, `delete`,
    /// `subscribe`, `unsubscribe`. Default: all.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Only changes that touch one of these fields: an update is delivered
    /// only if one of them changed (an insert or a delete touches every
    /// field). Default: all.
    #[serde(default)]
    pub fields: Vec<String>,
    /// Webhook: the URL to POST to. A URL holding a secret is better given
    /// by `url_env` or `url_file`.
    #[serde(default)]
    pub url: Option<String>,
    /// Webhook: the URL, from this environment variable...
    #[serde(default)]
    pub url_env: Option<String>,
    /// ...or from this file (its first line).
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// Webhook: extra request headers, each value from the environment
    /// variable named: `headers_env = { Authorization = "CRM_TOKEN" }`.
    /// Their values are never logged.
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    /// Webhook: the most bytes in one request's body. Default 1 MiB; a
    /// single change larger than that goes alone.
    #[serde(default = "default_page_bytes")]
    pub page_bytes: usize,
    /// Folder: where each run's file is written.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Folder: `jsonl` (the default) or `csv`.
    #[serde(default)]
    pub format: FeedFormat,
    /// Folder: the files' permissions, in octal (`"0640"`). Default
    /// `"0600"`: the owner's alone, as they hold partners' data.
    #[serde(default)]
    pub file_mode: Option<String>,
    /// Wait before the first retry of a failed delivery, doubled for each
    /// next one up to an hour. Default 30.
    #[serde(default = "default_retry_secs")]
    pub retry_secs: u64,
    /// Network timeout, in seconds. Default 10.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_page_bytes() -> usize {
    1 << 20
}
fn default_retry_secs() -> u64 {
    30
}
fn default_timeout_secs() -> u64 {
    10
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriberKind {
    Webhook,
    Folder,
}

/// How a folder subscriber's files are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedFormat {
    /// One change a line, as JSON.
    #[default]
    Jsonl,
    /// One change a line; its key and fields as JSON.
    Csv,
}

/// One change as a subscriber gets it: the change log's record, with the
/// key a receiver de-duplicates by.
#[derive(Debug, Clone, Serialize)]
pub struct FeedEvent<'a> {
    /// `EXECUTION_ID:SEQ`: the same for every delivery of this change.
    pub idempotency_key: String,
    #[serde(flatten)]
    pub change: &'a ChangeRecord,
}

impl<'a> FeedEvent<'a> {
    pub fn new(change: &'a ChangeRecord) -> FeedEvent<'a> {
        FeedEvent {
            idempotency_key: format!("{}:{}", change.execution_id, change.seq),
            change,
        }
    }
}

/// How many logged changes are read at a time while sending: memory stays
/// bounded whatever the size of the run.
const READ_CHUNK: usize = 10_000;

impl SubscriberConfig {
    /// The kinds of change wanted (all when empty); `check` made sure each
    /// name is one.
    pub fn change_kinds(&self) -> Vec<ChangeKind> {
        self.kinds
            .iter()
            .filter_map(|k| ChangeKind::parse(k))
            .collect()
    }

    /// Whether this subscriber may want changes a run of `integration` (of
    /// `dataset`) made: the outbox gets a delivery for it then.
    pub fn wants_run(&self, integration: &str, dataset: &str) -> bool {
        (self.integrations.is_empty() || self.integrations.iter().any(|i| i == integration))
            && (self.datasets.is_empty() || self.datasets.iter().any(|d| d == dataset))
    }

    /// Whether `change` goes to this subscriber.
    pub fn wants(&self, change: &ChangeRecord) -> bool {
        self.wants_run(&change.integration, &change.dataset)
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| k == change.kind.as_str()))
            && change.touches_any(&self.fields)
    }

    /// Checks what the config can, naming what is wrong: unknown
    /// integrations, datasets, kinds and fields, and the fields the type
    /// needs. Secrets are read only when sending.
    pub fn check(&self, config: &Config) -> Result<(), String> {
        if !crate::config::is_identifier(&self.name) {
            return Err("names may hold only letters, digits, `_` and `-`".into());
        }
        for integration in &self.integrations {
            if !config.integrations.contains_key(integration) {
                return Err(format!(
                    "integrations: no integration named `{integration}` (known: {})",
                    known(config.integrations.keys())
                ));
            }
        }
        // The datasets this subscriber can hear of: those of its integrations.
        let in_scope: BTreeSet<&str> = config
            .integrations
            .iter()
            .filter(|(name, _)| self.integrations.is_empty() || self.integrations.contains(name))
            .map(|(_, i)| i.dataset.as_str())
            .collect();
        for dataset in &self.datasets {
            if !in_scope.contains(dataset.as_str()) {
                return Err(format!(
                    "datasets: no integration{} syncs a dataset named `{dataset}` (known: {})",
                    if self.integrations.is_empty() {
                        ""
                    } else {
                        " of this subscriber"
                    },
                    known(in_scope.iter())
                ));
            }
        }
        for kind in &self.kinds {
            if ChangeKind::parse(kind).is_none() {
                return Err(format!(
                    "kinds: no kind of change named `{kind}` (known: insert, update, delete, subscribe, unsubscribe)"
                ));
            }
        }
        if !self.fields.is_empty() {
            let datasets: Vec<&str> = if self.datasets.is_empty() {
                in_scope.iter().copied().collect()
            } else {
                self.datasets.iter().map(String::as_str).collect()
            };
            let mut fields = BTreeSet::new();
            for dataset in datasets {
                // An unknown dataset is the integration's error, told there.
                if let Ok(d) =
                    crate::schema::Dataset::load(dataset, config.store.schemas.as_deref())
                {
                    fields.extend(d.schema.fields.into_iter().map(|f| f.name));
                }
            }
            for field in &self.fields {
                if !fields.contains(field) {
                    return Err(format!(
                        "fields: no field named `{field}` in the datasets it hears of (known: {})",
                        known(fields.iter())
                    ));
                }
            }
        }
        if self.page_bytes == 0 {
            return Err("page_bytes must be more than 0".into());
        }
        let webhook = [
            self.url.is_some(),
            self.url_env.is_some(),
            self.url_file.is_some(),
        ];
        match self.kind {
            SubscriberKind::Webhook => {
                if webhook.iter().filter(|b| **b).count() != 1 {
                    return Err("a webhook needs one of url, url_env or url_file".into());
                }
                if self.path.is_some() || self.file_mode.is_some() {
                    return Err("path and file_mode are for folders".into());
                }
                if let Some(url) = &self.url {
                    crate::notify::check_url(url)?;
                }
                for name in self.headers_env.keys() {
                    if name.is_empty()
                        || !name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    {
                        return Err(format!("headers_env: `{name}` is no header name"));
                    }
                }
            }
            SubscriberKind::Folder => {
                if webhook.iter().any(|b| *b) || !self.headers_env.is_empty() {
                    return Err("url, url_env, url_file and headers_env are for webhooks".into());
                }
                if self.path.is_none() {
                    return Err("a folder subscriber needs a path".into());
                }
                self.mode()?;
            }
        }
        Ok(())
    }

    /// The folder files' permissions.
    fn mode(&self) -> Result<u32, String> {
        match &self.file_mode {
            None => Ok(0o600),
            Some(text) => u32::from_str_radix(text.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| {
                    format!("file_mode `{text}`: give permissions in octal, like \"0640\"")
                }),
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }

    /// The wait before attempt `attempts + 1`.
    pub(crate) fn backoff(&self, attempts: u32) -> Duration {
        let base = self.retry_secs.max(1);
        Duration::from_secs(base.saturating_mul(1 << attempts.min(16)).min(3600))
    }

    /// Sends the changes of `event`'s run after `cursor` (a log sequence):
    /// the error says why, never with a secret in it. Each part the
    /// receiver accepted moves the cursor in the outbox, so a retry goes on
    /// from there.
    pub fn send(&self, store: &Store, event: &Event, cursor: i64) -> Result<(), String> {
        let Some(execution_id) = event.execution_id.as_deref() else {
            return Err("the delivery names no run".into());
        };
        let changes = Changes {
            store,
            subscriber: self,
            execution_id,
            integration: &event.integration,
        };
        match self.kind {
            SubscriberKind::Webhook => webhook::send(self, &changes, event, cursor),
            SubscriberKind::Folder => folder::send(self, &changes, event),
        }
    }
}

/// `a, b, c`, or `none`.
fn known<'a>(names: impl Iterator<Item = impl AsRef<str> + 'a>) -> String {
    let names: Vec<String> = names.map(|n| n.as_ref().to_string()).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// The changes one run made that a subscriber wants, read from the change
/// log in chunks.
struct Changes<'a> {
    store: &'a Store,
    subscriber: &'a SubscriberConfig,
    execution_id: &'a str,
    integration: &'a str,
}

impl Changes<'_> {
    /// Calls `each` with every wanted change after sequence `after`, in
    /// order; stops at the first error.
    fn for_each(
        &self,
        after: i64,
        mut each: impl FnMut(&ChangeRecord) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut after = after;
        loop {
            let chunk = self
                .store
                .changes(&ChangeFilter {
                    integration: Some(self.integration.to_string()),
                    execution_id: Some(self.execution_id.to_string()),
                    kinds: self.subscriber.change_kinds(),
                    after_seq: Some(after),
                    limit: Some(READ_CHUNK),
                    ..ChangeFilter::default()
                })
                .map_err(|e| format!("reading the change log: {e}"))?;
            let Some(last) = chunk.last() else {
                return Ok(());
            };
            after = last.seq;
            for change in chunk.iter().filter(|c| self.subscriber.wants(c)) {
                each(change)?;
            }
            if chunk.len() < READ_CHUNK {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscriber(toml_text: &str) -> SubscriberConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn a_change_goes_to_a_subscriber_only_through_every_filter() {
        let change = ChangeRecord {
            seq: 7,
            integration: "crm".into(),
            dataset: "accounts".into(),
            table: "accounts".into(),
            key: serde_json::json!({"AccountID": "A1"}),
            kind: ChangeKind::Update,
            action: crate::store::RowAction::Update,
            fields: serde_json::json!({"Name": ["a", "b"]}),
            execution_id: "run1".into(),
            business_date: None,
            recorded_at: chrono::NaiveDateTime::default(),
        };
        let base = "name = \"s\"\ntype = \"folder\"\npath = \"out\"\n";
        for (filters, wanted) in [
            ("", true),
            ("integrations = [\"crm\"]", true),
            ("integrations = [\"erp\"]", false),
            ("datasets = [\"users\"]", false),
            ("kinds = [\"update\", \"delete\"]", true),
            ("kinds = [\"insert\"]", false),
            ("fields = [\"Name\"]", true),
            ("fields = [\"Seats\"]", false),
        ] {
            let s = subscriber(&format!("{base}{filters}"));
            assert_eq!(s.wants(&change), wanted, "{filters}");
        }
        assert_eq!(FeedEvent::new(&change).idempotency_key, "run1:7");
    }

    #[test]
    fn file_modes_are_octal_and_default_to_the_owner_alone() {
        let base = "name = \"s\"\ntype = \"folder\"\npath = \"out\"\n";
        assert_eq!(subscriber(base).mode(), Ok(0o600));
        let s = subscriber(&format!("{base}file_mode = \"0640\""));
        assert_eq!(s.mode(), Ok(0o640));
        let s = subscriber(&format!("{base}file_mode = \"rw-r-----\""));
        assert!(s.mode().unwrap_err().contains("octal"));
    }
}

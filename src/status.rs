//! `dropsync status`: each integration as a card: where its files come
//! from, its schedule and next run, and how its last run went.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::freshness::{self, Freshness};
use crate::pipeline::{Integration, PipelineError};
use crate::schedule::Schedule;
use crate::schema::Dataset;
use crate::store::{RunRecord, Store};

/// One integration, at a glance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Card {
    pub integration: String,
    pub dataset: String,
    pub mode: String,
    pub source: String,
    pub schedule: Option<String>,
    pub timezone: Option<String>,
    pub next_run: Option<DateTime<Utc>>,
    pub last_run: Option<RunRecord>,
    /// Fresh, due, overdue or failing, and how late.
    pub freshness: Freshness,
    /// Alerts about it that no receiver has accepted yet.
    pub undelivered_alerts: crate::store::Undelivered,
    /// Its runs' changes that a change feed subscriber has not accepted yet.
    #[serde(default)]
    pub undelivered_feed: crate::store::Undelivered,
    /// On a store several workers share (PostgreSQL): the worker
    /// (`host:pid`) syncing it right now.
    #[serde(default)]
    pub worker: Option<String>,
}

/// The cards of every integration; runs come from `store` when there is one.
///
/// The history is read once for all integrations (`Store::glances`), so
/// the overview of 200 integrations costs a few queries, not a few each.
pub fn cards(
    store: Option<&Store>,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<Vec<Card>, PipelineError> {
    let mut resolved = Vec::with_capacity(config.integrations.len());
    // Loading a dataset and parsing a schedule cost more than reading the
    // history does: each is done once, however many integrations share it.
    let mut datasets: HashMap<&str, Dataset> = HashMap::new();
    let mut schedules: HashMap<(&str, Option<&str>), Option<DateTime<Utc>>> = HashMap::new();
    for (name, c) in &config.integrations {
        let dataset = match datasets.get(c.dataset.as_str()) {
            Some(dataset) => dataset.clone(),
            None => {
                let dataset = Dataset::load(&c.dataset, config.store.schemas.as_deref())?;
                datasets.insert(&c.dataset, dataset.clone());
                dataset
            }
        };
        let integration = Integration::with_dataset(name, c, dataset)?;
        let next_run = match c.schedule.as_deref() {
            Some(schedule) => *schedules
                .entry((schedule, c.timezone.as_deref()))
                .or_insert_with(|| {
                    Schedule::parse(schedule, c.timezone.as_deref())
                        .ok()
                        .and_then(|s| s.next_after(now))
                }),
            None => None,
        };
        let c = &integration.config;
        let since = c
            .expect
            .as_ref()
            .map_or(now, |e| e.judged_since(now, c.zone()));
        resolved.push((name.clone(), since.naive_utc(), next_run, integration));
    }
    let mut glances = match store {
        Some(store) => {
            let wanted: Vec<_> = resolved
                .iter()
                .map(|(name, since, _, _)| (name.clone(), *since))
                .collect();
            store.glances(&wanted)?
        }
        None => Default::default(),
    };
    let mut workers = match store {
        Some(store) => {
            let names: Vec<&str> = resolved.iter().map(|(name, ..)| name.as_str()).collect();
            store.holders(&names)?
        }
        None => Default::default(),
    };
    let mut out = Vec::with_capacity(resolved.len());
    for (name, _, next_run, integration) in resolved {
        let c = &integration.config;
        let glance = glances.remove(&name).unwrap_or_default();
        let freshness = freshness::assess(c.expect.as_ref(), c.zone(), &glance.arrivals, now);
        out.push(Card {
            dataset: integration.dataset.name.clone(),
            mode: integration.mode.as_str().to_string(),
            source: c.source.describe(),
            schedule: c.schedule.clone(),
            timezone: c.timezone.clone(),
            next_run,
            last_run: glance.last_run,
            freshness,
            undelivered_alerts: glance.undelivered,
            undelivered_feed: glance.undelivered_feed,
            worker: workers.remove(&name),
            integration: name,
        });
    }
    Ok(out)
}

/// How one integration stands at `now`; with no store, it never ran.
pub fn freshness_of(
    store: Option<&Store>,
    name: &str,
    integration: &crate::config::IntegrationConfig,
    now: DateTime<Utc>,
) -> Result<Freshness, crate::store::StoreError> {
    let zone = integration.zone();
    let expect = integration.expect.as_ref();
    let since = expect.map_or(now, |e| e.judged_since(now, zone));
    let arrivals = match store {
        Some(store) => store.arrivals(name, since.naive_utc())?,
        None => Default::default(),
    };
    Ok(freshness::assess(expect, zone, &arrivals, now))
}

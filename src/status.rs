//! `dropsync status`: each integration as a card: where its files come
//! from, its schedule and next run, and how its last run went.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::freshness::{self, Freshness};
use crate::pipeline::{Integration, PipelineError};
use crate::schedule::Schedule;
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
}

/// The cards of every integration; runs come from `store` when there is one.
pub fn cards(
    store: Option<&Store>,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<Vec<Card>, PipelineError> {
    let mut out = Vec::new();
    for name in config.integrations.keys() {
        let integration = Integration::resolve(config, name)?;
        let c = &integration.config;
        let next_run = c
            .schedule
            .as_deref()
            .and_then(|s| Schedule::parse(s, c.timezone.as_deref()).ok())
            .and_then(|s| s.next_after(now));
        let last_run = match store {
            Some(store) => store.runs(Some(name), 1)?.into_iter().next(),
            None => None,
        };
        let freshness = freshness_of(store, name, c, now)?;
        let undelivered_alerts = match store {
            Some(store) => store.undelivered(name)?,
            None => Default::default(),
        };
        out.push(Card {
            integration: name.clone(),
            dataset: integration.dataset.name.clone(),
            mode: integration.mode.as_str().to_string(),
            source: c.source.describe(),
            schedule: c.schedule.clone(),
            timezone: c.timezone.clone(),
            next_run,
            last_run,
            freshness,
            undelivered_alerts,
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

//! `dropsync check`: one line and an exit code for cron or a monitoring
//! probe, in the Nagios plugin convention: `0` OK, `1` WARNING (a file is
//! overdue, or alerts fail to be delivered), `2` CRITICAL (a last run
//! failed), `3` UNKNOWN (the config or the store cannot be read).

use std::io::Write;

use crate::freshness::{FreshnessState, human_duration};
use crate::status::Card;

/// A probe's verdict, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CheckState {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl CheckState {
    pub fn code(self) -> i32 {
        match self {
            CheckState::Ok => 0,
            CheckState::Warning => 1,
            CheckState::Critical => 2,
            CheckState::Unknown => 3,
        }
    }

    fn label(self) -> &'static str {
        match self {
            CheckState::Ok => "OK",
            CheckState::Warning => "WARNING",
            CheckState::Critical => "CRITICAL",
            CheckState::Unknown => "UNKNOWN",
        }
    }
}

/// Prints the verdict on the cards as one line, with performance data after
/// the `|`, and returns it.
pub fn report(out: &mut dyn Write, cards: &[Card]) -> std::io::Result<CheckState> {
    let mut state = CheckState::Ok;
    let mut problems = Vec::new();
    let count = |s: FreshnessState| cards.iter().filter(|c| c.freshness.state == s).count();
    for card in cards {
        let f = &card.freshness;
        match f.state {
            FreshnessState::Failing => {
                state = state.max(CheckState::Critical);
                problems.push(format!(
                    "{} failing (last run {} did not succeed)",
                    card.integration,
                    f.failed_run.as_deref().unwrap_or("-"),
                ));
            }
            FreshnessState::Overdue => {
                state = state.max(CheckState::Warning);
                problems.push(format!(
                    "{} overdue by {} ({}{})",
                    card.integration,
                    human_duration(f.late_secs.unwrap_or(0)),
                    f.expect.as_deref().unwrap_or("-"),
                    match f.missed_deadlines {
                        0 | 1 => String::new(),
                        n => format!(", {n} deadlines missed"),
                    }
                ));
            }
            _ => {}
        }
        // Alerts that a receiver refused or could not be reached for: the
        // probe is how an operator learns that the alerts themselves are
        // not getting through.
        for (undelivered, one, many) in [
            (&card.undelivered_alerts, "1 alert", "alerts"),
            (&card.undelivered_feed, "1 feed delivery", "feed deliveries"),
        ] {
            if let (true, Some(error)) = (undelivered.count > 0, &undelivered.last_error) {
                state = state.max(CheckState::Warning);
                problems.push(format!(
                    "{} has {} undelivered (last try: {error})",
                    card.integration,
                    match undelivered.count {
                        1 => one.to_string(),
                        n => format!("{n} {many}"),
                    },
                ));
            }
        }
    }
    let perf = format!(
        "fresh={} due={} overdue={} failing={} untracked={}",
        count(FreshnessState::Fresh),
        count(FreshnessState::Due),
        count(FreshnessState::Overdue),
        count(FreshnessState::Failing),
        count(FreshnessState::Untracked),
    );
    let summary = if problems.is_empty() {
        format!("{} integrations, none overdue or failing", cards.len())
    } else {
        problems.join("; ")
    };
    writeln!(out, "DROPSYNC {} - {summary} | {perf}", state.label())?;
    Ok(state)
}

/// The line for a check that could not look: config or store unreadable.
pub fn unknown(out: &mut dyn Write, error: &anyhow::Error) -> std::io::Result<CheckState> {
    let text = format!("{error:#}").replace('\n', " ");
    writeln!(out, "DROPSYNC UNKNOWN - {text}")?;
    Ok(CheckState::Unknown)
}

//! Freshness: when each integration's file is expected, and whether it came.
//!
//! An integration's `expect` names a deadline that repeats: `daily by
//! 07:00`, `weekly mon by 09:00`, `monthly day 3 by 12:00`, in the
//! integration's time zone. Each deadline wants one file that arrived after
//! the deadline before it. A file that comes after a missed deadline
//! answers that deadline (late), not the next one, so a feed that turns half
//! an hour late every day shows as overdue every day until its file comes.
//! The first file an integration ever receives answers the first deadline
//! after it: an evening export for the next morning is on time.
//!
//! The assessment is a pure function of the deadlines, the arrival times of
//! applied files and the last run's status, so the command line, the daemon
//! and `dropsync check` all judge alike, and the tests can fix the clock.

use std::str::FromStr;

use chrono::{
    DateTime, Datelike, Days, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// How many past deadlines an assessment looks at: enough to follow a chain
/// of late files and to count a run of missed ones.
const LOOKBACK: usize = 8;

/// A malformed `expect`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expect `{text}`: {message}")]
pub struct ExpectError {
    text: String,
    message: String,
}

/// Which days a deadline falls on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    Daily,
    Weekly(Weekday),
    /// Day of the month, 1 to 28 (every month has it).
    Monthly(u32),
}

/// A parsed `expect`: the file is expected by `by` (local time) on every day
/// of `cadence`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Expectation {
    pub cadence: Cadence,
    pub by: NaiveTime,
    text: String,
}

impl FromStr for Expectation {
    type Err = ExpectError;

    fn from_str(text: &str) -> Result<Expectation, ExpectError> {
        let fail = |message: String| ExpectError {
            text: text.to_string(),
            message,
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let (cadence, at) = match words.as_slice() {
            ["daily", "by", at] => (Cadence::Daily, at),
            ["weekly", day, "by", at] => (Cadence::Weekly(weekday(day).map_err(fail)?), at),
            ["monthly", "day", day, "by", at] => {
                let day = day
                    .parse()
                    .ok()
                    .filter(|d| (1..=28).contains(d))
                    .ok_or_else(|| {
                        fail(format!(
                            "day of month `{day}`: use 1 to 28, which every month has"
                        ))
                    })?;
                (Cadence::Monthly(day), at)
            }
            _ => {
                return Err(fail(
                    "use `daily by HH:MM`, `weekly DAY by HH:MM` or `monthly day D by HH:MM`"
                        .into(),
                ));
            }
        };
        let by = clock(at).map_err(fail)?;
        Ok(Expectation {
            cadence,
            by,
            text: text.to_string(),
        })
    }
}

impl TryFrom<String> for Expectation {
    type Error = ExpectError;
    fn try_from(text: String) -> Result<Expectation, ExpectError> {
        text.parse()
    }
}

impl std::fmt::Display for Expectation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn clock(at: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(at, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(at, "%H:%M:%S"))
        .map_err(|_| format!("time `{at}`: use HH:MM, a time of day"))
}

fn weekday(day: &str) -> Result<Weekday, String> {
    let lower = day.to_ascii_lowercase();
    [
        ("mon", Weekday::Mon),
        ("tue", Weekday::Tue),
        ("wed", Weekday::Wed),
        ("thu", Weekday::Thu),
        ("fri", Weekday::Fri),
        ("sat", Weekday::Sat),
        ("sun", Weekday::Sun),
    ]
    .into_iter()
    .find(|(short, _)| lower.len() >= 3 && lower.starts_with(short))
    .map(|(_, d)| d)
    .ok_or_else(|| format!("day `{day}`: use mon, tue, wed, thu, fri, sat or sun"))
}

impl Expectation {
    fn falls_on(&self, date: NaiveDate) -> bool {
        match self.cadence {
            Cadence::Daily => true,
            Cadence::Weekly(day) => date.weekday() == day,
            Cadence::Monthly(day) => date.day() == day,
        }
    }

    /// The deadline on local `date` in `zone`, if the cadence has one that
    /// day. A local time skipped by a daylight-saving change falls at the
    /// first instant after the gap; one that happens twice, at the first.
    fn deadline_on(&self, date: NaiveDate, zone: Tz) -> Option<DateTime<Utc>> {
        if !self.falls_on(date) {
            return None;
        }
        let mut local = date.and_time(self.by);
        // A gap is at most a few hours; step through it a minute at a time.
        for _ in 0..(24 * 60) {
            if let Some(t) = zone.from_local_datetime(&local).earliest() {
                return Some(t.with_timezone(&Utc));
            }
            local += chrono::Duration::minutes(1);
        }
        None
    }

    /// The latest deadline at or before `now`, and the `count - 1` before
    /// it, oldest first.
    pub fn deadlines_up_to(
        &self,
        now: DateTime<Utc>,
        zone: Tz,
        count: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut date = now.with_timezone(&zone).date_naive() + Days::new(1);
        // A monthly deadline comes within 31 days; look that far per deadline.
        let mut days_left = 32 * (count + 1);
        while out.len() < count && days_left > 0 {
            if let Some(t) = self.deadline_on(date, zone).filter(|t| *t <= now) {
                out.push(t);
            }
            date = match date.pred_opt() {
                Some(d) => d,
                None => break,
            };
            days_left -= 1;
        }
        out.reverse();
        out
    }

    /// From when on the arrivals matter to an assessment at `now`.
    pub fn judged_since(&self, now: DateTime<Utc>, zone: Tz) -> DateTime<Utc> {
        self.deadlines_up_to(now, zone, LOOKBACK + 1)
            .first()
            .copied()
            .unwrap_or(now)
    }

    /// The first deadline strictly after `now`.
    pub fn next_after(&self, now: DateTime<Utc>, zone: Tz) -> Option<DateTime<Utc>> {
        let mut date = now.with_timezone(&zone).date_naive() - Days::new(1);
        for _ in 0..64 {
            if let Some(t) = self.deadline_on(date, zone).filter(|t| *t > now) {
                return Some(t);
            }
            date = date.succ_opt()?;
        }
        None
    }
}

/// Where an integration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FreshnessState {
    /// The file for the last deadline came (maybe late), and the next
    /// deadline is not today, or its file is in already.
    Fresh,
    /// The last deadline was met; the next one is today and its file has not
    /// come yet.
    Due,
    /// A deadline passed without its file.
    Overdue,
    /// The last run failed (or was interrupted): whatever the deadlines say,
    /// someone has to look.
    Failing,
    /// No `expect`, and the last run did not fail: nothing to judge.
    Untracked,
}

impl FreshnessState {
    pub fn as_str(self) -> &'static str {
        match self {
            FreshnessState::Fresh => "fresh",
            FreshnessState::Due => "due",
            FreshnessState::Overdue => "overdue",
            FreshnessState::Failing => "failing",
            FreshnessState::Untracked => "untracked",
        }
    }
}

impl std::fmt::Display for FreshnessState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last run that decided something: applied, failed or interrupted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastOutcome {
    pub execution_id: String,
    pub failed: bool,
    pub at: DateTime<Utc>,
}

/// What the assessment needs to know of an integration's history.
#[derive(Debug, Clone, Default)]
pub struct Arrivals {
    /// When each applied file arrived (its run started), oldest first.
    pub applied: Vec<DateTime<Utc>>,
    /// When the integration first ran at all; deadlines before it are not
    /// counted as missed.
    pub first_run: Option<DateTime<Utc>>,
    pub last_outcome: Option<LastOutcome>,
}

/// How an integration stands at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freshness {
    pub state: FreshnessState,
    /// The `expect` it is judged by.
    pub expect: Option<String>,
    /// The latest deadline that has passed.
    pub last_deadline: Option<DateTime<Utc>>,
    pub next_deadline: Option<DateTime<Utc>>,
    /// Overdue: the first of the deadlines missed in a row.
    pub overdue_since: Option<DateTime<Utc>>,
    /// Overdue: how long since `overdue_since`, in seconds.
    pub late_secs: Option<i64>,
    /// Overdue: how many deadlines in a row passed without a file (counted
    /// over the last eight at most).
    pub missed_deadlines: u32,
    /// The file that answered the last deadline came this many seconds after
    /// it (0: on time).
    pub last_file_late_secs: Option<i64>,
    /// When the newest applied file arrived.
    pub last_arrival: Option<DateTime<Utc>>,
    /// The run that made it `failing`.
    pub failed_run: Option<String>,
}

impl Freshness {
    pub fn is_problem(&self) -> bool {
        matches!(
            self.state,
            FreshnessState::Overdue | FreshnessState::Failing
        )
    }
}

/// Judges an integration at `now`. `expect` is None for an integration with
/// no deadline, which can still be failing.
pub fn assess(
    expect: Option<&Expectation>,
    zone: Tz,
    arrivals: &Arrivals,
    now: DateTime<Utc>,
) -> Freshness {
    let failed_run = arrivals
        .last_outcome
        .as_ref()
        .filter(|o| o.failed)
        .map(|o| o.execution_id.clone());
    let mut out = Freshness {
        state: if failed_run.is_some() {
            FreshnessState::Failing
        } else {
            FreshnessState::Untracked
        },
        expect: expect.map(|e| e.to_string()),
        last_deadline: None,
        next_deadline: None,
        overdue_since: None,
        late_secs: None,
        missed_deadlines: 0,
        last_file_late_secs: None,
        last_arrival: arrivals.applied.last().copied(),
        failed_run,
    };
    let Some(expect) = expect else {
        return out;
    };
    out.next_deadline = expect.next_after(now, zone);
    // One deadline more than looked at: the first one only bounds which
    // arrivals are old news.
    let all = expect.deadlines_up_to(now, zone, LOOKBACK + 1);
    let Some(&last) = all.last() else {
        return out;
    };
    out.last_deadline = Some(last);
    // Deadlines before the integration first ran are nobody's miss; one
    // that never ran has missed the latest.
    let start = match arrivals.first_run {
        Some(first) => all.iter().position(|d| *d >= first).unwrap_or(all.len()),
        None => all.len() - 1,
    }
    .max(1);
    let mut before = all[start - 1];
    let deadlines = &all[start..];

    let applied = &arrivals.applied;
    let mut next = 0;
    let mut missed_in_a_row: Vec<DateTime<Utc>> = Vec::new();
    for deadline in deadlines {
        while next < applied.len() && applied[next] <= before {
            next += 1;
        }
        match applied.get(next) {
            Some(&arrived) => {
                missed_in_a_row.clear();
                out.last_file_late_secs = Some((arrived - *deadline).num_seconds().max(0));
                if arrived <= *deadline {
                    // On time: any more files before the deadline are
                    // repeats of this one's period.
                    while next < applied.len() && applied[next] <= *deadline {
                        next += 1;
                    }
                } else {
                    next += 1;
                }
            }
            None => {
                missed_in_a_row.push(*deadline);
                out.last_file_late_secs = None;
            }
        }
        before = *deadline;
    }
    let next_file_in = applied[next..].iter().any(|a| *a > last);

    if let Some(&since) = missed_in_a_row.first() {
        out.overdue_since = Some(since);
        out.late_secs = Some((now - since).num_seconds().max(0));
        out.missed_deadlines = missed_in_a_row.len() as u32;
    }
    if out.state == FreshnessState::Failing {
        return out;
    }
    let today = now.with_timezone(&zone).date_naive();
    out.state = if !missed_in_a_row.is_empty() {
        FreshnessState::Overdue
    } else if !next_file_in
        && out
            .next_deadline
            .is_some_and(|d| d.with_timezone(&zone).date_naive() == today)
    {
        FreshnessState::Due
    } else {
        FreshnessState::Fresh
    };
    out
}

/// `2h 13m`, `3d 4h`, `45s`: a duration as an operator reads it.
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// A stored UTC timestamp as an instant.
pub fn utc(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn judge(expect: &str, zone: &str, applied: &[&str], now: &str) -> Freshness {
        let expect: Expectation = expect.parse().unwrap();
        let arrivals = Arrivals {
            applied: applied.iter().map(|a| at(a)).collect(),
            first_run: applied.first().map(|a| at(a)),
            last_outcome: None,
        };
        assess(Some(&expect), zone.parse().unwrap(), &arrivals, at(now))
    }

    #[test]
    fn expectations_parse_and_bad_ones_say_what_is_wrong() {
        let e: Expectation = "weekly mon by 09:00".parse().unwrap();
        assert_eq!(e.cadence, Cadence::Weekly(Weekday::Mon));
        assert_eq!(e.by, NaiveTime::from_hms_opt(9, 0, 0).unwrap());
        let e: Expectation = "monthly day 3 by 12:00".parse().unwrap();
        assert_eq!(e.cadence, Cadence::Monthly(3));
        for (text, needle) in [
            ("daily 07:00", "use `daily by HH:MM`"),
            ("daily by 25:00", "time `25:00`"),
            ("weekly someday by 09:00", "use mon, tue"),
            ("monthly day 31 by 12:00", "1 to 28"),
            ("hourly", "use `daily by HH:MM`"),
        ] {
            let err = text.parse::<Expectation>().unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(err.contains(text), "{text}: {err}");
        }
    }

    #[test]
    fn deadlines_in_their_time_zone() {
        let daily: Expectation = "daily by 07:00".parse().unwrap();
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(
            daily.deadlines_up_to(at("2026-11-25T10:00:00Z"), berlin, 2),
            [at("2026-11-24T06:00:00Z"), at("2026-11-25T06:00:00Z")]
        );
        assert_eq!(
            daily.next_after(at("2026-11-25T06:00:00Z"), berlin),
            Some(at("2026-11-26T06:00:00Z"))
        );
        let weekly: Expectation = "weekly mon by 09:00".parse().unwrap();
        assert_eq!(
            weekly.next_after(at("2026-11-25T10:00:00Z"), Tz::UTC),
            Some(at("2026-11-30T09:00:00Z"))
        );
        let monthly: Expectation = "monthly day 3 by 12:00".parse().unwrap();
        assert_eq!(
            monthly.deadlines_up_to(at("2026-11-25T10:00:00Z"), Tz::UTC, 2),
            [at("2026-10-03T12:00:00Z"), at("2026-11-03T12:00:00Z")]
        );
        // 02:30 does not exist in Berlin on March 29, 2026: 03:00 CEST.
        let gap: Expectation = "daily by 02:30".parse().unwrap();
        assert_eq!(
            gap.next_after(at("2026-03-28T12:00:00Z"), berlin),
            Some(at("2026-03-29T01:00:00Z"))
        );
    }

    #[test]
    fn on_time_late_missing_and_early() {
        use FreshnessState::*;
        let daily = "daily by 07:00";
        let cases: &[(&str, &[&str], &str, FreshnessState, u32)] = &[
            // Files every night at 03:00; after the deadline, before the next day.
            (
                "on time",
                &[
                    "2026-11-23T03:00:00Z",
                    "2026-11-24T03:00:00Z",
                    "2026-11-25T03:00:00Z",
                ],
                "2026-11-25T12:00:00Z",
                Fresh,
                0,
            ),
            // Today's deadline passed with no file since yesterday's.
            (
                "missing today",
                &["2026-11-23T03:00:00Z", "2026-11-24T03:00:00Z"],
                "2026-11-25T07:01:00Z",
                Overdue,
                1,
            ),
            // Two days without.
            (
                "missing two days",
                &["2026-11-23T03:00:00Z"],
                "2026-11-25T08:00:00Z",
                Overdue,
                2,
            ),
            // Today's came at 07:30: late, but in.
            (
                "late today",
                &["2026-11-24T03:00:00Z", "2026-11-25T07:30:00Z"],
                "2026-11-25T08:00:00Z",
                Fresh,
                0,
            ),
            // Yesterday's came late (07:30); it does not answer today's deadline.
            (
                "late yesterday is not today's",
                &["2026-11-23T03:00:00Z", "2026-11-24T07:30:00Z"],
                "2026-11-25T07:10:00Z",
                Overdue,
                1,
            ),
            // Late every day since the 23rd: overdue between 07:00 and 07:30.
            (
                "always late",
                &[
                    "2026-11-22T03:00:00Z",
                    "2026-11-23T07:30:00Z",
                    "2026-11-24T07:30:00Z",
                ],
                "2026-11-25T07:15:00Z",
                Overdue,
                1,
            ),
            // A file dropped twice in one night is one file.
            (
                "repeat in one night",
                &["2026-11-24T02:00:00Z", "2026-11-24T03:00:00Z"],
                "2026-11-25T07:10:00Z",
                Overdue,
                1,
            ),
            // Early in the day, before today's file: due.
            (
                "due today",
                &["2026-11-24T03:00:00Z"],
                "2026-11-25T01:00:00Z",
                Due,
                0,
            ),
            // Today's file is in before the deadline: fresh, not due.
            (
                "in before the deadline",
                &["2026-11-24T03:00:00Z", "2026-11-25T03:00:00Z"],
                "2026-11-25T04:00:00Z",
                Fresh,
                0,
            ),
        ];
        for (name, applied, now, want, missed) in cases {
            let f = judge(daily, "UTC", applied, now);
            assert_eq!(f.state, *want, "{name}: {f:?}");
            assert_eq!(f.missed_deadlines, *missed, "{name}: {f:?}");
        }
        let late = judge(
            daily,
            "UTC",
            &["2026-11-24T03:00:00Z", "2026-11-25T07:30:00Z"],
            "2026-11-25T08:00:00Z",
        );
        assert_eq!(late.last_file_late_secs, Some(1800));
        let two = judge(
            daily,
            "UTC",
            &["2026-11-23T03:00:00Z"],
            "2026-11-25T08:00:00Z",
        );
        assert_eq!(two.overdue_since, Some(at("2026-11-24T07:00:00Z")));
        assert_eq!(two.late_secs, Some(86400 + 3600));
    }

    #[test]
    fn deadlines_before_the_first_run_are_not_missed() {
        let expect: Expectation = "daily by 07:00".parse().unwrap();
        // Set up yesterday at noon, first file this morning.
        let arrivals = Arrivals {
            applied: vec![at("2026-11-25T03:00:00Z")],
            first_run: Some(at("2026-11-25T03:00:00Z")),
            last_outcome: None,
        };
        let f = assess(
            Some(&expect),
            Tz::UTC,
            &arrivals,
            at("2026-11-25T12:00:00Z"),
        );
        assert_eq!(f.state, FreshnessState::Fresh, "{f:?}");
        // First file after today's deadline: it answers tomorrow's.
        let arrivals = Arrivals {
            applied: vec![at("2026-11-25T10:00:00Z")],
            first_run: Some(at("2026-11-25T10:00:00Z")),
            last_outcome: None,
        };
        let f = assess(
            Some(&expect),
            Tz::UTC,
            &arrivals,
            at("2026-11-25T12:00:00Z"),
        );
        assert_eq!(f.state, FreshnessState::Fresh, "{f:?}");
        let f = assess(
            Some(&expect),
            Tz::UTC,
            &arrivals,
            at("2026-11-26T07:01:00Z"),
        );
        assert_eq!(f.state, FreshnessState::Fresh, "{f:?}");
        let f = assess(
            Some(&expect),
            Tz::UTC,
            &arrivals,
            at("2026-11-27T07:01:00Z"),
        );
        assert_eq!(f.state, FreshnessState::Overdue, "{f:?}");
        // Never ran: the latest deadline counts, and only it.
        let f = assess(
            Some(&expect),
            Tz::UTC,
            &Arrivals::default(),
            at("2026-11-25T12:00:00Z"),
        );
        assert_eq!(f.state, FreshnessState::Overdue, "{f:?}");
        assert_eq!(f.missed_deadlines, 1);
        assert_eq!(f.late_secs, Some(5 * 3600));
    }

    #[test]
    fn a_failed_last_run_is_failing_whatever_the_deadline() {
        let arrivals = Arrivals {
            applied: vec![at("2026-11-25T03:00:00Z")],
            first_run: Some(at("2026-11-20T03:00:00Z")),
            last_outcome: Some(LastOutcome {
                execution_id: "run-1".into(),
                failed: true,
                at: at("2026-11-25T04:00:00Z"),
            }),
        };
        let expect: Expectation = "daily by 07:00".parse().unwrap();
        let f = assess(
            Some(&expect),
            Tz::UTC,
            &arrivals,
            at("2026-11-25T12:00:00Z"),
        );
        assert_eq!(f.state, FreshnessState::Failing);
        assert_eq!(f.failed_run.as_deref(), Some("run-1"));
        let f = assess(None, Tz::UTC, &arrivals, at("2026-11-25T12:00:00Z"));
        assert_eq!(f.state, FreshnessState::Failing);
    }

    #[test]
    fn durations_read_like_an_operator_says_them() {
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(2 * 3600 + 13 * 60), "2h 13m");
        assert_eq!(human_duration(3 * 86400 + 4 * 3600 + 5), "3d 4h");
    }
}

//! When an integration syncs: `daily 02:00`, `weekly mon 06:00`,
//! `monthly 1 03:00`, or a cron expression (5 fields, or 6 with seconds
//! first), in a named time zone (default UTC).
//!
//! The next fire time is always computed afresh in the zone, from the
//! current instant, so a schedule keeps its local time on both sides of a
//! daylight-saving change: a time that does not exist (spring forward) fires
//! at the first instant after the gap, a time that exists twice (fall back)
//! fires once, at the first. (Schedulers that compute the UTC offset once,
//! when a job is created, drift by an hour after a change.)

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;

#[derive(Debug, thiserror::Error)]
#[error("schedule `{}`: {message}", crate::config::echo(.text))]
pub struct ScheduleError {
    text: String,
    message: String,
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    cron: Cron,
    zone: Tz,
}

impl Schedule {
    /// Parses `text` in time zone `zone` (an IANA name; None for UTC).
    pub fn parse(text: &str, zone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let fail = |message: String| ScheduleError {
            text: text.to_string(),
            message,
        };
        let zone = match zone {
            None => Tz::UTC,
            Some(name) => Tz::from_str(name).map_err(|_| {
                fail(format!(
                    "unknown time zone `{name}` (use an IANA name like Europe/Berlin)"
                ))
            })?,
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let expression = match words.as_slice() {
            ["daily", at] => {
                let (h, m) = clock(at).map_err(fail)?;
                format!("0 {m} {h} * * *")
            }
            ["weekly", day, at] => {
                let (h, m) = clock(at).map_err(fail)?;
                let day = weekday(day).map_err(fail)?;
                format!("0 {m} {h} * * {day}")
            }
            ["monthly", day, at] => {
                let (h, m) = clock(at).map_err(fail)?;
                let day: u32 = day
                    .parse()
                    .ok()
                    .filter(|d| (1..=28).contains(d))
                    .ok_or_else(|| {
                        fail(format!(
                            "day of month `{day}`: use 1 to 28, which every month has"
                        ))
                    })?;
                format!("0 {m} {h} {day} * *")
            }
            _ if words.len() == 5 => format!("0 {text}"),
            _ if words.len() == 6 => text.to_string(),
            _ => {
                return Err(fail(
                    "use `daily HH:MM`, `weekly DAY HH:MM`, `monthly D HH:MM`, or a cron expression".into(),
                ));
            }
        };
        let cron = Cron::from_str(&expression).map_err(|e| fail(e.to_string()))?;
        Ok(Schedule {
            text: text.to_string(),
            cron,
            zone,
        })
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Fire times in (`from`, `until`], oldest first; at most `limit`.
    pub fn fires_between(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = from;
        while out.len() < limit {
            match self.next_after(t) {
                Some(next) if next <= until => {
                    out.push(next);
                    t = next;
                }
                _ => break,
            }
        }
        out
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn clock(at: &str) -> Result<(u32, u32), String> {
    let (h, m) = at
        .split_once(':')
        .ok_or_else(|| format!("time `{at}`: use HH:MM"))?;
    let (h, m): (u32, u32) = (
        h.parse().map_err(|_| format!("time `{at}`: use HH:MM"))?,
        m.parse().map_err(|_| format!("time `{at}`: use HH:MM"))?,
    );
    if h > 23 || m > 59 {
        return Err(format!("time `{at}` is not a time of day"));
    }
    Ok((h, m))
}

fn weekday(day: &str) -> Result<&'static str, String> {
    let names = [
        ("mon", "MON"),
        ("tue", "TUE"),
        ("wed", "WED"),
        ("thu", "THU"),
        ("fri", "FRI"),
        ("sat", "SAT"),
        ("sun", "SUN"),
    ];
    let lower = day.to_ascii_lowercase();
    names
        .iter()
        .find(|(short, _)| lower.starts_with(short) && lower.len() >= 3)
        .map(|(_, cron)| *cron)
        .ok_or_else(|| format!("day `{day}`: use mon, tue, wed, thu, fri, sat or sun"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn shorthands_and_cron() {
        let cases = [
            (
                "daily 02:00",
                None,
                "2026-11-25T10:00:00Z",
                "2026-11-26T02:00:00Z",
            ),
            (
                "daily 02:00",
                None,
                "2026-11-25T01:59:59Z",
                "2026-11-25T02:00:00Z",
            ),
            (
                "weekly mon 06:00",
                None,
                "2026-11-25T00:00:00Z",
                "2026-11-30T06:00:00Z",
            ),
            (
                "monthly 1 03:00",
                None,
                "2026-11-25T00:00:00Z",
                "2026-12-01T03:00:00Z",
            ),
            (
                "*/15 * * * *",
                None,
                "2026-11-25T10:07:00Z",
                "2026-11-25T10:15:00Z",
            ),
            (
                "* * * * * *",
                None,
                "2026-11-25T10:07:00Z",
                "2026-11-25T10:07:01Z",
            ),
            (
                "daily 02:00",
                Some("Europe/Berlin"),
                "2026-11-25T10:00:00Z",
                "2026-11-26T01:00:00Z",
            ),
            (
                "daily 02:00",
                Some("America/New_York"),
                "2026-07-01T00:00:00Z",
                "2026-07-01T06:00:00Z",
            ),
        ];
        for (text, zone, after, want) in cases {
            let s = Schedule::parse(text, zone).unwrap();
            assert_eq!(
                s.next_after(utc(after)),
                Some(utc(want)),
                "{text} in {zone:?} after {after}"
            );
        }
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        for (text, zone, needle) in [
            ("daily 25:00", None, "not a time of day"),
            ("weekly someday 06:00", None, "use mon, tue"),
            ("monthly 31 03:00", None, "1 to 28"),
            ("hourly", None, "use `daily HH:MM`"),
            ("daily 02:00", Some("Mars/Olympus"), "unknown time zone"),
            ("61 * * * *", None, "61 * * * *"),
        ] {
            let err = Schedule::parse(text, zone).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    /// A daily job keeps its local time across both changes of the year,
    /// fires once in the repeated hour, and right after the skipped one.
    #[test]
    fn daylight_saving_changes() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let local = |y, mo, d, h, mi| {
            berlin
                .with_ymd_and_hms(y, mo, d, h, mi, 0)
                .earliest()
                .unwrap()
                .with_timezone(&Utc)
        };
        // 06:00 local, every day from March 27 to April 1: 05:00Z, then 04:00Z.
        let six = Schedule::parse("daily 06:00", Some("Europe/Berlin")).unwrap();
        let fires = six.fires_between(local(2026, 3, 27, 0, 0), local(2026, 4, 1, 0, 0), 10);
        let hours: Vec<String> = fires
            .iter()
            .map(|t| t.format("%m-%d %H:%MZ").to_string())
            .collect();
        assert_eq!(
            hours,
            [
                "03-27 05:00Z",
                "03-28 05:00Z",
                "03-29 04:00Z",
                "03-30 04:00Z",
                "03-31 04:00Z"
            ]
        );
        // 02:30 does not exist on March 29 (02:00 -> 03:00): it fires at 03:00 local.
        let gap = Schedule::parse("daily 02:30", Some("Europe/Berlin")).unwrap();
        let local_times = |fires: Vec<DateTime<Utc>>| -> Vec<String> {
            fires
                .iter()
                .map(|t| {
                    t.with_timezone(&berlin)
                        .format("%m-%d %H:%M %Z")
                        .to_string()
                })
                .collect()
        };
        let hours = local_times(gap.fires_between(
            local(2026, 3, 28, 12, 0),
            local(2026, 3, 30, 12, 0),
            10,
        ));
        assert_eq!(hours, ["03-29 03:00 CEST", "03-30 02:30 CEST"]);
        // 02:30 happens twice on October 25 (03:00 -> 02:00): it fires once.
        let hours = local_times(gap.fires_between(
            local(2026, 10, 24, 12, 0),
            local(2026, 10, 26, 12, 0),
            10,
        ));
        assert_eq!(hours, ["10-25 02:30 CEST", "10-26 02:30 CET"]);
    }
}

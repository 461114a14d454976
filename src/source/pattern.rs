//! File name patterns with a business-date template: `accounts_{date:%Y%m%d}.csv`.
//! Globs (`*`, `?`) match as usual; `{date:FORMAT}` matches the date written
//! with a strftime format and yields the business date of the file. Exports
//! that stand for a longer period name it coarsely (`%Y%m`, `%G-W%V`, `%Y`):
//! such a file is dated at the first day of its period, so a monthly report
//! sorts and replays like any other file.

use chrono::format::{Parsed, StrftimeItems};
use chrono::{NaiveDate, Weekday};
use regex::Regex;

#[derive(Debug, thiserror::Error)]
#[error("pattern `{}`: {message}", crate::config::echo(.pattern))]
pub struct PatternError {
    pattern: String,
    message: String,
}

/// A compiled file name pattern.
#[derive(Debug, Clone)]
pub struct FilePattern {
    source: String,
    regex: Regex,
    date_format: Option<(String, Period)>,
}

/// The period a date template names, which decides the day a file is dated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Period {
    /// A calendar day (`%Y%m%d`, `%Y%j`).
    Day,
    /// An ISO week (`%G-W%V`): dated on its Monday unless `%u` names the day.
    IsoWeek,
    /// A month (`%Y%m`, `%b %Y`): dated on its first day.
    Month,
    /// A year (`%Y`): dated on January 1.
    Year,
}

impl FilePattern {
    pub fn parse(pattern: &str) -> Result<FilePattern, PatternError> {
        let fail = |message: String| PatternError {
            pattern: pattern.to_string(),
            message,
        };
        if pattern.contains('/') || pattern.contains('\\') {
            return Err(fail("a pattern matches file names, not paths".into()));
        }
        let mut re = String::from("^");
        let mut date_format = None;
        let mut rest = pattern;
        while let Some(c) = rest.chars().next() {
            if let Some(tail) = rest.strip_prefix("{date:") {
                let end = tail
                    .find('}')
                    .ok_or_else(|| fail("`{date:` is not closed by `}`".into()))?;
                if date_format.is_some() {
                    return Err(fail("only one `{date:...}` is allowed".into()));
                }
                let format = &tail[..end];
                re.push_str("(?P<date>");
                re.push_str(&date_regex(format).map_err(fail)?);
                re.push(')');
                let period = period_of(format).map_err(fail)?;
                date_format = Some((format.to_string(), period));
                rest = &tail[end + 1..];
                continue;
            }
            match c {
                '*' => re.push_str("[^/]*"),
                '?' => re.push_str("[^/]"),
                c => re.push_str(&regex::escape(&c.to_string())),
            }
            rest = &rest[c.len_utf8()..];
        }
        re.push('$');
        let regex = Regex::new(&re).map_err(|e| fail(e.to_string()))?;
        Ok(FilePattern {
            source: pattern.to_string(),
            regex,
            date_format,
        })
    }

    /// Whether `name` matches; if so, the business date written in it (when
    /// the pattern has a date template): the first day of the period a
    /// coarser template names. A name whose date does not parse (`20241399`)
    /// does not match.
    pub fn matches(&self, name: &str) -> Option<Option<NaiveDate>> {
        let caps = self.regex.captures(name)?;
        match (&self.date_format, caps.name("date")) {
            (Some((format, period)), Some(m)) => parse_date(m.as_str(), format, *period).map(Some),
            _ => Some(None),
        }
    }

    /// Whether the pattern carries the business date.
    pub fn has_date(&self) -> bool {
        self.date_format.is_some()
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// The date written as `format` names, at the first day of its period.
fn parse_date(text: &str, format: &str, period: Period) -> Option<NaiveDate> {
    let mut parsed = Parsed::new();
    chrono::format::parse(&mut parsed, text, StrftimeItems::new(format)).ok()?;
    match period {
        Period::Day => {}
        Period::IsoWeek => {
            if parsed.weekday().is_none() {
                parsed.set_weekday(Weekday::Mon).ok()?;
            }
        }
        Period::Month => parsed.set_day(1).ok()?,
        Period::Year => {
            parsed.set_month(1).ok()?;
            parsed.set_day(1).ok()?;
        }
    }
    parsed.to_naive_date().ok()
}

/// Which period a date template names; an error when no name written with
/// it could ever yield a date (no year, a day without its month, ...), since
/// such a pattern would match nothing, silently, forever.
fn period_of(format: &str) -> Result<Period, String> {
    let mut specs = Vec::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c == '%'
            && let Some(spec) = chars.next()
        {
            specs.push(spec);
        }
    }
    let has = |set: &[char]| specs.iter().any(|c| set.contains(c));
    let (year, month, day, day_of_year) = (
        has(&['Y', 'y']),
        has(&['m', 'b', 'B']),
        has(&['d']),
        has(&['j']),
    );
    let (iso_year, iso_week, weekday) = (has(&['G']), has(&['V']), has(&['u']));
    let fail = |why: &str| {
        Err(format!(
            "the date template `{format}` can never yield a date: {why}"
        ))
    };
    if iso_year || iso_week || weekday {
        if year || month || day || day_of_year {
            return fail(
                "ISO week fields (%G, %V, %u) do not mix with %Y, %y, %m, %b, %B, %d or %j",
            );
        }
        if !(iso_year && iso_week) {
            return fail("an ISO week needs both %G (its year) and %V (its number)");
        }
        return Ok(Period::IsoWeek);
    }
    if !year {
        return fail("it has no year (%Y or %y; %G with %V for ISO weeks)");
    }
    match (month, day, day_of_year) {
        (_, _, true) if month || day => {
            fail("%j (day of the year) does not mix with %m, %b, %B or %d")
        }
        (_, _, true) => Ok(Period::Day),
        (true, true, false) => Ok(Period::Day),
        (true, false, false) => Ok(Period::Month),
        (false, true, false) => fail("it has a day (%d) but no month (%m, %b or %B)"),
        (false, false, false) => Ok(Period::Year),
    }
}

fn date_regex(format: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push_str(&regex::escape(&c.to_string()));
            continue;
        }
        let spec = chars
            .next()
            .ok_or_else(|| "date format ends with a lone `%`".to_string())?;
        out.push_str(match spec {
            'Y' | 'G' => r"\d{4}",
            'y' | 'm' | 'd' | 'H' | 'M' | 'S' | 'V' => r"\d{2}",
            'u' => "[1-7]",
            'j' => r"\d{3}",
            'b' => r"[A-Za-z]{3}",
            'B' => r"[A-Za-z]+",
            '%' => "%",
            other => return Err(format!("date format `%{other}` is not supported")),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_templates_and_globs() {
        let cases: &[(&str, &str, Option<Option<&str>>)] = &[
            (
                "accounts_{date:%Y%m%d}.csv",
                "accounts_20241103.csv",
                Some(Some("2024-11-03")),
            ),
            ("accounts_{date:%Y%m%d}.csv", "accounts_20241399.csv", None),
            (
                "accounts_{date:%Y%m%d}.csv",
                "accounts_20241103.csv.tmp",
                None,
            ),
            (
                "*_{date:%Y-%m-%d}_export.csv",
                "crm_2024-01-31_export.csv",
                Some(Some("2024-01-31")),
            ),
            ("users*.csv", "users-full.csv", Some(None)),
            // Coarser periods are dated at their first day.
            (
                "monthly_{date:%Y%m}.csv",
                "monthly_202410.csv",
                Some(Some("2024-10-01")),
            ),
            ("monthly_{date:%Y%m}.csv", "monthly_202413.csv", None),
            (
                "report_{date:%b-%Y}.csv",
                "report_Feb-2025.csv",
                Some(Some("2025-02-01")),
            ),
            (
                "weekly_{date:%G-W%V}.csv",
                "weekly_2025-W01.csv",
                Some(Some("2024-12-30")),
            ),
            (
                "weekly_{date:%G-W%V-%u}.csv",
                "weekly_2025-W02-3.csv",
                Some(Some("2025-01-08")),
            ),
            ("weekly_{date:%G-W%V}.csv", "weekly_2025-W54.csv", None),
            (
                "yearly_{date:%Y}.csv",
                "yearly_2023.csv",
                Some(Some("2023-01-01")),
            ),
            (
                "day_{date:%Y-%j}.csv",
                "day_2024-060.csv",
                Some(Some("2024-02-29")),
            ),
            ("users?.csv", "users10.csv", None),
            ("a.b.csv", "aXb.csv", None),
        ];
        for (pattern, name, want) in cases {
            let p = FilePattern::parse(pattern).unwrap();
            let got = p.matches(name).map(|d| d.map(|d| d.to_string()));
            let want = want.map(|d| d.map(str::to_string));
            assert_eq!(got, want, "{pattern} vs {name}");
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        for p in [
            "a/{date:%Y}.csv",
            "{date:%Y",
            "{date:%Q}.csv",
            "{date:%Y}{date:%m}",
            // Templates no name could ever date.
            "{date:%m%d}.csv",
            "{date:%H%M}.csv",
            "{date:%Y%d}.csv",
            "{date:%V}.csv",
            "{date:%G%m}.csv",
            "{date:%%Y}.csv",
        ] {
            assert!(FilePattern::parse(p).is_err(), "{p}");
        }
    }
}

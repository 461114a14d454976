//! File name patterns with a business-date template: `accounts_{date:%Y%m%d}.csv`.
//! Globs (`*`, `?`) match as usual; `{date:FORMAT}` matches the date written
//! with a strftime format and yields the business date of the file.

use chrono::NaiveDate;
use regex::Regex;

#[derive(Debug, thiserror::Error)]
#[error("pattern `{pattern}`: {message}")]
pub struct PatternError {
    pattern: String,
    message: String,
}

/// A compiled file name pattern.
#[derive(Debug, Clone)]
pub struct FilePattern {
    source: String,
    regex: Regex,
    date_format: Option<String>,
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
                date_format = Some(format.to_string());
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
    /// the pattern has a date template). A name whose date does not parse
    /// (`20241399`) does not match.
    pub fn matches(&self, name: &str) -> Option<Option<NaiveDate>> {
        let caps = self.regex.captures(name)?;
        match (&self.date_format, caps.name("date")) {
            (Some(format), Some(m)) => NaiveDate::parse_from_str(m.as_str(), format).ok().map(Some),
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
            'Y' => r"\d{4}",
            'y' | 'm' | 'd' | 'H' | 'M' | 'S' => r"\d{2}",
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
        ] {
            assert!(FilePattern::parse(p).is_err(), "{p}");
        }
    }
}

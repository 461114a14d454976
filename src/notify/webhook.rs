//! Webhooks: the event POSTed as JSON, with a Slack-compatible `text` field
//! and the event id as `Idempotency-Key`, so a repeat after a crash can be
//! told apart by the receiver.

use super::{Event, NotifierConfig, secret};

/// A URL dropsync can POST to.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(format!(
            "webhook `{}`: use an http:// or https:// URL",
            shown(url)
        ))
    }
}

/// `https://hooks.example:443`: a URL as messages show it. Webhook URLs
/// carry their secret in the path or query, so only the scheme, host and
/// port are ever shown.
pub(crate) fn shown(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // user:password@host: never the credentials.
    let host = host.rsplit('@').next().unwrap_or_default();
    if scheme.is_empty() {
        host.to_string()
    } else {
        format!("{scheme}://{host}")
    }
}

pub(super) fn send(notifier: &NotifierConfig, event: &Event) -> Result<(), String> {
    let url = match (
        &notifier.url,
        secret(
            notifier.url_env.as_deref(),
            notifier.url_file.as_ref(),
            "webhook URL",
        )?,
    ) {
        (Some(url), _) => url.clone(),
        (None, Some(url)) => url,
        (None, None) => return Err("no webhook URL configured".into()),
    };
    check_url(&url)?;
    let body = serde_json::json!({
        "text": event.text(),
        "event": event,
    });
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(notifier.timeout()))
        .http_status_as_error(false)
        .build()
        .into();
    let clean = |e: &dyn std::fmt::Display| e.to_string().replace(&url, &shown(&url));
    let response = agent
        .post(&url)
        .header("Idempotency-Key", &event.id)
        .header(
            "User-Agent",
            concat!("dropsync/", env!("CARGO_PKG_VERSION")),
        )
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .map_err(|e| format!("{}: {}", shown(&url), clean(&e)))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{} answered {status}", shown(&url)))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_are_shown_without_their_secret() {
        for (url, want) in [
            (
                "https://hooks.slack.com/services/T000/B000/XXXX",
                "https://hooks.slack.com",
            ),
            (
                "http://127.0.0.1:8080/hook?token=s3cret",
                "http://127.0.0.1:8080",
            ),
            ("https://user:pw@example.com/x", "https://example.com"),
        ] {
            assert_eq!(super::shown(url), want);
        }
    }
}

//! A webhook subscriber: the run's changes POSTed as JSON in pages of
//! bounded size. Each page carries the idempotency key of each change, and
//! one of its own (`EXECUTION_ID:FIRST-LAST`) as `Idempotency-Key`.

use super::{Changes, FeedEvent, SubscriberConfig};
use crate::notify::{Event, secret, shown};

pub(super) fn send(
    subscriber: &SubscriberConfig,
    changes: &Changes<'_>,
    event: &Event,
    cursor: i64,
) -> Result<(), String> {
    let url = match (
        &subscriber.url,
        secret(
            subscriber.url_env.as_deref(),
            subscriber.url_file.as_ref(),
            "webhook URL",
        )?,
    ) {
        (Some(url), _) => url.clone(),
        (None, Some(url)) => url,
        (None, None) => return Err("no webhook URL configured".into()),
    };
    crate::notify::check_url(&url)?;
    let mut headers = Vec::new();
    for (name, var) in &subscriber.headers_env {
        let value = std::env::var(var)
            .map_err(|_| format!("headers_env: environment variable {var} is not set"))?;
        headers.push((name.as_str(), value));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(subscriber.timeout()))
        .http_status_as_error(false)
        .build()
        .into();
    let body = |events: &[String], last: bool| {
        format!(
            "{{\"subscriber\":{},\"integration\":{},\"execution_id\":{},\"last_page\":{last},\"events\":[{}]}}",
            json_string(&subscriber.name),
            json_string(changes.integration),
            json_string(changes.execution_id),
            events.join(",")
        )
    };
    // What a request holds besides its changes counts toward page_bytes.
    let envelope = body(&[], false).len();
    let post = |page: &Page, last: bool| -> Result<(), String> {
        let body = body(&page.events, last);
        let key = format!(
            "{}:{}-{}",
            changes.execution_id, page.first_seq, page.last_seq
        );
        let mut request = agent
            .post(&url)
            .header("Idempotency-Key", &key)
            .header(
                "User-Agent",
                concat!("dropsync/", env!("CARGO_PKG_VERSION")),
            )
            .header("Content-Type", "application/json");
        for (name, value) in &headers {
            request = request.header(*name, value);
        }
        // The URL may hold a secret (so may the headers, which ureq's
        // errors do not show): only its scheme, host and port are told.
        let response = request.send(body).map_err(|e| {
            format!(
                "{}: {}",
                shown(&url),
                e.to_string().replace(&url, &shown(&url))
            )
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("{} answered {status}", shown(&url)));
        }
        // Accepted: a retry starts after this page.
        changes
            .store
            .advance_feed_cursor(&event.id, &subscriber.name, page.last_seq)
            .map_err(|e| e.to_string())
    };
    let mut page = Page::default();
    changes.for_each(cursor, |change| {
        let text = serde_json::to_string(&FeedEvent::new(change))
            .map_err(|e| format!("change {}: {e}", change.seq))?;
        // The body is the envelope, the changes and a comma between each two.
        if !page.events.is_empty() && envelope + page.bytes + text.len() > subscriber.page_bytes {
            post(&page, false)?;
            page = Page::default();
        }
        if page.events.is_empty() {
            page.first_seq = change.seq;
        }
        page.last_seq = change.seq;
        page.bytes += text.len() + 1;
        page.events.push(text);
        Ok(())
    })?;
    if !page.events.is_empty() {
        post(&page, true)?;
    }
    Ok(())
}

/// Changes gathered for one request, as JSON text.
#[derive(Default)]
struct Page {
    events: Vec<String>,
    /// The changes' bytes, with one separator each.
    bytes: usize,
    first_seq: i64,
    last_seq: i64,
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

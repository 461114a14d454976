//! The console's actions against the real binary (`dropsync web`) with a
//! real HTTP client: re-running a date (dry-run preview, then for real),
//! the upload form, and an execution's status while it is queued, running
//! and done.

use serde_json::Value;

use crate::common::{ACCOUNTS_HEADER, Workspace, six_accounts};
use crate::web_api::{Reply, WebConsole, free_port, web_config};

/// Day 2 of `six_accounts`: A2 grows to 25 seats, A6 is gone, A7 is new.
fn day_two() -> String {
    let mut s = ACCOUNTS_HEADER.to_string();
    for i in 1..=5 {
        let seats = if i == 2 { 25 } else { i * 10 };
        s.push_str(&format!(
            "A{i},,Account {i},parent,pro,{seats},2020-01-0{i}\n"
        ));
    }
    s.push_str("A7,,Account 7,parent,pro,70,2020-01-07\n");
    s
}

/// A console over a store that applied `six_accounts` as 2026-01-01, with
/// day two dropped and not yet synced.
fn day_two_waiting(port: u16, web_extra: &str) -> (Workspace, WebConsole) {
    let ws = Workspace::new(&web_config(port, web_extra));
    ws.drop_file("accounts_20260101.csv", six_accounts());
    ws.dropsync(&["run"]).code(0);
    ws.drop_file("accounts_20260102.csv", day_two());
    let web = WebConsole::start(&ws, port, &[]);
    (ws, web)
}

fn post_json(web: &WebConsole, path: &str, body: &str) -> Reply {
    web.post(
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

/// The field changes of the sampled change of `kind` to `key`, as
/// (field, old, new).
fn changes_of(file: &Value, kind: &str, key: &str) -> Vec<(String, Value, Value)> {
    let sample = file["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == kind && s["key"] == key)
        .unwrap_or_else(|| panic!("no {kind} of {key}: {file}"));
    sample["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["field"].as_str().unwrap().to_string(),
                f["old"].clone(),
                f["new"].clone(),
            )
        })
        .collect()
}

#[test]
fn a_rerun_previews_its_change_set_then_applies_it_when_confirmed() {
    let port = free_port();
    let (ws, web) = day_two_waiting(port, "");

    let preview = post_json(
        &web,
        "/api/integrations/accounts/rerun",
        r#"{"date": "2026-01-02", "dry_run": true}"#,
    );
    assert_eq!(preview.status, 200, "{preview:?}");
    let preview = preview.json();
    assert_eq!(preview["date"], "2026-01-02");
    assert_eq!(preview["dry_run"], true);
    let file = &preview["files"][0];
    assert_eq!(file["file"], "accounts_20260102.csv");
    assert_eq!(file["status"], "success");
    assert_eq!(file["counts"]["insert"], 1, "{preview}");
    assert_eq!(file["counts"]["update"], 1, "{preview}");
    assert_eq!(file["counts"]["delete"], 1, "{preview}");
    assert_eq!(file["counts"]["unchanged"], 4, "{preview}");
    assert_eq!(
        changes_of(file, "update", "A2"),
        vec![("Seats".to_string(), "20".into(), "25".into())]
    );
    assert!(
        changes_of(file, "insert", "A7").contains(&(
            "Name".into(),
            Value::Null,
            "Account 7".into()
        )),
        "{preview}"
    );
    assert!(
        changes_of(file, "delete", "A6").contains(&("Seats".into(), "60".into(), Value::Null)),
        "{preview}"
    );
    // Nothing was applied, nor recorded.
    assert_eq!(web.get("/api/runs").json()["total"], 1);

    let queued = post_json(
        &web,
        "/api/integrations/accounts/rerun",
        r#"{"date": "2026-01-02", "dry_run": false}"#,
    );
    assert_eq!(queued.status, 202, "{queued:?}");
    let id = queued.json()["execution_id"].as_str().unwrap().to_string();
    let run = web.wait_for(&format!("/api/runs/{id}"), |j| {
        j["run"]["status"] == "success"
    });
    assert_eq!(run["run"]["business_date"], "2026-01-02");
    assert_eq!(run["run"]["inserted"], 1);
    assert_eq!(run["run"]["updated"], 1);
    assert_eq!(run["run"]["deleted"], 1);

    // Run again, the same content is skipped unless forced, and the
    // preview says so.
    let again = post_json(
        &web,
        "/api/integrations/accounts/rerun",
        r#"{"date": "2026-01-02", "dry_run": true}"#,
    )
    .json();
    assert_eq!(again["files"][0]["status"], "skipped", "{again}");
    assert!(
        again["files"][0]["message"]
            .as_str()
            .unwrap()
            .contains("already applied"),
        "{again}"
    );
    drop(web);
    let accounts = ws
        .db()
        .rows("SELECT AccountID, Seats FROM accounts ORDER BY 1");
    assert_eq!(
        accounts.iter().map(|r| r.join(":")).collect::<Vec<_>>(),
        ["A1:10", "A2:25", "A3:30", "A4:40", "A5:50", "A7:70"]
    );
}

#[test]
fn a_rerun_of_a_malformed_date_or_a_date_without_a_file_says_so() {
    let port = free_port();
    let (_ws, web) = day_two_waiting(port, "");
    let path = "/api/integrations/accounts/rerun";
    let message = post_json(&web, path, r#"{"date": "2026-13-40", "dry_run": true}"#)
        .error(400, "invalid_date");
    assert!(message.contains("2026-13-40"), "{message}");
    let message = post_json(&web, path, r#"{"date": "2026-01-09", "dry_run": true}"#)
        .error(404, "no_file_for_date");
    assert!(message.contains("2026-01-09"), "{message}");
    post_json(&web, path, r#"{"dry_run": true}"#).error(400, "invalid_body");
    post_json(&web, path, "not json").error(400, "invalid_body");
    post_json(
        &web,
        "/api/integrations/crm/rerun",
        r#"{"date": "2026-01-02", "dry_run": true}"#,
    )
    .error(404, "integration_not_found");

    // Confirmed for a date without a file: the execution says why.
    let queued = post_json(&web, path, r#"{"date": "2026-01-09"}"#);
    assert_eq!(queued.status, 202, "{queued:?}");
    let id = queued.json()["execution_id"].as_str().unwrap().to_string();
    let status = web.wait_for(&format!("/api/runs/{id}"), |j| j["status"] == "error");
    assert!(
        status["message"].as_str().unwrap().contains("no file"),
        "{status}"
    );

    // The pages say it in words, never with a 500.
    let page = web.get("/integrations/accounts/rerun?date=tomorrow");
    assert_eq!(page.status, 400, "{page:?}");
    assert!(page.body.contains("is not a date"), "{}", page.body);
    let page = web.get("/integrations/accounts/rerun?date=2026-01-09");
    assert_eq!(page.status, 404, "{page:?}");
    assert!(
        page.body.contains("no file for the business date"),
        "{}",
        page.body
    );
    assert!(
        web.log().lines().all(|l| !l.contains("panicked")),
        "{}",
        web.log()
    );
}

#[test]
fn the_rerun_form_previews_on_a_page_and_its_button_applies_it() {
    let port = free_port();
    let (_ws, web) = day_two_waiting(port, "");
    let page = web.get("/integrations/accounts");
    assert!(
        page.body.contains(r#"<label for="rerun-date">"#),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains(r#"action="/integrations/accounts/rerun""#),
        "{}",
        page.body
    );

    let preview = web.get("/integrations/accounts/rerun?date=2026-01-02");
    assert_eq!(preview.status, 200, "{preview:?}");
    for shown in [
        "Confirm re-run",
        "Cancel",
        "Seats",
        "A2",
        "A7",
        "A6",
        "Nothing has been changed yet",
    ] {
        assert!(preview.body.contains(shown), "{shown}: {}", preview.body);
    }
    assert_eq!(web.get("/api/runs").json()["total"], 1);

    // Another site's page cannot press the button.
    web.post(
        "/integrations/accounts/rerun",
        &[
            ("Origin", "http://evil.example"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b"date=2026-01-02",
    )
    .error(403, "cross_site");
    let origin = web.base.clone();
    let pressed = web.post(
        "/integrations/accounts/rerun",
        &[
            ("Origin", &origin),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b"date=2026-01-02",
    );
    assert_eq!(pressed.status, 303, "{pressed:?}");
    let location = location(&pressed);
    let id = location.strip_prefix("/runs/").unwrap().to_string();
    web.wait_for(&format!("/api/runs/{id}"), |j| {
        j["run"]["status"] == "success"
    });
    let run_page = web.get(&location);
    assert_eq!(run_page.status, 200);
    assert!(
        run_page.body.contains("accounts_20260102.csv"),
        "{}",
        run_page.body
    );
}

fn location(reply: &Reply) -> String {
    reply
        .headers
        .iter()
        .find(|(k, _)| k == "location")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no location: {reply:?}"))
}

/// A multipart form with one file part, as a browser sends it.
fn multipart(file_name: &str, content: &[u8]) -> (String, Vec<u8>) {
    let boundary = "----dropsyncTestBoundary7MA4YWxkTrZu0gW";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: text/csv\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[test]
fn the_upload_form_streams_the_file_and_shows_its_execution() {
    let port = free_port();
    let ws = Workspace::new(&web_config(port, "max_upload_bytes = 4000"));
    let web = WebConsole::start(&ws, port, &[]);
    let page = web.get("/integrations/accounts");
    assert!(
        page.body.contains(r#"<label for="upload-file">"#),
        "{}",
        page.body
    );
    assert!(page.body.contains("Up to 3.9 KiB"), "{}", page.body);

    let origin = web.base.clone();
    let send = |name: &str, content: &[u8]| {
        let (content_type, body) = multipart(name, content);
        web.post(
            "/integrations/accounts/upload",
            &[
                ("Origin", origin.as_str()),
                ("Content-Type", content_type.as_str()),
            ],
            &body,
        )
    };
    let sent = send("accounts_20260101.csv", six_accounts().as_bytes());
    assert_eq!(sent.status, 303, "{sent:?}");
    let location = location(&sent);
    let id = location.strip_prefix("/runs/").unwrap().to_string();
    let run = web.wait_for(&format!("/api/runs/{id}"), |j| {
        j["run"]["status"] == "success"
    });
    assert_eq!(run["run"]["trigger"], "ingest");
    assert_eq!(run["run"]["input_rows"], 6);

    // Too large, empty, or named like a path: a page that says so.
    let big = send("accounts_20260102.csv", &vec![b'a'; 5000]);
    assert_eq!(big.status, 413, "{big:?}");
    assert!(big.body.contains("4000 bytes"), "{}", big.body);
    let empty = send("accounts_20260102.csv", b"");
    assert_eq!(empty.status, 400, "{empty:?}");
    assert!(empty.body.contains("empty"), "{}", empty.body);
    let path = send("../../accounts_20260102.csv", b"x");
    assert_eq!(path.status, 400, "{path:?}");
    assert!(path.body.contains("not a plain file name"), "{}", path.body);
    assert!(!ws.root.join("accounts_20260102.csv").exists());
    assert_eq!(web.get("/api/runs").json()["total"], 1);

    // Without the console's own origin, nothing is taken.
    let (content_type, body) = multipart("accounts_20260102.csv", six_accounts().as_bytes());
    web.post(
        "/integrations/accounts/upload",
        &[
            ("Origin", "http://evil.example"),
            ("Content-Type", content_type.as_str()),
        ],
        &body,
    )
    .error(403, "cross_site");
}

/// Reads `GET /api/events` on a thread of its own: each `run` event's data.
fn watch_events(web: &WebConsole) -> std::sync::mpsc::Receiver<Value> {
    use std::io::BufRead;
    let response = crate::web_api::agent()
        .get(format!("{}/api/events", web.base))
        .call()
        .expect("the event stream opens");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let reader = std::io::BufReader::new(response.into_body().into_reader());
        let mut event = String::new();
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if let Some(name) = line.strip_prefix("event:") {
                event = name.trim().to_string();
            } else if let Some(data) = line.strip_prefix("data:")
                && event == "run"
                && tx.send(serde_json::from_str(data.trim()).unwrap()).is_err()
            {
                return;
            }
        }
    });
    rx
}

#[test]
fn an_execution_tells_its_stage_while_it_runs_and_its_counts_when_done() {
    let port = free_port();
    let ws = Workspace::new(&web_config(port, ""));
    let web = WebConsole::start(&ws, port, &[]);
    let events = watch_events(&web);

    let accepted = web.post(
        "/api/integrations/accounts/files?name=accounts_20260101.csv",
        &[],
        six_accounts().as_bytes(),
    );
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let accepted = accepted.json();
    let id = accepted["execution_id"].as_str().unwrap().to_string();
    assert_eq!(accepted["status_url"], format!("/api/executions/{id}"));

    // Open pages hear every stage of the run, then how it ended.
    let mut stages = Vec::new();
    let finished = loop {
        let event = events
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("an event for the upload's run");
        assert_eq!(event["integration"], "accounts", "{event}");
        assert_eq!(event["execution_id"], id.as_str(), "{event}");
        match event["state"].as_str().unwrap() {
            "in_progress" => stages.push(event["stage"].as_str().unwrap().to_string()),
            "finished" => break event,
            other => panic!("{other}: {event}"),
        }
    };
    assert_eq!(stages, ["fetching", "validating", "diffing", "applying"]);
    assert_eq!(finished["status"], "success", "{finished}");
    assert_eq!(finished["counts"]["inserted"], 6, "{finished}");
    assert_eq!(finished["run_url"], format!("/runs/{id}"));

    // Scripts polling the execution get the same.
    let polled = web.get(&format!("/api/executions/{id}")).json();
    assert_eq!(polled["state"], "finished", "{polled}");
    assert_eq!(polled["status"], "success", "{polled}");
    assert_eq!(polled["counts"]["rows"], 6, "{polled}");
    assert_eq!(polled["file"], "accounts_20260101.csv", "{polled}");
    let message = web
        .get("/api/executions/no-such-execution")
        .error(404, "execution_not_found");
    assert!(message.contains("no-such-execution"), "{message}");

    // A re-run that finds no file ends as an error, with why.
    let queued = post_json(
        &web,
        "/api/integrations/accounts/rerun",
        r#"{"date": "2026-01-09"}"#,
    )
    .json();
    let id = queued["execution_id"].as_str().unwrap();
    let ended = web.wait_for(&format!("/api/executions/{id}"), |j| {
        j["state"] == "finished"
    });
    assert_eq!(ended["status"], "error", "{ended}");
    assert!(
        ended["message"].as_str().unwrap().contains("no file"),
        "{ended}"
    );

    // The card says how the run ended, and carries the hook the page's
    // script updates while a run is in progress.
    let overview = web.get("/");
    assert!(
        overview
            .body
            .contains(r#"data-live-integration="accounts" role="status">success<"#),
        "{}",
        overview.body
    );
}

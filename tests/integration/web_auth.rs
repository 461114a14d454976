//! Who may use the web console, against the real binary (`dropsync web`)
//! with a real HTTP client: the open loopback console, the token a console
//! on another address needs, the sign-in form and its session cookie,
//! read-only tokens, cross-site requests, and bad input answered with a
//! stable error code (JSON for the API, a page for browsers), never a 500.

use std::time::{Duration, Instant};

use crate::common::{Workspace, accounts_config};
use crate::web_api::{Reply, WebConsole, agent, free_port, web_config, with_rejected_rows};

const OPERATE: &str = "operate-t0ken-never-shown";
const READ: &str = "read-t0ken-never-shown";

/// A console with both tokens, over two runs (one with rejected rows).
fn guarded(extra: &str) -> (Workspace, WebConsole) {
    let port = free_port();
    let ws = with_rejected_rows(&web_config(
        port,
        &format!("token_env = \"CONSOLE_TOKEN\"\nread_token_env = \"CONSOLE_READ_TOKEN\"\n{extra}"),
    ));
    let web = WebConsole::start(
        &ws,
        port,
        &[("CONSOLE_TOKEN", OPERATE), ("CONSOLE_READ_TOKEN", READ)],
    );
    (ws, web)
}

fn post(web: &WebConsole, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut request = agent().post(format!("{}{path}", web.base));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Reply::from(request.send(body).expect("the console answers"))
}

fn header<'a>(reply: &'a Reply, name: &str) -> Vec<&'a str> {
    reply
        .headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Signs in with `token` through the form; the session cookie set.
fn sign_in(web: &WebConsole, token: &str) -> (Reply, String) {
    let reply = post(
        web,
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &format!("token={token}&next=%2Fintegrations%2Faccounts"),
    );
    let cookie = header(&reply, "set-cookie")
        .first()
        .map(|c| c.split(';').next().unwrap().to_string())
        .unwrap_or_default();
    (reply, cookie)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn a_loopback_console_without_a_token_is_open() {
    let port = free_port();
    let ws = with_rejected_rows(&web_config(port, ""));
    let web = WebConsole::start(&ws, port, &[]);
    assert_eq!(
        web.get("/api/integrations").json()[0]["integration"],
        "accounts"
    );
    let overview = web.get("/");
    assert_eq!(overview.status, 200, "{overview:?}");
    assert!(overview.body.contains("Sync now"), "{}", overview.body);
    assert!(!overview.body.contains("Sign out"), "{}", overview.body);
}

#[test]
fn another_address_without_a_token_is_refused_at_startup() {
    let port = free_port();
    let ws = Workspace::new(&format!(
        "{}\n[web]\nlisten = \"0.0.0.0:{port}\"\n",
        accounts_config("")
    ));
    ws.dropsync(&["web"]).code(2).stderr_has(&[
        "listen = \"0.0.0.0:",
        "is reachable from other machines",
        "set token_env or token_file",
    ]);
}

#[test]
fn the_api_wants_the_bearer_token_and_checks_it() {
    let (_ws, web) = guarded("");
    web.get("/api/integrations").error(401, "unauthorized");
    web.get_with("/api/runs", &[("Authorization", &bearer("wrong"))])
        .error(401, "unauthorized");
    // A token one character short, or with one more, is not the token.
    let short = &OPERATE[..OPERATE.len() - 1];
    web.get_with("/api/runs", &[("Authorization", &bearer(short))])
        .error(401, "unauthorized");
    let runs = web
        .get_with("/api/runs", &[("Authorization", &bearer(OPERATE))])
        .json();
    assert_eq!(runs["total"], 2);
    // A page without a session goes to the sign-in form, and comes back.
    let page = web.get("/runs/abc?q=x");
    assert_eq!(page.status, 303, "{page:?}");
    assert_eq!(
        header(&page, "location"),
        ["/login?next=%2Fruns%2Fabc%3Fq%3Dx"]
    );
    assert!(!web.log().contains(OPERATE), "{}", web.log());
}

#[test]
fn signing_in_sets_a_session_cookie_and_signing_out_clears_it() {
    let (_ws, web) = guarded("");
    let form = web.get("/login?next=%2Fintegrations%2Faccounts");
    assert_eq!(form.status, 200, "{form:?}");
    assert!(
        form.body
            .contains(r#"<label for="token">Access token</label>"#),
        "{}",
        form.body
    );
    assert!(form.body.contains(r#"type="password""#), "{}", form.body);

    // A wrong token: answered late, no cookie, the form again.
    let started = Instant::now();
    let (wrong, cookie) = sign_in(&web, "not-the-token");
    assert_eq!(wrong.status, 401, "{wrong:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(cookie.is_empty(), "{wrong:?}");
    assert!(
        wrong.body.contains("That token is not right"),
        "{}",
        wrong.body
    );

    let (right, cookie) = sign_in(&web, OPERATE);
    assert_eq!(right.status, 303, "{right:?}");
    assert_eq!(header(&right, "location"), ["/integrations/accounts"]);
    let set = header(&right, "set-cookie")[0];
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(attribute), "{attribute}: {set}");
    }
    // Served over plain HTTP with no https public_url: not Secure, or the
    // browser would never send it back.
    assert!(!set.contains("Secure"), "{set}");
    // The cookie is a random session id, never the token.
    let id = cookie.strip_prefix("dropsync_session=").unwrap();
    assert_eq!(id.len(), 64, "{cookie}");
    assert!(!set.contains(OPERATE), "{set}");
    let (_, other) = sign_in(&web, OPERATE);
    assert_ne!(cookie, other, "each sign-in has its own session");

    let page = web.get_with("/integrations/accounts", &[("Cookie", &cookie)]);
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("Sign out"), "{}", page.body);
    assert!(page.body.contains("Sync now"), "{}", page.body);
    // The session also opens the API, so the page's CSV link works.
    assert_eq!(
        web.get_with("/api/runs", &[("Cookie", &cookie)]).json()["total"],
        2
    );
    // Signed in already: the form sends the browser on.
    assert_eq!(web.get_with("/login", &[("Cookie", &cookie)]).status, 303);

    let out = post(&web, "/logout", &[("Cookie", &cookie)], "");
    assert_eq!(out.status, 303, "{out:?}");
    assert!(
        header(&out, "set-cookie")[0].contains("Max-Age=0"),
        "{out:?}"
    );
    assert_eq!(
        web.get_with("/", &[("Cookie", &cookie)]).status,
        303,
        "the session is over"
    );
    web.get_with("/api/runs", &[("Cookie", &cookie)])
        .error(401, "unauthorized");
    assert!(!web.log().contains(OPERATE), "{}", web.log());
    assert!(!web.log().contains("not-the-token"), "{}", web.log());
}

#[test]
fn behind_an_https_address_the_cookie_is_secure() {
    let (_ws, web) = guarded("public_url = \"https://dropsync.example.com\"\n");
    let (right, _) = sign_in(&web, OPERATE);
    assert_eq!(right.status, 303, "{right:?}");
    assert!(
        header(&right, "set-cookie")[0].contains("; Secure"),
        "{right:?}"
    );
}

#[test]
fn repeated_failed_sign_ins_must_wait() {
    let (_ws, web) = guarded("");
    for _ in 0..5 {
        assert_eq!(sign_in(&web, "guess").0.status, 401);
    }
    // Even the right token waits now: the address is locked out for a while.
    let (locked, cookie) = sign_in(&web, OPERATE);
    assert_eq!(locked.status, 429, "{locked:?}");
    assert!(cookie.is_empty());
    assert!(
        locked.body.contains("Too many failed sign-ins"),
        "{}",
        locked.body
    );
}

#[test]
fn a_read_only_token_sees_everything_and_changes_nothing() {
    let (ws, web) = guarded("");
    let read = [("Authorization", bearer(READ))];
    let read: Vec<(&str, &str)> = read.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let id = web.get_with("/api/runs?status=partial", &read).json()["runs"][0]["execution_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        web.get_with(&format!("/api/runs/{id}"), &read).json()["errors_total"],
        2
    );
    let csv = web.get_with(&format!("/api/runs/{id}/errors.csv"), &read);
    assert_eq!(csv.status, 200, "{csv:?}");

    let message = post(&web, "/api/integrations/accounts/sync", &read, "").error(403, "read_only");
    assert!(message.contains("read-only"), "{message}");
    post(
        &web,
        "/api/integrations/accounts/files?name=accounts_20260103.csv",
        &read,
        "A1,,x,parent,pro,1,2020-01-01\n",
    )
    .error(403, "read_only");
    let staged = std::fs::read_dir(ws.path("staging").join(".uploads"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(staged, 0, "a refused upload leaves nothing behind");

    // A read-only browser session: the pages show no button that would
    // change something, and the form's address refuses it anyway.
    let (_, cookie) = sign_in(&web, READ);
    let overview = web.get_with("/", &[("Cookie", &cookie)]);
    assert_eq!(overview.status, 200, "{overview:?}");
    assert!(!overview.body.contains("Sync now"), "{}", overview.body);
    assert!(overview.body.contains("read-only"), "{}", overview.body);
    let refused = post(
        &web,
        "/integrations/accounts/sync",
        &[("Cookie", &cookie)],
        "",
    );
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(refused.content_type.starts_with("text/html"), "{refused:?}");
    assert!(refused.body.contains("read-only"), "{}", refused.body);

    // The operating token may.
    let queued = post(
        &web,
        "/api/integrations/accounts/sync",
        &[("Authorization", &bearer(OPERATE))],
        "",
    );
    assert_eq!(queued.status, 202, "{queued:?}");
    assert!(!web.log().contains(READ), "{}", web.log());
}

#[test]
fn a_request_from_another_site_cannot_change_anything() {
    let (_ws, web) = guarded("");
    let (_, cookie) = sign_in(&web, OPERATE);
    // A browser's own request (same origin) goes through...
    let own = post(
        &web,
        "/integrations/accounts/sync",
        &[("Cookie", &cookie), ("Sec-Fetch-Site", "same-origin")],
        "",
    );
    assert_eq!(own.status, 303, "{own:?}");
    // ...one from another site's page does not, even with a session.
    post(
        &web,
        "/integrations/accounts/sync",
        &[("Cookie", &cookie), ("Sec-Fetch-Site", "cross-site")],
        "",
    )
    .error(403, "cross_site");
    post(
        &web,
        "/api/integrations/accounts/sync",
        &[
            ("Authorization", &bearer(OPERATE)),
            ("Origin", "https://evil.example"),
        ],
        "",
    )
    .error(403, "cross_site");
    // Nor can another site sign a browser in (login CSRF).
    post(
        &web,
        "/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
        &format!("token={OPERATE}"),
    )
    .error(403, "cross_site");
}

#[test]
fn bad_input_gets_a_stable_code_never_a_500() {
    let port = free_port();
    let ws = with_rejected_rows(&web_config(port, ""));
    let web = WebConsole::start(&ws, port, &[]);

    web.get("/api/runs?integration=nope")
        .error(404, "integration_not_found");
    web.post_sync_of("nope").error(404, "integration_not_found");
    web.get("/api/runs/0195c2d4-no-such-run")
        .error(404, "run_not_found");
    let message = web
        .get("/api/runs/run%3Bdrop%20table")
        .error(400, "invalid_run_id");
    assert!(message.contains("is not an execution id"), "{message}");
    web.get("/api/runs/%2E%2E/errors.csv")
        .error(400, "invalid_run_id");
    web.get("/api/runs?from=2026-02-30")
        .error(400, "invalid_date");
    web.get("/api/runs?to=soon").error(400, "invalid_date");
    web.get("/api/runs?limit=abc").error(400, "invalid_paging");
    web.get("/api/runs?limit=1001").error(400, "invalid_paging");
    web.get("/api/runs?offset=99999999999999999999999")
        .error(400, "invalid_paging");
    web.get("/api/runs?offset=18446744073709551615")
        .error(400, "invalid_paging");
    let id = web.get("/api/runs?status=partial").json()["runs"][0]["execution_id"]
        .as_str()
        .unwrap()
        .to_string();
    web.get(&format!("/api/runs/{id}?errors=0"))
        .error(400, "invalid_paging");
    web.get(&format!("/api/runs/{id}?errors_offset=-1"))
        .error(400, "invalid_paging");
    // A page deep past the end is an empty page, not an error.
    let past = web
        .get(&format!("/api/runs/{id}?errors_offset=1000000"))
        .json();
    assert_eq!(past["errors"].as_array().unwrap().len(), 0);
    assert_eq!(past["errors_total"], 2);
    // What axum would answer in plain text comes as JSON too.
    web.get("/api/runs?limit=%ZZ%").error(400, "invalid_paging");
    let wrong_method = post(&web, "/api/runs", &[], "");
    wrong_method.error(405, "method_not_allowed");

    // Browsers get a page that says what is wrong.
    for (path, status, says) in [
        ("/integrations/nope", 404, "no integration named `nope`"),
        ("/runs/no-such-run", 404, "no run has the execution id"),
        ("/runs/bad%20id", 400, "is not an execution id"),
        (
            "/integrations/accounts?from=2026-13-01",
            400,
            "is not a date",
        ),
        (
            "/integrations/accounts?offset=x",
            400,
            "is not a whole number",
        ),
        (
            &format!("/runs/{id}?errors=5000"),
            400,
            "between 1 and 1000",
        ),
    ] {
        let page = web.get(path);
        assert_eq!(page.status, status, "{path}: {page:?}");
        assert!(
            page.content_type.starts_with("text/html"),
            "{path}: {page:?}"
        );
        assert!(page.body.contains(says), "{path}: {}", page.body);
    }
    let log = web.log();
    assert!(!log.contains("panicked"), "{log}");
}

impl WebConsole {
    fn post_sync_of(&self, integration: &str) -> Reply {
        post(
            self,
            &format!("/api/integrations/{integration}/sync"),
            &[],
            "",
        )
    }
}

#[test]
fn rejected_rows_keep_their_labels_when_a_phone_stacks_the_table() {
    let port = free_port();
    let ws = with_rejected_rows(&web_config(port, ""));
    let web = WebConsole::start(&ws, port, &[]);
    let id = web.get("/api/runs?status=partial").json()["runs"][0]["execution_id"]
        .as_str()
        .unwrap()
        .to_string();
    let run = web.get(&format!("/runs/{id}"));
    for label in ["Line", "Key", "Field", "Message", "Row"] {
        assert!(
            run.body.contains(&format!(r#"data-label="{label}""#)),
            "{label}: {}",
            run.body
        );
    }
    let css = web.get("/assets/style.css").body;
    assert!(css.contains("content: attr(data-label)"), "{css}");
}

//! The web console's HTTP API against the real binary (`dropsync web`), with
//! a real HTTP client: the same numbers as `status`, `history` and `show`,
//! paging and filters, rejected rows as CSV, JSON errors with stable codes,
//! and the token a console reachable from other machines needs.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{BIN, Workspace, accounts_config, six_accounts};

/// A running `dropsync web`, stopped with SIGTERM when dropped.
pub struct WebConsole {
    child: Option<Child>,
    pub base: String,
    log: std::path::PathBuf,
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl WebConsole {
    /// Starts `dropsync web` on `port`, as the workspace's `[web]` says,
    /// and waits until it answers.
    pub fn start(ws: &Workspace, port: u16, env: &[(&str, &str)]) -> WebConsole {
        let log = ws.path("web.log");
        let child = Command::new(BIN)
            .arg("--config")
            .arg(ws.config_path())
            .arg("web")
            .current_dir(&ws.root)
            .env_remove("DROPSYNC_LOG")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut console = WebConsole {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = console.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("dropsync web exited {status}: {}", console.log());
            }
            assert!(Instant::now() < deadline, "no console: {}", console.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        console
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path`: the status, the content type and the body.
    pub fn get(&self, path: &str) -> Reply {
        self.get_with(path, &[])
    }

    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = agent().get(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Reply::from(request.call().expect("the console answers"))
    }
}

impl Drop for WebConsole {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A client that hands back every status instead of failing on 4xx.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl From<ureq::http::Response<ureq::Body>> for Reply {
    fn from(mut response: ureq::http::Response<ureq::Body>) -> Reply {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let content_type = header("content-type");
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        Reply {
            status: response.status().as_u16(),
            content_type,
            headers,
            body: response
                .body_mut()
                .with_config()
                .limit(1 << 30)
                .read_to_string()
                .unwrap(),
        }
    }
}

impl Reply {
    #[track_caller]
    pub fn json(&self) -> Value {
        assert!(
            self.content_type.starts_with("application/json"),
            "not JSON: {self:?}"
        );
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// Asserts a JSON error with this status and code; its message.
    #[track_caller]
    pub fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{self:?}");
        let json = self.json();
        assert_eq!(json["error"]["code"], code, "{self:?}");
        json["error"]["message"].as_str().unwrap().to_string()
    }
}

/// A config with the accounts integration and the console on `port`.
pub fn web_config(port: u16, web_extra: &str) -> String {
    format!(
        "{}\n[web]\nlisten = \"127.0.0.1:{port}\"\n{web_extra}\n",
        accounts_config("on_error = { policy = \"skip\", max_rows = 100, max_ratio = 0.9 }")
    )
}

/// Two runs: six accounts, then a day whose two bad rows are rejected, one
/// holding markup and one a spreadsheet formula.
pub fn with_rejected_rows(config: &str) -> Workspace {
    let ws = Workspace::new(config);
    ws.drop_file("accounts_20260101.csv", six_accounts());
    ws.dropsync(&["run"]).code(0);
    let mut day2 = six_accounts();
    day2.push_str("A7,,<script>alert(1)</script>,parent,pro,seven,2020-01-07\n");
    day2.push_str("=cmd|A8,,Eight,parent,pro,8,2020-01-08\n");
    ws.drop_file("accounts_20260102.csv", day2);
    ws.dropsync(&["run"]).code(3);
    ws
}

#[test]
fn api_reads_give_the_same_numbers_as_the_command_line() {
    let port = free_port();
    let ws = with_rejected_rows(&web_config(port, ""));
    let web = WebConsole::start(&ws, port, &[]);

    // The command line reaches the same process through its socket.
    let status = ws.dropsync(&["status", "--json"]).code(0).json();
    let cards = web.get("/api/integrations").json();
    assert_eq!(cards[0]["integration"], "accounts");
    assert_eq!(cards[0]["last_run"], status[0]["last_run"]);
    assert_eq!(cards[0]["source"], status[0]["source"]);

    let history = ws.dropsync(&["history", "--json"]).code(0).json();
    let page = web.get("/api/runs").json();
    assert_eq!(page["total"], 2);
    assert_eq!(page["runs"], history);

    let partial = &history[0];
    assert_eq!(partial["status"], "partial");
    let id = partial["execution_id"].as_str().unwrap();
    let show = ws.dropsync(&["show", id, "--json"]).code(0).json();
    let run = web.get(&format!("/api/runs/{id}")).json();
    assert_eq!(run["run"], show["run"]);
    assert_eq!(run["errors"], show["errors"]);
    assert_eq!(run["errors_total"], 2);
    let first = &run["errors"][0];
    assert_eq!(first["line"], 8);
    assert_eq!(first["key"], "A7");
    assert_eq!(first["field"], "Seats");
    assert!(first["raw"].as_str().unwrap().contains("<script>"), "{run}");

    // Filters and paging.
    let partial_only = web.get("/api/runs?status=partial").json();
    assert_eq!(partial_only["total"], 1);
    assert_eq!(partial_only["runs"][0]["execution_id"], id);
    let older = web.get("/api/runs?limit=1&offset=1").json();
    assert_eq!(older["runs"].as_array().unwrap().len(), 1);
    assert_eq!(older["runs"][0], history[1]);
    let today = chrono::Utc::now().date_naive();
    let tomorrow = today.succ_opt().unwrap();
    assert_eq!(
        web.get(&format!(
            "/api/runs?integration=accounts&from={today}&to={today}"
        ))
        .json()["total"],
        2
    );
    assert_eq!(
        web.get(&format!("/api/runs?from={tomorrow}")).json()["total"],
        0
    );
    let searched = web.get(&format!("/api/runs/{id}?q=CMD")).json();
    assert_eq!(searched["errors_total"], 1);
    assert_eq!(searched["errors"][0]["key"], "=cmd|A8");
    let second = web
        .get(&format!("/api/runs/{id}?errors=1&errors_offset=1"))
        .json();
    assert_eq!(second["errors"][0]["line"], 9);
}

#[test]
fn bad_requests_get_json_errors_with_stable_codes() {
    let port = free_port();
    let ws = with_rejected_rows(&web_config(port, ""));
    let web = WebConsole::start(&ws, port, &[]);

    let message = web.get("/api/runs/no-such-run").error(404, "run_not_found");
    assert!(message.contains("no-such-run"), "{message}");
    web.get("/api/runs/no-such-run/errors.csv")
        .error(404, "run_not_found");
    let message = web
        .get("/api/runs?integration=crm")
        .error(404, "integration_not_found");
    assert!(message.contains("known: accounts"), "{message}");
    let message = web
        .get("/api/runs?from=2026-13-01")
        .error(400, "invalid_date");
    assert!(
        message.contains("from: `2026-13-01` is not a date"),
        "{message}"
    );
    web.get("/api/runs?from=2026-02-01&to=2026-01-01")
        .error(400, "invalid_date");
    let message = web
        .get("/api/runs?status=done")
        .error(400, "invalid_status");
    assert!(message.contains("`done` is not a run status"), "{message}");
    web.get("/api/runs?limit=0").error(400, "invalid_paging");
    web.get("/api/runs?offset=-3").error(400, "invalid_paging");
    web.get("/api/nothing-here").error(404, "not_found");
    assert!(!web.log().contains("panicked"), "{}", web.log());
}

#[test]
fn rejected_rows_download_as_csv_with_formulas_neutralised() {
    let port = free_port();
    let ws = with_rejected_rows(&web_config(port, ""));
    let web = WebConsole::start(&ws, port, &[]);
    let id = web.get("/api/runs?status=partial").json()["runs"][0]["execution_id"]
        .as_str()
        .unwrap()
        .to_string();

    let csv = web.get(&format!("/api/runs/{id}/errors.csv"));
    assert_eq!(csv.status, 200, "{csv:?}");
    assert!(csv.content_type.starts_with("text/csv"), "{csv:?}");
    let disposition = csv
        .headers
        .iter()
        .find(|(k, _)| k == "content-disposition")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    assert!(disposition.contains("attachment"), "{csv:?}");
    let mut reader = csv::Reader::from_reader(csv.body.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        ["line", "key", "field", "message", "row"]
    );
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][0], "8");
    assert_eq!(rows[0][1], "A7");
    assert!(rows[0][4].contains("<script>alert(1)</script>"), "{rows:?}");
    // A spreadsheet opening the download must not run the formula.
    assert_eq!(rows[1][1], "'=cmd|A8");
    assert!(rows[1][4].starts_with("'=cmd|A8,"), "{rows:?}");
}

#[test]
fn a_console_reachable_from_other_machines_needs_a_token() {
    let port = free_port();
    let open = format!(
        "{}\n[web]\nlisten = \"0.0.0.0:{port}\"\n",
        accounts_config("")
    );
    let ws = Workspace::new(&open);
    let refused = ws.dropsync(&["web"]);
    refused.code(2).stderr_has(&[
        "is reachable from other machines",
        "token_env or token_file",
    ]);

    let guarded = format!(
        "{}\n[web]\nlisten = \"0.0.0.0:{port}\"\ntoken_env = \"CONSOLE_TOKEN\"\n",
        accounts_config("")
    );
    let ws = Workspace::new(&guarded);
    let missing = ws.dropsync(&["web"]);
    missing
        .code(1)
        .stderr_has(&["the environment variable CONSOLE_TOKEN is not set"]);

    let secret = "t0ken-that-must-stay-secret";
    let web = WebConsole::start(&ws, port, &[("CONSOLE_TOKEN", secret)]);
    let message = web.get("/api/integrations").error(401, "unauthorized");
    assert!(message.contains("Bearer"), "{message}");
    web.get_with("/api/integrations", &[("Authorization", "Bearer wrong")])
        .error(401, "unauthorized");
    let cards = web
        .get_with(
            "/api/integrations",
            &[("Authorization", &format!("Bearer {secret}"))],
        )
        .json();
    assert_eq!(cards[0]["integration"], "accounts");
    assert!(!web.log().contains(secret), "{}", web.log());
}

#[test]
fn pages_show_cards_history_and_rejected_rows_escaped() {
    let port = free_port();
    let ws = with_rejected_rows(&web_config(port, ""));
    let web = WebConsole::start(&ws, port, &[]);
    let id = web.get("/api/runs?status=partial").json()["runs"][0]["execution_id"]
        .as_str()
        .unwrap()
        .to_string();

    let overview = web.get("/");
    assert_eq!(overview.status, 200, "{overview:?}");
    assert!(
        overview.content_type.starts_with("text/html"),
        "{overview:?}"
    );
    for needle in [
        "accounts",
        "snapshot",
        "partial",
        "rejected",
        "/assets/style.css",
    ] {
        assert!(
            overview.body.contains(needle),
            "{needle}: {}",
            overview.body
        );
    }

    let history = web.get("/integrations/accounts?status=partial");
    assert_eq!(history.status, 200, "{history:?}");
    assert!(
        history.body.contains(&format!("/runs/{id}")),
        "{}",
        history.body
    );
    assert!(history.body.contains("1–1 of 1"), "{}", history.body);

    let run = web.get(&format!("/runs/{id}"));
    assert_eq!(run.status, 200, "{run:?}");
    // The rejected row's markup is shown as text, never run.
    assert!(!run.body.contains("<script>alert(1)"), "{}", run.body);
    assert!(
        run.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        run.body
    );
    assert!(
        run.body.contains(&format!("/api/runs/{id}/errors.csv")),
        "{}",
        run.body
    );
    let searched = web.get(&format!("/runs/{id}?q=cmd"));
    assert!(searched.body.contains("=cmd|A8"), "{}", searched.body);
    assert!(
        !searched.body.contains("&lt;script&gt;"),
        "{}",
        searched.body
    );

    let css = web.get("/assets/style.css");
    assert!(css.content_type.starts_with("text/css"), "{css:?}");

    // Bad input is a page that says what is wrong, never a bare error.
    let missing = web.get("/runs/no-such-run");
    assert_eq!(missing.status, 404);
    assert!(
        missing
            .body
            .contains("no run has the execution id `no-such-run`"),
        "{missing:?}"
    );
    let bad_date = web.get("/integrations/accounts?from=yesterday");
    assert_eq!(bad_date.status, 400);
    assert!(
        bad_date.body.contains("from: `yesterday` is not a date"),
        "{bad_date:?}"
    );
    let unknown = web.get("/integrations/crm");
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.body.contains("no integration named `crm`"),
        "{unknown:?}"
    );
    assert_eq!(web.get("/nothing").status, 404);
}

/// Headless Chromium (Debian's package, installed by scripts/test-servers).
fn chromium(args: &[&str], url: &str) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs (scripts/test-servers installs it)")
}

#[test]
fn pages_render_in_headless_chromium() {
    let port = free_port();
    let ws = with_rejected_rows(&web_config(port, ""));
    let web = WebConsole::start(&ws, port, &[]);
    let id = web.get("/api/runs?status=partial").json()["runs"][0]["execution_id"]
        .as_str()
        .unwrap()
        .to_string();
    let run_url = format!("{}/runs/{id}", web.base);

    // The browser's own DOM: the row's markup is text in a cell, not an element.
    let dom = chromium(&["--dump-dom"], &run_url);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{dom}"
    );
    assert!(!dom.contains("<script>alert(1)"), "{dom}");
    assert!(dom.contains("Download rejected rows as CSV"), "{dom}");

    // Screenshots of the main pages, at a laptop's and a phone's width, for
    // a person to look at: test-output/ in the checkout.
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test-output");
    std::fs::create_dir_all(&out).unwrap();
    let pages = [
        ("overview", format!("{}/", web.base)),
        ("integration", format!("{}/integrations/accounts", web.base)),
        ("run", run_url.clone()),
    ];
    for (name, url) in &pages {
        for (width, size) in [("laptop", "1280,900"), ("phone", "390,1100")] {
            let file = out.join(format!("{name}-{width}.png"));
            let _ = std::fs::remove_file(&file);
            let shot = chromium(
                &[
                    &format!("--window-size={size}"),
                    &format!("--screenshot={}", file.display()),
                ],
                url,
            );
            assert!(
                file.metadata().map(|m| m.len() > 1000).unwrap_or(false),
                "no screenshot of {url}: {}",
                String::from_utf8_lossy(&shot.stderr)
            );
        }
    }
}

impl WebConsole {
    /// POST `body` to `path` with these headers.
    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut request = agent().post(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Reply::from(request.send(body).expect("the console answers"))
    }

    /// Polls `GET path` until `done` holds for its JSON.
    #[track_caller]
    pub fn wait_for(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let json = self.get(path).json();
            if done(&json) {
                return json;
            }
            assert!(Instant::now() < deadline, "{path} never got there: {json}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn an_uploaded_file_is_ingested_and_its_run_polled_by_execution_id() {
    let port = free_port();
    let ws = Workspace::new(&web_config(port, "max_upload_bytes = 4000"));
    let web = WebConsole::start(&ws, port, &[]);

    let accepted = web.post(
        "/api/integrations/accounts/files?name=accounts_20260101.csv",
        &[],
        six_accounts().as_bytes(),
    );
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let id = accepted.json()["execution_id"]
        .as_str()
        .unwrap()
        .to_string();
    let run = web.wait_for(&format!("/api/runs/{id}"), |j| {
        j["run"]["status"] == "success"
    });
    assert_eq!(run["run"]["trigger"], "ingest");
    assert_eq!(run["run"]["business_date"], "2026-01-01");
    assert_eq!(run["run"]["input_rows"], 6);
    assert_eq!(run["run"]["file_name"], "accounts_20260101.csv");
    // The upload's own copy goes once the worker is done with it (just
    // after the run is recorded); the staged copy stays for replays.
    let uploads_empty = || {
        std::fs::read_dir(ws.path("staging/.uploads"))
            .map(|d| d.count() == 0)
            .unwrap_or(true)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !uploads_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(uploads_empty(), "the upload's own copy was left behind");

    // Bad uploads get a clear JSON answer, and nothing is queued.
    web.post("/api/integrations/accounts/files?name=a.csv", &[], b"")
        .error(400, "empty_upload");
    let message = web
        .post(
            "/api/integrations/accounts/files?name=../../etc/x.csv",
            &[],
            b"x",
        )
        .error(400, "invalid_file_name");
    assert!(message.contains("not a plain file name"), "{message}");
    web.post("/api/integrations/accounts/files", &[], b"x")
        .error(400, "invalid_file_name");
    let message = web
        .post(
            "/api/integrations/accounts/files?name=big.csv",
            &[],
            &vec![b'a'; 5000],
        )
        .error(413, "upload_too_large");
    assert!(message.contains("4000 bytes"), "{message}");
    web.post("/api/integrations/crm/files?name=a.csv", &[], b"x")
        .error(404, "integration_not_found");

    // A file that is not the dataset's CSV becomes a failed run saying why.
    let accepted = web.post(
        "/api/integrations/accounts/files?name=accounts_20260102.csv",
        &[],
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
    );
    let id = accepted.json()["execution_id"]
        .as_str()
        .unwrap()
        .to_string();
    let run = web.wait_for(&format!("/api/runs/{id}"), |j| {
        j["status"] == "error" || (j["run"]["status"] != "running" && !j["run"].is_null())
    });
    let said = run.to_string();
    assert!(
        run["run"]["status"] == "failed" || run["status"] == "error",
        "{said}"
    );
    assert!(
        web.log().lines().all(|l| !l.contains("panicked")),
        "{}",
        web.log()
    );
}

#[test]
fn sync_now_runs_the_integration_and_other_sites_cannot_trigger_it() {
    let port = free_port();
    let ws = Workspace::new(&web_config(port, ""));
    let web = WebConsole::start(&ws, port, &[]);
    ws.drop_file("accounts_20260101.csv", six_accounts());

    // A page of another site cannot make the browser trigger a run.
    web.post(
        "/api/integrations/accounts/sync",
        &[("Origin", "http://evil.example")],
        b"",
    )
    .error(403, "cross_site");
    web.post(
        "/api/integrations/accounts/sync",
        &[("Sec-Fetch-Site", "cross-site")],
        b"",
    )
    .error(403, "cross_site");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(web.get("/api/runs").json()["total"], 0);

    let accepted = web.post("/api/integrations/accounts/sync", &[], b"");
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let page = web.wait_for("/api/runs?integration=accounts", |j| {
        j["runs"][0]["status"] == "success"
    });
    assert_eq!(page["runs"][0]["trigger"], "manual");
    assert_eq!(page["runs"][0]["inserted"], 6);
    web.post("/api/integrations/crm/sync", &[], b"")
        .error(404, "integration_not_found");
}

#[test]
fn the_sync_now_button_queues_a_sync_and_returns_to_the_integration() {
    let port = free_port();
    let ws = Workspace::new(&web_config(port, ""));
    let web = WebConsole::start(&ws, port, &[]);
    ws.drop_file("accounts_20260101.csv", six_accounts());
    let overview = web.get("/");
    assert!(
        overview
            .body
            .contains(r#"action="/integrations/accounts/sync""#),
        "{}",
        overview.body
    );
    // As a browser submits the form: from the console's own origin.
    let origin = web.base.clone();
    let pressed = web.post("/integrations/accounts/sync", &[("Origin", &origin)], b"");
    assert_eq!(pressed.status, 303, "{pressed:?}");
    assert!(
        pressed
            .headers
            .iter()
            .any(|(k, v)| k == "location" && v == "/integrations/accounts"),
        "{pressed:?}"
    );
    web.wait_for("/api/runs", |j| j["runs"][0]["status"] == "success");
    let page = web.get("/integrations/accounts");
    assert!(page.body.contains("accounts_20260101.csv"), "{}", page.body);
}

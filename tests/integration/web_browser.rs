//! The console in a real browser: headless Chromium (Debian's `chromium`)
//! driven through `chromedriver` (Debian's `chromium-driver`) over
//! WebDriver, against the real binary. It loads the overview, opens a run
//! and sees a rejected row holding markup shown as text, downloads the
//! rejected rows, uploads a file through the form while another tab watches
//! the card go from in progress to success without a reload, presses "Sync
//! now" and previews a re-run. Screenshots of the main pages are saved
//! under `test-output/` to be looked at.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::common::ACCOUNTS_HEADER;
use crate::web_api::{WebConsole, free_port, web_config, with_rejected_rows};

/// A `chromedriver` on a port of its own, stopped when dropped.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Chromedriver {
    fn start() -> Chromedriver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; scripts/test-servers installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Chromedriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where screenshots go: `test-output/` in the repository (ignored by git).
fn test_output() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-output");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn browser(driver: &Chromedriver, downloads: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1000"],
            "prefs": {
                "download.default_directory": downloads.display().to_string(),
                "download.prompt_for_download": false,
            },
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

async fn screenshot(client: &Client, name: &str) {
    // Whole page, not only the window: set the window to the page's height.
    let height = client
        .execute("return document.documentElement.scrollHeight", vec![])
        .await
        .unwrap()
        .as_u64()
        .unwrap_or(1000);
    client
        .set_window_size(1280, height.clamp(600, 4000) as u32)
        .await
        .unwrap();
    let png = client.screenshot().await.unwrap();
    std::fs::write(test_output().join(name), png).unwrap();
    client.set_window_size(1280, 1000).await.unwrap();
}

/// Polls `check` until it gives a value, for up to a minute.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text of the first element matching `css`, waiting for it to appear
/// (a page a click navigated to may still be loading on a busy machine).
async fn text_of(client: &Client, css: &str) -> String {
    text_when(client, css, |_| true).await
}

/// The text of the first element matching `css` once `ready` finds it the
/// one wanted. Until a click's navigation completes, the page before it
/// still answers, and an element found there goes stale before its text
/// is read: both are waited out.
async fn text_when(client: &Client, css: &str, ready: impl Fn(&str) -> bool) -> String {
    eventually(css, async || {
        let element = client.find(Locator::Css(css)).await.ok()?;
        let text = element.text().await.ok()?;
        ready(&text).then_some(text)
    })
    .await
}

/// A snapshot of the six accounts with A1's seats set.
fn day(seats_of_a1: u32) -> String {
    let mut s = ACCOUNTS_HEADER.to_string();
    for i in 1..=6 {
        let seats = if i == 1 { seats_of_a1 } else { i * 10 };
        s.push_str(&format!(
            "A{i},,Account {i},parent,pro,{seats},2020-01-0{i}\n"
        ));
    }
    s
}

#[test]
fn the_console_works_in_headless_chromium() {
    let port = free_port();
    let ws = with_rejected_rows(&web_config(port, ""));
    let web = WebConsole::start(&ws, port, &[]);
    let driver = Chromedriver::start();
    let downloads = ws.path("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = browser(&driver, &downloads).await;
        let base = web.base.clone();

        // The overview: the card, its last run partial.
        client.goto(&format!("{base}/")).await.unwrap();
        assert_eq!(text_of(&client, "article.card h2").await, "accounts");
        assert_eq!(text_of(&client, "[data-live-integration=accounts]").await, "partial");
        screenshot(&client, "overview.png").await;

        // The run: a rejected row holding markup, shown as text, not run.
        client.find(Locator::LinkText("Open this run")).await.unwrap().click().await.unwrap();
        let rows = text_of(&client, "table.errors").await;
        assert!(rows.contains("<script>alert(1)</script>"), "{rows}");
        let scripts = client
            .execute("return document.querySelectorAll('main script').length", vec![])
            .await
            .unwrap();
        assert_eq!(scripts, json!(0));
        screenshot(&client, "run.png").await;

        // Its rejected rows, downloaded as CSV.
        client
            .find(Locator::LinkText("Download rejected rows as CSV"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let csv = eventually("the CSV downloaded", async || {
            let entry = std::fs::read_dir(&downloads).ok()?.flatten().find(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("rejected-rows-") && name.ends_with(".csv")
            })?;
            std::fs::read_to_string(entry.path()).ok().filter(|s| s.ends_with('\n'))
        })
        .await;
        assert!(csv.starts_with("line,key,field,message,row\n"), "{csv}");
        assert!(csv.contains("<script>alert(1)</script>"), "{csv}");
        assert!(csv.contains("'=cmd|A8"), "formula neutralised: {csv}");

        // The integration page, watched in one tab while another uploads.
        client.goto(&format!("{base}/integrations/accounts")).await.unwrap();
        screenshot(&client, "integration.png").await;
        let watcher = client.window().await.unwrap();
        client
            .execute(
                "window.notReloaded = true; window.seen = [];
                 var badge = () => document.querySelector('[data-live-integration=accounts]').textContent;
                 new MutationObserver(() => { var t = badge(); if (window.seen[window.seen.length - 1] !== t) window.seen.push(t); })
                   .observe(document.querySelector('main'), { subtree: true, childList: true, characterData: true });",
                vec![],
            )
            .await
            .unwrap();
        // Wait for the event stream to be open before anything happens.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let uploader = client.new_window(true).await.unwrap();
        client.switch_to_window(uploader.handle).await.unwrap();
        client.goto(&format!("{base}/integrations/accounts")).await.unwrap();
        let upload = ws.write("to-upload/accounts_20260103.csv", day(15));
        client
            .find(Locator::Css("#upload-file"))
            .await
            .unwrap()
            .send_keys(&upload.display().to_string())
            .await
            .unwrap();
        client
            .find(Locator::Css("form[action$='/upload'] button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        // The upload's own page: its run, once done.
        eventually("the uploaded file's run page shows success", async || {
            let badge = client.find(Locator::Css("main .heading .badge")).await.ok()?;
            (badge.text().await.ok()? == "success").then_some(())
        })
        .await;
        let url = client.current_url().await.unwrap();
        assert!(url.path().starts_with("/runs/"), "{url}");
        client.close_window().await.unwrap();
        client.switch_to_window(watcher).await.unwrap();
        let seen = eventually("the watching tab shows success", async || {
            let seen = client.execute("return window.seen", vec![]).await.ok()?;
            let texts: Vec<String> = serde_json::from_value(seen).ok()?;
            (texts.last().map(String::as_str) == Some("success")).then_some(texts)
        })
        .await;
        assert!(
            seen.iter().any(|t| t.starts_with("in progress")),
            "the card never said in progress: {seen:?}"
        );
        let still = client.execute("return window.notReloaded === true", vec![]).await.unwrap();
        assert_eq!(still, json!(true), "the page was reloaded");
        let history = text_of(&client, "#history").await;
        assert!(history.contains("accounts_20260103.csv"), "{history}");

        // Sync now: a file dropped at the source is picked up.
        ws.drop_file("accounts_20260104.csv", day(16));
        client
            .find(Locator::Css("form[action$='/sync'] button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        eventually("the synced file shows in the history", async || {
            let history = client.find(Locator::Css("#history")).await.ok()?.text().await.ok()?;
            history.contains("accounts_20260104.csv").then_some(())
        })
        .await;

        // Re-run an older date, forced: the preview shows what it would
        // roll back, field by field; then back without changing anything.
        client
            .execute(
                "document.getElementById('rerun-date').value = '2026-01-01';
                 document.getElementById('rerun-force').checked = true;",
                vec![],
            )
            .await
            .unwrap();
        client
            .find(Locator::Css("form[action$='/rerun'] button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let preview = text_when(&client, "main", |t| t.contains("Confirm re-run")).await;
        assert!(preview.contains("Re-run 2026-01-01"), "{preview}");
        assert!(preview.contains("Confirm re-run"), "{preview}");
        let changes = text_of(&client, "table.changes").await;
        assert!(changes.contains("A1") && changes.contains("Seats"), "{changes}");
        assert!(changes.contains("16") && changes.contains("10"), "{changes}");
        screenshot(&client, "preview.png").await;
        client.find(Locator::LinkText("Cancel")).await.unwrap().click().await.unwrap();
        assert_eq!(
            client.current_url().await.unwrap().path(),
            "/integrations/accounts"
        );
        client.close().await.unwrap();
    });
    assert!(
        web.log().lines().all(|l| !l.contains("panicked")),
        "{}",
        web.log()
    );
}

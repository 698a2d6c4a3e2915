//! A real browser for the dashboard's tests: Debian's chromium, driven through its
//! chromium-driver (WebDriver) with fantoccini over plain HTTP on loopback.

use std::net::TcpListener;
use std::process::Child;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use super::*;

/// chromedriver on a free port and a headless chromium session through it; both end when
/// dropped.
pub(super) struct Browser {
    driver: Child,
    client: Option<Client>,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub(super) async fn start() -> Option<Browser> {
        let (chromium, driver) = ("/usr/bin/chromium", "/usr/bin/chromedriver");
        if !Path::new(chromium).exists() || !Path::new(driver).exists() {
            return peers::missing_peer(
                "Debian's chromium and chromium-driver (scripts/peers.sh browser)",
            );
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest_ok(&status).await.is_none() {
            assert!(Instant::now() < deadline, "chromedriver did not answer on {url}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        // The flags this machine needs (no network beyond loopback, no sandbox as root).
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1280,900".to_owned(),
            // A name that resolves to this machine, as a rebinding DNS server would make it.
            "--host-resolver-rules=MAP rebind.example 127.0.0.1".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "unhandledPromptBehavior": "ignore",
        });
        let Value::Object(capabilities) = capabilities else { unreachable!() };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&url)
            .await
            .expect("a chromium session through chromedriver");
        Some(Browser { driver, client: Some(client), _profile: profile })
    }

    pub(super) fn client(&self) -> &Client {
        self.client.as_ref().expect("open")
    }

    pub(super) async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.close().await;
        }
    }

    /// The page's visible text.
    pub(super) async fn text(&self) -> String {
        self.client().find(Locator::Css("body")).await.unwrap().text().await.unwrap()
    }

    /// Clicks `button` and waits until the page it leads to has replaced this one.
    pub(super) async fn submit(&self, button: fantoccini::elements::Element) {
        let old = self.client().find(Locator::Css("html")).await.unwrap();
        button.click().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while old.tag_name().await.is_ok() {
            assert!(Instant::now() < deadline, "the click did not lead to a new page");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ready = "return document.readyState";
        while self.client().execute(ready, vec![]).await.ok() != Some(json!("complete")) {
            assert!(Instant::now() < deadline, "the new page did not finish loading");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.no_dialog().await;
    }

    /// Goes to `url` and checks that no dialog opened (a script of the page's data ran).
    pub(super) async fn visit(&self, url: &str) {
        self.client().goto(url).await.unwrap();
        self.no_dialog().await;
    }

    pub(super) async fn no_dialog(&self) {
        if let Ok(text) = self.client().get_alert_text().await {
            panic!("a dialog opened on {:?}: {text:?}", self.client().current_url().await);
        }
    }

    /// Keeps a screenshot as `target/screenshots/<name>.png`.
    pub(super) async fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let png = self.client().screenshot().await.unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

async fn reqwest_ok(url: &str) -> Option<()> {
    let response = steadfast::reqwest::get(url).await.ok()?;
    response.status().is_success().then_some(())
}

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

//! A real browser for the dashboard's tests: Debian's headless Chromium,
//! driven through its chromedriver (WebDriver) with `fantoccini`, behind a
//! blocking interface like the rest of these fixtures.
//!
//! Each [`Chrome`] is its own chromedriver on a free loopback port and its
//! own empty profile, so two people can be signed in at once. Chromium
//! runs with `--no-sandbox` (the tests run as root) and without background
//! networking (this machine's network is closed).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

pub struct Chrome {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// Whether this machine can run the browser tests (scripts/deps.sh
/// installs both).
pub fn available() -> bool {
    Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists()
}

impl Chrome {
    /// A browser window of `width` x `height` CSS pixels.
    pub fn start(width: u32, height: u32) -> Chrome {
        let port = crate::connectd::free_port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let profile = tempfile::tempdir().expect("profile");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let attempt = runtime.block_on(
                ClientBuilder::new(HttpConnector::new())
                    .capabilities(capabilities.clone())
                    .connect(&url),
            );
            match attempt {
                Ok(client) => break client,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("chromedriver on {url} did not start a session: {e}"),
            }
        };
        Chrome {
            runtime,
            client: Some(client),
            driver,
            _profile: profile,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("a session")
    }

    pub fn goto(&self, url: &str) {
        self.runtime
            .block_on(self.client().goto(url))
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    pub fn url(&self) -> String {
        self.runtime
            .block_on(self.client().current_url())
            .expect("url")
            .to_string()
    }

    /// The page's HTML as the browser has it now.
    pub fn source(&self) -> String {
        self.runtime
            .block_on(self.client().source())
            .expect("source")
    }

    /// Types `text` into the field `css` names (after clearing it).
    pub fn fill(&self, css: &str, text: &str) {
        self.runtime.block_on(async {
            let field = self
                .client()
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("no {css}: {e}"));
            field.clear().await.expect("clear");
            field.send_keys(text).await.expect("type");
        });
    }

    /// Puts the file at `path` into the file input `css` names (as
    /// choosing it in the file picker would).
    pub fn choose_file(&self, css: &str, path: &Path) {
        self.runtime.block_on(async {
            self.client()
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("no {css}: {e}"))
                .send_keys(&path.display().to_string())
                .await
                .unwrap_or_else(|e| panic!("choose {} in {css}: {e}", path.display()));
        });
    }

    pub fn click(&self, css: &str) {
        self.runtime.block_on(async {
            self.client()
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("no {css}: {e}"))
                .click()
                .await
                .unwrap_or_else(|e| panic!("click {css}: {e}"));
        });
    }

    /// Chooses the option with `value` in the select `css` names.
    pub fn choose(&self, css: &str, value: &str) {
        self.runtime.block_on(async {
            self.client()
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("no {css}: {e}"))
                .select_by_value(value)
                .await
                .unwrap_or_else(|e| panic!("choose {value} in {css}: {e}"));
        });
    }

    /// Whether the element `css` names is enabled (`None`: there is none).
    pub fn enabled(&self, css: &str) -> Option<bool> {
        self.runtime.block_on(async {
            let element = self.client().find(Locator::Css(css)).await.ok()?;
            element.is_enabled().await.ok()
        })
    }

    /// Waits (at most 10 s) until the page's HTML contains `text`.
    pub fn wait_for_text(&self, text: &str) -> String {
        self.wait_for_text_within(text, Duration::from_secs(10))
    }

    /// Waits (at most `within`) until the page's HTML contains `text`.
    pub fn wait_for_text_within(&self, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let source = self.source();
            if source.contains(text) {
                return source;
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} never appeared at {}:\n{source}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn resize(&self, width: u32, height: u32) {
        self.runtime
            .block_on(self.client().set_window_size(width, height))
            .expect("resize");
    }

    /// A PNG of the window, written to `path`.
    pub fn screenshot(&self, path: &Path) {
        let png = self
            .runtime
            .block_on(self.client().screenshot())
            .expect("screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("mkdir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(client.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

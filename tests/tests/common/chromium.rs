//! A Chromium session for the browser tests: headless Debian chromium
//! driven through chromedriver (fantoccini), its own profile each. Shared
//! by the test files that `mod common;` it.

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tests::browser::ChromeDriver as Driver;

/// How long a page gets to show what a test waits for.
pub const WAIT: Duration = Duration::from_secs(30);

/// One browser session (its own profile: its own localStorage and IndexedDB).
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
}

impl Browser {
    pub async fn open(driver: &Driver, width: u32, height: u32) -> Self {
        Self::open_with(driver, width, height, &[]).await
    }

    /// With extra chromium flags (`--force-dark-mode`: the system prefers dark).
    pub async fn open_with(driver: &Driver, width: u32, height: u32, flags: &[&str]) -> Self {
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--disable-extensions".into(),
            format!("--window-size={width},{height}"),
        ];
        args.extend(flags.iter().map(|f| (*f).to_owned()));
        let mut options = json!({ "args": args });
        if let Some(bin) = &driver.chromium {
            options["binary"] = json!(bin.to_string_lossy());
        }
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), options);
        let client = tests::wait::retry("a chromium session", 3, || {
            let (caps, url) = (caps.clone(), driver.url.clone());
            async move {
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&url)
                    .await
            }
        })
        .await;
        Self { client }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigating");
    }

    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or(Value::Null)
    }

    /// Polls `script` until it returns something other than null/false.
    pub async fn until(&self, what: &str, script: &str) -> Value {
        self.until_within(what, script, WAIT).await
    }

    /// [`Browser::until`], waiting at most `wait`.
    pub async fn until_within(&self, what: &str, script: &str, wait: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let v = self.js(script).await;
            if !v.is_null() && v != Value::Bool(false) {
                return v;
            }
            if tokio::time::Instant::now() >= deadline {
                let page = self.js("return document.body.innerText").await;
                self.shot("failure").await;
                panic!(
                    "timed out after {wait:?} waiting for {what}; the page shows:\n{}",
                    page.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn type_in(&self, css: &str, text: &str) {
        let el = self.client.find(Locator::Css(css)).await.expect(css);
        el.send_keys(text).await.expect("typing");
    }

    pub async fn click(&self, css: &str) {
        self.until(
            &format!("{css} to be clickable"),
            &format!(
                "const e = document.querySelector({css:?}); return !!e && e.offsetParent !== null;"
            ),
        )
        .await;
        self.client
            .find(Locator::Css(css))
            .await
            .expect(css)
            .click()
            .await
            .expect("click");
    }

    /// Presses a key (WebDriver key codes: `\u{E004}` Tab, `\u{E013}` Up,
    /// `\u{E015}` Down) in the element that has the focus.
    pub async fn press(&self, key: &str) {
        let el = self
            .client
            .active_element()
            .await
            .expect("the focused element");
        el.send_keys(key).await.expect("a key press");
    }

    /// The focused element's id, or its `data-key` (messages, their actions).
    pub async fn focused(&self) -> Value {
        self.js("const e = document.activeElement; return e ? (e.id || e.dataset.key || e.tagName) : null;")
            .await
    }

    /// Saves a PNG under target/web-screenshots/.
    pub async fn shot(&self, name: &str) {
        let dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
            .join("web-screenshots");
        let _ = std::fs::create_dir_all(&dir);
        if let Ok(png) = self.client.screenshot().await {
            let _ = std::fs::write(dir.join(format!("{name}.png")), png);
        }
    }

    /// Clicks, from a script, the element `css` once it exists (message
    /// actions only show on hover or focus).
    pub async fn click_js(&self, css: &str) {
        self.until(
            &format!("{css} to click"),
            &format!("const e = document.querySelector({css:?}); if (e) e.click(); return !!e;"),
        )
        .await;
    }

    /// Ends the session.
    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

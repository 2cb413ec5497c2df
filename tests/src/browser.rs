//! Real browsers for the browser tests: Debian's chromium through its
//! chromedriver (the web app and the lab page), and finding Firefox ESR
//! (Web Push). Nothing is downloaded: a browser that is not installed
//! skips its test with a notice, except in CI (`CI` set), where that is a
//! failure.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::node::free_port;

/// The first of `names` found on `PATH`, else the first of `extra` that
/// exists.
pub fn find_in_path(names: &[&str], extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    extra.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// A chromedriver process on a free port, stopped on drop.
pub struct ChromeDriver {
    child: Child,
    /// Its WebDriver endpoint.
    pub url: String,
    /// The chromium binary it should drive.
    pub chromium: Option<PathBuf>,
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts chromedriver, or says why not: `None` (with a notice) when the
/// browser is not installed outside CI; a panic in CI.
pub async fn chromedriver() -> Option<ChromeDriver> {
    let driver = find_in_path(&["chromedriver"], &["/usr/lib/chromium/chromedriver"]);
    let chromium = find_in_path(
        &["chromium", "chromium-browser"],
        &["/usr/lib/chromium/chromium"],
    );
    let Some(driver) = driver.filter(|_| chromium.is_some()) else {
        if std::env::var_os("CI").is_some() {
            panic!("chromium and chromedriver are required in CI (apt-get install chromium chromium-driver)");
        }
        eprintln!("NOTICE: skipping the browser test: chromium or chromedriver is not installed (apt-get install chromium chromium-driver)");
        return None;
    };
    // A port found free can be taken by another test's process before
    // chromedriver binds it; chromedriver then exits, and that process may
    // answer the status request in its place. So the answer must be
    // chromedriver's own, and a driver that exited starts again elsewhere.
    let mut why = String::new();
    for _ in 0..DRIVER_STARTS {
        let port = free_port();
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning chromedriver");
        let mut started = ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            chromium: chromium.clone(),
        };
        match started.ready().await {
            Ok(()) => return Some(started),
            Err(e) => {
                eprintln!("chromedriver on port {port}: {e}; starting another");
                why = e;
            }
        }
    }
    panic!("chromedriver did not start {DRIVER_STARTS} times; the last: {why}");
}

/// Attempts at starting chromedriver on a free port.
const DRIVER_STARTS: usize = 3;

impl ChromeDriver {
    /// Waits until this driver answers its status request as a ready
    /// WebDriver; an error if it exits first or does not within 30 s.
    async fn ready(&mut self) -> Result<(), String> {
        let http = reqwest::Client::new();
        let status = format!("{}/status", self.url);
        let answered = async {
            loop {
                if let Ok(Some(exit)) = self.child.try_wait() {
                    return Err(format!("it exited ({exit})"));
                }
                if let Ok(answer) = http.get(&status).send().await {
                    let body: serde_json::Value = answer.json().await.unwrap_or_default();
                    if body["value"]["ready"] == serde_json::Value::Bool(true) {
                        return Ok(());
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), answered)
            .await
            .unwrap_or_else(|_| Err("no ready answer within 30 s".into()))
    }
}

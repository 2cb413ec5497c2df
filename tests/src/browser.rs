//! Real browsers for the browser tests: Debian's chromium through its
//! chromedriver (the web app and the lab page), and finding Firefox ESR
//! (Web Push). Nothing is downloaded: a browser that is not installed
//! skips its test with a notice, except in CI (`CI` set), where that is a
//! failure.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::node::free_port;
use crate::wait::until;

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
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning chromedriver");
    let driver = ChromeDriver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        chromium,
    };
    let http = reqwest::Client::new();
    let status = format!("{}/status", driver.url);
    until("chromedriver to answer", Duration::from_secs(30), || {
        let http = http.clone();
        let status = status.clone();
        async move { http.get(&status).send().await.ok().map(|_| ()) }
    })
    .await;
    Some(driver)
}

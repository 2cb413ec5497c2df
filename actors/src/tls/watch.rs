//! Picks up rotated certificates: on SIGHUP at once, otherwise by noticing
//! that the files changed.

use std::sync::Arc;
use std::time::Duration;

use super::Identity;

/// Reloads `identities` whenever their files change (checked every
/// `every`) and on every SIGHUP, until `shutdown` fires. A reload that
/// fails keeps the identity in force and is logged.
pub async fn watch(
    identities: Vec<Arc<Identity>>,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    if identities.is_empty() {
        return;
    }
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!(error = %e, "TLS: no SIGHUP handler; reloading on file changes only");
            None
        }
    };
    let mut ticker = tokio::time::interval(every.max(Duration::from_millis(100)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let force = tokio::select! {
            _ = ticker.tick() => false,
            Some(()) = async {
                match hangups.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
            _ = shutdown.changed() => return,
        };
        for identity in &identities {
            let cert = identity.files().cert.display().to_string();
            match identity.reload(force) {
                Ok(true) => tracing::info!(%cert, "TLS: certificate reloaded"),
                Ok(false) => {}
                Err(e) => tracing::warn!(%cert, error = %e,
                    "TLS: reloading the certificate failed; keeping the one in force"),
            }
        }
    }
}

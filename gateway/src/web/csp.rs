//! The page's Content-Security-Policy.

use crate::AppState;

/// Nothing but the node's own origin, except connections (WebSocket and
/// API calls) to the cluster's live gateways (the app fails over to them). No inline script
/// or style, no frames, no plugins. If the leases cannot be read the policy
/// is simply `'self'` only.
pub(crate) async fn policy(state: &AppState) -> String {
    let mut connect = String::from("'self'");
    if let Ok(gateways) = crate::http::cluster::live_gateways(state).await {
        for g in gateways {
            if let Some(origin) = g.ws_url.strip_suffix("/ws") {
                connect.push(' ');
                connect.push_str(origin);
            }
            connect.push(' ');
            connect.push_str(&g.url);
        }
    }
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src {connect}; worker-src 'self'; manifest-src 'self'; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

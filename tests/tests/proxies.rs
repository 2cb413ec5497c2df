//! Trusted reverse proxies (issue #28), end to end against a real `parley`
//! process: behind a proxy listed in `trusted_proxies`, the per-address
//! registration throttle counts the address the proxy forwards for
//! (`X-Forwarded-For` or `Forwarded`); from any other peer the same
//! headers are ignored and the socket's address counts.
//!
//! The test client connects from 127.0.0.1 and plays the proxy itself,
//! setting the headers a proxy would. Each test starts its own one-node
//! cluster with a registration burst of 2 per address.

use serde_json::{json, Value};
use tests::node::TestCluster;

/// Two registrations per address, then one a minute (none within a test).
const THROTTLE: &str = "registrations_per_address_per_minute = 1\nregistration_burst = 2\n";

/// A one-node cluster with `[gateway]` settings `gateway` and the
/// registration throttle above.
async fn node(gateway: &str) -> TestCluster {
    TestCluster::start_with_config(1, &format!("[gateway]\n{THROTTLE}{gateway}\n")).await
}

/// Registers `name` with `headers` added; returns the status and body.
async fn register(cluster: &TestCluster, name: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(cluster.nodes[0].url("/api/register"))
        .json(&json!({"name": name, "password": "correct horse"}));
    for (header, value) in headers {
        req = req.header(*header, *value);
    }
    let resp = req.send().await.expect("HTTP request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Asserts that registering `name` with `headers` gets `status` (and a
/// `rate_limited` error when it is 429).
async fn expect(cluster: &TestCluster, name: &str, headers: &[(&str, &str)], status: u16) {
    let (got, body) = register(cluster, name, headers).await;
    assert_eq!(got, status, "register {name} with {headers:?}: {body}");
    if status == 429 {
        assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let cluster = node("trusted_proxies = [\"127.0.0.1/32\"]").await;
    let first = [("x-forwarded-for", "203.0.113.1")];
    expect(&cluster, "alice", &first, 201).await;
    expect(&cluster, "bob", &first, 201).await;
    expect(&cluster, "carol", &first, 429).await;
    // Another client behind the same proxy is untouched, however the
    // proxy names it: appended to a chain, or in RFC 7239's header.
    expect(
        &cluster,
        "carol",
        &[("x-forwarded-for", "198.51.100.9, 203.0.113.2")],
        201,
    )
    .await;
    let ipv6 = [("forwarded", "for=\"[2001:db8::1]:4711\";proto=https")];
    expect(&cluster, "dave", &ipv6, 201).await;
    expect(&cluster, "erin", &ipv6, 201).await;
    expect(&cluster, "frank", &ipv6, 429).await;
    // The first client is still over its budget, whatever it claims to
    // the left of what the proxy appended.
    expect(
        &cluster,
        "frank",
        &[("x-forwarded-for", "192.0.2.77, 203.0.113.1")],
        429,
    )
    .await;
    // The proxy's own requests (no header) have their own budget too.
    expect(&cluster, "frank", &[], 201).await;
}

#[tokio::test]
async fn without_trusted_proxies_forwarding_headers_buy_nothing() {
    let cluster = node("").await;
    expect(
        &cluster,
        "alice",
        &[("x-forwarded-for", "203.0.113.1")],
        201,
    )
    .await;
    expect(&cluster, "bob", &[("x-forwarded-for", "203.0.113.2")], 201).await;
    // Spoofed headers of either kind share the socket's bucket.
    expect(
        &cluster,
        "carol",
        &[("x-forwarded-for", "203.0.113.3")],
        429,
    )
    .await;
    expect(
        &cluster,
        "carol",
        &[("forwarded", "for=\"[2001:db8::1]:4711\"")],
        429,
    )
    .await;
    expect(&cluster, "carol", &[], 429).await;
}

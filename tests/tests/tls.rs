//! Mutual TLS between real node processes: nodes join only with a
//! certificate from the cluster's CA, nothing crosses between them in
//! clear, certificates rotate without a restart, and a node refuses a
//! plaintext transport on a non-loopback address.
//!
//! Certificates come from `parley certs`, the documented command (the
//! expired one with `--days -1`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tests::client::{Api, Ws};
use tests::node::{free_port, parley_bin, Node, Timing};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const T: Duration = Duration::from_secs(20);

/// Runs `parley certs` in `dir` for `names` (valid for 127.0.0.1).
fn certs(dir: &Path, names: &[&str], extra: &[&str]) {
    let mut cmd = Command::new(parley_bin());
    cmd.arg("certs")
        .arg("--dir")
        .arg(dir)
        .args(["--host", "127.0.0.1"]);
    for name in names {
        cmd.args(["--name", name]);
    }
    let out = cmd.args(extra).output().expect("running parley certs");
    assert!(
        out.status.success(),
        "parley certs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A node configuration file turning on mutual TLS with `name`'s
/// certificate from `certs` and the CA in `ca_dir`.
fn tls_config(dir: &Path, file: &str, certs: &Path, name: &str, ca_dir: &Path) -> PathBuf {
    let path = dir.join(file);
    let toml = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\nca = {:?}\nreload_secs = 1\n",
        certs.join(format!("{name}.pem")),
        certs.join(format!("{name}.key")),
        ca_dir.join("ca.pem"),
    );
    std::fs::write(&path, toml).expect("config file");
    path
}

/// A loopback TCP relay to `target`: every byte that passes, both ways,
/// is recorded.
async fn relay(target: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay bind");
    let addr = listener.local_addr().expect("relay addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(target).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pipe(cr, sw, record.clone()));
            tokio::spawn(pipe(sr, cw, record.clone()));
        }
    });
    (addr, seen)
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    record: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        record.lock().expect("record").extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Three nodes, each reached by its peers through a recording relay:
/// returns the nodes and what the relays saw.
async fn three_nodes(dir: &Path, tls: bool) -> (Vec<Node>, Vec<Arc<Mutex<Vec<u8>>>>) {
    let certs_dir = dir.join("certs");
    if tls {
        certs(&certs_dir, &["n1", "n2", "n3"], &[]);
    }
    let cookie = format!("tls-test-cookie-{}", free_port());
    let mut nodes = Vec::new();
    let mut seen = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let mut node = Node::new(name, dir, &cookie, Timing::default());
        // Peers dial the advertised address: the relay in front of it.
        let (via, record) = relay(node.cluster_addr).await;
        node = node.env("PARLEY_ADVERTISE_ADDR", &via.to_string());
        if tls {
            let config = tls_config(dir, &format!("{name}.toml"), &certs_dir, name, &certs_dir);
            node = node.env("PARLEY_CONFIG", &config.to_string_lossy());
        }
        node.start().await;
        nodes.push(node);
        seen.push(record);
    }
    for node in &nodes {
        wait_peers(node, 2.0).await;
    }
    (nodes, seen)
}

/// Waits until `node` has `want` authenticated peer connections.
async fn wait_peers(node: &Node, want: f64) {
    tests::wait::until(
        &format!("{} to connect to {want} peers", node.name),
        T,
        || async move { (node.metric("parley_peers_connected").await? == want).then_some(()) },
    )
    .await;
}

/// Sends a message from a user on n1 to one on n3 and waits for it.
async fn deliver_across(nodes: &[Node], body: &str) {
    let api1 = Api::new(nodes[0].http);
    let api3 = Api::new(nodes[2].http);
    let alice = api1.user(&format!("alice{}", free_port())).await;
    let bob = api3.user(&format!("bob{}", free_port())).await;
    let mut a = Ws::connect(&nodes[0].ws_url(&alice.token))
        .await
        .expect("alice connects");
    let b = Ws::connect(&nodes[2].ws_url(&bob.token))
        .await
        .expect("bob connects");
    a.wait_for("hello", T, |f| f["type"] == "hello").await;
    b.wait_for("hello", T, |f| f["type"] == "hello").await;
    let (conv, _) = a.send_direct(&bob, "m1", body).await;
    b.wait_for("the message", T, |f| {
        f["type"] == "message" && f["conv_id"] == conv && f["body"] == body
    })
    .await;
}

#[tokio::test]
async fn three_nodes_join_over_mutual_tls_and_nothing_crosses_in_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (nodes, seen) = three_nodes(dir.path(), true).await;
    let body = "a-secret-only-alice-and-bob-may-read";
    deliver_across(&nodes, body).await;
    let relayed: usize = seen.iter().map(|s| s.lock().expect("record").len()).sum();
    assert!(
        relayed > 1000,
        "the relays carried the cluster's traffic ({relayed} bytes)"
    );
    for record in &seen {
        let bytes = record.lock().expect("record");
        assert!(
            !contains(&bytes, body.as_bytes()),
            "the body crossed between nodes in clear"
        );
        assert!(
            !contains(&bytes, b"tls-test-cookie"),
            "the cookie crossed in clear"
        );
    }
}

/// The control of the test above: without TLS the relays do see the body,
/// so the assertion there can fail.
#[tokio::test]
async fn without_tls_the_relay_sees_the_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (nodes, seen) = three_nodes(dir.path(), false).await;
    let body = "a-plaintext-body-the-relay-can-read";
    deliver_across(&nodes, body).await;
    assert!(
        seen.iter()
            .any(|s| contains(&s.lock().expect("record"), body.as_bytes())),
        "a plaintext transport carries the body in clear"
    );
}

#[tokio::test]
async fn foreign_and_expired_certificates_cannot_join_and_a_rotation_lets_a_node_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ours, theirs) = (dir.path().join("ours"), dir.path().join("theirs"));
    certs(&ours, &["n1", "n3"], &[]);
    certs(&theirs, &["n2"], &[]);
    // n3's certificate, from our CA, ended a day ago.
    certs(&ours, &["n3"], &["--days", "-1"]);
    let cookie = format!("tls-test-cookie-{}", free_port());
    let node = |name: &str, certs: &Path| {
        let config = tls_config(dir.path(), &format!("{name}.toml"), certs, name, certs);
        Node::new(name, dir.path(), &cookie, Timing::default())
            .env("PARLEY_CONFIG", &config.to_string_lossy())
    };
    let mut n1 = node("n1", &ours);
    n1.start().await;
    // n2 holds another CA's certificate (and trusts only that CA).
    let mut n2 = node("n2", &theirs);
    n2.start().await;
    let mut n3 = node("n3", &ours);
    n3.start().await;

    // Refused on both sides of each attempt, and said so in the logs: n1
    // names the foreign CA (refusing n2's certificate, or told so by n2)
    // and the expired certificate of n3.
    tests::wait::until("both sides to log the refusals", T, || async {
        let (l1, l2, l3) = (n1.log_text(), n2.log_text(), n3.log_text());
        let refused = |log: &str| log.contains("certificate refused");
        let foreign = l1.contains("UnknownIssuer") || l1.contains("UnknownCA");
        let expired = l1.contains("certificate expired");
        (foreign && expired && refused(&l2) && refused(&l3)).then_some(())
    })
    .await;
    for n in [&n1, &n2, &n3] {
        assert_eq!(
            n.metric("parley_peers_connected").await,
            Some(0.0),
            "{}",
            n.name
        );
    }

    // Rotation without a restart: n2 gets a certificate and the CA of
    // ours, n3 a fresh one; both files are swapped in place.
    let fresh = dir.path().join("fresh");
    std::fs::create_dir_all(&fresh).expect("dir");
    std::fs::copy(ours.join("ca.key"), fresh.join("ca.key")).expect("copy ca key");
    certs(&fresh, &["n2", "n3"], &[]);
    for name in ["n2", "n3"] {
        for ext in ["pem", "key"] {
            let target = if name == "n2" { &theirs } else { &ours };
            let tmp = target.join(format!("{name}.{ext}.new"));
            std::fs::copy(fresh.join(format!("{name}.{ext}")), &tmp).expect("copy");
            std::fs::rename(&tmp, target.join(format!("{name}.{ext}"))).expect("swap");
        }
    }
    let tmp = theirs.join("ca.pem.new");
    std::fs::copy(ours.join("ca.pem"), &tmp).expect("copy ca");
    std::fs::rename(&tmp, theirs.join("ca.pem")).expect("swap ca");
    for n in [&n1, &n2, &n3] {
        wait_peers(n, 2.0).await;
    }
    assert!(n2.log_text().contains("certificate reloaded"));
    assert!(n3.log_text().contains("certificate reloaded"));
}

#[tokio::test]
async fn a_wss_client_sends_and_receives_over_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs_dir = dir.path().join("certs");
    certs(&certs_dir, &["gateway"], &[]);
    let ca = certs_dir.join("ca.pem");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ngateway_cert = {:?}\ngateway_key = {:?}\n",
            certs_dir.join("gateway.pem"),
            certs_dir.join("gateway.key")
        ),
    )
    .expect("config");
    let cookie = format!("tls-test-cookie-{}", free_port());
    let mut node = Node::new("n1", dir.path(), &cookie, Timing::default())
        .env("PARLEY_CONFIG", &config.to_string_lossy())
        .https(&ca);
    node.start().await;

    let api = Api::https(node.http, &ca);
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let mut a = Ws::connect_tls(&node.ws_url(&alice.token), &ca)
        .await
        .expect("alice connects over WSS");
    let b = Ws::connect_tls(&node.ws_url(&bob.token), &ca)
        .await
        .expect("bob connects over WSS");
    a.wait_for("hello", T, |f| f["type"] == "hello").await;
    b.wait_for("hello", T, |f| f["type"] == "hello").await;
    let (conv, _) = a.send_direct(&bob, "m1", "over wss").await;
    b.wait_for("the message", T, |f| {
        f["type"] == "message" && f["conv_id"] == conv && f["body"] == "over wss"
    })
    .await;

    // Browsers are told to stay on HTTPS, and the cluster's gateway list
    // sends them to https URLs.
    let response = node
        .http_client()
        .get(node.url("/api/cluster/gateways"))
        .send()
        .await
        .expect("gateways");
    assert_eq!(
        response
            .headers()
            .get("strict-transport-security")
            .and_then(|v| v.to_str().ok()),
        Some("max-age=31536000")
    );
    let list: serde_json::Value = response.json().await.expect("gateway list");
    let gateway = &list["gateways"][0];
    assert!(
        gateway["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://")),
        "{list}"
    );
    assert!(
        gateway["ws_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("wss://")),
        "{list}"
    );

    // Plain HTTP on the TLS port gets no answer it could read, and a
    // client that does not trust the CA is refused.
    let plain = reqwest::get(format!("http://{}/healthz", node.http)).await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
    let untrusting = reqwest::get(node.url("/healthz")).await;
    assert!(
        untrusting.is_err(),
        "a certificate from an unknown CA is refused"
    );
}

#[tokio::test]
async fn a_plaintext_transport_on_a_public_address_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(parley_bin())
        .env_clear()
        .env("PARLEY_NODE_NAME", "n1")
        .env("PARLEY_CLUSTER_ADDR", format!("0.0.0.0:{}", free_port()))
        .env("PARLEY_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("PARLEY_DATA_DIR", dir.path())
        .output()
        .expect("running parley");
    assert!(
        !out.status.success(),
        "a plaintext public transport must not start"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("insecure_cluster") && stderr.contains("[tls]"),
        "the refusal says what to do: {stderr}"
    );
}

/// FoundationDB's own TLS: a server that accepts only TLS connections from
/// certificates of its CA, and a node configured through FoundationDB's
/// `FDB_TLS_*` variables that stores and delivers through it. Runs in the
/// FoundationDB suite (`PARLEY_TEST_STORE=fdb`).
#[tokio::test]
async fn a_node_speaks_tls_to_foundationdb() {
    if !matches!(
        tests::store::TestStore::from_env(),
        tests::store::TestStore::Fdb { .. }
    ) {
        eprintln!("NOTICE: FoundationDB over TLS runs in the FoundationDB suite: skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let certs_dir = dir.path().join("certs");
    certs(&certs_dir, &["fdb", "n1"], &[]);
    let files = |name: &str| tests::fdb::FdbTls {
        cert: certs_dir.join(format!("{name}.pem")),
        key: certs_dir.join(format!("{name}.key")),
        ca: certs_dir.join("ca.pem"),
    };
    let addr = format!("127.0.0.1:{}", free_port());
    let fdb = tests::fdb::LocalFdb::start(None, &addr, Some(&files("fdb"))).await;
    let cluster_file = std::fs::read_to_string(&fdb.cluster_file).expect("cluster file");
    assert!(cluster_file.trim_end().ends_with(":tls"), "{cluster_file}");

    let cookie = format!("tls-test-cookie-{}", free_port());
    let mut node = Node::new("n1", dir.path(), &cookie, Timing::default())
        .env(
            "PARLEY_FDB_CLUSTER_FILE",
            &fdb.cluster_file.to_string_lossy(),
        )
        .env("PARLEY_FDB_KEY_PREFIX", &format!("tls{}", free_port()));
    for (k, v) in files("n1").env() {
        node = node.env(k, &v);
    }
    node.start().await;
    let api = Api::new(node.http);
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let mut a = Ws::connect(&node.ws_url(&alice.token))
        .await
        .expect("alice");
    let b = Ws::connect(&node.ws_url(&bob.token)).await.expect("bob");
    a.wait_for("hello", T, |f| f["type"] == "hello").await;
    b.wait_for("hello", T, |f| f["type"] == "hello").await;
    let (conv, seq) = a.send_direct(&bob, "m1", "stored over tls").await;
    b.wait_for("the message", T, |f| {
        f["type"] == "message" && f["seq"] == seq
    })
    .await;
    let (status, history) = api
        .call(
            "GET",
            &format!("/api/conversations/{conv}/messages"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{history}");
    assert!(history.to_string().contains("stored over tls"), "{history}");
    assert!(
        node.log_text().contains("\"foundationdb\""),
        "the node stored in FoundationDB"
    );
}

//! The admin API against real node processes: only admins get in (a user
//! named in `admin_users`, or the bearer of `admin_token`), the cluster
//! view shows the nodes and where conversations run, and the event stream
//! reports activations, sessions and a killed node. A node never exposes
//! the lab's process controls.

use std::time::Duration;

use serde_json::{json, Value};
use tests::client::{Api, Ws};
use tests::node::{TestCluster, Timing};

const T: Duration = Duration::from_secs(20);
const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

/// Two nodes with `root` as admin user and [`ADMIN_TOKEN`].
async fn cluster() -> (TestCluster, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("admin.toml");
    std::fs::write(&path, "[gateway]\nadmin_users = [\"root\"]\n").expect("config");
    let path = path.to_string_lossy().into_owned();
    let cluster = TestCluster::start_with(
        2,
        Timing::default(),
        &[
            ("PARLEY_CONFIG", &path),
            ("PARLEY_ADMIN_TOKEN", ADMIN_TOKEN),
        ],
    )
    .await;
    (cluster, dir)
}

async fn view(api: &Api, token: &str) -> Value {
    let (status, body) = api
        .call("GET", "/api/admin/cluster", Some(token), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn only_admins_see_the_cluster() {
    let (cluster, _dir) = cluster().await;
    let api = Api::new(cluster.nodes[0].http);
    let alice = api.user("alice").await;
    let root = api.user("root").await;

    let (status, body) = api.call("GET", "/api/admin/cluster", None, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, body) = api
        .call("GET", "/api/admin/cluster", Some(&alice.token), None)
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, _) = api
        .call(
            "GET",
            &format!("/api/admin/cluster?token={ADMIN_TOKEN}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 401, "REST routes take no token in the URL");
    let (status, _) = api
        .call(
            "GET",
            "/api/admin/cluster",
            Some("not-the-admin-token"),
            None,
        )
        .await;
    assert_eq!(status, 401);
    let refused = Ws::connect(&format!(
        "ws://{}/api/admin/events?token={}",
        cluster.nodes[0].http, alice.token
    ))
    .await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("403")),
        "a non-admin's event stream is refused: {:?}",
        refused.err()
    );

    for token in [root.token.as_str(), ADMIN_TOKEN] {
        let body = view(&api, token).await;
        assert_eq!(body["node"], "n1");
        let names: Vec<&str> = body["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .filter_map(|n| n["name"].as_str())
            .collect();
        assert_eq!(names, ["n1", "n2"], "{body}");
        assert!(
            body["nodes"]
                .as_array()
                .expect("nodes")
                .iter()
                .all(|n| n["state"] == "live"),
            "{body}"
        );
        assert_eq!(body["serving_nodes"], json!(["n1", "n2"]));
    }
}

#[tokio::test]
async fn the_view_and_the_events_follow_the_cluster() {
    let (mut cluster, _dir) = cluster().await;
    let api = Api::new(cluster.nodes[0].http);
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let conv = api.direct(&alice, &bob).await;
    let home = actors::placement::conversation_home(conv, ["n1", "n2"])
        .expect("a home")
        .to_owned();
    let (home_i, other_i) = if home == "n1" { (0, 1) } else { (1, 0) };

    let events = Ws::connect(&format!(
        "ws://{}/api/admin/events?token={ADMIN_TOKEN}",
        cluster.nodes[home_i].http
    ))
    .await
    .expect("the admin's event stream");
    let snapshot = events
        .wait_for("snapshot", T, |f| f["type"] == "snapshot")
        .await;
    assert_eq!(snapshot["cluster"]["node"], home.as_str());

    // A message activates the conversation on its home node.
    let mut a = Ws::connect(&cluster.nodes[home_i].ws_url(&alice.token))
        .await
        .expect("alice connects");
    a.wait_for("hello", T, |f| f["type"] == "hello").await;
    events
        .wait_for("session_opened", T, |f| {
            f["type"] == "event" && f["kind"] == "session_opened" && f["user_id"] == alice.id
        })
        .await;
    a.send(json!({"type": "send", "conv_id": conv, "client_msg_id": "m1", "body": "hello"}))
        .await;
    a.wait_for("sent", T, |f| f["type"] == "sent").await;
    let activated = events
        .wait_for("conversation_activated", T, |f| {
            f["kind"] == "conversation_activated" && f["conv_id"] == conv
        })
        .await;
    assert_eq!(activated["node"], home.as_str());
    let epoch = activated["epoch"].as_u64().expect("epoch");
    assert!(epoch >= 1);

    let home_api = Api::new(cluster.nodes[home_i].http);
    let body = view(&home_api, ADMIN_TOKEN).await;
    let row = body["conversations"]
        .as_array()
        .expect("conversations")
        .iter()
        .find(|c| c["conv_id"] == conv)
        .cloned()
        .unwrap_or_else(|| panic!("conversation {conv} runs on its home: {body}"));
    assert_eq!(row["epoch"], epoch);
    assert_eq!(row["last_seq"], 1);
    assert_eq!(row["home"], home.as_str());
    assert!(body["sessions"].as_u64().is_some_and(|n| n >= 1), "{body}");
    assert!(body["metrics"]["messages_committed"].as_u64() >= Some(1));

    // The other node dies: its loss is reported, and the view says dead.
    let lost = cluster.nodes[other_i].name.clone();
    cluster.nodes[other_i].kill();
    events
        .wait_for("node_lost", T, |f| {
            f["kind"] == "node_lost" && f["peer"] == lost.as_str()
        })
        .await;
    let body = tests::wait::until("the killed node's lease expires", T, || {
        let api = &home_api;
        let lost = lost.clone();
        async move {
            let body = view(api, ADMIN_TOKEN).await;
            let dead = body["nodes"]
                .as_array()?
                .iter()
                .any(|n| n["name"] == lost.as_str() && n["state"] == "dead");
            dead.then_some(body)
        }
    })
    .await;
    assert_eq!(body["serving_nodes"], json!([home]));
    a.close().await;
    events
        .wait_for("session_closed", T, |f| f["kind"] == "session_closed")
        .await;
}

#[tokio::test]
async fn a_node_never_exposes_process_controls() {
    let (cluster, _dir) = cluster().await;
    let api = Api::new(cluster.nodes[0].http);
    let root = api.user("root").await;
    for (method, path) in [
        ("GET", "/api/lab/state"),
        ("POST", "/api/lab/nodes/n2/kill"),
        ("POST", "/api/lab/nodes/n2/pause"),
        ("POST", "/api/lab/traffic"),
    ] {
        for token in [root.token.as_str(), ADMIN_TOKEN] {
            let (status, body) = api.call(method, path, Some(token), None).await;
            assert_eq!(status, 404, "{method} {path}: {body}");
        }
    }
    assert!(cluster.nodes[1].is_running(), "nothing was signalled");
}

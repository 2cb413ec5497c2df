//! Faults that leave a node's sockets open but its answers gone (issue
//! #29): a hung home node, a node cut from its peers. Whatever happens, a
//! send is answered within a bounded time (`sent`, or an `error` the client
//! can act on), and nothing acknowledged is lost or stored twice.

use std::time::Duration;

use serde_json::{json, Value};
use tests::client::{Api, User, Ws};
use tests::node::{TestCluster, Timing};

const T: Duration = Duration::from_secs(20);

async fn connect(cluster: &TestCluster, node: usize, user: &User) -> Ws {
    let ws = Ws::connect(&cluster.nodes[node].ws_url(&user.token))
        .await
        .expect("connect");
    ws.wait_for("hello", T, |f| f["type"] == "hello").await;
    ws
}

/// The answer (`sent` or `error`) naming `id`, the `nth` one (from 0).
async fn answer(ws: &Ws, id: &str, nth: usize) -> Value {
    let all = ws
        .wait_for_n(&format!("answer {nth} to {id}"), nth + 1, T, |f| {
            (f["type"] == "sent" && f["client_msg_id"] == id)
                || (f["type"] == "error" && f["ref"] == id)
        })
        .await;
    all[nth].clone()
}

/// The seqs at which `id` is stored in the conversation, read over HTTP.
async fn stored_at(api: &Api, user: &User, conv: u64, id: &str) -> Vec<u64> {
    let page = api
        .call(
            "GET",
            &format!("/api/conversations/{conv}/messages?limit=100"),
            Some(&user.token),
            None,
        )
        .await;
    assert_eq!(page.0, 200, "{page:?}");
    page.1["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["client_msg_id"] == id)
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect()
}

/// A send whose conversation lives on a hung node (`SIGSTOP`, its lease
/// long enough that nobody takes over) gets `unavailable` once the answer
/// timeout passes, instead of nothing for as long as the node hangs. Once
/// the node is back, the resend gets the one stored copy.
#[tokio::test]
async fn a_send_to_a_hung_home_node_is_answered_in_bounded_time() {
    let config = tempfile::tempdir().expect("tempdir");
    let path = config.path().join("parley.toml");
    std::fs::write(&path, "[gateway]\nanswer_timeout_secs = 2\n").expect("config");
    let path = path.to_string_lossy().into_owned();
    // A lease far longer than the test: the hung node is never presumed
    // dead, so only the answer timeout can answer.
    let timing = Timing {
        heartbeat_ms: 200,
        lease_ttl_ms: 120_000,
    };
    let cluster = TestCluster::start_with(2, timing, &[("PARLEY_CONFIG", &path)]).await;
    let api = Api::new(cluster.nodes[0].http);
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    // A group whose home is n2, while alice is on n1.
    let mut conv = 0;
    for i in 0..64 {
        let group = api.group(&alice, &format!("g{i}"), &[&bob]).await;
        let home = actors::placement::conversation_home(group, ["n1", "n2"]);
        if home == Some("n2") {
            conv = group;
            break;
        }
    }
    assert!(conv > 0, "no group homed on n2 among 64");
    let mut ws = connect(&cluster, 0, &alice).await;
    let first = ws
        .request_seq(json!({"type":"send","conv_id": conv,"client_msg_id":"before","body":"hi"}))
        .await;

    cluster.nodes[1].pause();
    ws.send(json!({"type":"send","conv_id": conv,"client_msg_id":"hung","body":"anyone?"}))
        .await;
    let refused = answer(&ws, "hung", 0).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "unavailable", "{refused}");

    cluster.nodes[1].resume();
    // The hung node may yet commit the send it held (its late `sent` is
    // true too); a resend is answered with the same seq either way.
    ws.send(json!({"type":"send","conv_id": conv,"client_msg_id":"hung","body":"anyone?"}))
        .await;
    let sent = ws
        .wait_for("sent for the resend", T, |f| {
            f["type"] == "sent" && f["client_msg_id"] == "hung"
        })
        .await;
    let resent = sent["seq"].as_u64().expect("seq");
    assert!(resent > first);
    assert_eq!(stored_at(&api, &alice, conv, "hung").await, vec![resent]);
    for f in ws.of_type("sent") {
        if f["client_msg_id"] == "hung" {
            assert_eq!(f["seq"], resent, "every sent of one message names one seq");
        }
    }
}

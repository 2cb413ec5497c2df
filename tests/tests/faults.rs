//! Faults that leave a node's sockets open but its answers gone (issue
//! #29): a hung home node, a node cut from its peers. Whatever happens, a
//! send is answered within a bounded time (`sent`, or an `error` the client
//! can act on), and nothing acknowledged is lost or stored twice.

use std::time::Duration;

use serde_json::{json, Value};
use tests::client::{Api, User, Ws};
use tests::netns::Net;
use tests::node::{TestCluster, Timing};
use tests::store::TestStore;

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

/// Hosts for a partition test, or `None` (with a notice) where network
/// namespaces cannot be made (not root) or the nodes could not reach the
/// store from them (FoundationDB listens on the test's loopback). CI runs
/// as root: there, namespaces must work.
fn hosts(n: usize) -> Option<Net> {
    if matches!(TestStore::from_env(), TestStore::Fdb { .. }) {
        eprintln!(
            "NOTICE: partition tests run on the embedded store (FoundationDB listens on \
             loopback, out of the namespaces' reach): skipped"
        );
        return None;
    }
    match Net::create(n) {
        Ok(net) => Some(net),
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must be able to create network namespaces (it runs as root): {e}"
            );
            eprintln!("NOTICE: no network namespaces here ({e}): partition test skipped");
            None
        }
    }
}

/// Sends `id` until it is acknowledged, as a careful client does: after
/// each `error` naming it (the answer timeout bounds the wait for one),
/// again with the same `client_msg_id`. Returns its seq.
async fn send_until_sent(ws: &mut Ws, conv: u64, id: &str, within: Duration) -> u64 {
    ws.send_until_sent(conv, id, within, within).await
}

/// The link between two nodes is cut both ways while both still renew
/// their leases in the store they share. Each notices within about a
/// lease lifetime that the other answers no probe and serves the
/// conversation itself (the epoch fence keeps one writer at a time), so
/// sends on both sides are acknowledged during the cut. After the heal the
/// nodes reconnect and every member receives every message; nothing
/// acknowledged is lost or stored twice.
#[tokio::test]
async fn a_cut_link_between_nodes_is_noticed_and_both_sides_keep_sending() {
    across_a_cut(&Split::two_nodes(), |net| net.cut(0, 1)).await;
}

/// Five nodes split {n1, n2} | {n3, n4, n5}, every link across cut while
/// all reach the store: the minority and the majority each keep serving
/// the chat their clients use, and once the split heals everyone has
/// everything, stored once and gaplessly. (No quorum is needed: the
/// store's epoch fence, not the peers, decides who writes.)
#[tokio::test]
async fn a_minority_and_a_majority_both_keep_sending_through_a_split() {
    let split = Split {
        nodes: 5,
        left: vec![0, 1],
        right: vec![2, 3, 4],
    };
    across_a_cut(&split, |net| split.cut(net)).await;
}

/// A partition that is not transitive: n2 and n3 cannot reach each other,
/// both reach n1. A client on n3 sends to a conversation whose home is n2
/// while n1 sees all three and n3 sees n1 and itself: n3 hands the send to
/// n1, n1 to n2, n2 commits, and n2 cannot answer n3 directly. The answer
/// is relayed through n1, so the client gets its `sent` during the cut
/// (without the relay it waited for the heal, resending every answer
/// timeout: what the seeded fault schedule of tests/history.rs found).
#[tokio::test]
async fn an_answer_crosses_a_partition_that_is_not_transitive() {
    let Some(net) = hosts(3) else {
        return;
    };
    let config = tempfile::tempdir().expect("tempdir");
    let path = config.path().join("parley.toml");
    std::fs::write(&path, "[gateway]\nanswer_timeout_secs = 2\n").expect("config");
    let path = path.to_string_lossy().into_owned();
    let cluster =
        TestCluster::start_on(&net.hosts, Timing::default(), &[("PARLEY_CONFIG", &path)]).await;
    let names: Vec<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
    let api = Api::new(cluster.nodes[0].http);
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    // A group homed on n2 while all three serve, and on n1 for n3 once n3
    // has cut n2 off.
    let mut conv = None;
    for i in 0..200 {
        let c = api.group(&alice, &format!("g{i}"), &[&bob]).await;
        let all = actors::placement::conversation_home(c, names.iter().copied());
        let without_n2 = actors::placement::conversation_home(c, [names[0], names[2]]);
        if all == Some(names[1]) && without_n2 == Some(names[0]) {
            conv = Some(c);
            break;
        }
    }
    let conv = conv.expect("a conversation placed as the test needs");
    let mut a = connect(&cluster, 2, &alice).await;
    send_until_sent(&mut a, conv, "before", T).await;

    net.cut(1, 2);
    // Both ends notice (a lease lifetime of silence) and drop the link.
    for node in [1, 2] {
        tests::wait::until("the cut to be noticed", T, || async {
            (cluster.nodes[node].metric("parley_peers_connected").await == Some(1.0)).then_some(())
        })
        .await;
    }
    // n3 now hands the conversation to n1, which still sees n2 as its
    // home; the answer comes back through n1. Well within the cut (held
    // until after this), and far below what waiting for the heal took.
    let during = send_until_sent(&mut a, conv, "during", Duration::from_secs(6)).await;
    let relayed = cluster.nodes[1]
        .metric("parley_replies_relayed_total")
        .await;
    assert!(
        relayed.is_some_and(|n| n >= 1.0),
        "n2 relayed the answer: {relayed:?}"
    );
    net.heal(1, 2);
    assert_eq!(stored_at(&api, &alice, conv, "during").await, vec![during]);
}

/// A send handed to a peer that then stops serving (here: hung past its
/// lease) is answered `unavailable` as soon as this node sees the peer go,
/// not at the answer timeout (30 s here): the resend goes to the
/// conversation's new home at once, and is stored once.
#[tokio::test]
async fn a_send_whose_home_stops_serving_is_answered_when_it_goes() {
    let cluster = TestCluster::start_with_config(2, "[gateway]\nanswer_timeout_secs = 30\n").await;
    let names: Vec<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
    let api = Api::new(cluster.nodes[0].http);
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let mut conv = None;
    for i in 0..100 {
        let c = api.group(&alice, &format!("g{i}"), &[&bob]).await;
        if actors::placement::conversation_home(c, names.iter().copied()) == Some(names[1]) {
            conv = Some(c);
            break;
        }
    }
    let conv = conv.expect("a conversation homed on n2");
    let mut a = connect(&cluster, 0, &alice).await;
    send_until_sent(&mut a, conv, "before", T).await;

    cluster.nodes[1].pause();
    let started = std::time::Instant::now();
    a.send(json!({"type":"send","conv_id": conv,"client_msg_id":"during","body":"during"}))
        .await;
    let first = answer(&a, "during", 0).await;
    let waited = started.elapsed();
    eprintln!("during: first answered after {waited:?}: {first}");
    assert_eq!(first["type"], "error", "{first}");
    assert_eq!(first["code"], "unavailable", "{first}");
    assert!(
        waited < Duration::from_secs(15),
        "answered when n2 stopped serving ({waited:?}), not at the 30 s answer timeout"
    );
    let seq = send_until_sent(&mut a, conv, "during", T).await;
    cluster.nodes[1].resume();
    assert_eq!(stored_at(&api, &alice, conv, "during").await, vec![seq]);
}

/// Which nodes stand on either side of a split; clients connect to the
/// first of each side.
struct Split {
    nodes: usize,
    left: Vec<usize>,
    right: Vec<usize>,
}

impl Split {
    fn two_nodes() -> Self {
        Split {
            nodes: 2,
            left: vec![0],
            right: vec![1],
        }
    }

    /// Cuts every link across, both ways.
    fn cut(&self, net: &Net) {
        for &a in &self.left {
            for &b in &self.right {
                net.cut(a, b);
            }
        }
    }

    fn heal(&self, net: &Net) {
        for &a in &self.left {
            for &b in &self.right {
                net.heal(a, b);
            }
        }
    }
}

/// The same with the link cut one way only (n1's packets to n2 vanish,
/// n2's still arrive): TCP needs both ways, so this is a cut too, noticed
/// the same way by both.
#[tokio::test]
async fn a_one_way_cut_is_noticed_as_well() {
    across_a_cut(&Split::two_nodes(), |net| net.cut_one_way(0, 1)).await;
}

async fn across_a_cut(split: &Split, cut: impl FnOnce(&Net)) {
    let Some(net) = hosts(split.nodes) else {
        return;
    };
    let config = tempfile::tempdir().expect("tempdir");
    let path = config.path().join("parley.toml");
    std::fs::write(&path, "[gateway]\nanswer_timeout_secs = 2\n").expect("config");
    let path = path.to_string_lossy().into_owned();
    let cluster =
        TestCluster::start_on(&net.hosts, Timing::default(), &[("PARLEY_CONFIG", &path)]).await;
    let api = Api::new(cluster.nodes[0].http);
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let conv = api.group(&alice, "across the cut", &[&bob]).await;
    let mut a = connect(&cluster, split.left[0], &alice).await;
    let mut b = connect(&cluster, split.right[0], &bob).await;
    let mut acked = vec![send_until_sent(&mut a, conv, "before", T).await];

    cut(&net);
    // Each side keeps sending; each send must be acknowledged while the
    // link is still cut.
    for i in 0..3 {
        acked.push(send_until_sent(&mut a, conv, &format!("a-{i}"), T).await);
        acked.push(send_until_sent(&mut b, conv, &format!("b-{i}"), T).await);
    }
    let mut cut_off = 0.0;
    for node in &cluster.nodes {
        cut_off += node
            .metric("parley_peers_cut_off_total")
            .await
            .unwrap_or(0.0);
    }
    assert!(cut_off >= 1.0, "no node noticed the cut");

    split.heal(&net);
    cluster.await_full_mesh().await;
    acked.push(send_until_sent(&mut a, conv, "after", T).await);
    acked.sort_unstable();
    acked.dedup();
    assert_eq!(acked.len(), 8, "eight messages, eight seqs: {acked:?}");
    // Every member's devices get every message once the nodes meet again.
    for ws in [&a, &b] {
        ws.wait_for_n("every acknowledged message", acked.len(), T, |f| {
            f["type"] == "message" && f["conv_id"] == conv
        })
        .await;
        let mut got: Vec<u64> = ws
            .of_type("message")
            .iter()
            .filter(|f| f["conv_id"] == conv)
            .map(|f| f["seq"].as_u64().expect("seq"))
            .collect();
        got.sort_unstable();
        got.dedup();
        for seq in &acked {
            assert!(got.contains(seq), "seq {seq} missing from {got:?}");
        }
    }
    // The store holds each message once, gaplessly.
    for id in ["before", "a-0", "a-1", "a-2", "b-0", "b-1", "b-2", "after"] {
        assert_eq!(stored_at(&api, &alice, conv, id).await.len(), 1, "{id}");
    }
    let mut all: Vec<u64> = Vec::new();
    let page = api
        .call(
            "GET",
            &format!("/api/conversations/{conv}/messages?limit=100"),
            Some(&alice.token),
            None,
        )
        .await;
    for m in page.1["messages"].as_array().expect("messages") {
        all.push(m["seq"].as_u64().expect("seq"));
    }
    all.sort_unstable();
    assert_eq!(all, (1..=all.len() as u64).collect::<Vec<_>>(), "gapless");
}

/// Polls a node's `/healthz` until it answers `status`.
async fn health_becomes(node: &tests::node::Node, status: u16) {
    let url = node.url("/healthz");
    tests::wait::until(&format!("{} /healthz {status}", node.name), T, || {
        let url = url.clone();
        async move {
            let got = reqwest::get(&url).await.ok()?.status().as_u16();
            (got == status).then_some(())
        }
    })
    .await;
}

/// A node loses FoundationDB while its clients and peers still reach it
/// (its route to the database's host is cut). Once its lease lapses it
/// stands by: `/healthz` answers 503, its clients are closed with 1012 and
/// new ones are refused, so they move to the other node, which has taken
/// its conversations over and acknowledges their sends. When the route
/// heals it serves again. Nothing acknowledged is lost or stored twice.
#[tokio::test]
async fn a_node_cut_from_foundationdb_stands_by_and_its_clients_move() {
    if !matches!(TestStore::from_env(), TestStore::Fdb { .. }) {
        eprintln!("NOTICE: the lost-store test runs in the FoundationDB suite: skipped");
        return;
    }
    let Ok(net) = Net::create(3) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to create network namespaces (it runs as root)"
        );
        eprintln!("NOTICE: no network namespaces here: lost-store test skipped");
        return;
    };
    let addr = format!("{}:4500", net.hosts[0].addr);
    let fdb = tests::fdb::LocalFdb::start(Some(&net.hosts[0].ns), &addr, None).await;
    let file = fdb.cluster_file.to_string_lossy().into_owned();
    let cluster = TestCluster::start_on(
        &net.hosts[1..],
        Timing::default(),
        &[("PARLEY_FDB_CLUSTER_FILE", &file)],
    )
    .await;
    let api = Api::new(cluster.nodes[1].http);
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let conv = api.group(&alice, "store cut", &[&bob]).await;
    let mut a = connect(&cluster, 0, &alice).await;
    let mut b = connect(&cluster, 1, &bob).await;
    let mut acked = vec![
        send_until_sent(&mut a, conv, "a-before", T).await,
        send_until_sent(&mut b, conv, "b-before", T).await,
    ];

    // n1 (host 1) loses its route to the database (host 0).
    net.cut(1, 0);
    health_becomes(&cluster.nodes[0], 503).await;
    tests::wait::until("alice's socket closed with 1012", T, || {
        let closed = a.closed();
        async move { closed.filter(|(code, _)| *code == 1012) }
    })
    .await;
    assert!(
        Ws::connect(&cluster.nodes[0].ws_url(&alice.token))
            .await
            .is_err(),
        "a node without its store takes no new client"
    );
    // The other node serves the conversation; alice moves there.
    acked.push(send_until_sent(&mut b, conv, "b-during", T).await);
    let mut moved = connect(&cluster, 1, &alice).await;
    acked.push(send_until_sent(&mut moved, conv, "a-moved", T).await);

    net.heal(1, 0);
    health_becomes(&cluster.nodes[0], 200).await;
    let mut back = connect(&cluster, 0, &alice).await;
    acked.push(send_until_sent(&mut back, conv, "a-back", T).await);
    acked.push(send_until_sent(&mut b, conv, "b-after", T).await);
    acked.sort_unstable();
    acked.dedup();
    assert_eq!(acked.len(), 6, "six messages, six seqs: {acked:?}");
    for id in [
        "a-before", "b-before", "b-during", "a-moved", "a-back", "b-after",
    ] {
        assert_eq!(stored_at(&api, &bob, conv, id).await.len(), 1, "{id}");
    }
    back.wait_for_n("every message on the node that came back", 6, T, |f| {
        f["type"] == "message" && f["conv_id"] == conv
    })
    .await;
    drop(cluster);
}

/// The admin token of the supervision test's nodes.
const ADMIN: &str = "faults-admin-token-0123456789";

/// Arms an injected panic (debug builds only) at `name` on `node`.
async fn arm(node: &tests::node::Node, name: &str) {
    let status = reqwest::Client::new()
        .post(node.url(&format!("/api/admin/faults/{name}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("arming a fault")
        .status();
    assert_eq!(status.as_u16(), 202, "arming {name}");
}

/// Waits until `node` counts `n` restarts of its internal tasks and
/// service actors.
async fn restarts_reach(node: &tests::node::Node, n: f64) {
    tests::wait::until(
        &format!("{} to count {n} restarts", node.name),
        T,
        || async move {
            let got = node
                .metric("parley_task_restarts_total")
                .await
                .unwrap_or(0.0);
            (got >= n).then_some(())
        },
    )
    .await;
}

/// A panic in any of a node's one-of-a-kind parts (the writer, the
/// membership loop, the index follower, the host actor that takes peer
/// traffic, the presence actor) is survived: the part is started again,
/// counted in `parley_task_restarts_total`, and the node goes on serving.
/// A send caught in the panic is answered (an error, or `unavailable` at
/// the answer timeout) and its resend is acknowledged.
#[tokio::test]
async fn a_panicking_internal_part_is_restarted_and_the_node_goes_on() {
    let config = tempfile::tempdir().expect("tempdir");
    let path = config.path().join("parley.toml");
    std::fs::write(&path, "[gateway]\nanswer_timeout_secs = 2\n").expect("config");
    let path = path.to_string_lossy().into_owned();
    let cluster = TestCluster::start_with(
        2,
        Timing::default(),
        &[("PARLEY_CONFIG", &path), ("PARLEY_ADMIN_TOKEN", ADMIN)],
    )
    .await;
    let api = Api::new(cluster.nodes[0].http);
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let carol = api.user("carol").await;
    // A group homed on n2, used from n1: its commands cross n2's host.
    let mut conv = 0;
    for i in 0..64 {
        let group = api.group(&alice, &format!("g{i}"), &[&bob, &carol]).await;
        if actors::placement::conversation_home(group, ["n1", "n2"]) == Some("n2") {
            conv = group;
            break;
        }
    }
    assert!(conv > 0, "no group homed on n2 among 64");
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut a = connect(&cluster, 0, &alice).await;
    send_until_sent(&mut a, conv, "warm", T).await;

    arm(n2, "committer").await;
    send_until_sent(&mut a, conv, "through-a-writer-panic", T).await;
    restarts_reach(n2, 1.0).await;

    arm(n2, "host").await;
    send_until_sent(&mut a, conv, "through-a-host-panic", T).await;
    restarts_reach(n2, 2.0).await;

    arm(n2, "indexer").await;
    send_until_sent(&mut a, conv, "through-an-indexer-panic", T).await;
    restarts_reach(n2, 3.0).await;

    arm(n1, "membership").await;
    restarts_reach(n1, 1.0).await;
    cluster.await_full_mesh().await;
    send_until_sent(&mut a, conv, "after-a-membership-panic", T).await;

    // Carol coming online is the presence actor's next turn.
    arm(n1, "presence").await;
    let c = connect(&cluster, 0, &carol).await;
    restarts_reach(n1, 2.0).await;
    c.close().await;
    let online_before = a
        .of_type("presence")
        .iter()
        .filter(|f| f["user_id"] == carol.id && f["online"] == true)
        .count();
    let _c = connect(&cluster, 0, &carol).await;
    a.wait_for_n(
        "carol online again, told by the restarted presence actor",
        online_before + 1,
        T,
        |f| f["type"] == "presence" && f["user_id"] == carol.id && f["online"] == true,
    )
    .await;
    for id in [
        "warm",
        "through-a-writer-panic",
        "through-a-host-panic",
        "through-an-indexer-panic",
        "after-a-membership-panic",
    ] {
        assert_eq!(stored_at(&api, &alice, conv, id).await.len(), 1, "{id}");
    }
}

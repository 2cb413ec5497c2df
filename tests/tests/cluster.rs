//! Three real `parley` processes on loopback, clients on different nodes:
//! cross-node delivery and order, presence, typing and receipts, and
//! failover after `kill -9` of a conversation's home node.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::client::{Api, User, Ws};
use tests::node::TestCluster;

const T: Duration = Duration::from_secs(15);

async fn connect(cluster: &TestCluster, node: usize, user: &User) -> Ws {
    let ws = Ws::connect(&cluster.nodes[node].ws_url(&user.token))
        .await
        .expect("connect");
    ws.wait_for("hello", T, |f| f["type"] == "hello").await;
    ws
}

/// The (seq → (sender, client_msg_id)) history a client received.
fn received(ws: &Ws, conv: u64) -> BTreeMap<u64, (u64, String)> {
    ws.of_type("message")
        .into_iter()
        .filter(|f| f["conv_id"] == conv)
        .map(|f| {
            (
                f["seq"].as_u64().expect("seq"),
                (
                    f["sender"].as_u64().expect("sender"),
                    f["client_msg_id"].as_str().expect("id").to_owned(),
                ),
            )
        })
        .collect()
}

/// Sends until the server acknowledges, resending the same client_msg_id
/// every `every` (a real client's behaviour after a lost connection or
/// node): returns the seq.
async fn send_reliably(
    ws: &mut Ws,
    conv: u64,
    id: &str,
    every: Duration,
    deadline: Duration,
) -> u64 {
    ws.send_until_sent(conv, id, every, deadline).await
}

/// Which node runs the conversation actors (its metrics say so).
async fn nodes_with_conversations(cluster: &TestCluster) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        if !node.is_running() {
            continue;
        }
        let active = node.metric("parley_conversations").await.unwrap_or(0.0);
        if active > 0.0 {
            out.push(i);
        }
    }
    out
}

#[tokio::test]
async fn group_and_direct_chat_across_nodes_in_one_order() {
    let cluster = TestCluster::start(3).await;
    let api = Api::new(cluster.nodes[0].http);
    let users = [
        api.user("alice").await,
        api.user("bob").await,
        api.user("carol").await,
    ];
    let group = api.group(&users[0], "team", &[&users[1], &users[2]]).await;
    let direct = api.direct(&users[0], &users[1]).await;
    let mut clients = Vec::new();
    for (i, u) in users.iter().enumerate() {
        clients.push(connect(&cluster, i, u).await);
    }
    // Everyone sends at once.
    const EACH: usize = 20;
    for i in 0..EACH {
        for (c, client) in clients.iter_mut().enumerate() {
            client
                .send(json!({"type":"send","conv_id": group,"client_msg_id": format!("u{c}-{i}"),"body":"x"}))
                .await;
        }
    }
    clients[0]
        .send(json!({"type":"send","conv_id": direct,"client_msg_id":"d1","body":"psst"}))
        .await;
    for client in &clients {
        client
            .wait_for_n("all group messages", 3 * EACH, T, |f| {
                f["type"] == "message" && f["conv_id"] == group
            })
            .await;
    }
    let histories: Vec<_> = clients.iter().map(|c| received(c, group)).collect();
    let seqs: Vec<u64> = histories[0].keys().copied().collect();
    assert_eq!(seqs, (1..=(3 * EACH) as u64).collect::<Vec<_>>(), "gapless");
    assert_eq!(
        histories[0], histories[1],
        "alice and bob saw different orders"
    );
    assert_eq!(
        histories[0], histories[2],
        "alice and carol saw different orders"
    );
    // Each sender's own messages keep their sending order.
    for (c, user) in users.iter().enumerate() {
        let mine: Vec<&String> = histories[0]
            .values()
            .filter(|(s, _)| *s == user.id)
            .map(|(_, id)| id)
            .collect();
        let expected: Vec<String> = (0..EACH).map(|i| format!("u{c}-{i}")).collect();
        assert_eq!(mine, expected.iter().collect::<Vec<_>>());
    }
    // The direct chat reached bob on node 2, and not carol.
    clients[1]
        .wait_for("direct message", T, |f| {
            f["type"] == "message" && f["conv_id"] == direct
        })
        .await;
    assert!(received(&clients[2], direct).is_empty());
}

#[tokio::test]
async fn presence_typing_and_receipts_cross_nodes_and_survive_a_kill() {
    let cluster = TestCluster::start(3).await;
    let api = Api::new(cluster.nodes[0].http);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let conv = api.direct(&alice, &bob).await;
    let a = connect(&cluster, 0, &alice).await;
    let online = |f: &Value, who: u64, state: bool| {
        f["type"] == "presence" && f["user_id"] == who && f["online"] == state
    };

    // Bob connects on node 2: alice (node 1) sees him online.
    let mut b = connect(&cluster, 1, &bob).await;
    a.wait_for("bob online", T, |f| online(f, bob.id, true))
        .await;

    // Typing and receipts cross nodes.
    b.send(json!({"type":"typing","conv_id": conv})).await;
    a.wait_for("typing", T, |f| {
        f["type"] == "typing" && f["user_id"] == bob.id
    })
    .await;
    let mut a = a;
    let seq = send_reliably(&mut a, conv, "hello", Duration::from_secs(2), T).await;
    b.wait_for("message", T, |f| f["type"] == "message" && f["seq"] == seq)
        .await;
    b.send(json!({"type":"ack","conv_id": conv,"seq": seq,"kind":"seen"}))
        .await;
    a.wait_for("receipt", T, |f| {
        f["type"] == "receipt" && f["user_id"] == bob.id && f["seen_seq"] == seq
    })
    .await;

    // A clean disconnect: offline.
    b.close().await;
    a.wait_for("bob offline after disconnect", T, |f| {
        online(f, bob.id, false) && !f["last_seen"].is_null()
    })
    .await;

    // Bob comes back on node 3, which is then killed.
    let _b = connect(&cluster, 2, &bob).await;
    a.wait_for_n("bob online again", 2, T, |f| online(f, bob.id, true))
        .await;
    let mut cluster = cluster;
    let killed = Instant::now();
    cluster.nodes[2].kill();
    a.wait_for_n("bob offline after kill -9 of his node", 2, T, |f| {
        online(f, bob.id, false) && !f["last_seen"].is_null()
    })
    .await;
    eprintln!(
        "presence: bob shown offline {:?} after kill -9 of his node",
        killed.elapsed()
    );
}

#[tokio::test]
async fn a_conversation_is_usable_again_after_its_home_node_is_killed() {
    let mut cluster = TestCluster::start(3).await;
    let api = Api::new(cluster.nodes[0].http);
    let users = [
        api.user("alice").await,
        api.user("bob").await,
        api.user("carol").await,
    ];
    let group = api.group(&users[0], "team", &[&users[1], &users[2]]).await;
    let mut clients = Vec::new();
    for (i, u) in users.iter().enumerate() {
        clients.push(connect(&cluster, i, u).await);
    }
    send_reliably(
        &mut clients[0],
        group,
        "before-1",
        Duration::from_secs(2),
        T,
    )
    .await;
    let homes = nodes_with_conversations(&cluster).await;
    assert_eq!(homes.len(), 1, "exactly one node runs the group: {homes:?}");
    let home = homes[0];

    // kill -9 the home node; the clients of the survivors keep sending.
    let killed = Instant::now();
    cluster.nodes[home].kill();
    let survivor = (0..3).find(|&i| i != home).expect("a survivor");
    let seq = send_reliably(
        &mut clients[survivor],
        group,
        "after-kill",
        Duration::from_millis(100),
        Duration::from_secs(20),
    )
    .await;
    let recovery = killed.elapsed();
    eprintln!("failover: the group accepted a send {recovery:?} after kill -9 of its home node");
    assert_eq!(seq, 2, "gapless after failover");

    // The dead node's client reconnects to a survivor and syncs.
    let user = &users[home];
    let back = connect(&cluster, survivor, user).await;
    back.wait_for("synced", T, |f| f["type"] == "synced").await;
    let history = received(&back, group);
    assert_eq!(
        history.keys().copied().collect::<Vec<_>>(),
        [1, 2],
        "{history:?}"
    );
    assert_eq!(nodes_with_conversations(&cluster).await.len(), 1);
    let _ = cluster.logs();
}

#[tokio::test]
async fn garbage_on_the_cluster_port_does_not_hurt_a_node() {
    use tokio::io::AsyncWriteExt;

    let cluster = TestCluster::start(2).await;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..20 {
        let mut sock = tokio::net::TcpStream::connect(cluster.nodes[0].cluster_addr)
            .await
            .expect("connect to the cluster port");
        let bytes: Vec<u8> = (0..(round * 97 + 4))
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = sock.write_all(&bytes).await;
    }
    // Still serving, and still a cluster of two.
    let api = Api::new(cluster.nodes[0].http);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let conv = api.direct(&alice, &bob).await;
    let mut a = connect(&cluster, 0, &alice).await;
    let b = connect(&cluster, 1, &bob).await;
    send_reliably(&mut a, conv, "still-alive", Duration::from_secs(2), T).await;
    b.wait_for("message across nodes", T, |f| f["type"] == "message")
        .await;
    cluster.await_full_mesh().await;
}

/// A counter of a node's `/metrics` (prometheus counters end in `_total`).
async fn counter(cluster: &TestCluster, node: usize, name: &str) -> f64 {
    let node = &cluster.nodes[node];
    let total = format!("{name}_total");
    match node.metric(&total).await {
        Some(value) => value,
        None => panic!("{total} missing from:\n{}", node.metrics_text().await),
    }
}

#[tokio::test]
async fn a_fanout_goes_only_to_nodes_holding_a_recipient() {
    let cluster = TestCluster::start(3).await;
    let api = Api::new(cluster.nodes[0].http);
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let carol = api.user("carol").await;
    let direct = api.direct(&alice, &bob).await;
    let mut on_0 = connect(&cluster, 0, &alice).await;
    let on_1 = connect(&cluster, 1, &bob).await;
    // Node 2 holds a session, but of no one in the chat.
    let _on_2 = connect(&cluster, 2, &carol).await;
    let received_by_2 = counter(&cluster, 2, "parley_peer_fanouts_received").await;
    let mut sent = 0.0;
    for i in 0..3 {
        sent += counter(&cluster, i, "parley_peer_fanouts_sent").await;
    }
    const N: u64 = 20;
    for i in 0..N {
        send_reliably(&mut on_0, direct, &format!("m{i}"), T, T).await;
    }
    on_1.wait_for_n("every message at bob's", N as usize, T, |f| {
        f["type"] == "message" && f["conv_id"] == direct
    })
    .await;
    let mut sent_after = 0.0;
    for i in 0..3 {
        sent_after += counter(&cluster, i, "parley_peer_fanouts_sent").await;
    }
    // Wherever the chat's actor lives, one of its two members is on
    // another node: every message crossed to a peer at least once.
    assert!(
        sent_after - sent >= N as f64,
        "{} fan-outs sent to peers for {N} messages",
        sent_after - sent
    );
    assert_eq!(
        counter(&cluster, 2, "parley_peer_fanouts_received").await,
        received_by_2,
        "node 2 holds no session of alice or bob, yet received their fan-outs"
    );
}

//! The WebSocket protocol against one real node: every client frame, the
//! server frames they cause, and the bad input a client can send.

use std::time::Duration;

use serde_json::{json, Value};
use tests::client::{Api, User, Ws};
use tests::node::TestCluster;

const T: Duration = Duration::from_secs(10);

async fn connect(cluster: &TestCluster, user: &User) -> Ws {
    let ws = Ws::connect(&cluster.nodes[0].ws_url(&user.token))
        .await
        .expect("connect");
    ws.wait_for("hello", T, |f| f["type"] == "hello").await;
    ws
}

fn send(conv_id: u64, id: &str, body: &str) -> Value {
    json!({"type": "send", "conv_id": conv_id, "client_msg_id": id, "body": body})
}

fn is_error_for(f: &Value, code: &str, reference: &str) -> bool {
    f["type"] == "error" && f["code"] == code && f["ref"] == reference
}

#[tokio::test]
async fn direct_chat_send_receive_resend_receipts_typing() {
    let cluster = TestCluster::start(1).await;
    let api = Api::new(cluster.nodes[0].http);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let mut a = connect(&cluster, &alice).await;
    let b = connect(&cluster, &bob).await;

    // First message by user id: opens the direct chat.
    a.send(json!({"type":"send","to_user": bob.id,"client_msg_id":"m1","body":"hi bob"}))
        .await;
    let sent = a
        .wait_for("sent m1", T, |f| {
            f["type"] == "sent" && f["client_msg_id"] == "m1"
        })
        .await;
    assert_eq!(sent["seq"], 1);
    let conv = sent["conv_id"].as_u64().expect("conv id");
    let got = b
        .wait_for("bob gets m1", T, |f| {
            f["type"] == "message" && f["seq"] == 1
        })
        .await;
    assert_eq!(got["body"], "hi bob");
    assert_eq!(got["sender"], alice.id);
    assert_eq!(got["conv_id"], conv);

    // A resend of the same client_msg_id gets the original seq, no duplicate.
    a.send(send(conv, "m1", "hi bob")).await;
    a.send(send(conv, "m2", "second")).await;
    a.wait_for("sent m2", T, |f| {
        f["type"] == "sent" && f["client_msg_id"] == "m2"
    })
    .await;
    let sents = a.of_type("sent");
    let m1: Vec<_> = sents
        .iter()
        .filter(|f| f["client_msg_id"] == "m1")
        .collect();
    assert_eq!(m1.len(), 2);
    assert!(m1.iter().all(|f| f["seq"] == 1));
    b.wait_for("bob gets m2", T, |f| {
        f["type"] == "message" && f["seq"] == 2
    })
    .await;
    let bob_msgs: Vec<u64> = b
        .of_type("message")
        .iter()
        .map(|f| f["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(bob_msgs, [1, 2], "no duplicate delivery of the resend");

    // Typing goes to the other member only.
    let mut b = b;
    b.send(json!({"type":"typing","conv_id": conv})).await;
    let typing = a.wait_for("typing", T, |f| f["type"] == "typing").await;
    assert_eq!(typing["user_id"], bob.id);
    assert!(typing["expires_in_ms"].as_u64().expect("ttl") > 0);

    // Receipts: bob has seen up to 2; alice hears it.
    b.send(json!({"type":"ack","conv_id": conv,"seq": 2,"kind":"seen"}))
        .await;
    let receipt = a
        .wait_for("receipt", T, |f| {
            f["type"] == "receipt" && f["user_id"] == bob.id
        })
        .await;
    assert_eq!(receipt["seen_seq"], 2);
    assert_eq!(receipt["delivered_seq"], 2);
    let (_, status) = api
        .call(
            "GET",
            &format!("/api/conversations/{conv}/messages/2/status"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status["members"][0]["status"], "seen", "{status}");

    // Ping.
    a.send(json!({"type":"ping"})).await;
    a.wait_for("pong", T, |f| f["type"] == "pong").await;
}

#[tokio::test]
async fn reconnect_syncs_everything_missed_in_order() {
    let cluster = TestCluster::start(1).await;
    let api = Api::new(cluster.nodes[0].http);
    let (alice, bob, carol) = (
        api.user("alice").await,
        api.user("bob").await,
        api.user("carol").await,
    );
    let group = api.group(&alice, "team", &[&bob, &carol]).await;
    let mut a = connect(&cluster, &alice).await;
    for i in 1..=30 {
        a.send(send(group, &format!("g{i}"), &format!("group {i}")))
            .await;
    }
    a.wait_for_n("30 sent", 30, T, |f| f["type"] == "sent")
        .await;

    // Bob was offline: on connect he gets all 30, in order, then `synced`.
    let b = connect(&cluster, &bob).await;
    b.wait_for("synced", T, |f| f["type"] == "synced").await;
    let seqs: Vec<u64> = b
        .of_type("message")
        .iter()
        .map(|f| f["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=30).collect::<Vec<_>>());

    // He acknowledges delivery up to 20, reconnects, and asks to sync from
    // his own watermark of 25: he gets 26..30.
    let mut b = b;
    b.send(json!({"type":"ack","conv_id": group,"seq": 20,"kind":"delivered"}))
        .await;
    a.wait_for("bob's receipt", T, |f| {
        f["type"] == "receipt" && f["user_id"] == bob.id
    })
    .await;
    b.close().await;
    let mut b = connect(&cluster, &bob).await;
    b.wait_for("synced", T, |f| f["type"] == "synced").await;
    let seqs: Vec<u64> = b
        .of_type("message")
        .iter()
        .map(|f| f["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(
        seqs,
        (21..=30).collect::<Vec<_>>(),
        "sync from the delivered watermark"
    );
    b.send(json!({"type":"sync","watermarks": {group.to_string(): 25}}))
        .await;
    b.wait_for_n("second synced", 2, T, |f| f["type"] == "synced")
        .await;
    let seqs: Vec<u64> = b
        .of_type("message")
        .iter()
        .skip(10)
        .map(|f| f["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (26..=30).collect::<Vec<_>>());
}

#[tokio::test]
async fn presence_follows_connections_and_group_events_arrive() {
    let cluster = TestCluster::start(1).await;
    let api = Api::new(cluster.nodes[0].http);
    let (alice, bob, carol) = (
        api.user("alice").await,
        api.user("bob").await,
        api.user("carol").await,
    );
    let group = api.group(&alice, "team", &[&bob]).await;
    let a = connect(&cluster, &alice).await;
    let b = connect(&cluster, &bob).await;
    a.wait_for("bob online", T, |f| {
        f["type"] == "presence" && f["user_id"] == bob.id && f["online"] == true
    })
    .await;
    let (_, user) = api
        .call(
            "GET",
            &format!("/api/users/{}", bob.id),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(user["online"], true);
    b.close().await;
    // (Alice's connect-time snapshot said "offline, never seen"; the
    // transition carries when he was last seen.)
    a.wait_for("bob offline", T, |f| {
        f["type"] == "presence"
            && f["user_id"] == bob.id
            && f["online"] == false
            && f["last_seen"].as_u64().is_some()
    })
    .await;

    // Membership changes made over HTTP reach the members' sockets.
    api.add_member(&alice, group, &carol).await;
    a.wait_for("member_joined", T, |f| {
        f["type"] == "member_joined" && f["user_id"] == carol.id
    })
    .await;
    let (status, _) = api
        .call(
            "PATCH",
            &format!("/api/groups/{group}"),
            Some(&alice.token),
            Some(json!({"description": "renamed"})),
        )
        .await;
    assert_eq!(status, 200);
    a.wait_for("group_updated", T, |f| {
        f["type"] == "group_updated" && f["description"] == "renamed"
    })
    .await;
    let (status, _) = api
        .call(
            "DELETE",
            &format!("/api/groups/{group}"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    a.wait_for("deleted", T, |f| {
        f["type"] == "group_updated" && f["deleted"] == true
    })
    .await;
}

#[tokio::test]
async fn bad_frames_get_named_errors_and_the_connection_stays_usable() {
    let cluster = TestCluster::start(1).await;
    let api = Api::new(cluster.nodes[0].http);
    let (alice, bob, eve) = (
        api.user("alice").await,
        api.user("bob").await,
        api.user("eve").await,
    );
    let conv = api.direct(&alice, &bob).await;
    let mut e = connect(&cluster, &eve).await;

    e.send_text("{not json").await;
    e.wait_for("malformed", T, |f| {
        f["type"] == "error" && f["code"] == "bad_request" && f["ref"].is_null()
    })
    .await;
    e.send(json!({"type":"dance"})).await;
    e.wait_for("unknown type", T, |f| {
        is_error_for(f, "bad_request", "dance")
    })
    .await;
    e.send(json!({"type":"send","conv_id": conv,"client_msg_id":"x1","body":"let me in"}))
        .await;
    e.wait_for("non-member send", T, |f| is_error_for(f, "forbidden", "x1"))
        .await;
    e.send(json!({"type":"ack","conv_id": conv,"seq": 1,"kind":"seen","ref":"a1"}))
        .await;
    e.wait_for("non-member ack", T, |f| is_error_for(f, "forbidden", "a1"))
        .await;
    e.send(json!({"type":"send","conv_id": 9999,"client_msg_id":"x2","body":"?"}))
        .await;
    e.wait_for("unknown conversation", T, |f| {
        is_error_for(f, "not_found", "x2")
    })
    .await;
    let big = "x".repeat(5000);
    e.send(json!({"type":"send","conv_id": conv,"client_msg_id":"x3","body": big}))
        .await;
    e.wait_for("oversized message", T, |f| {
        is_error_for(f, "too_large", "x3")
    })
    .await;
    let huge = "y".repeat(20_000);
    e.send(json!({"type":"send","conv_id": conv,"client_msg_id":"x4","body": huge}))
        .await;
    e.wait_for("oversized frame", T, |f| is_error_for(f, "too_large", "x4"))
        .await;
    e.send(json!({"type":"send","to_user": eve.id,"client_msg_id":"x5","body":"me"}))
        .await;
    e.wait_for("chat with self", T, |f| {
        is_error_for(f, "bad_request", "x5")
    })
    .await;
    e.send(json!({"type":"sync","watermarks": {"abc": 1}}))
        .await;
    e.wait_for("bad watermark", T, |f| {
        f["type"] == "error"
            && f["code"] == "bad_request"
            && f["message"].as_str().is_some_and(|m| m.contains("abc"))
    })
    .await;

    // Still usable, and nothing was written.
    e.send(json!({"type":"ping"})).await;
    e.wait_for("pong", T, |f| f["type"] == "pong").await;
    assert!(!e.ended());
    let (_, history) = api
        .call(
            "GET",
            &format!("/api/conversations/{conv}/messages"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(
        history["messages"].as_array().map(Vec::len),
        Some(0),
        "{history}"
    );
}

#[tokio::test]
async fn a_flood_is_rate_limited() {
    let cluster = TestCluster::start(1).await;
    let api = Api::new(cluster.nodes[0].http);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let conv = api.direct(&alice, &bob).await;
    let mut a = connect(&cluster, &alice).await;
    // Default budget: 20/s sustained, bursts of 40.
    for i in 0..100 {
        a.send(send(conv, &format!("f{i}"), "flood")).await;
    }
    let limited = a
        .wait_for("rate limited", T, |f| {
            f["type"] == "error" && f["code"] == "rate_limited"
        })
        .await;
    assert!(limited["ref"].as_str().is_some_and(|r| r.starts_with('f')));
    let sent = a
        .wait_for_n("the allowed ones", 40, T, |f| f["type"] == "sent")
        .await;
    assert!(sent.len() < 100, "every send went through: {}", sent.len());
}

#[tokio::test]
async fn authentication_by_url_or_first_frame() {
    let cluster = TestCluster::start(1).await;
    let node = &cluster.nodes[0];
    let api = Api::new(node.http);
    let alice = api.user("alice").await;

    let refused = Ws::connect(&node.ws_url("not-a-token")).await;
    assert!(refused.is_err_and(|e| e.contains("401")));

    let mut ws = Ws::connect(&format!("ws://{}/ws", node.http))
        .await
        .expect("connect");
    ws.send(json!({"type":"auth","token": alice.token})).await;
    let hello = ws.wait_for("hello", T, |f| f["type"] == "hello").await;
    assert_eq!(hello["user_id"], alice.id);

    let mut bad = Ws::connect(&format!("ws://{}/ws", node.http))
        .await
        .expect("connect");
    bad.send(json!({"type":"auth","token":"nope"})).await;
    bad.wait_for("auth error", T, |f| is_error_for(f, "unauthorized", "auth"))
        .await;
    tests::wait::until("socket closed", T, || {
        let closed = bad.closed();
        async move { closed }
    })
    .await;
}

#[tokio::test]
async fn a_client_that_does_not_read_is_disconnected_and_loses_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Small commit batches keep the sender's own bursts (a `sent` and a
    // `message` per message of a batch) well inside its queue.
    let cluster = TestCluster::start_with_config(
        1,
        "max_batch = 32\n[gateway]\noutbound_queue = 600\nsends_per_second = 100000\nsend_burst = 100000\n",
    )
    .await;
    let node = &cluster.nodes[0];
    let api = Api::new(node.http);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    api.direct(&alice, &bob).await;

    // Bob upgrades by hand, with a tiny receive buffer, and never reads.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut raw = socket.connect(node.http).await.expect("connect");
    let request = format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        bob.token, node.http
    );
    raw.write_all(request.as_bytes()).await.expect("upgrade");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        raw.read_exact(&mut byte).await.expect("upgrade response");
        head.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 101"));

    let mut a = connect(&cluster, &alice).await;
    a.wait_for("bob online", T, |f| {
        f["type"] == "presence" && f["user_id"] == bob.id && f["online"] == true
    })
    .await;
    const N: usize = 4000;
    let body = "z".repeat(4000);
    for i in 0..N {
        a.send(
            json!({"type":"send","to_user": bob.id,"client_msg_id": format!("s{i}"),"body": body}),
        )
        .await;
    }
    a.wait_for_n("all sent", N, Duration::from_secs(60), |f| {
        f["type"] == "sent"
    })
    .await;
    a.wait_for("bob dropped as too slow", Duration::from_secs(30), |f| {
        f["type"] == "presence" && f["user_id"] == bob.id && f["online"] == false
    })
    .await;
    let metrics = node.metrics_text().await;
    assert!(
        metrics.contains("parley_slow_consumers_total 1"),
        "{metrics}"
    );
    drop(raw);

    // Reconnecting, bob gets everything, in order.
    let b = connect(&cluster, &bob).await;
    b.wait_for("synced", Duration::from_secs(60), |f| f["type"] == "synced")
        .await;
    let seqs: Vec<u64> = b
        .of_type("message")
        .iter()
        .map(|f| f["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=N as u64).collect::<Vec<_>>());
}

/// `parley_conversations` as the node reports it.
async fn active_conversations(node: &tests::node::Node) -> f64 {
    node.metric("parley_conversations")
        .await
        .expect("parley_conversations in /metrics")
}

#[tokio::test]
async fn idle_conversations_stop_and_come_back_where_they_left_off() {
    let cluster = TestCluster::start_with_config(1, "conversation_idle_secs = 1\n").await;
    let node = &cluster.nodes[0];
    let api = Api::new(node.http);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let conv = api.direct(&alice, &bob).await;
    let mut a = connect(&cluster, &alice).await;
    a.send(send(conv, "i1", "first")).await;
    a.wait_for("sent i1", T, |f| f["type"] == "sent" && f["seq"] == 1)
        .await;
    assert_eq!(active_conversations(node).await, 1.0);
    tests::wait::until("the idle actor to stop", T, || async {
        (active_conversations(node).await == 0.0).then_some(())
    })
    .await;
    // A resend of the first, to the new actor: it read the recent ids back
    // from the log, so the original seq comes back and nothing is stored.
    a.send(send(conv, "i1", "first")).await;
    tests::wait::until("the resend's sent", T, || async {
        let sent: Vec<u64> = a
            .frames()
            .iter()
            .filter(|f| f["type"] == "sent" && f["client_msg_id"] == "i1")
            .map(|f| f["seq"].as_u64().expect("seq"))
            .collect();
        (sent.len() == 2).then_some(sent)
    })
    .await
    .iter()
    .for_each(|&seq| assert_eq!(seq, 1, "a resend got a new seq"));
    a.send(send(conv, "i2", "second")).await;
    a.wait_for("sent i2", T, |f| f["type"] == "sent" && f["seq"] == 2)
        .await;
}

#[tokio::test]
async fn a_silent_client_is_pinged_then_closed_as_idle() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let cluster =
        TestCluster::start_with_config(1, "[gateway]\nheartbeat_secs = 1\nidle_timeout_secs = 2\n")
            .await;
    let node = &cluster.nodes[0];
    let api = Api::new(node.http);
    let alice = api.user("alice").await;
    // A hand-made client that never answers pings.
    let mut raw = tokio::net::TcpStream::connect(node.http)
        .await
        .expect("connect");
    let request = format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        alice.token, node.http
    );
    raw.write_all(request.as_bytes()).await.expect("upgrade");
    let mut bytes = Vec::new();
    tokio::time::timeout(T, raw.read_to_end(&mut bytes))
        .await
        .expect("the server closes an idle socket within 10 s")
        .expect("read");
    // Unmasked server frames: a ping (0x89) came before the close (0x88)
    // whose payload starts with code 1001 (0x03e9).
    let ping = bytes.windows(2).position(|w| w == [0x89, 0x00]);
    let close = bytes
        .windows(4)
        .position(|w| w[0] == 0x88 && w[2] == 0x03 && w[3] == 0xe9);
    assert!(ping.is_some() && close.is_some(), "{bytes:02x?}");
    assert!(ping < close);
}

#[tokio::test]
async fn a_new_member_and_the_group_learn_each_others_presence() {
    let cluster = TestCluster::start(1).await;
    let api = Api::new(cluster.nodes[0].http);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let group = api.group(&alice, "team", &[]).await;
    let a = connect(&cluster, &alice).await;
    let b = connect(&cluster, &bob).await;
    api.add_member(&alice, group, &bob).await;
    let online = |who: u64| {
        move |f: &Value| f["type"] == "presence" && f["user_id"] == who && f["online"] == true
    };
    a.wait_for("alice learns bob is online", T, online(bob.id))
        .await;
    b.wait_for("bob learns alice is online", T, online(alice.id))
        .await;
}

#[tokio::test]
async fn a_new_direct_chat_introduces_both_users_presence() {
    let cluster = TestCluster::start(1).await;
    let api = Api::new(cluster.nodes[0].http);
    let (alice, bob, carol) = (
        api.user("alice").await,
        api.user("bob").await,
        api.user("carol").await,
    );
    let mut a = connect(&cluster, &alice).await;
    let b = connect(&cluster, &bob).await;
    let c = connect(&cluster, &carol).await;
    let online = |who: u64| {
        move |f: &Value| f["type"] == "presence" && f["user_id"] == who && f["online"] == true
    };
    // Over the WebSocket: the first message to a user opens the chat.
    a.send(json!({"type":"send","to_user": bob.id,"client_msg_id":"h1","body":"hi"}))
        .await;
    a.wait_for("alice learns bob is online", T, online(bob.id))
        .await;
    b.wait_for("bob learns alice is online", T, online(alice.id))
        .await;
    // Over HTTP.
    api.direct(&carol, &alice).await;
    c.wait_for("carol learns alice is online", T, online(alice.id))
        .await;
    a.wait_for("alice learns carol is online", T, online(carol.id))
        .await;
    // Strangers hear nothing.
    assert!(b
        .of_type("presence")
        .iter()
        .all(|f| f["user_id"] != carol.id));
}

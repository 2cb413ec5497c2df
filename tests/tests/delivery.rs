//! The delivery contract at the client edge (docs/PROTOCOL.md, "Delivery
//! contract"): every message of every conversation a user belongs to
//! reaches every device of that user, in seq order per conversation,
//! whatever the device does first after connecting.
//!
//! Clients here behave like impatient real ones: they act the moment the
//! socket is open, without waiting for `hello` or `synced`.

use std::time::Duration;

use serde_json::{json, Value};
use tests::client::{Api, User, Ws};
use tests::node::TestCluster;

const T: Duration = Duration::from_secs(15);

/// Connects without waiting for anything.
async fn open(cluster: &TestCluster, url_suffix: &str, user: &User) -> Ws {
    Ws::connect(&format!(
        "{}{url_suffix}",
        cluster.nodes[0].ws_url(&user.token)
    ))
    .await
    .expect("connect")
}

fn send(conv_id: u64, id: &str, body: &str) -> Value {
    json!({"type": "send", "conv_id": conv_id, "client_msg_id": id, "body": body})
}

/// The seqs of `conv` received over the socket, in arrival order.
fn seqs(ws: &Ws, conv: u64) -> Vec<u64> {
    ws.of_type("message")
        .iter()
        .filter(|f| f["conv_id"] == conv)
        .filter_map(|f| f["seq"].as_u64())
        .collect()
}

/// Alice sends `n` messages to `conv` and waits for their `sent`.
async fn alice_sends(a: &mut Ws, conv: u64, tag: &str, n: usize) {
    for i in 0..n {
        a.send(send(conv, &format!("{tag}-{i}"), &format!("{tag} {i}")))
            .await;
    }
    let prefix = format!("{tag}-");
    a.wait_for_n(tag, n, T, |f| {
        f["type"] == "sent"
            && f["client_msg_id"]
                .as_str()
                .is_some_and(|id| id.starts_with(&prefix))
    })
    .await;
}

async fn unread(api: &Api, user: &User, conv: u64) -> u64 {
    let (status, body) = api.call("GET", "/api/chats", Some(&user.token), None).await;
    assert_eq!(status, 200, "{body}");
    body["chats"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["conv_id"] == conv))
        .and_then(|r| r["unread"].as_u64())
        .unwrap_or_else(|| panic!("no chat {conv} in {body}"))
}

/// What an impatient client does first after opening its socket.
#[derive(Debug, Clone, Copy)]
enum First {
    /// Resends its pending message at once (docs tell clients to).
    Send,
    /// Acknowledges the last message it had before going offline.
    Ack,
    /// Starts typing.
    Typing,
    /// Syncs from a stale watermark of its own.
    StaleSync,
}

/// The reported race: Bob was offline while Alice sent; the first thing
/// his reconnecting client does must not hide those messages. Looped, since
/// the race needs the first frame to commit before the sync reads.
#[tokio::test]
async fn what_a_device_does_first_never_hides_what_it_missed() {
    // Many accounts from one address: lift the registration and login
    // throttles for this test.
    let cluster = TestCluster::start_with_config(
        1,
        "[gateway]\nsends_per_second = 100000\nsend_burst = 100000\n\
         registrations_per_address_per_minute = 0\nlogins_per_address_per_minute = 0\n",
    )
    .await;
    let api = Api::new(cluster.nodes[0].http);
    let firsts = [First::Send, First::Ack, First::Typing, First::StaleSync];
    for trial in 0..16 {
        let first = firsts[trial % firsts.len()];
        let alice = api.user(&format!("alice{trial}")).await;
        let bob = api.user(&format!("bob{trial}")).await;
        let conv = api.direct(&alice, &bob).await;
        let mut a = open(&cluster, "", &alice).await;
        // One message Bob receives and acknowledges before going offline.
        alice_sends(&mut a, conv, "before", 1).await;
        let mut b = open(&cluster, "", &bob).await;
        b.wait_for("first message", T, |f| {
            f["type"] == "message" && f["seq"] == 1
        })
        .await;
        b.send(json!({"type":"ack","conv_id":conv,"seq":1,"kind":"seen"}))
            .await;
        a.wait_for("bob saw 1", T, |f| {
            f["type"] == "receipt" && f["user_id"] == bob.id && f["seen_seq"] == 1
        })
        .await;
        b.close().await;

        // Offline: Alice sends seq 2..=4.
        alice_sends(&mut a, conv, "offline", 3).await;

        let mut b = open(&cluster, "", &bob).await;
        match first {
            First::Send => {
                b.send(json!({"type":"send","to_user":alice.id,"client_msg_id":"queued","body":"queued while offline"}))
                    .await
            }
            First::Ack => {
                b.send(json!({"type":"ack","conv_id":conv,"seq":1,"kind":"seen"}))
                    .await
            }
            First::Typing => b.send(json!({"type":"typing","conv_id":conv})).await,
            First::StaleSync => {
                b.send(json!({"type":"sync","ref":"s1","watermarks":{conv.to_string(): 0}}))
                    .await
            }
        }
        b.wait_for("synced", T, |f| f["type"] == "synced").await;
        let expected_last = if matches!(first, First::Send) { 5 } else { 4 };
        let got = poll_seqs(&b, conv, expected_last).await;
        match first {
            // A stale sync asks for everything again after the automatic
            // sync: each of the two passes is in order.
            First::StaleSync => {
                for s in 2..=4 {
                    assert!(got.contains(&s), "trial {trial} {first:?}: {got:?}");
                }
                b.wait_for("s1 synced", T, |f| {
                    f["type"] == "synced" && f["ref"] == "s1"
                })
                .await;
            }
            _ => assert_eq!(
                got,
                (2..=expected_last).collect::<Vec<_>>(),
                "trial {trial} {first:?}: every missed message, once, in order"
            ),
        }
        // Sending proved nothing about 2..=4: they stay unread until seen,
        // and Bob's own message is never unread for him.
        assert_eq!(unread(&api, &bob, conv).await, 3, "trial {trial} {first:?}");
        b.send(json!({"type":"ack","conv_id":conv,"seq":expected_last,"kind":"seen"}))
            .await;
        wait_unread(&api, &bob, conv, 0).await;
        // Alice sees Bob's receipts move only when he acknowledges.
        a.wait_for("bob saw all", T, |f| {
            f["type"] == "receipt" && f["user_id"] == bob.id && f["seen_seq"] == expected_last
        })
        .await;
        a.close().await;
        b.close().await;
    }
}

/// Waits until `ws` has received `conv`'s messages up to `last`.
async fn poll_seqs(ws: &Ws, conv: u64, last: u64) -> Vec<u64> {
    tests::wait::until("messages up to the last", T, || {
        let got = seqs(ws, conv);
        async move { got.contains(&last).then_some(got) }
    })
    .await
}

async fn wait_unread(api: &Api, user: &User, conv: u64, n: u64) {
    tests::wait::until("unread count", T, || async move {
        (unread(api, user, conv).await == n).then_some(())
    })
    .await
}

/// Live messages sent while a device catches up arrive after the ones it
/// missed, in one gapless increasing sequence.
#[tokio::test]
async fn live_messages_during_a_sync_keep_the_order() {
    let cluster = TestCluster::start_with_config(
        1,
        "[gateway]\nsends_per_second = 100000\nsend_burst = 100000\n",
    )
    .await;
    let api = Api::new(cluster.nodes[0].http);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let conv = api.direct(&alice, &bob).await;
    let mut a = open(&cluster, "", &alice).await;
    alice_sends(&mut a, conv, "missed", 400).await;
    // Alice keeps sending while Bob connects and catches up.
    let sender = tokio::spawn(async move {
        alice_sends(&mut a, conv, "live", 200).await;
        a
    });
    let b = open(&cluster, "", &bob).await;
    let a = sender.await.expect("sender");
    let got = poll_seqs(&b, conv, 600).await;
    assert_eq!(got, (1..=600).collect::<Vec<_>>());
    let synced = b.wait_for("synced", T, |f| f["type"] == "synced").await;
    assert!(synced["messages"].as_u64().unwrap_or(0) >= 400, "{synced}");
    a.close().await;
}

/// A sync naming conversations the user left, was removed from, that were
/// deleted or never existed still syncs every other one, and says which
/// were refused.
#[tokio::test]
async fn sync_never_fails_as_a_whole() {
    let cluster = TestCluster::start(1).await;
    let api = Api::new(cluster.nodes[0].http);
    let (alice, bob, carol) = (
        api.user("alice").await,
        api.user("bob").await,
        api.user("carol").await,
    );
    let removed = api.group(&alice, "removed", &[&bob]).await;
    let left = api.group(&alice, "left", &[&bob]).await;
    let deleted = api.group(&alice, "deleted", &[&bob, &carol]).await;
    let direct = api.direct(&alice, &bob).await;
    let mut a = open(&cluster, "", &alice).await;
    for conv in [removed, left, deleted, direct] {
        alice_sends(&mut a, conv, &format!("c{conv}"), 2).await;
    }
    let (s, body) = api
        .call(
            "DELETE",
            &format!("/api/groups/{removed}/members/{}", bob.id),
            Some(&alice.token),
            None,
        )
        .await;
    assert!(s == 204 || s == 200, "remove: {s} {body}");
    let (s, body) = api
        .call(
            "POST",
            &format!("/api/groups/{left}/leave"),
            Some(&bob.token),
            None,
        )
        .await;
    assert!(s == 204 || s == 200, "leave: {s} {body}");
    let (s, body) = api
        .call(
            "DELETE",
            &format!("/api/groups/{deleted}"),
            Some(&alice.token),
            None,
        )
        .await;
    assert!(s == 204 || s == 200, "delete: {s} {body}");

    let mut b = open(&cluster, "", &bob).await;
    b.wait_for("automatic synced", T, |f| f["type"] == "synced")
        .await;
    let unknown = 987_654u64;
    let watermarks = json!({
        removed.to_string(): 0, left.to_string(): 0, deleted.to_string(): 0,
        direct.to_string(): 0, unknown.to_string(): 0,
    });
    b.send(json!({"type":"sync","ref":"full","watermarks": watermarks}))
        .await;
    let synced = b
        .wait_for("synced full", T, |f| {
            f["type"] == "synced" && f["ref"] == "full"
        })
        .await;
    let refused: Vec<u64> = synced["errors"]
        .as_array()
        .map(|e| e.iter().filter_map(|x| x["conv_id"].as_u64()).collect())
        .unwrap_or_default();
    for conv in [removed, left, deleted, unknown] {
        assert!(refused.contains(&conv), "{conv} not refused: {synced}");
    }
    assert!(!refused.contains(&direct), "{synced}");
    for e in synced["errors"].as_array().into_iter().flatten() {
        let code = e["code"].as_str().unwrap_or_default();
        assert!(code == "forbidden" || code == "not_found", "{e}");
    }
    // The direct chat synced (from 0: its two messages again).
    let direct_seqs = seqs(&b, direct);
    assert_eq!(
        direct_seqs.iter().filter(|&&s| s == 2).count(),
        2,
        "{direct_seqs:?}"
    );
    // Nothing of the conversations Bob is out of reached him.
    for conv in [removed, left, deleted] {
        assert!(seqs(&b, conv).is_empty(), "{conv}: {:?}", seqs(&b, conv));
    }
    // And new messages of the one he was removed from do not either.
    alice_sends(&mut a, removed, "after", 1).await;
    alice_sends(&mut a, direct, "marker", 1).await;
    poll_seqs(&b, direct, 3).await;
    assert!(seqs(&b, removed).is_empty());
    b.send(json!({"type":"ping"})).await;
    b.wait_for("still usable", T, |f| f["type"] == "pong").await;
}

/// Two devices of one user: one offline while the other reads and
/// acknowledges; the offline one reconnects and receives everything it
/// missed. Devices are told apart by their login, or by `device_id`.
#[tokio::test]
async fn each_device_receives_what_it_missed() {
    let cluster = TestCluster::start(1).await;
    let api = Api::new(cluster.nodes[0].http);
    let alice = api.user("alice").await;
    let phone = api.user("bob").await;
    let laptop = api.login("bob").await;
    let conv = api.direct(&alice, &phone).await;
    let mut a = open(&cluster, "", &alice).await;

    // Separate logins are separate devices.
    let mut l = open(&cluster, "", &laptop).await;
    alice_sends(&mut a, conv, "m", 5).await;
    poll_seqs(&l, conv, 5).await;
    l.send(json!({"type":"ack","conv_id":conv,"seq":5,"kind":"seen"}))
        .await;
    a.wait_for("seen 5", T, |f| {
        f["type"] == "receipt" && f["seen_seq"] == 5
    })
    .await;
    l.close().await;
    let p = open(&cluster, "", &phone).await;
    p.wait_for("synced", T, |f| f["type"] == "synced").await;
    assert_eq!(seqs(&p, conv), (1..=5).collect::<Vec<_>>());
    p.close().await;

    // One login on two installations: `device_id` tells them apart.
    let mut d1 = open(&cluster, "&device_id=desk-1", &laptop).await;
    let d2 = open(&cluster, "&device_id=tablet_2", &laptop).await;
    d2.wait_for("synced", T, |f| f["type"] == "synced").await;
    d2.close().await;
    alice_sends(&mut a, conv, "n", 3).await;
    poll_seqs(&d1, conv, 8).await;
    d1.send(json!({"type":"ack","conv_id":conv,"seq":8,"kind":"seen"}))
        .await;
    a.wait_for("seen 8", T, |f| {
        f["type"] == "receipt" && f["seen_seq"] == 8
    })
    .await;
    d1.close().await;
    let d2 = open(&cluster, "&device_id=tablet_2", &laptop).await;
    d2.wait_for("synced", T, |f| f["type"] == "synced").await;
    assert_eq!(seqs(&d2, conv), vec![6, 7, 8], "the tablet's own cursor");
    // The desk acknowledged 8: it gets nothing again.
    let d1 = open(&cluster, "&device_id=desk-1", &laptop).await;
    d1.wait_for("synced", T, |f| f["type"] == "synced").await;
    assert!(seqs(&d1, conv).is_empty(), "{:?}", seqs(&d1, conv));

    // A bad device id is refused before the upgrade.
    let bad = Ws::connect(&format!(
        "{}&device_id=no%20spaces",
        cluster.nodes[0].ws_url(&laptop.token)
    ))
    .await;
    assert!(bad.is_err());
}

/// Logging out ends every WebSocket opened with that token; other logins
/// of the same user stay.
#[tokio::test]
async fn logout_ends_the_tokens_sockets() {
    let cluster = TestCluster::start(1).await;
    let api = Api::new(cluster.nodes[0].http);
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let other = api.login("bob").await;
    let conv = api.direct(&alice, &bob).await;
    let mut b = open(&cluster, "", &bob).await;
    let o = open(&cluster, "", &other).await;
    b.wait_for("hello", T, |f| f["type"] == "hello").await;
    o.wait_for("hello", T, |f| f["type"] == "hello").await;
    let (s, _) = api
        .call("POST", "/api/logout", Some(&bob.token), None)
        .await;
    assert_eq!(s, 204);
    tests::wait::until("closed", T, || {
        let closed = b.closed();
        async move { closed }
    })
    .await;
    assert_eq!(b.closed().map(|c| c.0), Some(1008));
    b.send(send(conv, "after-logout", "should not go")).await;
    let mut a = open(&cluster, "", &alice).await;
    alice_sends(&mut a, conv, "probe", 1).await;
    poll_seqs(&o, conv, 1).await;
    assert!(o.of_type("message").iter().all(|f| f["sender"] == alice.id));
    assert!(!o.ended(), "the other login stays connected");
}

/// Logging out on one node ends the token's sockets on the others.
#[tokio::test]
async fn logout_on_one_node_ends_the_tokens_sockets_on_every_node() {
    let cluster = TestCluster::start(2).await;
    cluster.await_full_mesh().await;
    let api = Api::new(cluster.nodes[0].http);
    let _alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let mut elsewhere = Vec::new();
    for node in &cluster.nodes {
        let ws = Ws::connect(&node.ws_url(&bob.token))
            .await
            .expect("connect");
        ws.wait_for("hello", T, |f| f["type"] == "hello").await;
        elsewhere.push(ws);
    }
    let (s, _) = api
        .call("POST", "/api/logout", Some(&bob.token), None)
        .await;
    assert_eq!(s, 204);
    for (i, ws) in elsewhere.iter().enumerate() {
        tests::wait::until(&format!("bob's socket on node {i} closed"), T, || {
            let closed = ws.closed();
            async move { closed }
        })
        .await;
        assert_eq!(ws.closed().map(|c| c.0), Some(1008), "node {i}");
    }
    // The token opens nothing any more, on any node.
    for node in &cluster.nodes {
        if let Ok(ws) = Ws::connect(&node.ws_url(&bob.token)).await {
            tests::wait::until("refused", T, || {
                let closed = ws.closed();
                async move { closed }
            })
            .await;
            assert!(ws.of_type("hello").is_empty(), "no session after logout");
        }
    }
}

/// A client that asks for sync after sync gets a named refusal beyond
/// one running and one waiting, and every accepted one ends in `synced`.
#[tokio::test]
async fn sync_requests_are_bounded_per_connection() {
    let cluster = TestCluster::start_with_config(
        1,
        "[gateway]\nsends_per_second = 100000\nsend_burst = 100000\n",
    )
    .await;
    let api = Api::new(cluster.nodes[0].http);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let conv = api.direct(&alice, &bob).await;
    let mut a = open(&cluster, "", &alice).await;
    alice_sends(&mut a, conv, "m", 50).await;
    let mut b = open(&cluster, "", &bob).await;
    for i in 0..20 {
        b.send(json!({"type":"sync","ref":format!("s{i}"),"watermarks":{conv.to_string(): 0}}))
            .await;
    }
    let refused = b
        .wait_for("a refusal", T, |f| {
            f["type"] == "error" && f["code"] == "rate_limited"
        })
        .await;
    assert!(refused["ref"].as_str().is_some_and(|r| r.starts_with('s')));
    // Every sync is answered: refused by name, or ended by its `synced`.
    tests::wait::until("every sync answered", T, || {
        let frames = b.frames();
        async move {
            let answered = frames
                .iter()
                .filter(|f| {
                    let named = f["ref"].as_str().is_some_and(|r| r.starts_with('s'));
                    named && (f["type"] == "synced" || f["code"] == "rate_limited")
                })
                .count();
            (answered == 20).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_flood_of_acks_in_any_order_leaves_the_highest_of_each() {
    // A client that acks every frame, repeats itself and sends its acks
    // out of order (several tabs, retries): the node folds them, and what
    // stands is the highest of each kind, exactly as if they came one by
    // one. Seeded shuffle: PARLEY_ACK_SEED replays one.
    let seed: u64 = std::env::var("PARLEY_ACK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("ack seed: {seed}");
    let cluster = TestCluster::start(1).await;
    let api = Api::new(cluster.nodes[0].http);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let conv = api.direct(&alice, &bob).await;
    let mut a = open(&cluster, "", &alice).await;
    alice_sends(&mut a, conv, "m", 20).await;

    let mut b = open(&cluster, "&device_id=bobs-phone", &bob).await;
    b.wait_for_n("all 20", 20, T, |f| f["type"] == "message")
        .await;
    let mut acks: Vec<Value> = (0..2000u64)
        .map(|i| json!({"type": "ack", "conv_id": conv, "seq": i % 20 + 1, "kind": "delivered"}))
        .chain(
            (1..=12u64)
                .map(|seq| json!({"type": "ack", "conv_id": conv, "seq": seq, "kind": "seen"})),
        )
        .collect();
    use rand::seq::SliceRandom;
    acks.shuffle(&mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed));
    for ack in acks {
        b.send(ack).await;
    }
    // One past the end is refused by name; it does not take the place of
    // the good ones.
    b.send(json!({"type": "ack", "conv_id": conv, "seq": 21, "kind": "seen", "ref": "too-far"}))
        .await;
    b.wait_for("the refusal", T, |f| {
        f["type"] == "error" && f["code"] == "bad_request" && f["ref"] == "too-far"
    })
    .await;

    // Alice sees bob's watermarks arrive at delivered 20, seen 12.
    a.wait_for("bob's final receipt", T, |f| {
        f["type"] == "receipt"
            && f["user_id"] == bob.id
            && f["delivered_seq"] == 20
            && f["seen_seq"] == 12
    })
    .await;
    let (status, body) = api
        .call(
            "GET",
            &format!("/api/conversations/{conv}/receipts"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let bobs = body["receipts"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["user_id"] == bob.id))
        .unwrap_or_else(|| panic!("bob in {body}"))
        .clone();
    assert_eq!(
        (bobs["delivered_seq"].as_u64(), bobs["seen_seq"].as_u64()),
        (Some(20), Some(12))
    );
    assert_eq!(unread(&api, &bob, conv).await, 8);

    // The phone's cursor stands at 20: reconnecting, it is owed nothing.
    b.close().await;
    let again = open(&cluster, "&device_id=bobs-phone", &bob).await;
    again.wait_for("synced", T, |f| f["type"] == "synced").await;
    assert_eq!(seqs(&again, conv), Vec::<u64>::new());
}

/// A member removed and added back: their device, connected throughout,
/// receives what was said while they were away, the deletion of a message
/// it already showed included, so it stops showing that text; the unread
/// count is what it can be sent; search finds what history shows.
#[tokio::test]
async fn a_member_added_back_gets_the_deletions_made_while_away() {
    let cluster = TestCluster::start(1).await;
    let api = Api::new(cluster.nodes[0].http);
    let alice = api.user("alice").await;
    let carol = api.user("carol").await;
    let g = api.group(&alice, "team", &[&carol]).await;
    let mut a = open(&cluster, "", &alice).await;
    let c = open(&cluster, "", &carol).await;
    a.wait_for("hello", T, |f| f["type"] == "hello").await;
    c.wait_for("synced", T, |f| f["type"] == "synced").await;
    alice_sends(&mut a, g, "before", 1).await;
    c.wait_for("the message", T, |f| {
        f["type"] == "message" && f["seq"] == 1
    })
    .await;
    let (status, body) = api
        .call(
            "DELETE",
            &format!("/api/groups/{g}/members/{}", carol.id),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    alice_sends(&mut a, g, "away", 1).await;
    a.send(json!({"type":"delete","conv_id": g,"seq": 1,"client_msg_id":"del-1"}))
        .await;
    a.wait_for("the deletion", T, |f| {
        f["type"] == "sent" && f["client_msg_id"] == "del-1"
    })
    .await;
    api.add_member(&alice, g, &carol).await;
    // Carol's device gets the deletion of what it showed, and the message
    // of while she was away.
    c.wait_for("the deletion made while away", T, |f| {
        f["type"] == "message" && f["conv_id"] == g && f["kind"] == "delete" && f["target"] == 1
    })
    .await;
    c.wait_for("the message of while away", T, |f| {
        f["type"] == "message" && f["conv_id"] == g && f["seq"] == 2
    })
    .await;
    // Unread: the message of while away; a tombstone and a deletion are
    // unread for nobody.
    assert_eq!(unread(&api, &carol, g).await, 1);
    let (status, found) = api
        .call("GET", "/api/search?q=away", Some(&carol.token), None)
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["hits"].as_array().map(Vec::len), Some(1), "{found}");
}

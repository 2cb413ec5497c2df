//! Edit, delete, reply, react, mention, mute and search end to end: real
//! node processes, WebSocket and HTTP clients, a member who was offline and
//! syncs later, the store file read back after a deletion, and a 3-node
//! cluster whose home node of the conversation is killed mid-way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tests::client::{Api, User, Ws};
use tests::node::{Node, TestCluster};
use tests::store::TestStore;
use tests::wait::until;

const T: Duration = Duration::from_secs(20);

/// What a client shows for one text message, from the frames it received
/// (or from a history page).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Shown {
    body: String,
    deleted: bool,
    edited: bool,
    reply_to: Option<u64>,
    /// (emoji, user id).
    reactions: BTreeSet<(String, u64)>,
}

/// Applies the `message` frames of `conv`, each seq once, in seq order:
/// text messages appear, events change their target.
fn shown_from_frames(frames: &[Value], conv: u64) -> BTreeMap<u64, Shown> {
    let mut by_seq: BTreeMap<u64, &Value> = BTreeMap::new();
    for f in frames {
        if f["type"] == "message" && f["conv_id"] == conv {
            by_seq.entry(f["seq"].as_u64().expect("seq")).or_insert(f);
        }
    }
    let mut shown: BTreeMap<u64, Shown> = BTreeMap::new();
    for (seq, f) in by_seq {
        let target = f["target"].as_u64();
        match f["kind"].as_str().expect("kind") {
            "text" => {
                shown.insert(
                    seq,
                    Shown {
                        body: f["body"].as_str().expect("body").to_owned(),
                        deleted: f["deleted"] == true,
                        edited: f["edited_at"].is_u64(),
                        reply_to: f["reply_to"].as_u64(),
                        reactions: BTreeSet::new(),
                    },
                );
            }
            "edit" => {
                let m = shown.entry(target.expect("target")).or_default();
                m.body = f["body"].as_str().expect("body").to_owned();
                m.edited = true;
            }
            "delete" => {
                let m = shown.entry(target.expect("target")).or_default();
                *m = Shown {
                    deleted: true,
                    reply_to: None,
                    ..Shown::default()
                };
            }
            "reaction" => {
                let m = shown.entry(target.expect("target")).or_default();
                let r = (
                    f["emoji"].as_str().expect("emoji").to_owned(),
                    f["sender"].as_u64().expect("sender"),
                );
                if f["added"] == true {
                    m.reactions.insert(r);
                } else {
                    m.reactions.remove(&r);
                }
            }
            other => panic!("unknown kind {other}"),
        }
    }
    shown
}

/// The same from a history page: text messages in their current state.
fn shown_from_history(page: &Value) -> BTreeMap<u64, Shown> {
    let mut shown = BTreeMap::new();
    for m in page["messages"].as_array().expect("messages") {
        if m["kind"] != "text" {
            continue;
        }
        let mut reactions = BTreeSet::new();
        for r in m["reactions"].as_array().into_iter().flatten() {
            for u in r["users"].as_array().expect("users") {
                reactions.insert((
                    r["emoji"].as_str().expect("emoji").to_owned(),
                    u.as_u64().expect("user"),
                ));
            }
        }
        shown.insert(
            m["seq"].as_u64().expect("seq"),
            Shown {
                body: m["body"].as_str().expect("body").to_owned(),
                deleted: m["deleted"] == true,
                edited: m["edited_at"].is_u64(),
                reply_to: m["reply_to"].as_u64(),
                reactions,
            },
        );
    }
    shown
}

/// Connects and waits for the sync that follows `hello`.
async fn connect(node: &Node, user: &User) -> Ws {
    let ws = Ws::connect(&node.ws_url(&user.token))
        .await
        .expect("connect");
    ws.wait_for("synced", T, |f| f["type"] == "synced").await;
    ws
}

/// Sends a frame and waits for its `sent`: its seq.
async fn sent(ws: &mut Ws, frame: Value) -> u64 {
    ws.request_seq(frame).await
}

/// Sends a frame that must be refused; returns the error frame's code.
async fn refused(ws: &mut Ws, frame: Value) -> String {
    let got = ws.request(frame).await;
    assert_eq!(got["type"], "error", "should be refused: {got}");
    got["code"].as_str().expect("code").to_owned()
}

async fn history(api: &Api, user: &User, conv: u64) -> Value {
    let (status, page) = api
        .call(
            "GET",
            &format!("/api/conversations/{conv}/messages?limit=200"),
            Some(&user.token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page
}

/// Waits until `ws` has received message `seq` of `conv`.
async fn has_seq(ws: &Ws, conv: u64, seq: u64) {
    ws.wait_for(&format!("message {conv}/{seq}"), T, |f| {
        f["type"] == "message" && f["conv_id"] == conv && f["seq"] == seq
    })
    .await;
}

/// Whether any file of the store holds `needle`'s bytes (the SQLite file
/// and its WAL).
fn store_files_hold(dir: &Path, needle: &str) -> bool {
    std::fs::read_dir(dir)
        .expect("store dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("sqlite"))
        .any(|e| {
            std::fs::read(e.path())
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        })
}

#[tokio::test]
async fn every_member_sees_the_same_edits_deletions_replies_and_reactions() {
    let cluster = TestCluster::start(1).await;
    let node = &cluster.nodes[0];
    let api = Api::new(node.http);
    let (alice, bob, carol, dave) = (
        api.user("alice").await,
        api.user("bob").await,
        api.user("carol").await,
        api.user("dave").await,
    );
    let g = api.group(&alice, "team", &[&bob, &carol, &dave]).await;
    let (status, _) = api
        .call(
            "POST",
            &format!("/api/groups/{g}/leave"),
            Some(&dave.token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let mut a = connect(node, &alice).await;
    let mut b = connect(node, &bob).await;

    // A message, and a reply over HTTP that mentions alice and carol.
    let m1 = sent(
        &mut a,
        json!({"type": "send", "conv_id": g, "client_msg_id": "a1", "body": "launch at ten zanzibar"}),
    )
    .await;
    let (status, reply) = api
        .call(
            "POST",
            &format!("/api/conversations/{g}/messages"),
            Some(&bob.token),
            Some(json!({"body": "ok @alice and @Carol", "client_msg_id": "b1", "reply_to": m1})),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let m2 = reply["seq"].as_u64().expect("seq");
    let frame = a
        .wait_for("the reply", T, |f| f["type"] == "message" && f["seq"] == m2)
        .await;
    assert_eq!(frame["kind"], "text");
    assert_eq!(frame["reply_to"], m1);
    assert_eq!(frame["reply"]["preview"], "launch at ten zanzibar");
    assert_eq!(frame["reply"]["sender"], alice.id);
    assert_eq!(frame["mentions"], json!([alice.id, carol.id]));
    // The same send again over HTTP: the original seq, nothing new.
    let (status, again) = api
        .call(
            "POST",
            &format!("/api/conversations/{g}/messages"),
            Some(&bob.token),
            Some(json!({"body": "ok @alice and @Carol", "client_msg_id": "b1", "reply_to": m1})),
        )
        .await;
    assert_eq!((status, again["seq"].as_u64()), (201, Some(m2)));

    // Reactions, over the socket and over HTTP (percent-encoded emoji).
    sent(
        &mut b,
        json!({"type": "react", "conv_id": g, "seq": m1, "emoji": "👍", "client_msg_id": "b2"}),
    )
    .await;
    let (status, body) = api
        .call(
            "PUT",
            &format!("/api/conversations/{g}/messages/{m1}/reactions/%F0%9F%8E%89"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    sent(
        &mut b,
        json!({"type": "react", "conv_id": g, "seq": m2, "emoji": "❤️", "client_msg_id": "b3"}),
    )
    .await;
    // Edits: the author, twice.
    sent(
        &mut a,
        json!({"type": "edit", "conv_id": g, "seq": m1, "body": "launch at eleven", "client_msg_id": "a2"}),
    )
    .await;
    let (status, body) = api
        .call(
            "PATCH",
            &format!("/api/conversations/{g}/messages/{m1}"),
            Some(&alice.token),
            Some(json!({"body": "launch at noon", "client_msg_id": "a3"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Bad input: refused with a clear error, and nothing changes.
    let before = history(&api, &alice, g).await;
    let code = refused(
        &mut b,
        json!({"type": "edit", "conv_id": g, "seq": m1, "body": "mine now", "client_msg_id": "x1"}),
    )
    .await;
    assert_eq!(code, "forbidden", "editing another's message");
    let code = refused(
        &mut b,
        json!({"type": "delete", "conv_id": g, "seq": m1, "client_msg_id": "x2"}),
    )
    .await;
    assert_eq!(
        code, "forbidden",
        "a plain member deleting another's message"
    );
    let code = refused(
        &mut a,
        json!({"type": "edit", "conv_id": g, "seq": 999, "body": "ghost", "client_msg_id": "x3"}),
    )
    .await;
    assert_eq!(code, "not_found", "an unknown seq");
    let code = refused(
        &mut a,
        json!({"type": "edit", "conv_id": g, "seq": m1, "body": "x".repeat(5000), "client_msg_id": "x4"}),
    )
    .await;
    assert_eq!(code, "too_large", "an oversized edit");
    let code = refused(
        &mut a,
        json!({"type": "react", "conv_id": g, "seq": m1, "emoji": "lol", "client_msg_id": "x5"}),
    )
    .await;
    assert_eq!(code, "bad_request", "not an emoji");
    let code = refused(
        &mut b,
        json!({"type": "send", "conv_id": g, "client_msg_id": "x6", "body": "re", "reply_to": 999}),
    )
    .await;
    assert_eq!(code, "bad_request", "a reply to nothing");
    // An error names the request by its `ref` when it has one.
    b.send(json!({"type": "edit", "conv_id": g, "seq": m1, "body": "x", "client_msg_id": "x7", "ref": "r-77"}))
        .await;
    let error = b
        .wait_for("the error for r-77", T, |f| {
            f["type"] == "error" && f["ref"] == "r-77"
        })
        .await;
    assert_eq!(error["code"], "forbidden");
    for (method, path, who, want) in [
        (
            "PATCH",
            format!("/api/conversations/{g}/messages/{m1}"),
            &bob,
            403,
        ),
        (
            "PATCH",
            format!("/api/conversations/{g}/messages/999"),
            &alice,
            404,
        ),
        (
            "DELETE",
            format!("/api/conversations/{g}/messages/{m1}"),
            &bob,
            403,
        ),
        (
            "PUT",
            format!("/api/conversations/{g}/messages/{m1}/reactions/%F0%9F%91%8D"),
            &dave,
            403,
        ),
        (
            "GET",
            format!("/api/conversations/{g}/messages/{m1}/edits"),
            &dave,
            403,
        ),
    ] {
        let body = (method == "PATCH").then(|| json!({"body": "nope"}));
        let (status, got) = api.call(method, &path, Some(&who.token), body).await;
        assert_eq!(status, want, "{method} {path} by {}: {got}", who.name);
        assert!(got["error"]["code"].is_string(), "{got}");
        assert!(got["error"]["message"].is_string(), "{got}");
    }
    assert_eq!(
        history(&api, &alice, g).await,
        before,
        "refusals changed nothing"
    );

    // The group admin deletes bob's reply: a tombstone, its reactions gone.
    sent(
        &mut a,
        json!({"type": "delete", "conv_id": g, "seq": m2, "client_msg_id": "a4"}),
    )
    .await;
    let noted = sent(
        &mut b,
        json!({"type": "send", "conv_id": g, "client_msg_id": "b4", "body": "noted"}),
    )
    .await;
    // An edit that adds a mention carries it (for a badge and a highlight).
    let last = sent(
        &mut b,
        json!({"type": "edit", "conv_id": g, "seq": noted, "body": "noted @carol.", "client_msg_id": "b5"}),
    )
    .await;
    let edit = a
        .wait_for("bob's edit", T, |f| {
            f["type"] == "message" && f["seq"] == last
        })
        .await;
    assert_eq!(
        (&edit["kind"], &edit["target"], &edit["mentions"]),
        (&json!("edit"), &json!(noted), &json!([carol.id]))
    );

    // Everyone, carol included (offline until now, syncing on connect),
    // ends up showing the same thing, which is what history says.
    let c = connect(node, &carol).await;
    for ws in [&a, &b, &c] {
        has_seq(ws, g, last).await;
    }
    let page = history(&api, &carol, g).await;
    let truth = shown_from_history(&page);
    assert_eq!(truth[&m1].body, "launch at noon");
    assert!(truth[&m1].edited);
    assert_eq!(
        truth[&m1].reactions,
        BTreeSet::from([("👍".to_owned(), bob.id), ("🎉".to_owned(), alice.id)])
    );
    assert!(truth[&m2].deleted && truth[&m2].body.is_empty());
    assert!(truth[&m2].reactions.is_empty());
    for (who, ws) in [("alice", &a), ("bob", &b), ("carol", &c)] {
        assert_eq!(shown_from_frames(&ws.frames(), g), truth, "{who}'s view");
    }

    // The edit history, oldest first.
    let (status, edits) = api
        .call(
            "GET",
            &format!("/api/conversations/{g}/messages/{m1}/edits"),
            Some(&carol.token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let texts: Vec<&str> = edits["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["body"].as_str().expect("body"))
        .collect();
    assert_eq!(
        texts,
        [
            "launch at ten zanzibar",
            "launch at eleven",
            "launch at noon"
        ]
    );
    let (status, reactions) = api
        .call(
            "GET",
            &format!("/api/conversations/{g}/messages/{m1}/reactions"),
            Some(&carol.token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(reactions["reactions"].as_array().map(Vec::len), Some(2));

    // Carol's chat list: events are not unread, the tombstone neither; the
    // last message mentions her (the deleted reply did too, no more).
    let (_, list) = api
        .call("GET", "/api/chats", Some(&carol.token), None)
        .await;
    let row = &list["chats"][0];
    assert_eq!(row["unread"], 2, "{row}");
    assert_eq!(row["mentions"], 1, "{row}");

    // The deleted reply's text is in none of the store's files any more
    // (the first text, edited away, is kept on purpose: edit history).
    if matches!(TestStore::from_env(), TestStore::Sqlite) {
        until("the deleted text to leave the store files", T, || async {
            (!store_files_hold(cluster.dir(), "and @Carol")).then_some(())
        })
        .await;
        assert!(
            !store_files_hold(cluster.dir(), "ok @alice"),
            "the deleted reply is still in the store"
        );
    }
    let _ = &mut a;
}

#[tokio::test]
async fn search_finds_only_what_the_user_could_read() {
    let cluster = TestCluster::start(1).await;
    let api = Api::new(cluster.nodes[0].http);
    let (alice, bob, carol, dave) = (
        api.user("alice").await,
        api.user("bob").await,
        api.user("carol").await,
        api.user("dave").await,
    );
    let g = api.group(&alice, "fruit", &[&bob]).await;
    let dm = api.direct(&alice, &dave).await;
    let send = |user: &User, conv: u64, id: &str, body: &str| {
        let (api, token) = (api.clone(), user.token.clone());
        let (id, body) = (id.to_owned(), body.to_owned());
        async move {
            let (status, got) = api
                .call(
                    "POST",
                    &format!("/api/conversations/{conv}/messages"),
                    Some(&token),
                    Some(json!({"body": body, "client_msg_id": id})),
                )
                .await;
            assert_eq!(status, 201, "{got}");
            got["seq"].as_u64().expect("seq")
        }
    };
    let s1 = send(&alice, g, "s1", "Kiwi season starts").await;
    api.add_member(&alice, g, &carol).await;
    let s2 = send(&bob, g, "s2", "more KIWI please, kiwi!").await;
    let d1 = send(&alice, dm, "d1", "a kiwi for dave").await;
    let search = |user: &User, q: &str| {
        let (api, token, q) = (api.clone(), user.token.clone(), q.to_owned());
        async move {
            let (status, got) = api
                .call("GET", &format!("/api/search?q={q}"), Some(&token), None)
                .await;
            assert_eq!(status, 200, "{got}");
            got["hits"]
                .as_array()
                .expect("hits")
                .iter()
                .map(|h| {
                    (
                        h["conv_id"].as_u64().unwrap_or(0),
                        h["seq"].as_u64().unwrap_or(0),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(search(&alice, "kiwi").await, [(dm, d1), (g, s2), (g, s1)]);
    assert_eq!(search(&bob, "kiwi").await, [(g, s2), (g, s1)]);
    assert_eq!(
        search(&carol, "kiwi").await,
        [(g, s2)],
        "only since she joined"
    );
    assert_eq!(search(&dave, "kiwi").await, [(dm, d1)]);
    assert_eq!(search(&alice, "kiwi%20season").await, [(g, s1)]);
    // The match is marked.
    let (_, got) = api
        .call("GET", "/api/search?q=kiwi&limit=1", Some(&bob.token), None)
        .await;
    let marked: Vec<&str> = got["hits"][0]["fragments"]
        .as_array()
        .expect("fragments")
        .iter()
        .filter(|f| f["match"] == true)
        .map(|f| f["text"].as_str().expect("text"))
        .collect();
    assert_eq!(marked, ["KIWI", "kiwi"]);
    let cursor = got["next_cursor"].as_str().expect("a next page").to_owned();
    let (_, next) = api
        .call(
            "GET",
            &format!("/api/search?q=kiwi&limit=1&cursor={cursor}"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(next["hits"][0]["seq"], s1);
    // Leaving ends it; a deleted message is never found.
    let (status, _) = api
        .call(
            "POST",
            &format!("/api/groups/{g}/leave"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert!(search(&bob, "kiwi").await.is_empty());
    let (status, _) = api
        .call(
            "DELETE",
            &format!("/api/conversations/{dm}/messages/{d1}?client_msg_id=del1"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(search(&dave, "kiwi").await, []);
    // A reaction with the emoji in a JSON body instead of the path.
    let (status, got) = api
        .call(
            "POST",
            &format!("/api/conversations/{g}/messages/{s1}/reactions"),
            Some(&alice.token),
            Some(json!({"emoji": "🥝", "client_msg_id": "r1"})),
        )
        .await;
    assert_eq!(status, 200, "{got}");
    let (_, got) = api
        .call(
            "GET",
            &format!("/api/conversations/{g}/messages/{s1}/reactions"),
            Some(&carol.token),
            None,
        )
        .await;
    assert_eq!(
        got["reactions"],
        json!([{"emoji": "🥝", "count": 1, "users": [alice.id]}])
    );
    for bad in ["", "%20%2C", "a%20b%20c%20d%20e%20f%20g%20h%20i"] {
        let (status, got) = api
            .call(
                "GET",
                &format!("/api/search?q={bad}"),
                Some(&alice.token),
                None,
            )
            .await;
        assert_eq!(status, 400, "q={bad}: {got}");
    }
    let (status, _) = api.call("GET", "/api/search?q=kiwi", None, None).await;
    assert_eq!(status, 401);
}

/// The `body`s a search by `user` finds, newest first.
async fn search_bodies(api: &Api, user: &User, q: &str) -> Vec<String> {
    let (status, got) = api
        .call(
            "GET",
            &format!("/api/search?q={q}&limit=200"),
            Some(&user.token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{got}");
    got["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| h["body"].as_str().expect("body").to_owned())
        .collect()
}

#[tokio::test]
async fn search_is_immediate_and_the_index_catches_up_after_kill_9() {
    // A follower that would wait ten minutes: nothing gets indexed before
    // the kill, so every search below until the restart reads the log.
    let mut cluster = TestCluster::start_with_config(1, "index_delay_ms = 600000\n").await;
    let api = Api::new(cluster.nodes[0].http);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let dm = api.direct(&alice, &bob).await;
    let mut a = connect(&cluster.nodes[0], &alice).await;
    for i in 1..=20 {
        let seq = sent(
            &mut a,
            json!({"type": "send", "conv_id": dm, "client_msg_id": format!("p{i}"), "body": format!("pelican {i}")}),
        )
        .await;
        // Read-your-writes: found the moment its `sent` arrived.
        let found = search_bodies(&api, &bob, "pelican").await;
        assert_eq!(found.len(), i, "after seq {seq}: {found:?}");
        assert_eq!(found[0], format!("pelican {i}"));
    }
    let edited = sent(
        &mut a,
        json!({"type": "edit", "conv_id": dm, "seq": 3, "body": "cormorant 3", "client_msg_id": "e1"}),
    )
    .await;
    sent(
        &mut a,
        json!({"type": "delete", "conv_id": dm, "seq": 4, "client_msg_id": "d1"}),
    )
    .await;
    assert_eq!(
        search_bodies(&api, &bob, "cormorant").await,
        ["cormorant 3"]
    );
    assert_eq!(search_bodies(&api, &bob, "pelican").await.len(), 18);
    assert_eq!(
        cluster.nodes[0]
            .metric("parley_log_rows_indexed_total")
            .await,
        Some(0.0),
        "indexed before the kill"
    );
    drop(a);

    cluster.nodes[0].kill();
    cluster.nodes[0].remove_env("PARLEY_CONFIG");
    cluster.nodes[0].start().await;
    // The next message activates the conversation again: the follower
    // starts from the committed cursor and goes over the whole log left
    // unindexed by the crash (20 messages, the edit, the deletion, this).
    let mut a = connect(&cluster.nodes[0], &alice).await;
    let last = sent(
        &mut a,
        json!({"type": "send", "conv_id": dm, "client_msg_id": "p21", "body": "pelican 21"}),
    )
    .await;
    assert_eq!(last, edited + 2);
    let node = &cluster.nodes[0];
    until(
        "the index follower to catch up after the restart",
        T,
        || async {
            (node.metric("parley_log_rows_indexed_total").await >= Some(last as f64)).then_some(())
        },
    )
    .await;
    let found = search_bodies(&api, &bob, "pelican").await;
    assert_eq!(found.len(), 19, "{found:?}");
    assert!(!found.iter().any(|b| b == "pelican 3" || b == "pelican 4"));
    assert_eq!(
        search_bodies(&api, &bob, "cormorant").await,
        ["cormorant 3"]
    );
}

#[tokio::test]
async fn mute_is_marked_in_the_chat_list_and_checked() {
    let cluster = TestCluster::start(1).await;
    let api = Api::new(cluster.nodes[0].http);
    let (alice, bob, eve) = (
        api.user("alice").await,
        api.user("bob").await,
        api.user("eve").await,
    );
    let g = api.group(&alice, "noisy", &[&bob]).await;
    let row = |user: &User| {
        let (api, token) = (api.clone(), user.token.clone());
        async move {
            let (_, list) = api.call("GET", "/api/chats", Some(&token), None).await;
            list["chats"][0].clone()
        }
    };
    assert_eq!(row(&bob).await["muted"], false);
    let (status, got) = api
        .call(
            "PUT",
            &format!("/api/conversations/{g}/mute"),
            Some(&bob.token),
            Some(json!({"until": null})),
        )
        .await;
    assert_eq!((status, &got["muted"]), (200, &json!(true)), "{got}");
    let r = row(&bob).await;
    assert_eq!(
        (r["muted"].clone(), r["muted_until"].clone()),
        (json!(true), Value::Null)
    );
    let (status, got) = api
        .call(
            "PUT",
            &format!("/api/conversations/{g}/mute"),
            Some(&bob.token),
            Some(json!({"until": 1000})),
        )
        .await;
    assert_eq!(status, 400, "a mute that ended in 1970: {got}");
    let (status, _) = api
        .call(
            "PUT",
            &format!("/api/conversations/{g}/mute"),
            Some(&eve.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 403, "not a member");
    let (status, _) = api
        .call(
            "DELETE",
            &format!("/api/conversations/{g}/mute"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(row(&bob).await["muted"], false);
}

#[tokio::test]
async fn features_survive_the_home_node_being_killed() {
    let mut cluster = TestCluster::start(3).await;
    let api = Api::new(cluster.nodes[0].http);
    let (alice, bob, carol) = (
        api.user("alice").await,
        api.user("bob").await,
        api.user("carol").await,
    );
    let g = api.group(&alice, "ha", &[&bob, &carol]).await;
    let names = cluster.nodes.iter().map(|n| n.name.as_str());
    let home_name = actors::placement::conversation_home(g, names).expect("a home");
    let home = cluster
        .nodes
        .iter()
        .position(|n| n.name == home_name)
        .expect("home node");
    let others: Vec<usize> = (0..3).filter(|&i| i != home).collect();
    let (na, nb) = (others[0], others[1]);
    let mut a = connect(&cluster.nodes[na], &alice).await;
    let mut b = connect(&cluster.nodes[nb], &bob).await;

    let m1 = sent(
        &mut a,
        json!({"type": "send", "conv_id": g, "client_msg_id": "a1", "body": "before the crash"}),
    )
    .await;
    sent(
        &mut b,
        json!({"type": "react", "conv_id": g, "seq": m1, "emoji": "🔥", "client_msg_id": "b1"}),
    )
    .await;
    let m2 = sent(
        &mut b,
        json!({"type": "send", "conv_id": g, "client_msg_id": "b2", "body": "reply before", "reply_to": m1}),
    )
    .await;

    cluster.nodes[home].kill();

    // The conversation is served again elsewhere: an edit (resent until
    // acknowledged, same client_msg_id), a deletion and a reaction.
    let edit = json!({"type": "edit", "conv_id": g, "seq": m1, "body": "after the crash", "client_msg_id": "a2"});
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    'acked: loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the edit was not acknowledged within 30 s of the kill"
        );
        a.send(edit.clone()).await;
        let retry = tokio::time::Instant::now() + Duration::from_secs(2);
        while tokio::time::Instant::now() < retry {
            if a.frames()
                .iter()
                .any(|f| f["type"] == "sent" && f["client_msg_id"] == "a2")
            {
                break 'acked;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    sent(
        &mut b,
        json!({"type": "delete", "conv_id": g, "seq": m2, "client_msg_id": "b3"}),
    )
    .await;
    sent(
        &mut a,
        json!({"type": "react", "conv_id": g, "seq": m1, "emoji": "🔥", "client_msg_id": "a3"}),
    )
    .await;
    let last = sent(
        &mut b,
        json!({"type": "react", "conv_id": g, "seq": m1, "emoji": "🔥", "remove": true, "client_msg_id": "b4"}),
    )
    .await;

    let api_a = Api::new(cluster.nodes[na].http);
    let c = connect(&cluster.nodes[nb], &carol).await;
    for ws in [&a, &b, &c] {
        has_seq(ws, g, last).await;
    }
    let truth = shown_from_history(&history(&api_a, &carol, g).await);
    assert_eq!(truth[&m1].body, "after the crash");
    assert_eq!(
        truth[&m1].reactions,
        BTreeSet::from([("🔥".to_owned(), alice.id)])
    );
    assert!(truth[&m2].deleted);
    for (who, ws) in [("alice", &a), ("bob", &b), ("carol", &c)] {
        assert_eq!(shown_from_frames(&ws.frames(), g), truth, "{who}'s view");
    }
    // Every seq arrived once per device, in order, with no gap.
    for (who, ws) in [("alice", &a), ("bob", &b), ("carol", &c)] {
        let seqs: BTreeSet<u64> = ws
            .frames()
            .iter()
            .filter(|f| f["type"] == "message" && f["conv_id"] == g)
            .map(|f| f["seq"].as_u64().expect("seq"))
            .collect();
        assert_eq!(seqs, (1..=last).collect(), "{who} has every seq");
    }
    // Search sees the edit, not the deleted reply.
    let (status, got) = api_a
        .call("GET", "/api/search?q=crash", Some(&carol.token), None)
        .await;
    assert_eq!(status, 200);
    let bodies: Vec<&str> = got["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| h["body"].as_str().expect("body"))
        .collect();
    assert_eq!(bodies, ["after the crash"]);
    let (_, got) = api_a
        .call("GET", "/api/search?q=reply", Some(&carol.token), None)
        .await;
    assert_eq!(got["hits"].as_array().map(Vec::len), Some(0));
}

//! Parley Web's message features in a real browser: replies, reactions,
//! mentions, editing with its history, deleting, muting and message search,
//! against a real node, with the other side a plain WebSocket client.
//!
//! Like tests/web.rs: without chromium and chromedriver the test prints a
//! notice and passes locally; in CI (`CI` set) it fails. Screenshots go to
//! `target/web-screenshots/` (prefixed `features-`).

use serde_json::{json, Value};
use tests::browser::chromedriver as driver;
use tests::client::{Api, Ws};
use tests::node::TestCluster;

mod common;
use common::chromium::{Browser, WAIT};

impl Browser {
    /// The seq of the (first) message containing `text`, once stored.
    async fn seq_of(&self, text: &str) -> u64 {
        let seq = self.until(&format!("the message {text:?} stored"), &format!(
            "const m = [...document.querySelectorAll('.msg')].find(e => e.textContent.includes({text:?})); return !!m && !!m.dataset.seq && Number(m.dataset.seq);"
        ))
        .await;
        seq.as_u64().expect("a seq")
    }
}

/// The `message` frame of kind `kind` about `target`, as bob's socket got it.
async fn event_frame(ws: &Ws, kind: &str, target: u64, extra: impl Fn(&Value) -> bool) -> Value {
    ws.wait_for(&format!("a {kind} event on {target}"), WAIT, |f| {
        f["type"] == "message" && f["kind"] == kind && f["target"] == json!(target) && extra(f)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_react_edit_delete_mute_and_search_in_the_browser() {
    let Some(driver) = driver().await else { return };
    let cluster = TestCluster::start(1).await;
    let node = &cluster.nodes[0];
    let api = Api::new(node.http);
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let conv = api.direct(&alice, &bob).await;
    let mut bob_ws = Ws::connect(&node.ws_url(&bob.token))
        .await
        .expect("bob's socket");

    let page = Browser::open(&driver, 1100, 760).await;
    page.goto(&node.url("/")).await;
    page.sign_in("alice", false).await;
    page.open_chat("bob").await;

    // Alice writes, mentioning bob: the server resolves the mention.
    page.type_in("#composer-input", "hello @bob, lunch on friday?")
        .await;
    page.click("#send-btn").await;
    let seq = page.seq_of("lunch on friday").await;
    let first = bob_ws
        .wait_for("alice's message", WAIT, |f| {
            f["type"] == "message" && f["seq"] == json!(seq)
        })
        .await;
    assert_eq!(first["kind"], json!("text"), "{first}");
    assert_eq!(first["mentions"], json!([bob.id]), "{first}");
    page.until(
        "@bob highlighted in alice's message",
        &format!("const m = document.querySelector('.msg[data-seq=\"{seq}\"]'); return !!m && [...m.querySelectorAll('.mention')].some(s => s.textContent === '@bob');"),
    )
    .await;

    // Bob answers it (a reply mentioning alice) and reacts to it.
    bob_ws
        .send(json!({"type": "send", "conv_id": conv, "client_msg_id": "b-reply", "body": "sure @alice, the station at noon", "reply_to": seq}))
        .await;
    let sent = bob_ws
        .wait_for("bob's reply sent", WAIT, |f| {
            f["type"] == "sent" && f["client_msg_id"] == "b-reply"
        })
        .await;
    let reply = sent["seq"].as_u64().expect("reply seq");
    bob_ws
        .send(json!({"type": "react", "conv_id": conv, "seq": seq, "emoji": "👍", "client_msg_id": "b-thumb"}))
        .await;
    bob_ws
        .wait_for("bob's reaction sent", WAIT, |f| {
            f["type"] == "sent" && f["client_msg_id"] == "b-thumb"
        })
        .await;

    // Alice's page: the quote above bob's text, the chip under hers, and
    // bob's message highlighted for mentioning her.
    let quote = page
        .until("the quote in bob's reply", &format!(
            "const q = document.querySelector('.msg[data-seq=\"{reply}\"] .quote'); return !!q && q.textContent.includes('lunch on friday') && q.textContent;"
        ))
        .await;
    assert!(quote.as_str().is_some_and(|q| q.contains("You")), "{quote}");
    page.until(
        "bob's reply highlighted as mentioning alice",
        &format!("const m = document.querySelector('.msg[data-seq=\"{reply}\"]'); return !!m && m.classList.contains('mentioned') && !!m.querySelector('.mention-me');"),
    )
    .await;
    let chip = page
        .until("the 👍 chip", &format!(
            "const c = document.querySelector('.msg[data-seq=\"{seq}\"] .chip'); return !!c && c.textContent.replace(/\\s+/g, ' ').trim();"
        ))
        .await;
    assert_eq!(chip, json!("👍 1"));
    // Who reacted: in the chip's tooltip and its accessible name.
    assert_eq!(
        page.js(&format!(
            "return document.querySelector('.msg[data-seq=\"{seq}\"] .chip').title"
        ))
        .await,
        json!("👍 bob")
    );
    assert_eq!(
        page.js(&format!("return document.querySelector('.msg[data-seq=\"{seq}\"] .chip').getAttribute('aria-pressed')")).await,
        json!("false"),
        "alice did not react yet"
    );
    // Events are not bubbles of their own.
    assert_eq!(
        page.js("return document.querySelectorAll('.msg').length")
            .await,
        json!(2)
    );
    page.shot("features-reply-and-reaction").await;

    // Alice adds her 👍 by clicking the chip, and 🎉 on bob's reply from the picker.
    page.click_js(&format!(".msg[data-seq=\"{seq}\"] .chip"))
        .await;
    let added = event_frame(&bob_ws, "reaction", seq, |f| f["sender"] == json!(alice.id)).await;
    assert_eq!(added["emoji"], json!("👍"));
    assert_eq!(added["added"], json!(true));
    page.until("the chip at 2, pressed", &format!(
        "const c = document.querySelector('.msg[data-seq=\"{seq}\"] .chip'); return !!c && c.getAttribute('aria-pressed') === 'true' && c.textContent.includes('2');"
    ))
    .await;
    assert_eq!(
        page.js(&format!(
            "return document.querySelector('.msg[data-seq=\"{seq}\"] .chip').title"
        ))
        .await,
        json!("👍 you, bob")
    );
    page.click_js(&format!("[data-key=\"{reply}:react\"]"))
        .await;
    page.click_js(&format!(
        ".msg[data-seq=\"{reply}\"] .picker button[data-emoji=\"🎉\"]"
    ))
    .await;
    event_frame(&bob_ws, "reaction", reply, |f| f["emoji"] == "🎉").await;
    page.until(
        "the 🎉 chip on bob's reply",
        &format!("return [...document.querySelectorAll('.msg[data-seq=\"{reply}\"] .chip.mine')].some(c => c.textContent.includes('🎉'));"),
    )
    .await;

    // Alice edits her message from its Edit button.
    page.click_js(&format!("[data-key=\"{seq}:edit\"]")).await;
    page.until(
        "the composer in edit mode",
        "return !document.getElementById('compose-ctx').hidden && document.getElementById('composer-input').value === 'hello @bob, lunch on friday?';",
    )
    .await;
    page.js("document.getElementById('composer-input').value = ''")
        .await;
    page.type_in("#composer-input", "hello @bob, lunch on saturday?")
        .await;
    page.click("#send-btn").await;
    let edit = event_frame(&bob_ws, "edit", seq, |_| true).await;
    assert_eq!(edit["body"], json!("hello @bob, lunch on saturday?"));
    assert_eq!(edit["sender"], json!(alice.id));
    page.until("the edited text and mark", &format!(
        "const m = document.querySelector('.msg[data-seq=\"{seq}\"]'); return !!m && m.textContent.includes('lunch on saturday') && !!m.querySelector('button.edited');"
    ))
    .await;
    page.until(
        "bob's quote following the edit",
        &format!("const q = document.querySelector('.msg[data-seq=\"{reply}\"] .quote'); return !!q && q.textContent.includes('saturday');"),
    )
    .await;
    page.click_js(&format!(".msg[data-seq=\"{seq}\"] button.edited"))
        .await;
    let versions = page
        .until("both versions in the edit history", "const l = [...document.querySelectorAll('#edits-list li .edit-body')]; return l.length === 2 && l.map(e => e.textContent);")
        .await;
    assert_eq!(
        versions,
        json!([
            "hello @bob, lunch on friday?",
            "hello @bob, lunch on saturday?"
        ])
    );
    page.shot("features-edit-history").await;
    page.js("document.getElementById('edits-dialog').close()")
        .await;

    // Alice deletes it (accepting the confirmation): a tombstone in place,
    // bob's quote says so.
    page.js("window.confirm = () => true").await;
    page.click_js(&format!("[data-key=\"{seq}:delete\"]")).await;
    event_frame(&bob_ws, "delete", seq, |_| true).await;
    page.until("the tombstone", &format!(
        "const m = document.querySelector('.msg[data-seq=\"{seq}\"]'); return !!m && m.classList.contains('deleted') && m.textContent.includes('This message was deleted') && !m.textContent.includes('saturday');"
    ))
    .await;
    page.until(
        "the quote of a deleted message",
        &format!("const q = document.querySelector('.msg[data-seq=\"{reply}\"] .quote'); return !!q && q.textContent.includes('deleted message');"),
    )
    .await;

    // A reload rebuilds the same state from the history (its event rows
    // are not shown as messages).
    page.client.refresh().await.expect("reload");
    page.until(
        "the tombstone after the reload",
        &format!("const m = document.querySelector('.msg[data-seq=\"{seq}\"]'); return !!m && m.classList.contains('deleted');"),
    )
    .await;
    page.until(
        "the 🎉 chip after the reload",
        &format!("return [...document.querySelectorAll('.msg[data-seq=\"{reply}\"] .chip.mine')].some(c => c.textContent.includes('🎉'));"),
    )
    .await;
    assert_eq!(
        page.js("return document.querySelectorAll('.msg').length")
            .await,
        json!(2),
        "only the two text messages are bubbles"
    );

    // Mute for 8 hours from the header: the chat list marks it.
    page.click("#mute-btn").await;
    page.click("#mute-menu [data-mute=\"28800000\"]").await;
    page.until(
        "the chat muted in the list",
        "const b = [...document.querySelectorAll('.chat-item')].find(b => b.querySelector('.chat-name').textContent === 'bob'); return !!b && !!b.querySelector('[aria-label=\"muted\"]');",
    )
    .await;
    let (status, chats) = api
        .call("GET", "/api/chats", Some(&alice.token), None)
        .await;
    assert_eq!(status, 200, "{chats}");
    let row = chats["chats"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["conv_id"] == json!(conv)))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(row["muted"], json!(true), "{row}");
    assert!(row["muted_until"].as_u64().is_some(), "{row}");

    // Bob mentions alice in a group she has not opened: the "@" badge,
    // live and, after a reload, from the server's count.
    let plans = api.group(&bob, "plans", &[&alice]).await;
    bob_ws
        .send(json!({"type": "send", "conv_id": plans, "client_msg_id": "b-plans", "body": "@alice are you coming?"}))
        .await;
    bob_ws
        .wait_for("the mention sent", WAIT, |f| {
            f["type"] == "sent" && f["client_msg_id"] == "b-plans"
        })
        .await;
    let badge = "const b = [...document.querySelectorAll('.chat-item')].find(b => b.querySelector('.chat-name').textContent === 'plans'); return !!b && !!b.querySelector('.mention-badge') && b.getAttribute('aria-label');";
    let label = page.until("the mention badge", badge).await;
    assert!(
        label.as_str().is_some_and(|l| l.contains("mentioned")),
        "{label}"
    );
    let (_, chats) = api
        .call("GET", "/api/chats", Some(&alice.token), None)
        .await;
    let row = chats["chats"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["conv_id"] == json!(plans)))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(row["mentions"], json!(1), "{row}");
    page.client.refresh().await.expect("reload");
    page.until("the mention badge after a reload", badge).await;
    page.until(
        "bob's chat still muted after the reload",
        "const b = [...document.querySelectorAll('.chat-item')].find(b => b.querySelector('.chat-name').textContent === 'bob'); return !!b && !!b.querySelector('[aria-label=\"muted\"]');",
    )
    .await;

    // Search: a word of bob's reply, marked in the result; opening it.
    page.type_in("#msg-search", "station").await;
    let marked = page
        .until("a search result with the word marked", "const h = document.querySelector('#msg-search-results .hit'); return !!h && [...h.querySelectorAll('mark')].map(m => m.textContent);")
        .await;
    assert_eq!(marked, json!(["station"]));
    let hit = page
        .js("const h = document.querySelector('#msg-search-results .hit'); return [Number(h.dataset.conv), Number(h.dataset.seq), h.textContent];")
        .await;
    assert_eq!(hit[0], json!(conv));
    assert_eq!(hit[1], json!(reply));
    assert!(hit[2].as_str().is_some_and(|t| t.contains("bob")), "{hit}");
    page.shot("features-search").await;
    page.click("#msg-search-results .hit").await;
    page.until(
        "the result's message highlighted",
        &format!("const m = document.querySelector('.msg[data-seq=\"{reply}\"]'); return !!m && m.classList.contains('flash');"),
    )
    .await;

    // Unmuting clears the mark.
    page.click("#mute-btn").await;
    page.until(
        "the chat unmuted",
        "return !document.querySelector('.chat-item [aria-label=\"muted\"]');",
    )
    .await;

    // Phone width still shows the conversation and its features.
    page.client.set_window_size(390, 780).await.expect("resize");
    page.until(
        "the conversation at phone width",
        &format!("const m = document.querySelector('.msg[data-seq=\"{reply}\"]'); return !!m && m.offsetParent !== null;"),
    )
    .await;
    page.shot("features-phone").await;

    page.close().await;
    bob_ws.close().await;
}

/// A message the server refuses for good is not a dead end: it stays
/// where it was written, marked failed with the reason, in the chat list
/// too; it survives a reload; Retry sends it again (once the reason is
/// gone), Discard lets it go for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_message_can_be_retried_copied_or_discarded() {
    let Some(driver) = driver().await else { return };
    let cluster = TestCluster::start(1).await;
    let node = &cluster.nodes[0];
    let api = Api::new(node.http);
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    api.direct(&alice, &bob).await;

    let page = Browser::open(&driver, 1100, 760).await;
    page.goto(&node.url("/")).await;
    page.sign_in("alice", false).await;
    page.open_chat("bob").await;
    page.type_in("#composer-input", "before the block").await;
    page.click("#send-btn").await;
    page.seq_of("before the block").await;

    // Bob blocks alice: her next messages are refused (`forbidden`).
    let (status, body) = api
        .call(
            "POST",
            "/api/blocks",
            Some(&bob.token),
            Some(json!({"user_id": alice.id})),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");
    for text in ["first refused", "second refused"] {
        page.type_in("#composer-input", text).await;
        page.click("#send-btn").await;
    }
    let failed = |text: &str| {
        format!(
            "const m = [...document.querySelectorAll('.msg.mine')].find(e => e.textContent.includes({text:?})); \
             return !!m && m.dataset.status === 'failed' && !!m.querySelector('.failed-actions') && m.textContent.includes('not sent');"
        )
    };
    page.until(
        "the first refused message marked failed",
        &failed("first refused"),
    )
    .await;
    page.until(
        "the second refused message marked failed",
        &failed("second refused"),
    )
    .await;
    page.until(
        "the chat list to say the last message failed",
        "const row = [...document.querySelectorAll('.chat-item')].find(b => b.querySelector('.chat-name').textContent === 'bob'); \
         return !!row && !!row.querySelector('.tick[data-status=\"failed\"]');",
    )
    .await;
    page.shot("failed-message").await;

    // A reload keeps them (the outbox remembers the failure).
    page.goto(&node.url("/")).await;
    page.open_chat("bob").await;
    page.until(
        "the first failed message after a reload",
        &failed("first refused"),
    )
    .await;

    // Discard: gone, and still gone after another reload.
    page.js(
        "const m = [...document.querySelectorAll('.msg.mine')].find(e => e.textContent.includes('second refused')); \
         m.querySelector('button[aria-label=\"Discard\"]').click();",
    )
    .await;
    page.until(
        "the discarded message gone",
        "return ![...document.querySelectorAll('.msg')].some(e => e.textContent.includes('second refused'));",
    )
    .await;

    // Bob unblocks; Retry sends the first again and it is stored once.
    let (status, body) = api
        .call(
            "DELETE",
            &format!("/api/blocks/{}", alice.id),
            Some(&bob.token),
            None,
        )
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    page.js(
        "const m = [...document.querySelectorAll('.msg.mine')].find(e => e.textContent.includes('first refused')); \
         m.querySelector('button[aria-label=\"Retry\"]').click();",
    )
    .await;
    let seq = page.seq_of("first refused").await;
    page.goto(&node.url("/")).await;
    page.open_chat("bob").await;
    page.seq_of("first refused").await;
    let left = page
        .js("return [...document.querySelectorAll('.msg')].filter(e => e.textContent.includes('refused')).map(e => e.dataset.seq || 'unsent');")
        .await;
    assert_eq!(
        left,
        json!([seq.to_string()]),
        "only the retried message, stored once"
    );
}

/// The keyboard reaches the composer past any number of messages: the
/// timeline is one stop of the Tab order (a message), Up and Down move
/// between messages, and Tab from a message walks its actions only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keyboard_reaches_the_composer_past_the_messages() {
    const TAB: &str = "\u{E004}";
    const UP: &str = "\u{E013}";
    let Some(driver) = driver().await else { return };
    let cluster = TestCluster::start(1).await;
    let node = &cluster.nodes[0];
    let api = Api::new(node.http);
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let conv = api.direct(&alice, &bob).await;
    let mut bob_ws = Ws::connect(&node.ws_url(&bob.token)).await.expect("bob");
    bob_ws
        .wait_for("hello", WAIT, |f| f["type"] == "hello")
        .await;
    for i in 0..8 {
        bob_ws
            .request(json!({"type": "send", "conv_id": conv, "client_msg_id": format!("m{i}"), "body": format!("message {i}")}))
            .await;
    }
    let page = Browser::open(&driver, 1100, 760).await;
    page.goto(&node.url("/")).await;
    page.sign_in("alice", false).await;
    page.open_chat("bob").await;
    page.seq_of("message 7").await;

    // From the last control of the conversation's header, Tab: the log,
    // the newest message and its own actions, then the composer: the same
    // few stops however many messages there are (8 here, 4 buttons each).
    page.js("document.getElementById('mute-btn').focus()").await;
    let mut path = Vec::new();
    for _ in 0..10 {
        page.press(TAB).await;
        let at = page.focused().await;
        path.push(at.clone());
        if at == json!("composer-input") {
            break;
        }
    }
    let messages: Vec<&Value> = path
        .iter()
        .filter(|k| k.as_str().is_some_and(|k| k.starts_with("msg:")))
        .collect();
    assert_eq!(
        path.last(),
        Some(&json!("composer-input")),
        "Tab path: {path:?}"
    );
    assert_eq!(
        messages,
        vec![&json!("msg:m7")],
        "one message on the way: {path:?}"
    );
    assert!(path.len() <= 7, "Tab path: {path:?}");

    // Back to the timeline, Up twice: the message two above.
    page.js("document.querySelector('.msg[data-cmid=\"m7\"]').focus()")
        .await;
    page.press(UP).await;
    page.press(UP).await;
    assert_eq!(page.focused().await, json!("msg:m5"));
    // Tab from a message walks its own actions (Reply first).
    page.press(TAB).await;
    let action = page.focused().await;
    assert!(
        action.as_str().is_some_and(|k| k.ends_with(":reply")),
        "the focused message's first action: {action}"
    );
    // and Shift+Tab goes back to it; the last message focused stays the stop.
    page.js("document.getElementById('composer-input').focus()")
        .await;
    page.press("\u{E008}\u{E004}").await;
    assert_eq!(page.focused().await, json!("msg:m5"));
}

//! Parley Web in a real browser: Debian's headless chromium driven through
//! chromedriver (fantoccini), against real node processes.
//!
//! Without chromium and chromedriver these tests print a notice and pass
//! locally; in CI (`CI` set) they fail, since `.ci/run` installs both.
//! Screenshots go to `target/web-screenshots/`.

use serde_json::{json, Value};
use tests::client::{Api, Ws};
use tests::node::TestCluster;

mod common;
use common::chromium::{Browser, WAIT};
use tests::wait::until;

use tests::browser::chromedriver as driver;

impl Browser {
    /// Finds `name` in the people search and opens the direct chat.
    async fn start_chat_with(&self, name: &str) {
        self.type_in("#user-search", name).await;
        let css = "#search-results .user-result";
        self.until(&format!("{name} in the search results"), &format!(
            "return [...document.querySelectorAll({css:?})].some(b => b.textContent.includes({name:?}))"
        ))
        .await;
        self.js(&format!(
            "[...document.querySelectorAll({css:?})].find(b => b.textContent.includes({name:?})).click()"
        ))
        .await;
        self.until(
            "the conversation to open",
            &format!("return document.getElementById('conv-title').textContent === {name:?}"),
        )
        .await;
    }

    async fn send(&self, text: &str) {
        self.type_in("#composer-input", text).await;
        self.click("#send-btn").await;
    }

    /// The status of my message with this text, once it is displayed.
    async fn until_status(&self, text: &str, status: &str) {
        self.until(&format!("my message {text:?} to be {status}"), &format!(
            "const m = [...document.querySelectorAll('.msg.mine')].find(e => e.textContent.includes({text:?})); return !!m && m.dataset.status === {status:?};"
        ))
        .await;
    }

    async fn until_message(&self, text: &str) {
        self.until(&format!("a message {text:?}"), &format!(
            "return [...document.querySelectorAll('.msg')].some(e => e.textContent.includes({text:?}))"
        ))
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_chat_with_typing_presence_ticks_and_reload() {
    let Some(driver) = driver().await else { return };
    let cluster = TestCluster::start(1).await;
    let home = cluster.nodes[0].url("/");
    let alice = Browser::open(&driver, 1100, 760).await;
    let bob = Browser::open_with(&driver, 1100, 760, &["--force-dark-mode"]).await;

    alice.goto(&home).await;
    alice.shot("login").await;
    alice.sign_in("alice", true).await;
    bob.goto(&home).await;
    bob.sign_in("bob", true).await;

    // Bob closes the app: alice's message can only be sent, not delivered.
    bob.goto("about:blank").await;
    let api = Api::new(cluster.nodes[0].http);
    let probe = api.user("probe").await;
    // Presence is shown to contacts only: the probe opens a chat with bob.
    let (_, found) = api
        .call("GET", "/api/users?q=bob", Some(&probe.token), None)
        .await;
    let bob_id = found["users"][0]["id"].as_u64().expect("bob's id");
    let (status, body) = api
        .call(
            "POST",
            &format!("/api/direct/{bob_id}"),
            Some(&probe.token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    until("bob offline", WAIT, || async {
        let (_, found) = api
            .call("GET", "/api/users?q=bob", Some(&probe.token), None)
            .await;
        (found["users"][0]["online"] == json!(false)).then_some(())
    })
    .await;
    alice.start_chat_with("bob").await;
    alice.send("hello bob").await;
    alice.until_status("hello bob", "sent").await;
    let subtitle = alice
        .until("bob's last seen", "const t = document.getElementById('conv-sub').textContent; return t.startsWith('last seen') && t")
        .await;
    assert!(subtitle
        .as_str()
        .is_some_and(|s| s.starts_with("last seen")));

    // Bob comes back (his session survived): delivered, unread, presence.
    bob.goto(&home).await;
    bob.until_online().await;
    alice.until_status("hello bob", "delivered").await;
    alice
        .until(
            "bob online",
            "return document.getElementById('conv-sub').textContent === 'online'",
        )
        .await;
    let row = bob
        .until("the chat with an unread badge", "const b = document.querySelector('.chat-item'); return b && b.querySelector('.badge') && b.textContent")
        .await;
    let row = row.as_str().unwrap_or_default();
    assert!(
        row.contains("alice") && row.contains("hello bob") && row.contains('1'),
        "{row}"
    );
    bob.shot("chat-list").await;

    // Bob opens the chat: seen.
    bob.open_chat("alice").await;
    bob.until_message("hello bob").await;
    alice.until_status("hello bob", "seen").await;

    // Bob types: alice sees it; then he answers.
    bob.type_in("#composer-input", "hi al").await;
    alice
        .until(
            "bob typing",
            "return document.getElementById('typing').textContent.includes('typing')",
        )
        .await;
    bob.type_in("#composer-input", "ice!").await;
    bob.click("#send-btn").await;
    alice.until_message("hi alice!").await;
    bob.until_status("hi alice!", "seen").await;
    bob.shot("dark").await;
    alice.shot("conversation").await;

    // A reload keeps the session and the open conversation.
    alice.client.refresh().await.expect("reload");
    alice.until_online().await;
    alice.until_message("hi alice!").await;
    alice.until_status("hello bob", "seen").await;
    let title = alice
        .js("return document.getElementById('conv-title').textContent")
        .await;
    assert_eq!(title, json!("bob"));

    // Phone width: the conversation fills the screen.
    alice
        .client
        .set_window_size(390, 780)
        .await
        .expect("resize");
    alice.until_message("hi alice!").await;
    alice.shot("phone").await;

    // Logging out revokes the token and forgets the session.
    let token = alice
        .js("return JSON.parse(localStorage.getItem('parley.session')).token")
        .await;
    let token = token.as_str().expect("a stored token").to_owned();
    alice.click("#back-btn").await; // phone width: back to the chat list
    alice.click("#logout-btn").await;
    alice
        .until("the login form", "return !document.getElementById('login-view').hidden && localStorage.getItem('parley.session') === null")
        .await;
    let (status, _) = api.call("GET", "/api/chats", Some(&token), None).await;
    assert_eq!(status, 401, "the token is revoked");
    // A wrong password is refused on the form.
    alice.type_in("#login-name", "alice").await;
    alice.type_in("#login-password", "wrong password").await;
    alice.click("#login-btn").await;
    alice
        .until(
            "the login error",
            "return document.getElementById('login-error').textContent.length > 0",
        )
        .await;

    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_three_with_membership_events_and_member_status() {
    let Some(driver) = driver().await else { return };
    let cluster = TestCluster::start(1).await;
    let api = Api::new(cluster.nodes[0].http);
    for name in ["gina", "hugo", "ines"] {
        api.user(name).await;
    }
    let home = cluster.nodes[0].url("/");
    let mut browsers = Vec::new();
    for name in ["gina", "hugo", "ines"] {
        let b = Browser::open(&driver, 1100, 760).await;
        b.goto(&home).await;
        b.sign_in(name, false).await;
        browsers.push(b);
    }
    let (gina, hugo, ines) = (&browsers[0], &browsers[1], &browsers[2]);

    // Gina creates the group with both, from the dialog.
    gina.click("#new-group-btn").await;
    gina.type_in("#group-name", "climbing").await;
    for who in ["hugo", "ines"] {
        gina.type_in("#group-add", who).await;
        gina.until(&format!("{who} found"), &format!(
            "const b = [...document.querySelectorAll('#group-add-results .user-result')].find(b => b.textContent.includes({who:?})); if (b) b.click(); return !!b;"
        ))
        .await;
        gina.until(
            &format!("{who} listed"),
            &format!(
                "return document.getElementById('group-members').textContent.includes({who:?})"
            ),
        )
        .await;
    }
    gina.click("#group-save").await;
    gina.until(
        "the group open",
        "return document.getElementById('conv-title').textContent === 'climbing'",
    )
    .await;
    gina.until(
        "the membership events",
        "return document.getElementById('messages').textContent.includes('added hugo')",
    )
    .await;

    // After a reload the membership events still name people (the names
    // arrive after the history: the text follows them). Hugo's page knows
    // no one's name until it asks.
    let home = hugo.js("return location.origin + '/'").await;
    hugo.goto(home.as_str().expect("the page's origin")).await;
    hugo.open_chat("climbing").await;
    hugo.until(
        "the membership events named after a reload",
        "const t = [...document.querySelectorAll('.event')].map(e => e.textContent); \
         return t.some(x => x === 'gina added you') && t.some(x => x === 'gina added ines') && !t.some(x => /user \\d/.test(x));",
    )
    .await;

    hugo.open_chat("climbing").await;
    ines.open_chat("climbing").await;
    gina.send("who's in on saturday?").await;
    hugo.until_message("who's in on saturday?").await;
    ines.until_message("who's in on saturday?").await;
    gina.until_status("who's in on saturday?", "seen").await;

    // The details view: each member's state of the message.
    gina.js("[...document.querySelectorAll('.msg.mine button.meta')].pop().click()")
        .await;
    let states = gina
        .until("both members' states", "const l = [...document.querySelectorAll('#status-list li[data-status]')]; return l.length === 2 && l.map(li => li.dataset.status)")
        .await;
    assert_eq!(states, json!(["seen", "seen"]));
    gina.shot("message-status").await;
    gina.js("document.getElementById('status-dialog').close()")
        .await;

    ines.send("me!").await;
    gina.until_message("me!").await;
    hugo.until_message("me!").await;
    ines.until(
        "ines sees the sender of gina's message",
        "return [...document.querySelectorAll('.msg .who')].some(w => w.textContent === 'gina')",
    )
    .await;

    // Renaming shows on every side; removing ines shows in the timeline.
    gina.click("#details-btn").await;
    gina.until(
        "the details",
        "return document.getElementById('group-name').value === 'climbing'",
    )
    .await;
    gina.shot("group-details").await;
    gina.js("document.getElementById('group-name').value = 'bouldering'")
        .await;
    gina.click("#group-save").await;
    hugo.until(
        "the new name",
        "return document.getElementById('conv-title').textContent === 'bouldering'",
    )
    .await;
    gina.click("#details-btn").await;
    gina.until(
        "ines listed",
        "return !!document.querySelector('#group-members li[data-user] button.danger')",
    )
    .await;
    gina.js("[...document.querySelectorAll('#group-members li')].find(li => li.textContent.includes('ines')).querySelector('button').click()")
        .await;
    hugo.until(
        "ines removed in the timeline",
        "return document.getElementById('messages').textContent.includes('removed ines')",
    )
    .await;
    ines.until("the group gone from ines' list", "return ![...document.querySelectorAll('.chat-name')].some(n => n.textContent === 'bouldering')")
        .await;

    for b in browsers {
        b.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrolling_up_loads_older_pages_of_history() {
    let Some(driver) = driver().await else { return };
    let cluster = TestCluster::start_with_config(
        1,
        "[gateway]\nsends_per_second = 1000\nsend_burst = 1000\n",
    )
    .await;
    let node = &cluster.nodes[0];
    let api = Api::new(node.http);
    let kim = api.user("kim").await;
    let lou = api.user("lou").await;
    let (_, lou_user) = api
        .call("GET", "/api/users?q=lou", Some(&kim.token), None)
        .await;
    let lou_id = lou_user["users"][0]["id"].as_u64().expect("lou");
    let (_, direct) = api
        .call(
            "POST",
            &format!("/api/direct/{lou_id}"),
            Some(&kim.token),
            None,
        )
        .await;
    let conv = direct["id"].as_u64().expect("conv id");
    let mut ws = Ws::connect(&node.ws_url(&kim.token)).await.expect("ws");
    for i in 1..=120 {
        ws.send(json!({"type": "send", "conv_id": conv, "client_msg_id": format!("h{i}"), "body": format!("history {i}")}))
            .await;
    }
    ws.wait_for_n("120 sent", 120, WAIT, |f| f["type"] == "sent")
        .await;

    // Lou's other device got them all: the browser has to page back.
    let lou_ws = Ws::connect(&node.ws_url(&lou.token)).await.expect("ws");
    lou_ws
        .wait_for("the last message", WAIT, |f| {
            f["type"] == "message" && f["seq"] == json!(120)
        })
        .await;
    let mut lou_ws = lou_ws;
    lou_ws
        .send(json!({"type": "ack", "conv_id": conv, "seq": 120, "kind": "delivered"}))
        .await;
    lou_ws.close().await;

    let lou = Browser::open(&driver, 1100, 760).await;
    lou.goto(&node.url("/")).await;
    lou.sign_in("lou", false).await;
    lou.open_chat("kim").await;
    lou.until_message("history 120").await;
    let count = "return document.querySelectorAll('.msg').length";
    assert_eq!(lou.js(count).await, json!(50));
    for want in [100, 120] {
        lou.until(&format!("{want} messages after scrolling up"), &format!(
            "const box = document.getElementById('messages'); box.scrollTop = 0; box.dispatchEvent(new Event('scroll')); return document.querySelectorAll('.msg').length >= {want};"
        ))
        .await;
    }
    lou.until("the start of the conversation", "return document.getElementById('messages').textContent.includes('Start of the conversation')")
        .await;
    let seqs = lou
        .js("return [...document.querySelectorAll('.msg')].map(m => Number(m.dataset.seq))")
        .await;
    let expected: Vec<u64> = (1..=120).collect();
    assert_eq!(seqs, json!(expected), "every message once, in order");
    lou.close().await;
    ws.close().await;
}

/// Messages with `body` in the conversation's stored history.
async fn stored_count(api: &Api, token: &str, conv: u64, body: &str) -> usize {
    let (_, page) = api
        .call(
            "GET",
            &format!("/api/conversations/{conv}/messages?limit=200"),
            Some(token),
            None,
        )
        .await;
    page["messages"]
        .as_array()
        .map(|m| m.iter().filter(|m| m["body"] == json!(body)).count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_written_offline_is_delivered_after_reconnect() {
    let Some(driver) = driver().await else { return };
    let mut cluster = TestCluster::start(1).await;
    let api = Api::new(cluster.nodes[0].http);
    let _ola = api.user("ola").await;
    let pia = api.user("pia").await;
    let page = Browser::open(&driver, 1100, 760).await;
    page.goto(&cluster.nodes[0].url("/")).await;
    page.sign_in("ola", false).await;
    page.start_chat_with("pia").await;

    // The only node dies: the page goes offline and keeps the message.
    cluster.nodes[0].kill();
    page.until(
        "the page offline",
        "return document.getElementById('conn-state').dataset.state !== 'online'",
    )
    .await;
    page.send("written offline").await;
    page.until_status("written offline", "pending").await;
    let stored = page
        .until("the message in the IndexedDB outbox", "return new Promise(r => { const q = indexedDB.open('parley'); q.onsuccess = () => { const g = q.result.transaction('outbox').objectStore('outbox').getAll(); g.onsuccess = () => r(g.result.length === 1 && g.result[0].body); }; q.onerror = () => r(false); });")
        .await;
    assert_eq!(stored, json!("written offline"));
    page.shot("offline-pending").await;

    // It comes back on the same address: the page reconnects and sends.
    cluster.nodes[0].start().await;
    page.until_online().await;
    page.until_status("written offline", "sent").await;
    let api = Api::new(cluster.nodes[0].http);
    let conv = page
        .js("return Number(location.hash.slice(3))")
        .await
        .as_u64()
        .expect("conv id in the URL");
    assert_eq!(
        stored_count(&api, &pia.token, conv, "written offline").await,
        1
    );
    page.until("the outbox emptied", "return new Promise(r => { const q = indexedDB.open('parley'); q.onsuccess = () => { const g = q.result.transaction('outbox').objectStore('outbox').count(); g.onsuccess = () => r(g.result === 0); }; });")
        .await;

    // Again, but the page is closed before the node comes back: the
    // reopened page finds the message in its outbox and sends it.
    cluster.nodes[0].kill();
    page.until(
        "the page offline",
        "return document.getElementById('conn-state').dataset.state !== 'online'",
    )
    .await;
    page.send("written before closing").await;
    page.until_status("written before closing", "pending").await;
    page.goto("about:blank").await;
    cluster.nodes[0].start().await;
    page.goto(&cluster.nodes[0].url(&format!("/#c={conv}")))
        .await;
    page.until_online().await;
    page.until_status("written before closing", "sent").await;
    assert_eq!(
        stored_count(&api, &pia.token, conv, "written before closing").await,
        1
    );
    assert_eq!(
        stored_count(&api, &pia.token, conv, "written offline").await,
        1
    );
    page.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_fails_over_to_another_node_and_sends_its_pending_message_once() {
    let Some(driver) = driver().await else { return };
    let mut cluster = TestCluster::start(3).await;
    let api = Api::new(cluster.nodes[1].http);
    let _rui = api.user("rui").await;
    let sam = api.user("sam").await;
    let sam_ws = Ws::connect(&cluster.nodes[1].ws_url(&sam.token))
        .await
        .expect("sam's socket");

    let page = Browser::open(&driver, 1100, 760).await;
    page.goto(&cluster.nodes[0].url("/")).await;
    page.sign_in("rui", false).await;
    page.start_chat_with("sam").await;
    page.send("before the crash").await;
    page.until_status("before the crash", "sent").await;
    page.until(
        "the cluster's gateways known",
        "return JSON.parse(localStorage.getItem('parley.gateways') || '[]').length === 3",
    )
    .await;

    // The page's node is killed; it writes a message while reconnecting.
    cluster.nodes[0].kill();
    page.send("after the crash").await;
    let node = page.until_online().await;
    assert!(
        node == json!("n2") || node == json!("n3"),
        "reconnected to {node}"
    );
    page.until_status("after the crash", "sent").await;
    let frame = sam_ws
        .wait_for("the message after the crash", WAIT, |f| {
            f["type"] == "message" && f["body"] == json!("after the crash")
        })
        .await;
    let conv = frame["conv_id"].as_u64().expect("conv");
    let api = Api::new(cluster.nodes[2].http);
    assert_eq!(
        stored_count(&api, &sam.token, conv, "after the crash").await,
        1
    );
    assert_eq!(
        stored_count(&api, &sam.token, conv, "before the crash").await,
        1
    );
    // The API follows the socket: a search now goes to the new node.
    page.type_in("#user-search", "sa").await;
    page.until("a search through the new node", "return [...document.querySelectorAll('#search-results .user-result')].some(b => b.textContent.includes('sam'))")
        .await;
    let shown = page
        .js("return [...document.querySelectorAll('.msg')].filter(m => m.textContent.includes('after the crash')).length")
        .await;
    assert_eq!(shown, json!(1), "shown once");
    page.close().await;
    sam_ws.close().await;
}

/// No browser needed: the gateways list follows the leases, and the page
/// and its files carry their types, ETags and the CSP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_follow_the_leases_and_the_app_is_served_with_a_strict_policy() {
    let mut cluster = TestCluster::start(3).await;
    let http = reqwest::Client::new();
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url("")).collect();
    let endpoints: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.url("/api/cluster/gateways"))
        .collect();
    let listed = |node: usize| {
        let url = endpoints[node].clone();
        let http = http.clone();
        async move {
            let body: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
            let list: Vec<(String, String)> = body["gateways"]
                .as_array()?
                .iter()
                .map(|g| {
                    (
                        g["url"].as_str().unwrap_or_default().to_owned(),
                        g["ws_url"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            Some(list)
        }
    };
    let all = listed(1).await.expect("gateways");
    let want: Vec<(String, String)> = urls
        .iter()
        .map(|u| {
            (
                u.clone(),
                format!("{}/ws", u.replacen("http://", "ws://", 1)),
            )
        })
        .collect();
    assert_eq!(all, want);

    // The page: HTML, the CSP naming every gateway's WebSocket origin.
    let page = http
        .get(cluster.nodes[0].url("/"))
        .send()
        .await
        .expect("GET /");
    assert_eq!(page.status(), 200);
    let header = |r: &reqwest::Response, h: &str| {
        r.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    let csp = header(&page, "content-security-policy");
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    for node in &cluster.nodes {
        assert!(csp.contains(&format!("ws://{}", node.http)), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");

    // Files: types, revalidation, unknown names.
    for (file, kind) in [
        ("/web/app.js", "text/javascript; charset=utf-8"),
        ("/web/app.css", "text/css; charset=utf-8"),
        ("/sw.js", "text/javascript; charset=utf-8"),
    ] {
        let r = http
            .get(cluster.nodes[0].url(file))
            .send()
            .await
            .expect(file);
        assert_eq!(r.status(), 200, "{file}");
        assert_eq!(header(&r, "content-type"), kind);
        assert_eq!(header(&r, "cache-control"), "no-cache");
        let etag = header(&r, "etag");
        let again = http
            .get(cluster.nodes[1].url(file))
            .header("if-none-match", &etag)
            .send()
            .await
            .expect(file);
        assert_eq!(
            again.status(),
            304,
            "{file}: every node gives the same ETag"
        );
    }
    let missing = http
        .get(cluster.nodes[0].url("/web/nope.js"))
        .send()
        .await
        .expect("missing");
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.expect("json error");
    assert_eq!(body["error"]["code"], json!("not_found"));

    // Another gateway's page may call the API cross-origin; no one else.
    let preflight = |origin: String| {
        http.request(reqwest::Method::OPTIONS, cluster.nodes[1].url("/api/chats"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let ok = preflight(urls[0].clone()).await.expect("preflight");
    assert_eq!(header(&ok, "access-control-allow-origin"), urls[0]);
    assert!(header(&ok, "access-control-allow-headers").contains("authorization"));
    let foreign = preflight("http://evil.example".into())
        .await
        .expect("preflight");
    assert_eq!(header(&foreign, "access-control-allow-origin"), "");

    // A killed node leaves the list once its lease expires.
    cluster.nodes[2].kill();
    let left = until("the dead node to leave the list", WAIT, || async {
        listed(0).await.filter(|l| l.len() == 2)
    })
    .await;
    assert_eq!(left, want[..2].to_vec());
}

/// Rough edges a real browser found (issue #26): a name in another
/// alphabet logs in from the form; an emoji group name gives its avatar
/// the whole emoji; text over the server's byte limit is held with a
/// word, never cut or sent to fail; links are links (http and https
/// only); the tab's title counts unread messages; the WebSocket URL
/// carries no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_emoji_limits_links_and_the_unread_title() {
    let Some(driver) = driver().await else { return };
    let cluster = TestCluster::start(1).await;
    let home = cluster.nodes[0].url("/");
    let page = Browser::open(&driver, 1100, 760).await;
    page.goto(&home).await;
    page.sign_in("José", true).await;

    let api = Api::new(cluster.nodes[0].http);
    let ana = api.user("ana").await;
    let jose = api.login("José").await;
    let party = api.group(&ana, "🎉 party", &[&jose]).await;
    page.open_chat("🎉 party").await;
    let initial = page
        .until(
            "the group's avatar",
            "const b = [...document.querySelectorAll('.chat-item')].find(b => b.querySelector('.chat-name').textContent === '🎉 party'); const a = b && b.querySelector('.avatar'); return a && a.firstChild.textContent;",
        )
        .await;
    assert_eq!(initial, json!("🎉"), "the whole emoji, not half of it");

    // 2 100 × "é" is 2 100 characters but 4 200 bytes: held, with a word.
    let held = page
        .js("const i = document.getElementById('composer-input'); i.value = 'é'.repeat(2100); i.dispatchEvent(new Event('input')); const l = document.getElementById('composer-limit'); return [l.hidden, l.textContent, document.getElementById('send-btn').disabled, i.value.length];")
        .await;
    assert_eq!(held[0], json!(false), "{held}");
    assert!(
        held[1]
            .as_str()
            .is_some_and(|t| t.starts_with("104 bytes too long")),
        "{held}"
    );
    assert_eq!(held[2], json!(true), "{held}");
    assert_eq!(held[3], json!(2100), "nothing cut: {held}");
    page.js("document.getElementById('composer').requestSubmit(); return true;")
        .await;
    page.js("const i = document.getElementById('composer-input'); i.value = 'see https://example.com/a?b=1. and javascript:alert(1)'; i.dispatchEvent(new Event('input')); return true;").await;
    let fits = page
        .js("return [document.getElementById('composer-limit').hidden, document.getElementById('send-btn').disabled];")
        .await;
    assert_eq!(fits, json!([true, false]));
    page.click("#send-btn").await;
    let href = page
        .until(
            "the link in the message",
            "const a = document.querySelector('.msg .body a'); return a && [a.getAttribute('href'), a.getAttribute('rel'), a.target];",
        )
        .await;
    assert_eq!(
        href,
        json!([
            "https://example.com/a?b=1",
            "noopener noreferrer nofollow",
            "_blank"
        ])
    );
    let links = page
        .js("return document.querySelectorAll('.msg .body a').length;")
        .await;
    assert_eq!(links, json!(1), "javascript: stays text");
    // The over-long text was never sent.
    let (_, history) = api
        .call(
            "GET",
            &format!("/api/conversations/{party}/messages"),
            Some(&ana.token),
            None,
        )
        .await;
    let bodies: Vec<&str> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["body"].as_str())
        .collect();
    assert!(bodies.iter().all(|b| !b.starts_with('é')), "{bodies:?}");

    // A message in a chat that is not open: counted in the tab's title.
    let other = api.group(&ana, "elsewhere", &[&jose]).await;
    let mut ws = Ws::connect(&cluster.nodes[0].ws_url(&ana.token))
        .await
        .expect("connect");
    ws.request_seq(json!({"type":"send","conv_id": other,"client_msg_id":"t1","body":"psst"}))
        .await;
    page.until(
        "the unread count in the title",
        "return document.title === '(1) Parley';",
    )
    .await;
    page.close().await;
}

/// At phone width a 100-character group name without spaces neither widens
/// the page nor pushes the send button off-screen; "alice added you" is
/// written so (issue #26).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_group_name_fits_a_phone() {
    let Some(driver) = driver().await else { return };
    let cluster = TestCluster::start(1).await;
    let page = Browser::open(&driver, 390, 800).await;
    page.goto(&cluster.nodes[0].url("/")).await;
    page.sign_in("bob", true).await;
    let api = Api::new(cluster.nodes[0].http);
    let alice = api.user("alice").await;
    let bob = api.login("bob").await;
    let name = "W".repeat(100);
    api.group(&alice, &name, &[&bob]).await;
    page.open_chat(&name).await;
    page.until(
        "the membership line",
        "return [...document.querySelectorAll('.event')].some(e => e.textContent === 'alice added you');",
    )
    .await;
    let fit = page
        .js("const w = window.innerWidth; const s = document.getElementById('send-btn').getBoundingClientRect(); return [document.documentElement.scrollWidth <= w, s.right <= w, s.width > 0];")
        .await;
    let wide = page
        .js("const w = window.innerWidth; return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > w + 1 && e.getClientRects().length).slice(0, 12).map(e => e.tagName + '#' + e.id + '.' + e.className + ':' + Math.round(e.getBoundingClientRect().width));")
        .await;
    assert_eq!(
        fit,
        json!([true, true, true]),
        "page or send button wider than the phone: {wide}"
    );
    page.close().await;
}

/// While the page is disconnected no contact is shown online (its
/// knowledge is stale); a member removed from a group is told so, not left
/// to find the chat gone (issue #26).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_while_offline_and_a_removal_said_in_words() {
    let Some(driver) = driver().await else { return };
    let mut cluster = TestCluster::start(1).await;
    let page = Browser::open(&driver, 1100, 760).await;
    page.goto(&cluster.nodes[0].url("/")).await;
    page.sign_in("bob", true).await;
    let api = Api::new(cluster.nodes[0].http);
    let alice = api.user("alice").await;
    let bob = api.login("bob").await;
    api.direct(&alice, &bob).await;
    let g = api.group(&alice, "club", &[&bob]).await;
    let _alice_online = Ws::connect(&cluster.nodes[0].ws_url(&alice.token))
        .await
        .expect("connect");
    page.open_chat("alice").await;
    page.until(
        "alice online",
        "return document.getElementById('conv-sub').textContent === 'online';",
    )
    .await;
    // Alice removes bob from the group: bob is told.
    let (status, body) = api
        .call(
            "DELETE",
            &format!("/api/groups/{g}/members/{}", bob.id),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    page.until(
        "the removal, in words",
        "const t = document.getElementById('toast'); return !t.hidden && t.textContent.includes('removed you from club');",
    )
    .await;
    // The node goes away: the page is offline, and shows nobody online.
    cluster.nodes[0].kill();
    page.until(
        "no presence while offline",
        "return document.getElementById('conn-state').dataset.state !== 'online' && document.getElementById('conv-sub').textContent === '' && !document.querySelector('.chat-item .dot.online');",
    )
    .await;
    page.close().await;
}

/// Parley Web over HTTPS: the gateway's certificate comes from a test CA
/// (`parley certs`) and this browser profile trusts its key
/// (`--ignore-certificate-errors-spki-list`, Chromium's switch for exactly
/// this; chromedriver gives every session its own profile). The page
/// loads, signs in, connects over WSS and chats with a WSS client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parley_web_works_over_https() {
    use base64::Engine as _;
    use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
    use sha2::Digest as _;

    let Some(driver) = driver().await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let out = std::process::Command::new(tests::node::parley_bin())
        .args(["certs", "--name", "gateway", "--host", "127.0.0.1", "--dir"])
        .arg(&certs)
        .output()
        .expect("parley certs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.path().join("https.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ngateway_cert = {:?}\ngateway_key = {:?}\n",
            certs.join("gateway.pem"),
            certs.join("gateway.key")
        ),
    )
    .expect("config");
    let ca = certs.join("ca.pem");
    let cookie = format!("web-https-{}", tests::node::free_port());
    let mut node = tests::node::Node::new("n1", dir.path(), &cookie, Default::default())
        .env("PARLEY_CONFIG", &config.to_string_lossy())
        .https(&ca);
    node.start().await;

    // The SHA-256 of the gateway key's SubjectPublicKeyInfo, in base64.
    let key_pem = std::fs::read_to_string(certs.join("gateway.key")).expect("key");
    let key = p256::SecretKey::from_pkcs8_pem(&key_pem).expect("a P-256 key");
    let spki = key.public_key().to_public_key_der().expect("SPKI");
    let pin =
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(spki.as_bytes()));
    let trust = format!("--ignore-certificate-errors-spki-list={pin}");
    let alice = Browser::open_with(&driver, 1100, 760, &[&trust]).await;
    alice.goto(&node.url("/")).await;
    alice.sign_in("alice", true).await;
    alice.until_online().await;
    let protocol = alice.js("return location.protocol").await;
    assert_eq!(protocol, json!("https:"));

    let api = Api::https(node.http, &ca);
    let bob = api.user("bob").await;
    let mut bob_ws = Ws::connect_tls(&node.ws_url(&bob.token), &ca)
        .await
        .expect("bob connects over WSS");
    bob_ws
        .wait_for("hello", WAIT, |f| f["type"] == "hello")
        .await;
    alice.start_chat_with("bob").await;
    alice.send("hello over https").await;
    let message = bob_ws
        .wait_for("alice's message", WAIT, |f| {
            f["type"] == "message" && f["body"] == "hello over https"
        })
        .await;
    bob_ws
        .send(json!({"type": "ack", "conv_id": message["conv_id"], "seq": message["seq"], "kind": "seen"}))
        .await;
    alice.until_status("hello over https", "seen").await;
    alice.shot("over-https").await;
}

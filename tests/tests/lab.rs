//! `parley lab` (issue 13), as real processes: the lab starts its nodes,
//! drives traffic through them while checking the delivery contract, and
//! kills, pauses, resumes and restarts them on request; its page in
//! headless chromium does the same from the browser.
//!
//! The browser test needs Debian's chromium and chromedriver: without them
//! it prints a notice and passes locally; in CI (`CI` set) it fails.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::Locator;
use serde_json::{json, Value};
use tests::client::Ws;
use tests::node::parley_bin;
use tests::wait::until;

const WAIT: Duration = Duration::from_secs(60);

/// The lab tests each run three nodes and password hashing for their
/// users: on a small machine they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A `parley lab` process, stopped (SIGTERM, then SIGKILL) on drop.
struct Lab {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    base: String,
    /// The lab token.
    token: String,
    /// The page's address with the token.
    url: String,
    http: reqwest::Client,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Lab {
    /// Starts `parley lab --nodes 3 --port 0` and reads its address.
    async fn start() -> Self {
        let mut child = Command::new(parley_bin())
            .args(["lab", "--nodes", "3", "--port", "0"])
            .env("PARLEY_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning parley lab");
        let stdout = child.stdout.take().expect("the lab's stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("[lab] {line}");
                if let Some(url) = line.strip_prefix("lab: ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let url = tokio::task::spawn_blocking(move || rx.recv_timeout(WAIT))
            .await
            .expect("joining the reader")
            .expect("the lab printed its `lab: ` line");
        let (base, token) = url.split_once("/#token=").expect("URL with #token=");
        Self {
            base: base.to_owned(),
            token: token.to_owned(),
            url: url.clone(),
            child,
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("lab API request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn state(&self) -> Value {
        let (status, body) = self.call("GET", "/api/lab/state", None).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn invariants(&self) -> Value {
        let (status, body) = self.call("GET", "/api/lab/invariants", None).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn node(&self, name: &str) -> Value {
        self.state().await["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["name"] == name)
            .cloned()
            .expect("the node")
    }

    async fn act(&self, name: &str, action: &str) -> Value {
        let (status, body) = self
            .call("POST", &format!("/api/lab/nodes/{name}/{action}"), None)
            .await;
        assert_eq!(status, 200, "{action} {name}: {body}");
        body
    }

    /// Node `name`'s own view of the cluster (its admin API, through the
    /// lab).
    async fn admin_view(&self, name: &str) -> Value {
        let (status, body) = self
            .call("GET", &format!("/api/lab/nodes/{name}/admin/cluster"), None)
            .await;
        assert_eq!(status, 200, "{name}'s admin view: {body}");
        body
    }

    /// The lab's merged event stream.
    async fn events(&self) -> Ws {
        let ws = self.base.replacen("http://", "ws://", 1);
        Ws::connect(&format!("{ws}/api/lab/events?token={}", self.token))
            .await
            .expect("the lab's event stream")
    }

    async fn acked(&self) -> u64 {
        self.invariants().await["acked"].as_u64().expect("acked")
    }

    /// Waits until more than `n` messages were acknowledged.
    async fn until_acked(&self, n: u64) -> u64 {
        until(&format!("more than {n} messages acked"), WAIT, || async {
            let acked = self.acked().await;
            (acked > n).then_some(acked)
        })
        .await
    }

    async fn start_traffic(&self) {
        let body = json!({"users": 9, "rate": 30, "group_size": 3});
        let (status, body) = self.call("POST", "/api/lab/traffic", Some(body)).await;
        assert_eq!(status, 200, "{body}");
    }

    /// Stops the traffic and waits until every acknowledged message was
    /// delivered (or counted lost) and every send answered.
    async fn stop_traffic_and_drain(&self) -> Value {
        let (status, body) = self.call("DELETE", "/api/lab/traffic", None).await;
        assert_eq!(status, 200, "{body}");
        until("the traffic to drain", WAIT, || async {
            let inv = self.invariants().await;
            (inv["pending_delivery"] == 0 && inv["unacked_sends"] == 0).then_some(inv)
        })
        .await
    }
}

async fn healthy(url: &str) -> bool {
    reqwest::Client::new()
        .get(format!("{url}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

fn assert_no_violations(inv: &Value) {
    assert_eq!(inv["lost"], 0, "lost messages: {inv}");
    assert_eq!(inv["duplicated"], 0, "duplicates: {inv}");
    assert_eq!(inv["out_of_order"], 0, "out of order: {inv}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_starts_its_nodes_and_controls_them() {
    let _serial = SERIAL.lock().await;
    let lab = Lab::start().await;

    // Every lab route wants the token.
    for (method, path) in [
        ("GET", "/api/lab/state"),
        ("GET", "/api/lab/invariants"),
        ("POST", "/api/lab/nodes/node-1/kill"),
        ("DELETE", "/api/lab/traffic"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = lab
            .http
            .request(method, format!("{}{path}", lab.base))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status().as_u16(), 401, "{path}");
        let body: Value = resp.json().await.expect("JSON error");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let (status, body) = lab.call("POST", "/api/lab/nodes/node-9/kill", None).await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));
    let (status, _) = lab
        .call("POST", "/api/lab/nodes/node-1/explode", None)
        .await;
    assert_eq!(status, 400);
    let (status, _) = lab
        .call(
            "POST",
            "/api/lab/traffic",
            Some(json!({"users": 500, "rate": 1, "group_size": 2})),
        )
        .await;
    assert_eq!(status, 400);

    let state = lab.state().await;
    let nodes = state["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3, "{state}");
    for node in nodes {
        assert_eq!(node["state"], "running", "{state}");
        assert!(healthy(node["http"].as_str().expect("http")).await);
    }

    lab.start_traffic().await;
    lab.until_acked(50).await;

    // Each node runs exactly the conversations rendezvous placement gives
    // it over the serving nodes.
    let mut homed_on_2 = Vec::new();
    for name in ["node-1", "node-2", "node-3"] {
        let view = lab.admin_view(name).await;
        assert_eq!(view["node"], name);
        let serving: Vec<String> = view["serving_nodes"]
            .as_array()
            .expect("serving nodes")
            .iter()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect();
        assert_eq!(serving, ["node-1", "node-2", "node-3"], "{view}");
        for conv in view["conversations"].as_array().expect("conversations") {
            let id = conv["conv_id"].as_u64().expect("conv_id");
            let home = actors::placement::conversation_home(id, serving.iter().map(String::as_str));
            assert_eq!(home, Some(name), "conversation {id} runs on {name}: {view}");
            assert!(conv["epoch"].as_u64() >= Some(1), "{view}");
            if name == "node-2" {
                homed_on_2.push(id);
            }
        }
    }
    let events = lab.events().await;

    let node2 = lab.node("node-2").await;
    let pid = node2["pid"].as_u64().expect("pid");
    let killed = lab.act("node-2", "kill").await;
    assert_eq!(killed["state"], "killed");
    assert!(
        !PathBuf::from(format!("/proc/{pid}")).exists(),
        "node-2 ({pid}) still exists"
    );
    for name in ["node-1", "node-3"] {
        let node = lab.node(name).await;
        assert!(
            healthy(node["http"].as_str().expect("http")).await,
            "{name}"
        );
    }
    let at_kill = lab.acked().await;
    lab.until_acked(at_kill + 50).await;
    // The survivors report the loss, and node-2's conversations activate
    // on them (re-homed, with a newer epoch).
    for name in ["node-1", "node-3"] {
        events
            .wait_for(&format!("{name} reports node-2 lost"), WAIT, |f| {
                f["kind"] == "node_lost" && f["node"] == name && f["peer"] == "node-2"
            })
            .await;
    }
    for id in &homed_on_2 {
        let activated = events
            .wait_for(&format!("conversation {id} re-homed"), WAIT, |f| {
                f["kind"] == "conversation_activated"
                    && f["conv_id"] == *id
                    && f["node"] != "node-2"
            })
            .await;
        assert!(activated["epoch"].as_u64() >= Some(2), "{activated}");
    }

    let restarted = lab.act("node-2", "restart").await;
    assert_eq!(restarted["state"], "running");
    let url = restarted["http"].as_str().expect("http").to_owned();
    until("node-2 to answer again", WAIT, || async {
        healthy(&url).await.then_some(())
    })
    .await;

    let inv = lab.stop_traffic_and_drain().await;
    assert!(inv["acked"].as_u64() > Some(at_kill), "{inv}");
    assert_no_violations(&inv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_is_resumed() {
    let _serial = SERIAL.lock().await;
    let lab = Lab::start().await;
    lab.start_traffic().await;
    lab.until_acked(30).await;

    // node-1's conversations and the epochs its actors hold.
    let before = lab.admin_view("node-1").await;
    let held: Vec<(u64, u64)> = before["conversations"]
        .as_array()
        .expect("conversations")
        .iter()
        .filter_map(|c| Some((c["conv_id"].as_u64()?, c["epoch"].as_u64()?)))
        .collect();
    assert!(!held.is_empty(), "node-1 homes conversations: {before}");
    let events = lab.events().await;
    let paused = lab.act("node-1", "pause").await;
    assert_eq!(paused["state"], "paused");
    let pid = paused["pid"].as_u64().expect("pid");
    // SIGSTOP takes effect asynchronously: the process stops shortly after.
    until("node-1 in state T (stopped)", WAIT, || async {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat.rsplit_once(") ")?.1.chars().next()?;
        (state == 'T').then_some(())
    })
    .await;
    // The others keep serving: clients on node-1 notice it hung and move,
    // its conversations move once its lease expires.
    let at_pause = lab.acked().await;
    lab.until_acked(at_pause + 60).await;
    until("node-2 to see node-1 dead", WAIT, || async {
        let view = lab.admin_view("node-2").await;
        view["nodes"]
            .as_array()?
            .iter()
            .any(|n| n["name"] == "node-1" && n["state"] == "dead")
            .then_some(())
    })
    .await;
    // Its conversations are taken over with a newer epoch: whatever
    // node-1's actors try to append with theirs is refused from now on.
    let taken = until("a conversation of node-1 taken over", WAIT, || async {
        events.frames().into_iter().find(|f| {
            f["kind"] == "conversation_activated"
                && f["node"] != "node-1"
                && held
                    .iter()
                    .any(|&(id, epoch)| f["conv_id"] == id && f["epoch"].as_u64() > Some(epoch))
        })
    })
    .await;
    eprintln!("taken over while node-1 hung: {taken}");

    let resumed = lab.act("node-1", "resume").await;
    assert_eq!(resumed["state"], "running");
    let url = resumed["http"].as_str().expect("http").to_owned();
    until("node-1 to answer again", WAIT, || async {
        healthy(&url).await.then_some(())
    })
    .await;
    // Back in the cluster: the others see it live again.
    until("node-2 to see node-1 live again", WAIT, || async {
        let view = lab.admin_view("node-2").await;
        view["nodes"]
            .as_array()?
            .iter()
            .any(|n| n["name"] == "node-1" && n["state"] == "live")
            .then_some(())
    })
    .await;
    // Appends refused by the fence depend on what was in flight to the
    // hung node when it resumed (the invariants below are what must hold).
    let mut fenced = 0;
    for name in ["node-1", "node-2", "node-3"] {
        fenced += lab.admin_view(name).await["metrics"]["fenced_appends"]
            .as_u64()
            .unwrap_or(0);
    }
    eprintln!("fenced appends over the cluster after the pause: {fenced}");
    let inv = lab.stop_traffic_and_drain().await;
    eprintln!("invariants after the drain: {inv}");
    assert_no_violations(&inv);
}

/// A partition from the lab: node-1 and node-2 stop hearing each other
/// (in-process link filters, both ways) while the traffic runs. Both drop
/// the link within a lease and go on serving their own clients; after the
/// heal they reconnect, and nothing acknowledged is lost, duplicated or
/// reordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_from_the_lab_is_noticed_and_healed() {
    let _serial = SERIAL.lock().await;
    let lab = Lab::start().await;
    lab.start_traffic().await;
    lab.until_acked(30).await;

    let (status, body) = lab
        .call("POST", "/api/lab/links/node-1/node-2/cut", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let view = lab.admin_view("node-1").await;
    assert_eq!(view["links_cut"], json!(["node-2"]), "{view}");
    // Each drops the other (no answer to its probes) and no longer places
    // conversations on it; node-3 still reaches both.
    for (name, other) in [("node-1", "node-2"), ("node-2", "node-1")] {
        until(
            &format!("{name} to stop serving with {other}"),
            WAIT,
            || async {
                let view = lab.admin_view(name).await;
                let serving = view["serving_nodes"].as_array()?;
                (!serving.iter().any(|n| n == other)).then_some(())
            },
        )
        .await;
    }
    let during = lab.acked().await;
    lab.until_acked(during + 60).await;

    let (status, body) = lab
        .call("POST", "/api/lab/links/node-1/node-2/heal", None)
        .await;
    assert_eq!(status, 200, "{body}");
    until("node-1 to serve with node-2 again", WAIT, || async {
        let view = lab.admin_view("node-1").await;
        let serving = view["serving_nodes"].as_array()?;
        serving.iter().any(|n| n == "node-2").then_some(())
    })
    .await;
    // Bad requests change nothing.
    let (status, _) = lab
        .call("POST", "/api/lab/links/node-1/node-1/cut", None)
        .await;
    assert_eq!(status, 400);
    let (status, _) = lab
        .call("POST", "/api/lab/links/node-1/node-9/cut", None)
        .await;
    assert_eq!(status, 404);
    let inv = lab.stop_traffic_and_drain().await;
    eprintln!("invariants after the partition: {inv}");
    assert_no_violations(&inv);
}

// ---------- the page in a browser (as in tests/web.rs) ----------

use common::chromium::Browser;
use tests::browser::chromedriver as driver;

/// Polls `script` on the lab page until it returns something other than
/// null/false; the lab's cluster gets longer than a web page test.
async fn page_until(page: &Browser, what: &str, script: &str) -> Value {
    page.until_within(what, script, WAIT).await
}

async fn acked_on_page(page: &Browser, above: u64) -> u64 {
    page_until(
        page,
        &format!("#inv-acked above {above}"),
        &format!(
            "const n = Number(document.getElementById('inv-acked').textContent); return n > {above} ? n : null;"
        ),
    )
    .await
    .as_u64()
    .expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lab_page_kills_a_node_while_traffic_flows() {
    let Some(driver) = driver().await else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let lab = Lab::start().await;
    let page = Browser::open(&driver, 1280, 1000).await;
    page.goto(&lab.url).await;
    let client = &page.client;
    page_until(
        &page,
        "the node cards",
        "return document.querySelectorAll('section.node[data-state=\"running\"]').length === 3",
    )
    .await;

    for (id, value) in [
        ("#traffic-users", "9"),
        ("#traffic-rate", "30"),
        ("#traffic-group-size", "3"),
    ] {
        let input = client.find(Locator::Css(id)).await.expect(id);
        input.clear().await.expect("clearing");
        input.send_keys(value).await.expect("typing");
    }
    client
        .find(Locator::Css("#traffic-start"))
        .await
        .expect("start button")
        .click()
        .await
        .expect("click start");
    acked_on_page(&page, 20).await;

    client
        .find(Locator::Css(
            "button[data-action=\"kill\"][data-node=\"node-2\"]",
        ))
        .await
        .expect("the kill button of node-2")
        .click()
        .await
        .expect("click kill");
    page_until(
        &page,
        "node-2 shown killed",
        "return document.querySelector('section.node[data-node=\"node-2\"]').dataset.state === 'killed'",
    )
    .await;
    let at_kill = acked_on_page(&page, 0).await;
    acked_on_page(&page, at_kill + 20).await;
    page.shot("lab").await;

    client
        .find(Locator::Css("#traffic-stop"))
        .await
        .expect("stop button")
        .click()
        .await
        .expect("click stop");
    page_until(
        &page,
        "the traffic to drain",
        "const t = (id) => document.getElementById(id).textContent; \
         return document.getElementById('traffic-status').textContent === 'stopped' \
           && t('inv-pending') === '0' && t('inv-unacked') === '0';",
    )
    .await;
    let lost = client
        .execute(
            "return document.getElementById('inv-lost').textContent",
            vec![],
        )
        .await
        .expect("reading #inv-lost");
    assert_eq!(lost, json!("0"));
    page.close().await;
}

/// "Stop" is graceful: under traffic the node leaves on `SIGTERM` within
/// the lab's grace and ends `stopped`, not `killed` (issue #26: every stop
/// used to end in SIGKILL); "restart" brings it back.
#[tokio::test]
async fn a_stopped_node_leaves_gracefully() {
    let _serial = SERIAL.lock().await;
    let lab = Lab::start().await;
    lab.start_traffic().await;
    lab.until_acked(20).await;
    let stopped = lab.act("node-2", "stop").await;
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    let restarted = lab.act("node-2", "restart").await;
    assert_eq!(restarted["state"], "running", "{restarted}");
    let restarted = lab.act("node-2", "restart").await;
    assert_eq!(
        restarted["state"], "running",
        "a restart stops gracefully first: {restarted}"
    );
}

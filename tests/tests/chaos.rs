//! Chaos tests: three real `parley` processes under paced client traffic
//! (a group whose members sit on every node, and direct chats across
//! nodes) while nodes are killed (`SIGKILL`), hung past their lease
//! (`SIGSTOP`, then `SIGCONT`), restarted one by one (`SIGTERM`), and
//! killed and restarted at random from a printed seed
//! (`PARLEY_CHAOS_SEED` replays one).
//!
//! The clients are `tests::traffic` drivers: they resend what is not
//! acknowledged with the same client_msg_id and reconnect to another node
//! when their socket ends or stalls. After each scenario, from what they
//! recorded and the stored histories (read over HTTP):
//!
//! - every message whose sender got `sent` is stored at that seq, once;
//! - every member received its conversations' messages exactly as stored:
//!   the same order for all, gapless from 1;
//! - the user of a dead node is shown offline to its contacts within a
//!   stated bound, and the time from a kill until the conversations homed
//!   on the dead node accept sends again is measured (a probe resent every
//!   100 ms, and the paced traffic); both are printed.
//!
//! Besides: in steady state nobody is ever shown offline; a hung node's
//! stale conversation actors commit nothing (a send it reads only after
//! SIGCONT is stored once; `parley_fenced_appends` is printed); a SIGTERM
//! closes the node's sockets with 1012 within a bound.
//!
//! The scenarios run one at a time (they measure timings on a small
//! machine), each bounded in time and traffic. `PARLEY_CHAOS_SEED=<n>`
//! replays the random scenario, `PARLEY_CHAOS_ROUNDS=<n>` lengthens it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tests::client::{Api, User, Ws};
use tests::node::{TestCluster, Timing};
use tests::traffic::{self, Driver, History, Member, Settings};

const NODES: usize = 3;
/// Ordinary waits.
const T: Duration = Duration::from_secs(20);
/// After `kill -9` (or a graceful stop) of a user's node, its contacts see
/// it offline within this (the transport notices a closed connection at
/// once).
const OFFLINE_AFTER_KILL: Duration = Duration::from_secs(3);
/// After a node hangs, its users are shown offline within this: the lease
/// TTL (1.5 s) plus a heartbeat or two, plus slack for a loaded machine.
const OFFLINE_AFTER_PAUSE: Duration = Duration::from_secs(5);
/// A conversation homed on a killed node accepts sends again within this.
const RECOVERY_AFTER_KILL: Duration = Duration::from_secs(5);
/// ... and on a hung node: its lease must run out first.
const RECOVERY_AFTER_PAUSE: Duration = Duration::from_secs(8);

/// A node leaves gracefully (SIGTERM: lease dropped, conversations handed
/// off, sockets closed with 1012) within this.
const GRACEFUL_STOP: Duration = Duration::from_secs(3);

/// One scenario at a time: they measure failover times.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A log line without its terminal colours.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... final letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A small deterministic PRNG (splitmix64), so a seed replays a run.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in 0..n for a test schedule.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A cluster, its users and their traffic.
struct Chaos {
    name: &'static str,
    cluster: TestCluster,
    /// The driven users; user i first connects to node i % NODES.
    users: Vec<User>,
    /// One extra group member per node that connects once and never
    /// reconnects: how fast its contacts see it offline is measured.
    lurkers: Vec<User>,
    lurker_ws: Vec<Option<Ws>>,
    /// The group of everyone.
    group: u64,
    /// Every conversation, with the indexes of its driven members.
    convs: BTreeMap<u64, Vec<usize>>,
    driver: Driver,
    http: reqwest::Client,
    started: Instant,
}

impl Chaos {
    /// Three nodes; six users (two per node); a group of all of them (and
    /// the lurkers); a direct chat between each user and the next, whose
    /// first nodes always differ. Traffic starts at once.
    async fn start(name: &'static str) -> Self {
        let started = Instant::now();
        let cluster = TestCluster::start_with(NODES, Timing::default(), &[]).await;
        let api = Api::new(cluster.nodes[0].http);
        let mut users = Vec::new();
        for i in 0..2 * NODES {
            users.push(api.user(&format!("user{i}")).await);
        }
        let mut lurkers = Vec::new();
        for k in 0..NODES {
            lurkers.push(api.user(&format!("lurker{k}")).await);
        }
        let others: Vec<&User> = users[1..].iter().chain(lurkers.iter()).collect();
        let group = api.group(&users[0], "everyone", &others).await;
        let mut convs = BTreeMap::new();
        convs.insert(group, (0..users.len()).collect::<Vec<_>>());
        for i in 0..users.len() {
            let j = (i + 1) % users.len();
            let direct = api.direct(&users[i], &users[j]).await;
            convs.insert(direct, vec![i, j]);
        }
        let members = users
            .iter()
            .enumerate()
            .map(|(i, user)| Member {
                user: user.clone(),
                convs: convs
                    .iter()
                    .filter(|(_, m)| m.contains(&i))
                    .map(|(c, _)| *c)
                    .collect(),
                node: i % NODES,
            })
            .collect();
        let addrs: Vec<_> = cluster.nodes.iter().map(|n| n.http).collect();
        let driver = Driver::start(&addrs, members, Settings::default());
        let chaos = Self {
            name,
            cluster,
            users,
            lurkers,
            lurker_ws: (0..NODES).map(|_| None).collect(),
            group,
            convs,
            driver,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("http client"),
            started,
        };
        if let Err(e) = chaos.driver.wait_connected(T).await {
            chaos.fail(&e);
        }
        chaos
    }

    /// Fails the test with the evidence: the node logs are copied out of
    /// the temporary directory (which is removed on the way out) and
    /// their tails printed.
    fn fail(&self, what: &str) -> ! {
        let keep = std::env::temp_dir().join(format!(
            "parley-chaos-{}-{}-{}",
            self.name,
            std::process::id(),
            now_ms()
        ));
        let _ = std::fs::create_dir_all(&keep);
        for node in &self.cluster.nodes {
            let text = node.log_text();
            let _ = std::fs::write(keep.join(format!("{}.log", node.name)), &text);
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(20)..];
            eprintln!("----- {} (last {} lines) -----", node.name, tail.len());
            for line in tail {
                eprintln!("{}", strip_ansi(line));
            }
        }
        eprintln!("[{}] {}", self.name, self.driver.stats());
        panic!(
            "[{}] {what}\n(node logs kept in {})",
            self.name,
            keep.display()
        );
    }

    /// Polls `check` until it answers, or fails the test.
    async fn wait<R>(&self, what: &str, timeout: Duration, check: impl FnMut() -> Option<R>) -> R {
        match traffic::poll(timeout, check).await {
            Some(v) => v,
            None => self.fail(&format!("timed out after {timeout:?} waiting for {what}")),
        }
    }

    /// Waits until `n` more messages are acknowledged: traffic flows.
    async fn traffic(&self, n: usize) {
        let target = self.driver.acked() + n;
        self.wait(&format!("{n} more acknowledged sends"), T, || {
            (self.driver.acked() >= target).then_some(())
        })
        .await
    }

    fn running(&self) -> Vec<usize> {
        (0..NODES)
            .filter(|&i| self.cluster.nodes[i].is_running())
            .collect()
    }

    /// The home node of `conv` when `nodes` are live (the server's own
    /// placement function over node names).
    fn home(&self, conv: u64, nodes: &[usize]) -> usize {
        let names = nodes.iter().map(|&i| self.cluster.nodes[i].name.as_str());
        let home = actors::placement::conversation_home(conv, names).expect("a live node");
        nodes
            .iter()
            .copied()
            .find(|&i| self.cluster.nodes[i].name == home)
            .expect("home among the nodes")
    }

    fn homed_on(&self, node: usize, nodes: &[usize]) -> Vec<u64> {
        self.convs
            .keys()
            .copied()
            .filter(|&c| self.home(c, nodes) == node)
            .collect()
    }

    /// The driven clients connected to `node` now.
    fn clients_on(&self, node: usize) -> Vec<usize> {
        self.driver
            .logs()
            .iter()
            .enumerate()
            .filter(|(_, l)| l.current_node() == Some(node))
            .map(|(i, _)| i)
            .collect()
    }

    /// A metric of a node (counters may carry `_total`).
    async fn metric(&self, node: usize, name: &str) -> Option<f64> {
        let url = self.cluster.nodes[node].url("/metrics");
        let text = self.http.get(url).send().await.ok()?.text().await.ok()?;
        text.lines().find_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            (key == name || key == format!("{name}_total"))
                .then(|| value.parse().ok())
                .flatten()
        })
    }

    /// The sum of a metric over the running nodes.
    async fn metric_sum(&self, name: &str) -> f64 {
        let mut sum = 0.0;
        for i in self.running() {
            sum += self.metric(i, name).await.unwrap_or(0.0);
        }
        sum
    }

    /// Waits until every running node sees exactly the running nodes.
    async fn mesh(&self) {
        let running = self.running();
        let want = running.len() as f64;
        let deadline = Instant::now() + T;
        for &i in &running {
            loop {
                if self.metric(i, "parley_live_nodes").await == Some(want) {
                    break;
                }
                if Instant::now() >= deadline {
                    self.fail(&format!(
                        "{} does not see the {want} running nodes",
                        self.cluster.nodes[i].name
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Connects node `node`'s lurker there, and waits until every driven
    /// client was told it is online.
    async fn connect_lurker(&mut self, node: usize) {
        let lurker = self.lurkers[node].clone();
        let ws = match Ws::connect(&self.cluster.nodes[node].ws_url(&lurker.token)).await {
            Ok(ws) => ws,
            Err(e) => self.fail(&format!("lurker{node} cannot connect: {e}")),
        };
        self.wait(&format!("hello for lurker{node}"), T, || {
            ws.frames()
                .iter()
                .any(|f| f["type"] == "hello")
                .then_some(())
        })
        .await;
        self.lurker_ws[node] = Some(ws);
        self.wait(
            &format!("every client to see lurker{node} online"),
            T,
            || {
                self.driver
                    .logs()
                    .iter()
                    .all(|l| l.last_presence(lurker.id) == Some(true))
                    .then_some(())
            },
        )
        .await;
    }

    /// For each of `convs`: the time from `since` until a client got `sent`
    /// for a message committed after `since_ms`.
    async fn recovery(
        &self,
        convs: &[u64],
        since: Instant,
        since_ms: u64,
        timeout: Duration,
    ) -> BTreeMap<u64, Duration> {
        let out = self
            .wait(
                &format!("conversations {convs:?} to accept sends again (bound {timeout:?})"),
                timeout.saturating_sub(since.elapsed()),
                || {
                    let logs = self.driver.logs();
                    let mut out = BTreeMap::new();
                    for &c in convs {
                        let first = logs
                            .iter()
                            .flat_map(|l| {
                                l.acks()
                                    .filter(|(_, conv, a)| *conv == c && a.sent_at > since_ms)
                                    .map(|(_, _, a)| a.at)
                                    .collect::<Vec<_>>()
                            })
                            .min()?;
                        out.insert(c, first.saturating_duration_since(since));
                    }
                    Some(out)
                },
            )
            .await;
        if let Some((conv, late)) = out.iter().find(|(_, d)| **d > timeout) {
            self.fail(&format!(
                "conversation {conv} accepted sends again only after {late:?} (bound {timeout:?})"
            ));
        }
        out
    }

    /// Second devices, on `node`, of one driven member of each of `convs`:
    /// the probes of [`probe`].
    async fn probers(&self, convs: &[u64], node: usize) -> BTreeMap<u64, Ws> {
        let mut out = BTreeMap::new();
        for &conv in convs {
            let user = &self.users[self.convs[&conv][0]];
            let ws = match Ws::connect(&self.cluster.nodes[node].ws_url(&user.token)).await {
                Ok(ws) => ws,
                Err(e) => self.fail(&format!("prober of conv {conv} cannot connect: {e}")),
            };
            self.wait("hello for a prober", T, || {
                ws.frames()
                    .iter()
                    .any(|f| f["type"] == "hello")
                    .then_some(())
            })
            .await;
            out.insert(conv, ws);
        }
        out
    }

    /// Waits until every driven client was told `user` went offline after
    /// `since`; returns the fastest and the slowest, or what each client
    /// that was not told last heard about `user`.
    async fn offline_seen(
        &self,
        user: u64,
        since: Instant,
        bound: Duration,
    ) -> Result<(Duration, Duration), String> {
        let seen = traffic::poll(bound.saturating_sub(since.elapsed()), || {
            let times = self
                .driver
                .logs()
                .iter()
                .map(|l| l.presence_after(user, false, since))
                .collect::<Option<Vec<_>>>()?;
            let min = times.iter().min()?.saturating_duration_since(since);
            let max = times.iter().max()?.saturating_duration_since(since);
            Some((min, max))
        })
        .await;
        if let Some((_, slowest)) = seen.filter(|(_, slowest)| *slowest > bound) {
            return Err(format!(
                "user {user} was shown offline to a contact only after {slowest:?} \
                 (bound {bound:?})"
            ));
        }
        seen.ok_or_else(|| {
            let blind: Vec<String> = self
                .driver
                .logs()
                .iter()
                .filter(|l| l.presence_after(user, false, since).is_none())
                .map(|l| {
                    format!(
                        "user {} (on node {:?}, last told online={:?})",
                        l.user_id,
                        l.current_node(),
                        l.last_presence(user)
                    )
                })
                .collect();
            format!(
                "user {user} was not shown offline within {bound:?} to {} of {} contacts: \
                 {blind:?}",
                blind.len(),
                self.users.len()
            )
        })
    }

    /// `online` of `GET /api/users/{id}` as `node` answers it.
    async fn online_per_api(&self, node: usize, user: u64) -> Option<bool> {
        let api = Api::new(self.cluster.nodes[node].http);
        let (status, body) = api
            .call(
                "GET",
                &format!("/api/users/{user}"),
                Some(&self.users[0].token),
                None,
            )
            .await;
        (status == 200).then(|| body["online"].as_bool()).flatten()
    }

    /// Waits until each of `clients` is connected again (after `since`) to
    /// a node other than `gone`; returns the slowest reconnection.
    async fn reconnected(&self, clients: &[usize], gone: usize, since: Instant) -> Duration {
        self.wait(
            &format!("clients {clients:?} of node {gone} to reconnect elsewhere"),
            T,
            || {
                let logs = self.driver.logs();
                let mut slowest = Duration::ZERO;
                for &c in clients {
                    let at = logs[c]
                        .connections
                        .iter()
                        .filter(|x| x.node != gone && x.opened > since)
                        .find_map(|x| x.hello)?;
                    slowest = slowest.max(at - since);
                }
                Some(slowest)
            },
        )
        .await
    }

    /// Stops new sends, waits for every acknowledgement, reads the stored
    /// histories and checks the clients' records against them. Returns
    /// the stored histories.
    async fn finish(&mut self) -> BTreeMap<u64, traffic::Stored> {
        if let Err(e) = self.driver.drain(T).await {
            self.fail(&e);
        }
        let node = self.running()[0];
        let api = Api::new(self.cluster.nodes[node].http);
        let mut stored = BTreeMap::new();
        for (&conv, members) in &self.convs {
            let token = &self.users[members[0]].token;
            match traffic::history(&api, token, conv).await {
                Ok(s) => {
                    stored.insert(conv, s);
                }
                Err(e) => self.fail(&e),
            }
        }
        let truth: BTreeMap<u64, History> = stored
            .iter()
            .map(|(c, s)| (*c, s.history.clone()))
            .collect();
        // Each client syncs from its own watermarks until it holds exactly
        // the stored histories (or the check below says what differs).
        let complete = self.driver.await_histories(&truth, T).await;
        let violations = self.driver.verify(&truth);
        let stats = self.driver.stats();
        if !violations.is_empty() || !complete {
            self.fail(&format!(
                "{} violations (histories complete: {complete}):\n  {}",
                violations.len(),
                violations
                    .iter()
                    .take(30)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n  ")
            ));
        }
        let sizes: Vec<usize> = truth.values().map(|h| h.len()).collect();
        let fenced = self.metric_sum("parley_fenced_appends").await;
        eprintln!(
            "[{}] ok: {stats}; stored per conversation {sizes:?}; every member holds the same \
             gapless history; parley_fenced_appends (running nodes) {fenced}; {:.1?} in all",
            self.name,
            self.started.elapsed()
        );
        stored
    }
}

/// Sends one message to each conversation through its prober (see
/// [`Chaos::probers`]), the same client_msg_id again every 100 ms until
/// acknowledged; returns, per conversation, the time from `since` to the
/// acknowledgement, or an error once `bound` after `since` passed.
async fn probe(
    probers: &mut BTreeMap<u64, Ws>,
    tag: &str,
    since: Instant,
    bound: Duration,
) -> Result<BTreeMap<u64, Duration>, String> {
    let mut acked = BTreeMap::new();
    let id = |conv: &u64| format!("probe-{tag}-{conv}");
    while acked.len() < probers.len() {
        if since.elapsed() >= bound {
            return Err(format!(
                "probes {tag} not acknowledged within {bound:?}: only {acked:?} of {:?}",
                probers.keys().collect::<Vec<_>>()
            ));
        }
        for (conv, ws) in probers.iter_mut() {
            if !acked.contains_key(conv) {
                let id = id(conv);
                ws.send(json!({"type":"send","conv_id": conv,"client_msg_id": id,"body": id}))
                    .await;
            }
        }
        let resend = Instant::now() + Duration::from_millis(100);
        while Instant::now() < resend && acked.len() < probers.len() {
            for (conv, ws) in probers.iter() {
                let id = id(conv);
                if !acked.contains_key(conv)
                    && ws
                        .of_type("sent")
                        .iter()
                        .any(|f| f["client_msg_id"] == id.as_str())
                {
                    acked.insert(*conv, since.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_traffic_on_three_nodes() {
    let _serial = SERIAL.lock().await;
    let mut s = Chaos::start("steady").await;
    // Everyone is told everyone else is online.
    let driven: Vec<u64> = s.users.iter().map(|u| u.id).collect();
    s.wait("every client to see every other user online", T, || {
        s.driver
            .logs()
            .iter()
            .all(|l| {
                driven
                    .iter()
                    .all(|&u| u == l.user_id || l.last_presence(u) == Some(true))
            })
            .then_some(())
    })
    .await;
    let settled = Instant::now();
    let t0 = Instant::now();
    // Long enough for several membership heartbeats and redials.
    s.traffic(140).await;
    eprintln!(
        "[steady] 140 sends acknowledged in {:.1?} ({} clients, one send per {:?} each)",
        t0.elapsed(),
        s.users.len(),
        Settings::default().send_every
    );
    let stored = s.finish().await;
    // Nothing failed, so what each sender sent once is stored in its
    // sending order.
    for log in s.driver.logs() {
        for conv in &log.convs {
            let seqs: Vec<u64> = log
                .sent_order
                .iter()
                .filter_map(|id| log.attempts.get(id).map(|a| (id, a)))
                .filter(|(_, a)| a.conv == *conv && a.tries == 1)
                .filter_map(|(_, a)| a.ack.map(|ack| ack.seq))
                .collect();
            if !seqs.windows(2).all(|w| w[0] < w[1]) {
                s.fail(&format!(
                    "user {} conv {conv}: own messages stored out of sending order: {seqs:?}",
                    log.user_id
                ));
            }
        }
    }
    // Nobody's node died and nobody disconnected: once everyone was seen
    // online, nobody may be shown offline.
    let flaps: Vec<String> = s
        .driver
        .logs()
        .iter()
        .flat_map(|l| {
            l.presence
                .iter()
                .filter(|p| !p.online && p.at > settled && driven.contains(&p.user_id))
                .map(|p| {
                    format!(
                        "user {} told user {} is offline {:?} into the steady run",
                        l.user_id,
                        p.user_id,
                        p.at.saturating_duration_since(settled)
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if !flaps.is_empty() {
        s.fail(&format!(
            "{} presence frames showed connected users offline, no node having died: {:?}",
            flaps.len(),
            &flaps[..flaps.len().min(12)]
        ));
    }
    let group = &stored[&s.group].history;
    let senders: std::collections::BTreeSet<u64> = group.values().map(|(u, _)| *u).collect();
    assert_eq!(
        senders.len(),
        s.users.len(),
        "every member sent to the group"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_the_home_node_of_busy_conversations() {
    let _serial = SERIAL.lock().await;
    let mut s = Chaos::start("kill").await;
    s.traffic(40).await;
    let all = s.running();
    let victim = s.home(s.group, &all);
    s.connect_lurker(victim).await;
    let affected = s.homed_on(victim, &all);
    let on_victim = s.clients_on(victim);
    let synced_before: Vec<u64> = on_victim.iter().map(|&c| s.driver.log(c).synced).collect();
    s.traffic(20).await;

    let survivor = (0..NODES).find(|&i| i != victim).expect("a survivor");
    let mut probers = s.probers(&affected, survivor).await;

    let (killed, killed_ms) = (Instant::now(), now_ms());
    s.cluster.nodes[victim].kill();
    let name = s.cluster.nodes[victim].name.clone();
    let probed = probe(&mut probers, "kill", killed, RECOVERY_AFTER_KILL)
        .await
        .unwrap_or_else(|e| s.fail(&e));
    let recovery = s
        .recovery(&affected, killed, killed_ms, RECOVERY_AFTER_KILL)
        .await;
    eprintln!(
        "[kill] conversations homed on {name} accept sends again after kill -9: a probe sent at \
         once (resent every 100 ms) acknowledged after {probed:?}; the paced traffic's first \
         acknowledged commit after {recovery:?} (bound {RECOVERY_AFTER_KILL:?})"
    );
    let (fastest, slowest) = s
        .offline_seen(s.lurkers[victim].id, killed, OFFLINE_AFTER_KILL)
        .await
        .unwrap_or_else(|e| s.fail(&e));
    eprintln!(
        "[kill] lurker{victim} on {name} shown offline to its contacts after {fastest:?} \
         (slowest contact {slowest:?}, bound {OFFLINE_AFTER_KILL:?})"
    );
    let back = s.reconnected(&on_victim, victim, killed).await;
    eprintln!(
        "[kill] the {} clients of {name} reconnected to a survivor within {back:?}",
        on_victim.len()
    );
    s.traffic(40).await;
    // They synced there: the automatic sync at connect and their own.
    for (&c, before) in on_victim.iter().zip(synced_before) {
        let log = s.driver.log(c);
        if log.synced <= before {
            s.fail(&format!("client {c} did not sync after reconnecting"));
        }
    }
    s.finish().await;
}

/// Whether the shared store's write lock is free at this instant (a
/// transaction can start without waiting).
fn store_write_lock_free(dir: &std::path::Path) -> bool {
    let options = storage::SqliteOptions {
        busy_timeout: Duration::ZERO,
        checkpoint_every: None,
        ..storage::SqliteOptions::default()
    };
    let Ok(backend) = storage::SqliteBackend::open(dir.join("parley.sqlite"), options) else {
        return false;
    };
    let db = storage::Database::new(backend).with_retry(storage::RetryPolicy {
        max_attempts: 1,
        ..storage::RetryPolicy::default()
    });
    db.run(|_| Ok(())).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_hung_past_its_lease_commits_nothing_stale() {
    let _serial = SERIAL.lock().await;
    let mut s = Chaos::start("pause").await;
    let timing = Timing::default();
    s.traffic(40).await;
    let all = s.running();
    let victim = s.home(s.group, &all);
    let name = s.cluster.nodes[victim].name.clone();
    s.connect_lurker(victim).await;
    let affected = s.homed_on(victim, &all);
    let on_victim = s.clients_on(victim);
    let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != victim).collect();
    let fenced_before = s.metric_sum("parley_fenced_appends").await;
    s.traffic(20).await;

    let mut probers = s.probers(&affected, survivors[0]).await;

    // Hang the node outside a store transaction: one paused while holding
    // the embedded store's write lock stalls every node (a documented
    // property of a shared SQLite file), which is not what this scenario
    // is about. Once stopped it cannot take the lock, so a free lock seen
    // after the pause stays free of it.
    let mut attempts = 0;
    loop {
        s.cluster.nodes[victim].pause();
        let dir = s.cluster.dir().to_owned();
        let free = tokio::task::spawn_blocking(move || store_write_lock_free(&dir))
            .await
            .unwrap_or(false);
        attempts += 1;
        if free || attempts >= 50 {
            break;
        }
        s.cluster.nodes[victim].resume();
        tokio::time::sleep(Duration::from_millis(3 * attempts)).await;
    }
    if attempts > 1 {
        eprintln!("[pause] {name} was paused {attempts} times to catch it outside a commit");
    }
    let (paused, paused_ms) = (Instant::now(), now_ms());
    // A send into the hung node: it reads it only after SIGCONT, when its
    // conversation actors are stale.
    let stale_probe =
        json!({"type":"send","conv_id": s.group,"client_msg_id":"stale-probe","body":"x"});
    if let Some(ws) = s.lurker_ws[victim].as_mut() {
        ws.send(stale_probe.clone()).await;
    }
    let probed = probe(&mut probers, "pause", paused, RECOVERY_AFTER_PAUSE)
        .await
        .unwrap_or_else(|e| s.fail(&e));
    let recovery = s
        .recovery(&affected, paused, paused_ms, RECOVERY_AFTER_PAUSE)
        .await;
    eprintln!(
        "[pause] conversations homed on hung {name} accept sends again: a probe sent at once \
         (resent every 100 ms) acknowledged after {probed:?}; the paced traffic's first \
         acknowledged commit after {recovery:?} (lease TTL {} ms, bound \
         {RECOVERY_AFTER_PAUSE:?})",
        timing.lease_ttl_ms
    );
    // Checked in full below; a failure here is kept for the end so the
    // fencing and durability checks still run.
    let mut problems = Vec::new();
    let lurker = s.lurkers[victim].id;
    match s.offline_seen(lurker, paused, OFFLINE_AFTER_PAUSE).await {
        Ok((fastest, slowest)) => eprintln!(
            "[pause] lurker{victim} on hung {name} shown offline after {fastest:?} (slowest \
             contact {slowest:?}, bound {OFFLINE_AFTER_PAUSE:?})"
        ),
        Err(e) => {
            let mut api_says = Vec::new();
            for &i in &survivors {
                let online = s.online_per_api(i, lurker).await;
                api_says.push(format!("{}: online={online:?}", s.cluster.nodes[i].name));
            }
            let e = format!(
                "{e}; {:?} after the hang, GET /api/users/{lurker} answers {api_says:?}",
                paused.elapsed()
            );
            eprintln!("[pause] PROBLEM: {e}");
            problems.push(e);
        }
    }
    let moved = s.reconnected(&on_victim, victim, paused).await;
    eprintln!(
        "[pause] the {} clients of hung {name} gave it up and reconnected to a survivor within \
         {moved:?}",
        on_victim.len()
    );
    for &i in &survivors {
        let want = survivors.len() as f64;
        let deadline = Instant::now() + T;
        while s.metric(i, "parley_live_nodes").await != Some(want) {
            if Instant::now() >= deadline {
                s.fail(&format!(
                    "{} still counts hung {name} live",
                    s.cluster.nodes[i].name
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Hung for at least twice its lease, the others serving meanwhile.
    let target = s.driver.acked() + 20;
    let hang = Duration::from_millis(2 * timing.lease_ttl_ms);
    s.wait("traffic while the node hangs", T, || {
        (paused.elapsed() >= hang && s.driver.acked() >= target).then_some(())
    })
    .await;
    let hung_for = paused.elapsed();
    s.cluster.nodes[victim].resume();
    s.mesh().await;
    eprintln!("[pause] {name} hung for {hung_for:.1?}; back in the cluster after SIGCONT");

    // The probe the hung node read late is committed once, by whoever
    // owns the group now (the hung node's lurker resends it meanwhile).
    let deadline = Instant::now() + T;
    let probe_seq = loop {
        let ws = s.lurker_ws[victim].as_mut().expect("lurker");
        if let Some(seq) = ws
            .of_type("sent")
            .iter()
            .find(|f| f["client_msg_id"] == "stale-probe")
            .and_then(|f| f["seq"].as_u64())
        {
            break seq;
        }
        if Instant::now() >= deadline {
            s.fail("the probe sent into the hung node was never acknowledged");
        }
        ws.send(stale_probe.clone()).await;
        let ws = s.lurker_ws[victim].as_ref().expect("lurker");
        traffic::poll(Duration::from_secs(1), || {
            ws.of_type("sent")
                .iter()
                .any(|f| f["client_msg_id"] == "stale-probe")
                .then_some(())
        })
        .await;
    };
    s.traffic(40).await;
    let fenced = s.metric_sum("parley_fenced_appends").await - fenced_before;
    let fenced_on_victim = s.metric(victim, "parley_fenced_appends").await;
    let fence_lines = s.cluster.nodes[victim]
        .log_text()
        .lines()
        .filter(|l| l.contains("fenced out"))
        .count();
    eprintln!(
        "[pause] parley_fenced_appends: +{fenced} over the cluster, {fenced_on_victim:?} on {name} \
         ({fence_lines} \"fenced out\" lines in its log); the probe got seq {probe_seq}"
    );
    let stored = s.finish().await;
    let probe_entry = (lurker, "stale-probe".to_owned());
    let copies: Vec<u64> = stored[&s.group]
        .history
        .iter()
        .filter(|(_, e)| **e == probe_entry)
        .map(|(seq, _)| *seq)
        .collect();
    if copies != [probe_seq] {
        s.fail(&format!(
            "the probe is stored at {copies:?}, acknowledged as {probe_seq}"
        ));
    }
    // What the hung node's clients sent into it without an acknowledgement
    // (before they gave it up) was resent through a survivor and
    // acknowledged there (so it is stored once: finish checked).
    let logs = s.driver.logs();
    let mut stuck = Vec::new();
    for &c in &on_victim {
        let log = &logs[c];
        let Some(left) = log
            .connections
            .iter()
            .find(|x| x.node == victim && x.opened < paused)
            .and_then(|x| x.ended)
        else {
            problems.push(format!("client {c} never left the hung node"));
            continue;
        };
        for (id, a) in &log.attempts {
            // An acknowledgement read before the client left was written
            // by the node before it stopped (a stopped process writes
            // nothing; its last frames may still sit in socket buffers).
            let unacked_there = a.first <= left && a.ack.is_none_or(|ack| ack.at > left);
            if unacked_there {
                stuck.push((c, id.clone(), a.ack.map(|ack| (ack.seq, ack.at > left))));
            }
        }
    }
    let moved_on = stuck
        .iter()
        .filter(|(_, _, ack)| matches!(ack, Some((_, true))))
        .count();
    eprintln!(
        "[pause] the hung node's clients had {} sends unacknowledged on it; {moved_on} were \
         acknowledged after resending through a survivor",
        stuck.len()
    );
    if moved_on != stuck.len() {
        problems.push(format!(
            "sends stuck on the hung node not acknowledged through a survivor: {stuck:?}"
        ));
    }
    if !problems.is_empty() {
        s.fail(&problems.join("\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_traffic() {
    let _serial = SERIAL.lock().await;
    let mut s = Chaos::start("rolling").await;
    s.traffic(40).await;
    // Bounds broken are collected and reported at the end, so that every
    // restart and the final checks still run.
    let mut problems = Vec::new();
    for node in 0..NODES {
        let name = s.cluster.nodes[node].name.clone();
        s.connect_lurker(node).await;
        let running = s.running();
        let homed = s.homed_on(node, &running);
        let on_node = s.clients_on(node);
        let other = (0..NODES).find(|&i| i != node).expect("another node");
        let mut probers = s.probers(&homed, other).await;
        let (stopped, stopped_ms) = (Instant::now(), now_ms());
        // SIGTERM, and meanwhile probe the conversations it was home of.
        let tag = format!("stop-{node}");
        let (stop_took, probed) = tokio::join!(
            async {
                s.cluster.nodes[node].stop().await;
                stopped.elapsed()
            },
            probe(&mut probers, &tag, stopped, RECOVERY_AFTER_KILL)
        );
        if stop_took > GRACEFUL_STOP {
            problems.push(format!(
                "{name} took {stop_took:.1?} to stop after SIGTERM (bound {GRACEFUL_STOP:?}); \
                 its clients waited that long for their 1012"
            ));
        }
        let probed = probed.unwrap_or_else(|e| {
            problems.push(format!("{name}: {e}"));
            BTreeMap::new()
        });
        // Its clients were told to reconnect elsewhere (1012), and did.
        let closes = s
            .wait("the restarting node's sockets to end", T, || {
                let logs = s.driver.logs();
                on_node
                    .iter()
                    .map(|&c| {
                        logs[c]
                            .connections
                            .iter()
                            .rev()
                            .find(|x| x.node == node && x.opened < stopped)
                            .and_then(|x| x.ended.map(|_| (x.close.clone(), x.why.clone())))
                    })
                    .collect::<Option<Vec<_>>>()
            })
            .await;
        for (&c, (close, why)) in on_node.iter().zip(&closes) {
            if close.as_ref().map(|(code, _)| *code) != Some(1012) {
                s.fail(&format!(
                    "client {c} of {name} was not closed with 1012 but {close:?} ({why})"
                ));
            }
        }
        let lurker_close = s.lurker_ws[node].as_ref().and_then(Ws::closed);
        if lurker_close.as_ref().map(|(code, _)| *code) != Some(1012) {
            s.fail(&format!(
                "lurker{node} closed with {lurker_close:?}, not 1012"
            ));
        }
        let moved = s.reconnected(&on_node, node, stopped).await;
        let offline = match s
            .offline_seen(s.lurkers[node].id, stopped, OFFLINE_AFTER_KILL)
            .await
        {
            Ok((fastest, slowest)) => format!("{fastest:?}..{slowest:?}"),
            Err(e) => {
                problems.push(format!("{name}: {e}"));
                "(bound broken)".to_owned()
            }
        };
        let recovery = s.recovery(&homed, stopped, stopped_ms, T).await;
        s.lurker_ws[node] = None;
        let started = Instant::now();
        s.cluster.nodes[node].start().await;
        s.mesh().await;
        eprintln!(
            "[rolling] {name}: SIGTERM took {stop_took:.1?}; its {} clients closed with 1012 and \
             reconnected within {moved:?}; lurker{node} offline after {offline}; its \
             conversations accepted a probe after {probed:?} and the traffic after \
             {recovery:?} (from SIGTERM); back in {:.1?}",
            on_node.len(),
            started.elapsed()
        );
        s.traffic(30).await;
    }
    s.finish().await;
    if !problems.is_empty() {
        s.fail(&problems.join("\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kills_and_restarts_from_a_seed() {
    let _serial = SERIAL.lock().await;
    let seed = std::env::var("PARLEY_CHAOS_SEED")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("chaos seed: {seed}");
    let rounds = std::env::var("PARLEY_CHAOS_ROUNDS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(6);
    let mut rng = SplitMix64(seed);
    let mut s = Chaos::start("random").await;
    s.traffic(30).await;
    for node in 0..NODES {
        s.connect_lurker(node).await;
    }
    let mut kills = Vec::new();
    for round in 1..=rounds {
        // Traffic for a random while: the chaos schedule, not a wait.
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1200))).await;
        let running = s.running();
        let dead: Vec<usize> = (0..NODES).filter(|i| !running.contains(i)).collect();
        let kill = dead.is_empty() || (running.len() > 1 && rng.below(3) != 0);
        if kill {
            let victim = running[rng.below(running.len() as u64) as usize];
            let name = s.cluster.nodes[victim].name.clone();
            let affected = s.homed_on(victim, &running);
            let survivor = running.iter().copied().find(|&i| i != victim);
            let survivor = survivor.expect("a survivor");
            let mut probers = s.probers(&affected, survivor).await;
            let (killed, killed_ms) = (Instant::now(), now_ms());
            s.cluster.nodes[victim].kill();
            s.lurker_ws[victim] = None;
            let probed = probe(
                &mut probers,
                &format!("r{round}"),
                killed,
                RECOVERY_AFTER_KILL,
            )
            .await
            .unwrap_or_else(|e| s.fail(&e));
            let recovery = s
                .recovery(&affected, killed, killed_ms, RECOVERY_AFTER_KILL)
                .await;
            let (fastest, slowest) = s
                .offline_seen(s.lurkers[victim].id, killed, OFFLINE_AFTER_KILL)
                .await
                .unwrap_or_else(|e| s.fail(&e));
            eprintln!(
                "[random] round {round}: kill -9 {name}; its conversations accept sends again \
                 after {probed:?} (probe), {recovery:?} (traffic); lurker{victim} offline after \
                 {fastest:?}..{slowest:?}"
            );
            kills.push((probed.values().max().copied(), slowest));
        } else {
            let node = dead[rng.below(dead.len() as u64) as usize];
            let started = Instant::now();
            s.cluster.nodes[node].start().await;
            s.mesh().await;
            s.connect_lurker(node).await;
            eprintln!(
                "[random] round {round}: restarted {} in {:.1?}",
                s.cluster.nodes[node].name,
                started.elapsed()
            );
        }
        // Whatever happened, every conversation keeps accepting sends.
        let convs: Vec<u64> = s.convs.keys().copied().collect();
        let (now, now_ms) = (Instant::now(), now_ms());
        s.recovery(&convs, now, now_ms, T).await;
    }
    for node in 0..NODES {
        if !s.cluster.nodes[node].is_running() {
            s.cluster.nodes[node].start().await;
        }
    }
    s.mesh().await;
    s.traffic(30).await;
    eprintln!(
        "[random] seed {seed}: {} kills (slowest probe recovery, slowest offline): {kills:?}",
        kills.len()
    );
    s.finish().await;
}

//! A history checker under a seeded random schedule of faults, in the
//! manner of Jepsen: three nodes, each in a network namespace of its own
//! on a bridge, sharing one store (SQLite, or FoundationDB on a fourth
//! host), under paced traffic from careful
//! clients (`tests::traffic`: they resend what is unacknowledged with the
//! same `client_msg_id` and reconnect elsewhere when their socket ends or
//! stalls). One fault at a time, each healed before the next:
//!
//! - the link between two nodes cut both ways, or one way;
//! - one node cut from all its peers;
//! - a node killed (`SIGKILL`), restarted at the heal;
//! - a node paused past its lease (`SIGSTOP`), resumed at the heal;
//! - on FoundationDB (`PARLEY_TEST_STORE=fdb`; the database then runs in a
//!   namespace of its own): a node cut from the database while its
//!   clients and peers still reach it.
//!
//! At the end the checker reads every conversation's stored history and
//! holds the clients' records against it: every acknowledged message is
//! stored at its seq, once (no `client_msg_id` at two seqs, so no
//! duplicate); every member received exactly the stored history, the same
//! order for all, gapless; every send was answered. It prints, per fault,
//! the longest a client waited for a `sent` among the sends first tried
//! during the fault, and a summary per kind of fault (BENCHMARKS.md,
//! "Faults and the clients' histories").
//!
//! The seed is printed; `PARLEY_FAULTS_SEED=<n>` replays a schedule and
//! `PARLEY_FAULTS_ROUNDS=<n>` lengthens it, `PARLEY_FAULTS_LOGS=1` prints
//! the node logs at the end (the long version:
//! `PARLEY_FAULTS_ROUNDS=100 cargo test -p tests --test history --
//! --nocapture`). Network namespaces need root; without them the test
//! prints a notice and passes locally, and fails in CI.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tests::client::Api;
use tests::netns::Net;
use tests::node::{TestCluster, Timing};
use tests::store::TestStore;
use tests::traffic::{self, Driver, History, Member, Settings};

const NODES: usize = 3;
const T: Duration = Duration::from_secs(30);

/// A small deterministic generator (SplitMix64): the schedule depends on
/// the seed alone.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One fault of the schedule.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The link between two nodes, both ways.
    Cut(usize, usize),
    /// The first node's packets to the second vanish.
    CutOneWay(usize, usize),
    /// A node cut from every peer (it still reaches the store).
    Isolate(usize),
    /// `kill -9`, restarted at the heal.
    Kill(usize),
    /// `SIGSTOP` past the lease, `SIGCONT` at the heal.
    Pause(usize),
    /// The node's link to the database host, both ways (FoundationDB).
    StoreCut(usize),
}

impl Fault {
    fn kind(self) -> &'static str {
        match self {
            Fault::Cut(..) => "link cut both ways",
            Fault::CutOneWay(..) => "link cut one way",
            Fault::Isolate(_) => "node cut from all peers",
            Fault::Kill(_) => "node killed (kill -9), restarted",
            Fault::Pause(_) => "node paused past its lease",
            Fault::StoreCut(_) => "node cut from the database",
        }
    }

    /// How many kinds of fault there are (with the database on a host of
    /// its own, cuts from it too).
    fn kinds(store_host: Option<usize>) -> u64 {
        if store_host.is_some() {
            6
        } else {
            5
        }
    }

    /// A fault of kind `kind` (below [`Fault::kinds`]) on nodes at random.
    fn pick(rng: &mut Rng, kind: u64) -> Fault {
        let a = rng.below(NODES as u64) as usize;
        let b = (a + 1 + rng.below(NODES as u64 - 1) as usize) % NODES;
        match kind {
            0 => Fault::Cut(a, b),
            1 => Fault::CutOneWay(a, b),
            2 => Fault::Isolate(a),
            3 => Fault::Kill(a),
            4 => Fault::Pause(a),
            _ => Fault::StoreCut(a),
        }
    }

    fn apply(self, net: &Net, cluster: &mut TestCluster) {
        match self {
            Fault::StoreCut(a) => net.cut(a, NODES),
            Fault::Cut(a, b) => net.cut(a, b),
            Fault::CutOneWay(a, b) => net.cut_one_way(a, b),
            Fault::Isolate(a) => (0..NODES).filter(|&b| b != a).for_each(|b| net.cut(a, b)),
            Fault::Kill(a) => cluster.nodes[a].kill(),
            Fault::Pause(a) => cluster.nodes[a].pause(),
        }
    }

    async fn heal(self, net: &Net, cluster: &mut TestCluster) {
        match self {
            Fault::StoreCut(a) => net.heal(a, NODES),
            Fault::Cut(a, b) | Fault::CutOneWay(a, b) => net.heal(a, b),
            Fault::Isolate(a) => (0..NODES).filter(|&b| b != a).for_each(|b| net.heal(a, b)),
            Fault::Kill(a) => cluster.nodes[a].start().await,
            Fault::Pause(a) => cluster.nodes[a].resume(),
        }
    }
}

/// A fault as it happened.
struct Applied {
    round: usize,
    fault: Fault,
    started: Instant,
    healed: Instant,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_faults_lose_duplicate_and_reorder_nothing() {
    // On FoundationDB the database runs on a fourth host, so that a node
    // can be cut from it.
    let on_fdb = matches!(TestStore::from_env(), TestStore::Fdb { .. });
    let hosts = if on_fdb { NODES + 1 } else { NODES };
    let net = match Net::create(hosts) {
        Ok(net) => net,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must be able to create network namespaces (it runs as root): {e}"
            );
            eprintln!("NOTICE: no network namespaces here ({e}): fault schedule skipped");
            return;
        }
    };
    let seed = env_u64("PARLEY_FAULTS_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let rounds = env_u64("PARLEY_FAULTS_ROUNDS").unwrap_or(6) as usize;
    eprintln!(
        "fault schedule seed: {seed} ({rounds} rounds; PARLEY_FAULTS_SEED={seed} replays it)"
    );
    let mut rng = Rng(seed);

    // Sends are answered (`unavailable` at worst) within 2 s, so a client
    // whose send went to a node across a cut resends soon.
    let config = tempfile::tempdir().expect("tempdir");
    let path = config.path().join("parley.toml");
    std::fs::write(&path, "[gateway]\nanswer_timeout_secs = 2\n").expect("config");
    let path = path.to_string_lossy().into_owned();
    let fdb = match on_fdb {
        true => {
            let db = &net.hosts[NODES];
            let addr = format!("{}:4500", db.addr);
            Some(tests::fdb::LocalFdb::start(Some(&db.ns), &addr, None).await)
        }
        false => None,
    };
    let fdb_file = fdb
        .as_ref()
        .map(|f| f.cluster_file.to_string_lossy().into_owned());
    let mut env = vec![("PARLEY_CONFIG", path.as_str())];
    if let Some(file) = &fdb_file {
        env.push(("PARLEY_FDB_CLUSTER_FILE", file));
    }
    let mut cluster = TestCluster::start_on(&net.hosts[..NODES], Timing::default(), &env).await;
    let store_host = on_fdb.then_some(NODES);

    // Six users, two per node; a group of all of them and a direct chat
    // between each user and the next (on another node).
    let api = Api::new(cluster.nodes[0].http);
    let mut users = Vec::new();
    for i in 0..2 * NODES {
        users.push(api.user(&format!("user{i}")).await);
    }
    let others: Vec<_> = users[1..].iter().collect();
    let mut convs: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    convs.insert(
        api.group(&users[0], "everyone", &others).await,
        (0..users.len()).collect(),
    );
    for i in 0..users.len() {
        let j = (i + 1) % users.len();
        convs.insert(api.direct(&users[i], &users[j]).await, vec![i, j]);
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
    let fail = |cluster: &TestCluster, what: &str| -> ! {
        panic!("seed {seed}: {what}\n{}", cluster.logs());
    };
    if let Err(e) = driver.wait_connected(T).await {
        fail(&cluster, &e);
    }

    let mut kinds_first: Vec<u64> = (0..Fault::kinds(store_host)).collect();
    for i in (1..kinds_first.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        kinds_first.swap(i, j);
    }
    let mut applied = Vec::new();
    for round in 1..=rounds {
        // Traffic for a random while, then a fault held for a random
        // while: the schedule, not waits for conditions.
        tokio::time::sleep(Duration::from_millis(500 + rng.below(1000))).await;
        // Every kind once first, in a seeded order; then at random.
        let kind = match kinds_first.get(round - 1) {
            Some(&kind) => kind,
            None => rng.below(Fault::kinds(store_host)),
        };
        let fault = Fault::pick(&mut rng, kind);
        let hold = Duration::from_millis(1000 + rng.below(3000));
        let started = Instant::now();
        fault.apply(&net, &mut cluster);
        eprintln!("[faults] round {round}: {fault:?} for {hold:?}");
        tokio::time::sleep(hold).await;
        fault.heal(&net, &mut cluster).await;
        let healed = Instant::now();
        applied.push(Applied {
            round,
            fault,
            started,
            healed,
        });
        // The next fault starts from a whole cluster.
        cluster.await_full_mesh().await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The checker.
    if let Err(e) = driver.drain(T).await {
        fail(&cluster, &e);
    }
    let mut truth: BTreeMap<u64, History> = BTreeMap::new();
    for (&conv, m) in &convs {
        match traffic::history(&api, &users[m[0]].token, conv).await {
            Ok(stored) => {
                truth.insert(conv, stored.history);
            }
            Err(e) => fail(&cluster, &e),
        }
    }
    let complete = driver.await_histories(&truth, T).await;
    let violations = driver.verify(&truth);
    if !violations.is_empty() || !complete {
        fail(
            &cluster,
            &format!(
                "{} violations (every member holds the stored history: {complete}):\n  {}",
                violations.len(),
                violations
                    .iter()
                    .take(30)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n  ")
            ),
        );
    }

    // What each fault cost the clients: the longest wait for a `sent`
    // among the sends first tried between the fault and one second after
    // its heal.
    let logs = driver.logs();
    let mut by_kind: BTreeMap<&str, (usize, usize, Duration)> = BTreeMap::new();
    for a in &applied {
        let window = a.started..a.healed + Duration::from_secs(1);
        let mut sends = 0;
        let mut longest = Duration::ZERO;
        // The slowest send: when it was first tried (from the fault's
        // start), how often, on which conversation.
        let mut slowest = (Duration::ZERO, 0, 0);
        for log in &logs {
            for attempt in log.attempts.values() {
                if !window.contains(&attempt.first) {
                    continue;
                }
                sends += 1;
                let Some(ack) = &attempt.ack else {
                    fail(&cluster, "an unacknowledged send after the drain");
                };
                let waited = ack.at.saturating_duration_since(attempt.first);
                if waited > longest {
                    longest = waited;
                    slowest = (attempt.first - a.started, attempt.tries, attempt.conv);
                }
            }
        }
        eprintln!(
            "[faults] round {}: {:?} held {:.1?}: {sends} sends first tried meanwhile, \
             longest wait for `sent` {longest:.1?} (first tried {:.1?} into the fault, \
             {} tries, conversation {})",
            a.round,
            a.fault,
            a.healed - a.started,
            slowest.0,
            slowest.1,
            slowest.2
        );
        let entry = by_kind.entry(a.fault.kind()).or_default();
        entry.0 += 1;
        entry.1 += sends;
        entry.2 = entry.2.max(longest);
    }
    let stats = driver.stats();
    let stored: usize = truth.values().map(|h| h.len()).sum();
    eprintln!("[faults] seed {seed}: {stats}; {stored} messages stored; 0 lost, 0 duplicated, 0 reordered");
    eprintln!("| fault | times | sends during it | longest wait for `sent` |");
    for (kind, (times, sends, longest)) in &by_kind {
        eprintln!("| {kind} | {times} | {sends} | {longest:.1?} |");
    }
    assert_eq!(stats.acked, stats.sent, "every send acknowledged");
    if std::env::var_os("PARLEY_FAULTS_LOGS").is_some() {
        eprintln!("{}", cluster.logs());
    }
}

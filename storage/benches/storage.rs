#![allow(missing_docs)] // criterion macros generate undocumented items
//! Storage throughput through the chat layer, on the embedded backend and
//! against raw rusqlite for reference; or on FoundationDB.
//!
//! `cargo bench -p storage`; results and their reading are in BENCHMARKS.md.
//! `PARLEY_BENCH_STORE=fdb cargo bench -p storage --features fdb` runs the
//! chat-layer benchmarks on the cluster `FDB_CLUSTER_FILE` names, under a
//! random key prefix cleared at the end (and no raw SQLite reference).

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use storage::chat::{ChatStore, Limits, NewMessage, NewUser, PasswordCost};
use storage::Database;

struct Bench {
    store: ChatStore,
    conv: u64,
    sender: u64,
    epoch: u64,
    next_seq: AtomicU64,
    _dir: tempfile::TempDir,
}

/// Whether `PARLEY_BENCH_STORE` asks for FoundationDB.
fn on_fdb() -> bool {
    std::env::var("PARLEY_BENCH_STORE").as_deref() == Ok("fdb")
}

/// The store the benchmarks run on.
fn open(dir: &std::path::Path) -> Database {
    if on_fdb() {
        open_fdb()
    } else {
        Database::open_sqlite(dir.join("bench.sqlite")).expect("open")
    }
}

#[cfg(feature = "fdb")]
fn open_fdb() -> Database {
    let cluster = std::env::var_os("FDB_CLUSTER_FILE").expect("FDB_CLUSTER_FILE");
    let prefix = format!("parley-bench/{}/", rand::random::<u64>()).into_bytes();
    Database::open_fdb_with_prefix(Some(std::path::Path::new(&cluster)), prefix)
        .expect("open FoundationDB")
}

#[cfg(not(feature = "fdb"))]
fn open_fdb() -> Database {
    panic!("PARLEY_BENCH_STORE=fdb needs --features fdb")
}

fn setup() -> Bench {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    let store = ChatStore::open(db, Limits::default())
        .expect("store")
        .with_password_cost(PasswordCost {
            memory_kib: 64,
            iterations: 1,
        });
    let user = |name: &str| {
        store
            .register(&NewUser {
                name: name.into(),
                phone: None,
                password: "benchmark pw".into(),
            })
            .expect("register")
            .id
    };
    let (a, b) = (user("alice"), user("bob"));
    let conv = store.open_direct(a, b).expect("dm").id;
    let epoch = store.activate_conversation(conv).expect("activate").epoch;
    Bench {
        store,
        conv,
        sender: a,
        epoch,
        next_seq: AtomicU64::new(1),
        _dir: dir,
    }
}

fn message(sender: u64, n: u64) -> NewMessage {
    NewMessage::text(
        sender,
        format!("c{n}"),
        "a typical short chat message of about sixty bytes, give or take",
    )
}

fn appends(c: &mut Criterion) {
    let b = setup();
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one_per_transaction", |bench| {
        bench.iter(|| {
            let seq = b.next_seq.fetch_add(1, Ordering::Relaxed);
            b.store
                .append(b.conv, b.epoch, seq, &message(b.sender, seq))
                .expect("append");
        })
    });
    const BATCH: u64 = 100;
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("batch_of_100", |bench| {
        bench.iter_batched(
            || {
                let first = b.next_seq.fetch_add(BATCH, Ordering::Relaxed);
                let msgs: Vec<_> = (first..first + BATCH)
                    .map(|n| message(b.sender, n))
                    .collect();
                (first, msgs)
            },
            |(first, msgs)| {
                b.store
                    .append_batch(b.conv, b.epoch, first, &msgs)
                    .expect("batch");
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();

    let mut group = c.benchmark_group("history");
    group.throughput(Throughput::Elements(50));
    let last = b.next_seq.load(Ordering::Relaxed);
    let mut before = last;
    group.bench_function("page_of_50", |bench| {
        bench.iter(|| {
            before = if before <= 51 { last } else { before - 50 };
            let page = b
                .store
                .history(b.sender, b.conv, Some(before), 50)
                .expect("history");
            assert!(!page.is_empty());
        })
    });
    group.finish();
    if on_fdb() {
        // The run's prefix goes with it.
        b.store
            .db()
            .run(|tx| tx.clear_range(&[], &[0xff]))
            .expect("clear the benchmark's keys");
    }
}

fn raw_sqlite(c: &mut Criterion) {
    if on_fdb() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = rusqlite::Connection::open(dir.path().join("raw.sqlite")).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
         CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;",
    )
    .expect("schema");
    let mut n: u64 = 0;
    let mut group = c.benchmark_group("raw_sqlite");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one_row_per_transaction", |bench| {
        bench.iter(|| {
            n += 1;
            conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
            conn.prepare_cached("INSERT INTO kv VALUES (?1, ?2)")
                .expect("prepare")
                .execute(rusqlite::params![n.to_be_bytes(), [0u8; 100]])
                .expect("insert");
            conn.execute_batch("COMMIT").expect("commit");
        })
    });
    group.finish();
}

criterion_group!(benches, appends, raw_sqlite);
criterion_main!(benches);

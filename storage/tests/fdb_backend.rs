//! The FoundationDB backend against a real cluster: the shared
//! backend-conformance suite, plus what only this adapter can get wrong
//! (paging through a range FDB returns in several batches).
//!
//! They need a running cluster, so they are `#[ignore]`d: a plain
//! `cargo test --features fdb` reports them as ignored, never as passed. Run
//! them with `FDB_CLUSTER_FILE=... cargo test -p storage --features fdb --
//! --ignored` (as `.ci/run` does); without `FDB_CLUSTER_FILE` they fail. Every
//! test works under its own random key prefix and clears it afterwards, so
//! they can share a cluster and run in parallel.
#![cfg(feature = "fdb")]

mod conformance;

use std::path::Path;

use storage::{Database, RangeOptions};

/// Opens the cluster named by `FDB_CLUSTER_FILE`; panics without one (these
/// tests run only when asked for, so a missing cluster is a failure).
fn open_fdb() -> conformance::Opened {
    let cluster_file = std::env::var_os("FDB_CLUSTER_FILE")
        .expect("FDB_CLUSTER_FILE must name a running FoundationDB cluster");
    let db = Database::open_fdb(Some(Path::new(&cluster_file)))
        .expect("open the FoundationDB cluster named by FDB_CLUSTER_FILE");
    Ok((db, Box::new(())))
}

conformance_tests!(
    #[ignore = "needs a FoundationDB cluster: FDB_CLUSTER_FILE=... cargo test -p storage --features fdb -- --ignored"]
    open_fdb
);

#[test]
#[ignore = "needs a FoundationDB cluster: FDB_CLUSTER_FILE=... cargo test -p storage --features fdb -- --ignored"]
fn range_reads_page_through_many_batches() {
    let (db, _guard) = open_fdb().expect("open_fdb panics on errors");
    assert_eq!(db.backend_name(), "foundationdb");
    let prefix = format!("parley-test/paging/{}/", rand::random::<u64>()).into_bytes();
    let end = [&prefix[..], &[0xff]].concat();
    // ~600 KB: more than FDB returns in one batch.
    let n = 3_000;
    let keys: Vec<Vec<u8>> = (0..n)
        .map(|i| [&prefix[..], format!("{i:05}").as_bytes()].concat())
        .collect();
    db.run(|tx| {
        for k in &keys {
            tx.set(k, &[7u8; 200])?;
        }
        Ok(())
    })
    .expect("fill the range");

    let all = db
        .read(|tx| tx.get_range(&prefix, &end, RangeOptions::default()))
        .expect("read the whole range");
    let last = db
        .read(|tx| tx.get_range(&prefix, &end, RangeOptions::reverse(2_500)))
        .expect("read the range backwards with a limit");
    let inverted = db
        .read(|tx| tx.get_range(&end, &prefix, RangeOptions::default()))
        .expect("read an inverted range");
    db.run(|tx| tx.clear_range(&end, &prefix))
        .expect("clear an inverted range");
    db.run(|tx| tx.clear_range(&prefix, &end))
        .expect("clear the test range");

    assert!(all.iter().map(|(k, _)| k).eq(keys.iter()), "all, in order");
    assert!(
        last.iter()
            .map(|(k, _)| k)
            .eq(keys.iter().rev().take(2_500)),
        "the last 2500, newest first"
    );
    assert!(inverted.is_empty(), "an inverted range is empty");
}

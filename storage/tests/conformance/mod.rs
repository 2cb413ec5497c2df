//! The backend-conformance suite of the storage KV API.
//!
//! Every backend must behave the same through [`storage::Database`]: a test
//! file declares `mod conformance;`, writes an opener and calls
//! [`conformance_tests!`] with it, which generates one `#[test]` per check.
//!
//! ```ignore
//! mod conformance;
//!
//! fn open() -> conformance::Opened {
//!     let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
//!     let db = storage::Database::open_sqlite(dir.path().join("store.sqlite"))
//!         .map_err(|e| e.to_string())?;
//!     Ok((db, Box::new(dir)))
//! }
//!
//! conformance_tests!(open);
//! ```
//!
//! The opener returns `Err(reason)` when the backend is not available: the
//! test fails with the reason (a backend that may be absent marks its tests
//! `#[ignore]` instead of passing them silently). On success it returns the
//! database and a guard (a tempdir, a cluster handle, ...) kept alive until
//! the check ends.
//!
//! Each check writes only under its own fresh random subspace
//! `("parley-conformance", <check>, <random u64>)` and clears it at the end,
//! so the suite also runs on a shared FoundationDB cluster, in parallel, and
//! never sees another check's keys.

use std::any::Any;
use std::borrow::Cow;
use std::sync::atomic::{AtomicU32, Ordering};

use foundationdb_tuple::{Bytes, Element, Subspace};
use rand::seq::SliceRandom;
use storage::{Database, Error, KeyValue, RangeOptions};

/// What an opener returns: the database and a guard that keeps whatever it
/// needs alive (a tempdir...), or why the backend is unavailable.
pub type Opened = Result<(Database, Box<dyn Any>), String>;

/// Generates one `#[test]` per conformance check against the backend that
/// `$open` (a `fn() -> conformance::Opened`) opens, each carrying the
/// attribute written before `$open` (`#[ignore = "..."]`, say).
#[macro_export]
macro_rules! conformance_tests {
    ($open:path) => {
        // `cfg(all())` is always true: no extra attribute.
        $crate::conformance_tests!(#[cfg(all())] $open);
    };
    (#[$attr:meta] $open:path) => {
        $crate::conformance_tests!(@tests $attr; $open;
            conformance_tuple_key_ordering => tuple_key_ordering,
            conformance_unsigned_integer_ordering => unsigned_integer_ordering,
            conformance_range_reads => range_reads,
            conformance_values_round_trip => values_round_trip,
            conformance_read_your_writes => read_your_writes,
            conformance_prefetched_reads_stay_exact => prefetched_reads,
            conformance_clear_and_clear_range => clear_and_clear_range,
            conformance_rollback_on_error => rollback_on_error,
            conformance_concurrent_increments_are_serializable => concurrent_increments,
            conformance_reads_see_a_consistent_snapshot => consistent_snapshot_reads,
        );
    };
    (@tests $attr:meta; $open:path; $($test:ident => $check:ident,)*) => {
        $(
            #[test]
            #[$attr]
            fn $test() {
                $crate::conformance::run(stringify!($check), $open, $crate::conformance::$check);
            }
        )*
    };
}

/// Opens the backend, runs `check` in a fresh subspace, and clears the
/// subspace afterwards (even when the check panics).
pub fn run(name: &str, open: fn() -> Opened, check: fn(&Database, &Subspace)) {
    let (db, guard) = match open() {
        Ok(opened) => opened,
        Err(reason) => {
            panic!("backend unavailable: {reason}");
        }
    };
    let space = Subspace::from(&("parley-conformance", name, rand::random::<u64>()));
    let cleanup = ClearOnDrop {
        db: db.clone(),
        space: space.clone(),
    };
    check(&db, &space);
    // Close the store before its guard goes (a tempdir is deleted on drop).
    drop(cleanup);
    drop(db);
    drop(guard);
}

/// Best-effort removal of a check's keys, for shared clusters.
struct ClearOnDrop {
    db: Database,
    space: Subspace,
}

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        let (begin, end) = self.space.range();
        let _ = self.db.run(|tx| tx.clear_range(&begin, &end));
    }
}

// ---------------------------------------------------------------- helpers

fn key(space: &Subspace, i: u64) -> Vec<u8> {
    space.pack(&(i,))
}

fn value(i: u64) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

/// Commits `value(i)` under `key(i)` for every `i`, in one transaction.
fn put_all(db: &Database, space: &Subspace, ids: impl IntoIterator<Item = u64> + Clone) {
    db.run(|tx| {
        for i in ids.clone() {
            tx.set(&key(space, i), &value(i))?;
        }
        Ok(())
    })
    .expect("committing the fixture keys");
}

/// Reads the whole subspace in a fresh read transaction.
fn read_space(db: &Database, space: &Subspace) -> Vec<KeyValue> {
    let (begin, end) = space.range();
    db.read(|tx| tx.get_range(&begin, &end, RangeOptions::default()))
        .expect("reading the subspace")
}

/// The ids of `pairs`, whose keys must be `key(space, id)`.
fn ids(space: &Subspace, pairs: &[KeyValue]) -> Vec<u64> {
    pairs
        .iter()
        .map(|(k, v)| {
            let (i,): (u64,) = space.unpack(k).expect("a key of the form (u64,)");
            assert_eq!(v, &value(i), "value of key {i}");
            i
        })
        .collect()
}

fn committed_ids(db: &Database, space: &Subspace) -> Vec<u64> {
    ids(space, &read_space(db, space))
}

fn range(db: &Database, space: &Subspace, from: u64, to: u64, opts: RangeOptions) -> Vec<u64> {
    let (begin, end) = (key(space, from), key(space, to));
    let pairs = db
        .read(|tx| tx.get_range(&begin, &end, opts))
        .expect("range read");
    ids(space, &pairs)
}

fn s(v: &str) -> Element<'static> {
    Element::String(Cow::Owned(v.to_owned()))
}

fn b(v: &[u8]) -> Element<'static> {
    Element::Bytes(Bytes::from(v.to_vec()))
}

fn t(v: Vec<Element<'static>>) -> Element<'static> {
    Element::Tuple(v)
}

fn int(v: i64) -> Element<'static> {
    Element::Int(v)
}

fn decode_counter(v: Option<Vec<u8>>) -> u64 {
    v.map_or(0, |v| {
        u64::from_le_bytes(v.as_slice().try_into().expect("an 8-byte counter"))
    })
}

// ----------------------------------------------------------------- checks

/// Tuple-encoded keys of mixed types written in shuffled order come back from
/// a range read in tuple order: by type (null, bytes, string, nested tuple,
/// integer, double, false, true), then by value, a tuple before its
/// extensions; integers numerically (negative, zero, large).
pub fn tuple_key_ordering(db: &Database, space: &Subspace) {
    let expected: Vec<Vec<Element<'static>>> = vec![
        vec![Element::Nil],
        vec![b(b"")],
        vec![b(b"\x00")],
        vec![b(b"\x00\x00")],
        vec![b(b"\x01")],
        vec![b(b"a")],
        vec![b(b"\xff")],
        vec![s("")],
        vec![s("A")],
        vec![s("Z")],
        vec![s("a")],
        vec![s("a"), int(-1)],
        vec![s("a"), int(0)],
        vec![s("a\u{0}")],
        vec![s("a\u{0}b")],
        vec![s("ab")],
        vec![s("b")],
        vec![s("é")],
        vec![t(vec![])],
        vec![t(vec![s("x")])],
        vec![t(vec![t(vec![int(1)])])],
        vec![t(vec![int(1)])],
        vec![t(vec![int(1)]), int(1)],
        vec![t(vec![int(1), s("x")])],
        vec![t(vec![int(1), int(2)])],
        vec![t(vec![int(2)])],
        vec![int(i64::MIN)],
        vec![int(-1_000_000_000_000)],
        vec![int(-65_536)],
        vec![int(-256)],
        vec![int(-255)],
        vec![int(-2)],
        vec![int(-1)],
        vec![int(0)],
        vec![int(0), s("z")],
        vec![int(1)],
        vec![int(5)],
        vec![int(5), b(b"a")],
        vec![int(5), s("a")],
        vec![int(5), s("b")],
        vec![int(5), t(vec![int(9)])],
        vec![int(5), int(-3)],
        vec![int(5), int(2)],
        vec![int(5), int(10)],
        vec![int(5), int(10), s("deep")],
        vec![int(6)],
        vec![int(255)],
        vec![int(256)],
        vec![int(65_536)],
        vec![int(1 << 40)],
        vec![int(i64::MAX - 1)],
        vec![int(i64::MAX)],
        vec![Element::Double(-1.5)],
        vec![Element::Double(0.0)],
        vec![Element::Double(2.5)],
        vec![Element::Bool(false)],
        vec![Element::Bool(true)],
    ];
    // The list itself must be in tuple order (checked against the tuple
    // crate's own comparison and its byte encoding), or the check is wrong.
    for w in expected.windows(2) {
        let (x, y) = (t(w[0].clone()), t(w[1].clone()));
        assert!(x < y, "fixture out of tuple order: {x:?} !< {y:?}");
        assert!(
            space.pack(&w[0]) < space.pack(&w[1]),
            "fixture bytes: {x:?}"
        );
    }

    let mut shuffled: Vec<(usize, Vec<u8>)> = expected
        .iter()
        .enumerate()
        .map(|(i, tuple)| (i, space.pack(tuple)))
        .collect();
    shuffled.shuffle(&mut rand::thread_rng());
    // Half in one transaction, the rest one transaction each.
    let (together, apart) = shuffled.split_at(shuffled.len() / 2);
    db.run(|tx| {
        for (i, k) in together {
            tx.set(k, &i.to_be_bytes())?;
        }
        Ok(())
    })
    .expect("writing the first half");
    for (i, k) in apart {
        db.run(|tx| tx.set(k, &i.to_be_bytes()))
            .expect("writing one key");
    }

    let got = read_space(db, space);
    let got_tuples: Vec<Vec<Element<'_>>> = got
        .iter()
        .map(|(k, _)| space.unpack(k).expect("a valid tuple key"))
        .collect();
    assert_eq!(got_tuples, expected, "keys not returned in tuple order");
    for (pos, (_, v)) in got.iter().enumerate() {
        assert_eq!(v, &pos.to_be_bytes(), "value of the key at position {pos}");
    }

    let (begin, end) = space.range();
    let reversed = db
        .read(|tx| tx.get_range(&begin, &end, RangeOptions::reverse(usize::MAX)))
        .expect("reverse read");
    let mut forward = got.clone();
    forward.reverse();
    assert_eq!(
        reversed, forward,
        "reverse read is not the forward read reversed"
    );
}

/// Unsigned integers up to `u64::MAX` sort numerically.
pub fn unsigned_integer_ordering(db: &Database, space: &Subspace) {
    let expected: Vec<u64> = vec![
        0,
        1,
        2,
        255,
        256,
        65_535,
        65_536,
        1 << 32,
        (1 << 56) - 1,
        1 << 56,
        i64::MAX as u64,
        (i64::MAX as u64) + 1,
        u64::MAX - 1,
        u64::MAX,
    ];
    let mut shuffled = expected.clone();
    shuffled.shuffle(&mut rand::thread_rng());
    for i in shuffled {
        db.run(|tx| tx.set(&key(space, i), &value(i)))
            .expect("writing one key");
    }
    assert_eq!(committed_ids(db, space), expected);
}

/// Range reads: begin inclusive, end exclusive, limit, reverse, reverse with
/// a limit (the last n, last first), empty ranges.
pub fn range_reads(db: &Database, space: &Subspace) {
    put_all(db, space, 0..10);
    let all = RangeOptions::default();

    assert_eq!(committed_ids(db, space), (0..10).collect::<Vec<_>>());
    assert_eq!(range(db, space, 2, 7, all), vec![2, 3, 4, 5, 6], "[2, 7)");
    assert_eq!(range(db, space, 0, 1, all), vec![0], "[0, 1)");
    assert_eq!(range(db, space, 9, 10, all), vec![9], "[9, 10)");
    // Bounds that are not keys themselves.
    assert_eq!(range(db, space, 5, 100, all), vec![5, 6, 7, 8, 9]);
    let (begin, end) = (space.pack(&(2u64, "after")), space.pack(&(4u64, "after")));
    let between = db
        .read(|tx| tx.get_range(&begin, &end, all))
        .expect("range read");
    assert_eq!(ids(space, &between), vec![3, 4]);

    // Limits.
    assert_eq!(
        range(db, space, 2, 7, RangeOptions::forward(3)),
        vec![2, 3, 4]
    );
    assert_eq!(range(db, space, 2, 7, RangeOptions::forward(1)), vec![2]);
    assert_eq!(
        range(db, space, 2, 7, RangeOptions::forward(5)),
        vec![2, 3, 4, 5, 6]
    );
    assert_eq!(
        range(db, space, 2, 7, RangeOptions::forward(50)),
        vec![2, 3, 4, 5, 6]
    );
    assert_eq!(
        range(db, space, 2, 7, RangeOptions::forward(0)),
        Vec::<u64>::new(),
        "a limit of 0 means no pairs (FoundationDB's 0 = unlimited must be mapped)"
    );

    // Reverse.
    let reverse = RangeOptions {
        limit: None,
        reverse: true,
    };
    assert_eq!(range(db, space, 2, 7, reverse), vec![6, 5, 4, 3, 2]);
    assert_eq!(
        range(db, space, 2, 7, RangeOptions::reverse(2)),
        vec![6, 5],
        "reverse with a limit returns the last n"
    );
    assert_eq!(range(db, space, 2, 7, RangeOptions::reverse(1)), vec![6]);
    assert_eq!(
        range(db, space, 0, 10, RangeOptions::reverse(3)),
        vec![9, 8, 7]
    );
    assert_eq!(
        range(db, space, 2, 7, RangeOptions::reverse(50)),
        vec![6, 5, 4, 3, 2]
    );
    assert_eq!(
        range(db, space, 2, 7, RangeOptions::reverse(0)),
        Vec::<u64>::new()
    );

    // Empty ranges.
    for opts in [
        all,
        reverse,
        RangeOptions::forward(3),
        RangeOptions::reverse(3),
    ] {
        assert_eq!(range(db, space, 4, 4, opts), Vec::<u64>::new(), "{opts:?}");
        assert_eq!(
            range(db, space, 20, 30, opts),
            Vec::<u64>::new(),
            "{opts:?}"
        );
    }
    // Inverted ranges (begin > end) are empty, not an error.
    for opts in [
        all,
        reverse,
        RangeOptions::forward(3),
        RangeOptions::reverse(3),
    ] {
        assert_eq!(
            range(db, space, 7, 2, opts),
            Vec::<u64>::new(),
            "inverted {opts:?}"
        );
    }
    let empty = Subspace::from(&("parley-conformance", "empty", rand::random::<u64>()));
    let (begin, end) = empty.range();
    let none = db
        .read(|tx| tx.get_range(&begin, &end, all))
        .expect("reading an empty subspace");
    assert!(
        none.is_empty(),
        "a never-written subspace has keys: {none:?}"
    );

    // Point reads.
    let got = db
        .read(|tx| Ok((tx.get(&key(space, 3))?, tx.get(&key(space, 42))?)))
        .expect("point reads");
    assert_eq!(got, (Some(value(3)), None));
}

/// Values come back byte for byte: empty, binary with 0x00 and 0xff, large;
/// keys with 0x00 and 0xff bytes inside are distinct keys.
pub fn values_round_trip(db: &Database, space: &Subspace) {
    let large: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (space.pack(&("empty",)), Vec::new()),
        (space.pack(&("binary",)), vec![0x00, 0xff, 0x00, 0x01, 0xfe]),
        (space.pack(&("large",)), large),
        (space.pack(&(b(b"\x00"),)), b"nul".to_vec()),
        (space.pack(&(b(b"\x00\xff"),)), b"nul-ff".to_vec()),
        (space.pack(&(b(b"\xff"),)), b"ff".to_vec()),
        (space.pack(&("utf8 ✓",)), "ünïcödé ✓".as_bytes().to_vec()),
    ];
    db.run(|tx| {
        for (k, v) in &cases {
            tx.set(k, v)?;
        }
        Ok(())
    })
    .expect("writing the values");
    for (k, v) in &cases {
        let got = db.read(|tx| tx.get(k)).expect("point read");
        assert_eq!(got.as_ref(), Some(v), "value under {k:?}");
    }
    let mut sorted = cases.clone();
    sorted.sort();
    assert_eq!(read_space(db, space), sorted);

    // Overwriting replaces the value, including with a shorter or empty one.
    let k = &cases[2].0;
    db.run(|tx| tx.set(k, b"short")).expect("overwrite");
    assert_eq!(
        db.read(|tx| tx.get(k)).expect("read"),
        Some(b"short".to_vec())
    );
    db.run(|tx| tx.set(k, b"")).expect("overwrite with empty");
    assert_eq!(db.read(|tx| tx.get(k)).expect("read"), Some(Vec::new()));
}

/// Reads inside a transaction see its own uncommitted set, clear and
/// clear_range; others see none of it until commit, then all of it.
pub fn read_your_writes(db: &Database, space: &Subspace) {
    put_all(db, space, [1, 2, 3, 5, 6, 7, 8]);
    let all = RangeOptions::default();
    let (begin, end) = space.range();

    db.run(|tx| {
        // set: a new key and an overwrite.
        tx.set(&key(space, 4), &value(4))?;
        tx.set(&key(space, 9), &value(9))?;
        tx.set(&key(space, 1), b"changed")?;
        assert_eq!(tx.get(&key(space, 4))?, Some(value(4)), "own new key");
        assert_eq!(
            tx.get(&key(space, 1))?,
            Some(b"changed".to_vec()),
            "own overwrite"
        );

        // clear.
        tx.clear(&key(space, 2))?;
        assert_eq!(tx.get(&key(space, 2))?, None, "own clear");

        // clear_range [5, 8), then write one key back inside it.
        tx.clear_range(&key(space, 5), &key(space, 8))?;
        assert_eq!(tx.get(&key(space, 6))?, None, "own clear_range");
        tx.set(&key(space, 6), b"again")?;
        assert_eq!(
            tx.get(&key(space, 6))?,
            Some(b"again".to_vec()),
            "set after clear_range"
        );

        let pairs = tx.get_range(&begin, &end, all)?;
        let keys: Vec<u64> = pairs
            .iter()
            .map(|(k, _)| space.unpack::<(u64,)>(k).map(|(i,)| i))
            .collect::<Result<_, _>>()
            .expect("keys of the form (u64,)");
        assert_eq!(keys, vec![1, 3, 4, 6, 8, 9], "range read sees own writes");
        assert_eq!(pairs[0].1, b"changed", "range read sees own overwrite");
        assert_eq!(pairs[3].1, b"again");

        let last = tx.get_range(&begin, &end, RangeOptions::reverse(2))?;
        assert_eq!(last.len(), 2);
        assert_eq!(last[0].0, key(space, 9), "reverse read sees own new key");
        assert_eq!(last[1].0, key(space, 8));
        let first = tx.get_range(&key(space, 2), &end, RangeOptions::forward(2))?;
        assert_eq!(first[0].0, key(space, 3), "limited read skips own clear");
        assert_eq!(first[1].0, key(space, 4), "limited read sees own new key");

        // Nothing is visible outside the transaction yet.
        let outside = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    db.read(|other| other.get_range(&begin, &end, all))
                        .expect("concurrent read")
                })
                .join()
                .expect("reader thread")
        });
        assert_eq!(
            ids(space, &outside),
            vec![1, 2, 3, 5, 6, 7, 8],
            "uncommitted writes visible to another transaction"
        );
        Ok(())
    })
    .expect("the read-your-writes transaction");

    let after = read_space(db, space);
    let keys: Vec<Vec<u8>> = after.iter().map(|(k, _)| k.clone()).collect();
    let expected_keys: Vec<Vec<u8>> = [1, 3, 4, 6, 8, 9].iter().map(|&i| key(space, i)).collect();
    assert_eq!(keys, expected_keys, "committed state");
    assert_eq!(after[0].1, b"changed");
    assert_eq!(after[3].1, b"again");
}

/// Prefetched keys read as plain gets would, before and after the
/// transaction's own set, clear and clear_range of them.
pub fn prefetched_reads(db: &Database, space: &Subspace) {
    put_all(db, space, [1, 2, 3, 4, 5]);
    db.run(|tx| {
        let keys: Vec<Vec<u8>> = (1..=6).map(|i| key(space, i)).collect();
        tx.prefetch(&keys)?;
        assert_eq!(tx.get(&key(space, 1))?, Some(value(1)), "prefetched");
        assert_eq!(tx.get(&key(space, 6))?, None, "prefetched absent key");
        tx.set(&key(space, 1), b"changed")?;
        assert_eq!(
            tx.get(&key(space, 1))?,
            Some(b"changed".to_vec()),
            "own set"
        );
        tx.clear(&key(space, 2))?;
        assert_eq!(tx.get(&key(space, 2))?, None, "own clear");
        tx.set(&key(space, 6), b"new")?;
        assert_eq!(
            tx.get(&key(space, 6))?,
            Some(b"new".to_vec()),
            "own new key"
        );
        tx.clear_range(&key(space, 3), &key(space, 5))?;
        assert_eq!(tx.get(&key(space, 3))?, None, "own clear_range");
        assert_eq!(tx.get(&key(space, 5))?, Some(value(5)), "past the range");
        // Prefetching again after writes answers the writes.
        tx.prefetch(&keys)?;
        assert_eq!(tx.get(&key(space, 1))?, Some(b"changed".to_vec()));
        assert_eq!(tx.get(&key(space, 4))?, None);
        Ok(())
    })
    .expect("the prefetching transaction");
    let after = read_space(db, space);
    let keys: Vec<Vec<u8>> = after.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys, vec![key(space, 1), key(space, 5), key(space, 6)]);
    assert_eq!(after[0].1, b"changed");
}

/// clear removes one key (a missing key is fine); clear_range removes
/// `begin <= key < end` and nothing outside it.
pub fn clear_and_clear_range(db: &Database, space: &Subspace) {
    put_all(db, space, 0..10);
    // Keys of another shape in the same space, sorting before the integers,
    // must survive every clear of the integer keys.
    let sibling = space.subspace(&("sibling",));
    db.run(|tx| tx.set(&sibling.pack(&(1u64,)), b"keep"))
        .expect("writing the sibling key");
    let sibling_range = sibling.range();

    db.run(|tx| tx.clear(&key(space, 3))).expect("clear");
    db.run(|tx| tx.clear(&key(space, 42)))
        .expect("clearing a missing key is not an error");
    db.run(|tx| {
        tx.clear(&key(space, 3))?;
        tx.clear(&key(space, 3))
    })
    .expect("clearing twice is not an error");
    let only_ints = |db: &Database| -> Vec<u64> {
        read_space(db, space)
            .iter()
            .filter_map(|(k, _)| space.unpack::<(u64,)>(k).ok().map(|(i,)| i))
            .collect()
    };
    assert_eq!(only_ints(db), vec![0, 1, 2, 4, 5, 6, 7, 8, 9]);

    db.run(|tx| tx.clear_range(&key(space, 5), &key(space, 8)))
        .expect("clear_range");
    assert_eq!(only_ints(db), vec![0, 1, 2, 4, 8, 9], "[5, 8) cleared");

    db.run(|tx| tx.clear_range(&key(space, 1), &key(space, 1)))
        .expect("empty clear_range");
    db.run(|tx| tx.clear_range(&key(space, 20), &key(space, 30)))
        .expect("clear_range over no keys");
    db.run(|tx| tx.clear_range(&key(space, 8), &key(space, 2)))
        .expect("an inverted clear_range is not an error");
    assert_eq!(
        only_ints(db),
        vec![0, 1, 2, 4, 8, 9],
        "empty clears are no-ops"
    );

    // Bounds that are not keys: (1, "x") < key 2 < (2, "x").
    db.run(|tx| tx.clear_range(&space.pack(&(1u64, "x")), &space.pack(&(2u64, "x"))))
        .expect("clear_range between keys");
    assert_eq!(only_ints(db), vec![0, 1, 4, 8, 9]);

    // The whole integer part of the space, leaving the sibling.
    db.run(|tx| tx.clear_range(&key(space, 0), &key(space, u64::MAX)))
        .expect("clear_range of the integers");
    assert_eq!(only_ints(db), Vec::<u64>::new());
    let sibling_left = db
        .read(|tx| tx.get_range(&sibling_range.0, &sibling_range.1, RangeOptions::default()))
        .expect("reading the sibling");
    assert_eq!(
        sibling_left,
        vec![(sibling.pack(&(1u64,)), b"keep".to_vec())]
    );

    let (begin, end) = space.range();
    db.run(|tx| tx.clear_range(&begin, &end))
        .expect("clearing the whole space");
    assert!(read_space(db, space).is_empty());
}

/// A closure returning Err leaves nothing written, even after writes,
/// clears and range clears; earlier values are unchanged; the error comes
/// back as it was and a non-retryable error is not retried.
pub fn rollback_on_error(db: &Database, space: &Subspace) {
    put_all(db, space, [1, 2, 3, 4, 5]);
    let before = read_space(db, space);

    let calls = AtomicU32::new(0);
    let result: storage::Result<()> = db.run(|tx| {
        calls.fetch_add(1, Ordering::SeqCst);
        tx.set(&key(space, 1), b"overwritten")?;
        tx.set(&key(space, 9), &value(9))?;
        tx.clear(&key(space, 2))?;
        tx.clear_range(&key(space, 3), &key(space, 5))?;
        assert_eq!(tx.get(&key(space, 1))?, Some(b"overwritten".to_vec()));
        Err(Error::invalid("conformance", "roll me back"))
    });
    match result {
        Err(Error::Invalid { field, reason }) => {
            assert_eq!((field, reason.as_str()), ("conformance", "roll me back"));
        }
        other => panic!("expected the closure's own error back, got {other:?}"),
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a non-retryable error was retried"
    );
    assert_eq!(
        read_space(db, space),
        before,
        "a failed transaction left writes behind"
    );

    // A failing read-mode transaction is rolled back too.
    let result: storage::Result<()> = db.read(|tx| {
        tx.set(&key(space, 7), &value(7))?;
        Err(Error::NotFound { what: "nothing" })
    });
    assert!(
        matches!(result, Err(Error::NotFound { what: "nothing" })),
        "{result:?}"
    );
    assert_eq!(read_space(db, space), before);

    // The store still works normally afterwards.
    db.run(|tx| tx.set(&key(space, 6), &value(6)))
        .expect("a write after rollbacks");
    assert_eq!(committed_ids(db, space), vec![1, 2, 3, 4, 5, 6]);
}

/// N threads × M read-modify-write increments of one counter, each its own
/// transaction, end at exactly N × M: no lost update.
pub fn concurrent_increments(db: &Database, space: &Subspace) {
    const THREADS: u64 = 4;
    const INCREMENTS: u64 = 250;
    let counter = space.pack(&("counter",));
    let attempts = AtomicU32::new(0);
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            let db = db.clone();
            let counter = &counter;
            let attempts = &attempts;
            scope.spawn(move || {
                for _ in 0..INCREMENTS {
                    db.run(|tx| {
                        attempts.fetch_add(1, Ordering::Relaxed);
                        let n = decode_counter(tx.get(counter)?);
                        tx.set(counter, &(n + 1).to_le_bytes())
                    })
                    .expect("an increment");
                }
            });
        }
    });
    let total = db
        .read(|tx| tx.get(&counter))
        .map(decode_counter)
        .expect("reading the counter");
    assert_eq!(
        total,
        THREADS * INCREMENTS,
        "lost updates ({} attempts)",
        attempts.load(Ordering::Relaxed)
    );
}

/// Read transactions see a consistent snapshot while writers move amounts
/// between two keys whose sum stays constant.
pub fn consistent_snapshot_reads(db: &Database, space: &Subspace) {
    const TOTAL: u64 = 1_000;
    let (a, b) = (space.pack(&("a",)), space.pack(&("b",)));
    db.run(|tx| {
        tx.set(&a, &TOTAL.to_le_bytes())?;
        tx.set(&b, &0u64.to_le_bytes())
    })
    .expect("initial balances");

    std::thread::scope(|scope| {
        for w in 0..2u64 {
            let (db, a, b) = (db.clone(), &a, &b);
            scope.spawn(move || {
                for i in 0..100u64 {
                    db.run(|tx| {
                        let (x, y) = (decode_counter(tx.get(a)?), decode_counter(tx.get(b)?));
                        let amount = (i + w) % 7 + 1;
                        let (x, y) = if x >= amount {
                            (x - amount, y + amount)
                        } else {
                            (x + y, 0)
                        };
                        tx.set(a, &x.to_le_bytes())?;
                        tx.set(b, &y.to_le_bytes())
                    })
                    .expect("a transfer");
                }
            });
        }
        for _ in 0..2 {
            let (db, a, b) = (db.clone(), &a, &b);
            scope.spawn(move || {
                for _ in 0..100 {
                    let (x, y) = db
                        .read(|tx| Ok((decode_counter(tx.get(a)?), decode_counter(tx.get(b)?))))
                        .expect("a snapshot read");
                    assert_eq!(x + y, TOTAL, "torn read: a = {x}, b = {y}");
                }
            });
        }
    });
}

//! The chat schema layer through its public API: every operation's success
//! path, and for bad input the typed error plus proof that the store did not
//! change.
//!
//! On the embedded backend by default; `PARLEY_TEST_STORE=fdb` (a build with
//! `--features fdb`, and `FDB_CLUSTER_FILE` naming a running cluster) runs
//! them on FoundationDB instead, each test under its own random key prefix.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use storage::chat::{
    AckBatch, AckKind, AckRequest, AppendOutcome, AppendRequest, ChatStore, ConvKind, DeviceKey,
    Limits, MemberAction, MessageStatus, NewMessage, NewUser, PasswordCost, PushTarget, Role, User,
    VapidKey,
};
use storage::{Database, Error, KeyValue, RangeOptions, UnknownResults};

struct Fixture {
    store: ChatStore,
    clock: Arc<AtomicU64>,
    /// Makes the next commits report an unknown outcome after committing.
    unknown: Arc<UnknownResults>,
    _guard: StoreGuard,
}

/// Keeps a test's store alive, and removes it at the end.
enum StoreGuard {
    /// The SQLite file's directory.
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    /// The test's prefix in the FoundationDB cluster, cleared on drop.
    #[cfg(feature = "fdb")]
    Fdb(Database),
}

impl Drop for StoreGuard {
    fn drop(&mut self) {
        #[cfg(feature = "fdb")]
        if let Self::Fdb(db) = self {
            let _ = db.run(|tx| tx.clear_range(&[], &[0xff]));
        }
    }
}

/// A fresh empty store on the backend `PARLEY_TEST_STORE` names.
fn open_store() -> (Database, StoreGuard) {
    match std::env::var("PARLEY_TEST_STORE").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => {
            let dir = tempfile::tempdir().expect("tempdir");
            let db = Database::open_sqlite(dir.path().join("chat.sqlite")).expect("open");
            (db, StoreGuard::Sqlite(dir))
        }
        #[cfg(feature = "fdb")]
        Ok("fdb") => {
            let cluster_file = std::env::var_os("FDB_CLUSTER_FILE")
                .expect("PARLEY_TEST_STORE=fdb needs FDB_CLUSTER_FILE naming a running cluster");
            let prefix = format!("parley-test/chat/{}/", rand::random::<u64>()).into_bytes();
            let db =
                Database::open_fdb_with_prefix(Some(std::path::Path::new(&cluster_file)), prefix)
                    .expect("open the FoundationDB cluster named by FDB_CLUSTER_FILE");
            (db.clone(), StoreGuard::Fdb(db))
        }
        Ok(other) => panic!(
            "PARLEY_TEST_STORE={other}: expected sqlite, or fdb in a build with --features fdb"
        ),
    }
}

fn fixture() -> Fixture {
    let (db, guard) = open_store();
    let unknown = Arc::new(UnknownResults::default());
    let db = db.with_unknown_results(unknown.clone());
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let c = clock.clone();
    let store = ChatStore::open(db, Limits::default())
        .expect("chat store")
        .with_clock(Arc::new(move || c.load(Ordering::SeqCst)))
        .with_password_cost(PasswordCost {
            memory_kib: 64,
            iterations: 1,
        });
    Fixture {
        store,
        clock,
        unknown,
        _guard: guard,
    }
}

impl Fixture {
    fn user(&self, name: &str) -> User {
        self.store
            .register(&NewUser {
                name: name.into(),
                phone: None,
                password: "correct horse".into(),
            })
            .expect("register")
    }

    fn tick(&self, ms: u64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }

    /// Every key and value in the store.
    fn dump(&self) -> Vec<KeyValue> {
        self.store
            .db()
            .read(|tx| tx.get_range(&[], &[0xff], RangeOptions::default()))
            .expect("dump")
    }

    /// Asserts `f` fails as `check` says and leaves the store unchanged.
    fn rejects<T: std::fmt::Debug>(
        &self,
        f: impl FnOnce(&ChatStore) -> storage::Result<T>,
        check: impl FnOnce(&Error) -> bool,
    ) {
        let before = self.dump();
        let result = f(&self.store);
        match &result {
            Err(e) => assert!(check(e), "unexpected error: {e:?}"),
            Ok(v) => panic!("expected an error, got {v:?}"),
        }
        assert_eq!(before, self.dump(), "a rejected call changed the store");
    }

    fn send(&self, conv: u64, epoch: u64, seq: u64, sender: u64, id: &str) -> AppendOutcome {
        self.store
            .append(conv, epoch, seq, &msg(sender, id, &format!("body {id}")))
            .expect("append")
    }
}

fn msg(sender: u64, id: &str, body: &str) -> NewMessage {
    NewMessage::text(sender, id, body)
}

#[test]
fn register_login_and_tokens() {
    let f = fixture();
    let alice = f
        .store
        .register(&NewUser {
            name: "Alice".into(),
            phone: Some("+15550001".into()),
            password: "correct horse".into(),
        })
        .expect("register");
    assert_eq!(f.store.user(alice.id).expect("get").name, "Alice");
    assert!(!alice.password_hash.contains("correct horse"));
    assert!(alice.password_hash.starts_with("$argon2id$"));

    // Duplicates: the name in another case, the phone number.
    f.rejects(
        |s| {
            s.register(&NewUser {
                name: "ALICE".into(),
                phone: None,
                password: "whatever12".into(),
            })
        },
        |e| matches!(e, Error::AlreadyExists { what: "user name" }),
    );
    f.rejects(
        |s| {
            s.register(&NewUser {
                name: "alice2".into(),
                phone: Some("+15550001".into()),
                password: "whatever12".into(),
            })
        },
        |e| {
            matches!(
                e,
                Error::AlreadyExists {
                    what: "phone number"
                }
            )
        },
    );
    for (name, password, phone) in [
        ("", "long enough", None),
        ("ab", "long enough", None),
        ("has space", "long enough", None),
        (&*"x".repeat(33), "long enough", None),
        ("bob", "short", None),
        ("bob", "long enough", Some("12ab")),
    ] {
        f.rejects(
            |s| {
                s.register(&NewUser {
                    name: name.into(),
                    phone: phone.map(Into::into),
                    password: password.into(),
                })
            },
            |e| matches!(e, Error::Invalid { .. }),
        );
    }

    f.rejects(
        |s| s.login("alice", "wrong password", 60_000),
        |e| matches!(e, Error::BadCredentials),
    );
    f.rejects(
        |s| s.login("nobody", "correct horse", 60_000),
        |e| matches!(e, Error::BadCredentials),
    );
    let (user, token) = f
        .store
        .login("aLiCe", "correct horse", 60_000)
        .expect("login");
    assert_eq!(user.id, alice.id);
    assert_eq!(f.store.resolve_token(&token).expect("resolve"), alice.id);
    assert!(matches!(
        f.store.resolve_token("not a token"),
        Err(Error::InvalidToken)
    ));

    // Expiry.
    f.tick(60_001);
    assert!(matches!(
        f.store.resolve_token(&token),
        Err(Error::InvalidToken)
    ));

    // Revocation.
    let (_, token) = f
        .store
        .login("alice", "correct horse", 60_000)
        .expect("login");
    f.store.revoke_token(&token).expect("logout");
    assert!(matches!(
        f.store.resolve_token(&token),
        Err(Error::InvalidToken)
    ));
    f.rejects(
        |s| s.revoke_token(&token),
        |e| matches!(e, Error::InvalidToken),
    );
}

#[test]
fn search_users_by_prefix_paged() {
    let f = fixture();
    for name in ["anna", "Annabel", "annie", "bob", "ann_x", "carl"] {
        f.user(name);
    }
    let page1 = f.store.search_users("ANN", None, 2).expect("search");
    let names: Vec<_> = page1.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["ann_x", "anna"]);
    let page2 = f
        .store
        .search_users("ann", Some("anna"), 10)
        .expect("search");
    let names: Vec<_> = page2.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["Annabel", "annie"]);
    assert!(f
        .store
        .search_users("zed", None, 10)
        .expect("search")
        .is_empty());
    assert!(matches!(
        f.store.search_users("", None, 10),
        Err(Error::Invalid { .. })
    ));
}

#[test]
fn direct_chat_is_one_per_pair() {
    let f = fixture();
    let (a, b, c) = (f.user("alice"), f.user("bob"), f.user("carol"));
    let ab = f.store.open_direct(a.id, b.id).expect("open");
    let ba = f.store.open_direct(b.id, a.id).expect("open again");
    assert_eq!(ab.id, ba.id);
    assert_eq!(ab.kind, ConvKind::Direct);
    let ac = f.store.open_direct(a.id, c.id).expect("open");
    assert_ne!(ab.id, ac.id);

    f.rejects(
        |s| s.open_direct(a.id, a.id),
        |e| matches!(e, Error::Invalid { .. }),
    );
    f.rejects(
        |s| s.open_direct(a.id, 999),
        |e| matches!(e, Error::NotFound { what: "user" }),
    );
    // Carol is not in alice and bob's chat.
    f.rejects(
        |s| s.history(c.id, ab.id, None, 10),
        |e| matches!(e, Error::NotMember { .. }),
    );
    f.rejects(
        |s| s.add_member(a.id, ab.id, c.id),
        |e| matches!(e, Error::Invalid { .. }),
    );
}

#[test]
fn group_lifecycle_and_membership_history() {
    let f = fixture();
    let (a, b, c, d) = (
        f.user("alice"),
        f.user("bob"),
        f.user("carol"),
        f.user("dave"),
    );
    let g = f
        .store
        .create_group(a.id, "Team", "our team", &[b.id, c.id])
        .expect("create");
    let members = f.store.members(a.id, g.id).expect("members");
    assert_eq!(members.len(), 3);
    assert_eq!(
        members.iter().find(|m| m.user_id == a.id).map(|m| m.role),
        Some(Role::Admin)
    );

    f.rejects(
        |s| s.create_group(a.id, "", "", &[]),
        |e| matches!(e, Error::Invalid { field: "name", .. }),
    );
    f.rejects(
        |s| s.create_group(a.id, "x", &"d".repeat(1001), &[]),
        |e| {
            matches!(
                e,
                Error::Invalid {
                    field: "description",
                    ..
                }
            )
        },
    );
    f.rejects(
        |s| s.create_group(a.id, "x", "", &[4242]),
        |e| matches!(e, Error::NotFound { what: "user" }),
    );

    // Edit: members may, outsiders may not.
    f.tick(5);
    let edited = f
        .store
        .edit_group(b.id, g.id, None, Some("new description"))
        .expect("edit");
    assert_eq!(edited.description, "new description");
    assert_eq!(edited.updated_by, b.id);
    f.rejects(
        |s| s.edit_group(d.id, g.id, Some("mine"), None),
        |e| matches!(e, Error::NotMember { .. }),
    );

    // Add: by a member; twice is an error; outsiders cannot.
    f.store.add_member(b.id, g.id, d.id).expect("add");
    f.rejects(
        |s| s.add_member(a.id, g.id, d.id),
        |e| matches!(e, Error::AlreadyExists { .. }),
    );

    // Remove: admins only.
    f.rejects(
        |s| s.remove_member(b.id, g.id, c.id),
        |e| matches!(e, Error::Forbidden(_)),
    );
    let removed = f.store.remove_member(a.id, g.id, c.id).expect("remove");
    assert_eq!(removed.removed_by, Some(a.id));
    f.rejects(
        |s| s.history(c.id, g.id, None, 10),
        |e| matches!(e, Error::NotMember { .. }),
    );

    // The last admin leaves: the longest-standing member is promoted.
    f.store.leave(a.id, g.id).expect("leave");
    let members = f.store.members(b.id, g.id).expect("members");
    let mut roles: Vec<_> = members.iter().map(|m| (m.user_id, m.role)).collect();
    roles.sort_by_key(|&(id, _)| id);
    let mut want = [(b.id, Role::Admin), (d.id, Role::Member)];
    want.sort_by_key(|&(id, _)| id);
    assert_eq!(roles, want);

    // Re-adding a former member bumps their row's version.
    let back = f.store.add_member(b.id, g.id, c.id).expect("re-add");
    assert_eq!(back.version, 3);

    let history = f.store.member_history(b.id, g.id).expect("history");
    let actions: Vec<_> = history.iter().map(|e| (e.user_id, e.action)).collect();
    assert_eq!(
        actions,
        [
            (a.id, MemberAction::Added),
            (b.id, MemberAction::Added),
            (c.id, MemberAction::Added),
            (d.id, MemberAction::Added),
            (c.id, MemberAction::Removed),
            (a.id, MemberAction::Left),
            (b.id, MemberAction::Promoted),
            (c.id, MemberAction::Added),
        ]
    );
    assert!(history.windows(2).all(|w| w[0].version + 1 == w[1].version));

    // Delete: admins only; afterwards it is gone for everyone.
    f.rejects(
        |s| s.delete_group(d.id, g.id),
        |e| matches!(e, Error::Forbidden(_)),
    );
    let told = f.store.delete_group(b.id, g.id).expect("delete");
    assert_eq!(told.len(), 3);
    assert!(matches!(
        f.store.conversation(b.id, g.id),
        Err(Error::NotFound { .. })
    ));
    assert!(f.store.chat_list(d.id).expect("list").is_empty());
}

#[test]
fn appends_are_gapless_fenced_and_idempotent() {
    let f = fixture();
    let (a, b, c) = (f.user("alice"), f.user("bob"), f.user("carol"));
    let conv = f.store.open_direct(a.id, b.id).expect("open").id;
    let meta = f.store.activate_conversation(conv).expect("activate");
    assert_eq!((meta.epoch, meta.last_seq), (1, 0));

    let first = f.send(conv, 1, 1, a.id, "m1");
    assert!(matches!(&first, AppendOutcome::Appended(m) if m.seq == 1));
    f.send(conv, 1, 2, b.id, "m1"); // same id, other sender: a new message
                                    // A resend of an earlier batch is the conversation actor's to
                                    // answer (no dedup row): from the ids of the log's tail.
    assert_eq!(
        f.store.recent_ids(conv, 10).expect("recent ids"),
        [(a.id, "m1".to_owned(), 1), (b.id, "m1".to_owned(), 2)]
    );
    assert_eq!(
        f.store.recent_ids(conv, 1).expect("recent ids"),
        [(b.id, "m1".to_owned(), 2)]
    );

    // Wrong sequence numbers and bad input write nothing.
    f.rejects(
        |s| s.append(conv, 1, 5, &msg(a.id, "m2", "hi")),
        |e| {
            matches!(
                e,
                Error::SequenceMismatch {
                    expected: 3,
                    presented: 5,
                    ..
                }
            )
        },
    );
    f.rejects(
        |s| s.append(conv, 1, 3, &msg(c.id, "x", "hi")),
        |e| matches!(e, Error::NotMember { .. }),
    );
    f.rejects(
        |s| s.append(conv, 1, 3, &msg(a.id, "x", &"y".repeat(4097))),
        |e| matches!(e, Error::Invalid { field: "body", .. }),
    );
    f.rejects(
        |s| s.append(conv, 1, 3, &msg(a.id, "", "hello")),
        |e| {
            matches!(
                e,
                Error::Invalid {
                    field: "client_msg_id",
                    ..
                }
            )
        },
    );

    // A new activation fences the old one out.
    let meta = f.store.activate_conversation(conv).expect("reactivate");
    assert_eq!((meta.epoch, meta.last_seq), (2, 2));
    f.rejects(
        |s| s.append(conv, 1, 3, &msg(a.id, "m2", "late")),
        |e| {
            matches!(
                e,
                Error::StaleEpoch {
                    presented: 1,
                    current: 2,
                    ..
                }
            )
        },
    );

    // A batch: good, bad, good, a repeat within the batch; seqs stay
    // gapless.
    let outcomes = f
        .store
        .append_batch(
            conv,
            2,
            3,
            &[
                msg(a.id, "b1", "one"),
                msg(c.id, "b2", "outsider"),
                msg(b.id, "b3", "two"),
                msg(b.id, "b3", "dup within the batch"),
            ],
        )
        .expect("batch");
    let seqs: Vec<_> = outcomes
        .iter()
        .map(|o| match o {
            Ok(AppendOutcome::Appended(m)) => format!("new {}", m.seq),
            Ok(AppendOutcome::Duplicate(m)) => format!("dup {}", m.seq),
            Err(Error::NotMember { .. }) => "not member".into(),
            Err(e) => format!("{e}"),
        })
        .collect();
    assert_eq!(seqs, ["new 3", "not member", "new 4", "dup 4"]);

    let history = f.store.history(b.id, conv, None, 100).expect("history");
    let got: Vec<_> = history.iter().map(|m| m.seq).collect();
    assert_eq!(got, [4, 3, 2, 1]);
    let page = f.store.history(b.id, conv, Some(3), 1).expect("page");
    assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), [2]);
    let after = f.store.messages_after(b.id, conv, 2, 100).expect("sync");
    assert_eq!(after.iter().map(|m| m.seq).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(f.store.message(a.id, conv, 3).expect("message").body, "one");
    assert!(matches!(
        f.store.message(a.id, conv, 99),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn receipts_are_monotonic_watermarks() {
    let f = fixture();
    let (a, b, c) = (f.user("alice"), f.user("bob"), f.user("carol"));
    let g = f
        .store
        .create_group(a.id, "g", "", &[b.id, c.id])
        .expect("group")
        .id;
    let epoch = f.store.activate_conversation(g).expect("activate").epoch;
    for (i, id) in ["1", "2", "3"].iter().enumerate() {
        f.send(g, epoch, i as u64 + 1, a.id, id);
    }
    let status = |seq| {
        let mut s = f.store.message_status(a.id, g, seq).expect("status");
        s.sort();
        s
    };
    // Sorted by user id, which need not follow registration order (ids
    // are spread over shards on FoundationDB).
    let sorted = |mut v: Vec<(u64, MessageStatus)>| {
        v.sort();
        v
    };
    assert_eq!(
        status(2),
        sorted(vec![
            (b.id, MessageStatus::Sent),
            (c.id, MessageStatus::Sent)
        ])
    );

    let (r, moved) = f
        .store
        .ack(b.id, None, g, AckKind::Delivered, 3)
        .expect("ack");
    assert!(moved && r.delivered_seq == 3 && r.seen_seq == 0);
    let (r, moved) = f.store.ack(b.id, None, g, AckKind::Seen, 2).expect("ack");
    assert!(moved && r.seen_seq == 2 && r.delivered_seq == 3);
    // Going back changes nothing.
    let (r, moved) = f
        .store
        .ack(b.id, None, g, AckKind::Delivered, 1)
        .expect("ack");
    assert!(!moved && r.delivered_seq == 3);
    // Seen implies delivered.
    f.store.ack(c.id, None, g, AckKind::Seen, 1).expect("ack");
    assert_eq!(
        status(2),
        sorted(vec![
            (b.id, MessageStatus::Seen),
            (c.id, MessageStatus::Sent)
        ])
    );
    assert_eq!(
        status(1),
        sorted(vec![
            (b.id, MessageStatus::Seen),
            (c.id, MessageStatus::Seen)
        ])
    );

    f.rejects(
        |s| s.ack(b.id, None, g, AckKind::Seen, 4),
        |e| matches!(e, Error::Invalid { field: "seq", .. }),
    );
    let outsider = f.user("dave");
    f.rejects(
        |s| s.ack(outsider.id, None, g, AckKind::Seen, 1),
        |e| matches!(e, Error::NotMember { .. }),
    );
    let receipts = f.store.receipts(c.id, g).expect("receipts");
    assert_eq!(receipts.len(), 3);
}

#[test]
fn acks_in_one_batch_each_get_their_answer_and_refusals_stand_alone() {
    let f = fixture();
    let (a, b, c) = (f.user("alice"), f.user("bob"), f.user("carol"));
    let outsider = f.user("dave");
    let g = f
        .store
        .create_group(a.id, "g", "", &[b.id, c.id])
        .expect("group")
        .id;
    let epoch = f.store.activate_conversation(g).expect("activate").epoch;
    for i in 1..=3 {
        f.send(g, epoch, i, a.id, &format!("m{i}"));
    }
    let phone = DeviceKey::named("phone").expect("id");
    f.store.open_device(b.id, &phone).expect("open");
    let ack = |user_id, device: Option<&DeviceKey>, kind, seq| AckRequest {
        user_id,
        device: device.cloned(),
        kind,
        seq,
    };
    let answers = f
        .store
        .ack_all(
            g,
            &[
                ack(b.id, Some(&phone), AckKind::Delivered, 3),
                ack(outsider.id, None, AckKind::Seen, 1),
                ack(b.id, Some(&phone), AckKind::Seen, 2),
                ack(c.id, None, AckKind::Seen, 9),
                ack(c.id, None, AckKind::Delivered, 1),
            ],
        )
        .expect("one transaction");
    assert_eq!(answers.len(), 5);
    let receipt = |i: usize| answers[i].as_ref().expect("accepted");
    assert!(receipt(0).1 && receipt(0).0.delivered_seq == 3);
    assert!(matches!(answers[1], Err(Error::NotMember { .. })));
    // Later acks of the same member see the earlier ones' writes.
    assert!(receipt(2).1 && (receipt(2).0.delivered_seq, receipt(2).0.seen_seq) == (3, 2));
    assert!(matches!(
        answers[3],
        Err(Error::Invalid { field: "seq", .. })
    ));
    assert!(receipt(4).1 && receipt(4).0.delivered_seq == 1);
    // The same as acks one by one: the store holds them, the cursor moved.
    let mut status = f.store.message_status(a.id, g, 2).expect("status");
    status.sort();
    let mut want = vec![(b.id, MessageStatus::Seen), (c.id, MessageStatus::Sent)];
    want.sort();
    assert_eq!(status, want);
    let start = f.store.open_device(b.id, &phone).expect("open");
    assert_eq!(
        start.iter().find(|s| s.conv_id == g).map(|s| s.after),
        Some(3)
    );
}

#[test]
fn a_group_commit_carries_appends_and_acks_of_several_conversations() {
    let f = fixture();
    let (a, b, c) = (f.user("alice"), f.user("bob"), f.user("carol"));
    let ab = f.store.open_direct(a.id, b.id).expect("dm").id;
    let ac = f.store.open_direct(a.id, c.id).expect("dm").id;
    let e_ab = f.store.activate_conversation(ab).expect("activate").epoch;
    let e_ac = f.store.activate_conversation(ac).expect("activate").epoch;
    f.send(ab, e_ab, 1, a.id, "first");
    let ack = |user_id, kind, seq| AckRequest {
        user_id,
        device: None,
        kind,
        seq,
    };
    let (appended, acked) = f
        .store
        .commit_group(
            &[
                AppendRequest {
                    conv_id: ab,
                    epoch: e_ab,
                    next_seq: 2,
                    messages: vec![msg(a.id, "second", "again")],
                    push_to: Vec::new(),
                    pair: None,
                },
                // A stale epoch: refused alone.
                AppendRequest {
                    conv_id: ac,
                    epoch: e_ac + 1,
                    next_seq: 1,
                    messages: vec![msg(a.id, "fenced", "no")],
                    push_to: Vec::new(),
                    pair: None,
                },
            ],
            &[
                AckBatch {
                    conv_id: ab,
                    // 2 is appended in this same transaction, before the acks.
                    acks: vec![
                        ack(b.id, AckKind::Seen, 1),
                        ack(b.id, AckKind::Delivered, 2),
                    ],
                },
                AckBatch {
                    conv_id: ac,
                    acks: vec![ack(c.id, AckKind::Seen, 1)],
                },
            ],
        )
        .expect("one transaction");
    assert!(matches!(&appended[0], Ok(o) if o.len() == 1));
    assert!(matches!(appended[1], Err(Error::StaleEpoch { .. })));
    let bob = |i: usize| acked[0][i].as_ref().expect("accepted");
    assert_eq!((bob(0).0.delivered_seq, bob(0).0.seen_seq), (1, 1));
    assert_eq!((bob(1).0.delivered_seq, bob(1).0.seen_seq), (2, 1));
    assert!(matches!(
        acked[1][0],
        Err(Error::Invalid { field: "seq", .. })
    ));
    let receipts = f.store.receipts(a.id, ab).expect("receipts");
    let of_bob = receipts.iter().find(|r| r.user_id == b.id).expect("bob");
    assert_eq!(
        (of_bob.receipt.delivered_seq, of_bob.receipt.seen_seq),
        (2, 1)
    );
}

#[test]
fn chat_list_orders_by_activity_with_unread_and_status() {
    let f = fixture();
    let (a, b, c) = (f.user("alice"), f.user("bob"), f.user("carol"));
    let dm = f.store.open_direct(a.id, b.id).expect("dm").id;
    f.tick(10);
    let g = f
        .store
        .create_group(c.id, "Group", "", &[a.id])
        .expect("group")
        .id;
    let e_dm = f.store.activate_conversation(dm).expect("a").epoch;
    let e_g = f.store.activate_conversation(g).expect("a").epoch;
    f.tick(10);
    f.send(g, e_g, 1, c.id, "g1");
    f.tick(10);
    f.send(dm, e_dm, 1, b.id, "d1");
    f.tick(10);
    f.send(dm, e_dm, 2, a.id, "d2");
    f.tick(10);
    f.send(dm, e_dm, 3, b.id, "d3");

    let list = f.store.chat_list(a.id).expect("list");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].conv_id, dm);
    assert_eq!(list[0].name, "bob");
    // d1 and d3: sending d2 marked nothing read, and her own d2 is not unread.
    assert_eq!(list[0].unread, 2);
    assert_eq!(list[0].last_message.as_ref().map(|m| m.seq), Some(3));
    assert_eq!(list[0].last_message_status, None); // not alice's message
    assert_eq!(list[1].conv_id, g);
    assert_eq!(list[1].name, "Group");
    assert_eq!(list[1].unread, 1);

    let bobs = f.store.chat_list(b.id).expect("list");
    assert_eq!(bobs[0].last_message_status, Some(MessageStatus::Sent));
    f.store.ack(a.id, None, dm, AckKind::Seen, 3).expect("ack");
    let bobs = f.store.chat_list(b.id).expect("list");
    assert_eq!(bobs[0].last_message_status, Some(MessageStatus::Seen));
    assert_eq!(f.store.chat_list(a.id).expect("list")[0].unread, 0);

    // A member who joins later starts with nothing unread.
    let d = f.user("dave");
    f.store.add_member(c.id, g, d.id).expect("add");
    assert_eq!(f.store.chat_list(d.id).expect("list")[0].unread, 0);
}

#[test]
fn push_outbox_is_written_with_the_message_and_claimed_once() {
    let f = fixture();
    let (a, b, c) = (f.user("alice"), f.user("bob"), f.user("carol"));
    let g = f
        .store
        .create_group(a.id, "grp", "", &[b.id, c.id])
        .expect("group")
        .id;
    let epoch = f.store.activate_conversation(g).expect("activate").epoch;
    let request = AppendRequest {
        conv_id: g,
        epoch,
        next_seq: 1,
        messages: vec![msg(a.id, "1", "one"), msg(b.id, "2", "two")],
        push_to: vec![b.id, c.id],
        pair: None,
    };
    let results = f.store.append_many(&[request]).expect("append");
    assert!(matches!(&results[0], Ok(o) if o.len() == 2));
    let owed = f.store.unclaimed_pushes(u64::MAX, 100).expect("scan");
    assert_eq!(owed, vec![(g, 1), (g, 2)]);
    assert!(f.store.unclaimed_pushes(0, 100).expect("scan").is_empty());
    let claimed = f
        .store
        .claim_pushes(&[(g, 1), (g, 2), (g, 3)])
        .expect("claim");
    assert_eq!(claimed.len(), 2);
    assert_eq!((claimed[0].0.seq, claimed[0].0.body.as_str()), (1, "one"));
    assert_eq!(claimed[0].1.recipients, vec![b.id, c.id]);
    assert_eq!(claimed[1].1.recipients, vec![c.id], "not the sender");
    assert!(f
        .store
        .claim_pushes(&[(g, 1), (g, 2)])
        .expect("claim")
        .is_empty());
    assert!(f
        .store
        .unclaimed_pushes(u64::MAX, 100)
        .expect("scan")
        .is_empty());

    // The recipient's view: not seen until their receipt says so.
    let r = f.store.push_recipient(c.id, g, 2).expect("recipient");
    assert!(!r.seen && r.subscriptions.is_empty());
    // Bob sent seq 2 without having seen seq 1: a send marks nothing he
    // has not received as seen, so seq 2 counts as seen only once he sees
    // seq 1 (his own messages right after it follow).
    let r = f.store.push_recipient(b.id, g, 2).expect("recipient");
    assert!(!r.seen, "seq 1 is unseen, so the watermark stays below 2");
    f.store.ack(b.id, None, g, AckKind::Seen, 1).expect("ack");
    let r = f.store.push_recipient(b.id, g, 2).expect("recipient");
    assert!(r.seen, "seeing seq 1 sees his own seq 2 too");
}

#[test]
fn vapid_key_is_created_once() {
    let f = fixture();
    let key = |n: u8| VapidKey {
        private: vec![n; 32],
        public: vec![n; 65],
        created_at: 1,
    };
    assert_eq!(f.store.vapid_key_or_insert(key(1)).expect("first"), key(1));
    assert_eq!(f.store.vapid_key_or_insert(key(2)).expect("second"), key(1));
}

#[test]
fn push_subscriptions_and_last_seen() {
    let f = fixture();
    let a = f.user("alice");
    let web = |endpoint: &str, p256dh: &str, auth: &str| PushTarget::WebPush {
        endpoint: endpoint.into(),
        p256dh: p256dh.into(),
        auth: auth.into(),
    };
    let sub = f
        .store
        .add_push_subscription(a.id, web("https://push.example/abc", "key", "auth"))
        .expect("subscribe");
    let again = f
        .store
        .add_push_subscription(a.id, web("https://push.example/abc", "key2", "auth"))
        .expect("resubscribe");
    assert_eq!(sub.id, again.id);
    assert_eq!(f.store.push_subscriptions(a.id).expect("list").len(), 1);
    let fcm = f
        .store
        .add_push_subscription(
            a.id,
            PushTarget::Fcm {
                token: "https://push.example/abc".into(),
            },
        )
        .expect("fcm");
    assert_ne!(fcm.id, sub.id, "the kind is part of the id");
    f.store
        .remove_push_subscription(a.id, &fcm.id)
        .expect("remove fcm");
    f.rejects(
        |s| s.add_push_subscription(a.id, web("", "k", "a")),
        |e| {
            matches!(
                e,
                Error::Invalid {
                    field: "endpoint",
                    ..
                }
            )
        },
    );
    f.rejects(
        |s| {
            s.add_push_subscription(
                a.id,
                PushTarget::Apns {
                    token: String::new(),
                },
            )
        },
        |e| matches!(e, Error::Invalid { field: "token", .. }),
    );
    // A subscription the service called gone is removed only if it was
    // not registered again since.
    assert!(!f
        .store
        .remove_gone_push_subscription(a.id, &sub.id, sub.created_at.wrapping_sub(1))
        .expect("gone, stale"));
    assert_eq!(f.store.push_subscriptions(a.id).expect("list").len(), 1);
    f.rejects(
        |s| s.add_push_subscription(77, web("https://x", "k", "a")),
        |e| matches!(e, Error::NotFound { .. }),
    );
    f.rejects(
        |s| s.remove_push_subscription(a.id, "nope"),
        |e| matches!(e, Error::NotFound { .. }),
    );
    f.store
        .remove_push_subscription(a.id, &sub.id)
        .expect("unsubscribe");
    assert!(f.store.push_subscriptions(a.id).expect("list").is_empty());

    assert_eq!(f.store.last_seen(a.id).expect("last seen"), None);
    f.store.set_last_seen(a.id, 50).expect("set");
    f.store.set_last_seen(a.id, 40).expect("set older");
    assert_eq!(f.store.last_seen(a.id).expect("last seen"), Some(50));
}

#[test]
fn contacts_come_with_their_last_seen_in_one_read() {
    let f = fixture();
    let (a, b, c, d) = (
        f.user("alice"),
        f.user("bob"),
        f.user("carol"),
        f.user("dave"),
    );
    f.store
        .create_group(a.id, "g", "", &[b.id, c.id])
        .expect("group");
    f.store.open_direct(a.id, d.id).expect("dm");
    f.store.set_last_seen(b.id, 70).expect("set");
    f.store.set_last_seen(d.id, 90).expect("set");
    let mut got = f.store.contacts_last_seen(a.id).expect("snapshot");
    got.sort();
    let mut want = vec![(b.id, Some(70)), (c.id, None), (d.id, Some(90))];
    want.sort();
    assert_eq!(got, want);
    // The same contacts as `contacts`, which presence transitions go to.
    let mut contacts = f.store.contacts(a.id).expect("contacts");
    contacts.sort();
    assert_eq!(contacts, got.iter().map(|(u, _)| *u).collect::<Vec<_>>());
    // Carol shares only the group: alice and bob, not dave.
    let carols: Vec<u64> = f
        .store
        .contacts_last_seen(c.id)
        .expect("snapshot")
        .into_iter()
        .map(|(u, _)| u)
        .collect();
    assert!(carols.contains(&a.id) && carols.contains(&b.id) && !carols.contains(&d.id));
}

#[test]
fn reopening_with_another_schema_version_is_refused() {
    let (db, _guard) = open_store();
    ChatStore::open(db.clone(), Limits::default()).expect("first open");
    ChatStore::open(db.clone(), Limits::default()).expect("same version reopens");
    let key = storage::keys::META.key(&(storage::keys::meta::SCHEMA_VERSION,));
    db.run(|tx| tx.set(&key, &[99])).expect("tamper");
    assert!(matches!(
        ChatStore::open(db, Limits::default()),
        Err(Error::SchemaVersion { found: 99, .. })
    ));
}

#[test]
fn deleting_a_group_fences_its_appends() {
    let f = fixture();
    let (a, b) = (f.user("alice"), f.user("bob"));
    let g = f
        .store
        .create_group(a.id, "g", "", &[b.id])
        .expect("group")
        .id;
    let epoch = f.store.activate_conversation(g).expect("activate").epoch;
    f.send(g, epoch, 1, a.id, "before");
    f.store.delete_group(a.id, g).expect("delete");
    f.rejects(
        |s| s.append(g, epoch, 2, &msg(a.id, "after", "too late")),
        |e| matches!(e, Error::StaleEpoch { .. }),
    );
    f.rejects(
        |s| s.activate_conversation(g),
        |e| matches!(e, Error::NotFound { .. }),
    );
    f.rejects(
        |s| s.append(9999, 0, 1, &msg(a.id, "x", "nowhere")),
        |e| matches!(e, Error::StaleEpoch { .. }),
    );
}

#[test]
fn append_many_commits_several_conversations_at_once() {
    let f = fixture();
    let (a, b, c) = (f.user("alice"), f.user("bob"), f.user("carol"));
    let ab = f.store.open_direct(a.id, b.id).expect("dm").id;
    let ac = f.store.open_direct(a.id, c.id).expect("dm").id;
    let e_ab = f.store.activate_conversation(ab).expect("activate").epoch;
    let e_ac = f.store.activate_conversation(ac).expect("activate").epoch;
    let request = |conv, epoch, next_seq, id: &str| AppendRequest {
        conv_id: conv,
        epoch,
        next_seq,
        messages: vec![msg(a.id, id, "hi")],
        push_to: Vec::new(),
        pair: None,
    };
    let results = f
        .store
        .append_many(&[
            request(ab, e_ab, 1, "x"),
            request(ac, e_ac + 1, 1, "stale"),
            request(ac, e_ac, 1, "y"),
        ])
        .expect("append_many");
    assert!(matches!(&results[0], Ok(o) if o.len() == 1 && o[0].is_ok()));
    assert!(matches!(&results[1], Err(Error::StaleEpoch { .. })));
    assert!(matches!(&results[2], Ok(o) if o.len() == 1 && o[0].is_ok()));
    let seqs = |conv| {
        f.store
            .history(a.id, conv, None, 10)
            .expect("history")
            .iter()
            .map(|m| (m.seq, m.client_msg_id.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(ab), [(1, "x".to_owned())]);
    assert_eq!(
        seqs(ac),
        [(1, "y".to_owned())],
        "the fenced request wrote nothing"
    );
}

#[test]
fn each_device_resumes_from_its_own_cursor() {
    let f = fixture();
    let (a, b) = (f.user("alice"), f.user("bob"));
    let dm = f.store.open_direct(a.id, b.id).expect("dm").id;
    let epoch = f.store.activate_conversation(dm).expect("activate").epoch;
    let phone = DeviceKey::named("phone").expect("id");
    let laptop = DeviceKey::named("laptop-1").expect("id");
    let start = |d: &DeviceKey| {
        f.store
            .open_device(b.id, d)
            .expect("open")
            .into_iter()
            .find(|s| s.conv_id == dm)
            .map(|s| (s.after, s.last_seq))
    };
    assert_eq!(start(&phone), Some((0, 0)));
    assert_eq!(start(&laptop), Some((0, 0)));
    for i in 1..=3 {
        f.send(dm, epoch, i, a.id, &format!("m{i}"));
    }
    // The laptop reads everything; the phone was offline.
    f.store
        .ack(b.id, Some(&laptop), dm, AckKind::Seen, 3)
        .expect("ack");
    assert_eq!(start(&laptop), Some((3, 3)));
    assert_eq!(
        start(&phone),
        Some((0, 3)),
        "the phone resumes from its own cursor"
    );
    // A device seen for the first time starts where the user's devices are.
    assert_eq!(start(&DeviceKey::named("new").expect("id")), Some((3, 3)));

    // Bob replies without having seen a newer message: it stays unread,
    // his own message is not unread, and his watermarks did not move.
    f.send(dm, epoch, 4, a.id, "m4");
    f.send(dm, epoch, 5, b.id, "reply");
    let row = |u: u64| {
        f.store
            .chat_list(u)
            .expect("list")
            .into_iter()
            .find(|c| c.conv_id == dm)
            .expect("row")
    };
    assert_eq!(row(b.id).unread, 1);
    let receipts = f.store.receipts(b.id, dm).expect("receipts");
    let bobs = receipts.iter().find(|r| r.user_id == b.id).expect("bob");
    assert_eq!((bobs.receipt.delivered_seq, bobs.receipt.seen_seq), (3, 3));
    f.store
        .ack(b.id, Some(&phone), dm, AckKind::Seen, 4)
        .expect("ack");
    assert_eq!(row(b.id).unread, 0);
    // Seeing 4 covers his own 5; now caught up, sending moves him over 6.
    f.send(dm, epoch, 6, b.id, "again");
    assert_eq!(row(b.id).unread, 0);
    let receipts = f.store.receipts(b.id, dm).expect("receipts");
    let bobs = receipts.iter().find(|r| r.user_id == b.id).expect("bob");
    assert_eq!((bobs.receipt.delivered_seq, bobs.receipt.seen_seq), (6, 6));
    assert!(DeviceKey::named("bad id").is_err());
    assert!(DeviceKey::named(&"x".repeat(65)).is_err());
}

/// A registration whose commit reports an unknown outcome after committing
/// is retried and recognises its own account: it answers the user it
/// created, not "name taken", and the account exists once.
#[test]
fn registration_after_an_unknown_commit_outcome_answers_its_own_account() {
    let f = fixture();
    let new = NewUser {
        name: "Maybe".into(),
        phone: Some("+15550100".into()),
        password: "correct horse".into(),
    };
    f.unknown.inject(1);
    let user = f
        .store
        .register(&new)
        .expect("register through an unknown result");
    assert_eq!(
        f.unknown.pending(),
        0,
        "the injected unknown result happened"
    );
    assert_eq!(user.name, "Maybe");
    assert_eq!(
        f.store.user_by_name("maybe").expect("lookup"),
        Some(user.clone())
    );
    // A second registration of the name is still refused.
    f.rejects(
        |s| s.register(&new),
        |e| matches!(e, Error::AlreadyExists { .. }),
    );
    let next = f.user("next");
    assert_ne!(next.id, user.id);
    let users = f
        .store
        .db()
        .read(|tx| {
            let (begin, end) = storage::keys::USER.all();
            tx.get_range(&begin, &end, RangeOptions::default())
        })
        .expect("users");
    assert_eq!(
        users.len(),
        2,
        "one user stored for the retried registration"
    );
}

/// A group commit whose outcome is unknown, retried, answers every
/// conversation what the commit did (the messages at their seqs, a fenced
/// conversation still fenced, a refused message still refused), and
/// writes nothing twice.
#[test]
fn group_commit_after_an_unknown_commit_outcome_answers_what_it_did() {
    let f = fixture();
    let (a, b, c) = (f.user("alice"), f.user("bob"), f.user("carol"));
    let ab = f.store.open_direct(a.id, b.id).expect("dm").id;
    let ac = f.store.open_direct(a.id, c.id).expect("dm").id;
    let e_ab = f.store.activate_conversation(ab).expect("activate").epoch;
    let e_ac = f.store.activate_conversation(ac).expect("activate").epoch;
    let first = f
        .store
        .append_many(&[AppendRequest {
            conv_id: ab,
            epoch: e_ab,
            next_seq: 1,
            messages: vec![msg(a.id, "old", "before")],
            push_to: Vec::new(),
            pair: None,
        }])
        .expect("a first message");
    assert!(matches!(&first[0], Ok(o) if o.len() == 1));

    let requests = [
        AppendRequest {
            conv_id: ab,
            epoch: e_ab,
            next_seq: 2,
            messages: vec![
                msg(a.id, "x1", "one"),
                msg(c.id, "not-a-member", "refused"),
                msg(a.id, "x1", "a repeat within the batch"),
                msg(b.id, "x2", "two"),
            ],
            push_to: Vec::new(),
            pair: None,
        },
        AppendRequest {
            conv_id: ac,
            epoch: e_ac + 1,
            next_seq: 1,
            messages: vec![msg(a.id, "stale", "fenced")],
            push_to: Vec::new(),
            pair: None,
        },
        AppendRequest {
            conv_id: ac,
            epoch: e_ac,
            next_seq: 1,
            messages: vec![msg(c.id, "y", "three")],
            push_to: Vec::new(),
            pair: None,
        },
    ];
    f.unknown.inject(1);
    let results = f.store.append_many(&requests).expect("append_many");
    assert_eq!(
        f.unknown.pending(),
        0,
        "the injected unknown result happened"
    );

    let ab_out = results[0].as_ref().expect("ab appended");
    let seq_of = |o: &Result<AppendOutcome, Error>| match o {
        Ok(AppendOutcome::Appended(m)) => Some(("appended", m.seq)),
        Ok(AppendOutcome::Duplicate(m)) => Some(("duplicate", m.seq)),
        Err(_) => None,
    };
    assert_eq!(seq_of(&ab_out[0]), Some(("appended", 2)));
    assert!(
        matches!(ab_out[1], Err(Error::NotMember { .. })),
        "{:?}",
        ab_out[1]
    );
    assert_eq!(seq_of(&ab_out[2]), Some(("duplicate", 2)));
    assert_eq!(seq_of(&ab_out[3]), Some(("appended", 3)));
    assert!(
        matches!(&results[1], Err(Error::StaleEpoch { .. })),
        "{:?}",
        results[1]
    );
    let ac_out = results[2].as_ref().expect("ac appended");
    assert_eq!(seq_of(&ac_out[0]), Some(("appended", 1)));

    let seqs = |conv| {
        f.store
            .history(a.id, conv, None, 10)
            .expect("history")
            .iter()
            .rev()
            .map(|m| (m.seq, m.client_msg_id.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        seqs(ab),
        [
            (1, "old".to_owned()),
            (2, "x1".to_owned()),
            (3, "x2".to_owned())
        ]
    );
    assert_eq!(seqs(ac), [(1, "y".to_owned())]);
    // The conversation goes on from where the commit left it.
    let next = f
        .store
        .append(ab, e_ab, 4, &msg(b.id, "x3", "four"))
        .expect("the next append");
    assert_eq!(next.message().seq, 4);
}

/// A transaction that cannot recognise its own earlier commit is not
/// retried after an unknown outcome: it says so, on every backend.
#[test]
fn a_non_idempotent_transaction_reports_an_unknown_outcome() {
    let f = fixture();
    let a = f.user("alice");
    f.unknown.inject(1);
    let result = f.store.create_group(a.id, "g", "", &[]);
    assert!(matches!(result, Err(Error::MaybeCommitted)), "{result:?}");
    assert_eq!(f.unknown.pending(), 0);
}

/// Limits under which a record could outgrow FoundationDB's 100 kB value
/// (or 10 kB key) are refused when the store opens, so an oversized value
/// cannot be built; the largest message the defaults allow is stored.
#[test]
fn limits_that_allow_oversized_values_are_refused() {
    use storage::chat::limits::MAX_VALUE_BYTES;

    let (db, _guard) = open_store();
    for limits in [
        Limits {
            max_message_bytes: MAX_VALUE_BYTES,
            ..Limits::default()
        },
        Limits {
            max_description_chars: MAX_VALUE_BYTES / 4,
            ..Limits::default()
        },
        Limits {
            max_push_endpoint_bytes: 200_000,
            ..Limits::default()
        },
        Limits {
            max_client_msg_id_bytes: 20_000,
            ..Limits::default()
        },
    ] {
        let result = ChatStore::open(db.clone(), limits.clone());
        assert!(
            matches!(
                result,
                Err(Error::Invalid {
                    field: "limits",
                    ..
                })
            ),
            "{limits:?}: {result:?}"
        );
    }

    let f = fixture();
    let (a, b) = (f.user("alice"), f.user("bob"));
    let conv = f.store.open_direct(a.id, b.id).expect("dm").id;
    let epoch = f.store.activate_conversation(conv).expect("activate").epoch;
    let max = Limits::default();
    let body = "é".repeat(max.max_message_bytes / 2);
    let id = "i".repeat(max.max_client_msg_id_bytes);
    let stored = f
        .store
        .append(conv, epoch, 1, &msg(a.id, &id, &body))
        .expect("the largest message");
    assert_eq!(stored.message().body, body);
}

/// A lease written by another version (other fields) is ignored, not a
/// corruption error: nodes still start and see each other.
#[test]
fn leases_in_another_format_are_ignored() {
    let f = fixture();
    f.store
        .db()
        .run(|tx| tx.set(&storage::keys::NODE_LEASE.key(&("old",)), &[1, 2]))
        .expect("an old lease");
    let lease = storage::chat::NodeLease {
        name: "n1".into(),
        cluster_addr: "127.0.0.1:4370".into(),
        http_addr: "127.0.0.1:8080".into(),
        public_url: "http://127.0.0.1:8080".into(),
        incarnation: 7,
        expires_at: 2_000_000,
    };
    f.store
        .db()
        .run(|tx| tx.set(&storage::keys::NODE_LEASE.key(&("n1",)), &[9]))
        .expect("an old lease of n1");
    assert_eq!(f.store.renew_lease(&lease).expect("renew"), None);
    assert_eq!(f.store.leases().expect("leases"), vec![lease]);
}

/// A renewal that reaches the store after a later one of the same process
/// (it waited out an outage in a storage thread) leaves the later one in
/// place; a new process's lease replaces any.
#[test]
fn a_late_renewal_does_not_move_a_lease_back() {
    let f = fixture();
    let lease = |incarnation, expires_at| storage::chat::NodeLease {
        name: "n1".into(),
        cluster_addr: "127.0.0.1:4370".into(),
        http_addr: "127.0.0.1:8080".into(),
        public_url: "http://127.0.0.1:8080".into(),
        incarnation,
        expires_at,
    };
    f.store.renew_lease(&lease(7, 5_000)).expect("renew");
    let late = f.store.renew_lease(&lease(7, 3_000)).expect("late renew");
    assert_eq!(late, Some(lease(7, 5_000)));
    assert_eq!(f.store.leases().expect("leases"), vec![lease(7, 5_000)]);
    f.store.renew_lease(&lease(8, 1_000)).expect("restarted");
    assert_eq!(f.store.leases().expect("leases"), vec![lease(8, 1_000)]);
}

/// SQLite as an engine with concurrent writers would look to the chat layer:
/// ids spread over shards ([`Database::id_shards`]).
struct ShardedIds(storage::SqliteBackend);

impl storage::Backend for ShardedIds {
    fn name(&self) -> &'static str {
        "sqlite-sharded-ids"
    }

    fn begin(
        &self,
        mode: storage::TxMode,
    ) -> storage::Result<Box<dyn storage::kv::BackendTransaction + '_>> {
        self.0.begin(mode)
    }
}

#[test]
fn spread_ids_are_unique_and_start_above_the_single_counter() {
    use std::collections::HashSet;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ids.sqlite");
    let cost = PasswordCost {
        memory_kib: 64,
        iterations: 1,
    };
    let register = |store: &ChatStore, name: &str| {
        store
            .register(&NewUser {
                name: name.into(),
                phone: None,
                password: "correct horse".into(),
            })
            .expect("register")
            .id
    };
    // One counter first (SQLite serializes writers): dense ids.
    let single = ChatStore::open(
        Database::open_sqlite(&path).expect("open"),
        Limits::default(),
    )
    .expect("store")
    .with_password_cost(cost);
    assert_eq!(single.db().id_shards(), 1);
    let first: Vec<u64> = (0..3)
        .map(|i| register(&single, &format!("user{i}")))
        .collect();
    assert_eq!(first, vec![1, 2, 3]);
    drop(single);

    // The same store seen by an engine with concurrent writers.
    let backend =
        storage::SqliteBackend::open(&path, storage::SqliteOptions::default()).expect("open");
    let spread = ChatStore::open(Database::new(ShardedIds(backend)), Limits::default())
        .expect("store")
        .with_password_cost(cost);
    assert_eq!(spread.db().id_shards(), storage::ID_SHARDS);
    let mut users: HashSet<u64> = first.iter().copied().collect();
    for i in 0..40 {
        let id = register(&spread, &format!("spread{i}"));
        assert!(id > 3, "id {id} reuses the single counter's range");
        assert!(users.insert(id), "user id {id} handed out twice");
    }
    let residues: HashSet<u64> = users
        .iter()
        .filter(|&&id| id > 3)
        .map(|id| id % storage::ID_SHARDS)
        .collect();
    assert!(residues.len() > 1, "40 ids all from one shard");
    let mut convs = HashSet::new();
    for _ in 0..40 {
        let id = spread
            .create_group(first[0], "g", "", &[first[1]])
            .expect("group")
            .id;
        assert!(convs.insert(id), "conversation id {id} handed out twice");
    }
    drop(spread);

    // Back on one counter: it continues above every spread id.
    let single = ChatStore::open(
        Database::open_sqlite(&path).expect("open"),
        Limits::default(),
    )
    .expect("store")
    .with_password_cost(cost);
    let next = register(&single, "after");
    assert!(
        users.iter().all(|&id| next > id),
        "{next} not above {users:?}"
    );
}

fn event(sender: u64, id: &str, kind: storage::chat::MessageKind, body: &str) -> NewMessage {
    NewMessage {
        kind,
        ..NewMessage::text(sender, id, body)
    }
}

#[test]
fn edits_deletes_reactions_and_replies_are_events_in_the_sequence() {
    use storage::chat::MessageKind as K;
    let f = fixture();
    let (a, b, c) = (f.user("alice"), f.user("bob"), f.user("carol"));
    let g = f
        .store
        .create_group(a.id, "g", "", &[b.id, c.id])
        .expect("group")
        .id;
    let epoch = f.store.activate_conversation(g).expect("activate").epoch;
    f.send(g, epoch, 1, a.id, "m1");
    let reply = NewMessage {
        reply_to: Some(1),
        ..NewMessage::text(b.id, "r1", "agreed @Alice and @carol.")
    };
    let r = f.store.append(g, epoch, 2, &reply).expect("reply");
    let stored = r.message();
    assert_eq!(stored.reply_to, Some(1));
    assert_eq!(
        stored.reply.as_ref().map(|q| q.preview.as_str()),
        Some("body m1")
    );
    assert_eq!(stored.mentions, vec![a.id, c.id]);
    // What answers a resend of it (the conversation actor reads the
    // original back): the message with its quote.
    let original = f.store.message(b.id, g, 2).expect("original");
    assert_eq!(original.reply.as_ref().map(|q| q.seq), Some(1));

    // Bad input: each refused, nothing written.
    let edit = |who, id: &str, target, body: &str| event(who, id, K::Edit { target }, body);
    f.rejects(
        |s| s.append(g, epoch, 3, &edit(b.id, "e0", 1, "not yours")),
        |e| matches!(e, Error::Forbidden(_)),
    );
    f.rejects(
        |s| s.append(g, epoch, 3, &edit(a.id, "e0", 99, "nowhere")),
        |e| matches!(e, Error::NotFound { .. }),
    );
    f.rejects(
        |s| s.append(g, epoch, 3, &edit(a.id, "e0", 1, &"x".repeat(4097))),
        |e| matches!(e, Error::Invalid { field: "body", .. }),
    );
    f.rejects(
        |s| s.append(g, epoch, 3, &event(b.id, "d0", K::Delete { target: 1 }, "")),
        |e| matches!(e, Error::Forbidden(_)),
    );
    let react = |who, id: &str, emoji: &str, added| {
        event(
            who,
            id,
            K::Reaction {
                target: 1,
                emoji: emoji.into(),
                added,
            },
            "",
        )
    };
    f.rejects(
        |s| s.append(g, epoch, 3, &react(b.id, "x0", "abc", true)),
        |e| matches!(e, Error::Invalid { field: "emoji", .. }),
    );
    // Invisible and bidi-override characters, alone or around an emoji,
    // are refused as user names refuse them; a joiner alone too.
    for (i, bad) in [
        "\u{202E}👍",
        "👍\u{200B}",
        "\u{2066}😮\u{2069}",
        "\u{FEFF}",
        "\u{200D}",
        "\u{FE0F}",
        "👍\u{00AD}",
    ]
    .into_iter()
    .enumerate()
    {
        f.rejects(
            |s| s.append(g, epoch, 3, &react(b.id, &format!("bad{i}"), bad, true)),
            |e| matches!(e, Error::Invalid { field: "emoji", .. }),
        );
    }
    f.rejects(
        |s| {
            s.append(
                g,
                epoch,
                3,
                &NewMessage {
                    reply_to: Some(42),
                    ..NewMessage::text(b.id, "r2", "to nothing")
                },
            )
        },
        |e| {
            matches!(
                e,
                Error::Invalid {
                    field: "reply_to",
                    ..
                }
            )
        },
    );

    // Edit, twice: the history keeps every text.
    f.tick(10);
    f.store
        .append(g, epoch, 3, &edit(a.id, "e1", 1, "second"))
        .expect("edit");
    f.store
        .append(g, epoch, 4, &edit(a.id, "e2", 1, "third"))
        .expect("edit again");
    let history = f.store.edit_history(c.id, g, 1).expect("edits");
    let texts: Vec<(&str, Option<u64>)> = history
        .iter()
        .map(|r| (r.body.as_str(), r.edit_seq))
        .collect();
    assert_eq!(
        texts,
        [("body m1", None), ("second", Some(3)), ("third", Some(4))]
    );
    let page = f.store.history(c.id, g, None, 10).expect("history");
    let first = page.iter().find(|m| m.seq == 1).expect("seq 1");
    assert_eq!(first.body, "third");
    assert!(first.edited_at.is_some());
    let quoting = page.iter().find(|m| m.seq == 2).expect("seq 2");
    assert_eq!(
        quoting.reply.as_ref().map(|q| q.preview.as_str()),
        Some("third")
    );
    assert!(matches!(
        page.iter().find(|m| m.seq == 3).map(|m| &m.kind),
        Some(K::Edit { target: 1 })
    ));

    // Reactions: one of each emoji per member, counts and who.
    for (i, (who, emoji, added)) in [
        (b.id, "👍", true),
        (c.id, "👍", true),
        (b.id, "👍", true),
        (c.id, "🎉", true),
        (c.id, "🎉", false),
    ]
    .into_iter()
    .enumerate()
    {
        f.store
            .append(
                g,
                epoch,
                5 + i as u64,
                &react(who, &format!("x{i}"), emoji, added),
            )
            .expect("react");
    }
    let reactions = f.store.reactions(a.id, g, 1).expect("reactions");
    assert_eq!(reactions.len(), 1, "{reactions:?}");
    assert_eq!((reactions[0].emoji.as_str(), reactions[0].count), ("👍", 2));
    let mut who = vec![b.id, c.id];
    who.sort_unstable();
    assert_eq!(reactions[0].users, who, "in user id order");

    // Events are never unread.
    let row = |user| {
        f.store
            .chat_list(user)
            .expect("list")
            .into_iter()
            .find(|r| r.conv_id == g)
            .expect("row")
    };
    assert_eq!(row(c.id).unread, 2, "two text messages, eight events");
    assert_eq!(row(c.id).mentions, 1);
    assert_eq!(row(b.id).mentions, 0, "bob mentioned nobody... to himself");

    // A group admin may delete another's message; the quote follows.
    f.store
        .append(
            g,
            epoch,
            10,
            &event(a.id, "d1", K::Delete { target: 2 }, ""),
        )
        .expect("admin deletes");
    let page = f.store.history(a.id, g, None, 20).expect("history");
    let tomb = page.iter().find(|m| m.seq == 2).expect("tombstone");
    assert!(tomb.deleted_at.is_some());
    assert_eq!(tomb.body, "");
    assert!(tomb.mentions.is_empty());
    let react_to_2 = event(
        c.id,
        "x9",
        K::Reaction {
            target: 2,
            emoji: "👍".into(),
            added: true,
        },
        "",
    );
    f.rejects(
        |s| s.append(g, epoch, 11, &react_to_2),
        |e| matches!(e, Error::NotFound { .. }),
    );
    assert_eq!(row(c.id).mentions, 0, "the deleted message mentioned carol");
    assert_eq!(row(c.id).unread, 1);
}

#[test]
fn mentions_resolve_current_members_by_name() {
    let f = fixture();
    let (a, b, c) = (f.user("alice"), f.user("bob"), f.user("carol"));
    let dotted = f.user("d.o.t.");
    let g = f
        .store
        .create_group(a.id, "g", "", &[b.id, dotted.id])
        .expect("group")
        .id;
    let epoch = f.store.activate_conversation(g).expect("activate").epoch;
    // "@name." ends a sentence, but a name may itself end in a dot; carol
    // is no member, nobody is nobody, alice is the author.
    let body = "thanks @BOB. and @d.o.t. and @carol, @nobody, @alice, bob@x @bob";
    let r = f
        .store
        .append(g, epoch, 1, &msg(a.id, "n1", body))
        .expect("send");
    assert_eq!(r.message().mentions, vec![b.id, dotted.id]);
    let _ = c;
}

#[test]
fn a_deleted_message_leaves_no_text_in_the_store() {
    use storage::chat::MessageKind as K;
    let f = fixture();
    let (a, b) = (f.user("alice"), f.user("bob"));
    let conv = f.store.open_direct(a.id, b.id).expect("direct").id;
    let epoch = f.store.activate_conversation(conv).expect("activate").epoch;
    f.store
        .append(
            conv,
            epoch,
            1,
            &msg(a.id, "s1", "zanzibar password hunter2"),
        )
        .expect("send");
    f.store
        .append(
            conv,
            epoch,
            2,
            &event(a.id, "e1", K::Edit { target: 1 }, "quetzal hunter3 instead"),
        )
        .expect("edit");
    f.store
        .append(
            conv,
            epoch,
            3,
            &event(
                b.id,
                "x1",
                K::Reaction {
                    target: 1,
                    emoji: "😮".into(),
                    added: true,
                },
                "",
            ),
        )
        .expect("react");
    assert_eq!(
        f.store
            .search(b.id, "hunter3", None, 10)
            .expect("search")
            .hits
            .len(),
        1
    );
    let store_holds = |needle: &str| {
        f.dump().iter().any(|(k, v)| {
            k.windows(needle.len()).any(|w| w == needle.as_bytes())
                || v.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
    };
    assert!(store_holds("zanzibar") && store_holds("quetzal"));
    f.store
        .append(
            conv,
            epoch,
            4,
            &event(a.id, "d1", K::Delete { target: 1 }, ""),
        )
        .expect("delete");
    for word in ["zanzibar", "hunter2", "quetzal", "hunter3"] {
        assert!(!store_holds(word), "{word} is still in the store");
    }
    assert!(f
        .store
        .search(b.id, "hunter3", None, 10)
        .expect("search")
        .hits
        .is_empty());
    assert!(f
        .store
        .edit_history(b.id, conv, 1)
        .expect("edits")
        .is_empty());
    assert!(f
        .store
        .reactions(b.id, conv, 1)
        .expect("reactions")
        .is_empty());
    let list = f.store.chat_list(b.id).expect("list");
    assert_eq!(
        list[0].last_message.as_ref().map(|m| m.preview.as_str()),
        Some("")
    );
    // Deleting again, editing or reacting to a tombstone: not found.
    f.rejects(
        |s| {
            s.append(
                conv,
                epoch,
                5,
                &event(a.id, "d2", K::Delete { target: 1 }, ""),
            )
        },
        |e| matches!(e, Error::NotFound { .. }),
    );
    f.rejects(
        |s| {
            s.append(
                conv,
                epoch,
                5,
                &event(a.id, "e2", K::Edit { target: 1 }, "back"),
            )
        },
        |e| matches!(e, Error::NotFound { .. }),
    );
    // A resend of the delete is answered by its actor from the recent ids
    // (the deletion is seq 4), never applied twice.
    let ids = f.store.recent_ids(conv, 1).expect("recent ids");
    assert_eq!(ids, [(a.id, "d1".to_owned(), 4)]);
}

#[test]
fn search_finds_words_only_where_and_when_the_user_belonged() {
    let f = fixture();
    let (a, b, c) = (f.user("alice"), f.user("bob"), f.user("carol"));
    let g = f
        .store
        .create_group(a.id, "g", "", &[b.id])
        .expect("group")
        .id;
    let dm = f.store.open_direct(a.id, c.id).expect("direct").id;
    let ge = f.store.activate_conversation(g).expect("activate").epoch;
    let de = f.store.activate_conversation(dm).expect("activate").epoch;
    f.store
        .append(g, ge, 1, &msg(a.id, "g1", "Launch plan is ready"))
        .expect("send");
    f.tick(5);
    f.store.add_member(a.id, g, c.id).expect("carol joins");
    f.tick(5);
    f.store
        .append(g, ge, 2, &msg(b.id, "g2", "the LAUNCH moved to friday"))
        .expect("send");
    f.tick(5);
    f.store
        .append(dm, de, 1, &msg(a.id, "d1", "secret launch party"))
        .expect("send");
    f.tick(5);

    // Alice: all three, newest first, the word marked.
    let page = f.store.search(a.id, "launch", None, 10).expect("search");
    let found: Vec<(u64, u64)> = page
        .hits
        .iter()
        .map(|h| (h.message.conv_id, h.message.seq))
        .collect();
    assert_eq!(found, [(dm, 1), (g, 2), (g, 1)]);
    assert!(page.next_cursor.is_none());
    let marked: Vec<&str> = page.hits[1]
        .fragments
        .iter()
        .filter(|f| f.matched)
        .map(|f| f.text.as_str())
        .collect();
    assert_eq!(marked, ["LAUNCH"]);
    // Every word must be there.
    let both = f
        .store
        .search(a.id, "launch friday", None, 10)
        .expect("search");
    assert_eq!(both.hits.len(), 1);
    // Pages of one, joined by the cursor, give the same order.
    let mut cursor = None;
    let mut paged = Vec::new();
    loop {
        let page = f
            .store
            .search(a.id, "launch", cursor.as_deref(), 1)
            .expect("page");
        paged.extend(page.hits.iter().map(|h| (h.message.conv_id, h.message.seq)));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(paged, found);
    // Bob: only the group. Carol: the DM, and in the group only since she
    // joined.
    let of = |user| {
        f.store
            .search(user, "launch", None, 10)
            .expect("search")
            .hits
            .iter()
            .map(|h| (h.message.conv_id, h.message.seq))
            .collect::<Vec<_>>()
    };
    assert_eq!(of(b.id), [(g, 2), (g, 1)]);
    assert_eq!(of(c.id), [(dm, 1), (g, 2)]);
    // After leaving, nothing of the group.
    f.store.leave(b.id, g).expect("leave");
    assert!(of(b.id).is_empty());
    // Bad queries.
    for bad in ["", "  ,, ", "a b c d e f g h i", &"x".repeat(300)] {
        assert!(
            matches!(
                f.store.search(a.id, bad, None, 10),
                Err(Error::Invalid { field: "q", .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        f.store.search(a.id, "launch", Some("nope"), 10),
        Err(Error::Invalid {
            field: "cursor",
            ..
        })
    ));
}

#[test]
fn search_pages_are_full_when_one_conversation_has_many_matches() {
    let f = fixture();
    let (a, b) = (f.user("alice"), f.user("bob"));
    let dm = f.store.open_direct(a.id, b.id).expect("direct").id;
    let g = f
        .store
        .create_group(a.id, "g", "", &[b.id])
        .expect("group")
        .id;
    let de = f.store.activate_conversation(dm).expect("activate").epoch;
    let ge = f.store.activate_conversation(g).expect("activate").epoch;
    for i in 1..=30u64 {
        f.tick(1);
        f.store
            .append(
                dm,
                de,
                i,
                &msg(a.id, &format!("d{i}"), &format!("kiwi {i}")),
            )
            .expect("send");
        if i % 10 == 0 {
            f.store
                .append(
                    g,
                    ge,
                    i / 10,
                    &msg(b.id, &format!("g{i}"), "kiwi in the group"),
                )
                .expect("send");
        }
    }
    let mut cursor: Option<String> = None;
    let mut pages = Vec::new();
    let mut all = Vec::new();
    loop {
        let page = f
            .store
            .search(b.id, "kiwi", cursor.as_deref(), 10)
            .expect("page");
        pages.push(page.hits.len());
        all.extend(
            page.hits
                .iter()
                .map(|h| (h.message.sent_at, h.message.conv_id, h.message.seq)),
        );
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(pages.len() < 10, "paging does not end: {pages:?}");
    }
    assert_eq!(all.len(), 33, "every match once");
    let mut sorted = all.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    sorted.dedup();
    assert_eq!(all, sorted, "newest first, no repeats");
    assert!(pages[0] == 10 && pages[1] == 10, "full pages: {pages:?}");
}

#[test]
fn muted_members_are_pushed_only_when_mentioned() {
    let f = fixture();
    let (a, b, c) = (f.user("alice"), f.user("bob"), f.user("carol"));
    let g = f
        .store
        .create_group(a.id, "g", "", &[b.id, c.id])
        .expect("group")
        .id;
    let epoch = f.store.activate_conversation(g).expect("activate").epoch;
    f.rejects(
        |s| s.mute(b.id, g, Some(500)),
        |e| matches!(e, Error::Invalid { field: "until", .. }),
    );
    let outsider = f.user("mallory");
    f.rejects(
        |s| s.mute(outsider.id, g, None),
        |e| matches!(e, Error::NotMember { .. }),
    );
    f.store.mute(b.id, g, None).expect("mute for ever");
    f.store
        .mute(c.id, g, Some(1_000_000 + 60_000))
        .expect("mute a minute");
    let row = |user| {
        f.store
            .chat_list(user)
            .expect("list")
            .into_iter()
            .find(|r| r.conv_id == g)
            .expect("row")
    };
    assert!(row(b.id).muted && row(b.id).muted_until.is_none());
    assert_eq!(row(c.id).muted_until, Some(1_060_000));
    let send = |seq, id: &str, body: &str| {
        f.store
            .append_many(&[AppendRequest {
                conv_id: g,
                epoch,
                next_seq: seq,
                messages: vec![msg(a.id, id, body)],
                push_to: vec![b.id, c.id],
                pair: None,
            }])
            .expect("append")
    };
    let owed_to = |seq| {
        f.store
            .claim_pushes(&[(g, seq)])
            .expect("claim")
            .pop()
            .map(|(_, owed)| owed.recipients)
            .unwrap_or_default()
    };
    send(1, "m1", "plain news");
    assert!(owed_to(1).is_empty(), "both muted: nobody is pushed");
    send(2, "m2", "@bob look");
    assert_eq!(owed_to(2), vec![b.id], "a mention pushes through the mute");
    f.tick(60_001);
    assert!(!row(c.id).muted, "carol's mute ran out");
    send(3, "m3", "more news");
    assert_eq!(owed_to(3), vec![c.id]);
    f.store.unmute(b.id, g).expect("unmute");
    send(4, "m4", "even more");
    assert_eq!(owed_to(4), vec![b.id, c.id]);
}

#[test]
fn a_schema_2_store_is_migrated_at_open() {
    #[derive(serde::Serialize)]
    struct MessageV2 {
        conv_id: u64,
        seq: u64,
        sender: u64,
        client_msg_id: String,
        body: String,
        sent_at: u64,
    }
    let (db, _guard) = open_store();
    let store = ChatStore::open(db.clone(), Limits::default()).expect("open");
    let a = store
        .register(&NewUser {
            name: "alice".into(),
            phone: None,
            password: "correct horse".into(),
        })
        .expect("register");
    let b = store
        .register(&NewUser {
            name: "bob".into(),
            phone: None,
            password: "correct horse".into(),
        })
        .expect("register");
    let conv = store.open_direct(a.id, b.id).expect("direct").id;
    let old = MessageV2 {
        conv_id: conv,
        seq: 1,
        sender: a.id,
        client_msg_id: "c1".into(),
        body: "written by version two".into(),
        sent_at: 5,
    };
    let bytes = bincode::serde::encode_to_vec(&old, bincode::config::standard()).expect("encode");
    let version = storage::keys::META.key(&(storage::keys::meta::SCHEMA_VERSION,));
    let two = bincode::serde::encode_to_vec(2u32, bincode::config::standard()).expect("encode");
    db.run(|tx| {
        tx.set(&storage::keys::MSG.key(&(conv, 1u64)), &bytes)?;
        tx.set(&version, &two)
    })
    .expect("write a schema-2 row");
    let store = ChatStore::open(db.clone(), Limits::default()).expect("migrating open");
    let page = store.history(b.id, conv, None, 10).expect("history");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].body, "written by version two");
    assert_eq!(page[0].kind, storage::chat::MessageKind::Text);
    assert_eq!(
        store
            .search(b.id, "version", None, 10)
            .expect("search")
            .hits
            .len(),
        1
    );
    ChatStore::open(db, Limits::default()).expect("reopens at the new version");
}

#[test]
fn edits_reactions_and_mentions_stop_at_their_limits() {
    use storage::chat::MessageKind as K;
    let f = fixture();
    let (a, b) = (f.user("alice"), f.user("bob"));
    let mut names = Vec::new();
    let mut others = Vec::new();
    for i in 0..25 {
        let u = f.user(&format!("user{i:02}"));
        names.push(format!("@{}", u.name));
        others.push(u.id);
    }
    others.push(b.id);
    let g = f
        .store
        .create_group(a.id, "g", "", &others)
        .expect("group")
        .id;
    let epoch = f.store.activate_conversation(g).expect("activate").epoch;
    // 25 members named: the first 20 are resolved.
    let r = f
        .store
        .append(g, epoch, 1, &msg(a.id, "m1", &names.join(" ")))
        .expect("send");
    assert_eq!(r.message().mentions, others[..20].to_vec());
    let mut seq = 2;
    // 50 edits, then the 51st is refused and changes nothing.
    for i in 0..50 {
        f.store
            .append(
                g,
                epoch,
                seq,
                &event(
                    a.id,
                    &format!("e{i}"),
                    K::Edit { target: 1 },
                    &format!("v{i}"),
                ),
            )
            .expect("edit");
        seq += 1;
    }
    f.rejects(
        |s| {
            s.append(
                g,
                epoch,
                seq,
                &event(a.id, "e50", K::Edit { target: 1 }, "one more"),
            )
        },
        |e| matches!(e, Error::Invalid { field: "seq", .. }),
    );
    assert_eq!(f.store.edit_history(b.id, g, 1).expect("edits").len(), 51);
    // 20 different emoji per member and message, then refused.
    let emoji = [
        "😀", "😁", "😂", "🤣", "😃", "😄", "😅", "😆", "😉", "😊", "😋", "😎", "😍", "😘", "🥰",
        "😗", "😙", "😚", "🙂", "🤗", "🤩",
    ];
    for (i, e) in emoji[..20].iter().enumerate() {
        let kind = K::Reaction {
            target: 1,
            emoji: (*e).into(),
            added: true,
        };
        f.store
            .append(g, epoch, seq, &event(b.id, &format!("r{i}"), kind, ""))
            .expect("react");
        seq += 1;
    }
    let kind = K::Reaction {
        target: 1,
        emoji: emoji[20].into(),
        added: true,
    };
    f.rejects(
        |s| s.append(g, epoch, seq, &event(b.id, "r20", kind.clone(), "")),
        |e| matches!(e, Error::Invalid { field: "emoji", .. }),
    );
    // Another member still may.
    f.store
        .append(g, epoch, seq, &event(a.id, "ra", kind, ""))
        .expect("another member's reaction");
}

/// The search index rows of message `seq` of `conv` (their words).
fn index_rows(f: &Fixture, conv: u64, seq: u64) -> Vec<String> {
    let (begin, end) = storage::keys::SEARCH.range(&(conv,));
    f.store
        .db()
        .read(|tx| tx.get_range(&begin, &end, RangeOptions::default()))
        .expect("index rows")
        .into_iter()
        .filter_map(|(k, _)| {
            let (_, word, _, s): (u64, String, u64, u64) =
                storage::keys::SEARCH.unpack(&k).expect("index key");
            (s == seq).then_some(word)
        })
        .collect()
}

/// The seqs a search by `user` finds, newest first.
fn search_seqs(f: &Fixture, user: u64, q: &str) -> Vec<u64> {
    f.store
        .search(user, q, None, 10)
        .expect("search")
        .hits
        .iter()
        .map(|h| h.message.seq)
        .collect()
}

/// Runs the index follower over `convs` (everything committed) until it
/// has nothing left.
fn index_all(f: &Fixture, convs: &[u64]) -> usize {
    let convs: Vec<(u64, u64)> = convs.iter().map(|&c| (c, u64::MAX)).collect();
    let mut rows = 0;
    loop {
        let steps = f.store.index_pending(&convs, 2).expect("index step");
        rows += steps.iter().map(|s| s.messages).sum::<usize>();
        if steps.iter().all(|s| !s.more) {
            return rows;
        }
    }
}

#[test]
fn a_message_is_found_the_moment_it_is_committed_and_after_the_follower_indexes_it() {
    let f = fixture();
    let (a, b) = (f.user("alice"), f.user("bob"));
    let conv = f.store.open_direct(a.id, b.id).expect("direct").id;
    let epoch = f.store.activate_conversation(conv).expect("activate").epoch;
    for (seq, body) in [
        (1, "meet at the quarry"),
        (2, "bring rope"),
        (3, "quarry gate code"),
    ] {
        f.tick(1);
        f.store
            .append(conv, epoch, seq, &msg(a.id, &format!("c{seq}"), body))
            .expect("send");
    }
    let found = |q: &str| search_seqs(&f, b.id, q);
    // Nothing indexed yet: the commit wrote no index row, and the search
    // finds the messages in the log above the cursor.
    assert!(
        index_rows(&f, conv, 1).is_empty(),
        "indexed in the message's transaction"
    );
    assert_eq!(found("quarry"), [3, 1]);
    // The follower, in steps of two rows: three rows, then nothing more.
    assert_eq!(index_all(&f, &[conv]), 3);
    assert_eq!(index_rows(&f, conv, 3).len(), 3);
    assert_eq!(found("quarry"), [3, 1]);
    assert_eq!(found("quarry gate"), [3]);
    // Run again (a restart after a crash): nothing new, the same rows.
    let again = f.store.index_pending(&[(conv, 3)], 10).expect("again");
    assert_eq!(
        (again[0].messages, again[0].cursor, again[0].more),
        (0, 3, false)
    );
    // A later message is found before the follower reaches it, next to
    // indexed ones, and pages through both.
    f.tick(1);
    f.store
        .append(conv, epoch, 4, &msg(b.id, "c4", "quarry is closed"))
        .expect("send");
    assert_eq!(found("quarry"), [4, 3, 1]);
    // A step reads only up to the seq it is told was committed.
    let step = f.store.index_pending(&[(conv, 3)], 10).expect("bounded");
    assert_eq!(
        (step[0].messages, step[0].cursor, step[0].more),
        (0, 3, false)
    );
    assert!(index_rows(&f, conv, 4).is_empty());
    assert_eq!(index_all(&f, &[conv]), 1);
    assert_eq!(index_rows(&f, conv, 4).len(), 3);
    let mut cursor = None;
    let mut paged = Vec::new();
    loop {
        let page = f
            .store
            .search(a.id, "quarry", cursor.as_deref(), 1)
            .expect("page");
        paged.extend(page.hits.iter().map(|h| h.message.seq));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(paged, [4, 3, 1]);
}

#[test]
fn edits_and_deletions_never_show_old_text_before_or_after_the_follower() {
    use storage::chat::MessageKind as K;
    for index_first in [false, true] {
        let f = fixture();
        let (a, b) = (f.user("alice"), f.user("bob"));
        let conv = f.store.open_direct(a.id, b.id).expect("direct").id;
        let epoch = f.store.activate_conversation(conv).expect("activate").epoch;
        f.store
            .append(conv, epoch, 1, &msg(a.id, "s1", "walrus ledger"))
            .expect("send");
        f.store
            .append(conv, epoch, 2, &msg(a.id, "s2", "walrus accounts"))
            .expect("send");
        if index_first {
            index_all(&f, &[conv]);
        }
        f.store
            .append(
                conv,
                epoch,
                3,
                &event(a.id, "e1", K::Edit { target: 1 }, "narwhal ledger"),
            )
            .expect("edit");
        f.store
            .append(
                conv,
                epoch,
                4,
                &event(a.id, "d1", K::Delete { target: 2 }, ""),
            )
            .expect("delete");
        let found = |q: &str| search_seqs(&f, b.id, q);
        for indexed in [index_first, true] {
            let when = if indexed {
                "indexed"
            } else {
                "not yet indexed"
            };
            assert!(
                found("walrus").is_empty(),
                "{when}: old or deleted text found"
            );
            assert!(found("accounts").is_empty(), "{when}: deleted text found");
            assert_eq!(found("narwhal"), [1], "{when}: edited text not found");
            // The deleted message left no word in the index; the edited
            // one holds its current words only.
            assert!(index_rows(&f, conv, 2).is_empty(), "{when}");
            let mut words = index_rows(&f, conv, 1);
            words.sort();
            assert!(
                words.is_empty() || words == ["ledger", "narwhal"],
                "{when}: {words:?}"
            );
            index_all(&f, &[conv]);
        }
    }
}

#[test]
fn a_schema_3_store_is_migrated_with_its_index_complete() {
    let (db, _guard) = open_store();
    let store = ChatStore::open(db.clone(), Limits::default()).expect("open");
    let register = |name: &str| {
        store
            .register(&NewUser {
                name: name.into(),
                phone: None,
                password: "correct horse".into(),
            })
            .expect("register")
    };
    let (a, b) = (register("alice"), register("bob"));
    let conv = store.open_direct(a.id, b.id).expect("direct").id;
    let epoch = store.activate_conversation(conv).expect("activate").epoch;
    for seq in 1..=3u64 {
        store
            .append(
                conv,
                epoch,
                seq,
                &msg(a.id, &format!("m{seq}"), "gazebo plans"),
            )
            .expect("send");
    }
    // As schema 3 left it: every message indexed in its transaction, no
    // cursor rows.
    store.index_pending(&[(conv, 3)], 10).expect("index");
    let version = storage::keys::META.key(&(storage::keys::meta::SCHEMA_VERSION,));
    let three = bincode::serde::encode_to_vec(3u32, bincode::config::standard()).expect("encode");
    let (cb, ce) = storage::keys::SEARCH_CURSOR.all();
    let dedup = storage::keys::MSG_DEDUP.key(&(conv, a.id, "m1"));
    db.run(|tx| {
        tx.clear_range(&cb, &ce)?;
        tx.set(&dedup, &[1])?;
        tx.set(&version, &three)
    })
    .expect("write a schema-3 store");
    let store = ChatStore::open(db.clone(), Limits::default()).expect("migrating open");
    // The cursor starts at the last seq: nothing is indexed twice.
    let step = store.index_pending(&[(conv, 3)], 10).expect("index");
    assert_eq!((step[0].messages, step[0].cursor), (0, 3));
    let hits = store.search(b.id, "gazebo", None, 10).expect("search").hits;
    assert_eq!(hits.len(), 3);
    // Schema 3's dedup rows are gone.
    let (db_, de) = storage::keys::MSG_DEDUP.all();
    let left = db
        .read(|tx| tx.get_range(&db_, &de, RangeOptions::default()))
        .expect("dedup rows");
    assert!(left.is_empty(), "{left:?}");
    ChatStore::open(db, Limits::default()).expect("reopens at the new version");
}

#[test]
fn a_direct_chat_between_users_who_blocked_each_other_carries_nothing_whatever_the_pair_hint() {
    let f = fixture();
    let (a, b, c) = (f.user("alice"), f.user("bob"), f.user("carol"));
    let dm = f.store.open_direct(a.id, b.id).expect("direct").id;
    let g = f
        .store
        .create_group(a.id, "two of us", "", &[b.id])
        .expect("group")
        .id;
    let de = f.store.activate_conversation(dm).expect("activate").epoch;
    let ge = f.store.activate_conversation(g).expect("activate").epoch;
    f.store.block(b.id, a.id).expect("block");
    let outcome = |conv, epoch, next_seq, id: &str, pair| {
        let mut results = f
            .store
            .append_many(&[AppendRequest {
                conv_id: conv,
                epoch,
                next_seq,
                messages: vec![msg(a.id, id, "hello")],
                push_to: Vec::new(),
                pair,
            }])
            .expect("append_many");
        let mut batch = results.pop().expect("one batch").expect("not fenced");
        batch.pop().expect("one outcome")
    };
    // The right pair (in either order), a wrong one, none: refused alike.
    for (i, pair) in [
        Some((a.id, b.id)),
        Some((b.id, a.id)),
        Some((a.id, c.id)),
        Some((a.id, a.id)),
        None,
    ]
    .into_iter()
    .enumerate()
    {
        let got = outcome(dm, de, 1, &format!("d{i}"), pair);
        assert!(matches!(got, Err(Error::Forbidden(_))), "{pair:?}: {got:?}");
    }
    // Blocks are about direct chats: a group of the same two carries on.
    let got = outcome(g, ge, 1, "g1", Some((a.id, b.id)));
    assert!(matches!(got, Ok(AppendOutcome::Appended(_))), "{got:?}");
    // Unblocked, the direct chat carries messages again.
    f.store.unblock(b.id, a.id).expect("unblock");
    let got = outcome(dm, de, 1, "d9", Some((a.id, b.id)));
    assert!(matches!(got, Ok(AppendOutcome::Appended(_))), "{got:?}");
}

/// A block stops new words in a direct chat, not the erasure of old ones:
/// the one who blocked can still delete their own messages (and so can
/// the blocked one); edits and reactions stay refused.
#[test]
fn a_block_does_not_stop_deleting_ones_own_messages() {
    use storage::chat::MessageKind as K;
    let f = fixture();
    let (a, b) = (f.user("alice"), f.user("bob"));
    let dm = f.store.open_direct(a.id, b.id).expect("direct").id;
    let epoch = f.store.activate_conversation(dm).expect("activate").epoch;
    f.store
        .append(dm, epoch, 1, &msg(b.id, "b1", "something I regret"))
        .expect("send");
    f.store
        .append(dm, epoch, 2, &msg(a.id, "a1", "hello"))
        .expect("send");
    f.store.block(b.id, a.id).expect("block");
    f.rejects(
        |s| {
            s.append(
                dm,
                epoch,
                3,
                &event(b.id, "e1", K::Edit { target: 1 }, "other words"),
            )
        },
        |e| matches!(e, Error::Forbidden(_)),
    );
    let deleted = f
        .store
        .append(
            dm,
            epoch,
            3,
            &event(b.id, "d1", K::Delete { target: 1 }, ""),
        )
        .expect("the one who blocked deletes their message");
    assert!(matches!(deleted, AppendOutcome::Appended(ref m) if m.seq == 3));
    f.store
        .append(
            dm,
            epoch,
            4,
            &event(a.id, "d2", K::Delete { target: 2 }, ""),
        )
        .expect("the blocked one deletes theirs");
    // New words stay refused.
    f.store
        .append(dm, epoch, 5, &msg(a.id, "a2", "x"))
        .expect_err("no new message while blocked");
    let page = f.store.history(a.id, dm, None, 10).expect("history");
    let first = page.iter().find(|m| m.seq == 1).expect("seq 1");
    assert!(first.deleted_at.is_some() && first.body.is_empty());
}

/// A member removed and added back catches up from where their device
/// was: the messages of while they were away are delivered (a deletion of
/// a message they had among them, so their device stops showing its
/// text), count as unread (they can all be sent), and search finds them
/// as the history shows them.
#[test]
fn a_member_added_back_catches_up_on_what_was_said_while_away() {
    use storage::chat::{AckKind, DeviceKey, MessageKind as K};
    let f = fixture();
    let (a, c) = (f.user("alice"), f.user("carol"));
    let g = f
        .store
        .create_group(a.id, "team", "", &[c.id])
        .expect("group")
        .id;
    let epoch = f.store.activate_conversation(g).expect("activate").epoch;
    let phone = DeviceKey::named("carols-phone").expect("device");
    f.store.open_device(c.id, &phone).expect("device");
    f.store
        .append(g, epoch, 1, &msg(a.id, "m1", "the old plan"))
        .expect("send");
    f.store
        .ack(c.id, Some(&phone), g, AckKind::Seen, 1)
        .expect("carol has it");
    f.store.remove_member(a.id, g, c.id).expect("remove");
    f.store
        .append(g, epoch, 2, &msg(a.id, "m2", "while carol was away"))
        .expect("send");
    f.store
        .append(g, epoch, 3, &event(a.id, "d1", K::Delete { target: 1 }, ""))
        .expect("delete what carol had");
    f.store.add_member(a.id, g, c.id).expect("added back");
    // Her phone's sync starts after what it had, not at the re-join.
    let start = f.store.device_start(c.id, &phone, g).expect("start");
    assert_eq!(start, 1, "catches up from where the device was");
    // Unread: the message of while she was away (the deletion is an event).
    let list = f.store.chat_list(c.id).expect("chat list");
    let row = list.iter().find(|r| r.conv_id == g).expect("the group");
    assert_eq!(row.unread, 1, "{row:?}");
    // Search finds it, as history shows it.
    let hits = f.store.search(c.id, "away", None, 10).expect("search").hits;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].message.seq, 2);
    let history = f.store.history(c.id, g, None, 10).expect("history");
    assert!(history.iter().any(|m| m.seq == 2));
    // A newcomer still starts at the point of joining.
    let d = f.user("dave");
    f.store.add_member(a.id, g, d.id).expect("newcomer");
    let list = f.store.chat_list(d.id).expect("chat list");
    let row = list.iter().find(|r| r.conv_id == g).expect("the group");
    assert_eq!(row.unread, 0, "{row:?}");
}

/// Deleting an edited message takes the edits' mentions with their text:
/// no member still sees whom it had mentioned.
#[test]
fn deleting_an_edited_message_clears_its_edits_mentions() {
    use storage::chat::MessageKind as K;
    let f = fixture();
    let (a, b, c) = (f.user("alice"), f.user("bob"), f.user("carol"));
    let g = f
        .store
        .create_group(a.id, "team", "", &[b.id, c.id])
        .expect("group")
        .id;
    let epoch = f.store.activate_conversation(g).expect("activate").epoch;
    f.store
        .append(g, epoch, 1, &msg(a.id, "m1", "see you"))
        .expect("send");
    f.store
        .append(
            g,
            epoch,
            2,
            &event(a.id, "e1", K::Edit { target: 1 }, "see you @carol"),
        )
        .expect("edit");
    let before = f.store.history(b.id, g, None, 10).expect("history");
    let edit = before.iter().find(|m| m.seq == 2).expect("the edit");
    assert_eq!(edit.mentions, vec![c.id], "the edit mentions carol");
    f.store
        .append(g, epoch, 3, &event(a.id, "d1", K::Delete { target: 1 }, ""))
        .expect("delete");
    for m in f.store.history(b.id, g, None, 10).expect("history") {
        assert!(
            m.mentions.is_empty(),
            "seq {} still mentions {:?}",
            m.seq,
            m.mentions
        );
    }
}

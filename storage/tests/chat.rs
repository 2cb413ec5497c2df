//! The chat schema layer through its public API, on the embedded backend:
//! every operation's success path, and for bad input the typed error plus
//! proof that the store did not change.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use storage::chat::{
    AckKind, AppendOutcome, ChatStore, ConvKind, Limits, MemberAction, MessageStatus, NewMessage,
    NewUser, PasswordCost, Role, User,
};
use storage::{Database, Error, KeyValue, RangeOptions};

struct Fixture {
    store: ChatStore,
    clock: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::open_sqlite(dir.path().join("chat.sqlite")).expect("open");
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
        _dir: dir,
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
    NewMessage {
        sender,
        client_msg_id: id.into(),
        body: body.into(),
    }
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
    let roles: Vec<_> = members.iter().map(|m| (m.user_id, m.role)).collect();
    assert_eq!(roles, [(b.id, Role::Admin), (d.id, Role::Member)]);

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
                                    // A resend after a lost acknowledgement gets the original seq.
    let again = f.send(conv, 1, 3, a.id, "m1");
    assert!(matches!(&again, AppendOutcome::Duplicate(m) if m.seq == 1));

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

    // A batch: good, duplicate, bad, good; seqs stay gapless.
    let outcomes = f
        .store
        .append_batch(
            conv,
            2,
            3,
            &[
                msg(a.id, "b1", "one"),
                msg(a.id, "m1", "dup"),
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
    assert_eq!(seqs, ["new 3", "dup 1", "not member", "new 4", "dup 4"]);

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
    assert_eq!(
        status(2),
        [(b.id, MessageStatus::Sent), (c.id, MessageStatus::Sent)]
    );

    let (r, moved) = f.store.ack(b.id, g, AckKind::Delivered, 3).expect("ack");
    assert!(moved && r.delivered_seq == 3 && r.seen_seq == 0);
    let (r, moved) = f.store.ack(b.id, g, AckKind::Seen, 2).expect("ack");
    assert!(moved && r.seen_seq == 2 && r.delivered_seq == 3);
    // Going back changes nothing.
    let (r, moved) = f.store.ack(b.id, g, AckKind::Delivered, 1).expect("ack");
    assert!(!moved && r.delivered_seq == 3);
    // Seen implies delivered.
    f.store.ack(c.id, g, AckKind::Seen, 1).expect("ack");
    assert_eq!(
        status(2),
        [(b.id, MessageStatus::Seen), (c.id, MessageStatus::Sent)]
    );
    assert_eq!(
        status(1),
        [(b.id, MessageStatus::Seen), (c.id, MessageStatus::Seen)]
    );

    f.rejects(
        |s| s.ack(b.id, g, AckKind::Seen, 4),
        |e| matches!(e, Error::Invalid { field: "seq", .. }),
    );
    let outsider = f.user("dave");
    f.rejects(
        |s| s.ack(outsider.id, g, AckKind::Seen, 1),
        |e| matches!(e, Error::NotMember { .. }),
    );
    let receipts = f.store.receipts(c.id, g).expect("receipts");
    assert_eq!(receipts.len(), 3);
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
    assert_eq!(list[0].unread, 1); // d3: alice's own d2 marked d1 read
    assert_eq!(list[0].last_message.as_ref().map(|m| m.seq), Some(3));
    assert_eq!(list[0].last_message_status, None); // not alice's message
    assert_eq!(list[1].conv_id, g);
    assert_eq!(list[1].name, "Group");
    assert_eq!(list[1].unread, 1);

    let bobs = f.store.chat_list(b.id).expect("list");
    assert_eq!(bobs[0].last_message_status, Some(MessageStatus::Sent));
    f.store.ack(a.id, dm, AckKind::Seen, 3).expect("ack");
    let bobs = f.store.chat_list(b.id).expect("list");
    assert_eq!(bobs[0].last_message_status, Some(MessageStatus::Seen));
    assert_eq!(f.store.chat_list(a.id).expect("list")[0].unread, 0);

    // A member who joins later starts with nothing unread.
    let d = f.user("dave");
    f.store.add_member(c.id, g, d.id).expect("add");
    assert_eq!(f.store.chat_list(d.id).expect("list")[0].unread, 0);
}

#[test]
fn push_subscriptions_and_last_seen() {
    let f = fixture();
    let a = f.user("alice");
    let sub = f
        .store
        .add_push_subscription(a.id, "https://push.example/abc", "key", "auth")
        .expect("subscribe");
    let again = f
        .store
        .add_push_subscription(a.id, "https://push.example/abc", "key2", "auth")
        .expect("resubscribe");
    assert_eq!(sub.id, again.id);
    assert_eq!(f.store.push_subscriptions(a.id).expect("list").len(), 1);
    f.rejects(
        |s| s.add_push_subscription(a.id, "ftp://x", "k", "a"),
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
        |s| s.add_push_subscription(77, "https://x", "k", "a"),
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
fn reopening_with_another_schema_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v.sqlite");
    let db = Database::open_sqlite(&path).expect("open");
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
    use storage::chat::AppendRequest;

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

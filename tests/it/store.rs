//! The store's behaviour, one suite run against both backends: sled in a temp dir, and
//! PostgreSQL in a throwaway cluster.

use crate::postgres::PgCluster;
use authgate::store::*;
use std::time::Duration;
use time::OffsetDateTime;

fn user(email: &str, username: Option<&str>, phone: Option<&str>) -> User {
    User {
        username: username.map(Into::into),
        phone: phone.map(Into::into),
        ..User::new(
            email.into(),
            false,
            vec!["customer".into()],
            OffsetDateTime::UNIX_EPOCH,
        )
    }
}

async fn unique_fields_are_enforced_on_insert_and_update(s: &Store) {
    let a = user("a@x.test", Some("alice"), Some("+15550001"));
    s.insert_user(&a).await.unwrap();
    for (dup, field) in [
        (user("a@x.test", None, None), UniqueField::Email),
        (user("b@x.test", Some("alice"), None), UniqueField::Username),
        (
            user("c@x.test", None, Some("+15550001")),
            UniqueField::Phone,
        ),
    ] {
        match s.insert_user(&dup).await {
            Err(StoreError::Conflict(f)) => assert_eq!(f, field),
            other => panic!("expected conflict on {field:?}, got {other:?}"),
        }
    }
    let b = user("b@x.test", Some("bob"), None);
    s.insert_user(&b).await.unwrap();
    let r = s
        .update_user(&b.id, |u| {
            u.username = Some("alice".into());
            Ok::<(), ()>(())
        })
        .await;
    assert!(matches!(
        r,
        Err(UpdateError::Store(StoreError::Conflict(
            UniqueField::Username
        )))
    ));
    // A refused update changes nothing.
    assert_eq!(
        s.user(&b.id).await.unwrap().unwrap().username.as_deref(),
        Some("bob")
    );
    let r = s.update_user(&b.id, |_| Err::<(), &str>("no")).await;
    assert!(matches!(r, Err(UpdateError::Rejected("no"))));
    // A rename frees the old name.
    s.update_user(&a.id, |u| {
        u.username = Some("alicia".into());
        Ok::<(), ()>(())
    })
    .await
    .unwrap();
    assert!(s.user_by_username("alice").await.unwrap().is_none());
    assert_eq!(
        s.user_by_username("alicia").await.unwrap().unwrap().id,
        a.id
    );
    assert_eq!(s.user_by_email("a@x.test").await.unwrap().unwrap().id, a.id);
    assert_eq!(
        s.user_by_phone("+15550001").await.unwrap().unwrap().id,
        a.id
    );
    s.update_user(&b.id, |u| {
        u.username = Some("alice".into());
        Ok::<(), ()>(())
    })
    .await
    .unwrap();
    // Search and paging.
    let found = s.list_users(Some("ALI"), 0, 10).await.unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(s.list_users(None, 1, 10).await.unwrap().len(), 1);
    assert_eq!(
        s.list_users(Some("%"), 0, 10).await.unwrap().len(),
        0,
        "text, not a pattern"
    );
    assert_eq!(s.user_count().await.unwrap(), 2);
    assert!(matches!(
        s.update_user(&uuid::Uuid::new_v4(), |_| Ok::<(), ()>(()))
            .await,
        Err(UpdateError::Store(StoreError::NotFound))
    ));
}

async fn concurrent_inserts_of_one_email_admit_exactly_one(s: &Store) {
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.insert_user(&user("same@x.test", None, None))
                .await
                .is_ok()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap());
    }
    assert_eq!(ok, 1);
    assert!(s.user_by_email("same@x.test").await.unwrap().is_some());
}

async fn concurrent_updates_lose_nothing(s: &Store) {
    let u = user("count@x.test", None, None);
    s.insert_user(&u).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let s = s.clone();
        let id = u.id;
        tasks.push(tokio::spawn(async move {
            s.update_user(&id, |u| {
                u.failed_attempts += 1;
                Ok::<(), ()>(())
            })
            .await
            .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.user(&u.id).await.unwrap().unwrap().failed_attempts, 20);
}

async fn codes_change_atomically(s: &Store) {
    let u = uuid::Uuid::new_v4();
    let code = Code {
        v: RECORD_VERSION,
        user_id: u,
        purpose: Purpose::Login,
        hash: vec![1, 2, 3],
        expires_at: OffsetDateTime::UNIX_EPOCH,
        attempts: 0,
        created_at: OffsetDateTime::UNIX_EPOCH,
        first_factor: None,
    };
    s.put_code(&code).await.unwrap();
    // Twenty guesses at once: each sees the count the one before it left.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.update_code(&u, Purpose::Login, |c| match c {
                Some(c) => {
                    let mut next = c.clone();
                    next.attempts += 1;
                    (CodeChange::Put(next), true)
                }
                None => (CodeChange::Keep, false),
            })
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap());
    }
    let attempts = s
        .update_code(&u, Purpose::Login, |c| {
            (CodeChange::Keep, c.map(|c| c.attempts))
        })
        .await
        .unwrap();
    assert_eq!(attempts, Some(20));
    assert!(
        !s.update_code(&u, Purpose::VerifyEmail, |c| (
            CodeChange::Keep,
            c.is_some()
        ))
        .await
        .unwrap(),
        "codes are per purpose"
    );
    // Every purpose has its own slot, the newest (email change) too.
    let change = Code {
        purpose: Purpose::ChangeEmail,
        hash: vec![4, 5, 6],
        ..code.clone()
    };
    s.put_code(&change).await.unwrap();
    let stored = s
        .update_code(&u, Purpose::ChangeEmail, |c| (CodeChange::Keep, c.cloned()))
        .await
        .unwrap();
    assert_eq!(stored, Some(change));
    s.update_code(&u, Purpose::Login, |_| (CodeChange::Delete, ()))
        .await
        .unwrap();
    assert!(
        !s.update_code(&u, Purpose::Login, |c| (CodeChange::Keep, c.is_some()))
            .await
            .unwrap(),
        "deleted"
    );
}

async fn cooldowns_and_reset_tokens(s: &Store) {
    let t0 = OffsetDateTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let cd = Duration::from_secs(60);
    assert_eq!(s.take_cooldown("k", t0, cd).await.unwrap(), Ok(()));
    let left = s
        .take_cooldown("k", t0 + Duration::from_secs(10), cd)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(left, Duration::from_secs(50));
    assert_eq!(s.take_cooldown("k", t0 + cd, cd).await.unwrap(), Ok(()));
    // Set over a running one: it runs from the new start.
    let t1 = t0 + cd + Duration::from_secs(5);
    s.set_cooldown("k", t1, cd).await.unwrap();
    let left = s
        .take_cooldown("k", t1 + Duration::from_secs(1), cd)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(left, Duration::from_secs(59));

    let tok = ResetToken {
        v: RECORD_VERSION,
        user_id: uuid::Uuid::new_v4(),
        expires_at: t0,
        email: "r@example.com".into(),
    };
    s.put_reset_token(b"h", &tok).await.unwrap();
    assert_eq!(s.take_reset_token(b"h").await.unwrap(), Some(tok));
    assert_eq!(s.take_reset_token(b"h").await.unwrap(), None, "single use");
    // The store keeps no secrets of its own any more: the keys that protect its codes and
    // tokens come from outside it (see `a_copy_of_the_store_alone_yields_no_usable_token`).
}

async fn sessions_by_user(s: &Store) {
    let u = uuid::Uuid::new_v4();
    let t = OffsetDateTime::UNIX_EPOCH;
    for id in ["s1", "s2", "s3"] {
        let sess = Session {
            v: RECORD_VERSION,
            id: id.into(),
            user_id: u,
            created_at: t,
            last_seen_at: t,
            expires_at: t,
            ip: "127.0.0.1".into(),
            user_agent: "ua".into(),
            device: "d".into(),
            os: "o".into(),
            refresh: None,
            factors: Vec::new(),
        };
        s.insert_session(&sess).await.unwrap();
    }
    assert_eq!(s.sessions_of(&u).await.unwrap().len(), 3);
    assert_eq!(s.all_sessions().await.unwrap().len(), 3);
    let other = uuid::Uuid::new_v4();
    assert!(
        s.delete_sessions(&other, &["s1".into()])
            .await
            .unwrap()
            .is_empty(),
        "not someone else's"
    );
    assert_eq!(
        s.delete_sessions(&u, &["s1".into()]).await.unwrap(),
        vec!["s1".to_string()]
    );
    assert_eq!(
        s.delete_sessions_of(&u, Some("s2")).await.unwrap(),
        vec!["s3".to_string()]
    );
    let updated = s
        .update_session("s2", |s| {
            s.device = "updated".into();
            Ok::<(), ()>(())
        })
        .await
        .unwrap();
    assert_eq!(updated.device, "updated");
    let left: Vec<_> = s
        .sessions_of(&u)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.id, s.device))
        .collect();
    assert_eq!(left, vec![("s2".to_string(), "updated".to_string())]);
    assert!(s.session("s1").await.unwrap().is_none());
}

/// Every behaviour, each on a fresh store from `fresh`.
macro_rules! suite {
    ($fresh:expr) => {{
        eprintln!("unique fields");
        unique_fields_are_enforced_on_insert_and_update(&$fresh).await;
        eprintln!("concurrent inserts");
        concurrent_inserts_of_one_email_admit_exactly_one(&$fresh).await;
        eprintln!("concurrent updates");
        concurrent_updates_lose_nothing(&$fresh).await;
        eprintln!("codes");
        codes_change_atomically(&$fresh).await;
        eprintln!("cooldowns, reset tokens");
        cooldowns_and_reset_tokens(&$fresh).await;
        eprintln!("sessions");
        sessions_by_user(&$fresh).await;
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_behaviour_on_sled() {
    let dirs: Vec<tempfile::TempDir> = (0..6).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut next = dirs.iter();
    let mut fresh = || Store::open(&next.next().unwrap().path().join("db"), 8 << 20).unwrap();
    suite!(fresh());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_behaviour_on_postgres() {
    let Some(pg) = PgCluster::start("store_behaviour_on_postgres") else {
        return;
    };
    macro_rules! fresh {
        () => {
            Store::connect(&pg.migrated().await).await.unwrap()
        };
    }
    suite!(fresh!());
}

#[tokio::test]
async fn postgres_schema_is_migrated_and_checked() {
    let Some(pg) = PgCluster::start("postgres_schema_is_migrated_and_checked") else {
        return;
    };
    let opts = PgOptions {
        url: pg.url(&pg.database().await),
        tls_ca: None,
        pool_size: 2,
        connect_timeout: Duration::from_secs(10),
        statement_timeout: Duration::from_secs(10),
    };
    // Not migrated: refused, with the command to run.
    let e = Store::connect(&opts).await.unwrap_err();
    assert!(matches!(e, StoreError::Migrate { found: 0, .. }), "{e}");
    assert!(e.to_string().contains("authgate migrate"));
    // Migrated once; a second run has nothing to do.
    assert_eq!(Store::migrate(&opts).await.unwrap(), vec![1, 2, 3, 4, 5, 6]);
    assert!(Store::migrate(&opts).await.unwrap().is_empty());
    Store::connect(&opts).await.unwrap();
    // A schema from a newer build: refused by connect and by migrate.
    let (client, conn) = tokio_postgres::connect(&opts.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("INSERT INTO authgate_schema (version) VALUES (99)")
        .await
        .unwrap();
    assert!(matches!(
        Store::connect(&opts).await,
        Err(StoreError::NewerSchema { found: 99, .. })
    ));
    assert!(matches!(
        Store::migrate(&opts).await,
        Err(StoreError::NewerSchema { found: 99, .. })
    ));
    // A wrong password or host never leaks the URL in the error.
    let bad = PgOptions {
        url: format!(
            "postgres://authgate:s3cret-pw@127.0.0.1:{}/nope?sslmode=disable",
            crate::harness::dead_addr().await.port()
        ),
        connect_timeout: Duration::from_secs(2),
        ..opts.clone()
    };
    let e = Store::connect(&bad).await.unwrap_err().to_string();
    assert!(!e.contains("s3cret-pw"), "{e}");
}

#[tokio::test]
async fn postgres_session_events_are_complete_and_gaps_are_seen() {
    let Some(pg) = PgCluster::start("postgres_session_events_are_complete_and_gaps_are_seen")
    else {
        return;
    };
    let s = Store::connect(&pg.migrated().await).await.unwrap();
    assert!(s.is_shared());
    let head = s.session_events_head().await.unwrap();
    let u = uuid::Uuid::new_v4();
    let t = authgate::clock::Clock::now(&authgate::clock::SystemClock) + Duration::from_secs(3600);
    for id in ["e1", "e2"] {
        s.insert_session(&Session {
            v: RECORD_VERSION,
            id: id.into(),
            user_id: u,
            created_at: t,
            last_seen_at: t,
            expires_at: t,
            ip: "127.0.0.1".into(),
            user_agent: "ua".into(),
            device: "d".into(),
            os: "o".into(),
            refresh: None,
            factors: Vec::new(),
        })
        .await
        .unwrap();
    }
    s.delete_sessions(&u, &["e1".into()]).await.unwrap();
    let (events, cursor, gap) = s
        .session_events(head, Duration::from_secs(0))
        .await
        .unwrap();
    assert!(!gap);
    let seen: Vec<(String, bool)> = events
        .iter()
        .map(|e| (e.session_id.clone(), e.live))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("e1".to_string(), true),
            ("e2".to_string(), true),
            ("e1".to_string(), false)
        ]
    );
    assert_eq!(events[0].expires_at, t.unix_timestamp());
    // Polled again: only the re-read window, nothing new.
    let (again, same, _) = s
        .session_events(cursor, Duration::from_secs(0))
        .await
        .unwrap();
    assert!(again.is_empty());
    assert_eq!(same, cursor);
    let (window, _, _) = s
        .session_events(cursor, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(window.len(), 3, "the last minute is read again");

    // A follower that fell behind further than the events are kept is told so.
    s.delete_sessions(&u, &["e2".into()]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.prune(
        Duration::from_secs(0),
        authgate::clock::Clock::now(&authgate::clock::SystemClock),
    )
    .await
    .unwrap();
    s.delete_sessions_of(&u, None).await.unwrap();
    let session = |id: &str| Session {
        v: RECORD_VERSION,
        id: id.into(),
        user_id: u,
        created_at: t,
        last_seen_at: t,
        expires_at: t,
        ip: "127.0.0.1".into(),
        user_agent: "ua".into(),
        device: "d".into(),
        os: "o".into(),
        refresh: None,
        factors: Vec::new(),
    };
    s.insert_session(&session("e3")).await.unwrap();
    let (_, _, gap) = s
        .session_events(cursor, Duration::from_secs(0))
        .await
        .unwrap();
    assert!(
        gap,
        "the sign-out of e2 was pruned before this follower read it"
    );
}

#[tokio::test]
async fn postgres_over_tls_trusts_the_configured_ca_only() {
    let Some(pg) = PgCluster::start_with("postgres_over_tls_trusts_the_configured_ca_only", true)
    else {
        return;
    };
    let db = pg.database().await;
    let url = pg.url(&db).replace("sslmode=disable", "sslmode=require");
    let opts = PgOptions {
        url,
        tls_ca: Some(pg.cert()),
        pool_size: 2,
        connect_timeout: Duration::from_secs(10),
        statement_timeout: Duration::from_secs(10),
    };
    assert_eq!(Store::migrate(&opts).await.unwrap(), vec![1, 2, 3, 4, 5, 6]);
    let s = Store::connect(&opts).await.unwrap();
    s.insert_user(&user("tls@x.test", None, None))
        .await
        .unwrap();
    assert!(s.user_by_email("tls@x.test").await.unwrap().is_some());
    // Without the CA, the self-signed server is not trusted: no connection.
    let untrusted = PgOptions {
        tls_ca: None,
        ..opts.clone()
    };
    let e = Store::connect(&untrusted).await.unwrap_err().to_string();
    assert!(
        e.contains("certificate") || e.contains("tls") || e.contains("TLS"),
        "{e}"
    );
}

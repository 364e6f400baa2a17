//! Criterion benchmarks of the costs that decide throughput: password verification (argon2id
//! with the configured parameters, through the bounded pool), a store lookup by email among
//! many users, access-token verification (cached and not), the hot-path session check, and
//! path normalization.
//!
//! `cargo bench --bench hot_paths` (AUTHGATE_BENCH_USERS sets the store size; default 1M,
//! which takes about a minute to load).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use authgate::clock::{ManualClock, SharedClock};
use authgate::config::{PasswordsConfig, TokensConfig};
use authgate::passwords::Passwords;
use authgate::secret::{KeyBytes, Secret};
use authgate::sessions::{ClientInfo, Sessions};
use authgate::store::{AuthFactor, Store, User};
use authgate::tokens::Tokens;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use time::OffsetDateTime;

/// How the tokens here were proved: a password and an authenticator code, so every token
/// carries `amr` (what a two-factor sign-in makes).
const SIGN_IN: &[AuthFactor] = &[AuthFactor::Password, AuthFactor::Totp];

fn user(i: usize) -> User {
    User {
        username: Some(format!("user{i}")),
        full_name: Some(format!("User Number {i}")),
        ..User::new(
            format!("user{i}@example.com"),
            true,
            vec!["customer".into()],
            OffsetDateTime::UNIX_EPOCH,
        )
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn passwords(c: &mut Criterion) {
    let rt = runtime();
    let p = Passwords::new(&PasswordsConfig::default()).unwrap();
    let pw = Secret::new("correct horse battery staple");
    let hash = rt.block_on(p.hash_new(&pw, vec![])).unwrap();
    let mut g = c.benchmark_group("passwords");
    g.sample_size(20);
    g.bench_function("argon2id_verify_default_params", |b| {
        b.iter(|| rt.block_on(p.verify(black_box(&pw), Some(&hash))).unwrap())
    });
    g.bench_function("unknown_user_dummy_verify", |b| {
        b.iter(|| rt.block_on(p.verify(black_box(&pw), None)).unwrap())
    });
    g.finish();
}

fn store_lookup(c: &mut Criterion) {
    let n: usize = std::env::var("AUTHGATE_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), 256 << 20).unwrap();
    let started = authgate::clock::monotonic();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let users: Vec<User> = chunk.iter().map(|&i| user(i)).collect();
        rt.block_on(store.import_users(&users)).unwrap();
    }
    eprintln!("loaded {n} users in {:?}", started.elapsed());
    let mut i = 0usize;
    c.bench_function(&format!("store/user_by_email_among_{n}"), |b| {
        b.iter(|| {
            i = (i * 7919 + 13) % n;
            let u = rt
                .block_on(store.user_by_email(black_box(&format!("user{i}@example.com"))))
                .unwrap();
            assert!(u.is_some());
        })
    });
}

fn tokens(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let clock: SharedClock = Arc::new(ManualClock::starting_now());
    let cfg = TokensConfig {
        keys_dir: dir.path().join("keys"),
        cache_entries: 16,
        ..Default::default()
    };
    let tokens = Arc::new(
        Tokens::new(
            &cfg,
            "https://gw.test".into(),
            std::sync::Arc::new(authgate::keyring::Keyring::new(&KeyBytes(vec![1; 32]))),
            clock.clone(),
        )
        .unwrap(),
    );
    let u = user(1);
    // Many distinct tokens against a 16-entry cache: nearly every verification is a miss.
    let many: Vec<String> = (0..4096)
        .map(|i| tokens.issue_access(&u, &format!("s{i}"), SIGN_IN).unwrap())
        .collect();
    let mut i = 0;
    c.bench_function("tokens/eddsa_verify_uncached", |b| {
        b.iter(|| {
            i = (i + 1) % many.len();
            tokens.verify_access(black_box(&many[i])).unwrap()
        })
    });
    let one = many[0].clone();
    c.bench_function("tokens/verify_cached", |b| {
        b.iter(|| tokens.verify_access(black_box(&one)).unwrap())
    });
    // The same check for a token of a session made before factors were kept (no `amr`):
    // what the claim's bytes cost, apart from the code.
    let legacy = tokens.issue_access(&u, "s-legacy", &[]).unwrap();
    c.bench_function("tokens/verify_cached_without_amr", |b| {
        b.iter(|| tokens.verify_access(black_box(&legacy)).unwrap())
    });

    // The whole hot-path check: cached verification plus the live-session lookup.
    let store = Store::open(&dir.path().join("db"), 64 << 20).unwrap();
    let cfg = TokensConfig {
        keys_dir: dir.path().join("keys2"),
        ..Default::default()
    };
    let tokens = Arc::new(
        Tokens::new(
            &cfg,
            "https://gw.test".into(),
            std::sync::Arc::new(authgate::keyring::Keyring::new(&KeyBytes(vec![1; 32]))),
            clock.clone(),
        )
        .unwrap(),
    );
    let sessions = rt
        .block_on(Sessions::new(store.clone(), tokens, clock, &cfg))
        .unwrap();
    rt.block_on(store.insert_user(&u)).unwrap();
    let client = ClientInfo {
        ip: "127.0.0.1".parse().unwrap(),
        user_agent: "bench".into(),
    };
    let pair = rt.block_on(sessions.sign_in(&u, &client, SIGN_IN)).unwrap();
    // Other live sessions, so the lookup is not in a map of one (other accounts': one
    // account's sessions are capped, and the oldest would end).
    let others: Vec<User> = (2..10_002).map(user).collect();
    rt.block_on(store.import_users(&others)).unwrap();
    for o in &others {
        rt.block_on(sessions.sign_in(o, &client, SIGN_IN)).unwrap();
    }
    let _guard = rt.enter();
    c.bench_function(
        "sessions/authenticate_cached_token_among_10k_sessions",
        |b| {
            b.iter(|| {
                sessions
                    .authenticate(black_box(pair.access_token.expose()))
                    .unwrap()
            })
        },
    );
    // The same check, then a route rule that needs two factors (`mfa = true`) and a role.
    let vault = authgate::policy::Rule {
        access: authgate::config::Access::Authenticated,
        roles: vec!["customer".into()],
        mfa: true,
    };
    c.bench_function("sessions/authenticate_then_mfa_route_rule", |b| {
        b.iter(|| {
            let v = sessions
                .authenticate(black_box(pair.access_token.expose()))
                .unwrap();
            vault.authorize(Some(&v.identity)).unwrap()
        })
    });
}

/// A sign-in's second step beside its first: checking a TOTP code (unseal the secret, HMAC
/// three steps) against the argon2 verification above.
fn second_factor(c: &mut Criterion) {
    let keyring = authgate::keyring::Keyring::new(&KeyBytes(vec![1; 32]));
    let keys = authgate::second_factor::SecondFactorKeys::new(&keyring, "bench").unwrap();
    let user = uuid::Uuid::new_v4();
    let e = keys
        .enrol(&user, "bench@example.com", OffsetDateTime::UNIX_EPOCH)
        .unwrap();
    let now = 1_800_000_000_i64;
    c.bench_function("second_factor/totp_check_wrong_code", |b| {
        b.iter(|| keys.check_totp(&user, &e.factor, black_box("000000"), now))
    });
}

fn paths(c: &mut Criterion) {
    c.bench_function("path/normalize_plain", |b| {
        b.iter(|| authgate::urlpath::normalize(black_box("/api/v1/items/42")).unwrap())
    });
    c.bench_function("path/normalize_dirty", |b| {
        b.iter(|| authgate::urlpath::normalize(black_box("/api//v1/./items/%34%32/../43")).unwrap())
    });
}

criterion_group!(
    benches,
    passwords,
    store_lookup,
    tokens,
    second_factor,
    paths
);
criterion_main!(benches);

//! Three authgate instances on loopback sharing one PostgreSQL database, as behind a load
//! balancer: whatever one instance does, the others honour.

use crate::harness::*;
use crate::mail::Smtp;
use crate::postgres::PgCluster;
use authgate::clock::{Clock, ManualClock};
use serde_json::json;
use std::time::Duration;

const PW: &str = "correct horse battery staple";

struct Trio {
    gws: Vec<Gateway>,
    smtp: Smtp,
    clock: ManualClock,
    opts: authgate::store::PgOptions,
    /// The instances' shared tokens.secret_key.
    keyring: authgate::keyring::Keyring,
    _pg: PgCluster,
}

async fn trio(test: &str) -> Option<Trio> {
    let pg = PgCluster::start(test)?;
    let opts = pg.migrated().await;
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    // One secret key for the three, as a deployment gives every instance the same file.
    let key = authgate::keyring::generate();
    let keyring = authgate::keyring::Keyring::new(&authgate::keyring::decode(&key).unwrap());
    let toml = format!(
        "[server]\ntls = false\n[store]\nbackend = \"postgres\"\nurl = \"{}\"\npool_size = 8\n[tokens]\nsecret_key = \"{key}\"\n",
        opts.url,
    );
    let mut gws = Vec::new();
    for _ in 0..3 {
        gws.push(Gateway::start_with(&toml, Some(&smtp), Some(&clock)).await);
    }
    Some(Trio {
        gws,
        smtp,
        clock,
        opts,
        keyring,
        _pg: pg,
    })
}

async fn me(gw: &Gateway, token: &str) -> u16 {
    gw.call(reqwest::Method::GET, "/auth/me", token, None)
        .await
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_behave_as_one() {
    let Some(t) = trio("three_instances_behave_as_one").await else {
        return;
    };
    let [a, b, c] = [&t.gws[0], &t.gws[1], &t.gws[2]];

    // Register on the first, verify on the third, log in on the second.
    let (s, reg) = a
        .post(
            "/auth/register",
            json!({"email": "one@example.com", "password": PW}),
        )
        .await;
    assert_eq!(s, 201);
    let code = t.smtp.code("one@example.com", 1).await;
    let (s, v) = c
        .post(
            "/auth/verify",
            json!({"email": "one@example.com", "code": code, "signup_token": reg["data"]["signup_token"]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = b
        .post(
            "/auth/login",
            json!({"login": "one@example.com", "password": PW}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let token = v["data"]["access_token"].as_str().unwrap().to_string();
    let refresh = v["data"]["refresh_token"].as_str().unwrap().to_string();
    // Accepted at once everywhere (an instance that has not heard of the session yet looks
    // it up once).
    for gw in [a, b, c] {
        assert_eq!(me(gw, &token).await, 200);
    }

    // Ten concurrent refreshes of one refresh token, spread over the three: one rotation,
    // every caller within the grace window gets the same new pair.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let client = t.gws[i % 3].client.clone();
        let url = t.gws[i % 3].url("/auth/token/refresh");
        let refresh = refresh.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .json(&json!({ "refresh_token": refresh }))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let v: serde_json::Value = r.json().await.unwrap();
            (
                status,
                v["data"]["refresh_token"].as_str().map(str::to_string),
            )
        }));
    }
    let mut new_tokens = std::collections::HashSet::new();
    for task in tasks {
        let (status, rt) = task.await.unwrap();
        assert_eq!(status, 200);
        new_tokens.insert(rt.unwrap());
    }
    assert_eq!(new_tokens.len(), 1, "rotated exactly once: {new_tokens:?}");
    assert!(!new_tokens.contains(&refresh));

    // Log out on the third: the first refuses the token within a second.
    let (s, _) = c
        .call(reqwest::Method::POST, "/auth/logout", &token, None)
        .await;
    assert_eq!(s, 200);
    let start = authgate::clock::monotonic();
    loop {
        if me(a, &token).await == 401 && me(b, &token).await == 401 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "still accepted {:?} after the logout",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    eprintln!("logout honoured everywhere after {:?}", start.elapsed());

    // Twenty concurrent registrations of one email across the instances: one 201.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = t.gws[i % 3].client.clone();
        let url = t.gws[i % 3].url("/auth/register");
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"email": "race@example.com", "password": PW}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut created = 0;
    for task in tasks {
        let s = task.await.unwrap();
        assert!(s == 201 || s == 409 || s == 429, "{s}");
        created += usize::from(s == 201);
    }
    assert_eq!(created, 1);

    // A key rotation on one instance: published at once on every instance, signing only
    // once every instance has had time to load it, and old tokens keep verifying.
    let (_, v) = b
        .post(
            "/auth/login",
            json!({"login": "one@example.com", "password": PW}),
        )
        .await;
    let old_token = v["data"]["access_token"].as_str().unwrap().to_string();
    let tokens = |gw: &Gateway| gw.running.as_ref().unwrap().app.sessions.tokens().clone();
    let old_kid = tokens(a).current_kid().unwrap();
    let store = authgate::store::Store::connect(&t.opts).await.unwrap();
    t.clock.advance(Duration::from_secs(1));
    let new_kid = authgate::tokens::generate_key_in_store(
        &store,
        authgate::config::TokenAlgorithm::EdDSA,
        t.clock.now(),
        &t.keyring,
    )
    .await
    .unwrap();
    // The signing keys in the database are sealed with the instances' secret key: a dump of
    // it alone signs nothing.
    let records = store.signing_keys().await.unwrap();
    assert!(records.len() >= 2);
    for r in &records {
        let v: serde_json::Value = serde_json::from_slice(r).unwrap();
        assert!(v["private"].is_null() && v["sealed"].is_string(), "{v}");
    }
    // Published at once where loaded, not signing yet.
    tokens(a).reload_keys().await.unwrap();
    let jwks = tokens(a).jwks().to_string();
    assert!(jwks.contains(&new_kid) && jwks.contains(&old_kid), "{jwks}");
    assert_eq!(tokens(a).current_kid().unwrap(), old_kid, "not signing yet");
    t.clock
        .advance(authgate::tokens::ACTIVATION_DELAY + Duration::from_secs(1));
    tokens(a).reload_keys().await.unwrap();
    assert_eq!(tokens(a).current_kid().unwrap(), new_kid);
    let (_, v) = a
        .post(
            "/auth/login",
            json!({"login": "one@example.com", "password": PW}),
        )
        .await;
    let new_token = v["data"]["access_token"].as_str().unwrap().to_string();
    // The others have not reloaded (their 30 s tick has not come): a token with a key id they
    // do not know makes them reload at once, so it is accepted within a moment.
    let start = authgate::clock::monotonic();
    for gw in [b, c] {
        while me(gw, &new_token).await != 200 {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "the new key was not picked up"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    eprintln!("an unknown key id was loaded after {:?}", start.elapsed());
    for gw in [a, b, c] {
        assert_eq!(
            me(gw, &new_token).await,
            200,
            "the new key verifies everywhere"
        );
        assert_eq!(me(gw, &old_token).await, 200, "the old key still verifies");
    }

    // A password change on one instance ends the account's other sessions everywhere, and a
    // block on another ends the rest: each refused by every instance within a second.
    let login = |gw: &Gateway, pw: &'static str| {
        let gw_client = gw.client.clone();
        let url = gw.url("/auth/login");
        async move {
            let r = gw_client
                .post(url)
                .json(&json!({"login": "one@example.com", "password": pw}))
                .send()
                .await
                .unwrap();
            let v: serde_json::Value = r.json().await.unwrap();
            v["data"]["access_token"].as_str().unwrap().to_string()
        }
    };
    let on_a = login(a, PW).await;
    let on_b = login(b, PW).await;
    let new_pw = "another correct horse battery";
    let (s, v) = b
        .call(
            reqwest::Method::POST,
            "/auth/password/change",
            &on_b,
            Some(json!({"current_password": PW, "new_password": new_pw})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let refused_everywhere = |token: String| async move {
        let start = authgate::clock::monotonic();
        loop {
            let mut all = true;
            for gw in [a, b, c] {
                all &= me(gw, &token).await == 401;
            }
            if all {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "still accepted somewhere"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    let took = refused_everywhere(on_a).await;
    eprintln!("password change honoured everywhere after {took:?}");
    assert_eq!(me(a, &on_b).await, 200, "the changing session stays");
    let user_id = {
        let (_, v) = a.call(reqwest::Method::GET, "/auth/me", &on_b, None).await;
        v["data"]["id"].as_str().unwrap().parse().unwrap()
    };
    c.running
        .as_ref()
        .unwrap()
        .app
        .accounts
        .set_blocked(&user_id, true)
        .await
        .unwrap();
    let took = refused_everywhere(on_b).await;
    eprintln!("block honoured everywhere after {took:?}");
    c.running
        .as_ref()
        .unwrap()
        .app
        .accounts
        .set_blocked(&user_id, false)
        .await
        .unwrap();
    let (s, _) = a
        .post(
            "/auth/login",
            json!({"login": "one@example.com", "password": new_pw}),
        )
        .await;
    assert_eq!(
        s, 200,
        "unblocked, the new password works on another instance"
    );

    // A wrong-code guess on each instance counts against one shared try limit.
    let (s, _) = a
        .post("/auth/login/code", json!({"email": "one@example.com"}))
        .await;
    assert_eq!(s, 200);
    let real = t.smtp.code("one@example.com", 2).await;
    let wrong = if real == "000000" { "111111" } else { "000000" };
    let mut last = 0;
    for i in 0..5 {
        let (s, _) = t.gws[i % 3]
            .post(
                "/auth/login/code/verify",
                json!({"email": "one@example.com", "code": wrong}),
            )
            .await;
        last = s;
    }
    assert_eq!(
        last, 429,
        "the fifth wrong try, wherever it lands, uses the code up"
    );
    let (s, _) = b
        .post(
            "/auth/login/code/verify",
            json!({"email": "one@example.com", "code": real}),
        )
        .await;
    assert_ne!(s, 200, "a used-up code stays used up on every instance");

    // A rotated refresh token presented again after the grace window, on a third instance,
    // ends its session on every instance. (First, past the lockout the wrong codes caused.)
    t.clock.advance(Duration::from_secs(16 * 60));
    let (s, v) = a
        .post(
            "/auth/login",
            json!({"login": "one@example.com", "password": "another correct horse battery"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let access = v["data"]["access_token"].as_str().unwrap().to_string();
    let first = v["data"]["refresh_token"].as_str().unwrap().to_string();
    let (s, _) = b
        .post("/auth/token/refresh", json!({ "refresh_token": first }))
        .await;
    assert_eq!(s, 200);
    t.clock.advance(Duration::from_secs(6));
    let (s, _) = c
        .post("/auth/token/refresh", json!({ "refresh_token": first }))
        .await;
    assert_eq!(s, 401, "reuse after the grace window");
    let start = authgate::clock::monotonic();
    loop {
        let mut all = true;
        for gw in [a, b, c] {
            all &= me(gw, &access).await == 401;
        }
        if all {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "reuse did not end the session everywhere"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    for gw in t.gws {
        gw.stop().await;
    }
}

#[tokio::test]
async fn store_copy_moves_a_sled_deployment_to_postgres() {
    let Some(pg) = PgCluster::start("store_copy_moves_a_sled_deployment_to_postgres") else {
        return;
    };
    let smtp = Smtp::start();
    // A sled deployment with an account and a signed-in session.
    let sled = Gateway::start_with("[server]\ntls = false\n", Some(&smtp), None).await;
    let (s, reg) = sled
        .post(
            "/auth/register",
            json!({"email": "moved@example.com", "password": PW}),
        )
        .await;
    assert_eq!(s, 201);
    let code = smtp.code("moved@example.com", 1).await;
    sled.post(
        "/auth/verify",
        json!({"email": "moved@example.com", "code": code, "signup_token": reg["data"]["signup_token"]}),
    )
    .await;
    let (s, v) = sled
        .post(
            "/auth/login",
            json!({"login": "moved@example.com", "password": PW}),
        )
        .await;
    assert_eq!(s, 200);
    let token = v["data"]["access_token"].as_str().unwrap().to_string();
    let refresh = v["data"]["refresh_token"].as_str().unwrap().to_string();
    // And an authenticator, confirmed in that session (which goes on).
    let now = || Clock::unix_now(&authgate::clock::SystemClock);
    let (s, v) = sled
        .call(
            reqwest::Method::POST,
            "/auth/mfa/totp",
            &token,
            Some(json!({"current_password": PW})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let secret = v["data"]["secret"].as_str().unwrap().to_string();
    let (s, v) = sled
        .call(
            reqwest::Method::POST,
            "/auth/mfa/totp/confirm",
            &token,
            Some(json!({"code": crate::second_factors::totp(&secret, now())})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let dir = sled.stop_keep_dir().await;

    let url = pg.url(&pg.database().await);
    let copy = || {
        let out = std::process::Command::new(bin_path())
            .args(["store", "copy", "--from"])
            .arg(dir.path().join("db"))
            .arg("--keys-dir")
            .arg(dir.path().join("keys"))
            .env("AUTHGATE_STORE_COPY_TO", &url)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(!text.contains(&url), "the URL is not echoed: {text}");
        text
    };
    let first = copy();
    assert!(
        first.contains("users                1 →        1"),
        "{first}"
    );
    assert!(
        first.contains("sessions             1 →        1"),
        "{first}"
    );
    // Safe to re-run: the same records, the same counts.
    assert_eq!(copy(), first);

    // An instance on PostgreSQL: the account signs in, and the session and tokens issued by
    // the sled deployment are still good.
    // The instances are given the sled deployment's secret key: its codes and refresh
    // tokens depend on it.
    let key_file = dir.path().join("keys/secrets.key");
    let toml = format!(
        "[server]\ntls = false\n[store]\nbackend = \"postgres\"\nurl = \"{url}\"\n[tokens]\nsecret_key_file = \"{}\"\n",
        key_file.display()
    );
    let gw = Gateway::start_with(&toml, Some(&smtp), None).await;
    let (s, v) = gw
        .post(
            "/auth/login",
            json!({"login": "moved@example.com", "password": PW}),
        )
        .await;
    assert_eq!(s, 200);
    // The authenticator moved too, and the key outside the store still opens it.
    assert_eq!(v["data"]["mfa_required"], true, "{v}");
    let (s, v) = gw
        .post(
            "/auth/login/mfa",
            json!({"mfa_token": v["data"]["mfa_token"], "code": crate::second_factors::totp(&secret, now() + 30)}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(me(&gw, &token).await, 200, "a token issued before the move");
    let (s, _) = gw
        .post("/auth/token/refresh", json!({ "refresh_token": refresh }))
        .await;
    assert_eq!(s, 200, "a refresh token issued before the move");
    gw.stop().await;

    // Once instances have served from it, another copy would undo their changes: refused.
    let out = std::process::Command::new(bin_path())
        .args(["store", "copy", "--from"])
        .arg(dir.path().join("db"))
        .arg("--keys-dir")
        .arg(dir.path().join("keys"))
        .env("AUTHGATE_STORE_COPY_TO", &url)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
}

/// Second factors on a shared store: enrolled on one instance, the second step begun on
/// another and finished on a third; a passkey ceremony begun on one instance and finished on
/// another (its state is in PostgreSQL), once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn second_factors_and_passkey_ceremonies_span_instances() {
    let Some(t) = trio("second_factors_and_passkey_ceremonies_span_instances").await else {
        return;
    };
    let [a, b, c] = [&t.gws[0], &t.gws[1], &t.gws[2]];
    crate::seeds::register_verified(
        a,
        &t.smtp,
        json!({"email": "mf@example.com", "password": PW}),
    )
    .await;
    let (_, v) = b
        .post(
            "/auth/login",
            json!({"login": "mf@example.com", "password": PW}),
        )
        .await;
    let token = v["data"]["access_token"].as_str().unwrap().to_string();
    let (s, v) = a
        .call(
            reqwest::Method::POST,
            "/auth/mfa/totp",
            &token,
            Some(json!({"current_password": PW})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let secret = v["data"]["secret"].as_str().unwrap().to_string();
    let (s, v) = c
        .call(
            reqwest::Method::POST,
            "/auth/mfa/totp/confirm",
            &token,
            Some(json!({"code": crate::second_factors::totp(&secret, t.clock.unix_now())})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    t.clock.advance(Duration::from_secs(30));
    let (_, v) = b
        .post(
            "/auth/login",
            json!({"login": "mf@example.com", "password": PW}),
        )
        .await;
    assert_eq!(v["data"]["mfa_required"], true, "{v}");
    let step = v["data"]["mfa_token"].clone();
    let code = crate::second_factors::totp(&secret, t.clock.unix_now());
    let (s, v) = c
        .post("/auth/login/mfa", json!({"mfa_token": step, "code": code}))
        .await;
    assert_eq!(s, 200, "{v}");
    let two = v["data"]["access_token"].as_str().unwrap().to_string();
    // The same token on the first instance: used up everywhere.
    let (s, _) = a
        .post("/auth/login/mfa", json!({"mfa_token": step, "code": code}))
        .await;
    assert_eq!(s, 401);
    // A passkey: options from one instance, the answer to another, and the answer again to
    // the third.
    let (s, v) = a
        .call(
            reqwest::Method::POST,
            "/auth/passkeys/register/options",
            &two,
            Some(json!({"current_password": PW})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let mut key = crate::passkeys::SoftKey::new();
    let credential = key
        .create("https://localhost:8443", &v["data"]["publicKey"])
        .await;
    let body = json!({"challenge_id": v["data"]["challenge_id"], "credential": credential});
    let (s, v) = b
        .call(
            reqwest::Method::POST,
            "/auth/passkeys/register",
            &two,
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = c
        .call(
            reqwest::Method::POST,
            "/auth/passkeys/register",
            &two,
            Some(body),
        )
        .await;
    assert_eq!(s, 401, "a ceremony is finished once");
    let (_, v) = c.post("/auth/login/passkey/options", json!({})).await;
    let assertion = key
        .get("https://localhost:8443", &v["data"]["publicKey"])
        .await;
    let (s, v) = a
        .post(
            "/auth/login/passkey",
            json!({"challenge_id": v["data"]["challenge_id"], "credential": assertion}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

//! Tokens and sessions through HTTP: contents and expiry, forgeries on both doors, revocation,
//! refresh rotation with reuse detection and the grace window, cookies and CSRF, roles, admin,
//! key rotation.

use crate::harness::*;
use crate::mail::Smtp;
use crate::seeds::{login, register_verified};
use authgate::clock::ManualClock;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

const PW: &str = "correct horse battery staple";

fn routes(up: &Upstream) -> String {
    format!(
        r#"
        [[routes]]
        path_prefix = "/"
        upstream = "{u}"
        access = "public"
        [[routes]]
        path_prefix = "/app"
        upstream = "{u}"
        [[routes]]
        path_prefix = "/vendor"
        upstream = "{u}"
        roles = ["vendor", "admin"]
        "#,
        u = up.url()
    )
}

struct World {
    gw: Gateway,
    smtp: Smtp,
    clock: ManualClock,
    _up: Upstream,
}

async fn world(extra: &str) -> World {
    let smtp = Smtp::start();
    let up = Upstream::start().await;
    let clock = ManualClock::starting_now();
    let gw = Gateway::start_with(
        &format!("{extra}\n{}", routes(&up)),
        Some(&smtp),
        Some(&clock),
    )
    .await;
    World {
        gw,
        smtp,
        clock,
        _up: up,
    }
}

async fn user(w: &World, email: &str) -> serde_json::Value {
    register_verified(
        &w.gw,
        &w.smtp,
        json!({"email": email, "password": PW, "username": email.split('@').next().unwrap()}),
    )
    .await;
    login(&w.gw, email, PW).await
}

fn claims(jwt: &str) -> (serde_json::Value, serde_json::Value) {
    let parts: Vec<&str> = jwt.split('.').collect();
    let h = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
    let c = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    (h, c)
}

async fn status_of(gw: &Gateway, path: &str, token: &str) -> (u16, String) {
    let r = gw
        .client
        .get(gw.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    (s, v["code"].as_str().unwrap_or("").to_string())
}

#[tokio::test]
async fn token_contents_and_expiry() {
    let w = world("").await;
    let t = user(&w, "claims@example.com").await;
    let jwt = t["access_token"].as_str().unwrap();
    let (header, c) = claims(jwt);
    assert_eq!(header["alg"], "EdDSA");
    assert!(header["kid"].is_string());
    for k in [
        "sub", "sid", "email", "username", "roles", "iat", "nbf", "exp", "iss", "aud", "jti",
    ] {
        assert!(!c[k].is_null(), "claim {k} missing: {c}");
    }
    assert_eq!(c["sub"], t["user"]["id"]);
    assert_eq!(c["sid"], t["session_id"]);
    assert_eq!(c["roles"], json!(["customer"]));
    assert_eq!(c["iss"], "https://localhost:8443");
    assert_eq!(c["aud"], "authgate");
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 900);
    assert_eq!(t["expires_in"], 900);
    assert_eq!(status_of(&w.gw, "/auth/me", jwt).await.0, 200);
    assert_eq!(status_of(&w.gw, "/app/x", jwt).await.0, 200);
    w.clock.advance(Duration::from_secs(900 + 31));
    assert_eq!(
        status_of(&w.gw, "/auth/me", jwt).await,
        (401, "TOKEN_EXPIRED".into())
    );
    assert_eq!(
        status_of(&w.gw, "/app/x", jwt).await,
        (401, "TOKEN_EXPIRED".into())
    );
    // The refresh token outlives it.
    let (status, v) =
        w.gw.post(
            "/auth/token/refresh",
            json!({"refresh_token": t["refresh_token"]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        status_of(&w.gw, "/app/x", v["data"]["access_token"].as_str().unwrap())
            .await
            .0,
        200
    );
    w.gw.stop().await;
}

/// Signs `claims` with the gateway's own Ed25519 key, read from its keys directory.
fn sign_with_gateway_key(
    gw: &Gateway,
    header_kid: Option<&str>,
    claims: &serde_json::Value,
) -> String {
    let dir = gw.dir.path().join("keys");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .unwrap();
    let key: serde_json::Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let pkcs8 = B64.decode(key["private"].as_str().unwrap()).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(
        header_kid
            .unwrap_or(key["kid"].as_str().unwrap())
            .to_string(),
    );
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_ed_der(&pkcs8),
    )
    .unwrap()
}

#[tokio::test]
async fn forged_tokens_are_refused_on_both_doors() {
    let w = world("").await;
    let t = user(&w, "forge@example.com").await;
    let jwt = t["access_token"].as_str().unwrap().to_string();
    let (_, good) = claims(&jwt);
    let parts: Vec<&str> = jwt.split('.').collect();
    let mut forged: Vec<(&str, String)> = Vec::new();

    forged.push((
        "alg none",
        format!(
            "{}.{}.",
            B64.encode(br#"{"alg":"none","typ":"JWT"}"#),
            parts[1]
        ),
    ));
    forged.push(("stripped signature", format!("{}.{}.", parts[0], parts[1])));
    let mut admin = good.clone();
    admin["roles"] = json!(["admin"]);
    forged.push((
        "tampered claims",
        format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(admin.to_string()),
            parts[2]
        ),
    ));
    // HS256 with the public key as the HMAC secret (the classic key-confusion attack).
    let jwks: serde_json::Value =
        w.gw.client
            .get(w.gw.url("/auth/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let x = B64.decode(jwks["keys"][0]["x"].as_str().unwrap()).unwrap();
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = jwks["keys"][0]["kid"].as_str().map(str::to_string);
    forged.push((
        "HS256 with the public key",
        jsonwebtoken::encode(&hs, &good, &jsonwebtoken::EncodingKey::from_secret(&x)).unwrap(),
    ));
    // Properly signed, but wrong in what they say.
    forged.push((
        "unknown kid",
        sign_with_gateway_key(&w.gw, Some("nope"), &good),
    ));
    let now = good["iat"].as_i64().unwrap();
    let mut c = good.clone();
    c["exp"] = json!(now - 3600);
    forged.push(("expired", sign_with_gateway_key(&w.gw, None, &c)));
    let mut c = good.clone();
    c["aud"] = json!("someone-else");
    forged.push(("wrong aud", sign_with_gateway_key(&w.gw, None, &c)));
    let mut c = good.clone();
    c["iss"] = json!("https://evil.example");
    forged.push(("wrong iss", sign_with_gateway_key(&w.gw, None, &c)));
    let mut c = good.clone();
    c["nbf"] = json!(now + 3600);
    forged.push(("not yet valid", sign_with_gateway_key(&w.gw, None, &c)));
    let mut c = good.clone();
    c["sid"] = json!("no-such-session");
    forged.push(("no live session", sign_with_gateway_key(&w.gw, None, &c)));
    forged.push(("garbage", "not.a.jwt".into()));

    // The control: a properly signed copy of the real claims passes.
    assert_eq!(
        status_of(&w.gw, "/app/x", &sign_with_gateway_key(&w.gw, None, &good))
            .await
            .0,
        200
    );
    for (what, token) in &forged {
        assert_eq!(
            status_of(&w.gw, "/app/x", token).await.0,
            401,
            "proxy accepted: {what}"
        );
        assert_eq!(
            status_of(&w.gw, "/auth/me", token).await.0,
            401,
            "/auth/me accepted: {what}"
        );
        let r =
            w.gw.client
                .get(w.gw.url("/auth/validate"))
                .bearer_auth(token)
                .header("x-forwarded-uri", "/app/x")
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 401, "validate accepted: {what}");
    }
    w.gw.stop().await;
}

#[tokio::test]
async fn refresh_rotates_detects_reuse_and_tolerates_parallel_refreshes() {
    let w = world("").await;
    let t = user(&w, "rot@example.com").await;
    let r0 = t["refresh_token"].as_str().unwrap().to_string();
    let (status, v) =
        w.gw.post("/auth/token/refresh", json!({"refresh_token": r0}))
            .await;
    assert_eq!(status, 200);
    let r1 = v["data"]["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r0, "rotated");
    assert_eq!(v["data"]["session_id"], t["session_id"], "same session");

    // r0 again inside the grace window: the same r1, no revocation.
    let (status, v) =
        w.gw.post("/auth/token/refresh", json!({"refresh_token": r0}))
            .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["refresh_token"], r1.as_str());

    // Ten parallel refreshes of r1: one rotation, every caller gets the same r2.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let client = w.gw.client.clone();
        let url = w.gw.url("/auth/token/refresh");
        let r1 = r1.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .json(&json!({"refresh_token": r1}))
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            let v: serde_json::Value = r.json().await.unwrap();
            (
                s,
                v["data"]["refresh_token"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    assert!(results.iter().all(|(s, _)| *s == 200), "{results:?}");
    let r2 = results[0].1.clone();
    assert!(
        results.iter().all(|(_, r)| *r == r2),
        "one rotation: {results:?}"
    );
    assert_ne!(r2, r1);

    // After the grace window, r1 is reuse: the whole session ends.
    w.clock.advance(Duration::from_secs(6));
    let (status, v) =
        w.gw.post("/auth/token/refresh", json!({"refresh_token": r1}))
            .await;
    assert_eq!(status, 401, "{v}");
    let (status, _) =
        w.gw.post("/auth/token/refresh", json!({"refresh_token": r2}))
            .await;
    assert_eq!(status, 401, "the live refresh token died with its session");
    assert_eq!(
        status_of(&w.gw, "/auth/me", t["access_token"].as_str().unwrap())
            .await
            .0,
        401
    );
    w.gw.stop().await;
}

#[tokio::test]
async fn cookies_alone_authenticate_and_csrf_is_checked() {
    let w = world("").await;
    let r =
        w.gw.client
            .post(w.gw.url("/auth/login"))
            .json(&json!({"login": "x", "password": "y"}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 401);
    register_verified(
        &w.gw,
        &w.smtp,
        json!({"email": "cookie@example.com", "password": PW}),
    )
    .await;
    let r =
        w.gw.client
            .post(w.gw.url("/auth/login"))
            .json(&json!({"login": "cookie@example.com", "password": PW}))
            .send()
            .await
            .unwrap();
    let set: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect();
    let access = set
        .iter()
        .find(|c| c.starts_with("__Host-authgate-access="))
        .unwrap()
        .clone();
    let refresh = set
        .iter()
        .find(|c| c.starts_with("__Secure-authgate-refresh="))
        .unwrap()
        .clone();
    // As a browser sends it: with the cookie naming the session it belongs to.
    let session = set
        .iter()
        .find(|c| c.starts_with("__Host-authgate-session="))
        .unwrap();
    let refresh = format!("{refresh}; {session}");

    let get = |path: &str| {
        w.gw.client
            .get(w.gw.url(path))
            .header("cookie", access.clone())
    };
    assert_eq!(get("/auth/me").send().await.unwrap().status(), 200);
    assert_eq!(get("/app/page").send().await.unwrap().status(), 200);
    let echo: serde_json::Value = get("/app/page").send().await.unwrap().json().await.unwrap();
    assert_eq!(
        echo["headers"]["x-auth-user-email"][0],
        "cookie@example.com"
    );

    // State changes by cookie need our origin.
    let post = |path: &str, cookie: &str| {
        w.gw.client
            .post(w.gw.url(path))
            .header("cookie", cookie.to_string())
    };
    assert_eq!(
        post("/auth/logout", &access).send().await.unwrap().status(),
        403,
        "no Origin, no Sec-Fetch-Site"
    );
    assert_eq!(
        post("/auth/logout", &access)
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        post("/auth/logout", &access)
            .header("sec-fetch-site", "cross-site")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        post("/auth/token/refresh", &refresh)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let r = post("/auth/token/refresh", &refresh)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = post("/auth/logout", &access)
        .header("origin", "https://localhost:8443")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cleared: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        cleared.iter().all(|c| c.contains("Max-Age=0")),
        "{cleared:?}"
    );
    assert_eq!(get("/auth/me").send().await.unwrap().status(), 401);
    w.gw.stop().await;
}

#[tokio::test]
async fn roles_and_admin() {
    let w = world("").await;
    let alice = user(&w, "alice@example.com").await;
    let bob = user(&w, "bob@example.com").await;
    let app = w.gw.running.as_ref().unwrap().app.clone();
    let alice_id: uuid::Uuid = alice["user"]["id"].as_str().unwrap().parse().unwrap();
    app.accounts
        .set_roles(&alice_id, vec!["admin".into()])
        .await
        .unwrap();
    let admin = login(&w.gw, "alice@example.com", PW).await;
    let at = admin["access_token"].as_str().unwrap();
    let bt = bob["access_token"].as_str().unwrap();

    assert_eq!(
        status_of(&w.gw, "/vendor/x", bt).await,
        (403, "FORBIDDEN".into())
    );
    assert_eq!(status_of(&w.gw, "/vendor/x", at).await.0, 200);
    assert_eq!(
        status_of(&w.gw, "/auth/admin/users", bt).await,
        (403, "FORBIDDEN".into())
    );
    assert_eq!(
        w.gw.client
            .get(w.gw.url("/auth/admin/users"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    let (status, v) =
        w.gw.call(Method::GET, "/auth/admin/users?q=bob", at, None)
            .await;
    assert_eq!(status, 200);
    let users = v["data"]["users"].as_array().unwrap();
    assert_eq!(users.len(), 1);
    let bob_id = users[0]["id"].as_str().unwrap().to_string();
    let (_, v) = w.gw.call(Method::GET, "/auth/admin/users", at, None).await;
    assert_eq!(v["data"]["users"].as_array().unwrap().len(), 2);

    let (status, v) =
        w.gw.call(
            Method::GET,
            &format!("/auth/admin/users/{bob_id}/sessions"),
            at,
            None,
        )
        .await;
    assert_eq!((status, v["data"].as_array().unwrap().len()), (200, 1));

    // Block: bob's token dies at once and he cannot sign in; unblock restores.
    let (status, _) =
        w.gw.call(
            Method::POST,
            &format!("/auth/admin/users/{bob_id}/block"),
            at,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(status_of(&w.gw, "/app/x", bt).await.0, 401);
    let (status, v) =
        w.gw.post(
            "/auth/login",
            json!({"login": "bob@example.com", "password": PW}),
        )
        .await;
    assert_eq!((status, v["code"].as_str()), (403, Some("USER_BLOCKED")));
    w.gw.call(
        Method::POST,
        &format!("/auth/admin/users/{bob_id}/unblock"),
        at,
        None,
    )
    .await;
    login(&w.gw, "bob@example.com", PW).await;

    // Roles: vendor opens the vendor route (after signing in again).
    let (status, v) =
        w.gw.call(
            Method::PUT,
            &format!("/auth/admin/users/{bob_id}/roles"),
            at,
            Some(json!({"roles": ["customer", "vendor"]})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["roles"], json!(["customer", "vendor"]));
    let bob2 = login(&w.gw, "bob@example.com", PW).await;
    assert_eq!(
        status_of(&w.gw, "/vendor/x", bob2["access_token"].as_str().unwrap())
            .await
            .0,
        200
    );
    let echo: serde_json::Value =
        w.gw.client
            .get(w.gw.url("/vendor/x"))
            .bearer_auth(bob2["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(echo["headers"]["x-auth-user-roles"][0], "customer,vendor");

    let (status, v) =
        w.gw.call(
            Method::DELETE,
            &format!("/auth/admin/users/{bob_id}/sessions"),
            at,
            None,
        )
        .await;
    assert_eq!((status, v["data"]["revoked"].as_u64()), (200, Some(1)));
    assert_eq!(
        status_of(&w.gw, "/app/x", bob2["access_token"].as_str().unwrap())
            .await
            .0,
        401
    );
    w.gw.stop().await;
}

#[tokio::test]
async fn sessions_are_per_device_and_only_ones_own() {
    let w = world("").await;
    let a1 = user(&w, "dev@example.com").await;
    let a2 = login(&w.gw, "dev@example.com", PW).await;
    let other = user(&w, "other@example.com").await;
    let t1 = a1["access_token"].as_str().unwrap();
    let (_, v) = w.gw.call(Method::GET, "/auth/sessions", t1, None).await;
    let list = v["data"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    for s in list {
        for k in [
            "id",
            "created_at",
            "last_seen_at",
            "expires_at",
            "ip",
            "user_agent",
            "device",
            "os",
            "current",
        ] {
            assert!(s.get(k).is_some(), "{k} missing in {s}");
        }
        assert_eq!(s["current"], s["id"] == a1["session_id"]);
        assert_eq!(s["ip"], "127.0.0.1");
    }
    // Someone else's session: 404, untouched.
    let (status, _) =
        w.gw.call(
            Method::DELETE,
            &format!("/auth/sessions/{}", other["session_id"].as_str().unwrap()),
            t1,
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        status_of(&w.gw, "/auth/me", other["access_token"].as_str().unwrap())
            .await
            .0,
        200
    );
    // Sign out the other device.
    let (status, _) =
        w.gw.call(
            Method::DELETE,
            &format!("/auth/sessions/{}", a2["session_id"].as_str().unwrap()),
            t1,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        status_of(&w.gw, "/auth/me", a2["access_token"].as_str().unwrap())
            .await
            .0,
        401
    );
    assert_eq!(status_of(&w.gw, "/auth/me", t1).await.0, 200);
    // Password change ends the other sessions but keeps this one.
    let a3 = login(&w.gw, "dev@example.com", PW).await;
    let (status, v) = w.gw.call(Method::POST, "/auth/password/change", t1, Some(json!({"current_password": "wrong one entirely", "new_password": "another fine passphrase"}))).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (401, Some("INVALID_CREDENTIALS"))
    );
    let (status, _) =
        w.gw.call(
            Method::POST,
            "/auth/password/change",
            t1,
            Some(json!({"current_password": PW, "new_password": "another fine passphrase"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(status_of(&w.gw, "/auth/me", t1).await.0, 200);
    assert_eq!(
        status_of(&w.gw, "/auth/me", a3["access_token"].as_str().unwrap())
            .await
            .0,
        401
    );
    // Profile update.
    let (status, v) =
        w.gw.call(
            Method::PATCH,
            "/auth/me",
            t1,
            Some(json!({"full_name": "Dev Eloper", "phone": null, "profile": {"city": "Oslo"}})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["full_name"], "Dev Eloper");
    assert_eq!(v["data"]["profile"]["city"], "Oslo");
    let (status, v) =
        w.gw.call(
            Method::PATCH,
            "/auth/me",
            t1,
            Some(json!({"email": "new@example.com", "roles": ["admin"]})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        v["fields"]["email"].is_string() && v["fields"]["roles"].is_string(),
        "{v}"
    );
    w.gw.stop().await;
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid() {
    let w = world("").await;
    let t1 = user(&w, "keys@example.com").await;
    let old = t1["access_token"].as_str().unwrap();
    let (h1, _) = claims(old);
    w.clock.advance(Duration::from_secs(1));
    authgate::tokens::generate_key(
        &w.gw.dir.path().join("keys"),
        authgate::config::TokenAlgorithm::EdDSA,
        authgate::clock::Clock::now(&w.clock),
    )
    .unwrap();
    w.gw.running
        .as_ref()
        .unwrap()
        .app
        .sessions
        .tokens()
        .reload_keys()
        .await
        .unwrap();
    assert_eq!(
        status_of(&w.gw, "/auth/me", old).await.0,
        200,
        "old key still verifies"
    );
    let t2 = login(&w.gw, "keys@example.com", PW).await;
    let (h2, _) = claims(t2["access_token"].as_str().unwrap());
    assert_ne!(h1["kid"], h2["kid"], "the new key signs");
    let jwks: serde_json::Value =
        w.gw.client
            .get(w.gw.url("/auth/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    w.gw.stop().await;
}

#[tokio::test]
async fn authelia_preset_and_forwarded_token() {
    let w = world("[identity_headers]\npreset = \"authelia\"\naccess_token = \"X-Access-Token\"\n")
        .await;
    register_verified(
        &w.gw,
        &w.smtp,
        json!({"email": "ae@example.com", "password": PW}),
    )
    .await;
    let t = login(&w.gw, "ae@example.com", PW).await;
    let jwt = t["access_token"].as_str().unwrap();
    let echo: serde_json::Value =
        w.gw.client
            .get(w.gw.url("/app/x"))
            .bearer_auth(jwt)
            .header("remote-user", "admin")
            .header("remote-groups", "admin")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let h = &echo["headers"];
    assert_eq!(
        h["remote-user"],
        json!(["ae@example.com"]),
        "no username: the email, and the spoof is gone"
    );
    assert_eq!(h["remote-email"], json!(["ae@example.com"]));
    assert_eq!(h["remote-groups"], json!(["customer"]));
    assert_eq!(h["remote-user-id"], json!([t["user"]["id"]]));
    assert_eq!(h["x-access-token"], json!([jwt]));
    assert!(h.get("x-auth-user-id").is_none());
    // Public routes strip the spoofs too.
    let echo: serde_json::Value =
        w.gw.client
            .get(w.gw.url("/pub"))
            .header("remote-user", "admin")
            .header("x-access-token", "forged")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert!(
        echo["headers"].get("remote-user").is_none()
            && echo["headers"].get("x-access-token").is_none(),
        "{echo}"
    );
    w.gw.stop().await;
}

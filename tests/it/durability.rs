//! Acknowledged writes survive `kill -9`: the real binary is killed the instant after a 201.

use crate::harness::*;
use serde_json::json;

const CONFIG: &str = "[otp]\nresend_cooldown = \"0\"\n";

#[tokio::test]
async fn registration_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Binary::start(dir.path(), CONFIG).await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", gw.addr);
    let r = client
        .post(format!("{base}/auth/register"))
        .json(&json!({"email": "durable@example.com", "password": "correct horse battery staple"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let reg: serde_json::Value = r.json().await.unwrap();
    gw.signal("-KILL");
    let mut gw = gw;
    let status = gw.child.wait().await.unwrap();
    assert!(!status.success(), "killed, not exited");

    // The account is in the store; the mail queue is memory and may have died with the
    // process, so ask for a new code (no cooldown in this config), verify, sign in.
    let gw = Binary::start(dir.path(), CONFIG).await;
    let base = format!("http://{}", gw.addr);
    let outbox = dir.path().join("outbox");
    let names = || -> std::collections::HashSet<std::path::PathBuf> {
        std::fs::read_dir(&outbox)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let before = names();
    let r = client
        .post(format!("{base}/auth/verify/resend"))
        .json(&json!({"email": "durable@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut code = None;
    // The code of the mail that the resend wrote (not one the killed process may have left).
    for _ in 0..250 {
        code = names().difference(&before).find_map(|path| {
            let text = std::fs::read_to_string(path).ok()?.replace("=\r\n", "");
            text.lines()
                .map(str::trim)
                .find(|l| l.len() == 6 && l.bytes().all(|b| b.is_ascii_digit()))
                .map(str::to_string)
        });
        if code.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let code = code.expect("verification mail in the outbox: the account survived");
    let r = client
        .post(format!("{base}/auth/verify"))
        .json(&json!({"email": "durable@example.com", "code": code, "signup_token": reg["data"]["signup_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = client
        .post(format!("{base}/auth/login"))
        .json(&json!({"login": "durable@example.com", "password": "correct horse battery staple"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// An authenticator confirmed the instant before `kill -9` is there after the restart: the
/// password alone no longer signs in.
#[tokio::test]
async fn a_confirmed_authenticator_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Binary::start(dir.path(), CONFIG).await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", gw.addr);
    let pw = "correct horse battery staple";
    let email = "sticky@example.com";
    let post = |path: &str, body: serde_json::Value, token: Option<&str>| {
        let mut r = client.post(format!("{base}{path}")).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let r = post(
        "/auth/register",
        json!({"email": email, "password": pw}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let reg: serde_json::Value = r.json().await.unwrap();
    let mut code = None;
    for _ in 0..250 {
        code = outbox_code(&dir.path().join("outbox"), email);
        if code.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = post(
        "/auth/verify",
        json!({"email": email, "code": code.unwrap(), "signup_token": reg["data"]["signup_token"], "sign_in": true}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let token = v["data"]["access_token"].as_str().unwrap().to_string();
    let r = post(
        "/auth/mfa/totp",
        json!({"current_password": pw}),
        Some(&token),
    )
    .await
    .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    let secret = v["data"]["secret"].as_str().unwrap().to_string();
    let now = authgate::clock::Clock::unix_now(&authgate::clock::SystemClock);
    let r = post(
        "/auth/mfa/totp/confirm",
        json!({"code": crate::second_factors::totp(&secret, now)}),
        Some(&token),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    gw.signal("-KILL");
    let mut gw = gw;
    assert!(
        !gw.child.wait().await.unwrap().success(),
        "killed, not exited"
    );

    let gw = Binary::start(dir.path(), CONFIG).await;
    let r = client
        .post(format!("http://{}/auth/login", gw.addr))
        .json(&json!({"login": email, "password": pw}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["data"]["mfa_required"], true, "{v}");
    assert!(v["data"].get("access_token").is_none());
}

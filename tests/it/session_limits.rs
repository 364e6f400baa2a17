//! Sessions an account can pile up, and a sign-in that races "sign out everywhere".

use crate::harness::*;
use crate::mail::Smtp;
use crate::seeds::{login, register_verified};
use serde_json::json;

const PW: &str = "correct horse battery staple";

#[tokio::test]
async fn sessions_per_account_are_capped_oldest_first() {
    let smtp = Smtp::start();
    let gw = Gateway::start_with(
        "[tokens]\nmax_sessions_per_account = 3\n[rate_limit]\nenabled = false\n",
        Some(&smtp),
        None,
    )
    .await;
    register_verified(
        &gw,
        &smtp,
        json!({"email": "cap@example.com", "password": PW}),
    )
    .await;
    let mut tokens = Vec::new();
    for _ in 0..5 {
        tokens.push(
            login(&gw, "cap@example.com", PW).await["access_token"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let (status, v) = gw
        .call(reqwest::Method::GET, "/auth/sessions", &tokens[4], None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["data"].as_array().unwrap().len(), 3, "{v}");
    for (i, t) in tokens.iter().enumerate() {
        let (status, _) = gw.call(reqwest::Method::GET, "/auth/me", t, None).await;
        assert_eq!(status, if i < 2 { 401 } else { 200 }, "session {i}");
    }
    gw.stop().await;
}

/// A sign-in whose password check came before a "sign out everywhere" and whose session is
/// written after it must not leave a live session behind.
#[tokio::test]
async fn a_sign_in_racing_sign_out_everywhere_leaves_no_session() {
    let smtp = Smtp::start();
    let gw = Gateway::start_with("", Some(&smtp), None).await;
    register_verified(
        &gw,
        &smtp,
        json!({"email": "race@example.com", "password": PW}),
    )
    .await;
    let token = login(&gw, "race@example.com", PW).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let app = gw.running.as_ref().unwrap().app.clone();
    // The racing sign-in has checked the password: this is the account as it saw it.
    let seen = app
        .accounts
        .store()
        .user_by_email("race@example.com")
        .await
        .unwrap()
        .unwrap();
    let (status, _) = gw
        .call(
            reqwest::Method::POST,
            "/auth/logout",
            &token,
            Some(json!({"all": true})),
        )
        .await;
    assert_eq!(status, 200);
    // ...and writes its session only now.
    let client = authgate::sessions::ClientInfo {
        ip: "127.0.0.1".parse().unwrap(),
        user_agent: "racer".into(),
    };
    assert!(app.sessions.sign_in(&seen, &client, &[]).await.is_err());
    assert!(
        app.sessions.list(&seen.id).await.unwrap().is_empty(),
        "no session survived"
    );
    // A sign-in that starts afterwards is fine.
    login(&gw, "race@example.com", PW).await;
    gw.stop().await;
}

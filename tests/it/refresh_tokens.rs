//! Refresh tokens that merely name a session (its id reaches the upstream in
//! X-Auth-Session-Id) are guesses: refused like any unknown token, and they end nothing. A
//! token really issued for the session and rotated away is a stolen copy in use, however
//! many rotations ago: that ends the session.

use crate::harness::*;
use crate::mail::Smtp;
use crate::seeds::{login, register_verified};
use authgate::clock::ManualClock;
use serde_json::json;
use std::time::Duration;

const PW: &str = "correct horse battery staple";

#[tokio::test]
async fn a_refresh_token_that_only_names_a_session_does_not_end_it() {
    let smtp = Smtp::start();
    let gw = Gateway::start_with("", Some(&smtp), None).await;
    register_verified(
        &gw,
        &smtp,
        json!({"email": "g@example.com", "password": PW}),
    )
    .await;
    let t = login(&gw, "g@example.com", PW).await;
    let sid = t["session_id"].as_str().unwrap();
    let access = t["access_token"].as_str().unwrap();
    let a43 = "A".repeat(43);
    let b22 = "B".repeat(22);
    let unknown = gw
        .post(
            "/auth/token/refresh",
            json!({"refresh_token": format!("rt2.nosuchsession.{a43}.{b22}")}),
        )
        .await;
    assert_eq!(unknown.0, 401);
    // The real token with another MAC: its random part alone proves nothing.
    let (real_head, _) = t["refresh_token"]
        .as_str()
        .unwrap()
        .rsplit_once('.')
        .unwrap();
    for guess in [
        format!("rt1.{sid}.{a43}"),
        format!("rt2.{sid}.{a43}.{b22}"),
        format!("{real_head}.{b22}"),
        format!("rt1.{sid}.garbage"),
    ] {
        let answer = gw
            .post("/auth/token/refresh", json!({"refresh_token": guess}))
            .await;
        assert_eq!(
            answer, unknown,
            "{guess}: the same answer as for no session at all"
        );
        // Nothing ended: the access token and the real refresh token still work.
        let (status, _) = gw
            .call(reqwest::Method::GET, "/auth/me", access, None)
            .await;
        assert_eq!(status, 200, "after {guess}");
    }
    let (status, v) = gw
        .post(
            "/auth/token/refresh",
            json!({"refresh_token": t["refresh_token"]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    gw.stop().await;
}

#[tokio::test]
async fn a_token_rotated_away_long_ago_still_ends_the_session() {
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    let gw = Gateway::start_with("", Some(&smtp), Some(&clock)).await;
    register_verified(
        &gw,
        &smtp,
        json!({"email": "r@example.com", "password": PW}),
    )
    .await;
    let t = login(&gw, "r@example.com", PW).await;
    let r0 = t["refresh_token"].as_str().unwrap().to_string();
    let mut current = r0.clone();
    for _ in 0..3 {
        clock.advance(Duration::from_secs(10));
        let (status, v) = gw
            .post("/auth/token/refresh", json!({"refresh_token": current}))
            .await;
        assert_eq!(status, 200, "{v}");
        current = v["data"]["refresh_token"].as_str().unwrap().to_string();
    }
    let access = {
        let (_, v) = gw
            .post("/auth/token/refresh", json!({"refresh_token": current}))
            .await;
        current = v["data"]["refresh_token"].as_str().unwrap().to_string();
        v["data"]["access_token"].as_str().unwrap().to_string()
    };
    clock.advance(Duration::from_secs(10));
    // r0, four rotations back: issued for this session (its MAC says so), so a copy is in use.
    let (status, v) = gw
        .post("/auth/token/refresh", json!({"refresh_token": r0}))
        .await;
    assert_eq!(status, 401, "{v}");
    let (status, _) = gw
        .call(reqwest::Method::GET, "/auth/me", &access, None)
        .await;
    assert_eq!(status, 401, "the session has ended");
    let (status, _) = gw
        .post("/auth/token/refresh", json!({"refresh_token": current}))
        .await;
    assert_eq!(status, 401);
    gw.stop().await;
}

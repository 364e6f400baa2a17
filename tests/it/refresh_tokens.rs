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

/// A sibling subdomain (`evil.app.test`) can set a `__Secure-` cookie for the parent domain,
/// scoped to the auth prefix with a longer path so that the browser sends it first: the
/// attacker's own refresh token. The login page's transparent refresh, the refresh endpoint
/// and the sign-out page must not believe it: a refresh cookie counts only when it belongs
/// to the session the gateway's host-only session cookie names, so the victim is never
/// signed in to the attacker's account, and a sign-out ends the victim's own session.
#[tokio::test]
async fn a_planted_refresh_cookie_signs_no_one_in_to_the_planters_account() {
    let smtp = Smtp::start();
    let gw = Gateway::start_with("", Some(&smtp), None).await;
    for email in ["victim@example.com", "evil@example.com"] {
        register_verified(&gw, &smtp, json!({"email": email, "password": PW})).await;
    }
    let evil = login(&gw, "evil@example.com", PW).await;
    let evil_rt = evil["refresh_token"].as_str().unwrap().to_string();
    let victim = login(&gw, "victim@example.com", PW).await;
    let victim_rt = victim["refresh_token"].as_str().unwrap().to_string();
    let victim_sid = victim["session_id"].as_str().unwrap().to_string();
    let refresh_cookie = "__Secure-authgate-refresh";
    let session_cookie = "__Host-authgate-session";
    let navigate = |cookie: String| {
        gw.client
            .get(gw.url("/auth/login?rd=%2Fapp"))
            .header("cookie", cookie)
            .header("sec-fetch-site", "cross-site")
            .header("sec-fetch-mode", "navigate")
            .header("sec-fetch-dest", "document")
            .send()
    };
    let sessions_of = |r: &reqwest::Response| -> Vec<String> {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|c| c.strip_prefix("__Host-authgate-session="))
            .map(|c| c.split(';').next().unwrap_or("").to_string())
            .filter(|v| !v.is_empty())
            .collect()
    };

    let refresh_set_by = |r: &reqwest::Response| -> String {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| c.strip_prefix("__Secure-authgate-refresh="))
            .map(|c| c.split(';').next().unwrap().to_string())
            .unwrap()
    };

    // A browser that never signed in here, carrying only the planted cookie: the form.
    let r = navigate(format!("{refresh_cookie}={evil_rt}"))
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the sign-in form, not the attacker's session"
    );
    assert!(sessions_of(&r).is_empty());
    // The victim's browser, the planted cookie sent first: the victim's own session.
    let r = navigate(format!(
        "{refresh_cookie}={evil_rt}; {refresh_cookie}={victim_rt}; {session_cookie}={victim_sid}"
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(sessions_of(&r), vec![victim_sid.clone()]);
    let victim_rt = refresh_set_by(&r);
    // A planted cookie that names the victim's session (applications see its id) but that
    // the gateway never issued, sent first: passed over, and nothing is signed out.
    let forged = format!("rt2.{victim_sid}.{}.{}", "A".repeat(43), "B".repeat(22));
    let r = navigate(format!(
        "{refresh_cookie}={forged}; {refresh_cookie}={victim_rt}; {session_cookie}={victim_sid}"
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 303, "the victim's own token refreshed");
    assert_eq!(sessions_of(&r), vec![victim_sid.clone()]);
    let victim_rt = refresh_set_by(&r);

    // The refresh endpoint, asked from the gateway's own origin, the same way.
    let refresh = |cookie: String| {
        gw.client
            .post(gw.url("/auth/token/refresh"))
            .header("cookie", cookie)
            .header("sec-fetch-site", "same-origin")
            .send()
    };
    let r = refresh(format!("{refresh_cookie}={evil_rt}"))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = refresh(format!(
        "{refresh_cookie}={evil_rt}; {refresh_cookie}={victim_rt}; {session_cookie}={victim_sid}"
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["data"]["session_id"], victim_sid.as_str());
    let victim_rt = body["data"]["refresh_token"].as_str().unwrap().to_string();

    // The attacker's session was never used by the victim's browser: its token still works.
    let (status, body) = gw
        .post("/auth/token/refresh", json!({"refresh_token": evil_rt}))
        .await;
    assert_eq!(status, 200, "the planted token was never rotated: {body}");
    let evil_rt = body["data"]["refresh_token"].as_str().unwrap().to_string();

    // Signing out on a page whose access token has expired goes by the refresh cookie: the
    // victim's own session ends, not the one the planted cookie names.
    let csrf = "c".repeat(43);
    let r = gw
        .client
        .post(gw.url("/auth/ui/logout"))
        .header(
            "cookie",
            format!(
                "{refresh_cookie}={evil_rt}; {refresh_cookie}={victim_rt}; \
                 {session_cookie}={victim_sid}; __Host-authgate-csrf={csrf}"
            ),
        )
        .header("sec-fetch-site", "same-origin")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let (status, _) = gw
        .post("/auth/token/refresh", json!({"refresh_token": victim_rt}))
        .await;
    assert_eq!(status, 401, "the victim's session has ended");
    let (status, _) = gw
        .post("/auth/token/refresh", json!({"refresh_token": evil_rt}))
        .await;
    assert_eq!(status, 200, "and the attacker's has not");
    gw.stop().await;
}

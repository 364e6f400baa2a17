//! The resend cooldown guards a live code and nothing else: a second device that asks for a
//! code just after the first one used its code gets one at once (it used to wait a minute),
//! while a code that is still alive cannot be replaced, for real and unknown addresses alike.

use crate::harness::*;
use crate::mail::Smtp;
use crate::seeds::register_verified;
use serde_json::json;

const PW: &str = "correct horse battery staple";

#[tokio::test]
async fn a_used_or_dead_code_does_not_hold_back_the_next_one() {
    let smtp = Smtp::start();
    // The per-recipient quota still counts every code; raised so that it is not what answers.
    let gw = Gateway::start_with(
        "[rate_limit]\ncode_send_per_recipient = [\"50/10m\"]\ncode_verify_per_account = [\"50/1m\"]\n[otp]\nmax_attempts = 3\n",
        Some(&smtp),
        None,
    )
    .await;
    let email = "cool@example.com";
    register_verified(&gw, &smtp, json!({"email": email, "password": PW})).await;
    let mut sent = smtp.count_to(email);
    // Sign in by code on three devices, one right after the other.
    for device in 0..3 {
        let (status, v) = gw.post("/auth/login/code", json!({"email": email})).await;
        assert_eq!(status, 200, "device {device}: {v}");
        sent += 1;
        let code = smtp.code(email, sent).await;
        let (status, v) = gw
            .post(
                "/auth/login/code/verify",
                json!({"email": email, "code": code}),
            )
            .await;
        assert_eq!(status, 200, "device {device}: {v}");
    }
    // A live code is not replaced within the cooldown...
    let (status, _) = gw.post("/auth/login/code", json!({"email": email})).await;
    assert_eq!(status, 200);
    sent += 1;
    smtp.nth_to(email, sent).await;
    let (status, v) = gw.post("/auth/login/code", json!({"email": email})).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (429, Some("OTP_STILL_VALID")),
        "{v}"
    );
    // ...but once it is out of tries it is dead, and a new one comes at once. (Three tries,
    // so that the failures stay short of the account's first pause.)
    for _ in 0..3 {
        gw.post(
            "/auth/login/code/verify",
            json!({"email": email, "code": "000000"}),
        )
        .await;
    }
    let (status, v) = gw.post("/auth/login/code", json!({"email": email})).await;
    assert_eq!(status, 200, "{v}");
    sent += 1;
    let code = smtp.code(email, sent).await;
    let (status, _) = gw
        .post(
            "/auth/login/code/verify",
            json!({"email": email, "code": code}),
        )
        .await;
    assert_eq!(status, 200);
    // Every purpose alike: a used reset code does not hold back the next reset.
    for _ in 0..2 {
        let (status, v) = gw
            .post("/auth/password/forgot", json!({"email": email}))
            .await;
        assert_eq!(status, 200, "{v}");
        sent += 1;
        let code = smtp.code(email, sent).await;
        let (status, v) = gw
            .post(
                "/auth/password/reset/verify",
                json!({"email": email, "code": code}),
            )
            .await;
        assert_eq!(status, 200, "{v}");
    }
    gw.stop().await;
}

/// The cooldown answers an address without an account exactly as it answers one whose code
/// is still alive, and lifts when the pretended code runs out of tries, as a real one does.
#[tokio::test]
async fn the_cooldown_answers_alike_for_unknown_addresses() {
    let smtp = Smtp::start();
    let gw = Gateway::start_with("", Some(&smtp), None).await;
    register_verified(
        &gw,
        &smtp,
        json!({"email": "real@example.com", "password": PW}),
    )
    .await;
    let mut answers = Vec::new();
    for email in ["real@example.com", "ghost@example.com"] {
        let mut seen = Vec::new();
        for step in 0..3 {
            if step == 2 {
                for _ in 0..5 {
                    gw.post(
                        "/auth/login/code/verify",
                        json!({"email": email, "code": "000000"}),
                    )
                    .await;
                }
            }
            let (status, v) = gw.post("/auth/login/code", json!({"email": email})).await;
            seen.push((status, v["code"].as_str().unwrap_or("").to_string()));
        }
        answers.push(seen);
    }
    assert_eq!(
        answers[0], answers[1],
        "real and unknown addresses answer alike"
    );
    assert_eq!(answers[0][1], (429, "OTP_STILL_VALID".to_string()));
    assert_eq!(
        answers[0][2].0, 200,
        "a dead code no longer holds the cooldown"
    );
    gw.stop().await;
}

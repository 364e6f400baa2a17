//! Account flows beyond the seeds: codes (wrong, expired, reused, cross-purpose), lockout and
//! its expiry, duplicates under concurrency, enumeration safety and its switch, bad bodies,
//! and a mail server that is down.

use crate::harness::*;
use crate::mail::Smtp;
use crate::seeds::{login, register_verified};
use authgate::clock::ManualClock;
use serde_json::json;
use std::time::Duration;

const PW: &str = "correct horse battery staple";

#[tokio::test]
async fn codes_are_single_use_expiring_and_bound_to_their_purpose() {
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    let gw = Gateway::start_with("", Some(&smtp), Some(&clock)).await;
    let (status, _) = gw
        .post(
            "/auth/register",
            json!({"email": "c@example.com", "password": PW}),
        )
        .await;
    assert_eq!(status, 201);
    let verify_code = smtp.code("c@example.com", 1).await;

    // Cross-purpose: the verification code does not sign in or reset.
    gw.post("/auth/login/code", json!({"email": "c@example.com"}))
        .await;
    smtp.nth_to("c@example.com", 2).await;
    let (status, v) = gw
        .post(
            "/auth/login/code/verify",
            json!({"email": "c@example.com", "code": verify_code}),
        )
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("INVALID_OTP")),
        "verify code used for login"
    );
    let (status, v) = gw
        .post(
            "/auth/password/reset",
            json!({"email": "c@example.com", "code": verify_code, "new_password": PW}),
        )
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("INVALID_OTP")),
        "verify code used for reset"
    );

    // Right purpose works, once.
    let (status, _) = gw
        .post(
            "/auth/verify",
            json!({"email": "c@example.com", "code": verify_code}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, v) = gw
        .post(
            "/auth/verify",
            json!({"email": "c@example.com", "code": verify_code}),
        )
        .await;
    assert_eq!((status, v["code"].as_str()), (400, Some("INVALID_OTP")));

    // Expiry follows the (injected) clock: 10 minutes by default.
    clock.advance(Duration::from_secs(61));
    gw.post("/auth/login/code", json!({"email": "c@example.com"}))
        .await;
    let code = smtp.code("c@example.com", 3).await;
    clock.advance(Duration::from_secs(601));
    let (status, v) = gw
        .post(
            "/auth/login/code/verify",
            json!({"email": "c@example.com", "code": code}),
        )
        .await;
    assert_eq!((status, v["code"].as_str()), (400, Some("OTP_EXPIRED")));

    // Malformed codes are a validation error, not a spent try.
    let (status, v) = gw
        .post(
            "/auth/verify",
            json!({"email": "c@example.com", "code": "12ab"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(v["code"], "INVALID_REQUEST");
    assert!(v["fields"]["code"].is_string());
    gw.stop().await;
}

#[tokio::test]
async fn lockout_blocks_then_expires() {
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    let gw = Gateway::start_with(
        "[otp]\nlockout_threshold = 3\nlockout_duration = \"15m\"\n",
        Some(&smtp),
        Some(&clock),
    )
    .await;
    register_verified(
        &gw,
        &smtp,
        json!({"email": "l@example.com", "password": PW}),
    )
    .await;
    for _ in 0..2 {
        // Past the short escalating pauses, to reach the threshold lock.
        clock.advance(Duration::from_secs(30));
        let (status, v) = gw
            .post(
                "/auth/login",
                json!({"login": "l@example.com", "password": "not the password at all"}),
            )
            .await;
        assert_eq!(
            (status, v["code"].as_str()),
            (401, Some("INVALID_CREDENTIALS"))
        );
    }
    clock.advance(Duration::from_secs(30));
    let r = gw
        .client
        .post(gw.url("/auth/login"))
        .json(&json!({"login": "l@example.com", "password": "not the password at all"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "third failure locks");
    // The right password is refused while locked, with the same answer: a block never tells.
    let r = gw
        .client
        .post(gw.url("/auth/login"))
        .json(&json!({"login": "l@example.com", "password": PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 800 && retry <= 900, "{retry}");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], "USER_BLOCKED");
    clock.advance(Duration::from_secs(15 * 60 + 1));
    login(&gw, "l@example.com", PW).await;
    gw.stop().await;
}

#[tokio::test]
async fn twenty_concurrent_registrations_of_one_email_give_one_201() {
    let smtp = Smtp::start();
    // Rate limits would refuse most of these first; this test is about the store's uniqueness.
    let gw = Gateway::start_with("[rate_limit]\nenabled = false\n", Some(&smtp), None).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = gw.client.clone();
        let url = gw.url("/auth/register");
        tasks.push(tokio::spawn(async move {
            let email = if i % 2 == 0 {
                "race@example.com"
            } else {
                "RACE@example.com"
            };
            client
                .post(url)
                .json(&json!({"email": email}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        19,
        "{statuses:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn code_sending_answers_do_not_reveal_accounts_unless_configured() {
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    let gw = Gateway::start_with("", Some(&smtp), Some(&clock)).await;
    register_verified(
        &gw,
        &smtp,
        json!({"email": "known@example.com", "password": PW}),
    )
    .await;
    // Registration started the resend cooldown for the known address; let it pass.
    clock.advance(Duration::from_secs(61));
    for path in [
        "/auth/password/forgot",
        "/auth/login/code",
        "/auth/verify/resend",
    ] {
        let (s1, known) = gw.post(path, json!({"email": "known@example.com"})).await;
        let (s2, unknown) = gw.post(path, json!({"email": "unknown@example.com"})).await;
        assert_eq!((s1, s2), (200, 200), "{path}: {known} / {unknown}");
        assert_eq!(known["message"], unknown["message"], "{path}");
        assert_eq!(
            known["data"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            unknown["data"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>()
        );
    }
    // The cooldown is kept per address, account or not: a second ask is 429 for both.
    for email in ["known@example.com", "unknown@example.com"] {
        let (status, v) = gw
            .post("/auth/password/forgot", json!({"email": email}))
            .await;
        assert_eq!(
            (status, v["code"].as_str()),
            (429, Some("OTP_STILL_VALID")),
            "{email}"
        );
    }
    let (status, v) = gw
        .post(
            "/auth/verify",
            json!({"email": "unknown@example.com", "code": "123456"}),
        )
        .await;
    assert_eq!((status, v["code"].as_str()), (400, Some("INVALID_OTP")));
    gw.stop().await;

    let smtp = Smtp::start();
    let gw = Gateway::start_with(
        "[security]\nreveal_account_existence = true\n",
        Some(&smtp),
        None,
    )
    .await;
    register_verified(
        &gw,
        &smtp,
        json!({"email": "known@example.com", "password": PW}),
    )
    .await;
    for path in [
        "/auth/password/forgot",
        "/auth/login/code",
        "/auth/verify/resend",
    ] {
        let (status, v) = gw.post(path, json!({"email": "unknown@example.com"})).await;
        assert_eq!(
            (status, v["code"].as_str()),
            (404, Some("USER_DOES_NOT_EXIST")),
            "{path}"
        );
    }
    let (status, v) = gw
        .post("/auth/verify/resend", json!({"email": "known@example.com"}))
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (409, Some("ALREADY_VERIFIED"))
    );
    gw.stop().await;
}

#[tokio::test]
async fn bad_bodies_get_4xx_envelopes_and_the_gateway_keeps_serving() {
    let gw = Gateway::start("").await;
    let url = gw.url("/auth/register");
    let send = |body: reqwest::Body, ct: Option<&'static str>| {
        let mut r = gw.client.post(url.clone()).body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r.send()
    };
    let cases: Vec<(reqwest::Body, Option<&str>, u16, &str)> = vec![
        (
            "{not json".into(),
            Some("application/json"),
            400,
            "INVALID_REQUEST",
        ),
        (
            r#"{"email": 5}"#.into(),
            Some("application/json"),
            400,
            "INVALID_REQUEST",
        ),
        (
            r#"["a"]"#.into(),
            Some("application/json"),
            400,
            "INVALID_REQUEST",
        ),
        (
            r#"{"password": "x"}"#.into(),
            Some("application/json"),
            400,
            "INVALID_REQUEST",
        ),
        (
            "email=a@b.c".into(),
            Some("application/x-www-form-urlencoded"),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            r#"{"email": "a@b.c"}"#.into(),
            None,
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            format!(r#"{{"email": "{}"}}"#, "a".repeat(70 * 1024)).into(),
            Some("application/json"),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            format!("{}{}", "[".repeat(200), "]".repeat(200)).into(),
            Some("application/json"),
            400,
            "INVALID_REQUEST",
        ),
        (
            r#"{"email": "not-an-email"}"#.into(),
            Some("application/json"),
            400,
            "INVALID_REQUEST",
        ),
        (
            r#"{"email": "a@b.co", "password": "short"}"#.into(),
            Some("application/json"),
            400,
            "INVALID_REQUEST",
        ),
        (
            r#"{"email": "a@b.co", "password": "password123"}"#.into(),
            Some("application/json"),
            400,
            "INVALID_REQUEST",
        ),
    ];
    for (i, (body, ct, status, code)) in cases.into_iter().enumerate() {
        let r = send(body, ct).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "case {i}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            (v["status"].as_str(), v["code"].as_str()),
            (Some("error"), Some(code)),
            "case {i}: {v}"
        );
    }
    // Field errors name the field.
    let r = send(r#"{"email": 5}"#.into(), Some("application/json"))
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["fields"]["email"].is_string(), "{v}");
    let r = send(
        r#"{"email": "x", "username": "!", "phone": "12"}"#.into(),
        Some("application/json"),
    )
    .await
    .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    for f in ["email", "username", "phone"] {
        assert!(v["fields"][f].is_string(), "{f}: {v}");
    }
    // Unknown endpoint and wrong method.
    assert_eq!(
        gw.client
            .get(gw.url("/auth/nothing-here"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // (GET /auth/login is the hosted login page; GET /auth/register is nothing.)
    assert_eq!(
        gw.client
            .get(gw.url("/auth/register"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    assert_eq!(
        gw.client
            .get(gw.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    gw.stop().await;
}

#[tokio::test]
async fn smtp_down_does_not_hold_up_requests() {
    let dead = dead_addr().await;
    let toml = format!(
        "[mail]\nsmtp_url = \"smtp://127.0.0.1:{}\"\nattempts = 2\ntimeout = \"2s\"\n",
        dead.port()
    );
    let gw = Gateway::start(&toml).await;
    let started = authgate::clock::monotonic();
    let (status, v) = gw
        .post(
            "/auth/register",
            json!({"email": "nomail@example.com", "password": PW}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, _) = gw
        .post(
            "/auth/password/forgot",
            json!({"email": "nomail@example.com"}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "requests waited for the mail server"
    );
    // The failure is counted once the sender gives up.
    let mut failed = false;
    for _ in 0..100 {
        let m = gw
            .client
            .get(gw.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if m.contains("authgate_mail_failed_total 2") {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failed, "mail failures counted in metrics");
    gw.stop().await;
}

#[tokio::test]
async fn failures_add_escalating_pauses_before_the_lock() {
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    // Rate limits off: this is about the account's own pacing.
    let gw = Gateway::start_with(
        "[otp]\nlockout_threshold = 10\n[rate_limit]\nenabled = false\n",
        Some(&smtp),
        Some(&clock),
    )
    .await;
    register_verified(
        &gw,
        &smtp,
        json!({"email": "p@example.com", "password": PW}),
    )
    .await;
    let wrong = json!({"login": "p@example.com", "password": "not the password at all"});
    for _ in 0..4 {
        assert_eq!(
            gw.post("/auth/login", wrong.clone()).await.0,
            401,
            "no pause before half the threshold"
        );
    }
    // From the fifth failure on: 1 s, 2 s, 4 s ... during which even the right password waits.
    for pause in [1u64, 2, 4, 8] {
        assert_eq!(gw.post("/auth/login", wrong.clone()).await.0, 401);
        let r = gw
            .client
            .post(gw.url("/auth/login"))
            .json(&json!({"login": "p@example.com", "password": PW}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()["retry-after"], pause.to_string().as_str());
        clock.advance(Duration::from_secs(pause));
    }
    // A success clears the count.
    login(&gw, "p@example.com", PW).await;
    assert_eq!(gw.post("/auth/login", wrong.clone()).await.0, 401);
    assert_eq!(
        gw.post("/auth/login", wrong.clone()).await.0,
        401,
        "count restarted after the success"
    );
    gw.stop().await;
}

/// The pauses and the lock give nothing away: a login that matches no account gets the
/// same answers, in the same order, with the same Retry-After, as a real account's.
#[tokio::test]
async fn unknown_logins_are_paced_and_locked_like_real_ones() {
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    let gw = Gateway::start_with(
        "[otp]\nlockout_threshold = 6\nlockout_duration = \"10m\"\n[rate_limit]\nenabled = false\n",
        Some(&smtp),
        Some(&clock),
    )
    .await;
    register_verified(
        &gw,
        &smtp,
        json!({"email": "real@example.com", "password": PW, "username": "realname"}),
    )
    .await;
    let mut answers = Vec::new();
    for login in [
        "real@example.com",
        "ghost@example.com",
        "realname",
        "ghostname",
    ] {
        let mut seen = Vec::new();
        for step in 0..12 {
            let r = gw
                .client
                .post(gw.url("/auth/login"))
                .json(&json!({"login": login, "password": "not the password at all"}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let v: serde_json::Value = r.json().await.unwrap();
            seen.push((status, v["code"].as_str().unwrap_or("").to_string(), retry));
            // Sit out every other pause, so both pauses and the lock are met.
            if step % 2 == 1 {
                clock.advance(Duration::from_secs(4));
            }
        }
        clock.advance(Duration::from_secs(601));
        answers.push((login, seen));
    }
    let (_, first) = &answers[0];
    assert!(
        first
            .iter()
            .any(|(s, c, _)| *s == 403 && c == "USER_BLOCKED"),
        "the sequence reaches a pause or the lock: {first:?}"
    );
    for (login, seen) in &answers[1..] {
        assert_eq!(seen, first, "{login} answers like real@example.com");
    }
    gw.stop().await;
}

#[tokio::test]
async fn guessing_a_mailed_code_answers_alike_for_real_and_unknown_addresses() {
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    let gw = Gateway::start_with(
        "[otp]\nmax_attempts = 3\nlockout_threshold = 6\nlockout_duration = \"10m\"\n[rate_limit]\nenabled = false\n",
        Some(&smtp),
        Some(&clock),
    )
    .await;
    register_verified(
        &gw,
        &smtp,
        json!({"email": "real@example.com", "password": PW}),
    )
    .await;
    let mut answers = Vec::new();
    for (email, flow) in [
        ("real@example.com", "/auth/login/code"),
        ("ghost@example.com", "/auth/login/code"),
        ("real@example.com", "/auth/password/forgot"),
        ("ghost@example.com", "/auth/password/forgot"),
    ] {
        let (status, _) = gw.post(flow, json!({"email": email})).await;
        assert_eq!(status, 200, "{flow} for {email}");
        // Never the mailed code: a guess must be wrong for the real address too.
        let mailed = if email.starts_with("real") {
            // Each flow mails two codes (below); the registration mailed the first.
            let n = if flow.ends_with("code") { 2 } else { 4 };
            Some(smtp.code(email, n).await)
        } else {
            None
        };
        let wrong = if mailed.as_deref() == Some("000000") {
            "111111"
        } else {
            "000000"
        };
        let verify = if flow.ends_with("code") {
            "/auth/login/code/verify"
        } else {
            "/auth/password/reset/verify"
        };
        // Status and error code of one answer.
        let answer = |path: &'static str, body: serde_json::Value| async {
            let (status, v) = gw.post(path, body).await;
            (status, v["code"].as_str().unwrap_or("").to_string())
        };
        let guess = || answer(verify, json!({"email": email, "code": wrong}));
        let mut seen = Vec::new();
        for _ in 0..8 {
            seen.push(guess().await);
            // Past the pauses a failure earns, not past the code's lifetime.
            clock.advance(Duration::from_secs(20));
        }
        // Past the lock and the code's lifetime. A new code, left to expire: a guess at it
        // is answered OTP_EXPIRED and not counted, the next INVALID_OTP (no code).
        clock.advance(Duration::from_secs(601));
        let (status, _) = gw.post(flow, json!({"email": email})).await;
        assert_eq!(status, 200, "{flow} again for {email}");
        clock.advance(Duration::from_secs(601));
        // A wrong password is counted apart from the codes (so it stays short of a pause
        // over both rounds), and answered alike too.
        let wrong_password = json!({"login": email, "password": "not the password at all"});
        seen.push(answer("/auth/login", wrong_password).await);
        for _ in 0..2 {
            seen.push(guess().await);
        }
        clock.advance(Duration::from_secs(601));
        answers.push((email, flow, seen));
    }
    for pair in answers.chunks(2) {
        let [(_, flow, real), (_, _, ghost)] = pair else {
            panic!("pairs of real and unknown addresses")
        };
        let codes: Vec<&str> = real.iter().map(|(_, c)| c.as_str()).collect();
        assert_eq!(
            &codes[..3],
            ["INVALID_OTP", "INVALID_OTP", "ATTEMPTS_EXCEEDED"],
            "{flow}: two wrong tries, then the code is dead: {real:?}"
        );
        assert!(
            codes.contains(&"USER_BLOCKED"),
            "{flow}: six failures lock the account: {real:?}"
        );
        assert_eq!(
            &codes[8..],
            ["INVALID_CREDENTIALS", "OTP_EXPIRED", "INVALID_OTP"],
            "{flow}: an expired code (not counted), then none: {real:?}"
        );
        assert_eq!(
            ghost, real,
            "{flow}: the unknown address answers like the real one"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_squatters_password_does_not_survive_the_owners_code_sign_in() {
    let smtp = Smtp::start();
    let gw = Gateway::start_with("", Some(&smtp), None).await;
    // Someone registers an address that is not theirs, with their own password.
    let (status, _) = gw
        .post(
            "/auth/register",
            json!({"email": "owner@example.com", "password": "squatter's own passphrase"}),
        )
        .await;
    assert_eq!(status, 201);
    smtp.nth_to("owner@example.com", 1).await;
    // The address's owner signs in by code (which verifies the address)...
    gw.post("/auth/login/code", json!({"email": "owner@example.com"}))
        .await;
    let code = smtp.code("owner@example.com", 2).await;
    let (status, _) = gw
        .post(
            "/auth/login/code/verify",
            json!({"email": "owner@example.com", "code": code}),
        )
        .await;
    assert_eq!(status, 200);
    // ... and the squatter's password no longer opens the account.
    let (status, v) = gw
        .post(
            "/auth/login",
            json!({"login": "owner@example.com", "password": "squatter's own passphrase"}),
        )
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (401, Some("INVALID_CREDENTIALS"))
    );
    gw.stop().await;
}

#[tokio::test]
async fn posting_codes_for_an_account_without_one_does_not_lock_it() {
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    let gw = Gateway::start_with(
        "[otp]\nlockout_threshold = 3\n[rate_limit]\nenabled = false\n",
        Some(&smtp),
        Some(&clock),
    )
    .await;
    register_verified(
        &gw,
        &smtp,
        json!({"email": "target@example.com", "password": PW}),
    )
    .await;
    for _ in 0..10 {
        let (status, _) = gw
            .post(
                "/auth/login/code/verify",
                json!({"email": "target@example.com", "code": "123456"}),
            )
            .await;
        assert_eq!(status, 400);
    }
    login(&gw, "target@example.com", PW).await;
    gw.stop().await;
}

/// Email change: the current password (or, without one, a recent sign-in), then a code that
/// only the new address receives and that confirms only that address; afterwards the old
/// address is told, other devices are signed out, and only the new address signs in.
#[tokio::test]
async fn email_change_needs_proof_and_the_code_sent_to_the_new_address() {
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    // More mails from one IP than its per-minute quota: the limits are tested elsewhere.
    let gw =
        Gateway::start_with("[rate_limit]\nenabled = false\n", Some(&smtp), Some(&clock)).await;
    register_verified(
        &gw,
        &smtp,
        json!({"email": "old@example.com", "password": PW}),
    )
    .await;
    register_verified(
        &gw,
        &smtp,
        json!({"email": "taken@example.com", "password": PW}),
    )
    .await;
    let here = login(&gw, "old@example.com", PW).await;
    let there = login(&gw, "old@example.com", PW).await;
    let token = here["access_token"].as_str().unwrap();
    let start = |body: serde_json::Value, token: String| {
        let gw = &gw;
        async move {
            gw.call(reqwest::Method::POST, "/auth/me/email", &token, Some(body))
                .await
        }
    };

    let (status, _) = gw
        .post("/auth/me/email", json!({"email": "new@example.com"}))
        .await;
    assert_eq!(status, 401, "not signed in");
    let (status, v) = start(json!({"email": "new@example.com"}), token.into()).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["fields"]["current_password"].is_string(), "{v}");
    let (status, v) = start(
        json!({"email": "new@example.com", "current_password": "not it at all"}),
        token.into(),
    )
    .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (401, Some("INVALID_CREDENTIALS"))
    );
    let (status, v) = start(
        json!({"email": "Taken@example.com", "current_password": PW}),
        token.into(),
    )
    .await;
    assert_eq!((status, v["code"].as_str()), (409, Some("ALREADY_EXISTS")));
    let (status, v) = start(
        json!({"email": "old@example.com", "current_password": PW}),
        token.into(),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        smtp.count_to("taken@example.com"),
        1,
        "only its own verification"
    );

    let (status, v) = start(
        json!({"email": "new@example.com", "current_password": PW}),
        token.into(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["data"]["otp_expires_at"].is_string(), "{v}");
    let mail = smtp.nth_to("new@example.com", 1).await;
    assert!(
        mail.subject().contains("new email address"),
        "{}",
        mail.subject()
    );
    let code = mail.code();
    assert_eq!(
        smtp.count_to("old@example.com"),
        1,
        "no code to the old address"
    );

    // Whoever reads the old mailbox holds a reset token and a reset code by now.
    gw.post("/auth/password/forgot", json!({"email": "old@example.com"}))
        .await;
    let code_a = smtp.code("old@example.com", 2).await;
    let (status, v) = gw
        .post(
            "/auth/password/reset/verify",
            json!({"email": "old@example.com", "code": code_a}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let reset_token = v["data"]["reset_token"].as_str().unwrap().to_string();
    clock.advance(Duration::from_secs(61));
    gw.post("/auth/password/forgot", json!({"email": "old@example.com"}))
        .await;
    let code_b = smtp.code("old@example.com", 3).await;

    // The code confirms the address it was sent to, and no other.
    let confirm = |email: &str, code: &str, token: &str| {
        let body = json!({"email": email, "code": code});
        let (gw, token) = (&gw, token.to_string());
        async move {
            gw.call(
                reqwest::Method::POST,
                "/auth/me/email/verify",
                &token,
                Some(body),
            )
            .await
        }
    };
    let (status, v) = confirm("other@example.com", &code, token).await;
    assert_eq!((status, v["code"].as_str()), (400, Some("INVALID_OTP")));
    let (status, v) = confirm("new@example.com", &code, token).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["user"]["email"], "new@example.com");
    assert_eq!(v["data"]["user"]["email_verified"], true);
    // Every token named the old address: this device gets a new pair, in a new session.
    let renewed = v["data"]["access_token"].as_str().unwrap().to_string();
    assert_ne!(v["data"]["session_id"], here["session_id"]);
    let (status, v) = confirm("new@example.com", &code, &renewed).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("INVALID_OTP")),
        "single use"
    );

    // The old address is told, without the new one in the mail.
    let notice = smtp.nth_to("old@example.com", 4).await;
    assert!(
        notice.subject().contains("was changed"),
        "{}",
        notice.subject()
    );
    assert!(!notice.data.contains("new@example.com"));

    // What the old mailbox got no longer works.
    let (status, v) = gw
        .call(
            reqwest::Method::POST,
            "/auth/password/reset",
            &reset_token,
            Some(json!({"new_password": "another fine passphrase 9"})),
        )
        .await;
    assert_eq!(status, 401, "reset token from the old address: {v}");
    let (status, v) = gw
        .post(
            "/auth/password/reset",
            json!({"email": "new@example.com", "code": code_b, "new_password": "another fine passphrase 9"}),
        )
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("INVALID_OTP")),
        "reset code sent to the old address"
    );

    // Only the new pair works; the old address no longer signs in, the new one does.
    let (status, v) = gw
        .call(reqwest::Method::GET, "/auth/me", &renewed, None)
        .await;
    assert_eq!(
        (status, v["data"]["email"].as_str()),
        (200, Some("new@example.com"))
    );
    for (old, which) in [
        (token, "this device's old token"),
        (there["access_token"].as_str().unwrap(), "the other device"),
    ] {
        let (status, _) = gw.call(reqwest::Method::GET, "/auth/me", old, None).await;
        assert_eq!(status, 401, "{which}");
    }
    let (status, v) = gw
        .post(
            "/auth/login",
            json!({"login": "old@example.com", "password": PW}),
        )
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (401, Some("INVALID_CREDENTIALS"))
    );
    login(&gw, "new@example.com", PW).await;
    // The old address is free again.
    register_verified(
        &gw,
        &smtp,
        json!({"email": "old@example.com", "password": PW}),
    )
    .await;

    // An account without a password: a fresh sign-in is the proof, a stale one is not.
    register_verified(&gw, &smtp, json!({"email": "nopw@example.com"})).await;
    gw.post("/auth/login/code", json!({"email": "nopw@example.com"}))
        .await;
    let code = smtp.code("nopw@example.com", 2).await;
    let (status, v) = gw
        .post(
            "/auth/login/code/verify",
            json!({"email": "nopw@example.com", "code": code}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let nopw = v["data"]["access_token"].as_str().unwrap().to_string();
    let refresh = v["data"]["refresh_token"].as_str().unwrap().to_string();
    let (status, v) = start(json!({"email": "nopw2@example.com"}), nopw.clone()).await;
    assert_eq!(status, 200, "{v}");
    smtp.nth_to("nopw2@example.com", 1).await;
    clock.advance(Duration::from_secs(16 * 60));
    let (status, v) = gw
        .post("/auth/token/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(status, 200, "{v}");
    let fresh_token = v["data"]["access_token"].as_str().unwrap().to_string();
    let (status, v) = start(json!({"email": "nopw3@example.com"}), fresh_token).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (403, Some("REAUTH_REQUIRED")),
        "{v}"
    );
    assert_eq!(smtp.count_to("nopw3@example.com"), 0);
}

/// A second request replaces the first (its code no longer confirms anything), and an address
/// taken between the two steps is refused without spending the code: once it is free again,
/// the same code still works.
#[tokio::test]
async fn email_change_latest_request_wins_and_a_taken_address_keeps_the_code() {
    let smtp = Smtp::start();
    let gw = Gateway::start_with("[rate_limit]\nenabled = false\n", Some(&smtp), None).await;
    register_verified(
        &gw,
        &smtp,
        json!({"email": "pa@example.com", "password": PW}),
    )
    .await;
    let token = login(&gw, "pa@example.com", PW).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let call = |path: &'static str, body: serde_json::Value, token: String| {
        let gw = &gw;
        async move {
            gw.call(reqwest::Method::POST, path, &token, Some(body))
                .await
        }
    };
    let ask = |email: &str, token: &str| {
        call(
            "/auth/me/email",
            json!({"email": email, "current_password": PW}),
            token.to_string(),
        )
    };
    let confirm = |email: &str, code: &str, token: &str| {
        call(
            "/auth/me/email/verify",
            json!({"email": email, "code": code}),
            token.to_string(),
        )
    };

    assert_eq!(ask("first@example.com", &token).await.0, 200);
    let first = smtp.code("first@example.com", 1).await;
    assert_eq!(ask("second@example.com", &token).await.0, 200);
    let second = smtp.code("second@example.com", 1).await;
    let (status, v) = confirm("first@example.com", &first, &token).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("INVALID_OTP")),
        "replaced by the second request"
    );

    // Someone takes the address before the code comes back.
    register_verified(
        &gw,
        &smtp,
        json!({"email": "second@example.com", "password": PW}),
    )
    .await;
    let (status, v) = confirm("second@example.com", &second, &token).await;
    assert_eq!((status, v["code"].as_str()), (409, Some("ALREADY_EXISTS")));

    // They move away from it; the code, not spent by the refusal, now goes through.
    let squatter = login(&gw, "second@example.com", PW).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(ask("elsewhere@example.com", &squatter).await.0, 200);
    let code = smtp.code("elsewhere@example.com", 1).await;
    let (status, v) = confirm("elsewhere@example.com", &code, &squatter).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = confirm("second@example.com", &second, &token).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["user"]["email"], "second@example.com");
}

/// A verification code asked for an address that is already verified is never mailed. It
/// was made under the account's own id, so guessing at it (the hosted verify page signs in)
/// was a sign-in nobody was told of. Now it is the address's decoy's, as for an unknown
/// address, and answered exactly as one: the account holds no code it was not mailed.
#[tokio::test]
async fn a_verified_account_holds_no_code_it_was_not_mailed() {
    let smtp = Smtp::start();
    let gw = Gateway::start_with("", Some(&smtp), None).await;
    register_verified(
        &gw,
        &smtp,
        json!({"email": "done@example.com", "password": "correct horse battery staple"}),
    )
    .await;
    let mails = smtp.count_to("done@example.com");
    for email in ["done@example.com", "nobody@example.com"] {
        let (status, _) = gw
            .post("/auth/verify/resend", json!({"email": email}))
            .await;
        assert_eq!(status, 200, "{email}");
    }
    // Guesses are answered alike for the verified address and the unknown one.
    for _ in 0..6 {
        let known = gw
            .post(
                "/auth/verify",
                json!({"email": "done@example.com", "code": "000000"}),
            )
            .await;
        let unknown = gw
            .post(
                "/auth/verify",
                json!({"email": "nobody@example.com", "code": "000000"}),
            )
            .await;
        assert_eq!(known.0, unknown.0);
        assert_eq!(
            known.1["code"], unknown.1["code"],
            "{} / {}",
            known.1, unknown.1
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        smtp.count_to("done@example.com"),
        mails,
        "nothing was mailed"
    );
    let user_id =
        login(&gw, "done@example.com", "correct horse battery staple").await["user"]["id"]
            .as_str()
            .unwrap()
            .to_string();
    let dir = gw.stop_keep_dir().await;
    let store =
        until_unlocked(|| authgate::store::Store::open(&dir.path().join("db"), 8 << 20)).await;
    let codes = store.export().await.unwrap().codes;
    assert!(
        codes.iter().all(|c| c.user_id.to_string() != user_id),
        "a code under the verified account's id: {codes:?}"
    );
}

/// A return URL on the gateway's own host is its own origin only: another port of the same
/// name is another service, and `http` a downgrade.
#[tokio::test]
async fn a_return_url_on_the_gateways_host_keeps_its_scheme_and_port() {
    let smtp = Smtp::start();
    let gw = Gateway::start_with("", Some(&smtp), None).await;
    register_verified(
        &gw,
        &smtp,
        json!({"email": "rd@example.com", "password": "correct horse battery staple"}),
    )
    .await;
    let token = login(&gw, "rd@example.com", "correct horse battery staple").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let back = |rd: &str| {
        let url = format!(
            "{}?rd={}",
            gw.url("/auth/login"),
            url::form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>()
        );
        let r = gw
            .client
            .get(url)
            .header("cookie", format!("__Host-authgate-access={token}"));
        async move {
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), 303);
            r.headers()["location"].to_str().unwrap().to_string()
        }
    };
    // public_url is https://localhost:8443.
    assert_eq!(
        back("https://localhost:8443/app").await,
        "https://localhost:8443/app"
    );
    for rd in [
        "http://localhost:1/x",
        "https://localhost:9/x",
        "http://localhost:8443/x",
    ] {
        assert_eq!(back(rd).await, "/", "{rd}");
    }
    gw.stop().await;
}

/// `"admin@example.com"@evil.test` is a valid address by RFC 5322 that no mailer here sends
/// to, and reads as an example.com address to an application that looks for the domain in
/// the text of `X-Auth-User-Email`: refused, with comments, wherever an address is taken.
#[tokio::test]
async fn quoted_addresses_are_refused() {
    let gw = Gateway::start("").await;
    for email in [
        "\"admin@example.com\"@evil.test",
        "\"a\"@example.com",
        "a(comment)@example.com",
    ] {
        let (status, body) = gw
            .post(
                "/auth/register",
                json!({"email": email, "password": "correct horse battery staple"}),
            )
            .await;
        assert_eq!(status, 400, "{email}: {body}");
        assert!(body["fields"]["email"].is_string(), "{body}");
    }
    gw.stop().await;
}

/// `sign_in: true` at /verify signs the verifying client in, as the hosted sign-up page does
/// (one service entry for both doors); without it the answer is the account alone, as the
/// seed backends expect.
#[tokio::test]
async fn verify_signs_in_only_when_asked() {
    let smtp = Smtp::start();
    let gw = Gateway::start_with("", Some(&smtp), None).await;
    for (email, sign_in) in [("plain@example.com", false), ("asked@example.com", true)] {
        let (status, reg) = gw
            .post("/auth/register", json!({"email": email, "password": PW}))
            .await;
        assert_eq!(status, 201, "{reg}");
        let code = smtp.code(email, 1).await;
        let (status, v) = gw
            .post(
                "/auth/verify",
                json!({"email": email, "code": code, "signup_token": reg["data"]["signup_token"], "sign_in": sign_in}),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["data"]["user"]["email_verified"], true);
        assert!(v["data"].get("password_removed").is_none(), "{v}");
        let token = v["data"]["access_token"].as_str();
        assert_eq!(token.is_some(), sign_in, "{v}");
        assert_eq!(v["data"]["device_token"].is_string(), sign_in, "{v}");
        if let Some(token) = token {
            let (status, me) = gw.call(reqwest::Method::GET, "/auth/me", token, None).await;
            assert_eq!((status, me["data"]["email"].as_str()), (200, Some(email)));
            let (_, list) = gw
                .call(reqwest::Method::GET, "/auth/sessions", token, None)
                .await;
            assert_eq!(list["data"].as_array().map(Vec::len), Some(1), "{list}");
        }
        // The password chosen at registration survived either way.
        let (status, v) = gw
            .post("/auth/login", json!({"login": email, "password": PW}))
            .await;
        assert_eq!(status, 200, "{v}");
    }
    gw.stop().await;
}

//! A stranger cannot lock the owner out. Ten wrong passwords from ten addresses used to lock
//! an account for everyone, the owner's right password, mailed code and reset included, and
//! wrong codes alone did the same. The lock still holds against strangers; the owner's
//! device (a device token from an earlier sign-in) keeps its own budget, and proof of the
//! mailbox is refused only because of wrong codes, never because of wrong passwords.

use crate::harness::*;
use crate::mail::Smtp;
use authgate::clock::ManualClock;
use serde_json::json;

const PW: &str = "correct horse battery staple";
const PW2: &str = "a brand new sturdy passphrase";

/// A gateway behind a trusted front proxy (so a test can play clients at many addresses),
/// rate limits off (the lock is what is under test), on a clock the test moves past the
/// pauses that failures earn before the lock.
async fn gateway(smtp: &Smtp, clock: &ManualClock) -> Gateway {
    Gateway::start_with(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[rate_limit]\nenabled = false\n",
        Some(smtp),
        Some(clock),
    )
    .await
}

/// Past any pause a failure earns (1 s, 2 s, 4 s, ...), well short of a lock or a code's life.
fn past_the_pause(clock: &ManualClock) {
    clock.advance(std::time::Duration::from_secs(20));
}

/// POSTs `body` to `path` as a client at `ip`; status and error code.
async fn from(
    gw: &Gateway,
    ip: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, String, serde_json::Value) {
    let r = gw
        .client
        .post(gw.url(path))
        .header("x-forwarded-for", ip)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    (status, v["code"].as_str().unwrap_or("").to_string(), v)
}

/// The owner: registered, verified, signed in once (which gave them a device token).
async fn owner(gw: &Gateway, smtp: &Smtp, email: &str) -> String {
    let (status, _, reg) = from(
        gw,
        "198.51.100.1",
        "/auth/register",
        json!({"email": email, "password": PW}),
    )
    .await;
    assert_eq!(status, 201);
    let code = smtp.code(email, 1).await;
    let (status, _, _) = from(
        gw,
        "198.51.100.1",
        "/auth/verify",
        json!({"email": email, "code": code, "signup_token": reg["data"]["signup_token"]}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, v) = from(
        gw,
        "198.51.100.1",
        "/auth/login",
        json!({"login": email, "password": PW}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["data"]["device_token"]
        .as_str()
        .expect("a device token")
        .to_string()
}

#[tokio::test]
async fn a_strangers_wrong_passwords_do_not_lock_the_owner_out() {
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    let gw = gateway(&smtp, &clock).await;
    let email = "owner@example.com";
    let device = owner(&gw, &smtp, email).await;
    // Ten wrong passwords from ten addresses: strangers are locked out...
    let mut last = String::new();
    for i in 0..10 {
        let (_, code, _) = from(
            &gw,
            &format!("203.0.113.{i}"),
            "/auth/login",
            json!({"login": email, "password": "a wrong guess, again"}),
        )
        .await;
        last = code;
        if i < 9 {
            past_the_pause(&clock);
        }
    }
    assert_eq!(last, "USER_BLOCKED", "the tenth failure locks");
    let (status, code, _) = from(
        &gw,
        "203.0.113.77",
        "/auth/login",
        json!({"login": email, "password": PW}),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (403, "USER_BLOCKED"),
        "the lock holds against strangers, right password or not"
    );
    // ...the owner's device is not: it signs in with the right password.
    let (status, _, v) = from(
        &gw,
        "198.51.100.1",
        "/auth/login",
        json!({"login": email, "password": PW, "device_token": device}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["device_token"], json!(device), "the same device");
    // A device token of another account is a stranger's.
    let other = owner(&gw, &smtp, "other@example.com").await;
    let (status, code, _) = from(
        &gw,
        "198.51.100.1",
        "/auth/login",
        json!({"login": email, "password": PW, "device_token": other}),
    )
    .await;
    assert_eq!((status, code.as_str()), (403, "USER_BLOCKED"));
    // From a device it has never used, the owner proves the mailbox: sign in by code...
    let (status, _, _) = from(
        &gw,
        "198.51.100.9",
        "/auth/login/code",
        json!({"email": email}),
    )
    .await;
    assert_eq!(status, 200);
    let code = smtp.code(email, 2).await;
    let (status, _, v) = from(
        &gw,
        "198.51.100.9",
        "/auth/login/code/verify",
        json!({"email": email, "code": code}),
    )
    .await;
    assert_eq!(
        status, 200,
        "a right code is not refused for wrong passwords: {v}"
    );
    // ...or reset the password, which then signs in from anywhere.
    let (status, _, _) = from(
        &gw,
        "198.51.100.9",
        "/auth/password/forgot",
        json!({"email": email}),
    )
    .await;
    assert_eq!(status, 200);
    let code = smtp.code(email, 3).await;
    let (status, _, v) = from(
        &gw,
        "198.51.100.9",
        "/auth/password/reset",
        json!({"email": email, "code": code, "new_password": PW2}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, _, _) = from(
        &gw,
        "198.51.100.9",
        "/auth/login",
        json!({"login": email, "password": PW2}),
    )
    .await;
    assert_eq!(status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn a_strangers_wrong_codes_do_not_lock_the_owner_out() {
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    let gw = gateway(&smtp, &clock).await;
    let email = "coded@example.com";
    let device = owner(&gw, &smtp, email).await;
    // A stranger asks for a sign-in code for the owner and runs it out of tries.
    let (status, _, _) = from(
        &gw,
        "203.0.113.1",
        "/auth/login/code",
        json!({"email": email}),
    )
    .await;
    assert_eq!(status, 200);
    let mailed = smtp.code(email, 2).await;
    let wrong = if mailed == "000000" {
        "111111"
    } else {
        "000000"
    };
    let mut answers = Vec::new();
    for i in 0..5 {
        let (_, code, _) = from(
            &gw,
            &format!("203.0.113.{i}"),
            "/auth/login/code/verify",
            json!({"email": email, "code": wrong}),
        )
        .await;
        answers.push(code);
        past_the_pause(&clock);
    }
    assert_eq!(
        answers.last().map(String::as_str),
        Some("ATTEMPTS_EXCEEDED"),
        "{answers:?}"
    );
    let (_, code, _) = from(
        &gw,
        "203.0.113.9",
        "/auth/login/code/verify",
        json!({"email": email, "code": mailed}),
    )
    .await;
    assert_eq!(code, "ATTEMPTS_EXCEEDED", "dead for strangers");
    // The owner's device still takes the code that reached the owner's mailbox.
    let (status, _, v) = from(
        &gw,
        "198.51.100.1",
        "/auth/login/code/verify",
        json!({"email": email, "code": mailed, "device_token": device}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    // Five more wrong codes from strangers, at a new code: ten in all, across codes, lock
    // strangers out of codes (the device's count is its own).
    let (status, _, _) = from(
        &gw,
        "203.0.113.1",
        "/auth/login/code",
        json!({"email": email}),
    )
    .await;
    assert_eq!(status, 200);
    let mut sent = 3;
    smtp.nth_to(email, sent).await;
    let mut last = String::new();
    for i in 0..5 {
        let (_, code, _) = from(
            &gw,
            &format!("203.0.113.{i}"),
            "/auth/login/code/verify",
            json!({"email": email, "code": wrong}),
        )
        .await;
        last = code;
        if i < 4 {
            past_the_pause(&clock);
        }
    }
    assert_eq!(last, "USER_BLOCKED", "strangers' code guesses are locked");
    // Wrong codes do not lock the password...
    let (status, _, _) = from(
        &gw,
        "198.51.100.9",
        "/auth/login",
        json!({"login": email, "password": PW}),
    )
    .await;
    assert_eq!(status, 200);
    // ...and the owner's device still signs in by code.
    let (status, _, _) = from(
        &gw,
        "198.51.100.1",
        "/auth/login/code",
        json!({"email": email}),
    )
    .await;
    assert_eq!(status, 200);
    sent += 1;
    let code = smtp.code(email, sent).await;
    let (status, _, v) = from(
        &gw,
        "198.51.100.1",
        "/auth/login/code/verify",
        json!({"email": email, "code": code, "device_token": device}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    gw.stop().await;
}

/// The strangers' answers for a known and an unknown account stay alike: the same failures,
/// the same lock, the same USER_BLOCKED.
#[tokio::test]
async fn locks_answer_alike_for_known_and_unknown_accounts() {
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    let gw = gateway(&smtp, &clock).await;
    owner(&gw, &smtp, "known@example.com").await;
    let mut seen = Vec::new();
    for email in ["known@example.com", "unknown@example.com"] {
        let mut answers = Vec::new();
        for i in 0..11 {
            let (status, code, _) = from(
                &gw,
                &format!("203.0.113.{i}"),
                "/auth/login",
                json!({"login": email, "password": "a wrong guess, again"}),
            )
            .await;
            answers.push((status, code));
            if i < 9 {
                past_the_pause(&clock);
            }
        }
        seen.push(answers);
    }
    assert_eq!(seen[0], seen[1], "{seen:?}");
    assert_eq!(seen[0][8].1, "INVALID_CREDENTIALS");
    assert_eq!(seen[0][9].1, "USER_BLOCKED", "the tenth failure locks");
    assert_eq!(seen[0][10].1, "USER_BLOCKED", "and the lock holds");
    gw.stop().await;
}

/// An attacker registers the victim's address with a password of their own; the victim
/// enters the code that arrives. The attacker's password no longer works: the client that
/// verified did not choose it. The victim is told, and given a reset token to choose one.
#[tokio::test]
async fn a_squatters_password_does_not_survive_the_owners_verification() {
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    let gw = gateway(&smtp, &clock).await;
    let email = "victim@example.com";
    let (status, _, _) = from(
        &gw,
        "203.0.113.66",
        "/auth/register",
        json!({"email": email, "password": "the squatter's own password"}),
    )
    .await;
    assert_eq!(status, 201);
    let code = smtp.code(email, 1).await;
    // The victim, with the code from their mailbox and nothing else.
    let (status, _, v) = from(
        &gw,
        "198.51.100.5",
        "/auth/verify",
        json!({"email": email, "code": code}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["password_removed"], true, "{v}");
    let reset = v["data"]["reset_token"].as_str().unwrap().to_string();
    let (status, code, _) = from(
        &gw,
        "203.0.113.66",
        "/auth/login",
        json!({"login": email, "password": "the squatter's own password"}),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (401, "INVALID_CREDENTIALS"),
        "the squatter's password is gone"
    );
    // The victim chooses one with the reset token.
    let r = gw
        .client
        .post(gw.url("/auth/password/reset"))
        .bearer_auth(&reset)
        .json(&json!({"new_password": PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, _, _) = from(
        &gw,
        "198.51.100.5",
        "/auth/login",
        json!({"login": email, "password": PW}),
    )
    .await;
    assert_eq!(status, 200);
    gw.stop().await;

    // A client with a cookie jar (a browser, Postman) keeps its own password without doing
    // anything: the sign-up cookie is the proof.
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    let gw = gateway(&smtp, &clock).await;
    let jar = gw.client_builder().cookie_store(true).build().unwrap();
    let r = jar
        .post(gw.url("/auth/register"))
        .json(&json!({"email": "jar@example.com", "password": PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let code = smtp.code("jar@example.com", 1).await;
    let r = jar
        .post(gw.url("/auth/verify"))
        .json(&json!({"email": "jar@example.com", "code": code}))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["data"]["password_removed"].is_null(), "{v}");
    let (status, _, _) = from(
        &gw,
        "198.51.100.5",
        "/auth/login",
        json!({"login": "jar@example.com", "password": PW}),
    )
    .await;
    assert_eq!(status, 200);
    gw.stop().await;
}

/// A failed sign-in for a login that matches no account is written and flushed to the store
/// as an account's failure is: the two cost the same (the answer says nothing by its time).
#[tokio::test]
async fn an_unknown_logins_failure_is_kept_as_an_accounts_is() {
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    let gw = gateway(&smtp, &clock).await;
    let (status, _, _) = from(
        &gw,
        "203.0.113.1",
        "/auth/login",
        json!({"login": "nobody@example.com", "password": "a wrong guess, again"}),
    )
    .await;
    assert_eq!(status, 401);
    let store = gw.running.as_ref().unwrap().app.accounts.store().clone();
    let kept = store
        .update_lock("pw:email:nobody@example.com", |r| (None, r.cloned()))
        .await
        .unwrap();
    assert_eq!(kept.map(|r| r.failed_attempts), Some(1));
    gw.stop().await;
}

/// A device token keeps its own budget only while the account's security stands as it was
/// when it was issued: after the owner signs out everywhere (or changes or resets the
/// password), a token kept by someone who once held the account is a stranger's again, and
/// the lock holds against it.
#[tokio::test]
async fn a_device_token_from_before_a_sign_out_everywhere_is_a_strangers() {
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    let gw = gateway(&smtp, &clock).await;
    let email = "keeper@example.com";
    let old_device = owner(&gw, &smtp, email).await;
    // The owner signs out everywhere.
    let (status, _, v) = from(
        &gw,
        "198.51.100.1",
        "/auth/login",
        json!({"login": email, "password": PW, "device_token": old_device}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let access = v["data"]["access_token"].as_str().unwrap().to_string();
    let r = gw
        .client
        .post(gw.url("/auth/logout"))
        .bearer_auth(&access)
        .json(&json!({"all": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Strangers lock the account.
    for i in 0..10 {
        from(
            &gw,
            &format!("203.0.113.{i}"),
            "/auth/login",
            json!({"login": email, "password": "a wrong guess, again"}),
        )
        .await;
        past_the_pause(&clock);
    }
    // The token from before the sign-out buys nothing any more.
    let (status, code, _) = from(
        &gw,
        "198.51.100.1",
        "/auth/login",
        json!({"login": email, "password": PW, "device_token": old_device}),
    )
    .await;
    assert_eq!((status, code.as_str()), (403, "USER_BLOCKED"));
    gw.stop().await;
}

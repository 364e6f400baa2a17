//! Rate limits through HTTP: every endpoint class refuses past its quota with 429
//! RATE_LIMITED, Retry-After and RateLimit-* headers, and recovers after the window (the
//! injected clock moves); per-recipient mail limits; X-Forwarded-For believed only from
//! trusted proxies.

use crate::harness::*;
use authgate::clock::ManualClock;
use serde_json::json;
use std::time::Duration;

const LIMITS: &str = r#"
[rate_limit]
login_per_ip = ["3/1m"]
login_per_account = ["100/1m"]
code_verify_per_ip = ["3/1m"]
code_verify_per_account = ["100/1m"]
code_send_per_ip = ["100/1m"]
code_send_per_recipient = ["2/10m"]
refresh_per_ip = ["3/1m"]
proxy_per_ip = ["5/1m"]
[otp]
resend_cooldown = "0"
"#;

async fn hit(
    gw: &Gateway,
    path: &str,
    body: serde_json::Value,
    xff: Option<&str>,
) -> reqwest::Response {
    let mut r = gw.client.post(gw.url(path)).json(&body);
    if let Some(x) = xff {
        r = r.header("x-forwarded-for", x);
    }
    r.send().await.unwrap()
}

/// Sends until refused; returns how many got through and the refusal.
async fn until_refused(
    gw: &Gateway,
    path: &str,
    body: serde_json::Value,
) -> (usize, reqwest::Response) {
    for i in 0..50 {
        let r = hit(gw, path, body.clone(), None).await;
        if r.status() == 429 {
            return (i, r);
        }
    }
    panic!("{path} never refused");
}

async fn assert_rate_limited(r: reqwest::Response, limit: &str) {
    assert_eq!(r.status(), 429);
    let h = r.headers().clone();
    if !h.contains_key("ratelimit-limit") {
        panic!(
            "429 without RateLimit headers: {:?}",
            r.text().await.unwrap()
        );
    }
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1, "{retry}");
    assert_eq!(h["ratelimit-limit"], limit);
    assert_eq!(h["ratelimit-remaining"], "0");
    assert_eq!(h["ratelimit-reset"].to_str().unwrap(), retry.to_string());
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], "RATE_LIMITED");
}

#[tokio::test]
async fn every_class_refuses_past_its_quota_and_recovers() {
    let up = Upstream::start().await;
    let clock = ManualClock::starting_now();
    let toml = format!(
        "{LIMITS}\n[[routes]]\nupstream = \"{}\"\naccess = \"public\"\n",
        up.url()
    );
    let gw = Gateway::start_with(&toml, None, Some(&clock)).await;
    let classes: Vec<(&str, serde_json::Value, usize, &str)> = vec![
        (
            "/auth/login",
            json!({"login": "nobody@example.com", "password": "whatever it is"}),
            3,
            "3",
        ),
        (
            "/auth/verify",
            json!({"email": "nobody@example.com", "code": "123456"}),
            3,
            "3",
        ),
        (
            "/auth/login/code/verify",
            json!({"email": "nobody@example.com", "code": "123456"}),
            0,
            "3",
        ),
        (
            "/auth/token/refresh",
            json!({"refresh_token": "rt1.x.y"}),
            3,
            "3",
        ),
        (
            "/auth/password/forgot",
            json!({"email": "mailbomb@example.com"}),
            2,
            "2",
        ),
    ];
    for (path, body, allowed, limit) in &classes {
        let (passed, refusal) = until_refused(&gw, path, body.clone()).await;
        assert_eq!(passed, *allowed, "{path}");
        assert_rate_limited(refusal, limit).await;
    }
    // The proxy class (per IP, configured here).
    let mut proxied = 0;
    loop {
        let r = gw.client.get(gw.url("/page")).send().await.unwrap();
        if r.status() == 429 {
            assert_rate_limited(r, "5").await;
            break;
        }
        proxied += 1;
        assert!(proxied <= 5);
    }
    assert_eq!(proxied, 5);

    // A window later, every class answers again.
    clock.advance(Duration::from_secs(10 * 60));
    for (path, body, _, _) in &classes {
        let r = hit(&gw, path, body.clone(), None).await;
        assert_ne!(r.status(), 429, "{path} did not recover");
    }
    assert_eq!(
        gw.client
            .get(gw.url("/page"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let m = gw
        .client
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("authgate_rate_limited_total{class=\"login\"} 1"),
        "{m}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn mail_is_limited_per_recipient_across_endpoints_and_ips() {
    let clock = ManualClock::starting_now();
    let toml = format!("{LIMITS}\n[server]\ntls = false\ntrusted_proxies = [\"127.0.0.0/8\"]\n");
    let gw = Gateway::start_with(&toml, None, Some(&clock)).await;
    let victim = json!({"email": "victim@example.com"});
    // Two codes to one address, from two "clients" and two endpoints; the third is refused.
    let r = hit(
        &gw,
        "/auth/password/forgot",
        victim.clone(),
        Some("198.51.100.1"),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = hit(
        &gw,
        "/auth/login/code",
        victim.clone(),
        Some("198.51.100.2"),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = hit(
        &gw,
        "/auth/verify/resend",
        victim.clone(),
        Some("198.51.100.3"),
    )
    .await;
    assert_rate_limited(r, "2").await;
    // Another recipient is fine.
    let r = hit(
        &gw,
        "/auth/password/forgot",
        json!({"email": "other@example.com"}),
        Some("198.51.100.3"),
    )
    .await;
    assert_eq!(r.status(), 200);
    gw.stop().await;
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    // Untrusted: the socket address is the client, whatever X-Forwarded-For says.
    let gw = Gateway::start(&format!("{LIMITS}\n[server]\ntls = false\n")).await;
    let body = json!({"login": "x@example.com", "password": "whatever it is"});
    for i in 0..3 {
        let r = hit(
            &gw,
            "/auth/login",
            body.clone(),
            Some(&format!("203.0.113.{i}")),
        )
        .await;
        assert_eq!(r.status(), 401);
    }
    let r = hit(&gw, "/auth/login", body.clone(), Some("203.0.113.99")).await;
    assert_eq!(
        r.status(),
        429,
        "a spoofed X-Forwarded-For does not buy a new quota"
    );
    gw.stop().await;

    // Trusted: each forwarded client has its own quota.
    let gw = Gateway::start(&format!(
        "{LIMITS}\n[server]\ntls = false\ntrusted_proxies = [\"127.0.0.1/32\"]\n"
    ))
    .await;
    for i in 0..3 {
        let r = hit(&gw, "/auth/login", body.clone(), Some("203.0.113.7")).await;
        assert_eq!(r.status(), 401, "attempt {i}");
    }
    assert_eq!(
        hit(&gw, "/auth/login", body.clone(), Some("203.0.113.7"))
            .await
            .status(),
        429
    );
    assert_eq!(
        hit(&gw, "/auth/login", body.clone(), Some("203.0.113.8"))
            .await
            .status(),
        401,
        "another client behind the proxy"
    );
    gw.stop().await;
}

/// A refusal is held for `refusal_delay` (counted from the request's start, never past its
/// Retry-After), so a client that retries at once gets one try per delay per connection;
/// answers that are not refusals, and the proxied routes, are not held.
#[tokio::test]
async fn refusals_of_the_account_endpoints_are_paced() {
    let up = Upstream::start().await;
    let toml = format!(
        "[rate_limit]\nlogin_per_ip = [\"1/1m\"]\nproxy_per_ip = [\"1/1m\"]\n\
         refusal_delay = \"2s\"\n\
         [[routes]]\nupstream = \"{}\"\naccess = \"public\"\n",
        up.url()
    );
    let gw = Gateway::start(&toml).await;
    let body = json!({"login": "nobody@example.com", "password": "whatever it is"});
    let timed = |path: &'static str| {
        let gw = &gw;
        let body = body.clone();
        async move {
            let start = authgate::clock::monotonic();
            let r = hit(gw, path, body, None).await;
            (r, start.elapsed())
        }
    };
    let (first, _) = timed("/auth/login").await;
    assert_eq!(first.status(), 401);
    // Three refusals at once from one client: each is held, none is answered early.
    let refusals = futures_util::future::join_all((0..3).map(|_| timed("/auth/login"))).await;
    for (r, took) in refusals {
        assert!(took >= Duration::from_secs(2), "answered after {took:?}");
        assert_rate_limited(r, "1").await;
    }
    // A proxied route's refusal is not held (it guards the upstream, not credentials); both
    // answers must come back before the delay would have ended.
    let start = authgate::clock::monotonic();
    assert_eq!(
        gw.client.get(gw.url("/a")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        gw.client.get(gw.url("/a")).send().await.unwrap().status(),
        429
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

/// `refusal_delay = "0"` answers refusals at once (the setting's documented off switch).
#[tokio::test]
async fn a_zero_refusal_delay_answers_at_once() {
    let gw =
        Gateway::start("[rate_limit]\nlogin_per_ip = [\"1/1m\"]\nrefusal_delay = \"0\"\n").await;
    let body = json!({"login": "nobody@example.com", "password": "whatever it is"});
    assert_eq!(
        hit(&gw, "/auth/login", body.clone(), None).await.status(),
        401
    );
    let start = authgate::clock::monotonic();
    assert_rate_limited(hit(&gw, "/auth/login", body, None).await, "1").await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

/// A limiter full of keys (a flood of distinct clients) used to refuse every client of its
/// class, the ones it already tracked included. Now a known client keeps its quota, and a
/// newcomer shares its network's bucket instead of being refused.
#[tokio::test]
async fn a_full_limiter_keeps_serving_known_and_new_clients() {
    let gw = Gateway::start(
        "[server]\ntls = false\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
         [rate_limit]\nlogin_per_ip = [\"3/1m\"]\nlogin_per_account = [\"1000/1m\"]\nmax_keys = 5\n\
         refusal_delay = \"0s\"\n[otp]\nlockout_threshold = 1000\n",
    )
    .await;
    let body =
        |i: usize| json!({"login": format!("n{i}@example.com"), "password": "whatever it is"});
    // The flood: five addresses fill the table.
    for i in 0..5 {
        let r = hit(&gw, "/auth/login", body(i), Some(&format!("203.0.113.{i}"))).await;
        assert_eq!(r.status(), 401);
    }
    // A known client goes on with its quota, and only that.
    for _ in 0..2 {
        let r = hit(&gw, "/auth/login", body(0), Some("203.0.113.0")).await;
        assert_eq!(r.status(), 401, "a known key keeps its quota");
    }
    let r = hit(&gw, "/auth/login", body(0), Some("203.0.113.0")).await;
    assert_eq!(r.status(), 429);
    // A newcomer is served from its /16's shared bucket, not refused outright.
    let r = hit(&gw, "/auth/login", body(9), Some("198.51.100.20")).await;
    assert_eq!(r.status(), 401, "a new client while the table is full");
    gw.stop().await;
}

/// A stranger who spends an account's quotas (wrong passwords, codes asked for, wrong codes)
/// from addresses of their own does not spend its owner's: a client presenting one of the
/// account's device tokens is counted under a key of its own, in every flow.
#[tokio::test]
async fn a_strangers_flood_does_not_spend_the_owners_quota() {
    let smtp = crate::mail::Smtp::start();
    let gw = Gateway::start_with(
        "[server]\ntls = false\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
         [rate_limit]\nlogin_per_ip = [\"1000/1m\"]\nlogin_per_account = [\"3/1m\"]\n\
         code_verify_per_ip = [\"1000/1m\"]\ncode_verify_per_account = [\"3/1m\"]\n\
         code_send_per_ip = [\"1000/1m\"]\ncode_send_per_recipient = [\"2/10m\"]\n\
         refusal_delay = \"0s\"\n[otp]\nresend_cooldown = \"0\"\n",
        Some(&smtp),
        None,
    )
    .await;
    let email = "owner@example.com";
    let pw = "correct horse battery staple";
    let owner_ip = Some("198.51.100.1");
    let r = hit(
        &gw,
        "/auth/register",
        json!({"email": email, "password": pw}),
        owner_ip,
    )
    .await;
    assert_eq!(r.status(), 201);
    let reg: serde_json::Value = r.json().await.unwrap();
    let code = smtp.code(email, 1).await;
    let r = hit(
        &gw,
        "/auth/verify",
        json!({"email": email, "code": code, "signup_token": reg["data"]["signup_token"]}),
        owner_ip,
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = hit(
        &gw,
        "/auth/login",
        json!({"login": email, "password": pw}),
        owner_ip,
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let device = v["data"]["device_token"].as_str().unwrap().to_string();

    // The stranger, a new address for every try, until the account's quota is spent.
    let mut n = 0;
    let mut stranger = |path: &'static str, body: serde_json::Value| {
        n += 1;
        let ip = format!("203.0.113.{n}");
        let gw = &gw;
        async move {
            let r = hit(gw, path, body, Some(&ip)).await;
            let status = r.status().as_u16();
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            (status, v["code"].as_str().unwrap_or("").to_string())
        }
    };
    let rate_limited = (429, "RATE_LIMITED".to_string());
    let mut refused = false;
    for _ in 0..10 {
        if stranger(
            "/auth/login",
            json!({"login": email, "password": "wrong guess!"}),
        )
        .await
            == rate_limited
        {
            refused = true;
            break;
        }
    }
    assert!(refused, "the account's sign-in quota is spent");
    let r = hit(
        &gw,
        "/auth/login",
        json!({"login": email, "password": pw}),
        Some("203.0.113.200"),
    )
    .await;
    assert_eq!(
        r.status(),
        429,
        "and refused to a client without a device token"
    );
    let r = hit(
        &gw,
        "/auth/login",
        json!({"login": email, "password": pw, "device_token": device}),
        owner_ip,
    )
    .await;
    assert_eq!(r.status(), 200, "the owner's device signs in");

    // Codes asked for: the stranger spends the address's mail quota, the device has its own.
    let mut sent = 0;
    loop {
        match stranger("/auth/login/code", json!({"email": email})).await {
            (200, _) => sent += 1,
            answer => {
                assert_eq!(answer, rate_limited, "the address's mail quota is spent");
                break;
            }
        }
        assert!(sent < 10, "never refused");
    }
    // Delivered before the owner asks, so that the owner's is the last mail.
    smtp.nth_to(email, 1 + sent).await;
    let r = hit(
        &gw,
        "/auth/login/code",
        json!({"email": email, "device_token": device}),
        owner_ip,
    )
    .await;
    assert_eq!(r.status(), 200, "the owner's device still gets a code");
    // The verification code, the stranger's codes, then the owner's.
    let code = smtp.code(email, 1 + sent + 1).await;

    // Wrong codes: the stranger spends the account's quota; the device's right code works.
    let mut refused = false;
    for _ in 0..10 {
        if stranger(
            "/auth/login/code/verify",
            json!({"email": email, "code": "000000"}),
        )
        .await
            == rate_limited
        {
            refused = true;
            break;
        }
    }
    assert!(refused, "the account's code quota is spent");
    let r = hit(
        &gw,
        "/auth/login/code/verify",
        json!({"email": email, "code": code, "device_token": device}),
        owner_ip,
    )
    .await;
    let status = r.status();
    assert_eq!(
        status,
        200,
        "the owner's device signs in by code: {}",
        r.text().await.unwrap()
    );
    gw.stop().await;
}

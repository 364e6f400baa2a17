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
            let start = std::time::Instant::now();
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
    let start = std::time::Instant::now();
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
    let start = std::time::Instant::now();
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

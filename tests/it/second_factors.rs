//! Second factors through HTTP: TOTP enrolment and sign-in with codes from an independent
//! implementation (Debian's `oathtool`, and RFC 6238 written out here against its own test
//! vectors), replays, a wrong-code flood, recovery codes, the `mfa_token`'s misuse, routes
//! that need two factors, `mfa.required_roles`, and the administrator's reset.

use crate::external::require;
use crate::harness::*;
use crate::mail::Smtp;
use crate::seeds::register_verified;
use authgate::clock::{Clock, ManualClock};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const PW: &str = "correct horse battery staple";

/// RFC 6238 (HMAC-SHA1, 6 digits, 30 s) written from the RFC, independently of the gateway's
/// `totp-rs`: the test's own reference, checked against the RFC's vectors below and against
/// oathtool in `totp_codes_from_oathtool_enrol_and_sign_in`.
pub fn totp(base32_secret: &str, unix: i64) -> String {
    let key = base32_decode(base32_secret);
    let counter = u64::try_from(unix).unwrap() / 30;
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &key);
    let mac = aws_lc_rs::hmac::sign(&k, &counter.to_be_bytes());
    let h = mac.as_ref();
    let offset = usize::from(h[19] & 0x0f);
    let bin = u32::from_be_bytes([
        h[offset] & 0x7f,
        h[offset + 1],
        h[offset + 2],
        h[offset + 3],
    ]);
    format!("{:06}", bin % 1_000_000)
}

fn base32_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits = 0u64;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c.to_ascii_uppercase())
            .unwrap_or_else(|| panic!("not base32: {s}"));
        bits = (bits << 5) | v as u64;
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

#[test]
fn the_reference_totp_meets_rfc_6238() {
    // "12345678901234567890" in base32; the RFC's 8-digit values end in these six.
    let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    for (t, code) in [
        (59, "287082"),
        (1_111_111_109, "081804"),
        (1_234_567_890, "005924"),
        (2_000_000_000, "279037"),
    ] {
        assert_eq!(totp(secret, t), code, "at {t}");
    }
}

/// A gateway on a manual clock (the test moves between TOTP steps) with rate limits off.
async fn gateway(smtp: &Smtp, clock: &ManualClock, extra: &str) -> Gateway {
    Gateway::start_with(
        &format!("[rate_limit]\nenabled = false\n{extra}"),
        Some(smtp),
        Some(clock),
    )
    .await
}

async fn sign_up(gw: &Gateway, smtp: &Smtp, email: &str) {
    register_verified(gw, smtp, json!({"email": email, "password": PW})).await;
}

async fn password_login(gw: &Gateway, email: &str) -> Value {
    let (status, v) = gw
        .post("/auth/login", json!({"login": email, "password": PW}))
        .await;
    assert_eq!(status, 200, "{v}");
    v["data"].clone()
}

/// Signs in by password on an account without a second factor: the access token.
async fn one_factor_token(gw: &Gateway, email: &str) -> String {
    let d = password_login(gw, email).await;
    d["access_token"].as_str().expect("tokens").to_string()
}

/// Enrols an authenticator for the signed-in `token` and confirms it with a code of the
/// reference TOTP at the clock's time: the base32 secret and the recovery codes.
async fn enrol(gw: &Gateway, clock: &ManualClock, token: &str) -> (String, Vec<String>) {
    let (status, v) = gw
        .call(
            Method::POST,
            "/auth/mfa/totp",
            token,
            Some(json!({"current_password": PW})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let secret = v["data"]["secret"].as_str().unwrap().to_string();
    let (status, v) = gw
        .call(
            Method::POST,
            "/auth/mfa/totp/confirm",
            token,
            Some(json!({"code": totp(&secret, clock.unix_now())})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let codes = v["data"]["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    (secret, codes)
}

/// The next TOTP step: a code of the step a code was just used in would be a replay.
fn next_step(clock: &ManualClock) {
    clock.advance(Duration::from_secs(30));
}

async fn second_step(gw: &Gateway, mfa_token: &str, code: &str) -> (u16, Value) {
    gw.post(
        "/auth/login/mfa",
        json!({"mfa_token": mfa_token, "code": code}),
    )
    .await
}

async fn validate(gw: &Gateway, token: &str) -> (u16, Value) {
    gw.call(Method::GET, "/auth/validate", token, None).await
}

#[tokio::test]
async fn totp_codes_from_oathtool_enrol_and_sign_in() {
    let Some(oathtool) = require("oathtool", "totp_codes_from_oathtool_enrol_and_sign_in") else {
        return;
    };
    let oath = |secret: &str, unix: i64| {
        let out = std::process::Command::new(&oathtool)
            .args(["--totp", "-b", "-N", &format!("@{unix}"), secret])
            .output()
            .unwrap();
        assert!(out.status.success(), "oathtool: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    let gw = gateway(&smtp, &clock, "[mfa]\nissuer = \"Example Co\"\n").await;
    sign_up(&gw, &smtp, "totp@example.com").await;
    let token = one_factor_token(&gw, "totp@example.com").await;
    let (_, v) = validate(&gw, &token).await;
    assert_eq!(v["data"]["amr"], json!(["pwd"]), "{v}");
    assert_eq!(v["data"]["aal"], 1);

    // Enrolment needs the password, and asks for nothing until confirmed.
    let (status, v) = gw
        .call(Method::POST, "/auth/mfa/totp", &token, Some(json!({})))
        .await;
    assert_eq!(
        (status, v["fields"]["current_password"].is_string()),
        (400, true),
        "{v}"
    );
    let (status, v) = gw
        .call(
            Method::POST,
            "/auth/mfa/totp",
            &token,
            Some(json!({"current_password": "wrong wrong wrong wrong"})),
        )
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (401, Some("INVALID_CREDENTIALS"))
    );
    let (status, v) = gw
        .call(
            Method::POST,
            "/auth/mfa/totp",
            &token,
            Some(json!({"current_password": PW})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let secret = v["data"]["secret"].as_str().unwrap().to_string();
    let uri = v["data"]["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/Example%20Co:totp%40example.com?"),
        "{uri}"
    );
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    let d = password_login(&gw, "totp@example.com").await;
    assert!(
        d["access_token"].is_string(),
        "unconfirmed: no second step yet: {d}"
    );

    // oathtool and the reference agree; a wrong code does not confirm.
    let now = clock.unix_now();
    assert_eq!(oath(&secret, now), totp(&secret, now));
    let wrong = format!(
        "{:06}",
        (oath(&secret, now).parse::<u32>().unwrap() + 1) % 1_000_000
    );
    let (status, v) = gw
        .call(
            Method::POST,
            "/auth/mfa/totp/confirm",
            &token,
            Some(json!({"code": wrong})),
        )
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("INVALID_OTP")),
        "{v}"
    );
    let (status, v) = gw
        .call(
            Method::POST,
            "/auth/mfa/totp/confirm",
            &token,
            Some(json!({"code": oath(&secret, now)})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["recovery_codes"].as_array().unwrap().len(), 10);
    let (_, v) = gw.call(Method::GET, "/auth/mfa", &token, None).await;
    assert_eq!(v["data"]["totp"]["enabled"], true, "{v}");
    assert_eq!(v["data"]["recovery_codes"]["remaining"], 10);

    // The password alone now earns a second step, not tokens.
    let d = password_login(&gw, "totp@example.com").await;
    assert_eq!(d["mfa_required"], true, "{d}");
    assert!(
        d.get("access_token").is_none() && d.get("refresh_token").is_none(),
        "{d}"
    );
    assert_eq!(d["methods"], json!(["totp", "recovery_code"]));
    assert_eq!(d["expires_in"], 300);
    let mfa_token = d["mfa_token"].as_str().unwrap();
    // The code that confirmed the enrolment was used in this step: a replay.
    let (status, v) = second_step(&gw, mfa_token, &oath(&secret, now)).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("INVALID_OTP")),
        "{v}"
    );
    // A code from a step ahead (within the window) signs in, once.
    let ahead = oath(&secret, now + 30);
    let (status, v) = second_step(&gw, mfa_token, &ahead).await;
    assert_eq!(status, 200, "{v}");
    let two_factor = v["data"]["access_token"].as_str().unwrap().to_string();
    let (_, v) = validate(&gw, &two_factor).await;
    assert_eq!(v["data"]["amr"], json!(["pwd", "otp", "mfa"]), "{v}");
    assert_eq!(v["data"]["aal"], 2);
    // Two steps back is outside the window; the step signed in with is spent.
    next_step(&clock);
    let d = password_login(&gw, "totp@example.com").await;
    let mfa_token = d["mfa_token"].as_str().unwrap();
    for code in [oath(&secret, now - 60), ahead] {
        let (status, v) = second_step(&gw, mfa_token, &code).await;
        assert_eq!(
            (status, v["code"].as_str()),
            (400, Some("INVALID_OTP")),
            "{v}"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn recovery_codes_are_single_use_counted_and_regenerable() {
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    let gw = gateway(&smtp, &clock, "").await;
    sign_up(&gw, &smtp, "rc@example.com").await;
    let token = one_factor_token(&gw, "rc@example.com").await;
    let (secret, codes) = enrol(&gw, &clock, &token).await;
    // Typed loosely (upper case, a space for the dash), a recovery code signs in once.
    let d = password_login(&gw, "rc@example.com").await;
    let sloppy = codes[0].to_uppercase().replace('-', " ");
    let (status, v) = second_step(&gw, d["mfa_token"].as_str().unwrap(), &sloppy).await;
    assert_eq!(status, 200, "{v}");
    let t = v["data"]["access_token"].as_str().unwrap().to_string();
    let (_, v) = gw.call(Method::GET, "/auth/mfa", &t, None).await;
    assert_eq!(v["data"]["recovery_codes"]["remaining"], 9, "{v}");
    let d = password_login(&gw, "rc@example.com").await;
    let (status, v) = second_step(&gw, d["mfa_token"].as_str().unwrap(), &codes[0]).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("INVALID_OTP")),
        "used: {v}"
    );
    // New codes for an app code; the old ones die.
    next_step(&clock);
    let (status, v) = gw
        .call(
            Method::POST,
            "/auth/mfa/recovery-codes",
            &t,
            Some(json!({"code": totp(&secret, clock.unix_now())})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let fresh: Vec<String> = v["data"]["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(fresh.len(), 10);
    let d = password_login(&gw, "rc@example.com").await;
    let step = d["mfa_token"].as_str().unwrap().to_string();
    let (status, _) = second_step(&gw, &step, &codes[1]).await;
    assert_eq!(status, 400, "an old code died with the regeneration");
    let (status, v) = second_step(&gw, &step, &fresh[0]).await;
    assert_eq!(status, 200, "{v}");
    // Removing the authenticator takes one of its codes (a recovery code does too), and
    // the next sign-in asks for nothing more.
    let t = v["data"]["access_token"].as_str().unwrap().to_string();
    let (status, _) = gw
        .call(
            Method::DELETE,
            "/auth/mfa/totp",
            &t,
            Some(json!({"code": "000000"})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, v) = gw
        .call(
            Method::DELETE,
            "/auth/mfa/totp",
            &t,
            Some(json!({"code": fresh[1]})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let d = password_login(&gw, "rc@example.com").await;
    assert!(d["access_token"].is_string(), "{d}");
    gw.stop().await;
}

#[tokio::test]
async fn a_wrong_totp_flood_locks_like_a_password_flood() {
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    let gw = gateway(&smtp, &clock, "[otp]\nlockout_threshold = 6\n").await;
    sign_up(&gw, &smtp, "flood@example.com").await;
    let token = one_factor_token(&gw, "flood@example.com").await;
    enrol(&gw, &clock, &token).await;
    // A thief with the password, guessing codes: each mfa_token dies after its tries, and
    // every wrong code counts on the account's sign-in lock.
    let mut locked = false;
    for _ in 0..10 {
        let (status, v) = gw
            .post(
                "/auth/login",
                json!({"login": "flood@example.com", "password": PW}),
            )
            .await;
        if status == 403 {
            assert_eq!(v["code"], "USER_BLOCKED", "{v}");
            locked = true;
            break;
        }
        assert_eq!(status, 200, "{v}");
        let step = v["data"]["mfa_token"].as_str().unwrap().to_string();
        for _ in 0..2 {
            let (status, v) = second_step(&gw, &step, "123456").await;
            clock.advance(Duration::from_secs(20));
            if status == 403 {
                assert_eq!(v["code"], "USER_BLOCKED", "{v}");
                locked = true;
                break;
            }
            assert_eq!(
                (status, v["code"].as_str()),
                (400, Some("INVALID_OTP")),
                "{v}"
            );
        }
        if locked {
            break;
        }
    }
    assert!(locked, "wrong second factors lock the account");
    // Locked for strangers: the right password is refused too.
    let (status, v) = gw
        .post(
            "/auth/login",
            json!({"login": "flood@example.com", "password": PW}),
        )
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (403, Some("USER_BLOCKED")),
        "{v}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_mfa_token_is_single_use_short_lived_bound_and_no_access_token() {
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    let gw = gateway(&smtp, &clock, "").await;
    sign_up(&gw, &smtp, "a@example.com").await;
    sign_up(&gw, &smtp, "b@example.com").await;
    let ta = one_factor_token(&gw, "a@example.com").await;
    let tb = one_factor_token(&gw, "b@example.com").await;
    let (sa, codes_a) = enrol(&gw, &clock, &ta).await;
    let (_sb, _) = enrol(&gw, &clock, &tb).await;
    next_step(&clock);
    let step_a = password_login(&gw, "a@example.com").await["mfa_token"]
        .as_str()
        .unwrap()
        .to_string();
    // Not an access token anywhere.
    let (status, _) = gw.call(Method::GET, "/auth/me", &step_a, None).await;
    assert_eq!(status, 401);
    let (status, _) = validate(&gw, &step_a).await;
    assert_eq!(status, 401);
    // Moved onto another account (b's id, a's secret): nothing.
    let step_b = password_login(&gw, "b@example.com").await["mfa_token"]
        .as_str()
        .unwrap()
        .to_string();
    let secret_part = step_a.rsplit('.').next().unwrap();
    let b_id = step_b.split('.').nth(1).unwrap();
    let forged = format!("mfa1.{b_id}.{secret_part}");
    let (status, v) = second_step(&gw, &forged, &codes_a[0]).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (401, Some("UNAUTHENTICATED")),
        "{v}"
    );
    // Used once, then never again.
    let code = totp(&sa, clock.unix_now());
    let (status, v) = second_step(&gw, &step_a, &code).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = second_step(&gw, &step_a, &codes_a[1]).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (401, Some("UNAUTHENTICATED")),
        "reuse: {v}"
    );
    // Five wrong codes and it is dead, even for a right one.
    let step = password_login(&gw, "a@example.com").await["mfa_token"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..5 {
        let (status, _) = second_step(&gw, &step, "000000").await;
        assert_eq!(status, 400);
        clock.advance(Duration::from_secs(10));
    }
    let (status, v) = second_step(&gw, &step, &codes_a[2]).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (401, Some("UNAUTHENTICATED")),
        "{v}"
    );
    // Expired after its five minutes.
    let step = password_login(&gw, "a@example.com").await["mfa_token"]
        .as_str()
        .unwrap()
        .to_string();
    clock.advance(Duration::from_secs(301));
    let (status, v) = second_step(&gw, &step, &codes_a[2]).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (401, Some("UNAUTHENTICATED")),
        "{v}"
    );
    // Garbage is a 4xx envelope.
    for bad in ["", "mfa1..", "mfa1.zz.yy", "x"] {
        let (status, v) = second_step(&gw, bad, "123456").await;
        assert_eq!(status, 401, "{bad}: {v}");
    }
    gw.stop().await;
}

/// The first factor's answers are the same for an unknown account, and for a known one
/// whether or not it has a second factor, until the first factor is right.
#[tokio::test]
async fn a_wrong_first_factor_says_nothing_about_second_factors() {
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    let gw = gateway(&smtp, &clock, "").await;
    sign_up(&gw, &smtp, "with@example.com").await;
    sign_up(&gw, &smtp, "without@example.com").await;
    let t = one_factor_token(&gw, "with@example.com").await;
    enrol(&gw, &clock, &t).await;
    let mut answers = Vec::new();
    for login in [
        "with@example.com",
        "without@example.com",
        "nobody@example.com",
    ] {
        let (status, v) = gw
            .post(
                "/auth/login",
                json!({"login": login, "password": "not the password at all"}),
            )
            .await;
        answers.push((
            status,
            v["code"].clone(),
            v["message"].clone(),
            v.get("data").cloned(),
        ));
        // Mailed-code sign-in: the same answer for all three.
        let (status, v) = gw.post("/auth/login/code", json!({"email": login})).await;
        answers.push((status, v["status"].clone(), v["message"].clone(), None));
    }
    assert_eq!(answers[0], answers[2]);
    assert_eq!(answers[2], answers[4]);
    assert_eq!(answers[1], answers[3]);
    assert_eq!(answers[3], answers[5]);
    // A mailed code is a first factor too: it earns the second step.
    let code = smtp.code("with@example.com", 2).await;
    let (status, v) = gw
        .post(
            "/auth/login/code/verify",
            json!({"email": "with@example.com", "code": code}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["mfa_required"], true, "{v}");
    assert!(v["data"].get("access_token").is_none());
    gw.stop().await;
}

fn vault_routes(up: &Upstream) -> String {
    format!(
        r#"
        [identity_headers]
        amr = "x-auth-amr"
        [[routes]]
        path_prefix = "/"
        upstream = "{u}"
        [[routes]]
        path_prefix = "/vault"
        upstream = "{u}"
        mfa = true
        [[routes]]
        path_prefix = "/ops"
        upstream = "{u}"
        roles = ["admin"]
        "#,
        u = up.url()
    )
}

#[tokio::test]
async fn a_route_that_needs_two_factors_through_the_built_in_proxy() {
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    let up = Upstream::start().await;
    let gw = gateway(
        &smtp,
        &clock,
        &format!(
            "[server]\nallowed_redirect_hosts = [\"127.0.0.1\"]\n{}",
            vault_routes(&up)
        ),
    )
    .await;
    sign_up(&gw, &smtp, "v@example.com").await;
    let d = password_login(&gw, "v@example.com").await;
    let token = d["access_token"].as_str().unwrap().to_string();
    let refresh = d["refresh_token"].as_str().unwrap().to_string();
    let get = |path: &str, token: &str, html: bool| {
        let mut r = gw.client.get(gw.url(path)).bearer_auth(token);
        if html {
            r = r
                .header("accept", "text/html")
                .header("sec-fetch-mode", "navigate");
        }
        r
    };
    // One factor: the ordinary route passes (and says how), the vault does not.
    let r = get("/app", &token, false).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["headers"]["x-auth-amr"], json!(["pwd"]), "{echo}");
    let r = get("/vault/x", &token, false).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "MFA_REQUIRED", "{v}");
    let no_redirects = gw
        .client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects
        .get(gw.url("/vault/x?y=1"))
        .bearer_auth(&token)
        .header("accept", "text/html")
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let to = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(to.path(), "/auth/ui/step-up", "{to}");
    let rd = to.query_pairs().find(|(k, _)| k == "rd").unwrap().1;
    assert_eq!(rd, gw.url("/vault/x?y=1"), "{to}");
    // Without a factor, the step-up has nothing to take.
    let (status, v) = gw
        .call(
            Method::POST,
            "/auth/mfa/verify",
            &token,
            Some(json!({"code": "123456"})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    // Enrolled, the session steps up with a code: the new pair carries it, refreshes keep
    // it, and the old refresh token is rotated away.
    let (secret, _) = enrol(&gw, &clock, &token).await;
    next_step(&clock);
    let (status, v) = gw
        .call(
            Method::POST,
            "/auth/mfa/verify",
            &token,
            Some(json!({"code": totp(&secret, clock.unix_now())})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let stepped = v["data"]["access_token"].as_str().unwrap().to_string();
    let stepped_refresh = v["data"]["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(v["data"]["session_id"], d["session_id"], "the same session");
    let r = get("/vault/x", &stepped, false).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(
        echo["headers"]["x-auth-amr"],
        json!(["pwd,otp,mfa"]),
        "{echo}"
    );
    let (status, v) = gw
        .post(
            "/auth/token/refresh",
            json!({"refresh_token": stepped_refresh}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let refreshed = v["data"]["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        get("/vault/x", &refreshed, false)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The pre-step-up refresh token, past the reuse grace window, ends the session.
    clock.advance(Duration::from_secs(10));
    let (status, _) = gw
        .post("/auth/token/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(status, 401);
    // The client cannot claim the header.
    let d = password_login(&gw, "v@example.com").await;
    let (status, v) = second_step(
        &gw,
        d["mfa_token"].as_str().unwrap(),
        &totp(&secret, clock.unix_now() + 30),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let t = v["data"]["access_token"].as_str().unwrap();
    let r = get("/app", t, false)
        .header("x-auth-amr", "hwk,mfa")
        .send()
        .await
        .unwrap();
    let echo: Value = r.json().await.unwrap();
    assert_eq!(
        echo["headers"]["x-auth-amr"],
        json!(["pwd,otp,mfa"]),
        "{echo}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn required_roles_count_only_after_a_second_factor() {
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    let up = Upstream::start().await;
    let gw = gateway(
        &smtp,
        &clock,
        &format!("[mfa]\nrequired_roles = [\"admin\"]\n{}", vault_routes(&up)),
    )
    .await;
    sign_up(&gw, &smtp, "boss@example.com").await;
    sign_up(&gw, &smtp, "staff@example.com").await;
    // Made an admin through the service the CLI uses (the gateway holds the store).
    let boss = password_login(&gw, "boss@example.com").await;
    let boss_id = boss["user"]["id"].as_str().unwrap().to_string();
    gw.running
        .as_ref()
        .unwrap()
        .app
        .accounts
        .set_roles(&boss_id.parse().unwrap(), vec!["admin".into()])
        .await
        .unwrap();
    let token = one_factor_token(&gw, "boss@example.com").await;
    // Not even in the token itself, for an application that reads it.
    use base64::Engine;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["roles"], json!([]), "{claims}");
    assert_eq!(claims["withheld_roles"], json!(["admin"]), "{claims}");
    // One factor: the admin role is withheld, with a reason the caller can act on.
    let (status, v) = gw
        .call(Method::GET, "/auth/admin/users", &token, None)
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (403, Some("MFA_REQUIRED")),
        "{v}"
    );
    let r = gw
        .client
        .get(gw.url("/ops/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = gw
        .client
        .get(gw.url("/app"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let echo: Value = r.json().await.unwrap();
    assert_eq!(
        echo["headers"]["x-auth-user-roles"],
        json!([""]),
        "not told of admin: {echo}"
    );
    let (_, v) = validate(&gw, &token).await;
    assert_eq!(v["data"]["roles"], json!([]), "{v}");
    // Enrolled and stepped up: the role counts.
    let (secret, _) = enrol(&gw, &clock, &token).await;
    next_step(&clock);
    let (status, v) = gw
        .call(
            Method::POST,
            "/auth/mfa/verify",
            &token,
            Some(json!({"code": totp(&secret, clock.unix_now())})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let admin = v["data"]["access_token"].as_str().unwrap().to_string();
    let (status, v) = gw
        .call(Method::GET, "/auth/admin/users", &admin, None)
        .await;
    assert_eq!(status, 200, "{v}");
    let r = gw
        .client
        .get(gw.url("/ops/x"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The admin resets staff's factors: staff's sessions end, and the next sign-in asks
    // for the password alone.
    let staff_token = one_factor_token(&gw, "staff@example.com").await;
    enrol(&gw, &clock, &staff_token).await;
    let staff_id = validate(&gw, &staff_token).await.1["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, v) = gw
        .call(
            Method::GET,
            &format!("/auth/admin/users/{staff_id}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(v["data"]["mfa"]["totp"], true, "{v}");
    let (status, v) = gw
        .call(
            Method::DELETE,
            &format!("/auth/admin/users/{staff_id}/mfa"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        gw.call(Method::GET, "/auth/me", &staff_token, None).await.0,
        401
    );
    let d = password_login(&gw, "staff@example.com").await;
    assert!(d["access_token"].is_string(), "{d}");
    gw.stop().await;
}

/// A password reset by mailed code proves the mailbox, not the authenticator: the second
/// factor stays, and the next sign-in asks for it.
#[tokio::test]
async fn a_password_reset_keeps_the_second_factor() {
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    let gw = gateway(&smtp, &clock, "").await;
    sign_up(&gw, &smtp, "reset@example.com").await;
    let t = one_factor_token(&gw, "reset@example.com").await;
    enrol(&gw, &clock, &t).await;
    // A second step earned with the old password dies with it.
    let before = password_login(&gw, "reset@example.com").await["mfa_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = gw
        .post(
            "/auth/password/forgot",
            json!({"email": "reset@example.com"}),
        )
        .await;
    assert_eq!(status, 200);
    let code = smtp.code("reset@example.com", 2).await;
    let new_pw = "another fine long passphrase";
    let (status, v) = gw
        .post(
            "/auth/password/reset",
            json!({"email": "reset@example.com", "code": code, "new_password": new_pw}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["data"].get("access_token").is_none(), "{v}");
    let (status, v) = gw
        .post(
            "/auth/login",
            json!({"login": "reset@example.com", "password": new_pw}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["mfa_required"], true, "{v}");
    let (status, v) = second_step(&gw, &before, "00000-00000").await;
    assert_eq!(
        (status, v["code"].as_str()),
        (401, Some("UNAUTHENTICATED")),
        "{v}"
    );
    gw.stop().await;
}

/// Turning a second factor on ends the account's other sessions (a password thief's among
/// them), and from then on only a two-factor session changes the password or the address.
#[tokio::test]
async fn enrolling_ends_other_sessions_and_account_changes_need_two_factors() {
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    let gw = gateway(&smtp, &clock, "").await;
    sign_up(&gw, &smtp, "own@example.com").await;
    let thief = one_factor_token(&gw, "own@example.com").await;
    let owner = one_factor_token(&gw, "own@example.com").await;
    let (secret, _) = enrol(&gw, &clock, &owner).await;
    assert_eq!(gw.call(Method::GET, "/auth/me", &thief, None).await.0, 401);
    // The enrolling session goes on, with one factor: it cannot move the account.
    let (status, v) = gw
        .call(
            Method::POST,
            "/auth/password/change",
            &owner,
            Some(json!({"current_password": PW, "new_password": "yet another long passphrase"})),
        )
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (403, Some("MFA_REQUIRED")),
        "{v}"
    );
    let (status, v) = gw
        .call(
            Method::POST,
            "/auth/me/email",
            &owner,
            Some(json!({"email": "thief@example.com", "current_password": PW})),
        )
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (403, Some("MFA_REQUIRED")),
        "{v}"
    );
    // Stepped up, it can.
    next_step(&clock);
    let (status, v) = gw
        .call(
            Method::POST,
            "/auth/mfa/verify",
            &owner,
            Some(json!({"code": totp(&secret, clock.unix_now())})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let stepped = v["data"]["access_token"].as_str().unwrap().to_string();
    let (status, v) = gw
        .call(
            Method::POST,
            "/auth/password/change",
            &stepped,
            Some(json!({"current_password": PW, "new_password": "yet another long passphrase"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    gw.stop().await;
}

/// The forward-auth doors judge `mfa = true` as the proxy does: nginx's door answers 401 with
/// the step-up page in `Location` (nginx acts on a 401 alone), Traefik's and Caddy's 403
/// MFA_REQUIRED, or a 302 to the step-up page for a browser.
#[tokio::test]
async fn forward_auth_doors_send_a_one_factor_session_to_step_up() {
    let smtp = Smtp::start();
    let clock = ManualClock::starting_now();
    let up = Upstream::start().await;
    let gw = gateway(
        &smtp,
        &clock,
        &format!(
            "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\nallowed_redirect_hosts = [\"app.test\"]\n{}",
            vault_routes(&up)
        ),
    )
    .await;
    sign_up(&gw, &smtp, "fa2@example.com").await;
    let one = one_factor_token(&gw, "fa2@example.com").await;
    let no_redirects = gw
        .client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let ask = |door: &str, token: &str, html: bool| {
        let mut r = no_redirects
            .get(gw.url(door))
            .bearer_auth(token)
            .header("x-original-url", "https://app.test/vault/x")
            .header("x-original-method", "GET")
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "app.test")
            .header("x-forwarded-uri", "/vault/x");
        if html {
            r = r.header("accept", "text/html");
        }
        r.send()
    };
    let step_up = |r: &reqwest::Response| {
        let to = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
        assert_eq!(to.path(), "/auth/ui/step-up", "{to}");
        let rd = to
            .query_pairs()
            .find(|(k, _)| k == "rd")
            .unwrap()
            .1
            .to_string();
        assert_eq!(rd, "https://app.test/vault/x");
    };
    for html in [false, true] {
        let r = ask("/auth/validate/auth-request", &one, html)
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "nginx's door, html={html}");
        step_up(&r);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], "MFA_REQUIRED");
    }
    let r = ask("/auth/validate/forward-auth", &one, false)
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    step_up(&r);
    let r = ask("/auth/validate/forward-auth", &one, true)
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    step_up(&r);
    // Stepped up, every door admits the session and says how it was proved.
    let (secret, _) = enrol(&gw, &clock, &one).await;
    next_step(&clock);
    let (status, v) = gw
        .call(
            Method::POST,
            "/auth/mfa/verify",
            &one,
            Some(json!({"code": totp(&secret, clock.unix_now())})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let two = v["data"]["access_token"].as_str().unwrap().to_string();
    for door in ["/auth/validate/auth-request", "/auth/validate/forward-auth"] {
        let r = ask(door, &two, false).await.unwrap();
        assert_eq!(r.status(), 200, "{door}");
        assert_eq!(r.headers()["x-auth-amr"], "pwd,otp,mfa");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["data"]["aal"], 2, "{v}");
    }
    gw.stop().await;
}

//! Every flow of the five seed backends (../shared/seeds), through the contract's endpoints,
//! with mail read from a real SMTP server. One test per seed, named after it.

use crate::harness::*;
use crate::mail::Smtp;
use reqwest::Method;
use serde_json::json;

const PW: &str = "correct horse battery staple";
const PW2: &str = "a brand new sturdy passphrase";

fn app_routes(up: &Upstream) -> String {
    format!(
        r#"
        [[routes]]
        name = "public"
        path_prefix = "/"
        upstream = "{u}"
        access = "public"
        [[routes]]
        name = "api"
        path_prefix = "/api"
        upstream = "{u}"
        access = "authenticated"
        "#,
        u = up.url()
    )
}

/// Registers, verifies with the mailed code, returns the user object.
pub async fn register_verified(
    gw: &Gateway,
    smtp: &Smtp,
    body: serde_json::Value,
) -> serde_json::Value {
    let email = body["email"].as_str().unwrap().to_lowercase();
    let before = smtp.count_to(&email);
    let (status, reg) = gw.post("/auth/register", body).await;
    assert_eq!(status, 201, "{reg}");
    let code = smtp.code(&email, before + 1).await;
    // The sign-up token says this client chose the password: it keeps it.
    let (status, v) = gw
        .post(
            "/auth/verify",
            json!({"email": email, "code": code, "signup_token": reg["data"]["signup_token"]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["user"]["email_verified"], true);
    v["data"]["user"].clone()
}

pub async fn login(gw: &Gateway, login: &str, password: &str) -> serde_json::Value {
    let (status, v) = gw
        .post("/auth/login", json!({"login": login, "password": password}))
        .await;
    assert_eq!(status, 200, "{v}");
    v["data"].clone()
}

/// Seed 000 (OTP_Authentication): register with username, verify by OTP, log in, use a
/// protected API (its "customers"), log out, reset the password.
#[tokio::test]
async fn seed_000_otp_authentication() {
    let smtp = Smtp::start();
    let up = Upstream::start().await;
    let gw = Gateway::start_with(&app_routes(&up), Some(&smtp), None).await;
    register_verified(
        &gw,
        &smtp,
        json!({"username": "ravi", "email": "ravi@example.com", "password": PW}),
    )
    .await;
    let tokens = login(&gw, "ravi@example.com", PW).await;
    let token = tokens["access_token"].as_str().unwrap();

    // GET/POST /api/customers through the proxy, with the identity the upstream sees.
    let r = gw
        .client
        .get(gw.url("/api/customers"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["headers"]["x-auth-user-email"][0], "ravi@example.com");
    assert_eq!(echo["headers"]["x-auth-user-name"][0], "ravi");
    let r = gw
        .client
        .post(gw.url("/api/customers"))
        .bearer_auth(token)
        .json(&json!({"name": "c", "address": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        gw.client
            .get(gw.url("/api/customers"))
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "no token, no customers"
    );

    // Logout: the token stops working at once.
    let (status, v) = gw.call(Method::POST, "/auth/logout", token, None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["revoked"], 1);
    assert_eq!(
        gw.client
            .get(gw.url("/api/customers"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    // Reset (their PATCH /api/reset): forgot → code → new password.
    let (status, _) = gw
        .post(
            "/auth/password/forgot",
            json!({"email": "ravi@example.com"}),
        )
        .await;
    assert_eq!(status, 200);
    let code = smtp.code("ravi@example.com", 2).await;
    let (status, v) = gw
        .post(
            "/auth/password/reset",
            json!({"email": "ravi@example.com", "code": code, "new_password": PW2}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, _) = gw
        .post("/auth/login", json!({"login": "ravi", "password": PW}))
        .await;
    assert_eq!(status, 401, "old password refused");
    login(&gw, "ravi", PW2).await;
    gw.stop().await;
}

/// Seed 001 (Standard_auth): signup; username and email taken; login by username or email;
/// wrong password; unknown user; OTP to change the password (wrong, expired, right); logout.
#[tokio::test]
async fn seed_001_standard_auth() {
    let smtp = Smtp::start();
    let clock = authgate::clock::ManualClock::starting_now();
    let gw = Gateway::start_with("", Some(&smtp), Some(&clock)).await;
    register_verified(
        &gw,
        &smtp,
        json!({"username": "aman", "email": "user1@gmail.com", "password": PW}),
    )
    .await;

    let (status, v) = gw
        .post(
            "/auth/register",
            json!({"username": "Aman", "email": "other@gmail.com", "password": PW}),
        )
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (409, Some("ALREADY_EXISTS")),
        "{v}"
    );
    assert_eq!(v["fields"]["username"], "is already taken");
    let (status, v) = gw
        .post(
            "/auth/register",
            json!({"username": "someone", "email": "USER1@gmail.com", "password": PW}),
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(
        v["fields"]["email"], "is already taken",
        "emails compare case-insensitively"
    );

    login(&gw, "aman", PW).await;
    login(&gw, "User1@Gmail.com", PW).await;
    let (status, v) = gw
        .post(
            "/auth/login",
            json!({"login": "aman", "password": "wrong password here"}),
        )
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (401, Some("INVALID_CREDENTIALS"))
    );
    let (status, v) = gw
        .post("/auth/login", json!({"login": "nobody", "password": PW}))
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (401, Some("INVALID_CREDENTIALS")),
        "unknown user looks the same"
    );

    // getOtp → verifyOtpChangePassword.
    gw.post("/auth/password/forgot", json!({"email": "user1@gmail.com"}))
        .await;
    let mail = smtp.nth_to("user1@gmail.com", 2).await;
    assert!(
        mail.subject().contains("Reset your password"),
        "{}",
        mail.subject()
    );
    let code = mail.code();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (status, v) = gw
        .post(
            "/auth/password/reset",
            json!({"email": "user1@gmail.com", "code": wrong, "new_password": PW2}),
        )
        .await;
    assert_eq!((status, v["code"].as_str()), (400, Some("INVALID_OTP")));
    clock.advance(std::time::Duration::from_secs(11 * 60));
    let (status, v) = gw
        .post(
            "/auth/password/reset",
            json!({"email": "user1@gmail.com", "code": code, "new_password": PW2}),
        )
        .await;
    assert_eq!((status, v["code"].as_str()), (400, Some("OTP_EXPIRED")));
    gw.post("/auth/password/forgot", json!({"email": "user1@gmail.com"}))
        .await;
    let code = smtp.code("user1@gmail.com", 3).await;
    let (status, _) = gw
        .post(
            "/auth/password/reset",
            json!({"email": "user1@gmail.com", "code": code, "new_password": PW2}),
        )
        .await;
    assert_eq!(status, 200);
    let tokens = login(&gw, "aman", PW2).await;
    let (status, _) = gw
        .call(
            Method::POST,
            "/auth/logout",
            tokens["access_token"].as_str().unwrap(),
            None,
        )
        .await;
    assert_eq!(status, 200);
    gw.stop().await;
}

/// Seed 002 (Authorisation and Secure Login): create an account with phone and delivery
/// address; authenticate by username; forgot → code → reset token → new password.
#[tokio::test]
async fn seed_002_secure_login() {
    let smtp = Smtp::start();
    let gw = Gateway::start_with("", Some(&smtp), None).await;
    let address = json!({"state": "New York", "district": "New York", "city": "New York", "pincode": "10001",
                         "address_lane": "5678 Oak Avenue", "landmark": "Next to Empire State Building"});
    let user = register_verified(
        &gw,
        &smtp,
        json!({"username": "newuser123", "email": "newuser@example.com", "password": PW,
               "phone": "+1 234 567 8901", "profile": {"delivery_address": address}}),
    )
    .await;
    assert_eq!(user["phone"], "+12345678901");
    assert_eq!(user["profile"]["delivery_address"]["pincode"], "10001");
    let tokens = login(&gw, "newuser123", PW).await;
    assert_eq!(tokens["token_type"], "Bearer");

    gw.post(
        "/auth/password/forgot",
        json!({"email": "newuser@example.com"}),
    )
    .await;
    let code = smtp.code("newuser@example.com", 2).await;
    let (status, v) = gw
        .post(
            "/auth/password/reset/verify",
            json!({"email": "newuser@example.com", "code": code}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let reset_token = v["data"]["reset_token"].as_str().unwrap().to_string();
    let (status, _) = gw
        .call(
            Method::POST,
            "/auth/password/reset",
            &reset_token,
            Some(json!({"new_password": PW2})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, v) = gw
        .call(
            Method::POST,
            "/auth/password/reset",
            &reset_token,
            Some(json!({"new_password": PW})),
        )
        .await;
    assert_eq!(status, 401, "the reset token is single use: {v}");
    // The reset ended the old session.
    let (status, _) = gw
        .call(
            Method::GET,
            "/auth/me",
            tokens["access_token"].as_str().unwrap(),
            None,
        )
        .await;
    assert_eq!(status, 401);
    login(&gw, "newuser@example.com", PW2).await;
    gw.stop().await;
}

/// Seed 003 (simple-jwt-otp): sign up without a password, sign in by emailed code, list the
/// logged-in devices, log out selected devices and all, refresh, profile, request validation,
/// and the status enums (INVALID_OTP, ATTEMPTS_EXCEEDED, USER_BLOCKED, USER_DOES_NOT_EXIST).
#[tokio::test]
async fn seed_003_jwt_otp() {
    let smtp = Smtp::start();
    let up = Upstream::start().await;
    let toml = format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[security]\nreveal_account_existence = true\n[otp]\nlockout_threshold = 6\n{}",
        app_routes(&up)
    );
    let clock = authgate::clock::ManualClock::starting_now();
    let gw = Gateway::start_with(&toml, Some(&smtp), Some(&clock)).await;
    let email = "johndoe@email.com";
    let (status, v) = gw
        .post(
            "/auth/register",
            json!({"email": email, "full_name": "john doe"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["data"]["user"]["email_verified"], false);
    // Mails are sent concurrently: let the verification mail land before the sign-in codes.
    smtp.nth_to(email, 1).await;

    // LOGIN_OTP_GENERATION then LOGIN, three devices; the first code sign-in verifies the email.
    let mut sessions = Vec::new();
    for (i, ua) in [
        "PostmanRuntime/7.28.2",
        "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
        "curl/8.0",
    ]
    .iter()
    .enumerate()
    {
        let (status, v) = gw.post("/auth/login/code", json!({"email": email})).await;
        assert_eq!(status, 200, "{v}");
        let code = smtp.code(email, 2 + i).await;
        let r = gw
            .client
            .post(gw.url("/auth/login/code/verify"))
            .header("user-agent", *ua)
            .json(&json!({"email": email, "code": code}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["data"]["user"]["email_verified"], true);
        sessions.push(v["data"].clone());
        // The next device asks at once: the cooldown guards a live code, and this one is used.
    }
    let token = |i: usize| sessions[i]["access_token"].as_str().unwrap().to_string();

    // LOGGED_DEVICES.
    let (status, v) = gw
        .call(Method::GET, "/auth/sessions", &token(0), None)
        .await;
    assert_eq!(status, 200);
    let list = v["data"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list.iter().filter(|s| s["current"] == true).count(), 1);
    assert!(list.iter().any(|s| s["device"] == "PostmanRuntime/7.28.2"));
    assert!(
        list.iter()
            .any(|s| s["device"].as_str().unwrap().starts_with("Firefox")),
        "{list:?}"
    );

    // Refresh.
    let (status, v) = gw
        .post(
            "/auth/token/refresh",
            json!({"refresh_token": sessions[0]["refresh_token"]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let fresh = v["data"]["access_token"].as_str().unwrap().to_string();

    // UserInformation.
    let (status, v) = gw.call(Method::GET, "/auth/me", &fresh, None).await;
    assert_eq!(
        (status, v["data"]["full_name"].as_str()),
        (200, Some("john doe"))
    );

    // auth/request-validation.
    let r = gw
        .client
        .get(gw.url("/auth/validate"))
        .bearer_auth(&fresh)
        .header("x-forwarded-uri", "/api/x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-auth-user-email"], email);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["data"]["email"], email);
    // HEAD (nginx's auth_request subrequest): the same verdict and identity, no body.
    let r = gw
        .client
        .head(gw.url("/auth/validate"))
        .bearer_auth(&fresh)
        .header("x-original-uri", "/api/x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-auth-user-email"], email);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["content-type"], "application/json");
    assert!(r.bytes().await.unwrap().is_empty());
    let r = gw
        .client
        .get(gw.url("/auth/validate"))
        .header("x-forwarded-uri", "/api/x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = gw
        .client
        .head(gw.url("/auth/validate"))
        .header("x-original-uri", "/api/x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers().contains_key("location"),
        "for nginx's error_page"
    );

    // LOGOUT loginId=[second]; then userId (all).
    let second = sessions[1]["session_id"].as_str().unwrap();
    let (status, v) = gw
        .call(
            Method::POST,
            "/auth/logout",
            &fresh,
            Some(json!({"sessions": [second]})),
        )
        .await;
    assert_eq!((status, v["data"]["revoked"].as_u64()), (200, Some(1)));
    assert_eq!(
        gw.call(Method::GET, "/auth/me", &token(1), None).await.0,
        401
    );
    assert_eq!(
        gw.call(Method::GET, "/auth/me", &token(2), None).await.0,
        200
    );
    let (status, v) = gw
        .call(
            Method::POST,
            "/auth/logout",
            &fresh,
            Some(json!({"all": true})),
        )
        .await;
    assert_eq!((status, v["data"]["revoked"].as_u64()), (200, Some(2)));
    assert_eq!(
        gw.call(Method::GET, "/auth/me", &token(2), None).await.0,
        401
    );

    // Status enums: USER_DOES_NOT_EXIST (revealing mode), INVALID_OTP, ATTEMPTS_EXCEEDED, USER_BLOCKED.
    let (status, v) = gw
        .post("/auth/login/code", json!({"email": "ghost@email.com"}))
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (404, Some("USER_DOES_NOT_EXIST"))
    );
    gw.post("/auth/login/code", json!({"email": email})).await;
    let code = smtp.code(email, 5).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..4 {
        // Past the escalating pause each failure adds (from the third on).
        clock.advance(std::time::Duration::from_secs(20));
        let (_, v) = gw
            .post(
                "/auth/login/code/verify",
                json!({"email": email, "code": wrong}),
            )
            .await;
        assert_eq!(v["code"], "INVALID_OTP");
    }
    clock.advance(std::time::Duration::from_secs(20));
    let (status, v) = gw
        .post(
            "/auth/login/code/verify",
            json!({"email": email, "code": wrong}),
        )
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (429, Some("ATTEMPTS_EXCEEDED"))
    );
    let (status, v) = gw
        .post(
            "/auth/login/code/verify",
            json!({"email": email, "code": code}),
        )
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (403, Some("USER_BLOCKED")),
        "sixth failure locks the account (threshold 6)"
    );
    let r = gw
        .client
        .post(gw.url("/auth/login/code/verify"))
        .json(&json!({"email": email, "code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "still locked, even with the right digits");
    assert!(r.headers().contains_key("retry-after"));
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], "USER_BLOCKED");
    gw.stop().await;
}

/// Seed 004 (Spare Parts Shop): register with full name and phone (201 with the code's expiry),
/// login refused before verification, resend inside the cooldown (429), verify, login with
/// tokens and cookies, forgot and reset.
#[tokio::test]
async fn seed_004_spare_parts() {
    let smtp = Smtp::start();
    let gw = Gateway::start_with("", Some(&smtp), None).await;
    let email = "ghimire.shankar1996@gmail.com";
    let (status, v) = gw
        .post("/auth/register", json!({"full_name": "Shankar Ghimire", "email": email, "password": PW, "phone": "+9779800000000"}))
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"]["user"]["roles"], json!(["customer"]));
    // What says, when the code comes back, that this client chose the password.
    let signup = v["data"]["signup_token"].clone();
    assert!(v["data"]["otp_expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(v["data"]["user"].get("password").is_none());

    let (status, v) = gw
        .post(
            "/auth/register",
            json!({"email": "x@gmail.com", "password": PW, "phone": "+9779800000000"}),
        )
        .await;
    assert_eq!(
        (status, v["fields"]["phone"].as_str()),
        (409, Some("is already taken"))
    );

    let (status, v) = gw
        .post("/auth/login", json!({"login": email, "password": PW}))
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (403, Some("EMAIL_NOT_VERIFIED"))
    );

    let r = gw
        .client
        .post(gw.url("/auth/verify/resend"))
        .json(&json!({"email": email}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], "OTP_STILL_VALID");

    let code = smtp.code(email, 1).await;
    let (status, v) = gw
        .post(
            "/auth/verify",
            json!({"email": email, "code": code, "signup_token": signup}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = gw
        .post(
            "/auth/verify",
            json!({"email": email, "code": code, "signup_token": signup}),
        )
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("INVALID_OTP")),
        "a code works once"
    );

    let r = gw
        .client
        .post(gw.url("/auth/login"))
        .json(&json!({"login": email, "password": PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("__Host-authgate-access=")),
        "{cookies:?}"
    );
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("__Secure-authgate-refresh=") && c.contains("Path=/auth;"))
    );
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["data"]["access_token"].is_string() && v["data"]["refresh_token"].is_string());

    gw.post("/auth/password/forgot", json!({"email": email}))
        .await;
    let code = smtp.code(email, 2).await;
    let (status, _) = gw
        .post(
            "/auth/password/reset",
            json!({"email": email, "code": code, "new_password": PW2}),
        )
        .await;
    assert_eq!(status, 200);
    login(&gw, email, PW2).await;
    gw.stop().await;
}

//! Account endpoints: register, verify, sign in by password or code, password reset and
//! change, profile.

use super::{
    Result, body_json, caller, client, presented, sign_in_response, signed_in_response,
    signed_in_response_with, user_json,
};
use crate::accounts::{ProfilePatch, Registration};
use crate::clock::rfc3339;
use crate::http::body::Body;
use crate::http::error::success;
use crate::http::{App, RequestCtx, auth};
use crate::secret::Secret;
use http::{Response, StatusCode, request::Parts};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct RegisterBody {
    email: String,
    password: Option<Secret>,
    username: Option<String>,
    full_name: Option<String>,
    phone: Option<String>,
    profile: Option<serde_json::Map<String, serde_json::Value>>,
}

pub async fn register(
    app: &App,
    ctx: &RequestCtx,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>> {
    let b: RegisterBody = body_json(app, parts, body, false).await?;
    let reg = Registration {
        email: b.email,
        password: b.password,
        username: b.username,
        full_name: b.full_name,
        phone: b.phone,
        profile: b.profile,
    };
    let (user, expires, signup) = app
        .accounts
        .register(reg, &client(ctx, parts, None))
        .await?;
    // The sign-up token keeps the password when this client verifies the address: as a
    // cookie for browsers and clients with a cookie jar, in the body for the others.
    let mut resp = success(
        StatusCode::CREATED,
        "Account created. A verification code was sent to your email address.",
        &json!({
            "user": user_json(&user),
            "otp_expires_at": rfc3339(expires),
            "signup_token": signup.expose(),
        }),
    );
    auth::set_signup_cookie(resp.headers_mut(), &signup);
    Ok(resp)
}

#[derive(Deserialize)]
struct EmailCode {
    email: String,
    code: Secret,
    /// From an earlier sign-in (else the device cookie).
    device_token: Option<Secret>,
}

#[derive(Deserialize)]
struct VerifyBody {
    email: String,
    code: Secret,
    /// From the registration (else the sign-up cookie).
    signup_token: Option<Secret>,
    device_token: Option<Secret>,
    /// Sign in once verified (the tokens come back as after /login).
    #[serde(default)]
    sign_in: bool,
}

#[derive(Deserialize)]
struct EmailOnly {
    email: String,
    /// From an earlier sign-in (else the device cookie): the mail counts against the
    /// device's own quota.
    device_token: Option<Secret>,
}

pub async fn verify(
    app: &App,
    ctx: &RequestCtx,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>> {
    let b: VerifyBody = body_json(app, parts, body, false).await?;
    let signup = presented(&parts.headers, b.signup_token.as_ref(), auth::SIGNUP_COOKIE);
    let device = presented(&parts.headers, b.device_token.as_ref(), auth::DEVICE_COOKIE);
    let v = app
        .accounts
        .verify_email(
            &b.email,
            b.code.expose(),
            signup.as_ref().map(Secret::expose),
            b.sign_in,
            &client(ctx, parts, device.as_ref()),
        )
        .await?;
    let message = match (&v.reset, &v.signed_in) {
        (None, None) => "Your email address is verified.",
        (None, Some(_)) => "Your email address is verified. You are signed in.",
        (Some(_), _) => {
            "Your email address is verified. The password given when the account was created was not chosen by this device, so it was removed: choose one now with this reset token (POST /password/reset with Authorization: Bearer), or sign in by code."
        }
    };
    let mut data = json!({ "user": user_json(&v.user) });
    if let (Some((token, expires)), Some(obj)) = (&v.reset, data.as_object_mut()) {
        obj.insert("password_removed".into(), json!(true));
        obj.insert("reset_token".into(), json!(token.expose()));
        obj.insert("reset_token_expires_at".into(), json!(rfc3339(*expires)));
    }
    let mut resp = match &v.signed_in {
        None => success(StatusCode::OK, message, &data),
        Some(signed) => signed_in_response_with(app, message, signed, data),
    };
    auth::clear_signup_cookie(resp.headers_mut());
    Ok(resp)
}

/// The answer of every code-sending flow: the same for any address unless existence may be
/// revealed.
fn code_sent(expires: time::OffsetDateTime) -> Response<Body> {
    success(
        StatusCode::OK,
        "If an account exists for this address, a code has been sent to it.",
        &json!({ "otp_expires_at": rfc3339(expires) }),
    )
}

pub async fn resend(
    app: &App,
    ctx: &RequestCtx,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>> {
    let b: EmailOnly = body_json(app, parts, body, false).await?;
    let device = presented(&parts.headers, b.device_token.as_ref(), auth::DEVICE_COOKIE);
    let client = client(ctx, parts, device.as_ref());
    Ok(code_sent(
        app.accounts.resend_verification(&b.email, &client).await?,
    ))
}

#[derive(Deserialize)]
struct LoginBody {
    login: String,
    password: Secret,
    /// From an earlier sign-in (else the device cookie): the account's own device keeps
    /// signing in while strangers' failures have locked the account.
    device_token: Option<Secret>,
}

pub async fn login(
    app: &App,
    ctx: &RequestCtx,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>> {
    let b: LoginBody = body_json(app, parts, body, false).await?;
    let device = presented(&parts.headers, b.device_token.as_ref(), auth::DEVICE_COOKIE);
    let outcome = app
        .accounts
        .login_password(&b.login, &b.password, &client(ctx, parts, device.as_ref()))
        .await?;
    Ok(sign_in_response(app, &outcome))
}

pub async fn login_code(
    app: &App,
    ctx: &RequestCtx,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>> {
    let b: EmailOnly = body_json(app, parts, body, false).await?;
    let device = presented(&parts.headers, b.device_token.as_ref(), auth::DEVICE_COOKIE);
    let client = client(ctx, parts, device.as_ref());
    Ok(code_sent(
        app.accounts.start_code_login(&b.email, &client).await?,
    ))
}

pub async fn login_code_verify(
    app: &App,
    ctx: &RequestCtx,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>> {
    let b: EmailCode = body_json(app, parts, body, false).await?;
    let device = presented(&parts.headers, b.device_token.as_ref(), auth::DEVICE_COOKIE);
    let outcome = app
        .accounts
        .finish_code_login(
            &b.email,
            b.code.expose(),
            &client(ctx, parts, device.as_ref()),
        )
        .await?;
    Ok(sign_in_response(app, &outcome))
}

pub async fn forgot(
    app: &App,
    ctx: &RequestCtx,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>> {
    let b: EmailOnly = body_json(app, parts, body, false).await?;
    let device = presented(&parts.headers, b.device_token.as_ref(), auth::DEVICE_COOKIE);
    let client = client(ctx, parts, device.as_ref());
    Ok(code_sent(
        app.accounts.forgot_password(&b.email, &client).await?,
    ))
}

#[derive(Deserialize)]
struct ResetBody {
    email: Option<String>,
    code: Option<Secret>,
    new_password: Secret,
    device_token: Option<Secret>,
}

/// One step (email + code + new password), or the second of two (Bearer reset token).
pub async fn reset(
    app: &App,
    ctx: &RequestCtx,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>> {
    // Only a reset token selects the two-step path: an app that sends its access token on
    // every request still gets the one-step reset it asked for.
    let token = auth::bearer(&parts.headers)
        .filter(|t| t.starts_with("prt1."))
        .map(Secret::new);
    let b: ResetBody = body_json(app, parts, body, false).await?;
    let device = presented(&parts.headers, b.device_token.as_ref(), auth::DEVICE_COOKIE);
    let client = client(ctx, parts, device.as_ref());
    match (token, b.email, b.code) {
        (Some(token), _, _) => {
            app.accounts
                .reset_with_token(&token, &b.new_password, &client)
                .await?;
        }
        (None, Some(email), Some(code)) => {
            app.accounts
                .reset_password(&email, code.expose(), &b.new_password, &client)
                .await?;
        }
        (None, email, _) => {
            let missing = if email.is_none() { "email" } else { "code" };
            return Err(crate::http::error::ApiError::with_fields(
                std::collections::BTreeMap::from([(
                    missing.to_string(),
                    "is required (or send the reset token as Authorization: Bearer)".to_string(),
                )]),
            ));
        }
    }
    Ok(success(
        StatusCode::OK,
        "Your password has been changed. Sign in with the new one.",
        &json!({}),
    ))
}

pub async fn reset_verify(
    app: &App,
    ctx: &RequestCtx,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>> {
    let b: EmailCode = body_json(app, parts, body, false).await?;
    let device = presented(&parts.headers, b.device_token.as_ref(), auth::DEVICE_COOKIE);
    let (token, expires) = app
        .accounts
        .reset_token(
            &b.email,
            b.code.expose(),
            &client(ctx, parts, device.as_ref()),
        )
        .await?;
    Ok(success(
        StatusCode::OK,
        "Code accepted. Send the new password with this reset token.",
        &json!({ "reset_token": token.expose(), "expires_at": rfc3339(expires) }),
    ))
}

#[derive(Deserialize)]
struct ChangeBody {
    current_password: Secret,
    new_password: Secret,
}

pub async fn change_password(
    app: &App,
    ctx: &RequestCtx,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>> {
    let c = caller(app, parts).await?;
    let b: ChangeBody = body_json(app, parts, body, false).await?;
    app.accounts
        .change_password(
            &c.user_id,
            &b.current_password,
            &b.new_password,
            &c.identity.session_id,
            &client(ctx, parts, None),
        )
        .await?;
    Ok(success(
        StatusCode::OK,
        "Your password has been changed. Other devices were signed out.",
        &json!({}),
    ))
}

pub async fn me(app: &App, parts: &Parts) -> Result<Response<Body>> {
    let c = caller(app, parts).await?;
    let user = app.accounts.profile(&c.user_id).await?;
    Ok(success(StatusCode::OK, "Your profile.", &user_json(&user)))
}

#[derive(Deserialize)]
struct EmailChangeBody {
    email: String,
    current_password: Option<Secret>,
}

/// Email change, step 1: a code to the new address (after the current password).
pub async fn start_email_change(
    app: &App,
    ctx: &RequestCtx,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>> {
    let c = caller(app, parts).await?;
    let b: EmailChangeBody = body_json(app, parts, body, false).await?;
    let expires = app
        .accounts
        .start_email_change(
            &c.user_id,
            &c.identity.session_id,
            &b.email,
            b.current_password.as_ref(),
            &client(ctx, parts, None),
        )
        .await?;
    Ok(success(
        StatusCode::OK,
        "A code has been sent to the new address; confirm it there.",
        &json!({ "otp_expires_at": rfc3339(expires) }),
    ))
}

/// Email change, step 2: the code from the new address makes it the account's.
pub async fn finish_email_change(
    app: &App,
    ctx: &RequestCtx,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>> {
    let c = caller(app, parts).await?;
    let b: EmailCode = body_json(app, parts, body, false).await?;
    let device = presented(&parts.headers, b.device_token.as_ref(), auth::DEVICE_COOKIE);
    // Every session ended with the old address in its tokens; this device goes on in a new one.
    let signed = app
        .accounts
        .finish_email_change(
            &c.user_id,
            &c.identity.session_id,
            &b.email,
            b.code.expose(),
            &client(ctx, parts, device.as_ref()),
        )
        .await?;
    Ok(signed_in_response(
        app,
        "Your email address has been changed. Other devices were signed out.",
        &signed,
    ))
}

/// `null` clears an optional field; absent leaves it.
fn patch_field(
    map: &mut serde_json::Map<String, serde_json::Value>,
    key: &str,
    errors: &mut std::collections::BTreeMap<String, String>,
) -> Option<Option<String>> {
    match map.remove(key)? {
        serde_json::Value::Null => Some(None),
        serde_json::Value::String(s) => Some(Some(s)),
        _ => {
            errors.insert(key.into(), "must be a string or null".into());
            None
        }
    }
}

pub async fn update_me(app: &App, parts: &Parts, body: Incoming) -> Result<Response<Body>> {
    let c = caller(app, parts).await?;
    let mut map: serde_json::Map<String, serde_json::Value> =
        body_json(app, parts, body, false).await?;
    let mut errors = std::collections::BTreeMap::new();
    let mut patch = ProfilePatch {
        username: patch_field(&mut map, "username", &mut errors),
        full_name: patch_field(&mut map, "full_name", &mut errors),
        phone: patch_field(&mut map, "phone", &mut errors),
        profile: None,
    };
    match map.remove("profile") {
        None => {}
        Some(serde_json::Value::Object(p)) => patch.profile = Some(p),
        Some(_) => {
            errors.insert("profile".into(), "must be an object".into());
        }
    }
    for key in map.keys() {
        let why = if key == "email" {
            "cannot be changed here: POST /auth/me/email sends a code to the new address"
        } else {
            "is not a profile field (username, full_name, phone, profile)"
        };
        errors.insert(key.clone(), why.into());
    }
    if !errors.is_empty() {
        return Err(crate::http::error::ApiError::with_fields(errors));
    }
    let user = app
        .accounts
        .update_profile(&c.user_id, patch, &c.identity.session_id)
        .await?;
    Ok(success(
        StatusCode::OK,
        "Profile updated.",
        &user_json(&user),
    ))
}

//! Second-factor endpoints: the factors of the caller's account, TOTP enrolment and removal,
//! recovery codes, the second step of a sign-in, and stepping a session up.

use super::{Result, body_json, caller, client, presented, refreshed_response, signed_in_response};
use crate::http::body::Body;
use crate::http::error::success;
use crate::http::{App, RequestCtx, auth};
use crate::secret::Secret;
use http::{Response, StatusCode, request::Parts};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

/// `GET /mfa`: what protects the caller's account.
pub async fn status(app: &App, parts: &Parts) -> Result<Response<Body>> {
    let c = caller(app, parts).await?;
    let s = app.accounts.factors_status(&c.user_id).await?;
    Ok(success(
        StatusCode::OK,
        "Your second factors.",
        &json!({
            "totp": { "enabled": s.totp, "pending": s.totp_pending },
            "recovery_codes": { "remaining": s.recovery_codes },
            "passkeys": [],
        }),
    ))
}

#[derive(Deserialize, Default)]
struct StartBody {
    current_password: Option<Secret>,
}

/// `POST /mfa/totp`: a new authenticator secret, shown once, inactive until confirmed.
pub async fn start_totp(
    app: &App,
    ctx: &RequestCtx,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>> {
    let c = caller(app, parts).await?;
    let b: StartBody = body_json(app, parts, body, true).await?;
    let e = app
        .accounts
        .start_totp(
            &c.user_id,
            &c.identity.session_id,
            b.current_password.as_ref(),
            &client(ctx, parts, None),
        )
        .await?;
    Ok(success(
        StatusCode::OK,
        "Add this secret to your authenticator app, then confirm it with a code from the app.",
        &json!({ "secret": e.secret.expose(), "otpauth_uri": e.uri.expose() }),
    ))
}

#[derive(Deserialize)]
struct CodeBody {
    code: Secret,
}

/// `POST /mfa/totp/confirm`: the first code turns the authenticator on; recovery codes,
/// shown once.
pub async fn confirm_totp(
    app: &App,
    ctx: &RequestCtx,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>> {
    let c = caller(app, parts).await?;
    let b: CodeBody = body_json(app, parts, body, false).await?;
    let codes = app
        .accounts
        .confirm_totp(&c.user_id, &b.code, &client(ctx, parts, None))
        .await?;
    Ok(recovery_codes_response(
        "Your authenticator is on: every sign-in now asks for one of its codes. Keep these recovery codes somewhere safe; each works once.",
        &codes,
    ))
}

/// `DELETE /mfa/totp`: off again, with one of its codes or a recovery code.
pub async fn remove_totp(
    app: &App,
    ctx: &RequestCtx,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>> {
    let c = caller(app, parts).await?;
    let b: CodeBody = body_json(app, parts, body, false).await?;
    app.accounts
        .remove_totp(&c.user_id, &b.code, &client(ctx, parts, None))
        .await?;
    Ok(success(
        StatusCode::OK,
        "Your authenticator was removed, and its recovery codes with it.",
        &json!({}),
    ))
}

/// `POST /mfa/recovery-codes`: ten new codes; the old ones die.
pub async fn regenerate_recovery_codes(
    app: &App,
    ctx: &RequestCtx,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>> {
    let c = caller(app, parts).await?;
    let b: CodeBody = body_json(app, parts, body, false).await?;
    let codes = app
        .accounts
        .regenerate_recovery_codes(&c.user_id, &b.code, &client(ctx, parts, None))
        .await?;
    Ok(recovery_codes_response(
        "New recovery codes; the old ones no longer work.",
        &codes,
    ))
}

fn recovery_codes_response(message: &str, codes: &[Secret]) -> Response<Body> {
    let list: Vec<&str> = codes.iter().map(Secret::expose).collect();
    success(StatusCode::OK, message, &json!({ "recovery_codes": list }))
}

#[derive(Deserialize)]
struct SecondStepBody {
    mfa_token: Secret,
    code: Secret,
    device_token: Option<Secret>,
}

/// `POST /login/mfa`: the second step of a sign-in.
pub async fn login_second_factor(
    app: &App,
    ctx: &RequestCtx,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>> {
    let b: SecondStepBody = body_json(app, parts, body, false).await?;
    let device = presented(&parts.headers, b.device_token.as_ref(), auth::DEVICE_COOKIE);
    let signed = app
        .accounts
        .login_second_factor(&b.mfa_token, &b.code, &client(ctx, parts, device.as_ref()))
        .await?;
    Ok(signed_in_response(app, "Signed in.", &signed))
}

/// `POST /mfa/verify`: a second factor shown in a signed-in session steps it up.
pub async fn step_up(
    app: &App,
    ctx: &RequestCtx,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>> {
    let c = caller(app, parts).await?;
    let b: CodeBody = body_json(app, parts, body, false).await?;
    let (pair, user) = app
        .accounts
        .step_up(
            &c.user_id,
            &c.identity.session_id,
            &b.code,
            &client(ctx, parts, None),
        )
        .await?;
    Ok(refreshed_response(app, &pair, &user))
}

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
            "passkeys": s.passkeys.iter().map(passkey_json).collect::<Vec<_>>(),
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

/// A step-up: a code, or a passkey's answer to the discoverable options.
#[derive(Deserialize)]
struct StepUpBody {
    code: Option<Secret>,
    challenge_id: Option<String>,
    credential: Option<webauthn_rs::prelude::PublicKeyCredential>,
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
        .confirm_totp(
            &c.user_id,
            &c.identity.session_id,
            &b.code,
            &client(ctx, parts, None),
        )
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
    let b: StepUpBody = body_json(app, parts, body, false).await?;
    let who = client(ctx, parts, None);
    let (pair, user) = match (b.code, b.challenge_id, b.credential) {
        (Some(code), None, None) => {
            app.accounts
                .step_up(&c.user_id, &c.identity.session_id, &code, &who)
                .await?
        }
        (None, Some(challenge), Some(credential)) => {
            app.accounts
                .step_up_passkey(
                    &c.user_id,
                    &c.identity.session_id,
                    &challenge,
                    &credential,
                    &who,
                )
                .await?
        }
        _ => {
            return Err(crate::http::error::ApiError::with_fields(
                std::collections::BTreeMap::from([(
                    "code".to_string(),
                    "give a code, or challenge_id and credential".to_string(),
                )]),
            ));
        }
    };
    Ok(refreshed_response(app, &pair, &user))
}

fn passkey_json(p: &crate::store::PasskeyRecord) -> serde_json::Value {
    json!({
        "id": p.id,
        "name": p.name,
        "created_at": crate::clock::rfc3339(p.created_at),
        "last_used_at": p.last_used_at.map(crate::clock::rfc3339),
    })
}

fn ceremony_response(c: &crate::accounts::Ceremony) -> Response<Body> {
    success(
        StatusCode::OK,
        "Pass these options to navigator.credentials.",
        &json!({ "challenge_id": c.challenge_id, "publicKey": c.public_key }),
    )
}

#[derive(Deserialize, Default)]
struct NameBody {
    name: Option<String>,
    current_password: Option<Secret>,
}

/// `POST /passkeys/register/options`: options for navigator.credentials.create.
pub async fn passkey_register_options(
    app: &App,
    ctx: &RequestCtx,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>> {
    let c = caller(app, parts).await?;
    let b: NameBody = body_json(app, parts, body, true).await?;
    let ceremony = app
        .accounts
        .passkey_register_options(
            &c.user_id,
            &c.identity.session_id,
            b.name.as_deref(),
            b.current_password.as_ref(),
            &client(ctx, parts, None),
        )
        .await?;
    Ok(ceremony_response(&ceremony))
}

#[derive(Deserialize)]
struct RegisterBody {
    challenge_id: String,
    credential: webauthn_rs::prelude::RegisterPublicKeyCredential,
    name: Option<String>,
}

/// `POST /passkeys/register`: the authenticator's answer makes the passkey the account's.
pub async fn passkey_register(app: &App, parts: &Parts, body: Incoming) -> Result<Response<Body>> {
    let c = caller(app, parts).await?;
    let b: RegisterBody = body_json(app, parts, body, false).await?;
    let p = app
        .accounts
        .passkey_register(
            &c.user_id,
            &c.identity.session_id,
            &b.challenge_id,
            &b.credential,
            b.name.as_deref(),
        )
        .await?;
    Ok(success(
        StatusCode::CREATED,
        "Passkey added.",
        &passkey_json(&p),
    ))
}

/// `GET /passkeys`.
pub async fn passkey_list(app: &App, parts: &Parts) -> Result<Response<Body>> {
    let c = caller(app, parts).await?;
    let list: Vec<_> = app
        .accounts
        .passkeys(&c.user_id)
        .await?
        .iter()
        .map(passkey_json)
        .collect();
    Ok(success(StatusCode::OK, "Your passkeys.", &list))
}

#[derive(Deserialize)]
struct RenameBody {
    name: String,
}

/// `PATCH /passkeys/{id}`.
pub async fn passkey_rename(
    app: &App,
    parts: &Parts,
    body: Incoming,
    id: &str,
) -> Result<Response<Body>> {
    let c = caller(app, parts).await?;
    let b: RenameBody = body_json(app, parts, body, false).await?;
    let p = app.accounts.rename_passkey(&c.user_id, id, &b.name).await?;
    Ok(success(
        StatusCode::OK,
        "Passkey renamed.",
        &passkey_json(&p),
    ))
}

/// `DELETE /passkeys/{id}`.
pub async fn passkey_remove(app: &App, parts: &Parts, id: &str) -> Result<Response<Body>> {
    let c = caller(app, parts).await?;
    app.accounts
        .remove_passkey(&c.user_id, &c.identity.session_id, id)
        .await?;
    Ok(success(StatusCode::OK, "Passkey removed.", &json!({})))
}

#[derive(Deserialize, Default)]
struct LoginOptionsBody {
    /// Accepted, and not used to list credentials: which accounts have passkeys is not told
    /// (the options are the same for any login).
    #[allow(dead_code)]
    login: Option<String>,
}

/// `POST /login/passkey/options`: options for any of this site's passkeys (autofill).
pub async fn passkey_login_options(
    app: &App,
    ctx: &RequestCtx,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>> {
    let _: LoginOptionsBody = body_json(app, parts, body, true).await?;
    let c = app
        .accounts
        .passkey_login_options(&client(ctx, parts, None))
        .await?;
    Ok(ceremony_response(&c))
}

#[derive(Deserialize)]
struct AssertionBody {
    challenge_id: String,
    credential: webauthn_rs::prelude::PublicKeyCredential,
    device_token: Option<Secret>,
}

/// `POST /login/passkey`: a passkey signs in, with no password.
pub async fn passkey_login(
    app: &App,
    ctx: &RequestCtx,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>> {
    let b: AssertionBody = body_json(app, parts, body, false).await?;
    let device = presented(&parts.headers, b.device_token.as_ref(), auth::DEVICE_COOKIE);
    let outcome = app
        .accounts
        .passkey_login(
            &b.challenge_id,
            &b.credential,
            &client(ctx, parts, device.as_ref()),
        )
        .await?;
    Ok(super::sign_in_response(app, &outcome))
}

#[derive(Deserialize)]
struct StepBody {
    mfa_token: Secret,
}

/// `POST /login/mfa/passkey/options`: options for the account's passkeys.
pub async fn passkey_second_factor_options(
    app: &App,
    ctx: &RequestCtx,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>> {
    let b: StepBody = body_json(app, parts, body, false).await?;
    let c = app
        .accounts
        .passkey_second_factor_options(&b.mfa_token, &client(ctx, parts, None))
        .await?;
    Ok(ceremony_response(&c))
}

#[derive(Deserialize)]
struct StepAssertionBody {
    mfa_token: Secret,
    challenge_id: String,
    credential: webauthn_rs::prelude::PublicKeyCredential,
    device_token: Option<Secret>,
}

/// `POST /login/mfa/passkey`: a passkey as the second step of a sign-in.
pub async fn passkey_second_factor(
    app: &App,
    ctx: &RequestCtx,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>> {
    let b: StepAssertionBody = body_json(app, parts, body, false).await?;
    let device = presented(&parts.headers, b.device_token.as_ref(), auth::DEVICE_COOKIE);
    let signed = app
        .accounts
        .passkey_second_factor(
            &b.mfa_token,
            &b.challenge_id,
            &b.credential,
            &client(ctx, parts, device.as_ref()),
        )
        .await?;
    Ok(signed_in_response(app, "Signed in.", &signed))
}

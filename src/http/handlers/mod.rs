//! The gateway's own endpoints under the auth prefix. Each handler extracts, calls a service
//! and shapes the answer; errors become envelopes through `ApiError`'s conversions.

mod account;
mod admin;
mod mfa;
pub mod pages;
mod session;
mod validate;

use super::RequestCtx;
use super::auth;
use super::body::Body;
use super::error::ApiError;
use super::operations::{self, Found};
use super::{App, json};
use crate::access::{Door, Via};
use crate::accounts::{Client, SignIn, SignedIn};
use crate::clock::rfc3339;
use crate::identity::Identity;
use crate::policy::Rule;
use crate::secret::Secret;
use crate::sessions::TokenPair;
use crate::store::{Session, User, UserId};
use http::{HeaderMap, Method, Request, Response, StatusCode, header, request::Parts};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub type Result<T> = std::result::Result<T, ApiError>;

/// Routes a request under the auth prefix; `rest` is the normalized path after the prefix.
pub async fn handle(
    app: &App,
    ctx: &RequestCtx,
    rest: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    // Forward-auth, on every request behind nginx or Traefik, is answered here. The other
    // flows go through a box: their futures (a password hash awaited, store writes, mail)
    // are kilobytes, and unboxed they would make this future, and every proxied request's
    // that contains it, as large, to be copied on every request.
    let family = match segs.as_slice() {
        ["validate"] => Some(validate::Family::Either),
        ["validate", door] => validate::Family::from_segment(door),
        _ => None,
    };
    if let Some(family) = family {
        return validate::validate(app, ctx, &parts, family)
            .await
            .unwrap_or_else(ApiError::into_response);
    }
    Box::pin(flows(app, ctx, &segs, parts, body)).await
}

/// The account, session, admin and page endpoints.
async fn flows(
    app: &App,
    ctx: &RequestCtx,
    segs: &[&str],
    parts: http::request::Parts,
    body: Incoming,
) -> Response<Body> {
    let m = parts.method.clone();
    // The router answers the operations of the table, and nothing else.
    let found = operations::find(&m, segs);
    if found == Found::No {
        return ApiError::not_found().into_response();
    }
    // The hosted pages: everything under `ui/`, and the login page at its short address
    // (they answer a wrong method with a page of their own).
    let page = match (segs, &m) {
        (["ui", page @ ..], _) => Some(page),
        (["login"], &Method::GET | &Method::HEAD) => Some(segs),
        _ => None,
    };
    if found == Found::OtherMethod && page.is_none() {
        let mut resp = ApiError::method_not_allowed().into_response();
        if let Ok(v) = http::HeaderValue::from_str(&operations::allowed_methods(segs)) {
            resp.headers_mut().insert(header::ALLOW, v);
        }
        return resp;
    }
    if let Some(page) = page {
        return pages::handle(app, ctx, page, &parts, body)
            .await
            .unwrap_or_else(|| ApiError::not_found().into_response());
    }
    let result = match (segs, &m) {
        (["register"], &Method::POST) => account::register(app, ctx, &parts, body).await,
        (["verify"], &Method::POST) => account::verify(app, ctx, &parts, body).await,
        (["verify", "resend"], &Method::POST) => account::resend(app, ctx, &parts, body).await,
        (["login"], &Method::POST) => account::login(app, ctx, &parts, body).await,
        (["login", "code"], &Method::POST) => account::login_code(app, ctx, &parts, body).await,
        (["login", "code", "verify"], &Method::POST) => {
            account::login_code_verify(app, ctx, &parts, body).await
        }
        (["password", "forgot"], &Method::POST) => account::forgot(app, ctx, &parts, body).await,
        (["password", "reset"], &Method::POST) => account::reset(app, ctx, &parts, body).await,
        (["password", "reset", "verify"], &Method::POST) => {
            account::reset_verify(app, ctx, &parts, body).await
        }
        (["password", "change"], &Method::POST) => {
            account::change_password(app, ctx, &parts, body).await
        }
        (["me"], &Method::GET) => account::me(app, &parts).await,
        (["me"], &Method::PATCH) => account::update_me(app, &parts, body).await,
        (["me", "email"], &Method::POST) => {
            account::start_email_change(app, ctx, &parts, body).await
        }
        (["me", "email", "verify"], &Method::POST) => {
            account::finish_email_change(app, ctx, &parts, body).await
        }
        (["login", "mfa"], &Method::POST) => mfa::login_second_factor(app, ctx, &parts, body).await,
        (["mfa"], &Method::GET) => mfa::status(app, &parts).await,
        (["mfa", "totp"], &Method::POST) => mfa::start_totp(app, ctx, &parts, body).await,
        (["mfa", "totp"], &Method::DELETE) => mfa::remove_totp(app, ctx, &parts, body).await,
        (["mfa", "totp", "confirm"], &Method::POST) => {
            mfa::confirm_totp(app, ctx, &parts, body).await
        }
        (["mfa", "recovery-codes"], &Method::POST) => {
            mfa::regenerate_recovery_codes(app, ctx, &parts, body).await
        }
        (["mfa", "verify"], &Method::POST) => mfa::step_up(app, ctx, &parts, body).await,
        (["passkeys", "register", "options"], &Method::POST) => {
            mfa::passkey_register_options(app, ctx, &parts, body).await
        }
        (["passkeys", "register"], &Method::POST) => mfa::passkey_register(app, &parts, body).await,
        (["passkeys"], &Method::GET) => mfa::passkey_list(app, &parts).await,
        (["passkeys", id], &Method::PATCH) => mfa::passkey_rename(app, &parts, body, id).await,
        (["passkeys", id], &Method::DELETE) => mfa::passkey_remove(app, &parts, id).await,
        (["login", "passkey", "options"], &Method::POST) => {
            mfa::passkey_login_options(app, ctx, &parts, body).await
        }
        (["login", "passkey"], &Method::POST) => mfa::passkey_login(app, ctx, &parts, body).await,
        (["login", "mfa", "passkey", "options"], &Method::POST) => {
            mfa::passkey_second_factor_options(app, ctx, &parts, body).await
        }
        (["login", "mfa", "passkey"], &Method::POST) => {
            mfa::passkey_second_factor(app, ctx, &parts, body).await
        }
        (["token", "refresh"], &Method::POST) => session::refresh(app, ctx, &parts, body).await,
        (["logout"], &Method::POST) => session::logout(app, &parts, body).await,
        (["sessions"], &Method::GET) => session::list(app, &parts).await,
        (["sessions", id], &Method::DELETE) => session::delete(app, &parts, id).await,
        (["jwks.json"], &Method::GET) => Ok(jwks(app)),
        (["openapi.json"], &Method::GET) => Ok(openapi(app)),
        (["admin", rest @ ..], _) => admin::handle(app, &parts, body, rest).await,
        // The table names an operation that no arm answers: a bug, which a test looks for.
        _ => Err(ApiError::not_found()),
    };
    result.unwrap_or_else(ApiError::into_response)
}

/// The OpenAPI document, with the configured prefix.
fn openapi(app: &App) -> Response<Body> {
    let mut resp = super::body::json_response(StatusCode::OK, app.openapi.to_vec());
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

fn jwks(app: &App) -> Response<Body> {
    let mut resp = super::body::json_response(
        StatusCode::OK,
        app.sessions.tokens().jwks().to_string().into_bytes(),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

/// Reads a JSON body with the account endpoints' limits.
async fn body_json<T: DeserializeOwned>(
    app: &App,
    parts: &Parts,
    body: Incoming,
    empty_ok: bool,
) -> Result<T> {
    let a = &app.config.accounts;
    json::read_json(
        &parts.headers,
        body,
        a.max_body_bytes,
        a.body_timeout,
        empty_ok,
    )
    .await
}

/// The caller as the account flows see it: its address, the device token it presented, its
/// user agent.
fn client<'a>(ctx: &RequestCtx, parts: &'a Parts, device: Option<&'a Secret>) -> Client<'a> {
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Client::new(ctx.client_ip, device.map(Secret::expose)).with_user_agent(user_agent)
}

/// The signed-in caller of an account endpoint.
#[derive(Debug)]
struct Caller {
    identity: Identity,
    user_id: UserId,
}

/// Requires a valid access token (the gate, with the account endpoints' rule: signed in);
/// a cookie-authenticated state change must also pass CSRF.
async fn caller(app: &App, parts: &Parts) -> Result<Caller> {
    caller_under(app, parts, Rule::signed_in()).await
}

/// [`caller`], whom `rule` must admit as well (after the CSRF check, as a signed-in caller).
async fn caller_under(app: &App, parts: &Parts, rule: &Rule) -> Result<Caller> {
    let creds = app.gate.credentials(&parts.headers, Door::Any);
    let access = app.gate.check(&creds, Rule::signed_in()).await?;
    if access.via() == Some(Via::Cookie)
        && !auth::csrf_ok(&parts.method, &parts.headers, &app.origin)
    {
        return Err(csrf_refused());
    }
    access.admits(rule)?;
    let verified = access
        .into_verified()
        .ok_or_else(ApiError::unauthenticated)?;
    Ok(Caller {
        identity: verified.identity.clone(),
        user_id: verified.user_uuid,
    })
}

fn csrf_refused() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "Cross-site request refused.",
    )
}

pub fn user_json(u: &User) -> Value {
    json!({
        "id": u.id,
        "email": u.email,
        "email_verified": u.email_verified,
        "username": u.username,
        "full_name": u.full_name,
        "phone": u.phone,
        "roles": u.roles,
        "profile": u.profile,
        "created_at": rfc3339(u.created_at),
    })
}

fn session_json(s: &Session, current: &str) -> Value {
    json!({
        "id": s.id,
        "created_at": rfc3339(s.created_at),
        "last_seen_at": rfc3339(s.last_seen_at),
        "expires_at": rfc3339(s.expires_at),
        "ip": s.ip,
        "user_agent": s.user_agent,
        "device": s.device,
        "os": s.os,
        "current": s.id == current,
    })
}

/// The answer to a first factor: the tokens, or the second step it earned (no tokens).
fn sign_in_response(app: &App, outcome: &SignIn) -> Response<Body> {
    match outcome {
        SignIn::Done(signed) => signed_in_response(app, "Signed in.", signed),
        SignIn::SecondFactor(step) => super::error::success(
            StatusCode::OK,
            "A second factor is needed: POST /login/mfa with the mfa_token.",
            &json!({
                "mfa_required": true,
                "mfa_token": step.mfa_token.expose(),
                "methods": step.methods,
                "expires_in": step.expires_in,
            }),
        ),
    }
}

/// The answer to a sign-in: the pair and the device token (see `accounts::bindings`), in the
/// body and as cookies.
fn signed_in_response(app: &App, message: &str, signed: &SignedIn) -> Response<Body> {
    signed_in_response_with(app, message, signed, json!({}))
}

/// [`signed_in_response`], with the fields of `extra` in the body too.
fn signed_in_response_with(
    app: &App,
    message: &str,
    signed: &SignedIn,
    extra: Value,
) -> Response<Body> {
    let mut fields = match extra {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    fields.insert("device_token".into(), json!(signed.device.expose()));
    let mut resp = tokens_response(app, message, &signed.pair, &signed.user, fields);
    auth::set_device_cookie(resp.headers_mut(), &signed.device);
    resp
}

/// The answer to a refresh: the new pair, in the body and as cookies.
fn refreshed_response(app: &App, pair: &TokenPair, user: &User) -> Response<Body> {
    tokens_response(app, "Tokens refreshed.", pair, user, serde_json::Map::new())
}

fn tokens_response(
    app: &App,
    message: &str,
    pair: &TokenPair,
    user: &User,
    mut data: serde_json::Map<String, Value>,
) -> Response<Body> {
    data.insert("access_token".into(), json!(pair.access_token.expose()));
    data.insert("refresh_token".into(), json!(pair.refresh_token.expose()));
    data.insert("token_type".into(), json!("Bearer"));
    data.insert("expires_in".into(), json!(pair.expires_in));
    data.insert("refresh_expires_in".into(), json!(pair.refresh_expires_in));
    data.insert("session_id".into(), json!(pair.session_id));
    data.insert("user".into(), user_json(user));
    let mut resp = super::error::success(StatusCode::OK, message, &Value::Object(data));
    app.cookies.set_tokens(resp.headers_mut(), pair);
    resp
}

/// A token the client presents in the body (`field`), or else in the cookie `name`.
fn presented(headers: &HeaderMap, field: Option<&Secret>, name: &str) -> Option<Secret> {
    field.cloned().or_else(|| auth::cookie(headers, name))
}

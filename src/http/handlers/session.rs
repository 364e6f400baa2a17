//! Session endpoints: refresh, logout (this device, some, or all), the devices list.

use super::{Result, body_json, caller, client, csrf_refused, refreshed_response, session_json};
use crate::accounts::{SignOut, SignedOut};
use crate::http::body::Body;
use crate::http::error::{ApiError, success};
use crate::http::{App, RequestCtx, auth};
use crate::secret::Secret;
use http::{Response, StatusCode, request::Parts};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, Default)]
struct RefreshBody {
    refresh_token: Option<Secret>,
}

pub async fn refresh(
    app: &App,
    ctx: &RequestCtx,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>> {
    let b: RefreshBody = body_json(app, parts, body, true).await?;
    let token = match b.refresh_token {
        Some(t) => t,
        None => {
            let t = auth::refresh_cookie(&parts.headers, app.sessions.tokens())
                .ok_or_else(ApiError::unauthenticated)?;
            if !auth::csrf_ok(&parts.method, &parts.headers, &app.origin) {
                return Err(csrf_refused());
            }
            t
        }
    };
    let (pair, user) = app
        .accounts
        .refresh(&token, &client(ctx, parts, None))
        .await?;
    Ok(refreshed_response(app, &pair, &user))
}

#[derive(Deserialize, Default)]
struct LogoutBody {
    sessions: Option<Vec<String>>,
    #[serde(default)]
    all: bool,
}

pub async fn logout(app: &App, parts: &Parts, body: Incoming) -> Result<Response<Body>> {
    let c = caller(app, parts).await?;
    let b: LogoutBody = body_json(app, parts, body, true).await?;
    let which = match (b.all, b.sessions) {
        (true, _) => SignOut::Everywhere,
        (false, Some(ids)) => SignOut::Sessions(ids),
        (false, None) => SignOut::This,
    };
    let out = app
        .accounts
        .sign_out(&c.user_id, &c.identity.session_id, which)
        .await?;
    Ok(signed_out_response(app, "Signed out.", &out))
}

/// The answer to a sign-out: how many sessions ended, and the cookies gone when the
/// caller's own was one.
fn signed_out_response(app: &App, message: &str, out: &SignedOut) -> Response<Body> {
    let mut resp = success(
        StatusCode::OK,
        message,
        &json!({ "revoked": out.revoked.len() }),
    );
    if out.this_one {
        app.cookies.clear_tokens(resp.headers_mut());
    }
    resp
}

pub async fn list(app: &App, parts: &Parts) -> Result<Response<Body>> {
    let c = caller(app, parts).await?;
    let sessions = app.sessions.list(&c.user_id).await?;
    let data: Vec<_> = sessions
        .iter()
        .map(|s| session_json(s, &c.identity.session_id))
        .collect();
    Ok(success(StatusCode::OK, "Your signed-in devices.", &data))
}

pub async fn delete(app: &App, parts: &Parts, id: &str) -> Result<Response<Body>> {
    let c = caller(app, parts).await?;
    let out = app
        .accounts
        .sign_out(
            &c.user_id,
            &c.identity.session_id,
            SignOut::Sessions(vec![id.to_string()]),
        )
        .await?;
    if out.revoked.is_empty() {
        // Someone else's session looks exactly like one that does not exist.
        return Err(ApiError::not_found());
    }
    Ok(signed_out_response(app, "Device signed out.", &out))
}

//! Session endpoints: refresh, logout (this device, some, or all), the devices list.

use super::{Result, body_json, caller, csrf_refused, session_json, tokens_response};
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
    let client = crate::accounts::Client::new(ctx.client_ip, None);
    let (pair, user) = app.accounts.refresh(&token, &client).await?;
    Ok(tokens_response(
        app,
        "Tokens refreshed.",
        &pair,
        &user,
        None,
    ))
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
    let current = c.identity.session_id.clone();
    let revoked = if b.all {
        app.sessions.revoke_all(&c.user_id, None).await?
    } else {
        let ids = b.sessions.unwrap_or_else(|| vec![current.clone()]);
        app.sessions.revoke_ids(&c.user_id, &ids).await?
    };
    let mut resp = success(
        StatusCode::OK,
        "Signed out.",
        &json!({ "revoked": revoked.len() }),
    );
    if revoked.contains(&current) {
        app.cookies.clear_tokens(resp.headers_mut());
    }
    Ok(resp)
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
    let revoked = app
        .sessions
        .revoke_ids(&c.user_id, &[id.to_string()])
        .await?;
    if revoked.is_empty() {
        // Someone else's session looks exactly like one that does not exist.
        return Err(ApiError::not_found());
    }
    let mut resp = success(
        StatusCode::OK,
        "Device signed out.",
        &json!({ "revoked": 1 }),
    );
    if id == c.identity.session_id {
        app.cookies.clear_tokens(resp.headers_mut());
    }
    Ok(resp)
}

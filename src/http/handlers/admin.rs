//! Administration under `<prefix>/admin/`: list and search users, block and unblock, set
//! roles, list and revoke a user's sessions. The `admin` role is needed.

use super::{Result, body_json, caller_under, session_json, user_json};
use crate::http::App;
use crate::http::body::Body;
use crate::http::error::{ApiError, success};
use crate::policy::Rule;
use crate::store::UserId;
use http::{Method, Response, StatusCode, request::Parts};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

pub const ADMIN_ROLE: &str = "admin";

#[derive(Deserialize)]
struct RolesBody {
    roles: Vec<String>,
}

fn query_param(parts: &Parts, key: &str) -> Option<String> {
    let q = parts.uri.query()?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

pub async fn handle(
    app: &App,
    parts: &Parts,
    body: Incoming,
    path: &[&str],
) -> Result<Response<Body>> {
    static ADMINS: std::sync::LazyLock<Rule> = std::sync::LazyLock::new(|| Rule {
        access: crate::config::Access::Authenticated,
        roles: vec![ADMIN_ROLE.to_string()],
        mfa: false,
    });
    let c = caller_under(app, parts, &ADMINS).await?;
    // The target as the store names it (the path may write the id in any of UUID's spellings).
    let audit = |action: &str, target: &UserId| {
        tracing::info!(target: "audit", event = "admin_action", action, admin = %c.user_id, target_user = %target, "admin action");
    };
    let user_id = |raw: &str| raw.parse::<UserId>().map_err(|_| ApiError::not_found());
    match (path, &parts.method) {
        (["users"], &Method::GET) => {
            let q = query_param(parts, "q");
            let offset = query_param(parts, "offset")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let limit = query_param(parts, "limit")
                .and_then(|v| v.parse().ok())
                .unwrap_or(50usize)
                .clamp(1, 500);
            let users = app
                .accounts
                .store()
                .list_users(q.as_deref(), offset, limit)
                .await?;
            let data: Vec<_> = users.iter().map(admin_user_json).collect();
            Ok(success(
                StatusCode::OK,
                "Users.",
                &json!({ "users": data, "offset": offset, "limit": limit }),
            ))
        }
        (["users", id], &Method::GET) => {
            let user = app.accounts.profile(&user_id(id)?).await?;
            Ok(success(StatusCode::OK, "User.", &admin_user_json(&user)))
        }
        (["users", id, "block"], &Method::POST) => {
            let user = app.accounts.set_blocked(&user_id(id)?, true).await?;
            audit("block", &user_id(id)?);
            Ok(success(
                StatusCode::OK,
                "User blocked; their sessions ended.",
                &admin_user_json(&user),
            ))
        }
        (["users", id, "unblock"], &Method::POST) => {
            let user = app.accounts.set_blocked(&user_id(id)?, false).await?;
            audit("unblock", &user_id(id)?);
            Ok(success(
                StatusCode::OK,
                "User unblocked.",
                &admin_user_json(&user),
            ))
        }
        (["users", id, "roles"], &Method::PUT) => {
            let b: RolesBody = body_json(app, parts, body, false).await?;
            let user = app.accounts.set_roles(&user_id(id)?, b.roles).await?;
            audit("set_roles", &user_id(id)?);
            Ok(success(
                StatusCode::OK,
                "Roles set; the user signs in again to use them.",
                &admin_user_json(&user),
            ))
        }
        (["users", id, "sessions"], &Method::GET) => {
            let sessions = app.sessions.list(&user_id(id)?).await?;
            let data: Vec<_> = sessions.iter().map(|s| session_json(s, "")).collect();
            Ok(success(StatusCode::OK, "Sessions.", &data))
        }
        (["users", id, "sessions"], &Method::DELETE) => {
            let revoked = app.sessions.revoke_all(&user_id(id)?, None).await?;
            audit("revoke_sessions", &user_id(id)?);
            Ok(success(
                StatusCode::OK,
                "Sessions revoked.",
                &json!({ "revoked": revoked.len() }),
            ))
        }
        (["users", id, "sessions", sid], &Method::DELETE) => {
            let revoked = app
                .sessions
                .revoke_ids(&user_id(id)?, &[sid.to_string()])
                .await?;
            if revoked.is_empty() {
                return Err(ApiError::not_found());
            }
            audit("revoke_session", &user_id(id)?);
            Ok(success(
                StatusCode::OK,
                "Session revoked.",
                &json!({ "revoked": 1 }),
            ))
        }
        (["users", id, "mfa"], &Method::DELETE) => {
            let revoked = app.accounts.reset_factors(&user_id(id)?).await?;
            audit("reset_mfa", &user_id(id)?);
            Ok(success(
                StatusCode::OK,
                "Second factors removed; the user's sessions ended.",
                &json!({ "revoked": revoked }),
            ))
        }
        (
            ["users"]
            | ["users", _]
            | [
                "users",
                _,
                "block" | "unblock" | "roles" | "sessions" | "mfa",
            ]
            | ["users", _, "sessions", _],
            _,
        ) => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::not_found()),
    }
}

/// The user as an admin sees it: the profile plus account state.
fn admin_user_json(u: &crate::store::User) -> serde_json::Value {
    let mut v = user_json(u);
    if let Some(o) = v.as_object_mut() {
        o.insert("blocked".into(), json!(u.blocked));
        o.insert(
            "locked_until".into(),
            json!(u.locked_until.map(crate::clock::rfc3339)),
        );
        o.insert("has_password".into(), json!(u.password.is_some()));
        o.insert(
            "mfa".into(),
            json!({
                "totp": u.factors.totp.is_some(),
                "recovery_codes": u.factors.recovery_codes.len(),
            }),
        );
    }
    v
}

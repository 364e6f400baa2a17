//! The forward-auth door: nginx `auth_request`, Traefik ForwardAuth, Caddy `forward_auth`,
//! ingress-nginx `auth-url`. It reads the original request from the X-Forwarded-* /
//! X-Original-* headers and runs the proxy's own authenticate and authorize phases.

use super::Result;
use crate::http::body::{self, Body};
use crate::http::error::{ApiError, success};
use crate::http::{App, RequestCtx, path};
use crate::policy::Rule;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header, request::Parts};
use serde_json::json;

fn h<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The original request as the front proxy describes it.
struct Original {
    method: Method,
    proto: String,
    host: Option<String>,
    /// Path and query, as received.
    uri: String,
}

fn original(parts: &Parts, our_scheme: &str) -> Original {
    let hs = &parts.headers;
    let full = h(hs, "x-original-url").and_then(|u| url::Url::parse(u).ok());
    let method = h(hs, "x-forwarded-method")
        .or_else(|| h(hs, "x-original-method"))
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .unwrap_or(Method::GET);
    let proto = h(hs, "x-forwarded-proto")
        .map(str::to_string)
        .or_else(|| full.as_ref().map(|u| u.scheme().to_string()))
        .unwrap_or_else(|| our_scheme.to_string());
    let host = h(hs, "x-forwarded-host")
        .map(str::to_string)
        .or_else(|| {
            full.as_ref().and_then(|u| {
                u.host_str().map(|host| match u.port() {
                    Some(p) => format!("{host}:{p}"),
                    None => host.to_string(),
                })
            })
        })
        .or_else(|| h(hs, "host").map(str::to_string));
    let uri = h(hs, "x-forwarded-uri")
        .or_else(|| h(hs, "x-original-uri"))
        .map(str::to_string)
        .or_else(|| {
            full.as_ref().map(|u| match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_string(),
            })
        })
        .unwrap_or_else(|| "/".into());
    Original {
        method,
        proto,
        host,
        uri,
    }
}

pub async fn validate(app: &App, ctx: &RequestCtx, parts: &Parts) -> Result<Response<Body>> {
    let orig = original(parts, ctx.scheme);
    let raw_path = orig.uri.split('?').next().unwrap_or("/");
    let norm = path::normalize(raw_path).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let host = orig.host.as_deref().map(crate::policy::strip_port);
    let fallback = Rule::fallback();
    let rule = app
        .routes
        .find(host, &norm, &orig.method)
        .map(|r| &r.rule)
        .unwrap_or(&fallback);
    match app.proxy.check_access(rule, &parts.headers).await {
        Ok(verified) => {
            let data = match &verified {
                Some(v) => json!({
                    "id": v.identity.user_id,
                    "email": v.identity.email,
                    "username": v.identity.username,
                    "roles": v.identity.roles,
                    "session_id": v.identity.session_id,
                }),
                None => json!({}),
            };
            let mut resp = success(StatusCode::OK, "Allowed.", &data);
            if let Some(v) = &verified {
                app.proxy
                    .identity_names()
                    .insert(resp.headers_mut(), &v.identity, None);
            }
            Ok(resp)
        }
        Err(e) if e.status == StatusCode::UNAUTHORIZED => Ok(unauthenticated(app, parts, &orig, e)),
        Err(e) => Err(e),
    }
}

/// 401 with a `Location` to the login page (nginx's `error_page 401` uses it), or a 302 to it
/// for a browser navigation or when `?rd=` asks for one (Traefik and Caddy pass redirects on;
/// nginx never gets one).
fn unauthenticated(app: &App, parts: &Parts, orig: &Original, e: ApiError) -> Response<Body> {
    let rd_param = crate::http::query_param(&parts.uri, "rd");
    let back = match &rd_param {
        Some(rd) => app.login_page.policy().allowed(rd).then(|| rd.clone()),
        None => orig.host.as_ref().and_then(|host| {
            app.login_page
                .back_url(Some(&orig.proto), Some(host), &orig.uri)
        }),
    };
    let login = app.login_page.url(back.as_deref());
    let wants_html = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    // nginx's auth_request (and ingress-nginx, which sends X-Original-URL) treats anything but
    // 2xx, 401 and 403 as an error: it always gets the 401, with the Location to use.
    let hs = &parts.headers;
    let nginx = h(hs, "x-original-uri").is_some() || h(hs, "x-original-url").is_some();
    let mut resp = if !nginx && (rd_param.is_some() || wants_html) {
        let mut r = Response::new(body::empty());
        *r.status_mut() = StatusCode::FOUND;
        r
    } else {
        e.into_response()
    };
    if let Ok(v) = HeaderValue::from_str(login.as_str()) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

//! The forward-auth door: nginx `auth_request`, Traefik ForwardAuth, Caddy `forward_auth`,
//! ingress-nginx `auth-url`. It reads the original request from the X-Forwarded-* /
//! X-Original-* headers and runs the proxy's own authenticate and authorize phases.

use super::Result;
use crate::http::body::{self, Body};
use crate::http::error::{ApiError, success};
use crate::http::{App, RequestCtx, path};
use crate::policy::Rule;
use crate::proxy::headers::{X_FORWARDED_HOST, X_FORWARDED_PROTO};
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header, request::Parts,
};
use serde_json::json;
use std::borrow::Cow;

fn h<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

// Parsed once: a `&str` name is parsed again at every lookup.
static X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
static X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");

/// The original request as the front proxy describes it (borrowed from the headers where
/// they say it outright).
struct Original<'a> {
    method: Method,
    proto: Cow<'a, str>,
    host: Option<Cow<'a, str>>,
    /// Path and query, as received.
    uri: Cow<'a, str>,
}

fn original<'a>(parts: &'a Parts, our_scheme: &'static str) -> Original<'a> {
    let hs = &parts.headers;
    let full = h(hs, &X_ORIGINAL_URL).and_then(|u| url::Url::parse(u).ok());
    let method = h(hs, &X_FORWARDED_METHOD)
        .or_else(|| h(hs, &X_ORIGINAL_METHOD))
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .unwrap_or(Method::GET);
    let proto = h(hs, &X_FORWARDED_PROTO)
        .map(Cow::Borrowed)
        .or_else(|| full.as_ref().map(|u| Cow::Owned(u.scheme().to_string())))
        .unwrap_or(Cow::Borrowed(our_scheme));
    let host = h(hs, &X_FORWARDED_HOST)
        .map(Cow::Borrowed)
        .or_else(|| {
            full.as_ref().and_then(|u| {
                u.host_str().map(|host| match u.port() {
                    Some(p) => Cow::Owned(format!("{host}:{p}")),
                    None => Cow::Owned(host.to_string()),
                })
            })
        })
        .or_else(|| h(hs, &header::HOST).map(Cow::Borrowed));
    let uri = h(hs, &X_FORWARDED_URI)
        .or_else(|| h(hs, &X_ORIGINAL_URI))
        .map(Cow::Borrowed)
        .or_else(|| {
            full.as_ref().map(|u| match u.query() {
                Some(q) => Cow::Owned(format!("{}?{q}", u.path())),
                None => Cow::Owned(u.path().to_string()),
            })
        })
        .unwrap_or(Cow::Borrowed("/"));
    Original {
        method,
        proto,
        host,
        uri,
    }
}

/// The identity in a 200 answer, serialized straight from it (no JSON tree per request).
#[derive(serde::Serialize)]
struct Allowed<'a> {
    id: &'a str,
    email: &'a str,
    username: Option<&'a str>,
    roles: &'a [String],
    session_id: &'a str,
}

impl<'a> Allowed<'a> {
    fn of(id: &'a crate::policy::Identity) -> Self {
        Allowed {
            id: &id.user_id,
            email: &id.email,
            username: id.username.as_deref(),
            roles: &id.roles,
            session_id: &id.session_id,
        }
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
            let mut resp = if parts.method == Method::HEAD {
                // nginx asks with HEAD (so that it can keep the connection): only the headers
                // are read, and a body would be dropped unwritten. Its type is still the GET
                // answer's (RFC 9110, 9.3.2).
                let mut r = Response::new(body::empty());
                r.headers_mut().reserve(16);
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                r
            } else {
                match &verified {
                    Some(v) => success(StatusCode::OK, "Allowed.", &Allowed::of(&v.identity)),
                    None => success(StatusCode::OK, "Allowed.", &json!({})),
                }
            };
            if let Some(v) = &verified {
                app.proxy
                    .identity_names()
                    .insert(resp.headers_mut(), &v.values, None);
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
                .back_url(Some(&orig.proto), Some(host.as_ref()), &orig.uri)
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
    let nginx = h(hs, &X_ORIGINAL_URI).is_some() || h(hs, &X_ORIGINAL_URL).is_some();
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

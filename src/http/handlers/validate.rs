//! The forward-auth doors: nginx `auth_request` and ingress-nginx `auth-url`
//! (`/validate/auth-request`), Traefik ForwardAuth and Caddy `forward_auth`
//! (`/validate/forward-auth`), and `/validate`, which reads either family. Each runs the
//! proxy's own authenticate and authorize phases on the original request as the front proxy
//! describes it.
//!
//! Who may describe the original request: only a peer in `server.trusted_proxies`. From anyone
//! else the description is ignored and the request is judged as itself. Each per-family door
//! believes exactly one family of headers (Authelia's lesson: a front proxy passes the client's
//! own headers of the other family through untouched); `/validate` reads both and refuses (400)
//! a request whose families disagree on anything both of them state.

use super::Result;
use crate::access::{Denied, Door};
use crate::http::body::{self, Body};
use crate::http::error::{ApiError, success};
use crate::http::{App, RequestCtx, overrides};
use crate::policy::Rule;
use crate::proxy::headers::{X_FORWARDED_HOST, X_FORWARDED_PROTO};
use crate::urlpath as path;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header, request::Parts,
};
use serde_json::json;
use std::borrow::Cow;

/// Which headers a door believes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// nginx and ingress-nginx: `X-Original-URL` or `X-Original-URI`, `X-Original-Method`.
    AuthRequest,
    /// Traefik and Caddy: `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri`.
    ForwardAuth,
    /// Either, but never two that disagree.
    Either,
}

impl Family {
    /// The door a path after `validate/` names.
    pub fn from_segment(seg: &str) -> Option<Family> {
        match seg {
            "auth-request" => Some(Family::AuthRequest),
            "forward-auth" => Some(Family::ForwardAuth),
            _ => None,
        }
    }
}

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

/// What one family of headers says about the original request; `None` where it is silent.
#[derive(Debug, Default)]
struct Described<'a> {
    method: Option<&'a str>,
    proto: Option<Cow<'a, str>>,
    host: Option<Cow<'a, str>>,
    /// Path and query, as received.
    uri: Option<Cow<'a, str>>,
}

impl Described<'_> {
    fn is_empty(&self) -> bool {
        self.method.is_none() && self.proto.is_none() && self.host.is_none() && self.uri.is_none()
    }
}

/// A refusal of the description itself (400).
fn bad(message: &'static str) -> ApiError {
    ApiError::bad_request(message)
}

/// nginx's family. `X-Original-URL` is absolute (ingress-nginx, and README's snippet);
/// `X-Original-URI` is a path and query (`$request_uri`). Both present must agree.
fn auth_request_family(hs: &HeaderMap) -> Result<Described<'_>> {
    let mut d = Described {
        method: h(hs, &X_ORIGINAL_METHOD),
        ..Described::default()
    };
    if let Some(full) = h(hs, &X_ORIGINAL_URL) {
        let (scheme, authority, pq) = split_absolute(full)?;
        d.proto = Some(Cow::Owned(scheme.to_ascii_lowercase()));
        d.host = Some(Cow::Borrowed(authority));
        d.uri = Some(pq);
    }
    if let Some(pq) = h(hs, &X_ORIGINAL_URI) {
        match &d.uri {
            Some(from_url) if from_url != pq => {
                return Err(bad("X-Original-URL and X-Original-URI disagree"));
            }
            Some(_) => {}
            None => d.uri = Some(Cow::Borrowed(pq)),
        }
    }
    Ok(d)
}

/// An absolute URL as nginx writes it (`$scheme://$host:$server_port$request_uri`), split
/// by hand rather than by a URL parser, so that nothing is read two ways: no fragment (a `#`
/// in a Host header made the rest of the URL a fragment, and the path `/`), an authority that
/// is a host and an optional numeric port, then the path as received.
fn split_absolute(full: &str) -> Result<(&str, &str, Cow<'_, str>)> {
    let refuse = || bad("X-Original-URL is not an absolute http(s) URL of a host and a path");
    if full.bytes().any(|b| b == b'#' || !b.is_ascii_graphic()) {
        return Err(refuse());
    }
    let (scheme, rest) = full.split_once("://").ok_or_else(refuse)?;
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return Err(refuse());
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, pq) = rest.split_at(end);
    crate::http::security::check_host(authority).map_err(|_| refuse())?;
    let pq = match pq.strip_prefix('?') {
        Some(_) => Cow::Owned(format!("/{pq}")),
        None if pq.is_empty() => Cow::Borrowed("/"),
        None => Cow::Borrowed(pq),
    };
    Ok((scheme, authority, pq))
}

/// Traefik's and Caddy's family.
fn forward_auth_family(hs: &HeaderMap) -> Described<'_> {
    Described {
        method: h(hs, &X_FORWARDED_METHOD),
        proto: h(hs, &X_FORWARDED_PROTO).map(Cow::Borrowed),
        host: h(hs, &X_FORWARDED_HOST).map(Cow::Borrowed),
        uri: h(hs, &X_FORWARDED_URI).map(Cow::Borrowed),
    }
}

/// `a` and `b` where both speak: they must say the same, or the request is refused.
fn agree<'a>(a: Described<'a>, b: Described<'a>) -> Result<Described<'a>> {
    fn one<T: AsRef<str>>(
        x: Option<T>,
        y: Option<T>,
        same: fn(&str, &str) -> bool,
        what: &'static str,
    ) -> Result<Option<T>> {
        match (x, y) {
            (Some(x), Some(y)) if !same(x.as_ref(), y.as_ref()) => Err(bad(what)),
            (x, y) => Ok(x.or(y)),
        }
    }
    let exact = |x: &str, y: &str| x == y;
    let nocase = |x: &str, y: &str| x.eq_ignore_ascii_case(y);
    Ok(Described {
        method: one(
            a.method,
            b.method,
            exact,
            "X-Original-Method and X-Forwarded-Method disagree",
        )?,
        proto: one(
            a.proto,
            b.proto,
            nocase,
            "the forwarded and the original scheme disagree",
        )?,
        host: one(
            a.host,
            b.host,
            nocase,
            "the forwarded and the original host disagree",
        )?,
        uri: one(
            a.uri,
            b.uri,
            exact,
            "X-Original-URI (or -URL) and X-Forwarded-Uri disagree",
        )?,
    })
}

/// The original request, as far as the door may believe its description.
struct Original<'a> {
    method: Method,
    proto: Cow<'a, str>,
    host: Option<Cow<'a, str>>,
    /// Path and query, as received.
    uri: Cow<'a, str>,
    /// The description came in nginx's family (whose `auth_request` takes only 2xx, 401 and
    /// 403: it always gets the 401, with the login page in `Location`).
    nginx: bool,
    /// The original URI was described by a trusted proxy; otherwise the request is judged
    /// as itself.
    believed: bool,
}

fn original<'a>(
    app: &App,
    ctx: &'a RequestCtx,
    parts: &'a Parts,
    family: Family,
) -> Result<Original<'a>> {
    let hs = &parts.headers;
    let (nginx, forward) = match family {
        Family::AuthRequest => (auth_request_family(hs)?, Described::default()),
        Family::ForwardAuth => (Described::default(), forward_auth_family(hs)),
        Family::Either => (auth_request_family(hs)?, forward_auth_family(hs)),
    };
    let from_nginx = family == Family::AuthRequest || !nginx.is_empty();
    let trusted = ctx.peer_trusted;
    let described = if trusted {
        agree(nginx, forward)?
    } else {
        if !(nginx.is_empty() && forward.is_empty()) {
            warn_untrusted(app, ctx);
        }
        Described::default()
    };
    // A per-family door is only ever asked by its proxy, which always describes the method
    // and the URI: a description without them is a misconfigured proxy, told so.
    if trusted
        && family != Family::Either
        && (described.method.is_none() || described.uri.is_none())
    {
        return Err(bad(match family {
            Family::AuthRequest => {
                "this endpoint needs X-Original-Method and X-Original-URL (or X-Original-URI)"
            }
            _ => "this endpoint needs X-Forwarded-Method and X-Forwarded-Uri",
        }));
    }
    // Judged as itself where the description is silent, or not believed. (A trusted proxy
    // at `/validate` that names no method has always meant GET.)
    let method = match described.method {
        Some(m) => Method::from_bytes(m.as_bytes())
            .map_err(|_| bad("the original method is not an HTTP method"))?,
        None if trusted => Method::GET,
        None => parts.method.clone(),
    };
    crate::http::security::check_method(&method)?;
    let believed = described.uri.is_some();
    let uri = match described.uri {
        Some(u) if u.starts_with('/') => u,
        Some(_) => return Err(bad("the original URI must be a path")),
        None => Cow::Borrowed(parts.uri.path_and_query().map_or("/", |pq| pq.as_str())),
    };
    let host = described.host.or_else(|| ctx.host().map(Cow::Borrowed));
    if let Some(host) = &host {
        crate::http::security::check_host(host)?;
    }
    let proto = described.proto.unwrap_or(Cow::Borrowed(ctx.scheme));
    if !matches!(proto.as_ref(), "http" | "https" | "ws" | "wss") {
        return Err(bad("the original scheme is not http or https"));
    }
    Ok(Original {
        method,
        proto,
        host,
        uri,
        nginx: from_nginx,
        believed,
    })
}

/// Tells the operator, at most once a minute, that a front proxy's description was ignored
/// because the proxy is not in `server.trusted_proxies`.
fn warn_untrusted(app: &App, ctx: &RequestCtx) {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = app.accounts.clock().unix_now();
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + 60
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(peer = %ctx.peer.ip(), "forward-auth headers from a peer that is not in server.trusted_proxies were ignored: the request was judged as itself (add the front proxy's address to server.trusted_proxies)");
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
    amr: &'a [String],
    /// Authentication assurance: 2 for a two-factor session, else 1 (NIST SP 800-63B's AAL).
    aal: u8,
}

impl<'a> Allowed<'a> {
    fn of(id: &'a crate::identity::Identity) -> Self {
        Allowed {
            id: &id.user_id,
            email: &id.email,
            username: id.username.as_deref(),
            roles: &id.roles,
            session_id: &id.session_id,
            amr: &id.amr,
            aal: if id.two_factor { 2 } else { 1 },
        }
    }
}

pub async fn validate(
    app: &App,
    ctx: &RequestCtx,
    parts: &Parts,
    family: Family,
) -> Result<Response<Body>> {
    // The client's own headers reach the application with the request: a CGI or FastCGI
    // application reads `X_Auth_User_Id` as `X-Auth-User-Id`, which no front proxy's
    // header rules remove. Refused rather than let through.
    let lookalike = parts.headers.keys().any(|k| {
        overrides::is_lookalike(
            k,
            app.proxy
                .identity_names()
                .names()
                .chain(overrides::METHOD_HEADERS.iter())
                .chain(overrides::PATH_HEADERS.iter()),
        )
    });
    if lookalike {
        return Err(bad(
            "a header name with underscores stands for an identity or override header",
        ));
    }
    let orig = original(app, ctx, parts, family)?;
    let (raw_path, query) = match orig.uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (orig.uri.as_ref(), None),
    };
    let norm = path::normalize(raw_path).map_err(|e| ApiError::bad_request(e.to_string()))?;
    // The front proxy will forward the path as written, so only a path that is already in
    // the form it is judged in is judged: `/admin/..` would be judged as `/` and served as
    // `/admin` by an application that does not resolve it, `//x/admin` as `/x/admin` and
    // read by a URL parser as host `x`, path `/admin`.
    if orig.believed && (path::has_dot_segment(raw_path) || path::has_empty_segment(raw_path)) {
        return Err(bad(
            "the described path has a '.', '..' or empty segment, which the front proxy would forward as written",
        ));
    }
    let host = orig.host.as_deref().map(crate::hosts::strip_port);
    // Judged as itself, a request asks only whether the caller is signed in; described, it
    // meets the route table's rule (a path under the auth prefix too: the front proxy sent
    // it to the application, or it would not ask).
    let matched = match orig.believed {
        true => app.routes.find(host, &norm, &orig.method),
        false => None,
    };
    let rule = matched.map_or(Rule::signed_in(), |r| &r.rule);
    let creds = app.gate.credentials(&parts.headers, Door::Any);
    let mut checked = app.gate.check(&creds, rule).await;
    // What the application would take instead of the request's own method and path must be
    // allowed as well.
    if let (Ok(access), true) = (&checked, orig.believed) {
        let named = overrides::of(
            &parts.headers,
            overrides::METHOD_HEADERS.iter(),
            // X-Original-URL is nginx's own description here, never an override.
            overrides::PATH_HEADERS
                .iter()
                .filter(|n| **n != X_ORIGINAL_URL),
            query,
        )?;
        let also = overrides::also_rules(app, &named, host, &norm, &orig.method, matched);
        if let Err(denied) = also.into_iter().try_for_each(|r| access.admits(r)) {
            checked = Err(denied);
        }
    }
    match checked {
        Ok(access) => {
            let verified = access.verified();
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
                match verified {
                    Some(v) => success(StatusCode::OK, "Allowed.", &Allowed::of(&v.identity)),
                    None => success(StatusCode::OK, "Allowed.", &json!({})),
                }
            };
            if let Some(v) = verified {
                app.proxy
                    .identity_names()
                    .insert(resp.headers_mut(), &v.values, None);
            }
            Ok(resp)
        }
        Err(denied @ Denied::Unauthenticated { .. }) => Ok(unauthenticated(
            app,
            parts,
            &orig,
            denied.into(),
            Next::SignIn,
        )),
        // Signed in with one factor: to the step-up page, the way a stranger goes to the
        // login page. nginx acts on a 401 alone (`error_page 401`), so it gets one, still
        // saying MFA_REQUIRED; the other proxies pass the 403 (or the redirect) on.
        Err(denied @ Denied::MfaRequired) => {
            let mut e = ApiError::from(denied);
            if orig.nginx {
                e.status = StatusCode::UNAUTHORIZED;
            }
            Ok(unauthenticated(app, parts, &orig, e, Next::StepUp))
        }
        Err(denied) => Err(denied.into()),
    }
}

/// Where a refused caller goes next.
#[derive(Debug, Clone, Copy)]
enum Next {
    SignIn,
    StepUp,
}

/// 401 with a `Location` to the login page (nginx's `error_page 401` uses it), or a 302 to it
/// for a browser navigation or when `?rd=` asks for one (Traefik and Caddy pass redirects on;
/// nginx never gets one).
fn unauthenticated(
    app: &App,
    parts: &Parts,
    orig: &Original,
    e: ApiError,
    next: Next,
) -> Response<Body> {
    let rd_param = crate::http::query_param(&parts.uri, "rd");
    let back = match &rd_param {
        Some(rd) => app.login_page.policy().allowed(rd).then(|| rd.clone()),
        None => orig.host.as_ref().and_then(|host| {
            app.login_page
                .back_url(Some(&orig.proto), Some(host.as_ref()), &orig.uri)
        }),
    };
    let login = match next {
        Next::SignIn => app.login_page.url(back.as_deref()),
        Next::StepUp => app.login_page.step_up_url(back.as_deref()),
    };
    let wants_html = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    let mut resp = if !orig.nginx && (rd_param.is_some() || wants_html) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn described_urls_are_read_one_way() {
        for (url, scheme, host, pq) in [
            (
                "https://app.example/x?y=1",
                "https",
                "app.example",
                "/x?y=1",
            ),
            ("http://app.example:8080", "http", "app.example:8080", "/"),
            ("HTTPS://[::1]:443/a", "HTTPS", "[::1]:443", "/a"),
            ("http://app.example?q", "http", "app.example", "/?q"),
        ] {
            let (s, h, p) = split_absolute(url).unwrap();
            assert_eq!((s, h, p.as_ref()), (scheme, host, pq), "{url}");
        }
        for url in [
            // A fragment made the rest of the URL a fragment, and the path "/".
            "http://app.example#@evil/admin",
            "http://app.example/public#/../admin",
            "http://user@app.example/admin",
            "http://app.example:80x/admin",
            "http://app.example:/admin",
            "http://app.example:999999/admin",
            "http://app example/admin",
            "http:///admin",
            "ftp://app.example/admin",
            "app.example/admin",
            "/admin",
            "http://app.example/a\tb",
        ] {
            assert!(split_absolute(url).is_err(), "{url}");
        }
    }
}

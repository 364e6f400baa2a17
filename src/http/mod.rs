//! The gateway's HTTP front: per-request context, routing, and the gateway's own endpoints.
//! A request is looked at once: limits, path normalization, then ops endpoints, the auth
//! prefix, and the route table (the proxy pipeline).

pub mod auth;
pub mod body;
pub mod client_ip;
pub mod ctx;
pub mod error;
mod handlers;
pub mod json;
pub mod openapi;
pub mod operations;
mod ops;
pub mod overrides;

pub mod redirect;
mod security;

use crate::access::Gate;
use crate::accounts::Accounts;
use crate::config::Config;
use crate::metrics::{Metrics, RouteMetrics};
use crate::policy::RouteTable;
use crate::proxy::Proxy;
use crate::sessions::Sessions;
use crate::urlpath as path;
use body::Body;
use client_ip::TrustedProxies;
use error::ApiError;
use http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tracing::Instrument;

pub use ctx::{ConnInfo, RequestCtx};

/// Metrics for what the gateway answers itself.
#[derive(Debug)]
struct OwnMetrics {
    ops: RouteMetrics,
    auth: RouteMetrics,
    unmatched: RouteMetrics,
}

/// Everything a request handler can reach. Built once; shared by every connection.
#[derive(Debug)]
pub struct App {
    pub config: Arc<Config>,
    pub routes: RouteTable,
    pub proxy: Proxy,
    /// Who is calling, for every door.
    pub gate: Arc<Gate>,
    /// The OpenAPI document, written for the configured prefix.
    pub openapi: bytes::Bytes,
    pub accounts: Arc<Accounts>,
    pub sessions: Arc<Sessions>,
    pub metrics: Metrics,
    pub trusted: TrustedProxies,
    /// Where the token cookies go.
    pub cookies: auth::Cookies,
    /// The login page and the return URLs it accepts.
    pub login_page: redirect::LoginPage,
    /// The hosted pages' Content-Security-Policy (form-action names the redirect hosts).
    pub page_csp: HeaderValue,
    pub limits: Arc<crate::ratelimit::RateLimits>,
    /// Our origin (`https://host[:port]`), for the CSRF check.
    pub origin: String,
    own: OwnMetrics,
    /// Set when shutdown begins, so /readyz tells load balancers to move on.
    draining: AtomicBool,
    /// Whether /metrics is served on the main listener (`server.metrics_on_main_listener`).
    metrics_inline: bool,
}

impl App {
    pub fn new(
        config: Arc<Config>,
        routes: RouteTable,
        proxy: Proxy,
        accounts: Arc<Accounts>,
        sessions: Arc<Sessions>,
        limits: Arc<crate::ratelimit::RateLimits>,
        metrics: Metrics,
    ) -> Self {
        let own = OwnMetrics {
            ops: metrics.route("_ops"),
            auth: metrics.route("_auth"),
            unmatched: metrics.route("_unmatched"),
        };
        App {
            trusted: TrustedProxies::new(config.server.trusted_proxies.clone()),
            limits,
            cookies: auth::Cookies::new(
                &config.server.auth_prefix,
                &config.server.public_url,
                config.server.cookie_domain.as_deref(),
            ),
            login_page: redirect::LoginPage::new(
                &config.server.public_url,
                &config.server.auth_prefix,
                &config.server.allowed_redirect_hosts,
            ),
            page_csp: HeaderValue::from_str(&crate::ui::content_security_policy(
                &config.server.allowed_redirect_hosts,
            ))
            .unwrap_or(HeaderValue::from_static("default-src 'none'")),
            origin: auth::origin_of(&config.server.public_url),
            accounts,
            sessions,
            metrics_inline: config.server.metrics_on_main_listener,
            openapi: openapi::document(&config.server.auth_prefix),
            config,
            routes,
            gate: proxy.gate().clone(),

            proxy,
            metrics,
            own,
            draining: AtomicBool::new(false),
        }
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Entry point for every request on the main listener.
pub async fn handle(app: Arc<App>, conn: ConnInfo, req: Request<Incoming>) -> Response<Body> {
    let start = crate::clock::monotonic();
    let ctx = RequestCtx::new(&app.trusted, conn, &req);
    let ua = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.get(..v.len().min(128)).unwrap_or(""));
    let span = tracing::info_span!("request", id = ?ctx.request_id, client = %ctx.client_ip, ua);
    async move {
        // The access log's fields, kept only when it is on.
        let logged = crate::access_log::get().map(|log| {
            let ua = req.headers().get(header::USER_AGENT).cloned();
            (log, req.method().clone(), req.uri().clone(), ua)
        });
        let (mut resp, metrics, route) = dispatch(&app, &ctx, req, start).await;
        resp.headers_mut().insert(
            crate::proxy::headers::X_REQUEST_ID.clone(),
            ctx.request_id.clone(),
        );
        let elapsed = start.elapsed();
        let status = resp.status().as_u16();
        metrics.observe(status, elapsed);
        if let Some((log, method, uri, ua)) = logged {
            log.write(&crate::access_log::Line {
                id: &ctx.request_id,
                client: ctx.client_ip,
                ua: ua
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.get(..v.len().min(128)).unwrap_or("")),
                method: &method,
                path: uri.path(),
                status,
                route,
                micros: elapsed.as_micros() as u64,
            });
        }
        resp
    }
    .instrument(span)
    .await
}

async fn dispatch<'a>(
    app: &'a App,
    ctx: &RequestCtx,
    req: Request<Incoming>,
    start: Instant,
) -> (Response<Body>, &'a RouteMetrics, &'a str) {
    let s = &app.config.server;
    if let Err(e) =
        security::check_header_limits(req.headers(), s.max_headers.get(), s.max_header_bytes)
    {
        return (e.into_response(), &app.own.unmatched, "-");
    }
    if let Err(e) = security::check_method(req.method()) {
        return (e.into_response(), &app.own.unmatched, "-");
    }
    // Userinfo in an absolute-form target or in Host would let a host rule and the
    // upstream read two different hosts.
    let named_host = req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
    });
    if let Some(Err(e)) = named_host.map(security::check_host) {
        return (e.into_response(), &app.own.unmatched, "-");
    }
    // Two Host headers: one reader takes the first, another the last (RFC 9112 asks for 400).
    if req.headers().get_all(header::HOST).iter().nth(1).is_some() {
        let e = ApiError::bad_request("The request has more than one Host header.");
        return (e.into_response(), &app.own.unmatched, "-");
    }
    let uri = req.uri().clone();
    let path = match path::normalize(uri.path()) {
        Ok(p) => p,
        Err(e) => {
            return (
                ApiError::bad_request(e.to_string()).into_response(),
                &app.own.unmatched,
                "-",
            );
        }
    };
    if let Some(resp) = ops::handle(app, ctx, &path, &req) {
        return (
            security::own_headers(resp, ctx.scheme),
            &app.own.ops,
            "_ops",
        );
    }
    if path::under_prefix(&path, &s.auth_prefix) {
        let rest = path.get(s.auth_prefix.len()..).unwrap_or("");
        let resp = handlers::handle(app, ctx, rest, req).await;
        pace_refusal(start, app.config.rate_limit.refusal_delay, &resp).await;
        return (
            security::own_headers(resp, ctx.scheme),
            &app.own.auth,
            "_auth",
        );
    }
    match app.routes.find(ctx.host_name(), &path, req.method()) {
        Some(route) => {
            // What the upstream could act on instead of the request's own method and path
            // (override headers it is given, `_method`, a folded or suffixed path) must be
            // allowed too.
            let names = app.proxy.identity_names();
            let named = overrides::of(
                req.headers(),
                names
                    .kept_overrides()
                    .filter(|n| overrides::METHOD_HEADERS.contains(n)),
                names
                    .kept_overrides()
                    .filter(|n| overrides::PATH_HEADERS.contains(n)),
                uri.query(),
            );
            let also = match named {
                Ok(o) => overrides::also_rules(
                    app,
                    &o,
                    ctx.host_name(),
                    &path,
                    req.method(),
                    Some(route),
                ),
                Err(e) => return (e.into_response(), &route.metrics, route.name.as_str()),
            };
            let resp = app.proxy.handle(ctx, route, &also, &path, req).await;
            (resp, &route.metrics, route.name.as_str())
        }
        None => (
            ApiError::not_found().into_response(),
            &app.own.unmatched,
            "-",
        ),
    }
}

/// Holds a refusal (429, 503) of the account endpoints until `delay` after the request
/// began (a sign-in that waited for a hashing thread has waited already), never past its
/// Retry-After. A client that retries at once, as credential stuffers and floods do, gets one
/// try per delay per connection, and its waiting costs us a timer, not the CPU that proxied
/// traffic needs; a person who meets a refusal loses a second at most.
async fn pace_refusal(start: Instant, delay: std::time::Duration, resp: &Response<Body>) {
    use http::StatusCode;
    if delay.is_zero()
        || !matches!(
            resp.status(),
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        )
    {
        return;
    }
    let retry_after = resp
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(std::time::Duration::from_secs);
    let hold = retry_after.map_or(delay, |r| r.min(delay));
    tokio::time::sleep_until((start + hold).into()).await;
}

/// A query parameter's first value, percent-decoded.
pub fn query_param(uri: &http::Uri, name: &str) -> Option<String> {
    uri.query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    })
}

/// The optional plain-HTTP listener: every request is sent to the same path on `public_url`.
pub fn redirect_to_https(public_url: &url::Url, req: &Request<Incoming>) -> Response<Body> {
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut target = public_url.as_str().trim_end_matches('/').to_string();
    target.push_str(pq);
    match HeaderValue::from_str(&target) {
        Ok(location) => {
            let mut resp = Response::new(body::empty());
            *resp.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
            resp.headers_mut().insert(header::LOCATION, location);
            resp
        }
        Err(_) => ApiError::bad_request("the request target cannot be redirected").into_response(),
    }
}

/// The metrics exposition, for the separate metrics listener.
pub fn ops_metrics(metrics: &Metrics) -> Response<Body> {
    ops::metrics_response(metrics)
}

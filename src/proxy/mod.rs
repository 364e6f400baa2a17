//! The reverse proxy, as explicit phases over a per-request context:
//! match route → authenticate → rate-limit → authorize → rewrite headers → forward → filter
//! response. The forward-auth endpoint runs the same authenticate and authorize phases.

pub mod headers;
pub mod upstream;

use crate::access::{Denied, Door, Gate};
use crate::http::body::Body;
use crate::http::ctx::RequestCtx;
use crate::http::error::ApiError;
use crate::metrics::UpstreamError;
use crate::policy::{Route, Rule};
use crate::sessions::Sessions;
use crate::tokens::Verified;
use http::{Request, Response, StatusCode, Uri, Version, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::sync::Arc;

pub use headers::IdentityNames;
pub use upstream::Upstreams;

/// What the proxy needs from the gateway.
#[derive(Debug)]
pub struct Proxy {
    /// Connections to the upstreams, per serving thread ([`RequestCtx::worker`]).
    upstreams: Arc<Upstreams>,
    identity_names: IdentityNames,
    response_timeout: std::time::Duration,
    sessions: Arc<Sessions>,
    limits: Arc<crate::ratelimit::RateLimits>,
    /// Where a browser without a session is sent.
    login_page: crate::http::redirect::LoginPage,
    /// See [`Tunnel::idle`].
    tunnel_idle_timeout: std::time::Duration,
    /// Proxied requests under way per client address (`proxy.max_requests_per_ip`).
    per_client: Arc<crate::connections::PerIp>,
    /// Who is calling (the same gate as every other door's).
    gate: Arc<Gate>,
}

/// Why a proxied exchange failed, and so which status the client gets.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("upstream unreachable")]
    Connect,
    #[error("upstream did not answer in time")]
    Timeout,
    #[error("upstream answered badly")]
    Protocol,
    #[error("request cannot be forwarded: {0}")]
    BadRequest(&'static str),
    /// Every connection the upstream may have is in use (`proxy.max_connections_per_upstream`),
    /// or this client has `proxy.max_requests_per_ip` requests under way.
    #[error("upstream busy")]
    Busy,
}

impl ProxyError {
    fn into_api(self) -> ApiError {
        match self {
            ProxyError::Connect | ProxyError::Protocol => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "BAD_GATEWAY",
                "The application behind the gateway is not reachable.",
            ),
            ProxyError::Timeout => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "GATEWAY_TIMEOUT",
                "The application behind the gateway did not answer in time.",
            ),
            ProxyError::BadRequest(m) => ApiError::bad_request(m),
            ProxyError::Busy => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_BUSY",
                "Too many requests are under way; try again in a moment.",
            )
            .with_retry_after(std::time::Duration::from_secs(1)),
        }
    }
}

impl Proxy {
    pub fn new(
        upstreams: Arc<Upstreams>,
        identity_names: IdentityNames,
        cfg: &crate::config::ProxyConfig,
        sessions: Arc<Sessions>,
        limits: Arc<crate::ratelimit::RateLimits>,
        login_page: crate::http::redirect::LoginPage,
        gate: Arc<Gate>,
    ) -> Self {
        Proxy {
            gate,
            per_client: crate::connections::PerIp::new(cfg.max_requests_per_ip.get()),
            upstreams,
            identity_names,
            response_timeout: cfg.response_timeout,
            sessions,
            limits,
            login_page,
            tunnel_idle_timeout: cfg.tunnel_idle_timeout,
        }
    }

    pub fn upstreams(&self) -> &Arc<Upstreams> {
        &self.upstreams
    }

    /// The gate, shared with every other door.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    pub fn identity_names(&self) -> &IdentityNames {
        &self.identity_names
    }

    /// Runs the pipeline for a request whose route has been matched.
    pub async fn handle(
        &self,
        ctx: &RequestCtx,
        route: &Arc<Route>,
        also: &[&Rule],
        path: &str,
        mut req: Request<Incoming>,
    ) -> Response<Body> {
        // CONNECT would make the upstream a tunnel to anywhere, past every rule.
        if req.method() == http::Method::CONNECT {
            return ApiError::method_not_allowed().into_response();
        }
        // Phase: rate-limit (per-IP proxy quota, when configured).
        if let Err(refused) = self.limits.check_proxy(ctx.client_ip) {
            return ApiError::from(refused).into_response();
        }
        // Requests one client has under way at once (each may hold an upstream connection),
        // until their response bodies end.
        let Some(under_way) = self.per_client.acquire(ctx.client_ip) else {
            return ProxyError::Busy.into_api().into_response();
        };
        // Phases authenticate and authorize: the gate. The token itself is kept only when
        // `identity_headers.access_token` forwards it.
        let creds = self.gate.credentials(req.headers(), Door::Any);
        let (verified, token) = match self.gate.check(&creds, &route.rule).await {
            Ok(access) => {
                // What the upstream could act on instead of the request's own method and path
                // (override headers it is given, `_method`) must admit the caller too.
                if let Err(denied) = also.iter().try_for_each(|r| access.admits(r)) {
                    return ApiError::from(denied).into_response();
                }
                let token = match access.verified() {
                    Some(_) if self.identity_names.forwards_token() => {
                        creds.token().map(str::to_owned)
                    }
                    _ => None,
                };
                (access.into_verified(), token)
            }
            // A person in a browser gets the login page, and comes back here after it (or
            // straight away, when the login page can refresh an expired session).
            Err(Denied::Unauthenticated { .. })
                if crate::http::redirect::is_navigation(req.method(), req.headers()) =>
            {
                let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
                let back = self.login_page.back_url(None, ctx.host(), pq);
                return self.login_page.redirect(back.as_deref());
            }
            // Signed in with one factor where two are needed: the step-up page.
            Err(Denied::MfaRequired)
                if crate::http::redirect::is_navigation(req.method(), req.headers()) =>
            {
                let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
                let back = self.login_page.back_url(None, ctx.host(), pq);
                return self.login_page.redirect_step_up(back.as_deref());
            }
            Err(denied) => return ApiError::from(denied).into_response(),
        };
        let identity = verified.as_deref().map(|v| (v, token));
        let upgrade = headers::is_upgrade(req.headers()) && req.version() == Version::HTTP_11;
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let upstream_req = match self.rewrite(ctx, route, path, identity, upgrade, req) {
            Ok(r) => r,
            Err(e) => return e.into_api().into_response(),
        };
        match self
            .forward(ctx.worker, route.upstream, upstream_req, upgrade)
            .await
        {
            Ok(resp) => {
                let mut resp = resp.map(|b| b.holding(under_way));
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    // Only to the WebSocket the client asked for; any other switch would
                    // hand the client a raw channel to the upstream.
                    match client_upgrade {
                        Some(client_side) if headers::is_websocket_switch(resp.headers()) => {
                            tunnel(
                                client_side,
                                hyper::upgrade::on(&mut resp),
                                Tunnel {
                                    hold: ctx.hold.clone(),
                                    idle: self.tunnel_idle_timeout,
                                    session: verified.as_ref().map(|v| {
                                        (self.sessions.clone(), v.identity.session_id.clone())
                                    }),
                                },
                            )
                        }
                        _ => return ProxyError::Protocol.into_api().into_response(),
                    }
                }
                Self::filter_response(resp, upgrade)
            }
            Err(e) => {
                route.metrics.upstream_error(match e {
                    ProxyError::Timeout => UpstreamError::Timeout,
                    ProxyError::Connect | ProxyError::Busy => UpstreamError::Connect,
                    _ => UpstreamError::Protocol,
                });
                tracing::warn!(route = %route.name, error = %e, "upstream exchange failed");
                e.into_api().into_response()
            }
        }
    }

    /// Phase: rewrite. The upstream sees the normalized path, no hop-by-hop or spoofed
    /// identity headers, and the gateway's view of who is calling.
    fn rewrite(
        &self,
        ctx: &RequestCtx,
        route: &Route,
        path: &str,
        // Who passed the gate, and the token itself when it is forwarded.
        identity: Option<(&Verified, Option<String>)>,
        upgrade: bool,
        req: Request<Incoming>,
    ) -> Result<Request<Incoming>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        // Our access token is a secret for the gateway, as its cookie is: it reaches the
        // upstream only under `identity_headers.access_token`, when that asks for it.
        if identity.is_some() && crate::http::auth::bearer(&parts.headers).is_some() {
            parts.headers.remove(header::AUTHORIZATION);
        }
        let mut pq = route.upstream_path(path);
        if let Some(q) = parts.uri.query() {
            pq.push('?');
            pq.push_str(q);
        }
        // Origin form: the connection is already to the upstream.
        parts.uri = http::uri::PathAndQuery::try_from(pq)
            .map(Uri::from)
            .map_err(|_| ProxyError::BadRequest("the request target cannot be forwarded"))?;
        parts.version = Version::HTTP_11;
        let h = &mut parts.headers;
        headers::remove_hop_by_hop(h, upgrade);
        self.identity_names.strip(h);
        headers::strip_own_cookies(h, &crate::http::auth::OWN_COOKIES);
        headers::set_forwarding(
            h,
            &headers::Forwarding {
                peer_ip: ctx.peer.ip(),
                peer_value: &ctx.peer_ip,
                client_ip: ctx.client_ip,
                peer_trusted: ctx.peer_trusted,
                scheme: ctx.scheme,
                host: ctx.host.as_ref(),
                request_id: &ctx.request_id,
            },
        );
        let host = match (&ctx.host, route.preserve_host) {
            (Some(host), true) => Some(host.clone()),
            _ => None,
        };
        let host = host.or_else(|| route.upstream_host.clone());
        if let Some(host) = host {
            h.insert(header::HOST, host);
        }
        if let Some((id, token)) = identity {
            self.identity_names.insert(h, &id.values, token.as_deref());
        }
        Ok(Request::from_parts(parts, body))
    }

    /// Phase: forward, bounded by the response timeout (time to the response head).
    async fn forward(
        &self,
        worker: usize,
        upstream: usize,
        req: Request<Incoming>,
        upgrade: bool,
    ) -> Result<Response<upstream::ReturnOnEnd>, ProxyError> {
        let send = self.upstreams.send(worker, upstream, req, upgrade);
        match tokio::time::timeout(self.response_timeout, send).await {
            Err(_) => Err(ProxyError::Timeout),
            Ok(result) => result,
        }
    }

    /// Phase: filter response. Hop-by-hop headers out (bar a 101's upgrade), request id in.
    fn filter_response(resp: Response<upstream::ReturnOnEnd>, upgrade: bool) -> Response<Body> {
        let (mut parts, body) = resp.into_parts();
        let switching = upgrade && parts.status == StatusCode::SWITCHING_PROTOCOLS;
        headers::remove_hop_by_hop(&mut parts.headers, switching);
        headers::drop_own_set_cookies(&mut parts.headers, &crate::http::auth::OWN_COOKIES);
        // X-Request-Id is set on every response in `http::handle`, this one included.
        Response::from_parts(parts, body.boxed())
    }
}

/// What a WebSocket tunnel is bound by.
struct Tunnel {
    /// The client connection's place under the gateway's limits, kept until the tunnel ends.
    hold: Arc<crate::connections::Hold>,
    /// Closed when nothing has crossed either way for this long.
    idle: std::time::Duration,
    /// Closed when this session ends (a sign-out, a revocation), for a tunnel that needed one.
    session: Option<(Arc<Sessions>, String)>,
}

/// Joins the client's and the upstream's upgraded connections and copies bytes both ways,
/// until either side closes, nothing crosses for `idle`, or the session that opened it ends.
fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade, t: Tunnel) {
    tokio::spawn(async move {
        let _hold = t.hold;
        let (client, upstream) = match tokio::join!(client, upstream) {
            (Ok(c), Ok(u)) => (c, u),
            _ => {
                tracing::debug!("upgrade did not complete on both sides");
                return;
            }
        };
        let moved = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let start = crate::clock::timer_now();
        let mut client =
            crate::connections::Touched::new(TokioIo::new(client), moved.clone(), start);
        let mut upstream =
            crate::connections::Touched::new(TokioIo::new(upstream), moved.clone(), start);
        let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        tokio::pin!(copy);
        let check = (t.idle / 4).clamp(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(5),
        );
        let mut tick = tokio::time::interval(check);
        loop {
            tokio::select! {
                done = &mut copy => {
                    if let Err(e) = done {
                        tracing::debug!(error = %e, "upgraded connection ended");
                    }
                    return;
                }
                _ = tick.tick() => {
                    let last = start + std::time::Duration::from_millis(moved.load(std::sync::atomic::Ordering::Relaxed));
                    if last + t.idle <= crate::clock::timer_now() {
                        tracing::debug!("tunnel idle: closed");
                        return;
                    }
                    if let Some((sessions, sid)) = &t.session {
                        if !sessions.is_live(sid) {
                            tracing::debug!("tunnel's session ended: closed");
                            return;
                        }
                    }
                }
            }
        }
    });
}

//! Operational endpoints: liveness, readiness and (when not on its own listener) metrics.

use super::App;
use super::body::{self, Body};
use super::error::{ApiError, success};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn handle(
    app: &App,
    ctx: &super::RequestCtx,
    path: &str,
    req: &Request<Incoming>,
) -> Option<Response<Body>> {
    let resp = match path {
        "/healthz" => only_get(req)
            .unwrap_or_else(|| success(StatusCode::OK, "alive", &serde_json::json!({}))),
        "/readyz" => only_get(req).unwrap_or_else(|| readiness(app)),
        // On the main listener the metrics are for the machine itself and the front proxies
        // (they name routes, upstream failures and rates an outsider should not read); anyone
        // else is told nothing is there. `server.metrics_listen` serves them on their own.
        "/metrics" if app.metrics_inline && metrics_allowed(ctx.peer.ip(), ctx.peer_trusted) => {
            only_get(req).unwrap_or_else(|| metrics_response(&app.metrics))
        }
        "/metrics" if app.metrics_inline => ApiError::not_found().into_response(),
        _ => return None,
    };
    Some(resp)
}

/// Who may read the metrics on the main listener: the machine itself and the front proxies.
fn metrics_allowed(peer: std::net::IpAddr, trusted: bool) -> bool {
    trusted || peer.to_canonical().is_loopback()
}

fn only_get(req: &Request<Incoming>) -> Option<Response<Body>> {
    (req.method() != Method::GET && req.method() != Method::HEAD)
        .then(|| ApiError::method_not_allowed().into_response())
}

fn readiness(app: &App) -> Response<Body> {
    if app.is_draining() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NOT_READY",
            "The gateway is shutting down.",
        )
        .with_retry_after(std::time::Duration::from_secs(5))
        .into_response();
    }
    if app.routes.is_empty() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NOT_READY",
            "No upstream routes are configured.",
        )
        .with_retry_after(std::time::Duration::from_secs(5))
        .into_response();
    }
    success(
        StatusCode::OK,
        "ready",
        &serde_json::json!({ "routes": app.config.routes.len() }),
    )
}

pub fn metrics_response(metrics: &crate::metrics::Metrics) -> Response<Body> {
    body::text_response(StatusCode::OK, OPENMETRICS, metrics.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_only_for_loopback_and_trusted_proxies() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(metrics_allowed(ip("127.0.0.1"), false));
        assert!(metrics_allowed(ip("::1"), false));
        assert!(metrics_allowed(ip("::ffff:127.0.0.1"), false));
        assert!(!metrics_allowed(ip("203.0.113.7"), false));
        assert!(!metrics_allowed(ip("10.0.0.5"), false));
        assert!(metrics_allowed(ip("10.0.0.5"), true));
    }
}

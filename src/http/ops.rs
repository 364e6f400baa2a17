//! Operational endpoints: liveness, readiness and (when not on its own listener) metrics.

use super::App;
use super::body::{self, Body};
use super::error::{ApiError, success};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn handle(app: &App, path: &str, req: &Request<Incoming>) -> Option<Response<Body>> {
    let resp = match path {
        "/healthz" => only_get(req)
            .unwrap_or_else(|| success(StatusCode::OK, "alive", &serde_json::json!({}))),
        "/readyz" => only_get(req).unwrap_or_else(|| readiness(app)),
        "/metrics" if app.metrics_inline => {
            only_get(req).unwrap_or_else(|| metrics_response(&app.metrics))
        }
        _ => return None,
    };
    Some(resp)
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

//! Prometheus metrics. Per-route handles are made once at start-up, so the request path only
//! increments atomics: no label hashing, no allocation.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::{
    counter::Counter, family::Family, gauge::Gauge, histogram::Histogram,
};
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    route: String,
    kind: &'static str,
}

/// Which way an upstream exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    Connect,
    Timeout,
    Protocol,
}

impl UpstreamError {
    fn label(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Protocol => "protocol",
        }
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Counters for one route (or one of the gateway's own endpoint groups).
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    by_class: [Counter; 5],
    latency: Histogram,
    upstream_errors: [Counter; 3],
}

impl RouteMetrics {
    pub fn observe(&self, status: u16, elapsed: Duration) {
        let i = usize::from(status / 100).saturating_sub(1).min(4);
        if let Some(c) = self.by_class.get(i) {
            c.inc();
        }
        self.latency.observe(elapsed.as_secs_f64());
    }

    pub fn upstream_error(&self, kind: UpstreamError) {
        let c = match kind {
            UpstreamError::Connect => &self.upstream_errors[0],
            UpstreamError::Timeout => &self.upstream_errors[1],
            UpstreamError::Protocol => &self.upstream_errors[2],
        };
        c.inc();
    }
}

#[derive(Debug)]
struct Inner {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabel, Histogram, fn() -> Histogram>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub open_connections: Gauge,
    pub connections: Counter,
    pub tls_handshake_failures: Counter,
    /// Connections closed by the gateway before or between requests, by reason.
    connections_closed: Family<ClosedLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabel {
    reason: &'static str,
}

/// The process's metrics registry.
#[derive(Debug, Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("authgate");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        let open_connections = Gauge::default();
        let connections = Counter::default();
        let tls_handshake_failures = Counter::default();
        let connections_closed = Family::<ClosedLabel, Counter>::default();
        registry.register(
            "connections_closed",
            "Client connections the gateway closed: over the per-address cap, or idle past a deadline",
            connections_closed.clone(),
        );
        registry.register(
            "http_requests",
            "Requests answered, by route and status class",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from request head to response head, by route",
            latency.clone(),
        );
        registry.register(
            "upstream_errors",
            "Failed upstream exchanges, by route and kind",
            upstream_errors.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections open now",
            open_connections.clone(),
        );
        registry.register(
            "connections",
            "Client connections accepted",
            connections.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            tls_handshake_failures.clone(),
        );
        registry.register(
            "audit_events",
            "Security events on the audit trail, by event",
            crate::audit::EVENTS.clone(),
        );
        registry.register(
            "log_dropped",
            "Access-log lines dropped because the log writer fell behind",
            crate::telemetry::Dropped,
        );
        Metrics(Arc::new(Inner {
            registry: Mutex::new(registry),
            requests,
            latency,
            upstream_errors,
            open_connections,
            connections,
            tls_handshake_failures,
            connections_closed,
        }))
    }

    /// Handles for one route; call at start-up, not per request.
    pub fn route(&self, name: &str) -> RouteMetrics {
        let i = &self.0;
        let by_class = CLASSES.map(|class| {
            i.requests
                .get_or_create(&RequestLabels {
                    route: name.to_string(),
                    class,
                })
                .clone()
        });
        let upstream_errors = [
            UpstreamError::Connect,
            UpstreamError::Timeout,
            UpstreamError::Protocol,
        ]
        .map(|k| {
            i.upstream_errors
                .get_or_create(&UpstreamErrorLabels {
                    route: name.to_string(),
                    kind: k.label(),
                })
                .clone()
        });
        let latency = i
            .latency
            .get_or_create(&RouteLabel {
                route: name.to_string(),
            })
            .clone();
        RouteMetrics {
            by_class,
            latency,
            upstream_errors,
        }
    }

    pub fn open_connections(&self) -> &Gauge {
        &self.0.open_connections
    }

    pub fn connection_accepted(&self) {
        self.0.connections.inc();
    }

    /// A connection the gateway closed: `per_ip` (over `server.max_connections_per_ip`) or
    /// `idle` (no request within its deadline).
    pub fn connection_closed(&self, reason: &'static str) {
        self.0
            .connections_closed
            .get_or_create(&ClosedLabel { reason })
            .inc();
    }

    pub fn tls_handshake_failed(&self) {
        self.0.tls_handshake_failures.inc();
    }

    /// Registers another metric (later modules: mail, rate limits, audit events).
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        if let Ok(mut r) = self.0.registry.lock() {
            r.register(name, help, metric);
        }
    }

    /// The Prometheus/OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        if let Ok(r) = self.0.registry.lock() {
            // Writing into a String cannot fail.
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_handles_feed_the_registry() {
        let m = Metrics::new();
        let r = m.route("api");
        r.observe(204, Duration::from_millis(3));
        r.observe(502, Duration::from_millis(3));
        r.upstream_error(UpstreamError::Connect);
        let text = m.encode();
        assert!(
            text.contains(r#"authgate_http_requests_total{route="api",class="2xx"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"authgate_http_requests_total{route="api",class="5xx"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"authgate_upstream_errors_total{route="api",kind="connect"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("authgate_http_request_duration_seconds_count{route=\"api\"} 2"),
            "{text}"
        );
        assert!(text.contains("authgate_log_dropped_total 0"), "{text}");
    }
}

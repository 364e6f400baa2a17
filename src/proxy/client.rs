//! The pooled keep-alive client that speaks HTTP/1.1 to upstreams, over TLS for `https://`.

use crate::config::ProxyConfig;
use crate::tls::{self, TlsError};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Incoming>;

/// One client (and so one connection pool) per serving thread (at least one):
/// a pool's connection tasks run on the runtime that opened them, so a thread that keeps to
/// its own pool never hands a request to another thread and back.
pub fn build_per_thread(
    cfg: &ProxyConfig,
    threads: usize,
) -> Result<Vec<UpstreamClient>, TlsError> {
    let tls = tls::client_config(cfg.upstream_ca.as_deref())?;
    Ok((0..threads.max(1))
        .map(|_| build_with(cfg, tls.clone()))
        .collect())
}

fn build_with(cfg: &ProxyConfig, tls: rustls::ClientConfig) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(cfg.connect_timeout));
    http.set_keepalive(Some(std::time::Duration::from_secs(60)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(cfg.pool_idle_timeout)
        .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https)
}

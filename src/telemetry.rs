//! Logging: tracing with text or JSON output, to stderr. Request spans carry the request id,
//! client IP and user agent; security events go to the `audit` target (and are counted, see
//! `audit`); access lines to the `access` target.

use crate::config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `log.level`.
pub fn init(cfg: &LogConfig) {
    // rustls warns once per handshake about clients that send an IP address as SNI (wrk,
    // health checkers): anyone could flood the log with it, so it is kept to errors.
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{},rustls=error", cfg.level)))
        .unwrap_or_else(|_| EnvFilter::new("info,rustls=error"));
    // Colours only for a person at a terminal, never in files or pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // The audit counter sees the audit target only. Unfiltered, it made every callsite
    // interesting: each request built its span and its access-log event even with the log at
    // "warn", for nothing (about a microsecond per proxied request).
    let audit_only = tracing_subscriber::filter::Targets::new()
        .with_target("audit", tracing_subscriber::filter::LevelFilter::TRACE);
    let registry =
        tracing_subscriber::registry().with(crate::audit::CountLayer.with_filter(audit_only));
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = match cfg.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(true)
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
    };
}

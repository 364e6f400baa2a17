//! Logging: tracing with text or JSON output, to stderr. Request spans carry the request id;
//! security events go to the `audit` target; access lines to the `access` target.

use crate::config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `log.level`.
pub fn init(cfg: &LogConfig) {
    // rustls warns once per handshake about clients that send an IP address as SNI (wrk,
    // health checkers): anyone could flood the log with it, so it is kept to errors.
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{},rustls=error", cfg.level)))
        .unwrap_or_else(|_| EnvFilter::new("info,rustls=error"));
    // Colours only for a person at a terminal, never in files or pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = match cfg.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

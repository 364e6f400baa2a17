//! The audit trail: security events are `tracing` events on the `audit` target with an
//! `event` field (login, login_failed, lockout, code_sent, password_changed, sessions_revoked,
//! admin_action, rate_limited, ...). Inside a request they carry its span: request id, client
//! IP and user agent. This module counts them for `/metrics`, by event name, through a
//! tracing layer, so every audit line is counted and nothing is counted that is not logged.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::{counter::Counter, family::Family};
use std::sync::LazyLock;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    event: String,
}

/// Audit events seen by this process, by name (registered in every `Metrics`).
pub static EVENTS: LazyLock<Family<EventLabel, Counter>> = LazyLock::new(Family::default);

struct EventName(Option<String>);

impl Visit for EventName {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "event" {
            self.0 = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "event" && self.0.is_none() {
            self.0 = Some(format!("{value:?}").trim_matches('"').to_string());
        }
    }
}

/// Counts `audit` events into [`EVENTS`].
#[derive(Debug, Default, Clone, Copy)]
pub struct CountLayer;

impl<S: tracing::Subscriber> Layer<S> for CountLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != "audit" {
            return;
        }
        let mut name = EventName(None);
        event.record(&mut name);
        let event = name.0.unwrap_or_else(|| "unnamed".into());
        EVENTS.get_or_create(&EventLabel { event }).inc();
    }
}

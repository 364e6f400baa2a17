//! What every phase may know about a request and the connection it came on.

use super::client_ip::TrustedProxies;
use crate::hosts::strip_port;
use http::{HeaderValue, Request, header};
use hyper::body::Incoming;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// How a connection reached us.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer's address as a header value (X-Forwarded-For, X-Real-IP), formatted once per
    /// connection rather than per request.
    pub peer_ip: HeaderValue,
    pub scheme: &'static str,
    /// The serving thread that accepted the connection (picks its upstream pool).
    pub worker: usize,
    /// The connection's place under the gateway's limits (a tunnel keeps it).
    pub hold: Arc<crate::connections::Hold>,
}

/// What every phase may want to know about the request.
#[derive(Debug)]
pub struct RequestCtx {
    pub request_id: HeaderValue,
    pub peer: SocketAddr,
    /// See [`ConnInfo::peer_ip`].
    pub peer_ip: HeaderValue,
    pub peer_trusted: bool,
    pub client_ip: IpAddr,
    pub scheme: &'static str,
    /// The serving thread handling the request (see [`ConnInfo::worker`]).
    pub worker: usize,
    /// Host as the client named it (Host header, or the h2 `:authority`); always visible
    /// ASCII (see [`RequestCtx::host`]).
    pub host: Option<HeaderValue>,
    /// See [`ConnInfo::hold`].
    pub hold: Arc<crate::connections::Hold>,
}

impl RequestCtx {
    pub(super) fn new(trusted: &TrustedProxies, conn: ConnInfo, req: &Request<Incoming>) -> Self {
        let peer_trusted = trusted.contains(conn.peer.ip());
        let client_ip = trusted.client_ip(conn.peer.ip(), req.headers());
        // A request id from a trusted proxy joins our logs to theirs; from anyone else it is
        // ignored, so a client cannot forge entries into someone else's trail.
        let request_id = req
            .headers()
            .get(&crate::proxy::headers::X_REQUEST_ID)
            .filter(|v| peer_trusted && !v.is_empty() && v.len() <= 128)
            .cloned()
            .unwrap_or_else(new_request_id);
        // The Host header's value is shared with the request (no copy); an h2 authority is
        // copied once.
        let host = match req.uri().authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => req.headers().get(header::HOST).cloned(),
        }
        .filter(|h| h.to_str().is_ok());
        RequestCtx {
            request_id,
            peer: conn.peer,
            peer_ip: conn.peer_ip,
            peer_trusted,
            client_ip,
            scheme: conn.scheme,
            worker: conn.worker,
            host,
            hold: conn.hold,
        }
    }

    /// The host without its port, lower-case comparison left to the caller.
    pub fn host_name(&self) -> Option<&str> {
        self.host().map(strip_port)
    }

    /// Host as the client named it, port included.
    pub fn host(&self) -> Option<&str> {
        self.host.as_ref().and_then(|h| h.to_str().ok())
    }
}

/// A request id: 16 hex digits drawn once per process, then a 16-digit sequence number.
/// Unique for the life of the process and cheap (no random draw, no syscall); an id only
/// joins log lines, it grants nothing, so it need not be unguessable.
fn new_request_id() -> HeaderValue {
    static PREFIX: LazyLock<u64> = LazyLock::new(rand::random);
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let id = (u128::from(*PREFIX) << 64) | u128::from(NEXT.fetch_add(1, Ordering::Relaxed));
    let mut buf = [0u8; 32];
    for (i, c) in buf.iter_mut().rev().enumerate() {
        let nibble = (id >> (4 * i)) & 0xf;
        *c = b"0123456789abcdef"
            .get(usize::try_from(nibble).unwrap_or(0))
            .copied()
            .unwrap_or(b'0');
    }
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("-"))
}

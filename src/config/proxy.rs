//! `[proxy]` and `[identity_headers]`: forwarding to upstreams, and what they are told.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    #[serde(with = "duration::serde_str")]
    pub connect_timeout: Duration,
    /// Time allowed for the upstream to answer with response headers.
    #[serde(with = "duration::serde_str")]
    pub response_timeout: Duration,
    #[serde(with = "duration::serde_str")]
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per upstream by each serving thread.
    pub pool_max_idle_per_host: usize,
    /// Extra CA certificates (PEM) trusted for `https://` upstreams, besides the webpki roots.
    pub upstream_ca: Option<PathBuf>,
    /// Method- and URL-override headers (`X-HTTP-Method-Override`, `X-HTTP-Method`,
    /// `X-Method-Override`, `X-Original-URL`, `X-Rewrite-URL`) passed to upstreams. Removed by
    /// default: an application that obeys one acts on another method or path than the one a
    /// route rule was matched on.
    pub keep_override_headers: Vec<String>,
    /// Connections to one upstream open at once, across serving threads; past it a request
    /// waits `connect_timeout` for one, then gets 503 SERVICE_BUSY.
    pub max_connections_per_upstream: usize,
    /// Proxied requests one client address may have under way at once (503 past it).
    pub max_requests_per_ip: usize,
    /// A WebSocket tunnel across which nothing has gone either way for this long is closed.
    #[serde(with = "duration::serde_str")]
    pub tunnel_idle_timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 256,
            upstream_ca: None,
            keep_override_headers: Vec::new(),
            max_connections_per_upstream: 1024,
            max_requests_per_ip: 256,
            tunnel_idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Which family of identity header names to start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HeaderPreset {
    /// X-Auth-User-Id, X-Auth-User-Email, X-Auth-User-Name, X-Auth-User-Roles, X-Auth-Session-Id.
    #[default]
    Authgate,
    /// Authelia's: Remote-User (the username, else the email), Remote-Email, Remote-Groups,
    /// plus Remote-User-Id and Remote-Session-Id.
    Authelia,
}

/// Names of the identity headers added for the upstream (and stripped from every request).
/// A preset gives every name; a key set here overrides its name.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityHeaders {
    pub preset: HeaderPreset,
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub roles: Option<String>,
    pub session_id: Option<String>,
    /// When set, the access token itself is forwarded under this name.
    pub access_token: Option<String>,
}

/// The resolved names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeaderNames {
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub roles: String,
    pub session_id: String,
    pub access_token: Option<String>,
}

impl IdentityHeaders {
    pub fn resolve(&self) -> IdentityHeaderNames {
        let (user_id, email, name, roles, session_id) = match self.preset {
            HeaderPreset::Authgate => (
                "X-Auth-User-Id",
                "X-Auth-User-Email",
                "X-Auth-User-Name",
                "X-Auth-User-Roles",
                "X-Auth-Session-Id",
            ),
            HeaderPreset::Authelia => (
                "Remote-User-Id",
                "Remote-Email",
                "Remote-User",
                "Remote-Groups",
                "Remote-Session-Id",
            ),
        };
        let pick = |set: &Option<String>, default: &str| {
            set.clone().unwrap_or_else(|| default.to_string())
        };
        IdentityHeaderNames {
            user_id: pick(&self.user_id, user_id),
            email: pick(&self.email, email),
            name: pick(&self.name, name),
            roles: pick(&self.roles, roles),
            session_id: pick(&self.session_id, session_id),
            access_token: self.access_token.clone().filter(|n| !n.is_empty()),
        }
    }
}

//! `[proxy]` and `[identity_headers]`: forwarding to upstreams, and what they are told.

use super::*;
use http::HeaderName;
use serde::de::Error as _;

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
    #[serde(deserialize_with = "override_headers")]
    pub keep_override_headers: Vec<HeaderName>,
    /// Connections to one upstream open at once, across serving threads; past it a request
    /// waits `connect_timeout` for one, then gets 503 SERVICE_BUSY.
    pub max_connections_per_upstream: NonZeroUsize,
    /// Proxied requests one client address may have under way at once (503 past it).
    pub max_requests_per_ip: NonZeroUsize,
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
            max_connections_per_upstream: NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN),
            max_requests_per_ip: NonZeroUsize::new(256).unwrap_or(NonZeroUsize::MIN),
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
    #[serde(deserialize_with = "header_name")]
    pub user_id: Option<HeaderName>,
    #[serde(deserialize_with = "header_name")]
    pub email: Option<HeaderName>,
    #[serde(deserialize_with = "header_name")]
    pub name: Option<HeaderName>,
    #[serde(deserialize_with = "header_name")]
    pub roles: Option<HeaderName>,
    #[serde(deserialize_with = "header_name")]
    pub session_id: Option<HeaderName>,
    /// When set, the access token itself is forwarded under this name.
    #[serde(deserialize_with = "header_name_or_empty")]
    pub access_token: Option<HeaderName>,
    /// When set, how the session was proved (its `amr` values, comma-separated) is forwarded
    /// under this name.
    #[serde(deserialize_with = "header_name_or_empty")]
    pub amr: Option<HeaderName>,
}

/// The resolved names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeaderNames {
    pub user_id: HeaderName,
    pub email: HeaderName,
    pub name: HeaderName,
    pub roles: HeaderName,
    pub session_id: HeaderName,
    pub access_token: Option<HeaderName>,
    pub amr: Option<HeaderName>,
}

impl IdentityHeaders {
    pub fn resolve(&self) -> IdentityHeaderNames {
        let (user_id, email, name, roles, session_id) = match self.preset {
            HeaderPreset::Authgate => (
                "x-auth-user-id",
                "x-auth-user-email",
                "x-auth-user-name",
                "x-auth-user-roles",
                "x-auth-session-id",
            ),
            HeaderPreset::Authelia => (
                "remote-user-id",
                "remote-email",
                "remote-user",
                "remote-groups",
                "remote-session-id",
            ),
        };
        // Header names are lower case (HTTP/2 requires it; HTTP/1.1 ignores case).
        let pick = |set: &Option<HeaderName>, default: &'static str| {
            set.clone()
                .unwrap_or_else(|| HeaderName::from_static(default))
        };
        IdentityHeaderNames {
            user_id: pick(&self.user_id, user_id),
            email: pick(&self.email, email),
            name: pick(&self.name, name),
            roles: pick(&self.roles, roles),
            session_id: pick(&self.session_id, session_id),
            access_token: self.access_token.clone(),
            amr: self.amr.clone(),
        }
    }
}

/// A header name, refused at load when it is not one.
fn header_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<HeaderName>, D::Error> {
    let name = String::deserialize(d)?;
    HeaderName::from_bytes(name.as_bytes())
        .map(Some)
        .map_err(|_| D::Error::custom(format!("{name:?} is not a valid header name")))
}

/// [`header_name`], where empty means none.
fn header_name_or_empty<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<HeaderName>, D::Error> {
    let name = String::deserialize(d)?;
    if name.is_empty() {
        return Ok(None);
    }
    HeaderName::from_bytes(name.as_bytes())
        .map(Some)
        .map_err(|_| D::Error::custom(format!("{name:?} is not a valid header name")))
}

/// The override headers an operator keeps: only the ones authgate knows to strip.
fn override_headers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<HeaderName>, D::Error> {
    Vec::<String>::deserialize(d)?
        .into_iter()
        .map(|name| {
            HeaderName::from_bytes(name.as_bytes())
                .ok()
                .filter(|n| crate::override_names::OVERRIDE_HEADERS.contains(n))
                .ok_or_else(|| {
                    D::Error::custom(format!(
                        "{name:?} is not one of X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override, X-Original-URL, X-Rewrite-URL"
                    ))
                })
        })
        .collect()
}

impl ProxyConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        positive(&[
            ("proxy.connect_timeout", self.connect_timeout),
            ("proxy.response_timeout", self.response_timeout),
            ("proxy.tunnel_idle_timeout", self.tunnel_idle_timeout),
        ])
    }
}

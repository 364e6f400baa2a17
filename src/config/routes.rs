//! `[[routes]]`: what is forwarded where, and who may pass.

use super::*;
use http::Method;
use serde::de::Error as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Public,
    /// The safe default: a route that forgets `access` is protected.
    #[default]
    Authenticated,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// A name for metrics and logs; the path prefix when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Matched case-insensitively without the port; any host when absent.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "default_prefix")]
    pub path_prefix: String,
    pub upstream: Url,
    #[serde(default)]
    pub access: Access,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Only a two-factor session passes.
    #[serde(default)]
    pub mfa: bool,
    /// Methods this route accepts (any when empty), named in any case.
    #[serde(default, deserialize_with = "methods")]
    pub methods: Vec<Method>,
    /// Remove `path_prefix` from the path before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Forward the client's Host header (true) or the upstream's authority (false).
    #[serde(default = "yes")]
    pub preserve_host: bool,
}

fn default_prefix() -> String {
    "/".into()
}

fn yes() -> bool {
    true
}

fn methods<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Method>, D::Error> {
    Vec::<String>::deserialize(d)?
        .into_iter()
        .map(|m| {
            Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| D::Error::custom(format!("{m:?} is not an HTTP method")))
        })
        .collect()
}

impl RouteConfig {
    /// The checks of `routes[i]`; the gateway answers `auth_prefix` itself.
    pub(super) fn check(&self, i: usize, auth_prefix: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("routes[{i}].{k}");
        if !self.path_prefix.starts_with('/') {
            return Err(ConfigError::key(key("path_prefix"), "must start with '/'"));
        }
        if crate::urlpath::normalize(&self.path_prefix).as_deref() != Ok(self.path_prefix.as_str())
        {
            return Err(ConfigError::key(
                key("path_prefix"),
                "must be a normalized path (no '.', '..', '//' or percent-encoding of unreserved characters)",
            ));
        }
        if !matches!(self.upstream.scheme(), "http" | "https") || self.upstream.host().is_none() {
            return Err(ConfigError::key(
                key("upstream"),
                "must be an http:// or https:// URL with a host",
            ));
        }
        if self.upstream.query().is_some() || self.upstream.fragment().is_some() {
            return Err(ConfigError::key(
                key("upstream"),
                "must not have a query or fragment",
            ));
        }
        if self.access == Access::Public && self.mfa {
            return Err(ConfigError::key(
                key("mfa"),
                "mfa needs access = \"authenticated\"",
            ));
        }
        if self.access == Access::Public && !self.roles.is_empty() {
            return Err(ConfigError::key(
                key("roles"),
                "roles need access = \"authenticated\"",
            ));
        }
        if crate::urlpath::under_prefix(&self.path_prefix, auth_prefix) {
            return Err(ConfigError::key(
                key("path_prefix"),
                "is inside server.auth_prefix, which the gateway answers itself",
            ));
        }
        Ok(())
    }
}

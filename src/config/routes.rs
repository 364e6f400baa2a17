//! `[[routes]]`: what is forwarded where, and who may pass.

use super::*;

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
    /// Methods this route accepts (any when empty).
    #[serde(default)]
    pub methods: Vec<String>,
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

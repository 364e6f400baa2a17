//! Configuration: the TOML file, environment overrides and secret files, parsed into typed,
//! validated values. A bad value fails at start with the offending key named.

mod accounts;
pub mod duration;
mod log;
mod mail;
mod proxy;
mod rate_limit;
mod routes;
mod server;
mod source;
mod store;
mod tokens;

pub use accounts::*;
pub use log::*;
pub use mail::*;
pub use proxy::*;
pub use rate_limit::*;
pub use routes::*;
pub use server::*;
pub use store::*;
pub use tokens::*;

pub use source::{MapSource, ProcessEnv, Source};

use ipnet::IpNet;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// A configuration problem, naming the key (`section.key`) it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file is not valid TOML: {0}")]
    Syntax(String),
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
}

impl ConfigError {
    fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The key this error is about, when it is about one.
    pub fn key_name(&self) -> Option<&str> {
        match self {
            ConfigError::Key { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// The whole, validated configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub proxy: ProxyConfig,
    #[serde(default)]
    pub identity_headers: IdentityHeaders,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub accounts: AccountsConfig,
    #[serde(default)]
    pub passwords: PasswordsConfig,
    #[serde(default)]
    pub otp: OtpConfig,
    #[serde(default)]
    pub mail: MailConfig,
    #[serde(default)]
    pub security: SecurityConfig,
    #[serde(default)]
    pub tokens: TokensConfig,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

impl Config {
    /// Loads `path` (or the built-in defaults when `None`), applies `AUTHGATE_<SECTION>__<KEY>`
    /// overrides from `env` and `*_file` secrets, then validates.
    pub fn load(path: Option<&Path>, env: &dyn Source) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?,
            None => String::new(),
        };
        Config::from_toml(&text, env)
    }

    pub fn from_toml(text: &str, env: &dyn Source) -> Result<Config, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        source::apply_env(&mut table, env)?;
        source::apply_secret_files(&mut table)?;
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                let message = e.inner().to_string();
                // serde_path_to_error already ends the path with an unknown field's name.
                let key = match (path.as_str(), unknown_field(&message)) {
                    ("." | "", Some(field)) => field.to_string(),
                    _ => path,
                };
                ConfigError::key(key, message)
            })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if !s.auth_prefix.starts_with('/')
            || s.auth_prefix.len() < 2
            || s.auth_prefix.ends_with('/')
        {
            return Err(ConfigError::key(
                "server.auth_prefix",
                "must start with '/', not end with '/', and not be '/' alone",
            ));
        }
        if self.store.backend == StoreBackend::Postgres {
            match self.store.url.as_deref() {
                Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {}
                _ => {
                    return Err(ConfigError::key(
                        "store.url",
                        "backend = \"postgres\" needs a postgres:// URL (or store.url_file)",
                    ));
                }
            }
            if self.store.pool_size == 0 {
                return Err(ConfigError::key("store.pool_size", "must be at least 1"));
            }
        }
        // Host names only: they also go into the pages' Content-Security-Policy.
        let not_a_host = |h: &str| {
            let name = h.strip_prefix('.').unwrap_or(h);
            name.is_empty()
                || name.starts_with('.')
                || name.ends_with('.')
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        };
        if let Some(domain) = &s.cookie_domain {
            let public = s.public_url.host_str().unwrap_or("").to_ascii_lowercase();
            let domain = domain.trim_start_matches('.').to_ascii_lowercase();
            if not_a_host(&domain) || !crate::hosts::within(&public, &domain) {
                return Err(ConfigError::key(
                    "server.cookie_domain",
                    "must be a domain name that public_url's host is in (\"example.com\" for \"auth.example.com\")",
                ));
            }
        }
        if let Some(bad) = s.allowed_redirect_hosts.iter().find(|h| not_a_host(h)) {
            return Err(ConfigError::key(
                "server.allowed_redirect_hosts",
                format!(
                    "{bad:?} is not a host name (\"app.example.com\", or \".example.com\" for a domain and its subdomains)"
                ),
            ));
        }
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            let key = if s.tls_cert.is_some() {
                "server.tls_key"
            } else {
                "server.tls_cert"
            };
            return Err(ConfigError::key(
                key,
                "tls_cert and tls_key must be set together",
            ));
        }
        if !matches!(s.public_url.scheme(), "http" | "https") {
            return Err(ConfigError::key(
                "server.public_url",
                "must be an http:// or https:// URL",
            ));
        }
        for (name, d) in [
            ("server.handshake_timeout", s.handshake_timeout),
            ("server.header_read_timeout", s.header_read_timeout),
            ("server.idle_timeout", s.idle_timeout),
            ("server.send_timeout", s.send_timeout),
            ("proxy.connect_timeout", self.proxy.connect_timeout),
            ("proxy.response_timeout", self.proxy.response_timeout),
            ("proxy.tunnel_idle_timeout", self.proxy.tunnel_idle_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::key(name, "must be greater than zero"));
            }
        }
        if s.max_connections == 0 {
            return Err(ConfigError::key(
                "server.max_connections",
                "must be at least 1",
            ));
        }
        if s.max_connections_per_ip == 0 {
            return Err(ConfigError::key(
                "server.max_connections_per_ip",
                "must be at least 1",
            ));
        }
        if s.max_header_bytes < 1024 {
            return Err(ConfigError::key(
                "server.max_header_bytes",
                "must be at least 1024",
            ));
        }
        if self.otp.length < 4 || self.otp.length > 10 {
            return Err(ConfigError::key("otp.length", "must be between 4 and 10"));
        }
        if self.otp.max_attempts == 0 {
            return Err(ConfigError::key("otp.max_attempts", "must be at least 1"));
        }
        if self.otp.ttl.is_zero() {
            return Err(ConfigError::key("otp.ttl", "must be greater than zero"));
        }
        let p = &self.passwords;
        if argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, None).is_err() {
            return Err(ConfigError::key(
                "passwords.memory_kib",
                "argon2 refuses these parameters (memory_kib >= 8 * parallelism, iterations >= 1)",
            ));
        }
        if p.min_length < 8 {
            return Err(ConfigError::key(
                "passwords.min_length",
                "must be at least 8",
            ));
        }
        if p.max_length < p.min_length || p.max_length > 1024 {
            return Err(ConfigError::key(
                "passwords.max_length",
                "must be between min_length and 1024",
            ));
        }
        if p.min_strength > 4 {
            return Err(ConfigError::key("passwords.min_strength", "must be 0 to 4"));
        }
        if p.max_wait.is_zero() || p.max_wait > Duration::from_secs(30) {
            return Err(ConfigError::key(
                "passwords.max_wait",
                "must be more than 0 and at most 30s",
            ));
        }
        if self.rate_limit.refusal_delay > Duration::from_secs(10) {
            return Err(ConfigError::key(
                "rate_limit.refusal_delay",
                "must be at most 10s (clients time out)",
            ));
        }
        if self.mail.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(ConfigError::key(
                "mail.from",
                "not a mailbox such as \"App <no-reply@example.com>\"",
            ));
        }
        if let Some(u) = &self.mail.smtp_url {
            if !matches!(u.scheme(), "smtp" | "smtps") || u.host_str().is_none() {
                return Err(ConfigError::key(
                    "mail.smtp_url",
                    "must be smtp://host[:port] or smtps://host[:port]",
                ));
            }
        }
        if self.mail.queue_size == 0 || self.mail.attempts == 0 {
            let k = if self.mail.queue_size == 0 {
                "mail.queue_size"
            } else {
                "mail.attempts"
            };
            return Err(ConfigError::key(k, "must be at least 1"));
        }
        if self.accounts.max_body_bytes < 1024 {
            return Err(ConfigError::key(
                "accounts.max_body_bytes",
                "must be at least 1024",
            ));
        }
        if self.tokens.access_ttl.is_zero() || self.tokens.access_ttl > self.tokens.refresh_ttl {
            return Err(ConfigError::key(
                "tokens.access_ttl",
                "must be greater than zero and not above refresh_ttl",
            ));
        }
        if self.tokens.refresh_ttl > self.tokens.session_ttl {
            return Err(ConfigError::key(
                "tokens.refresh_ttl",
                "must not be above session_ttl",
            ));
        }
        match &self.tokens.secret_key {
            Some(k) => {
                if let Err(e) = crate::keyring::decode(k.expose()) {
                    return Err(ConfigError::key("tokens.secret_key", e.to_string()));
                }
            }
            None if self.store.backend == StoreBackend::Postgres => {
                return Err(ConfigError::key(
                    "tokens.secret_key",
                    "instances sharing a PostgreSQL store need the same secret key: set \
                     tokens.secret_key_file to a file holding it on every instance (`authgate \
                     keys secret` makes one; keep it out of the database and its backups)",
                ));
            }
            None => {}
        }
        if self.tokens.max_sessions_per_account == 0 {
            return Err(ConfigError::key(
                "tokens.max_sessions_per_account",
                "must be at least 1",
            ));
        }
        if self.tokens.audience.is_empty() {
            return Err(ConfigError::key("tokens.audience", "must not be empty"));
        }
        if s.max_headers == 0 {
            return Err(ConfigError::key("server.max_headers", "must be at least 1"));
        }
        let names = self.identity_headers.resolve();
        let token = names.access_token.clone().unwrap_or_default();
        for (field, name) in [
            ("user_id", &names.user_id),
            ("email", &names.email),
            ("name", &names.name),
            ("roles", &names.roles),
            ("session_id", &names.session_id),
            ("access_token", &token),
        ] {
            let optional = field == "access_token" && name.is_empty();
            if !optional && http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(ConfigError::key(
                    format!("identity_headers.{field}"),
                    "not a valid header name",
                ));
            }
        }
        if self.proxy.max_connections_per_upstream == 0 || self.proxy.max_requests_per_ip == 0 {
            let key = if self.proxy.max_requests_per_ip == 0 {
                "proxy.max_requests_per_ip"
            } else {
                "proxy.max_connections_per_upstream"
            };
            return Err(ConfigError::key(key, "must be at least 1"));
        }
        for name in &self.proxy.keep_override_headers {
            let known = http::HeaderName::from_bytes(name.as_bytes())
                .is_ok_and(|n| crate::override_names::OVERRIDE_HEADERS.contains(&n));
            if !known {
                return Err(ConfigError::key(
                    "proxy.keep_override_headers",
                    format!(
                        "{name:?} is not one of X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override, X-Original-URL, X-Rewrite-URL"
                    ),
                ));
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            let key = |k: &str| format!("routes[{i}].{k}");
            if !r.path_prefix.starts_with('/') {
                return Err(ConfigError::key(key("path_prefix"), "must start with '/'"));
            }
            if crate::urlpath::normalize(&r.path_prefix).as_deref() != Ok(r.path_prefix.as_str()) {
                return Err(ConfigError::key(
                    key("path_prefix"),
                    "must be a normalized path (no '.', '..', '//' or percent-encoding of unreserved characters)",
                ));
            }
            if !matches!(r.upstream.scheme(), "http" | "https") || r.upstream.host().is_none() {
                return Err(ConfigError::key(
                    key("upstream"),
                    "must be an http:// or https:// URL with a host",
                ));
            }
            if r.upstream.query().is_some() || r.upstream.fragment().is_some() {
                return Err(ConfigError::key(
                    key("upstream"),
                    "must not have a query or fragment",
                ));
            }
            if r.access == Access::Public && !r.roles.is_empty() {
                return Err(ConfigError::key(
                    key("roles"),
                    "roles need access = \"authenticated\"",
                ));
            }
            for m in &r.methods {
                if http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()).is_err() {
                    return Err(ConfigError::key(
                        key("methods"),
                        format!("{m:?} is not an HTTP method"),
                    ));
                }
            }
            if r.path_prefix.starts_with(&s.auth_prefix)
                && (r.path_prefix.len() == s.auth_prefix.len()
                    || r.path_prefix.as_bytes().get(s.auth_prefix.len()) == Some(&b'/'))
            {
                return Err(ConfigError::key(
                    key("path_prefix"),
                    "is inside server.auth_prefix, which the gateway answers itself",
                ));
            }
        }
        Ok(())
    }
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, &MapSource::default())
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = load("").unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8443".parse().unwrap());
        assert!(c.server.tls);
        assert_eq!(c.server.auth_prefix, "/auth");
        assert!(c.routes.is_empty());
    }

    #[test]
    fn unknown_key_is_named() {
        let e = load("[server]\nlistn = \"127.0.0.1:1\"\n").unwrap_err();
        assert_eq!(e.key_name(), Some("server.listn"), "{e}");
        let e = load("[serverr]\n").unwrap_err();
        assert_eq!(e.key_name(), Some("serverr"), "{e}");
    }

    #[test]
    fn bad_value_is_named() {
        let e = load("[server]\nlisten = \"nope\"\n").unwrap_err();
        assert_eq!(e.key_name(), Some("server.listen"), "{e}");
        let e = load("[proxy]\nconnect_timeout = \"5 parsecs\"\n").unwrap_err();
        assert_eq!(e.key_name(), Some("proxy.connect_timeout"), "{e}");
        let e = load("[[routes]]\nupstream = \"ftp://x\"\n").unwrap_err();
        assert_eq!(e.key_name(), Some("routes[0].upstream"), "{e}");
        let e =
            load("[[routes]]\nupstream = \"http://x\"\npath_prefix = \"/a/../b\"\n").unwrap_err();
        assert_eq!(e.key_name(), Some("routes[0].path_prefix"), "{e}");
    }

    #[test]
    fn cookie_domain_and_redirect_hosts_are_host_names() {
        let ok = load(
            "[server]\npublic_url = \"https://auth.example.com\"\ncookie_domain = \".example.com\"\n\
             allowed_redirect_hosts = [\".example.com\", \"app.test\"]\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
        for (toml, key) in [
            (
                "[server]\npublic_url = \"https://auth.example.com\"\ncookie_domain = \"other.com\"\n",
                "server.cookie_domain",
            ),
            (
                "[server]\npublic_url = \"https://auth.example.com\"\ncookie_domain = \"ample.com\"\n",
                "server.cookie_domain",
            ),
            (
                "[server]\nallowed_redirect_hosts = [\"evil.test; script-src *\"]\n",
                "server.allowed_redirect_hosts",
            ),
            (
                "[server]\nallowed_redirect_hosts = [\"*\"]\n",
                "server.allowed_redirect_hosts",
            ),
        ] {
            let e = load(toml).unwrap_err();
            assert_eq!(e.key_name(), Some(key), "{toml}: {e}");
        }
    }

    #[test]
    fn env_overrides_file() {
        let env = MapSource::from([
            ("AUTHGATE_SERVER__LISTEN", "0.0.0.0:9000"),
            ("AUTHGATE_SERVER__TLS", "false"),
            ("AUTHGATE_PROXY__CONNECT_TIMEOUT", "2s"),
            ("UNRELATED", "x"),
        ]);
        let c = Config::from_toml("[server]\nlisten = \"127.0.0.1:1\"\n", &env).unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:9000".parse().unwrap());
        assert!(!c.server.tls);
        assert_eq!(c.proxy.connect_timeout, Duration::from_secs(2));
    }

    #[test]
    fn env_unknown_key_is_named() {
        let env = MapSource::from([("AUTHGATE_SERVER__NOPE", "1")]);
        let e = Config::from_toml("", &env).unwrap_err();
        assert_eq!(e.key_name(), Some("server.nope"), "{e}");
    }

    #[test]
    fn secret_file_key_reads_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("name");
        std::fs::write(&f, "X-From-File\n").unwrap();
        let text = format!(
            "[identity_headers]\nuser_id_file = {:?}\n",
            f.display().to_string()
        );
        let c = load(&text).unwrap();
        assert_eq!(c.identity_headers.resolve().user_id, "X-From-File");
        let both = format!(
            "[identity_headers]\nuser_id = \"a\"\nuser_id_file = {:?}\n",
            f.display().to_string()
        );
        assert_eq!(
            load(&both).unwrap_err().key_name(),
            Some("identity_headers.user_id_file")
        );
    }

    #[test]
    fn routes_parse_with_defaults() {
        let c = load("[[routes]]\nupstream = \"http://127.0.0.1:8080\"\n").unwrap();
        let r = &c.routes[0];
        assert_eq!(r.path_prefix, "/");
        assert_eq!(r.access, Access::Authenticated);
        assert!(r.preserve_host);
    }

    #[test]
    fn route_inside_auth_prefix_is_refused() {
        let e =
            load("[[routes]]\nupstream = \"http://x\"\npath_prefix = \"/auth/x\"\n").unwrap_err();
        assert_eq!(e.key_name(), Some("routes[0].path_prefix"));
        assert!(load("[[routes]]\nupstream = \"http://x\"\npath_prefix = \"/authors\"\n").is_ok());
    }
}

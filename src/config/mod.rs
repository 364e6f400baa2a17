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
use std::num::NonZeroUsize;
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
    pub mfa: MfaConfig,
    #[serde(default)]
    pub webauthn: WebauthnConfig,
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

    /// The checks that need more than one value; each section checks its own.
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.check()?;
        self.proxy.check()?;
        self.store.check()?;
        self.otp.check()?;
        self.mfa.check()?;
        self.webauthn.check(&self.server.public_url)?;
        self.passwords.check()?;
        self.rate_limit.check()?;
        self.mail.check()?;
        self.accounts.check()?;
        self.tokens.check(self.store.backend)?;
        for (i, r) in self.routes.iter().enumerate() {
            r.check(i, &self.server.auth_prefix)?;
        }
        Ok(())
    }
}

/// Durations that must be greater than zero, by key.
fn positive(durations: &[(&str, Duration)]) -> Result<(), ConfigError> {
    match durations.iter().find(|(_, d)| d.is_zero()) {
        Some((key, _)) => Err(ConfigError::key(*key, "must be greater than zero")),
        None => Ok(()),
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

    /// Values are parsed into what uses them once, at load: a bad one is named there.
    #[test]
    fn values_parse_into_their_types_or_name_their_key() {
        let route = "[[routes]]\nupstream = \"http://127.0.0.1:1\"\n";
        let c = load(&format!("{route}methods = [\"get\", \"Post\"]\n")).unwrap();
        assert_eq!(
            c.routes[0].methods,
            vec![http::Method::GET, http::Method::POST]
        );
        for (toml, key) in [
            (
                format!("{route}methods = [\"GET POST\"]\n"),
                "routes[0].methods",
            ),
            (
                "[identity_headers]\nemail = \"bad name\"\n".to_string(),
                "identity_headers.email",
            ),
            (
                "[proxy]\nkeep_override_headers = [\"X-Anything\"]\n".to_string(),
                "proxy.keep_override_headers",
            ),
            (
                "[server]\nauth_prefix = \"/a/../b\"\n".to_string(),
                "server.auth_prefix",
            ),
            (
                "[server]\nauth_prefix = \"/auth/\"\n".to_string(),
                "server.auth_prefix",
            ),
            (
                "[server]\nmax_connections = 0\n".to_string(),
                "server.max_connections",
            ),
            ("[store]\npool_size = 0\n".to_string(), "store.pool_size"),
            (
                "[tokens]\nmax_sessions_per_account = 0\n".to_string(),
                "tokens.max_sessions_per_account",
            ),
        ] {
            let e = load(&toml).unwrap_err();
            assert_eq!(e.key_name(), Some(key), "{toml}: {e}");
        }
        let c = load("[identity_headers]\naccess_token = \"\"\n").unwrap();
        assert_eq!(c.identity_headers.resolve().access_token, None);
        assert_eq!(
            c.identity_headers.resolve().user_id,
            http::HeaderName::from_static("x-auth-user-id")
        );
    }
}

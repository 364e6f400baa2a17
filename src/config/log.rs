//! `[log]`.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `authgate=debug`); `RUST_LOG` wins when set. It does not
    /// decide the access log (see `access`).
    pub level: String,
    /// The access log: one line per request (target `access`), whatever the level.
    pub access: bool,
    /// A file for the log instead of stderr: appended to, and opened again on SIGHUP (after
    /// logrotate has moved it).
    pub file: Option<PathBuf>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
            access: true,
            file: None,
        }
    }
}

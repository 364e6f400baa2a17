//! Where configuration comes from besides the file: environment variables (through the
//! [`Source`] trait, so tests never touch the process environment) and `*_file` secrets.

use super::ConfigError;
use std::collections::BTreeMap;

/// A set of `AUTHGATE_<SECTION>__<KEY>` variables.
pub trait Source {
    fn vars(&self) -> Vec<(String, String)>;
}

/// The process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars()
            .filter(|(k, _)| k.starts_with(PREFIX))
            .collect()
    }
}

/// A fixed map, for tests and embedding.
#[derive(Debug, Default, Clone)]
pub struct MapSource(pub BTreeMap<String, String>);

impl<const N: usize> From<[(&str, &str); N]> for MapSource {
    fn from(pairs: [(&str, &str); N]) -> Self {
        MapSource(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}

impl Source for MapSource {
    fn vars(&self) -> Vec<(String, String)> {
        self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

const PREFIX: &str = "AUTHGATE_";

/// Reads an environment value as TOML when it is a boolean, number or array, else as a string,
/// so `AUTHGATE_SERVER__TLS=false` and `AUTHGATE_SERVER__LISTEN=0.0.0.0:8443` both do what they say.
fn env_value(raw: &str) -> toml::Value {
    let looks_typed = raw == "true"
        || raw == "false"
        || raw.starts_with('[')
        || (!raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()));
    if looks_typed {
        if let Ok(mut t) = toml::from_str::<toml::Table>(&format!("v = {raw}")) {
            if let Some(v) = t.remove("v") {
                return v;
            }
        }
    }
    toml::Value::String(raw.to_string())
}

pub(super) fn apply_env(table: &mut toml::Table, env: &dyn Source) -> Result<(), ConfigError> {
    for (name, raw) in env.vars() {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        // Plain AUTHGATE_* variables (AUTHGATE_TEST_REQUIRE_ALL, ...) are not config keys.
        let Some((section, key)) = rest.split_once("__") else {
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        if section.is_empty() || key.is_empty() || key.contains("__") {
            return Err(ConfigError::key(name, "expected AUTHGATE_<SECTION>__<KEY>"));
        }
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(section_table) = entry else {
            return Err(ConfigError::key(
                section,
                "cannot override keys of a list section from the environment",
            ));
        };
        section_table.insert(key, env_value(&raw));
    }
    Ok(())
}

/// `key_file = "/run/secrets/x"` in any section sets `key` to the file's content (trailing
/// newline removed). Setting both is an error, so it is always clear which one applies.
pub(super) fn apply_secret_files(table: &mut toml::Table) -> Result<(), ConfigError> {
    for (section, value) in table.iter_mut() {
        let toml::Value::Table(t) = value else {
            continue;
        };
        let file_keys: Vec<String> = t.keys().filter(|k| k.ends_with("_file")).cloned().collect();
        for fk in file_keys {
            let base = fk.trim_end_matches("_file").to_string();
            let name = format!("{section}.{fk}");
            if t.contains_key(&base) {
                return Err(ConfigError::key(
                    name,
                    format!("set either `{base}` or `{fk}`, not both"),
                ));
            }
            let Some(toml::Value::String(path)) = t.remove(&fk) else {
                return Err(ConfigError::key(name, "must be a file path"));
            };
            let content = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::key(name.clone(), format!("cannot read {path}: {e}")))?;
            let content = content.strip_suffix('\n').unwrap_or(&content);
            let content = content.strip_suffix('\r').unwrap_or(content);
            t.insert(base, toml::Value::String(content.to_string()));
        }
    }
    Ok(())
}

//! `[store]`: sled or PostgreSQL.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Which engine keeps the data.
    pub backend: StoreBackend,
    /// The sled directory.
    pub path: PathBuf,
    /// sled's page cache, in MiB.
    pub cache_mb: u64,
    /// PostgreSQL: `postgres://user:password@host:port/database?sslmode=require` (or `url_file`).
    pub url: Option<String>,
    /// PostgreSQL: CA certificates (PEM) to trust for the database's TLS besides the
    /// webpki roots (a private CA, or a cloud provider's).
    pub tls_ca: Option<PathBuf>,
    /// PostgreSQL: connections per instance.
    pub pool_size: NonZeroUsize,
    /// PostgreSQL: connecting (and waiting for a pooled connection) gives up after this.
    #[serde(with = "duration::serde_str")]
    pub connect_timeout: Duration,
    /// PostgreSQL: a statement running longer is cancelled.
    #[serde(with = "duration::serde_str")]
    pub statement_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Sled,
    Postgres,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Sled,
            path: PathBuf::from("data/authgate.db"),
            cache_mb: 64,
            url: None,
            tls_ca: None,
            pool_size: NonZeroUsize::new(16).unwrap_or(NonZeroUsize::MIN),
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

impl StoreConfig {
    /// The PostgreSQL connection settings (`None` for sled).
    pub fn postgres(&self) -> Option<crate::store::PgOptions> {
        (self.backend == StoreBackend::Postgres).then(|| crate::store::PgOptions {
            url: self.url.clone().unwrap_or_default(),
            tls_ca: self.tls_ca.clone(),
            pool_size: self.pool_size.get(),
            connect_timeout: self.connect_timeout,
            statement_timeout: self.statement_timeout,
        })
    }
}

impl StoreConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.backend == StoreBackend::Postgres {
            match self.url.as_deref() {
                Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {}
                _ => {
                    return Err(ConfigError::key(
                        "store.url",
                        "backend = \"postgres\" needs a postgres:// URL (or store.url_file)",
                    ));
                }
            }
        }
        Ok(())
    }
}

//! The PostgreSQL implementation of the store, for several authgate instances sharing one
//! database. tokio-postgres types stay in this file. Records are the same versioned JSON as in
//! sled, in a `record` column, beside the columns that need constraints or lookups. The SQL is
//! kept to what CockroachDB also accepts (no advisory locks, no LISTEN in the store itself,
//! no PL/pgSQL).

use super::records::*;
use super::{CodeChange, StoreError, UniqueField, UpdateError, decode, encode};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::time::Duration;
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;

mod codes;
mod schema;
mod sessions;
mod users;

pub(super) use schema::MIGRATIONS;

/// The database's clock in milliseconds: one clock for every instance.
/// `clock_timestamp()`, not `now()`: the time of the write, not of its transaction's start.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::BIGINT";

/// The newest schema version this build knows.
pub(super) fn latest() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// How to reach the database.
#[derive(Clone)]
pub struct PgOptions {
    pub url: String,
    /// Extra CA certificates (PEM) for the database's TLS.
    pub tls_ca: Option<std::path::PathBuf>,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry the password.
        f.debug_struct("PgOptions")
            .field("url", &"<redacted>")
            .field("tls_ca", &self.tls_ca)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

#[derive(Clone)]
pub(super) struct PgStore {
    pool: Pool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never print it.
        f.debug_struct("PgStore")
            .field("pool", &self.pool.status())
            .finish()
    }
}

fn db(e: tokio_postgres::Error) -> StoreError {
    // Only the server's message and code: the error's Display may quote the connection string.
    match e.as_db_error() {
        Some(d) => StoreError::Engine(format!("postgres {}: {}", d.code().code(), d.message())),
        None => StoreError::Engine(format!("postgres: {e}")),
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db(e),
        other => StoreError::Engine(format!("postgres pool: {other}")),
    }
}

/// A unique-constraint violation, as the field it concerns.
fn conflict(e: &tokio_postgres::Error) -> Option<UniqueField> {
    let d = e.as_db_error()?;
    if *d.code() != SqlState::UNIQUE_VIOLATION {
        return None;
    }
    match d.constraint()? {
        c if c.contains("email") => Some(UniqueField::Email),
        c if c.contains("username") => Some(UniqueField::Username),
        c if c.contains("phone") => Some(UniqueField::Phone),
        _ => None,
    }
}

fn write_err(e: tokio_postgres::Error) -> StoreError {
    match conflict(&e) {
        Some(field) => StoreError::Conflict(field),
        None => db(e),
    }
}

/// Serialization failures and deadlocks are retried: the transaction did nothing.
fn retryable(e: &StoreError) -> bool {
    matches!(e, StoreError::Engine(m) if m.starts_with("postgres 40001") || m.starts_with("postgres 40P01"))
}

/// The errors a transaction may end with, as far as retrying is concerned.
trait Failure {
    fn retryable(&self) -> bool;
}

impl Failure for StoreError {
    fn retryable(&self) -> bool {
        retryable(self)
    }
}

impl<E> Failure for UpdateError<E> {
    fn retryable(&self) -> bool {
        matches!(self, UpdateError::Store(e) if retryable(e))
    }
}

/// Tries of a transaction that keeps meeting serialization failures, before giving up.
const TRIES: u32 = 8;

/// Whether to run a transaction again: after a serialization failure or deadlock, at most
/// [`TRIES`] times, each after a short randomized pause.
async fn again<T, E: Failure>(attempt: &Result<T, E>, tries: &mut u32) -> bool {
    match attempt {
        Err(e) if e.retryable() && *tries < TRIES => {
            *tries += 1;
            let base = 5u64 << (*tries).min(5);
            let jitter = rand::random::<u64>() % base;
            tokio::time::sleep(Duration::from_millis(base + jitter)).await;
            true
        }
        _ => false,
    }
}

fn search_text(u: &User) -> String {
    let mut s = u.email.clone();
    if let Some(n) = &u.username {
        s.push('\n');
        s.push_str(n);
    }
    if let Some(n) = &u.full_name {
        s.push('\n');
        s.push_str(&n.to_lowercase());
    }
    s
}

/// Milliseconds since the epoch, as the columns keep time.
fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn purpose_key(p: Purpose) -> Result<String, StoreError> {
    serde_json::to_string(&p).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl PgStore {
    pub(super) fn connect(opts: &PgOptions) -> Result<Self, StoreError> {
        let mut cfg: tokio_postgres::Config = opts
            .url
            .parse()
            .map_err(|_| StoreError::Engine("store.url is not a valid postgres:// URL".into()))?;
        cfg.connect_timeout(opts.connect_timeout);
        // No statement, and no transaction left idle, outlives the timeout: the session feed's
        // re-read window relies on commits landing within it.
        let ms = opts.statement_timeout.as_millis().max(1);
        cfg.options(format!(
            "-c statement_timeout={ms} -c idle_in_transaction_session_timeout={ms}"
        ));
        cfg.application_name("authgate");
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(ca) = &opts.tls_ca {
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            let bad = |e: &dyn std::fmt::Display| {
                StoreError::Engine(format!("store.tls_ca {}: {e}", ca.display()))
            };
            for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(&e))? {
                roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            }
        }
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
        let manager = Manager::from_config(
            cfg,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size.max(1))
            .wait_timeout(Some(opts.connect_timeout))
            .create_timeout(Some(opts.connect_timeout))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Engine(format!("postgres pool: {e}")))?;
        Ok(PgStore { pool })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_err)
    }

    pub(super) fn is_open(&self) -> bool {
        !self.pool.is_closed()
    }

    pub(super) async fn import(&self, e: &super::Export) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        for u in &e.users {
            tx.execute(
                "INSERT INTO authgate_users (id, email, username, phone, search, record)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (id) DO UPDATE SET email = excluded.email,
                   username = excluded.username, phone = excluded.phone,
                   search = excluded.search, record = excluded.record",
                &[
                    &u.id.to_string(),
                    &u.email,
                    &u.username,
                    &u.phone,
                    &search_text(u),
                    &encode(u)?,
                ],
            )
            .await
            .map_err(write_err)?;
        }
        for code in &e.codes {
            tx.execute(
                "INSERT INTO authgate_codes (user_id, purpose, record, expires_ms)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (user_id, purpose) DO UPDATE SET record = excluded.record,
                   expires_ms = excluded.expires_ms",
                &[
                    &code.user_id.to_string(),
                    &purpose_key(code.purpose)?,
                    &encode(code)?,
                    &unix_ms(code.expires_at),
                ],
            )
            .await
            .map_err(db)?;
        }
        for s in &e.sessions {
            tx.execute(
                "INSERT INTO authgate_sessions (id, user_id, record) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, record = excluded.record",
                &[&s.id, &s.user_id.to_string(), &encode(s)?],
            )
            .await
            .map_err(db)?;
        }
        for (hash, token) in &e.reset_tokens {
            tx.execute(
                "INSERT INTO authgate_reset_tokens (hash, record) VALUES ($1, $2)
                 ON CONFLICT (hash) DO UPDATE SET record = excluded.record",
                &[hash, &encode(token)?],
            )
            .await
            .map_err(db)?;
        }
        for (kid, record) in &e.signing_keys {
            tx.execute(
                "INSERT INTO authgate_signing_keys (kid, record) VALUES ($1, $2)
                 ON CONFLICT (kid) DO UPDATE SET record = excluded.record",
                &[kid, record],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    pub(super) async fn counts(&self) -> Result<super::Counts, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT (SELECT count(*) FROM authgate_users), (SELECT count(*) FROM authgate_codes),
                        (SELECT count(*) FROM authgate_sessions),
                        (SELECT count(*) FROM authgate_reset_tokens),
                        (SELECT count(*) FROM authgate_signing_keys)",
                &[],
            )
            .await
            .map_err(db)?;
        let n = |i: usize| usize::try_from(row.get::<_, i64>(i)).unwrap_or(0);
        Ok(super::Counts {
            users: n(0),
            codes: n(1),
            sessions: n(2),
            reset_tokens: n(3),
            signing_keys: n(4),
        })
    }

    pub(super) async fn signing_keys(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT record FROM authgate_signing_keys", &[])
            .await
            .map_err(db)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub(super) async fn put_signing_key(&self, kid: &str, record: &[u8]) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO authgate_signing_keys (kid, record) VALUES ($1, $2)",
            &[&kid, &record],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    pub(super) async fn delete_signing_key(&self, kid: &str) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute("DELETE FROM authgate_signing_keys WHERE kid = $1", &[&kid])
            .await
            .map_err(db)?;
        Ok(())
    }
}

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

/// The schema, as numbered migrations applied in order by `authgate migrate`. A released
/// migration never changes: a new one is added at the end.
pub(super) const MIGRATIONS: &[(u32, &str)] = &[
    (
        1,
        "CREATE TABLE authgate_secrets (
        name TEXT PRIMARY KEY,
        value BYTEA NOT NULL
    );
    CREATE TABLE authgate_users (
        id TEXT PRIMARY KEY,
        email TEXT NOT NULL,
        username TEXT,
        phone TEXT,
        search TEXT NOT NULL,
        record BYTEA NOT NULL,
        CONSTRAINT authgate_users_email_unique UNIQUE (email),
        CONSTRAINT authgate_users_username_unique UNIQUE (username),
        CONSTRAINT authgate_users_phone_unique UNIQUE (phone)
    );
    CREATE TABLE authgate_codes (
        user_id TEXT NOT NULL,
        purpose TEXT NOT NULL,
        record BYTEA NOT NULL,
        PRIMARY KEY (user_id, purpose)
    );
    CREATE TABLE authgate_sessions (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        record BYTEA NOT NULL
    );
    CREATE INDEX authgate_sessions_user ON authgate_sessions (user_id);
    CREATE TABLE authgate_reset_tokens (
        hash BYTEA PRIMARY KEY,
        record BYTEA NOT NULL
    );
    CREATE TABLE authgate_cooldowns (
        key TEXT PRIMARY KEY,
        until_ms BIGINT NOT NULL
    );",
    ),
    (
        2,
        // Every session made or ended, for the other instances' hot-path views.
        "CREATE TABLE authgate_session_events (
            seq BIGSERIAL PRIMARY KEY,
            at_ms BIGINT NOT NULL,
            session_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            expires_at BIGINT NOT NULL,
            live BOOLEAN NOT NULL
        );
        CREATE INDEX authgate_session_events_at ON authgate_session_events (at_ms);",
    ),
    (
        3,
        // Token signing keys, shared by every instance (private keys: guard the database).
        "CREATE TABLE authgate_signing_keys (
            kid TEXT PRIMARY KEY,
            record BYTEA NOT NULL
        );",
    ),
    (
        4,
        // The code HMAC key and the refresh seal key lived here, beside what they protect:
        // a database dump gave both away. They come from the key outside the store now
        // (tokens.secret_key), and the signing keys above are sealed with it.
        "DROP TABLE authgate_secrets;",
    ),
    (
        5,
        // Failures against logins that match no account, kept as an account's are; codes'
        // expiry in a column, for pruning (codes pretended sent to unknown addresses are
        // real records too).
        "CREATE TABLE authgate_locks (
            key TEXT PRIMARY KEY,
            record BYTEA NOT NULL,
            updated_ms BIGINT NOT NULL
        );
        ALTER TABLE authgate_codes ADD COLUMN expires_ms BIGINT NOT NULL DEFAULT 0;",
    ),
];

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

    /// The schema version in the database (0: none yet).
    pub(super) async fn schema_version(&self) -> Result<u32, StoreError> {
        let c = self.client().await?;
        c.batch_execute("CREATE TABLE IF NOT EXISTS authgate_schema (version BIGINT PRIMARY KEY)")
            .await
            .map_err(db)?;
        let row = c
            .query_one("SELECT COALESCE(MAX(version), 0) FROM authgate_schema", &[])
            .await
            .map_err(db)?;
        let v: i64 = row.get(0);
        Ok(u32::try_from(v).unwrap_or(0))
    }

    /// Applies the migrations the database lacks; returns the versions applied.
    pub(super) async fn migrate(&self) -> Result<Vec<u32>, StoreError> {
        let found = self.schema_version().await?;
        if found > latest() {
            return Err(StoreError::NewerSchema {
                found,
                supported: latest(),
            });
        }
        let mut applied = Vec::new();
        let mut c = self.client().await?;
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
            let tx = c.transaction().await.map_err(db)?;
            tx.batch_execute(sql).await.map_err(db)?;
            // Two migrators at once: the second one's insert fails and its transaction,
            // tables included, rolls back.
            tx.execute(
                "INSERT INTO authgate_schema (version) VALUES ($1)",
                &[&i64::from(*version)],
            )
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)?;
            applied.push(*version);
        }
        Ok(applied)
    }

    /// Refuses a database whose schema is not exactly this build's.
    pub(super) async fn check_schema(&self) -> Result<(), StoreError> {
        let found = self.schema_version().await?;
        if found > latest() {
            return Err(StoreError::NewerSchema {
                found,
                supported: latest(),
            });
        }
        if found < latest() {
            return Err(StoreError::Migrate {
                found,
                wanted: latest(),
            });
        }
        Ok(())
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

    pub(super) async fn insert_user(&self, user: &User) -> Result<(), StoreError> {
        let c = self.client().await?;
        Self::insert_user_on(&c, user).await
    }

    async fn insert_user_on<C: deadpool_postgres::GenericClient>(
        c: &C,
        user: &User,
    ) -> Result<(), StoreError> {
        c.execute(
            "INSERT INTO authgate_users (id, email, username, phone, search, record)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &user.id.to_string(),
                &user.email,
                &user.username,
                &user.phone,
                &search_text(user),
                &encode(user)?,
            ],
        )
        .await
        .map_err(write_err)?;
        Ok(())
    }

    pub(super) async fn import_users(&self, users: &[User]) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        for u in users {
            Self::insert_user_on(&tx, u).await?;
        }
        tx.commit().await.map_err(db)
    }

    async fn one_user(&self, sql: &str, key: &str) -> Result<Option<User>, StoreError> {
        let c = self.client().await?;
        let row = c.query_opt(sql, &[&key]).await.map_err(db)?;
        row.map(|r| decode(r.get::<_, &[u8]>(0))).transpose()
    }

    pub(super) async fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        self.one_user(
            "SELECT record FROM authgate_users WHERE id = $1",
            &id.to_string(),
        )
        .await
    }

    pub(super) async fn user_by(
        &self,
        field: UniqueField,
        key: &str,
    ) -> Result<Option<User>, StoreError> {
        let sql = match field {
            UniqueField::Email => "SELECT record FROM authgate_users WHERE email = $1",
            UniqueField::Username => "SELECT record FROM authgate_users WHERE username = $1",
            UniqueField::Phone => "SELECT record FROM authgate_users WHERE phone = $1",
        };
        self.one_user(sql, key).await
    }

    pub(super) async fn update_user<E, F>(&self, id: &UserId, f: F) -> Result<User, UpdateError<E>>
    where
        F: Fn(&mut User) -> Result<(), E>,
    {
        let key = id.to_string();
        let mut c = self.client().await?;
        let mut tries = 0;
        loop {
            let attempt: Result<User, UpdateError<E>> = async {
                let tx = c.transaction().await.map_err(db)?;
                let row = tx
                    .query_opt(
                        "SELECT record FROM authgate_users WHERE id = $1 FOR UPDATE",
                        &[&key],
                    )
                    .await
                    .map_err(db)?
                    .ok_or(StoreError::NotFound)?;
                let mut next: User = decode(row.get::<_, &[u8]>(0))?;
                f(&mut next).map_err(UpdateError::Rejected)?;
                tx.execute(
                    "UPDATE authgate_users SET email = $2, username = $3, phone = $4, search = $5,
                     record = $6 WHERE id = $1",
                    &[
                        &key,
                        &next.email,
                        &next.username,
                        &next.phone,
                        &search_text(&next),
                        &encode(&next)?,
                    ],
                )
                .await
                .map_err(write_err)?;
                tx.commit().await.map_err(db)?;
                Ok(next)
            }
            .await;
            if !again(&attempt, &mut tries).await {
                return attempt;
            }
        }
    }

    pub(super) async fn list_users(
        &self,
        query: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<User>, StoreError> {
        let c = self.client().await?;
        let q = query.map(str::to_lowercase);
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // strpos, not LIKE: the query is text to find, not a pattern.
        let rows = c
            .query(
                "SELECT record FROM authgate_users
                 WHERE $1::TEXT IS NULL OR strpos(search, $1) > 0
                 ORDER BY id OFFSET $2 LIMIT $3",
                &[&q, &offset, &limit],
            )
            .await
            .map_err(db)?;
        rows.iter().map(|r| decode(r.get::<_, &[u8]>(0))).collect()
    }

    pub(super) async fn user_count(&self) -> Result<usize, StoreError> {
        let c = self.client().await?;
        let n: i64 = c
            .query_one("SELECT count(*) FROM authgate_users", &[])
            .await
            .map_err(db)?
            .get(0);
        Ok(usize::try_from(n).unwrap_or(0))
    }

    pub(super) async fn put_code(&self, code: &Code) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO authgate_codes (user_id, purpose, record, expires_ms) VALUES ($1, $2, $3, $4)
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
        Ok(())
    }

    pub(super) async fn update_code<R, F>(
        &self,
        user: &UserId,
        purpose: Purpose,
        f: F,
    ) -> Result<R, StoreError>
    where
        F: Fn(Option<&Code>) -> (CodeChange, R),
    {
        let user = user.to_string();
        let purpose = purpose_key(purpose)?;
        let mut c = self.client().await?;
        let mut tries = 0;
        loop {
            let attempt: Result<R, StoreError> = async {
                // The row lock makes a code's tries count exactly, whichever instance
                // each guess reaches.
                let tx = c.transaction().await.map_err(db)?;
                let row = tx
                    .query_opt(
                        "SELECT record FROM authgate_codes WHERE user_id = $1 AND purpose = $2
                         FOR UPDATE",
                        &[&user, &purpose],
                    )
                    .await
                    .map_err(db)?;
                let current: Option<Code> =
                    row.map(|r| decode(r.get::<_, &[u8]>(0))).transpose()?;
                let (change, result) = f(current.as_ref());
                match change {
                    CodeChange::Keep => {}
                    CodeChange::Put(code) => {
                        tx.execute(
                            "INSERT INTO authgate_codes (user_id, purpose, record, expires_ms)
                             VALUES ($1, $2, $3, $4)
                             ON CONFLICT (user_id, purpose) DO UPDATE SET record = excluded.record,
                               expires_ms = excluded.expires_ms",
                            &[&user, &purpose, &encode(&code)?, &unix_ms(code.expires_at)],
                        )
                        .await
                        .map_err(db)?;
                    }
                    CodeChange::Delete => {
                        tx.execute(
                            "DELETE FROM authgate_codes WHERE user_id = $1 AND purpose = $2",
                            &[&user, &purpose],
                        )
                        .await
                        .map_err(db)?;
                    }
                }
                tx.commit().await.map_err(db)?;
                Ok(result)
            }
            .await;
            if !again(&attempt, &mut tries).await {
                return attempt;
            }
        }
    }

    pub(super) async fn update_lock<R, F>(&self, key: &str, f: F) -> Result<R, StoreError>
    where
        F: Fn(Option<&LockRecord>) -> (Option<LockRecord>, R),
    {
        let mut c = self.client().await?;
        let mut tries = 0;
        loop {
            let attempt: Result<R, StoreError> = async {
                let tx = c.transaction().await.map_err(db)?;
                // The row lock makes failures count exactly, whichever instance each
                // reaches; the row is made first so that two first failures lock one row.
                tx.execute(
                    "INSERT INTO authgate_locks (key, record, updated_ms) VALUES ($1, $2, 0)
                     ON CONFLICT (key) DO NOTHING",
                    &[&key, &encode(&LockRecord::default())?],
                )
                .await
                .map_err(db)?;
                let row = tx
                    .query_one(
                        "SELECT record, updated_ms FROM authgate_locks WHERE key = $1 FOR UPDATE",
                        &[&key],
                    )
                    .await
                    .map_err(db)?;
                let current: Option<LockRecord> = match row.get::<_, i64>(1) {
                    0 => None,
                    _ => Some(decode(row.get::<_, &[u8]>(0))?),
                };
                let (change, result) = f(current.as_ref());
                if let Some(new) = change {
                    let at = new.updated_at.map_or(1, unix_ms).max(1);
                    tx.execute(
                        "UPDATE authgate_locks SET record = $2, updated_ms = $3 WHERE key = $1",
                        &[&key, &encode(&new)?, &at],
                    )
                    .await
                    .map_err(db)?;
                }
                tx.commit().await.map_err(db)?;
                Ok(result)
            }
            .await;
            if !again(&attempt, &mut tries).await {
                return attempt;
            }
        }
    }

    pub(super) async fn take_cooldown(
        &self,
        key: &str,
        now: OffsetDateTime,
        cooldown: Duration,
    ) -> Result<Result<(), Duration>, StoreError> {
        let now_ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        let until = now_ms.saturating_add(i64::try_from(cooldown.as_millis()).unwrap_or(i64::MAX));
        let c = self.client().await?;
        // Taken in one statement: only a free (or expired) cooldown is overwritten.
        let taken = c
            .query_opt(
                "INSERT INTO authgate_cooldowns (key, until_ms) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET until_ms = excluded.until_ms
                 WHERE authgate_cooldowns.until_ms <= $3
                 RETURNING until_ms",
                &[&key, &until, &now_ms],
            )
            .await
            .map_err(db)?;
        if taken.is_some() {
            return Ok(Ok(()));
        }
        let held: i64 = c
            .query_opt(
                "SELECT until_ms FROM authgate_cooldowns WHERE key = $1",
                &[&key],
            )
            .await
            .map_err(db)?
            .map_or(now_ms, |r| r.get(0));
        let left = u64::try_from(held.saturating_sub(now_ms)).unwrap_or(0);
        Ok(Err(Duration::from_millis(left.max(1))))
    }

    pub(super) async fn set_cooldown(
        &self,
        key: &str,
        now: OffsetDateTime,
        cooldown: Duration,
    ) -> Result<(), StoreError> {
        let now_ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        let until = now_ms.saturating_add(i64::try_from(cooldown.as_millis()).unwrap_or(i64::MAX));
        self.client()
            .await?
            .execute(
                "INSERT INTO authgate_cooldowns (key, until_ms) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET until_ms = excluded.until_ms",
                &[&key, &until],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    pub(super) async fn insert_session(&self, s: &Session) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        tx.execute(
            "INSERT INTO authgate_sessions (id, user_id, record) VALUES ($1, $2, $3)",
            &[&s.id, &s.user_id.to_string(), &encode(s)?],
        )
        .await
        .map_err(db)?;
        let expires = s.expires_at.unix_timestamp();
        tx.execute(
            &format!(
                "INSERT INTO authgate_session_events (at_ms, session_id, user_id, expires_at, live)
                 VALUES ({NOW_MS}, $1, $2, $3, TRUE)"
            ),
            &[&s.id, &s.user_id.to_string(), &expires],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    /// Session events after `since_seq` (at most 10 000; the caller comes back for more),
    /// plus every event of the last `overlap` again (a transaction that took its sequence
    /// number earlier may commit later); the caller applies them idempotently. Returns the
    /// events, the highest sequence number seen, and whether events after `since_seq` were
    /// already pruned (the caller must reload its view).
    pub(super) async fn session_events(
        &self,
        since_seq: i64,
        overlap: Duration,
    ) -> Result<(Vec<SessionEvent>, i64, bool), StoreError> {
        let c = self.client().await?;
        let overlap = i64::try_from(overlap.as_millis()).unwrap_or(i64::MAX);
        let select =
            "SELECT seq, session_id, user_id, expires_at, live FROM authgate_session_events";
        let again = c
            .query(
                &format!("{select} WHERE seq <= $1 AND at_ms > {NOW_MS} - $2 ORDER BY seq"),
                &[&since_seq, &overlap],
            )
            .await
            .map_err(db)?;
        let fresh = c
            .query(
                &format!("{select} WHERE seq > $1 ORDER BY seq LIMIT 10000"),
                &[&since_seq],
            )
            .await
            .map_err(db)?;
        let gap = match fresh.first() {
            Some(first) if since_seq > 0 => {
                let seq: i64 = first.get(0);
                // Sequence numbers can skip (a rolled-back insert), so a gap is only certain
                // when the event right after the cursor has been pruned away.
                seq > since_seq + 1
                    && c.query_opt(
                        "SELECT 1 FROM authgate_session_events WHERE seq <= $1 LIMIT 1",
                        &[&since_seq],
                    )
                    .await
                    .map_err(db)?
                    .is_none()
            }
            _ => false,
        };
        let mut last = since_seq;
        let mut out = Vec::with_capacity(again.len() + fresh.len());
        for r in again.iter().chain(fresh.iter()) {
            let seq: i64 = r.get(0);
            last = last.max(seq);
            let user: String = r.get(2);
            out.push(SessionEvent {
                session_id: r.get(1),
                user_id: user
                    .parse()
                    .map_err(|_| StoreError::Corrupt("session event user id".into()))?,
                expires_at: r.get(3),
                live: r.get(4),
            });
        }
        Ok((out, last, gap))
    }

    /// The newest session event's sequence number (where a new follower starts).
    pub(super) async fn session_events_head(&self) -> Result<i64, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT COALESCE(MAX(seq), 0) FROM authgate_session_events",
                &[],
            )
            .await
            .map_err(db)?;
        Ok(row.get(0))
    }

    /// Forgets session events older than `keep` and cooldowns that ended before `now` (their
    /// keys are addresses anyone may send: they must not pile up).
    pub(super) async fn prune(
        &self,
        keep: Duration,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let keep = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
        let events = c
            .execute(
                &format!("DELETE FROM authgate_session_events WHERE at_ms < {NOW_MS} - $1"),
                &[&keep],
            )
            .await
            .map_err(db)?;
        let now_ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        let cooldowns = c
            .execute(
                "DELETE FROM authgate_cooldowns WHERE until_ms < $1",
                &[&now_ms],
            )
            .await
            .map_err(db)?;
        let codes = c
            .execute(
                "DELETE FROM authgate_codes WHERE expires_ms > 0 AND expires_ms < $1",
                &[&unix_ms(now - super::CODE_KEEP)],
            )
            .await
            .map_err(db)?;
        let locks = c
            .execute(
                "DELETE FROM authgate_locks WHERE updated_ms < $1",
                &[&unix_ms(now - super::LOCK_RECORD_KEEP)],
            )
            .await
            .map_err(db)?;
        Ok(events + cooldowns + codes + locks)
    }

    pub(super) async fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt("SELECT record FROM authgate_sessions WHERE id = $1", &[&id])
            .await
            .map_err(db)?;
        row.map(|r| decode(r.get::<_, &[u8]>(0))).transpose()
    }

    pub(super) async fn sessions_of(&self, user: &UserId) -> Result<Vec<Session>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT record FROM authgate_sessions WHERE user_id = $1 ORDER BY id",
                &[&user.to_string()],
            )
            .await
            .map_err(db)?;
        rows.iter().map(|r| decode(r.get::<_, &[u8]>(0))).collect()
    }

    pub(super) async fn all_sessions(&self) -> Result<Vec<Session>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT record FROM authgate_sessions", &[])
            .await
            .map_err(db)?;
        rows.iter().map(|r| decode(r.get::<_, &[u8]>(0))).collect()
    }

    pub(super) async fn update_session<E, F>(
        &self,
        id: &str,
        f: F,
    ) -> Result<Session, UpdateError<E>>
    where
        F: Fn(&mut Session) -> Result<(), E>,
    {
        let mut c = self.client().await?;
        let mut tries = 0;
        loop {
            let attempt: Result<Session, UpdateError<E>> = async {
                // The row lock serializes refreshes of one session across instances: one
                // rotation, the others see it (grace window) or a reuse.
                let tx = c.transaction().await.map_err(db)?;
                let row = tx
                    .query_opt(
                        "SELECT record FROM authgate_sessions WHERE id = $1 FOR UPDATE",
                        &[&id],
                    )
                    .await
                    .map_err(db)?
                    .ok_or(StoreError::NotFound)?;
                let mut next: Session = decode(row.get::<_, &[u8]>(0))?;
                f(&mut next).map_err(UpdateError::Rejected)?;
                tx.execute(
                    "UPDATE authgate_sessions SET record = $2 WHERE id = $1",
                    &[&id, &encode(&next)?],
                )
                .await
                .map_err(db)?;
                tx.commit().await.map_err(db)?;
                Ok(next)
            }
            .await;
            if !again(&attempt, &mut tries).await {
                return attempt;
            }
        }
    }

    pub(super) async fn delete_sessions(
        &self,
        user: &UserId,
        ids: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let rows = tx
            .query(
                "DELETE FROM authgate_sessions WHERE user_id = $1 AND id = ANY($2) RETURNING id",
                &[&user.to_string(), &ids],
            )
            .await
            .map_err(db)?;
        let deleted: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        Self::ended(&tx, user, &deleted).await?;
        tx.commit().await.map_err(db)?;
        Ok(deleted)
    }

    pub(super) async fn delete_sessions_of(
        &self,
        user: &UserId,
        except: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let rows = tx
            .query(
                "DELETE FROM authgate_sessions
                 WHERE user_id = $1 AND ($2::TEXT IS NULL OR id <> $2) RETURNING id",
                &[&user.to_string(), &except],
            )
            .await
            .map_err(db)?;
        let deleted: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        Self::ended(&tx, user, &deleted).await?;
        tx.commit().await.map_err(db)?;
        Ok(deleted)
    }

    /// Records the end of `ids` for the other instances, in the deleting transaction.
    async fn ended(
        tx: &deadpool_postgres::Transaction<'_>,
        user: &UserId,
        ids: &[String],
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        tx.execute(
            &format!(
                "INSERT INTO authgate_session_events (at_ms, session_id, user_id, expires_at, live)
                 SELECT {NOW_MS}, t.id, $2, 0, FALSE FROM unnest($1::TEXT[]) AS t(id)"
            ),
            &[&ids, &user.to_string()],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    pub(super) async fn put_reset_token(
        &self,
        hash: &[u8],
        token: &ResetToken,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO authgate_reset_tokens (hash, record) VALUES ($1, $2)
             ON CONFLICT (hash) DO UPDATE SET record = excluded.record",
            &[&hash, &encode(token)?],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    pub(super) async fn take_reset_token(
        &self,
        hash: &[u8],
    ) -> Result<Option<ResetToken>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "DELETE FROM authgate_reset_tokens WHERE hash = $1 RETURNING record",
                &[&hash],
            )
            .await
            .map_err(db)?;
        row.map(|r| decode(r.get::<_, &[u8]>(0))).transpose()
    }
}

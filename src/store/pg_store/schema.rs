//! The schema: numbered migrations, and the version check at start.

use super::*;

/// The schema, as numbered migrations applied in order by `authgate migrate`. A released
/// migration never changes: a new one is added at the end.
pub(in crate::store) const MIGRATIONS: &[(u32, &str)] = &[
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
    (
        6,
        // WebAuthn ceremonies under way, so that any instance can finish one, once.
        "CREATE TABLE authgate_challenges (
            id TEXT PRIMARY KEY,
            record BYTEA NOT NULL,
            expires_ms BIGINT NOT NULL
        );",
    ),
];

impl PgStore {
    /// The schema version in the database (0: none yet).
    pub(in crate::store) async fn schema_version(&self) -> Result<u32, StoreError> {
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
    pub(in crate::store) async fn migrate(&self) -> Result<Vec<u32>, StoreError> {
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
    pub(in crate::store) async fn check_schema(&self) -> Result<(), StoreError> {
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
}

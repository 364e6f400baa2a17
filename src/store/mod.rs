//! The store boundary: a typed API for users (with unique email, username and phone), one-time
//! codes, sessions, reset tokens, cooldowns and (shared stores) signing keys. Services never see the engine
//! behind it: sled (embedded, the default) or PostgreSQL (one database shared by several
//! instances).
//!
//! Durability: every write method returns only once the write is on disk, so a handler that
//! answers after it has an acknowledged write that survives `kill -9`.

mod pg_store;
mod records;
mod sled_store;

pub use pg_store::PgOptions;
pub use records::*;

use serde::{Serialize, de::DeserializeOwned};

use std::path::Path;
use time::OffsetDateTime;

/// The on-disk schema this build understands.
pub const SCHEMA_VERSION: u32 = 1;

/// Which unique field a write collided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniqueField {
    Email,
    Username,
    Phone,
}

impl UniqueField {
    pub fn as_str(self) -> &'static str {
        match self {
            UniqueField::Email => "email",
            UniqueField::Username => "username",
            UniqueField::Phone => "phone",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{} is already taken", .0.as_str())]
    Conflict(UniqueField),
    #[error("no such record")]
    NotFound,
    #[error(
        "the store was written by a newer authgate (schema {found}, this build reads {supported})"
    )]
    NewerSchema { found: u32, supported: u32 },
    #[error(
        "the database schema is at version {found}; this build needs {wanted}: run `authgate migrate`"
    )]
    Migrate { found: u32, wanted: u32 },
    #[error("a record was written by a newer authgate (record version {0})")]
    NewerRecord(u32),
    #[error("a stored record cannot be read: {0}")]
    Corrupt(String),
    #[error("storage engine: {0}")]
    Engine(String),
}

/// The result of an update closure that may refuse.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError<E> {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("update refused")]
    Rejected(E),
}

/// What to do with a code after looking at it.
#[derive(Debug)]
pub enum CodeChange {
    Keep,
    Put(Code),
    Delete,
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Decodes a record, refusing one from a newer format instead of misreading it.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    #[derive(serde::Deserialize)]
    struct Versioned {
        v: u32,
    }
    let ver: Versioned =
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    if ver.v > RECORD_VERSION {
        return Err(StoreError::NewerRecord(ver.v));
    }
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Every record of a store, for `authgate store copy`.
#[derive(Debug, Default)]
pub struct Export {
    pub users: Vec<User>,
    pub codes: Vec<Code>,
    pub sessions: Vec<Session>,
    /// (hash, token).
    pub reset_tokens: Vec<(Vec<u8>, ResetToken)>,
    /// Signing key records (the same JSON as the key files).
    pub signing_keys: Vec<(String, Vec<u8>)>,
}

/// Lock records untouched this long are pruned.
pub const LOCK_RECORD_KEEP: std::time::Duration = std::time::Duration::from_secs(86_400);

/// Codes expired this long are pruned.
pub const CODE_KEEP: std::time::Duration = std::time::Duration::from_secs(3_600);

/// How many records of each kind a store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub users: usize,
    pub codes: usize,
    pub sessions: usize,
    pub reset_tokens: usize,
    pub signing_keys: usize,
}

impl Export {
    pub fn counts(&self) -> Counts {
        Counts {
            users: self.users.len(),
            codes: self.codes.len(),
            sessions: self.sessions.len(),
            reset_tokens: self.reset_tokens.len(),
            signing_keys: self.signing_keys.len(),
        }
    }
}

/// The store: one API over either backend.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Sled(sled_store::SledStore),
    Postgres(pg_store::PgStore),
}

/// Calls the same method on whichever backend is in use.
macro_rules! each {
    ($self:ident, $b:ident => $call:expr) => {
        match &$self.inner {
            Backend::Sled($b) => $call,
            Backend::Postgres($b) => $call,
        }
    };
}

impl Store {
    /// Opens (creating if needed) the sled store in `path` with a page cache of `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        Ok(Store {
            inner: Backend::Sled(sled_store::SledStore::open(path, cache_bytes)?),
        })
    }

    /// Connects to PostgreSQL and checks that the schema is this build's (see
    /// [`Store::migrate`]).
    pub async fn connect(opts: &PgOptions) -> Result<Store, StoreError> {
        let pg = pg_store::PgStore::connect(opts)?;
        pg.check_schema().await?;
        Ok(Store {
            inner: Backend::Postgres(pg),
        })
    }

    /// Brings a PostgreSQL schema up to this build's; returns the versions applied. (sled
    /// makes its schema when opened: nothing to do.)
    pub async fn migrate(opts: &PgOptions) -> Result<Vec<u32>, StoreError> {
        pg_store::PgStore::connect(opts)?.migrate().await
    }

    /// Which engine this is, for logs.
    pub fn backend_name(&self) -> &'static str {
        match &self.inner {
            Backend::Sled(_) => "sled",
            Backend::Postgres(_) => "postgres",
        }
    }

    // Token signing keys (kept here when instances share the store; a single instance
    // keeps them as files in tokens.keys_dir).

    pub async fn signing_keys(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        match &self.inner {
            Backend::Sled(b) => b.signing_keys(),
            Backend::Postgres(b) => b.signing_keys().await,
        }
    }

    pub async fn put_signing_key(&self, kid: &str, record: &[u8]) -> Result<(), StoreError> {
        each!(self, b => b.put_signing_key(kid, record).await)
    }

    pub async fn delete_signing_key(&self, kid: &str) -> Result<(), StoreError> {
        each!(self, b => b.delete_signing_key(kid).await)
    }

    // Users.

    /// Inserts a new user; email, username and phone must be free (checked atomically).
    pub async fn insert_user(&self, user: &User) -> Result<(), StoreError> {
        each!(self, b => b.insert_user(user).await)
    }

    /// Inserts many users with one flush (one transaction) at the end: imports, store copies,
    /// benchmarks. Uniqueness is enforced per user as in [`Store::insert_user`].
    pub async fn import_users(&self, users: &[User]) -> Result<(), StoreError> {
        each!(self, b => b.import_users(users).await)
    }

    pub async fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        match &self.inner {
            Backend::Sled(b) => b.user(id),
            Backend::Postgres(b) => b.user(id).await,
        }
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        self.user_by(UniqueField::Email, email).await
    }

    pub async fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError> {
        self.user_by(UniqueField::Username, username).await
    }

    pub async fn user_by_phone(&self, phone: &str) -> Result<Option<User>, StoreError> {
        self.user_by(UniqueField::Phone, phone).await
    }

    async fn user_by(&self, field: UniqueField, key: &str) -> Result<Option<User>, StoreError> {
        match &self.inner {
            Backend::Sled(b) => b.user_by_index(
                match field {
                    UniqueField::Email => sled_store::Index::Email,
                    UniqueField::Username => sled_store::Index::Username,
                    UniqueField::Phone => sled_store::Index::Phone,
                },
                key,
            ),
            Backend::Postgres(b) => b.user_by(field, key).await,
        }
    }

    /// Applies `f` to the current record atomically (retried on a concurrent write, so `f`
    /// must only depend on the record it is given). Index changes are checked for uniqueness.
    pub async fn update_user<E, F>(&self, id: &UserId, f: F) -> Result<User, UpdateError<E>>
    where
        F: Fn(&mut User) -> Result<(), E>,
    {
        each!(self, b => b.update_user(id, f).await)
    }

    /// Users in id order, optionally only those whose email, username or name contains `query`.
    pub async fn list_users(
        &self,
        query: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<User>, StoreError> {
        match &self.inner {
            Backend::Sled(b) => b.list_users(query, offset, limit),
            Backend::Postgres(b) => b.list_users(query, offset, limit).await,
        }
    }

    pub async fn user_count(&self) -> Result<usize, StoreError> {
        match &self.inner {
            Backend::Sled(b) => Ok(b.user_count()),
            Backend::Postgres(b) => b.user_count().await,
        }
    }

    // One-time codes: at most one live code per user and purpose.

    pub async fn put_code(&self, code: &Code) -> Result<(), StoreError> {
        each!(self, b => b.put_code(code).await)
    }

    /// Looks at the code for (`user`, `purpose`) and changes it atomically; `f` may be called
    /// more than once under contention.
    pub async fn update_code<R, F>(
        &self,
        user: &UserId,
        purpose: Purpose,
        f: F,
    ) -> Result<R, StoreError>
    where
        F: Fn(Option<&Code>) -> (CodeChange, R),
    {
        each!(self, b => b.update_code(user, purpose, f).await)
    }

    // Cooldowns (resend limits): kept per key. sled does not flush them (losing one on a
    // crash is harmless); PostgreSQL shares them between instances.

    /// Takes the cooldown for `key` if it is free at `now`; otherwise returns the time left.
    pub async fn take_cooldown(
        &self,
        key: &str,
        now: OffsetDateTime,
        cooldown: std::time::Duration,
    ) -> Result<Result<(), std::time::Duration>, StoreError> {
        match &self.inner {
            Backend::Sled(b) => b.take_cooldown(key, now, cooldown),
            Backend::Postgres(b) => b.take_cooldown(key, now, cooldown).await,
        }
    }

    /// Starts the cooldown for `key` at `now`, whatever was there (a new code replaces one
    /// that is no longer alive).
    pub async fn set_cooldown(
        &self,
        key: &str,
        now: OffsetDateTime,
        cooldown: std::time::Duration,
    ) -> Result<(), StoreError> {
        match &self.inner {
            Backend::Sled(b) => b.set_cooldown(key, now, cooldown),
            Backend::Postgres(b) => b.set_cooldown(key, now, cooldown).await,
        }
    }

    // Lock records of logins that match no account.

    /// Looks at the lock record for `key` and changes it atomically (`None` from `f` leaves
    /// it as it was); `f` may be called more than once under contention.
    pub async fn update_lock<R, F>(&self, key: &str, f: F) -> Result<R, StoreError>
    where
        F: Fn(Option<&LockRecord>) -> (Option<LockRecord>, R),
    {
        each!(self, b => b.update_lock(key, f).await)
    }

    // Sessions.

    pub async fn insert_session(&self, s: &Session) -> Result<(), StoreError> {
        each!(self, b => b.insert_session(s).await)
    }

    pub async fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        match &self.inner {
            Backend::Sled(b) => b.session(id),
            Backend::Postgres(b) => b.session(id).await,
        }
    }

    pub async fn sessions_of(&self, user: &UserId) -> Result<Vec<Session>, StoreError> {
        match &self.inner {
            Backend::Sled(b) => b.sessions_of(user),
            Backend::Postgres(b) => b.sessions_of(user).await,
        }
    }

    pub async fn update_session<E, F>(&self, id: &str, f: F) -> Result<Session, UpdateError<E>>
    where
        F: Fn(&mut Session) -> Result<(), E>,
    {
        each!(self, b => b.update_session(id, f).await)
    }

    /// Deletes the given sessions of `user` (others' ids are ignored); returns those deleted.
    pub async fn delete_sessions(
        &self,
        user: &UserId,
        ids: &[String],
    ) -> Result<Vec<String>, StoreError> {
        each!(self, b => b.delete_sessions(user, ids).await)
    }

    /// Deletes every session of `user` but `except`; returns those deleted.
    pub async fn delete_sessions_of(
        &self,
        user: &UserId,
        except: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        each!(self, b => b.delete_sessions_of(user, except).await)
    }

    /// Every session id with its user and absolute expiry (to warm the hot-path cache).
    pub async fn all_sessions(&self) -> Result<Vec<Session>, StoreError> {
        match &self.inner {
            Backend::Sled(b) => b.all_sessions(),
            Backend::Postgres(b) => b.all_sessions().await,
        }
    }

    // Reset tokens (two-step password reset).

    pub async fn put_reset_token(&self, hash: &[u8], token: &ResetToken) -> Result<(), StoreError> {
        each!(self, b => b.put_reset_token(hash, token).await)
    }

    /// Removes and returns the token: a second use finds nothing.
    pub async fn take_reset_token(&self, hash: &[u8]) -> Result<Option<ResetToken>, StoreError> {
        each!(self, b => b.take_reset_token(hash).await)
    }

    // WebAuthn ceremonies under way: put once, taken once (atomically), pruned when expired.

    pub async fn put_challenge(&self, id: &str, c: &Challenge) -> Result<(), StoreError> {
        each!(self, b => b.put_challenge(id, c).await)
    }

    /// Removes and returns the challenge `id`: of two requests with one id, one gets it.
    pub async fn take_challenge(&self, id: &str) -> Result<Option<Challenge>, StoreError> {
        each!(self, b => b.take_challenge(id).await)
    }

    pub fn is_open(&self) -> bool {
        each!(self, b => b.is_open())
    }

    // Moving a deployment.

    /// Every record (sled, the source of a copy).
    pub async fn export(&self) -> Result<Export, StoreError> {
        match &self.inner {
            Backend::Sled(b) => b.export(),
            Backend::Postgres(_) => Err(StoreError::Engine(
                "export reads a sled store; copy from sled to PostgreSQL".into(),
            )),
        }
    }

    /// Writes every record of `export`, replacing records with the same keys, in one
    /// transaction (PostgreSQL, the destination of a copy): a copy can be run again.
    pub async fn import(&self, export: &Export) -> Result<(), StoreError> {
        match &self.inner {
            Backend::Sled(_) => Err(StoreError::Engine(
                "import writes to PostgreSQL; copy from sled to PostgreSQL".into(),
            )),
            Backend::Postgres(b) => b.import(export).await,
        }
    }

    /// How many records of each kind this store holds.
    pub async fn counts(&self) -> Result<Counts, StoreError> {
        match &self.inner {
            Backend::Sled(b) => Ok(b.export()?.counts()),
            Backend::Postgres(b) => b.counts().await,
        }
    }

    // Several instances on one store.

    /// Whether other instances may share this store (PostgreSQL), so that each must follow
    /// the session events.
    pub fn is_shared(&self) -> bool {
        matches!(self.inner, Backend::Postgres(_))
    }

    /// The position a new follower of the session events starts from.
    pub async fn session_events_head(&self) -> Result<i64, StoreError> {
        match &self.inner {
            Backend::Sled(_) => Ok(0),
            Backend::Postgres(b) => b.session_events_head().await,
        }
    }

    /// Sessions made or ended since `cursor` (and in the last `overlap`, re-read because a
    /// commit may land after a later one): apply them idempotently. Returns the new cursor,
    /// and whether events since `cursor` were pruned already (then reload the view).
    pub async fn session_events(
        &self,
        cursor: i64,
        overlap: std::time::Duration,
    ) -> Result<(Vec<SessionEvent>, i64, bool), StoreError> {
        match &self.inner {
            Backend::Sled(_) => Ok((Vec::new(), cursor, false)),
            Backend::Postgres(b) => b.session_events(cursor, overlap).await,
        }
    }

    /// Forgets session events older than `keep`, cooldowns that ended before `now`, codes
    /// expired an hour or more, and lock records untouched for a day (whatever the lockout
    /// duration: a lock never outlives the failures it counts by a day).
    pub async fn prune(
        &self,
        keep: std::time::Duration,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        match &self.inner {
            Backend::Sled(b) => b.prune(now),
            Backend::Postgres(b) => b.prune(keep, now).await,
        }
    }
}

//! The store boundary: a typed API for users (with unique email, username and phone), one-time
//! codes, sessions, reset tokens, cooldowns and server secrets. Services never see the engine
//! behind it (sled today), so another backend can be added without touching them.
//!
//! Durability: every write method returns only once the write is on disk, so a handler that
//! answers after it has an acknowledged write that survives `kill -9`.

mod records;
mod sled_store;

pub use records::*;

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

/// The embedded store.
#[derive(Debug, Clone)]
pub struct Store {
    inner: sled_store::SledStore,
}

impl Store {
    /// Opens (creating if needed) the sled store in `path` with a page cache of `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        Ok(Store {
            inner: sled_store::SledStore::open(path, cache_bytes)?,
        })
    }

    /// A named 32-byte server secret, made on first use and kept in the store.
    pub async fn secret(&self, name: &str) -> Result<crate::secret::KeyBytes, StoreError> {
        self.inner.secret(name).await
    }

    // Users.

    /// Inserts a new user; email, username and phone must be free (checked atomically).
    pub async fn insert_user(&self, user: &User) -> Result<(), StoreError> {
        self.inner.insert_user(user).await
    }

    /// Inserts many users with one flush at the end (imports, store copies, benchmarks).
    /// Uniqueness is enforced per user as in [`Store::insert_user`].
    pub async fn import_users(&self, users: &[User]) -> Result<(), StoreError> {
        self.inner.import_users(users).await
    }

    pub async fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        self.inner.user(id)
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        self.inner.user_by_index(sled_store::Index::Email, email)
    }

    pub async fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError> {
        self.inner
            .user_by_index(sled_store::Index::Username, username)
    }

    pub async fn user_by_phone(&self, phone: &str) -> Result<Option<User>, StoreError> {
        self.inner.user_by_index(sled_store::Index::Phone, phone)
    }

    /// Applies `f` to the current record atomically (retried on a concurrent write, so `f`
    /// must only depend on the record it is given). Index changes are checked for uniqueness.
    pub async fn update_user<E, F>(&self, id: &UserId, f: F) -> Result<User, UpdateError<E>>
    where
        F: Fn(&mut User) -> Result<(), E>,
    {
        self.inner.update_user(id, f).await
    }

    /// Users in id order, optionally only those whose email, username or name contains `query`.
    pub async fn list_users(
        &self,
        query: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<User>, StoreError> {
        self.inner.list_users(query, offset, limit)
    }

    pub fn user_count(&self) -> usize {
        self.inner.user_count()
    }

    // One-time codes: at most one live code per user and purpose.

    pub async fn put_code(&self, code: &Code) -> Result<(), StoreError> {
        self.inner.put_code(code).await
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
        self.inner.update_code(user, purpose, f).await
    }

    // Cooldowns (resend limits): kept per key, not flushed (losing one on a crash is harmless).

    /// Takes the cooldown for `key` if it is free at `now`; otherwise returns the time left.
    pub fn take_cooldown(
        &self,
        key: &str,
        now: OffsetDateTime,
        cooldown: std::time::Duration,
    ) -> Result<Result<(), std::time::Duration>, StoreError> {
        self.inner.take_cooldown(key, now, cooldown)
    }

    // Sessions.

    pub async fn insert_session(&self, s: &Session) -> Result<(), StoreError> {
        self.inner.insert_session(s).await
    }

    pub async fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        self.inner.session(id)
    }

    pub async fn sessions_of(&self, user: &UserId) -> Result<Vec<Session>, StoreError> {
        self.inner.sessions_of(user)
    }

    pub async fn update_session<E, F>(&self, id: &str, f: F) -> Result<Session, UpdateError<E>>
    where
        F: Fn(&mut Session) -> Result<(), E>,
    {
        self.inner.update_session(id, f).await
    }

    /// Deletes the given sessions of `user` (others' ids are ignored); returns those deleted.
    pub async fn delete_sessions(
        &self,
        user: &UserId,
        ids: &[String],
    ) -> Result<Vec<String>, StoreError> {
        self.inner.delete_sessions(user, ids).await
    }

    /// Deletes every session of `user` but `except`; returns those deleted.
    pub async fn delete_sessions_of(
        &self,
        user: &UserId,
        except: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        self.inner.delete_sessions_of(user, except).await
    }

    /// Every session id with its user and absolute expiry (to warm the hot-path cache).
    pub fn all_sessions(&self) -> Result<Vec<Session>, StoreError> {
        self.inner.all_sessions()
    }

    // Reset tokens (two-step password reset).

    pub async fn put_reset_token(&self, hash: &[u8], token: &ResetToken) -> Result<(), StoreError> {
        self.inner.put_reset_token(hash, token).await
    }

    /// Removes and returns the token: a second use finds nothing.
    pub async fn take_reset_token(&self, hash: &[u8]) -> Result<Option<ResetToken>, StoreError> {
        self.inner.take_reset_token(hash).await
    }

    pub fn is_open(&self) -> bool {
        self.inner.is_open()
    }
}

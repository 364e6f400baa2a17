//! The sled implementation of the store. sled types stay in this file.

use super::records::*;
use super::{CodeChange, SCHEMA_VERSION, StoreError, UniqueField, UpdateError, decode, encode};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use std::path::Path;
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy)]
pub(super) enum Index {
    Email,
    Username,
    Phone,
}

#[derive(Debug, Clone)]
pub(super) struct SledStore {
    db: sled::Db,
    meta: sled::Tree,
    users: sled::Tree,
    by_email: sled::Tree,
    by_username: sled::Tree,
    by_phone: sled::Tree,
    codes: sled::Tree,
    sessions: sled::Tree,
    user_sessions: sled::Tree,
    reset_tokens: sled::Tree,
    challenges: sled::Tree,
    cooldowns: sled::Tree,
    locks: sled::Tree,
}

fn engine(e: sled::Error) -> StoreError {
    StoreError::Engine(e.to_string())
}

fn tx_err<E>(e: TransactionError<TxAbort<E>>) -> UpdateError<E> {
    match e {
        TransactionError::Abort(TxAbort::Store(s)) => UpdateError::Store(s),
        TransactionError::Abort(TxAbort::Rejected(r)) => UpdateError::Rejected(r),
        TransactionError::Storage(s) => UpdateError::Store(engine(s)),
    }
}

fn store_only<E>(e: UpdateError<E>) -> StoreError {
    match e {
        UpdateError::Store(s) => s,
        UpdateError::Rejected(_) => StoreError::Engine("unexpected refusal".into()),
    }
}

#[derive(Debug)]
enum TxAbort<E> {
    Store(StoreError),
    Rejected(E),
}

type TxResult<T, E> = Result<T, ConflictableTransactionError<TxAbort<E>>>;

fn abort<T, E>(e: StoreError) -> TxResult<T, E> {
    Err(ConflictableTransactionError::Abort(TxAbort::Store(e)))
}

fn session_index_key(user: &UserId, session: &str) -> Vec<u8> {
    let mut k = user.as_bytes().to_vec();
    k.extend_from_slice(session.as_bytes());
    k
}

fn code_key(user: &UserId, purpose: Purpose) -> Vec<u8> {
    let mut k = user.as_bytes().to_vec();
    k.push(purpose.tag());
    k
}

/// Points an index entry at `id`, refusing if another user holds it.
fn claim<E>(t: &TransactionalTree, key: &str, id: &UserId, field: UniqueField) -> TxResult<(), E> {
    match t.get(key.as_bytes())? {
        Some(owner) if owner.as_ref() != id.as_bytes() => abort(StoreError::Conflict(field)),
        _ => {
            t.insert(key.as_bytes(), id.as_bytes().as_slice())?;
            Ok(())
        }
    }
}

/// Moves an index entry from `old` to `new` when the value changed.
fn reindex<E>(
    t: &TransactionalTree,
    old: Option<&str>,
    new: Option<&str>,
    id: &UserId,
    field: UniqueField,
) -> TxResult<(), E> {
    if old == new {
        return Ok(());
    }
    if let Some(n) = new {
        claim(t, n, id, field)?;
    }
    if let Some(o) = old {
        t.remove(o.as_bytes())?;
    }
    Ok(())
}

impl SledStore {
    pub(super) fn open(path: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(engine)?;
        let meta = db.open_tree("meta").map_err(engine)?;
        match meta.get(b"schema_version").map_err(engine)? {
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt("schema_version".into()))?;
                if found > SCHEMA_VERSION {
                    return Err(StoreError::NewerSchema {
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
            }
            None => {
                meta.insert(b"schema_version", &SCHEMA_VERSION.to_be_bytes())
                    .map_err(engine)?;
                db.flush().map_err(engine)?;
            }
        }
        // Builds before the key outside the store kept the code HMAC key and the refresh
        // seal key here, beside what they protect: a copy of the store gave both away. They
        // are gone (codes sent just before the upgrade must be asked for again).
        let old_secrets: Vec<sled::IVec> = meta
            .scan_prefix(b"secret:")
            .keys()
            .collect::<Result<_, _>>()
            .map_err(engine)?;
        if !old_secrets.is_empty() {
            for k in old_secrets {
                meta.remove(k).map_err(engine)?;
            }
            db.flush().map_err(engine)?;
        }
        let tree = |name: &str| db.open_tree(name).map_err(engine);
        Ok(SledStore {
            users: tree("users")?,
            by_email: tree("idx_email")?,
            by_username: tree("idx_username")?,
            by_phone: tree("idx_phone")?,
            codes: tree("codes")?,
            sessions: tree("sessions")?,
            user_sessions: tree("idx_user_sessions")?,
            reset_tokens: tree("reset_tokens")?,
            challenges: tree("challenges")?,
            cooldowns: tree("cooldowns")?,
            locks: tree("locks")?,
            meta,
            db,
        })
    }

    /// Makes everything written so far durable. sled's `flush_async` never completes when
    /// several are awaited at once (sled issue 1308, fixed only on its unreleased main), so
    /// the blocking flush runs on the blocking pool, off the serving threads.
    async fn flush(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StoreError::Engine(format!("flush task: {e}")))?
            .map_err(engine)?;
        Ok(())
    }

    pub(super) fn is_open(&self) -> bool {
        self.meta.get(b"schema_version").is_ok()
    }

    pub(super) fn export(&self) -> Result<super::Export, StoreError> {
        let values = |t: &sled::Tree| -> Result<Vec<sled::IVec>, StoreError> {
            t.iter().values().map(|v| v.map_err(engine)).collect()
        };
        let mut out = super::Export {
            users: values(&self.users)?
                .iter()
                .map(|v| decode(v))
                .collect::<Result<_, _>>()?,
            codes: values(&self.codes)?
                .iter()
                .map(|v| decode(v))
                .collect::<Result<_, _>>()?,
            sessions: self.all_sessions()?,
            ..Default::default()
        };
        for item in self.reset_tokens.iter() {
            let (k, v) = item.map_err(engine)?;
            out.reset_tokens.push((k.to_vec(), decode(&v)?));
        }
        for item in self.meta.scan_prefix(b"signing-key:") {
            let (k, v) = item.map_err(engine)?;
            let kid = String::from_utf8_lossy(k.get(12..).unwrap_or_default()).to_string();
            out.signing_keys.push((kid, v.to_vec()));
        }
        Ok(out)
    }

    pub(super) fn signing_keys(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.meta
            .scan_prefix(b"signing-key:")
            .values()
            .map(|v| v.map(|v| v.to_vec()).map_err(engine))
            .collect()
    }

    pub(super) async fn put_signing_key(&self, kid: &str, record: &[u8]) -> Result<(), StoreError> {
        self.meta
            .insert(format!("signing-key:{kid}").as_bytes(), record)
            .map_err(engine)?;
        self.flush().await
    }

    pub(super) async fn delete_signing_key(&self, kid: &str) -> Result<(), StoreError> {
        self.meta
            .remove(format!("signing-key:{kid}").as_bytes())
            .map_err(engine)?;
        self.flush().await
    }

    pub(super) async fn insert_user(&self, user: &User) -> Result<(), StoreError> {
        self.insert_user_unflushed(user)?;
        self.flush().await
    }

    pub(super) async fn import_users(&self, users: &[User]) -> Result<(), StoreError> {
        for u in users {
            self.insert_user_unflushed(u)?;
        }
        self.flush().await
    }

    fn insert_user_unflushed(&self, user: &User) -> Result<(), StoreError> {
        let bytes = encode(user)?;
        let id = user.id;
        (
            &self.users,
            &self.by_email,
            &self.by_username,
            &self.by_phone,
        )
            .transaction(|(users, email, username, phone)| -> TxResult<(), ()> {
                if users.get(id.as_bytes())?.is_some() {
                    return abort(StoreError::Engine("user id collision".into()));
                }
                claim(email, &user.email, &id, UniqueField::Email)?;
                if let Some(u) = &user.username {
                    claim(username, u, &id, UniqueField::Username)?;
                }
                if let Some(p) = &user.phone {
                    claim(phone, p, &id, UniqueField::Phone)?;
                }
                users.insert(id.as_bytes().as_slice(), bytes.as_slice())?;
                Ok(())
            })
            .map_err(|e| store_only(tx_err(e)))
    }

    pub(super) fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        self.users
            .get(id.as_bytes())
            .map_err(engine)?
            .map(|v| decode(&v))
            .transpose()
    }

    pub(super) fn user_by_index(
        &self,
        index: Index,
        key: &str,
    ) -> Result<Option<User>, StoreError> {
        let tree = match index {
            Index::Email => &self.by_email,
            Index::Username => &self.by_username,
            Index::Phone => &self.by_phone,
        };
        let Some(id) = tree.get(key.as_bytes()).map_err(engine)? else {
            return Ok(None);
        };
        let id = UserId::from_slice(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.user(&id)
    }

    pub(super) async fn update_user<E, F>(&self, id: &UserId, f: F) -> Result<User, UpdateError<E>>
    where
        F: Fn(&mut User) -> Result<(), E>,
    {
        let updated = (
            &self.users,
            &self.by_email,
            &self.by_username,
            &self.by_phone,
        )
            .transaction(|(users, email, username, phone)| -> TxResult<User, E> {
                let Some(bytes) = users.get(id.as_bytes())? else {
                    return abort(StoreError::NotFound);
                };
                let current: User = match decode(&bytes) {
                    Ok(u) => u,
                    Err(e) => return abort(e),
                };
                let mut next = current.clone();
                if let Err(e) = f(&mut next) {
                    return Err(ConflictableTransactionError::Abort(TxAbort::Rejected(e)));
                }
                reindex(
                    email,
                    Some(&current.email),
                    Some(&next.email),
                    id,
                    UniqueField::Email,
                )?;
                reindex(
                    username,
                    current.username.as_deref(),
                    next.username.as_deref(),
                    id,
                    UniqueField::Username,
                )?;
                reindex(
                    phone,
                    current.phone.as_deref(),
                    next.phone.as_deref(),
                    id,
                    UniqueField::Phone,
                )?;
                let encoded = match encode(&next) {
                    Ok(b) => b,
                    Err(e) => return abort(e),
                };
                users.insert(id.as_bytes().as_slice(), encoded)?;
                Ok(next)
            })
            .map_err(tx_err)?;
        self.flush().await?;
        Ok(updated)
    }

    pub(super) fn list_users(
        &self,
        query: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<User>, StoreError> {
        let q = query.map(str::to_lowercase);
        let mut out = Vec::new();
        let mut skipped = 0;
        for item in self.users.iter() {
            let (_, v) = item.map_err(engine)?;
            let u: User = decode(&v)?;
            let hit = match &q {
                None => true,
                Some(q) => {
                    u.email.contains(q.as_str())
                        || u.username
                            .as_deref()
                            .is_some_and(|n| n.contains(q.as_str()))
                        || u.full_name
                            .as_deref()
                            .is_some_and(|n| n.to_lowercase().contains(q.as_str()))
                }
            };
            if !hit {
                continue;
            }
            if skipped < offset {
                skipped += 1;
                continue;
            }
            out.push(u);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub(super) fn user_count(&self) -> usize {
        self.users.len()
    }

    pub(super) async fn put_code(&self, code: &Code) -> Result<(), StoreError> {
        self.codes
            .insert(code_key(&code.user_id, code.purpose), encode(code)?)
            .map_err(engine)?;
        self.flush().await
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
        let key = code_key(user, purpose);
        loop {
            let old = self.codes.get(&key).map_err(engine)?;
            let current: Option<Code> = old.as_ref().map(|b| decode(b)).transpose()?;
            let (change, result) = f(current.as_ref());
            let new = match change {
                CodeChange::Keep => return Ok(result),
                CodeChange::Put(c) => Some(encode(&c)?),
                CodeChange::Delete => None,
            };
            let swapped = self
                .codes
                .compare_and_swap(&key, old, new)
                .map_err(engine)?;
            if swapped.is_ok() {
                self.flush().await?;
                return Ok(result);
            }
            // Someone else changed the code in between: look again.
        }
    }

    pub(super) fn take_cooldown(
        &self,
        key: &str,
        now: OffsetDateTime,
        cooldown: std::time::Duration,
    ) -> Result<Result<(), std::time::Duration>, StoreError> {
        let now_ns = now.unix_timestamp_nanos();
        let until = now_ns.saturating_add(i128::try_from(cooldown.as_nanos()).unwrap_or(i128::MAX));
        loop {
            let old = self.cooldowns.get(key.as_bytes()).map_err(engine)?;
            if let Some(bytes) = &old {
                let prev = <[u8; 16]>::try_from(bytes.as_ref())
                    .map(i128::from_be_bytes)
                    .unwrap_or(0);
                if prev > now_ns {
                    let left = u64::try_from(prev - now_ns).unwrap_or(u64::MAX);
                    return Ok(Err(std::time::Duration::from_nanos(left)));
                }
            }
            let swapped = self
                .cooldowns
                .compare_and_swap(key.as_bytes(), old, Some(until.to_be_bytes().as_slice()))
                .map_err(engine)?;
            if swapped.is_ok() {
                return Ok(Ok(()));
            }
        }
    }

    pub(super) async fn update_lock<R, F>(&self, key: &str, f: F) -> Result<R, StoreError>
    where
        F: Fn(Option<&LockRecord>) -> (Option<LockRecord>, R),
    {
        loop {
            let old = self.locks.get(key.as_bytes()).map_err(engine)?;
            let current: Option<LockRecord> = old.as_ref().map(|b| decode(b)).transpose()?;
            let (change, result) = f(current.as_ref());
            let Some(new) = change else {
                return Ok(result);
            };
            let swapped = self
                .locks
                .compare_and_swap(key.as_bytes(), old, Some(encode(&new)?))
                .map_err(engine)?;
            if swapped.is_ok() {
                // Flushed as an account's failure is: the two cost the same time.
                self.flush().await?;
                return Ok(result);
            }
        }
    }

    /// See [`super::Store::prune`].
    pub(super) fn prune(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let mut gone = 0u64;
        let now_ns = now.unix_timestamp_nanos();
        for item in self.cooldowns.iter() {
            let (k, v) = item.map_err(engine)?;
            let until = <[u8; 16]>::try_from(v.as_ref())
                .map(i128::from_be_bytes)
                .unwrap_or(0);
            if until <= now_ns {
                self.cooldowns.remove(k).map_err(engine)?;
                gone += 1;
            }
        }
        for item in self.codes.iter() {
            let (k, v) = item.map_err(engine)?;
            let code: Code = decode(&v)?;
            if code.expires_at + super::CODE_KEEP < now {
                self.codes.remove(k).map_err(engine)?;
                gone += 1;
            }
        }
        for item in self.challenges.iter() {
            let (k, v) = item.map_err(engine)?;
            // Short-lived and single use: one that cannot be read is as good as expired.
            if decode::<Challenge>(&v).is_ok_and(|c| c.expires_at >= now) {
                continue;
            }
            self.challenges.remove(k).map_err(engine)?;
            gone += 1;
        }
        for item in self.locks.iter() {
            let (k, v) = item.map_err(engine)?;
            let lock: LockRecord = decode(&v)?;
            if lock
                .updated_at
                .is_none_or(|t| t + super::LOCK_RECORD_KEEP < now)
            {
                self.locks.remove(k).map_err(engine)?;
                gone += 1;
            }
        }
        Ok(gone)
    }

    pub(super) fn set_cooldown(
        &self,
        key: &str,
        now: OffsetDateTime,
        cooldown: std::time::Duration,
    ) -> Result<(), StoreError> {
        let until = now
            .unix_timestamp_nanos()
            .saturating_add(i128::try_from(cooldown.as_nanos()).unwrap_or(i128::MAX));
        self.cooldowns
            .insert(key.as_bytes(), until.to_be_bytes().as_slice())
            .map_err(engine)?;
        Ok(())
    }

    pub(super) async fn insert_session(&self, s: &Session) -> Result<(), StoreError> {
        let bytes = encode(s)?;
        (&self.sessions, &self.user_sessions)
            .transaction(|(sessions, index)| -> TxResult<(), ()> {
                sessions.insert(s.id.as_bytes(), bytes.as_slice())?;
                index.insert(session_index_key(&s.user_id, &s.id), &[])?;
                Ok(())
            })
            .map_err(|e| store_only(tx_err(e)))?;
        self.flush().await
    }

    pub(super) fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        self.sessions
            .get(id.as_bytes())
            .map_err(engine)?
            .map(|v| decode(&v))
            .transpose()
    }

    pub(super) fn sessions_of(&self, user: &UserId) -> Result<Vec<Session>, StoreError> {
        let mut out = Vec::new();
        for item in self.user_sessions.scan_prefix(user.as_bytes()) {
            let (k, _) = item.map_err(engine)?;
            let sid = String::from_utf8_lossy(k.get(16..).unwrap_or_default()).to_string();
            if let Some(s) = self.session(&sid)? {
                out.push(s);
            }
        }
        Ok(out)
    }

    pub(super) fn all_sessions(&self) -> Result<Vec<Session>, StoreError> {
        self.sessions
            .iter()
            .map(|item| decode(&item.map_err(engine)?.1))
            .collect()
    }

    pub(super) async fn update_session<E, F>(
        &self,
        id: &str,
        f: F,
    ) -> Result<Session, UpdateError<E>>
    where
        F: Fn(&mut Session) -> Result<(), E>,
    {
        loop {
            let Some(old) = self.sessions.get(id.as_bytes()).map_err(engine)? else {
                return Err(UpdateError::Store(StoreError::NotFound));
            };
            let mut next: Session = decode(&old)?;
            f(&mut next).map_err(UpdateError::Rejected)?;
            let swapped = self
                .sessions
                .compare_and_swap(id.as_bytes(), Some(old), Some(encode(&next)?))
                .map_err(engine)?;
            if swapped.is_ok() {
                self.flush().await?;
                return Ok(next);
            }
        }
    }

    pub(super) async fn delete_sessions(
        &self,
        user: &UserId,
        ids: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let deleted = (&self.sessions, &self.user_sessions)
            .transaction(|(sessions, index)| -> TxResult<Vec<String>, ()> {
                let mut deleted = Vec::new();
                for id in ids {
                    let key = session_index_key(user, id);
                    if index.remove(key)?.is_some() {
                        sessions.remove(id.as_bytes())?;
                        deleted.push(id.clone());
                    }
                }
                Ok(deleted)
            })
            .map_err(|e| store_only(tx_err(e)))?;
        self.flush().await?;
        Ok(deleted)
    }

    pub(super) async fn delete_sessions_of(
        &self,
        user: &UserId,
        except: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let ids: Vec<String> = self
            .user_sessions
            .scan_prefix(user.as_bytes())
            .keys()
            .filter_map(Result::ok)
            .map(|k| String::from_utf8_lossy(k.get(16..).unwrap_or_default()).to_string())
            .filter(|id| Some(id.as_str()) != except)
            .collect();
        self.delete_sessions(user, &ids).await
    }

    pub(super) async fn put_reset_token(
        &self,
        hash: &[u8],
        token: &ResetToken,
    ) -> Result<(), StoreError> {
        self.reset_tokens
            .insert(hash, encode(token)?)
            .map_err(engine)?;
        self.flush().await
    }

    pub(super) async fn take_reset_token(
        &self,
        hash: &[u8],
    ) -> Result<Option<ResetToken>, StoreError> {
        let taken = self.reset_tokens.remove(hash).map_err(engine)?;
        if taken.is_some() {
            self.flush().await?;
        }
        taken.map(|v| decode(&v)).transpose()
    }

    pub(super) async fn put_challenge(&self, id: &str, c: &Challenge) -> Result<(), StoreError> {
        self.challenges
            .insert(id.as_bytes(), encode(c)?)
            .map_err(engine)?;
        self.flush().await
    }

    pub(super) async fn take_challenge(&self, id: &str) -> Result<Option<Challenge>, StoreError> {
        let taken = self.challenges.remove(id.as_bytes()).map_err(engine)?;
        if taken.is_some() {
            // Flushed: after a crash, a used challenge does not come back.
            self.flush().await?;
        }
        taken.map(|v| decode(&v)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Store;
    use super::*;

    fn user(email: &str, username: Option<&str>, phone: Option<&str>) -> User {
        User {
            username: username.map(Into::into),
            phone: phone.map(Into::into),
            ..User::new(
                email.into(),
                false,
                vec!["customer".into()],
                OffsetDateTime::UNIX_EPOCH,
            )
        }
    }

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 8 << 20).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn newer_records_and_schemas_are_refused() {
        let (dir, s) = open();
        let mut u = user("n@x.test", None, None);
        u.v = RECORD_VERSION + 1;
        s.insert_user(&u).await.unwrap();
        assert!(matches!(
            s.user(&u.id).await,
            Err(StoreError::NewerRecord(_))
        ));
        let super::super::Backend::Sled(b) = &s.inner else {
            panic!("a sled store")
        };
        b.meta
            .insert(b"schema_version", &(SCHEMA_VERSION + 1).to_be_bytes())
            .unwrap();
        b.db.flush().unwrap();
        drop(s);
        // sled's flusher thread lets go of the directory lock a moment after the last handle.
        for _ in 0..100 {
            match Store::open(&dir.path().join("db"), 8 << 20) {
                Err(StoreError::NewerSchema { found, .. }) => {
                    assert_eq!(found, SCHEMA_VERSION + 1);
                    return;
                }
                Err(StoreError::Engine(e)) if e.contains("lock") => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                other => panic!("expected NewerSchema, got {other:?}"),
            }
        }
        panic!("the store stayed locked");
    }
}

//! Sessions (signed-in devices): sign-in turns a user into a session and a token pair;
//! refresh rotates the pair (with a grace window for parallel refreshes and revocation on
//! reuse); logout and revocation take effect on the next request through an in-memory view of
//! live sessions that the hot path reads without touching the disk.

use crate::clock::SharedClock;
use crate::config::TokensConfig;
use crate::secret::Secret;
use crate::store::{
    AuthFactor, RECORD_VERSION, RefreshState, Session, Store, StoreError, UpdateError, User, UserId,
};
use crate::tokens::{Issued, TokenError, Tokens, Verified};
use dashmap::DashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use time::OffsetDateTime;

/// Where a request comes from, as sessions record it.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub ip: IpAddr,
    pub user_agent: String,
}

/// What a sign-in or refresh hands the client.
#[derive(Debug)]
pub struct TokenPair {
    pub access_token: Secret,
    pub refresh_token: Secret,
    pub expires_in: u64,
    pub refresh_expires_in: u64,
    pub session_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("not signed in")]
    Unauthenticated,
    #[error("token expired")]
    Expired,
    /// A rotated refresh token came back after the grace window: the session is revoked.
    #[error("refresh token reused; session revoked")]
    Reused,
    #[error("account blocked")]
    Blocked,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Token(TokenError),
}

impl From<TokenError> for SessionError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Invalid => SessionError::Unauthenticated,
            TokenError::Expired => SessionError::Expired,
            other => SessionError::Token(other),
        }
    }
}

#[derive(Debug)]
struct Live {
    user_id: UserId,
    expires_at: i64,
    /// Unix time of the last `last_seen_at` write, to throttle them.
    last_seen_written: AtomicI64,
}

/// `last_seen_at` is written at most this often per session.
const LAST_SEEN_EVERY: i64 = 300;

#[derive(Debug)]
pub struct Sessions {
    store: Store,
    tokens: Arc<Tokens>,
    live: DashMap<String, Live>,
    clock: SharedClock,
    session_ttl: Duration,
    grace: Duration,
    /// Sessions one account may have at once (the oldest end first).
    max_sessions: usize,
    /// Where this instance is in the store's session events (a shared store only).
    feed_cursor: AtomicI64,
    /// Sessions known to have ended, or not to exist: a replayed token costs no second store
    /// lookup, and an event re-read from the feed cannot bring an ended session back.
    ended: quick_cache::sync::Cache<String, ()>,
    /// Last-seen writes in flight. Past this many, a touch is skipped (last seen is
    /// approximate anyway): a burst of sessions coming back at once cannot pile up tasks
    /// and store writes without bound.
    touches: Arc<tokio::sync::Semaphore>,
}

/// See [`Sessions::touches`].
const MAX_TOUCHES_IN_FLIGHT: usize = 64;

/// How far back each poll of the session events looks again, for transactions that commit
/// after a later one (a little more than the statement timeout bounds).
const FEED_OVERLAP: Duration = Duration::from_secs(10);

/// Device and OS names for the sessions list, from the User-Agent (woothee).
fn device_of(ua: &str) -> (String, String) {
    match woothee::parser::Parser::new().parse(ua) {
        Some(r) if r.name != woothee::woothee::VALUE_UNKNOWN => {
            let device = match r.version {
                "" | woothee::woothee::VALUE_UNKNOWN => r.name.to_string(),
                v => format!("{} {v}", r.name),
            };
            let os = match r.os_version.as_ref() {
                "" | woothee::woothee::VALUE_UNKNOWN => r.os.to_string(),
                v => format!("{} {v}", r.os),
            };
            (
                device,
                if r.os == woothee::woothee::VALUE_UNKNOWN {
                    String::new()
                } else {
                    os
                },
            )
        }
        // Not a browser (curl, Postman, an SDK): its product token says the most.
        _ => (
            ua.split_whitespace()
                .next()
                .unwrap_or("")
                .chars()
                .take(64)
                .collect(),
            String::new(),
        ),
    }
}

enum RefreshRefusal {
    Reused,
    Expired,
    Replay(Vec<u8>),
    /// Not a token of this session (it changed between the first look and the update).
    NotOurs,
}

impl Sessions {
    /// Loads the live view from the store.
    pub async fn new(
        store: Store,
        tokens: Arc<Tokens>,
        clock: SharedClock,
        cfg: &TokensConfig,
    ) -> Result<Self, StoreError> {
        let live = DashMap::new();
        // The cursor first: a session made while the others load is then in the feed.
        let feed_cursor = AtomicI64::new(store.session_events_head().await?);
        for s in store.all_sessions().await? {
            live.insert(
                s.id.clone(),
                Live {
                    user_id: s.user_id,
                    expires_at: s.expires_at.unix_timestamp(),
                    last_seen_written: AtomicI64::new(s.last_seen_at.unix_timestamp()),
                },
            );
        }
        Ok(Sessions {
            store,
            tokens,
            live,
            clock,
            session_ttl: cfg.session_ttl,
            grace: cfg.refresh_reuse_grace,
            max_sessions: cfg.max_sessions_per_account.get(),
            feed_cursor,
            ended: quick_cache::sync::Cache::new(100_000),
            touches: Arc::new(tokio::sync::Semaphore::new(MAX_TOUCHES_IN_FLIGHT)),
        })
    }

    /// Applies the sessions other instances made or ended (a shared store only): called
    /// every few hundred milliseconds, so a sign-out anywhere is refused everywhere within a
    /// second, with no store query on the request path.
    pub async fn follow(&self) -> Result<usize, StoreError> {
        if !self.store.is_shared() {
            return Ok(0);
        }
        let cursor = self.feed_cursor.load(Ordering::Relaxed);
        let (events, next, gap) = self.store.session_events(cursor, FEED_OVERLAP).await?;
        if gap {
            // Cut off for longer than the events are kept: start again from the sessions.
            tracing::warn!("session events were missed; reloading every session");
            return self.resync().await;
        }
        let now = self.clock.unix_now();
        for e in &events {
            if e.live {
                if e.expires_at > now && self.ended.get(&e.session_id).is_none() {
                    self.live
                        .entry(e.session_id.clone())
                        .or_insert_with(|| Live {
                            user_id: e.user_id,
                            expires_at: e.expires_at,
                            last_seen_written: AtomicI64::new(now),
                        });
                }
            } else {
                self.ended.insert(e.session_id.clone(), ());
                self.live.remove(&e.session_id);
            }
        }
        self.feed_cursor.store(next, Ordering::Relaxed);
        Ok(events.len())
    }

    /// Rebuilds the live view from the store (after missing session events).
    async fn resync(&self) -> Result<usize, StoreError> {
        let head = self.store.session_events_head().await?;
        let sessions = self.store.all_sessions().await?;
        let ids: std::collections::HashSet<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
        let gone: Vec<String> = self
            .live
            .iter()
            .filter(|e| !ids.contains(e.key().as_str()))
            .map(|e| e.key().clone())
            .collect();
        for id in &gone {
            self.ended.insert(id.clone(), ());
            self.live.remove(id);
        }
        for s in &sessions {
            self.live.entry(s.id.clone()).or_insert_with(|| Live {
                user_id: s.user_id,
                expires_at: s.expires_at.unix_timestamp(),
                last_seen_written: AtomicI64::new(s.last_seen_at.unix_timestamp()),
            });
        }
        self.feed_cursor.store(head, Ordering::Relaxed);
        Ok(gone.len())
    }

    /// [`Sessions::authenticate`], and on a shared store, a session this instance has not
    /// heard of yet (made by another instance a moment ago) is looked up once in the store.
    pub async fn authenticate_shared(&self, token: &str) -> Result<Arc<Verified>, SessionError> {
        match self.authenticate(token) {
            // Boxed: the store query's future is kilobytes, and this one is part of every
            // authenticated request's.
            Err(SessionError::Unauthenticated) if self.store.is_shared() => {
                Box::pin(self.look_up_unknown_session(token)).await
            }
            other => other,
        }
    }

    /// A valid token whose session this instance has not seen: made by another instance
    /// since the last `follow`, or ended long ago.
    async fn look_up_unknown_session(&self, token: &str) -> Result<Arc<Verified>, SessionError> {
        let verified = self.tokens.verify_access(token)?;
        let sid = &verified.identity.session_id;
        if self.live.contains_key(sid) || self.ended.get(sid).is_some() {
            return Err(SessionError::Unauthenticated);
        }
        let now = self.clock.now();
        // Bounded: a slow database turns this rare lookup into a refusal, not a stalled request.
        let found = tokio::time::timeout(Duration::from_millis(500), self.store.session(sid))
            .await
            .map_err(|_| SessionError::Unauthenticated)??;
        match found {
            Some(s) if s.expires_at > now && s.user_id.to_string() == verified.identity.user_id => {
                if self.ended.get(sid).is_none() {
                    self.live.entry(s.id.clone()).or_insert_with(|| Live {
                        user_id: s.user_id,
                        expires_at: s.expires_at.unix_timestamp(),
                        last_seen_written: AtomicI64::new(s.last_seen_at.unix_timestamp()),
                    });
                }
                self.authenticate(token)
            }
            _ => {
                self.ended.insert(sid.clone(), ());
                Err(SessionError::Unauthenticated)
            }
        }
    }

    pub fn tokens(&self) -> &Arc<Tokens> {
        &self.tokens
    }

    /// Whether session `sid` is live here now (signed out, revoked or expired: not).
    pub fn is_live(&self, sid: &str) -> bool {
        let now = self.clock.unix_now();
        self.live.get(sid).is_some_and(|l| l.expires_at > now)
    }

    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// The one function every successful sign-in (password, code, second factor) goes
    /// through; `factors` are how it was proved, which every token of the session then says.
    pub async fn sign_in(
        &self,
        user: &User,
        client: &ClientInfo,
        factors: &[AuthFactor],
    ) -> Result<TokenPair, SessionError> {
        let now = self.clock.now();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let refresh = self.tokens.new_refresh(&id)?;
        let refresh_expires = (now + self.tokens.refresh_ttl()).min(now + self.session_ttl);
        let (device, os) = device_of(&client.user_agent);
        let session = Session {
            v: RECORD_VERSION,
            id: id.clone(),
            user_id: user.id,
            created_at: now,
            last_seen_at: now,
            expires_at: now + self.session_ttl,
            ip: client.ip.to_string(),
            user_agent: client.user_agent.chars().take(512).collect(),
            device,
            os,
            refresh: Some(RefreshState {
                current_hash: Tokens::hash_refresh(refresh.expose()),
                current_expires_at: refresh_expires,
                previous_hash: None,
                rotated_at: None,
                next_sealed: None,
            }),
            factors: factors.to_vec(),
        };
        self.store.insert_session(&session).await?;
        self.live.insert(
            id.clone(),
            Live {
                user_id: user.id,
                expires_at: session.expires_at.unix_timestamp(),
                last_seen_written: AtomicI64::new(now.unix_timestamp()),
            },
        );
        // The sign-in verified `user`; if its password, block or roles changed meanwhile, or
        // its sessions were all ended (a reset or a "sign out everywhere" racing with this
        // sign-in: each bumps the version), the revocation may have missed this session:
        // undo it.
        match self.store.user(&user.id).await? {
            Some(fresh) if fresh.security_version == user.security_version && !fresh.blocked => {}
            _ => {
                self.revoke_ids(&user.id, std::slice::from_ref(&id)).await?;
                return Err(SessionError::Unauthenticated);
            }
        }
        self.end_oldest_beyond_cap(&user.id).await?;
        self.pair(user, &session, refresh, refresh_expires)
    }

    /// Ends the oldest sessions of `user` past `tokens.max_sessions_per_account`: a client that
    /// signs in over and over (a script, a leaked password) cannot grow the store without
    /// bound, and the devices list stays readable.
    async fn end_oldest_beyond_cap(&self, user: &UserId) -> Result<(), StoreError> {
        let mut all = self.store.sessions_of(user).await?;
        if all.len() <= self.max_sessions {
            return Ok(());
        }
        all.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        let oldest: Vec<String> = all
            .get(self.max_sessions..)
            .unwrap_or_default()
            .iter()
            .map(|s| s.id.clone())
            .collect();
        tracing::info!(target: "audit", event = "sessions_capped", user_id = %user, count = oldest.len(), "oldest sessions ended: too many at once");
        self.revoke_ids(user, &oldest).await.map(drop)
    }

    fn pair(
        &self,
        user: &User,
        s: &Session,
        refresh: Secret,
        refresh_expires: OffsetDateTime,
    ) -> Result<TokenPair, SessionError> {
        let now = self.clock.now();
        Ok(TokenPair {
            access_token: Secret::new(self.tokens.issue_access(user, &s.id, &s.factors)?),
            refresh_token: refresh,
            expires_in: self.tokens.access_ttl().as_secs(),
            refresh_expires_in: u64::try_from((refresh_expires - now).whole_seconds()).unwrap_or(0),
            session_id: s.id.clone(),
        })
    }

    /// The hot-path check: a valid access token whose session is live. No disk access.
    pub fn authenticate(&self, token: &str) -> Result<Arc<Verified>, SessionError> {
        let verified = self.tokens.verify_access(token)?;
        let now = self.clock.unix_now();
        match self.live.get(&verified.identity.session_id) {
            Some(l) if l.expires_at > now && l.user_id == verified.user_uuid => {
                // Throttled last-seen write, off the request path.
                let last = l.last_seen_written.load(Ordering::Relaxed);
                if now - last >= LAST_SEEN_EVERY
                    && l.last_seen_written
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    self.touch_later(verified.identity.session_id.clone());
                }
                Ok(verified)
            }
            _ => Err(SessionError::Unauthenticated),
        }
    }

    fn touch_later(&self, sid: String) {
        let Ok(permit) = self.touches.clone().try_acquire_owned() else {
            tracing::debug!("last-seen write skipped: {MAX_TOUCHES_IN_FLIGHT} in flight");
            return;
        };
        let store = self.store.clone();
        let now = self.clock.now();
        tokio::spawn(async move {
            let _ = store
                .update_session(&sid, |s| {
                    s.last_seen_at = now;
                    Ok::<(), ()>(())
                })
                .await;
            drop(permit);
        });
    }

    /// Rotates a refresh token. Within the grace window after a rotation, the rotated-away
    /// token gets the same new refresh token (parallel refreshes from one client); after it,
    /// presenting it again revokes the whole session.
    ///
    /// Only a token issued for the session can end it: a made-up one that merely names the
    /// session (whose id the upstream sees) is refused like any unknown token, and changes
    /// nothing.
    pub async fn refresh(&self, presented: &Secret) -> Result<(TokenPair, User), SessionError> {
        let sid = Tokens::refresh_session(presented.expose())
            .ok_or(SessionError::Unauthenticated)?
            .to_string();
        let issued = self.tokens.issued(presented.expose());
        if issued == Issued::No {
            return Err(SessionError::Unauthenticated);
        }
        let hash = Tokens::hash_refresh(presented.expose());
        let now = self.clock.now();
        let session = self
            .store
            .session(&sid)
            .await?
            .ok_or(SessionError::Unauthenticated)?;
        // An old-format token carries no MAC: it is ours only if the session knows its hash.
        let known = session.refresh.as_ref().is_some_and(|r| {
            crate::secret::ct_eq(&r.current_hash, &hash)
                || r.previous_hash
                    .as_ref()
                    .is_some_and(|p| crate::secret::ct_eq(p, &hash))
        });
        if issued == Issued::Unknown && !known {
            return Err(SessionError::Unauthenticated);
        }
        if session.expires_at <= now {
            self.revoke_ids(&session.user_id, &[sid]).await?;
            return Err(SessionError::Expired);
        }
        let user = self
            .store
            .user(&session.user_id)
            .await?
            .ok_or(SessionError::Unauthenticated)?;
        if user.blocked {
            return Err(SessionError::Blocked);
        }
        // Made outside the update so a retried update seals the same token.
        let next = self.tokens.new_refresh(&sid)?;
        let next_hash = Tokens::hash_refresh(next.expose());
        let sealed = self.tokens.seal(&next)?;
        let next_expires = (now + self.tokens.refresh_ttl()).min(session.expires_at);
        let grace = self.grace;
        let result = self
            .store
            .update_session(&sid, |s| {
                let Some(r) = &s.refresh else {
                    return Err(RefreshRefusal::Reused);
                };
                if crate::secret::ct_eq(&r.current_hash, &hash) {
                    if r.current_expires_at <= now {
                        return Err(RefreshRefusal::Expired);
                    }
                    s.refresh = Some(RefreshState {
                        current_hash: next_hash.clone(),
                        current_expires_at: next_expires,
                        previous_hash: Some(hash.clone()),
                        rotated_at: Some(now),
                        next_sealed: Some(sealed.clone()),
                    });
                    s.last_seen_at = now;
                    return Ok(());
                }
                let in_grace = r.rotated_at.is_some_and(|t| now < t + grace);
                let previous = r
                    .previous_hash
                    .as_ref()
                    .is_some_and(|p| crate::secret::ct_eq(p, &hash));
                match &r.next_sealed {
                    Some(sealed_next) if in_grace && previous => {
                        Err(RefreshRefusal::Replay(sealed_next.clone()))
                    }
                    // Issued for this session (its MAC says so, or it is the one rotated
                    // away) and not the current one: a stolen copy is in use.
                    _ if issued == Issued::Yes || previous => Err(RefreshRefusal::Reused),
                    _ => Err(RefreshRefusal::NotOurs),
                }
            })
            .await;
        match result {
            Ok(s) => Ok((self.pair(&user, &s, next, next_expires)?, user)),
            Err(UpdateError::Rejected(RefreshRefusal::Replay(sealed))) => {
                let same = self
                    .tokens
                    .unseal(&sealed)
                    .ok_or(SessionError::Unauthenticated)?;
                let s = self
                    .store
                    .session(&sid)
                    .await?
                    .ok_or(SessionError::Unauthenticated)?;
                let expires = s
                    .refresh
                    .as_ref()
                    .map(|r| r.current_expires_at)
                    .unwrap_or(now);
                Ok((self.pair(&user, &s, same, expires)?, user))
            }
            Err(UpdateError::Rejected(RefreshRefusal::Expired)) => {
                self.revoke_ids(&user.id, &[sid]).await?;
                Err(SessionError::Expired)
            }
            Err(UpdateError::Rejected(RefreshRefusal::Reused)) => {
                tracing::warn!(target: "audit", event = "refresh_reuse", user_id = %user.id, session_id = %sid, "refresh token reused after rotation; session revoked");
                self.revoke_ids(&user.id, &[sid]).await?;
                Err(SessionError::Reused)
            }
            Err(UpdateError::Rejected(RefreshRefusal::NotOurs)) => {
                Err(SessionError::Unauthenticated)
            }
            Err(UpdateError::Store(StoreError::NotFound)) => Err(SessionError::Unauthenticated),
            Err(UpdateError::Store(e)) => Err(e.into()),
        }
    }

    /// Steps session `sid` of `user` up with `factor` (a second factor shown while signed
    /// in): the session says so from now on, and its refresh token is rotated, so the pair
    /// handed back is the only one that carries the new assurance. Unlike a refresh, no
    /// token rotated away gets the new pair back: whoever holds an older one (a thief who
    /// refreshed a stolen copy, say) ends the session by presenting it.
    pub async fn elevate(
        &self,
        user: &User,
        sid: &str,
        factor: AuthFactor,
    ) -> Result<TokenPair, SessionError> {
        let now = self.clock.now();
        let next = self.tokens.new_refresh(sid)?;
        let next_hash = Tokens::hash_refresh(next.expose());
        let result = self
            .store
            .update_session(sid, |s| {
                if s.user_id != user.id || s.expires_at <= now {
                    return Err(());
                }
                let Some(r) = &s.refresh else {
                    return Err(());
                };
                // An idle session whose refresh token has lapsed is not revived.
                if r.current_expires_at <= now {
                    return Err(());
                }
                let expires = r.current_expires_at.min(s.expires_at);
                s.refresh = Some(RefreshState {
                    current_hash: next_hash.clone(),
                    current_expires_at: expires,
                    previous_hash: Some(r.current_hash.clone()),
                    rotated_at: Some(now),
                    next_sealed: None,
                });
                // A session made before factors were kept was proved by one: a password.
                if s.factors.is_empty() {
                    s.factors.push(AuthFactor::Password);
                }
                if !s.factors.contains(&factor) {
                    s.factors.push(factor);
                }
                Ok(())
            })
            .await;
        match result {
            Ok(s) => {
                let expires = s.refresh.as_ref().map_or(now, |r| r.current_expires_at);
                self.pair(user, &s, next, expires)
            }
            Err(UpdateError::Rejected(())) | Err(UpdateError::Store(StoreError::NotFound)) => {
                Err(SessionError::Unauthenticated)
            }
            Err(UpdateError::Store(e)) => Err(e.into()),
        }
    }

    /// The account and session a refresh token belongs to, without rotating it: for a
    /// sign-out whose access token has already expired. Only the current (or just-rotated)
    /// token counts.
    pub async fn refresh_owner(
        &self,
        presented: &Secret,
    ) -> Result<Option<(UserId, String)>, SessionError> {
        let Some(sid) = Tokens::refresh_session(presented.expose()) else {
            return Ok(None);
        };
        let Some(session) = self.store.session(sid).await? else {
            return Ok(None);
        };
        let hash = Tokens::hash_refresh(presented.expose());
        let ours = session.refresh.as_ref().is_some_and(|r| {
            crate::secret::ct_eq(&r.current_hash, &hash)
                || r.previous_hash
                    .as_ref()
                    .is_some_and(|p| crate::secret::ct_eq(p, &hash))
        });
        Ok(ours.then_some((session.user_id, session.id)))
    }

    /// The user's sessions, newest first, expired ones left out.
    pub async fn list(&self, user: &UserId) -> Result<Vec<Session>, StoreError> {
        let now = self.clock.now();
        let mut list: Vec<Session> = self
            .store
            .sessions_of(user)
            .await?
            .into_iter()
            .filter(|s| s.expires_at > now)
            .collect();
        list.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        Ok(list)
    }

    /// Revokes the given sessions of `user` (ids of other users' sessions are ignored).
    pub async fn revoke_ids(
        &self,
        user: &UserId,
        ids: &[String],
    ) -> Result<Vec<String>, StoreError> {
        // Out of the live view first: a request racing with the store write is refused.
        for id in ids {
            if self.live.get(id).is_some_and(|l| l.user_id == *user) {
                self.live.remove(id);
            }
        }
        let deleted = self.store.delete_sessions(user, ids).await?;
        for id in &deleted {
            self.ended.insert(id.clone(), ());
        }
        if !deleted.is_empty() {
            tracing::info!(target: "audit", event = "sessions_revoked", user_id = %user, count = deleted.len(), "sessions revoked");
        }
        Ok(deleted)
    }

    /// Revokes every session of `user` except `except`. The account's security version is
    /// bumped first, so a sign-in that is under way (its password checked, its session not
    /// yet written) undoes its own session when it looks again (see [`Sessions::sign_in`]).
    pub async fn revoke_all(
        &self,
        user: &UserId,
        except: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        match self
            .store
            .update_user(user, |u| {
                u.security_version += 1;
                Ok::<(), std::convert::Infallible>(())
            })
            .await
        {
            Ok(_) | Err(UpdateError::Store(StoreError::NotFound)) => {}
            Err(UpdateError::Store(e)) => return Err(e),
            Err(UpdateError::Rejected(never)) => match never {},
        }
        self.live
            .retain(|id, l| l.user_id != *user || Some(id.as_str()) == except);
        let deleted = self.store.delete_sessions_of(user, except).await?;
        for id in &deleted {
            self.ended.insert(id.clone(), ());
        }
        if !deleted.is_empty() {
            tracing::info!(target: "audit", event = "sessions_revoked", user_id = %user, count = deleted.len(), "sessions revoked");
        }
        Ok(deleted)
    }

    /// Removes sessions past their absolute lifetime (run periodically).
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let now = self.clock.unix_now();
        let expired: Vec<(String, UserId)> = self
            .live
            .iter()
            .filter(|e| e.expires_at <= now)
            .map(|e| (e.key().clone(), e.user_id))
            .collect();
        for (id, user) in &expired {
            self.revoke_ids(user, std::slice::from_ref(id)).await?;
        }
        Ok(expired.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_from_user_agents() {
        let (d, os) = device_of(
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
        );
        assert!(d.starts_with("Chrome"), "{d}");
        assert!(os.starts_with("Linux"), "{os}");
        let (d, os) = device_of("PostmanRuntime/7.28.2");
        assert_eq!(d, "PostmanRuntime/7.28.2");
        assert_eq!(os, "");
        assert_eq!(device_of("").0, "");
    }
}

//! Sessions, the session event feed other instances follow, pruning, and reset tokens.

use super::*;

impl PgStore {
    pub(in crate::store) async fn insert_session(&self, s: &Session) -> Result<(), StoreError> {
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
    pub(in crate::store) async fn session_events(
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
    pub(in crate::store) async fn session_events_head(&self) -> Result<i64, StoreError> {
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
    pub(in crate::store) async fn prune(
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
                &[&unix_ms(now - crate::store::CODE_KEEP)],
            )
            .await
            .map_err(db)?;
        let locks = c
            .execute(
                "DELETE FROM authgate_locks WHERE updated_ms < $1",
                &[&unix_ms(now - crate::store::LOCK_RECORD_KEEP)],
            )
            .await
            .map_err(db)?;
        let challenges = c
            .execute(
                "DELETE FROM authgate_challenges WHERE expires_ms < $1",
                &[&unix_ms(now)],
            )
            .await
            .map_err(db)?;
        Ok(events + cooldowns + codes + locks + challenges)
    }

    pub(in crate::store) async fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt("SELECT record FROM authgate_sessions WHERE id = $1", &[&id])
            .await
            .map_err(db)?;
        row.map(|r| decode(r.get::<_, &[u8]>(0))).transpose()
    }

    pub(in crate::store) async fn sessions_of(
        &self,
        user: &UserId,
    ) -> Result<Vec<Session>, StoreError> {
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

    pub(in crate::store) async fn all_sessions(&self) -> Result<Vec<Session>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT record FROM authgate_sessions", &[])
            .await
            .map_err(db)?;
        rows.iter().map(|r| decode(r.get::<_, &[u8]>(0))).collect()
    }

    pub(in crate::store) async fn update_session<E, F>(
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

    pub(in crate::store) async fn delete_sessions(
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

    pub(in crate::store) async fn delete_sessions_of(
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

    pub(in crate::store) async fn put_reset_token(
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

    pub(in crate::store) async fn take_reset_token(
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

    pub(in crate::store) async fn put_challenge(
        &self,
        id: &str,
        ch: &Challenge,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO authgate_challenges (id, record, expires_ms) VALUES ($1, $2, $3)",
            &[&id, &encode(ch)?, &unix_ms(ch.expires_at)],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    pub(in crate::store) async fn take_challenge(
        &self,
        id: &str,
    ) -> Result<Option<Challenge>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "DELETE FROM authgate_challenges WHERE id = $1 RETURNING record",
                &[&id],
            )
            .await
            .map_err(db)?;
        row.map(|r| decode(r.get::<_, &[u8]>(0))).transpose()
    }
}

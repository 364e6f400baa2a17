//! One-time codes, lock counters and resend cooldowns, each updated under a row lock.

use super::*;

impl PgStore {
    pub(in crate::store) async fn put_code(&self, code: &Code) -> Result<(), StoreError> {
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

    pub(in crate::store) async fn update_code<R, F>(
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

    pub(in crate::store) async fn update_lock<R, F>(&self, key: &str, f: F) -> Result<R, StoreError>
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

    pub(in crate::store) async fn take_cooldown(
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

    pub(in crate::store) async fn set_cooldown(
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
}

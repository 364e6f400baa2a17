//! Accounts: insert, look up, update under a row lock, list.

use super::*;

impl PgStore {
    pub(in crate::store) async fn insert_user(&self, user: &User) -> Result<(), StoreError> {
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

    pub(in crate::store) async fn import_users(&self, users: &[User]) -> Result<(), StoreError> {
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

    pub(in crate::store) async fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        self.one_user(
            "SELECT record FROM authgate_users WHERE id = $1",
            &id.to_string(),
        )
        .await
    }

    pub(in crate::store) async fn user_by(
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

    pub(in crate::store) async fn update_user<E, F>(
        &self,
        id: &UserId,
        f: F,
    ) -> Result<User, UpdateError<E>>
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

    pub(in crate::store) async fn list_users(
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

    pub(in crate::store) async fn user_count(&self) -> Result<usize, StoreError> {
        let c = self.client().await?;
        let n: i64 = c
            .query_one("SELECT count(*) FROM authgate_users", &[])
            .await
            .map_err(db)?
            .get(0);
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

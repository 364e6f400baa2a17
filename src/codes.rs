//! One-time codes: drawn from a CSPRNG, stored only as an HMAC bound to the account and the
//! purpose, single use, expiring, and dead after a number of wrong tries.

use crate::config::OtpConfig;
use crate::secret::{KeyBytes, Secret, ct_eq};
use crate::store::{
    AuthFactor, Code, CodeChange, Purpose, RECORD_VERSION, Store, StoreError, UserId,
};
use aws_lc_rs::hmac;
use time::OffsetDateTime;

/// What checking a code found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeOutcome {
    /// Right, and now used up.
    Valid,
    /// Wrong; the code stays alive with fewer tries left.
    Wrong,
    /// Wrong, and that was the last try: the code is dead.
    Exhausted,
    /// Past its lifetime (and now removed).
    Expired,
    /// No live code for this account and purpose.
    Missing,
}

#[derive(Debug, Clone)]
pub struct Codes {
    key: hmac::Key,
    length: usize,
    ttl: std::time::Duration,
    max_attempts: u32,
}

impl Codes {
    pub fn new(key: &KeyBytes, cfg: &OtpConfig) -> Self {
        Codes {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key.0),
            length: cfg.length,
            ttl: cfg.ttl,
            max_attempts: cfg.max_attempts,
        }
    }

    pub fn ttl(&self) -> std::time::Duration {
        self.ttl
    }

    /// Wrong answers a code takes before it dies.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// A fresh code of `length` decimal digits, each uniform from the thread CSPRNG.
    pub fn generate(&self) -> Secret {
        let code: String = (0..self.length)
            .map(|_| char::from(b'0' + rand::random_range(0..10u8)))
            .collect();
        Secret::new(code)
    }

    /// The keyed hash that is stored: a code for one account and purpose hashes differently
    /// from the same digits for another. `bound` ties it to one value more (the new address
    /// of an email change), so that the value need not be stored: a code sent for one
    /// address does not confirm another. Empty for the other purposes, whose hashes it leaves
    /// as they were.
    fn digest(&self, user: &UserId, purpose: Purpose, bound: &str, code: &str) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(b"authgate-otp-v1");
        ctx.update(&[purpose.tag()]);
        ctx.update(user.as_bytes());
        ctx.update(code.as_bytes());
        if !bound.is_empty() {
            // Codes are digits and addresses have no NUL: the separator keeps the two apart.
            ctx.update(&[0]);
            ctx.update(bound.as_bytes());
        }
        ctx.sign().as_ref().to_vec()
    }

    /// Makes a new code for (`user`, `purpose`), replacing any earlier one.
    pub async fn issue(
        &self,
        store: &Store,
        user: &UserId,
        purpose: Purpose,
        now: OffsetDateTime,
    ) -> Result<(Secret, OffsetDateTime), StoreError> {
        self.issue_bound(store, user, purpose, "", now).await
    }

    /// [`Codes::issue`], the code also bound to `bound` (see [`Codes::digest`]).
    pub async fn issue_bound(
        &self,
        store: &Store,
        user: &UserId,
        purpose: Purpose,
        bound: &str,
        now: OffsetDateTime,
    ) -> Result<(Secret, OffsetDateTime), StoreError> {
        let code = self.generate();
        let expires_at = now + self.ttl;
        let record = Code {
            v: RECORD_VERSION,
            user_id: *user,
            purpose,
            hash: self.digest(user, purpose, bound, code.expose()),
            created_at: now,
            expires_at,
            attempts: 0,
            first_factor: None,
        };
        store.put_code(&record).await?;
        Ok((code, expires_at))
    }

    /// Ends `user`'s live code for `purpose`, if any.
    pub async fn withdraw(
        &self,
        store: &Store,
        user: &UserId,
        purpose: Purpose,
    ) -> Result<(), StoreError> {
        store
            .update_code(user, purpose, |stored| match stored {
                None => (CodeChange::Keep, ()),
                Some(_) => (CodeChange::Delete, ()),
            })
            .await
    }

    /// Whether `user` has a code for `purpose` that could still be used: not used, not
    /// expired, not out of tries.
    pub async fn is_live(
        &self,
        store: &Store,
        user: &UserId,
        purpose: Purpose,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let max = self.max_attempts;
        store
            .update_code(user, purpose, |stored| {
                let live = stored.is_some_and(|c| c.expires_at > now && c.attempts < max);
                (CodeChange::Keep, live)
            })
            .await
    }

    /// Checks `code` atomically: a right code is consumed, a wrong one spends a try.
    pub async fn check(
        &self,
        store: &Store,
        user: &UserId,
        purpose: Purpose,
        code: &str,
        now: OffsetDateTime,
    ) -> Result<CodeOutcome, StoreError> {
        self.check_bound(store, user, purpose, "", code, now, true)
            .await
    }

    /// [`Codes::check`] for a code issued with [`Codes::issue_bound`]: a different `bound`
    /// is a wrong code (and spends a try). With `spend` false, a wrong guess spends none of
    /// the code's tries and a code out of tries still takes the right one (a known device's
    /// guesses, counted on that device instead: strangers who ran the code out of tries have
    /// not killed it for its owner).
    #[allow(clippy::too_many_arguments)]
    pub async fn check_bound(
        &self,
        store: &Store,
        user: &UserId,
        purpose: Purpose,
        bound: &str,
        code: &str,
        now: OffsetDateTime,
        spend: bool,
    ) -> Result<CodeOutcome, StoreError> {
        // Hash outside the store's retry loop; only the comparison depends on the record.
        let candidate = self.digest(user, purpose, bound, code.trim());
        let max = self.max_attempts;
        store
            .update_code(user, purpose, |stored| match stored {
                None => (CodeChange::Keep, CodeOutcome::Missing),
                Some(c) if c.expires_at <= now => (CodeChange::Delete, CodeOutcome::Expired),
                Some(c) if spend && c.attempts >= max => (CodeChange::Keep, CodeOutcome::Exhausted),
                Some(c) if ct_eq(&c.hash, &candidate) => (CodeChange::Delete, CodeOutcome::Valid),
                Some(_) if !spend => (CodeChange::Keep, CodeOutcome::Wrong),
                Some(c) => {
                    let mut next = c.clone();
                    next.attempts += 1;
                    let outcome = if next.attempts >= max {
                        CodeOutcome::Exhausted
                    } else {
                        CodeOutcome::Wrong
                    };
                    (CodeChange::Put(next), outcome)
                }
            })
            .await
    }
}

/// What a second step's token found (see [`Codes::second_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    /// Live, after this first factor.
    Live(AuthFactor),
    /// Unknown, used, expired or out of tries.
    Dead,
}

impl Codes {
    /// A second step for `user`, after `first`: a random token, kept as a code's keyed hash,
    /// single use, dead after `ttl` or `max_attempts` wrong second factors. A new one
    /// replaces the account's earlier one.
    pub async fn issue_second_step(
        &self,
        store: &Store,
        user: &UserId,
        first: AuthFactor,
        ttl: std::time::Duration,
        now: OffsetDateTime,
    ) -> Result<Secret, StoreError> {
        let mut raw = [0u8; 32];
        rand::fill(&mut raw);
        let token = Secret::new(base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            raw,
        ));
        let record = Code {
            v: RECORD_VERSION,
            user_id: *user,
            purpose: Purpose::SecondStep,
            hash: self.digest(user, Purpose::SecondStep, "", token.expose()),
            created_at: now,
            expires_at: now + ttl,
            attempts: 0,
            first_factor: Some(first),
        };
        store.put_code(&record).await?;
        Ok(token)
    }

    /// Whether `token` is `user`'s live second step. With `end`, a live one is used up at
    /// once (atomically: of two requests with the same token, one gets `Live`); with `miss`,
    /// it spends a try instead (and dies at the last).
    pub async fn second_step(
        &self,
        store: &Store,
        user: &UserId,
        token: &str,
        now: OffsetDateTime,
        then: StepUse,
    ) -> Result<StepState, StoreError> {
        let candidate = self.digest(user, Purpose::SecondStep, "", token);
        let max = self.max_attempts;
        store
            .update_code(user, Purpose::SecondStep, |stored| match stored {
                Some(c) if !ct_eq(&c.hash, &candidate) => (CodeChange::Keep, StepState::Dead),
                Some(c) if c.expires_at <= now || c.attempts >= max => {
                    (CodeChange::Delete, StepState::Dead)
                }
                Some(c) => {
                    let Some(first) = c.first_factor else {
                        return (CodeChange::Delete, StepState::Dead);
                    };
                    let change = match then {
                        StepUse::Look => CodeChange::Keep,
                        StepUse::End => CodeChange::Delete,
                        StepUse::Miss if c.attempts + 1 >= max => CodeChange::Delete,
                        StepUse::Miss => {
                            let mut next = c.clone();
                            next.attempts += 1;
                            CodeChange::Put(next)
                        }
                    };
                    (change, StepState::Live(first))
                }
                None => (CodeChange::Keep, StepState::Dead),
            })
            .await
    }
}

/// What [`Codes::second_step`] does with a live step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepUse {
    Look,
    End,
    Miss,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn setup() -> (tempfile::TempDir, Store, Codes) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 8 << 20).unwrap();
        let codes = Codes::new(&KeyBytes(vec![7; 32]), &OtpConfig::default());
        (dir, store, codes)
    }

    #[test]
    fn codes_are_digits_of_the_configured_length() {
        let c = Codes::new(
            &KeyBytes(vec![1; 32]),
            &OtpConfig {
                length: 8,
                ..Default::default()
            },
        );
        for _ in 0..50 {
            let code = c.generate();
            assert_eq!(code.expose().len(), 8);
            assert!(code.expose().bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn digest_is_bound_to_user_and_purpose() {
        let c = Codes::new(&KeyBytes(vec![1; 32]), &OtpConfig::default());
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let d = c.digest(&a, Purpose::Login, "", "123456");
        assert_ne!(d, c.digest(&b, Purpose::Login, "", "123456"));
        assert_ne!(d, c.digest(&a, Purpose::ResetPassword, "", "123456"));
        assert_eq!(d, c.digest(&a, Purpose::Login, "", "123456"));
        let to_x = c.digest(&a, Purpose::ChangeEmail, "x@example.com", "123456");
        assert_ne!(
            to_x,
            c.digest(&a, Purpose::ChangeEmail, "y@example.com", "123456")
        );
        assert_ne!(to_x, c.digest(&a, Purpose::ChangeEmail, "", "123456"));
    }

    #[tokio::test]
    async fn single_use_and_cross_purpose() {
        let (_d, store, codes) = setup();
        let u = uuid::Uuid::new_v4();
        let now = OffsetDateTime::UNIX_EPOCH;
        let (code, _) = codes
            .issue(&store, &u, Purpose::VerifyEmail, now)
            .await
            .unwrap();
        assert_eq!(
            codes
                .check(&store, &u, Purpose::Login, code.expose(), now)
                .await
                .unwrap(),
            CodeOutcome::Missing
        );
        assert_eq!(
            codes
                .check(&store, &u, Purpose::VerifyEmail, code.expose(), now)
                .await
                .unwrap(),
            CodeOutcome::Valid
        );
        assert_eq!(
            codes
                .check(&store, &u, Purpose::VerifyEmail, code.expose(), now)
                .await
                .unwrap(),
            CodeOutcome::Missing
        );
    }

    #[tokio::test]
    async fn a_withdrawn_code_is_gone_and_others_stay() {
        let (_d, store, codes) = setup();
        let u = uuid::Uuid::new_v4();
        let now = OffsetDateTime::UNIX_EPOCH;
        let (login, _) = codes.issue(&store, &u, Purpose::Login, now).await.unwrap();
        let (reset, _) = codes
            .issue(&store, &u, Purpose::ResetPassword, now)
            .await
            .unwrap();
        codes.withdraw(&store, &u, Purpose::Login).await.unwrap();
        // Withdrawing what is not there is no error.
        codes.withdraw(&store, &u, Purpose::Login).await.unwrap();
        let check = |purpose, code: String| {
            let (store, codes) = (store.clone(), codes.clone());
            async move { codes.check(&store, &u, purpose, &code, now).await.unwrap() }
        };
        assert_eq!(
            check(Purpose::Login, login.expose().to_string()).await,
            CodeOutcome::Missing
        );
        assert_eq!(
            check(Purpose::ResetPassword, reset.expose().to_string()).await,
            CodeOutcome::Valid
        );
    }

    #[tokio::test]
    async fn expiry_and_try_limit() {
        let (_d, store, codes) = setup();
        let u = uuid::Uuid::new_v4();
        let now = OffsetDateTime::UNIX_EPOCH;
        let (code, expires) = codes.issue(&store, &u, Purpose::Login, now).await.unwrap();
        assert_eq!(expires, now + Duration::from_secs(600));
        assert_eq!(
            codes
                .check(&store, &u, Purpose::Login, code.expose(), expires)
                .await
                .unwrap(),
            CodeOutcome::Expired
        );

        let (code, _) = codes.issue(&store, &u, Purpose::Login, now).await.unwrap();
        let wrong = if code.expose() == "000000" {
            "111111"
        } else {
            "000000"
        };
        for _ in 0..4 {
            assert_eq!(
                codes
                    .check(&store, &u, Purpose::Login, wrong, now)
                    .await
                    .unwrap(),
                CodeOutcome::Wrong
            );
        }
        assert_eq!(
            codes
                .check(&store, &u, Purpose::Login, wrong, now)
                .await
                .unwrap(),
            CodeOutcome::Exhausted
        );
        assert_eq!(
            codes
                .check(&store, &u, Purpose::Login, code.expose(), now)
                .await
                .unwrap(),
            CodeOutcome::Exhausted,
            "a dead code stays dead, even for the right digits"
        );
    }

    #[tokio::test]
    async fn concurrent_wrong_tries_are_all_counted() {
        let (_d, store, codes) = setup();
        let u = uuid::Uuid::new_v4();
        let now = OffsetDateTime::UNIX_EPOCH;
        let (code, _) = codes.issue(&store, &u, Purpose::Login, now).await.unwrap();
        let wrong = if code.expose() == "000000" {
            "111111"
        } else {
            "000000"
        };
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (s, c) = (store.clone(), codes.clone());
            tasks.push(tokio::spawn(async move {
                c.check(&s, &u, Purpose::Login, wrong, now).await.unwrap()
            }));
        }
        let mut wrongs = 0;
        for t in tasks {
            if t.await.unwrap() == CodeOutcome::Wrong {
                wrongs += 1;
            }
        }
        assert_eq!(
            wrongs, 4,
            "exactly max_attempts - 1 wrong answers before the code dies"
        );
    }
}

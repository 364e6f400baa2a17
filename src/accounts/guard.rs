//! Who may try again: failure counting and locks, for accounts, for their known devices, and
//! for logins that match no account.
//!
//! The model:
//!
//! - **Two factors, two counters.** Wrong passwords and wrong codes are counted apart: proof
//!   of the mailbox (a right code) is refused only because of wrong codes, never because of
//!   wrong passwords, so a stranger's password guesses cannot shut the owner out of signing
//!   in by code or resetting the password.
//! - **Strangers and devices.** A client without a device token of the account is a
//!   stranger; strangers share one counter per factor, kept on the account record. A client
//!   that signed in to the account before carries a device token (OWASP's device cookie)
//!   and keeps a counter of its own (in memory: a device's budget is per instance), so while
//!   strangers are locked out, the owner's browser is not. A device's code guesses do not
//!   spend the live code's tries either: strangers who run a code out of tries have not
//!   killed it for the owner's device.
//! - **Pauses, then a lock.** From half the threshold on, each failure pauses the subject
//!   for an escalating moment (1 s, 2 s, 4 s, ...: kanidm's softlock, NIST SP 800-63B
//!   throttling); at the threshold it is locked for `otp.lockout_duration`, and the failure
//!   that locks is answered USER_BLOCKED.
//! - **Nobody is anybody.** A login that matches no account is counted exactly as an
//!   account is, in a lock record of the store, written and flushed the same way, so that
//!   USER_BLOCKED, its timing and its Retry-After say nothing about which logins exist. A code
//!   pretended sent to an address without an account is a real code record under a decoy
//!   account id (never mailed), so guesses at it run out of tries and expire as guesses at a
//!   real one do.

use super::AccountError;
use super::bindings::DeviceId;
use crate::clock::SharedClock;
use crate::config::OtpConfig;
use crate::store::{LockRecord, RECORD_VERSION, Store, User, UserId};
use std::time::Duration;
use time::OffsetDateTime;

/// What was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Factor {
    Password,
    Code,
}

/// Whom a try is counted against.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// An account, tried by one of its devices or (`None`) by a stranger.
    Account {
        user: &'a User,
        device: Option<DeviceId>,
    },
    /// A login (an address, a username) that matches no account.
    Nobody { login: &'a str },
}

/// A failure counter and its lock.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct LockState {
    failed_attempts: u32,
    locked_until: Option<OffsetDateTime>,
}

impl LockState {
    fn of(user: &User, factor: Factor) -> Self {
        match factor {
            Factor::Password => LockState {
                failed_attempts: user.failed_attempts,
                locked_until: user.locked_until,
            },
            Factor::Code => LockState {
                failed_attempts: user.code_failed_attempts,
                locked_until: user.code_locked_until,
            },
        }
    }

    fn store_in(self, user: &mut User, factor: Factor) {
        match factor {
            Factor::Password => {
                user.failed_attempts = self.failed_attempts;
                user.locked_until = self.locked_until;
            }
            Factor::Code => {
                user.code_failed_attempts = self.failed_attempts;
                user.code_locked_until = self.locked_until;
            }
        }
    }
}

/// Devices remembered at most (about 100 bytes each).
const MAX_DEVICES: usize = 100_000;

pub struct Guard {
    store: Store,
    clock: SharedClock,
    threshold: u32,
    duration: Duration,
    /// Known devices' counters, by account, device and factor.
    devices: quick_cache::sync::Cache<(UserId, DeviceId, Factor), LockState>,
    /// Held across each read-modify-write of `devices`, so that parallel failures are all
    /// counted, as the store's transactions count the others.
    device_update: std::sync::Mutex<()>,
    /// Keys the decoy account ids of addresses without an account.
    decoy_key: aws_lc_rs::hmac::Key,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

/// The lock record's key of a login that matches no account, for `factor`.
fn nobody_key(login: &str, factor: Factor) -> String {
    match factor {
        Factor::Password => format!("pw:{login}"),
        Factor::Code => format!("code:{login}"),
    }
}

impl Guard {
    pub fn new(
        store: Store,
        clock: SharedClock,
        otp: &OtpConfig,
        decoy_key: &crate::secret::KeyBytes,
    ) -> Self {
        Guard {
            store,
            clock,
            threshold: otp.lockout_threshold.max(1),
            duration: otp.lockout_duration,
            devices: quick_cache::sync::Cache::new(MAX_DEVICES),
            device_update: std::sync::Mutex::new(()),
            decoy_key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &decoy_key.0),
        }
    }

    fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// The lock answer while `state` holds one.
    fn refuse_while_locked(&self, state: LockState) -> Result<(), AccountError> {
        let now = self.now();
        match state.locked_until {
            Some(t) if t > now => Err(AccountError::Blocked {
                retry_after: Some(Duration::try_from(t - now).unwrap_or(Duration::from_secs(1))),
            }),
            _ => Ok(()),
        }
    }

    /// One more failure: the pause or lock it earns.
    fn count(&self, s: &mut LockState, now: OffsetDateTime) {
        let soft_from = (self.threshold / 2).max(2);
        s.failed_attempts += 1;
        if s.failed_attempts >= self.threshold {
            s.failed_attempts = 0;
            s.locked_until = Some(now + self.duration);
        } else if s.failed_attempts >= soft_from {
            let step = (s.failed_attempts - soft_from).min(20);
            let pause = Duration::from_secs(1u64 << step).min(self.duration);
            // Never shortens a lock already in place (in-flight failures after a lockout).
            s.locked_until = s.locked_until.max(Some(now + pause));
        }
    }

    /// The answer to the failure that produced `after`: USER_BLOCKED if it locked.
    fn answer(&self, after: LockState, now: OffsetDateTime) -> Result<(), AccountError> {
        if after.failed_attempts == 0 && after.locked_until.is_some_and(|t| t > now) {
            return Err(AccountError::Blocked {
                retry_after: Some(self.duration),
            });
        }
        Ok(())
    }

    fn device_serial(&self) -> std::sync::MutexGuard<'_, ()> {
        // It guards no data of its own: a poisoned lock still serializes.
        self.device_update
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Refuses (USER_BLOCKED with Retry-After) while `subject` is locked for `factor`.
    pub async fn check(&self, subject: Subject<'_>, factor: Factor) -> Result<(), AccountError> {
        let state = match subject {
            Subject::Account { user, device: None } => LockState::of(user, factor),
            Subject::Account {
                user,
                device: Some(d),
            } => self.devices.get(&(user.id, d, factor)).unwrap_or_default(),
            Subject::Nobody { login } => {
                self.store
                    .update_lock(&nobody_key(login, factor), |r| {
                        let state = r.map(|r| LockState {
                            failed_attempts: r.failed_attempts,
                            locked_until: r.locked_until,
                        });
                        (None, state.unwrap_or_default())
                    })
                    .await?
            }
        };
        self.refuse_while_locked(state)
    }

    /// Counts a failure of `factor` against `subject`; the failure that locks it is answered
    /// USER_BLOCKED.
    pub async fn failure(&self, subject: Subject<'_>, factor: Factor) -> Result<(), AccountError> {
        let now = self.now();
        let after = match subject {
            Subject::Account { user, device: None } => {
                let updated = self
                    .store
                    .update_user(&user.id, |u| {
                        let mut state = LockState::of(u, factor);
                        self.count(&mut state, now);
                        state.store_in(u, factor);
                        Ok::<(), std::convert::Infallible>(())
                    })
                    .await?;
                LockState::of(&updated, factor)
            }
            Subject::Account {
                user,
                device: Some(d),
            } => {
                let _serial = self.device_serial();
                let key = (user.id, d, factor);
                let mut state = self.devices.get(&key).unwrap_or_default();
                self.count(&mut state, now);
                self.devices.insert(key, state);
                state
            }
            Subject::Nobody { login } => {
                self.store
                    .update_lock(&nobody_key(login, factor), |r| {
                        let mut state = r.map_or_else(LockState::default, |r| LockState {
                            failed_attempts: r.failed_attempts,
                            locked_until: r.locked_until,
                        });
                        self.count(&mut state, now);
                        let record = LockRecord {
                            v: RECORD_VERSION,
                            failed_attempts: state.failed_attempts,
                            locked_until: state.locked_until,
                            updated_at: Some(now),
                        };
                        (Some(record), state)
                    })
                    .await?
            }
        };
        if let (Subject::Account { user, device }, true) = (subject, after.failed_attempts == 0) {
            if after.locked_until.is_some_and(|t| t > now) {
                tracing::warn!(target: "audit", event = "lockout", user_id = %user.id, factor = ?factor, device = device.is_some(), until = %crate::clock::rfc3339(now + self.duration), "locked after repeated failures");
            }
        }
        self.answer(after, now)
    }

    /// Clears `subject`'s count for `factor` after a success; the account as it is now.
    pub async fn success(
        &self,
        user: &User,
        device: Option<DeviceId>,
        factor: Factor,
    ) -> Result<User, AccountError> {
        if let Some(d) = device {
            self.devices.remove(&(user.id, d, factor));
            return Ok(user.clone());
        }
        if LockState::of(user, factor) == LockState::default() {
            return Ok(user.clone());
        }
        Ok(self
            .store
            .update_user(&user.id, |u| {
                LockState::default().store_in(u, factor);
                Ok::<(), std::convert::Infallible>(())
            })
            .await?)
    }

    /// The account id a code pretended sent to `email` (which has no account) is kept under:
    /// the same for an address every time, never a real account's (a version-8 UUID, where
    /// accounts have version 4).
    pub fn decoy_id(&self, email: &str) -> UserId {
        let tag = aws_lc_rs::hmac::sign(&self.decoy_key, email.as_bytes());
        let mut raw = [0u8; 16];
        raw.copy_from_slice(tag.as_ref().get(..16).unwrap_or(&[0u8; 16]));
        uuid::Builder::from_custom_bytes(raw).into_uuid()
    }
}

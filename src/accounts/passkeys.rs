//! Passkeys: adding, renaming and removing them, signing in with one and no password
//! (discoverable credentials, so the login page can offer them by autofill), one as the
//! second factor after a password or mailed code, and one to step a session up.
//!
//! The model: every ceremony's state is kept in the store ([`Challenge`]), single use (taken
//! atomically) and short-lived, so any instance finishes what another began and no answer
//! counts twice. `webauthn-rs` checks the origin, the RP id hash, the challenge, the
//! signature, user verification and the signature counter (a counter that goes back is a
//! cloned authenticator, refused); the counter and backup flags it reports are kept.

use super::mfa::SignIn;
use super::{AccountError, Accounts, Client, SignedIn};
use crate::codes::{StepState, StepUse};
use crate::passkeys::{credential_id, registration_options, request_options};
use crate::ratelimit::Class;
use crate::sessions::TokenPair;
use crate::store::{
    AuthFactor, Challenge, ChallengeKind, PasskeyRecord, RECORD_VERSION, User, UserId,
};
use webauthn_rs::prelude::{
    DiscoverableAuthentication, DiscoverableKey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, Webauthn, WebauthnError,
};

/// How long a ceremony may take (WebAuthn's own default timeout).
const CEREMONY_TTL: std::time::Duration = std::time::Duration::from_secs(300);
/// Passkeys one account may hold.
const MAX_PASSKEYS: usize = 20;

/// Options for the browser, and the id that names the ceremony when its answer comes back.
#[derive(Debug)]
pub struct Ceremony {
    pub challenge_id: String,
    pub public_key: serde_json::Value,
}

impl Accounts {
    fn webauthn(&self) -> Result<&Webauthn, AccountError> {
        self.webauthn.as_ref().ok_or(AccountError::PasskeysOff)
    }

    async fn begin(
        &self,
        kind: ChallengeKind,
        state: serde_json::Value,
    ) -> Result<String, AccountError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let c = Challenge {
            v: RECORD_VERSION,
            kind,
            expires_at: self.now() + CEREMONY_TTL,
            state,
        };
        self.store.put_challenge(&id, &c).await?;
        Ok(id)
    }

    /// The ceremony `id`, used up; refused when unknown, used, expired or of another kind.
    async fn finish(
        &self,
        id: &str,
        kind: &ChallengeKind,
    ) -> Result<serde_json::Value, AccountError> {
        if id.is_empty() || id.len() > 64 {
            return Err(AccountError::InvalidPasskey);
        }
        match self.store.take_challenge(id).await? {
            Some(c) if c.expires_at > self.now() && c.kind == *kind => Ok(c.state),
            _ => Err(AccountError::InvalidPasskey),
        }
    }

    /// Adding a passkey, step 1: a fresh proof of the owner, as for the other factors (the
    /// current password, or for an account without one a recent sign-in; and a two-factor
    /// session once the account has a second factor).
    pub async fn passkey_register_options(
        &self,
        user_id: &UserId,
        session_id: &str,
        name: Option<&str>,
        current_password: Option<&crate::secret::Secret>,
        client: &Client<'_>,
    ) -> Result<Ceremony, AccountError> {
        let w = self.webauthn()?;
        let user = self.profile(user_id).await?;
        self.prove_owner(
            &user,
            session_id,
            current_password,
            &client.without_device(),
        )
        .await?;
        if user.factors.passkeys.len() >= MAX_PASSKEYS {
            return Err(AccountError::field(
                "name",
                format!("an account holds at most {MAX_PASSKEYS} passkeys"),
            ));
        }
        let name = passkey_name(name)?;
        let (public_key, state) = registration_options(w, &user).map_err(webauthn_err)?;
        let challenge_id = self
            .begin(
                ChallengeKind::Register {
                    user: user.id,
                    name,
                },
                to_state(&state)?,
            )
            .await?;
        Ok(Ceremony {
            challenge_id,
            public_key,
        })
    }

    /// Adding a passkey, step 2: the authenticator's answer.
    pub async fn passkey_register(
        &self,
        user_id: &UserId,
        session_id: &str,
        challenge_id: &str,
        credential: &RegisterPublicKeyCredential,
        name: Option<&str>,
    ) -> Result<PasskeyRecord, AccountError> {
        let w = self.webauthn()?;
        // The name given at step 1, unless this step names another.
        let user = self.profile(user_id).await?;
        let state = self.take_registration(challenge_id, &user.id).await?;
        // Looked at again: the session may have been ended, or a factor added, since step 1.
        self.require_recent_sign_in(session_id).await?;
        self.require_second_factor_session(&user, session_id)
            .await?;
        let (state, named): (PasskeyRegistration, String) = state;
        let key = w
            .finish_passkey_registration(credential, &state)
            .map_err(|e| {
                tracing::info!(target: "audit", event = "passkey_refused", user_id = %user.id, reason = %e, "passkey registration refused");
                AccountError::InvalidPasskey
            })?;
        let name = match name {
            Some(n) => passkey_name(Some(n))?,
            None => named,
        };
        let now = self.now();
        let record = PasskeyRecord {
            id: credential_id(key.cred_id().as_ref()),
            name,
            created_at: now,
            last_used_at: None,
            key,
        };
        let added = record.clone();
        self.store
            .update_user(&user.id, |u| {
                if u.factors.passkeys.iter().any(|p| p.id == added.id) {
                    return Err(AccountError::field(
                        "credential",
                        "this passkey is already registered",
                    ));
                }
                if u.factors.passkeys.len() >= MAX_PASSKEYS {
                    return Err(AccountError::field("name", "too many passkeys"));
                }
                u.factors.passkeys.push(added.clone());
                u.updated_at = now;
                Ok(())
            })
            .await?;
        let revoked = if user.factors.any() {
            0
        } else {
            self.second_factor_added(&user.id, session_id).await?
        };
        tracing::info!(target: "audit", event = "passkey_added", user_id = %user.id, passkey = %record.id, sessions_revoked = revoked, "passkey added");
        Ok(record)
    }

    async fn take_registration(
        &self,
        challenge_id: &str,
        user: &UserId,
    ) -> Result<(PasskeyRegistration, String), AccountError> {
        if challenge_id.is_empty() || challenge_id.len() > 64 {
            return Err(AccountError::InvalidPasskey);
        }
        match self.store.take_challenge(challenge_id).await? {
            Some(Challenge {
                kind: ChallengeKind::Register { user: u, name },
                expires_at,
                state,
                ..
            }) if u == *user && expires_at > self.now() => Ok((from_state(state)?, name)),
            _ => Err(AccountError::InvalidPasskey),
        }
    }

    pub async fn passkeys(&self, user_id: &UserId) -> Result<Vec<PasskeyRecord>, AccountError> {
        Ok(self.profile(user_id).await?.factors.passkeys)
    }

    pub async fn rename_passkey(
        &self,
        user_id: &UserId,
        id: &str,
        name: &str,
    ) -> Result<PasskeyRecord, AccountError> {
        let name = passkey_name(Some(name))?;
        let now = self.now();
        let u = self
            .store
            .update_user(user_id, |u| {
                let p = u
                    .factors
                    .passkeys
                    .iter_mut()
                    .find(|p| p.id == id)
                    .ok_or(AccountError::NotFound)?;
                p.name = name.clone();
                u.updated_at = now;
                Ok::<(), AccountError>(())
            })
            .await?;
        u.factors
            .passkeys
            .into_iter()
            .find(|p| p.id == id)
            .ok_or(AccountError::NotFound)
    }

    /// Removes a passkey: a recent sign-in in a session that showed two factors.
    pub async fn remove_passkey(
        &self,
        user_id: &UserId,
        session_id: &str,
        id: &str,
    ) -> Result<(), AccountError> {
        let user = self.profile(user_id).await?;
        if !user.factors.passkeys.iter().any(|p| p.id == id) {
            return Err(AccountError::NotFound);
        }
        self.require_recent_sign_in(session_id).await?;
        self.require_second_factor_session(&user, session_id)
            .await?;
        let now = self.now();
        self.store
            .update_user(user_id, |u| {
                u.factors.passkeys.retain(|p| p.id != id);
                u.updated_at = now;
                Ok::<(), std::convert::Infallible>(())
            })
            .await?;
        tracing::info!(target: "audit", event = "passkey_removed", user_id = %user_id, passkey = %id, "passkey removed");
        Ok(())
    }

    /// A passwordless sign-in, step 1: options for any of this site's passkeys (no
    /// `allowCredentials`: the browser offers what it holds, by autofill).
    pub async fn passkey_login_options(
        &self,
        client: &Client<'_>,
    ) -> Result<Ceremony, AccountError> {
        let w = self.webauthn()?;
        // Asked by every login page view (for autofill), so counted as page views are (the
        // refresh quota), not as sign-ins: a busy address behind one NAT keeps its password
        // sign-ins. The answer's verification is a sign-in, counted as one.
        self.limits.check_ip(Class::Refresh, client.ip)?;
        let (rcr, state) = w
            .start_discoverable_authentication()
            .map_err(webauthn_err)?;
        let public_key = request_options(&rcr).map_err(webauthn_err)?;
        let challenge_id = self
            .begin(ChallengeKind::Discoverable, to_state(&state)?)
            .await?;
        Ok(Ceremony {
            challenge_id,
            public_key,
        })
    }

    /// A passwordless sign-in, step 2: the assertion names its account (the user handle), and
    /// a verified passkey is two factors.
    pub async fn passkey_login(
        &self,
        challenge_id: &str,
        credential: &PublicKeyCredential,
        client: &Client<'_>,
    ) -> Result<SignIn, AccountError> {
        self.limits.check_ip(Class::Login, client.ip)?;
        let user = self.verify_discoverable(challenge_id, credential).await?;
        if user.blocked {
            return Err(AccountError::Blocked { retry_after: None });
        }
        if !user.email_verified {
            return Err(AccountError::EmailNotVerified);
        }
        tracing::info!(target: "audit", event = "login", user_id = %user.id, method = "passkey", "signed in with a passkey");
        Ok(SignIn::Done(Box::new(
            self.start_session(user, client, &[AuthFactor::Passkey])
                .await?,
        )))
    }

    /// Steps the caller's session up with a passkey (from the discoverable options).
    pub async fn step_up_passkey(
        &self,
        user_id: &UserId,
        session_id: &str,
        challenge_id: &str,
        credential: &PublicKeyCredential,
        client: &Client<'_>,
    ) -> Result<(TokenPair, User), AccountError> {
        self.limits.check_ip(Class::CodeVerify, client.ip)?;
        let user = self.verify_discoverable(challenge_id, credential).await?;
        if user.id != *user_id {
            // Someone else's passkey, however valid.
            return Err(AccountError::InvalidPasskey);
        }
        let pair = self
            .sessions
            .elevate(&user, session_id, AuthFactor::Passkey)
            .await?;
        tracing::info!(target: "audit", event = "session_stepped_up", user_id = %user_id, factor = "passkey", "second factor shown in a signed-in session");
        Ok((pair, user))
    }

    /// The account a discoverable assertion proves, its passkey's counter and flags kept.
    async fn verify_discoverable(
        &self,
        challenge_id: &str,
        credential: &PublicKeyCredential,
    ) -> Result<User, AccountError> {
        let w = self.webauthn()?;
        let state: DiscoverableAuthentication = from_state(
            self.finish(challenge_id, &ChallengeKind::Discoverable)
                .await?,
        )?;
        let (user_id, cred_id) = w
            .identify_discoverable_authentication(credential)
            .map_err(|_| AccountError::InvalidPasskey)?;
        let user = self
            .store
            .user(&user_id)
            .await?
            .ok_or(AccountError::InvalidPasskey)?;
        let id = credential_id(cred_id);
        let stored = user
            .factors
            .passkeys
            .iter()
            .find(|p| p.id == id)
            .ok_or(AccountError::InvalidPasskey)?;
        #[allow(deprecated)]
        // its successor takes the credential internals, behind a "danger" feature
        let result = w
            .finish_discoverable_authentication(
                credential,
                state,
                &[DiscoverableKey::from(&stored.key)],
            )
            .map_err(|e| self.refused(&user.id, &e))?;
        self.keep_counter(&user.id, &id, &result).await?;
        self.profile(&user.id).await
    }

    /// The second step of a sign-in with a passkey, step 1: options for the account's
    /// passkeys.
    pub async fn passkey_second_factor_options(
        &self,
        mfa_token: &crate::secret::Secret,
        client: &Client<'_>,
    ) -> Result<Ceremony, AccountError> {
        let w = self.webauthn()?;
        self.limits.check_ip(Class::CodeVerify, client.ip)?;
        let (user, _) = self.live_second_step(mfa_token, StepUse::Look).await?;
        let keys: Vec<_> = user
            .factors
            .passkeys
            .iter()
            .map(|p| p.key.clone())
            .collect();
        if keys.is_empty() {
            return Err(AccountError::field(
                "mfa_token",
                "this account has no passkey",
            ));
        }
        let (rcr, state) = w
            .start_passkey_authentication(&keys)
            .map_err(webauthn_err)?;
        let public_key = request_options(&rcr).map_err(webauthn_err)?;
        let challenge_id = self
            .begin(
                ChallengeKind::SecondFactor { user: user.id },
                to_state(&state)?,
            )
            .await?;
        Ok(Ceremony {
            challenge_id,
            public_key,
        })
    }

    /// The second step of a sign-in with a passkey, step 2.
    pub async fn passkey_second_factor(
        &self,
        mfa_token: &crate::secret::Secret,
        challenge_id: &str,
        credential: &PublicKeyCredential,
        client: &Client<'_>,
    ) -> Result<SignedIn, AccountError> {
        let w = self.webauthn()?;
        self.limits.check_ip(Class::CodeVerify, client.ip)?;
        let (user, _) = self.live_second_step(mfa_token, StepUse::Look).await?;
        let state: PasskeyAuthentication = from_state(
            self.finish(challenge_id, &ChallengeKind::SecondFactor { user: user.id })
                .await?,
        )?;
        let result = w
            .finish_passkey_authentication(credential, &state)
            .map_err(|e| self.refused(&user.id, &e))?;
        let id = credential_id(result.cred_id().as_ref());
        self.keep_counter(&user.id, &id, &result).await?;
        // Used up before the session is made: of two requests with one token, one signs in.
        let (user, first) = self.live_second_step(mfa_token, StepUse::End).await?;
        if user.blocked {
            return Err(AccountError::Blocked { retry_after: None });
        }
        tracing::info!(target: "audit", event = "login", user_id = %user.id, method = ?first, second = "passkey", "signed in with a second factor");
        self.start_session(user, client, &[first, AuthFactor::Passkey])
            .await
    }

    /// The account and first factor of a live second step.
    async fn live_second_step(
        &self,
        mfa_token: &crate::secret::Secret,
        then: StepUse,
    ) -> Result<(User, AuthFactor), AccountError> {
        let (user_id, secret) =
            super::mfa::parse_token(mfa_token).ok_or(AccountError::InvalidSecondStep)?;
        match self
            .codes
            .second_step(&self.store, &user_id, secret, self.now(), then)
            .await?
        {
            StepState::Live(first) => Ok((self.profile(&user_id).await?, first)),
            StepState::Dead => Err(AccountError::InvalidSecondStep),
        }
    }

    /// A refused assertion: said once in the audit log (a counter that went back is a cloned
    /// authenticator), and the same answer to the client whatever the reason.
    fn refused(&self, user: &UserId, e: &WebauthnError) -> AccountError {
        let clone = matches!(e, WebauthnError::CredentialPossibleCompromise);
        tracing::warn!(target: "audit", event = "passkey_refused", user_id = %user, reason = %e, possible_clone = clone, "passkey assertion refused");
        AccountError::InvalidPasskey
    }

    /// Keeps what the authenticator reported: its signature counter and backup flags, and
    /// when it was last used.
    async fn keep_counter(
        &self,
        user: &UserId,
        id: &str,
        result: &webauthn_rs::prelude::AuthenticationResult,
    ) -> Result<(), AccountError> {
        let now = self.now();
        self.store
            .update_user(user, |u| {
                if let Some(p) = u.factors.passkeys.iter_mut().find(|p| p.id == id) {
                    p.key.update_credential(result);
                    p.last_used_at = Some(now);
                }
                Ok::<(), std::convert::Infallible>(())
            })
            .await?;
        Ok(())
    }

    /// A sign-in within `accounts.recent_sign_in`.
    pub(super) async fn require_recent_sign_in(
        &self,
        session_id: &str,
    ) -> Result<(), AccountError> {
        let signed_in = self
            .store
            .session(session_id)
            .await?
            .map(|s| s.created_at)
            .ok_or(AccountError::ReauthRequired)?;
        if self.now() - signed_in > self.cfg.recent_sign_in {
            return Err(AccountError::ReauthRequired);
        }
        Ok(())
    }
}

fn passkey_name(name: Option<&str>) -> Result<String, AccountError> {
    let n = name.map(str::trim).unwrap_or("");
    if n.is_empty() {
        return Ok("Passkey".into());
    }
    if n.chars().count() > 64 || n.chars().any(char::is_control) {
        return Err(AccountError::field(
            "name",
            "must be at most 64 characters, without control characters",
        ));
    }
    Ok(n.to_string())
}

fn to_state<T: serde::Serialize>(state: &T) -> Result<serde_json::Value, AccountError> {
    serde_json::to_value(state).map_err(|e| AccountError::Internal(e.to_string()))
}

fn from_state<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, AccountError> {
    serde_json::from_value(v).map_err(|_| AccountError::InvalidPasskey)
}

fn webauthn_err(e: WebauthnError) -> AccountError {
    AccountError::Internal(format!("webauthn: {e}"))
}

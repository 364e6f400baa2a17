//! Registration and email verification, and the CLI's verified account.

use super::codes::cooldown_key;
use super::{AccountError, Accounts, Client, Registration, Verified};
use super::{normalize_email, normalize_full_name, normalize_phone, normalize_username};
use crate::passwords::PasswordError;
use crate::ratelimit::Class;
use crate::secret::Secret;
use crate::store::{AuthFactor, Purpose, StoreError, UniqueField, User};
use std::collections::BTreeMap;
use time::OffsetDateTime;

impl Accounts {
    /// Creates an account and mails an email verification code. The sign-up token that
    /// comes back keeps the password when the same client verifies the address.
    pub async fn register(
        &self,
        reg: Registration,
        client: &Client<'_>,
    ) -> Result<(User, OffsetDateTime, Secret), AccountError> {
        self.limits.check_ip(Class::CodeSend, client.ip)?;
        let mut fields = BTreeMap::new();
        let email = normalize_email(&reg.email)
            .map_err(|m| fields.insert("email".into(), m))
            .ok();
        let username = match reg.username.as_deref().map(normalize_username).transpose() {
            Ok(u) => u,
            Err(m) => {
                fields.insert("username".into(), m);
                None
            }
        };
        let phone = match reg.phone.as_deref().map(normalize_phone).transpose() {
            Ok(p) => p,
            Err(m) => {
                fields.insert("phone".into(), m);
                None
            }
        };
        let full_name = match reg
            .full_name
            .as_deref()
            .map(normalize_full_name)
            .transpose()
        {
            Ok(n) => n,
            Err(m) => {
                fields.insert("full_name".into(), m);
                None
            }
        };
        if let Some(p) = &reg.profile {
            if let Err(m) = self.validate_profile(p) {
                fields.insert("profile".into(), m);
            }
        }
        match &reg.password {
            None if !self.cfg.allow_passwordless => {
                fields.insert("password".into(), "is required".into());
            }
            Some(p) => {
                if let Err(PasswordError::Policy(m)) = self.passwords.check_length(p) {
                    fields.insert("password".into(), m);
                }
            }
            None => {}
        }
        let email = match email {
            Some(e) if fields.is_empty() => e,
            _ => return Err(AccountError::Invalid(fields)),
        };
        // Registration mails a code: it counts against the address's quota.
        self.limits.check_key(Class::CodeSend, client.ip, &email)?;
        // Uniqueness is decided by the store's transaction; this early look only saves an
        // argon2 hash for a registration that cannot succeed.
        if self.store.user_by_email(&email).await?.is_some() {
            return Err(AccountError::AlreadyExists(UniqueField::Email));
        }
        let password = match &reg.password {
            Some(p) => {
                let mut inputs = vec![email.clone()];
                inputs.extend(username.clone());
                inputs.extend(full_name.clone());
                Some(self.passwords.hash_new(p, inputs).await?)
            }
            None => None,
        };
        let now = self.now();
        let user = User {
            username,
            full_name,
            phone,
            password,
            profile: reg.profile.unwrap_or_default(),
            ..User::new(email, false, self.cfg.default_roles.clone(), now)
        };
        self.insert_new(&user).await?;
        tracing::info!(target: "audit", event = "registered", user_id = %user.id, "account created");
        // Registration sends the first code, so it starts the resend cooldown too.
        self.store
            .set_cooldown(
                &cooldown_key(Purpose::VerifyEmail, &user.email),
                now,
                self.otp.resend_cooldown,
            )
            .await?;
        let expires = self.send_code(&user, Purpose::VerifyEmail).await?;
        let signup = self.bindings.signup_token(&user);
        Ok((user, expires, signup))
    }

    /// Verifies the email address with the code mailed at registration (or resent). A
    /// password chosen before the address was verified survives only when the client that
    /// verifies presents the sign-up token of the one that chose it: otherwise a squatter who
    /// registered this address with a password of their own would keep it once the owner
    /// entered the code that arrived. It is dropped then, and the caller told so. With
    /// `sign_in`, the verified client is signed in as well.
    pub async fn verify_email(
        &self,
        email: &str,
        code: &str,
        signup: Option<&str>,
        sign_in: bool,
        client: &Client<'_>,
    ) -> Result<Verified, AccountError> {
        let user = self
            .take_code(email, code, Purpose::VerifyEmail, client)
            .await?;
        let chosen_here = signup.is_some_and(|t| self.bindings.signup_ok(&user, t));
        let squatted = !user.email_verified && user.password.is_some() && !chosen_here;
        let user = if squatted {
            self.drop_unverified_password(&user, "address verified without the sign-up token")
                .await?
        } else {
            self.mark_verified(&user).await?
        };
        tracing::info!(target: "audit", event = "email_verified", user_id = %user.id, "email verified");
        let reset = match squatted {
            true => Some(self.issue_reset_token(&user).await?),
            false => None,
        };
        let signed_in = match sign_in {
            // Blocked since the code was sent: verified, not signed in.
            true if user.blocked => None,
            true => {
                tracing::info!(target: "audit", event = "login", user_id = %user.id, method = "verify", "signed in after verifying the email");
                // An unverified account has no second factor (enrolling one needs a
                // session): the mailed code is the whole proof.
                Some(
                    self.start_session(user.clone(), client, &[AuthFactor::EmailCode])
                        .await?,
                )
            }
            false => None,
        };
        Ok(Verified {
            user,
            reset,
            signed_in,
        })
    }

    /// Verifies the address and drops a password set before it was verified (by whoever
    /// registered it, who need not be the mailbox's owner): every session ends with it.
    pub(super) async fn drop_unverified_password(
        &self,
        user: &User,
        why: &str,
    ) -> Result<User, AccountError> {
        let now = self.now();
        self.store
            .update_user(&user.id, |u| {
                u.password = None;
                u.email_verified = true;
                u.security_version += 1;
                u.updated_at = now;
                Ok::<(), std::convert::Infallible>(())
            })
            .await?;
        self.sessions.revoke_all(&user.id, None).await?;
        tracing::warn!(target: "audit", event = "password_cleared", user_id = %user.id, why, "the password chosen before the address was verified was dropped");
        // As it is after the sessions ended: a sign-in that follows goes on with it.
        self.profile(&user.id).await
    }

    pub(super) async fn mark_verified(&self, user: &User) -> Result<User, AccountError> {
        if user.email_verified {
            return Ok(user.clone());
        }
        let now = self.now();
        Ok(self
            .store
            .update_user(&user.id, |u| {
                u.email_verified = true;
                u.updated_at = now;
                Ok::<(), std::convert::Infallible>(())
            })
            .await?)
    }

    /// Sends a new verification code (after the cooldown).
    pub async fn resend_verification(
        &self,
        email: &str,
        client: &Client<'_>,
    ) -> Result<OffsetDateTime, AccountError> {
        self.mail_code(email, Purpose::VerifyEmail, client).await
    }

    /// Creates a verified account directly (CLI: the first admin).
    pub async fn create_verified(
        &self,
        email: &str,
        password: Option<&Secret>,
        roles: Vec<String>,
    ) -> Result<User, AccountError> {
        let email = self.email(email)?;
        let password = match password {
            Some(p) => Some(self.passwords.hash_new(p, vec![email.clone()]).await?),
            None => None,
        };
        let now = self.now();
        let roles = match roles.is_empty() {
            true => self.cfg.default_roles.clone(),
            false => roles,
        };
        let user = User {
            password,
            ..User::new(email, true, roles, now)
        };
        self.insert_new(&user).await?;
        Ok(user)
    }

    /// Stores a new account; the store's unique indexes decide a race for the same address.
    async fn insert_new(&self, user: &User) -> Result<(), AccountError> {
        self.store.insert_user(user).await.map_err(|e| match e {
            StoreError::Conflict(f) => AccountError::AlreadyExists(f),
            other => AccountError::Store(other),
        })
    }
}

//! Tokens that prove a client did something before, signed with keys from outside the store:
//!
//! - a **device token** says "this client has signed in to this account before" (OWASP's
//!   device cookie): while strangers are locked out of an account by their failures, a
//!   client with one keeps its own budget;
//! - a **sign-up token** says "this client chose the account's password at registration":
//!   verifying the address keeps that password only for the client that chose it, so that a
//!   squatter who registered someone else's address with a password of their own gains
//!   nothing when the owner enters the code that arrives.
//!
//! Both are stateless (an HMAC over what they bind) and bound to one account. A device token
//! is bound to the account's security version too: a password change or reset, signing out
//! everywhere, an email change or a block ends every device's standing with its sessions
//! (a token kept by someone who once held the account buys nothing after the owner acts).

use crate::keyring::{KeyPurpose, Keyring};
use crate::secret::Secret;
use crate::store::User;
use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

/// One device of an account, as its token names it.
pub type DeviceId = [u8; 16];

/// Signs and checks device and sign-up tokens.
pub struct Bindings {
    device: hmac::Key,
    signup: hmac::Key,
}

impl std::fmt::Debug for Bindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bindings([redacted])")
    }
}

/// The first 16 bytes of an HMAC-SHA-256, base64url.
fn tag(key: &hmac::Key, parts: &[&[u8]]) -> String {
    let mut ctx = hmac::Context::with_key(key);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    B64.encode(ctx.sign().as_ref().get(..16).unwrap_or_default())
}

impl Bindings {
    pub fn new(keyring: &Keyring) -> Self {
        Bindings {
            device: hmac::Key::new(hmac::HMAC_SHA256, &keyring.key(KeyPurpose::DeviceMac).0),
            signup: hmac::Key::new(hmac::HMAC_SHA256, &keyring.key(KeyPurpose::SignupMac).0),
        }
    }

    /// A device token for `user`: the device `id` again (a client that already has one), or
    /// a new device.
    pub fn device_token(&self, user: &User, id: Option<DeviceId>) -> Secret {
        let id = id.unwrap_or_else(rand::random);
        let owner = user.id.simple().to_string();
        let mac = self.device_tag(&owner, &id, user.security_version);
        Secret::new(format!("dv1.{owner}.{}.{mac}", B64.encode(id)))
    }

    fn device_tag(&self, owner: &str, id: &DeviceId, version: u64) -> String {
        tag(
            &self.device,
            &[owner.as_bytes(), id, &version.to_be_bytes()],
        )
    }

    /// The device a token names, when it is a genuine token of `user`'s.
    pub fn device(&self, user: &User, token: &str) -> Option<DeviceId> {
        let mut parts = token.trim().split('.');
        let (Some("dv1"), Some(owner), Some(id), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let expected_owner = user.id.simple().to_string();
        if owner != expected_owner {
            return None;
        }
        let id: DeviceId = B64.decode(id).ok()?.try_into().ok()?;
        let want = self.device_tag(owner, &id, user.security_version);
        crate::secret::ct_eq(want.as_bytes(), mac.as_bytes()).then_some(id)
    }

    /// The sign-up token of `user`, as registration hands it to the client that registered.
    pub fn signup_token(&self, user: &User) -> Secret {
        Secret::new(format!("su1.{}", self.signup_tag(user)))
    }

    fn signup_tag(&self, user: &User) -> String {
        // The account's id and its creation time: a later account with the same address (the
        // first deleted) has another token.
        let created = user.created_at.unix_timestamp_nanos().to_be_bytes();
        tag(&self.signup, &[user.id.as_bytes(), &created])
    }

    /// Whether `token` is `user`'s sign-up token.
    pub fn signup_ok(&self, user: &User, token: &str) -> bool {
        token
            .trim()
            .strip_prefix("su1.")
            .is_some_and(|t| crate::secret::ct_eq(self.signup_tag(user).as_bytes(), t.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::KeyBytes;
    use crate::store::UserId;

    fn user(id: UserId) -> User {
        let t = time::OffsetDateTime::UNIX_EPOCH;
        User {
            id,
            ..User::new("a@example.com".into(), false, vec![], t)
        }
    }

    #[test]
    fn device_tokens_are_bound_to_their_account_and_key() {
        let b = Bindings::new(&Keyring::new(&KeyBytes(vec![3; 32])));
        let other = Bindings::new(&Keyring::new(&KeyBytes(vec![4; 32])));
        let (u, v) = (user(uuid::Uuid::new_v4()), user(uuid::Uuid::new_v4()));
        let t = b.device_token(&u, None);
        let id = b.device(&u, t.expose()).expect("genuine");
        assert_eq!(
            b.device(&u, b.device_token(&u, Some(id)).expose()),
            Some(id)
        );
        assert_eq!(b.device(&v, t.expose()), None, "another account");
        assert_eq!(other.device(&u, t.expose()), None, "another key");
        let forged = t.expose().replace(".", ".x");
        assert_eq!(b.device(&u, &forged), None);
        assert_eq!(b.device(&u, "dv1.garbage"), None);
        // The owner changed the password (or signed out everywhere): every device starts over.
        let mut after = u.clone();
        after.security_version += 1;
        assert_eq!(
            b.device(&after, t.expose()),
            None,
            "an older security version"
        );
    }

    #[test]
    fn signup_tokens_belong_to_one_account() {
        let b = Bindings::new(&Keyring::new(&KeyBytes(vec![3; 32])));
        let a = user(uuid::Uuid::new_v4());
        let t = b.signup_token(&a);
        assert!(b.signup_ok(&a, t.expose()));
        assert!(!b.signup_ok(&user(uuid::Uuid::new_v4()), t.expose()));
        let mut later = a.clone();
        later.created_at += std::time::Duration::from_secs(1);
        assert!(
            !b.signup_ok(&later, t.expose()),
            "a later account at the same id"
        );
        assert!(!b.signup_ok(&a, "su1.nope"));
    }
}

//! The opaque refresh tokens: made with a MAC that tells an issued token from a guess,
//! stored only as a hash, and sealed for the reuse grace window.

use super::*;

/// Whether a refresh token was issued here (see [`Tokens::issued`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issued {
    Yes,
    /// An old-format token: issued here, or made up; only its hash on the session can tell.
    Unknown,
    No,
}

impl Tokens {
    // Refresh tokens: "rt2.<session id>.<256 random bits>.<MAC>", stored as SHA-256. The
    // MAC (HMAC-SHA-256 over the session id and the random part, with a key from outside the
    // store, 128 bits kept) tells a token this gateway issued from a guess: only an issued
    // token that has been rotated away counts as a reuse. Builds before it issued
    // "rt1.<session id>.<256 random bits>", still accepted while their session lives.

    pub fn new_refresh(&self, sid: &str) -> Result<Secret, TokenError> {
        let mut secret = [0u8; 32];
        lc_rand::fill(&mut secret).map_err(key_err)?;
        let random = B64.encode(secret);
        let mac = self.refresh_tag(sid, &random);
        Ok(Secret::new(format!("rt2.{sid}.{random}.{mac}")))
    }

    pub(super) fn refresh_tag(&self, sid: &str, random: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.refresh_mac);
        ctx.update(sid.as_bytes());
        ctx.update(b".");
        ctx.update(random.as_bytes());
        let tag = ctx.sign();
        B64.encode(tag.as_ref().get(..16).unwrap_or_default())
    }

    /// The session a refresh token names, if it is well formed.
    pub fn refresh_session(token: &str) -> Option<&str> {
        let mut parts = token.split('.');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("rt1"), Some(sid), Some(secret), None, None)
                if !sid.is_empty() && secret.len() == 43 =>
            {
                Some(sid)
            }
            (Some("rt2"), Some(sid), Some(secret), Some(mac), None)
                if !sid.is_empty() && secret.len() == 43 && mac.len() == 22 =>
            {
                Some(sid)
            }
            _ => None,
        }
    }

    /// Whether this gateway issued `token`: `Yes` for a current-format token whose MAC
    /// verifies, `Unknown` for an old-format one (no MAC to tell), `No` for anything else.
    pub fn issued(&self, token: &str) -> Issued {
        let mut parts = token.split('.');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("rt2"), Some(sid), Some(random), Some(mac))
                if Tokens::refresh_session(token).is_some() =>
            {
                if crate::secret::ct_eq(self.refresh_tag(sid, random).as_bytes(), mac.as_bytes()) {
                    Issued::Yes
                } else {
                    Issued::No
                }
            }
            (Some("rt1"), ..) if Tokens::refresh_session(token).is_some() => Issued::Unknown,
            _ => Issued::No,
        }
    }

    pub fn hash_refresh(token: &str) -> Vec<u8> {
        digest::digest(&digest::SHA256, token.as_bytes())
            .as_ref()
            .to_vec()
    }

    /// Encrypts a refresh token for the grace-window record (AES-256-GCM, random nonce).
    pub fn seal(&self, token: &Secret) -> Result<Vec<u8>, TokenError> {
        let mut nonce = [0u8; 12];
        lc_rand::fill(&mut nonce).map_err(key_err)?;
        let mut buf = token.expose().as_bytes().to_vec();
        self.seal
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::empty(),
                &mut buf,
            )
            .map_err(key_err)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    pub fn unseal(&self, sealed: &[u8]) -> Option<Secret> {
        let (nonce, body) = sealed.split_at_checked(12)?;
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = body.to_vec();
        let plain = self
            .seal
            .open_in_place(nonce, aead::Aad::empty(), &mut buf)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok().map(Secret::new)
    }
}

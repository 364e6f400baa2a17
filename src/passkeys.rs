//! Passkeys (WebAuthn Level 3) through `webauthn-rs`, kanidm's relying-party library: the
//! relying party as configured, and the ceremonies' options as the browser's JSON API takes
//! them (`PublicKeyCredential.parseCreationOptionsFromJSON` and friends). Every ceremony
//! requires user verification (a PIN or biometric on the device), so a passkey is two factors
//! by itself; attestation is `none`. The flows that use it are in `accounts::passkeys`.

use webauthn_rs::prelude::*;

/// The relying party: `rp_id` (a domain), the name authenticators show, and the origins
/// whose pages may use its passkeys.
pub fn webauthn(rp_id: &str, rp_name: &str, origins: &[Url]) -> Result<Webauthn, WebauthnError> {
    let first = origins.first().ok_or(WebauthnError::Configuration)?;
    if rp_id.parse::<std::net::IpAddr>().is_ok() {
        // WebAuthn binds credentials to a domain; browsers refuse IP addresses.
        return Err(WebauthnError::Configuration);
    }
    // Each origin must be the RP id's domain or under it (the builder checks the first).
    for o in origins {
        let host = o.host_str().unwrap_or("");
        if host != rp_id && !host.ends_with(&format!(".{rp_id}")) {
            return Err(WebauthnError::Configuration);
        }
    }
    let mut b = WebauthnBuilder::new(rp_id, first)?.rp_name(rp_name);
    for o in origins.iter().skip(1) {
        b = b.append_allowed_origin(o);
    }
    b.build()
}

/// Registration options for `user`, asking for a discoverable credential (a passkey the
/// login page can offer by autofill) and user verification.
pub fn registration_options(
    w: &Webauthn,
    user: &crate::store::User,
) -> Result<(serde_json::Value, PasskeyRegistration), WebauthnError> {
    let exclude: Vec<CredentialID> = user
        .factors
        .passkeys
        .iter()
        .map(|p| p.key.cred_id().clone())
        .collect();
    let display = user
        .full_name
        .as_deref()
        .or(user.username.as_deref())
        .unwrap_or(&user.email);
    let (ccr, state) = w.start_passkey_registration(
        user.id,
        &user.email,
        display,
        (!exclude.is_empty()).then_some(exclude),
    )?;
    let mut options =
        serde_json::to_value(&ccr.public_key).map_err(|_| WebauthnError::Configuration)?;
    // webauthn-rs asks for a resident key only as "discouraged" for plain passkeys; the login
    // page's autofill needs one (WebAuthn Level 3, 5.4.6).
    if let Some(sel) = options
        .get_mut("authenticatorSelection")
        .and_then(|v| v.as_object_mut())
    {
        sel.insert("residentKey".into(), "required".into());
        sel.insert("requireResidentKey".into(), true.into());
    }
    Ok((options, state))
}

/// The public-key options of a request, as JSON.
pub fn request_options(rcr: &RequestChallengeResponse) -> Result<serde_json::Value, WebauthnError> {
    serde_json::to_value(&rcr.public_key).map_err(|_| WebauthnError::Configuration)
}

/// The credential id as the API names a passkey (base64url, no padding).
pub fn credential_id(id: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relying_party_is_a_domain_with_its_origins() {
        let o = |s: &str| Url::parse(s).unwrap();
        assert!(webauthn("localhost", "x", &[o("https://localhost:8443")]).is_ok());
        assert!(
            webauthn(
                "example.com",
                "x",
                &[o("https://login.example.com"), o("https://app.example.com")]
            )
            .is_ok()
        );
        assert!(webauthn("127.0.0.1", "x", &[o("https://127.0.0.1:8443")]).is_err());
        assert!(webauthn("other.org", "x", &[o("https://example.com")]).is_err());
        assert!(webauthn("example.com", "x", &[]).is_err());
        // Every origin, not only the first, is under the RP id.
        assert!(
            webauthn(
                "example.com",
                "x",
                &[o("https://login.example.com"), o("https://example.org")]
            )
            .is_err()
        );
    }
}

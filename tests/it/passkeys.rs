//! Passkeys through HTTP with an independent software authenticator and WebAuthn client
//! (1Password's passkey-rs, not the gateway's webauthn-rs): registration, a passwordless
//! sign-in, a passkey as the second factor and to step up, and what a relying party must
//! refuse: another origin, another RP id, a replayed challenge, a cloned authenticator.

use crate::harness::*;
use crate::mail::Smtp;
use crate::seeds::register_verified;
use passkey::authenticator::{
    Authenticator, CredentialStore, DiscoverabilitySupport, StoreInfo, UiHint, UserCheck,
    UserValidationMethod,
};
use passkey::client::{Client, DefaultClientData};
use passkey::crypto::rust_crypto::RustCryptoBackend;
use passkey::types::Passkey;
use passkey::types::ctap2::make_credential::{
    Options, PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity,
};
use passkey::types::ctap2::{Aaguid, Ctap2Error, StatusCode};
use passkey::types::webauthn::{
    CredentialCreationOptions, CredentialRequestOptions, PublicKeyCredentialDescriptor,
};
use reqwest::Method;
use serde_json::{Value, json};

const PW: &str = "correct horse battery staple";
/// The origin of the harness's default `public_url` (the RP id is its host).
const ORIGIN: &str = "https://localhost:8443";

/// A user who is there and verified (a PIN typed, a finger on the sensor).
struct Verified;

#[async_trait::async_trait]
impl UserValidationMethod for Verified {
    type PasskeyItem = Passkey;
    async fn check_user<'a>(
        &self,
        _hint: UiHint<'a, Passkey>,
        presence: bool,
        verification: bool,
    ) -> Result<UserCheck, Ctap2Error> {
        Ok(UserCheck {
            presence,
            verification,
        })
    }
    fn is_presence_enabled(&self) -> bool {
        true
    }
    fn is_verification_enabled(&self) -> Option<bool> {
        Some(true)
    }
}

/// Resident credentials, found by RP id when the request names none (what a platform
/// authenticator or a password manager does; passkey-rs's own `MemoryStore` only looks up
/// the ids it is given).
#[derive(Clone, Default)]
struct Store(std::collections::HashMap<Vec<u8>, Passkey>);

#[async_trait::async_trait]
impl CredentialStore for Store {
    type PasskeyItem = Passkey;

    async fn find_credentials(
        &self,
        ids: Option<&[PublicKeyCredentialDescriptor]>,
        rp_id: &str,
        _user_handle: Option<&[u8]>,
    ) -> Result<Vec<Passkey>, StatusCode> {
        let found: Vec<Passkey> = match ids.filter(|i| !i.is_empty()) {
            Some(ids) => ids
                .iter()
                .filter_map(|d| self.0.get(&*d.id))
                .filter(|p| p.rp_id == rp_id)
                .cloned()
                .collect(),
            None => self
                .0
                .values()
                .filter(|p| p.rp_id == rp_id)
                .cloned()
                .collect(),
        };
        if found.is_empty() {
            Err(Ctap2Error::NoCredentials.into())
        } else {
            Ok(found)
        }
    }

    async fn save_credential(
        &mut self,
        cred: Passkey,
        _user: PublicKeyCredentialUserEntity,
        _rp: PublicKeyCredentialRpEntity,
        _options: Options,
    ) -> Result<(), StatusCode> {
        self.0.insert(cred.credential_id.clone().into(), cred);
        Ok(())
    }

    async fn update_credential(&mut self, cred: &Passkey) -> Result<(), StatusCode> {
        self.0
            .insert(cred.credential_id.clone().into(), cred.clone());
        Ok(())
    }

    async fn get_info(&self) -> StoreInfo {
        StoreInfo {
            discoverability: DiscoverabilitySupport::Full,
        }
    }
}

/// A software authenticator that keeps resident credentials, with a signature counter.
pub struct SoftKey {
    client: Client<Store, Verified, RustCryptoBackend, public_suffix::PublicSuffixList, ()>,
}

impl SoftKey {
    pub fn new() -> Self {
        Self::with_store(Store::default())
    }

    fn with_store(store: Store) -> Self {
        let mut auth = Authenticator::new(Aaguid::new_empty(), store, Verified, RustCryptoBackend);
        auth.set_make_credentials_with_signature_counter(true);
        SoftKey {
            client: Client::new(auth).allows_insecure_localhost(true),
        }
    }

    /// A copy of everything it holds (a cloned authenticator).
    fn clone_store(&self) -> Store {
        self.client.authenticator().store().clone()
    }

    pub async fn create(&mut self, origin: &str, public_key: &Value) -> Value {
        let options: CredentialCreationOptions =
            serde_json::from_value(json!({ "publicKey": public_key })).unwrap();
        let origin = url::Url::parse(origin).unwrap();
        let cred = self
            .client
            .register(&origin, options, DefaultClientData)
            .await
            .unwrap_or_else(|e| panic!("the authenticator registers: {e:?}"));
        serde_json::to_value(cred).unwrap()
    }

    pub async fn get(&mut self, origin: &str, public_key: &Value) -> Value {
        let options: CredentialRequestOptions =
            serde_json::from_value(json!({ "publicKey": public_key })).unwrap();
        let origin = url::Url::parse(origin).unwrap();
        let cred = self
            .client
            .authenticate(&origin, options, DefaultClientData)
            .await
            .unwrap_or_else(|e| panic!("the authenticator answers: {e:?}"));
        serde_json::to_value(cred).unwrap()
    }
}

async fn signed_in(gw: &Gateway, smtp: &Smtp, email: &str) -> String {
    register_verified(gw, smtp, json!({"email": email, "password": PW})).await;
    let (status, v) = gw
        .post("/auth/login", json!({"login": email, "password": PW}))
        .await;
    assert_eq!(status, 200, "{v}");
    v["data"]["access_token"].as_str().unwrap().to_string()
}

/// Registers a passkey from `key` for the signed-in `token`; the passkey's JSON.
async fn add_passkey(gw: &Gateway, token: &str, key: &mut SoftKey, name: &str) -> Value {
    let (status, v) = gw
        .call(
            Method::POST,
            "/auth/passkeys/register/options",
            token,
            Some(json!({"name": name, "current_password": PW})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let pk = &v["data"]["publicKey"];
    assert_eq!(pk["rp"]["id"], "localhost", "{v}");
    assert_eq!(pk["authenticatorSelection"]["residentKey"], "required");
    assert_eq!(pk["authenticatorSelection"]["userVerification"], "required");
    assert_eq!(pk["attestation"], "none");
    let credential = key.create(ORIGIN, pk).await;
    let (status, v) = gw
        .call(
            Method::POST,
            "/auth/passkeys/register",
            token,
            Some(json!({"challenge_id": v["data"]["challenge_id"], "credential": credential})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    v["data"].clone()
}

async fn login_options(gw: &Gateway) -> Value {
    let (status, v) = gw.post("/auth/login/passkey/options", json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["data"]["publicKey"].get("allowCredentials").is_none()
            || v["data"]["publicKey"]["allowCredentials"]
                .as_array()
                .is_some_and(Vec::is_empty),
        "discoverable: no credentials named: {v}"
    );
    v["data"].clone()
}

#[tokio::test]
async fn passkeys_register_and_sign_in_without_a_password() {
    let smtp = Smtp::start();
    let gw = Gateway::start_with("[rate_limit]\nenabled = false\n", Some(&smtp), None).await;
    let token = signed_in(&gw, &smtp, "pk@example.com").await;
    let mut key = SoftKey::new();
    let added = add_passkey(&gw, &token, &mut key, "Laptop").await;
    assert_eq!(added["name"], "Laptop");
    let id = added["id"].as_str().unwrap().to_string();
    // Listed, renamed, counted in /mfa.
    let (status, v) = gw
        .call(
            Method::PATCH,
            &format!("/auth/passkeys/{id}"),
            &token,
            Some(json!({"name": "Work laptop"})),
        )
        .await;
    assert_eq!(
        (status, v["data"]["name"].as_str()),
        (200, Some("Work laptop")),
        "{v}"
    );
    let (_, v) = gw.call(Method::GET, "/auth/mfa", &token, None).await;
    assert_eq!(v["data"]["passkeys"][0]["id"], json!(id), "{v}");
    assert!(v["data"]["passkeys"][0]["last_used_at"].is_null());

    // No password: the options name no credential; the answer names the account.
    let opts = login_options(&gw).await;
    let assertion = key.get(ORIGIN, &opts["publicKey"]).await;
    let (status, v) = gw
        .post(
            "/auth/login/passkey",
            json!({"challenge_id": opts["challenge_id"], "credential": assertion}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let t = v["data"]["access_token"].as_str().unwrap().to_string();
    let (_, v) = gw.call(Method::GET, "/auth/validate", &t, None).await;
    assert_eq!(v["data"]["amr"], json!(["hwk", "mfa"]), "two factors: {v}");
    assert_eq!(v["data"]["email"], "pk@example.com");
    // The same answer again: the challenge is used up.
    let (status, v) = gw
        .post(
            "/auth/login/passkey",
            json!({"challenge_id": opts["challenge_id"], "credential": assertion}),
        )
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (401, Some("INVALID_CREDENTIALS")),
        "{v}"
    );
    // Its answer to a new challenge does not fit either.
    let fresh = login_options(&gw).await;
    let (status, _) = gw
        .post(
            "/auth/login/passkey",
            json!({"challenge_id": fresh["challenge_id"], "credential": assertion}),
        )
        .await;
    assert_eq!(status, 401, "a replayed assertion");
    // The password sign-in now asks for a second factor, a passkey among its methods.
    let (status, v) = gw
        .post(
            "/auth/login",
            json!({"login": "pk@example.com", "password": PW}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["data"]["methods"], json!(["passkey"]), "{v}");
    let (_, v) = gw.call(Method::GET, "/auth/mfa", &t, None).await;
    assert!(v["data"]["passkeys"][0]["last_used_at"].is_string(), "{v}");
    // Removing it takes a two-factor session: the passkey sign-in is one.
    let (status, v) = gw
        .call(Method::DELETE, &format!("/auth/passkeys/{id}"), &t, None)
        .await;
    assert_eq!(status, 200, "{v}");
    let (_, v) = gw.call(Method::GET, "/auth/passkeys", &t, None).await;
    assert_eq!(v["data"], json!([]));
    gw.stop().await;
}

#[tokio::test]
async fn a_passkey_as_the_second_factor_and_to_step_up() {
    let smtp = Smtp::start();
    let up = Upstream::start().await;
    let gw = Gateway::start_with(
        &format!(
            "[rate_limit]\nenabled = false\n[[routes]]\npath_prefix = \"/vault\"\nupstream = \"{}\"\nmfa = true\n",
            up.url()
        ),
        Some(&smtp),
        None,
    )
    .await;
    let token = signed_in(&gw, &smtp, "second@example.com").await;
    let mut key = SoftKey::new();
    add_passkey(&gw, &token, &mut key, "Phone").await;
    // The enrolling session, one factor, steps up with the passkey.
    let r = gw
        .client
        .get(gw.url("/vault/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let opts = login_options(&gw).await;
    let assertion = key.get(ORIGIN, &opts["publicKey"]).await;
    let (status, v) = gw
        .call(
            Method::POST,
            "/auth/mfa/verify",
            &token,
            Some(json!({"challenge_id": opts["challenge_id"], "credential": assertion})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let stepped = v["data"]["access_token"].as_str().unwrap().to_string();
    let r = gw
        .client
        .get(gw.url("/vault/x"))
        .bearer_auth(&stepped)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Password, then the passkey: the options name the account's credentials.
    let (_, v) = gw
        .post(
            "/auth/login",
            json!({"login": "second@example.com", "password": PW}),
        )
        .await;
    let mfa_token = v["data"]["mfa_token"].as_str().unwrap().to_string();
    let (status, v) = gw
        .post(
            "/auth/login/mfa/passkey/options",
            json!({"mfa_token": mfa_token}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["data"]["publicKey"]["allowCredentials"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let challenge = v["data"]["challenge_id"].clone();
    let assertion = key.get(ORIGIN, &v["data"]["publicKey"]).await;
    let (status, v) = gw
        .post(
            "/auth/login/mfa/passkey",
            json!({"mfa_token": mfa_token, "challenge_id": challenge, "credential": assertion}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let t = v["data"]["access_token"].as_str().unwrap().to_string();
    let (_, v) = gw.call(Method::GET, "/auth/validate", &t, None).await;
    assert_eq!(v["data"]["amr"], json!(["pwd", "hwk", "mfa"]), "{v}");
    // The mfa_token is spent.
    let (status, _) = gw
        .post(
            "/auth/login/mfa/passkey/options",
            json!({"mfa_token": mfa_token}),
        )
        .await;
    assert_eq!(status, 401);
    // Another account's passkey does not step this session up.
    let other = signed_in(&gw, &smtp, "other@example.com").await;
    let mut other_key = SoftKey::new();
    add_passkey(&gw, &other, &mut other_key, "Theirs").await;
    let opts = login_options(&gw).await;
    let theirs = other_key.get(ORIGIN, &opts["publicKey"]).await;
    let (status, v) = gw
        .call(
            Method::POST,
            "/auth/mfa/verify",
            &token,
            Some(json!({"challenge_id": opts["challenge_id"], "credential": theirs})),
        )
        .await;
    assert_eq!(status, 401, "{v}");
    gw.stop().await;
}

#[tokio::test]
async fn wrong_origin_wrong_rp_and_a_cloned_authenticator_are_refused() {
    let smtp = Smtp::start();
    let gw = Gateway::start_with("[rate_limit]\nenabled = false\n", Some(&smtp), None).await;
    let token = signed_in(&gw, &smtp, "rp@example.com").await;

    // Registration from another origin (a phishing page relaying the options).
    let (_, v) = gw
        .call(
            Method::POST,
            "/auth/passkeys/register/options",
            &token,
            Some(json!({"current_password": PW})),
        )
        .await;
    let mut key = SoftKey::new();
    let mut pk = v["data"]["publicKey"].clone();
    pk["rp"]["id"] = json!("evil.localhost");
    let phished = key.create("https://evil.localhost", &pk).await;
    let (status, v) = gw
        .call(
            Method::POST,
            "/auth/passkeys/register",
            &token,
            Some(json!({"challenge_id": v["data"]["challenge_id"], "credential": phished})),
        )
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (401, Some("INVALID_CREDENTIALS")),
        "{v}"
    );

    // A real passkey; then its assertions for another origin, and under another RP id.
    let mut key = SoftKey::new();
    add_passkey(&gw, &token, &mut key, "Key").await;
    // Another origin, the right RP id: the client data names the origin the server refuses.
    let opts = login_options(&gw).await;
    let elsewhere = key.get("https://localhost:9999", &opts["publicKey"]).await;
    let (status, v) = gw
        .post(
            "/auth/login/passkey",
            json!({"challenge_id": opts["challenge_id"], "credential": elsewhere}),
        )
        .await;
    assert_eq!(status, 401, "another origin: {v}");
    // The registered credential, used by a phishing site under its own RP id (its signature
    // covers that RP id's hash).
    let mut relabelled = key.clone_store();
    for p in relabelled.0.values_mut() {
        p.rp_id = "evil.localhost".into();
    }
    let mut phisher = SoftKey::with_store(relabelled);
    let opts = login_options(&gw).await;
    let mut pk = opts["publicKey"].clone();
    pk["rpId"] = json!("evil.localhost");
    let wrong_rp = phisher.get("https://evil.localhost", &pk).await;
    let (status, v) = gw
        .post(
            "/auth/login/passkey",
            json!({"challenge_id": opts["challenge_id"], "credential": wrong_rp}),
        )
        .await;
    assert_eq!(status, 401, "another RP id: {v}");

    // A cloned authenticator: both copies sign; the one whose counter goes back is refused.
    let mut clone = SoftKey::with_store(key.clone_store());
    let opts = login_options(&gw).await;
    let a = key.get(ORIGIN, &opts["publicKey"]).await;
    let (status, v) = gw
        .post(
            "/auth/login/passkey",
            json!({"challenge_id": opts["challenge_id"], "credential": a}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let opts = login_options(&gw).await;
    let b = clone.get(ORIGIN, &opts["publicKey"]).await;
    let (status, v) = gw
        .post(
            "/auth/login/passkey",
            json!({"challenge_id": opts["challenge_id"], "credential": b}),
        )
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (401, Some("INVALID_CREDENTIALS")),
        "cloned: {v}"
    );
    // Malformed answers are 4xx envelopes.
    for bad in [
        json!({}),
        json!({"challenge_id": "x", "credential": {}}),
        json!({"challenge_id": 5}),
    ] {
        let (status, v) = gw.post("/auth/login/passkey", bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {v}");
        assert_eq!(v["status"], "error");
    }
    gw.stop().await;
}

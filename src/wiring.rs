//! Wiring: the store, the services and the app they make, from a parsed config.

use crate::accounts::Accounts;
use crate::clock::{SharedClock, SystemClock};
use crate::codes::Codes;
use crate::config::Config;
use crate::http::App;
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::passwords::Passwords;
use crate::policy::RouteTable;
use crate::proxy::{self, IdentityNames, Proxy};
use crate::ratelimit::RateLimits;
use crate::sessions::Sessions;
use crate::store::Store;
use crate::tls;
use crate::tokens::Tokens;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("tokens: {0}")]
    Tokens(#[from] crate::tokens::TokenError),
    #[error("mail: {0}")]
    Mail(#[from] crate::mail::MailError),
    #[error("secret key: {0}")]
    Keyring(#[from] crate::keyring::KeyringError),
    #[error("passwords: {0}")]
    Passwords(#[from] crate::passwords::PasswordError),
    #[error("second factors: {0}")]
    Factors(#[from] crate::second_factor::FactorError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Routes(#[from] crate::policy::RouteError),
    #[error("cannot start a serving thread: {0}")]
    Worker(std::io::Error),
}

/// How many serving threads (and listeners on the main port) to run: one per core.
pub fn serving_threads() -> usize {
    // Sharing the port needs SO_REUSEPORT, a unix option; elsewhere one thread serves.
    if cfg!(unix) {
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    } else {
        1
    }
}

/// What the gateway can be given instead of its defaults (tests inject a manual clock).
#[derive(Debug, Clone)]
pub struct Deps {
    pub clock: SharedClock,
}

impl Default for Deps {
    fn default() -> Self {
        Deps {
            clock: Arc::new(SystemClock),
        }
    }
}

/// The WebAuthn relying party, or none (with a warning) when the public host cannot be one.
fn relying_party(config: &Config) -> Option<webauthn_rs::Webauthn> {
    let (rp_id, origins) = config.webauthn.resolve(&config.server.public_url);
    match crate::passkeys::webauthn(&rp_id, &config.webauthn.rp_name, &origins) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(rp_id, error = %e, "passkeys are off: set webauthn.rp_id to a domain of server.public_url");
            None
        }
    }
}

/// Opens the configured store: the sled directory (made if missing), or the PostgreSQL
/// database (whose schema must be this build's).
pub async fn open_store(config: &Config) -> Result<Store, crate::store::StoreError> {
    if let Some(pg) = config.store.postgres() {
        return Store::connect(&pg).await;
    }
    if let Some(dir) = config
        .store
        .path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| crate::store::StoreError::Engine(format!("{}: {e}", dir.display())))?;
    }
    let store = Store::open(
        &config.store.path,
        config.store.cache_mb.saturating_mul(1024 * 1024),
    )?;
    crate::files::make_private(&config.store.path).map_err(|e| {
        crate::store::StoreError::Engine(format!("{}: {e}", config.store.path.display()))
    })?;
    Ok(store)
}

/// Opens the store and builds the services the handlers call.
pub async fn build_app(
    config: Arc<Config>,
    deps: &Deps,
    metrics: &Metrics,
) -> Result<Arc<App>, StartError> {
    let clock = deps.clock.clone();
    let store = open_store(&config).await?;
    let issuer = config.tokens.issuer(&config.server);
    // The key outside the store: a single instance makes its own on first start; instances
    // sharing a store are all given the same one (config validation insists).
    let keyring = Arc::new(crate::keyring::Keyring::load(
        config.tokens.secret_key.as_ref(),
        &config.tokens.keys_dir,
        !store.is_shared(),
    )?);
    // Instances sharing a store share its signing keys; one instance keeps them as files.
    let tokens = Arc::new(
        if store.is_shared() {
            Tokens::with_store(
                &config.tokens,
                issuer,
                keyring.clone(),
                clock.clone(),
                store.clone(),
            )
            .await?
        } else {
            Tokens::new(&config.tokens, issuer, keyring.clone(), clock.clone())?
        }
        .with_second_factor_roles(config.mfa.required_roles.clone()),
    );
    let sessions =
        Arc::new(Sessions::new(store.clone(), tokens, clock.clone(), &config.tokens).await?);
    let codes = Codes::new(
        &keyring.key(crate::keyring::KeyPurpose::OtpHmac),
        &config.otp,
    );
    let mailer = Mailer::start(&config.mail, metrics)?;
    let passwords = Passwords::new(&config.passwords)?;
    // The dummy hash (for unknown logins) is made now rather than by the first sign-in:
    // callers waiting for it are not counted by `passwords.max_queue`.
    tokio::spawn({
        let passwords = passwords.clone();
        async move {
            if let Err(e) = passwords.warm_up().await {
                tracing::warn!(error = %e, "could not make the dummy password hash yet");
            }
        }
    });
    let limits = Arc::new(RateLimits::new(
        &config.rate_limit,
        deps.clock.clone(),
        metrics,
    ));
    let accounts = Arc::new(Accounts::new(
        store,
        passwords,
        codes,
        mailer,
        sessions.clone(),
        clock,
        config.accounts.clone(),
        config.otp.clone(),
        config.security.reveal_account_existence,
        &keyring,
        limits.clone(),
        crate::second_factor::SecondFactorKeys::new(&keyring, &config.mfa.issuer)?,
        config.mfa.clone(),
        relying_party(&config),
    ));
    let routes = RouteTable::new(&config.routes, metrics)?;
    let upstreams =
        proxy::Upstreams::new(&config.proxy, serving_threads(), routes.origins().to_vec())?;
    let gate = Arc::new(crate::access::Gate::new(
        sessions.clone(),
        crate::access::AccessCookies::of(config.server.cookie_domain.as_deref()),
    ));
    let proxy = Proxy::new(
        Arc::new(upstreams),
        IdentityNames::new(
            &config.identity_headers,
            &config.proxy.keep_override_headers,
        ),
        &config.proxy,
        sessions.clone(),
        limits.clone(),
        crate::http::redirect::LoginPage::new(
            &config.server.public_url,
            &config.server.auth_prefix,
            &config.server.allowed_redirect_hosts,
        ),
        gate,
    );
    Ok(Arc::new(App::new(
        config,
        routes,
        proxy,
        accounts,
        sessions,
        limits,
        metrics.clone(),
    )))
}

//! The command line: `serve` (the default), `check-config`, and admin commands that work on
//! the same store (`user ...`, `sessions revoke`, `keys rotate`).

use crate::accounts::AccountError;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::server::{Deps, build_app};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;

/// An authentication gateway: TLS, accounts, one-time codes and a reverse proxy.
#[derive(Debug, Parser)]
#[command(name = "authgate", version, about)]
pub struct Cli {
    /// Configuration file (TOML). Without it, built-in defaults apply (development mode).
    #[arg(long, short, global = true, env = "AUTHGATE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Validate the configuration and exit; non-zero with the offending key named.
    CheckConfig,
    /// Manage accounts in the store (stop the gateway first: the store is single-process).
    #[command(subcommand)]
    User(UserCommand),
    /// Manage sessions in the store.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Manage token signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Bring the PostgreSQL schema up to this build's (nothing to do for sled). Run once
    /// before the first start and after each upgrade; safe to re-run.
    Migrate,
    /// Move a deployment between stores.
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy every record (accounts, sessions, codes, reset tokens, server secrets, signing
    /// keys) from a sled store to a PostgreSQL database, then check the counts. Stop the
    /// gateway first. Safe to re-run: records with the same keys are replaced.
    Copy {
        /// The sled directory (store.path).
        #[arg(long)]
        from: PathBuf,
        /// postgres://user:password@host:port/database (the schema is migrated first).
        #[arg(long, env = "AUTHGATE_STORE_COPY_TO", hide_env_values = true)]
        to: String,
        /// The sled deployment's signing keys (tokens.keys_dir), so tokens already issued
        /// stay valid.
        #[arg(long)]
        keys_dir: Option<PathBuf>,
        /// Copy even into a database that instances have already served from (their newer
        /// changes would be overwritten by the sled state), or without signing keys.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a verified account (e.g. the first admin: `--role admin`).
    Create(CreateArgs),
    /// List accounts, optionally only those matching a search.
    List {
        #[arg(long, short)]
        query: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Block an account and end its sessions.
    Block { email: String },
    /// Unblock an account (also clears a lockout).
    Unblock { email: String },
    /// Remove an account's second factors (a lost authenticator); its sessions end.
    ResetMfa { email: String },
    /// Replace an account's roles; its sessions end so new tokens carry them.
    SetRoles {
        email: String,
        #[arg(required = true)]
        roles: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(long)]
    pub email: String,
    /// Roles (repeatable); the configured default roles when none.
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// Read the password from standard input (one line). Without it the account signs in by
    /// emailed code only.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// End one session, or every session of the account.
    Revoke {
        #[arg(long)]
        email: String,
        #[arg(long)]
        session: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new signing key: it signs from the gateway's next key reload (within 30 s);
    /// older keys keep verifying until their last token has expired.
    Rotate,
    /// Print a new secret key (base64) for `tokens.secret_key_file`: the key outside the
    /// store that protects codes and tokens in it. Give every instance of a PostgreSQL
    /// deployment the same one, and keep it out of the database and its backups.
    Secret,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Start(#[from] crate::server::StartError),
    #[error("{0}")]
    Account(String),
    #[error("no account with the email {0}")]
    NoSuchUser(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Token(#[from] crate::tokens::TokenError),
}

impl From<AccountError> for CliError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::Invalid(fields) => {
                let list: Vec<String> = fields.iter().map(|(k, v)| format!("{k} {v}")).collect();
                CliError::Account(list.join("; "))
            }
            other => CliError::Account(other.to_string()),
        }
    }
}

/// The secret key of the PostgreSQL instances a copy is made for. Without one configured,
/// the sled deployment's own file is taken, which the instances must then be given (codes
/// and the refresh tokens' MACs depend on it).
fn destination_keyring(
    config: &Config,
    keys_dir: &std::path::Path,
) -> Result<crate::keyring::Keyring, CliError> {
    crate::keyring::Keyring::load(config.tokens.secret_key.as_ref(), keys_dir, false).map_err(|e| {
        CliError::Account(format!(
            "{e}: the PostgreSQL instances' tokens.secret_key (or tokens.secret_key_file) is \
             needed to seal the signing keys, or the sled deployment's {} to reuse",
            crate::keyring::default_path(keys_dir).display()
        ))
    })
}

async fn copy_store(
    from: &std::path::Path,
    to: &str,
    keys_dir: &std::path::Path,
    force: bool,
    config: &Config,
) -> Result<String, CliError> {
    let err = |e: crate::store::StoreError| CliError::Account(e.to_string());
    let source = crate::store::Store::open(from, config.store.cache_mb.saturating_mul(1 << 20))
        .map_err(|e| CliError::Account(format!("{}: {e}", from.display())))?;
    let mut export = source.export().await.map_err(err)?;
    let keys = crate::tokens::key_records_in_dir(keys_dir)?;
    if keys.is_empty() && !force {
        return Err(CliError::Account(format!(
            "no signing keys in {}: every token the sled deployment issued would be refused. \
             Pass --keys-dir (its tokens.keys_dir), or --force to copy without them",
            keys_dir.display()
        )));
    }
    // The destination is a shared store: its signing keys are kept sealed with its
    // instances' secret key (tokens.secret_key), which this copy is given too.
    let keyring = destination_keyring(config, keys_dir)?;
    for (kid, record) in keys {
        if !export.signing_keys.iter().any(|(k, _)| *k == kid) {
            export
                .signing_keys
                .push((kid, crate::tokens::seal_key_record(&record, &keyring)?));
        }
    }
    let opts = crate::store::PgOptions {
        url: to.to_string(),
        tls_ca: config.store.tls_ca.clone(),
        pool_size: 2,
        connect_timeout: config.store.connect_timeout,
        statement_timeout: std::time::Duration::from_secs(600),
    };
    crate::store::Store::migrate(&opts).await.map_err(err)?;
    let dest = crate::store::Store::connect(&opts).await.map_err(err)?;
    // Instances have served from it: copying the sled state again would undo their changes
    // (passwords, blocks, sign-outs) and replace the secrets their codes depend on.
    if dest.session_events_head().await.map_err(err)? > 0 && !force {
        return Err(CliError::Account(
            "the destination has been served from (it records sign-ins): copying again would \
             overwrite newer changes. Pass --force to copy anyway"
                .into(),
        ));
    }
    dest.import(&export).await.map_err(err)?;
    let want = export.counts();
    let got = dest.counts().await.map_err(err)?;
    let short = [
        ("users", want.users, got.users),
        ("codes", want.codes, got.codes),
        ("sessions", want.sessions, got.sessions),
        ("reset tokens", want.reset_tokens, got.reset_tokens),
        ("signing keys", want.signing_keys, got.signing_keys),
    ];
    let mut report = String::from("copied (source → destination):\n");
    for (what, w, g) in short {
        report.push_str(&format!("  {what:<13} {w:>8} → {g:>8}\n"));
    }
    if short.iter().any(|(_, w, g)| g < w) {
        return Err(CliError::Account(format!(
            "{report}the destination holds fewer records than were copied"
        )));
    }
    Ok(report)
}

/// Runs an admin command and returns what to print.
pub async fn run_admin(mut config: Config, command: Command) -> Result<String, CliError> {
    if let Command::Store(StoreCommand::Copy {
        from,
        to,
        keys_dir,
        force,
    }) = command
    {
        let keys_dir = keys_dir.unwrap_or_else(|| config.tokens.keys_dir.clone());
        return copy_store(&from, &to, &keys_dir, force, &config).await;
    }
    if let Command::Migrate = command {
        let Some(pg) = config.store.postgres() else {
            return Ok("store.backend is sled: its schema is made when it opens".into());
        };
        let applied = crate::store::Store::migrate(&pg)
            .await
            .map_err(|e| CliError::Account(e.to_string()))?;
        return Ok(match applied.as_slice() {
            [] => "the schema is up to date".into(),
            v => format!(
                "applied migration(s) {}",
                v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    if let Command::Keys(KeysCommand::Secret) = command {
        return Ok(crate::keyring::generate());
    }
    if let Command::Keys(KeysCommand::Rotate) = command {
        let now = crate::clock::Clock::now(&crate::clock::SystemClock);
        if config.store.postgres().is_some() {
            let store = crate::server::open_store(&config)
                .await
                .map_err(|e| CliError::Account(e.to_string()))?;
            let keyring = destination_keyring(&config, &config.tokens.keys_dir)?;
            let kid = crate::tokens::generate_key_in_store(
                &store,
                config.tokens.algorithm,
                now,
                &keyring,
            )
            .await?;
            return Ok(format!(
                "new {:?} signing key {kid} in the shared store: every instance signs with it \
                 from its next key reload (within 30 s)",
                config.tokens.algorithm
            ));
        }
        let kid =
            crate::tokens::generate_key(&config.tokens.keys_dir, config.tokens.algorithm, now)?;
        return Ok(format!(
            "new {:?} signing key {kid} in {}",
            config.tokens.algorithm,
            config.tokens.keys_dir.display()
        ));
    }
    // An operator at the console is not a login storm: hash at normal priority and wait as long
    // as it takes, even on a machine busy serving.
    config.passwords.priority = crate::config::HashPriority::Normal;
    config.passwords.max_wait = std::time::Duration::from_secs(60);
    let app = build_app(Arc::new(config), &Deps::default(), &Metrics::new()).await.map_err(|e| match e {
        crate::server::StartError::Store(s) if s.to_string().contains("lock") => CliError::Account(format!(
            "{s}: is the gateway running on this store? Stop it, or use the admin API (/auth/admin/)."
        )),
        other => CliError::Start(other),
    })?;
    let accounts = &app.accounts;
    let find = |email: String| async move {
        let norm = crate::accounts::normalize_email(&email)
            .map_err(|m| CliError::Account(format!("email {m}")))?;
        accounts
            .store()
            .user_by_email(&norm)
            .await
            .map_err(AccountError::from)?
            .ok_or(CliError::NoSuchUser(email))
    };
    let out = match command {
        Command::User(UserCommand::Create(a)) => {
            let password = if a.password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                Some(Secret::new(line.trim_end_matches(['\n', '\r'])))
            } else {
                None
            };
            let u = accounts
                .create_verified(&a.email, password.as_ref(), a.roles)
                .await?;
            format!(
                "created {} ({}) with roles {}",
                u.email,
                u.id,
                u.roles.join(",")
            )
        }
        Command::User(UserCommand::List { query, limit }) => {
            let users = accounts
                .store()
                .list_users(query.as_deref(), 0, limit)
                .await
                .map_err(AccountError::from)?;
            let mut out = format!(
                "{:<36}  {:<32}  {:<8}  {:<7}  roles\n",
                "id", "email", "verified", "blocked"
            );
            for u in users {
                out.push_str(&format!(
                    "{:<36}  {:<32}  {:<8}  {:<7}  {}\n",
                    u.id,
                    u.email,
                    u.email_verified,
                    u.blocked,
                    u.roles.join(",")
                ));
            }
            out
        }
        Command::User(UserCommand::Block { email }) => {
            let u = find(email).await?;
            accounts.set_blocked(&u.id, true).await?;
            format!("blocked {}", u.email)
        }
        Command::User(UserCommand::Unblock { email }) => {
            let u = find(email).await?;
            accounts.set_blocked(&u.id, false).await?;
            format!("unblocked {}", u.email)
        }
        Command::User(UserCommand::ResetMfa { email }) => {
            let u = find(email).await?;
            let revoked = accounts.reset_factors(&u.id).await?;
            tracing::info!(target: "audit", event = "admin_action", action = "reset_mfa", admin = "cli", target_user = %u.id, "admin action");
            format!(
                "second factors of {} removed; {revoked} sessions ended",
                u.email
            )
        }
        Command::User(UserCommand::SetRoles { email, roles }) => {
            let u = find(email).await?;
            let u = accounts.set_roles(&u.id, roles).await?;
            format!("{} now has roles {}", u.email, u.roles.join(","))
        }
        Command::Sessions(SessionsCommand::Revoke { email, session }) => {
            let u = find(email).await?;
            let revoked = match session {
                Some(id) => app
                    .sessions
                    .revoke_ids(&u.id, &[id])
                    .await
                    .map_err(AccountError::from)?,
                None => app
                    .sessions
                    .revoke_all(&u.id, None)
                    .await
                    .map_err(AccountError::from)?,
            };
            format!("revoked {} session(s) of {}", revoked.len(), u.email)
        }
        Command::Serve
        | Command::CheckConfig
        | Command::Keys(_)
        | Command::Migrate
        | Command::Store(_) => String::new(),
    };
    Ok(out)
}

//! authgate: an authentication gateway in one binary.
//!
//! It terminates TLS, answers the account endpoints under the auth prefix itself, and forwards
//! every other request to the configured upstream once the route's access rule is met, with
//! the caller's identity in headers. See `README.md` for the story and `config.toml.example`
//! for every setting.

#![forbid(unsafe_code)]

pub mod access;
pub mod access_log;
pub mod accounts;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod codes;
pub mod config;
pub mod connections;
pub mod demo;
pub mod files;
pub mod hosts;
pub mod http;
pub mod identity;
pub mod keyring;
pub mod mail;
pub mod metrics;
pub mod override_names;
pub mod passkeys;
pub mod passwords;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod second_factor;
pub mod secret;
pub mod server;
pub mod sessions;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod tokens;
pub mod ui;
pub mod upkeep;
pub mod urlpath;
pub mod wiring;

pub use config::Config;
pub use server::{Deps, Running, StartError, run_until, start, start_with};

//! The integration test binary: every test boots the real gateway through `harness`.

// Tests say what they expect by panicking; the no-panic rule is for the library.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod accounts;
mod bodies;
mod browser;
mod cli;
mod cluster;
mod code_cooldown;
mod connections;
mod durability;
mod example;
mod external;
mod first_run;
mod forward_auth;
mod frontends;
mod harness;
mod limits;
mod lockout;
mod logs;
mod mail;
mod memory;
mod openapi;
mod pages;
mod passkeys;
mod postgres;
mod proxy;
mod proxy_attacks;
mod refresh_tokens;
mod second_factors;
mod seeds;
mod server;
mod session_limits;
mod store;
mod store_secrets;
mod tokens;

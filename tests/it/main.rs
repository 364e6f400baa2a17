//! The integration test binary: every test boots the real gateway through `harness`.

mod harness;
mod proxy;
mod server;

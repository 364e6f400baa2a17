//! The `authgate` binary: parse the command line, load configuration, run.

use anyhow::Context;
use authgate::config::{Config, ProcessEnv};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// An authentication gateway: TLS, accounts, one-time codes and a reverse proxy.
#[derive(Debug, Parser)]
#[command(name = "authgate", version, about)]
struct Cli {
    /// Configuration file (TOML). Without it, built-in defaults apply.
    #[arg(long, short, global = true, env = "AUTHGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Validate the configuration and exit; non-zero with the offending key named.
    CheckConfig,
}

/// Exit code for a configuration error (EX_CONFIG from sysexits.h).
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref(), &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("authgate: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            println!(
                "configuration ok: {} route(s), listening on {}",
                config.routes.len(),
                config.server.listen
            );
            ExitCode::SUCCESS
        }
        Command::Serve => match serve(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("authgate: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    authgate::telemetry::init(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(authgate::run_until(config, shutdown_signal()))?;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

//! The `authgate` binary: parse the command line, load configuration, run.

use anyhow::Context;
use authgate::cli::{Cli, Command};
use authgate::config::{Config, ProcessEnv};
use clap::Parser;
use std::process::ExitCode;

// mimalloc: every proxied request allocates a dozen times (header maps, read buffers,
// timers); glibc serves the larger of these from its slow path.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a configuration error (EX_CONFIG from sysexits.h).
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    // The store, the outbox, keys and certificates are this user's alone.
    authgate::files::private_umask();
    let cli = Cli::parse();
    let mut config = match Config::load(cli.config.as_deref(), &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("authgate: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if cli.config.is_none() {
        // Development mode (no config file): the demo app when no route is set, and codes
        // also in the log when mail goes to the outbox anyway, so a newcomer can sign in
        // without a mail server. Never with a real mail server configured.
        config.server.demo_upstream = true;
        config.server.metrics_on_main_listener = true;
        if config.mail.smtp_url.is_none() && std::env::var_os("AUTHGATE_MAIL__LOG_CODES").is_none()
        {
            config.mail.log_codes = true;
        }
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            println!(
                "configuration ok: {} route(s), listening on {}",
                config.routes.len(),
                config.server.listen
            );
            ExitCode::SUCCESS
        }
        Command::Serve => report(serve(config)),
        admin => report(runtime().and_then(|rt| {
            let out = rt.block_on(authgate::cli::run_admin(config, admin))?;
            print!("{out}");
            if !out.ends_with('\n') {
                println!();
            }
            Ok(())
        })),
    }
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("authgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn serve(config: Config) -> anyhow::Result<()> {
    // Declared first, dropped last: what the runtime logs while it stops is written out.
    let logging = authgate::telemetry::init(&config.log).with_context(|| {
        format!(
            "opening the log file {}",
            config
                .log
                .file
                .as_deref()
                .unwrap_or("stderr".as_ref())
                .display()
        )
    })?;
    let sink = logging.sink();
    runtime()?.block_on(async move {
        #[cfg(unix)]
        tokio::spawn(authgate::telemetry::reopen_on_hangup(sink));
        #[cfg(not(unix))]
        drop(sink);
        authgate::run_until(config, shutdown_signal()).await
    })?;
    drop(logging);
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

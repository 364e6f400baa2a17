//! Background upkeep: key reloads, session sweeps, limiter purges, and following other
//! instances' sign-outs on a shared store.

use crate::http::App;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Other instances' sign-ins and sign-outs (a shared store), on a task of its own so that no
/// slow upkeep delays them: a sign-out anywhere is refused here within about a second.
fn spawn_follow(app: Arc<App>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing_since: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    let tokens = app.sessions.tokens();
                    if tokens.take_reload_wanted() {
                        match tokio::time::timeout(Duration::from_secs(2), tokens.reload_keys()).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::warn!(error = %e, "cannot reload signing keys"),
                            Err(_) => tracing::warn!("signing keys did not load within 2 s"),
                        }
                    }
                    let polled = tokio::time::timeout(Duration::from_secs(2), app.sessions.follow()).await;
                    match polled {
                        Ok(Ok(_)) => {
                            if let Some(since) = failing_since.take() {
                                tracing::info!(after = ?since.elapsed(), "following the session events again");
                            }
                        }
                        Ok(Err(e)) => {
                            failing_since.get_or_insert_with(crate::clock::monotonic);
                            tracing::warn!(error = %e, "cannot follow the session events: sign-outs on other instances are not seen");
                        }
                        Err(_) => {
                            failing_since.get_or_insert_with(crate::clock::monotonic);
                            tracing::warn!("the session events did not answer within 2 s: sign-outs on other instances are not seen");
                        }
                    }
                }
            }
        }
    });
}

/// Periodic upkeep: pick up rotated signing keys, end expired sessions.
pub fn spawn_upkeep(app: Arc<App>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut keys = tokio::time::interval(Duration::from_secs(30));
        let mut sweep = tokio::time::interval(Duration::from_secs(600));
        let mut purge = tokio::time::interval(Duration::from_secs(60));
        if app.accounts.store().is_shared() {
            spawn_follow(app.clone(), shutdown.clone());
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = keys.tick() => {
                    if let Err(e) = app.sessions.tokens().reload_keys().await {
                        tracing::error!(error = %e, "cannot reload signing keys");
                    }
                }
                _ = purge.tick() => app.limits.purge(),
                _ = sweep.tick() => {
                    if let Err(e) = app.sessions.sweep().await {
                        tracing::error!(error = %e, "cannot sweep expired sessions");
                    }
                    if let Err(e) = app.accounts.store().prune(Duration::from_secs(3600), app.accounts.clock().now()).await {
                        tracing::warn!(error = %e, "cannot prune the session events and cooldowns");
                    }
                }
            }
        }
    });
}

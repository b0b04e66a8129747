//! Patch expiry run by the server on schedule: every [`DEFAULT_INTERVAL`] (or
//! `MYKEY_PATCH_EXPIRY_INTERVAL_SECS`), the open patches (requested, dry-run, approved) whose
//! `expires_at` has passed, per the `patches` read model, are expired through the write model
//! (`expire_patch`, actor `patch-expiry`, role system).
//!
//! Several servers may run it at once: the command id of a patch's expiry is derived from the
//! patch id, so the log deduplicates the second append, and a patch closed in between is
//! refused by the domain (logged at debug, not an error).

use crate::errors::Problem;
use crate::startup::AppState;
use chrono::{DateTime, Utc};
use mykey_commands::{CommandMeta, Commands};
use mykey_projections::models::patches::{self as model, PatchStatus};
use mykey_projections::models::{PageRequest, MAX_LIMIT};
use mykey_projections::Projections;
use mykey_store::pg::PgEventStore;
use std::time::Duration;

/// How often the server looks for expired patches.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Overrides [`DEFAULT_INTERVAL`] (whole seconds, at least 1).
pub const INTERVAL_ENV: &str = "MYKEY_PATCH_EXPIRY_INTERVAL_SECS";
/// The actor id recorded on expiries.
pub const ACTOR: &str = "patch-expiry";
/// Most patches one run expires (the rest wait for the next run).
pub const MAX_PER_RUN: usize = 1_000;

/// The interval from [`INTERVAL_ENV`], else [`DEFAULT_INTERVAL`] (an invalid value is logged).
pub fn interval_from_env() -> Duration {
    interval_from(std::env::var(INTERVAL_ENV).ok().as_deref())
}

fn interval_from(raw: Option<&str>) -> Duration {
    match raw.map(str::trim) {
        None | Some("") => DEFAULT_INTERVAL,
        Some(v) => match v.parse::<u64>() {
            Ok(secs) if secs >= 1 => Duration::from_secs(secs),
            _ => {
                tracing::warn!(
                    value = v,
                    "{INTERVAL_ENV} must be whole seconds >= 1; using the default"
                );
                DEFAULT_INTERVAL
            }
        },
    }
}

/// Starts the schedule on the current runtime; it runs while the server does.
pub fn spawn(state: AppState, interval: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match expire_due(
                &state.store,
                &state.projections,
                &state.read_pool,
                Utc::now(),
            )
            .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "patches expired"),
                Err(p) => tracing::warn!(code = %p.code, "patch expiry run failed"),
            }
        }
    });
}

/// Expires every open patch whose expiry is at or before `now`; how many it expired.
pub async fn expire_due(
    store: &PgEventStore,
    projections: &Projections,
    pool: &deadpool_postgres::Pool,
    now: DateTime<Utc>,
) -> Result<usize, Problem> {
    let Some(schema) = projections.active_schema("patches") else {
        return Ok(0);
    };
    let client = pool.get().await.map_err(Problem::unavailable)?;
    let mut due = Vec::new();
    for status in [
        PatchStatus::Requested,
        PatchStatus::DryRun,
        PatchStatus::Approved,
    ] {
        let mut page = PageRequest::first(Some(MAX_LIMIT)).map_err(|_| Problem::internal())?;
        loop {
            let p = model::list(&**client, &schema, Some(status), &page)
                .await
                .map_err(crate::routes::operations::query_problem)?;
            due.extend(
                p.items
                    .iter()
                    .filter(|v| v.expires_at <= now)
                    .map(|v| v.patch_id),
            );
            match p.next_cursor {
                Some(c) if due.len() < MAX_PER_RUN => {
                    page = PageRequest::new(Some(MAX_LIMIT), Some(&c))
                        .map_err(|_| Problem::internal())?;
                }
                _ => break,
            }
        }
    }
    drop(client);
    let cmds = Commands::new(store.clone());
    let mut expired = 0;
    for patch_id in due.into_iter().take(MAX_PER_RUN) {
        let command_id = crate::http::idempotency::command_id(ACTOR, patch_id);
        let meta = CommandMeta::new(ACTOR, mykey_domain::Role::System, command_id);
        match cmds.expire_patch(&meta, patch_id).await {
            Ok(done) if done.appended > 0 => expired += 1,
            Ok(_) => {}
            Err(e) if e.domain().is_some() => {
                tracing::debug!(%patch_id, code = e.code(), "patch not expired");
            }
            Err(e) => return Err(crate::routes::operations::command_problem(e)),
        }
    }
    Ok(expired)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_comes_from_the_environment_or_the_default() {
        assert_eq!(interval_from(None), DEFAULT_INTERVAL);
        assert_eq!(interval_from(Some("5")), Duration::from_secs(5));
        assert_eq!(interval_from(Some("0")), DEFAULT_INTERVAL);
        assert_eq!(interval_from(Some("x")), DEFAULT_INTERVAL);
    }
}

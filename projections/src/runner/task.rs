//! The task of one projection (attach, follow, rebuild and switch, stop on poison) and the
//! poller that reads the registry and the log's head for everyone.

use super::follow::{self, next_batch, BatchError, Failure, Follower};
use super::registry::{self, SchemaRow, SwitchError};
use super::{RunState, RunnerOptions, Serving, Slot, RETRY_MAX};
use mykey_store::EventStore;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// First wait after a transient failure; doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(200);

pub(super) struct Ctx<S> {
    pub store: S,
    pub pg: tokio_postgres::Config,
    pub slot: Arc<Slot>,
    pub options: RunnerOptions,
    pub shutdown: watch::Receiver<bool>,
    /// Serving schema per projection name, as last read by the poller.
    pub registry: watch::Receiver<BTreeMap<String, SchemaRow>>,
}

enum Outcome {
    Shutdown,
    Reattach,
    Failed(Failure),
    Transient(String),
}

impl From<BatchError> for Outcome {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::Poison(f) => Outcome::Failed(f),
            BatchError::Moved => Outcome::Reattach,
            BatchError::Transient(e) => Outcome::Transient(e),
        }
    }
}

fn transient(e: tokio_postgres::Error) -> Outcome {
    Outcome::Transient(follow::describe(&e))
}

pub(super) async fn run<S: EventStore + Clone + Send + Sync + 'static>(mut ctx: Ctx<S>) {
    let name = ctx.slot.projection.name();
    let mut backoff = RETRY_MIN;
    loop {
        if *ctx.shutdown.borrow() {
            break;
        }
        match follow_log(&mut ctx).await {
            Outcome::Shutdown => break,
            Outcome::Reattach => backoff = RETRY_MIN,
            Outcome::Failed(failure) => {
                tracing::error!(
                    projection = name,
                    position = failure.position,
                    event_type = %failure.event_type,
                    error = %failure.error,
                    "projection stopped on an event it cannot apply"
                );
                ctx.slot.metrics.failed.set(1);
                ctx.slot
                    .serving
                    .send_modify(|s| s.failed_at = Some(failure.position));
                ctx.slot.set_state(RunState::Failed(failure));
                // Stay stopped (the position, type and error stay visible) until shutdown.
                let _ = ctx.shutdown.wait_for(|stop| *stop).await;
                return;
            }
            Outcome::Transient(error) => {
                tracing::warn!(projection = name, %error, "projection retrying");
                ctx.slot.set_state(RunState::Retrying { error });
                tokio::select! {
                    _ = ctx.shutdown.wait_for(|stop| *stop) => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
    ctx.slot.set_state(RunState::Stopped);
}

fn publish(slot: &Slot, row: &SchemaRow) {
    slot.serving.send_modify(|s| {
        *s = Serving {
            schema: Some(row.schema.as_str().into()),
            position: row.position,
            failed_at: None,
        }
    });
    slot.metrics
        .position
        .set(registry::position_param(row.position));
}

/// Attaches to the registry and follows the log until something needs a fresh start.
async fn follow_log<S: EventStore + Clone + Send + Sync + 'static>(ctx: &mut Ctx<S>) -> Outcome {
    let projection = ctx.slot.projection.clone();
    let name = projection.name();
    let mut client = match follow::connect(&ctx.pg, name).await {
        Ok(c) => c,
        Err(e) => return transient(e),
    };
    if let Some(outcome) = lead_or_stand_by(ctx, &client).await {
        return outcome;
    }
    let attached = match registry::attach(&mut client, &*projection, ctx.options.retire_grace).await
    {
        Ok(a) => a,
        Err(e) => return transient(e),
    };
    // While building, the old schema serves (frozen: its code is gone); else the target does.
    let mut serving = attached.serving.clone();
    match &serving {
        Some(old) => publish(&ctx.slot, old),
        None => publish(&ctx.slot, &attached.target),
    }
    let target = attached.target.schema.clone();
    let mut follower = match Follower::new(
        client,
        projection.clone(),
        target.clone(),
        attached.target.position,
    )
    .await
    {
        Ok(f) => f,
        Err(e) => return transient(e),
    };
    ctx.slot.filled.store(follower.position, Ordering::Relaxed);
    ctx.slot.set_state(match serving {
        Some(_) => RunState::Rebuilding {
            schema: target.clone(),
            position: follower.position,
        },
        None => RunState::Following,
    });
    let mut subscription = ctx.store.subscribe(follower.position + 1);
    loop {
        if let Some(old) = serving.clone() {
            if subscription.is_empty() {
                match switch_if_caught_up(ctx, &mut follower, &old).await {
                    Ok(true) => {
                        serving = None;
                        ctx.slot.set_state(RunState::Following);
                    }
                    Ok(false) => {}
                    Err(outcome) => return outcome,
                }
            }
        }
        let batch = tokio::select! {
            biased;
            _ = ctx.shutdown.wait_for(|stop| *stop) => return Outcome::Shutdown,
            changed = ctx.registry.changed(), if serving.is_none() => {
                if changed.is_err() {
                    return Outcome::Shutdown;
                }
                // Another process switched this projection to another schema: follow that.
                let moved = ctx
                    .registry
                    .borrow_and_update()
                    .get(name)
                    .is_some_and(|s| s.schema != target);
                if moved {
                    return Outcome::Reattach;
                }
                continue;
            }
            batch = next_batch(&mut subscription, ctx.options.batch_max) => batch,
        };
        let events = match batch {
            Ok(e) => e,
            Err(e) => return e.into(),
        };
        match follower.apply(&events).await {
            Ok(()) => {}
            Err(BatchError::Poison(failure)) => {
                // An SQL error may come from the schema having been dropped by a switch
                // elsewhere: only a schema that still serves (or builds) is poisoned.
                return match registry::schema_row(&follower.client, &target).await {
                    Ok(Some(row)) if row.state != registry::State::Retired => {
                        Outcome::Failed(failure)
                    }
                    Ok(_) => Outcome::Reattach,
                    Err(e) => transient(e),
                };
            }
            Err(e) => return e.into(),
        }
        let committed = chrono::Utc::now();
        for e in &events {
            let delay = (committed - e.recorded_at).num_microseconds().unwrap_or(0);
            ctx.slot.metrics.delay.observe(delay.max(0) as f64 / 1e6);
        }
        ctx.slot.metrics.applied.inc_by(events.len() as u64);
        ctx.slot.filled.store(follower.position, Ordering::Relaxed);
        if serving.is_none() {
            let position = follower.position;
            ctx.slot.serving.send_modify(|s| s.position = position);
            ctx.slot
                .metrics
                .position
                .set(registry::position_param(position));
        } else {
            ctx.slot.set_state(RunState::Rebuilding {
                schema: target.clone(),
                position: follower.position,
            });
        }
    }
}

/// One runner per projection across all processes applies the log: the one holding the
/// projection's session advisory lock on its connection (released when the connection or the
/// process dies). Another process stands by, publishing the serving schema and checkpoint the
/// registry shows (so its readers and `wait_for` see the leader's progress within a poll
/// interval), and takes over when the lock comes free. Returns None once this one leads.
async fn lead_or_stand_by<S>(ctx: &mut Ctx<S>, client: &tokio_postgres::Client) -> Option<Outcome> {
    let name = ctx.slot.projection.name();
    let mut announced = false;
    loop {
        let locked = client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtext('mykey_runner:' || $1))",
                &[&name],
            )
            .await
            .and_then(|r| r.try_get::<_, bool>(0));
        match locked {
            Ok(true) => return None,
            Ok(false) => {}
            Err(e) => return Some(transient(e)),
        }
        if !announced {
            announced = true;
            ctx.slot.set_state(RunState::Standby);
        }
        if let Some(row) = ctx.registry.borrow_and_update().get(name) {
            publish(&ctx.slot, row);
            ctx.slot.filled.store(row.position, Ordering::Relaxed);
        }
        tokio::select! {
            _ = ctx.shutdown.wait_for(|stop| *stop) => return Some(Outcome::Shutdown),
            changed = ctx.registry.changed() => {
                if changed.is_err() {
                    return Some(Outcome::Shutdown);
                }
            }
            // The leader may stop while nothing changes: try the lock again anyway.
            _ = tokio::time::sleep(ctx.options.poll_interval) => {}
        }
    }
}

/// Switches readers to the schema being built once it holds the whole log. Ok(true) when it
/// switched.
async fn switch_if_caught_up<S: EventStore + Clone + Send + Sync + 'static>(
    ctx: &Ctx<S>,
    follower: &mut Follower,
    old: &SchemaRow,
) -> Result<bool, Outcome> {
    let head = ctx
        .store
        .head()
        .await
        .map_err(|e| Outcome::Transient(e.to_string()))?;
    if follower.position < head {
        return Ok(false);
    }
    let name = ctx.slot.projection.name();
    match registry::switch(
        &mut follower.client,
        name,
        Some(&old.schema),
        &follower.schema,
    )
    .await
    {
        Ok(()) => {
            tracing::info!(
                projection = name,
                from = %old.schema,
                to = %follower.schema,
                position = follower.position,
                "rebuilt projection now serves"
            );
            publish(
                &ctx.slot,
                &SchemaRow {
                    schema: follower.schema.clone(),
                    version: ctx.slot.projection.version(),
                    state: registry::State::Active,
                    position: follower.position,
                },
            );
            spawn_retire(
                ctx.pg.clone(),
                name,
                old.schema.clone(),
                ctx.options.retire_grace,
                ctx.shutdown.clone(),
            );
            Ok(true)
        }
        Err(SwitchError::Lost) => {
            // Another builder won: this schema will never serve.
            let _ = registry::drop_schema(&mut follower.client, name, &follower.schema).await;
            Err(Outcome::Reattach)
        }
        Err(SwitchError::Db(e)) => Err(transient(e)),
    }
}

/// Drops `schema` after `grace` (readers that resolved it just before the switch finish
/// first). If the process stops before, the next attach drops it.
pub(super) fn spawn_retire(
    pg: tokio_postgres::Config,
    name: &'static str,
    schema: String,
    grace: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = tokio::time::sleep(grace) => {}
        }
        let result = match follow::connect(&pg, name).await {
            Ok(mut client) => registry::drop_schema(&mut client, name, &schema).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(projection = name, %schema, error = %follow::describe(&e), "cannot drop a retired schema; the next start will");
        }
    });
}

/// Every `interval`: which schema serves each projection (switches made by other processes),
/// and each projection's lag behind the log's head.
pub(super) async fn poll<S: EventStore + Clone + Send + Sync + 'static>(
    client: tokio_postgres::Client,
    store: S,
    slots: Vec<Arc<Slot>>,
    registry_tx: watch::Sender<BTreeMap<String, SchemaRow>>,
    mut shutdown: watch::Receiver<bool>,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = ticker.tick() => {}
        }
        match registry::all_active(&client).await {
            Ok(rows) => {
                let map: BTreeMap<String, SchemaRow> = rows.into_iter().collect();
                registry_tx.send_if_modified(|old| {
                    let changed = *old != map;
                    *old = map;
                    changed
                });
            }
            Err(e) => {
                tracing::warn!(error = %follow::describe(&e), "cannot read the read-model registry")
            }
        }
        let head = match store.head().await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the log's head for projection lag");
                continue;
            }
        };
        for slot in &slots {
            let filled = slot.filled.load(Ordering::Relaxed);
            let behind = head.saturating_sub(filled);
            let seconds = if behind == 0 {
                0.0
            } else {
                match store.read_all(filled + 1, 1).await {
                    Ok(next) => next.first().map_or(0.0, |e| {
                        let age = chrono::Utc::now() - e.recorded_at;
                        age.num_milliseconds().max(0) as f64 / 1e3
                    }),
                    Err(_) => 0.0,
                }
            };
            *slot.lag.lock().unwrap_or_else(|p| p.into_inner()) = (behind, seconds);
            slot.metrics
                .lag_events
                .set(registry::position_param(behind));
            slot.metrics.lag_seconds.set(seconds);
        }
    }
}

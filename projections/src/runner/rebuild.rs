//! A rebuild by hand (`mykey-server rebuild <projection>`): a fresh generation built from
//! position 1 while the current schema keeps serving (and a running server keeps updating
//! it), then the same atomic switch as a background rebuild, then the old schema dropped
//! after the grace period. A running server sees the switch within its poll interval and
//! follows the new schema from its checkpoint.

use super::follow::{self, next_batch, BatchError, Follower};
use super::registry::{self, SwitchError};
use super::{check_name, RunnerError, RunnerOptions};
use crate::Projection;
use mykey_store::EventStore;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a rebuild is, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildProgress {
    pub position: u64,
    /// The log's head when last read (it moves while the rebuild runs).
    pub head: u64,
}

/// What a finished rebuild did.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildReport {
    pub schema: String,
    pub replaced: Option<String>,
    pub position: u64,
    pub elapsed: Duration,
}

impl RebuildReport {
    pub fn events_per_second(&self) -> f64 {
        self.position as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Rebuilds `projection` into a fresh schema and switches readers to it. `progress` is called
/// after every batch. On failure the new schema is dropped and the old one keeps serving.
pub async fn rebuild<S: EventStore>(
    store: &S,
    pg: &tokio_postgres::Config,
    projection: Arc<dyn Projection>,
    options: &RunnerOptions,
    mut progress: impl FnMut(RebuildProgress),
) -> Result<RebuildReport, RunnerError> {
    check_name(projection.name())?;
    let name = projection.name();
    let mut client = follow::connect(pg, name).await?;
    registry::ensure(&mut client).await?;
    let attached = registry::begin_rebuild(&mut client, &*projection).await?;
    let schema = attached.target.schema.clone();
    let started = Instant::now();
    let mut follower = Follower::new(client, projection.clone(), schema.clone(), 0).await?;
    let result = fill_and_switch(
        store,
        &mut follower,
        attached.serving.as_ref().map(|s| s.schema.as_str()),
        options,
        &mut progress,
    )
    .await;
    if let Err(e) = result {
        // Best effort: an abandoned build is also dropped by the next attach of another version.
        let mut client = follow::connect(pg, name).await?;
        if let Err(d) = registry::drop_schema(&mut client, name, &schema).await {
            tracing::warn!(%schema, error = %follow::describe(&d), "cannot drop the abandoned build");
        }
        return Err(e);
    }
    let report = RebuildReport {
        schema,
        replaced: attached.serving.map(|s| s.schema),
        position: follower.position,
        elapsed: started.elapsed(),
    };
    if let Some(old) = &report.replaced {
        tokio::time::sleep(options.retire_grace).await;
        let mut client = follow::connect(pg, name).await?;
        registry::drop_schema(&mut client, name, old).await?;
    }
    Ok(report)
}

async fn fill_and_switch<S: EventStore>(
    store: &S,
    follower: &mut Follower,
    serving: Option<&str>,
    options: &RunnerOptions,
    progress: &mut impl FnMut(RebuildProgress),
) -> Result<(), RunnerError> {
    let name = follower.projection_name();
    let mut subscription = store.subscribe(1);
    let mut head = store.head().await?;
    let mut head_read = Instant::now();
    loop {
        if follower.position >= head && subscription.is_empty() {
            head = store.head().await?;
            if follower.position >= head {
                return match registry::switch(&mut follower.client, name, serving, &follower.schema)
                    .await
                {
                    Ok(()) => Ok(()),
                    Err(SwitchError::Lost) => Err(RunnerError::Superseded(name.to_owned())),
                    Err(SwitchError::Db(e)) => Err(e.into()),
                };
            }
        }
        let events = next_batch(&mut subscription, options.batch_max)
            .await
            .map_err(batch_error)?;
        follower.apply(&events).await.map_err(batch_error)?;
        if head_read.elapsed() >= options.poll_interval {
            head = store.head().await?;
            head_read = Instant::now();
        }
        head = head.max(follower.position);
        progress(RebuildProgress {
            position: follower.position,
            head,
        });
    }
}

fn batch_error(e: BatchError) -> RunnerError {
    match e {
        BatchError::Poison(f) => RunnerError::Failed(f),
        BatchError::Moved => {
            RunnerError::Db("the rebuild's checkpoint was moved by another process".into())
        }
        BatchError::Transient(e) => RunnerError::Db(e),
    }
}

//! A child process for the projection crash test (`tests/it/projections.rs`): runs the
//! projection runner with the test projection `Counts` over the database at `DATABASE_URL`,
//! in small batches (`BATCH_MAX`), until it is killed. `COUNTS_VERSION` (default 1) picks the
//! projection's version; its weight is the version, so versions give different answers.

#[allow(dead_code)]
#[path = "../it/projections/fixtures.rs"]
mod fixtures;

use mykey_projections::{Projections, RunnerOptions};
use mykey_store::pg::{PgEventStore, PgStoreOptions};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("projection_runner: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = tokio_postgres::Config::from_str(&std::env::var("DATABASE_URL")?)?;
    let batch_max = std::env::var("BATCH_MAX")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(mykey_projections::runner::DEFAULT_BATCH_MAX);
    let version: u32 = std::env::var("COUNTS_VERSION")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let store = PgEventStore::connect(config.clone(), PgStoreOptions::default()).await?;
    let projections = Projections::start(
        store,
        config,
        vec![Arc::new(fixtures::Counts {
            version,
            weight: i64::from(version),
        })],
        &prometheus::Registry::new(),
        RunnerOptions {
            batch_max,
            ..RunnerOptions::default()
        },
    )
    .await?;
    println!("started");
    // Runs until SIGKILLed; a clean stop is not what this process is for.
    std::future::pending::<()>().await;
    drop(projections);
    Ok(())
}

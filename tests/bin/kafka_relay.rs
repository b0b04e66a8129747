//! A relay process for the Kafka tests (`tests/it/kafka.rs` kills it with SIGKILL, or runs two
//! of them): runs the relay on `DATABASE_URL` and `KAFKA_*`, and prints its state
//! (`standby`, `leading`) on its own line, flushed, each time it changes, until killed.

use mykey_projections::kafka::{self, KafkaSettings, RelayState};
use mykey_store::pg::{PgEventStore, PgStoreOptions};
use std::io::Write;
use std::process::ExitCode;
use std::str::FromStr;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kafka_relay: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL is not set")?;
    let pg = tokio_postgres::Config::from_str(&url).map_err(|e| e.to_string())?;
    let settings = KafkaSettings::from_lookup(|k| std::env::var(k).ok())
        .map_err(|e| e.to_string())?
        .ok_or("KAFKA_BROKERS is not set")?;
    let store = PgEventStore::connect(pg.clone(), PgStoreOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let registry = prometheus::Registry::new();
    let relay = kafka::start(store, pg, settings, &registry)
        .await
        .map_err(|e| e.to_string())?;
    let mut state = relay.state();
    loop {
        let now = *state.borrow_and_update();
        let line = match now {
            RelayState::Standby => "standby",
            RelayState::Leading => "leading",
            RelayState::Stopped => return Err("the relay stopped".into()),
        };
        let mut out = std::io::stdout();
        writeln!(out, "{line}")
            .and_then(|_| out.flush())
            .map_err(|e| format!("stdout closed: {e}"))?;
        state
            .changed()
            .await
            .map_err(|_| "the relay ended".to_owned())?;
    }
}

//! A child process for the crash test (`tests/it/store.rs`): appends to the PostgreSQL log
//! at `DATABASE_URL` from many concurrent tasks (multi-event, multi-stream commands) and
//! prints each acknowledged command id on its own line, flushed, until it is killed.

use mykey_schemas::{EventMetadata, NewEvent, StreamId};
use mykey_store::pg::{PgEventStore, PgStoreOptions};
use mykey_store::{AppendRequest, EventStore, ExpectedVersion, StreamAppend};
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Concurrent appending tasks: enough that batches hold many requests when the kill lands.
const TASKS: usize = 32;

/// Stop on our own after this many commands per task, should the parent never kill us.
const MAX_COMMANDS_PER_TASK: usize = 20_000;

fn request(rng: &mut impl Rng, task: usize) -> Result<AppendRequest, String> {
    let stream_count = rng.gen_range(1..=3);
    let mut streams: Vec<StreamAppend> = Vec::new();
    while streams.len() < stream_count {
        // Shared streams make tasks contend; `Any` keeps them from conflicting.
        let id = if rng.gen_bool(0.5) {
            format!("shared{}", rng.gen_range(0..4))
        } else {
            format!("t{task}x{}", rng.gen_range(0..8))
        };
        let stream = StreamId::new("load", id).map_err(|e| e.to_string())?;
        if streams.iter().any(|s| s.stream == stream) {
            continue;
        }
        let events = (0..rng.gen_range(1..=4))
            .map(|i| NewEvent {
                event_id: Uuid::new_v4(),
                event_type: "LoadHappened".into(),
                schema_version: 1,
                payload: format!("{{\"task\":{task},\"i\":{i}}}"),
            })
            .collect();
        streams.push(StreamAppend {
            stream,
            expected: ExpectedVersion::Any,
            events,
        });
    }
    Ok(AppendRequest {
        metadata: EventMetadata {
            actor_id: format!("load-{task}"),
            actor_role: "system".into(),
            command_id: Uuid::new_v4(),
            correlation_id: Uuid::new_v4(),
            causation_id: Uuid::new_v4(),
            patch_id: None,
            client_addr: None,
        },
        streams,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let url = match std::env::var("DATABASE_URL") {
        Ok(u) => u,
        Err(_) => {
            eprintln!("load_writer: DATABASE_URL is not set");
            return ExitCode::FAILURE;
        }
    };
    let config = match tokio_postgres::Config::from_str(&url) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("load_writer: bad DATABASE_URL: {e}");
            return ExitCode::FAILURE;
        }
    };
    let store = match PgEventStore::connect(config, PgStoreOptions::default()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("load_writer: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stdout = Arc::new(Mutex::new(std::io::stdout()));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        let stdout = stdout.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::from_entropy();
            for _ in 0..MAX_COMMANDS_PER_TASK {
                let r = request(&mut rng, task)?;
                let id = r.command_id();
                match store.append(r).await {
                    Ok(_) => {
                        // Printed only after the append is acknowledged (committed).
                        let mut out = stdout.lock().unwrap_or_else(|p| p.into_inner());
                        writeln!(out, "{id}")
                            .and_then(|_| out.flush())
                            .map_err(|e| format!("stdout closed: {e}"))?;
                    }
                    Err(e) => eprintln!("load_writer: append failed: {e}"),
                }
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("load_writer: {e}");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("load_writer: task failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

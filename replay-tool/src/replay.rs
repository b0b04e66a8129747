//! `mykey-replay replay`: rebuilds one projection — the very code the server runs,
//! `mykey_projections::models::all()` — as of a global position or a time, into a scratch
//! schema ([`crate::scratch`]), from PostgreSQL or from an NDJSON export.
//!
//! Rows are written the way the runner writes them: `exec::create_schema` makes the tables,
//! the projection's pure `apply` describes each event's changes, and the runner's
//! `exec::Executor` runs them pipelined, one transaction per batch of [`BATCH_EVENTS`]. Only the
//! projection's categories are decoded, as in the runner. Live tables are never written: the
//! scratch schema's name is checked against the runner's registry, and the session's
//! `search_path` names only the scratch schema.
//!
//! From a file the hash chain is checked as it is read (the same [`ChainChecker`] as
//! `verify`), and an event is applied only once it verified: a broken file stops the replay
//! with the verify error and the scratch schema is dropped. Signatures (manifest checkpoint,
//! saved checkpoints) are `verify`'s job.

use crate::applier::Applier;
use crate::db::{Db, Selection};
use crate::manifest::{Manifest, FORMAT};
use crate::pipeline;
use crate::progress::{Progress, Unit};
use crate::scratch::{self, pg_err, TableCount};
use crate::{emit, Outcome, ToolError};
use chrono::{DateTime, Utc};
use clap::Args;
use mykey_projections::Projection;
use mykey_schemas::EventEnvelope;
use mykey_store::verify::ChainChecker;
use serde::Serialize;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_postgres::Client;

/// Events per transaction: the runner's batch size, for the same commit amortisation.
pub const BATCH_EVENTS: usize = mykey_projections::runner::DEFAULT_BATCH_MAX;

/// Parsed file batches queued between the reader thread and the applier.
const FILE_QUEUE: usize = 4;

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// The projection to rebuild (`ppids`, `subjects`, `relying_parties`, ...).
    pub projection: String,
    /// The database the scratch schema is written to; also the event source without --file.
    #[arg(long)]
    pub database_url: String,
    /// Replay from an NDJSON export (its chain is verified while it is read) instead of the
    /// database's log. The export must start at position 1 and select the whole log.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Replay up to this global position (default: the whole log or file).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "as_of")]
    pub to_position: Option<u64>,
    /// Replay up to the last event recorded at or before this time (RFC 3339, e.g.
    /// 2026-11-01T00:00:00+09:00).
    #[arg(long, value_parser = parse_time)]
    pub as_of: Option<DateTime<Utc>>,
    /// The scratch schema to create (default replay_<projection>_<UTC time>); must not exist.
    #[arg(long)]
    pub schema: Option<String>,
    /// Drop the scratch schema after printing the summary.
    #[arg(long)]
    pub drop: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// An RFC 3339 time.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{e}: expected RFC 3339, e.g. 2026-11-01T00:00:00+09:00"))
}

/// What a finished replay built.
#[derive(Debug, Clone, Serialize)]
pub struct ReplaySummary {
    pub projection: &'static str,
    pub version: u32,
    pub schema: String,
    pub source: String,
    /// Events read from the source (every category).
    pub events_read: u64,
    /// Events of the projection's categories, decoded and applied.
    pub events_applied: u64,
    /// The last global position replayed.
    pub position: u64,
    pub tables: Vec<TableCount>,
    pub elapsed_seconds: f64,
    pub events_per_second: f64,
    /// The scratch schema was dropped after the summary (`--drop`).
    pub dropped: bool,
}

/// How a replay ended.
#[derive(Debug, Clone)]
pub enum Replayed {
    Done(ReplaySummary),
    /// The export does not verify: the replay stopped and its schema was dropped.
    Broken(String),
}

pub async fn run(args: &ReplayArgs, out: &mut dyn Write) -> Result<Outcome, ToolError> {
    match replay(args).await? {
        Replayed::Broken(why) => {
            emit(out, format!("FAILED: the export does not verify: {why}"))?;
            Ok(Outcome::Failed)
        }
        Replayed::Done(s) if args.json => {
            let text =
                serde_json::to_string_pretty(&s).map_err(|e| ToolError::io("stdout", e.into()))?;
            emit(out, text)?;
            Ok(Outcome::Done)
        }
        Replayed::Done(s) => {
            emit(out, format!("source: {}", s.source))?;
            emit(
                out,
                format!(
                    "replayed {} v{} to position {}: {} events read, {} applied ({:.0} events/s)",
                    s.projection,
                    s.version,
                    s.position,
                    s.events_read,
                    s.events_applied,
                    s.events_per_second
                ),
            )?;
            for t in &s.tables {
                emit(out, format!("  {}.{}: {} rows", s.schema, t.table, t.rows))?;
            }
            emit(
                out,
                if s.dropped {
                    format!("schema {} (dropped)", s.schema)
                } else {
                    format!("schema {}", s.schema)
                },
            )?;
            Ok(Outcome::Done)
        }
    }
}

/// The projection of `models::all()` named `name`.
pub fn projection(name: &str) -> Result<Arc<dyn Projection>, ToolError> {
    let all = mykey_projections::models::all();
    let names: Vec<&str> = all.iter().map(|p| p.name()).collect();
    let known = names.join(", ");
    all.into_iter()
        .find(|p| p.name() == name)
        .ok_or_else(|| ToolError::Usage(format!("no projection named {name:?} (known: {known})")))
}

/// Replays without printing (progress goes to stderr).
pub async fn replay(args: &ReplayArgs) -> Result<Replayed, ToolError> {
    let projection = projection(&args.projection)?;
    let schema = match &args.schema {
        Some(s) => s.clone(),
        None => scratch::default_name(projection.name(), Utc::now()),
    };
    scratch::check_name(&schema)?;
    if let Some(f) = &args.file {
        // Refuse an unreadable file before anything is created.
        std::fs::metadata(f).map_err(|e| ToolError::io(f.display(), e))?;
    }
    let client = scratch::connect(&args.database_url).await?;
    scratch::check_free(&client, &schema).await?;
    // The log's range is settled before anything is created (and before the session's
    // search_path names the scratch schema only).
    let db_source = match &args.file {
        None => Some(db_target(&client, args).await?),
        Some(_) => None,
    };
    let source = match &args.file {
        Some(f) => f.display().to_string(),
        None => "PostgreSQL".to_owned(),
    };
    let mut applier = Applier::create(client, projection, schema.clone(), &source).await?;
    let started = Instant::now();
    let result = match (db_source, &args.file) {
        (Some((db, target)), _) => from_db(&db, target, &mut applier).await.map(|()| None),
        (None, Some(f)) => from_file(f, args, &mut applier).await,
        (None, None) => Ok(None),
    };
    let broken = match result {
        Ok(broken) => broken,
        Err(e) => {
            applier.abandon().await;
            return Err(e);
        }
    };
    if let Some(why) = broken {
        applier.abandon().await;
        return Ok(Replayed::Broken(why));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut marker = applier.marker.clone();
    marker.position = applier.position;
    marker.complete = true;
    scratch::mark(&applier.client, &schema, &marker).await?;
    let tables = scratch::counts(&applier.client, &schema).await?;
    if args.drop {
        scratch::drop_schema(&applier.client, &schema).await?;
    }
    Ok(Replayed::Done(ReplaySummary {
        projection: applier.projection.name(),
        version: applier.projection.version(),
        schema,
        source,
        events_read: applier.read,
        events_applied: applier.applied,
        position: applier.position,
        tables,
        elapsed_seconds: elapsed,
        events_per_second: applier.read as f64 / elapsed.max(1e-9),
        dropped: args.drop,
    }))
}

/// The log to read and the last position to replay: `--to-position`, the last event
/// recorded at or before `--as-of`, or the head.
async fn db_target(client: &Client, args: &ReplayArgs) -> Result<(Arc<Db>, u64), ToolError> {
    let db = Db::connect(&args.database_url).await?;
    let head = db.head().await?;
    let target = match (args.to_position, args.as_of) {
        (Some(p), _) if p > head => {
            return Err(ToolError::Usage(format!(
                "--to-position {p}: the log ends at position {head}"
            )))
        }
        (Some(p), _) => p,
        // recorded_at never decreases along the log (the writer takes the later of the
        // clock and the tail's time), so this is a prefix of the log.
        (None, Some(t)) => {
            let row = client
                .query_one(
                    "SELECT coalesce(max(global_position), 0) FROM events WHERE recorded_at <= $1",
                    &[&t],
                )
                .await
                .map_err(pg_err)?;
            u64::try_from(row.try_get::<_, i64>(0).map_err(pg_err)?).unwrap_or(0)
        }
        (None, None) => head,
    };
    Ok((db, target))
}

/// From the log in PostgreSQL: keyset pages up to `target`.
async fn from_db(db: &Arc<Db>, target: u64, applier: &mut Applier) -> Result<(), ToolError> {
    let mut progress = Progress::new("replay", Some(target), Unit::Events);
    if target > 0 {
        let mut pages = db.pages(Selection {
            from: 1,
            to: target,
            ..Selection::default()
        });
        while let Some(page) = pages.recv().await {
            let page = page?;
            for chunk in page.chunks(BATCH_EVENTS) {
                applier.apply(chunk).await?;
            }
            progress.advance(page.len() as u64, page.len() as u64);
        }
    }
    progress.finish();
    if applier.position != target {
        return Err(ToolError::Db(format!(
            "the log ended at position {} before position {target} (verify it)",
            applier.position
        )));
    }
    Ok(())
}

/// From an export: parsed and hashed on other threads, chain-checked here in order, applied
/// once verified. Returns the verify error when the file is broken.
async fn from_file(
    file: &Path,
    args: &ReplayArgs,
    applier: &mut Applier,
) -> Result<Option<String>, ToolError> {
    let manifest = read_manifest(file)?;
    let f = std::fs::File::open(file).map_err(|e| ToolError::io(file.display(), e))?;
    let size = f.metadata().map(|m| m.len()).ok();
    let (tx, mut rx) = mpsc::channel(FILE_QUEUE);
    // The pipeline's results arrive on a blocking channel: forward them from a thread of
    // their own so no runtime worker blocks (the database connections run on those).
    std::thread::spawn(move || {
        for batch in pipeline::spawn(BufReader::with_capacity(1 << 20, f)) {
            if tx.blocking_send(batch).is_err() {
                return;
            }
        }
    });
    let target = args.to_position.unwrap_or(u64::MAX);
    // A replay needs the log from its first event.
    let mut checker = ChainChecker::new(1);
    let mut progress = Progress::new("replay", size, Unit::Bytes);
    let mut verified: Vec<EventEnvelope> = Vec::with_capacity(BATCH_EVENTS);
    let mut stopped = false;
    let mut last_bytes = 0;
    'batches: while let Some(batch) = rx.recv().await {
        let batch = batch.map_err(|e| ToolError::io(file.display(), e))?;
        let lines = batch.lines.len() as u64;
        for parsed in batch.lines {
            let (line, e, hash) = match parsed {
                Ok(ok) => ok,
                Err(corrupt) => return Ok(Some(corrupt.to_string())),
            };
            if e.global_position > target || args.as_of.is_some_and(|t| e.recorded_at > t) {
                stopped = true;
                break 'batches;
            }
            if let Some(b) = checker.check_hashed(&e, Some(hash)) {
                return Ok(Some(format!(
                    "line {line}: {} ({})",
                    b.explain(),
                    b.kind.label()
                )));
            }
            // An event ahead of its position is held by the checker until the next one says
            // whether it was moved or the one due is missing: either way a break follows.
            if checker.expected_position() == e.global_position + 1 {
                verified.push(e);
                if verified.len() >= BATCH_EVENTS {
                    applier.apply(&verified).await?;
                    verified.clear();
                }
            }
        }
        progress.advance(lines, batch.bytes_read - last_bytes);
        last_bytes = batch.bytes_read;
    }
    drop(rx);
    progress.finish();
    let reached = checker.expected_position().saturating_sub(1);
    let end_break = match (&manifest, args.to_position) {
        _ if stopped => checker.finish(reached),
        (_, Some(p)) => checker.finish(p),
        (Some(m), None) => checker.finish_truncated(m.last_position.unwrap_or(0)),
        (None, None) => checker.finish(0),
    };
    if let Some(b) = end_break {
        return Ok(Some(format!("{} ({})", b.explain(), b.kind.label())));
    }
    if let (Some(m), false, None) = (&manifest, stopped, args.to_position) {
        let last = checker.report(None).last_hash;
        if m.last_hash != last {
            return Ok(Some(format!(
                "the manifest's last hash {:?} is not the file's {:?}",
                m.last_hash.map(|h| h.to_hex()),
                last.map(|h| h.to_hex())
            )));
        }
    }
    applier.apply(&verified).await?;
    Ok(None)
}

/// The export's manifest when it lies next to it; a selection of streams cannot be replayed.
fn read_manifest(file: &Path) -> Result<Option<Manifest>, ToolError> {
    let path = Manifest::path_for(file);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| ToolError::io(path.display(), e))?;
    let m: Manifest = serde_json::from_str(&text)
        .map_err(|e| ToolError::Usage(format!("manifest {}: unreadable: {e}", path.display())))?;
    if m.format != FORMAT {
        return Err(ToolError::Usage(format!(
            "manifest {}: unknown format {:?}",
            path.display(),
            m.format
        )));
    }
    if !m.selection.is_full() || m.first_position.is_some_and(|p| p != 1) {
        return Err(ToolError::Usage(format!(
            "{}: a replay needs the whole log from position 1; this export holds a selection",
            file.display()
        )));
    }
    Ok(Some(m))
}

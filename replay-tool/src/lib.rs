//! `mykey-replay`, the auditors' CLI (issue 12):
//!
//! - `export` — a range of the log, or chosen streams or categories, to NDJSON (one stored
//!   envelope per line: every field the hash covers, the payload as the stored text) plus a
//!   manifest that embeds the server-signed checkpoint covering it ([`manifest`]).
//! - `verify` — recomputes the hash chain from PostgreSQL, from an export or from the relay's
//!   Kafka topics ([`verify_kafka`]), checks it against the manifest and against saved
//!   checkpoint notes, and names the first position where it breaks and how. Constant memory:
//!   files are streamed, the database is paged, partitions are merged one record each.
//! - `history` — one stream's events as a timeline, compensating events marked.
//! - `replay` — rebuilds a projection (the server's own code) as of a position or a time into
//!   a scratch schema, from PostgreSQL or from an export ([`replay`], [`scratch`]); `drop`
//!   removes such a schema.
//! - `diff` — compares a replayed projection with the live one, row by row ([`diff`]).
//!
//! Exit codes: 0 verified / done / equal, 1 the log or export does not verify (or `diff`
//! found differences), 2 bad arguments, an input that cannot be read (database down, file
//! missing) or an event the projection cannot apply.
//!
//! The tool reads the log only: that session is read-only and it applies no migrations.
//! `replay` writes only into the scratch schema it creates (and `drop` only removes those).

// Test code may unwrap: a panic is the failure report there.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod applier;
pub mod db;
pub mod diff;
pub mod export;
pub mod history;
pub mod kafka;
pub mod manifest;
pub mod ndjson;
pub mod pipeline;
pub mod progress;
pub mod replay;
pub mod scratch;
pub mod verify;
pub mod verify_kafka;

use clap::{Parser, Subcommand};
use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "mykey-replay",
    version,
    about = "Export the MyKey event log, verify it against signed checkpoints, read a stream's history, replay and diff read models."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a range of the log (or chosen streams/categories) to NDJSON with a manifest.
    Export(export::ExportArgs),
    /// Recompute the hash chain from PostgreSQL, an export or Kafka; check manifest and checkpoints.
    Verify(verify::VerifyArgs),
    /// One stream's events as a readable timeline (or JSON).
    History(history::HistoryArgs),
    /// Rebuild a projection as of a position or time into a scratch schema.
    Replay(replay::ReplayArgs),
    /// Compare a replayed projection with the live one; exit 1 when they differ.
    Diff(diff::DiffArgs),
    /// Drop a scratch schema made by `replay`.
    Drop(scratch::DropArgs),
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Db(String),
    /// The Kafka brokers (unreachable, a record that never came).
    #[error("{0}")]
    Kafka(String),
    /// A stored row the envelope cannot hold (hand-edited beyond what the hash can report).
    #[error("the row at position {position} is unreadable: {reason}")]
    CorruptRow { position: u64, reason: String },
    /// The projection cannot apply an event of the source (the server's runner would stop
    /// there too).
    #[error("replay stopped: {0}")]
    Apply(String),
}

impl ToolError {
    pub fn io(path: impl std::fmt::Display, source: std::io::Error) -> ToolError {
        ToolError::Io {
            path: path.to_string(),
            source,
        }
    }
}

/// What a command concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// The log or the export does not verify (the message was printed).
    Failed,
}

impl Outcome {
    pub fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Done => ExitCode::SUCCESS,
            Outcome::Failed => ExitCode::from(1),
        }
    }
}

/// Runs a parsed command; human output goes to `out`, progress to stderr.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<Outcome, ToolError> {
    match cli.command {
        Command::Export(a) => export::run(&a, out).await,
        Command::Verify(a) => verify::run(&a, out).await.map(|v| v.outcome()),
        Command::History(a) => history::run(&a, out).await,
        Command::Replay(a) => replay::run(&a, out).await,
        Command::Diff(a) => diff::run(&a, out).await,
        Command::Drop(a) => scratch::run_drop(&a, out).await,
    }
}

/// Writes to `out`, mapping a broken pipe (e.g. `| head`) to an I/O error.
pub(crate) fn emit(out: &mut dyn Write, line: impl std::fmt::Display) -> Result<(), ToolError> {
    writeln!(out, "{line}").map_err(|e| ToolError::io("stdout", e))
}

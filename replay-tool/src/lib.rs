//! `mykey-replay`, the auditors' CLI (issue 12):
//!
//! - `export` — a range of the log, or chosen streams or categories, to NDJSON (one stored
//!   envelope per line: every field the hash covers, the payload as the stored text) plus a
//!   manifest that embeds the server-signed checkpoint covering it ([`manifest`]).
//! - `verify` — recomputes the hash chain from PostgreSQL or from an export, checks it against
//!   the manifest and against saved checkpoint notes, and names the first position where it
//!   breaks and how. Constant memory: files are streamed, the database is paged.
//! - `history` — one stream's events as a timeline, compensating events marked.
//! - `replay`, `diff` — not yet: they need the projection runner.
//!
//! Exit codes: 0 verified / done, 1 the log or export does not verify, 2 bad arguments or an
//! input that cannot be read (database down, file missing).
//!
//! The tool reads only: its database session is read-only and it applies no migrations.

// Test code may unwrap: a panic is the failure report there.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod db;
pub mod export;
pub mod history;
pub mod manifest;
pub mod ndjson;
pub mod pipeline;
pub mod progress;
pub mod verify;

use clap::{Parser, Subcommand};
use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "mykey-replay",
    version,
    about = "Export the MyKey event log, verify it against signed checkpoints, read a stream's history."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a range of the log (or chosen streams/categories) to NDJSON with a manifest.
    Export(export::ExportArgs),
    /// Recompute the hash chain from PostgreSQL or an export; check manifest and checkpoints.
    Verify(verify::VerifyArgs),
    /// One stream's events as a readable timeline (or JSON).
    History(history::HistoryArgs),
    /// Not built yet: rebuild a projection as of a position or time.
    Replay {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        rest: Vec<String>,
    },
    /// Not built yet: compare a replayed projection with the live one.
    Diff {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        rest: Vec<String>,
    },
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
    /// A stored row the envelope cannot hold (hand-edited beyond what the hash can report).
    #[error("the row at position {position} is unreadable: {reason}")]
    CorruptRow { position: u64, reason: String },
    #[error("{0} is not built yet: it needs the projection runner (issue 11); export, verify and history work today")]
    NotYet(&'static str),
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
        Command::Replay { .. } => Err(ToolError::NotYet("replay")),
        Command::Diff { .. } => Err(ToolError::NotYet("diff")),
    }
}

/// Writes to `out`, mapping a broken pipe (e.g. `| head`) to an I/O error.
pub(crate) fn emit(out: &mut dyn Write, line: impl std::fmt::Display) -> Result<(), ToolError> {
    writeln!(out, "{line}").map_err(|e| ToolError::io("stdout", e))
}

//! `mykey-replay history`: one stream's events as a timeline.

use crate::db::Db;
use crate::ndjson::NdjsonReader;
use crate::{emit, Outcome, ToolError};
use clap::Args;
use mykey_schemas::{EventEnvelope, StreamId};
use serde::Serialize;
use std::io::{BufReader, Write};
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["database_url", "file"])))]
pub struct HistoryArgs {
    /// The stream, e.g. `ppid-0190f3c1-...`.
    #[arg(long)]
    pub stream: String,
    #[arg(long)]
    pub database_url: Option<String>,
    /// An NDJSON export instead of the database.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// One JSON object per event instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One line of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub time: chrono::DateTime<chrono::Utc>,
    pub stream_version: u64,
    pub global_position: u64,
    pub event_type: String,
    pub actor_id: String,
    pub actor_role: String,
    pub command_id: uuid::Uuid,
    pub correlation_id: uuid::Uuid,
    pub patch_id: Option<uuid::Uuid>,
    /// Appended by an applied data patch (a compensating event).
    pub compensating: bool,
}

impl From<&EventEnvelope> for Entry {
    fn from(e: &EventEnvelope) -> Entry {
        Entry {
            time: e.recorded_at,
            stream_version: e.stream_version,
            global_position: e.global_position,
            event_type: e.event_type.clone(),
            actor_id: e.metadata.actor_id.clone(),
            actor_role: e.metadata.actor_role.clone(),
            command_id: e.metadata.command_id,
            correlation_id: e.metadata.correlation_id,
            patch_id: e.metadata.patch_id,
            compensating: e.metadata.patch_id.is_some(),
        }
    }
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}  v{:<4} #{:<8} {:<28} by {} ({})",
            self.time
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            self.stream_version,
            self.global_position,
            self.event_type,
            self.actor_id,
            self.actor_role
        )?;
        if let Some(p) = self.patch_id {
            write!(f, "  [compensating, patch {p}]")?;
        }
        Ok(())
    }
}

pub async fn run(args: &HistoryArgs, out: &mut dyn Write) -> Result<Outcome, ToolError> {
    let stream = StreamId::parse(&args.stream)
        .map_err(|e| ToolError::Usage(format!("--stream {:?}: {e}", args.stream)))?;
    let mut shown = 0u64;
    let mut show = |out: &mut dyn Write, e: &EventEnvelope| -> Result<(), ToolError> {
        let entry = Entry::from(e);
        shown += 1;
        if args.json {
            let line =
                serde_json::to_string(&entry).map_err(|e| ToolError::io("stdout", e.into()))?;
            emit(out, line)
        } else {
            emit(out, entry)
        }
    };
    match (&args.database_url, &args.file) {
        (Some(url), _) => {
            let db = Db::connect(url).await?;
            let mut next = 1;
            loop {
                let page = db
                    .stream_page(stream.as_str(), next, crate::db::PAGE)
                    .await?;
                for e in &page {
                    show(out, e)?;
                }
                match page.last() {
                    Some(l) if page.len() as i64 == crate::db::PAGE => next = l.stream_version + 1,
                    _ => break,
                }
            }
        }
        (None, Some(file)) => {
            let f = std::fs::File::open(file).map_err(|e| ToolError::io(file.display(), e))?;
            let mut reader = NdjsonReader::new(BufReader::new(f));
            while let Some(line) = reader.next_line() {
                match line.map_err(|e| ToolError::io(file.display(), e))? {
                    Ok((_, e)) if e.stream_id == stream => show(out, &e)?,
                    Ok(_) => {}
                    Err(corrupt) => {
                        eprintln!("mykey-replay: {}: {corrupt}", file.display());
                        return Ok(Outcome::Failed);
                    }
                }
            }
        }
        (None, None) => {
            return Err(ToolError::Usage(
                "--database-url or --file is required".into(),
            ))
        }
    }
    if shown == 0 && !args.json {
        emit(out, format!("stream {stream} has no events"))?;
    }
    Ok(Outcome::Done)
}

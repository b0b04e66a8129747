//! `mykey-replay export`: a range, or chosen streams/categories, to NDJSON plus a manifest.

use crate::db::{Db, Selection};
use crate::manifest::{Manifest, FORMAT};
use crate::progress::{Progress, Unit};
use crate::{emit, Outcome, ToolError};
use clap::Args;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// PostgreSQL of the server (`postgres://...` or `host=... dbname=...`).
    #[arg(long)]
    pub database_url: String,
    /// First global position (default 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub from: u64,
    /// Last global position (default: the latest signed checkpoint, so the manifest's
    /// checkpoint vouches for the last event; the head when none was signed).
    #[arg(long)]
    pub to: Option<u64>,
    /// Only this stream (repeatable).
    #[arg(long = "stream")]
    pub streams: Vec<String>,
    /// Only this category (repeatable), e.g. `ppid`.
    #[arg(long = "category")]
    pub categories: Vec<String>,
    /// The NDJSON file to write.
    #[arg(long, short)]
    pub output: PathBuf,
    /// The manifest to write (default `<output>.manifest.json`).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
}

pub async fn run(args: &ExportArgs, out: &mut dyn Write) -> Result<Outcome, ToolError> {
    let db = Db::connect(&args.database_url).await?;
    let manifest = export(&db, args).await?;
    let path = args
        .manifest
        .clone()
        .unwrap_or_else(|| Manifest::path_for(&args.output));
    emit(
        out,
        serde_json::json!({
            "exported": manifest.count,
            "file": args.output.display().to_string(),
            "manifest": path.display().to_string(),
            "first_position": manifest.first_position,
            "last_position": manifest.last_position,
            "signed_checkpoint_included": manifest.checkpoint.is_some(),
        }),
    )?;
    Ok(Outcome::Done)
}

/// Writes the export and its manifest; returns the manifest.
pub async fn export(db: &std::sync::Arc<Db>, args: &ExportArgs) -> Result<Manifest, ToolError> {
    let head = db.head().await?;
    let mut sel = Selection {
        from: args.from,
        to: head,
        streams: args.streams.clone(),
        categories: args.categories.clone(),
    };
    sel.validate()?;
    let checkpoint = if sel.is_full() {
        db.latest_checkpoint(args.from, args.to.unwrap_or(head))
            .await?
    } else {
        // A selection cannot be proven complete; a checkpoint would vouch for events not in it.
        None
    };
    sel.to = match (args.to, &checkpoint) {
        (Some(to), _) => to,
        (None, Some((size, _))) => *size,
        (None, None) => head,
    };
    if sel.to > head {
        return Err(ToolError::Usage(format!(
            "--to {} is beyond the log's head {head}",
            sel.to
        )));
    }
    if sel.from > sel.to {
        return Err(ToolError::Usage(format!(
            "--from {} is after --to {} (the log's head is {head})",
            sel.from, sel.to
        )));
    }
    let file =
        std::fs::File::create(&args.output).map_err(|e| ToolError::io(args.output.display(), e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut manifest = Manifest {
        format: FORMAT.to_owned(),
        selection: sel.clone(),
        count: 0,
        first_position: None,
        last_position: None,
        first_prev_hash: None,
        last_hash: None,
        checkpoint: checkpoint.map(|(_, note)| note),
        exported_at: chrono::Utc::now(),
    };
    let total = sel.is_full().then(|| sel.to - sel.from + 1);
    let mut progress = Progress::new("export", total, Unit::Events);
    let mut pages = db.pages(sel);
    let write_err = |e: std::io::Error| ToolError::io(args.output.display(), e);
    while let Some(page) = pages.recv().await {
        let page = page?;
        for e in &page {
            if manifest.first_position.is_none() {
                manifest.first_position = Some(e.global_position);
                manifest.first_prev_hash = Some(e.prev_hash);
            }
            serde_json::to_writer(&mut w, e).map_err(|e| write_err(e.into()))?;
            w.write_all(b"\n").map_err(write_err)?;
            manifest.count += 1;
            manifest.last_position = Some(e.global_position);
            manifest.last_hash = Some(e.hash);
        }
        progress.advance(page.len() as u64, page.len() as u64);
    }
    progress.finish();
    w.flush().map_err(write_err)?;
    w.get_ref().sync_all().map_err(write_err)?;
    let path = args
        .manifest
        .clone()
        .unwrap_or_else(|| Manifest::path_for(&args.output));
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| ToolError::io(path.display(), e.into()))?;
    std::fs::write(&path, text + "\n").map_err(|e| ToolError::io(path.display(), e))?;
    Ok(manifest)
}

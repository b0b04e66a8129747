//! `mykey-replay verify`: recompute the chain from PostgreSQL or from an export and check it
//! against the export's manifest and against saved checkpoint notes. The chain itself is
//! checked by [`mykey_store::verify::ChainChecker`], the one place that does it.

use crate::db::{Db, Selection};
use crate::manifest::{Manifest, FORMAT};
use crate::progress::{Progress, Unit};
use crate::{emit, Outcome, ToolError};
use clap::Args;
use mykey_schemas::Hash;
use mykey_store::checkpoint::{self, VerifierKey};
use mykey_store::verify::{ChainBreak, ChainChecker, VerifyReport};
use serde::Serialize;
use std::io::{BufReader, Write};
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["database_url", "file", "kafka"])))]
pub struct VerifyArgs {
    /// Verify the server's PostgreSQL log.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Verify an NDJSON export.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Verify the relay's Kafka topics on these brokers (`host:port[,host:port...]`): every
    /// partition of every `<prefix>.<category>` topic up to its end at the start.
    #[arg(long, value_name = "BROKERS")]
    pub kafka: Option<String>,
    /// The relay's topic prefix (its `KAFKA_TOPIC_PREFIX`).
    #[arg(long, requires = "kafka", default_value = mykey_projections::kafka::DEFAULT_TOPIC_PREFIX)]
    pub topic_prefix: String,
    /// The export's manifest (default `<file>.manifest.json` when it exists).
    #[arg(long, requires = "file", conflicts_with = "no_manifest")]
    pub manifest: Option<PathBuf>,
    /// Ignore any manifest: check the file's chain on its own.
    #[arg(long, requires = "file")]
    pub no_manifest: bool,
    /// A saved checkpoint note the log must extend (repeatable).
    #[arg(long = "checkpoint")]
    pub checkpoints: Vec<PathBuf>,
    /// A checkpoint public key `<name>+<id>+<base64>`, or a file of them (repeatable).
    #[arg(long = "public-key")]
    pub public_keys: Vec<String>,
    /// First position to verify (default 1), in the database or on Kafka. On Kafka, where
    /// retention may have dropped the oldest records, a later start is anchored by the signed
    /// checkpoint of the log at `from - 1`, which must be among the `--checkpoint`s.
    #[arg(long, conflicts_with = "file", value_parser = clap::value_parser!(u64).range(1..))]
    pub from: Option<u64>,
    /// Last position to verify in the database (default the head).
    #[arg(long, requires = "database_url")]
    pub to: Option<u64>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The result of a verification.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub intact: bool,
    pub source: String,
    #[serde(flatten)]
    pub report: VerifyReport,
    /// Checkpoints (saved and the manifest's) the log matched.
    pub checkpoints_matched: u64,
    /// The manifest's signed checkpoint verified with a given public key.
    pub manifest_checkpoint_verified: Option<bool>,
    /// Why it failed when the chain alone does not say (manifest, checkpoint note, line).
    pub problem: Option<String>,
    /// Lines of the file that hold this break (file sources).
    pub line: Option<u64>,
    /// The Kafka record that shows the break, `topic[partition]@offset` (Kafka source).
    pub record: Option<String>,
    /// Things the auditor should know that are not failures.
    pub notes: Vec<String>,
}

impl Verification {
    pub fn outcome(&self) -> Outcome {
        if self.intact {
            Outcome::Done
        } else {
            Outcome::Failed
        }
    }

    pub(crate) fn failed(&mut self, problem: String) {
        self.intact = false;
        if self.problem.is_none() {
            self.problem = Some(problem);
        }
    }

    pub fn first_break(&self) -> Option<&ChainBreak> {
        self.report.first_break.as_ref()
    }
}

/// Reads `--public-key` values: a verifier key, or a file with one per line.
pub fn load_keys(values: &[String]) -> Result<Vec<VerifierKey>, ToolError> {
    let mut keys = Vec::new();
    for v in values {
        if let Ok(k) = VerifierKey::parse(v) {
            keys.push(k);
            continue;
        }
        let text = std::fs::read_to_string(v).map_err(|e| {
            ToolError::Usage(format!(
                "--public-key {v:?} is neither a key (<name>+<id>+<base64>) nor a readable file: {e}"
            ))
        })?;
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            keys.push(
                VerifierKey::parse(line)
                    .map_err(|e| ToolError::Usage(format!("--public-key file {v}: {e}")))?,
            );
        }
    }
    Ok(keys)
}

pub async fn run(args: &VerifyArgs, out: &mut dyn Write) -> Result<Verification, ToolError> {
    let v = verify(args).await?;
    if args.json {
        let text =
            serde_json::to_string_pretty(&v).map_err(|e| ToolError::io("stdout", e.into()))?;
        emit(out, text)?;
    } else {
        emit(out, format!("source: {}", v.source))?;
        for n in &v.notes {
            emit(out, format!("note: {n}"))?;
        }
        emit(
            out,
            format!(
                "verified {} events from position {}{}; {} checkpoint(s) matched",
                v.report.verified,
                v.report.from,
                v.report
                    .last_hash
                    .map(|h| format!(", last hash {h}"))
                    .unwrap_or_default(),
                v.checkpoints_matched
            ),
        )?;
        if v.intact {
            emit(out, "OK: the chain is intact")?;
        } else {
            if let Some(b) = v.first_break() {
                emit(
                    out,
                    format!(
                        "BROKEN ({}){}: {}",
                        b.kind.label(),
                        v.line
                            .map(|l| format!(" at line {l}"))
                            .or_else(|| v.record.as_ref().map(|r| format!(" at {r}")))
                            .unwrap_or_default(),
                        b.explain()
                    ),
                )?;
            }
            if let Some(p) = &v.problem {
                emit(out, format!("FAILED: {p}"))?;
            }
        }
    }
    Ok(v)
}

/// Verifies without printing.
pub async fn verify(args: &VerifyArgs) -> Result<Verification, ToolError> {
    let keys = load_keys(&args.public_keys)?;
    if !args.checkpoints.is_empty() && keys.is_empty() {
        return Err(ToolError::Usage(
            "--checkpoint needs --public-key (a checkpoint is only as good as its signature)"
                .into(),
        ));
    }
    let mut v = Verification {
        intact: true,
        source: String::new(),
        report: ChainChecker::new(1).report(None),
        checkpoints_matched: 0,
        manifest_checkpoint_verified: None,
        problem: None,
        line: None,
        record: None,
        notes: Vec::new(),
    };
    let mut signed: Vec<(u64, Hash)> = Vec::new();
    for path in &args.checkpoints {
        let text = std::fs::read_to_string(path).map_err(|e| ToolError::io(path.display(), e))?;
        match checkpoint::open(&text, &keys) {
            Ok(cp) => signed.push((cp.size, cp.hash)),
            Err(e) => {
                v.failed(format!("checkpoint {}: {e}", path.display()));
                return Ok(v);
            }
        }
    }
    match (&args.database_url, &args.file, &args.kafka) {
        (Some(url), _, _) => verify_db(url, args, signed, &mut v).await?,
        (None, Some(file), _) => verify_file(file, args, &keys, signed, &mut v)?,
        (None, None, Some(brokers)) => {
            check_prefix(&args.topic_prefix)?;
            let start = kafka_start(args.from.unwrap_or(1), &signed)?;
            let (brokers, prefix) = (brokers.clone(), args.topic_prefix.clone());
            // librdkafka blocks its thread.
            v = tokio::task::spawn_blocking(move || {
                crate::verify_kafka::verify(&brokers, &prefix, start, signed, v)
            })
            .await
            .map_err(|e| ToolError::Kafka(format!("the reader stopped: {e}")))??;
        }
        (None, None, None) => {
            return Err(ToolError::Usage(
                "--database-url, --file or --kafka is required".into(),
            ))
        }
    }
    Ok(v)
}

/// Where a Kafka verification starts: position 1 at the genesis hash, or `from` linked to the
/// signed checkpoint at `from - 1` (Kafka holds no earlier record to link it to).
fn kafka_start(from: u64, signed: &[(u64, Hash)]) -> Result<crate::verify_kafka::Start, ToolError> {
    if from == 1 {
        return Ok(crate::verify_kafka::Start::Genesis);
    }
    signed
        .iter()
        .find(|(size, _)| *size == from - 1)
        .map(|(_, hash)| crate::verify_kafka::Start::After {
            position: from - 1,
            hash: *hash,
        })
        .ok_or_else(|| {
            ToolError::Usage(format!(
                "--from {from} with --kafka needs the signed checkpoint of the log at {} among                  --checkpoint: it anchors the chain where the topics begin",
                from - 1
            ))
        })
}

async fn verify_db(
    url: &str,
    args: &VerifyArgs,
    signed: Vec<(u64, Hash)>,
    v: &mut Verification,
) -> Result<(), ToolError> {
    let db = Db::connect(url).await?;
    let head = db.head().await?;
    let from = args.from.unwrap_or(1);
    let to = args.to.unwrap_or(head);
    v.source = format!("PostgreSQL, positions {from}..={to} (head {head})");
    let mut checker = ChainChecker::new(from).with_checkpoints(signed);
    if from > 1 {
        match db.event_at(from - 1).await? {
            Some(prev) => checker.anchor(&prev),
            None => v.notes.push(format!(
                "position {} is missing: the range is checked without its anchor",
                from - 1
            )),
        }
    }
    let sel = Selection {
        from,
        to,
        ..Selection::default()
    };
    let mut progress = Progress::new("verify", Some(to.saturating_sub(from) + 1), Unit::Events);
    let mut pages = db.pages(sel);
    let mut first_break = None;
    'pages: while let Some(page) = pages.recv().await {
        let page = match page {
            Ok(p) => p,
            Err(e @ ToolError::CorruptRow { .. }) => {
                v.failed(e.to_string());
                break;
            }
            Err(e) => return Err(e),
        };
        for e in &page {
            if let Some(b) = checker.check(e) {
                first_break = Some(b);
                break 'pages;
            }
        }
        progress.advance(page.len() as u64, page.len() as u64);
    }
    progress.finish();
    if first_break.is_none() && v.problem.is_none() {
        first_break = checker.finish(to);
    }
    conclude(v, &checker, first_break);
    Ok(())
}

/// A topic prefix as the relay accepts it (`KAFKA_TOPIC_PREFIX`).
fn check_prefix(prefix: &str) -> Result<(), ToolError> {
    let ok = !prefix.is_empty()
        && prefix.len() <= mykey_projections::kafka::MAX_TOPIC_PREFIX_LEN
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ToolError::Usage(format!(
            "--topic-prefix {prefix:?}: expected 1 to {} characters of [A-Za-z0-9._-]",
            mykey_projections::kafka::MAX_TOPIC_PREFIX_LEN
        )))
    }
}

pub(crate) fn conclude(
    v: &mut Verification,
    checker: &ChainChecker,
    first_break: Option<ChainBreak>,
) {
    v.checkpoints_matched = checker.checkpoints_matched();
    if first_break.is_some() {
        v.intact = false;
    }
    v.report = checker.report(first_break);
}

fn verify_file(
    file: &std::path::Path,
    args: &VerifyArgs,
    keys: &[VerifierKey],
    mut signed: Vec<(u64, Hash)>,
    v: &mut Verification,
) -> Result<(), ToolError> {
    let manifest_path = match (&args.manifest, args.no_manifest) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => None,
        (None, false) => Some(Manifest::path_for(file)).filter(|p| p.exists()),
    };
    let manifest = match &manifest_path {
        None => None,
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| ToolError::io(p.display(), e))?;
            match serde_json::from_str::<Manifest>(&text) {
                Ok(m) if m.format == FORMAT => Some(m),
                Ok(m) => {
                    v.failed(format!(
                        "manifest {}: unknown format {:?}",
                        p.display(),
                        m.format
                    ));
                    return Ok(());
                }
                Err(e) => {
                    v.failed(format!("manifest {}: unreadable: {e}", p.display()));
                    return Ok(());
                }
            }
        }
    };
    v.source = format!(
        "{}{}",
        file.display(),
        manifest_path
            .as_ref()
            .map(|p| format!(" with manifest {}", p.display()))
            .unwrap_or_else(|| " without a manifest".into())
    );
    if let Some(note) = manifest.as_ref().and_then(|m| m.checkpoint.as_ref()) {
        if keys.is_empty() {
            v.manifest_checkpoint_verified = Some(false);
            v.notes.push(
                "the manifest's checkpoint was not verified: give --public-key to check it".into(),
            );
        } else {
            match checkpoint::open(note, keys) {
                Ok(cp) => {
                    v.manifest_checkpoint_verified = Some(true);
                    signed.push((cp.size, cp.hash));
                }
                Err(e) => {
                    v.manifest_checkpoint_verified = Some(false);
                    v.failed(format!(
                        "the manifest's checkpoint is forged or altered: {e}"
                    ));
                    return Ok(());
                }
            }
        }
    }
    if let Some(m) = &manifest {
        if !m.selection.is_full() {
            v.notes.push(
                "a selection of streams/categories: each event's hash and the links between \
                 consecutive positions are checked; completeness cannot be proven"
                    .into(),
            );
        }
        if let (Some(last), Some(cp)) = (m.last_position, signed.iter().map(|(p, _)| *p).max()) {
            if cp < last {
                v.notes.push(format!(
                    "positions {}..={last} are after the newest checkpoint ({cp}): chain-checked, not signed",
                    cp + 1
                ));
            }
        }
    } else if signed.is_empty() {
        v.notes.push(
            "no manifest and no checkpoint: a consistent chain proves no edits inside the file, \
             not that nothing was cut off or rewritten wholesale"
                .into(),
        );
    }
    let f = std::fs::File::open(file).map_err(|e| ToolError::io(file.display(), e))?;
    let size = f.metadata().map(|m| m.len()).ok();
    let batches = crate::pipeline::spawn(BufReader::with_capacity(1 << 20, f));
    let mut progress = Progress::new("verify", size, Unit::Bytes);
    let mut checker: Option<ChainChecker> = None;
    let mut first_break = None;
    let mut last_bytes = 0;
    let mut count = 0u64;
    'batches: for batch in batches {
        let batch = batch.map_err(|e| ToolError::io(file.display(), e))?;
        let events = batch.lines.len() as u64;
        for parsed in batch.lines {
            let (line_no, e, hash) = match parsed {
                Ok(ok) => ok,
                Err(corrupt) => {
                    v.line = Some(corrupt.line);
                    v.failed(corrupt.to_string());
                    break 'batches;
                }
            };
            let c = checker.get_or_insert_with(|| new_checker(manifest.as_ref(), &e, &signed));
            count += 1;
            if let Some(b) = c.check_hashed(&e, Some(hash)) {
                v.line = Some(line_no);
                first_break = Some(b);
                break 'batches;
            }
        }
        progress.advance(events, batch.bytes_read - last_bytes);
        last_bytes = batch.bytes_read;
    }
    progress.finish();
    let mut checker = match checker {
        Some(c) => c,
        None => match &manifest {
            // An empty file: the manifest (if any) says what should have been there.
            Some(m) => ChainChecker::new(m.first_position.unwrap_or(m.selection.from))
                .with_checkpoints(signed.iter().copied()),
            None => ChainChecker::new(1).with_checkpoints(signed.iter().copied()),
        },
    };
    if first_break.is_none() && v.problem.is_none() {
        first_break = match &manifest {
            Some(m) => checker.finish_truncated(m.last_position.unwrap_or(0)),
            None => checker.finish(0),
        };
    }
    conclude(v, &checker, first_break);
    if let (true, Some(m)) = (v.intact, &manifest) {
        if m.count != count {
            v.failed(format!(
                "the manifest counts {} events, the file has {count}",
                m.count
            ));
        } else if m.last_hash != v.report.last_hash {
            v.failed(format!(
                "the manifest's last hash {:?} is not the file's {:?}",
                m.last_hash.map(|h| h.to_hex()),
                v.report.last_hash.map(|h| h.to_hex())
            ));
        }
    }
    Ok(())
}

/// The checker for a file, set up from its first event and the manifest.
fn new_checker(
    manifest: Option<&Manifest>,
    first: &mykey_schemas::EventEnvelope,
    signed: &[(u64, Hash)],
) -> ChainChecker {
    let (from, anchor, full) = match manifest {
        Some(m) => (
            m.first_position.unwrap_or(m.selection.from),
            m.first_prev_hash,
            m.selection.is_full(),
        ),
        // Without a manifest the file's first event anchors itself.
        None => (first.global_position, Some(first.prev_hash), true),
    };
    let mut c = if full {
        ChainChecker::new(from)
    } else {
        ChainChecker::sparse(from)
    };
    if from > 1 {
        if let Some(h) = anchor {
            c.anchor_hash(h);
        }
    }
    c.with_checkpoints(signed.iter().copied())
}

//! Parsing and hashing an export on several threads, handing the results back in file order,
//! in bounded memory. Both steps are independent per line; only the chain check that follows
//! ([`mykey_store::verify::ChainChecker::check_hashed`]) needs the order.

use crate::ndjson::{parse, CorruptLine, NdjsonReader, RawLine};
use mykey_schemas::{EventEnvelope, Hash};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

/// Lines per unit of work.
pub const BATCH_LINES: usize = 512;

/// Batches queued between stages; with the reorder buffer this bounds memory to a few dozen
/// batches whatever the file size.
const QUEUED: usize = 4;

/// Most parsing threads.
const MAX_WORKERS: usize = 4;

/// One parsed line: the envelope and its recomputed hash, or why it is unreadable.
pub type Parsed = Result<(u64, EventEnvelope, Hash), CorruptLine>;

/// A batch in file order, with the bytes the reader had consumed after it.
#[derive(Debug)]
pub struct Batch {
    pub lines: Vec<Parsed>,
    pub bytes_read: u64,
}

type RawBatch = (u64, Vec<RawLine>, u64);
type Done = (u64, Result<Batch, std::io::Error>);

/// Ordered results of [`spawn`].
#[derive(Debug)]
pub struct Ordered {
    rx: Receiver<Done>,
    pending: BTreeMap<u64, Result<Batch, std::io::Error>>,
    next: u64,
}

impl Iterator for Ordered {
    type Item = Result<Batch, std::io::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(b) = self.pending.remove(&self.next) {
                self.next += 1;
                return Some(b);
            }
            let (seq, batch) = self.rx.recv().ok()?;
            self.pending.insert(seq, batch);
        }
    }
}

/// Starts a reader thread and parsing threads over `reader`. Dropping the result stops them.
pub fn spawn<R: BufRead + Send + 'static>(reader: R) -> Ordered {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, MAX_WORKERS);
    let (work_tx, work_rx) = sync_channel::<RawBatch>(QUEUED);
    let (done_tx, done_rx) = sync_channel::<Done>(QUEUED * workers);
    let io_tx = done_tx.clone();
    std::thread::spawn(move || read(NdjsonReader::new(reader), work_tx, io_tx));
    let work_rx = Arc::new(Mutex::new(work_rx));
    for _ in 0..workers {
        let rx = work_rx.clone();
        let tx = done_tx.clone();
        std::thread::spawn(move || work(rx, tx));
    }
    Ordered {
        rx: done_rx,
        pending: BTreeMap::new(),
        next: 0,
    }
}

fn read<R: BufRead>(
    mut reader: NdjsonReader<R>,
    work: SyncSender<RawBatch>,
    errors: SyncSender<Done>,
) {
    let mut seq = 0;
    loop {
        let mut batch = Vec::with_capacity(BATCH_LINES);
        let mut stop = false;
        while batch.len() < BATCH_LINES {
            match reader.next_raw() {
                None => {
                    stop = true;
                    break;
                }
                Some(Err(e)) => {
                    // Everything before the error goes first, then the error in its place.
                    if !batch.is_empty() {
                        let _ = work.send((seq, batch, reader.bytes_read()));
                        seq += 1;
                    }
                    let _ = errors.send((seq, Err(e)));
                    return;
                }
                Some(Ok((line, raw))) => {
                    let corrupt = raw.is_err();
                    batch.push((line, raw));
                    if corrupt {
                        stop = true;
                        break;
                    }
                }
            }
        }
        if !batch.is_empty() && work.send((seq, batch, reader.bytes_read())).is_err() {
            return;
        }
        seq += 1;
        if stop {
            return;
        }
    }
}

fn work(rx: Arc<Mutex<Receiver<RawBatch>>>, tx: SyncSender<Done>) {
    loop {
        let next = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return,
        };
        let Ok((seq, raw, bytes_read)) = next else {
            return;
        };
        let lines = raw
            .into_iter()
            .map(|(line, bytes)| {
                let (line, e) = bytes.and_then(|b| parse(line, &b))?;
                let hash = e.compute_hash();
                Ok((line, e, hash))
            })
            .collect();
        if tx.send((seq, Ok(Batch { lines, bytes_read }))).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mykey_schemas::{EventMetadata, NewEvent, StreamId, GENESIS_HASH};

    fn export(n: u64) -> Vec<String> {
        let mut prev = GENESIS_HASH;
        (1..=n)
            .map(|p| {
                let e = EventEnvelope::seal(
                    NewEvent {
                        event_id: uuid::Uuid::from_u128(u128::from(p)),
                        event_type: "Test.Happened".into(),
                        schema_version: 1,
                        payload: "{}".into(),
                    },
                    StreamId::parse("test-1").unwrap(),
                    p,
                    p,
                    EventMetadata {
                        actor_id: "a".into(),
                        actor_role: "operator".into(),
                        command_id: uuid::Uuid::from_u128(u128::from(p)),
                        correlation_id: uuid::Uuid::nil(),
                        causation_id: uuid::Uuid::nil(),
                        patch_id: None,
                        client_addr: None,
                    },
                    chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
                    prev,
                );
                prev = e.hash;
                serde_json::to_string(&e).unwrap()
            })
            .collect()
    }

    fn run(lines: &[String]) -> Vec<Result<(u64, u64), u64>> {
        let text = lines.join("\n") + "\n";
        spawn(std::io::Cursor::new(text.into_bytes()))
            .flat_map(|b| b.map(|b| b.lines).unwrap_or_default())
            .map(|p| match p {
                Err(c) => Err(c.line),
                Ok((l, e, h)) => {
                    assert_eq!(h, e.hash);
                    Ok((l, e.global_position))
                }
            })
            .collect()
    }

    #[test]
    fn results_come_in_file_order_with_the_corrupt_line_in_its_place() {
        let n = (BATCH_LINES * 5 + 7) as u64;
        let mut lines = export(n);
        let got = run(&lines);
        assert_eq!(got, (1..=n).map(|p| Ok((p, p))).collect::<Vec<_>>());
        lines[BATCH_LINES * 2 + 3] = "{\"half\": ".into();
        let got = run(&lines);
        let k = (BATCH_LINES * 2 + 4) as u64;
        let first_err = got.iter().position(Result::is_err).map(|i| i as u64 + 1);
        assert_eq!(first_err, Some(k));
        assert_eq!(got[(k - 1) as usize], Err(k));
        // A line cut off (no newline) ends the reading there.
        let mut cut = export(3).join("\n");
        cut.truncate(cut.len() - 5);
        let got: Vec<_> = spawn(std::io::Cursor::new(cut.into_bytes()))
            .flat_map(|b| b.map(|b| b.lines).unwrap_or_default())
            .map(|p| p.map(|(l, ..)| l).map_err(|c| c.line))
            .collect();
        assert_eq!(got, vec![Ok(1), Ok(2), Err(3)]);
    }
}

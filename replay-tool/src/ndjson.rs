//! Reading an export line by line: one stored envelope per line, in constant memory.

use mykey_schemas::EventEnvelope;
use std::io::BufRead;

/// A line that is not a stored envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: not a stored event: {reason}")]
pub struct CorruptLine {
    pub line: u64,
    pub reason: String,
}

/// Longest line accepted: the largest payload, escaped, plus the envelope.
pub const MAX_LINE_BYTES: usize = 4 * mykey_schemas::MAX_PAYLOAD_BYTES + 64 * 1024;

#[derive(Debug)]
pub struct NdjsonReader<R> {
    inner: R,
    line: u64,
    bytes: u64,
    buf: Vec<u8>,
}

/// One line's outcome: an envelope, or why the line is unreadable.
pub type Line = Result<(u64, EventEnvelope), CorruptLine>;

/// One line's bytes (without the newline) and its number, or why it is unreadable.
pub type RawLine = (u64, Result<Vec<u8>, CorruptLine>);

impl<R: BufRead> NdjsonReader<R> {
    pub fn new(inner: R) -> Self {
        NdjsonReader {
            inner,
            line: 0,
            bytes: 0,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Bytes consumed so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }

    /// The next envelope with its line number; `None` at the end; an I/O error ends too.
    pub fn next_line(&mut self) -> Option<Result<Line, std::io::Error>> {
        self.next_raw()
            .map(|r| r.map(|(line, raw)| raw.and_then(|bytes| parse(line, &bytes))))
    }

    /// The next line's bytes (without its newline), not parsed yet.
    pub fn next_raw(&mut self) -> Option<Result<RawLine, std::io::Error>> {
        self.buf.clear();
        let mut limited = std::io::Read::take(&mut self.inner, MAX_LINE_BYTES as u64 + 1);
        let n = match limited.read_until(b'\n', &mut self.buf) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) => return Some(Err(e)),
        };
        self.line += 1;
        self.bytes += n as u64;
        let line = self.line;
        if self.buf.last() != Some(&b'\n') {
            let reason = if n > MAX_LINE_BYTES {
                format!("longer than {MAX_LINE_BYTES} bytes")
            } else {
                "the last line does not end in a newline (cut off?)".into()
            };
            return Some(Ok((line, Err(CorruptLine { line, reason }))));
        }
        self.buf.pop();
        Some(Ok((line, Ok(std::mem::take(&mut self.buf)))))
    }
}

/// Parses one line's bytes.
pub fn parse(line: u64, bytes: &[u8]) -> Line {
    serde_json::from_slice::<EventEnvelope>(bytes)
        .map(|e| (line, e))
        .map_err(|e| CorruptLine {
            line,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_line_is_reported_with_its_number() {
        let text = b"{\"not\":\"an event\"}\n";
        let mut r = NdjsonReader::new(&text[..]);
        match r.next_line() {
            Some(Ok(Err(c))) => {
                assert_eq!(c.line, 1);
                assert!(c.reason.contains("missing field"), "{}", c.reason);
            }
            other => panic!("{other:?}"),
        }
        assert!(r.next_line().is_none());
        let mut cut = NdjsonReader::new(&b"{\"a\":1"[..]);
        assert!(matches!(
            cut.next_line(),
            Some(Ok(Err(CorruptLine { line: 1, .. })))
        ));
    }
}

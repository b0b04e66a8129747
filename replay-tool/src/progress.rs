//! Progress of long runs: a bar with rate and ETA on a terminal, a plain line every few
//! seconds otherwise (logs, CI), nothing on stdout (which carries the result).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Plain-mode reporting interval.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// What the counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Events,
    Bytes,
}

#[derive(Debug)]
pub struct Progress {
    label: &'static str,
    unit: Unit,
    bar: Option<ProgressBar>,
    started: Instant,
    last_plain: Instant,
    done: u64,
    events: u64,
}

impl Progress {
    pub fn new(label: &'static str, total: Option<u64>, unit: Unit) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
            let counts = match unit {
                Unit::Events => "{human_pos}/{human_len} events ({per_sec}, ETA {eta})",
                Unit::Bytes => "{bytes}/{total_bytes} ({binary_bytes_per_sec}, ETA {eta})",
            };
            if let Ok(style) =
                ProgressStyle::with_template(&format!("{{msg}} [{{wide_bar}}] {counts}"))
            {
                bar.set_style(style);
            }
            bar.set_message(label);
            bar
        });
        let now = Instant::now();
        Progress {
            label,
            unit,
            bar,
            started: now,
            last_plain: now,
            done: 0,
            events: 0,
        }
    }

    /// `events` more events handled, `units` more of the bar's unit.
    pub fn advance(&mut self, events: u64, units: u64) {
        self.events += events;
        self.done += units;
        match &self.bar {
            Some(bar) => bar.inc(units),
            None => {
                if self.last_plain.elapsed() >= PLAIN_EVERY {
                    self.last_plain = Instant::now();
                    eprintln!("{}", self.line());
                }
            }
        }
    }

    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        format!(
            "{}: {} events ({:.0} events/s){}",
            self.label,
            self.events,
            self.events as f64 / secs,
            match self.unit {
                Unit::Bytes => format!(", {} MiB read", self.done / (1024 * 1024)),
                Unit::Events => String::new(),
            }
        )
    }

    pub fn finish(self) {
        match self.bar {
            Some(bar) => bar.finish_and_clear(),
            None => {
                if self.started.elapsed() >= PLAIN_EVERY {
                    eprintln!("{} (done)", self.line());
                }
            }
        }
    }
}

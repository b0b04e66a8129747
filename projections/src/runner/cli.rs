//! `mykey-server rebuild <projection>`: a rebuild by hand with a progress bar (rate and ETA)
//! on a terminal, plain lines otherwise.

use super::rebuild::{rebuild as rebuild_projection, RebuildProgress, RebuildReport};
use super::{RunnerError, RunnerOptions};
use crate::Projection;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mykey_store::EventStore;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a plain-text progress line is written when stderr is not a terminal.
pub const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar on a terminal, plain lines otherwise.
    Auto,
    Bar,
    Plain,
    Quiet,
}

/// Rebuilds the projection called `name` among `projections` (normally
/// [`crate::models::all`]), showing progress on stderr, and returns what it did.
pub async fn rebuild<S: EventStore>(
    store: &S,
    pg: &tokio_postgres::Config,
    projections: &[Arc<dyn Projection>],
    name: &str,
    mode: ProgressMode,
) -> Result<RebuildReport, RunnerError> {
    let projection = projections
        .iter()
        .find(|p| p.name() == name)
        .cloned()
        .ok_or_else(|| RunnerError::Unknown(name.to_owned()))?;
    let mode = match mode {
        ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
        ProgressMode::Auto => ProgressMode::Plain,
        m => m,
    };
    let options = RunnerOptions::default();
    let report = match mode {
        ProgressMode::Bar => {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} events, \
                     {per_sec}, ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message(format!("rebuilding {name}"));
            let result = rebuild_projection(store, pg, projection, &options, |p| {
                bar.set_length(p.head);
                bar.set_position(p.position);
            })
            .await;
            bar.finish_and_clear();
            result?
        }
        ProgressMode::Plain => {
            let started = Instant::now();
            let mut last = Instant::now();
            rebuild_projection(store, pg, projection, &options, |p| {
                if last.elapsed() >= PLAIN_PROGRESS_EVERY {
                    last = Instant::now();
                    let _ = writeln!(std::io::stderr(), "{}", plain_line(name, p, started));
                }
            })
            .await?
        }
        _ => rebuild_projection(store, pg, projection, &options, |_| {}).await?,
    };
    if mode != ProgressMode::Quiet {
        let _ = writeln!(
            std::io::stderr(),
            "rebuilt {name}: {} events into {} in {:.1}s ({:.0} events/s){}",
            report.position,
            report.schema,
            report.elapsed.as_secs_f64(),
            report.events_per_second(),
            report
                .replaced
                .as_ref()
                .map(|old| format!("; {old} dropped"))
                .unwrap_or_default()
        );
    }
    Ok(report)
}

/// `rebuilding <name>: <pos>/<head> events (<pct>%), <rate> events/s, ETA <secs>s`.
fn plain_line(name: &str, p: RebuildProgress, started: Instant) -> String {
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let rate = p.position as f64 / elapsed;
    let left = p.head.saturating_sub(p.position) as f64;
    let eta = if rate > 0.0 { left / rate } else { 0.0 };
    let pct = if p.head == 0 {
        100.0
    } else {
        p.position as f64 * 100.0 / p.head as f64
    };
    format!(
        "rebuilding {name}: {}/{} events ({pct:.1}%), {rate:.0} events/s, ETA {eta:.0}s",
        p.position, p.head
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_line_states_position_rate_and_eta() {
        let line = plain_line(
            "ppids",
            RebuildProgress {
                position: 50,
                head: 100,
            },
            Instant::now() - Duration::from_secs(1),
        );
        assert!(line.starts_with("rebuilding ppids: 50/100 events (50.0%), "));
        assert!(line.contains("events/s, ETA "));
    }
}

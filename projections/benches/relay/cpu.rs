//! CPU time of the bench's parts, read from `/proc` (Linux): this process (the load generator,
//! the store's client, the relay, the projector), PostgreSQL's processes and the broker's.
//! On a machine whose cores all of them share, their sum per event bounds the load the whole
//! path can carry, whatever any one part does.

use std::collections::HashMap;
use std::time::Instant;

/// Cumulative CPU ticks at one moment, per process: a part's time is summed over its
/// processes' own differences, so one that exits meanwhile (a connection closed, the previous
/// run's broker shutting down) takes nothing away.
#[derive(Debug, Clone)]
pub(super) struct Cpu {
    at: Instant,
    tick: f64,
    this: u64,
    postgres: HashMap<u32, u64>,
    broker: HashMap<u32, u64>,
}

/// Ticks spent since `before` by the processes of `now`.
fn spent(now: &HashMap<u32, u64>, before: &HashMap<u32, u64>) -> u64 {
    now.iter()
        .map(|(pid, t)| t.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum()
}

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on Linux).
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// (command name, user + system ticks) of one process.
fn stat(path: &std::path::Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_owned();
    // After the name: state is field 3, utime 14 and stime 15 (proc(5)).
    let fields: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

impl Cpu {
    pub(super) fn now() -> Cpu {
        let (mut postgres, mut broker) = (HashMap::new(), HashMap::new());
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                    continue;
                };
                if let Some((name, ticks)) = stat(&entry.path().join("stat")) {
                    match name.as_str() {
                        "postgres" => {
                            postgres.insert(pid, ticks);
                        }
                        "tansu" => {
                            broker.insert(pid, ticks);
                        }
                        _ => {}
                    }
                }
            }
        }
        Cpu {
            at: Instant::now(),
            tick: ticks_per_second(),
            this: stat(std::path::Path::new("/proc/self/stat")).map_or(0, |(_, t)| t),
            postgres,
            broker,
        }
    }

    /// What each part spent since `before`, per event of `events`, as one line.
    pub(super) fn report(&self, before: &Cpu, events: u64) -> String {
        let seconds = [
            self.this.saturating_sub(before.this),
            spent(&self.postgres, &before.postgres),
            spent(&self.broker, &before.broker),
        ]
        .map(|ticks| ticks as f64 / self.tick);
        let [this, postgres, broker] = seconds.map(|s| s * 1e6 / events.max(1) as f64);
        let total = this + postgres + broker;
        let busy = seconds.iter().sum::<f64>() / self.at.duration_since(before.at).as_secs_f64();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        format!(
            "CPU per event: this process {this:.0} µs, PostgreSQL {postgres:.0} µs, broker \
             {broker:.0} µs, together {total:.0} µs ({busy:.2} of {cores} cores busy): these \
             {cores} cores carry at most {:.0} events/s through this path",
            cores as f64 * 1e6 / total.max(1.0)
        )
    }
}

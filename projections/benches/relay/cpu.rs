//! CPU time of the bench's parts, read from `/proc` (Linux): this process (the load generator,
//! the store's client, the relay, the projector), PostgreSQL's processes and the broker's.
//! On a machine whose cores all of them share, their sum per event bounds the load the whole
//! path can carry, whatever any one part does.

use std::time::Instant;

/// Cumulative CPU seconds at one moment.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cpu {
    at: Instant,
    this: f64,
    postgres: f64,
    broker: f64,
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
        let tick = ticks_per_second();
        let (mut postgres, mut broker) = (0u64, 0u64);
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                if let Some((name, ticks)) = stat(&entry.path().join("stat")) {
                    match name.as_str() {
                        "postgres" => postgres += ticks,
                        "tansu" => broker += ticks,
                        _ => {}
                    }
                }
            }
        }
        let this = stat(std::path::Path::new("/proc/self/stat")).map_or(0, |(_, t)| t);
        Cpu {
            at: Instant::now(),
            this: this as f64 / tick,
            postgres: postgres as f64 / tick,
            broker: broker as f64 / tick,
        }
    }

    /// What each part spent since `before`, per event of `events`, as one line.
    pub(super) fn report(&self, before: &Cpu, events: u64) -> String {
        let per = |now: f64, then: f64| (now - then).max(0.0) * 1e6 / events.max(1) as f64;
        let (this, postgres, broker) = (
            per(self.this, before.this),
            per(self.postgres, before.postgres),
            per(self.broker, before.broker),
        );
        let total = this + postgres + broker;
        let busy = (self.this + self.postgres + self.broker
            - before.this
            - before.postgres
            - before.broker)
            / self.at.duration_since(before.at).as_secs_f64();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        format!(
            "CPU per event: this process {this:.0} µs, PostgreSQL {postgres:.0} µs, broker \
             {broker:.0} µs, together {total:.0} µs ({busy:.2} of {cores} cores busy): these \
             {cores} cores carry at most {:.0} events/s through this path",
            cores as f64 * 1e6 / total.max(1.0)
        )
    }
}

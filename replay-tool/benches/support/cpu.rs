//! CPU time spent on a benchmark: this process's own, and that of the PostgreSQL backends
//! serving its database (found by the database name in their process titles, from /proc).
//!
//! On a machine shared with other work (builds of other helpers on the same two cores) wall
//! time says what the machine had to spare; CPU seconds say what the code costs. A backend
//! that exits takes its CPU time with it, so a thread samples every [`SAMPLE_EVERY`] and keeps
//! each backend's last figure (a backend's final fraction of a sample is lost).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `sysconf(_SC_CLK_TCK)`: 100 on Linux (x86_64 and arm64).
const CLK_TCK: f64 = 100.0;
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// utime + stime of a `/proc/<pid>/stat` text, in seconds.
fn seconds(stat: &str) -> Option<f64> {
    // Fields after the command (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / CLK_TCK)
}

/// This process's CPU seconds so far.
pub fn own() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| seconds(&s))
        .unwrap_or(0.0)
}

/// Samples the backends of one database until dropped.
pub struct Backends {
    seen: Arc<Mutex<HashMap<u32, f64>>>,
    stop: Arc<AtomicBool>,
}

impl Backends {
    pub fn watch(database: &str) -> Backends {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, halt, db) = (seen.clone(), stop.clone(), format!(" {database} "));
        std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                if let Ok(dir) = std::fs::read_dir("/proc") {
                    for entry in dir.flatten() {
                        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok())
                        else {
                            continue;
                        };
                        let path = entry.path();
                        let Ok(cmd) = std::fs::read(path.join("cmdline")) else {
                            continue;
                        };
                        let cmd = String::from_utf8_lossy(&cmd);
                        if !cmd.starts_with("postgres: ") || !cmd.contains(&db) {
                            continue;
                        }
                        if let Some(secs) = std::fs::read_to_string(path.join("stat"))
                            .ok()
                            .and_then(|s| seconds(&s))
                        {
                            s.lock().unwrap().insert(pid, secs);
                        }
                    }
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        });
        Backends { seen, stop }
    }

    /// CPU seconds of every backend seen so far (live ones: up to now).
    pub fn total(&self) -> f64 {
        std::thread::sleep(SAMPLE_EVERY * 2);
        self.seen.lock().unwrap().values().sum()
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The load average line, for the record.
pub fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

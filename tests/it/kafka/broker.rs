//! A Kafka broker for one test.
//!
//! `MYKEY_TEST_KAFKA_BROKERS` set (scripts/test and .ci/run start one broker for the whole
//! run): tests use it, each with its own topics and group ids. Unset: each test starts its own
//! tansu, so a test never skips silently. Tests that freeze the broker always start their own.
//! The tansu binary: `MYKEY_TANSU`, else `../shared/bin/tansu` beside the repository (copied
//! and made executable if it lacks its run bit), else `tansu` on `PATH`; `scripts/kafka-broker
//! path` installs one when none is found.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a private tansu gets to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Start attempts (a port picked free can be taken before tansu binds it).
const START_ATTEMPTS: usize = 3;

#[derive(Debug)]
pub struct Broker {
    pub addr: String,
    child: Option<Child>,
}

impl Broker {
    /// The run's broker when there is one, else a private one.
    pub async fn shared() -> Broker {
        match std::env::var("MYKEY_TEST_KAFKA_BROKERS") {
            Ok(addr) if !addr.trim().is_empty() => Broker { addr, child: None },
            _ => Broker::private().await,
        }
    }

    /// A tansu of this test's own (in memory), e.g. to stop and continue it.
    pub async fn private() -> Broker {
        let tansu = tansu();
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
                Ok(a) => a.port(),
                Err(e) => panic!("no free port: {e}"),
            };
            let url = format!("tcp://127.0.0.1:{port}");
            let mut child = Command::new(&tansu)
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                ])
                .args(["--storage-engine", "memory://tansu/"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", tansu.display()));
            let deadline = Instant::now() + READY_TIMEOUT;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!("tansu exited with {status} on port {port}");
                    break;
                }
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return Broker {
                        addr: format!("127.0.0.1:{port}"),
                        child: Some(child),
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last =
                        format!("tansu did not accept connections on {port} in {READY_TIMEOUT:?}");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("no private Kafka broker: {last}");
    }

    /// The private broker's process id (for `kill -STOP`).
    pub fn pid(&self) -> u32 {
        match &self.child {
            Some(c) => c.id(),
            None => panic!("only a private broker has a process of this test's own"),
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill {signal}: {e}"));
        assert!(status.success(), "kill {signal} failed");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // A stopped process would not die of SIGKILL until continued on some systems.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn tansu() -> PathBuf {
    if let Some(p) = std::env::var_os("MYKEY_TANSU").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shared = repo.join("../shared/bin/tansu");
    if shared.is_file() {
        return runnable_copy(&shared);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("tansu");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let installed = repo.join("target/tansu/bin/tansu");
    if installed.is_file() {
        return installed;
    }
    panic!(
        "no Kafka broker for the tests: set MYKEY_TEST_KAFKA_BROKERS or MYKEY_TANSU, \
         or run scripts/kafka-broker path (it installs tansu), or use scripts/test"
    );
}

/// `shared` itself when it can run, else an executable copy (CI's ../shared has no write bits,
/// and may lack the run bit).
fn runnable_copy(shared: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let executable = std::fs::metadata(shared)
        .map(|m| m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    if executable {
        return shared.to_path_buf();
    }
    // One copy per machine (as scripts/kafka-broker makes it), written under a temporary name
    // and renamed, so test processes starting together never run a half-written file.
    let dir = std::env::temp_dir().join("mykey-tansu-copy");
    let copy = dir.join("tansu");
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    if len(&copy).is_some() && len(&copy) == len(shared) {
        return copy;
    }
    let partial = dir.join(format!("tansu.{}", std::process::id()));
    let made = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::copy(shared, &partial))
        .and_then(|_| std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755)))
        .and_then(|_| std::fs::rename(&partial, &copy));
    if let Err(e) = made {
        panic!("cannot make a runnable copy of {}: {e}", shared.display());
    }
    copy
}

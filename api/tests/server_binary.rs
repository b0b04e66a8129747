//! The `mykey-server` binary as a person runs it from the README: no configuration at all.
//!
//! This lives in the `api` package (not the workspace's `tests` binary) because only a
//! package's own integration tests are guaranteed a built copy of its binaries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The README's server command with no configuration: a private PostgreSQL under the var dir,
/// migrations, readiness, and a clean stop (the private cluster with it) on SIGTERM.
#[tokio::test]
async fn server_binary_runs_on_a_private_postgres_and_stops_cleanly_on_sigterm() {
    let bin = server_binary();
    let var_dir = tempdir();
    let _cleanup = StopLeftoverCluster(var_dir.clone());
    let port = free_port();
    let mut child = tokio::process::Command::new(&bin)
        .env_remove("DATABASE_URL")
        .env("MYKEY_VAR_DIR", &var_dir)
        .env("MYKEY_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));

    // The server logs when it listens (after initdb, start-up and migrations); wait for that
    // line rather than polling. initdb on first start takes a few seconds.
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let listening = tokio::time::timeout(std::time::Duration::from_secs(120), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("mykey-server listening") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or_else(|_| panic!("server did not listen within 120 s"));
    assert!(listening, "server exited before listening");
    // Keep draining the log so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let resp = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("readyz: {e}"));
    assert_eq!(resp.status(), 200);
    let pid_file = var_dir.join("postgres").join("postmaster.pid");
    assert!(
        pid_file.exists(),
        "the private cluster runs under the var dir"
    );

    let pid = child.id().unwrap_or_else(|| panic!("no pid"));
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("kill: {e}"));
    assert!(killed.success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait())
        .await
        .unwrap_or_else(|_| panic!("server did not stop within 60 s of SIGTERM"))
        .unwrap_or_else(|e| panic!("wait: {e}"));
    assert!(status.success(), "clean exit, got {status}");
    assert!(
        !pid_file.exists(),
        "the private cluster was stopped with the server"
    );
}

/// Arguments are parsed before anything starts: `--help` and typos touch no database (no
/// private cluster appears under the var dir); a command's stdout is its JSON result only, its
/// logs go to stderr, including a command that starts the private cluster, runs the migrations
/// as the owner and then works as the runtime role.
#[test]
fn help_and_typos_start_nothing_and_stdout_is_only_the_json_result() {
    let bin = server_binary();
    let var_dir = tempdir();
    let _cleanup = StopLeftoverCluster(var_dir.clone());
    let run = |args: &[&str]| {
        std::process::Command::new(&bin)
            .args(args)
            .env_remove("DATABASE_URL")
            .env_remove("MYKEY_OWNER_DATABASE_URL")
            .env("MYKEY_VAR_DIR", &var_dir)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
    };
    let help = run(&["--help"]);
    assert!(help.status.success(), "{help:?}");
    let text = String::from_utf8_lossy(&help.stdout);
    for cmd in [
        "register-rp",
        "load-crl",
        "import-renewals",
        "rotate-signing-key",
    ] {
        assert!(text.contains(cmd), "--help lists {cmd}: {text}");
    }
    for typo in [
        &["regster-rp", "--id", "x"][..],
        &["load-crl"][..],
        &["register-rp", "--id", "x", "--kind", "municipality"][..],
        &["--no-such-flag"][..],
    ] {
        let out = run(typo);
        assert_eq!(out.status.code(), Some(2), "{typo:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{typo:?}: nothing on stdout");
        assert!(!out.stderr.is_empty(), "{typo:?}: says why on stderr");
    }
    assert!(
        !var_dir.join("postgres").exists(),
        "no private cluster was created for --help or a typo"
    );

    let token = run(&["new-operator-token", "--id", "alice"]);
    assert!(token.status.success(), "{token:?}");
    let json: serde_json::Value = serde_json::from_slice(&token.stdout)
        .unwrap_or_else(|e| panic!("stdout is one JSON value: {e}: {token:?}"));
    assert!(json["token"].is_string());
    assert!(
        !var_dir.join("postgres").exists(),
        "offline commands need no database"
    );

    let rotated = run(&["rotate-signing-key"]);
    assert!(rotated.status.success(), "{rotated:?}");
    let json: serde_json::Value = serde_json::from_slice(&rotated.stdout)
        .unwrap_or_else(|e| panic!("stdout is one JSON value: {e}: {rotated:?}"));
    assert!(json["kid"].is_string(), "{json}");
    assert!(
        String::from_utf8_lossy(&rotated.stderr).contains("private PostgreSQL"),
        "logs went to stderr: {rotated:?}"
    );
}

/// Cargo builds the package's own binaries for its integration tests.
fn server_binary() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_mykey-server"))
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "mykey-server-test-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// If the test fails half-way, the server is SIGKILLed (kill_on_drop) and cannot stop its
/// private cluster: stop it here so a failing run leaves no PostgreSQL behind.
struct StopLeftoverCluster(std::path::PathBuf);

impl Drop for StopLeftoverCluster {
    fn drop(&mut self) {
        if let Err(e) = mykey_api::local_pg::LocalPostgres::stop_leftover(&self.0) {
            eprintln!(
                "warning: could not stop the cluster under {}: {e}",
                self.0.display()
            );
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

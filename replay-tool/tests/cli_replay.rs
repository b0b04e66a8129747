//! The `mykey-replay` binary's `replay`, `diff` and `drop`: bad arguments and unreachable
//! databases exit 2 with a message, never a panic.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mykey-replay"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("panicked"), "{args:?}: {text}");
    (out.status.code().unwrap_or(-1), text)
}

/// Port 1 on the loopback: nothing listens, the connection is refused at once.
const NOWHERE: &str = "host=127.0.0.1 port=1 user=postgres dbname=x connect_timeout=2";

#[test]
fn bad_replay_diff_and_drop_arguments_exit_2() {
    for args in [
        &["replay"][..],
        &["replay", "ppids"][..],
        &[
            "replay",
            "ppids",
            "--database-url",
            NOWHERE,
            "--to-position",
            "0",
        ][..],
        &[
            "replay",
            "ppids",
            "--database-url",
            NOWHERE,
            "--as-of",
            "yesterday",
        ][..],
        &["replay", "nope", "--database-url", NOWHERE][..],
        &[
            "replay",
            "ppids",
            "--database-url",
            NOWHERE,
            "--schema",
            "rm_ppids_v1_g1",
        ][..],
        &["replay", "ppids", "--database-url", NOWHERE][..],
        &["diff", "--database-url", NOWHERE][..],
        &["diff", "--database-url", NOWHERE, "--schema", "public"][..],
        &["diff", "--database-url", NOWHERE, "--schema", "replay_x"][..],
        &["drop", "--schema", "replay_x"][..],
        &["drop", "--database-url", NOWHERE, "--schema", "read_models"][..],
    ] {
        let (code, text) = run(args);
        assert_eq!(code, 2, "{args:?}: {text}");
        assert!(!text.trim().is_empty(), "{args:?}: no message");
    }
    let (code, text) = run(&["replay", "--help"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("--as-of"), "{text}");
}

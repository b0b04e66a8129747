//! The `mykey-replay` binary: exit codes and messages for bad input, never a panic.

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

#[test]
fn bad_arguments_exit_2_with_usage() {
    for args in [
        &[][..],
        &["verify"][..],
        &["verify", "--file", "a", "--database-url", "b"][..],
        &["export", "--output", "x"][..],
        &["history", "--stream", "Not A Stream", "--file", "x"][..],
        &[
            "verify",
            "--file",
            "/nonexistent/file.ndjson",
            "--no-manifest",
        ][..],
        &["verify", "--file", "x", "--checkpoint", "c"][..],
        &["replay", "--as-of", "2026-01-01"][..],
    ] {
        let (code, text) = run(args);
        assert_eq!(code, 2, "{args:?}: {text}");
    }
    let (code, text) = run(&["--help"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("verify"), "{text}");
}

#[test]
fn a_corrupt_line_exits_1_naming_the_line() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let file = dir.join(format!("corrupt-{}.ndjson", std::process::id()));
    std::fs::write(&file, "{\"global_position\": 1}\n").unwrap_or_else(|e| panic!("{e}"));
    let path = file.display().to_string();
    let (code, text) = run(&["verify", "--file", &path, "--no-manifest"]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("line 1: not a stored event"), "{text}");
}

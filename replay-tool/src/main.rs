//! `mykey-replay`: see the library docs (`replay-tool/src/lib.rs`).

use clap::Parser;
use mykey_replay::{run, Cli};
use std::process::ExitCode;

/// Usage errors and unreadable inputs.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mykey-replay: cannot start: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match runtime.block_on(run(cli, &mut out)) {
        Ok(outcome) => outcome.exit_code(),
        Err(e) => {
            eprintln!("mykey-replay: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

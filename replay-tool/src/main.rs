//! The auditors' CLI: replay the log, verify it is complete and untampered, rebuild any read
//! model as of a past moment. (Not filled yet.)

fn main() {
    eprintln!("mykey-replay: not implemented yet");
    std::process::exit(2);
}

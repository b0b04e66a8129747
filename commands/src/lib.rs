//! Command handlers: load a stream, decide on fresh state, append with the expected version,
//! and retry a bounded number of times on a version conflict.

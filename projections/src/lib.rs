//! Read models: pure `apply` functions ([`projection::Projection`]) and the runner that commits
//! each read model together with its checkpoint, and rebuilds from the log.

// Test code may unwrap: a panic is the failure report there.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod exec;
pub mod fingerprint;
pub mod kafka;
pub mod models;
pub mod projection;
pub mod reports;
pub mod runner;

pub use projection::{ApplyError, Change, KafkaMode, Param, Projection, Recorded};
pub use runner::{Projections, RunnerOptions};

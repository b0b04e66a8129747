//! Read models: pure `apply` functions ([`projection::Projection`]) and the runner that commits
//! each read model together with its checkpoint, and rebuilds from the log.

pub mod exec;
pub mod projection;

pub use projection::{ApplyError, Change, Param, Projection, Recorded};

//! The read models. (Placeholder on this branch: the read-model helper's branch fills it.)

use crate::Projection;
use std::sync::Arc;

/// Every read model the server runs.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![]
}

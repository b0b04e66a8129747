//! Read models: pure `apply(read model, event)` functions and the runner that commits each
//! read model together with its checkpoint, consumes from Kafka and rebuilds from the log.
//! (Not filled yet.)

pub mod kafka;

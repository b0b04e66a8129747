//! Handler and rule tests against the in-memory store: one test binary.

mod flows;
mod identity;
mod properties;
mod rules;
mod support;

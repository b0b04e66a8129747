//! The one integration-test binary. Each module owns one area; each test has its own database.

mod auth;
mod commands;
mod pki;
mod projections;
mod server;
mod store;

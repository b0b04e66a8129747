//! The one integration-test binary. Each module owns one area; each test has its own database.

mod auth;
mod commands;
mod kafka;
mod pki;
mod server;
mod store;

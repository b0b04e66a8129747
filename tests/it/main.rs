//! The one integration-test binary. Each module owns one area; each test has its own database.

mod auth;
mod auth_hardening;
mod commands;
mod login_b;
mod pki;
mod projections;
mod read_models;
mod reports;
mod replay;
mod replay_projections;
mod server;
mod store;

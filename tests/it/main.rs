//! The one integration-test binary. Each module owns one area; each test has its own database.

mod auth;
mod auth_hardening;
mod commands;
mod doors_operator;
mod login_b;
mod pki;
mod projections;
mod read_models;
mod replay;
mod reports;
mod server;
mod store;

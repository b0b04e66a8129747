//! The HTTP API of the MyKey Platform and the `mykey-server` binary.
//!
//! [`startup::Application::build`] is the whole server as a testable object (tests bind port 0);
//! `main` only reads [`config::Settings`] and starts telemetry. With no `DATABASE_URL` the
//! server runs a private PostgreSQL cluster under `./var/` ([`local_pg`]).

pub mod audit;
pub mod auth;
pub mod cli;
pub mod codes;
pub mod config;
pub mod errors;
pub mod http;
pub mod local_pg;
pub mod patch_expiry;
pub mod projector_http;
pub mod routes;
pub mod startup;
pub mod telemetry;

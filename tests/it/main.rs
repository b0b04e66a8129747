//! The one integration-test binary. Each module owns one area; each test has its own database.

mod auth;
mod auth_hardening;
mod commands;
mod doors_citizen;
mod doors_core;
mod doors_fuzz;
mod doors_operator;
mod doors_operator_positions;
mod doors_provider;
mod doors_rp;
mod kafka;
mod kafka_projector;
mod kafka_projector_ops;
mod login_b;
mod login_read_model;
mod pki;
mod projections;
mod read_models;
mod replay;
mod replay_kafka;
mod replay_projections;
mod reports;
mod server;
mod store;
mod store_tail;

//! HTTP routes, one module per area.

pub mod auth;
pub mod health;
pub mod oauth;
pub mod operator;
pub mod wellknown;

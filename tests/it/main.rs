//! The one integration-test binary. Each module owns one area; each test has its own database.

mod server;

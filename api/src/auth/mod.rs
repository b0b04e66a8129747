//! Citizen-card login as the HTTP layer sees it: the logic is the `mykey-login` crate
//! (re-exported here whole, so `crate::auth::...` paths name it), and [`problem`] is the one
//! conversion of its typed errors into problem+json.

pub use mykey_login::*;

mod problem;

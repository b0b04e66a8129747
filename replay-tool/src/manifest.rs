//! The manifest written next to an export (`<file>.manifest.json`).
//!
//! **Decision: the tool holds no private key.** The checkpoint key lives sealed in the
//! server's database; handing it to an export tool would let whoever runs the export sign
//! anything. Instead the manifest embeds the newest **server-signed checkpoint note** whose
//! position lies inside the exported range (by default the export ends exactly at the latest
//! checkpoint, so the note vouches for the last exported hash). An auditor with only the
//! public key verifies the note, then the file's chain up to that position: the signed hash
//! commits to every earlier event through `prev_hash`, so any edit, deletion, reordering or
//! truncation of the file — or of the manifest's counts and hashes — is detected. A forged
//! manifest note fails its signature. Events after the checkpoint (an export that runs past
//! it) are chain-checked but not signed; `verify` says so.

use crate::db::Selection;
use chrono::{DateTime, Utc};
use mykey_schemas::Hash;
use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "mykey-export/v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub selection: Selection,
    pub count: u64,
    pub first_position: Option<u64>,
    pub last_position: Option<u64>,
    /// `prev_hash` of the first exported event (the chain's anchor).
    pub first_prev_hash: Option<Hash>,
    pub last_hash: Option<Hash>,
    /// The server-signed checkpoint note covering the export, verbatim.
    pub checkpoint: Option<String>,
    pub exported_at: DateTime<Utc>,
}

impl Manifest {
    /// The manifest path next to an export file.
    pub fn path_for(file: &std::path::Path) -> std::path::PathBuf {
        let mut name = file.as_os_str().to_owned();
        name.push(".manifest.json");
        name.into()
    }
}

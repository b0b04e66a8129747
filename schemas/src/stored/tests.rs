//! Guards for the stored forms: schema files match the code, upcasting works, unknown types
//! are refused.

use super::relying_party::{RelyingPartyRegisteredV1, V1_DEFAULT_KIND};
use super::*;
use mykey_domain::relying_party::{RelyingParty, RelyingPartyEvent, RpKind};
use std::collections::BTreeSet;
use std::path::PathBuf;

fn json_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("json")
}

fn render(f: &SchemaFile) -> String {
    let mut s = serde_json::to_string_pretty(&f.schema).unwrap_or_default();
    s.push('\n');
    s
}

/// Fails when a file under `schemas/json/` differs from the schema generated from the code,
/// is missing, or is left over. `UPDATE_SCHEMAS=1 cargo test -p mykey-schemas` rewrites them.
#[test]
fn json_schema_files_match_the_code() {
    let dir = json_dir();
    let files = all_schema_files();
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some_and(|v| v == "1");
    let mut problems = Vec::new();
    let names: BTreeSet<_> = files.iter().map(|f| f.file_name.clone()).collect();
    assert_eq!(
        names.len(),
        files.len(),
        "two stored types share a name and version"
    );
    if update {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("cannot create {}: {e}", dir.display());
        }
    }
    for f in &files {
        let path = dir.join(&f.file_name);
        let want = render(f);
        if update {
            if let Err(e) = std::fs::write(&path, &want) {
                panic!("cannot write {}: {e}", path.display());
            }
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(have) if have == want => {}
            Ok(_) => problems.push(format!("{} differs from the code", f.file_name)),
            Err(_) => problems.push(format!("{} is missing", f.file_name)),
        }
    }
    let on_disk = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for name in on_disk {
        if name.ends_with(".json") && !names.contains(&name) {
            problems.push(format!("{name} has no stored type (remove it)"));
        }
    }
    assert!(
        problems.is_empty(),
        "schema files drifted from the code:\n  {}\nrun `UPDATE_SCHEMAS=1 cargo test -p mykey-schemas` and review the diff",
        problems.join("\n  ")
    );
}

#[test]
fn every_schema_file_is_checkable() {
    // The checker refuses keywords it does not know, so this proves every schema uses only
    // what `json_check` understands (and thus that the property tests really validate).
    for f in all_schema_files() {
        let schema = serde_json::to_value(&f.schema).unwrap_or_default();
        let err = crate::json_check::validate(&schema, &serde_json::json!(42));
        assert!(
            err.as_ref().is_err_and(|e| !e.contains("unsupported")),
            "{}: {err:?}",
            f.file_name
        );
    }
}

#[test]
fn relying_party_registered_v1_is_upcast_with_the_documented_default_kind() {
    let v1 = RelyingPartyRegisteredV1 {
        relying_party_id: "city-131016".into(),
        code: "131016".into(),
        name: "Chiyoda".into(),
        public_jwk: serde_json::json!({"kty": "RSA", "n": "x", "e": "AQAB"}),
    };
    let payload = serde_json::to_string(&v1).unwrap_or_default();
    assert!(!payload.contains("kind"));
    let decoded = RelyingParty::decode("RelyingPartyRegistered", 1, &payload);
    match decoded {
        Ok(RelyingPartyEvent::Registered { kind, code, .. }) => {
            assert_eq!(kind, RpKind::Municipality);
            assert_eq!(code, "131016");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(V1_DEFAULT_KIND, relying_party::StoredRpKind::Municipality);
    // New events are always written in the current version.
    if let Ok(event) = RelyingParty::decode("RelyingPartyRegistered", 1, &payload) {
        let enc = RelyingParty::encode(&event).map(|e| e.schema_version).ok();
        assert_eq!(enc, Some(2));
    }
}

#[test]
fn unknown_types_versions_and_bad_payloads_are_refused_not_guessed() {
    assert_eq!(
        RelyingParty::decode("RelyingPartyRegistered", 3, "{}")
            .map_err(|e| e.code())
            .err(),
        Some("UNKNOWN_EVENT_TYPE")
    );
    assert_eq!(
        RelyingParty::decode("PpidIssued", 1, "{}")
            .map_err(|e| e.code())
            .err(),
        Some("UNKNOWN_EVENT_TYPE")
    );
    assert_eq!(
        RelyingParty::decode("RelyingPartySuspended", 1, "{\"why\":1}")
            .map_err(|e| e.code())
            .err(),
        Some("MALFORMED_EVENT")
    );
    assert_eq!(
        RelyingParty::decode(
            "RelyingPartyRegistered",
            2,
            r#"{"relying_party_id":"bad id","code":"1","name":"n","kind":"municipality","public_jwk":{}}"#
        )
        .map_err(|e| e.code())
        .err(),
        Some("INVALID_STORED_EVENT")
    );
}

//! The guard against a changed `apply` or `migrations` under an unchanged `version`.
//!
//! `projections/fingerprints.txt` keeps, per projection, its version and the SHA-256 of its
//! source ([`Projection::source`]) and migrations. A test fails when a fingerprint changed
//! but the version did not (the live tables would silently mix old and new rows: bump the
//! version, which rebuilds into fresh tables). After a deliberate change,
//! `UPDATE_FINGERPRINTS=1 cargo test -p mykey-projections fingerprint` rewrites the file.

use crate::Projection;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The checked-in file, relative to this crate's directory.
pub const FINGERPRINTS_FILE: &str = "fingerprints.txt";

/// SHA-256 (hex) of a projection's source and migrations.
pub fn fingerprint(projection: &dyn Projection) -> String {
    let mut hash = Sha256::new();
    hash.update(projection.source().as_bytes());
    for ddl in projection.migrations() {
        hash.update([0u8]);
        hash.update(ddl.as_bytes());
    }
    hex::encode(hash.finalize())
}

/// The file's contents for `projections`: `name version fingerprint`, one line each, by name.
pub fn render(projections: &[Arc<dyn Projection>]) -> String {
    let mut lines: Vec<String> = projections
        .iter()
        .map(|p| format!("{} {} {}\n", p.name(), p.version(), fingerprint(&**p)))
        .collect();
    lines.sort();
    let mut out = String::from(
        "# name version sha256(source, migrations): see projections/src/fingerprint.rs\n",
    );
    out.extend(lines);
    out
}

/// Parses the file: name → (version, fingerprint).
pub fn parse(text: &str) -> Result<BTreeMap<String, (u32, String)>, String> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [name, version, fingerprint] = parts[..] else {
            return Err(format!("malformed line {line:?}"));
        };
        let version = version
            .parse()
            .map_err(|_| format!("malformed version in {line:?}"))?;
        out.insert(name.to_owned(), (version, fingerprint.to_owned()));
    }
    Ok(out)
}

/// What is wrong between the recorded fingerprints and the code (empty: nothing).
pub fn check(
    recorded: &BTreeMap<String, (u32, String)>,
    projections: &[Arc<dyn Projection>],
) -> Vec<String> {
    let mut problems = Vec::new();
    for p in projections {
        let name = p.name();
        if p.source().is_empty() {
            problems.push(format!(
                "{name}: source() is empty; return include_str!(\"<its file>\") so changes to apply are caught"
            ));
        }
        let now = fingerprint(&**p);
        match recorded.get(name) {
            None => problems.push(format!("{name}: no recorded fingerprint")),
            Some((v, f)) if *v == p.version() && *f != now => problems.push(format!(
                "{name}: apply or migrations changed but version {v} did not: bump the version \
                 (the runner rebuilds it into fresh tables), then refresh the file"
            )),
            Some((v, _)) if *v != p.version() => problems.push(format!(
                "{name}: version {v} became {}: refresh the file",
                p.version()
            )),
            Some(_) => {}
        }
    }
    for name in recorded.keys() {
        if !projections.iter().any(|p| p.name() == name) {
            problems.push(format!("{name}: recorded but no such projection"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ApplyError, Change, Recorded};

    struct Fake {
        version: u32,
        source: &'static str,
    }

    impl Projection for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn version(&self) -> u32 {
            self.version
        }
        fn migrations(&self) -> &'static [&'static str] {
            &["CREATE TABLE t (n bigint)"]
        }
        fn apply(&self, _: Recorded<'_>, _: &mut Vec<Change>) -> Result<(), ApplyError> {
            Ok(())
        }
        fn source(&self) -> &'static str {
            self.source
        }
    }

    fn fake(version: u32, source: &'static str) -> Vec<Arc<dyn Projection>> {
        vec![Arc::new(Fake { version, source })]
    }

    #[test]
    fn the_recorded_fingerprints_match_every_read_model() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(FINGERPRINTS_FILE);
        let all = crate::models::all();
        if std::env::var_os("UPDATE_FINGERPRINTS").is_some_and(|v| v == "1") {
            std::fs::write(&path, render(&all)).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let problems = check(&parse(&text).unwrap(), &all);
        assert!(
            problems.is_empty(),
            "read-model fingerprints:\n  {}\n(after bumping versions: `UPDATE_FINGERPRINTS=1 cargo test -p mykey-projections fingerprint`)",
            problems.join("\n  ")
        );
    }

    #[test]
    fn a_changed_apply_under_the_same_version_is_caught() {
        let recorded = parse(&render(&fake(1, "fn apply() { a }"))).unwrap();
        assert!(check(&recorded, &fake(1, "fn apply() { a }")).is_empty());
        let problems = check(&recorded, &fake(1, "fn apply() { b }"));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("did not: bump the version"));
        // A bumped version asks for the file to be refreshed, which then passes.
        let problems = check(&recorded, &fake(2, "fn apply() { b }"));
        assert!(problems[0].contains("version 1 became 2"));
        let refreshed = parse(&render(&fake(2, "fn apply() { b }"))).unwrap();
        assert!(check(&refreshed, &fake(2, "fn apply() { b }")).is_empty());
    }

    #[test]
    fn missing_stale_and_sourceless_entries_are_reported() {
        let empty = BTreeMap::new();
        assert!(check(&empty, &fake(1, "x"))[0].contains("no recorded fingerprint"));
        let recorded = parse(&render(&fake(1, ""))).unwrap();
        assert!(check(&recorded, &fake(1, ""))[0].contains("source() is empty"));
        assert!(check(&recorded, &[])[0].contains("no such projection"));
        assert!(parse("fake one abc").is_err());
    }
}

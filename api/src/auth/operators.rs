//! Who an operator request comes from: bearer tokens for `/v1/operator/*`, each naming an
//! operator, so the events an operator causes carry that operator's id (an auditor must be
//! able to tell who loaded a CRL or suspended a relying party).
//!
//! `MYKEY_OPERATOR_TOKENS_FILE` holds one operator per line, `<operator-id> <sha256-hex>`, the
//! hash of the operator's token (the file never holds a token; `mykey-server
//! new-operator-token --id ID` makes a token and its line). `#` starts a comment. The older
//! single shared `MYKEY_OPERATOR_TOKEN` still works and acts as operator `operator`.

use sha2::{Digest, Sha256};

/// Shortest token accepted: 32 characters (the generated ones are 43).
pub const MIN_TOKEN_CHARS: usize = 32;

/// The operator id the shared `MYKEY_OPERATOR_TOKEN` acts as.
pub const SHARED_OPERATOR_ID: &str = "operator";

#[derive(Clone, Default)]
pub struct OperatorTokens {
    entries: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for OperatorTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.entries.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("OperatorTokens")
            .field("operators", &ids)
            .finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

impl OperatorTokens {
    /// The single shared token of `MYKEY_OPERATOR_TOKEN`.
    pub fn shared(token: &str) -> Result<OperatorTokens, String> {
        if token.chars().count() < MIN_TOKEN_CHARS {
            return Err(format!("at least {MIN_TOKEN_CHARS} characters"));
        }
        Ok(OperatorTokens {
            entries: vec![(SHARED_OPERATOR_ID.to_owned(), digest(token))],
        })
    }

    /// Parses a tokens file. Errors name the line; they never echo a hash.
    pub fn parse(text: &str) -> Result<OperatorTokens, String> {
        let mut entries: Vec<(String, [u8; 32])> = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let n = n + 1;
            let mut fields = line.split_whitespace();
            let (Some(id), Some(hash), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err(format!(
                    "line {n}: expected `<operator-id> <sha256-hex of the token>`"
                ));
            };
            if !valid_id(id) {
                return Err(format!(
                    "line {n}: operator id must be 1-64 of A-Z a-z 0-9 . _ - @"
                ));
            }
            let mut bytes = [0u8; 32];
            if hash.len() != 64 || hex::decode_to_slice(hash, &mut bytes).is_err() {
                return Err(format!(
                    "line {n}: the hash must be 64 hex digits (SHA-256 of the token)"
                ));
            }
            if entries.iter().any(|(other, _)| other == id) {
                return Err(format!("line {n}: operator {id} listed twice"));
            }
            if entries.iter().any(|(_, h)| *h == bytes) {
                return Err(format!("line {n}: two operators share one token"));
            }
            entries.push((id.to_owned(), bytes));
        }
        Ok(OperatorTokens { entries })
    }

    /// Both sources together; an operator id may appear once.
    pub fn merge(mut self, other: OperatorTokens) -> Result<OperatorTokens, String> {
        for (id, hash) in other.entries {
            if self.entries.iter().any(|(mine, _)| *mine == id) {
                return Err(format!("operator {id} configured twice"));
            }
            self.entries.push((id, hash));
        }
        Ok(self)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The operator whose token this is. Every entry is compared, each in constant time, so
    /// the time taken reveals neither the token nor which operator matched.
    pub fn identify(&self, presented: &str) -> Option<&str> {
        let given = digest(presented);
        let mut found = None;
        for (id, hash) in &self.entries {
            let diff = hash
                .iter()
                .zip(&given)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(id.as_str());
            }
        }
        found
    }

    /// A fresh random token for `id` and the line to add to the tokens file.
    pub fn new_token(id: &str) -> Result<(String, String), String> {
        if !valid_id(id) {
            return Err("operator id must be 1-64 of A-Z a-z 0-9 . _ - @".into());
        }
        let bytes: [u8; 32] = rand::random();
        let token =
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes);
        let line = format!("{id} {}", hex::encode(digest(&token)));
        Ok((token, line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_identifies_its_operator_and_no_other() {
        let (alice, alice_line) = OperatorTokens::new_token("alice").unwrap_or_default();
        let (bob, bob_line) = OperatorTokens::new_token("bob@city").unwrap_or_default();
        assert!(alice.len() >= MIN_TOKEN_CHARS);
        assert!(
            !alice_line.contains(&alice),
            "the line holds a hash, not the token"
        );
        let file = format!("# on-call operators\n{alice_line}\n\n{bob_line}  # since May\n");
        let ops = OperatorTokens::parse(&file).unwrap_or_default();
        assert_eq!(ops.identify(&alice), Some("alice"));
        assert_eq!(ops.identify(&bob), Some("bob@city"));
        assert_eq!(ops.identify(""), None);
        assert_eq!(ops.identify(&alice[1..]), None);
        assert!(!format!("{ops:?}").contains(&alice_line[6..]));
    }

    #[test]
    fn the_shared_token_acts_as_operator_and_merges_with_the_file() {
        let shared = OperatorTokens::shared(&"s".repeat(40)).unwrap_or_default();
        let (alice, line) = OperatorTokens::new_token("alice").unwrap_or_default();
        let ops = shared
            .merge(OperatorTokens::parse(&line).unwrap_or_default())
            .unwrap_or_default();
        assert_eq!(ops.identify(&"s".repeat(40)), Some(SHARED_OPERATOR_ID));
        assert_eq!(ops.identify(&alice), Some("alice"));
        assert!(OperatorTokens::shared("short").is_err());
    }

    #[test]
    fn each_malformed_file_is_refused_with_its_line() {
        let (_, line) = OperatorTokens::new_token("alice").unwrap_or_default();
        let hash = line.split(' ').nth(1).unwrap_or_default().to_owned();
        let cases = [
            ("alice".to_owned(), "line 1: expected"),
            (format!("alice {hash} extra"), "line 1: expected"),
            (format!("al ice{hash}"), "line 1: the hash"),
            (format!("\nalice {}", &hash[..63]), "line 2: the hash"),
            (format!("alice {}", "zz".repeat(32)), "line 1: the hash"),
            (format!("a/b {hash}"), "line 1: operator id"),
            (
                format!("{line}\n{line}"),
                "line 2: operator alice listed twice",
            ),
            (
                format!("{line}\nbob {hash}"),
                "line 2: two operators share one token",
            ),
        ];
        for (text, want) in cases {
            match OperatorTokens::parse(&text) {
                Err(e) => {
                    assert!(e.starts_with(want), "{text:?}: {e}");
                    assert!(!e.contains(&hash), "errors never echo a hash");
                }
                Ok(_) => panic!("{text:?} must be refused"),
            }
        }
        let twice = OperatorTokens::parse(&line)
            .unwrap_or_default()
            .merge(OperatorTokens::parse(&line).unwrap_or_default());
        assert!(twice.is_err());
    }
}

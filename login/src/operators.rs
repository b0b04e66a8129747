//! Who an operator request comes from: bearer tokens for `/v1/operator/*` and `/v1/audit/*`,
//! each naming a person, so the events an operator causes carry that operator's id (an auditor
//! must be able to tell who loaded a CRL or suspended a relying party).
//!
//! `MYKEY_OPERATOR_TOKENS_FILE` holds one credential per line:
//!
//! ```text
//! <id> <sha256-hex of the token> [roles=operator,approver,auditor] [expires=2027-03-01]
//! ```
//!
//! The file never holds a token (`mykey-server new-operator-token --id ID [--roles R,R]
//! [--expires DATE]` makes a token and its line). `#` starts a comment. A line without
//! `roles=` means role `operator` and without `expires=` never expires, so two-field lines
//! written before roles existed keep their meaning. A credential is valid until 00:00 UTC of
//! its `expires` date; the specification rotates credentials every three months, hence
//! [`DEFAULT_CREDENTIAL_DAYS`]. The older single shared `MYKEY_OPERATOR_TOKEN` still works and
//! acts as operator `operator` (role `operator`, no expiry).

use chrono::{DateTime, NaiveDate, Utc};
use sha2::{Digest, Sha256};

/// Shortest token accepted: 32 characters (the generated ones are 43).
pub const MIN_TOKEN_CHARS: usize = 32;

/// The operator id the shared `MYKEY_OPERATOR_TOKEN` acts as.
pub const SHARED_OPERATOR_ID: &str = "operator";

/// Lifetime of a credential made by `new-operator-token` without `--expires`.
pub const DEFAULT_CREDENTIAL_DAYS: i64 = 90;

/// What a credential may do. One bit each in [`Roles`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Operator endpoints (relying parties, CRLs, keys, patches requested).
    Operator,
    /// Approves data patches requested by another operator.
    Approver,
    /// Read-only audit endpoints (`/v1/audit/*`).
    Auditor,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Operator, Role::Approver, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Roles(u8);

impl Roles {
    pub fn of(roles: &[Role]) -> Roles {
        Roles(roles.iter().fold(0, |acc, r| acc | r.bit()))
    }

    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    /// Parses `operator,auditor`; an empty or unknown role is an error naming it.
    pub fn parse(list: &str) -> Result<Roles, String> {
        let mut out = Roles::default();
        for name in list.split(',') {
            let role = Role::parse(name.trim()).ok_or_else(|| {
                format!("unknown role {name:?} (known: operator, approver, auditor)")
            })?;
            out.0 |= role.bit();
        }
        Ok(out)
    }

    pub fn names(self) -> Vec<&'static str> {
        Role::ALL
            .into_iter()
            .filter(|r| self.contains(*r))
            .map(Role::as_str)
            .collect()
    }
}

/// Why a presented credential is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("no credential matches the presented token")]
    Unknown,
    #[error("the credential of {id} expired on {expired}")]
    Expired { id: String, expired: NaiveDate },
    #[error("{id} lacks the role {role}")]
    RoleRequired { id: String, role: &'static str },
}

impl CredentialError {
    /// Stable machine code (the HTTP layer maps it to 401 / 401 / 403).
    pub fn code(&self) -> &'static str {
        match self {
            CredentialError::Unknown => "OPERATOR_UNAUTHORIZED",
            CredentialError::Expired { .. } => "CREDENTIAL_EXPIRED",
            CredentialError::RoleRequired { .. } => "ROLE_REQUIRED",
        }
    }
}

#[derive(Clone)]
struct Entry {
    id: String,
    hash: [u8; 32],
    roles: Roles,
    /// First day (UTC) on which the credential no longer works.
    expires: Option<NaiveDate>,
}

#[derive(Clone, Default)]
pub struct OperatorTokens {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for OperatorTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.entries.iter().map(|e| e.id.as_str()).collect();
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

fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// Parses the optional `roles=` / `expires=` fields of a tokens-file line.
fn parse_options<'a>(
    n: usize,
    fields: impl Iterator<Item = &'a str>,
) -> Result<(Roles, Option<NaiveDate>), String> {
    let usage = || {
        format!(
            "line {n}: expected `<operator-id> <sha256-hex of the token> [roles=a,b] [expires=YYYY-MM-DD]`"
        )
    };
    let (mut roles, mut expires) = (None, None);
    for field in fields {
        if let Some(list) = field.strip_prefix("roles=") {
            if roles.is_some() {
                return Err(usage());
            }
            roles = Some(Roles::parse(list).map_err(|e| format!("line {n}: {e}"))?);
        } else if let Some(date) = field.strip_prefix("expires=") {
            if expires.is_some() {
                return Err(usage());
            }
            expires = Some(parse_date(date).ok_or_else(|| {
                format!("line {n}: expires must be a date YYYY-MM-DD, not {date:?}")
            })?);
        } else {
            return Err(usage());
        }
    }
    Ok((roles.unwrap_or(Roles::of(&[Role::Operator])), expires))
}

impl OperatorTokens {
    /// The single shared token of `MYKEY_OPERATOR_TOKEN`.
    pub fn shared(token: &str) -> Result<OperatorTokens, String> {
        if token.chars().count() < MIN_TOKEN_CHARS {
            return Err(format!("at least {MIN_TOKEN_CHARS} characters"));
        }
        Ok(OperatorTokens {
            entries: vec![Entry {
                id: SHARED_OPERATOR_ID.to_owned(),
                hash: digest(token),
                roles: Roles::of(&[Role::Operator]),
                expires: None,
            }],
        })
    }

    /// Parses a tokens file. Errors name the line; they never echo a hash.
    pub fn parse(text: &str) -> Result<OperatorTokens, String> {
        let mut entries: Vec<Entry> = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let n = n + 1;
            let mut fields = line.split_whitespace();
            let (Some(id), Some(hash)) = (fields.next(), fields.next()) else {
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
            let (roles, expires) = parse_options(n, fields)?;
            if entries.iter().any(|e| e.id == id) {
                return Err(format!("line {n}: operator {id} listed twice"));
            }
            if entries.iter().any(|e| e.hash == bytes) {
                return Err(format!("line {n}: two operators share one token"));
            }
            entries.push(Entry {
                id: id.to_owned(),
                hash: bytes,
                roles,
                expires,
            });
        }
        Ok(OperatorTokens { entries })
    }

    /// Both sources together; an operator id may appear once.
    pub fn merge(mut self, other: OperatorTokens) -> Result<OperatorTokens, String> {
        for e in other.entries {
            if self.entries.iter().any(|mine| mine.id == e.id) {
                return Err(format!("operator {} configured twice", e.id));
            }
            self.entries.push(e);
        }
        Ok(self)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The credential whose token this is. Every entry is compared, each in constant time, so
    /// the time taken reveals neither the token nor which operator matched.
    fn find(&self, presented: &str) -> Option<&Entry> {
        let given = digest(presented);
        let mut found = None;
        for e in &self.entries {
            let diff = e
                .hash
                .iter()
                .zip(&given)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(e);
            }
        }
        found
    }

    /// The person behind `presented` if the credential is unexpired at `now` and carries
    /// `role`; otherwise why not.
    pub fn authorize(
        &self,
        presented: &str,
        role: Role,
        now: DateTime<Utc>,
    ) -> Result<&str, CredentialError> {
        let e = self.find(presented).ok_or(CredentialError::Unknown)?;
        if let Some(expired) = e.expires.filter(|d| now.date_naive() >= *d) {
            return Err(CredentialError::Expired {
                id: e.id.clone(),
                expired,
            });
        }
        if !e.roles.contains(role) {
            return Err(CredentialError::RoleRequired {
                id: e.id.clone(),
                role: role.as_str(),
            });
        }
        Ok(&e.id)
    }

    /// The operator whose token this is, if it is unexpired now and carries role `operator`
    /// (an auditor-only or expired credential never reaches the operator endpoints).
    pub fn identify(&self, presented: &str) -> Option<&str> {
        self.authorize(presented, Role::Operator, Utc::now()).ok()
    }

    /// A fresh random token for `id` and the line to add to the tokens file (role `operator`,
    /// no expiry: the two-field form).
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

    /// A fresh token with roles and an expiry date, and its tokens-file line.
    pub fn new_credential(
        id: &str,
        roles: Roles,
        expires: NaiveDate,
    ) -> Result<(String, String), String> {
        if roles == Roles::default() {
            return Err("at least one role is needed".into());
        }
        let (token, line) = Self::new_token(id)?;
        let line = format!(
            "{line} roles={} expires={}",
            roles.names().join(","),
            expires.format("%Y-%m-%d")
        );
        Ok((token, line))
    }
}

/// `new-operator-token --id ID [--roles a,b] [--expires YYYY-MM-DD]`: default role `operator`,
/// default expiry [`DEFAULT_CREDENTIAL_DAYS`] after `today`. The token goes to the person, the
/// line to the tokens file.
pub fn new_operator_token_command(
    id: &str,
    roles: Option<&str>,
    expires: Option<&str>,
    today: NaiveDate,
) -> Result<serde_json::Value, String> {
    let roles = Roles::parse(roles.unwrap_or("operator"))?;
    let expires = match expires {
        Some(d) => parse_date(d).ok_or_else(|| format!("--expires {d:?}: expected YYYY-MM-DD"))?,
        None => today + chrono::Duration::days(DEFAULT_CREDENTIAL_DAYS),
    };
    if expires <= today {
        return Err(format!("--expires {expires} is not in the future"));
    }
    let (token, line) = OperatorTokens::new_credential(id, roles, expires)?;
    Ok(serde_json::json!({
        "token": token,
        "tokens_file_line": line,
        "roles": roles.names(),
        "expires": expires.format("%Y-%m-%d").to_string(),
    }))
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

    fn at(date: &str) -> DateTime<Utc> {
        parse_date(date)
            .and_then(|d| d.and_hms_opt(12, 0, 0))
            .map(|t| t.and_utc())
            .unwrap_or_default()
    }

    #[test]
    fn roles_and_expiry_are_enforced_with_their_codes() {
        let day = parse_date("2027-03-01").unwrap_or_default();
        let (aud, aud_line) =
            OperatorTokens::new_credential("audrey", Roles::of(&[Role::Auditor]), day)
                .unwrap_or_default();
        let (op, op_line) = OperatorTokens::new_token("olga").unwrap_or_default();
        let ops = OperatorTokens::parse(&format!("{aud_line}\n{op_line}")).unwrap_or_default();
        assert!(aud_line.ends_with(" roles=auditor expires=2027-03-01"));
        assert_eq!(
            ops.authorize(&aud, Role::Auditor, at("2027-02-28")),
            Ok("audrey")
        );
        assert_eq!(
            ops.authorize(&aud, Role::Auditor, at("2027-03-01"))
                .map_err(|e| e.code()),
            Err("CREDENTIAL_EXPIRED")
        );
        assert_eq!(
            ops.authorize(&aud, Role::Operator, at("2027-02-28"))
                .map_err(|e| e.code()),
            Err("ROLE_REQUIRED")
        );
        // An old two-field line: role operator, no expiry.
        assert_eq!(
            ops.authorize(&op, Role::Operator, at("2999-01-01")),
            Ok("olga")
        );
        assert_eq!(
            ops.authorize(&op, Role::Auditor, at("2027-01-01"))
                .map_err(|e| e.code()),
            Err("ROLE_REQUIRED")
        );
        assert_eq!(
            ops.authorize("nope", Role::Auditor, at("2027-01-01"))
                .map_err(|e| e.code()),
            Err("OPERATOR_UNAUTHORIZED")
        );
        // The operator endpoints' check refuses an auditor-only credential.
        assert_eq!(ops.identify(&aud), None);
    }

    #[test]
    fn role_and_expiry_fields_are_parsed_strictly() {
        let (_, line) = OperatorTokens::new_token("alice").unwrap_or_default();
        let ok = OperatorTokens::parse(&format!(
            "{line} expires=2030-01-01 roles=approver,operator"
        ));
        assert!(ok.is_ok(), "{ok:?}");
        for (extra, want) in [
            ("roles=boss", "line 1: unknown role"),
            ("roles=", "line 1: unknown role"),
            ("expires=tomorrow", "line 1: expires must be a date"),
            ("roles=auditor roles=auditor", "line 1: expected"),
        ] {
            match OperatorTokens::parse(&format!("{line} {extra}")) {
                Err(e) => assert!(e.starts_with(want), "{extra}: {e}"),
                Ok(_) => panic!("{extra} must be refused"),
            }
        }
    }

    #[test]
    fn the_cli_command_defaults_to_ninety_days_of_operator() {
        let today = parse_date("2026-11-30").unwrap_or_default();
        let v = new_operator_token_command("alice", None, None, today).unwrap_or_default();
        assert_eq!(v["expires"], "2027-02-28");
        assert_eq!(v["roles"], serde_json::json!(["operator"]));
        let v =
            new_operator_token_command("a", Some("auditor,approver"), Some("2027-01-01"), today)
                .unwrap_or_default();
        assert_eq!(v["roles"], serde_json::json!(["approver", "auditor"]));
        assert!(new_operator_token_command("a", Some("root"), None, today).is_err());
        assert!(new_operator_token_command("a", None, Some("2026-11-30"), today).is_err());
        assert!(new_operator_token_command("a", None, Some("soon"), today).is_err());
    }
}

//! Configuration of citizen-card login, read with the rest of the server's settings
//! (`mykey_api::config::Settings`, which shares [`ConfigError`]).

use super::clock::Clock;
use super::jws::Alg;
use super::operators::OperatorTokens;
use super::ratelimit::RateLimitSettings;
use std::path::PathBuf;

/// A setting (an environment variable) with a value that cannot be used. Defined here, with
/// the first settings that needed it; the server's other settings use it too.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}={value:?} is not valid: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
}

/// Default grace after a CRL's nextUpdate before logins fail closed. J-LIS publishes daily;
/// six hours covers a late publication without accepting a day-old revocation state.
pub const DEFAULT_CRL_GRACE_SECS: i64 = 6 * 3600;

#[derive(Clone)]
pub struct AuthSettings {
    /// `MYKEY_ISSUER`: the platform's public base URL; `iss` of every token, and the token
    /// endpoint (`aud` of client assertions) is `<issuer>/v1/oauth/token`.
    pub issuer: String,
    /// `MYKEY_TRUST_ANCHORS`: a folder of CA certificates; default the shipped real JPKI CAs.
    pub trust_anchors_dir: Option<PathBuf>,
    /// `MYKEY_CRL_GRACE_SECS`.
    pub crl_grace_secs: i64,
    /// `MYKEY_REQUIRE_CRL` (default true): refuse logins for a CA with no CRL loaded.
    pub require_crl: bool,
    /// Who may call /v1/operator/*: `MYKEY_OPERATOR_TOKENS_FILE` (one token hash per named
    /// operator) and/or the shared `MYKEY_OPERATOR_TOKEN`. Neither disables the endpoints.
    pub operators: OperatorTokens,
    /// `MYKEY_ID_TOKEN_ALG`: ES256 (default) or RS256.
    pub id_token_alg: Alg,
    /// `MYKEY_ID_TOKEN_RSA_KEY`: PKCS#8 PEM of the RSA key, required for RS256 (ring cannot
    /// generate RSA keys; operators make one with `openssl genpkey`).
    pub rsa_signing_key: Option<PathBuf>,
    /// `MYKEY_KEY_ENCRYPTION_KEY_FILE`: seals the token-signing keys at rest (AES-256-GCM);
    /// unset stores them bare. Every instance needs the same file.
    pub key_encryption_key_file: Option<PathBuf>,
    /// `MYKEY_RATE_LIMIT_BURST` / `MYKEY_RATE_LIMIT_PER_MINUTE`: unauthenticated refusals
    /// allowed per client address (see [`super::ratelimit`]).
    pub rate_limit: RateLimitSettings,
    /// Not from the environment: tests inject a clock they can move.
    pub clock: Clock,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("issuer", &self.issuer)
            .field("trust_anchors_dir", &self.trust_anchors_dir)
            .field("crl_grace_secs", &self.crl_grace_secs)
            .field("require_crl", &self.require_crl)
            .field("operators", &self.operators)
            .field("id_token_alg", &self.id_token_alg)
            .field("rsa_signing_key", &self.rsa_signing_key)
            .field("key_encryption_key_file", &self.key_encryption_key_file)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

impl AuthSettings {
    pub fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<AuthSettings, ConfigError> {
        let invalid = |name: &'static str, value: String, reason: &str| ConfigError::Invalid {
            name,
            value,
            reason: reason.to_owned(),
        };
        let issuer = get("MYKEY_ISSUER").unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
        let issuer = issuer.trim_end_matches('/').to_owned();
        if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
            return Err(invalid("MYKEY_ISSUER", issuer, "must be an http(s) URL"));
        }
        let crl_grace_secs = match get("MYKEY_CRL_GRACE_SECS") {
            None => DEFAULT_CRL_GRACE_SECS,
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|s| (0..=7 * 86_400).contains(s))
                .ok_or_else(|| invalid("MYKEY_CRL_GRACE_SECS", v.clone(), "seconds, 0..=604800"))?,
        };
        let require_crl = match get("MYKEY_REQUIRE_CRL").as_deref() {
            None | Some("true") | Some("1") => true,
            Some("false") | Some("0") => false,
            Some(v) => return Err(invalid("MYKEY_REQUIRE_CRL", v.to_owned(), "true or false")),
        };
        let id_token_alg = match get("MYKEY_ID_TOKEN_ALG") {
            None => Alg::ES256,
            Some(v) => Alg::parse(&v)
                .ok_or_else(|| invalid("MYKEY_ID_TOKEN_ALG", v.clone(), "ES256 or RS256"))?,
        };
        let rsa_signing_key = get("MYKEY_ID_TOKEN_RSA_KEY").map(PathBuf::from);
        if id_token_alg == Alg::RS256 && rsa_signing_key.is_none() {
            return Err(invalid(
                "MYKEY_ID_TOKEN_RSA_KEY",
                String::new(),
                "required with RS256",
            ));
        }
        let mut operators = match get("MYKEY_OPERATOR_TOKEN").filter(|t| !t.is_empty()) {
            Some(t) => OperatorTokens::shared(&t)
                .map_err(|e| invalid("MYKEY_OPERATOR_TOKEN", "<redacted>".into(), &e))?,
            None => OperatorTokens::default(),
        };
        if let Some(path) = get("MYKEY_OPERATOR_TOKENS_FILE").filter(|p| !p.is_empty()) {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| invalid("MYKEY_OPERATOR_TOKENS_FILE", path.clone(), &e.to_string()))?;
            operators = OperatorTokens::parse(&text)
                .and_then(|file| operators.merge(file))
                .map_err(|e| invalid("MYKEY_OPERATOR_TOKENS_FILE", path.clone(), &e))?;
        }
        let limit = |name: &'static str, default: u32| match get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= 1_000_000)
                .ok_or_else(|| invalid(name, v.clone(), "a whole number, 0..=1000000")),
        };
        let rate_limit = RateLimitSettings {
            burst: limit("MYKEY_RATE_LIMIT_BURST", super::ratelimit::DEFAULT_BURST)?,
            per_minute: limit(
                "MYKEY_RATE_LIMIT_PER_MINUTE",
                super::ratelimit::DEFAULT_PER_MINUTE,
            )?,
        };
        Ok(AuthSettings {
            rate_limit,
            issuer,
            trust_anchors_dir: get("MYKEY_TRUST_ANCHORS")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            crl_grace_secs,
            require_crl,
            operators,
            id_token_alg,
            rsa_signing_key,
            key_encryption_key_file: get("MYKEY_KEY_ENCRYPTION_KEY_FILE")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            clock: Clock::system(),
        })
    }

    /// The token endpoint URL: the required `aud` of client assertions.
    pub fn token_endpoint(&self) -> String {
        format!("{}/v1/oauth/token", self.issuer)
    }
}

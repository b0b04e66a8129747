//! Compact JWS (JWT) signing and verification for exactly two algorithms: ES256 and RS256.
//!
//! The parts that decide what is accepted are ours: the size cap, the closed algorithm list
//! (no `none`, no HMAC: an algorithm is only ever paired with a key of its own type), the
//! refusal of `crit`, and the claim checks at each call site. Signatures are verified with
//! `jsonwebtoken::crypto::verify`. Signing stays on `ring` with key pairs parsed once
//! (ARCHITECTURE.md, "Why the JWS code is ours": `jsonwebtoken` re-parses the private key on
//! every token).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde::{Deserialize, Serialize};

/// Longest compact JWS we parse: client assertions and our own tokens are well under 2 KiB.
pub const MAX_JWS_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Alg {
    ES256,
    RS256,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::ES256 => "ES256",
            Alg::RS256 => "RS256",
        }
    }

    pub fn parse(s: &str) -> Option<Alg> {
        match s {
            "ES256" => Some(Alg::ES256),
            "RS256" => Some(Alg::RS256),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// RFC 7515 §4.1.11: extensions the recipient must understand. We understand none, so a
    /// token carrying `crit` (whatever its value) is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crit: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("not a compact JWS")]
    Malformed,
    #[error("token too large")]
    TooLarge,
    #[error("unsupported algorithm")]
    Algorithm,
    #[error("critical header parameters (crit) are not supported")]
    Critical,
    #[error("signature does not verify")]
    Signature,
    #[error("unusable key: {0}")]
    Key(String),
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// A parsed, not yet verified compact JWS.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub header: Header,
    pub alg: Alg,
    pub payload: Vec<u8>,
    signing_input: &'a str,
    /// The signature segment, base64url as sent.
    signature: &'a str,
}

impl<'a> Parsed<'a> {
    pub fn parse(token: &'a str) -> Result<Parsed<'a>, JwsError> {
        if token.len() > MAX_JWS_BYTES {
            return Err(JwsError::TooLarge);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwsError::Malformed);
        };
        let header: Header = unb64(h)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(JwsError::Malformed)?;
        let alg = Alg::parse(&header.alg).ok_or(JwsError::Algorithm)?;
        if header.crit.is_some() {
            return Err(JwsError::Critical);
        }
        let payload = unb64(p).ok_or(JwsError::Malformed)?;
        if s.is_empty() || unb64(s).is_none() {
            return Err(JwsError::Malformed);
        }
        let signature = s;
        let signing_input = &token[..h.len() + 1 + p.len()];
        Ok(Parsed {
            header,
            alg,
            payload,
            signing_input,
            signature,
        })
    }

    pub fn verify(&self, key: &VerifyKey) -> Result<(), JwsError> {
        if key.alg() != self.alg {
            return Err(JwsError::Algorithm);
        }
        if key.verify(self.signing_input.as_bytes(), self.signature) {
            Ok(())
        } else {
            Err(JwsError::Signature)
        }
    }

    pub fn claims<T: for<'de> Deserialize<'de>>(&self) -> Result<T, JwsError> {
        serde_json::from_slice(&self.payload).map_err(|_| JwsError::Malformed)
    }
}

/// A public key that verifies one algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyKey {
    /// Uncompressed P-256 point (0x04 || x || y).
    Es256(Vec<u8>),
    /// RSA modulus and exponent, big-endian.
    Rs256 { n: Vec<u8>, e: Vec<u8> },
}

impl VerifyKey {
    pub fn alg(&self) -> Alg {
        match self {
            VerifyKey::Es256(_) => Alg::ES256,
            VerifyKey::Rs256 { .. } => Alg::RS256,
        }
    }

    /// Verifies `sig_b64` (a JWS signature segment) over `message` with `jsonwebtoken`. The
    /// algorithm comes from the key, never from the token, so an RSA or EC key can never be
    /// used as an HMAC secret.
    pub fn verify(&self, message: &[u8], sig_b64: &str) -> bool {
        use jsonwebtoken::{Algorithm, DecodingKey};
        let (key, alg) = match self {
            VerifyKey::Es256(point) => (DecodingKey::from_ec_der(point), Algorithm::ES256),
            VerifyKey::Rs256 { n, e } => {
                (DecodingKey::from_rsa_raw_components(n, e), Algorithm::RS256)
            }
        };
        jsonwebtoken::crypto::verify(sig_b64, message, &key, alg).unwrap_or(false)
    }

    /// From a public JWK (`kty` EC with `crv` P-256, or RSA). Private members are refused:
    /// an RP must never hand us its private key.
    pub fn from_jwk(jwk: &serde_json::Value) -> Result<VerifyKey, JwsError> {
        let field = |k: &str| jwk.get(k).and_then(|v| v.as_str());
        let bytes = |k: &str| {
            field(k)
                .and_then(unb64)
                .ok_or_else(|| JwsError::Key(format!("missing or bad `{k}`")))
        };
        if field("d").is_some() {
            return Err(JwsError::Key("JWK contains a private key".into()));
        }
        if let Some(alg) = field("alg") {
            if Alg::parse(alg).is_none() {
                return Err(JwsError::Key(format!("unsupported alg {alg}")));
            }
        }
        match field("kty") {
            Some("EC") => {
                if field("crv") != Some("P-256") {
                    return Err(JwsError::Key("only the P-256 curve is supported".into()));
                }
                let (x, y) = (bytes("x")?, bytes("y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(JwsError::Key("P-256 coordinates must be 32 bytes".into()));
                }
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Ok(VerifyKey::Es256(point))
            }
            Some("RSA") => {
                let (n, e) = (bytes("n")?, bytes("e")?);
                let bits = n
                    .iter()
                    .position(|b| *b != 0)
                    .map_or(0, |i| (n.len() - i) * 8);
                if bits < 2048 {
                    return Err(JwsError::Key("RSA keys must be at least 2048 bits".into()));
                }
                Ok(VerifyKey::Rs256 { n, e })
            }
            _ => Err(JwsError::Key("kty must be EC or RSA".into())),
        }
    }

    /// The public JWK, with `kid`, `alg` and `use: sig`.
    pub fn to_jwk(&self, kid: &str) -> serde_json::Value {
        match self {
            VerifyKey::Es256(point) => serde_json::json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": b64(point.get(1..33).unwrap_or_default()),
                "y": b64(point.get(33..65).unwrap_or_default()),
            }),
            VerifyKey::Rs256 { n, e } => serde_json::json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": b64(n), "e": b64(e),
            }),
        }
    }
}

/// A private signing key of the platform.
pub enum Signer {
    Es256(EcdsaKeyPair),
    Rs256(RsaKeyPair),
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str(match self {
            Signer::Es256(_) => "Signer::Es256(<private>)",
            Signer::Rs256(_) => "Signer::Rs256(<private>)",
        })
    }
}

impl Signer {
    /// A fresh ES256 key as PKCS#8 DER. (RS256 keys are generated outside and imported:
    /// ring cannot generate RSA keys.)
    pub fn generate_es256_pkcs8() -> Result<Vec<u8>, JwsError> {
        EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &SystemRandom::new(),
        )
        .map(|d| d.as_ref().to_vec())
        .map_err(|_| JwsError::Key("key generation failed".into()))
    }

    pub fn from_pkcs8(alg: Alg, pkcs8: &[u8]) -> Result<Signer, JwsError> {
        match alg {
            Alg::ES256 => EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                pkcs8,
                &SystemRandom::new(),
            )
            .map(Signer::Es256)
            .map_err(|e| JwsError::Key(e.to_string())),
            Alg::RS256 => RsaKeyPair::from_pkcs8(pkcs8)
                .map(Signer::Rs256)
                .map_err(|e| JwsError::Key(e.to_string())),
        }
    }

    pub fn alg(&self) -> Alg {
        match self {
            Signer::Es256(_) => Alg::ES256,
            Signer::Rs256(_) => Alg::RS256,
        }
    }

    pub fn public(&self) -> VerifyKey {
        match self {
            Signer::Es256(k) => VerifyKey::Es256(k.public_key().as_ref().to_vec()),
            Signer::Rs256(k) => {
                let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(k.public());
                VerifyKey::Rs256 { n: c.n, e: c.e }
            }
        }
    }

    /// `header.payload.signature` with `alg`, `kid` and `typ` in the header.
    pub fn sign<T: Serialize>(&self, kid: &str, typ: &str, claims: &T) -> Result<String, JwsError> {
        let header = Header {
            alg: self.alg().as_str().to_owned(),
            kid: Some(kid.to_owned()),
            typ: Some(typ.to_owned()),
            crit: None,
        };
        let h = serde_json::to_vec(&header).map_err(|_| JwsError::Malformed)?;
        let p = serde_json::to_vec(claims).map_err(|_| JwsError::Malformed)?;
        let input = format!("{}.{}", b64(&h), b64(&p));
        let rng = SystemRandom::new();
        let sig = match self {
            Signer::Es256(k) => k
                .sign(&rng, input.as_bytes())
                .map_err(|_| JwsError::Signature)?
                .as_ref()
                .to_vec(),
            Signer::Rs256(k) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .map_err(|_| JwsError::Signature)?;
                sig
            }
        };
        Ok(format!("{input}.{}", b64(&sig)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn es256_round_trip_and_tamper() {
        let pk = Signer::generate_es256_pkcs8().unwrap_or_default();
        let s = Signer::from_pkcs8(Alg::ES256, &pk).unwrap_or_else(|e| panic!("{e}"));
        let t = s
            .sign("k1", "JWT", &serde_json::json!({"a": 1}))
            .unwrap_or_default();
        let p = Parsed::parse(&t).unwrap_or_else(|e| panic!("{e}"));
        let key = VerifyKey::from_jwk(&s.public().to_jwk("k1")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.verify(&key), Ok(()));
        let tampered = t.replacen(".e", ".f", 1);
        let bad = Parsed::parse(&tampered).map(|p| p.verify(&key));
        assert!(!matches!(bad, Ok(Ok(()))));
        let crit = format!(
            "{}.{}.{}",
            b64(br#"{"alg":"ES256","crit":["exp"],"exp":1}"#),
            b64(b"{}"),
            b64(b"sig")
        );
        assert_eq!(Parsed::parse(&crit).err(), Some(JwsError::Critical));
        let none = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(b"{}"));
        assert_eq!(Parsed::parse(&none).err(), Some(JwsError::Algorithm));
        assert!(VerifyKey::from_jwk(
            &serde_json::json!({"kty":"EC","crv":"P-256","x":"AA","y":"AA","d":"AA"})
        )
        .is_err());
    }
}

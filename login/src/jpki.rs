//! Verifying a JPKI user-authentication certificate against the configured trust anchors.
//!
//! # Design choice: our own one-level path check
//!
//! Real JPKI user-authentication certificates carry a **critical** certificatePolicies
//! extension (`1.2.392.200149.8.5.1.3.30`). `rustls-webpki` (0.102–0.104) does not process
//! certificate policies and rejects every end-entity certificate with an unknown critical
//! extension (`UnsupportedCriticalExtension`), so it rejects every real card; it offers no hook
//! to accept one extension. The JPKI hierarchy is one level deep (self-signed CA → card), so a
//! full RFC 5280 path builder buys nothing here. We therefore do the whole check ourselves,
//! explicitly and in one place:
//!
//! - parse with `x509-parser` (DER only, no trailing bytes, version 3, size-capped);
//! - issuer: the anchors whose subject DER equals the certificate's issuer DER; because the
//!   2015 and 2023 CAs share one subject name, we **try each** and keep the one whose key
//!   verifies the certificate's signature (`ring`, RSASSA-PKCS1-v1_5 with SHA-256, 2048–8192-bit
//!   keys; the outer and inner signature algorithms must agree);
//! - time: the certificate and its CA must both be valid at `now`;
//! - keyUsage present with digitalSignature; extendedKeyUsage present with clientAuth;
//!   basicConstraints, when present, not a CA;
//! - certificatePolicies must name the JPKI user-authentication policy; when it is critical it
//!   must name **exactly** that policy (this is the one deliberate exception to "unknown
//!   critical extension ⇒ reject");
//! - every other critical extension is refused.
//!
//! Revocation (CRL) is checked separately by [`super::crl`]. `x509-parser` + `ring` are both
//! maintained, widely used, and already the parsing/crypto core of the rustls ecosystem.

use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;

/// The JPKI user-authentication certificate policy.
pub const JPKI_USER_AUTH_POLICY: &str = "1.2.392.200149.8.5.1.3.30";

/// A real card certificate is about 1.3 KiB; anything this large is not one, and the cap keeps
/// parsing cost bounded.
pub const MAX_CERTIFICATE_BYTES: usize = 8 * 1024;

/// At most this many trust anchors: a folder of thousands of files is a mistake, not a config.
pub const MAX_TRUST_ANCHORS: usize = 64;

const OID_SHA256_WITH_RSA: &str = "1.2.840.113549.1.1.11";
const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_KEY_USAGE: &str = "2.5.29.15";
const OID_EXT_KEY_USAGE: &str = "2.5.29.37";
const OID_BASIC_CONSTRAINTS: &str = "2.5.29.19";
const OID_CERT_POLICIES: &str = "2.5.29.32";

/// Why a certificate was refused. Each maps to one stable API code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("certificate is not well-formed DER: {0}")]
    Malformed(String),
    #[error("certificate is larger than {MAX_CERTIFICATE_BYTES} bytes")]
    TooLarge,
    #[error("no trust anchor has the certificate's issuer name")]
    UnknownIssuer,
    #[error(
        "the certificate's signature does not verify under any trust anchor with its issuer name"
    )]
    BadSignature,
    #[error("unsupported signature algorithm {0}")]
    UnsupportedAlgorithm(String),
    #[error("certificate expired")]
    Expired,
    #[error("certificate not yet valid")]
    NotYetValid,
    #[error("the issuing CA certificate is not valid now")]
    IssuerExpired,
    #[error("keyUsage is missing or lacks digitalSignature")]
    KeyUsage,
    #[error("extendedKeyUsage is missing or lacks clientAuth")]
    ExtendedKeyUsage,
    #[error("certificate is a CA certificate")]
    IsCa,
    #[error("certificatePolicies does not match the JPKI user-authentication profile")]
    Policy,
    #[error("unsupported critical extension {0}")]
    UnsupportedCriticalExtension(String),
}

impl CertError {
    /// Stable machine code (the API contract).
    pub fn code(&self) -> &'static str {
        match self {
            CertError::Malformed(_) => "CERTIFICATE_MALFORMED",
            CertError::TooLarge => "CERTIFICATE_TOO_LARGE",
            CertError::UnknownIssuer => "CERTIFICATE_UNKNOWN_ISSUER",
            CertError::BadSignature => "CERTIFICATE_SIGNATURE_INVALID",
            CertError::UnsupportedAlgorithm(_) => "CERTIFICATE_ALGORITHM_UNSUPPORTED",
            CertError::Expired => "CERTIFICATE_EXPIRED",
            CertError::NotYetValid => "CERTIFICATE_NOT_YET_VALID",
            CertError::IssuerExpired => "CERTIFICATE_ISSUER_EXPIRED",
            CertError::KeyUsage => "CERTIFICATE_KEY_USAGE",
            CertError::ExtendedKeyUsage => "CERTIFICATE_EXTENDED_KEY_USAGE",
            CertError::IsCa => "CERTIFICATE_IS_CA",
            CertError::Policy => "CERTIFICATE_POLICY",
            CertError::UnsupportedCriticalExtension(_) => "CERTIFICATE_CRITICAL_EXTENSION",
        }
    }
}

/// Why a trust anchor could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: {1}")]
    Invalid(String, String),
    #[error("no trust anchors found in {0}")]
    Empty(String),
    #[error("more than {MAX_TRUST_ANCHORS} trust anchors")]
    TooMany,
}

/// One CA certificate we trust, pre-digested for fast verification.
#[derive(Debug)]
pub struct TrustAnchor {
    /// Where it came from (file name), for logs.
    pub label: String,
    /// Issuer identity used in certificate references: the CA's subject DN as text
    /// (RFC 4514 style). Shared by CA generations, which RFC 5280 allows as long as serials
    /// stay unique per issuer name.
    pub subject: String,
    /// Identifies this CA *key*: hex SHA-256 of its SubjectPublicKeyInfo. CRLs are per key.
    pub key_id: String,
    pub not_before: i64,
    pub not_after: i64,
    subject_der: Vec<u8>,
    /// PKCS#1 RSAPublicKey DER, as ring wants it.
    rsa_public_key: Vec<u8>,
}

impl TrustAnchor {
    /// Parses a CA certificate (DER). It must be an RSA CA certificate.
    pub fn from_der(label: &str, der: &[u8]) -> Result<TrustAnchor, TrustError> {
        let invalid = |m: String| TrustError::Invalid(label.to_owned(), m);
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| invalid(e.to_string()))?;
        if !rest.is_empty() {
            return Err(invalid("trailing bytes after the certificate".into()));
        }
        if !cert.is_ca() {
            return Err(invalid(
                "not a CA certificate (basicConstraints CA:TRUE missing)".into(),
            ));
        }
        let spki = cert.public_key();
        if spki.algorithm.algorithm.to_id_string() != OID_RSA_ENCRYPTION {
            return Err(invalid("only RSA CA keys are supported".into()));
        }
        Ok(TrustAnchor {
            label: label.to_owned(),
            subject: cert.subject().to_string(),
            key_id: hex::encode(Sha256::digest(spki.raw)),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            subject_der: cert.subject().as_raw().to_vec(),
            rsa_public_key: spki.subject_public_key.data.to_vec(),
        })
    }

    /// Verifies an RSASSA-PKCS1-v1_5/SHA-256 signature made by this CA.
    pub fn verify_sha256_rsa(&self, message: &[u8], signature: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            &self.rsa_public_key,
        )
        .verify(message, signature)
        .is_ok()
    }

    pub fn subject_der(&self) -> &[u8] {
        &self.subject_der
    }
}

/// The set of CAs whose user-authentication certificates we accept.
#[derive(Debug, Clone)]
pub struct TrustAnchors {
    anchors: Arc<Vec<Arc<TrustAnchor>>>,
}

/// The real JPKI user-authentication CA certificates shipped with the server (compiled in,
/// so the binary does not depend on the source tree at run time).
const SHIPPED: &[(&str, &str)] = &[
    (
        "jpki-user-auth-ca-2015.pem",
        include_str!("../trust/jpki/jpki-user-auth-ca-2015.pem"),
    ),
    (
        "jpki-user-auth-ca-2023.pem",
        include_str!("../trust/jpki/jpki-user-auth-ca-2023.pem"),
    ),
];

impl TrustAnchors {
    pub fn new(anchors: Vec<TrustAnchor>) -> Result<TrustAnchors, TrustError> {
        if anchors.len() > MAX_TRUST_ANCHORS {
            return Err(TrustError::TooMany);
        }
        Ok(TrustAnchors {
            anchors: Arc::new(anchors.into_iter().map(Arc::new).collect()),
        })
    }

    /// The shipped real JPKI user-authentication CAs.
    pub fn shipped() -> Result<TrustAnchors, TrustError> {
        let mut all = Vec::new();
        for (label, pem) in SHIPPED {
            for der in pem_certificates(pem).map_err(|m| TrustError::Invalid((*label).into(), m))? {
                all.push(TrustAnchor::from_der(label, &der)?);
            }
        }
        TrustAnchors::new(all)
    }

    /// Every `*.pem`, `*.crt`, `*.cer` (PEM, possibly several per file) and `*.der` in `dir`.
    pub fn from_dir(dir: &Path) -> Result<TrustAnchors, TrustError> {
        let shown = dir.display().to_string();
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| TrustError::Io(shown.clone(), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("pem" | "crt" | "cer" | "der")
                )
            })
            .collect();
        // Deterministic order: the first matching anchor is tried first.
        paths.sort();
        let mut all = Vec::new();
        for p in paths {
            let label = p.display().to_string();
            let bytes = std::fs::read(&p).map_err(|e| TrustError::Io(label.clone(), e))?;
            if p.extension().and_then(|e| e.to_str()) == Some("der") {
                all.push(TrustAnchor::from_der(&label, &bytes)?);
            } else {
                let text = String::from_utf8(bytes)
                    .map_err(|_| TrustError::Invalid(label.clone(), "not UTF-8 PEM".into()))?;
                for der in
                    pem_certificates(&text).map_err(|m| TrustError::Invalid(label.clone(), m))?
                {
                    all.push(TrustAnchor::from_der(&label, &der)?);
                }
            }
            if all.len() > MAX_TRUST_ANCHORS {
                return Err(TrustError::TooMany);
            }
        }
        if all.is_empty() {
            return Err(TrustError::Empty(shown));
        }
        TrustAnchors::new(all)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<TrustAnchor>> {
        self.anchors.iter()
    }

    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// Anchors whose subject name is exactly `name_der`.
    pub fn by_subject<'a>(
        &'a self,
        name_der: &'a [u8],
    ) -> impl Iterator<Item = &'a Arc<TrustAnchor>> {
        self.anchors
            .iter()
            .filter(move |a| a.subject_der == name_der)
    }

    /// Runs every check of the module docs on a card certificate at `now` (Unix seconds).
    pub fn verify(&self, der: &[u8], now: i64) -> Result<VerifiedCertificate, CertError> {
        if der.len() > MAX_CERTIFICATE_BYTES {
            return Err(CertError::TooLarge);
        }
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| CertError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CertError::Malformed(
                "trailing bytes after the certificate".into(),
            ));
        }
        if cert.version().0 != 2 {
            return Err(CertError::Malformed("not an X.509 v3 certificate".into()));
        }
        let outer_alg = cert.signature_algorithm.algorithm.to_id_string();
        if outer_alg != OID_SHA256_WITH_RSA {
            return Err(CertError::UnsupportedAlgorithm(outer_alg));
        }
        // RFC 5280 4.1.1.2: the signed and unsigned algorithm fields must match.
        if cert.signature_algorithm != cert.tbs_certificate.signature {
            return Err(CertError::Malformed(
                "signatureAlgorithm differs from tbsCertificate.signature".into(),
            ));
        }

        // Issuer: try every anchor with the right name; the key decides.
        let tbs = cert.tbs_certificate.as_ref();
        let signature = &cert.signature_value.data;
        let mut named = self.by_subject(cert.issuer().as_raw()).peekable();
        if named.peek().is_none() {
            return Err(CertError::UnknownIssuer);
        }
        let anchor = named
            .find(|a| a.verify_sha256_rsa(tbs, signature))
            .ok_or(CertError::BadSignature)?
            .clone();

        let validity = cert.validity();
        check_time(
            now,
            validity.not_before.timestamp(),
            validity.not_after.timestamp(),
            &anchor,
        )?;

        check_extensions(&cert)?;

        let spki = cert.public_key();
        if spki.algorithm.algorithm.to_id_string() != OID_RSA_ENCRYPTION {
            return Err(CertError::UnsupportedAlgorithm(
                spki.algorithm.algorithm.to_id_string(),
            ));
        }
        Ok(VerifiedCertificate {
            issuer: anchor.subject.clone(),
            serial: serial_hex(cert.raw_serial()),
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            rsa_public_key: spki.subject_public_key.data.to_vec(),
            anchor,
        })
    }
}

fn check_time(
    now: i64,
    not_before: i64,
    not_after: i64,
    anchor: &TrustAnchor,
) -> Result<(), CertError> {
    if now < not_before {
        return Err(CertError::NotYetValid);
    }
    if now > not_after {
        return Err(CertError::Expired);
    }
    if now < anchor.not_before || now > anchor.not_after {
        return Err(CertError::IssuerExpired);
    }
    Ok(())
}

fn check_extensions(cert: &X509Certificate<'_>) -> Result<(), CertError> {
    let mut seen: Vec<String> = Vec::new();
    let mut key_usage_ok = false;
    let mut eku_ok = false;
    let mut policy_ok = false;
    for ext in cert.extensions() {
        let oid = ext.oid.to_id_string();
        // RFC 5280 4.2: an extension appears at most once.
        if seen.contains(&oid) {
            return Err(CertError::Malformed(format!(
                "extension {oid} appears twice"
            )));
        }
        match ext.parsed_extension() {
            ParsedExtension::ParseError { error } => {
                return Err(CertError::Malformed(format!("extension {oid}: {error}")));
            }
            ParsedExtension::KeyUsage(ku) => key_usage_ok = ku.digital_signature(),
            ParsedExtension::ExtendedKeyUsage(eku) => eku_ok = eku.client_auth,
            ParsedExtension::BasicConstraints(bc) => {
                if bc.ca {
                    return Err(CertError::IsCa);
                }
            }
            ParsedExtension::CertificatePolicies(policies) => {
                let jpki = policies
                    .iter()
                    .any(|p| p.policy_id.to_id_string() == JPKI_USER_AUTH_POLICY);
                // Critical: the one policy we understand, and nothing else. Non-critical:
                // other policies may be ignored (RFC 5280 4.2), but ours must be there.
                let exact = policies.len() == 1 && jpki;
                if !jpki || (ext.critical && !exact) {
                    return Err(CertError::Policy);
                }
                policy_ok = true;
            }
            _ => {
                let understood = matches!(
                    oid.as_str(),
                    OID_KEY_USAGE | OID_EXT_KEY_USAGE | OID_BASIC_CONSTRAINTS | OID_CERT_POLICIES
                );
                if ext.critical && !understood {
                    return Err(CertError::UnsupportedCriticalExtension(oid));
                }
            }
        }
        seen.push(oid);
    }
    if !key_usage_ok {
        return Err(CertError::KeyUsage);
    }
    if !eku_ok {
        return Err(CertError::ExtendedKeyUsage);
    }
    if !policy_ok {
        return Err(CertError::Policy);
    }
    Ok(())
}

/// Lower-case hex of a serial number without leading zero bytes: one spelling per serial.
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    let s = hex::encode(&raw[start..]);
    if s.is_empty() {
        "00".to_owned()
    } else {
        s
    }
}

/// Normalises a serial typed by an operator (hex, optional `0x`, optional `:` separators).
pub fn normalize_serial(text: &str) -> Option<String> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    let t: String = t.chars().filter(|c| *c != ':').collect();
    if t.is_empty() || t.len() > 80 || !t.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let padded = if t.len() % 2 == 1 { format!("0{t}") } else { t };
    let raw = hex::decode(padded).ok()?;
    Some(serial_hex(&raw))
}

/// A certificate that passed every check but revocation.
#[derive(Debug, Clone)]
pub struct VerifiedCertificate {
    /// Issuer DN text: with `serial`, the certificate's identity.
    pub issuer: String,
    /// [`serial_hex`] of the serial number.
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    pub anchor: Arc<TrustAnchor>,
    rsa_public_key: Vec<u8>,
}

impl VerifiedCertificate {
    /// The time checks of [`TrustAnchors::verify`] alone: everything else about a verified
    /// certificate is fixed by its bytes and the anchors, so a cached verification only needs
    /// this repeated.
    pub fn check_time(&self, now: i64) -> Result<(), CertError> {
        check_time(now, self.not_before, self.not_after, &self.anchor)
    }

    /// Verifies the card's RSASSA-PKCS1-v1_5/SHA-256 signature over `message`.
    pub fn verify_signature(&self, message: &[u8], signature: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            &self.rsa_public_key,
        )
        .verify(message, signature)
        .is_ok()
    }
}

/// Hex SHA-256 of arbitrary bytes (fingerprints of input that did not even parse).
pub fn fingerprint(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// DER blocks of every `CERTIFICATE` in a PEM text.
pub fn pem_certificates(text: &str) -> Result<Vec<Vec<u8>>, String> {
    pem_blocks(text, "CERTIFICATE")
}

/// DER blocks labelled `label` in a PEM text.
pub fn pem_blocks(text: &str, label: &str) -> Result<Vec<Vec<u8>>, String> {
    use base64::Engine;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line == begin {
            body = Some(String::new());
        } else if line == end {
            let b = body.take().ok_or("END without BEGIN")?;
            let der = base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| format!("bad base64 in PEM: {e}"))?;
            out.push(der);
        } else if let Some(b) = body.as_mut() {
            b.push_str(line);
        }
    }
    if body.is_some() {
        return Err("BEGIN without END".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_real_jpki_cas_load_and_share_one_subject_name() {
        let anchors = TrustAnchors::shipped().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(anchors.len(), 2);
        let all: Vec<_> = anchors.iter().collect();
        assert_eq!(all[0].subject, all[1].subject);
        assert_eq!(all[0].subject_der(), all[1].subject_der());
        assert_ne!(all[0].key_id, all[1].key_id, "two generations, two keys");
        assert!(
            all[0].subject.contains("JPKI for user authentication"),
            "{}",
            all[0].subject
        );
        // 2015 generation: valid 2015-10-20 .. 2025-10-19; 2023: 2023-07-16 .. 2033-07-15.
        let years: Vec<_> = all
            .iter()
            .map(|a| {
                chrono::DateTime::from_timestamp(a.not_after, 0).map(|t| t.format("%Y").to_string())
            })
            .collect();
        assert_eq!(
            years,
            vec![Some("2025".to_owned()), Some("2033".to_owned())]
        );
    }

    #[test]
    fn shipped_dir_loads_the_same_anchors() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("trust/jpki");
        let anchors = TrustAnchors::from_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        let shipped = TrustAnchors::shipped().unwrap_or_else(|e| panic!("{e}"));
        let ids = |t: &TrustAnchors| t.iter().map(|a| a.key_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&anchors), ids(&shipped));
    }

    #[test]
    fn the_real_cas_are_self_signed_by_their_own_keys() {
        for (label, pem) in SHIPPED {
            let der = pem_certificates(pem).unwrap_or_default().remove(0);
            let (_, cert) = X509Certificate::from_der(&der).unwrap_or_else(|e| panic!("{e}"));
            let anchors = TrustAnchors::shipped().unwrap_or_else(|e| panic!("{e}"));
            let signers: Vec<_> = anchors
                .by_subject(cert.issuer().as_raw())
                .filter(|a| {
                    a.verify_sha256_rsa(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
                })
                .map(|a| a.label.clone())
                .collect();
            assert_eq!(
                signers,
                vec![(*label).to_owned()],
                "the key, not the name, picks the CA"
            );
        }
    }

    #[test]
    fn garbage_and_truncation_are_malformed() {
        let anchors = TrustAnchors::shipped().unwrap_or_else(|e| panic!("{e}"));
        let der = pem_certificates(SHIPPED[1].1).unwrap_or_default().remove(0);
        for input in [&b"garbage"[..], &der[..der.len() / 2], &[]] {
            let err = anchors.verify(input, 0).err();
            assert!(matches!(err, Some(CertError::Malformed(_))), "{err:?}");
        }
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(matches!(
            anchors.verify(&trailing, 0),
            Err(CertError::Malformed(_))
        ));
        assert_eq!(
            anchors
                .verify(&vec![0u8; MAX_CERTIFICATE_BYTES + 1], 0)
                .err(),
            Some(CertError::TooLarge)
        );
    }

    #[test]
    fn serials_have_one_spelling() {
        assert_eq!(serial_hex(&[0, 0, 0x1a, 0x02]), "1a02");
        assert_eq!(serial_hex(&[0]), "00");
        assert_eq!(normalize_serial("0x1A:02").as_deref(), Some("1a02"));
        assert_eq!(normalize_serial("0001a02").as_deref(), Some("1a02"));
        assert_eq!(normalize_serial("zz"), None);
    }
}

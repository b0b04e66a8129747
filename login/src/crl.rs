//! Certificate revocation lists, one per CA key.
//!
//! A CRL is accepted only when its issuer name matches a trust anchor and its signature
//! verifies under that anchor's key (the two JPKI CA generations share a name, so the key
//! decides). Delta CRLs and partitioned CRLs are refused (`CRL_UNSUPPORTED`): we treat each
//! CRL as the complete list of its CA key, so a newer CRL replaces an older one and an older
//! one never replaces a newer (no rollback). A CRL is partitioned when its
//! IssuingDistributionPoint names a `distributionPoint` (it then covers only the certificates
//! that point to it: installing partition P2 over P1 would drop P1's entries), or limits it
//! to CA certificates, some reasons, attribute certificates or another issuer (indirect).
//! `onlyContainsUserCerts` alone is accepted: for a CA that issues only user certificates
//! that is the complete list.
//!
//! Fail closed: a login whose CA has no CRL (when one is required) or whose CRL is past its
//! nextUpdate by more than the configured grace is refused, and
//! [`super::metrics::Metrics::crl_stale_refusals`] counts it for alerting.

use super::jpki::{serial_hex, TrustAnchor, TrustAnchors, VerifiedCertificate};
use dashmap::DashMap;
use std::collections::HashSet;
use std::sync::Arc;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

/// The national JPKI CRL is large (millions of entries over time); this bounds memory per
/// upload while leaving room for it.
pub const MAX_CRL_BYTES: usize = 256 * 1024 * 1024;

const OID_SHA256_WITH_RSA: &str = "1.2.840.113549.1.1.11";
const OID_CRL_NUMBER: &str = "2.5.29.20";
const OID_AUTHORITY_KEY_ID: &str = "2.5.29.35";
const OID_DELTA_CRL_INDICATOR: &str = "2.5.29.27";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrlError {
    #[error("CRL is not well-formed DER: {0}")]
    Malformed(String),
    #[error("CRL is larger than {MAX_CRL_BYTES} bytes")]
    TooLarge,
    #[error("no trust anchor has the CRL's issuer name")]
    UnknownIssuer,
    #[error("the CRL's signature does not verify under any trust anchor with its issuer name")]
    BadSignature,
    #[error("CRL has no nextUpdate")]
    NoNextUpdate,
    #[error("unsupported CRL: {0}")]
    Unsupported(String),
    #[error("an equally new or newer CRL is already loaded for this CA")]
    NotNewer,
}

impl CrlError {
    pub fn code(&self) -> &'static str {
        match self {
            CrlError::Malformed(_) => "CRL_MALFORMED",
            CrlError::TooLarge => "CRL_TOO_LARGE",
            CrlError::UnknownIssuer => "CRL_UNKNOWN_ISSUER",
            CrlError::BadSignature => "CRL_SIGNATURE_INVALID",
            CrlError::NoNextUpdate => "CRL_NO_NEXT_UPDATE",
            CrlError::Unsupported(_) => "CRL_UNSUPPORTED",
            CrlError::NotNewer => "CRL_NOT_NEWER",
        }
    }
}

/// Why revocation status refuses a login.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    #[error("certificate is on its CA's CRL")]
    Revoked,
    #[error("the CA's CRL is past nextUpdate beyond the grace period")]
    Stale,
    #[error("no CRL is loaded for the certificate's CA")]
    Missing,
}

impl RevocationError {
    pub fn code(&self) -> &'static str {
        match self {
            RevocationError::Revoked => "CERTIFICATE_REVOKED",
            RevocationError::Stale => "CRL_STALE",
            RevocationError::Missing => "CRL_MISSING",
        }
    }
}

/// A verified CRL, reduced to what a login needs.
#[derive(Debug, Clone)]
pub struct LoadedCrl {
    /// [`TrustAnchor::key_id`] of the CA that signed it.
    pub ca_key_id: String,
    pub issuer: String,
    pub this_update: i64,
    pub next_update: i64,
    /// [`serial_hex`] of each revoked serial.
    pub revoked: HashSet<String>,
}

/// Parses and verifies a CRL against the anchors.
pub fn parse_crl(der: &[u8], anchors: &TrustAnchors) -> Result<LoadedCrl, CrlError> {
    if der.len() > MAX_CRL_BYTES {
        return Err(CrlError::TooLarge);
    }
    let (rest, crl) =
        CertificateRevocationList::from_der(der).map_err(|e| CrlError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CrlError::Malformed("trailing bytes after the CRL".into()));
    }
    let alg = crl.signature_algorithm.algorithm.to_id_string();
    if alg != OID_SHA256_WITH_RSA {
        return Err(CrlError::Unsupported(format!("signature algorithm {alg}")));
    }
    let tbs = crl.tbs_cert_list.as_ref();
    let mut named = anchors.by_subject(crl.issuer().as_raw()).peekable();
    if named.peek().is_none() {
        return Err(CrlError::UnknownIssuer);
    }
    let anchor: Arc<TrustAnchor> = named
        .find(|a| a.verify_sha256_rsa(tbs, &crl.signature_value.data))
        .ok_or(CrlError::BadSignature)?
        .clone();
    for ext in crl.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::ParseError { error } => {
                return Err(CrlError::Malformed(error.to_string()));
            }
            ParsedExtension::IssuingDistributionPoint(idp) => {
                if idp.distribution_point.is_some() {
                    return Err(CrlError::Unsupported(
                        "partitioned CRL (issuingDistributionPoint names a distribution point)"
                            .into(),
                    ));
                }
                if idp.only_contains_ca_certs
                    || idp.only_some_reasons.is_some()
                    || idp.indirect_crl
                    || idp.only_contains_attribute_certs
                {
                    return Err(CrlError::Unsupported("partitioned or indirect CRL".into()));
                }
            }
            _ => {
                let oid = ext.oid.to_id_string();
                if oid == OID_DELTA_CRL_INDICATOR {
                    return Err(CrlError::Unsupported("delta CRL".into()));
                }
                let understood = matches!(oid.as_str(), OID_CRL_NUMBER | OID_AUTHORITY_KEY_ID);
                if ext.critical && !understood {
                    return Err(CrlError::Unsupported(format!("critical extension {oid}")));
                }
            }
        }
    }
    let next_update = crl.next_update().ok_or(CrlError::NoNextUpdate)?.timestamp();
    let revoked = crl
        .iter_revoked_certificates()
        .map(|r| serial_hex(r.raw_serial()))
        .collect();
    Ok(LoadedCrl {
        ca_key_id: anchor.key_id.clone(),
        issuer: anchor.subject.clone(),
        this_update: crl.last_update().timestamp(),
        next_update,
        revoked,
    })
}

/// [`parse_crl`] on a blocking thread: a national CRL takes seconds to parse and verify,
/// which must not stall an async worker serving logins.
pub async fn parse_crl_blocking(
    der: Arc<Vec<u8>>,
    anchors: TrustAnchors,
) -> Result<LoadedCrl, CrlError> {
    tokio::task::spawn_blocking(move || parse_crl(&der, &anchors))
        .await
        .map_err(|e| CrlError::Malformed(format!("CRL parser task failed: {e}")))?
}

/// The current CRL of every CA key, shared by all requests.
#[derive(Debug, Clone, Default)]
pub struct CrlSet {
    by_ca: Arc<DashMap<String, Arc<LoadedCrl>>>,
}

impl CrlSet {
    /// Installs `crl` unless an equally new or newer one is already there.
    pub fn install(&self, crl: LoadedCrl) -> Result<(), CrlError> {
        use dashmap::mapref::entry::Entry;
        match self.by_ca.entry(crl.ca_key_id.clone()) {
            Entry::Occupied(mut o) => {
                if o.get().this_update >= crl.this_update {
                    return Err(CrlError::NotNewer);
                }
                o.insert(Arc::new(crl));
            }
            Entry::Vacant(v) => {
                v.insert(Arc::new(crl));
            }
        }
        Ok(())
    }

    /// How many CA keys have a CRL installed.
    pub fn len(&self) -> usize {
        self.by_ca.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ca.is_empty()
    }

    pub fn get(&self, ca_key_id: &str) -> Option<Arc<LoadedCrl>> {
        self.by_ca.get(ca_key_id).map(|c| c.clone())
    }

    /// Revocation status of a verified certificate at `now`.
    pub fn check(
        &self,
        cert: &VerifiedCertificate,
        now: i64,
        grace_secs: i64,
        require_crl: bool,
    ) -> Result<(), RevocationError> {
        let Some(crl) = self.get(&cert.anchor.key_id) else {
            return if require_crl {
                Err(RevocationError::Missing)
            } else {
                Ok(())
            };
        };
        // Revoked wins over stale: a listed certificate is refused whatever the CRL's age.
        if crl.revoked.contains(&cert.serial) {
            return Err(RevocationError::Revoked);
        }
        if now > crl.next_update.saturating_add(grace_secs) {
            return Err(RevocationError::Stale);
        }
        Ok(())
    }
}

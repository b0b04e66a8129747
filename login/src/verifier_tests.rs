//! The end-entity checks of [`super::jpki`], one deviation from the JPKI profile at a time.
//! Keys are the test-only fixtures shared with the integration tests.

use super::crl::{parse_crl, CrlError, CrlSet, RevocationError};
use super::jpki::{CertError, TrustAnchor, TrustAnchors};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateRevocationListParams,
    CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod,
    KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use std::sync::OnceLock;
use time::{Duration, OffsetDateTime};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/auth");

fn key(name: &str) -> KeyPair {
    let pem = std::fs::read_to_string(format!("{FIXTURES}/{name}.key.pem"))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

struct Fixture {
    ca: Certificate,
    ca_key: KeyPair,
    card_key: KeyPair,
    anchors: TrustAnchors,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let ca_key = key("ca-a");
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "JP");
        dn.push(DnType::OrganizationName, "JPKI");
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.not_before = OffsetDateTime::now_utc() - Duration::days(10);
        p.not_after = OffsetDateTime::now_utc() + Duration::days(1000);
        let ca = p.self_signed(&ca_key).unwrap_or_else(|e| panic!("{e}"));
        let anchor = TrustAnchor::from_der("ca", ca.der()).unwrap_or_else(|e| panic!("{e}"));
        Fixture {
            ca,
            ca_key,
            card_key: key("card-1"),
            anchors: TrustAnchors::new(vec![anchor]).unwrap_or_else(|e| panic!("{e}")),
        }
    })
}

/// certificatePolicies with the given last arcs of 1.2.392.200149.8.5.1.3.x.
fn policies(lasts: &[u8]) -> Vec<u8> {
    let mut inner = Vec::new();
    for l in lasts {
        inner.extend([
            0x30, 0x0d, 0x06, 0x0b, 0x2a, 0x83, 0x08, 0x8c, 0x9b, 0x55, 0x08, 0x05, 0x01, 0x03, *l,
        ]);
    }
    let mut out = vec![0x30, inner.len() as u8];
    out.extend(inner);
    out
}

fn ext(oid: &[u64], content: Vec<u8>, critical: bool) -> CustomExtension {
    let mut e = CustomExtension::from_oid_content(oid, content);
    e.set_criticality(critical);
    e
}

fn card_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "JP");
    dn.push(DnType::CommonName, "0123456789ABCDEF");
    p.distinguished_name = dn;
    p.serial_number = Some(SerialNumber::from(0x1234_5678u64));
    p.not_before = OffsetDateTime::now_utc() - Duration::days(1);
    p.not_after = OffsetDateTime::now_utc() + Duration::days(100);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.custom_extensions = vec![ext(&[2, 5, 29, 32], policies(&[30]), true)];
    p
}

fn issue(p: CertificateParams) -> Vec<u8> {
    let f = fixture();
    p.signed_by(&f.card_key, &f.ca, &f.ca_key)
        .unwrap_or_else(|e| panic!("{e}"))
        .der()
        .to_vec()
}

fn verify(p: CertificateParams) -> Result<String, CertError> {
    let now = chrono::Utc::now().timestamp();
    fixture().anchors.verify(&issue(p), now).map(|c| c.serial)
}

#[test]
fn the_jpki_profile_with_its_critical_policy_is_accepted() {
    assert_eq!(verify(card_params()), Ok("12345678".to_owned()));
    // A non-critical certificatePolicies may carry other policies beside ours.
    let mut p = card_params();
    p.custom_extensions = vec![ext(&[2, 5, 29, 32], policies(&[30, 99]), false)];
    assert!(verify(p).is_ok());
}

#[test]
fn each_deviation_from_the_profile_is_refused_with_its_own_error() {
    let mut cases: Vec<(&str, CertificateParams, CertError)> = Vec::new();

    let mut p = card_params();
    p.custom_extensions = vec![ext(&[2, 5, 29, 32], policies(&[99]), true)];
    cases.push(("critical, other policy", p, CertError::Policy));

    let mut p = card_params();
    p.custom_extensions = vec![ext(&[2, 5, 29, 32], policies(&[30, 99]), true)];
    cases.push(("critical, ours and another", p, CertError::Policy));

    let mut p = card_params();
    p.custom_extensions = vec![];
    cases.push(("no policy", p, CertError::Policy));

    let mut p = card_params();
    p.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    cases.push(("keyUsage without digitalSignature", p, CertError::KeyUsage));

    let mut p = card_params();
    p.key_usages = vec![];
    cases.push(("no keyUsage", p, CertError::KeyUsage));

    let mut p = card_params();
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    cases.push(("EKU without clientAuth", p, CertError::ExtendedKeyUsage));

    let mut p = card_params();
    p.extended_key_usages = vec![];
    cases.push(("no EKU", p, CertError::ExtendedKeyUsage));

    let mut p = card_params();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    cases.push(("a CA certificate", p, CertError::IsCa));

    let mut p = card_params();
    p.custom_extensions
        .push(ext(&[1, 2, 3, 4], vec![0x05, 0x00], true));
    cases.push((
        "unknown critical extension",
        p,
        CertError::UnsupportedCriticalExtension("1.2.3.4".into()),
    ));

    let mut p = card_params();
    p.not_after = OffsetDateTime::now_utc() - Duration::seconds(10);
    cases.push(("expired", p, CertError::Expired));

    let mut p = card_params();
    p.not_before = OffsetDateTime::now_utc() + Duration::hours(1);
    cases.push(("not yet valid", p, CertError::NotYetValid));

    for (what, p, want) in cases {
        assert_eq!(verify(p), Err(want), "{what}");
    }
}

#[test]
fn an_unknown_non_critical_extension_is_ignored() {
    let mut p = card_params();
    p.custom_extensions
        .push(ext(&[1, 2, 3, 4], vec![0x05, 0x00], false));
    assert!(verify(p).is_ok());
}

#[test]
fn crls_are_verified_installed_and_checked() {
    let f = fixture();
    let now = OffsetDateTime::now_utc();
    let make = |this: OffsetDateTime, revoked: &[u64]| {
        CertificateRevocationListParams {
            this_update: this,
            next_update: this + Duration::hours(24),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: this,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&f.ca, &f.ca_key)
        .unwrap_or_else(|e| panic!("{e}"))
        .der()
        .to_vec()
    };
    let crl = parse_crl(&make(now - Duration::hours(1), &[0x1234_5678]), &f.anchors)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(crl.revoked.contains("12345678"));
    let set = CrlSet::default();
    set.install(crl).unwrap_or_else(|e| panic!("{e}"));
    let older = parse_crl(&make(now - Duration::hours(2), &[]), &f.anchors)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.install(older), Err(CrlError::NotNewer));

    let t = chrono::Utc::now().timestamp();
    let cert = f
        .anchors
        .verify(&issue(card_params()), t)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.check(&cert, t, 0, true), Err(RevocationError::Revoked));
    let mut p = card_params();
    p.serial_number = Some(SerialNumber::from(0x77u64));
    let other = f
        .anchors
        .verify(&issue(p), t)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.check(&other, t, 0, true), Ok(()));
    let past_next = t + 24 * 3600;
    assert_eq!(
        set.check(&other, past_next, 0, true),
        Err(RevocationError::Stale)
    );
    assert_eq!(
        set.check(&other, past_next, 3600, true),
        Ok(()),
        "within grace"
    );
    assert_eq!(
        CrlSet::default().check(&other, t, 0, true),
        Err(RevocationError::Missing)
    );
    assert_eq!(CrlSet::default().check(&other, t, 0, false), Ok(()));
    assert!(matches!(
        parse_crl(b"junk", &f.anchors),
        Err(CrlError::Malformed(_))
    ));
}

//! A JPKI-profile test PKI: two user-authentication CAs with the real CAs' subject name
//! (different keys), an untrusted CA with that same name, one with another name, cards and
//! CRLs. Keys are pregenerated fixtures (RSA keygen is slow in debug builds); certificates are
//! made once per test binary.

use base64::Engine;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateRevocationListParams,
    CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod,
    KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use std::path::PathBuf;
use std::sync::OnceLock;
use time::{Duration, OffsetDateTime};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/auth");

/// DER of certificatePolicies { policyIdentifier 1.2.392.200149.8.5.1.3.<last> }.
fn policies(last: u8) -> Vec<u8> {
    vec![
        0x30, 0x0f, 0x30, 0x0d, 0x06, 0x0b, 0x2a, 0x83, 0x08, 0x8c, 0x9b, 0x55, 0x08, 0x05, 0x01,
        0x03, last,
    ]
}

/// The JPKI user-authentication policy's last arc (…8.5.1.3.30).
pub const JPKI_POLICY: u8 = 30;

pub struct Ca {
    pub cert: Certificate,
    pub key: KeyPair,
}

pub struct Pki {
    /// Trusted, same subject name, different keys (the 2015/2023 situation).
    pub ca_a: Ca,
    pub ca_b: Ca,
    /// Same subject name, not trusted.
    pub rogue_same_name: Ca,
    /// Another name, not trusted.
    pub rogue_other_name: Ca,
    pub card_keys: Vec<KeyPair>,
    /// A folder holding the trusted CAs' PEM (MYKEY_TRUST_ANCHORS).
    pub anchors_dir: PathBuf,
}

fn key(name: &str) -> KeyPair {
    let pem = std::fs::read_to_string(format!("{FIXTURES}/{name}.key.pem"))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"));
    KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256)
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn jpki_name() -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "JP");
    dn.push(DnType::OrganizationName, "JPKI");
    dn.push(
        DnType::OrganizationalUnitName,
        "JPKI for user authentication",
    );
    // rcgen keeps one value per type; the second OU goes in under its raw OID.
    dn.push(
        DnType::CustomDnType(vec![2, 5, 4, 11]),
        "Japan Agency for Local Authority Information Systems",
    );
    dn
}

fn make_ca(key_name: &str, name: DistinguishedName) -> Ca {
    let key = key(key_name);
    let mut p = CertificateParams::default();
    p.distinguished_name = name;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = OffsetDateTime::now_utc() - Duration::days(365);
    p.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
    p.serial_number = Some(SerialNumber::from(1u64));
    let cert = p.self_signed(&key).unwrap_or_else(|e| panic!("CA: {e}"));
    Ca { cert, key }
}

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca_a = make_ca("ca-a", jpki_name());
        let ca_b = make_ca("ca-b", jpki_name());
        let rogue_same_name = make_ca("ca-rogue", jpki_name());
        let mut other = DistinguishedName::new();
        other.push(DnType::CountryName, "JP");
        other.push(DnType::CommonName, "Not a JPKI CA");
        let rogue_other_name = make_ca("ca-rogue", other);
        // Inside the build's own scratch folder (removed with `cargo clean`), never /tmp: this
        // static lives for the whole test process, so nothing would remove it at the end.
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("test-anchors-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("a.pem"), ca_a.cert.pem()).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("b.pem"), ca_b.cert.pem()).unwrap_or_else(|e| panic!("{e}"));
        Pki {
            ca_a,
            ca_b,
            rogue_same_name,
            rogue_other_name,
            card_keys: vec![key("card-1"), key("card-2")],
            anchors_dir: dir,
        }
    })
}

/// How a test card deviates from the JPKI profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Jpki,
    /// certificatePolicies critical with another policy.
    OtherPolicyCritical,
}

pub struct Card {
    pub der: Vec<u8>,
    pub serial: u64,
    key_index: usize,
}

impl Card {
    pub fn b64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.der)
    }

    pub fn serial_hex(&self) -> String {
        format!("{:x}", self.serial)
    }

    /// The card's RSASSA-PKCS1-v1_5/SHA-256 signature over `message` (what the chip does).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        sign_with(&pki().card_keys[self.key_index], message)
    }
}

pub fn sign_with(key: &KeyPair, message: &[u8]) -> Vec<u8> {
    let kp = ring::signature::RsaKeyPair::from_pkcs8(&key.serialize_der())
        .unwrap_or_else(|e| panic!("card key: {e}"));
    let mut sig = vec![0u8; kp.public().modulus_len()];
    kp.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        message,
        &mut sig,
    )
    .unwrap_or_else(|e| panic!("sign: {e}"));
    sig
}

pub struct CardSpec<'a> {
    pub ca: &'a Ca,
    pub key_index: usize,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub profile: Profile,
}

impl<'a> CardSpec<'a> {
    pub fn valid(ca: &'a Ca) -> CardSpec<'a> {
        CardSpec {
            ca,
            key_index: 0,
            not_before: OffsetDateTime::now_utc() - Duration::days(30),
            not_after: OffsetDateTime::now_utc() + Duration::days(5 * 365),
            profile: Profile::Jpki,
        }
    }

    pub fn issue(self) -> Card {
        // Top nibble 1: always eight bytes, positive, no leading zero byte.
        let serial = (rand::random::<u64>() >> 4) | (1 << 60);
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "JP");
        dn.push(
            DnType::CommonName,
            format!("{:016X}", rand::random::<u64>()),
        );
        p.distinguished_name = dn;
        p.serial_number = Some(SerialNumber::from(serial));
        p.not_before = self.not_before;
        p.not_after = self.not_after;
        // rcgen marks keyUsage critical, as JPKI does.
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        p.key_identifier_method = KeyIdMethod::Sha256;
        let last = match self.profile {
            Profile::Jpki => JPKI_POLICY,
            Profile::OtherPolicyCritical => 99,
        };
        let mut ext = CustomExtension::from_oid_content(&[2, 5, 29, 32], policies(last));
        ext.set_criticality(true);
        p.custom_extensions = vec![ext];
        let key = &pki().card_keys[self.key_index];
        let cert = p
            .signed_by(key, &self.ca.cert, &self.ca.key)
            .unwrap_or_else(|e| panic!("card: {e}"));
        Card {
            der: cert.der().to_vec(),
            serial,
            key_index: self.key_index,
        }
    }
}

/// A CRL of `ca` listing `revoked`, valid from `this_update` for one day.
pub fn crl(ca: &Ca, revoked: &[u64], this_update: OffsetDateTime, number: u64) -> Vec<u8> {
    let params = CertificateRevocationListParams {
        this_update,
        next_update: this_update + Duration::days(1),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from(*s),
                revocation_time: this_update,
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    params
        .signed_by(&ca.cert, &ca.key)
        .unwrap_or_else(|e| panic!("CRL: {e}"))
        .der()
        .to_vec()
}

/// A CRL "of" the trusted CAs' name, signed by the untrusted same-name CA.
pub fn forged_crl() -> Vec<u8> {
    crl(&pki().rogue_same_name, &[], OffsetDateTime::now_utc(), 1)
}

//! Distinguished names compared as names, not as strings (renewal files name the CA that
//! issued both certificates).
//!
//! Accepted string forms:
//! - RFC 4514 (`openssl x509 -issuer -nameopt RFC2253`): most specific RDN first, `,`
//!   separators, `\` escapes (`\,`, `\+`, `\"`, `\\`, hex pairs such as `\E6\97\A5`);
//! - OpenSSL's default one-line form (`openssl x509 -issuer`): certificate order,
//!   `C = JP, O = JPKI, ...`, optionally with its `issuer=` prefix;
//! - the server's own spelling (certificate order, `C=JP, O=JPKI, ...`).
//!
//! Attribute types are short names (C, O, OU, CN, L, ST, ...) or dotted OIDs. Values are
//! compared per RFC 5280 §7.1 (RFC 4518 string preparation, simplified to what JPKI names
//! use): case-insensitive, leading and trailing spaces dropped, inner runs of spaces folded
//! into one. Multi-valued RDNs (`+`) compare as sets. The RDN order is recognised both ways:
//! a string matches a name when its RDNs equal the name's in certificate order or reversed.

use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

/// Longest name string accepted (a JPKI issuer is under 200 characters).
pub const MAX_NAME_CHARS: usize = 1024;

/// A name as RDNs in the order they were written; each RDN a sorted list of
/// (attribute type OID, prepared value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(Vec<Vec<(String, String)>>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("name longer than {MAX_NAME_CHARS} characters")]
    TooLong,
    #[error("attribute {0:?} has no `=`")]
    NoEquals(String),
    #[error("unknown attribute type {0:?}")]
    UnknownType(String),
    #[error("bad escape in {0:?}")]
    Escape(String),
}

const SHORT_NAMES: &[(&str, &str)] = &[
    ("C", "2.5.4.6"),
    ("CN", "2.5.4.3"),
    ("DC", "0.9.2342.19200300.100.1.25"),
    ("E", "1.2.840.113549.1.9.1"),
    ("EMAILADDRESS", "1.2.840.113549.1.9.1"),
    ("GN", "2.5.4.42"),
    ("GIVENNAME", "2.5.4.42"),
    ("L", "2.5.4.7"),
    ("O", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("S", "2.5.4.8"),
    ("SERIALNUMBER", "2.5.4.5"),
    ("SN", "2.5.4.4"),
    ("ST", "2.5.4.8"),
    ("STREET", "2.5.4.9"),
    ("TITLE", "2.5.4.12"),
    ("UID", "0.9.2342.19200300.100.1.1"),
];

fn type_oid(raw: &str) -> Result<String, NameError> {
    let t = raw.trim();
    let upper = t.to_ascii_uppercase();
    let dotted = upper.strip_prefix("OID.").unwrap_or(&upper);
    if !dotted.is_empty()
        && dotted
            .split('.')
            .all(|arc| !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit()))
    {
        return Ok(dotted.to_owned());
    }
    SHORT_NAMES
        .iter()
        .find(|(short, _)| *short == upper)
        .map(|(_, oid)| (*oid).to_owned())
        .ok_or_else(|| NameError::UnknownType(t.to_owned()))
}

/// RFC 5280 §7.1 / RFC 4518 (simplified): case folded, insignificant spaces removed.
fn prepare(value: &str) -> String {
    value
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// One piece of the string with its separator: `,`/`;` ends an RDN, `+` an attribute.
enum Sep {
    Rdn,
    Attribute,
    End,
}

/// Splits at unescaped, unquoted separators, resolving escapes in values. Returns
/// (type, value, separator after it).
fn split(s: &str) -> Result<Vec<(String, String, Sep)>, NameError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut ty = String::new();
        let mut has_equals = false;
        for c in chars.by_ref() {
            if c == '=' {
                has_equals = true;
                break;
            }
            if c == ',' || c == '+' || c == ';' {
                break;
            }
            ty.push(c);
        }
        if !has_equals {
            return Err(NameError::NoEquals(ty));
        }
        let mut value: Vec<u8> = Vec::new();
        let mut quoted = false;
        let mut sep = Sep::End;
        while let Some(c) = chars.next() {
            match c {
                '"' => quoted = !quoted,
                '\\' => {
                    let Some(n) = chars.next() else {
                        return Err(NameError::Escape(ty));
                    };
                    if n.is_ascii_hexdigit() {
                        let m = chars.next().filter(char::is_ascii_hexdigit);
                        let byte = m
                            .and_then(|m| u8::from_str_radix(&format!("{n}{m}"), 16).ok())
                            .ok_or_else(|| NameError::Escape(ty.clone()))?;
                        value.push(byte);
                    } else {
                        let mut buf = [0u8; 4];
                        value.extend_from_slice(n.encode_utf8(&mut buf).as_bytes());
                    }
                }
                ',' | ';' if !quoted => {
                    sep = Sep::Rdn;
                    break;
                }
                '+' if !quoted => {
                    sep = Sep::Attribute;
                    break;
                }
                c => {
                    let mut buf = [0u8; 4];
                    value.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        if quoted {
            return Err(NameError::Escape(ty));
        }
        let value = String::from_utf8(value).map_err(|_| NameError::Escape(ty.clone()))?;
        let end = matches!(sep, Sep::End);
        out.push((ty, value, sep));
        if end {
            return Ok(out);
        }
    }
}

impl Name {
    /// Parses any of the accepted string forms (see the module documentation).
    pub fn parse(text: &str) -> Result<Name, NameError> {
        if text.chars().count() > MAX_NAME_CHARS {
            return Err(NameError::TooLong);
        }
        let mut s = text.trim();
        if s.len() >= 7 && s[..7].eq_ignore_ascii_case("issuer=") {
            s = s[7..].trim_start();
        }
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        let mut rdns = Vec::new();
        let mut rdn = Vec::new();
        for (ty, value, sep) in split(s)? {
            rdn.push((type_oid(&ty)?, prepare(&value)));
            if !matches!(sep, Sep::Attribute) {
                rdn.sort();
                rdns.push(std::mem::take(&mut rdn));
            }
        }
        Ok(Name(rdns))
    }

    /// A certificate's (DER) name, in certificate order. `None` when it does not parse or
    /// holds a value that is not a string.
    pub fn from_der(der: &[u8]) -> Option<Name> {
        let (_, name) = X509Name::from_der(der).ok()?;
        let rdns = name
            .iter()
            .map(|rdn| {
                let mut attrs = rdn
                    .iter()
                    .map(|a| Some((a.attr_type().to_id_string(), prepare(a.as_str().ok()?))))
                    .collect::<Option<Vec<_>>>()?;
                attrs.sort();
                Some(attrs)
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Name(rdns))
    }

    /// True when `self` (as written) names `cert_order` (a name in certificate order),
    /// in either RDN order.
    pub fn names(&self, cert_order: &Name) -> bool {
        self.0 == cert_order.0 || self.0.iter().rev().eq(cert_order.0.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JPKI_AUTH: &str = "OU=Japan Agency for Local Authority Information Systems,OU=JPKI for user authentication,O=JPKI,C=JP";

    fn cert_order() -> Name {
        Name(vec![
            vec![("2.5.4.6".into(), "jp".into())],
            vec![("2.5.4.10".into(), "jpki".into())],
            vec![("2.5.4.11".into(), "jpki for user authentication".into())],
            vec![(
                "2.5.4.11".into(),
                "japan agency for local authority information systems".into(),
            )],
        ])
    }

    fn parse(s: &str) -> Name {
        Name::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn every_accepted_spelling_names_the_same_ca() {
        let want = cert_order();
        for s in [
            JPKI_AUTH,
            "issuer=C = JP, O = JPKI, OU = JPKI for user authentication, OU = Japan Agency for Local Authority Information Systems",
            "C=JP, O=JPKI, OU=JPKI for user authentication, OU=Japan Agency for Local Authority Information Systems",
            "ou=japan agency  for local authority information systems,  OU=JPKI for user authentication,o=jpki,2.5.4.6=jp",
            "OU=Japan Agency for Local Authority Information Systems,OU=\"JPKI for user authentication\",O=\\4A\\50KI,C=JP",
        ] {
            assert!(parse(s).names(&want), "{s}");
        }
        for s in [
            "OU=JPKI for user authentication,O=JPKI,C=JP",
            "OU=Japan Agency for Local Authority Information Systems,OU=JPKI for user authentication,O=JPKI,C=US",
            "C=JP, OU=JPKI for user authentication, O=JPKI, OU=Japan Agency for Local Authority Information Systems",
        ] {
            assert!(!parse(s).names(&want), "{s}");
        }
    }

    #[test]
    fn escapes_and_multi_valued_rdns() {
        let a = parse(r"CN=Doe\, John+UID=jd,O=Example");
        let b = parse(r"UID=jd + CN=doe\2C john, O=example");
        assert_eq!(a, b);
        assert_eq!(a.0[0].len(), 2);
    }

    #[test]
    fn malformed_names_are_refused() {
        assert_eq!(Name::parse(" "), Err(NameError::Empty));
        assert_eq!(Name::parse("JP"), Err(NameError::NoEquals("JP".into())));
        assert_eq!(
            Name::parse("C=JP,JPKI"),
            Err(NameError::NoEquals("JPKI".into()))
        );
        assert!(matches!(
            Name::parse("XX=1"),
            Err(NameError::UnknownType(_))
        ));
        assert!(matches!(Name::parse(r"CN=a\"), Err(NameError::Escape(_))));
        assert!(matches!(Name::parse(r"CN=a\4G"), Err(NameError::Escape(_))));
        assert!(matches!(
            Name::parse("CN=\"open"),
            Err(NameError::Escape(_))
        ));
        assert_eq!(Name::parse(&"C=JP,".repeat(300)), Err(NameError::TooLong));
    }
}

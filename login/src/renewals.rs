//! Renewal links imported from J-LIS files (CLI `import-renewals`, `POST /v1/operator/renewals`).

use super::identity::{IdentityError, RequestActor};
use super::{dn, jpki, Auth, RenewalFailure, RenewalReport, MAX_RENEWAL_CSV_BYTES};

/// Why a renewal import stopped (a bad line is no error: it is reported in the result).
#[derive(Debug, thiserror::Error)]
pub enum RenewalImportError {
    #[error("the renewal file is larger than {MAX_RENEWAL_CSV_BYTES} bytes")]
    TooLarge,
    /// The write model failed; lines before this one may be linked (repeating is safe).
    #[error("{0}")]
    Unavailable(String),
}

impl Auth {
    /// Imports renewal links from CSV lines `issuer,old serial,new serial` (RFC 4180 quoting;
    /// an optional header line starting with `issuer` is skipped). The issuer is a name in
    /// any form [`dn::Name::parse`] accepts (RFC 4514 as `openssl x509 -issuer -nameopt
    /// RFC2253` prints it, OpenSSL's default one-line form, or the server's own), compared as
    /// a name with each trust anchor's subject; serials are hex.
    ///
    /// Also answers the last global position the links wrote (a line already linked counts
    /// with its existing link's position; 0 when no line linked).
    pub async fn import_renewals(
        &self,
        csv: &str,
        actor: &RequestActor,
    ) -> Result<(RenewalReport, u64), RenewalImportError> {
        if csv.len() > MAX_RENEWAL_CSV_BYTES {
            return Err(RenewalImportError::TooLarge);
        }
        let mut report = RenewalReport {
            linked: 0,
            failed: Vec::new(),
        };
        let mut position = 0;
        let anchor_names: Vec<(dn::Name, String)> = self
            .anchors
            .iter()
            .filter_map(|a| Some((dn::Name::from_der(a.subject_der())?, a.subject.clone())))
            .collect();
        for (i, line) in csv.lines().enumerate() {
            let line_no = i + 1;
            if line.trim().is_empty()
                || (i == 0 && line.trim_start().to_ascii_lowercase().starts_with("issuer"))
            {
                continue;
            }
            let fields = match parse_csv_line(line) {
                Some(f) if f.len() == 3 => f,
                _ => {
                    report.failed.push(RenewalFailure {
                        line: line_no,
                        code: "RENEWAL_LINE_MALFORMED".into(),
                        detail: "expected 3 fields: issuer,old serial,new serial".into(),
                    });
                    continue;
                }
            };
            let (Some(old), Some(new)) = (
                jpki::normalize_serial(&fields[1]),
                jpki::normalize_serial(&fields[2]),
            ) else {
                report.failed.push(RenewalFailure {
                    line: line_no,
                    code: "RENEWAL_SERIAL_MALFORMED".into(),
                    detail: "serials are hex".into(),
                });
                continue;
            };
            let issuer = match dn::Name::parse(&fields[0]) {
                Ok(name) => anchor_names
                    .iter()
                    .find(|(anchor, _)| name.names(anchor))
                    .map(|(_, subject)| subject.as_str())
                    .ok_or_else(|| "issuer is not a configured trust anchor's name".to_owned()),
                Err(e) => Err(format!("issuer is not a distinguished name: {e}")),
            };
            let issuer = match issuer {
                Ok(i) => i,
                Err(detail) => {
                    report.failed.push(RenewalFailure {
                        line: line_no,
                        code: "RENEWAL_ISSUER_UNKNOWN".into(),
                        detail,
                    });
                    continue;
                }
            };
            match self.identity.link_renewal(issuer, &old, &new, actor).await {
                Ok(at) => {
                    report.linked += 1;
                    position = position.max(at);
                }
                Err(IdentityError::Rejected { code, detail }) => {
                    report.failed.push(RenewalFailure {
                        line: line_no,
                        code,
                        detail,
                    })
                }
                Err(IdentityError::Unavailable(d)) => {
                    return Err(RenewalImportError::Unavailable(d))
                }
            }
        }
        Ok((report, position))
    }
}

/// One CSV record (RFC 4180 quoting, no embedded newlines).
pub fn parse_csv_line(line: &str) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cur.push(c),
            (false, '"') if cur.trim().is_empty() && !was_quoted => {
                cur.clear();
                quoted = true;
                was_quoted = true;
            }
            (false, ',') => {
                fields.push(std::mem::take(&mut cur));
                was_quoted = false;
            }
            (false, c) => cur.push(c),
        }
    }
    if quoted {
        return None;
    }
    fields.push(cur);
    Some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_lines_with_quoted_issuer() {
        let f = parse_csv_line(r#""C=JP, O=JPKI",0a,0b"#).unwrap_or_default();
        assert_eq!(f, vec!["C=JP, O=JPKI", "0a", "0b"]);
        assert_eq!(parse_csv_line(r#""unterminated,1,2"#), None);
        assert_eq!(parse_csv_line("a,b").unwrap_or_default().len(), 2);
    }
}

//! Login's read model: what a citizen-card login asks — the relying party (status and current
//! client key), which subject a certificate belongs to (renewals included) and whether it is
//! revoked, and the active PPID of a (subject, relying party). Rebuildable by the runner, the
//! replay tool and Kafka-mode consumers like every other read model: nothing here needs actix.
//!
//! The login hot path keeps an in-memory index (`login/src/cache.rs`) whose misses are
//! answered from these tables by [`relying_party`] and [`certificate_login`]
//! (`login/src/read_model.rs`, the write model only as a fallback); what may stay in that
//! index when an event arrives is decided here, over typed events, by
//! [`LoginIdentity::invalidation`] — so event types are named only in `schemas`, and the index
//! and these tables follow the same facts.
//!
//! Invariant: `login_ppid` holds active PPIDs only; a revoked or invalidated PPID's row is
//! gone in the same transaction as the event's checkpoint.

use super::{checked, position, schema, stream_id, text_enum, QueryError, EXPECT_ROW};
use crate::{ApplyError, Change, Param, Projection, Recorded};
use mykey_domain::certificate::{Certificate, CertificateEvent, CertificateRef};
use mykey_domain::ppid::{PpidAggregate, PpidEvent};
use mykey_domain::relying_party::{RelyingParty, RelyingPartyEvent, RpStatus};
use mykey_domain::subject::{Subject, SubjectEvent};
use mykey_domain::Aggregate;
use mykey_schemas::AnyEvent;
use tokio_postgres::GenericClient;
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
pub struct LoginIdentity;

const MIGRATIONS: &[&str] = &[
    EXPECT_ROW,
    "CREATE TABLE login_rp (
        id         text PRIMARY KEY,
        status     text NOT NULL CHECK (status IN ('active', 'suspended', 'retired')),
        public_jwk jsonb NOT NULL,
        position   bigint NOT NULL
    );
    CREATE TABLE login_certificate (
        cert_key text PRIMARY KEY,
        subject  uuid,
        revoked  boolean NOT NULL DEFAULT false,
        position bigint NOT NULL
    );
    CREATE TABLE login_ppid (
        ppid          text PRIMARY KEY,
        subject       uuid NOT NULL,
        relying_party text NOT NULL,
        position      bigint NOT NULL
    );
    CREATE UNIQUE INDEX login_ppid_by_subject ON login_ppid (subject, relying_party);",
];

text_enum!(
    /// A relying party's status as stored in `login_rp`.
    RpStatusText {
        Active => "active",
        Suspended => "suspended",
        Retired => "retired",
    }
);

impl From<RpStatusText> for RpStatus {
    fn from(s: RpStatusText) -> RpStatus {
        match s {
            RpStatusText::Active => RpStatus::Active,
            RpStatusText::Suspended => RpStatus::Suspended,
            RpStatusText::Retired => RpStatus::Retired,
        }
    }
}

/// What an event means for an index of login answers built from this read model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    /// The event only adds facts (a subject, a certificate link, a renewal, a new PPID): no
    /// cached answer becomes wrong.
    Keep,
    /// A relying party changed (status or key): cached relying parties may be wrong.
    RelyingParties,
    /// A certificate was revoked or a PPID released, revoked or invalidated: cached
    /// (certificate, relying party) → PPID answers may be wrong.
    Logins,
}

/// Stream categories whose events can change a login answer.
pub const CATEGORIES: &[&str] = &[
    RelyingParty::CATEGORY,
    Certificate::CATEGORY,
    Subject::CATEGORY,
    PpidAggregate::CATEGORY,
];

impl LoginIdentity {
    /// What `event` invalidates in a cache of login answers (see [`Invalidation`]).
    pub fn invalidation(event: &AnyEvent) -> Invalidation {
        match event {
            AnyEvent::RelyingParty(_) => Invalidation::RelyingParties,
            AnyEvent::Certificate(CertificateEvent::Revoked { .. })
            | AnyEvent::Subject(SubjectEvent::PpidReleased { .. })
            | AnyEvent::Ppid(PpidEvent::Revoked { .. } | PpidEvent::Invalidated { .. }) => {
                Invalidation::Logins
            }
            AnyEvent::Certificate(
                CertificateEvent::Linked { .. }
                | CertificateEvent::LinkedFromRenewal { .. }
                | CertificateEvent::Renewed { .. },
            )
            | AnyEvent::Subject(
                SubjectEvent::Created { .. }
                | SubjectEvent::CertificateAdded { .. }
                | SubjectEvent::PpidAssigned { .. },
            )
            | AnyEvent::Ppid(PpidEvent::Issued { .. }) => Invalidation::Keep,
            AnyEvent::Program(_)
            | AnyEvent::Application(_)
            | AnyEvent::Patch(_)
            | AnyEvent::Maintenance(_)
            | AnyEvent::TestCard(_) => Invalidation::Keep,
        }
    }

    fn relying_party(
        e: &Recorded<'_>,
        event: &RelyingPartyEvent,
        out: &mut Vec<Change>,
    ) -> Result<(), ApplyError> {
        use RelyingPartyEvent as E;
        let id = Param::Text(stream_id(e));
        let pos = Param::I64(position(e)?);
        let status = |s: RpStatusText| {
            Change::new(
                checked!(
                    "UPDATE login_rp SET status = $2, position = $3 WHERE id = $1",
                    "login_rp"
                ),
                vec![id.clone(), s.as_str().into(), pos.clone()],
            )
        };
        out.push(match event {
            E::Registered { id, public_jwk, .. } => Change::new(
                "INSERT INTO login_rp (id, status, public_jwk, position) \
                 VALUES ($1, 'active', $2, $3)",
                vec![id.as_str().into(), public_jwk.clone().into(), pos],
            ),
            E::KeyRotated { public_jwk } => Change::new(
                checked!(
                    "UPDATE login_rp SET public_jwk = $2, position = $3 WHERE id = $1",
                    "login_rp"
                ),
                vec![id, public_jwk.clone().into(), pos],
            ),
            E::Suspended { .. } => status(RpStatusText::Suspended),
            E::Resumed => status(RpStatusText::Active),
            E::Retired { .. } => status(RpStatusText::Retired),
        });
        Ok(())
    }

    fn certificate(
        e: &Recorded<'_>,
        event: &CertificateEvent,
        out: &mut Vec<Change>,
    ) -> Result<(), ApplyError> {
        use CertificateEvent as E;
        let pos = Param::I64(position(e)?);
        match event {
            E::Linked {
                certificate,
                subject,
            }
            | E::LinkedFromRenewal {
                certificate,
                subject,
                ..
            } => out.push(Change::new(
                "INSERT INTO login_certificate (cert_key, subject, position) VALUES ($1, $2, $3) \
                 ON CONFLICT (cert_key) DO UPDATE SET subject = $2, position = $3",
                vec![certificate.stream_key().into(), subject.0.into(), pos],
            )),
            // The new certificate arrives as `LinkedFromRenewal` on its own stream.
            E::Renewed { .. } => {}
            // A CRL may name a certificate never linked: remembered all the same.
            E::Revoked { certificate, .. } => out.push(Change::new(
                "INSERT INTO login_certificate (cert_key, revoked, position) \
                 VALUES ($1, true, $2) \
                 ON CONFLICT (cert_key) DO UPDATE SET revoked = true, position = $2",
                vec![certificate.stream_key().into(), pos],
            )),
        }
        Ok(())
    }

    fn ppid(e: &Recorded<'_>, event: &PpidEvent, out: &mut Vec<Change>) -> Result<(), ApplyError> {
        match event {
            PpidEvent::Issued {
                ppid,
                subject,
                relying_party,
            } => out.push(Change::new(
                "INSERT INTO login_ppid (ppid, subject, relying_party, position) \
                 VALUES ($1, $2, $3, $4)",
                vec![
                    ppid.as_str().into(),
                    subject.0.into(),
                    relying_party.as_str().into(),
                    position(e)?.into(),
                ],
            )),
            PpidEvent::Revoked { .. } | PpidEvent::Invalidated { .. } => out.push(Change::new(
                checked!("DELETE FROM login_ppid WHERE ppid = $1", "login_ppid"),
                vec![stream_id(e).into()],
            )),
        }
        Ok(())
    }
}

impl Projection for LoginIdentity {
    fn name(&self) -> &'static str {
        "login_identity"
    }
    fn version(&self) -> u32 {
        1
    }
    fn migrations(&self) -> &'static [&'static str] {
        MIGRATIONS
    }
    fn categories(&self) -> &'static [&'static str] {
        // Subject events repeat what the certificate and PPID streams say.
        &[
            RelyingParty::CATEGORY,
            Certificate::CATEGORY,
            PpidAggregate::CATEGORY,
        ]
    }
    fn source(&self) -> &'static str {
        include_str!("login_identity.rs")
    }

    fn apply(&self, e: Recorded<'_>, out: &mut Vec<Change>) -> Result<(), ApplyError> {
        match e.event {
            AnyEvent::RelyingParty(event) => Self::relying_party(&e, event, out),
            AnyEvent::Certificate(event) => Self::certificate(&e, event, out),
            AnyEvent::Ppid(event) => Self::ppid(&e, event, out),
            _ => Ok(()),
        }
    }
}

/// A relying party as login needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoginRp {
    pub id: String,
    pub status: RpStatus,
    /// The current public JWK its client assertions are verified with.
    pub public_jwk: serde_json::Value,
}

/// The relying party `id`, if registered.
pub async fn relying_party<C: GenericClient + Sync>(
    client: &C,
    schema_name: &str,
    id: &str,
) -> Result<Option<LoginRp>, QueryError> {
    let s = schema(schema_name)?;
    let row = client
        .query_opt(
            &format!("SELECT status, public_jwk FROM {s}.login_rp WHERE id = $1"),
            &[&id],
        )
        .await?;
    row.map(|r| {
        Ok(LoginRp {
            id: id.to_owned(),
            status: RpStatusText::parse(r.try_get("status")?)?.into(),
            public_jwk: r.try_get("public_jwk")?,
        })
    })
    .transpose()
}

/// What the read model says about a certificate and a relying party.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateLogin {
    /// The platform has never linked this certificate to a subject.
    Unknown,
    /// The certificate was revoked (a CRL named it).
    Revoked,
    /// Linked to `subject`; `ppid` is its active PPID at the relying party, if any.
    Linked { subject: Uuid, ppid: Option<String> },
}

/// The subject of `certificate` and its active PPID at `relying_party`.
pub async fn certificate_login<C: GenericClient + Sync>(
    client: &C,
    schema_name: &str,
    certificate: &CertificateRef,
    relying_party: &str,
) -> Result<CertificateLogin, QueryError> {
    let s = schema(schema_name)?;
    let row = client
        .query_opt(
            &format!(
                "SELECT c.subject, c.revoked, p.ppid FROM {s}.login_certificate c \
                 LEFT JOIN {s}.login_ppid p ON p.subject = c.subject AND p.relying_party = $2 \
                 WHERE c.cert_key = $1"
            ),
            &[&certificate.stream_key(), &relying_party],
        )
        .await?;
    let Some(row) = row else {
        return Ok(CertificateLogin::Unknown);
    };
    if row.try_get::<_, bool>("revoked")? {
        return Ok(CertificateLogin::Revoked);
    }
    Ok(match row.try_get::<_, Option<Uuid>>("subject")? {
        None => CertificateLogin::Unknown,
        Some(subject) => CertificateLogin::Linked {
            subject,
            ppid: row.try_get("ppid")?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mykey_domain::ppid::RevokedBy;
    use mykey_domain::subject::ReleaseReason;
    use mykey_domain::{Ppid, RelyingPartyId, SubjectId};

    #[test]
    fn only_revocations_releases_and_relying_party_changes_invalidate() {
        let cert = CertificateRef::new("ca", "0a").unwrap_or_else(|e| panic!("{e}"));
        let subject = SubjectId(Uuid::from_u128(1));
        let rp = RelyingPartyId::parse("city-1").unwrap_or_else(|e| panic!("{e}"));
        let ppid = Ppid::from_uuid(Uuid::from_u128(0x10));
        let keep = [
            AnyEvent::Certificate(CertificateEvent::Linked {
                certificate: cert.clone(),
                subject,
            }),
            AnyEvent::Certificate(CertificateEvent::Renewed { new: cert.clone() }),
            AnyEvent::Subject(SubjectEvent::Created {
                subject,
                certificate: cert.clone(),
            }),
            AnyEvent::Subject(SubjectEvent::PpidAssigned {
                relying_party: rp.clone(),
                ppid: ppid.clone(),
            }),
            AnyEvent::Ppid(PpidEvent::Issued {
                ppid: ppid.clone(),
                subject,
                relying_party: rp.clone(),
            }),
        ];
        for e in &keep {
            assert_eq!(LoginIdentity::invalidation(e), Invalidation::Keep, "{e:?}");
        }
        let logins = [
            AnyEvent::Certificate(CertificateEvent::Revoked {
                certificate: cert,
                reason: "crl".into(),
            }),
            AnyEvent::Subject(SubjectEvent::PpidReleased {
                relying_party: rp,
                ppid,
                reason: ReleaseReason::Revoked,
            }),
            AnyEvent::Ppid(PpidEvent::Revoked {
                by: RevokedBy::Citizen,
            }),
            AnyEvent::Ppid(PpidEvent::Invalidated {
                patch_id: Uuid::nil(),
                reason: "r".into(),
            }),
        ];
        for e in &logins {
            assert_eq!(
                LoginIdentity::invalidation(e),
                Invalidation::Logins,
                "{e:?}"
            );
        }
        assert_eq!(
            LoginIdentity::invalidation(&AnyEvent::RelyingParty(RelyingPartyEvent::Resumed)),
            Invalidation::RelyingParties
        );
    }
}

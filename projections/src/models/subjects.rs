//! Subjects and their certificates — operator-only: which certificate is linked to which
//! subject, renewal links in both directions, revocations (also of certificates never linked,
//! found on a CRL). And, in a separate table for the citizen door, which relying parties hold
//! an active PPID for a subject (a citizen lists and revokes those; they never see other
//! subjects' rows).

use super::{checked, position, schema, Page, PageRequest, QueryError, EXPECT_ROW};
use crate::{ApplyError, Change, Param, Projection, Recorded};
use chrono::{DateTime, Utc};
use mykey_domain::certificate::{Certificate, CertificateEvent};
use mykey_domain::subject::{Subject, SubjectEvent};
use mykey_domain::Aggregate;
use mykey_domain::SubjectId;
use mykey_schemas::AnyEvent;
use serde::Serialize;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
pub struct Subjects;

const MIGRATIONS: &[&str] = &[
    EXPECT_ROW,
    "CREATE TABLE subject (
        subject    uuid PRIMARY KEY,
        created_at timestamptz NOT NULL,
        position   bigint NOT NULL
    );
    CREATE TABLE certificate (
        cert_key       text PRIMARY KEY,
        issuer         text NOT NULL,
        serial         text NOT NULL,
        subject        uuid,
        linked_at      timestamptz,
        renewed_from   text,
        renewed_to     text,
        renewed_at     timestamptz,
        revoked_at     timestamptz,
        revoked_reason text,
        position       bigint NOT NULL
    );
    CREATE INDEX certificate_by_subject ON certificate (subject, cert_key);
    CREATE TABLE held_ppid (
        subject       uuid NOT NULL,
        relying_party text NOT NULL,
        ppid          text NOT NULL,
        since         timestamptz NOT NULL,
        PRIMARY KEY (subject, relying_party)
    );
    CREATE INDEX held_ppid_by_ppid ON held_ppid (ppid);",
];

/// Upserts a certificate row: a certificate may be revoked (CRL) before or without a link.
const LINK: &str = "INSERT INTO certificate (cert_key, issuer, serial, subject, linked_at, \
     renewed_from, position) VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (cert_key) DO UPDATE SET subject = $4, linked_at = $5, renewed_from = $6, \
     position = $7";

impl Subjects {
    fn certificate(
        e: &Recorded<'_>,
        event: &CertificateEvent,
        out: &mut Vec<Change>,
    ) -> Result<(), ApplyError> {
        use CertificateEvent as E;
        let at = Param::Time(e.envelope.recorded_at);
        let pos = Param::I64(position(e)?);
        let link =
            |c: &mykey_domain::certificate::CertificateRef, s: &SubjectId, from: Option<String>| {
                Change::new(
                    LINK,
                    vec![
                        c.stream_key().into(),
                        c.issuer().into(),
                        c.serial().into(),
                        s.0.into(),
                        at.clone(),
                        from.into(),
                        pos.clone(),
                    ],
                )
            };
        out.push(match event {
            E::Linked {
                certificate,
                subject,
            } => link(certificate, subject, None),
            E::LinkedFromRenewal {
                certificate,
                subject,
                previous,
            } => link(certificate, subject, Some(previous.stream_key())),
            E::Renewed { new } => Change::new(
                checked!(
                    "UPDATE certificate SET renewed_to = $2, renewed_at = $3, position = $4 \
                 WHERE cert_key = $1",
                    "certificate"
                ),
                vec![
                    e.envelope.stream_id.id().into(),
                    new.stream_key().into(),
                    at,
                    pos,
                ],
            ),
            E::Revoked {
                certificate,
                reason,
            } => Change::new(
                "INSERT INTO certificate (cert_key, issuer, serial, revoked_at, revoked_reason, \
                 position) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (cert_key) DO UPDATE \
                 SET revoked_at = $4, revoked_reason = $5, position = $6",
                vec![
                    certificate.stream_key().into(),
                    certificate.issuer().into(),
                    certificate.serial().into(),
                    at,
                    reason.as_str().into(),
                    pos,
                ],
            ),
        });
        Ok(())
    }

    fn subject(
        e: &Recorded<'_>,
        event: &SubjectEvent,
        out: &mut Vec<Change>,
    ) -> Result<(), ApplyError> {
        use SubjectEvent as E;
        let subject = Uuid::parse_str(e.envelope.stream_id.id()).map_err(|_| {
            ApplyError::Inconsistent(format!("subject stream {}", e.envelope.stream_id))
        })?;
        let at = Param::Time(e.envelope.recorded_at);
        match event {
            E::Created { .. } => out.push(Change::new(
                "INSERT INTO subject (subject, created_at, position) VALUES ($1, $2, $3)",
                vec![subject.into(), at, position(e)?.into()],
            )),
            // The certificate itself arrives as `LinkedFromRenewal` on its own stream.
            E::CertificateAdded { .. } => {}
            E::PpidAssigned {
                relying_party,
                ppid,
            } => out.push(Change::new(
                "INSERT INTO held_ppid (subject, relying_party, ppid, since) \
                 VALUES ($1, $2, $3, $4)",
                vec![
                    subject.into(),
                    relying_party.as_str().into(),
                    ppid.as_str().into(),
                    at,
                ],
            )),
            E::PpidReleased {
                relying_party,
                ppid,
                ..
            } => out.push(Change::new(
                checked!(
                    "DELETE FROM held_ppid WHERE subject = $1 AND relying_party = $2 AND ppid = $3",
                    "held_ppid"
                ),
                vec![
                    subject.into(),
                    relying_party.as_str().into(),
                    ppid.as_str().into(),
                ],
            )),
        }
        Ok(())
    }
}

impl Projection for Subjects {
    fn name(&self) -> &'static str {
        "subjects"
    }
    /// 2: `held_ppid` indexed by PPID (the citizen session's PPID → subject lookup).
    fn version(&self) -> u32 {
        2
    }
    fn migrations(&self) -> &'static [&'static str] {
        MIGRATIONS
    }
    fn categories(&self) -> &'static [&'static str] {
        &[Certificate::CATEGORY, Subject::CATEGORY]
    }
    fn source(&self) -> &'static str {
        include_str!("subjects.rs")
    }

    fn apply(&self, e: Recorded<'_>, out: &mut Vec<Change>) -> Result<(), ApplyError> {
        match e.event {
            AnyEvent::Certificate(c) => Subjects::certificate(&e, c, out),
            AnyEvent::Subject(s) => Subjects::subject(&e, s, out),
            _ => Ok(()),
        }
    }
}

/// A certificate as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CertificateView {
    /// SHA-256 of issuer and serial: the certificate's stream key.
    pub cert_key: String,
    pub issuer: String,
    pub serial: String,
    pub subject: Option<Uuid>,
    pub linked_at: Option<DateTime<Utc>>,
    pub renewed_from: Option<String>,
    pub renewed_to: Option<String>,
    pub renewed_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_reason: Option<String>,
}

/// A subject with every certificate linked to it, oldest link first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubjectView {
    pub subject: Uuid,
    pub created_at: DateTime<Utc>,
    pub certificates: Vec<CertificateView>,
}

/// A relying party holding an active PPID for a subject (the citizen's view).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeldPpid {
    pub relying_party: String,
    pub ppid: String,
    pub since: DateTime<Utc>,
}

/// Most certificates listed for one subject: a citizen gets a new card every ten years or
/// on loss, so real subjects have a handful; the bound keeps a corrupt row set from flooding.
pub const MAX_CERTIFICATES_PER_SUBJECT: i64 = 100;

const CERT_COLUMNS: &str = "cert_key, issuer, serial, subject, linked_at, renewed_from, \
     renewed_to, renewed_at, revoked_at, revoked_reason";

fn cert_view(r: &Row) -> Result<CertificateView, QueryError> {
    Ok(CertificateView {
        cert_key: r.try_get(0)?,
        issuer: r.try_get(1)?,
        serial: r.try_get(2)?,
        subject: r.try_get(3)?,
        linked_at: r.try_get(4)?,
        renewed_from: r.try_get(5)?,
        renewed_to: r.try_get(6)?,
        renewed_at: r.try_get(7)?,
        revoked_at: r.try_get(8)?,
        revoked_reason: r.try_get(9)?,
    })
}

/// A subject and its certificates (operators only).
pub async fn subject(
    client: &impl GenericClient,
    schema_name: &str,
    subject: SubjectId,
) -> Result<Option<SubjectView>, QueryError> {
    let s = schema(schema_name)?;
    let Some(row) = client
        .query_opt(
            &format!("SELECT created_at FROM {s}.subject WHERE subject = $1"),
            &[&subject.0],
        )
        .await?
    else {
        return Ok(None);
    };
    let certificates = client
        .query(
            &format!(
                "SELECT {CERT_COLUMNS} FROM {s}.certificate WHERE subject = $1 \
                 ORDER BY linked_at, cert_key LIMIT $2"
            ),
            &[&subject.0, &MAX_CERTIFICATES_PER_SUBJECT],
        )
        .await?
        .iter()
        .map(cert_view)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(SubjectView {
        subject: subject.0,
        created_at: row.try_get(0)?,
        certificates,
    }))
}

/// A certificate by its key (operators only).
pub async fn certificate(
    client: &impl GenericClient,
    schema_name: &str,
    cert_key: &str,
) -> Result<Option<CertificateView>, QueryError> {
    let s = schema(schema_name)?;
    let row = client
        .query_opt(
            &format!("SELECT {CERT_COLUMNS} FROM {s}.certificate WHERE cert_key = $1"),
            &[&cert_key],
        )
        .await?;
    row.as_ref().map(cert_view).transpose()
}

/// The relying parties holding an active PPID for `subject`, by RP, one page (the citizen
/// door).
pub async fn held_ppids(
    client: &impl GenericClient,
    schema_name: &str,
    subject: SubjectId,
    page: &PageRequest,
) -> Result<Page<HeldPpid>, QueryError> {
    let s = schema(schema_name)?;
    let after = page.after(1)?;
    let items = client
        .query(
            &format!(
                "SELECT relying_party, ppid, since FROM {s}.held_ppid WHERE subject = $1 \
                 AND relying_party > $2 ORDER BY relying_party LIMIT $3"
            ),
            &[&subject.0, &after[0], &page.fetch()],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(HeldPpid {
                relying_party: r.try_get(0)?,
                ppid: r.try_get(1)?,
                since: r.try_get(2)?,
            })
        })
        .collect::<Result<Vec<_>, QueryError>>()?;
    Ok(page.page(items, |h| vec![h.relying_party.clone()]))
}

/// The subject holding the active PPID `ppid`, and the relying party it was issued to; None
/// when it is unknown, revoked or invalidated (the citizen session's lookup).
pub async fn holder(
    client: &impl GenericClient,
    schema_name: &str,
    ppid: &str,
) -> Result<Option<(SubjectId, String)>, QueryError> {
    let s = schema(schema_name)?;
    let row = client
        .query_opt(
            &format!("SELECT subject, relying_party FROM {s}.held_ppid WHERE ppid = $1"),
            &[&ppid],
        )
        .await?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some((SubjectId(r.try_get(0)?), r.try_get(1)?))),
    }
}

/// The active PPID `relying_party` holds for `subject`, if any (the citizen door's revoke).
pub async fn held_ppid(
    client: &impl GenericClient,
    schema_name: &str,
    subject: SubjectId,
    relying_party: &str,
) -> Result<Option<HeldPpid>, QueryError> {
    let s = schema(schema_name)?;
    let row = client
        .query_opt(
            &format!(
                "SELECT relying_party, ppid, since FROM {s}.held_ppid \
                 WHERE subject = $1 AND relying_party = $2"
            ),
            &[&subject.0, &relying_party],
        )
        .await?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some(HeldPpid {
            relying_party: r.try_get(0)?,
            ppid: r.try_get(1)?,
            since: r.try_get(2)?,
        })),
    }
}

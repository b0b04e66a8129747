//! PPIDs per relying party: status (active, revoked by whom, invalidated by which patch), when
//! issued and when last changed. Read by the PPID's own relying party (municipal door) and by
//! operators and auditors.
//!
//! Invariant: this table never holds the subject or a certificate — a relying party reading
//! its PPIDs learns nothing that links them to a person or to another RP. For the same reason a
//! citizen's revocation records no actor id (a citizen's actor id is their subject id).

use super::{
    checked, position, schema, stream_id, text_enum, Page, PageRequest, QueryError, EXPECT_ROW,
};
use crate::{ApplyError, Change, Param, Projection, Recorded};
use chrono::{DateTime, Utc};
use mykey_domain::ppid::{PpidAggregate, PpidEvent, RevokedBy};
use mykey_domain::Aggregate;
use mykey_domain::{Ppid, RelyingPartyId};
use mykey_schemas::AnyEvent;
use serde::Serialize;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
pub struct Ppids;

const MIGRATIONS: &[&str] = &[
    EXPECT_ROW,
    "CREATE TABLE ppid (
        ppid          text PRIMARY KEY,
        relying_party text NOT NULL,
        status        text NOT NULL CHECK (status IN ('active', 'revoked', 'invalidated')),
        revoked_by    text CHECK (revoked_by IN ('relying_party', 'citizen')),
        changed_by    text,
        patch_id      uuid,
        reason        text,
        issued_at     timestamptz NOT NULL,
        changed_at    timestamptz NOT NULL,
        position      bigint NOT NULL
    );
    CREATE INDEX ppid_by_rp ON ppid (relying_party, ppid);",
];

text_enum!(
    /// Where a PPID stands.
    PpidStatus {
        Active => "active",
        Revoked => "revoked",
        Invalidated => "invalidated",
    }
);

text_enum!(
    /// Who revoked a PPID.
    Revoker {
        RelyingParty => "relying_party",
        Citizen => "citizen",
    }
);

impl Projection for Ppids {
    fn name(&self) -> &'static str {
        "ppids"
    }
    fn version(&self) -> u32 {
        1
    }
    fn migrations(&self) -> &'static [&'static str] {
        MIGRATIONS
    }
    fn categories(&self) -> &'static [&'static str] {
        &[PpidAggregate::CATEGORY]
    }
    fn source(&self) -> &'static str {
        include_str!("ppids.rs")
    }

    fn apply(&self, e: Recorded<'_>, out: &mut Vec<Change>) -> Result<(), ApplyError> {
        let AnyEvent::Ppid(event) = e.event else {
            return Ok(());
        };
        let at = Param::Time(e.envelope.recorded_at);
        let ppid = Param::Text(stream_id(&e));
        match event {
            PpidEvent::Issued {
                ppid,
                relying_party,
                ..
            } => out.push(Change::new(
                "INSERT INTO ppid (ppid, relying_party, status, issued_at, changed_at, position) \
                 VALUES ($1, $2, 'active', $3, $3, $4)",
                vec![
                    ppid.as_str().into(),
                    relying_party.as_str().into(),
                    at,
                    position(&e)?.into(),
                ],
            )),
            PpidEvent::Revoked { by } => {
                let (by, actor) = match by {
                    RevokedBy::RelyingParty => (
                        Revoker::RelyingParty,
                        Param::Text(e.envelope.metadata.actor_id.clone()),
                    ),
                    RevokedBy::Citizen => (Revoker::Citizen, Param::Null),
                };
                out.push(Change::new(
                    checked!(
                        "UPDATE ppid SET status = 'revoked', revoked_by = $2, changed_by = $3, \
                     changed_at = $4, position = $5 WHERE ppid = $1",
                        "ppid"
                    ),
                    vec![ppid, by.as_str().into(), actor, at, position(&e)?.into()],
                ));
            }
            PpidEvent::Invalidated { patch_id, reason } => out.push(Change::new(
                checked!(
                    "UPDATE ppid SET status = 'invalidated', patch_id = $2, reason = $3, \
                 changed_by = $4, changed_at = $5, position = $6 WHERE ppid = $1",
                    "ppid"
                ),
                vec![
                    ppid,
                    (*patch_id).into(),
                    reason.as_str().into(),
                    e.envelope.metadata.actor_id.as_str().into(),
                    at,
                    position(&e)?.into(),
                ],
            )),
        }
        Ok(())
    }
}

/// One PPID as its relying party may see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PpidView {
    pub ppid: String,
    pub relying_party: String,
    pub status: PpidStatus,
    pub revoked_by: Option<Revoker>,
    /// The RP or operator that revoked or invalidated it (never a citizen's id).
    pub changed_by: Option<String>,
    /// The data patch that invalidated it.
    pub patch_id: Option<Uuid>,
    pub reason: Option<String>,
    pub issued_at: DateTime<Utc>,
    pub changed_at: DateTime<Utc>,
    /// Global log position of the last event applied to this row.
    pub position: i64,
}

const COLUMNS: &str = "ppid, relying_party, status, revoked_by, changed_by, patch_id, reason, \
                       issued_at, changed_at, position";

fn view(r: &Row) -> Result<PpidView, QueryError> {
    Ok(PpidView {
        ppid: r.try_get(0)?,
        relying_party: r.try_get(1)?,
        status: PpidStatus::parse(r.try_get(2)?)?,
        revoked_by: r
            .try_get::<_, Option<&str>>(3)?
            .map(Revoker::parse)
            .transpose()?,
        changed_by: r.try_get(4)?,
        patch_id: r.try_get(5)?,
        reason: r.try_get(6)?,
        issued_at: r.try_get(7)?,
        changed_at: r.try_get(8)?,
        position: r.try_get(9)?,
    })
}

/// A PPID issued to `relying_party`; None when it does not exist *or belongs to another RP*
/// (the answer must not reveal which).
pub async fn ppid_of(
    client: &impl GenericClient,
    schema_name: &str,
    relying_party: &RelyingPartyId,
    ppid: &Ppid,
) -> Result<Option<PpidView>, QueryError> {
    let s = schema(schema_name)?;
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM {s}.ppid WHERE ppid = $1 AND relying_party = $2"),
            &[&ppid.as_str(), &relying_party.as_str()],
        )
        .await?;
    row.as_ref().map(view).transpose()
}

/// Any PPID, whatever its RP (operators and auditors only).
pub async fn ppid(
    client: &impl GenericClient,
    schema_name: &str,
    ppid: &Ppid,
) -> Result<Option<PpidView>, QueryError> {
    let s = schema(schema_name)?;
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM {s}.ppid WHERE ppid = $1"),
            &[&ppid.as_str()],
        )
        .await?;
    row.as_ref().map(view).transpose()
}

/// The PPIDs issued to `relying_party`, by PPID, optionally of one status.
pub async fn list_for_rp(
    client: &impl GenericClient,
    schema_name: &str,
    relying_party: &RelyingPartyId,
    status: Option<PpidStatus>,
    page: &PageRequest,
) -> Result<Page<PpidView>, QueryError> {
    let s = schema(schema_name)?;
    let after = page.after(1)?;
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM {s}.ppid WHERE relying_party = $1 \
                 AND ($2::text IS NULL OR status = $2) AND ppid > $3 ORDER BY ppid LIMIT $4"
            ),
            &[
                &relying_party.as_str(),
                &status.map(PpidStatus::as_str),
                &after[0],
                &page.fetch(),
            ],
        )
        .await?;
    let items = rows.iter().map(view).collect::<Result<Vec<_>, _>>()?;
    Ok(page.page(items, |p| vec![p.ppid.clone()]))
}

//! Relying parties: kind, code, name, status (with the reason of the last suspension or
//! retirement) and the history of their public keys. Read by operators and auditors; a relying
//! party may read its own row.

use super::{
    checked, position, schema, stream_id, text_enum, Page, PageRequest, QueryError, EXPECT_ROW,
};
use crate::{ApplyError, Change, Param, Projection, Recorded};
use chrono::{DateTime, Utc};
use mykey_domain::relying_party::{RelyingParty, RelyingPartyEvent, RpKind};
use mykey_domain::Aggregate;
use mykey_domain::RelyingPartyId;
use mykey_schemas::AnyEvent;
use serde::Serialize;
use tokio_postgres::{GenericClient, Row};

#[derive(Debug, Clone, Copy)]
pub struct RelyingParties;

const MIGRATIONS: &[&str] = &[
    EXPECT_ROW,
    "CREATE TABLE relying_party (
        id            text PRIMARY KEY,
        code          text NOT NULL,
        name          text NOT NULL,
        kind          text NOT NULL,
        status        text NOT NULL CHECK (status IN ('active', 'suspended', 'retired')),
        status_reason text,
        key_version   bigint NOT NULL,
        registered_at timestamptz NOT NULL,
        changed_at    timestamptz NOT NULL,
        position      bigint NOT NULL
    );
    CREATE INDEX relying_party_by_kind ON relying_party (kind, id);
    CREATE TABLE relying_party_key (
        relying_party text NOT NULL,
        version       bigint NOT NULL,
        public_jwk    jsonb NOT NULL,
        added_at      timestamptz NOT NULL,
        added_by      text NOT NULL,
        PRIMARY KEY (relying_party, version)
    );",
];

text_enum!(
    /// What kind of system a relying party is.
    Kind {
        Municipality => "municipality",
        PaymentServiceProvider => "payment_service_provider",
        LibrarySystem => "library_system",
        PrivateBusiness => "private_business",
    }
);

impl From<RpKind> for Kind {
    fn from(k: RpKind) -> Kind {
        match k {
            RpKind::Municipality => Kind::Municipality,
            RpKind::PaymentServiceProvider => Kind::PaymentServiceProvider,
            RpKind::LibrarySystem => Kind::LibrarySystem,
            RpKind::PrivateBusiness => Kind::PrivateBusiness,
        }
    }
}

text_enum!(
    /// Whether a relying party may act.
    Status {
        Active => "active",
        Suspended => "suspended",
        Retired => "retired",
    }
);

impl Projection for RelyingParties {
    fn name(&self) -> &'static str {
        "relying_parties"
    }
    fn version(&self) -> u32 {
        1
    }
    fn migrations(&self) -> &'static [&'static str] {
        MIGRATIONS
    }
    fn categories(&self) -> &'static [&'static str] {
        &[RelyingParty::CATEGORY]
    }
    fn source(&self) -> &'static str {
        include_str!("relying_parties.rs")
    }

    fn apply(&self, e: Recorded<'_>, out: &mut Vec<Change>) -> Result<(), ApplyError> {
        use RelyingPartyEvent as E;
        let AnyEvent::RelyingParty(event) = e.event else {
            return Ok(());
        };
        let id = Param::Text(stream_id(&e));
        let at = Param::Time(e.envelope.recorded_at);
        let pos = Param::I64(position(&e)?);
        let actor = Param::Text(e.envelope.metadata.actor_id.clone());
        let status = |status: Status, reason: Option<&String>| {
            Change::new(
                checked!(
                    "UPDATE relying_party SET status = $2, status_reason = $3, changed_at = $4, \
                 position = $5 WHERE id = $1",
                    "relying_party"
                ),
                vec![
                    id.clone(),
                    status.as_str().into(),
                    reason.cloned().into(),
                    at.clone(),
                    pos.clone(),
                ],
            )
        };
        match event {
            E::Registered {
                id: rp,
                code,
                name,
                kind,
                public_jwk,
            } => {
                out.push(Change::new(
                    "INSERT INTO relying_party (id, code, name, kind, status, key_version, \
                     registered_at, changed_at, position) \
                     VALUES ($1, $2, $3, $4, 'active', 1, $5, $5, $6)",
                    vec![
                        rp.as_str().into(),
                        code.as_str().into(),
                        name.as_str().into(),
                        Kind::from(*kind).as_str().into(),
                        at.clone(),
                        pos,
                    ],
                ));
                out.push(Change::new(
                    "INSERT INTO relying_party_key (relying_party, version, public_jwk, added_at, \
                     added_by) VALUES ($1, 1, $2, $3, $4)",
                    vec![rp.as_str().into(), public_jwk.clone().into(), at, actor],
                ));
            }
            E::KeyRotated { public_jwk } => out.push(Change::new(
                "WITH rp AS (UPDATE relying_party SET key_version = key_version + 1, \
                 changed_at = $3, position = $4 WHERE id = $1 RETURNING id, key_version), \
                 added AS (INSERT INTO relying_party_key (relying_party, version, public_jwk, \
                 added_at, added_by) SELECT id, key_version, $2, $3, $5 FROM rp RETURNING 1) \
                 SELECT expect_row(count(*), 'relying_party') FROM added",
                vec![id, public_jwk.clone().into(), at, pos, actor],
            )),
            E::Suspended { reason } => out.push(status(Status::Suspended, Some(reason))),
            E::Resumed => out.push(status(Status::Active, None)),
            E::Retired { reason } => out.push(status(Status::Retired, Some(reason))),
        }
        Ok(())
    }
}

/// A relying party's current record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RelyingPartyView {
    pub id: String,
    pub code: String,
    pub name: String,
    pub kind: Kind,
    pub status: Status,
    /// Why it was last suspended or retired (None while active).
    pub status_reason: Option<String>,
    pub key_version: i64,
    pub registered_at: DateTime<Utc>,
    pub changed_at: DateTime<Utc>,
    pub position: i64,
}

/// One public key a relying party has had.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyView {
    pub version: i64,
    pub public_jwk: serde_json::Value,
    pub added_at: DateTime<Utc>,
    pub added_by: String,
}

const COLUMNS: &str = "id, code, name, kind, status, status_reason, key_version, registered_at, \
                       changed_at, position";

fn view(r: &Row) -> Result<RelyingPartyView, QueryError> {
    Ok(RelyingPartyView {
        id: r.try_get(0)?,
        code: r.try_get(1)?,
        name: r.try_get(2)?,
        kind: Kind::parse(r.try_get(3)?)?,
        status: Status::parse(r.try_get(4)?)?,
        status_reason: r.try_get(5)?,
        key_version: r.try_get(6)?,
        registered_at: r.try_get(7)?,
        changed_at: r.try_get(8)?,
        position: r.try_get(9)?,
    })
}

pub async fn relying_party(
    client: &impl GenericClient,
    schema_name: &str,
    id: &RelyingPartyId,
) -> Result<Option<RelyingPartyView>, QueryError> {
    let s = schema(schema_name)?;
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM {s}.relying_party WHERE id = $1"),
            &[&id.as_str()],
        )
        .await?;
    row.as_ref().map(view).transpose()
}

/// Relying parties by id, optionally of one kind and/or status.
pub async fn list(
    client: &impl GenericClient,
    schema_name: &str,
    kind: Option<Kind>,
    status: Option<Status>,
    page: &PageRequest,
) -> Result<Page<RelyingPartyView>, QueryError> {
    let s = schema(schema_name)?;
    let after = page.after(1)?;
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM {s}.relying_party WHERE ($1::text IS NULL OR kind = $1) \
                 AND ($2::text IS NULL OR status = $2) AND id > $3 ORDER BY id LIMIT $4"
            ),
            &[
                &kind.map(Kind::as_str),
                &status.map(Status::as_str),
                &after[0],
                &page.fetch(),
            ],
        )
        .await?;
    let items = rows.iter().map(view).collect::<Result<Vec<_>, _>>()?;
    Ok(page.page(items, |r| vec![r.id.clone()]))
}

/// Every key the relying party has had, oldest first (bounded by the number of rotations,
/// which operators perform by hand).
pub async fn key_history(
    client: &impl GenericClient,
    schema_name: &str,
    id: &RelyingPartyId,
) -> Result<Vec<KeyView>, QueryError> {
    let s = schema(schema_name)?;
    let rows = client
        .query(
            &format!(
                "SELECT version, public_jwk, added_at, added_by FROM {s}.relying_party_key \
                 WHERE relying_party = $1 ORDER BY version"
            ),
            &[&id.as_str()],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(KeyView {
                version: r.try_get(0)?,
                public_jwk: r.try_get(1)?,
                added_at: r.try_get(2)?,
                added_by: r.try_get(3)?,
            })
        })
        .collect()
}

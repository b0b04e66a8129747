//! The test-card register: every card, who holds it (vendor or municipality), when it was last
//! inventoried, which were lost — with each card's history. Readers: operators and auditors.

use super::{
    checked, position, schema, stream_id, text_enum, Page, PageRequest, QueryError, EXPECT_ROW,
};
use crate::{ApplyError, Change, Param, Projection, Recorded};
use chrono::{DateTime, Utc};
use mykey_domain::test_card::{BorrowerKind, TestCard, TestCardEvent};
use mykey_domain::Aggregate;
use mykey_domain::TestCardId;
use mykey_schemas::AnyEvent;
use serde::Serialize;
use serde_json::json;
use tokio_postgres::{GenericClient, Row};

#[derive(Debug, Clone, Copy)]
pub struct TestCards;

const MIGRATIONS: &[&str] = &[
    EXPECT_ROW,
    "CREATE TABLE test_card (
        id              text PRIMARY KEY,
        label           text NOT NULL,
        status          text NOT NULL CHECK (status IN ('in_stock', 'lent', 'lost')),
        borrower_kind   text CHECK (borrower_kind IN ('vendor', 'municipality')),
        borrower_name   text,
        lent_at         timestamptz,
        last_checked_at timestamptz,
        lost_note       text,
        registered_at   timestamptz NOT NULL,
        changed_at      timestamptz NOT NULL,
        position        bigint NOT NULL
    );
    CREATE TABLE test_card_event (
        card       text NOT NULL,
        position   bigint NOT NULL,
        at         timestamptz NOT NULL,
        event_type text NOT NULL,
        actor_id   text NOT NULL,
        detail     jsonb NOT NULL,
        PRIMARY KEY (card, position)
    );",
];

text_enum!(
    /// Where a test card is.
    CardStatus {
        InStock => "in_stock",
        Lent => "lent",
        Lost => "lost",
    }
);

text_enum!(
    /// Who borrowed a card.
    Borrower {
        Vendor => "vendor",
        Municipality => "municipality",
    }
);

impl Projection for TestCards {
    fn name(&self) -> &'static str {
        "test_cards"
    }
    fn version(&self) -> u32 {
        1
    }
    fn migrations(&self) -> &'static [&'static str] {
        MIGRATIONS
    }
    fn categories(&self) -> &'static [&'static str] {
        &[TestCard::CATEGORY]
    }
    fn source(&self) -> &'static str {
        include_str!("test_cards.rs")
    }

    fn apply(&self, e: Recorded<'_>, out: &mut Vec<Change>) -> Result<(), ApplyError> {
        use TestCardEvent as E;
        let AnyEvent::TestCard(event) = e.event else {
            return Ok(());
        };
        let id = Param::Text(stream_id(&e));
        let at = Param::Time(e.envelope.recorded_at);
        let pos = Param::I64(position(&e)?);
        let mut params = vec![id.clone(), at.clone(), pos.clone()];
        let (sql, detail) = match event {
            E::Registered { label, .. } => {
                params.push(label.as_str().into());
                (
                    "INSERT INTO test_card (id, registered_at, changed_at, position, label, status) \
                     VALUES ($1, $2, $2, $3, $4, 'in_stock')",
                    json!({ "label": label }),
                )
            }
            E::Lent { borrower } => {
                let kind = match borrower.kind {
                    BorrowerKind::Vendor => Borrower::Vendor,
                    BorrowerKind::Municipality => Borrower::Municipality,
                };
                params.push(kind.as_str().into());
                params.push(borrower.name.as_str().into());
                (
                    checked!(
                        "UPDATE test_card SET changed_at = $2, position = $3, status = 'lent', \
                     borrower_kind = $4, borrower_name = $5, lent_at = $2 WHERE id = $1",
                        "test_card"
                    ),
                    json!({ "borrower_kind": kind.as_str(), "borrower_name": borrower.name }),
                )
            }
            E::Returned => (
                checked!(
                    "UPDATE test_card SET changed_at = $2, position = $3, status = 'in_stock', \
                 borrower_kind = NULL, borrower_name = NULL, lent_at = NULL WHERE id = $1",
                    "test_card"
                ),
                json!({}),
            ),
            E::InventoryChecked { checked_at } => {
                params.push((*checked_at).into());
                (
                    checked!("UPDATE test_card SET changed_at = $2, position = $3, last_checked_at = $4 \
                     WHERE id = $1", "test_card"),
                    json!({ "checked_at": checked_at }),
                )
            }
            E::ReportedLost { note } => {
                params.push(note.as_str().into());
                (
                    checked!(
                        "UPDATE test_card SET changed_at = $2, position = $3, status = 'lost', \
                     lost_note = $4 WHERE id = $1",
                        "test_card"
                    ),
                    json!({ "note": note }),
                )
            }
        };
        out.push(Change::new(sql, params));
        out.push(Change::new(
            "INSERT INTO test_card_event (card, position, at, event_type, actor_id, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            vec![
                id,
                pos,
                at,
                e.envelope.event_type.as_str().into(),
                e.envelope.metadata.actor_id.as_str().into(),
                detail.into(),
            ],
        ));
        Ok(())
    }
}

/// A card in the register.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestCardView {
    pub id: String,
    pub label: String,
    pub status: CardStatus,
    pub borrower_kind: Option<Borrower>,
    pub borrower_name: Option<String>,
    pub lent_at: Option<DateTime<Utc>>,
    pub last_checked_at: Option<DateTime<Utc>>,
    pub lost_note: Option<String>,
    pub registered_at: DateTime<Utc>,
    pub changed_at: DateTime<Utc>,
    pub position: i64,
}

const COLUMNS: &str = "id, label, status, borrower_kind, borrower_name, lent_at, \
     last_checked_at, lost_note, registered_at, changed_at, position";

fn view(r: &Row) -> Result<TestCardView, QueryError> {
    Ok(TestCardView {
        id: r.try_get(0)?,
        label: r.try_get(1)?,
        status: CardStatus::parse(r.try_get(2)?)?,
        borrower_kind: r
            .try_get::<_, Option<&str>>(3)?
            .map(Borrower::parse)
            .transpose()?,
        borrower_name: r.try_get(4)?,
        lent_at: r.try_get(5)?,
        last_checked_at: r.try_get(6)?,
        lost_note: r.try_get(7)?,
        registered_at: r.try_get(8)?,
        changed_at: r.try_get(9)?,
        position: r.try_get(10)?,
    })
}

pub async fn card(
    client: &impl GenericClient,
    schema_name: &str,
    id: &TestCardId,
) -> Result<Option<TestCardView>, QueryError> {
    let s = schema(schema_name)?;
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM {s}.test_card WHERE id = $1"),
            &[&id.as_str()],
        )
        .await?;
    row.as_ref().map(view).transpose()
}

/// The register by card id, optionally of one status (e.g. every card currently lent).
pub async fn list(
    client: &impl GenericClient,
    schema_name: &str,
    status: Option<CardStatus>,
    page: &PageRequest,
) -> Result<Page<TestCardView>, QueryError> {
    let s = schema(schema_name)?;
    let after = page.after(1)?;
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM {s}.test_card WHERE ($1::text IS NULL OR status = $1) \
                 AND id > $2 ORDER BY id LIMIT $3"
            ),
            &[&status.map(CardStatus::as_str), &after[0], &page.fetch()],
        )
        .await?;
    let items = rows.iter().map(view).collect::<Result<Vec<_>, _>>()?;
    Ok(page.page(items, |c| vec![c.id.clone()]))
}

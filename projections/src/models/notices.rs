//! Maintenance notices, current and past: window, affected services, messages in Japanese and
//! English, revision count, cancellation. Readable by everyone who may call the platform
//! (municipal systems, citizens' screens, the iCalendar feed).

use super::{checked, position, schema, stream_id, Page, PageRequest, QueryError, EXPECT_ROW};
use crate::{ApplyError, Change, Param, Projection, Recorded};
use chrono::{DateTime, Utc};
use mykey_domain::maintenance::{Maintenance, MaintenanceEvent, NoticeDetails};
use mykey_domain::Aggregate;
use mykey_domain::NoticeId;
use mykey_schemas::AnyEvent;
use serde::Serialize;
use tokio_postgres::{GenericClient, Row};

#[derive(Debug, Clone, Copy)]
pub struct Notices;

const MIGRATIONS: &[&str] = &[
    EXPECT_ROW,
    "CREATE TABLE notice (
        id                text PRIMARY KEY,
        starts_at         timestamptz NOT NULL,
        ends_at           timestamptz NOT NULL,
        affected_services jsonb NOT NULL,
        message_ja        text NOT NULL,
        message_en        text NOT NULL,
        revision          bigint NOT NULL,
        cancelled         boolean NOT NULL DEFAULT false,
        cancel_reason     text,
        scheduled_at      timestamptz NOT NULL,
        changed_at        timestamptz NOT NULL,
        position          bigint NOT NULL
    );
    CREATE INDEX notice_by_end ON notice (ends_at, id);",
];

fn details(d: &NoticeDetails) -> Vec<Param> {
    vec![
        d.start.into(),
        d.end.into(),
        serde_json::json!(d.affected_services).into(),
        d.message_ja.as_str().into(),
        d.message_en.as_str().into(),
    ]
}

impl Projection for Notices {
    fn name(&self) -> &'static str {
        "notices"
    }
    fn version(&self) -> u32 {
        1
    }
    fn migrations(&self) -> &'static [&'static str] {
        MIGRATIONS
    }
    fn categories(&self) -> &'static [&'static str] {
        &[Maintenance::CATEGORY]
    }
    fn source(&self) -> &'static str {
        include_str!("notices.rs")
    }

    fn apply(&self, e: Recorded<'_>, out: &mut Vec<Change>) -> Result<(), ApplyError> {
        let AnyEvent::Maintenance(event) = e.event else {
            return Ok(());
        };
        let mut params = vec![
            Param::Text(stream_id(&e)),
            Param::Time(e.envelope.recorded_at),
            Param::I64(position(&e)?),
        ];
        let sql = match event {
            MaintenanceEvent::Scheduled { details: d, .. } => {
                params.extend(details(d));
                "INSERT INTO notice (id, scheduled_at, changed_at, position, starts_at, ends_at, \
                 affected_services, message_ja, message_en, revision) \
                 VALUES ($1, $2, $2, $3, $4, $5, $6, $7, $8, 1)"
            }
            MaintenanceEvent::Updated { details: d } => {
                params.extend(details(d));
                checked!("UPDATE notice SET changed_at = $2, position = $3, starts_at = $4, ends_at = $5, \
                 affected_services = $6, message_ja = $7, message_en = $8, \
                 revision = revision + 1 WHERE id = $1", "notice")
            }
            MaintenanceEvent::Cancelled { reason } => {
                params.push(reason.as_str().into());
                checked!(
                    "UPDATE notice SET changed_at = $2, position = $3, cancelled = true, \
                 cancel_reason = $4 WHERE id = $1",
                    "notice"
                )
            }
        };
        out.push(Change::new(sql, params));
        Ok(())
    }
}

/// A maintenance notice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoticeView {
    pub id: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub affected_services: Vec<String>,
    pub message_ja: String,
    pub message_en: String,
    /// 1 when scheduled, +1 per update (the iCalendar SEQUENCE).
    pub revision: i64,
    pub cancelled: bool,
    pub cancel_reason: Option<String>,
    pub scheduled_at: DateTime<Utc>,
    pub changed_at: DateTime<Utc>,
    pub position: i64,
}

const COLUMNS: &str = "id, starts_at, ends_at, affected_services, message_ja, message_en, \
     revision, cancelled, cancel_reason, scheduled_at, changed_at, position";

fn view(r: &Row) -> Result<NoticeView, QueryError> {
    let services: serde_json::Value = r.try_get(3)?;
    Ok(NoticeView {
        id: r.try_get(0)?,
        starts_at: r.try_get(1)?,
        ends_at: r.try_get(2)?,
        affected_services: serde_json::from_value(services)
            .map_err(|e| QueryError::Corrupt(format!("affected_services: {e}")))?,
        message_ja: r.try_get(4)?,
        message_en: r.try_get(5)?,
        revision: r.try_get(6)?,
        cancelled: r.try_get(7)?,
        cancel_reason: r.try_get(8)?,
        scheduled_at: r.try_get(9)?,
        changed_at: r.try_get(10)?,
        position: r.try_get(11)?,
    })
}

pub async fn notice(
    client: &impl GenericClient,
    schema_name: &str,
    id: &NoticeId,
) -> Result<Option<NoticeView>, QueryError> {
    let s = schema(schema_name)?;
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM {s}.notice WHERE id = $1"),
            &[&id.as_str()],
        )
        .await?;
    row.as_ref().map(view).transpose()
}

/// Which notices to list, relative to an instant the caller passes (the query reads no clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Not cancelled and not yet over at the instant (ongoing or upcoming).
    Current(DateTime<Utc>),
    /// Over at the instant, or cancelled.
    Past(DateTime<Utc>),
    All,
}

/// Notices ordered by id.
pub async fn list(
    client: &impl GenericClient,
    schema_name: &str,
    when: When,
    page: &PageRequest,
) -> Result<Page<NoticeView>, QueryError> {
    let s = schema(schema_name)?;
    let after = page.after(1)?;
    let (mode, at) = match when {
        When::Current(t) => ("current", Some(t)),
        When::Past(t) => ("past", Some(t)),
        When::All => ("all", None),
    };
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM {s}.notice WHERE \
                 ($1 = 'all' OR ($1 = 'current' AND NOT cancelled AND ends_at > $2) \
                  OR ($1 = 'past' AND (cancelled OR ends_at <= $2))) \
                 AND id > $3 ORDER BY id LIMIT $4"
            ),
            &[&mode, &at, &after[0], &page.fetch()],
        )
        .await?;
    let items = rows.iter().map(view).collect::<Result<Vec<_>, _>>()?;
    Ok(page.page(items, |n| vec![n.id.clone()]))
}

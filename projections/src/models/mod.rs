//! Every read model of the platform, one module each, and what their queries share: typed
//! errors, bounded keyset pages and opaque cursors, and the Asia/Tokyo calendar day.
//!
//! Each module holds one [`Projection`] (its tables, a pure `apply`) and the typed query
//! functions the HTTP doors call. Queries take the schema the runner currently serves the
//! projection from (it changes when a rebuild switches over), so they qualify table names with
//! it; `apply` never does (the runner sets `search_path`).

pub mod counters;
pub mod login_identity;
pub mod notices;
pub mod patches;
pub mod ppids;
pub mod programs;
pub mod relying_parties;
pub mod subjects;
pub mod test_cards;
#[cfg(feature = "workload")]
pub mod workload;

use crate::{ApplyError, Change, KafkaMode, Projection, Recorded};
use base64::Engine;
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use mykey_domain::application::ReviewOutcome;
use serde::Serialize;
use std::sync::Arc;

/// Every read model, in a stable order (the runner starts them all; generic tests iterate it).
///
/// Which of them the Kafka projector may run ([`KafkaMode`], see ARCHITECTURE.md "Kafka
/// projector") is declared here, with the reason:
/// - `ppids`: a `ppid` row changes only by its own PPID stream's events;
/// - `subjects`: `subject` and `held_ppid` rows by their subject stream, `certificate` rows by
///   their certificate stream (a renewal writes `renewed_to` on the old certificate's row from
///   the old stream and `renewed_from` on the new one's from the new stream);
/// - `relying_parties`, `notices`, `test_cards`: one stream per row (and its history rows);
/// - `programs`: `program` rows by the program stream, `application` and `application_event`
///   by the application stream (the program is a value in the application's own event);
/// - `patches`: `patch` and `patch_step` by the patch stream; `patch_effect` rows are inserts
///   keyed by position from other streams, whose order does not matter;
/// - `daily_counters` stays on the global order: every row sums events of many streams
///   (one counter per day, metric and key), so projector processes sharing partitions would
///   all queue on the same few rows; its report totals are read against log positions.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        per_stream(ppids::Ppids),
        per_stream(subjects::Subjects),
        per_stream(relying_parties::RelyingParties),
        per_stream(programs::Programs),
        per_stream(patches::Patches),
        per_stream(notices::Notices),
        per_stream(test_cards::TestCards),
        Arc::new(counters::DailyCounters),
        Arc::new(login_identity::LoginIdentity),
    ]
}

/// `p`, marked as needing only each stream's order ([`KafkaMode::PerStream`]).
pub fn per_stream<P: Projection>(p: P) -> Arc<dyn Projection> {
    Arc::new(PerStream(p))
}

/// A projection that needs only each stream's order; everything else is `P`'s own (the
/// fingerprint of its source is unchanged).
#[derive(Debug, Clone, Copy)]
pub struct PerStream<P>(pub P);

impl<P: Projection> Projection for PerStream<P> {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn version(&self) -> u32 {
        self.0.version()
    }
    fn migrations(&self) -> &'static [&'static str] {
        self.0.migrations()
    }
    fn apply(&self, event: Recorded<'_>, out: &mut Vec<Change>) -> Result<(), ApplyError> {
        self.0.apply(event, out)
    }
    fn categories(&self) -> &'static [&'static str] {
        self.0.categories()
    }
    fn source(&self) -> &'static str {
        self.0.source()
    }
    fn kafka_mode(&self) -> KafkaMode {
        KafkaMode::PerStream
    }
}

/// Page size when the caller names none (see the API rules: default 50, maximum 500).
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page a list query returns.
pub const MAX_LIMIT: u32 = 500;
/// Longest cursor accepted: a cursor holds one or two keys, each at most a few hundred bytes.
pub const MAX_CURSOR_LEN: usize = 1_024;

/// Japan Standard Time. Japan has observed no daylight saving time since 1951, so a fixed
/// +09:00 offset gives exactly the Asia/Tokyo calendar day without a time-zone database.
pub const TOKYO_OFFSET_SECS: i32 = 9 * 3600;

/// The Asia/Tokyo calendar day of an instant (fixed +09:00, exact: see [`TOKYO_OFFSET_SECS`]).
pub fn tokyo_day(at: DateTime<Utc>) -> NaiveDate {
    (at + Duration::seconds(i64::from(TOKYO_OFFSET_SECS))).date_naive()
}

/// The UTC instant at which an Asia/Tokyo calendar day starts.
pub fn tokyo_day_start(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(NaiveTime::MIN).and_utc() - Duration::seconds(i64::from(TOKYO_OFFSET_SECS))
}

/// Why a read-model query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("limit must be 1..={MAX_LIMIT}")]
    BadLimit,
    #[error("the cursor is not one this list issued")]
    BadCursor,
    #[error("{0} is not a projection schema name")]
    BadSchema(String),
    #[error("the date range is invalid or longer than {max_days} days")]
    BadRange { max_days: i64 },
    #[error("a read-model row holds a value this code does not know: {0}")]
    Corrupt(String),
    #[error("read model unavailable: {0}")]
    Db(#[from] tokio_postgres::Error),
}

impl QueryError {
    /// Stable problem code.
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::BadLimit => "INVALID_LIMIT",
            QueryError::BadCursor => "INVALID_CURSOR",
            QueryError::BadSchema(_) => "INVALID_SCHEMA",
            QueryError::BadRange { .. } => "INVALID_RANGE",
            QueryError::Corrupt(_) => "READ_MODEL_CORRUPT",
            QueryError::Db(_) => "READ_MODEL_UNAVAILABLE",
        }
    }
}

/// One page of a list and the cursor of the next (None on the last page).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Where a list starts and how much it returns, checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PageRequest {
    limit: u32,
    after: Option<Vec<String>>,
}

impl PageRequest {
    /// The first page of `limit` items ([`DEFAULT_LIMIT`] when None).
    pub fn first(limit: Option<u32>) -> Result<PageRequest, QueryError> {
        PageRequest::new(limit, None)
    }

    /// `limit` items after the opaque `cursor` of a previous page.
    pub fn new(limit: Option<u32>, cursor: Option<&str>) -> Result<PageRequest, QueryError> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(QueryError::BadLimit);
        }
        let after = cursor.map(decode_cursor).transpose()?;
        Ok(PageRequest { limit, after })
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// One more than the page, to know whether a next page exists.
    pub(crate) fn fetch(&self) -> i64 {
        i64::from(self.limit) + 1
    }

    /// The keys of the cursor (`n` of them), or empty strings for the first page (every key
    /// column sorts after the empty string, and the queries compare with `>`).
    pub(crate) fn after(&self, n: usize) -> Result<Vec<String>, QueryError> {
        match &self.after {
            None => Ok(vec![String::new(); n]),
            Some(keys) if keys.len() == n => Ok(keys.clone()),
            Some(_) => Err(QueryError::BadCursor),
        }
    }

    /// Cuts the fetched rows to the page and makes the next cursor from the last item's keys.
    pub(crate) fn page<T>(&self, mut rows: Vec<T>, keys: impl Fn(&T) -> Vec<String>) -> Page<T> {
        let limit = self.limit as usize;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|r| encode_cursor(&keys(r)))
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }
}

fn encode_cursor(keys: &[String]) -> String {
    let json = serde_json::to_vec(keys).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_cursor(raw: &str) -> Result<Vec<String>, QueryError> {
    if raw.len() > MAX_CURSOR_LEN {
        return Err(QueryError::BadCursor);
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .map_err(|_| QueryError::BadCursor)?;
    let keys: Vec<String> = serde_json::from_slice(&bytes).map_err(|_| QueryError::BadCursor)?;
    if keys.is_empty() {
        return Err(QueryError::BadCursor);
    }
    Ok(keys)
}

/// Checks a schema name the runner gave (`[a-z][a-z0-9_]*`) before it is spliced into SQL.
pub(crate) fn schema(name: &str) -> Result<&str, QueryError> {
    let ok = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(name)
    } else {
        Err(QueryError::BadSchema(name.to_owned()))
    }
}

/// The id part of the event's stream (`<category>-<id>`): what identifies the row for events
/// that do not repeat their aggregate's id.
pub(crate) fn stream_id(e: &Recorded<'_>) -> String {
    e.envelope.stream_id.id().to_owned()
}

/// The event's global position as a column value.
pub(crate) fn position(e: &Recorded<'_>) -> Result<i64, ApplyError> {
    int(e.envelope.global_position)
}

/// A count or point amount as a `bigint`.
pub(crate) fn int(v: u64) -> Result<i64, ApplyError> {
    i64::try_from(v).map_err(|_| ApplyError::Inconsistent(format!("{v} does not fit a bigint")))
}

/// A review outcome as the read models show it (history rows, patch actions).
pub(crate) fn outcome_json(o: &ReviewOutcome) -> serde_json::Value {
    match o {
        ReviewOutcome::Approved { points } => {
            serde_json::json!({ "outcome": "approved", "points": points })
        }
        ReviewOutcome::Rejected { reason } => {
            serde_json::json!({ "outcome": "rejected", "reason": reason })
        }
    }
}

/// DDL of `expect_row`, part of every projection's migrations: fails the statement (and so the
/// runner's batch, which stops at that event and reports it) when a change meant for exactly one
/// existing row found none — an event the read model cannot place (e.g. a revocation of a PPID
/// it never saw) must stop the projection visibly, not be dropped.
pub(crate) const EXPECT_ROW: &str = "CREATE FUNCTION expect_row(changed bigint, what text) \
     RETURNS void LANGUAGE plpgsql AS $$ BEGIN IF changed <> 1 THEN \
     RAISE EXCEPTION 'read model inconsistent: % rows of % changed, expected 1', changed, what \
     USING ERRCODE = 'P0001'; END IF; END $$";

/// Wraps an `UPDATE`/`DELETE` literal so that it fails unless it changed exactly one row of
/// `table` (see [`EXPECT_ROW`]).
macro_rules! checked {
    ($sql:literal, $table:literal) => {
        concat!(
            "WITH changed AS (",
            $sql,
            " RETURNING 1) SELECT expect_row(count(*), '",
            $table,
            "') FROM changed"
        )
    };
}
pub(crate) use checked;

/// Declares a text-valued status column's values once: `as_str` for writing, `parse` for
/// reading, serialised as the same snake_case text.
macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }

            pub fn parse(s: &str) -> Result<$name, $crate::models::QueryError> {
                match s {
                    $($text => Ok($name::$variant),)*
                    other => Err($crate::models::QueryError::Corrupt(format!(
                        "{} {other:?}", stringify!($name)
                    ))),
                }
            }
        }
    };
}
pub(crate) use text_enum;

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_tokyo_day_starts_at_15_utc_the_day_before() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap_or_default();
        let start = tokyo_day_start(day);
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 11, 29, 15, 0, 0).unwrap());
        assert_eq!(tokyo_day(start), day);
        assert_eq!(
            tokyo_day(start - chrono::Duration::microseconds(1)),
            day.pred_opt().unwrap_or_default()
        );
    }

    #[test]
    fn limits_and_cursors_are_checked() {
        assert!(matches!(
            PageRequest::first(Some(0)),
            Err(QueryError::BadLimit)
        ));
        assert!(matches!(
            PageRequest::first(Some(MAX_LIMIT + 1)),
            Err(QueryError::BadLimit)
        ));
        assert_eq!(
            PageRequest::first(None).map(|p| p.limit()).ok(),
            Some(DEFAULT_LIMIT)
        );
        for bad in ["%%%", "e30", &"A".repeat(MAX_CURSOR_LEN + 1)] {
            assert!(
                matches!(
                    PageRequest::new(None, Some(bad)),
                    Err(QueryError::BadCursor)
                ),
                "{bad}"
            );
        }
        let p = PageRequest::first(Some(2)).unwrap();
        let page = p.page(vec!["a", "b", "c"], |s| vec![s.to_string()]);
        assert_eq!(page.items, vec!["a", "b"]);
        let next = PageRequest::new(Some(2), page.next_cursor.as_deref()).unwrap();
        assert_eq!(next.after(1).unwrap(), vec!["b".to_owned()]);
        assert!(matches!(next.after(2), Err(QueryError::BadCursor)));
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(schema("ppids_v1").is_ok());
        for bad in ["", "1a", "a;drop", "A", "a.b"] {
            assert!(schema(bad).is_err(), "{bad}");
        }
    }
}

//! The monthly operations report for one calendar month (Asia/Tokyo): availability and
//! incidents from the recorded health probes ([`super::health`]), data patches applied (from
//! `daily_counters`), and the freshness of each CA's newest CRL (from `auth_crl`, where the
//! login side stores the CRLs it loaded).
//!
//! A month not yet over is reported up to `now`: minutes still to come are neither up nor down.

use super::health;
use super::{Kind, Report, ReportError, Row, Sources, Value, TIME_ZONE};
use crate::models::counters::{self, Metric};
use crate::models::tokyo_day_start;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use tokio_postgres::GenericClient;

/// First and last day of `day`'s month.
pub fn month_of(day: NaiveDate) -> (NaiveDate, NaiveDate) {
    let first = day.with_day(1).unwrap_or(day);
    let next = if first.month() == 12 {
        NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
    }
    .unwrap_or(first);
    (first, next - Duration::days(1))
}

/// An instant as Asia/Tokyo wall-clock time with its offset (RFC 3339).
fn tokyo_time(t: DateTime<Utc>) -> String {
    let local = t + Duration::seconds(i64::from(crate::models::TOKYO_OFFSET_SECS));
    local
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S+09:00")
        .to_string()
}

pub async fn monthly(
    client: &impl GenericClient,
    sources: &Sources,
    day: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Report, ReportError> {
    let (first, last) = month_of(day);
    let start = tokyo_day_start(first);
    let end = (tokyo_day_start(last) + Duration::days(1))
        .min(now)
        .max(start);
    let mut rows = Vec::new();

    let a = health::availability(client, start, end).await?;
    rows.push(Row::new(
        "availability",
        "",
        "percent",
        Value::Percent(a.percent()),
    ));
    for (detail, minutes) in [
        ("up", a.up_minutes),
        ("failed", a.failed_minutes),
        ("missing", a.missing_minutes),
    ] {
        rows.push(Row::new("minutes", "", detail, Value::Count(minutes)));
    }
    rows.push(Row::new(
        "incidents",
        "",
        "",
        Value::Count(i64::try_from(a.incidents.len()).unwrap_or(i64::MAX)),
    ));
    for (from, to) in &a.incidents {
        rows.push(Row::new(
            "incident_minutes",
            &tokyo_time(*from),
            &tokyo_time(*to),
            Value::Count((*to - *from).num_minutes()),
        ));
    }

    let patches: i64 = counters::counters(client, &sources.counters, first, last)
        .await?
        .iter()
        .filter(|c| c.metric == Metric::PatchesApplied)
        .map(|c| c.value)
        .sum();
    rows.push(Row::new(
        Metric::PatchesApplied.as_str(),
        "",
        "",
        Value::Count(patches),
    ));

    // Each CA's newest CRL loaded before the end: its age, and whether it was past its
    // nextUpdate (stale) at the end of the period.
    let crls = client
        .query(
            "SELECT DISTINCT ON (ca_key_id) ca_key_id, this_update, next_update FROM auth_crl \
             WHERE loaded_at < $1 ORDER BY ca_key_id, this_update DESC",
            &[&end],
        )
        .await?;
    for r in crls {
        let ca: String = r.try_get(0)?;
        let this_update: DateTime<Utc> = r.try_get(1)?;
        let next_update: DateTime<Utc> = r.try_get(2)?;
        let fresh = if next_update > end { "fresh" } else { "stale" };
        rows.push(Row::new(
            "crl_age_hours",
            &ca,
            fresh,
            Value::Count((end - this_update).num_hours()),
        ));
    }
    Ok(Report {
        kind: Kind::Monthly,
        title: "Operations: availability, incidents, patches, CRLs".into(),
        from: first,
        to: last,
        time_zone: TIME_ZONE,
        rows,
    })
}

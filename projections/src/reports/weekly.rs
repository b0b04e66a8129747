//! The weekly point-program report, Monday to Sunday (Asia/Tokyo): applications by program and
//! the status they reached that week, and points approved (net of corrections), granted and
//! owed back per program — all from the `daily_counters` read model.

use super::{Kind, Report, ReportError, Row, Sources, Value, TIME_ZONE};
use crate::models::counters::{self, Metric};
use chrono::{Datelike, Duration, NaiveDate};
use std::collections::BTreeMap;
use tokio_postgres::GenericClient;

/// The metrics of this report, in the order they are listed.
const METRICS: [Metric; 4] = [
    Metric::Applications,
    Metric::PointsApproved,
    Metric::PointsGranted,
    Metric::PointsOwedBack,
];

/// The Monday of `day`'s week.
pub fn week_start(day: NaiveDate) -> NaiveDate {
    day - Duration::days(i64::from(day.weekday().num_days_from_monday()))
}

pub async fn weekly(
    client: &impl GenericClient,
    sources: &Sources,
    day: NaiveDate,
) -> Result<Report, ReportError> {
    let from = week_start(day);
    let to = from + Duration::days(6);
    let mut sums: BTreeMap<(usize, String, String), i64> = BTreeMap::new();
    for c in counters::counters(client, &sources.counters, from, to).await? {
        if let Some(order) = METRICS.iter().position(|m| *m == c.metric) {
            *sums.entry((order, c.key, c.status)).or_default() += c.value;
        }
    }
    let rows = sums
        .into_iter()
        .map(|((order, key, status), v)| {
            Row::new(METRICS[order].as_str(), &key, &status, Value::Count(v))
        })
        .collect();
    Ok(Report {
        kind: Kind::Weekly,
        title: "Point programs: applications and points".into(),
        from,
        to,
        time_zone: TIME_ZONE,
        rows,
    })
}

//! The daily citizen-card report for one Asia/Tokyo day: PPIDs issued per relying party (from
//! the `daily_counters` read model) and logins per relying party and outcome.
//!
//! Logins are not events of the log (a login that finds an existing PPID appends nothing), so
//! they are counted here from the login audit records, `auth_audit`, written for every attempt
//! by the login endpoints — not from a read model.

use super::{Kind, Report, ReportError, Row, Sources, Value, TIME_ZONE};
use crate::models::counters::{self, Metric};
use crate::models::{tokyo_day_start, QueryError};
use chrono::{Duration, NaiveDate};
use tokio_postgres::GenericClient;

/// The audited login endpoints and the metric each one's attempts are counted under. The
/// endpoint names are those the login code writes to `auth_audit.endpoint`.
pub const LOGIN_ENDPOINTS: [(&str, &str); 2] = [
    ("auth.login", "pin_logins"),
    ("auth.kazashi", "kazashi_logins"),
];

pub async fn daily(
    client: &impl GenericClient,
    sources: &Sources,
    day: NaiveDate,
) -> Result<Report, ReportError> {
    let mut rows: Vec<Row> = counters::counters(client, &sources.counters, day, day)
        .await?
        .into_iter()
        .filter(|c| c.metric == Metric::PpidsIssued)
        .map(|c| {
            Row::new(
                Metric::PpidsIssued.as_str(),
                &c.key,
                "",
                Value::Count(c.value),
            )
        })
        .collect();
    let (from, to) = (
        tokyo_day_start(day),
        tokyo_day_start(day) + Duration::days(1),
    );
    let endpoints: Vec<&str> = LOGIN_ENDPOINTS.iter().map(|(e, _)| *e).collect();
    let logins = client
        .query(
            "SELECT endpoint, coalesce(rp_id, ''), outcome, count(*) FROM auth_audit \
             WHERE endpoint = ANY($1) AND occurred_at >= $2 AND occurred_at < $3 \
             GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            &[&endpoints, &from, &to],
        )
        .await?;
    for r in logins {
        let endpoint: &str = r.try_get(0)?;
        let metric = LOGIN_ENDPOINTS
            .iter()
            .find(|(e, _)| *e == endpoint)
            .map(|(_, m)| *m)
            .ok_or_else(|| QueryError::Corrupt(format!("endpoint {endpoint}")))?;
        rows.push(Row::new(
            metric,
            r.try_get(1)?,
            r.try_get(2)?,
            Value::Count(r.try_get(3)?),
        ));
    }
    Ok(Report {
        kind: Kind::Daily,
        title: "Citizen cards: PPIDs issued and logins".into(),
        from: day,
        to: day,
        time_zone: TIME_ZONE,
        rows,
    })
}

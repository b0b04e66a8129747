//! Daily counters per Asia/Tokyo calendar day, from each event's `recorded_at`: PPIDs issued
//! per relying party, applications per program entering each status, points approved,
//! granted and owed back per program, data patches applied.
//!
//! Day boundaries: Asia/Tokyo is a fixed +09:00 (Japan has no daylight saving time), so the day
//! is computed exactly in Rust ([`super::tokyo_day`]) and `apply` stays pure.
//!
//! Login counts per RP and outcome are *not* here: logins are not events of the log. The
//! reports count them from the login audit records (`auth_audit`), see `reports::daily`.
//!
//! Readers: operators, auditors, the reports.

use super::programs::ApplicationStatus;
use super::{int, schema, stream_id, text_enum, tokyo_day, QueryError, EXPECT_ROW};
use crate::{ApplyError, Change, Param, Projection, Recorded};
use chrono::NaiveDate;
use mykey_domain::application::{Application, ApplicationEvent, ReviewOutcome};
use mykey_domain::patch::{Patch, PatchEvent};
use mykey_domain::ppid::{PpidAggregate, PpidEvent};
use mykey_domain::Aggregate;
use mykey_schemas::AnyEvent;
use serde::Serialize;
use tokio_postgres::GenericClient;

#[derive(Debug, Clone, Copy)]
pub struct DailyCounters;

const MIGRATIONS: &[&str] = &[
    EXPECT_ROW,
    "CREATE TABLE daily_counter (
        day    date NOT NULL,
        metric text NOT NULL,
        key    text NOT NULL,
        status text NOT NULL,
        value  bigint NOT NULL,
        PRIMARY KEY (day, metric, key, status)
    );
    CREATE TABLE application_program (
        application text PRIMARY KEY,
        program     text NOT NULL
    );",
];

text_enum!(
    /// What a counter counts. `key` is the relying party (PPIDs), the program (applications
    /// and points) or empty (patches); `status` is set only for `applications`.
    Metric {
        PpidsIssued => "ppids_issued",
        Applications => "applications",
        PointsApproved => "points_approved",
        PointsGranted => "points_granted",
        PointsOwedBack => "points_owed_back",
        PatchesApplied => "patches_applied",
    }
);

/// Adds to a counter whose key is given.
const ADD: &str = "INSERT INTO daily_counter (day, metric, key, status, value) \
     VALUES ($1::text::date, $2, $3, $4, $5) ON CONFLICT (day, metric, key, status) \
     DO UPDATE SET value = daily_counter.value + EXCLUDED.value";

/// Adds to a counter keyed by the application's program (application events after the
/// submission do not repeat the program, and the id cannot be split: program ids may hold
/// the separator).
const ADD_FOR_APPLICATION: &str = "WITH added AS (\
     INSERT INTO daily_counter (day, metric, key, status, value) \
     SELECT $1::text::date, $2, program, $3, $4 FROM application_program WHERE application = $5 \
     ON CONFLICT (day, metric, key, status) \
     DO UPDATE SET value = daily_counter.value + EXCLUDED.value RETURNING 1) \
     SELECT expect_row(count(*), 'application_program') FROM added";

fn approved_points(o: &ReviewOutcome) -> u64 {
    match o {
        ReviewOutcome::Approved { points } => *points,
        ReviewOutcome::Rejected { .. } => 0,
    }
}

fn outcome_status(o: &ReviewOutcome) -> &'static str {
    match o {
        ReviewOutcome::Approved { .. } => ApplicationStatus::Approved.as_str(),
        ReviewOutcome::Rejected { .. } => ApplicationStatus::Rejected.as_str(),
    }
}

impl Projection for DailyCounters {
    fn name(&self) -> &'static str {
        "daily_counters"
    }
    fn version(&self) -> u32 {
        // 2: matches ReversalPaid (counts nothing; the rows are those of version 1).
        // 3: matches GrantFailed (counts nothing either: the application still awaits its
        //    grant, which is what the reports count).
        3
    }
    fn migrations(&self) -> &'static [&'static str] {
        MIGRATIONS
    }
    fn categories(&self) -> &'static [&'static str] {
        &[
            PpidAggregate::CATEGORY,
            Application::CATEGORY,
            Patch::CATEGORY,
        ]
    }
    fn source(&self) -> &'static str {
        include_str!("counters.rs")
    }

    fn apply(&self, e: Recorded<'_>, out: &mut Vec<Change>) -> Result<(), ApplyError> {
        let day = Param::Text(tokyo_day(e.envelope.recorded_at).to_string());
        let add = |metric: Metric, key: &str, status: &str, value: i64| {
            Change::new(
                ADD,
                vec![
                    day.clone(),
                    metric.as_str().into(),
                    key.into(),
                    status.into(),
                    value.into(),
                ],
            )
        };
        let app = stream_id(&e);
        let add_app = |metric: Metric, status: &str, value: i64| {
            Change::new(
                ADD_FOR_APPLICATION,
                vec![
                    day.clone(),
                    metric.as_str().into(),
                    status.into(),
                    value.into(),
                    app.as_str().into(),
                ],
            )
        };
        match e.event {
            AnyEvent::Ppid(PpidEvent::Issued { relying_party, .. }) => {
                out.push(add(Metric::PpidsIssued, relying_party.as_str(), "", 1));
            }
            AnyEvent::Patch(PatchEvent::Applied { .. }) => {
                out.push(add(Metric::PatchesApplied, "", "", 1));
            }
            AnyEvent::Application(a) => match a {
                ApplicationEvent::Submitted { program, .. } => {
                    out.push(Change::new(
                        "INSERT INTO application_program (application, program) VALUES ($1, $2)",
                        vec![app.as_str().into(), program.as_str().into()],
                    ));
                    out.push(add(
                        Metric::Applications,
                        program.as_str(),
                        ApplicationStatus::Submitted.as_str(),
                        1,
                    ));
                }
                ApplicationEvent::ReviewRecorded { outcome } => {
                    out.push(add_app(Metric::Applications, outcome_status(outcome), 1));
                    let points = int(approved_points(outcome))?;
                    if points > 0 {
                        out.push(add_app(Metric::PointsApproved, "", points));
                    }
                }
                ApplicationEvent::PointsGranted { points, .. } => {
                    out.push(add_app(
                        Metric::Applications,
                        ApplicationStatus::Granted.as_str(),
                        1,
                    ));
                    out.push(add_app(Metric::PointsGranted, "", int(*points)?));
                }
                ApplicationEvent::ReviewCorrected {
                    previous,
                    outcome,
                    reversal_owed_points,
                    ..
                } => {
                    out.push(add_app(Metric::Applications, outcome_status(outcome), 1));
                    // Net change of approved points: a correction may lower it (negative).
                    let delta = int(approved_points(outcome))? - int(approved_points(previous))?;
                    if delta != 0 {
                        out.push(add_app(Metric::PointsApproved, "", delta));
                    }
                    if *reversal_owed_points > 0 {
                        out.push(add_app(
                            Metric::PointsOwedBack,
                            "",
                            int(*reversal_owed_points)?,
                        ));
                    }
                }
                // A reversal paid settles owed points; the daily counters count what is owed.
                ApplicationEvent::PaymentServiceLinked { .. }
                | ApplicationEvent::PaymentServiceUnlinked { .. }
                | ApplicationEvent::ReversalPaid { .. }
                | ApplicationEvent::GrantFailed { .. } => {}
            },
            _ => {}
        }
        Ok(())
    }
}

/// One counter of one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counter {
    pub day: NaiveDate,
    pub metric: Metric,
    /// Relying party or program; empty for patches.
    pub key: String,
    /// Application status for `applications`; empty otherwise.
    pub status: String,
    pub value: i64,
}

/// Longest range one query covers: a year of days.
pub const MAX_RANGE_DAYS: i64 = 366;

/// Every counter of the Asia/Tokyo days `from..=to`, ordered by day, metric, key, status.
/// Bounded: at most [`MAX_RANGE_DAYS`] days, and a day has one row per (metric, RP or program).
pub async fn counters(
    client: &impl GenericClient,
    schema_name: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<Counter>, QueryError> {
    let s = schema(schema_name)?;
    let days = (to - from).num_days();
    if !(0..MAX_RANGE_DAYS).contains(&days) {
        return Err(QueryError::BadRange {
            max_days: MAX_RANGE_DAYS,
        });
    }
    client
        .query(
            &format!(
                "SELECT day, metric, key, status, value FROM {s}.daily_counter \
                 WHERE day BETWEEN $1 AND $2 ORDER BY day, metric, key, status"
            ),
            &[&from, &to],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(Counter {
                day: r.try_get(0)?,
                metric: Metric::parse(r.try_get(1)?)?,
                key: r.try_get(2)?,
                status: r.try_get(3)?,
                value: r.try_get(4)?,
            })
        })
        .collect()
}

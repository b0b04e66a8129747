//! Recorded health probes, the source of the monthly report's availability and incidents.
//!
//! A task in the server ([`run_recorder`], wired at start-up) writes one row a minute to
//! `ops_health_probe`: whether the instance was ready (database reachable, projections
//! running) and, if not, why. Availability over a period is the share of its minutes with an
//! `ok` probe; a minute with **no** probe (every instance down, or the recorder stopped) counts
//! as unavailable — an outage must not vanish because nobody was up to record it.
//!
//! The table is not part of the event log (append-only by trigger); it is created
//! by the store's migration `0500_ops_health_probe.sql`.

use chrono::{DateTime, Duration, DurationRound, Utc};
use std::future::Future;
use tokio_postgres::GenericClient;

/// One probe a minute.
pub const PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// Longest `detail` kept (a reason, not a dump).
pub const MAX_DETAIL_LEN: usize = 500;

/// One recorded probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub at: DateTime<Utc>,
    pub ok: bool,
    pub detail: String,
}

/// Records one probe. `at` is truncated to the minute, and one row per (minute, instance)
/// is kept: a retried write or two recorders in one instance do not count twice.
pub async fn record(
    client: &impl GenericClient,
    instance: &str,
    probe: &Probe,
) -> Result<(), tokio_postgres::Error> {
    let at = probe
        .at
        .duration_trunc(Duration::minutes(1))
        .unwrap_or(probe.at);
    let detail: String = probe.detail.chars().take(MAX_DETAIL_LEN).collect();
    client
        .execute(
            "INSERT INTO ops_health_probe (at, instance, ok, detail) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (at, instance) DO NOTHING",
            &[&at, &instance, &probe.ok, &detail],
        )
        .await?;
    Ok(())
}

/// Probes every [`PROBE_INTERVAL`] with `check` (true = ready, with a detail) and records the
/// result, until `shutdown` resolves. A failed write is logged by the caller's `on_error` and
/// the loop goes on: the next minute may succeed, and a missing minute already counts as down.
pub async fn run_recorder<C, F, Fut>(
    client: &C,
    instance: &str,
    mut check: F,
    mut on_error: impl FnMut(tokio_postgres::Error),
    shutdown: impl Future<Output = ()>,
) where
    C: GenericClient,
    F: FnMut() -> Fut,
    Fut: Future<Output = (bool, String)>,
{
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {
                let (ok, detail) = check().await;
                let probe = Probe { at: Utc::now(), ok, detail };
                if let Err(e) = record(client, instance, &probe).await {
                    on_error(e);
                }
            }
        }
    }
}

/// Availability and incidents over `[from, to)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Availability {
    /// Minutes in the period.
    pub minutes: i64,
    /// Minutes with at least one `ok` probe.
    pub up_minutes: i64,
    /// Minutes with probes, all failing.
    pub failed_minutes: i64,
    /// Minutes without any probe.
    pub missing_minutes: i64,
    /// Maximal runs of minutes that were not up.
    pub incidents: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Availability {
    /// Percent of minutes up (100 for an empty period).
    pub fn percent(&self) -> f64 {
        if self.minutes == 0 {
            return 100.0;
        }
        // Minutes in a month are far below 2^53.
        self.up_minutes as f64 * 100.0 / self.minutes as f64
    }
}

/// Longest period [`availability`] covers: a month and a day of minutes.
pub const MAX_PERIOD_MINUTES: i64 = 32 * 24 * 60;

/// Reads the probes of `[from, to)` (bounded by [`MAX_PERIOD_MINUTES`]) and folds them per
/// minute: up if any instance was ok that minute.
pub async fn availability(
    client: &impl GenericClient,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Availability, tokio_postgres::Error> {
    let minutes = (to - from).num_minutes().clamp(0, MAX_PERIOD_MINUTES);
    let rows = client
        .query(
            "SELECT at, bool_or(ok) FROM ops_health_probe WHERE at >= $1 AND at < $2 \
             GROUP BY at ORDER BY at",
            &[&from, &to],
        )
        .await?;
    let mut state = vec![None::<bool>; usize::try_from(minutes).unwrap_or(0)];
    for r in rows {
        let at: DateTime<Utc> = r.try_get(0)?;
        let ok: bool = r.try_get(1)?;
        let i = (at - from).num_minutes();
        if let Some(slot) = usize::try_from(i).ok().and_then(|i| state.get_mut(i)) {
            *slot = Some(ok);
        }
    }
    let mut a = Availability {
        minutes,
        up_minutes: 0,
        failed_minutes: 0,
        missing_minutes: 0,
        incidents: Vec::new(),
    };
    let mut down_since: Option<DateTime<Utc>> = None;
    for (i, s) in state.iter().enumerate() {
        let at = from + Duration::minutes(i64::try_from(i).unwrap_or(0));
        match s {
            Some(true) => a.up_minutes += 1,
            Some(false) => a.failed_minutes += 1,
            None => a.missing_minutes += 1,
        }
        match (s, down_since) {
            (Some(true), Some(start)) => {
                a.incidents.push((start, at));
                down_since = None;
            }
            (Some(false) | None, None) => down_since = Some(at),
            _ => {}
        }
    }
    if let Some(start) = down_since {
        a.incidents.push((start, from + Duration::minutes(minutes)));
    }
    Ok(a)
}

//! The Kafka projector's operation against a real broker (tansu) and PostgreSQL: an event one
//! projection cannot apply stops only that projection, visibly (status, metric, `/readyz`),
//! while the others go on; a restarted projector delivers the poison event again (nothing
//! after it is lost to that projection) and the others skip what they already applied; the
//! projector's `/metrics` answers with one series per projection.

use crate::projections::fixtures::{
    append_raw, append_workload, cancellation, Cancellations, Counts, Revocations, REJECTED_REASON,
};
use crate::projections::gauge;
use mykey_projections::kafka::projector::{
    self, schema_name, KafkaRunState, ProjectorHandle, ProjectorOptions,
};
use mykey_projections::kafka::KafkaSettings;
use mykey_projections::models::PerStream;
use mykey_projections::Projection;
use mykey_tests::{eventually, scalar, TestDb};
use std::sync::Arc;
use std::time::Duration;

/// Bound on any wait: finite so a bug fails the test.
const WAIT: Duration = Duration::from_secs(90);

/// Revocations (ppid), cancellations (maintenance; refuses one reason) and counts (every
/// category, so it shares the maintenance topic with the cancellations), each marked
/// `PerStream` to run from Kafka (the fixtures default to the global order).
fn projections() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(PerStream(Revocations)),
        Arc::new(PerStream(Cancellations)),
        Arc::new(PerStream(Counts {
            version: 1,
            weight: 1,
        })),
    ]
}

async fn start(
    db: &TestDb,
    settings: &KafkaSettings,
    group: &str,
) -> (ProjectorHandle, prometheus::Registry) {
    let registry = prometheus::Registry::new();
    let handle = projector::start(
        db.config(),
        settings.clone(),
        &projections(),
        ProjectorOptions {
            group_id: Some(group.to_owned()),
            batch_max: 50,
            // Counts' rows are changed by every stream's events, which no `PerStream` read
            // model may do: two lanes (like two projector processes) would update them from
            // two transactions at once and deadlock. One lane runs them as this test needs.
            lanes: 1,
            ..Default::default()
        },
        &registry,
    )
    .await
    .unwrap_or_else(|e| panic!("projector: {e}"));
    (handle, registry)
}

/// The poison is a cancellation whose reason the cancellations' table refuses (an SQL
/// error for that projection only). Counts, which reads the same topic, and revocations go
/// past it; the cancellations stop at its position, visibly; `/metrics` and `/readyz`
/// say so. A second projector in the group (after the first stopped) is delivered the
/// poison again — the stopped projection's offsets were not committed past it — and the
/// others skip everything they applied (the counts stay exact).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_stops_only_that_projection_and_is_delivered_again_after_a_restart() {
    let s = crate::kafka_projector::setup().await;
    let (db, store, settings, group) = (&s.db, &s.store, &s.settings, &s.group);
    let relay = s.relay().await;
    let (first, registry) = start(db, settings, group).await;
    let (port, server) = mykey_api::projector_http::serve(
        "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        registry.clone(),
        first.status(),
    )
    .unwrap_or_else(|e| panic!("serve: {e}"));
    let http = server.handle();
    tokio::spawn(server);

    append_workload(store, 0, 40).await;
    let poison = append_raw(store, "maintenance", cancellation(REJECTED_REASON)).await;
    let head = append_workload(store, 40, 40).await;
    let client = db.client().await;
    let counts = format!(
        "SELECT n FROM {}.total",
        schema_name(&PerStream(Counts {
            version: 1,
            weight: 1
        }))
    );
    let revoked = format!(
        "SELECT count(*) FROM {}.revoked",
        schema_name(&PerStream(Revocations))
    );
    // Every workload event of i % 4 in {0, 1} is a revocation: 40 of the 80.
    eventually("counts and revocations to pass the poison", WAIT, || {
        let (client, counts, revoked) = (&client, &counts, &revoked);
        async move {
            let n = scalar(client, counts).await;
            let r = scalar(client, revoked).await;
            (n == i64::try_from(head).unwrap_or(0) && r == 40).then_some(())
        }
    })
    .await;
    let failure = eventually("the cancellations to stop", WAIT, || {
        let s = first.statuses();
        async move {
            s.into_iter()
                .find(|s| s.name == "test_cancellations")
                .and_then(|s| match s.state {
                    KafkaRunState::Failed {
                        failed_at, error, ..
                    } => Some((failed_at, error)),
                    KafkaRunState::Running => None,
                })
        }
    })
    .await;
    assert_eq!(failure.0, poison);
    assert!(failure.1.contains("check"), "{}", failure.1);
    for s in first.statuses() {
        if s.name != "test_cancellations" {
            assert_eq!(s.state, KafkaRunState::Running, "{}", s.name);
        }
    }
    assert_eq!(
        gauge(
            &registry,
            "mykey_projector_projection_failed",
            "test_cancellations"
        ),
        Some(1.0)
    );
    assert_eq!(
        gauge(
            &registry,
            "mykey_projector_projection_failed",
            "test_counts"
        ),
        Some(0.0)
    );
    eventually("the counts' position gauge to reach the head", WAIT, || {
        let g = gauge(&registry, "mykey_projector_position", "test_counts");
        async move { (g == Some(head as f64)).then_some(()) }
    })
    .await;

    // The stopped projection's topic is no longer committed: its lag in messages (from
    // librdkafka's statistics, every second) shows the held-back events.
    eventually(
        "the stopped projection's lag in messages to show",
        WAIT,
        || {
            let lag = gauge(
                &registry,
                "mykey_projector_lag_events",
                "test_cancellations",
            );
            async move { lag.filter(|l| *l > 0.0) }
        },
    )
    .await;

    // What an operator sees over HTTP.
    let web = reqwest::Client::new();
    let metrics = web
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("/metrics body: {e}"));
    for series in [
        "mykey_projector_position{projection=\"test_revocations\"}",
        "mykey_projector_position{projection=\"test_counts\"}",
        "mykey_projector_lag_events{projection=\"test_cancellations\"}",
        "mykey_projector_lag_seconds{projection=\"test_revocations\"}",
        "mykey_projector_projection_failed{projection=\"test_cancellations\"} 1",
        "mykey_projector_projection_failed{projection=\"test_revocations\"} 0",
        "mykey_projector_assigned_partitions",
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );
    }
    let ready = web
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /readyz: {e}"));
    assert_eq!(ready.status(), reqwest::StatusCode::OK);
    let ready: serde_json::Value = ready
        .json()
        .await
        .unwrap_or_else(|e| panic!("/readyz body: {e}"));
    let stopped = ready["projections"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == "test_cancellations"))
        .cloned()
        .unwrap_or_else(|| panic!("no test_cancellations in {ready}"));
    assert_eq!(stopped["state"], "failed", "{ready}");
    assert_eq!(stopped["failed_at"], poison, "{ready}");

    // Restart: the poison is delivered again (its offsets were held back) and stops the
    // cancellations at the same position; the others skip every event as a duplicate.
    first
        .stop()
        .await
        .unwrap_or_else(|e| panic!("projector: {e}"));
    let ready = web
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /readyz: {e}"));
    assert_eq!(ready.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    http.stop(true).await;
    let (second, _) = start(db, settings, group).await;
    let again = eventually(
        "the restarted cancellations to stop on the poison",
        WAIT,
        || {
            let s = second.statuses();
            async move {
                s.into_iter()
                    .find(|s| s.name == "test_cancellations")
                    .and_then(|s| match s.state {
                        KafkaRunState::Failed { failed_at, .. } => Some(failed_at),
                        KafkaRunState::Running => None,
                    })
            }
        },
    )
    .await;
    assert_eq!(again, poison);
    let more = append_workload(store, 80, 8).await;
    eventually("the counts to apply the new events", WAIT, || {
        let (client, counts) = (&client, &counts);
        async move {
            (scalar(client, counts).await == i64::try_from(more).unwrap_or(0)).then_some(())
        }
    })
    .await;
    assert_eq!(scalar(&client, &revoked).await, 44);
    assert!(second.metrics().duplicates.get() > 0);
    second
        .stop()
        .await
        .unwrap_or_else(|e| panic!("projector: {e}"));
    relay.stop().await;
}

/// `mykey-server projector --lanes N`: connections per projection, 1 to 64, default
/// `DEFAULT_LANES`; anything else is refused before anything starts.
#[test]
fn the_projector_takes_its_lanes_from_the_command_line_within_bounds() {
    use clap::Parser;
    use mykey_api::cli::{Cli, Command};
    let lanes = |args: &[&str]| {
        Cli::try_parse_from(["mykey-server", "projector"].iter().chain(args)).map(|cli| {
            match cli.command {
                Some(Command::Projector { lanes, .. }) => usize::from(lanes),
                other => panic!("not the projector: {other:?}"),
            }
        })
    };
    assert_eq!(lanes(&[]).ok(), Some(projector::DEFAULT_LANES));
    assert_eq!(lanes(&["--lanes", "1"]).ok(), Some(1));
    assert_eq!(lanes(&["--lanes", "64"]).ok(), Some(64));
    for refused in ["0", "65", "two"] {
        let kind = lanes(&["--lanes", refused]).map_err(|e| e.kind());
        assert!(
            matches!(
                kind,
                Err(clap::error::ErrorKind::ValueValidation | clap::error::ErrorKind::InvalidValue)
            ),
            "--lanes {refused}: {kind:?}"
        );
    }
}

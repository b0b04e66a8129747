//! Reports: their CSV and JSON totals equal counts taken directly from the log (and from the
//! login audit and probe tables for logins and availability), and their SVG is well-formed XML
//! that names its axes.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use mykey_domain::application::ApplicationEvent;
use mykey_domain::patch::PatchEvent;
use mykey_domain::ppid::PpidEvent;
use mykey_projections::exec::{create_schema, run_changes};
use mykey_projections::models::counters::DailyCounters;
use mykey_projections::models::{tokyo_day, tokyo_day_start};
use mykey_projections::reports::{
    chart, cli, daily, health, monthly, weekly, Format, Kind, Report, ReportError, Sources,
    CSV_HEADER,
};
use mykey_projections::{Projection, Recorded};
use mykey_schemas::{decode_any, AnyEvent, EventEnvelope};
use mykey_tests::workload;
use mykey_tests::TestDb;
use tokio_postgres::Client;

const SCHEMA: &str = "counters_test";

struct Setup {
    _db: TestDb,
    client: Client,
    events: Vec<(EventEnvelope, AnyEvent)>,
    sources: Sources,
}

/// Two workload rounds in a database with the log's own tables (for `auth_audit` and
/// `auth_crl`), the probe table, and the counters projected into their schema.
async fn setup() -> Setup {
    let db = TestDb::create().await;
    let mut client = db.client().await;
    mykey_store::pg::migrations::migrate(&mut client)
        .await
        .unwrap_or_else(|e| panic!("migrate: {e}"));
    let w = workload::in_memory();
    w.round(1).await;
    w.round(2).await;
    let envelopes = w.cmds.store().all_events();
    let tx = client.transaction().await.unwrap_or_else(|e| panic!("{e}"));
    create_schema(&tx, SCHEMA, &DailyCounters)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut events = Vec::new();
    for env in envelopes {
        let event = decode_any(&env).unwrap_or_else(|e| panic!("{e}"));
        let mut changes = Vec::new();
        DailyCounters
            .apply(
                Recorded {
                    envelope: &env,
                    event: &event,
                },
                &mut changes,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        run_changes(&tx, &changes)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        events.push((env, event));
    }
    tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
    Setup {
        _db: db,
        client,
        events,
        sources: Sources {
            counters: SCHEMA.to_owned(),
        },
    }
}

fn csv_total(csv_text: &str, metric: &str) -> i64 {
    let mut lines = csv_text.lines();
    assert_eq!(lines.next(), Some(CSV_HEADER.join(",").as_str()));
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.get(2) == Some(&metric))
        .map(|f| {
            f[5].parse::<i64>()
                .unwrap_or_else(|e| panic!("{l:?}: {e}", l = f))
        })
        .sum()
}

fn json_total(json_text: &str, metric: &str) -> i64 {
    let v: serde_json::Value = serde_json::from_str(json_text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["time_zone"], "Asia/Tokyo");
    v["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("rows"))
        .iter()
        .filter(|r| r["metric"] == metric)
        .map(|r| r["value"].as_i64().unwrap_or_else(|| panic!("{r}")))
        .sum()
}

/// Parses the SVG as XML and returns its text content.
fn svg_text(report: &Report) -> String {
    let svg = report.render(Format::Svg).unwrap_or_else(|e| panic!("{e}"));
    let mut reader = quick_xml::Reader::from_str(&svg);
    let mut text = String::new();
    let mut elements = 0;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(quick_xml::events::Event::Start(_) | quick_xml::events::Event::Empty(_)) => {
                elements += 1
            }
            Ok(quick_xml::events::Event::Text(t)) => {
                text.push_str(&t.decode().unwrap_or_else(|e| panic!("{e}")));
                text.push('\n');
            }
            Ok(_) => {}
            Err(e) => panic!(
                "the SVG is not well-formed at {}: {e}",
                reader.buffer_position()
            ),
        }
    }
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
    assert!(elements > 10, "an empty chart");
    let (x, y) = chart::axis_names(report.kind);
    assert!(text.contains(x), "x axis not named: {text}");
    assert!(text.contains(y), "y axis not named: {text}");
    text
}

fn refusal<T>(r: Result<T, ReportError>) -> &'static str {
    match r {
        Ok(_) => panic!("expected a refusal"),
        Err(e) => e.code(),
    }
}

fn day(s: &str) -> NaiveDate {
    cli::parse_date(s).unwrap_or_else(|e| panic!("{e}"))
}

/// Events of the log on Asia/Tokyo days `from..=to` for which `pick` gives a number.
fn from_log(
    s: &Setup,
    from: NaiveDate,
    to: NaiveDate,
    pick: impl Fn(&AnyEvent) -> Option<i64>,
) -> i64 {
    s.events
        .iter()
        .filter(|(env, _)| (from..=to).contains(&tokyo_day(env.recorded_at)))
        .filter_map(|(_, e)| pick(e))
        .sum()
}

async fn audit(client: &Client, at: DateTime<Utc>, rp: &str, endpoint: &str, outcome: &str) {
    client
        .execute(
            "INSERT INTO auth_audit (occurred_at, rp_id, endpoint, outcome, correlation_id) \
             VALUES ($1, $2, $3, $4, $5)",
            &[&at, &rp, &endpoint, &outcome, &uuid::Uuid::new_v4()],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn the_daily_report_counts_ppids_from_the_log_and_logins_from_the_audit() {
    let s = setup().await;
    let d = day("2026-04-01");
    let start = tokyo_day_start(d);
    // Logins on the day (first and last microsecond included), the day before and after,
    // and a token request (not a login).
    audit(&s.client, start, "city-1", "auth.login", "OK").await;
    audit(
        &s.client,
        start + Duration::hours(5),
        "city-1",
        "auth.login",
        "PIN_INVALID",
    )
    .await;
    audit(
        &s.client,
        start + Duration::hours(6),
        "psp-1",
        "auth.kazashi",
        "OK",
    )
    .await;
    let last = start + Duration::days(1) - Duration::microseconds(1);
    audit(&s.client, last, "city-1", "auth.login", "OK").await;
    audit(
        &s.client,
        start - Duration::microseconds(1),
        "city-1",
        "auth.login",
        "OK",
    )
    .await;
    audit(
        &s.client,
        start + Duration::days(1),
        "city-1",
        "auth.login",
        "OK",
    )
    .await;
    audit(&s.client, start, "city-1", "auth.token", "OK").await;

    let report = daily::daily(&s.client, &s.sources, d)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let issued = from_log(&s, d, d, |e| {
        matches!(e, AnyEvent::Ppid(PpidEvent::Issued { .. })).then_some(1)
    });
    assert_eq!(
        issued, 5,
        "the first round issues five PPIDs on its first day"
    );
    let csv = report.to_csv().unwrap_or_else(|e| panic!("{e}"));
    let json = report.to_json().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(csv_total(&csv, "ppids_issued"), issued);
    assert_eq!(json_total(&json, "ppids_issued"), issued);
    assert_eq!(csv_total(&csv, "pin_logins"), 3);
    assert_eq!(json_total(&json, "kazashi_logins"), 1);
    assert!(csv.contains(",pin_logins,city-1,PIN_INVALID,1\n"), "{csv}");
    expect_test::expect![[r#"
        from,to,metric,key,detail,value
        2026-04-01,2026-04-01,ppids_issued,city-1,,4
        2026-04-01,2026-04-01,ppids_issued,psp-1,,1
        2026-04-01,2026-04-01,kazashi_logins,psp-1,OK,1
        2026-04-01,2026-04-01,pin_logins,city-1,OK,2
        2026-04-01,2026-04-01,pin_logins,city-1,PIN_INVALID,1
    "#]]
    .assert_eq(&csv);
    svg_text(&report);

    // The next Asia/Tokyo day issued nothing.
    let next = daily::daily(&s.client, &s.sources, d + Duration::days(1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next.total("ppids_issued"), 0);
    assert_eq!(next.total("pin_logins"), 1);
}

#[tokio::test]
async fn the_weekly_report_counts_applications_and_points_from_the_log() {
    let s = setup().await;
    // 2026-04-01 is a Wednesday: the week runs from Monday 03-30 to Sunday 04-05.
    let report = weekly::weekly(&s.client, &s.sources, day("2026-04-01"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (report.from, report.to),
        (day("2026-03-30"), day("2026-04-05"))
    );
    let (from, to) = (report.from, report.to);
    let submitted = from_log(&s, from, to, |e| {
        matches!(e, AnyEvent::Application(ApplicationEvent::Submitted { .. })).then_some(1)
    });
    let granted = from_log(&s, from, to, |e| match e {
        AnyEvent::Application(ApplicationEvent::PointsGranted { points, .. }) => {
            i64::try_from(*points).ok()
        }
        _ => None,
    });
    let owed = from_log(&s, from, to, |e| match e {
        AnyEvent::Application(ApplicationEvent::ReviewCorrected {
            reversal_owed_points,
            ..
        }) => i64::try_from(*reversal_owed_points).ok(),
        _ => None,
    });
    let csv = report.to_csv().unwrap_or_else(|e| panic!("{e}"));
    let json = report.to_json().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        report
            .rows
            .iter()
            .filter(|r| r.metric == "applications" && r.detail == "submitted")
            .map(|r| r.value.as_f64() as i64)
            .sum::<i64>(),
        submitted
    );
    assert_eq!(submitted, 3, "the second round falls in the next week");
    expect_test::expect![[r#"
        from,to,metric,key,detail,value
        2026-03-30,2026-04-05,applications,points-1,approved,3
        2026-03-30,2026-04-05,applications,points-1,granted,2
        2026-03-30,2026-04-05,applications,points-1,rejected,1
        2026-03-30,2026-04-05,applications,points-1,submitted,3
        2026-03-30,2026-04-05,points_approved,points-1,,4000
        2026-03-30,2026-04-05,points_granted,points-1,,8000
        2026-03-30,2026-04-05,points_owed_back,points-1,,5000
    "#]]
    .assert_eq(&csv);
    assert_eq!(csv_total(&csv, "points_granted"), granted);
    assert_eq!(json_total(&json, "points_granted"), granted);
    assert_eq!(granted, 8_000);
    assert_eq!(csv_total(&csv, "points_owed_back"), owed);
    assert_eq!(json_total(&json, "points_owed_back"), 5_000);
    svg_text(&report);
}

#[tokio::test]
async fn the_monthly_report_has_availability_incidents_patches_and_crl_freshness() {
    let s = setup().await;
    let april = day("2026-04-01");
    let start = tokyo_day_start(april);
    // Ten minutes probed: up, down twice, up, then nothing (missing minutes count as down).
    for (minute, ok) in [(0, true), (1, true), (2, false), (3, false), (4, true)] {
        let probe = health::Probe {
            at: start + Duration::minutes(minute) + Duration::seconds(7),
            ok,
            detail: if ok {
                String::new()
            } else {
                "database unreachable".into()
            },
        };
        health::record(&s.client, "a", &probe)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // A second instance that was up does not hide nor double a minute.
        health::record(&s.client, "a", &probe)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    s.client
        .execute(
            "INSERT INTO auth_crl (ca_key_id, issuer, this_update, next_update, der, loaded_by, \
             loaded_at) VALUES ('ca1', 'JPKI', $1, $2, '\\x00', 'op-1', $1), \
             ('ca2', 'JPKI', $1, $3, '\\x00', 'op-1', $1), \
             ('ca3', 'JPKI', $1, $2, '\\x00', 'op-1', $4)",
            &[
                &(start + Duration::minutes(1)),
                &(start + Duration::days(2)),
                &(start + Duration::minutes(3)),
                // Loaded after the period: not part of it.
                &(start + Duration::days(40)),
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let now = start + Duration::minutes(10);
    let report = monthly::monthly(&s.client, &s.sources, day("2026-04-17"), now)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (report.from, report.to),
        (day("2026-04-01"), day("2026-04-30"))
    );
    let csv = report.to_csv().unwrap_or_else(|e| panic!("{e}"));
    assert!(csv.contains(",availability,,percent,30.000\n"), "{csv}");
    assert!(csv.contains(",minutes,,up,3\n"), "{csv}");
    assert!(csv.contains(",minutes,,failed,2\n"), "{csv}");
    assert!(csv.contains(",minutes,,missing,5\n"), "{csv}");
    assert_eq!(report.total("incidents"), 2);
    assert!(
        csv.contains(",incident_minutes,2026-04-01T00:02:00+09:00,2026-04-01T00:04:00+09:00,2\n"),
        "{csv}"
    );
    assert!(csv.contains(",crl_age_hours,ca1,fresh,0\n"), "{csv}");
    assert!(csv.contains(",crl_age_hours,ca2,stale,0\n"), "{csv}");
    assert!(!csv.contains("ca3"), "{csv}");
    let patches = from_log(&s, report.from, report.to, |e| {
        matches!(e, AnyEvent::Patch(PatchEvent::Applied { .. })).then_some(1)
    });
    assert_eq!(patches, 2);
    assert_eq!(csv_total(&csv, "patches_applied"), patches);
    let json = report.to_json().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json_total(&json, "patches_applied"), patches);
    svg_text(&report);
}

#[tokio::test]
async fn the_cli_entry_renders_each_format_and_refuses_bad_arguments() {
    let s = setup().await;
    let now = Utc::now();
    for format in ["csv", "json", "svg"] {
        let out = cli::run_args(&s.client, &s.sources, "daily", "2026-04-01", format, now)
            .await
            .unwrap_or_else(|e| panic!("{format}: {e}"));
        assert!(!out.is_empty());
    }
    let out = cli::run(
        &s.client,
        &s.sources,
        Kind::Weekly,
        day("2026-04-02"),
        Format::Csv,
        now,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.starts_with("from,to,metric,key,detail,value\n"));
    for (kind, date, format, code) in [
        ("yearly", "2026-04-01", "csv", "UNKNOWN_REPORT"),
        ("daily", "2026-13-01", "csv", "INVALID_DATE"),
        ("daily", "yesterday", "csv", "INVALID_DATE"),
        ("daily", "2026-04-01", "pdf", "UNKNOWN_REPORT_FORMAT"),
    ] {
        let err = cli::run_args(&s.client, &s.sources, kind, date, format, now).await;
        assert_eq!(refusal(err), code, "{kind} {date} {format}");
    }
    let bad_schema = Sources {
        counters: "no such schema".into(),
    };
    let err = cli::run(
        &s.client,
        &bad_schema,
        Kind::Daily,
        day("2026-04-01"),
        Format::Csv,
        now,
    )
    .await;
    assert_eq!(refusal(err), "INVALID_SCHEMA");
}

#[tokio::test]
async fn the_probe_recorder_writes_a_probe_at_once_and_stops_on_shutdown() {
    let db = TestDb::create().await;
    let mut client = db.client().await;
    mykey_store::pg::migrations::migrate(&mut client)
        .await
        .unwrap_or_else(|e| panic!("migrate: {e}"));
    let recorder_client = db.client().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        health::run_recorder(
            &recorder_client,
            "instance-1",
            || async { (false, "projection ppids stopped".to_owned()) },
            |e| panic!("probe not recorded: {e}"),
            async {
                let _ = stopped.await;
            },
        )
        .await;
    });
    // The first probe is taken at once; poll for it with a bounded deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let row = loop {
        let row = client
            .query_opt("SELECT instance, ok, detail FROM ops_health_probe", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if let Some(r) = row {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "no probe recorded");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(row.get::<_, &str>(0), "instance-1");
    assert!(!row.get::<_, bool>(1));
    assert_eq!(row.get::<_, &str>(2), "projection ppids stopped");
    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .unwrap_or_else(|_| panic!("the recorder did not stop"))
        .unwrap_or_else(|e| panic!("{e}"));
}

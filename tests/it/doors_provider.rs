//! The payment-provider door's failed grant and the exact position of command answers, over
//! HTTP on a real server (the helpers of [`super::doors_rp`]).
//!
//! - A provider reports a failed grant: the application stays approved and awaiting a grant
//!   (in the provider's list, with the failure count and reason; the municipality sees them
//!   too), the grant can be retried, every rejection has its code, at most
//!   `MAX_GRANT_FAILURES` per link, tenant isolation (another provider: the same 404 as an
//!   unknown reference; a municipality: 403; no credential: 401), Idempotency-Key retries and
//!   misuse.
//! - Every command answer's `position` (body and `Mykey-Position`) is the global position of
//!   the last event the command wrote, not the log head; a retry answers the first position.

use super::doors_rp::{
    assert_problem, citizen_applies, create_program, json_of, spawn, App, Got, Rp,
};
use mykey_commands::stream_of;
use mykey_domain::application::{Application, MAX_GRANT_FAILURES};
use mykey_domain::{ApplicationId, ProgramId, SubjectId};
use serde_json::{json, Value};
use uuid::Uuid;

fn key() -> String {
    Uuid::new_v4().to_string()
}

/// The reference of the caller's only application with `status` (municipality's list).
async fn reference_of(app: &App, city: &Rp) -> String {
    let got = app.get("/v1/rp/applications", Some(&city.token)).await;
    assert_eq!(got.0, 200, "{:?}", got.2);
    got.2["items"][0]["reference"]
        .as_str()
        .unwrap_or_else(|| panic!("no application: {:?}", got.2))
        .to_owned()
}

/// The global position of the last event of an application's stream.
async fn last_position(app: &App, program: &ProgramId, subject: SubjectId) -> u64 {
    let stream = stream_of::<Application>(ApplicationId::of(program, &subject))
        .unwrap_or_else(|e| panic!("{e}"));
    let events = mykey_store::read_full_stream(app.cmds.store(), &stream)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    events.last().map_or(0, |e| e.global_position)
}

/// POST returning the answer and its `Mykey-Position` header.
async fn post_positioned(app: &App, path: &str, token: &str, body: &Value, k: &str) -> (Got, u64) {
    let resp = app
        .http
        .post(app.url(path))
        .header("idempotency-key", k)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let header = resp
        .headers()
        .get("mykey-position")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{path}: no Mykey-Position header"));
    (json_of(resp).await, header)
}

#[tokio::test]
async fn a_failed_grant_is_recorded_and_the_application_awaits_a_grant_again() {
    let app = spawn().await;
    let city = app.rp("city-f", "municipality").await;
    let psp = app.rp("psp-f", "payment_service_provider").await;
    let other_psp = app.rp("psp-g", "payment_service_provider").await;
    let program = create_program(&app, "points-f", &city.id).await;
    let (subject, _) = citizen_applies(&app, 1, &city.id, &program, &psp.id).await;
    let reference = reference_of(&app, &city).await;
    let failed = format!("/v1/rp/provider/applications/{reference}/grant-failed");
    let grant = format!("/v1/rp/provider/applications/{reference}/grant");
    let closed = json!({ "reason": "account closed" });

    // Not reviewed yet: nothing to fail.
    assert_problem(
        &app.post(&failed, Some(&psp.token), Some(&closed), &key())
            .await,
        409,
        "NOT_REVIEWED",
    );
    let review = format!("/v1/rp/applications/{reference}/review");
    let approved = app
        .post(
            &review,
            Some(&city.token),
            Some(&json!({ "decision": "approved", "points": 5000 })),
            &key(),
        )
        .await;
    assert_eq!(approved.0, 200, "{:?}", approved.2);

    // Tenant isolation: another provider gets the answer of an unknown reference; a
    // municipality is the wrong kind; no credential is 401.
    let unknown = app
        .post(
            "/v1/rp/provider/applications/no-such-ref/grant-failed",
            Some(&psp.token),
            Some(&closed),
            &key(),
        )
        .await;
    assert_problem(&unknown, 404, "APPLICATION_NOT_FOUND");
    let theirs = app
        .post(&failed, Some(&other_psp.token), Some(&closed), &key())
        .await;
    assert_problem(&theirs, 404, "APPLICATION_NOT_FOUND");
    assert_eq!(theirs.2, unknown.2, "not yours must answer like unknown");
    assert_problem(
        &app.post(&failed, Some(&city.token), Some(&closed), &key())
            .await,
        403,
        "RP_WRONG_KIND",
    );
    assert_problem(
        &app.post(&failed, None, Some(&closed), &key()).await,
        401,
        "ACCESS_TOKEN_MISSING",
    );
    // Bad bodies: 400, nothing recorded.
    for bad in [
        json!({}),
        json!({ "reason": 7 }),
        json!({ "reason": "x", "retry": true }),
    ] {
        let got = app
            .post(&failed, Some(&psp.token), Some(&bad), &key())
            .await;
        assert_eq!(got.0, 400, "{bad}: {:?}", got.2);
    }
    for bad in [
        "",
        "   ",
        "a\0b",
        &"x".repeat(mykey_domain::MAX_TEXT_LEN + 1),
    ] {
        assert_problem(
            &app.post(
                &failed,
                Some(&psp.token),
                Some(&json!({ "reason": bad })),
                &key(),
            )
            .await,
            400,
            "INVALID_INPUT",
        );
    }

    // Reported: still approved and awaiting a grant, with the failure's count and reason.
    let k = key();
    let (first, header) = post_positioned(&app, &failed, &psp.token, &closed, &k).await;
    assert_eq!(first.0, 200, "{:?}", first.2);
    assert_eq!(first.2["status"], "approved");
    assert_eq!(first.2["grant_failures"], 1);
    assert_eq!(first.2["last_grant_failure"], "account closed");
    let position = first.2["position"].as_u64().unwrap_or_default();
    assert_eq!(header, position);
    assert_eq!(position, last_position(&app, &program, subject).await);
    // A retry with the same key is the first answer; another body with it is refused.
    let (again, again_header) = post_positioned(&app, &failed, &psp.token, &closed, &k).await;
    assert_eq!((again.0, &again.2, again_header), (200, &first.2, header));
    assert_problem(
        &app.post(
            &failed,
            Some(&psp.token),
            Some(&json!({ "reason": "frozen" })),
            &k,
        )
        .await,
        422,
        "IDEMPOTENCY_KEY_REUSED",
    );
    assert_eq!(
        last_position(&app, &program, subject).await,
        position,
        "a retry records nothing"
    );

    // The provider's list still offers it for a grant; the municipality sees the failure.
    let pending = app
        .get(
            &format!("/v1/rp/provider/applications?min_position={position}"),
            Some(&psp.token),
        )
        .await;
    assert_eq!(pending.0, 200, "{:?}", pending.2);
    let items = pending.2["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{:?}", pending.2);
    assert_eq!(items[0]["reference"], reference.as_str());
    assert_eq!(items[0]["grant_failures"], 1);
    assert_eq!(items[0]["last_grant_failure"], "account closed");
    let city_view = app.get("/v1/rp/applications", Some(&city.token)).await;
    assert_eq!(city_view.2["items"][0]["grant_failures"], 1);
    assert_eq!(city_view.2["items"][0]["status"], "approved");

    // Up to the limit per link; then refused until the citizen links again.
    for n in 2..=MAX_GRANT_FAILURES {
        let got = app
            .post(
                &failed,
                Some(&psp.token),
                Some(&json!({ "reason": format!("frozen #{n}") })),
                &key(),
            )
            .await;
        assert_eq!(got.0, 200, "failure {n}: {:?}", got.2);
        assert_eq!(got.2["grant_failures"], n);
    }
    assert_problem(
        &app.post(&failed, Some(&psp.token), Some(&closed), &key())
            .await,
        409,
        "GRANT_FAILURES_EXHAUSTED",
    );

    // The retry of the grant succeeds; no failure can be reported after it.
    let granted = app.post(&grant, Some(&psp.token), None, &key()).await;
    assert_eq!(granted.0, 200, "{:?}", granted.2);
    assert_eq!(granted.2["status"], "granted");
    assert_problem(
        &app.post(&failed, Some(&psp.token), Some(&closed), &key())
            .await,
        409,
        "POINTS_ALREADY_GRANTED",
    );
}

#[tokio::test]
async fn command_answers_carry_the_position_they_wrote_not_the_log_head() {
    let app = spawn().await;
    let city = app.rp("city-p", "municipality").await;
    let psp = app.rp("psp-p", "payment_service_provider").await;
    let program = create_program(&app, "points-p", &city.id).await;
    let (subject, ppid) = citizen_applies(&app, 1, &city.id, &program, &psp.id).await;
    let reference = reference_of(&app, &city).await;

    // The review's answer is its own event's position (body and header).
    let review = format!("/v1/rp/applications/{reference}/review");
    let approve = json!({ "decision": "approved", "points": 700 });
    let k = key();
    let (first, header) = post_positioned(&app, &review, &city.token, &approve, &k).await;
    assert_eq!(first.0, 200, "{:?}", first.2);
    let written = last_position(&app, &program, subject).await;
    assert_eq!(first.2["position"].as_u64(), Some(written));
    assert_eq!(header, written);

    // Others write after it: the log head moves on, a retry still answers the first position.
    citizen_applies(&app, 2, &city.id, &program, &psp.id).await;
    assert!(app.head().await > written);
    let (again, again_header) = post_positioned(&app, &review, &city.token, &approve, &k).await;
    assert_eq!(again.2["position"].as_u64(), Some(written));
    assert_eq!(again_header, written);

    // The provider's grant: its PointsGranted event. Confirming again with another key (the
    // grant is idempotent per application) answers the application's position, still that.
    let grant = format!("/v1/rp/provider/applications/{reference}/grant");
    let (granted, _) = post_positioned(&app, &grant, &psp.token, &json!(null), &key()).await;
    let grant_position = last_position(&app, &program, subject).await;
    assert!(grant_position > written);
    assert_eq!(granted.2["position"].as_u64(), Some(grant_position));
    citizen_applies(&app, 3, &city.id, &program, &psp.id).await;
    let (twice, _) = post_positioned(&app, &grant, &psp.token, &json!(null), &key()).await;
    assert_eq!(twice.0, 200, "{:?}", twice.2);
    assert_eq!(twice.2["position"].as_u64(), Some(grant_position));

    // A PPID revocation writes two streams: the answer is the last of its events.
    let head_before = app.head().await;
    let revoke = format!("/v1/rp/ppids/{ppid}/revoke");
    let (revoked, revoke_header) =
        post_positioned(&app, &revoke, &city.token, &json!(null), &key()).await;
    assert_eq!(revoked.0, 200, "{:?}", revoked.2);
    let revoke_position = revoked.2["position"].as_u64().unwrap_or_default();
    assert_eq!(revoke_header, revoke_position);
    assert_eq!(revoke_position, head_before + 2, "PPID and subject events");
    // Read-your-writes with that position: the read model shows the revocation.
    let status = app
        .get(
            &format!("/v1/rp/ppids/{ppid}?min_position={revoke_position}"),
            Some(&city.token),
        )
        .await;
    assert_eq!(status.0, 200, "{:?}", status.2);
    assert_eq!(status.2["status"], "revoked");
}

//! The operator door's relying-party, CRL and renewal commands answer with the exact global
//! position their own append wrote (body `position` and `Mykey-Position`), not the log head:
//! the event at that position is the command's own, however many unrelated appends happen
//! around it; a retry with the same Idempotency-Key answers the same position; a command
//! that had nothing left to write (a CRL listing certificates already revoked, a renewal
//! already linked) answers the position of the event that already records it.

use super::doors_rp::{assert_problem, b64u, json_of, new_key, spawn, App, Got, OPERATOR_TOKEN};
use crate::pki::{self, pki};
use mykey_commands::{stream_of, CertificateRef, CommandMeta, RegisterRelyingParty, RpKind};
use mykey_domain::certificate::{Certificate, CertificateEvent};
use mykey_domain::relying_party::{RelyingParty, RelyingPartyEvent};
use mykey_domain::subject::Subject;
use mykey_domain::{RelyingPartyId, Role};
use mykey_schemas::{decode_any, AnyEvent, EventEnvelope, StreamId};
use mykey_store::EventStore;
use ring::signature::KeyPair;
use serde_json::{json, Value};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

fn key() -> String {
    Uuid::new_v4().to_string()
}

fn jwk() -> Value {
    let key = new_key();
    let p = key.public_key().as_ref();
    json!({ "kty": "EC", "crv": "P-256", "x": b64u(&p[1..33]), "y": b64u(&p[33..65]) })
}

/// What an operator request carries.
enum Body {
    None,
    Json(Value),
    Bytes(Vec<u8>, &'static str),
}

/// An operator POST with Idempotency-Key `k`: the answer and its `Mykey-Position` header.
async fn operator(app: &App, path: &str, body: Body, k: &str) -> (Got, u64) {
    let r = app
        .http
        .post(app.url(path))
        .header("idempotency-key", k)
        .bearer_auth(OPERATOR_TOKEN);
    let r = match body {
        Body::None => r,
        Body::Json(v) => r.json(&v),
        Body::Bytes(b, content_type) => r.header("content-type", content_type).body(b),
    };
    let resp = r.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
    let header = resp
        .headers()
        .get("mykey-position")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let got = json_of(resp).await;
    let header = header.unwrap_or_else(|| panic!("{path}: no Mykey-Position: {:?}", got.2));
    if let Some(p) = got.2.get("position") {
        assert_eq!(p.as_u64(), Some(header), "{path}: body and header agree");
    }
    (got, header)
}

/// The stored event at global position `p`.
async fn event_at(app: &App, p: u64) -> (EventEnvelope, AnyEvent) {
    let page = app
        .cmds
        .store()
        .read_all(p, 1)
        .await
        .unwrap_or_else(|e| panic!("read {p}: {e}"));
    let env = page
        .into_iter()
        .next()
        .filter(|e| e.global_position == p)
        .unwrap_or_else(|| panic!("no event at {p}"));
    let event = decode_any(&env).unwrap_or_else(|e| panic!("decode {p}: {e}"));
    (env, event)
}

/// Appends an event that has nothing to do with the command under test.
async fn unrelated_append(app: &App) {
    let id = RelyingPartyId::parse(&format!("noise-{}", Uuid::new_v4().simple()))
        .unwrap_or_else(|e| panic!("{e}"));
    app.cmds
        .register_relying_party(
            &CommandMeta::new("op-noise", Role::Operator, Uuid::new_v4()),
            RegisterRelyingParty {
                id,
                code: "noise".into(),
                name: "noise".into(),
                kind: RpKind::PrivateBusiness,
                public_jwk: mykey_commands::testing::sample_jwk("noise"),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("unrelated append: {e}"));
}

fn rp_stream(id: &str) -> StreamId {
    stream_of::<RelyingParty>(id).unwrap_or_else(|e| panic!("{e}"))
}

/// The relying-party event at `p`, asserting it is on `id`'s stream.
async fn rp_event_at(app: &App, p: u64, id: &str) -> RelyingPartyEvent {
    let (env, event) = event_at(app, p).await;
    assert_eq!(
        env.stream_id,
        rp_stream(id),
        "the event at {p} is {id}'s own"
    );
    match event {
        AnyEvent::RelyingParty(e) => e,
        other => panic!("at {p}: {other:?}"),
    }
}

fn register_body(id: &str) -> Value {
    json!({ "id": id, "kind": "municipality", "code": "131016", "name": id, "jwk": jwk() })
}

#[tokio::test]
async fn relying_party_commands_answer_the_position_of_their_own_event() {
    let app = spawn().await;

    // Four registrations at once while the write model takes unrelated appends: each answer
    // points at its own Registered event, never at whatever the head was.
    let ids = ["pos-a", "pos-b", "pos-c", "pos-d"];
    let keys: Vec<String> = ids.iter().map(|_| key()).collect();
    let bodies: Vec<Value> = ids.iter().map(|id| register_body(id)).collect();
    let path = "/v1/operator/relying-parties";
    let (a, b, c, d, ()) = tokio::join!(
        operator(&app, path, Body::Json(bodies[0].clone()), &keys[0]),
        operator(&app, path, Body::Json(bodies[1].clone()), &keys[1]),
        operator(&app, path, Body::Json(bodies[2].clone()), &keys[2]),
        operator(&app, path, Body::Json(bodies[3].clone()), &keys[3]),
        async {
            for _ in 0..4 {
                unrelated_append(&app).await;
            }
        },
    );
    let answers = [a, b, c, d];
    for (id, (got, p)) in ids.iter().zip(&answers) {
        assert_eq!(got.0, 201, "{id}: {:?}", got.2);
        let event = rp_event_at(&app, *p, id).await;
        assert!(
            matches!(event, RelyingPartyEvent::Registered { .. }),
            "{id}: {event:?}"
        );
    }

    // A retry after more appends answers the first position, not the head.
    unrelated_append(&app).await;
    let (again, again_p) = operator(&app, path, Body::Json(bodies[0].clone()), &keys[0]).await;
    assert_eq!(again.0, 201, "{:?}", again.2);
    assert_eq!(again_p, answers[0].1);
    assert!(app.head().await > again_p, "the head moved on");

    // Key rotation, suspend, resume and retire: each its own event, each retry the same.
    let id = ids[0];
    let rotate = format!("/v1/operator/relying-parties/{id}/key");
    let rotation = json!({ "jwk": jwk() });
    let k = key();
    let (got, p) = operator(&app, &rotate, Body::Json(rotation.clone()), &k).await;
    assert_eq!(got.0, 204, "{:?}", got.2);
    let event = rp_event_at(&app, p, id).await;
    assert!(
        matches!(event, RelyingPartyEvent::KeyRotated { .. }),
        "{event:?}"
    );
    unrelated_append(&app).await;
    let (again, again_p) = operator(&app, &rotate, Body::Json(rotation), &k).await;
    assert_eq!(again.0, 204, "{:?}", again.2);
    assert_eq!(again_p, p, "a retry answers the first position");

    for (action, expected) in [
        ("suspend", "Suspended"),
        ("resume", "Resumed"),
        ("retire", "Retired"),
    ] {
        let path = format!("/v1/operator/relying-parties/{id}/{action}");
        let k = key();
        let (got, p) = operator(&app, &path, Body::None, &k).await;
        assert_eq!(got.0, 204, "{action}: {:?}", got.2);
        let event = rp_event_at(&app, p, id).await;
        let name = match event {
            RelyingPartyEvent::Suspended { .. } => "Suspended",
            RelyingPartyEvent::Resumed => "Resumed",
            RelyingPartyEvent::Retired { .. } => "Retired",
            other => panic!("{action}: {other:?}"),
        };
        assert_eq!(name, expected, "{action}");
        unrelated_append(&app).await;
        let (again, again_p) = operator(&app, &path, Body::None, &k).await;
        assert_eq!(again.0, 204, "{action} again: {:?}", again.2);
        assert_eq!(again_p, p, "{action}: a retry answers the first position");
    }
}

/// The trust anchors' issuer name as certificates are recorded under it.
fn issuer() -> String {
    mykey_api::auth::jpki::TrustAnchors::from_dir(&pki().anchors_dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .next()
        .map(|a| a.subject.clone())
        .unwrap_or_default()
}

fn cert(serial: u64) -> CertificateRef {
    let hex = mykey_api::auth::jpki::normalize_serial(&format!("{serial:x}")).unwrap_or_default();
    CertificateRef::new(&issuer(), &hex).unwrap_or_else(|e| panic!("{e}"))
}

fn cert_stream(c: &CertificateRef) -> StreamId {
    stream_of::<Certificate>(c.stream_key()).unwrap_or_else(|e| panic!("{e}"))
}

/// The global position of the last event of `stream`.
async fn last_position(app: &App, stream: &StreamId) -> u64 {
    mykey_store::read_full_stream(app.cmds.store(), stream)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .last()
        .map_or(0, |e| e.global_position)
}

#[tokio::test]
async fn crl_loads_and_renewal_imports_answer_the_position_of_their_last_event() {
    let app = spawn().await;
    let city = app.rp("city-crl", "municipality").await;
    let system = || CommandMeta::new("platform", Role::System, Uuid::new_v4());
    // Known certificates: one to revoke, one to renew.
    let (revoked, old, new) = (0x5e_0001_u64, 0x5e_0002_u64, 0x5e_0003_u64);
    let mut subject = None;
    for serial in [revoked, old] {
        let login = app
            .cmds
            .register_login(&system(), &cert(serial), &city.id)
            .await
            .unwrap_or_else(|e| panic!("login: {e}"));
        subject = Some(login.subject);
    }
    let subject = subject.unwrap_or_else(|| panic!("a subject"));

    // The CRL lists one known certificate and one never seen: one event, its position.
    let t0 = OffsetDateTime::now_utc() - Duration::hours(2);
    let crl = pki::crl(&pki().ca_a, &[revoked, 0x5e_0fff], t0, 1);
    let k = key();
    let (got, p) = operator(
        &app,
        "/v1/operator/crls",
        Body::Bytes(crl.clone(), "application/pkix-crl"),
        &k,
    )
    .await;
    assert_eq!(got.0, 200, "{:?}", got.2);
    assert_eq!(got.2["known_certificates_revoked"], 1, "{:?}", got.2);
    let (env, event) = event_at(&app, p).await;
    assert_eq!(env.stream_id, cert_stream(&cert(revoked)));
    assert!(
        matches!(
            event,
            AnyEvent::Certificate(CertificateEvent::Revoked { .. })
        ),
        "{event:?}"
    );
    unrelated_append(&app).await;
    let (again, again_p) = operator(
        &app,
        "/v1/operator/crls",
        Body::Bytes(crl, "application/pkix-crl"),
        &k,
    )
    .await;
    assert_eq!(again.0, 200, "{:?}", again.2);
    assert_eq!(again_p, p, "a retry answers the first position");
    // A newer CRL listing the same certificate writes nothing: it answers the position of the
    // revocation already recorded.
    let newer = pki::crl(&pki().ca_a, &[revoked], t0 + Duration::hours(1), 2);
    let (got, newer_p) = operator(
        &app,
        "/v1/operator/crls",
        Body::Bytes(newer, "application/pkix-crl"),
        &key(),
    )
    .await;
    assert_eq!(got.0, 200, "{:?}", got.2);
    assert_eq!(got.2["known_certificates_revoked"], 0, "{:?}", got.2);
    assert_eq!(newer_p, p);

    // A renewal link: its answer is the position of the link's last event (the old
    // certificate, the new one and the subject are appended together).
    let csv = format!(
        "issuer,old_serial,new_serial\n\"{}\",{old:x},{new:x}\n",
        issuer()
    );
    let streams = [
        cert_stream(&cert(old)),
        cert_stream(&cert(new)),
        stream_of::<Subject>(subject).unwrap_or_else(|e| panic!("{e}")),
    ];
    let k = key();
    let import = || Body::Bytes(csv.clone().into_bytes(), "text/csv");
    let (got, p) = operator(&app, "/v1/operator/renewals", import(), &k).await;
    assert_eq!(got.0, 200, "{:?}", got.2);
    assert_eq!(got.2["linked"], 1, "{:?}", got.2);
    let (env, _) = event_at(&app, p).await;
    assert!(streams.contains(&env.stream_id), "{:?}", env.stream_id);
    let mut lasts = Vec::new();
    for s in &streams {
        lasts.push(last_position(&app, s).await);
    }
    assert_eq!(lasts.iter().max(), Some(&p), "{lasts:?}");
    assert!(
        lasts.iter().all(|l| *l + 2 >= p),
        "one append wrote all three: {lasts:?}"
    );
    unrelated_append(&app).await;
    let (again, again_p) = operator(&app, "/v1/operator/renewals", import(), &k).await;
    assert_eq!(again.0, 200, "{:?}", again.2);
    assert_eq!(again_p, p, "a retry answers the first position");
    // The same file again under a new key: nothing to write, the existing link's position.
    let (twice, twice_p) = operator(&app, "/v1/operator/renewals", import(), &key()).await;
    assert_eq!(twice.0, 200, "{:?}", twice.2);
    assert_eq!(twice.2["linked"], 1, "{:?}", twice.2);
    assert_eq!(twice_p, p);
    assert!(app.head().await > p, "the head moved on");
}

/// The Idempotency-Key is the command id: a retry that the idempotency table no longer answers
/// (its row pruned after 24 h, or released after a 5xx) is still the same command to the write
/// model, which answers its first outcome instead of running it again.
#[tokio::test]
async fn a_retry_the_idempotency_table_forgot_is_still_the_same_command() {
    let app = spawn().await;
    let forget = || async {
        app.db
            .client()
            .await
            .execute("DELETE FROM idempotency_keys", &[])
            .await
            .unwrap_or_else(|e| panic!("forget keys: {e}"));
    };
    let path = "/v1/operator/relying-parties";
    let (k, body) = (key(), register_body("same-command"));
    let (first, p) = operator(&app, path, Body::Json(body.clone()), &k).await;
    assert_eq!(first.0, 201, "{:?}", first.2);
    forget().await;
    let (again, again_p) = operator(&app, path, Body::Json(body.clone()), &k).await;
    assert_eq!((again.0, again_p), (201, p), "{:?}", again.2);
    // Another key is another command: refused, the relying party exists.
    let other = app
        .post(path, Some(OPERATOR_TOKEN), Some(&body), &key())
        .await;
    assert_problem(&other, 409, "RP_ALREADY_REGISTERED");

    let suspend = "/v1/operator/relying-parties/same-command/suspend";
    let k = key();
    let (done, p) = operator(&app, suspend, Body::None, &k).await;
    assert_eq!(done.0, 204, "{:?}", done.2);
    let head = app.head().await;
    forget().await;
    let (again, again_p) = operator(&app, suspend, Body::None, &k).await;
    assert_eq!((again.0, again_p), (204, p), "{:?}", again.2);
    assert_eq!(app.head().await, head, "nothing appended by the retry");
}

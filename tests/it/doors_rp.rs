//! The municipal and payment-provider doors over HTTP (`/v1/rp/...`): a real server on its
//! own database; relying parties registered through the operator door and authenticated with
//! their own access tokens. The citizen's steps (login, apply, link) go through the command
//! handlers on the same event log.
//!
//! Covers the point-program path (apply and link → the municipality approves → the provider
//! confirms the grant → the weekly report counts it), tenant isolation as a matrix (another
//! municipality, another provider, a relying party of the wrong kind, no credential: refused,
//! and "not yours" answers exactly like "unknown"), and the iCalendar feed parsed back.

use crate::pki::pki;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{Duration, Utc};
use mykey_api::config::Settings;
use mykey_api::startup::Application;
use mykey_commands::{CertificateRef, CommandMeta, Commands, CreateProgram};
use mykey_domain::maintenance::NoticeDetails;
use mykey_domain::{NoticeId, ProgramId, RelyingPartyId, Role, SubjectId};
use mykey_store::pg::{PgEventStore, PgStoreOptions};
use mykey_store::EventStore;
use mykey_tests::TestDb;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use std::collections::HashMap;
use uuid::Uuid;

const ISSUER: &str = "https://mykey.test";
pub(super) const OPERATOR_TOKEN: &str = "test-operator-token-0123456789abcdef";
/// How long a test waits for the projections to apply what it wrote.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(10);

pub(super) struct App {
    base: String,
    pub(super) http: reqwest::Client,
    pub(super) cmds: Commands<PgEventStore>,
    pub(super) db: TestDb,
}

/// A relying party and its access token.
pub(super) struct Rp {
    pub(super) id: RelyingPartyId,
    pub(super) token: String,
}

pub(super) type Got = (u16, String, Value);

pub(super) fn b64u(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

pub(super) fn new_key() -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .unwrap_or_else(|e| panic!("{e}"));
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .unwrap_or_else(|e| panic!("{e}"))
}

pub(super) fn es256(key: &EcdsaKeyPair, claims: &Value) -> String {
    let header = json!({ "alg": "ES256", "typ": "JWT" });
    let input = format!(
        "{}.{}",
        b64u(header.to_string().as_bytes()),
        b64u(claims.to_string().as_bytes())
    );
    let sig = key
        .sign(&SystemRandom::new(), input.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    format!("{input}.{}", b64u(sig.as_ref()))
}

pub(super) async fn json_of(resp: reqwest::Response) -> Got {
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, ct, body)
}

#[track_caller]
pub(super) fn assert_problem(got: &Got, status: u16, code: &str) {
    assert_eq!(got.0, status, "status for {code}: {:?}", got.2);
    assert_eq!(got.1, "application/problem+json", "content type for {code}");
    assert_eq!(got.2["code"], code, "{:?}", got.2);
}

pub(super) async fn spawn() -> App {
    let db = TestDb::create().await;
    let vars: HashMap<&str, String> = HashMap::from([
        ("MYKEY_LISTEN", "127.0.0.1:0".to_owned()),
        ("MYKEY_ISSUER", ISSUER.to_owned()),
        (
            "MYKEY_TRUST_ANCHORS",
            pki().anchors_dir.display().to_string(),
        ),
        ("MYKEY_REQUIRE_CRL", "false".to_owned()),
        ("MYKEY_OPERATOR_TOKEN", OPERATOR_TOKEN.to_owned()),
    ]);
    let settings =
        Settings::from_lookup(|k| vars.get(k).cloned()).unwrap_or_else(|e| panic!("{e}"));
    let app = Application::build(&settings, db.config())
        .await
        .unwrap_or_else(|e| panic!("server did not start: {e}"));
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let store = PgEventStore::connect(db.config(), PgStoreOptions::default())
        .await
        .unwrap_or_else(|e| panic!("store: {e}"));
    App {
        base,
        http: reqwest::Client::new(),
        cmds: Commands::new(store),
        db,
    }
}

fn operator_meta() -> CommandMeta {
    CommandMeta::new("op-1", Role::Operator, Uuid::new_v4())
}

impl App {
    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Registers `id` through the operator door and gets its access token.
    pub(super) async fn rp(&self, id: &str, kind: &str) -> Rp {
        let key = new_key();
        let p = key.public_key().as_ref();
        let jwk =
            json!({ "kty": "EC", "crv": "P-256", "x": b64u(&p[1..33]), "y": b64u(&p[33..65]) });
        let body = json!({ "id": id, "kind": kind, "code": "131016", "name": id, "jwk": jwk });
        let got = json_of(
            self.http
                .post(self.url("/v1/operator/relying-parties"))
                .bearer_auth(OPERATOR_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await;
        assert_eq!(got.0, 201, "register {id}: {:?}", got.2);
        let now = Utc::now().timestamp();
        let assertion = es256(
            &key,
            &json!({ "iss": id, "sub": id, "aud": format!("{ISSUER}/v1/oauth/token"),
                     "exp": now + 60, "iat": now, "jti": Uuid::new_v4().to_string() }),
        );
        let got = json_of(
            self.http
                .post(self.url("/v1/oauth/token"))
                .form(&[
                    ("grant_type", "client_credentials"),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", assertion.as_str()),
                ])
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await;
        assert_eq!(got.0, 200, "token {id}: {:?}", got.2);
        Rp {
            id: RelyingPartyId::parse(id).unwrap_or_else(|e| panic!("{e}")),
            token: got.2["access_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        }
    }

    pub(super) async fn head(&self) -> u64 {
        self.cmds
            .store()
            .head()
            .await
            .unwrap_or_else(|e| panic!("head: {e}"))
    }

    /// GET `path` as `token` (None: no credential), after the read models reached the log head.
    pub(super) async fn get(&self, path: &str, token: Option<&str>) -> Got {
        let mut r = self
            .http
            .get(self.url(path))
            .header("mykey-min-position", self.head().await.to_string());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        json_of(r.send().await.unwrap_or_else(|e| panic!("{path}: {e}"))).await
    }

    async fn get_text(&self, path: &str, token: &str) -> (u16, String, String) {
        let resp = self
            .http
            .get(self.url(path))
            .header("mykey-min-position", self.head().await.to_string())
            .bearer_auth(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, ct, resp.text().await.unwrap_or_default())
    }

    /// POST `body` (None: no body) to `path` as `token`, with `key` as Idempotency-Key.
    pub(super) async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        key: &str,
    ) -> Got {
        let mut r = self
            .http
            .post(self.url(path))
            .header("idempotency-key", key);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(b);
        }
        json_of(r.send().await.unwrap_or_else(|e| panic!("{path}: {e}"))).await
    }

    /// The serving schema of `projection` once it reached the log head (from `/readyz`).
    async fn caught_up_schema(&self, projection: &str) -> String {
        let head = self.head().await;
        let deadline = std::time::Instant::now() + CATCH_UP;
        loop {
            let got = self.get("/readyz", None).await;
            if let Some(p) = got.2["projections"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == projection))
            {
                if p["position"].as_u64() >= Some(head) {
                    if let Some(s) = p["schema"].as_str() {
                        return s.to_owned();
                    }
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{projection} did not reach {head}: {:?}",
                got.2
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// A citizen logs in at `city` (a PPID issued to it), applies to `program` choosing `psp`, and
/// the provider links the account.
pub(super) async fn citizen_applies(
    app: &App,
    n: u32,
    city: &RelyingPartyId,
    program: &ProgramId,
    psp: &RelyingPartyId,
) -> (SubjectId, String) {
    let cert = CertificateRef::new("ca", &format!("ab{n:02x}")).unwrap_or_else(|e| panic!("{e}"));
    let system = CommandMeta::new("platform", Role::System, Uuid::new_v4());
    let login = app
        .cmds
        .register_login(&system, &cert, city)
        .await
        .unwrap_or_else(|e| panic!("login: {e}"));
    let s = login.subject;
    let citizen = CommandMeta::new(s.to_string(), Role::Citizen(s), Uuid::new_v4());
    app.cmds
        .submit_application(&citizen, s, program, psp)
        .await
        .unwrap_or_else(|e| panic!("apply: {e}"));
    let provider = CommandMeta::new(
        psp.as_str(),
        Role::RelyingParty(psp.clone()),
        Uuid::new_v4(),
    );
    app.cmds
        .link_payment_service(&provider, program, s, &format!("acct-{n}"))
        .await
        .unwrap_or_else(|e| panic!("link: {e}"));
    (s, login.ppid.as_str().to_owned())
}

pub(super) async fn create_program(app: &App, id: &str, city: &RelyingPartyId) -> ProgramId {
    let program = ProgramId::parse(id).unwrap_or_else(|e| panic!("{e}"));
    let now = Utc::now();
    app.cmds
        .create_program(
            &operator_meta(),
            CreateProgram {
                id: program.clone(),
                municipality: city.clone(),
                name: format!("Points {id}"),
                period_start: now - Duration::days(1),
                period_end: now + Duration::days(90),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("program: {e}"));
    program
}

#[tokio::test]
async fn the_point_program_path_over_the_rp_and_provider_doors_with_tenant_isolation() {
    let app = spawn().await;
    let city = app.rp("city-a", "municipality").await;
    let other_city = app.rp("city-b", "municipality").await;
    let psp = app.rp("psp-a", "payment_service_provider").await;
    let other_psp = app.rp("psp-b", "payment_service_provider").await;
    let program = create_program(&app, "points-a", &city.id).await;
    let (subject, ppid) = citizen_applies(&app, 1, &city.id, &program, &psp.id).await;

    // The municipality sees the application by reference, never the subject id.
    let got = app.get("/v1/rp/applications", Some(&city.token)).await;
    assert_eq!(got.0, 200, "{:?}", got.2);
    let items = got.2["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{:?}", got.2);
    let reference = items[0]["reference"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!reference.is_empty());
    assert!(items[0].get("subject").is_none() && items[0].get("id").is_none());
    assert!(
        !got.2.to_string().contains(&subject.to_string()),
        "subject id leaked"
    );
    assert_eq!(items[0]["status"], "submitted");
    assert_eq!(items[0]["linked"], true);
    assert!(got.2["position"].as_u64().is_some());
    // Filters: by status and payment service; unknown parameters and bad limits refused.
    let got = app
        .get("/v1/rp/applications?status=approved", Some(&city.token))
        .await;
    assert_eq!(got.2["items"].as_array().map(Vec::len), Some(0));
    let got = app
        .get(
            "/v1/rp/applications?payment_service=psp-a&status=submitted",
            Some(&city.token),
        )
        .await;
    assert_eq!(got.2["items"].as_array().map(Vec::len), Some(1));
    for bad in [
        "/v1/rp/applications?stauts=approved",
        "/v1/rp/applications?limit=0",
        "/v1/rp/applications?limit=501",
        "/v1/rp/applications?status=done",
        "/v1/rp/applications?cursor=nonsense",
    ] {
        assert_problem(&app.get(bad, Some(&city.token)).await, 400, "INVALID_QUERY");
    }
    // Another municipality: an empty list, and its review of this application is a 404 that
    // reads exactly like an unknown reference's.
    let got = app
        .get("/v1/rp/applications", Some(&other_city.token))
        .await;
    assert_eq!(got.2["items"].as_array().map(Vec::len), Some(0));
    let approve = json!({ "decision": "approved", "points": 5000 });
    let review = format!("/v1/rp/applications/{reference}/review");
    let theirs = app
        .post(
            &review,
            Some(&other_city.token),
            Some(&approve),
            &Uuid::new_v4().to_string(),
        )
        .await;
    let unknown = app
        .post(
            "/v1/rp/applications/no-such-ref/review",
            Some(&other_city.token),
            Some(&approve),
            &Uuid::new_v4().to_string(),
        )
        .await;
    assert_problem(&theirs, 404, "APPLICATION_NOT_FOUND");
    assert_eq!(theirs.2, unknown.2);
    // The provider cannot review; no credential is 401; bad bodies are 400.
    assert_problem(
        &app.post(
            &review,
            Some(&psp.token),
            Some(&approve),
            &Uuid::new_v4().to_string(),
        )
        .await,
        404,
        "APPLICATION_NOT_FOUND",
    );
    assert_problem(
        &app.post(&review, None, Some(&approve), &Uuid::new_v4().to_string())
            .await,
        401,
        "ACCESS_TOKEN_MISSING",
    );
    for bad in [
        json!({ "decision": "approved", "points": 5000, "extra": 1 }),
        json!({ "decision": "approved", "points": "many" }),
        json!({ "decision": "maybe" }),
        json!({ "decision": "approved", "reason": "x" }),
    ] {
        let got = app
            .post(
                &review,
                Some(&city.token),
                Some(&bad),
                &Uuid::new_v4().to_string(),
            )
            .await;
        assert_eq!(got.0, 400, "{bad}: {:?}", got.2);
    }

    // The municipality approves; a retry with the same key answers the same, once.
    let key = Uuid::new_v4().to_string();
    let first = app
        .post(&review, Some(&city.token), Some(&approve), &key)
        .await;
    assert_eq!(first.0, 200, "{:?}", first.2);
    assert_eq!(first.2["status"], "approved");
    assert!(first.2["position"].as_u64().is_some());
    let again = app
        .post(&review, Some(&city.token), Some(&approve), &key)
        .await;
    assert_eq!((again.0, &again.2), (200, &first.2));
    assert_problem(
        &app.post(
            &review,
            Some(&city.token),
            Some(&approve),
            &Uuid::new_v4().to_string(),
        )
        .await,
        409,
        "ALREADY_REVIEWED",
    );

    // The provider door: only payment-service providers, only their own service.
    let pending = "/v1/rp/provider/applications";
    let got = app.get(pending, Some(&psp.token)).await;
    assert_eq!(got.0, 200, "{:?}", got.2);
    assert_eq!(
        got.2["items"].as_array().map(Vec::len),
        Some(1),
        "{:?}",
        got.2
    );
    assert_eq!(got.2["items"][0]["reference"], reference.as_str());
    let got = app.get(pending, Some(&other_psp.token)).await;
    assert_eq!(got.2["items"].as_array().map(Vec::len), Some(0));
    assert_problem(
        &app.get(pending, Some(&city.token)).await,
        403,
        "RP_WRONG_KIND",
    );
    assert_problem(&app.get(pending, None).await, 401, "ACCESS_TOKEN_MISSING");
    let grant = format!("/v1/rp/provider/applications/{reference}/grant");
    let theirs = app
        .post(
            &grant,
            Some(&other_psp.token),
            None,
            &Uuid::new_v4().to_string(),
        )
        .await;
    let unknown = app
        .post(
            "/v1/rp/provider/applications/no-such-ref/grant",
            Some(&other_psp.token),
            None,
            &Uuid::new_v4().to_string(),
        )
        .await;
    assert_problem(&theirs, 404, "APPLICATION_NOT_FOUND");
    assert_eq!(theirs.2, unknown.2);
    assert_problem(
        &app.post(&grant, Some(&city.token), None, &Uuid::new_v4().to_string())
            .await,
        403,
        "RP_WRONG_KIND",
    );
    // Confirmed; confirming again (another key) is the same answer, not a second grant.
    let granted = app
        .post(&grant, Some(&psp.token), None, &Uuid::new_v4().to_string())
        .await;
    assert_eq!(granted.0, 200, "{:?}", granted.2);
    assert_eq!(
        (&granted.2["status"], &granted.2["granted_points"]),
        (&json!("granted"), &json!(5000))
    );
    let twice = app
        .post(&grant, Some(&psp.token), None, &Uuid::new_v4().to_string())
        .await;
    assert_eq!(
        (twice.0, &twice.2["granted_points"]),
        (200, &json!(5000)),
        "{:?}",
        twice.2
    );
    let got = app.get(pending, Some(&psp.token)).await;
    assert_eq!(got.2["items"].as_array().map(Vec::len), Some(0));
    let got = app
        .get(&format!("{pending}?status=granted"), Some(&psp.token))
        .await;
    assert_eq!(got.2["items"].as_array().map(Vec::len), Some(1));
    // No reversal is owed: recording one is refused; another provider's is unknown.
    let paid = format!("/v1/rp/provider/applications/{reference}/reversal-paid");
    assert_problem(
        &app.post(
            &paid,
            Some(&psp.token),
            Some(&json!({ "points": 10 })),
            &Uuid::new_v4().to_string(),
        )
        .await,
        409,
        "NO_REVERSAL_OWED",
    );
    assert_problem(
        &app.post(
            &paid,
            Some(&other_psp.token),
            Some(&json!({ "points": 10 })),
            &Uuid::new_v4().to_string(),
        )
        .await,
        404,
        "APPLICATION_NOT_FOUND",
    );
    let got = app
        .post(
            &paid,
            Some(&psp.token),
            Some(&json!({ "points": 10, "x": 1 })),
            &Uuid::new_v4().to_string(),
        )
        .await;
    assert_eq!(got.0, 400, "{:?}", got.2);

    // The weekly report counts the approval and the grant.
    let schema = app.caught_up_schema("daily_counters").await;
    weekly_report_counts_a_5000_point_grant(&app.db.client().await, schema).await;

    // PPIDs: the issuing RP sees and revokes its own; any other RP gets the unknown answer.
    let path = format!("/v1/rp/ppids/{ppid}");
    let got = app.get(&path, Some(&city.token)).await;
    assert_eq!(
        (got.0, &got.2["status"]),
        (200, &json!("active")),
        "{:?}",
        got.2
    );
    let theirs = app.get(&path, Some(&other_city.token)).await;
    let unknown = app
        .get(
            &format!("/v1/rp/ppids/{}", Uuid::new_v4()),
            Some(&other_city.token),
        )
        .await;
    assert_problem(&theirs, 404, "PPID_NOT_FOUND");
    assert_eq!(theirs.2, unknown.2);
    assert_problem(&app.get(&path, None).await, 401, "ACCESS_TOKEN_MISSING");
    let revoke = format!("{path}/revoke");
    assert_problem(
        &app.post(
            &revoke,
            Some(&other_city.token),
            None,
            &Uuid::new_v4().to_string(),
        )
        .await,
        404,
        "PPID_NOT_FOUND",
    );
    let got = app
        .post(
            &revoke,
            Some(&city.token),
            None,
            &Uuid::new_v4().to_string(),
        )
        .await;
    assert_eq!(got.0, 200, "{:?}", got.2);
    let got = app.get(&path, Some(&city.token)).await;
    assert_eq!(got.2["status"], "revoked", "{:?}", got.2);
    assert_problem(
        &app.post(
            &revoke,
            Some(&city.token),
            None,
            &Uuid::new_v4().to_string(),
        )
        .await,
        409,
        "PPID_ALREADY_REVOKED",
    );
}

#[tokio::test]
async fn maintenance_notices_as_json_and_as_an_icalendar_feed_that_parses() {
    use icalendar::Component;
    let app = spawn().await;
    let city = app.rp("city-a", "municipality").await;
    let now = Utc::now();
    let details = |hours: i64, en: &str| NoticeDetails {
        start: now + Duration::hours(hours),
        end: now + Duration::hours(hours + 2),
        affected_services: vec!["login".into(), "points".into()],
        message_ja: "定期メンテナンス; 手続き, 一時停止".into(),
        message_en: en.into(),
    };
    let n1 = NoticeId::parse("m-1").unwrap_or_else(|e| panic!("{e}"));
    let n2 = NoticeId::parse("m-2").unwrap_or_else(|e| panic!("{e}"));
    for (n, en) in [(&n1, "Scheduled maintenance"), (&n2, "Network work")] {
        app.cmds
            .schedule_maintenance(&operator_meta(), n, details(24, en))
            .await
            .unwrap_or_else(|e| panic!("schedule: {e}"));
    }
    app.cmds
        .update_maintenance(
            &operator_meta(),
            &n1,
            details(48, "Scheduled maintenance, moved"),
        )
        .await
        .unwrap_or_else(|e| panic!("update: {e}"));
    app.cmds
        .cancel_maintenance(&operator_meta(), &n2, "not needed")
        .await
        .unwrap_or_else(|e| panic!("cancel: {e}"));

    let got = app.get("/v1/rp/notices", Some(&city.token)).await;
    assert_eq!(got.0, 200, "{:?}", got.2);
    let ids: Vec<&str> = got.2["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|n| n["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["m-1"], "current notices: {:?}", got.2);
    let got = app.get("/v1/rp/notices?when=past", Some(&city.token)).await;
    assert_eq!(got.2["items"][0]["id"], "m-2", "{:?}", got.2);
    assert_problem(
        &app.get("/v1/rp/notices?when=soon", Some(&city.token)).await,
        400,
        "INVALID_QUERY",
    );
    assert_problem(
        &app.get("/v1/rp/notices", None).await,
        401,
        "ACCESS_TOKEN_MISSING",
    );
    // Read-your-writes: a position the read model has not reached is a bounded wait, then 503.
    let ahead = app.head().await + 1_000;
    let got = app
        .get(
            &format!("/v1/rp/notices?min_position={ahead}"),
            Some(&city.token),
        )
        .await;
    assert_problem(&got, 503, "READ_MODEL_BEHIND");
    assert_problem(
        &app.get("/v1/rp/notices.ics", None).await,
        401,
        "ACCESS_TOKEN_MISSING",
    );

    let (status, ct, body) = app.get_text("/v1/rp/notices.ics", &city.token).await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/calendar"), "{ct}");
    let cal: icalendar::Calendar = body
        .parse()
        .unwrap_or_else(|e| panic!("the feed does not parse: {e}\n{body}"));
    assert_eq!(cal.property_value("VERSION"), Some("2.0"));
    let events: Vec<&icalendar::Event> = cal.events().collect();
    assert_eq!(events.len(), 2, "{body}");
    let by_uid = |uid: &str| {
        events
            .iter()
            .find(|e| e.get_uid() == Some(uid))
            .unwrap_or_else(|| panic!("{uid} missing from\n{body}"))
    };
    let moved = by_uid("m-1@mykey.platform");
    assert_eq!(moved.get_summary(), Some("Scheduled maintenance, moved"));
    assert_eq!(moved.get_sequence(), Some(2));
    assert_eq!(moved.get_status(), Some(icalendar::EventStatus::Confirmed));
    assert!(
        moved
            .get_description()
            .is_some_and(|d| d.contains("定期メンテナンス; 手続き, 一時停止")),
        "{body}"
    );
    assert!(moved.get_start().is_some() && moved.get_end().is_some());
    let cancelled = by_uid("m-2@mykey.platform");
    assert_eq!(
        cancelled.get_status(),
        Some(icalendar::EventStatus::Cancelled)
    );
    // Every line is folded to at most 75 octets (RFC 5545 3.1).
    assert!(body.split("\r\n").all(|l| l.len() <= 75), "{body}");
}

/// This week's point-program report, read from the daily counters in `schema`, counts a granted
/// application and 5,000 points granted.
pub(super) async fn weekly_report_counts_a_5000_point_grant(
    client: &tokio_postgres::Client,
    schema: String,
) {
    let report = mykey_projections::reports::weekly::weekly(
        client,
        &mykey_projections::reports::Sources { counters: schema },
        mykey_projections::models::tokyo_day(Utc::now()),
    )
    .await
    .unwrap_or_else(|e| panic!("weekly: {e}"));
    let rows = |metric: &str| {
        report
            .rows
            .iter()
            .filter(|r| r.metric == metric)
            .map(|r| format!("{}:{}:{:?}", r.key, r.detail, r.value))
            .collect::<Vec<_>>()
    };
    assert!(
        rows("points_granted").iter().any(|v| v.contains("5000")),
        "{:?}",
        report.rows
    );
    assert!(
        rows("applications").iter().any(|v| v.contains("granted")),
        "{:?}",
        report.rows
    );
}

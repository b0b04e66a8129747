//! The citizen door over HTTP (`/v1/citizen/...`): a real server on its own database, the
//! platform's citizen screens registered as a relying party (`MYKEY_CITIZEN_RP`), citizens
//! logging in there with JPKI-profile test cards and the PIN, trading the ID token for a
//! session token.
//!
//! Covers the whole point-program path over HTTP (a citizen applies and links a payment
//! service → the municipality approves → the provider confirms the grant → the weekly report
//! counts it), each endpoint and each of its refusals, and the tenant matrix: another
//! citizen, a municipality's and a provider's access token, an operator token, no credential
//! and an expired session are refused, and "not yours" reads exactly like "unknown".

use super::doors_rp::{
    assert_problem, b64u, es256, json_of, weekly_report_counts_a_5000_point_grant, Got,
};
use crate::pki::{pki, Card, CardSpec};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{Duration, Utc};
use mykey_api::auth::clock::Clock;
use mykey_api::config::Settings;
use mykey_api::startup::Application;
use mykey_store::pg::{PgEventStore, PgStoreOptions};
use mykey_store::EventStore;
use mykey_tests::TestDb;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use std::collections::HashMap;
use uuid::Uuid;

const ISSUER: &str = "https://mykey.test";
const OPERATOR_TOKEN: &str = "citizen-door-operator-token-0123456789";
const SCREENS: &str = "citizen-screens";
/// How long a test waits for the projections to apply what it wrote.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(10);

struct App {
    base: String,
    http: reqwest::Client,
    store: PgEventStore,
    clock: Clock,
    db: TestDb,
}

async fn spawn() -> App {
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
        ("MYKEY_CITIZEN_RP", SCREENS.to_owned()),
    ]);
    let mut settings =
        Settings::from_lookup(|k| vars.get(k).cloned()).unwrap_or_else(|e| panic!("{e}"));
    let clock = Clock::system();
    settings.auth.clock = clock.clone();
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
        store,
        clock,
        db,
    }
}

impl App {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn head(&self) -> u64 {
        self.store
            .head()
            .await
            .unwrap_or_else(|e| panic!("head: {e}"))
    }

    /// Registers `id` through the operator door and gets its access token.
    async fn rp(&self, id: &str, kind: &str) -> String {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap_or_else(|e| panic!("{e}"));
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap_or_else(|e| panic!("{e}"));
        let p = key.public_key().as_ref();
        let jwk =
            json!({ "kty": "EC", "crv": "P-256", "x": b64u(&p[1..33]), "y": b64u(&p[33..65]) });
        let body = json!({ "id": id, "kind": kind, "code": "131016", "name": id, "jwk": jwk });
        let got = self
            .post(
                "/v1/operator/relying-parties",
                Some(OPERATOR_TOKEN),
                Some(&body),
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
        got.2["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// GET `path` as `token`, after the read models reached the log head.
    async fn get(&self, path: &str, token: Option<&str>) -> Got {
        let mut r = self
            .http
            .get(self.url(path))
            .header("mykey-min-position", self.head().await.to_string());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        json_of(r.send().await.unwrap_or_else(|e| panic!("{path}: {e}"))).await
    }

    /// POST `body` to `path` as `token` with a fresh Idempotency-Key.
    async fn post(&self, path: &str, token: Option<&str>, body: Option<&Value>) -> Got {
        self.post_keyed(path, token, body, &Uuid::new_v4().to_string())
            .await
    }

    async fn post_keyed(
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

    /// A PIN login with `card` at the relying party of `rp_token`: the ID token.
    async fn pin_login(&self, rp_token: &str, card: &Card) -> String {
        let got = self.post("/v1/auth/challenges", Some(rp_token), None).await;
        assert_eq!(got.0, 201, "challenge: {:?}", got.2);
        let nonce = URL_SAFE_NO_PAD
            .decode(got.2["nonce"].as_str().unwrap_or_default())
            .unwrap_or_default();
        let body = json!({ "challenge_id": got.2["challenge_id"], "certificate": card.b64(),
                           "signature": STANDARD.encode(card.sign(&nonce)) });
        let got = self
            .post("/v1/auth/login", Some(rp_token), Some(&body))
            .await;
        assert_eq!(got.0, 200, "login: {:?}", got.2);
        got.2["id_token"].as_str().unwrap_or_default().to_owned()
    }

    /// A citizen session for `card`: PIN login at the screens, then the exchange.
    async fn session(&self, screens: &str, card: &Card) -> String {
        let id_token = self.pin_login(screens, card).await;
        let got = self.exchange(screens, &id_token).await;
        assert_eq!(got.0, 201, "session: {:?}", got.2);
        assert_eq!(got.2["token_type"], "Bearer");
        assert_eq!(got.2["expires_in"], 900);
        got.2["session_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn exchange(&self, rp_token: &str, id_token: &str) -> Got {
        self.post(
            "/v1/citizen/sessions",
            Some(rp_token),
            Some(&json!({ "id_token": id_token })),
        )
        .await
    }

    /// The serving schema of `projection` once it reached the log head.
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

    async fn create_program(&self, id: &str, municipality: &str) {
        let now = Utc::now();
        let body = json!({ "id": id, "municipality": municipality, "name": format!("Points {id}"),
            "period_start": (now - Duration::days(1)).to_rfc3339(),
            "period_end": (now + Duration::days(90)).to_rfc3339() });
        let got = self
            .post("/v1/operator/programs", Some(OPERATOR_TOKEN), Some(&body))
            .await;
        assert_eq!(got.0, 201, "program: {:?}", got.2);
    }
}

async fn call(
    app: &App,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> Got {
    if method == "GET" {
        app.get(path, token).await
    } else {
        app.post(path, token, body).await
    }
}

fn card() -> Card {
    CardSpec::valid(&pki().ca_a).issue()
}

#[tokio::test]
async fn the_point_program_path_over_http_starting_at_the_citizen_door() {
    let app = spawn().await;
    let screens = app.rp(SCREENS, "private_business").await;
    let city = app.rp("city-a", "municipality").await;
    let psp = app.rp("psp-a", "payment_service_provider").await;
    app.create_program("points-a", "city-a").await;
    let session = app.session(&screens, &card()).await;

    // The open programs.
    let got = app.get("/v1/citizen/programs", Some(&session)).await;
    assert_eq!(got.0, 200, "{:?}", got.2);
    assert_eq!(got.2["items"][0]["id"], "points-a", "{:?}", got.2);
    assert_eq!(got.2["items"][0]["municipality"], "city-a");

    // Apply, choosing the payment service; a retry with the key is the first answer.
    let apply = json!({ "program": "points-a", "payment_service": "psp-a" });
    let key = Uuid::new_v4().to_string();
    let applied = app
        .post_keyed(
            "/v1/citizen/applications",
            Some(&session),
            Some(&apply),
            &key,
        )
        .await;
    assert_eq!(applied.0, 201, "{:?}", applied.2);
    assert_eq!(applied.2["status"], "submitted");
    assert_eq!(applied.2["linked"], false);
    let position = applied.2["position"].as_u64().unwrap_or_default();
    assert!(position > 0);
    let again = app
        .post_keyed(
            "/v1/citizen/applications",
            Some(&session),
            Some(&apply),
            &key,
        )
        .await;
    assert_eq!((again.0, &again.2), (201, &applied.2));

    // Link the account; read it back with read-your-writes.
    let linked = app
        .post(
            "/v1/citizen/applications/points-a/link",
            Some(&session),
            Some(&json!({ "account": "acct-1" })),
        )
        .await;
    assert_eq!(linked.0, 200, "{:?}", linked.2);
    assert_eq!(linked.2["linked"], true);
    let at = linked.2["position"].as_u64().unwrap_or_default();
    let got = json_of(
        app.http
            .get(app.url(&format!("/v1/citizen/applications?min_position={at}")))
            .bearer_auth(&session)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(got.0, 200, "{:?}", got.2);
    let items = got.2["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{:?}", got.2);
    assert_eq!(
        (
            &items[0]["program"],
            &items[0]["account"],
            &items[0]["status"]
        ),
        (&json!("points-a"), &json!("acct-1"), &json!("submitted"))
    );
    assert!(got.2["position"].as_u64() >= Some(at));

    // The municipality approves (by the opaque reference it sees) ...
    let got = app.get("/v1/rp/applications", Some(&city)).await;
    let reference = got.2["items"][0]["reference"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!reference.is_empty(), "{:?}", got.2);
    let got = app
        .post(
            &format!("/v1/rp/applications/{reference}/review"),
            Some(&city),
            Some(&json!({ "decision": "approved", "points": 5000 })),
        )
        .await;
    assert_eq!(got.0, 200, "review: {:?}", got.2);
    // ... the provider confirms the grant ...
    let got = app
        .post(
            &format!("/v1/rp/provider/applications/{reference}/grant"),
            Some(&psp),
            None,
        )
        .await;
    assert_eq!(got.0, 200, "grant: {:?}", got.2);
    // ... the citizen sees it granted ...
    let got = app
        .get("/v1/citizen/applications/points-a", Some(&session))
        .await;
    assert_eq!(got.0, 200, "{:?}", got.2);
    assert_eq!(
        (
            &got.2["status"],
            &got.2["approved_points"],
            &got.2["granted_points"]
        ),
        (&json!("granted"), &json!(5000), &json!(5000))
    );
    // ... and the weekly report counts it.
    let schema = app.caught_up_schema("daily_counters").await;
    weekly_report_counts_a_5000_point_grant(&app.db.client().await, schema).await;
}

#[tokio::test]
async fn each_citizen_endpoint_refuses_what_it_must() {
    let app = spawn().await;
    let screens = app.rp(SCREENS, "private_business").await;
    let city = app.rp("city-a", "municipality").await;
    app.rp("psp-a", "payment_service_provider").await;
    app.create_program("points-a", "city-a").await;
    let mine = card();
    let session = app.session(&screens, &mine).await;
    let apps = "/v1/citizen/applications";

    // Opening a session: only the screens, only their own PIN ID tokens.
    let city_id_token = app.pin_login(&city, &mine).await;
    assert_problem(
        &app.exchange(&city, &city_id_token).await,
        403,
        "NOT_CITIZEN_RP",
    );
    assert_problem(
        &app.exchange(&screens, &city_id_token).await,
        401,
        "CITIZEN_ID_TOKEN_AUDIENCE",
    );
    assert_problem(
        &app.exchange(&screens, "not.a.token").await,
        401,
        "CITIZEN_ID_TOKEN_INVALID",
    );
    assert_problem(
        &app.exchange(&screens, &session).await,
        401,
        "CITIZEN_ID_TOKEN_INVALID",
    );
    let got = app
        .post(
            "/v1/citizen/sessions",
            Some(&screens),
            Some(&json!({ "id_token": "x", "extra": 1 })),
        )
        .await;
    assert_eq!(got.0, 400, "{:?}", got.2);
    assert_problem(
        &app.post(
            "/v1/citizen/sessions",
            None,
            Some(&json!({ "id_token": "x" })),
        )
        .await,
        401,
        "ACCESS_TOKEN_MISSING",
    );
    let kazashi = app
        .post(
            "/v1/auth/kazashi",
            Some(&screens),
            Some(&json!({ "certificate": mine.b64() })),
        )
        .await;
    assert_eq!(kazashi.0, 200, "{:?}", kazashi.2);
    assert_problem(
        &app.exchange(&screens, kazashi.2["id_token"].as_str().unwrap_or_default())
            .await,
        403,
        "CITIZEN_PIN_REQUIRED",
    );

    // Apply: bad input, unknown program, a payment service that is not one, twice.
    for (body, status, code) in [
        (
            json!({ "program": "no such program!", "payment_service": "psp-a" }),
            400,
            "INVALID_INPUT",
        ),
        (
            json!({ "program": "points-z", "payment_service": "psp-a" }),
            404,
            "PROGRAM_NOT_FOUND",
        ),
        (
            json!({ "program": "points-a", "payment_service": "city-a" }),
            403,
            "RP_WRONG_KIND",
        ),
    ] {
        assert_problem(
            &app.post(apps, Some(&session), Some(&body)).await,
            status,
            code,
        );
    }
    let got = app
        .post(
            apps,
            Some(&session),
            Some(&json!({ "program": "points-a" })),
        )
        .await;
    assert_eq!(got.0, 400, "{:?}", got.2);
    let apply = json!({ "program": "points-a", "payment_service": "psp-a" });
    let key = Uuid::new_v4().to_string();
    let got = app
        .post_keyed(apps, Some(&session), Some(&apply), &key)
        .await;
    assert_eq!(got.0, 201, "{:?}", got.2);
    assert_problem(
        &app.post(apps, Some(&session), Some(&apply)).await,
        409,
        "APPLICATION_ALREADY_SUBMITTED",
    );
    assert_problem(
        &app.post_keyed(
            apps,
            Some(&session),
            Some(&json!({ "program": "points-a", "payment_service": "psp-b" })),
            &key,
        )
        .await,
        422,
        "IDEMPOTENCY_KEY_REUSED",
    );

    // Link and unlink: bounded text, state refusals.
    let link = "/v1/citizen/applications/points-a/link";
    let unlink = "/v1/citizen/applications/points-a/unlink";
    for bad in [
        json!({ "account": "" }),
        json!({ "account": "x".repeat(300) }),
        json!({ "account": "a", "x": 1 }),
    ] {
        let got = app.post(link, Some(&session), Some(&bad)).await;
        assert_eq!(got.0, 400, "{bad}: {:?}", got.2);
    }
    assert_problem(
        &app.post(unlink, Some(&session), Some(&json!({ "reason": "moved" })))
            .await,
        409,
        "PAYMENT_SERVICE_NOT_LINKED",
    );
    let got = app
        .post(link, Some(&session), Some(&json!({ "account": "acct-1" })))
        .await;
    assert_eq!(got.0, 200, "{:?}", got.2);
    assert_problem(
        &app.post(link, Some(&session), Some(&json!({ "account": "acct-2" })))
            .await,
        409,
        "PAYMENT_SERVICE_ALREADY_LINKED",
    );
    let got = app
        .post(unlink, Some(&session), Some(&json!({ "reason": "" })))
        .await;
    assert_eq!(got.0, 400, "{:?}", got.2);
    let got = app
        .post(
            unlink,
            Some(&session),
            Some(&json!({ "reason": "changed my mind" })),
        )
        .await;
    assert_eq!(
        (got.0, &got.2["linked"]),
        (200, &json!(false)),
        "{:?}",
        got.2
    );
    // Unknown applications (by program) are 404 wherever they are named.
    for path in [
        "/v1/citizen/applications/points-z/link",
        "/v1/citizen/applications/bad%20id/link",
    ] {
        assert_problem(
            &app.post(path, Some(&session), Some(&json!({ "account": "a" })))
                .await,
            404,
            "APPLICATION_NOT_FOUND",
        );
    }
    assert_problem(
        &app.get("/v1/citizen/applications/points-z", Some(&session))
            .await,
        404,
        "APPLICATION_NOT_FOUND",
    );
    // Lists: bad paging is refused.
    for bad in [
        "/v1/citizen/applications?limit=0",
        "/v1/citizen/programs?limit=501",
        "/v1/citizen/relying-parties?cursor=nonsense",
        "/v1/citizen/applications?program=points-a",
    ] {
        assert_problem(&app.get(bad, Some(&session)).await, 400, "INVALID_QUERY");
    }

    // The relying parties holding a PPID: the screens and the city (logged in above).
    let got = app.get("/v1/citizen/relying-parties", Some(&session)).await;
    assert_eq!(got.0, 200, "{:?}", got.2);
    let holders: Vec<&str> = got.2["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["relying_party"].as_str())
        .collect();
    assert_eq!(holders, [SCREENS, "city-a"], "{:?}", got.2);
    let page = app
        .get("/v1/citizen/relying-parties?limit=1", Some(&session))
        .await;
    let cursor = page.2["next_cursor"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!cursor.is_empty(), "{:?}", page.2);
    let next = app
        .get(
            &format!("/v1/citizen/relying-parties?limit=1&cursor={cursor}"),
            Some(&session),
        )
        .await;
    assert_eq!(page.2["items"][0]["relying_party"], SCREENS, "{:?}", page.2);
    assert_eq!(
        next.2["items"][0]["relying_party"], "city-a",
        "{:?}",
        next.2
    );
    // Revoke the city's; a retry with the key replays; again, or an unknown RP, is 404.
    let revoke = "/v1/citizen/relying-parties/city-a/revoke";
    let key = Uuid::new_v4().to_string();
    let got = app.post_keyed(revoke, Some(&session), None, &key).await;
    assert_eq!(got.0, 200, "{:?}", got.2);
    assert_eq!(got.2["status"], "revoked");
    let again = app.post_keyed(revoke, Some(&session), None, &key).await;
    assert_eq!((again.0, &again.2), (200, &got.2));
    assert_problem(
        &app.post(revoke, Some(&session), None).await,
        404,
        "PPID_NOT_FOUND",
    );
    assert_problem(
        &app.post(
            "/v1/citizen/relying-parties/nobody/revoke",
            Some(&session),
            None,
        )
        .await,
        404,
        "PPID_NOT_FOUND",
    );
    let got = app.get("/v1/citizen/relying-parties", Some(&session)).await;
    assert_eq!(
        got.2["items"].as_array().map(Vec::len),
        Some(1),
        "{:?}",
        got.2
    );
}

#[tokio::test]
async fn an_id_token_opens_one_session_and_a_session_ends_with_its_ppid() {
    let app = spawn().await;
    let screens = app.rp(SCREENS, "private_business").await;
    let mine = card();
    let held = "/v1/citizen/relying-parties";

    // Traded once: a replay, sequential or concurrent, is refused.
    let id_token = app.pin_login(&screens, &mine).await;
    let first = app.exchange(&screens, &id_token).await;
    assert_eq!(first.0, 201, "{:?}", first.2);
    assert_problem(
        &app.exchange(&screens, &id_token).await,
        401,
        "CITIZEN_ID_TOKEN_USED",
    );
    let id_token = app.pin_login(&screens, &mine).await;
    let mut racers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let request = app
            .http
            .post(app.url("/v1/citizen/sessions"))
            .header("idempotency-key", Uuid::new_v4().to_string())
            .bearer_auth(&screens)
            .json(&json!({ "id_token": id_token }));
        racers.spawn(async move {
            json_of(request.send().await.unwrap_or_else(|e| panic!("{e}"))).await
        });
    }
    let answers: Vec<Got> = racers.join_all().await;
    let opened = answers.iter().filter(|a| a.0 == 201).count();
    assert_eq!(
        opened,
        1,
        "{:?}",
        answers.iter().map(|a| a.0).collect::<Vec<_>>()
    );
    for refused in answers.iter().filter(|a| a.0 != 201) {
        assert_problem(refused, 401, "CITIZEN_ID_TOKEN_USED");
    }
    let session = first.2["session_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let got = app.get(held, Some(&session)).await;
    assert_eq!(got.0, 200, "{:?}", got.2);

    // The citizen revokes the screens' PPID: every session opened with it ends at once.
    let got = app
        .post(&format!("{held}/{SCREENS}/revoke"), Some(&session), None)
        .await;
    assert_eq!(got.0, 200, "{:?}", got.2);
    let other = answers
        .iter()
        .find(|a| a.0 == 201)
        .and_then(|a| a.2["session_token"].as_str())
        .unwrap_or_default()
        .to_owned();
    for s in [&session, &other] {
        assert_problem(
            &app.get(held, Some(s)).await,
            401,
            "CITIZEN_SESSION_REVOKED",
        );
        assert_problem(
            &app.post(
                "/v1/citizen/applications",
                Some(s),
                Some(&json!({ "program": "points-a", "payment_service": "psp-a" })),
            )
            .await,
            401,
            "CITIZEN_SESSION_REVOKED",
        );
    }
    // A new PIN login issues a new PPID at the screens, and a new session works.
    let fresh = app.session(&screens, &mine).await;
    let got = app.get(held, Some(&fresh)).await;
    assert_eq!(got.0, 200, "{:?}", got.2);
}

#[tokio::test]
async fn the_citizen_door_is_a_tenant_matrix() {
    let app = spawn().await;
    let screens = app.rp(SCREENS, "private_business").await;
    let city = app.rp("city-a", "municipality").await;
    let psp = app.rp("psp-a", "payment_service_provider").await;
    app.create_program("points-a", "city-a").await;
    let mine = card();
    let session = app.session(&screens, &mine).await;
    app.pin_login(&city, &mine).await;
    let got = app
        .post(
            "/v1/citizen/applications",
            Some(&session),
            Some(&json!({ "program": "points-a", "payment_service": "psp-a" })),
        )
        .await;
    assert_eq!(got.0, 201, "{:?}", got.2);
    let other = app.session(&screens, &card()).await;

    // Another citizen: nothing of mine, and "mine" reads like "unknown".
    let got = app.get("/v1/citizen/applications", Some(&other)).await;
    assert_eq!(
        got.2["items"].as_array().map(Vec::len),
        Some(0),
        "{:?}",
        got.2
    );
    let theirs = app
        .get("/v1/citizen/applications/points-a", Some(&other))
        .await;
    let unknown = app
        .get("/v1/citizen/applications/points-z", Some(&other))
        .await;
    assert_problem(&theirs, 404, "APPLICATION_NOT_FOUND");
    assert_eq!(theirs.2, unknown.2);
    for path in [
        "/v1/citizen/applications/points-a/link",
        "/v1/citizen/applications/points-a/unlink",
    ] {
        let body = json!({ "account": "a" });
        let body = if path.ends_with("unlink") {
            json!({ "reason": "r" })
        } else {
            body
        };
        assert_problem(
            &app.post(path, Some(&other), Some(&body)).await,
            404,
            "APPLICATION_NOT_FOUND",
        );
    }
    assert_problem(
        &app.post(
            "/v1/citizen/relying-parties/city-a/revoke",
            Some(&other),
            None,
        )
        .await,
        404,
        "PPID_NOT_FOUND",
    );
    let got = app.get("/v1/citizen/relying-parties", Some(&other)).await;
    assert_eq!(got.2["items"][0]["relying_party"], SCREENS, "{:?}", got.2);
    assert_eq!(got.2["items"].as_array().map(Vec::len), Some(1));
    // Mine is untouched by all that.
    let got = app
        .get("/v1/citizen/applications/points-a", Some(&session))
        .await;
    assert_eq!(
        (got.0, &got.2["account"]),
        (200, &Value::Null),
        "{:?}",
        got.2
    );

    // Every endpoint, every other kind of caller.
    let endpoints: Vec<(&str, &str, Option<Value>)> = vec![
        ("GET", "/v1/citizen/programs", None),
        ("GET", "/v1/citizen/applications", None),
        (
            "POST",
            "/v1/citizen/applications",
            Some(json!({ "program": "points-a", "payment_service": "psp-a" })),
        ),
        ("GET", "/v1/citizen/applications/points-a", None),
        (
            "POST",
            "/v1/citizen/applications/points-a/link",
            Some(json!({ "account": "a" })),
        ),
        (
            "POST",
            "/v1/citizen/applications/points-a/unlink",
            Some(json!({ "reason": "r" })),
        ),
        ("GET", "/v1/citizen/relying-parties", None),
        ("POST", "/v1/citizen/relying-parties/city-a/revoke", None),
    ];
    let head = app.head().await;
    for (method, path, body) in &endpoints {
        for (who, token, code) in [
            (
                "municipality",
                Some(city.clone()),
                "CITIZEN_TOKEN_NOT_CITIZEN",
            ),
            ("provider", Some(psp.clone()), "CITIZEN_TOKEN_NOT_CITIZEN"),
            (
                "screens",
                Some(screens.clone()),
                "CITIZEN_TOKEN_NOT_CITIZEN",
            ),
            (
                "operator",
                Some(OPERATOR_TOKEN.to_owned()),
                "CITIZEN_TOKEN_INVALID",
            ),
            ("nobody", None, "CITIZEN_TOKEN_MISSING"),
        ] {
            let got = call(&app, method, path, body.as_ref(), token.as_deref()).await;
            assert_eq!(got.0, 401, "{who} {method} {path}: {:?}", got.2);
            assert_problem(&got, 401, code);
        }
    }
    // None of those refusals wrote anything.
    assert_eq!(app.head().await, head);

    // Sessions expire after 15 minutes.
    app.clock.advance(15 * 60 + 1);
    for (method, path, body) in &endpoints {
        let got = call(&app, method, path, body.as_ref(), Some(&session)).await;
        assert_problem(&got, 401, "CITIZEN_SESSION_EXPIRED");
    }
    assert_eq!(app.head().await, head);
}

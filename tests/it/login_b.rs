//! Login hardening (issue 8, part B): partitioned CRLs, the CRL reload cursor, client-assertion
//! audiences, `crit` and time arithmetic, concurrent first logins at many relying parties.
//! Helpers are local so this module stands on its own next to `auth.rs`.

use crate::pki::{self, pki, CardSpec};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use mykey_api::auth::identity::RequestActor;
use mykey_api::auth::Auth;
use mykey_api::config::Settings;
use mykey_api::startup::Application;
use mykey_tests::TestDb;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

const ISSUER: &str = "https://mykey.test";
const OPERATOR_TOKEN: &str = "test-operator-token-0123456789abcdef";

fn settings(require_crl: bool) -> Settings {
    let vars: HashMap<&str, String> = HashMap::from([
        ("MYKEY_LISTEN", "127.0.0.1:0".to_owned()),
        ("MYKEY_ISSUER", ISSUER.to_owned()),
        (
            "MYKEY_TRUST_ANCHORS",
            pki().anchors_dir.display().to_string(),
        ),
        ("MYKEY_REQUIRE_CRL", require_crl.to_string()),
        ("MYKEY_OPERATOR_TOKEN", OPERATOR_TOKEN.to_owned()),
    ]);
    Settings::from_lookup(|k| vars.get(k).cloned()).unwrap_or_else(|e| panic!("{e}"))
}

struct App {
    base: String,
    http: reqwest::Client,
    db: TestDb,
}

struct Rp {
    id: String,
    key: EcdsaKeyPair,
}

type Got = (u16, Value);

async fn spawn(require_crl: bool) -> App {
    let db = TestDb::create().await;
    let app = Application::build(&settings(require_crl), db.config())
        .await
        .unwrap_or_else(|e| panic!("server did not start: {e}"));
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    App {
        base,
        http: reqwest::Client::new(),
        db,
    }
}

fn b64u(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn es256(key: &EcdsaKeyPair, header: &Value, claims: &Value) -> String {
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

fn new_ec_key() -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .unwrap_or_else(|e| panic!("{e}"));
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn token_endpoint() -> String {
    format!("{ISSUER}/v1/oauth/token")
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    let resp = http
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    json_of(resp).await.1
}

async fn json_of(resp: reqwest::Response) -> Got {
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().await.unwrap_or(Value::Null))
}

impl App {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn operator(&self, path: &str, body: Vec<u8>, content_type: &str) -> Got {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(OPERATOR_TOKEN)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        json_of(resp).await
    }

    async fn register_rp(&self, id: &str) -> Rp {
        self.register_rp_with(id, new_ec_key()).await
    }

    async fn register_rp_with(&self, id: &str, key: EcdsaKeyPair) -> Rp {
        let p = key.public_key().as_ref();
        let jwk =
            json!({ "kty": "EC", "crv": "P-256", "x": b64u(&p[1..33]), "y": b64u(&p[33..65]) });
        let body = json!({ "id": id, "kind": "private_business", "code": format!("code-{id}"), "name": id, "jwk": jwk });
        let got = self
            .operator(
                "/v1/operator/relying-parties",
                body.to_string().into_bytes(),
                "application/json",
            )
            .await;
        assert_eq!(got.0, 201, "register {id}: {:?}", got.1);
        Rp {
            id: id.to_owned(),
            key,
        }
    }

    async fn token_for(&self, assertion: &str) -> Got {
        let resp = self
            .http
            .post(self.url("/v1/oauth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion),
            ])
            .send()
            .await
            .unwrap_or_else(|e| panic!("token: {e}"));
        json_of(resp).await
    }

    async fn access_token(&self, rp: &Rp) -> String {
        let claims = json!({ "iss": rp.id, "sub": rp.id, "aud": token_endpoint(), "exp": now() + 60, "jti": uuid::Uuid::new_v4().to_string() });
        let got = self
            .token_for(&es256(&rp.key, &json!({ "alg": "ES256" }), &claims))
            .await;
        assert_eq!(got.0, 200, "token: {:?}", got.1);
        got.1["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn pin_login(&self, token: &str, card: &pki::Card) -> Got {
        let resp = self
            .http
            .post(self.url("/v1/auth/challenges"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("challenge: {e}"));
        let c = json_of(resp).await;
        assert_eq!(c.0, 201, "challenge: {:?}", c.1);
        let nonce = URL_SAFE_NO_PAD
            .decode(c.1["nonce"].as_str().unwrap_or_default())
            .unwrap_or_default();
        let body = json!({ "challenge_id": c.1["challenge_id"], "certificate": card.b64(), "signature": STANDARD.encode(card.sign(&nonce)) });
        let resp = self
            .http
            .post(self.url("/v1/auth/login"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("login: {e}"));
        json_of(resp).await
    }
}

fn assert_code(got: &Got, status: u16, code: &str) {
    assert_eq!(got.0, status, "status for {code}: {:?}", got.1);
    assert_eq!(got.1["code"], code, "{:?}", got.1);
}

/// A CRL of `ca` for one distribution point only (an IssuingDistributionPoint with a
/// `distributionPoint`): one partition of the CA's revocations.
fn partition_crl(ca: &pki::Ca, uri: &str, revoked: &[u64], this_update: OffsetDateTime) -> Vec<u8> {
    let params = rcgen::CertificateRevocationListParams {
        this_update,
        next_update: this_update + Duration::days(1),
        crl_number: rcgen::SerialNumber::from(this_update.unix_timestamp() as u64),
        issuing_distribution_point: Some(rcgen::CrlIssuingDistributionPoint {
            distribution_point: rcgen::CrlDistributionPoint {
                uris: vec![uri.to_owned()],
            },
            scope: None,
        }),
        revoked_certs: revoked
            .iter()
            .map(|s| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(*s),
                revocation_time: this_update,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    params
        .signed_by(&ca.cert, &ca.key)
        .unwrap_or_else(|e| panic!("CRL: {e}"))
        .der()
        .to_vec()
}

#[tokio::test]
async fn partitioned_crls_are_refused_so_a_later_partition_never_unrevokes_a_card() {
    let app = spawn(true).await;
    let rp = app.register_rp("rp-partition").await;
    let p = pki();
    let s = CardSpec::valid(&p.ca_a).issue();
    let t0 = OffsetDateTime::now_utc() - Duration::hours(2);
    // P1 lists S; P2 (later thisUpdate, another partition) does not.
    let p1 = partition_crl(&p.ca_a, "http://crl.test/p1.crl", &[s.serial], t0);
    let p2 = partition_crl(
        &p.ca_a,
        "http://crl.test/p2.crl",
        &[],
        t0 + Duration::hours(1),
    );
    for crl in [p1, p2] {
        let got = app
            .operator("/v1/operator/crls", crl, "application/pkix-crl")
            .await;
        assert_code(&got, 400, "CRL_UNSUPPORTED");
    }
    let t = app.access_token(&rp).await;
    let refused = app.pin_login(&t, &s).await;
    assert_eq!(
        refused.0, 503,
        "no complete CRL: fail closed {:?}",
        refused.1
    );
    assert_eq!(refused.1["code"], "CRL_MISSING");
    // The CA's complete CRL is accepted and revokes S.
    let full = pki::crl(&p.ca_a, &[s.serial], t0 + Duration::hours(1), 3);
    let got = app
        .operator("/v1/operator/crls", full, "application/pkix-crl")
        .await;
    assert_eq!(got.0, 200, "{:?}", got.1);
    assert_code(&app.pin_login(&t, &s).await, 403, "CERTIFICATE_REVOKED");
}

async fn auth_on(db: &TestDb) -> Arc<Auth> {
    let store = mykey_store::pg::PgEventStore::connect(db.config(), Default::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let identity = mykey_api::auth::identity::default_identity(&store, None);
    Auth::build(settings(true).auth, db.config(), identity)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn operator_actor() -> RequestActor {
    RequestActor::operator("test-operator", uuid::Uuid::new_v4(), None)
}

#[tokio::test]
async fn a_crl_whose_load_commits_late_still_reaches_every_instance() {
    let db = TestDb::create().await;
    let (a, b) = (auth_on(&db).await, auth_on(&db).await);
    let p = pki();
    let t0 = OffsetDateTime::now_utc() - Duration::hours(2);
    let late_der = pki::crl(&p.ca_a, &[7], t0, 1);
    let late =
        mykey_api::auth::crl::parse_crl(&late_der, &a.anchors).unwrap_or_else(|e| panic!("{e}"));
    // A load of CA A's CRL takes its row id, then is slow to commit (it is marking known
    // certificates, or its transaction is just late) ...
    let mut slow = db.client().await;
    let tx = slow.transaction().await.unwrap_or_else(|e| panic!("{e}"));
    let ts = |s: i64| chrono::DateTime::from_timestamp(s, 0).unwrap_or_default();
    tx.execute(
        "INSERT INTO auth_crl (ca_key_id, issuer, this_update, next_update, der, loaded_by) \
         VALUES ($1, $2, $3, $4, $5, 'slow')",
        &[
            &late.ca_key_id,
            &late.issuer,
            &ts(late.this_update),
            &ts(late.next_update),
            &late_der,
        ],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // ... while CA B's CRL is loaded and committed at instance A, with a larger row id.
    let (quick, _) = a
        .load_crl(&pki::crl(&p.ca_b, &[8], t0, 1), &operator_actor())
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    b.reload_crls().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        b.crls.get(&quick.ca_key_id).is_some(),
        "B installs CA B's CRL"
    );
    assert!(b.crls.get(&late.ca_key_id).is_none(), "not committed yet");
    tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
    b.reload_crls().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        b.crls.get(&late.ca_key_id).is_some(),
        "the late commit is installed at the next reload (a row-id watermark skips it)"
    );

    // Two truly concurrent loads at two instances (newer CRLs of both CAs): a third instance
    // and both loaders end with both.
    let t1 = t0 + Duration::hours(1);
    let (da, db_) = (
        pki::crl(&p.ca_a, &[9], t1, 2),
        pki::crl(&p.ca_b, &[10], t1, 2),
    );
    let who = operator_actor();
    let (ra, rb) = tokio::join!(a.load_crl(&da, &who), b.load_crl(&db_, &who));
    let ((ra, _), (rb, _)) = (
        ra.unwrap_or_else(|e| panic!("{e:?}")),
        rb.unwrap_or_else(|e| panic!("{e:?}")),
    );
    let c = auth_on(&db).await;
    for auth in [&a, &b, &c] {
        auth.reload_crls().await.unwrap_or_else(|e| panic!("{e}"));
        for key in [&ra.ca_key_id, &rb.ca_key_id] {
            let installed = auth.crls.get(key).map(|c| c.this_update);
            assert_eq!(installed, Some(t1.unix_timestamp()), "{key}");
        }
    }
}

#[tokio::test]
async fn assertion_audience_crit_and_time_values_are_checked_exactly() {
    let app = spawn(false).await;
    let rp = app.register_rp("rp-aud").await;
    let header = json!({ "alg": "ES256" });
    let claims = |aud: Value, exp: Value| json!({ "iss": rp.id, "sub": rp.id, "aud": aud, "exp": exp, "jti": uuid::Uuid::new_v4().to_string() });
    let sign = |h: &Value, c: &Value| es256(&rp.key, h, c);
    for aud in [
        json!([token_endpoint(), "https://other.example/token"]),
        json!(["https://other.example/token", ISSUER]),
        json!([]),
        json!(format!("{ISSUER}/")),
    ] {
        let got = app
            .token_for(&sign(&header, &claims(aud.clone(), json!(now() + 60))))
            .await;
        assert_code(&got, 401, "ASSERTION_AUDIENCE");
    }
    for aud in [json!(token_endpoint()), json!(ISSUER), json!([ISSUER])] {
        let got = app
            .token_for(&sign(&header, &claims(aud.clone(), json!(now() + 60))))
            .await;
        assert_eq!(got.0, 200, "aud {aud}: {:?}", got.1);
    }
    let crit = json!({ "alg": "ES256", "crit": ["exp"], "exp": 1 });
    let got = app
        .token_for(&sign(&crit, &claims(json!(ISSUER), json!(now() + 60))))
        .await;
    assert_code(&got, 400, "ASSERTION_MALFORMED");
    assert!(
        got.1["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("crit"),
        "{:?}",
        got.1
    );
    // Extreme times: refused with their code, never an overflow (a panic is a 500 or a reset).
    for (exp, status, code) in [
        (json!(i64::MAX), 401, "ASSERTION_LIFETIME"),
        (json!(i64::MIN), 401, "ASSERTION_EXPIRED"),
        (json!(-1), 401, "ASSERTION_EXPIRED"),
        (json!(u64::MAX), 400, "ASSERTION_MALFORMED"),
        (json!(1.5e300), 400, "ASSERTION_MALFORMED"),
    ] {
        let got = app
            .token_for(&sign(&header, &claims(json!(ISSUER), exp.clone())))
            .await;
        assert_code(&got, status, code);
    }
    let nbf = json!({ "iss": rp.id, "sub": rp.id, "aud": ISSUER, "exp": now() + 60, "nbf": i64::MAX, "jti": "n1" });
    assert_code(
        &app.token_for(&sign(&header, &nbf)).await,
        401,
        "ASSERTION_NOT_YET_VALID",
    );
}

#[tokio::test]
async fn one_card_logging_in_first_at_24_relying_parties_at_once_gets_24_ppids_of_one_subject() {
    const RPS: usize = 24;
    let app = Arc::new(spawn(false).await);
    let mut tokens = Vec::new();
    for i in 0..RPS {
        let rp = app.register_rp(&format!("rp-burst-{i}")).await;
        tokens.push(app.access_token(&rp).await);
    }
    let card = Arc::new(CardSpec::valid(&pki().ca_a).issue());
    let tasks: Vec<_> = tokens
        .into_iter()
        .map(|t| {
            let (app, card) = (app.clone(), card.clone());
            tokio::spawn(async move { app.pin_login(&t, &card).await })
        })
        .collect();
    let mut ppids = HashSet::new();
    for task in tasks {
        let got = task.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(!got.1.to_string().contains("subject-"), "{:?}", got.1);
        assert_eq!(got.0, 200, "{:?}", got.1);
        ppids.insert(got.1["ppid"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(ppids.len(), RPS, "pairwise: one PPID per relying party");

    let store = mykey_store::pg::PgEventStore::connect(app.db.config(), Default::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let cmds = mykey_commands::Commands::new(store);
    let issuer = mykey_api::auth::jpki::TrustAnchors::from_dir(&pki().anchors_dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .next()
        .map(|a| a.subject.clone())
        .unwrap_or_default();
    let serial = mykey_api::auth::jpki::normalize_serial(&card.serial_hex()).unwrap_or_default();
    let cert =
        mykey_commands::CertificateRef::new(&issuer, &serial).unwrap_or_else(|e| panic!("{e:?}"));
    let subject = cmds
        .resolve_certificate(&cert)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("the card has a subject"));
    let state = cmds
        .load_subject(subject)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let held: HashSet<String> = state.active_ppids.values().map(|p| p.to_string()).collect();
    assert_eq!(held, ppids, "one subject holds all 24 PPIDs");
}

/// A login role in `mykey_runtime` for one test, dropped with it (roles are cluster-wide).
struct RuntimeLogin(String);

impl RuntimeLogin {
    async fn create() -> RuntimeLogin {
        let name = format!("mykey_rt_{}", uuid::Uuid::new_v4().simple());
        let admin = mykey_tests::connect(&mykey_tests::admin_config()).await;
        admin
            .batch_execute(&format!("CREATE ROLE {name} LOGIN IN ROLE mykey_runtime"))
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        RuntimeLogin(name)
    }

    fn config(&self, db: &TestDb) -> tokio_postgres::Config {
        let mut c = db.config();
        c.user(&self.0);
        c
    }
}

impl Drop for RuntimeLogin {
    fn drop(&mut self) {
        let name = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let admin = mykey_tests::connect(&mykey_tests::admin_config()).await;
                admin
                    .batch_execute(&format!("DROP ROLE IF EXISTS {name}"))
                    .await
                    .ok()
            })
        })
        .join();
    }
}

#[tokio::test]
async fn the_runtime_role_can_read_and_append_but_never_change_or_unprotect_the_logs() {
    let db = TestDb::create().await;
    // The owner (here the test cluster's superuser) migrates; it creates mykey_runtime.
    mykey_store::pg::migrations::migrate_database(&db.config())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let login = RuntimeLogin::create().await;

    // The whole server runs as the runtime role: start-up, RP registration (events), tokens
    // (replay guard, audit), a CRL load and a signing-key rotation.
    let app = Application::build(&settings(false), login.config(&db))
        .await
        .unwrap_or_else(|e| panic!("server as the runtime role: {e}"));
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let app = App {
        base,
        http: reqwest::Client::new(),
        db,
    };
    let rp = app.register_rp("rp-runtime").await;
    app.access_token(&rp).await;
    let crl = pki::crl(&pki().ca_a, &[], OffsetDateTime::now_utc(), 1);
    let got = app
        .operator("/v1/operator/crls", crl, "application/pkix-crl")
        .await;
    assert_eq!(got.0, 200, "{:?}", got.1);
    let got = app
        .operator(
            "/v1/operator/signing-keys/rotate",
            vec![],
            "application/json",
        )
        .await;
    assert_eq!(got.0, 200, "{:?}", got.1);

    let rt = mykey_tests::connect(&login.config(&app.db)).await;
    for table in ["events", "commands", "auth_audit", "auth_crl"] {
        let n: i64 = rt
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .and_then(|r| r.try_get(0))
            .unwrap_or_else(|e| panic!("read {table}: {e}"));
        assert!(n > 0, "{table} was appended to");
    }
    for sql in [
        "ALTER TABLE events DISABLE TRIGGER events_refuse_update_delete",
        "ALTER TABLE events DISABLE TRIGGER ALL",
        "DROP TRIGGER events_refuse_truncate ON events",
        "ALTER TABLE auth_audit DISABLE TRIGGER auth_audit_no_update",
        "UPDATE events SET actor_id = 'forged'",
        "DELETE FROM events",
        "TRUNCATE events",
        "UPDATE commands SET recorded_at = now()",
        "DELETE FROM commands",
        "UPDATE auth_audit SET outcome = 'OK'",
        "DELETE FROM auth_audit",
        "TRUNCATE auth_audit",
        "DELETE FROM auth_crl",
        "SET session_replication_role = replica",
        "CREATE TABLE public.sneaky (x int)",
    ] {
        let err = rt
            .batch_execute(sql)
            .await
            .err()
            .unwrap_or_else(|| panic!("{sql}: allowed for the runtime role"));
        let code = err.code().cloned();
        assert_eq!(
            code,
            Some(tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {err:?}"
        );
        let msg = err
            .as_db_error()
            .map(|e| e.message().to_owned())
            .unwrap_or_default();
        assert!(
            msg.contains("permission denied") || msg.contains("must be owner"),
            "{sql}: refused by privileges, not only by a trigger: {msg}"
        );
    }
}

#[tokio::test]
async fn renewal_issuers_in_rfc4514_and_openssl_spellings_link_and_the_cli_fails_on_a_bad_line() {
    let app = spawn(false).await;
    let rp = app.register_rp("rp-renew-b").await;
    let t = app.access_token(&rp).await;
    let p = pki();
    let cards: Vec<pki::Card> = (0..3).map(|_| CardSpec::valid(&p.ca_a).issue()).collect();
    let renewed: Vec<pki::Card> = (0..3).map(|_| CardSpec::valid(&p.ca_b).issue()).collect();
    for c in &cards {
        assert_eq!(app.pin_login(&t, c).await.0, 200);
    }
    // As `openssl x509 -noout -issuer -nameopt RFC2253` and `openssl x509 -noout -issuer` print
    // the test CAs' name, and a hand-typed variant (case, spaces).
    let spellings = [
        "OU=Japan Agency for Local Authority Information Systems,OU=JPKI for user authentication,O=JPKI,C=JP",
        "issuer=C = JP, O = JPKI, OU = JPKI for user authentication, OU = Japan Agency for Local Authority Information Systems",
        "ou=japan agency for local  authority information systems, ou=JPKI for user authentication, o=jpki, c=jp",
    ];
    let mut csv = String::from("issuer,old_serial,new_serial\n");
    for ((issuer, old), new) in spellings.iter().zip(&cards).zip(&renewed) {
        csv.push_str(&format!(
            "\"{issuer}\",{},{}\n",
            old.serial_hex(),
            new.serial_hex()
        ));
    }
    csv.push_str(&format!(
        "\"O=JPKI,C=JP\",{},{}\n",
        cards[0].serial_hex(),
        renewed[0].serial_hex()
    ));
    let got = app
        .operator("/v1/operator/renewals", csv.into_bytes(), "text/csv")
        .await;
    assert_eq!(got.0, 200, "{:?}", got.1);
    assert_eq!(got.1["linked"], 3, "{:?}", got.1);
    assert_eq!(got.1["failed"][0]["line"], 5, "{:?}", got.1);
    assert_eq!(got.1["failed"][0]["code"], "RENEWAL_ISSUER_UNKNOWN");
    for (old, new) in cards.iter().zip(&renewed) {
        let (a, b) = (app.pin_login(&t, old).await, app.pin_login(&t, new).await);
        assert_eq!(b.0, 200, "{:?}", b.1);
        assert_eq!(a.1["ppid"], b.1["ppid"], "the renewed card keeps the PPID");
    }

    // The CLI reports the same lines and exits non-zero when any failed.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("renewals-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let file = dir.join("links.csv");
    std::fs::write(&file, format!("\"{}\",zz,01\n", spellings[0]))
        .unwrap_or_else(|e| panic!("{e}"));
    let args = ["import-renewals", "--file", &file.display().to_string()].map(str::to_owned);
    let out = mykey_api::cli::run(&settings(false), app.db.config(), &args)
        .await
        .map_err(|e| e.to_string());
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.as_ref()
            .is_err_and(|e| e.contains("1 renewal line(s) failed")),
        "{out:?}"
    );
}

#[tokio::test]
async fn tokens_interoperate_with_jsonwebtoken_in_both_directions() {
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
    let app = spawn(false).await;
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .unwrap_or_else(|e| panic!("{e}"));
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .unwrap_or_else(|e| panic!("{e}"));
    let rp = app.register_rp_with("rp-jwt", key).await;

    // A client assertion signed by jsonwebtoken is accepted by the server ...
    let claims = json!({ "iss": rp.id, "sub": rp.id, "aud": token_endpoint(), "exp": now() + 60, "jti": "jwt-1" });
    let assertion = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_der(pkcs8.as_ref()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let got = app.token_for(&assertion).await;
    assert_eq!(got.0, 200, "{:?}", got.1);
    let access = got.1["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // ... and the server's access and ID tokens verify with jsonwebtoken against the JWKS.
    let jwks = get_json(&app.http, &app.url("/.well-known/jwks.json")).await;
    let decoding_key = |token: &str| {
        let kid = jsonwebtoken::decode_header(token)
            .unwrap_or_else(|e| panic!("{e}"))
            .kid
            .unwrap_or_default();
        let jwk = jwks["keys"]
            .as_array()
            .and_then(|ks| ks.iter().find(|k| k["kid"] == kid.as_str()))
            .unwrap_or_else(|| panic!("kid {kid} not in {jwks}"));
        DecodingKey::from_ec_components(
            jwk["x"].as_str().unwrap_or_default(),
            jwk["y"].as_str().unwrap_or_default(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let validation = |aud: &str| {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[aud]);
        v.set_issuer(&[ISSUER]);
        v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        v
    };
    let at = jsonwebtoken::decode::<Value>(&access, &decoding_key(&access), &validation(ISSUER))
        .unwrap_or_else(|e| panic!("access token: {e}"));
    assert_eq!(at.header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(at.claims["sub"], rp.id.as_str());

    let card = CardSpec::valid(&pki().ca_a).issue();
    let login = app.pin_login(&access, &card).await;
    assert_eq!(login.0, 200, "{:?}", login.1);
    let id_token = login.1["id_token"].as_str().unwrap_or_default().to_owned();
    let it =
        jsonwebtoken::decode::<Value>(&id_token, &decoding_key(&id_token), &validation(&rp.id))
            .unwrap_or_else(|e| panic!("ID token: {e}"));
    assert_eq!(it.claims["sub"], login.1["ppid"]);
    assert_eq!(it.claims["acr"], "urn:mykey:acr:pin");
    // The ID token is for the RP, not an access token for the platform.
    assert!(jsonwebtoken::decode::<Value>(
        &id_token,
        &decoding_key(&id_token),
        &validation(ISSUER)
    )
    .is_err());
    let mut tampered = id_token.clone();
    tampered.push('A');
    assert!(jsonwebtoken::decode::<Value>(
        &tampered,
        &decoding_key(&id_token),
        &validation(&rp.id)
    )
    .is_err());
}

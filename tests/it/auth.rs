//! Citizen-card login end to end: a real server (Application::build, port 0) on its own
//! database, a JPKI-profile test PKI (tests/it/pki.rs), relying parties with their own keys.
//! ID tokens are verified with `ring` directly against the served JWKS.

use crate::pki::{self, pki, CardSpec, Profile};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use mykey_api::auth::clock::Clock;
use mykey_api::config::Settings;
use mykey_api::startup::Application;
use mykey_tests::TestDb;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use std::collections::HashMap;
use time::{Duration, OffsetDateTime};

const ISSUER: &str = "https://mykey.test";
const OPERATOR_TOKEN: &str = "test-operator-token-0123456789abcdef";

pub(crate) struct App {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    pub(crate) clock: Clock,
    pub(crate) db: TestDb,
}

pub(crate) struct Rp {
    id: String,
    key: EcdsaKeyPair,
}

/// The tests' server configuration, plus `extra` variables (which win).
fn settings_with(
    require_crl: bool,
    extra: &[(&'static str, String)],
) -> Result<Settings, mykey_api::config::ConfigError> {
    let mut vars: HashMap<&str, String> = HashMap::from([
        ("MYKEY_LISTEN", "127.0.0.1:0".to_owned()),
        ("MYKEY_ISSUER", ISSUER.to_owned()),
        (
            "MYKEY_TRUST_ANCHORS",
            pki().anchors_dir.display().to_string(),
        ),
        ("MYKEY_REQUIRE_CRL", require_crl.to_string()),
        ("MYKEY_OPERATOR_TOKEN", OPERATOR_TOKEN.to_owned()),
    ]);
    vars.extend(extra.iter().cloned());
    Settings::from_lookup(|k| vars.get(k).cloned())
}

pub(crate) fn settings(require_crl: bool) -> Settings {
    settings_with(require_crl, &[]).unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) async fn start(db: &TestDb, settings: &Settings) -> String {
    let app = Application::build(settings, db.config())
        .await
        .unwrap_or_else(|e| panic!("server did not start: {e}"));
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    base
}

pub(crate) async fn spawn(require_crl: bool) -> App {
    let db = TestDb::create().await;
    let mut s = settings(require_crl);
    let clock = Clock::system();
    s.auth.clock = clock.clone();
    let base = start(&db, &s).await;
    App {
        base,
        http: reqwest::Client::new(),
        clock,
        db,
    }
}

fn b64u(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A compact JWS signed with ES256 by `key` (independent of the server's code).
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

fn ec_jwk(key: &EcdsaKeyPair) -> Value {
    let p = key.public_key().as_ref();
    json!({ "kty": "EC", "crv": "P-256", "x": b64u(&p[1..33]), "y": b64u(&p[33..65]) })
}

fn assertion(rp: &Rp, aud: &str, exp_in: i64, jti: &str) -> String {
    es256(
        &rp.key,
        &json!({ "alg": "ES256", "typ": "JWT" }),
        &json!({ "iss": rp.id, "sub": rp.id, "aud": aud, "exp": now() + exp_in, "iat": now(), "jti": jti }),
    )
}

async fn json_of(resp: reqwest::Response) -> (u16, String, Value) {
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

/// Asserts a 4xx (or the given status) problem+json with `code`.
pub(crate) fn assert_problem(got: &(u16, String, Value), status: u16, code: &str) {
    assert_eq!(got.0, status, "status for {code}: {:?}", got.2);
    assert_eq!(got.1, "application/problem+json", "content type for {code}");
    assert_eq!(got.2["code"], code, "{:?}", got.2);
}

impl App {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn operator(
        &self,
        path: &str,
        body: reqwest::Body,
        content_type: &str,
    ) -> (u16, String, Value) {
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

    pub(crate) async fn register_rp(&self, id: &str) -> Rp {
        let key = new_ec_key();
        let body = json!({ "id": id, "kind": "private_business", "code": format!("code-{id}"), "name": id, "jwk": ec_jwk(&key) });
        let got = self
            .operator(
                "/v1/operator/relying-parties",
                body.to_string().into(),
                "application/json",
            )
            .await;
        assert_eq!(got.0, 201, "register {id}: {:?}", got.2);
        Rp {
            id: id.to_owned(),
            key,
        }
    }

    async fn token_with(&self, form: &[(&str, &str)]) -> (u16, String, Value) {
        let resp = self
            .http
            .post(self.url("/v1/oauth/token"))
            .form(form)
            .send()
            .await
            .unwrap_or_else(|e| panic!("token: {e}"));
        json_of(resp).await
    }

    async fn token_for_assertion(&self, assertion: &str) -> (u16, String, Value) {
        self.token_with(&[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
        ])
        .await
    }

    pub(crate) async fn access_token(&self, rp: &Rp) -> String {
        let a = assertion(
            rp,
            &format!("{ISSUER}/v1/oauth/token"),
            60,
            &uuid::Uuid::new_v4().to_string(),
        );
        let got = self.token_for_assertion(&a).await;
        assert_eq!(got.0, 200, "token: {:?}", got.2);
        got.2["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn post_json(&self, path: &str, token: &str, body: &Value) -> (u16, String, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        json_of(resp).await
    }

    /// (challenge_id, nonce bytes)
    pub(crate) async fn challenge(&self, token: &str) -> (String, Vec<u8>) {
        let resp = self
            .http
            .post(self.url("/v1/auth/challenges"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("challenge: {e}"));
        let got = json_of(resp).await;
        assert_eq!(got.0, 201, "challenge: {:?}", got.2);
        let nonce = URL_SAFE_NO_PAD
            .decode(got.2["nonce"].as_str().unwrap_or_default())
            .unwrap_or_default();
        assert_eq!(nonce.len(), 32);
        (
            got.2["challenge_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            nonce,
        )
    }

    pub(crate) async fn pin_login(&self, token: &str, card: &pki::Card) -> (u16, String, Value) {
        let (id, nonce) = self.challenge(token).await;
        let body = json!({ "challenge_id": id, "certificate": card.b64(), "signature": STANDARD.encode(card.sign(&nonce)) });
        self.post_json("/v1/auth/login", token, &body).await
    }

    pub(crate) async fn kazashi(&self, token: &str, card: &pki::Card) -> (u16, String, Value) {
        self.post_json(
            "/v1/auth/kazashi",
            token,
            &json!({ "certificate": card.b64() }),
        )
        .await
    }

    /// The event log's head: refusals must not move it.
    async fn log_head(&self) -> u64 {
        let resp = self
            .http
            .get(self.url("/readyz"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("readyz: {e}"));
        json_of(resp).await.2["log_head"]
            .as_u64()
            .unwrap_or(u64::MAX)
    }

    async fn jwks(&self) -> Value {
        let resp = self
            .http
            .get(self.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("jwks: {e}"));
        json_of(resp).await.2
    }

    /// Verifies an ID token against the served JWKS with ring (not the server's JWS code)
    /// and returns (header, claims).
    async fn verify_id_token(&self, token: &str) -> (Value, Value) {
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode = |s: &str| -> Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap_or_default())
                .unwrap_or(Value::Null)
        };
        let (header, claims) = (decode(parts[0]), decode(parts[1]));
        assert_eq!(header["alg"], "ES256");
        let jwks = self.jwks().await;
        let jwk = jwks["keys"]
            .as_array()
            .and_then(|ks| ks.iter().find(|k| k["kid"] == header["kid"]))
            .unwrap_or_else(|| panic!("kid {} not in JWKS {jwks}", header["kid"]));
        let mut point = vec![4u8];
        for c in ["x", "y"] {
            point.extend(
                URL_SAFE_NO_PAD
                    .decode(jwk[c].as_str().unwrap_or_default())
                    .unwrap_or_default(),
            );
        }
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap_or_default();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &point)
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .unwrap_or_else(|_| panic!("ID token signature does not verify against the JWKS"));
        (header, claims)
    }
}

#[tokio::test]
async fn pin_login_issues_pairwise_ppids_and_kazashi_needs_registration() {
    let app = spawn(false).await;
    let (rp_a, rp_b) = (app.register_rp("rp-a").await, app.register_rp("rp-b").await);
    let (ta, tb) = (app.access_token(&rp_a).await, app.access_token(&rp_b).await);
    let card = CardSpec::valid(&pki().ca_a).issue();

    // かざし before any PIN registration: refused, nothing written.
    let head = app.log_head().await;
    assert_problem(&app.kazashi(&ta, &card).await, 404, "NOT_REGISTERED");
    assert_eq!(app.log_head().await, head);

    let first = app.pin_login(&ta, &card).await;
    assert_eq!(first.0, 200, "{:?}", first.2);
    assert_eq!(first.2["acr"], "urn:mykey:acr:pin");
    let ppid = first.2["ppid"].as_str().unwrap_or_default().to_owned();
    assert!(!ppid.is_empty());
    assert!(app.log_head().await > head, "first login writes events");

    let (header, claims) = app
        .verify_id_token(first.2["id_token"].as_str().unwrap_or_default())
        .await;
    assert!(header["kid"].is_string());
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], "rp-a");
    assert_eq!(claims["sub"], ppid.as_str());
    assert_eq!(claims["acr"], "urn:mykey:acr:pin");
    assert!(claims["jti"].is_string());
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap_or(0),
        claims["exp"].as_i64().unwrap_or(0),
    );
    assert!(exp > iat && (iat - now()).abs() < 60, "iat {iat} exp {exp}");

    // Same card, same RP: same PPID, and nothing new is written.
    let head = app.log_head().await;
    let again = app.pin_login(&ta, &card).await;
    assert_eq!(again.2["ppid"], ppid.as_str());
    assert_eq!(app.log_head().await, head);

    // Same card, another RP: another PPID.
    let other = app.pin_login(&tb, &card).await;
    assert_eq!(other.0, 200, "{:?}", other.2);
    assert_ne!(other.2["ppid"], ppid.as_str());

    // かざし after registration: same PPID, lower assurance.
    let k = app.kazashi(&ta, &card).await;
    assert_eq!(k.0, 200, "{:?}", k.2);
    assert_eq!(k.2["ppid"], ppid.as_str());
    assert_eq!(k.2["acr"], "urn:mykey:acr:kazashi");
    let (_, kc) = app
        .verify_id_token(k.2["id_token"].as_str().unwrap_or_default())
        .await;
    assert_eq!(kc["acr"], "urn:mykey:acr:kazashi");
    assert_eq!(kc["sub"], ppid.as_str());

    // The second CA generation (same subject name, other key) is accepted too.
    let card_b = CardSpec::valid(&pki().ca_b).issue();
    let b = app.pin_login(&ta, &card_b).await;
    assert_eq!(b.0, 200, "{:?}", b.2);
    assert_ne!(b.2["ppid"], ppid.as_str(), "another card, another citizen");

    // Discovery document.
    let resp = app
        .http
        .get(app.url("/.well-known/openid-configuration"))
        .send()
        .await;
    let conf = json_of(resp.unwrap_or_else(|e| panic!("{e}"))).await.2;
    assert_eq!(conf["issuer"], ISSUER);
    assert_eq!(conf["jwks_uri"], format!("{ISSUER}/.well-known/jwks.json"));
}

#[tokio::test]
async fn a_renewed_card_keeps_its_ppid() {
    let app = spawn(false).await;
    let rp = app.register_rp("rp-renew").await;
    let t = app.access_token(&rp).await;
    let old = CardSpec::valid(&pki().ca_a).issue();
    // The renewed card may come from the newer CA generation: same issuer name.
    let new = CardSpec {
        key_index: 1,
        ..CardSpec::valid(&pki().ca_b)
    }
    .issue();
    let first = app.pin_login(&t, &old).await;
    assert_eq!(first.0, 200, "{:?}", first.2);

    let issuer = mykey_api::auth::jpki::TrustAnchors::from_dir(&pki().anchors_dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .next()
        .map(|a| a.subject.clone())
        .unwrap_or_default();
    let csv = format!(
        "issuer,old_serial,new_serial\n\"{issuer}\",{},{}\n\"{issuer}\",zz,01\n",
        old.serial_hex(),
        new.serial_hex()
    );
    let got = app
        .operator("/v1/operator/renewals", csv.into(), "text/csv")
        .await;
    assert_eq!(got.0, 200, "{:?}", got.2);
    assert_eq!(got.2["linked"], 1, "{:?}", got.2);
    assert_eq!(got.2["failed"][0]["code"], "RENEWAL_SERIAL_MALFORMED");

    let k = app.kazashi(&t, &new).await;
    assert_eq!(k.0, 200, "kazashi with the renewed card: {:?}", k.2);
    assert_eq!(k.2["ppid"], first.2["ppid"]);
    let pin = app.pin_login(&t, &new).await;
    assert_eq!(pin.2["ppid"], first.2["ppid"]);
}

#[tokio::test]
async fn every_refusal_is_a_problem_with_its_own_code_and_writes_nothing() {
    let app = spawn(false).await;
    let (rp, other_rp) = (app.register_rp("rp-x").await, app.register_rp("rp-y").await);
    let (t, t_other) = (
        app.access_token(&rp).await,
        app.access_token(&other_rp).await,
    );
    let p = pki();
    let good = CardSpec::valid(&p.ca_a).issue();
    let now_t = OffsetDateTime::now_utc();
    let expired = CardSpec {
        not_before: now_t - Duration::days(3000),
        not_after: now_t - Duration::days(1),
        ..CardSpec::valid(&p.ca_a)
    }
    .issue();
    let not_yet = CardSpec {
        not_before: now_t + Duration::days(1),
        ..CardSpec::valid(&p.ca_a)
    }
    .issue();
    let rogue_same = CardSpec::valid(&p.rogue_same_name).issue();
    let rogue_other = CardSpec::valid(&p.rogue_other_name).issue();
    let other_policy = CardSpec {
        profile: Profile::OtherPolicyCritical,
        ..CardSpec::valid(&p.ca_a)
    }
    .issue();
    let head = app.log_head().await;

    // Certificate checks (PIN and かざし share them).
    for (card, status, code) in [
        (&expired, 403, "CERTIFICATE_EXPIRED"),
        (&not_yet, 403, "CERTIFICATE_NOT_YET_VALID"),
        (&rogue_same, 403, "CERTIFICATE_SIGNATURE_INVALID"),
        (&rogue_other, 403, "CERTIFICATE_UNKNOWN_ISSUER"),
        (&other_policy, 403, "CERTIFICATE_POLICY"),
    ] {
        assert_problem(&app.pin_login(&t, card).await, status, code);
        assert_problem(&app.kazashi(&t, card).await, status, code);
    }

    // Signature: by another key, and over another nonce.
    let (id, _nonce) = app.challenge(&t).await;
    let wrong_key = pki::sign_with(&p.card_keys[1], b"whatever");
    let body = json!({ "challenge_id": id, "certificate": good.b64(), "signature": STANDARD.encode(wrong_key) });
    assert_problem(
        &app.post_json("/v1/auth/login", &t, &body).await,
        403,
        "SIGNATURE_INVALID",
    );
    let (id, _nonce) = app.challenge(&t).await;
    let (_, other_nonce) = app.challenge(&t).await;
    let body = json!({ "challenge_id": id, "certificate": good.b64(), "signature": STANDARD.encode(good.sign(&other_nonce)) });
    assert_problem(
        &app.post_json("/v1/auth/login", &t, &body).await,
        403,
        "SIGNATURE_INVALID",
    );

    // Challenges: reused, another RP's, unknown, expired.
    let (id, nonce) = app.challenge(&t).await;
    let body = json!({ "challenge_id": id, "certificate": good.b64(), "signature": STANDARD.encode(good.sign(&nonce)) });
    assert_problem(
        &app.post_json("/v1/auth/login", &t_other, &body).await,
        403,
        "CHALLENGE_OTHER_CLIENT",
    );
    let ok = app.post_json("/v1/auth/login", &t, &body).await;
    assert_eq!(ok.0, 200, "{:?}", ok.2);
    let head = app.log_head().await.max(head);
    assert_problem(
        &app.post_json("/v1/auth/login", &t, &body).await,
        409,
        "CHALLENGE_USED",
    );
    let unknown = json!({ "challenge_id": uuid::Uuid::new_v4().to_string(), "certificate": good.b64(), "signature": STANDARD.encode(good.sign(&nonce)) });
    assert_problem(
        &app.post_json("/v1/auth/login", &t, &unknown).await,
        404,
        "CHALLENGE_UNKNOWN",
    );
    let (id, nonce) = app.challenge(&t).await;
    app.clock
        .advance(mykey_api::auth::challenge::CHALLENGE_TTL_SECS + 1);
    let body = json!({ "challenge_id": id, "certificate": good.b64(), "signature": STANDARD.encode(good.sign(&nonce)) });
    assert_problem(
        &app.post_json("/v1/auth/login", &t, &body).await,
        410,
        "CHALLENGE_EXPIRED",
    );

    // Garbage, truncated, not base64, oversized body, signature not base64.
    let (id, nonce) = app.challenge(&t).await;
    let sig = STANDARD.encode(good.sign(&nonce));
    for (cert, status, code) in [
        (
            STANDARD.encode(b"garbage, not a certificate"),
            400,
            "CERTIFICATE_MALFORMED",
        ),
        (
            STANDARD.encode(&good.der[..good.der.len() / 2]),
            400,
            "CERTIFICATE_MALFORMED",
        ),
        ("***".to_owned(), 400, "CERTIFICATE_MALFORMED"),
        (
            STANDARD.encode(vec![0u8; 20_000]),
            400,
            "CERTIFICATE_TOO_LARGE",
        ),
    ] {
        // A failed attempt burns its challenge, so each case takes a fresh one.
        let (id, _) = app.challenge(&t).await;
        let body = json!({ "challenge_id": id, "certificate": cert, "signature": sig });
        assert_problem(
            &app.post_json("/v1/auth/login", &t, &body).await,
            status,
            code,
        );
        assert_problem(
            &app.post_json("/v1/auth/kazashi", &t, &json!({ "certificate": cert }))
                .await,
            status,
            code,
        );
    }
    let body = json!({ "challenge_id": id, "certificate": good.b64(), "signature": "%%%" });
    assert_problem(
        &app.post_json("/v1/auth/login", &t, &body).await,
        400,
        "SIGNATURE_MALFORMED",
    );
    let huge = json!({ "challenge_id": id, "certificate": "A".repeat(200_000), "signature": sig });
    assert_problem(
        &app.post_json("/v1/auth/login", &t, &huge).await,
        413,
        "BODY_TOO_LARGE",
    );
    let resp = app
        .http
        .post(app.url("/v1/auth/login"))
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_problem(&json_of(resp).await, 400, "MALFORMED_BODY");
    let resp = app
        .http
        .post(app.url("/v1/auth/kazashi"))
        .bearer_auth(&t)
        .header("content-type", "text/plain")
        .body(good.b64())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_problem(&json_of(resp).await, 415, "UNSUPPORTED_MEDIA_TYPE");
    // A refused body is an attempt too: audited with its code before the answer.
    let body_refusals: Vec<(String, String)> = app
        .db
        .client()
        .await
        .query(
            "SELECT endpoint, outcome FROM auth_audit \
             WHERE outcome IN ('BODY_TOO_LARGE', 'MALFORMED_BODY', 'UNSUPPORTED_MEDIA_TYPE') ORDER BY id",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected = [
        ("auth.login", "BODY_TOO_LARGE"),
        ("auth.login", "MALFORMED_BODY"),
        ("auth.kazashi", "UNSUPPORTED_MEDIA_TYPE"),
    ]
    .map(|(e, o)| (e.to_owned(), o.to_owned()));
    assert_eq!(body_refusals, expected);

    // No access token / a bad one.
    assert_problem(
        &app.post_json("/v1/auth/kazashi", "", &json!({"certificate": good.b64()}))
            .await,
        401,
        "ACCESS_TOKEN_MISSING",
    );
    assert_problem(
        &app.post_json(
            "/v1/auth/kazashi",
            "nonsense",
            &json!({"certificate": good.b64()}),
        )
        .await,
        401,
        "ACCESS_TOKEN_INVALID",
    );
    // An ID token is not an access token.
    let id_token = ok.2["id_token"].as_str().unwrap_or_default();
    assert_problem(
        &app.post_json(
            "/v1/auth/kazashi",
            id_token,
            &json!({"certificate": good.b64()}),
        )
        .await,
        401,
        "ACCESS_TOKEN_INVALID",
    );

    assert_eq!(app.log_head().await, head, "refusals wrote events");

    // Every attempt is audited, with the certificate's fingerprint and never the certificate.
    let c = app.db.client().await;
    let rows = c
        .query(
            "SELECT endpoint, outcome, cert_sha256, rp_id FROM auth_audit ORDER BY id",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let outcomes: Vec<String> = rows.iter().map(|r| r.get::<_, String>(1)).collect();
    for code in [
        "CERTIFICATE_EXPIRED",
        "SIGNATURE_INVALID",
        "CHALLENGE_USED",
        "CHALLENGE_EXPIRED",
        "OK",
        "CERTIFICATE_MALFORMED",
        "SIGNATURE_MALFORMED",
    ] {
        assert!(
            outcomes.iter().any(|o| o == code),
            "{code} not audited: {outcomes:?}"
        );
    }
    let fp = mykey_api::auth::jpki::fingerprint(&expired.der);
    assert!(rows
        .iter()
        .any(|r| r.get::<_, Option<String>>(2).as_deref() == Some(fp.as_str())));
    // Every column of every row, as text: no raw certificate anywhere in the trail.
    let dump: Vec<String> = c
        .query("SELECT row_to_json(a)::text FROM auth_audit a", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(dump.iter().any(|row| row.contains(fp.as_str())), "{dump:?}");
    assert!(!dump.iter().any(|row| row.contains(&good.b64()[..40])));
    let tamper = c.execute("UPDATE auth_audit SET outcome = 'OK'", &[]).await;
    assert!(tamper.is_err(), "the audit table must be append-only");
}

#[tokio::test]
async fn operator_and_assertion_refusals_each_have_their_code() {
    let app = spawn(false).await;
    let p = pki();
    // A JWK that is no usable key.
    let body = json!({ "id": "rp-bad-jwk", "kind": "private_business", "code": "x", "name": "x", "jwk": { "kty": "EC" } });
    let got = app
        .operator(
            "/v1/operator/relying-parties",
            body.to_string().into(),
            "application/json",
        )
        .await;
    assert_problem(&got, 400, "JWK_INVALID");
    // Renewal lines: not three fields; an issuer that is no trust anchor.
    let csv = "only,two\n\"CN=nobody\",01,02\n";
    let got = app
        .operator("/v1/operator/renewals", csv.into(), "text/csv")
        .await;
    assert_eq!(got.0, 200, "{:?}", got.2);
    assert_eq!(got.2["linked"], 0);
    assert_eq!(got.2["failed"][0]["code"], "RENEWAL_LINE_MALFORMED");
    assert_eq!(got.2["failed"][1]["code"], "RENEWAL_ISSUER_UNKNOWN");
    // A CRL from a CA that is not a trust anchor at all.
    let got = app
        .operator(
            "/v1/operator/crls",
            pki::crl(&p.rogue_other_name, &[], OffsetDateTime::now_utc(), 1).into(),
            "application/pkix-crl",
        )
        .await;
    assert_problem(&got, 400, "CRL_UNKNOWN_ISSUER");

    // Client assertions: not valid before a future nbf; an empty jti.
    let rp = app.register_rp("rp-assert").await;
    let aud = format!("{ISSUER}/v1/oauth/token");
    let signed = |claims: Value| es256(&rp.key, &json!({ "alg": "ES256" }), &claims);
    let future = signed(
        json!({ "iss": rp.id, "sub": rp.id, "aud": aud, "exp": now() + 600, "nbf": now() + 300, "jti": "n1" }),
    );
    assert_problem(
        &app.token_for_assertion(&future).await,
        401,
        "ASSERTION_NOT_YET_VALID",
    );
    let no_jti =
        signed(json!({ "iss": rp.id, "sub": rp.id, "aud": aud, "exp": now() + 60, "jti": "" }));
    assert_problem(
        &app.token_for_assertion(&no_jti).await,
        401,
        "ASSERTION_JTI",
    );
    assert_eq!(
        app.log_head().await,
        1,
        "only the RP registration was written"
    );

    // A server with no operator configured refuses every operator call.
    let mut closed = settings(false);
    closed.auth.operators = Default::default();
    let base = start(&app.db, &closed).await;
    let resp = app
        .http
        .post(format!("{base}/v1/operator/signing-keys/rotate"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_problem(&json_of(resp).await, 403, "OPERATOR_DISABLED");
}

#[tokio::test]
async fn refused_bodies_on_token_and_operator_endpoints_are_audited_attempts() {
    let app = spawn(false).await;
    let form = |ct: &'static str, body: &'static str| {
        app.http
            .post(app.url("/v1/oauth/token"))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let got = json_of(
        form("application/json", "{}")
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_problem(&got, 415, "UNSUPPORTED_MEDIA_TYPE");
    let too_big = "x".repeat(mykey_api::auth::MAX_RENEWAL_CSV_BYTES + 1);
    let got = app
        .operator("/v1/operator/renewals", too_big.into(), "text/csv")
        .await;
    assert_problem(&got, 413, "BODY_TOO_LARGE");
    let got = app
        .operator(
            "/v1/operator/relying-parties",
            "{\"id\": ".into(),
            "application/json",
        )
        .await;
    assert_problem(&got, 400, "MALFORMED_BODY");
    let rows: Vec<(String, String)> = app
        .db
        .client()
        .await
        .query("SELECT endpoint, outcome FROM auth_audit ORDER BY id", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected = [
        ("operator.renewals", "BODY_TOO_LARGE"),
        ("operator.rp_register", "MALFORMED_BODY"),
    ]
    .map(|(e, o)| (e.to_owned(), o.to_owned()));
    assert_eq!(rows, expected);
    // The token request's caller never authenticated: counted, not a row of its own.
    let counted: i64 = app
        .db
        .client()
        .await
        .query_one(
            "SELECT count FROM auth_refusal_count \
             WHERE endpoint = 'oauth.token' AND outcome = 'UNSUPPORTED_MEDIA_TYPE'",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    assert_eq!(counted, 1);
    assert_eq!(app.log_head().await, 0, "no event written");
}

async fn stored_keys(db: &TestDb) -> Vec<(String, Vec<u8>)> {
    db.client()
        .await
        .query("SELECT kid, private_pkcs8 FROM auth_signing_key", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn signing_keys_are_sealed_at_rest_and_an_instance_without_the_kek_refuses_to_start() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kek-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let make = |name: &str| {
        let path = dir.join(name).display().to_string();
        let args = ["new-key-encryption-key", "--file", &path].map(str::to_owned);
        match mykey_api::cli::run_offline(&args) {
            Some(Ok(())) => std::path::PathBuf::from(path),
            other => panic!(
                "new-key-encryption-key: {:?}",
                other.map(|r| r.err().map(|e| e.to_string()))
            ),
        }
    };
    let (kek, other_kek) = (make("kek"), make("other"));
    assert!(
        mykey_api::cli::run_offline(&["rotate-signing-key".to_owned()]).is_none(),
        "commands that need the database are not offline"
    );

    let db = TestDb::create().await;
    let with_kek = |path: Option<std::path::PathBuf>| {
        let mut s = settings(false);
        s.auth.key_encryption_key_file = path;
        s
    };
    let base = start(&db, &with_kek(Some(kek.clone()))).await;
    let rows = stored_keys(&db).await;
    assert_eq!(rows.len(), 1);
    let (kid, sealed) = &rows[0];
    assert!(
        sealed.starts_with(b"mykey-kw1"),
        "the private key is sealed"
    );
    assert_ne!(sealed.first(), Some(&0x30), "not a bare PKCS#8");
    let jwks: Value = reqwest::get(format!("{base}/.well-known/jwks.json"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(jwks["keys"][0]["kid"], kid.as_str());

    // A second instance with the same KEK opens it and signs with the same key.
    let base2 = start(&db, &with_kek(Some(kek.clone()))).await;
    let jwks2: Value = reqwest::get(format!("{base2}/.well-known/jwks.json"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(jwks2["keys"], jwks["keys"]);

    // Without the KEK, or with another one, an instance refuses to start and mints nothing.
    for (settings, want) in [
        (with_kek(None), "MYKEY_KEY_ENCRYPTION_KEY_FILE"),
        (with_kek(Some(other_kek)), "does not open"),
    ] {
        let refused = Application::build(&settings, db.config()).await;
        let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains(want), "{message}");
    }
    assert_eq!(stored_keys(&db).await.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn each_named_operator_is_the_actor_of_what_its_token_does() {
    use mykey_api::auth::operators::OperatorTokens;
    let (alice, alice_line) = OperatorTokens::new_token("alice").unwrap_or_else(|e| panic!("{e}"));
    let (bob, bob_line) = OperatorTokens::new_token("bob").unwrap_or_else(|e| panic!("{e}"));
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("operators-{}.txt", uuid::Uuid::new_v4()));
    std::fs::write(&file, format!("{alice_line}\n{bob_line}\n")).unwrap_or_else(|e| panic!("{e}"));
    let tokens_file = [("MYKEY_OPERATOR_TOKENS_FILE", file.display().to_string())];
    let settings = settings_with(true, &tokens_file).unwrap_or_else(|e| panic!("{e}"));
    let db = TestDb::create().await;
    let base = start(&db, &settings).await;
    let http = reqwest::Client::new();
    let post = |token: String, path: &'static str, body: Value| {
        let req = http
            .post(format!("{base}{path}"))
            .bearer_auth(token)
            .json(&body);
        async move { json_of(req.send().await.unwrap_or_else(|e| panic!("{e}"))).await }
    };
    let rp = |id: &str| json!({ "id": id, "kind": "private_business", "code": format!("code-{id}"), "name": id, "jwk": ec_jwk(&new_ec_key()) });

    let got = post(
        alice.clone(),
        "/v1/operator/relying-parties",
        rp("rp-by-alice"),
    )
    .await;
    assert!(got.0 < 300, "{:?}", got.2);
    let got = post(
        bob.clone(),
        "/v1/operator/relying-parties/rp-by-alice/suspend",
        json!({}),
    )
    .await;
    assert!(got.0 < 300, "{:?}", got.2);
    let got = post(
        OPERATOR_TOKEN.to_owned(),
        "/v1/operator/relying-parties",
        rp("rp-shared"),
    )
    .await;
    assert!(got.0 < 300, "{:?}", got.2);
    let c = db.client().await;
    let actors: Vec<(String, String)> = c
        .query(
            "SELECT actor_id, actor_role FROM events ORDER BY global_position",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let ids: Vec<&str> = actors.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(ids, ["alice", "bob", "operator"]);
    // One request, one correlation id: its event and its audit row can be joined.
    let joined: i64 = c
        .query_one(
            "SELECT count(*) FROM events e JOIN auth_audit a USING (correlation_id) \
             WHERE a.endpoint LIKE 'operator.%' AND a.outcome = 'OK'",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    assert_eq!(joined, 3, "each operator event joins its audit row");
    assert!(
        actors.iter().all(|(_, role)| role == "operator"),
        "{actors:?}"
    );

    // A token nobody was given writes nothing.
    let got = post(
        "x".repeat(43),
        "/v1/operator/relying-parties",
        rp("rp-nobody"),
    )
    .await;
    assert_problem(&got, 401, "OPERATOR_UNAUTHORIZED");
    let count: i64 = c
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    assert_eq!(count, 3);

    // A malformed tokens file stops the server from starting, naming the line.
    std::fs::write(&file, format!("{alice_line}\nbob\n")).unwrap_or_else(|e| panic!("{e}"));
    let refused = settings_with(true, &tokens_file);
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("line 2"), "{message}");
    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
async fn a_crl_larger_than_one_check_chunk_marks_every_known_certificate_once() {
    let app = spawn(false).await;
    let rp = app.register_rp("rp-big-crl").await;
    let t = app.access_token(&rp).await;
    let p = pki();
    let registered: Vec<_> = (0..3).map(|_| CardSpec::valid(&p.ca_a).issue()).collect();
    for card in &registered {
        let ok = app.pin_login(&t, card).await;
        assert_eq!(ok.0, 200, "{:?}", ok.2);
    }
    let never_seen = CardSpec::valid(&p.ca_a).issue();
    // Card serials have bit 60 set; these never collide with them.
    let chunk = mykey_api::auth::identity::CRL_CHECK_CHUNK as u64;
    let mut serials: Vec<u64> = (1..=2 * chunk + 500).collect();
    serials.extend(registered.iter().map(|c| c.serial));
    serials.push(never_seen.serial);

    let head = app.log_head().await;
    let t0 = OffsetDateTime::now_utc() - Duration::hours(1);
    let got = app
        .operator(
            "/v1/operator/crls",
            pki::crl(&p.ca_a, &serials, t0, 1).into(),
            "application/pkix-crl",
        )
        .await;
    assert_eq!(got.0, 200, "{:?}", got.2);
    assert_eq!(got.2["revoked_entries"], serials.len());
    assert_eq!(got.2["known_certificates_revoked"], 3);
    assert_eq!(app.log_head().await, head + 3, "one event per known card");
    for card in &registered {
        assert_problem(&app.kazashi(&t, card).await, 403, "CERTIFICATE_REVOKED");
    }

    // The next CRL lists them again: nothing new to record.
    let got = app
        .operator(
            "/v1/operator/crls",
            pki::crl(&p.ca_a, &serials, t0 + Duration::minutes(1), 2).into(),
            "application/pkix-crl",
        )
        .await;
    assert_eq!(got.0, 200, "{:?}", got.2);
    assert_eq!(got.2["known_certificates_revoked"], 0);
    assert_eq!(app.log_head().await, head + 3);
}

#[tokio::test]
async fn an_instance_starting_later_installs_the_crls_stored_by_another() {
    let mut app = spawn(true).await;
    let rp = app.register_rp("rp-crl-2").await;
    let p = pki();
    let (listed, clean) = (
        CardSpec::valid(&p.ca_a).issue(),
        CardSpec::valid(&p.ca_a).issue(),
    );
    let t0 = OffsetDateTime::now_utc() - Duration::hours(1);
    let got = app
        .operator(
            "/v1/operator/crls",
            pki::crl(&p.ca_a, &[listed.serial], t0, 1).into(),
            "application/pkix-crl",
        )
        .await;
    assert_eq!(got.0, 200, "{:?}", got.2);
    // A second instance on the same database, which never saw the upload.
    app.base = start(&app.db, &settings(true)).await;
    let t = app.access_token(&rp).await;
    let ok = app.pin_login(&t, &clean).await;
    assert_eq!(ok.0, 200, "the CRL was installed at start: {:?}", ok.2);
    assert_problem(
        &app.pin_login(&t, &listed).await,
        403,
        "CERTIFICATE_REVOKED",
    );
}

#[tokio::test]
async fn crls_revoke_and_a_stale_crl_fails_closed() {
    let app = spawn(true).await;
    let rp = app.register_rp("rp-crl").await;
    let t = app.access_token(&rp).await;
    let p = pki();
    let card = CardSpec::valid(&p.ca_a).issue();
    let listed_unknown = CardSpec::valid(&p.ca_a).issue();

    // No CRL for the CA yet: fail closed.
    assert_problem(&app.pin_login(&t, &card).await, 503, "CRL_MISSING");

    // A CRL signed by an untrusted key with the right name is refused.
    let got = app
        .operator(
            "/v1/operator/crls",
            pki::forged_crl().into(),
            "application/pkix-crl",
        )
        .await;
    assert_problem(&got, 400, "CRL_SIGNATURE_INVALID");
    let got = app
        .operator(
            "/v1/operator/crls",
            b"not a crl".to_vec().into(),
            "application/pkix-crl",
        )
        .await;
    assert_problem(&got, 400, "CRL_MALFORMED");

    let t0 = OffsetDateTime::now_utc() - Duration::hours(1);
    let got = app
        .operator(
            "/v1/operator/crls",
            pki::crl(&p.ca_a, &[listed_unknown.serial], t0, 1).into(),
            "application/pkix-crl",
        )
        .await;
    assert_eq!(got.0, 200, "{:?}", got.2);
    assert_eq!(got.2["known_certificates_revoked"], 0);
    let ok = app.pin_login(&t, &card).await;
    assert_eq!(ok.0, 200, "{:?}", ok.2);
    assert_problem(
        &app.pin_login(&t, &listed_unknown).await,
        403,
        "CERTIFICATE_REVOKED",
    );

    // A newer CRL lists the registered card: one CertificateRevoked event, then refusals.
    let head = app.log_head().await;
    let got = app
        .operator(
            "/v1/operator/crls",
            pki::crl(
                &p.ca_a,
                &[listed_unknown.serial, card.serial],
                t0 + Duration::minutes(1),
                2,
            )
            .into(),
            "application/pkix-crl",
        )
        .await;
    assert_eq!(got.0, 200, "{:?}", got.2);
    assert_eq!(got.2["known_certificates_revoked"], 1);
    assert_eq!(app.log_head().await, head + 1);
    assert_problem(&app.pin_login(&t, &card).await, 403, "CERTIFICATE_REVOKED");
    assert_problem(&app.kazashi(&t, &card).await, 403, "CERTIFICATE_REVOKED");
    // An older CRL cannot roll back.
    let got = app
        .operator(
            "/v1/operator/crls",
            pki::crl(&p.ca_a, &[], t0, 3).into(),
            "application/pkix-crl",
        )
        .await;
    assert_problem(&got, 409, "CRL_NOT_NEWER");

    // Past nextUpdate (one day) plus the default grace: fail closed, and the alert counts.
    let other = CardSpec::valid(&p.ca_a).issue();
    app.clock
        .advance(86_400 + mykey_api::auth::config::DEFAULT_CRL_GRACE_SECS + 60);
    let t = app.access_token_at_clock(&rp).await;
    assert_problem(&app.kazashi(&t, &other).await, 503, "CRL_STALE");
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mykey_crl_stale_refusals_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // Operator attempts are audited too, refused ones included.
    let c = app.db.client().await;
    let rows = c
        .query(
            "SELECT outcome FROM auth_audit WHERE endpoint = 'operator.crl' ORDER BY id",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let outcomes: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        outcomes,
        [
            "CRL_SIGNATURE_INVALID",
            "CRL_MALFORMED",
            "OK",
            "OK",
            "CRL_NOT_NEWER"
        ]
    );
}

impl App {
    /// An access token when the server's clock is ahead of the wall clock.
    async fn access_token_at_clock(&self, rp: &Rp) -> String {
        let skew = self.clock.now_secs() - now();
        let a = es256(
            &rp.key,
            &json!({ "alg": "ES256" }),
            &json!({ "iss": rp.id, "sub": rp.id, "aud": format!("{ISSUER}/v1/oauth/token"), "exp": now() + skew + 60, "jti": uuid::Uuid::new_v4().to_string() }),
        );
        let got = self.token_for_assertion(&a).await;
        assert_eq!(got.0, 200, "{:?}", got.2);
        got.2["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

#[tokio::test]
async fn client_assertions_are_checked_and_cannot_be_replayed() {
    let app = spawn(false).await;
    let rp = app.register_rp("rp-oauth").await;
    let aud = format!("{ISSUER}/v1/oauth/token");

    let a = assertion(&rp, &aud, 60, "jti-1");
    let first = app.token_for_assertion(&a).await;
    assert_eq!(first.0, 200, "{:?}", first.2);
    assert_eq!(first.2["token_type"], "Bearer");
    assert_eq!(first.2["expires_in"], 300);
    assert_problem(
        &app.token_for_assertion(&a).await,
        401,
        "ASSERTION_REPLAYED",
    );

    assert_problem(
        &app.token_for_assertion(&assertion(&rp, "https://elsewhere/token", 60, "j2"))
            .await,
        401,
        "ASSERTION_AUDIENCE",
    );
    assert_problem(
        &app.token_for_assertion(&assertion(&rp, &aud, -120, "j3"))
            .await,
        401,
        "ASSERTION_EXPIRED",
    );
    assert_problem(
        &app.token_for_assertion(&assertion(&rp, &aud, 3600, "j4"))
            .await,
        401,
        "ASSERTION_LIFETIME",
    );
    let impostor = Rp {
        id: rp.id.clone(),
        key: new_ec_key(),
    };
    assert_problem(
        &app.token_for_assertion(&assertion(&impostor, &aud, 60, "j5"))
            .await,
        401,
        "ASSERTION_SIGNATURE_INVALID",
    );
    let nobody = Rp {
        id: "nobody".into(),
        key: new_ec_key(),
    };
    assert_problem(
        &app.token_for_assertion(&assertion(&nobody, &aud, 60, "j6"))
            .await,
        401,
        "CLIENT_UNKNOWN",
    );
    let mismatch = es256(
        &rp.key,
        &json!({"alg": "ES256"}),
        &json!({"iss": rp.id, "sub": "someone-else", "aud": aud, "exp": now() + 60, "jti": "j7"}),
    );
    assert_problem(
        &app.token_for_assertion(&mismatch).await,
        401,
        "ASSERTION_ISSUER_MISMATCH",
    );
    let none = format!(
        "{}.{}.",
        b64u(br#"{"alg":"none"}"#),
        b64u(
            json!({"iss": rp.id, "sub": rp.id, "aud": aud, "exp": now() + 60, "jti": "j8"})
                .to_string()
                .as_bytes()
        )
    );
    assert_problem(
        &app.token_for_assertion(&none).await,
        401,
        "ASSERTION_ALGORITHM",
    );
    assert_problem(
        &app.token_with(&[("grant_type", "password")]).await,
        400,
        "UNSUPPORTED_GRANT_TYPE",
    );
    assert_problem(
        &app.token_with(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", "x"),
        ])
        .await,
        400,
        "ASSERTION_TYPE_UNSUPPORTED",
    );
    assert_problem(
        &app.token_for_assertion("a.b").await,
        400,
        "ASSERTION_MALFORMED",
    );

    // RS256 keys work too.
    let rsa_pem = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/auth/rp-rsa.key.pem"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let rsa_der = STANDARD
        .decode(
            rsa_pem
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap_or_default();
    let rsa = ring::signature::RsaKeyPair::from_pkcs8(&rsa_der).unwrap_or_else(|e| panic!("{e}"));
    let comps = ring::signature::RsaPublicKeyComponents::<Vec<u8>>::from(rsa.public());
    let jwk = json!({ "kty": "RSA", "n": b64u(&comps.n), "e": b64u(&comps.e) });
    let body = json!({ "id": "rp-rsa", "kind": "library_system", "code": "lib-1", "name": "Library", "jwk": jwk });
    let got = app
        .operator(
            "/v1/operator/relying-parties",
            body.to_string().into(),
            "application/json",
        )
        .await;
    assert_eq!(got.0, 201, "{:?}", got.2);
    let input = format!(
        "{}.{}",
        b64u(br#"{"alg":"RS256"}"#),
        b64u(
            json!({"iss": "rp-rsa", "sub": "rp-rsa", "aud": aud, "exp": now() + 60, "jti": "r1"})
                .to_string()
                .as_bytes()
        )
    );
    let mut sig = vec![0u8; rsa.public().modulus_len()];
    rsa.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let got = app
        .token_for_assertion(&format!("{input}.{}", b64u(&sig)))
        .await;
    assert_eq!(got.0, 200, "RS256: {:?}", got.2);

    // A suspended RP gets no token, and its outstanding access token stops working.
    let t = app.access_token(&rp).await;
    let got = app
        .operator(
            "/v1/operator/relying-parties/rp-oauth/suspend",
            Vec::new().into(),
            "application/json",
        )
        .await;
    assert_eq!(got.0, 204, "{:?}", got.2);
    assert_problem(
        &app.token_for_assertion(&assertion(&rp, &aud, 60, "j9"))
            .await,
        403,
        "CLIENT_SUSPENDED",
    );
    let resp = app
        .http
        .post(app.url("/v1/auth/challenges"))
        .bearer_auth(&t)
        .send()
        .await;
    assert_problem(
        &json_of(resp.unwrap_or_else(|e| panic!("{e}"))).await,
        403,
        "CLIENT_SUSPENDED",
    );
    let got = app
        .operator(
            "/v1/operator/relying-parties/rp-oauth/retire",
            Vec::new().into(),
            "application/json",
        )
        .await;
    assert_eq!(got.0, 204, "{:?}", got.2);
    assert_problem(
        &app.token_for_assertion(&assertion(&rp, &aud, 60, "j10"))
            .await,
        403,
        "CLIENT_RETIRED",
    );

    // Operator endpoints need the operator token.
    let resp = app
        .http
        .post(app.url("/v1/operator/signing-keys/rotate"))
        .bearer_auth("wrong")
        .send()
        .await;
    assert_problem(
        &json_of(resp.unwrap_or_else(|e| panic!("{e}"))).await,
        401,
        "OPERATOR_UNAUTHORIZED",
    );
}

#[tokio::test]
async fn signing_keys_rotate_and_survive_a_restart() {
    let app = spawn(false).await;
    let rp = app.register_rp("rp-keys").await;
    let t = app.access_token(&rp).await;
    let card = CardSpec::valid(&pki().ca_a).issue();
    let first = app.pin_login(&t, &card).await;
    let (h1, _) = app
        .verify_id_token(first.2["id_token"].as_str().unwrap_or_default())
        .await;

    let got = app
        .operator(
            "/v1/operator/signing-keys/rotate",
            Vec::new().into(),
            "application/json",
        )
        .await;
    assert_eq!(got.0, 200, "{:?}", got.2);
    let second = app.pin_login(&t, &card).await;
    assert_eq!(
        second.0, 200,
        "access tokens signed by the old key still work: {:?}",
        second.2
    );
    let (h2, _) = app
        .verify_id_token(second.2["id_token"].as_str().unwrap_or_default())
        .await;
    assert_ne!(h1["kid"], h2["kid"], "new tokens use the new key");
    assert_eq!(h2["kid"], got.2["kid"]);
    // The old key is still published: its tokens have not expired yet.
    app.verify_id_token(first.2["id_token"].as_str().unwrap_or_default())
        .await;

    // A restart on the same database serves the same keys.
    let mut s = settings(false);
    s.auth.clock = app.clock.clone();
    let base2 = start(&app.db, &s).await;
    let jwks2 = json_of(
        app.http
            .get(format!("{base2}/.well-known/jwks.json"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await
    .2;
    let kids = |j: &Value| -> Vec<Value> {
        j["keys"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|k| k["kid"].clone())
            .collect()
    };
    assert_eq!(kids(&jwks2), kids(&app.jwks().await));

    // Once every token of the old key has expired, it leaves the JWKS.
    app.clock
        .advance(mykey_api::auth::keys::RETIRED_KEY_PUBLISHED_SECS + 1);
    let after = kids(&app.jwks().await);
    assert_eq!(after, vec![h2["kid"].clone()]);
}

#[tokio::test]
async fn a_revoked_ppid_is_replaced_at_the_next_pin_login() {
    let app = spawn(false).await;
    let rp = app.register_rp("rp-revoke").await;
    let t = app.access_token(&rp).await;
    let card = CardSpec::valid(&pki().ca_a).issue();
    let first = app.pin_login(&t, &card).await;
    let ppid = first.2["ppid"].as_str().unwrap_or_default().to_owned();

    // The RP revokes the PPID through the write model (the operator data-patch route to
    // invalidation goes through the patch aggregate and ends in the same state).
    let store = mykey_store::pg::PgEventStore::connect(app.db.config(), Default::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let cmds = mykey_commands::Commands::new(store);
    let rp_id =
        mykey_domain::RelyingPartyId::parse("rp-revoke").unwrap_or_else(|e| panic!("{e:?}"));
    let meta = mykey_commands::CommandMeta::new(
        "rp-revoke",
        mykey_domain::Role::RelyingParty(rp_id),
        uuid::Uuid::new_v4(),
    );
    let p = mykey_domain::Ppid::parse(&ppid).unwrap_or_else(|e| panic!("{e:?}"));
    cmds.revoke_ppid(&meta, &p)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    assert_problem(&app.kazashi(&t, &card).await, 404, "NOT_REGISTERED");
    let again = app.pin_login(&t, &card).await;
    assert_eq!(again.0, 200, "{:?}", again.2);
    assert_ne!(again.2["ppid"], ppid.as_str());
    let k = app.kazashi(&t, &card).await;
    assert_eq!(k.2["ppid"], again.2["ppid"]);
}

#[tokio::test]
async fn cli_subcommands_work_against_the_same_database() {
    let app = spawn(false).await;
    let mut s = settings(false);
    s.auth.clock = app.clock.clone();
    let dir = std::env::temp_dir().join(format!("mykey-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let path = |name: &str| dir.join(name).display().to_string();
    let run = |args: Vec<String>| {
        let s = s.clone();
        let pg = app.db.config();
        async move {
            mykey_api::cli::run(&s, pg, &args)
                .await
                .map_err(|e| e.to_string())
        }
    };
    let args = |v: &[&str]| v.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();

    // register-rp with a JWK file; the running server sees it.
    let key = new_ec_key();
    std::fs::write(path("rp.jwk"), ec_jwk(&key).to_string()).unwrap_or_else(|e| panic!("{e}"));
    run(args(&[
        "register-rp",
        "--id",
        "rp-cli",
        "--kind",
        "library_system",
        "--code",
        "lib-9",
        "--name",
        "Library",
        "--jwk",
        &path("rp.jwk"),
    ]))
    .await
    .unwrap_or_else(|e| panic!("register-rp: {e}"));
    let rp = Rp {
        id: "rp-cli".into(),
        key,
    };
    let t = app.access_token(&rp).await;

    // rotate-rp-key: the old key stops working.
    let key2 = new_ec_key();
    std::fs::write(path("rp2.jwk"), ec_jwk(&key2).to_string()).unwrap_or_else(|e| panic!("{e}"));
    run(args(&[
        "rotate-rp-key",
        "--id",
        "rp-cli",
        "--jwk",
        &path("rp2.jwk"),
    ]))
    .await
    .unwrap_or_else(|e| panic!("rotate-rp-key: {e}"));
    let aud = format!("{ISSUER}/v1/oauth/token");
    assert_problem(
        &app.token_for_assertion(&assertion(&rp, &aud, 60, "c1"))
            .await,
        401,
        "ASSERTION_SIGNATURE_INVALID",
    );
    let rp = Rp {
        id: "rp-cli".into(),
        key: key2,
    };
    assert_eq!(
        app.token_for_assertion(&assertion(&rp, &aud, 60, "c2"))
            .await
            .0,
        200
    );

    // import-renewals and load-crl from files.
    let card = CardSpec::valid(&pki().ca_a).issue();
    let renewed = CardSpec::valid(&pki().ca_a).issue();
    assert_eq!(app.pin_login(&t, &card).await.0, 200);
    let issuer = mykey_api::auth::jpki::TrustAnchors::from_dir(&pki().anchors_dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .next()
        .map(|a| a.subject.clone())
        .unwrap_or_default();
    std::fs::write(
        path("links.csv"),
        format!(
            "\"{issuer}\",{},{}\n",
            card.serial_hex(),
            renewed.serial_hex()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    run(args(&["import-renewals", "--file", &path("links.csv")]))
        .await
        .unwrap_or_else(|e| panic!("import-renewals: {e}"));
    assert_eq!(app.kazashi(&t, &renewed).await.0, 200);
    std::fs::write(
        path("ca.crl"),
        pki::crl(&pki().ca_a, &[renewed.serial], OffsetDateTime::now_utc(), 1),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let head = app.log_head().await;
    run(args(&["load-crl", "--file", &path("ca.crl")]))
        .await
        .unwrap_or_else(|e| panic!("load-crl: {e}"));
    assert_eq!(
        app.log_head().await,
        head + 1,
        "the known renewed certificate is revoked"
    );

    // suspend-rp: the server refuses the RP's outstanding token.
    run(args(&["suspend-rp", "--id", "rp-cli"]))
        .await
        .unwrap_or_else(|e| panic!("suspend-rp: {e}"));
    assert_problem(&app.kazashi(&t, &card).await, 403, "CLIENT_SUSPENDED");

    // rotate-signing-key: the server's JWKS shows the new key after its next reload.
    run(args(&["rotate-signing-key"]))
        .await
        .unwrap_or_else(|e| panic!("rotate-signing-key: {e}"));
    assert_eq!(stored_keys(&app.db).await.len(), 2, "a second signing key");
    let bad = run(args(&["register-rp", "--id", "x"])).await;
    assert!(bad.is_err_and(|e| e.contains("--kind")));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn rs256_id_tokens_verify_against_the_jwks() {
    let db = TestDb::create().await;
    let rs256 = [
        ("MYKEY_ID_TOKEN_ALG", "RS256".to_owned()),
        (
            "MYKEY_ID_TOKEN_RSA_KEY",
            concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/auth/rp-rsa.key.pem").to_owned(),
        ),
    ];
    let s = settings_with(false, &rs256).unwrap_or_else(|e| panic!("{e}"));
    let base = start(&db, &s).await;
    let app = App {
        base,
        http: reqwest::Client::new(),
        clock: s.auth.clock.clone(),
        db,
    };
    let rp = app.register_rp("rp-rs").await;
    let t = app.access_token(&rp).await;
    let card = CardSpec::valid(&pki().ca_a).issue();
    let got = app.pin_login(&t, &card).await;
    assert_eq!(got.0, 200, "{:?}", got.2);
    let token = got.2["id_token"].as_str().unwrap_or_default();
    let parts: Vec<&str> = token.split('.').collect();
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap_or_default())
            .unwrap_or(Value::Null);
    assert_eq!(header["alg"], "RS256");
    let jwks = app.jwks().await;
    let jwk = jwks["keys"]
        .as_array()
        .and_then(|ks| ks.iter().find(|k| k["kid"] == header["kid"]))
        .cloned()
        .unwrap_or(Value::Null);
    let n = URL_SAFE_NO_PAD
        .decode(jwk["n"].as_str().unwrap_or_default())
        .unwrap_or_default();
    let e = URL_SAFE_NO_PAD
        .decode(jwk["e"].as_str().unwrap_or_default())
        .unwrap_or_default();
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap_or_default();
    ring::signature::RsaPublicKeyComponents { n: &n, e: &e }
        .verify(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &sig,
        )
        .unwrap_or_else(|_| panic!("RS256 ID token does not verify against the JWKS"));
}

#[tokio::test]
async fn a_ppid_invalidated_by_an_operator_patch_is_replaced_at_the_next_pin_login() {
    let app = spawn(false).await;
    let rp = app.register_rp("rp-patch").await;
    let t = app.access_token(&rp).await;
    let card = CardSpec::valid(&pki().ca_a).issue();
    let first = app.pin_login(&t, &card).await;
    let ppid_s = first.2["ppid"].as_str().unwrap_or_default().to_owned();
    // Warm the server's cache so the test proves the patch's events clear it.
    assert_eq!(app.kazashi(&t, &card).await.2["ppid"], ppid_s.as_str());

    let store = mykey_store::pg::PgEventStore::connect(app.db.config(), Default::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let cmds = mykey_commands::Commands::new(store);
    let ppid = mykey_domain::Ppid::parse(&ppid_s).unwrap_or_else(|e| panic!("{e:?}"));
    let state = cmds
        .load_ppid(&ppid)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("PPID not in the log"));
    let op = |who: &str| {
        mykey_commands::CommandMeta::new(who, mykey_domain::Role::Operator, uuid::Uuid::new_v4())
    };
    let patch_id = uuid::Uuid::new_v4();
    let stream = |s: String| mykey_schemas::StreamId::parse(&s).unwrap_or_else(|e| panic!("{e}"));
    cmds.request_patch(
        &op("operator-a"),
        mykey_commands::RequestPatch {
            patch_id,
            ticket_id: "T-1".into(),
            reason: "municipality registered the wrong person".into(),
            targets: vec![
                stream(format!("ppid-{ppid}")),
                stream(format!("subject-{}", state.subject)),
            ],
            actions: vec![mykey_domain::patch::PatchAction::InvalidatePpid {
                ppid: ppid.clone(),
                reason: "wrong person".into(),
            }],
        },
    )
    .await
    .unwrap_or_else(|e| panic!("request: {e}"));
    cmds.dry_run_patch(&op("operator-a"), patch_id)
        .await
        .unwrap_or_else(|e| panic!("dry run: {e}"));
    cmds.approve_patch(&op("operator-b"), patch_id)
        .await
        .unwrap_or_else(|e| panic!("approve: {e}"));
    cmds.apply_patch(&op("operator-b"), patch_id)
        .await
        .unwrap_or_else(|e| panic!("apply: {e}"));

    assert_problem(&app.kazashi(&t, &card).await, 404, "NOT_REGISTERED");
    let again = app.pin_login(&t, &card).await;
    assert_eq!(again.0, 200, "{:?}", again.2);
    assert_ne!(
        again.2["ppid"],
        ppid_s.as_str(),
        "a new PPID after invalidation"
    );
}

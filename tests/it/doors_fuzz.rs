//! Every operation of the generated `/openapi.json`, fuzzed from the document (issue 10):
//! generated path parameters and bodies — wrong types, huge values, unicode, NUL, missing and
//! unknown fields, broken JSON, other media types — with no credential, an operator's, a
//! relying party's access token and, on the citizen door, a citizen session. No answer may be
//! a 5xx, a documented method never answers 405, and every refusal is problem+json with a code
//! from the table.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use mykey_api::config::Settings;
use mykey_api::startup::Application;
use mykey_tests::TestDb;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};

const ISSUER: &str = "https://mykey.test";
const OPERATOR_TOKEN: &str = "doors-fuzz-operator-token-0123456789";

fn b64u(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn ec_key() -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .unwrap_or_else(|e| panic!("{e}"));
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// An RFC 7523 client assertion signed by `key` (independent of the server's JWS code).
fn assertion(key: &EcdsaKeyPair, iss: &str) -> String {
    let header = json!({ "alg": "ES256", "typ": "JWT" });
    let claims = json!({ "iss": iss, "sub": iss, "aud": format!("{ISSUER}/v1/oauth/token"),
        "exp": chrono::Utc::now().timestamp() + 60, "jti": uuid::Uuid::new_v4().to_string() });
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

/// Values of every wrong kind for one field or parameter.
fn hostile_values() -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!(-1),
        json!(1e308),
        json!(u64::MAX),
        json!([]),
        json!({}),
        json!(""),
        json!("\u{0}"),
        json!("a\u{0}b"),
        json!("ü✓日本語🙂\u{202e}"),
        json!("x".repeat(70_000)),
        json!([1, "two", null]),
    ]
}

/// The request-body schema of an operation (one `$ref` followed), if it has properties.
fn body_properties(doc: &Value, op: &Value) -> Vec<String> {
    let Some(content) = op["requestBody"]["content"].as_object() else {
        return Vec::new();
    };
    content
        .values()
        .filter_map(|c| {
            let schema = &c["schema"];
            let schema = match schema["$ref"].as_str() {
                Some(r) => &doc["components"]["schemas"][r.rsplit('/').next().unwrap_or("")],
                None => schema,
            };
            schema["properties"]
                .as_object()
                .map(|p| p.keys().cloned().collect::<Vec<_>>())
        })
        .next()
        .unwrap_or_default()
}

/// Bodies generated for an operation: broken JSON, wrong top-level types, and for each
/// documented field each hostile value, the field missing, and an unknown field.
fn bodies(doc: &Value, op: &Value) -> Vec<String> {
    let mut out: Vec<String> = vec![
        String::new(),
        "{".into(),
        "null".into(),
        "[]".into(),
        "\"text\"".into(),
        "1e999".into(),
        "{\"a\":\"\\u0000\"}".into(),
        format!("{}{}", "[".repeat(5_000), "]".repeat(5_000)),
        "\u{0}\u{1}\u{2}".into(),
        "x".repeat(300_000),
    ];
    let props = body_properties(doc, op);
    let base: serde_json::Map<String, Value> =
        props.iter().map(|p| (p.clone(), json!("fuzz"))).collect();
    out.push(Value::Object(base.clone()).to_string());
    let mut unknown = base.clone();
    unknown.insert("unknown_field".into(), json!(1));
    out.push(Value::Object(unknown).to_string());
    for p in &props {
        let mut missing = base.clone();
        missing.remove(p);
        out.push(Value::Object(missing).to_string());
        for v in hostile_values() {
            let mut b = base.clone();
            b.insert(p.clone(), v);
            out.push(Value::Object(b).to_string());
        }
    }
    out
}

/// Path-parameter values: ordinary, percent-encoded NUL, unicode, huge, dots.
const PATH_VALUES: &[&str] = &["rp-fuzz", "%00", "%C3%BC%E2%9C%93", "..", "-1", "suspend"];

fn expand(path: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let huge = "a".repeat(3_000);
    for segment in path.split('/').skip(1) {
        let options: Vec<&str> = if segment.starts_with('{') {
            PATH_VALUES.iter().copied().chain([huge.as_str()]).collect()
        } else {
            vec![segment]
        };
        out = out
            .iter()
            .flat_map(|prefix| options.iter().map(move |o| format!("{prefix}/{o}")))
            .collect();
    }
    out
}

#[tokio::test]
async fn every_documented_operation_survives_fuzzing() {
    let db = TestDb::create().await;
    let vars: HashMap<&str, String> = HashMap::from([
        ("MYKEY_LISTEN", "127.0.0.1:0".to_owned()),
        ("MYKEY_ISSUER", ISSUER.to_owned()),
        ("MYKEY_REQUIRE_CRL", "false".to_owned()),
        ("MYKEY_OPERATOR_TOKEN", OPERATOR_TOKEN.to_owned()),
        ("MYKEY_RATE_LIMIT_BURST", "0".to_owned()),
        (
            "MYKEY_TRUST_ANCHORS",
            crate::pki::pki().anchors_dir.display().to_string(),
        ),
        ("MYKEY_CITIZEN_RP", "rp-fuzz".to_owned()),
    ]);
    let settings =
        Settings::from_lookup(|k| vars.get(k).cloned()).unwrap_or_else(|e| panic!("{e}"));
    let app = Application::build(&settings, db.config())
        .await
        .unwrap_or_else(|e| panic!("server did not start: {e}"));
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();

    // A relying party and its access token, so the login endpoints read their bodies.
    let key = ec_key();
    let p = key.public_key().as_ref();
    let jwk = json!({ "kty": "EC", "crv": "P-256", "x": b64u(&p[1..33]), "y": b64u(&p[33..65]) });
    let r = http
        .post(format!("{base}/v1/operator/relying-parties"))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({ "id": "rp-fuzz", "kind": "private_business", "code": "c", "name": "n", "jwk": jwk }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 201);
    let token: Value = http
        .post(format!("{base}/v1/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &assertion(&key, "rp-fuzz")),
        ])
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rp_token = token["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{token}"))
        .to_owned();

    let citizen = citizen_session(&http, &base, &rp_token).await;

    let doc = serde_json::to_value(mykey_api::http::openapi::document())
        .unwrap_or_else(|e| panic!("{e}"));
    let codes: BTreeSet<&str> = mykey_api::codes::ApiCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    let mut sent = 0usize;
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut failures = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            let documented_types: Vec<String> = op["requestBody"]["content"]
                .as_object()
                .map(|c| c.keys().cloned().collect())
                .unwrap_or_default();
            let media: Vec<&str> = documented_types
                .iter()
                .map(String::as_str)
                .chain(["application/json", "text/plain; charset=utf-8"])
                .collect();
            let urls = expand(path);
            for (i, body) in bodies(&doc, op).into_iter().enumerate() {
                let url = &urls[i % urls.len()];
                let ct = media[i % media.len()];
                // The citizen door also gets a citizen session, to reach its bodies.
                let citizen_door = path.starts_with("/v1/citizen/");
                let bearers = [None, Some(OPERATOR_TOKEN), Some(rp_token.as_str())]
                    .into_iter()
                    .chain(citizen_door.then_some(citizen.as_str()).map(Some));
                for bearer in bearers {
                    let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())
                        .unwrap_or(reqwest::Method::GET);
                    let idem = if i % 5 == 4 {
                        "not-a-uuid".to_owned()
                    } else {
                        uuid::Uuid::new_v4().to_string()
                    };
                    let mut req = http
                        .request(
                            m,
                            format!(
                                "{base}{url}?min_position={}",
                                if i % 3 == 0 { "-1" } else { "0" }
                            ),
                        )
                        .header("content-type", ct)
                        .header("idempotency-key", idem)
                        .body(body.clone());
                    if let Some(b) = bearer {
                        req = req.bearer_auth(b);
                    }
                    let r = req
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
                    sent += 1;
                    let status = r.status().as_u16();
                    let content_type = r
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let answer: Value = r.json().await.unwrap_or(Value::Null);
                    let code = answer["code"].as_str().unwrap_or_default();
                    seen.insert(code.to_owned());
                    let what = format!(
                        "{method} {path} ({url:.80}, {ct}, body {:.60?}, auth {}): {status} {answer:.200}",
                        body,
                        bearer.is_some()
                    );
                    if status >= 500 || status == 405 {
                        failures.push(what);
                    } else if status >= 400
                        && (content_type != "application/problem+json" || !codes.contains(code))
                    {
                        failures.push(format!("not a coded problem: {what}"));
                    }
                }
            }
        }
    }
    assert!(sent > 500, "only {sent} requests generated");
    // The generated requests got past authentication into body and header checks.
    for code in [
        "MALFORMED_BODY",
        "BODY_TOO_LARGE",
        "UNSUPPORTED_MEDIA_TYPE",
        "IDEMPOTENCY_KEY_MALFORMED",
        "OPERATOR_UNAUTHORIZED",
        "ACCESS_TOKEN_MISSING",
        "NOT_FOUND",
        // The citizen door: the screens' session bodies and the citizen's own were reached.
        "CITIZEN_ID_TOKEN_INVALID",
        "CITIZEN_TOKEN_NOT_CITIZEN",
        "APPLICATION_NOT_FOUND",
    ] {
        assert!(seen.contains(code), "{code} never answered: {seen:?}");
    }
    assert!(
        failures.is_empty(),
        "{} of {sent} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A citizen session of `rp-fuzz` (configured as the citizen screens): a PIN login with a test
/// card, then the exchange.
async fn citizen_session(http: &reqwest::Client, base: &str, rp_token: &str) -> String {
    use base64::engine::general_purpose::STANDARD;
    let card = crate::pki::CardSpec::valid(&crate::pki::pki().ca_a).issue();
    let post = |path: &str, body: Option<Value>| {
        let mut r = http.post(format!("{base}{path}")).bearer_auth(rp_token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let r = r.send().await.unwrap_or_else(|e| panic!("{e}"));
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, challenge) = post("/v1/auth/challenges", None).await;
    assert_eq!(status, 201, "{challenge}");
    let nonce = URL_SAFE_NO_PAD
        .decode(challenge["nonce"].as_str().unwrap_or_default())
        .unwrap_or_default();
    let body = json!({ "challenge_id": challenge["challenge_id"], "certificate": card.b64(),
                       "signature": STANDARD.encode(card.sign(&nonce)) });
    let (status, login) = post("/v1/auth/login", Some(body)).await;
    assert_eq!(status, 200, "{login}");
    let (status, session) = post(
        "/v1/citizen/sessions",
        Some(json!({ "id_token": login["id_token"] })),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    session["session_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

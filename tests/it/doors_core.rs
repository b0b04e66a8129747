//! The doors' shared HTTP layer (issue 10, "Across all doors"): Idempotency-Key retries and
//! misuse, positions on command answers, the access log (every request, append-only,
//! exported), per-route metrics, the generated `/openapi.json`, and every documented
//! operation fuzzed from that document.
//!
//! Each test runs a real server (Application::build, port 0) on a database of its own.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use mykey_api::config::Settings;
use mykey_api::http::access_log::{export, ExportFilter, ExportFormat};
use mykey_api::startup::Application;
use mykey_tests::TestDb;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

const OPERATOR_TOKEN: &str = "doors-core-operator-token-0123456789";
/// Polling bound for the access log's asynchronous writer.
const DEADLINE: Duration = Duration::from_secs(10);

struct Server {
    base: String,
    _db: TestDb,
    db_config: tokio_postgres::Config,
}

async fn start(extra: &[(&'static str, &str)]) -> Server {
    let db = TestDb::create().await;
    let mut vars: HashMap<&str, String> = HashMap::from([
        ("MYKEY_LISTEN", "127.0.0.1:0".to_owned()),
        ("MYKEY_ISSUER", "https://mykey.test".to_owned()),
        ("MYKEY_REQUIRE_CRL", "false".to_owned()),
        ("MYKEY_OPERATOR_TOKEN", OPERATOR_TOKEN.to_owned()),
    ]);
    vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let settings =
        Settings::from_lookup(|k| vars.get(k).cloned()).unwrap_or_else(|e| panic!("{e}"));
    let app = Application::build(&settings, db.config())
        .await
        .unwrap_or_else(|e| panic!("server did not start: {e}"));
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    Server {
        base,
        db_config: db.config(),
        _db: db,
    }
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn send(req: reqwest::RequestBuilder) -> Resp {
    let r = req.send().await.unwrap_or_else(|e| panic!("{e}"));
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let bytes = r.bytes().await.unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        body,
    }
}

fn assert_problem(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "status for {code}: {:?}", r.body);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.body["code"], code, "{:?}", r.body);
}

fn jwk() -> Value {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .unwrap_or_else(|e| panic!("{e}"));
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .unwrap_or_else(|e| panic!("{e}"));
    let p = key.public_key().as_ref();
    json!({ "kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..65]) })
}

fn rp_body(id: &str) -> Value {
    json!({ "id": id, "kind": "private_business", "code": format!("code-{id}"), "name": id, "jwk": jwk() })
}

async fn count(s: &Server, sql: &str) -> i64 {
    mykey_tests::connect(&s.db_config)
        .await
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

fn post(
    http: &reqwest::Client,
    s: &Server,
    path: &str,
    key: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut r = http
        .post(format!("{}{path}", s.base))
        .bearer_auth(OPERATOR_TOKEN);
    if let Some(k) = key {
        r = r.header("idempotency-key", k);
    }
    r
}

/// api.md "Idempotency-Key" and "Read-your-writes": a retry returns the first answer and
/// appends nothing; another body with the key is 422; a running first attempt is 409; a
/// malformed key 400; keys are per caller; command answers carry their position.
#[tokio::test]
async fn idempotency_key_retries_and_misuse() {
    let (other_token, other_line) =
        mykey_api::auth::operators::OperatorTokens::new_token("op-other")
            .unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("doors-core-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let tokens_file = dir.join("operators");
    std::fs::write(&tokens_file, format!("{other_line}\n")).unwrap_or_else(|e| panic!("{e}"));
    let s = start(&[(
        "MYKEY_OPERATOR_TOKENS_FILE",
        tokens_file.to_str().unwrap_or(""),
    )])
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    let http = reqwest::Client::new();
    let key = uuid::Uuid::new_v4().to_string();
    let body = rp_body("rp-idem");

    let first = send(post(&http, &s, "/v1/operator/relying-parties", Some(&key)).json(&body)).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let position = first.body["position"]
        .as_u64()
        .unwrap_or_else(|| panic!("{:?}", first.body));
    assert!(position > 0);
    assert_eq!(
        first.header("mykey-position"),
        Some(position.to_string().as_str())
    );
    assert_eq!(first.header("idempotent-replayed"), None);
    let events = count(&s, "SELECT count(*) FROM events").await;

    // The same request again (keys reordered: the same JSON): the first answer, nothing new.
    let again = send(
        post(&http, &s, "/v1/operator/relying-parties", Some(&key))
            .header("content-type", "application/json")
            .body(serde_json::to_string_pretty(&body).unwrap_or_default()),
    )
    .await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body);
    assert_eq!(
        again.header("mykey-position"),
        first.header("mykey-position")
    );
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(count(&s, "SELECT count(*) FROM events").await, events);
    assert_eq!(
        count(
            &s,
            "SELECT count(*) FROM auth_audit WHERE outcome = 'REPLAYED'"
        )
        .await,
        1,
        "the retry is audited as a replay, not as a second success"
    );

    // Without a key the same body runs again and the write model refuses the duplicate.
    let dup = send(post(&http, &s, "/v1/operator/relying-parties", None).json(&body)).await;
    assert_problem(&dup, 409, "RP_ALREADY_REGISTERED");

    // The same key with another body, or on another path: 422.
    let other = send(
        post(&http, &s, "/v1/operator/relying-parties", Some(&key)).json(&rp_body("rp-idem-2")),
    )
    .await;
    assert_problem(&other, 422, "IDEMPOTENCY_KEY_REUSED");
    let other = send(post(
        &http,
        &s,
        "/v1/operator/relying-parties/rp-idem/suspend",
        Some(&key),
    ))
    .await;
    assert_problem(&other, 422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(count(&s, "SELECT count(*) FROM events").await, events);

    // Keys are per caller: another operator's same key is a new command.
    let theirs = send(
        http.post(format!(
            "{}/v1/operator/relying-parties/rp-idem/suspend",
            s.base
        ))
        .bearer_auth(&other_token)
        .header("idempotency-key", &key),
    )
    .await;
    assert_eq!(theirs.status, 204, "{:?}", theirs.body);
    let suspended_at: u64 = theirs
        .header("mykey-position")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no Mykey-Position"));
    assert!(suspended_at > position);

    // A refusal is stored too: the retry gets the same refusal, not a second attempt.
    let k2 = uuid::Uuid::new_v4().to_string();
    let r1 = send(post(
        &http,
        &s,
        "/v1/operator/relying-parties/rp-none/suspend",
        Some(&k2),
    ))
    .await;
    assert_problem(&r1, 404, "RP_NOT_FOUND");
    let r2 = send(post(
        &http,
        &s,
        "/v1/operator/relying-parties/rp-none/suspend",
        Some(&k2),
    ))
    .await;
    assert_problem(&r2, 404, "RP_NOT_FOUND");
    assert_eq!(r2.header("idempotent-replayed"), Some("true"));

    // Malformed keys.
    for bad in ["nope", "123", ""] {
        let r = send(post(
            &http,
            &s,
            "/v1/operator/relying-parties/rp-idem/resume",
            Some(bad),
        ))
        .await;
        assert_problem(&r, 400, "IDEMPOTENCY_KEY_MALFORMED");
    }

    // A first attempt still running (its claim has no answer yet): 409, until it answers.
    let k3 = uuid::Uuid::new_v4();
    let client = mykey_tests::connect(&s.db_config).await;
    let principal: String = client
        .query_one(
            "SELECT principal FROM idempotency_keys WHERE key = $1::text::uuid \
             AND principal <> 'op-other'",
            &[&key],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or_else(|e| panic!("{e}"));
    let path = "/v1/operator/relying-parties/rp-idem/resume";
    let hash = ring::digest::digest(&ring::digest::SHA256, format!("POST\0{path}\0").as_bytes());
    client
        .execute(
            "INSERT INTO idempotency_keys (principal, key, request_hash) VALUES ($1, $2, $3)",
            &[&principal, &k3, &hash.as_ref()],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let r = send(post(&http, &s, path, Some(&k3.to_string()))).await;
    assert_problem(&r, 409, "IDEMPOTENCY_KEY_IN_FLIGHT");
    assert!(r.header("retry-after").is_some());
    // A claim older than the lease belonged to a server that died: the retry takes it over.
    client
        .execute(
            "UPDATE idempotency_keys SET created_at = now() - interval '1 hour' WHERE key = $1",
            &[&k3],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let r = send(post(&http, &s, path, Some(&k3.to_string()))).await;
    assert_eq!(r.status, 204, "{:?}", r.body);

    // Retention: keys older than 24 h are pruned (then the key would run again).
    client
        .execute(
            "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = $1::text::uuid",
            &[&key],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pool = mykey_api::http::pool(s.db_config.clone()).unwrap_or_else(|e| panic!("{e}"));
    let pruned = mykey_api::http::idempotency::Idempotency::new(pool)
        .prune()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pruned, 2, "the first key, for both callers");
}

/// Waits (bounded) until the access log holds at least `n` rows.
async fn access_rows(s: &Server, n: i64) {
    let started = Instant::now();
    loop {
        if count(s, "SELECT count(*) FROM access_log").await >= n {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "access log never reached {n} rows"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Issue 10 "Access log": every request with its principal, role, route template, status,
/// latency and correlation id (the one echoed to the caller), append-only, exportable.
#[tokio::test]
async fn every_request_is_in_the_append_only_access_log_and_exports() {
    let s = start(&[]).await;
    let http = reqwest::Client::new();
    let t0 = chrono::Utc::now() - chrono::Duration::seconds(1);
    let anon = send(http.get(format!("{}/nowhere/at/all", s.base))).await;
    assert_problem(&anon, 404, "NOT_FOUND");
    let anon_corr = anon
        .header("x-correlation-id")
        .unwrap_or_else(|| panic!("no correlation id echoed"))
        .to_owned();
    // An authenticated operator's own correlation id is adopted and echoed.
    let mine = uuid::Uuid::new_v4();
    let op = send(
        post(&http, &s, "/v1/operator/relying-parties/rp-zz/retire", None)
            .header("x-correlation-id", mine.to_string()),
    )
    .await;
    assert_problem(&op, 404, "RP_NOT_FOUND");
    assert_eq!(
        op.header("x-correlation-id"),
        Some(mine.to_string().as_str())
    );
    access_rows(&s, 2).await;

    let mut client = mykey_tests::connect(&s.db_config).await;
    let rows = client
        .query(
            "SELECT principal, role, route, method, status, latency_us, correlation_id::text \
             FROM access_log ORDER BY id",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    type Row = (Option<String>, Option<String>, String, String, i16, String);
    let got: Vec<Row> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(6)))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                None,
                None,
                "(unmatched)".into(),
                "GET".into(),
                404,
                anon_corr.clone()
            ),
            (
                Some("operator".into()),
                Some("operator".into()),
                "/v1/operator/relying-parties/{id}/{action}".into(),
                "POST".into(),
                404,
                mine.to_string()
            ),
        ]
    );
    assert!(rows.iter().all(|r| r.get::<_, i64>(5) >= 0));

    // Append-only, even for the table's owner; the runtime role may only read and append.
    for sql in [
        "UPDATE access_log SET status = 200",
        "DELETE FROM access_log",
        "TRUNCATE access_log",
    ] {
        assert!(
            client.batch_execute(sql).await.is_err(),
            "{sql} was allowed"
        );
    }
    let privileges: Vec<bool> = client
        .query_one(
            "SELECT has_table_privilege('mykey_runtime', 'access_log', 'SELECT'), \
             has_table_privilege('mykey_runtime', 'access_log', 'INSERT'), \
             has_table_privilege('mykey_runtime', 'access_log', 'UPDATE'), \
             has_table_privilege('mykey_runtime', 'access_log', 'DELETE'), \
             has_table_privilege('mykey_runtime', 'access_log', 'TRUNCATE')",
            &[],
        )
        .await
        .map(|r| (0..5).map(|i| r.get(i)).collect())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(privileges, vec![true, true, false, false, false]);
    assert_eq!(count(&s, "SELECT count(*) FROM access_log").await, 2);

    // Export by time range and principal.
    let to = chrono::Utc::now() + chrono::Duration::seconds(1);
    let all = ExportFilter {
        from: t0,
        to,
        principal: None,
    };
    let mut csv = Vec::new();
    let n = export(&mut client, &all, ExportFormat::Csv, &mut csv)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n, 2);
    let csv = String::from_utf8(csv).unwrap_or_default();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "at,principal,role,rp,route,method,status,latency_us,correlation_id"
    );
    assert_eq!(lines.len(), 3);
    assert!(
        lines[2]
            .contains("operator,operator,,/v1/operator/relying-parties/{id}/{action},POST,404,"),
        "{csv}"
    );

    let ops = ExportFilter {
        principal: Some("operator".into()),
        ..all.clone()
    };
    let mut nd = Vec::new();
    let n = export(&mut client, &ops, ExportFormat::Ndjson, &mut nd)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n, 1);
    let line: Value = serde_json::from_slice(nd.trim_ascii_end()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(line["correlation_id"], mine.to_string());
    assert_eq!(line["status"], 404);

    let before = ExportFilter {
        from: t0 - chrono::Duration::hours(1),
        to: t0,
        principal: None,
    };
    let mut none = Vec::new();
    let n = export(&mut client, &before, ExportFormat::Ndjson, &mut none)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((n, none.len()), (0, 0));
}

/// `mykey-server access-log` parses its range and format; a time without an offset is refused.
#[test]
fn the_access_log_command_line() {
    use clap::Parser;
    use mykey_api::cli::{Cli, Command};
    let cli = Cli::try_parse_from([
        "mykey-server",
        "access-log",
        "--from",
        "2026-11-30T00:00:00+09:00",
        "--to",
        "2026-12-01T00:00:00Z",
        "--format",
        "csv",
        "--principal",
        "op-a",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    match cli.command {
        Some(Command::AccessLog {
            from,
            format,
            principal,
            ..
        }) => {
            assert_eq!(from.to_rfc3339(), "2026-11-29T15:00:00+00:00");
            assert_eq!(format, ExportFormat::Csv);
            assert_eq!(principal.as_deref(), Some("op-a"));
        }
        other => panic!("{other:?}"),
    }
    assert!(Cli::try_parse_from([
        "mykey-server",
        "access-log",
        "--from",
        "2026-11-30T00:00:00",
        "--to",
        "2026-12-01T00:00:00Z"
    ])
    .is_err());
}

/// Issue 10: request count by status and a latency histogram, per route *template*.
#[tokio::test]
async fn route_metrics_count_by_template_and_status() {
    let s = start(&[]).await;
    let http = reqwest::Client::new();
    for id in ["rp-a", "rp-b", "rp-c"] {
        let r = send(post(
            &http,
            &s,
            &format!("/v1/operator/relying-parties/{id}/suspend"),
            None,
        ))
        .await;
        assert_eq!(r.status, 404);
    }
    let r = send(http.get(format!("{}/healthz", s.base))).await;
    assert_eq!(r.status, 200);
    let page = http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    let value = |needles: &[&str]| -> Option<f64> {
        page.lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let template = "route=\"/v1/operator/relying-parties/{id}/{action}\"";
    assert_eq!(
        value(&["mykey_http_requests_total{", template, "status=\"404\""]),
        Some(3.0),
        "{page}"
    );
    assert_eq!(
        value(&[
            "mykey_http_requests_total{",
            "route=\"/healthz\"",
            "status=\"200\""
        ]),
        Some(1.0)
    );
    assert_eq!(
        value(&["mykey_http_request_duration_seconds_count{", template]),
        Some(3.0)
    );
    assert!(value(&[
        "mykey_http_request_duration_seconds_bucket{",
        template,
        "le=\"+Inf\""
    ])
    .is_some());
    // Concrete ids never become labels.
    assert!(!page.contains("rp-a"), "{page}");
}

fn codes_of(doc: &Value) -> BTreeSet<String> {
    doc["components"]["schemas"]["Problem"]["properties"]["code"]["enum"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `/openapi.json` is the generated document: its code enum is exactly the code table (both
/// ways), every refusal on every operation references the Problem response, and it documents
/// Idempotency-Key on the operator's commands.
#[tokio::test]
async fn openapi_json_is_generated_and_lists_every_code_both_ways() {
    let s = start(&[]).await;
    let http = reqwest::Client::new();
    let r = send(http.get(format!("{}/openapi.json", s.base))).await;
    assert_eq!(r.status, 200);
    let doc = r.body;
    assert_eq!(
        doc["openapi"].as_str().map(|v| v.starts_with("3.")),
        Some(true)
    );
    let server: BTreeSet<String> = mykey_api::codes::ApiCode::ALL
        .iter()
        .map(|c| c.as_str().to_owned())
        .collect();
    let documented = codes_of(&doc);
    assert_eq!(
        server.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new()
    );
    assert_eq!(
        documented.difference(&server).collect::<Vec<_>>(),
        Vec::<&String>::new()
    );
    for code in [
        "IDEMPOTENCY_KEY_REUSED",
        "IDEMPOTENCY_KEY_IN_FLIGHT",
        "READ_MODEL_BEHIND",
    ] {
        assert!(documented.contains(code), "{code}");
    }
    let paths = doc["paths"]
        .as_object()
        .unwrap_or_else(|| panic!("no paths"));
    assert!(paths.len() >= 16, "{:?}", paths.keys());
    for (path, item) in paths {
        for (method, op) in item.as_object().into_iter().flatten() {
            for (status, response) in op["responses"].as_object().into_iter().flatten() {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["$ref"], "#/components/responses/Problem",
                        "{method} {path} {status}"
                    );
                }
            }
            // Every state-changing operator request takes an Idempotency-Key (reads do not).
            if path.starts_with("/v1/operator/") && method == "post" {
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                assert!(
                    params
                        .iter()
                        .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"),
                    "{method} {path}: no Idempotency-Key"
                );
            }
        }
    }
    // The in-process document and the served one are the same.
    let local = serde_json::to_value(mykey_api::http::openapi::document()).unwrap_or_default();
    assert_eq!(local, doc);
}

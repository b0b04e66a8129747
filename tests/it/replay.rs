//! Issue 12: signed checkpoints (server), the auditor endpoints and their credentials, and
//! `mykey-replay` export / verify / history, with each tampering found at its position.

use base64::Engine as _;
use chrono::NaiveDate;
use clap::Parser;
use mykey_api::auth::operators::{OperatorTokens, Role, Roles};
use mykey_api::config::Settings;
use mykey_api::startup::Application;
use mykey_replay::export::ExportArgs;
use mykey_replay::verify::{Verification, VerifyArgs};
use mykey_schemas::{EventEnvelope, StreamId};
use mykey_store::contract::single;
use mykey_store::pg::{PgEventStore, PgStoreOptions};
use mykey_store::{ChainBreakKind, EventStore, ExpectedVersion};
use mykey_tests::TestDb;
use serde_json::Value;
use std::path::{Path, PathBuf};

const EVENTS_PER_STREAM: usize = 4;
const STREAMS: usize = 5;
/// Events in the seeded log.
const N: u64 = (EVENTS_PER_STREAM * STREAMS) as u64;

struct Server {
    base: String,
    auditor: String,
    expired: String,
    operator: String,
    db: TestDb,
    store: PgEventStore,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_else(|e| panic!("{e}"))
}

/// A server with an auditor, an expired auditor and an operator-only credential, over a log
/// of [`N`] events.
async fn server() -> Server {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("replay-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let auditor_roles = Roles::of(&[Role::Auditor]);
    let (auditor, a_line) =
        OperatorTokens::new_credential("audrey", auditor_roles, date("2999-01-01"))
            .unwrap_or_else(|e| panic!("{e}"));
    let (expired, e_line) =
        OperatorTokens::new_credential("old", auditor_roles, date("2020-01-01"))
            .unwrap_or_else(|e| panic!("{e}"));
    let (operator, o_line) = OperatorTokens::new_token("olga").unwrap_or_else(|e| panic!("{e}"));
    let tokens = dir.join("operators.txt");
    std::fs::write(&tokens, format!("{a_line}\n{e_line}\n{o_line}\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let env = [
        ("MYKEY_LISTEN", "127.0.0.1:0".to_owned()),
        ("MYKEY_OPERATOR_TOKENS_FILE", tokens.display().to_string()),
        ("MYKEY_CHECKPOINT_INTERVAL_SECS", "0".to_owned()),
        ("MYKEY_CHECKPOINT_ORIGIN", "mykey.test/log".to_owned()),
    ];
    let settings = Settings::from_lookup(|k| {
        env.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.clone())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let db = TestDb::create().await;
    let app = Application::build(&settings, db.config())
        .await
        .unwrap_or_else(|e| panic!("server did not start: {e}"));
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let store = PgEventStore::connect(db.config(), PgStoreOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 0..STREAMS {
        let s = StreamId::new("audit", i).unwrap_or_else(|e| panic!("{e}"));
        store
            .append(single(&s, ExpectedVersion::NoStream, EVENTS_PER_STREAM))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    Server {
        base,
        auditor,
        expired,
        operator,
        db,
        store,
        dir,
    }
}

impl Server {
    async fn call(&self, method: &str, path: &str, token: &str) -> (u16, Value) {
        let http = reqwest::Client::new();
        let url = format!("{}{path}", self.base);
        let req = match method {
            "POST" => http.post(url),
            _ => http.get(url),
        };
        let req = if token.is_empty() {
            req
        } else {
            req.bearer_auth(token)
        };
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = resp.status().as_u16();
        if status >= 400 {
            let ct = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            assert_eq!(ct, "application/problem+json", "{path}");
        }
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Signs a checkpoint of the current head; returns its note.
    async fn sign(&self) -> String {
        let (status, body) = self
            .call("POST", "/v1/audit/checkpoints", &self.auditor)
            .await;
        assert_eq!(status, 201, "{body}");
        body["note"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}"))
            .to_owned()
    }

    async fn verifier_keys(&self) -> Vec<String> {
        let (status, body) = self
            .call("GET", "/v1/audit/checkpoint-keys", &self.auditor)
            .await;
        assert_eq!(status, 200, "{body}");
        body["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .map(|k| k["verifier_key"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn save(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
        p
    }

    async fn export(&self, name: &str) -> PathBuf {
        let output = self.path(name);
        let db = mykey_replay::db::Db::connect(&self.db.url())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        mykey_replay::export::export(
            &db,
            &ExportArgs {
                database_url: self.db.url(),
                from: 1,
                to: None,
                streams: vec![],
                categories: vec![],
                output: output.clone(),
                manifest: None,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        output
    }
}

fn file_args(file: &Path, keys: &[String]) -> VerifyArgs {
    VerifyArgs {
        database_url: None,
        file: Some(file.to_owned()),
        manifest: None,
        no_manifest: false,
        checkpoints: vec![],
        public_keys: keys.to_vec(),
        from: None,
        to: None,
        json: false,
    }
}

async fn verify(args: &VerifyArgs) -> Verification {
    mykey_replay::verify::verify(args)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn broken_at(v: &Verification) -> (u64, ChainBreakKind) {
    assert!(!v.intact, "tampering went unnoticed: {v:?}");
    let b = v
        .first_break()
        .unwrap_or_else(|| panic!("no chain break: {v:?}"));
    (b.position, b.kind.clone())
}

fn lines_of(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("{e}"))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A copy of the export with its lines changed by `f`, and the original manifest beside it.
fn tampered(src: &Path, name: &str, f: impl FnOnce(&mut Vec<String>)) -> PathBuf {
    let mut lines = lines_of(src);
    f(&mut lines);
    let dst = src.with_file_name(name);
    std::fs::write(&dst, lines.join("\n") + "\n").unwrap_or_else(|e| panic!("{e}"));
    let manifest = mykey_replay::manifest::Manifest::path_for(src);
    std::fs::copy(&manifest, mykey_replay::manifest::Manifest::path_for(&dst))
        .unwrap_or_else(|e| panic!("{e}"));
    dst
}

fn envelope(line: &str) -> EventEnvelope {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}"))
}

/// Rewrites the events from `from` on with new payloads and a recomputed chain: what someone
/// with write access to the database could do to hide a change.
fn forge_tail(events: &mut [EventEnvelope], from_index: usize) {
    for i in from_index..events.len() {
        events[i].payload = format!("{{\"forged\":{i}}}");
        if i > 0 {
            events[i].prev_hash = events[i - 1].hash;
        }
        events[i].hash = events[i].compute_hash();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditor_endpoints_refuse_expired_and_role_less_credentials_and_page() {
    let s = server().await;
    for (token, status, code) in [
        (s.expired.as_str(), 401, "CREDENTIAL_EXPIRED"),
        (s.operator.as_str(), 403, "ROLE_REQUIRED"),
        ("", 401, "OPERATOR_UNAUTHORIZED"),
        ("not-a-token", 401, "OPERATOR_UNAUTHORIZED"),
    ] {
        for path in ["/v1/audit/checkpoints", "/v1/audit/checkpoint-keys"] {
            let (got, body) = s.call("GET", path, token).await;
            assert_eq!((got, body["code"].as_str()), (status, Some(code)), "{path}");
        }
    }
    // Signing on demand: auditor or operator; an expired credential is still refused.
    let (got, body) = s.call("POST", "/v1/audit/checkpoints", &s.expired).await;
    assert_eq!(
        (got, body["code"].as_str()),
        (401, Some("CREDENTIAL_EXPIRED"))
    );
    let (got, body) = s.call("POST", "/v1/audit/checkpoints", &s.operator).await;
    assert_eq!(got, 201, "{body}");
    assert_eq!(body["size"], N);
    s.sign().await;
    s.sign().await;
    // The operator endpoints answer the same codes; an auditor-only credential never
    // reaches them.
    for (token, status, code) in [
        (s.auditor.as_str(), 403, "ROLE_REQUIRED"),
        (s.expired.as_str(), 401, "CREDENTIAL_EXPIRED"),
        ("not-a-token", 401, "OPERATOR_UNAUTHORIZED"),
    ] {
        let (got, body) = s
            .call("POST", "/v1/operator/signing-keys/rotate", token)
            .await;
        assert_eq!((got, body["code"].as_str()), (status, Some(code)));
    }

    let (got, page1) = s
        .call("GET", "/v1/audit/checkpoints?limit=2", &s.auditor)
        .await;
    assert_eq!(got, 200, "{page1}");
    assert_eq!(page1["items"].as_array().map(Vec::len), Some(2));
    let cursor = page1["next_cursor"].as_str().unwrap_or_default().to_owned();
    assert!(!cursor.is_empty(), "{page1}");
    let (_, page2) = s
        .call(
            "GET",
            &format!("/v1/audit/checkpoints?limit=2&cursor={cursor}"),
            &s.auditor,
        )
        .await;
    assert_eq!(page2["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(page2["next_cursor"], Value::Null);
    for bad in ["limit=0", "limit=501", "cursor=nope", "colour=blue"] {
        let (got, body) = s
            .call("GET", &format!("/v1/audit/checkpoints?{bad}"), &s.auditor)
            .await;
        assert_eq!(
            (got, body["code"].as_str()),
            (400, Some("INVALID_QUERY")),
            "{bad}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_verifies_independently_and_survives_key_rotation() {
    let s = server().await;
    let note = s.sign().await;
    let keys = s.verifier_keys().await;
    assert_eq!(keys.len(), 1);

    // An independent path: split the note and the verifier key by hand, recompute the C2SP
    // key id with SHA-256, and verify with ring's UnparsedPublicKey.
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut parts = keys[0].splitn(3, '+');
    let (name, id_hex, key_b64) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    assert_eq!(name, "mykey.test/log");
    let raw_key = b64.decode(key_b64).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((raw_key[0], raw_key.len()), (0x01, 33));
    let mut id_input = format!("{name}\n").into_bytes();
    id_input.extend_from_slice(&raw_key);
    let digest = ring::digest::digest(&ring::digest::SHA256, &id_input);
    assert_eq!(hex_of(&digest.as_ref()[..4]), id_hex);
    let split = note.rfind("\n\n").unwrap_or_else(|| panic!("{note}"));
    let (text, sig_line) = (&note[..split + 1], &note[split + 2..]);
    let sig_b64 = sig_line
        .strip_prefix(&format!("\u{2014} {name} "))
        .and_then(|l| l.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("{sig_line}"));
    let sig = b64.decode(sig_b64).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hex_of(&sig[..4]), id_hex);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &raw_key[1..])
        .verify(text.as_bytes(), &sig[4..])
        .unwrap_or_else(|_| panic!("the signature does not verify"));
    // The text: origin, size = head, base64 of the hash at the head, time.
    let head = s
        .store
        .read_all(N, 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<&str> = text.lines().collect();
    let (size, hash) = (N.to_string(), b64.encode(head[0].hash.0));
    assert_eq!(lines[..3], [name, size.as_str(), hash.as_str()]);
    assert!(lines[3].starts_with("time "), "{text}");

    // Rotation: a new key signs from now on; the old one stays listed with its end, and the
    // old checkpoint still opens with it.
    let signer =
        mykey_api::audit::CheckpointSigner::start(s.db.config(), "mykey.test/log".into(), None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    signer.rotate().await.unwrap_or_else(|e| panic!("{e}"));
    let newer = s.sign().await;
    let (_, listed) = s.call("GET", "/v1/audit/checkpoint-keys", &s.auditor).await;
    let items = listed["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 2, "{listed}");
    assert!(items[0]["valid_until"].is_string() && items[1]["valid_until"].is_null());
    let all: Vec<_> = s
        .verifier_keys()
        .await
        .iter()
        .map(|k| mykey_store::checkpoint::VerifierKey::parse(k).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    for n in [&note, &newer] {
        mykey_store::checkpoint::open(n, &all).unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(
        mykey_store::checkpoint::open(&newer, &all[..1]).is_err(),
        "the new checkpoint is not signed by the old key"
    );
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_verifies_and_each_tampering_of_the_file_is_found_at_its_position() {
    let s = server().await;
    let note = s.sign().await;
    let keys = s.verifier_keys().await;
    let file = s.export("log.ndjson").await;

    // Round trip: the export verifies against its manifest's signed checkpoint.
    let v = verify(&file_args(&file, &keys)).await;
    assert!(v.intact, "{v:?}");
    assert_eq!((v.report.verified, v.checkpoints_matched), (N, 1));
    assert_eq!(v.manifest_checkpoint_verified, Some(true));

    // Each tampering, at the exact position (line k holds position k).
    let edited = tampered(&file, "edited.ndjson", |l| {
        let mut e = envelope(&l[6]);
        e.payload = "{\"points\":1000000}".into();
        l[6] = serde_json::to_string(&e).unwrap_or_default();
    });
    let v = verify(&file_args(&edited, &keys)).await;
    assert!(matches!(
        broken_at(&v),
        (7, ChainBreakKind::HashMismatch { .. })
    ));
    assert_eq!(v.line, Some(7));

    let deleted = tampered(&file, "deleted.ndjson", |l| {
        l.remove(4);
    });
    let v = verify(&file_args(&deleted, &keys)).await;
    assert_eq!(
        broken_at(&v),
        (5, ChainBreakKind::Missing { found: Some(6) })
    );

    let swapped = tampered(&file, "swapped.ndjson", |l| l.swap(9, 10));
    let v = verify(&file_args(&swapped, &keys)).await;
    assert_eq!(broken_at(&v), (10, ChainBreakKind::Reordered { found: 11 }));

    let duplicated = tampered(&file, "duplicated.ndjson", |l| {
        let copy = l[2].clone();
        l.insert(3, copy);
    });
    let v = verify(&file_args(&duplicated, &keys)).await;
    assert_eq!(
        broken_at(&v),
        (3, ChainBreakKind::Duplicated { repeated_at: 4 })
    );

    // The tail cut off: the manifest sees it ...
    let truncated = tampered(&file, "truncated.ndjson", |l| l.truncate(l.len() - 2));
    let v = verify(&file_args(&truncated, &keys)).await;
    assert_eq!(
        broken_at(&v),
        (N - 1, ChainBreakKind::Truncated { expected_last: N })
    );
    // ... and without the manifest, a saved checkpoint sees it.
    let saved = s.save("checkpoint.txt", &note);
    let mut args = file_args(&truncated, &keys);
    args.no_manifest = true;
    args.checkpoints = vec![saved.clone()];
    let v = verify(&args).await;
    assert_eq!(
        broken_at(&v),
        (N - 1, ChainBreakKind::Truncated { expected_last: N })
    );

    // The newest events rewritten with every hash recomputed, the manifest's counts and hashes
    // adjusted to match: the chain alone is fooled, the signed checkpoint is not.
    let forged = tampered(&file, "forged.ndjson", |l| {
        let mut events: Vec<EventEnvelope> = l.iter().map(|x| envelope(x)).collect();
        forge_tail(&mut events, l.len() - 3);
        *l = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap_or_default())
            .collect();
    });
    let mpath = mykey_replay::manifest::Manifest::path_for(&forged);
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
    let last = envelope(
        lines_of(&forged)
            .last()
            .map(String::as_str)
            .unwrap_or_default(),
    );
    manifest["last_hash"] = Value::String(last.hash.to_hex());
    std::fs::write(&mpath, manifest.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let mut no_checkpoint = file_args(&forged, &[]);
    no_checkpoint.no_manifest = true;
    assert!(
        verify(&no_checkpoint).await.intact,
        "a chain alone cannot see it"
    );
    let v = verify(&file_args(&forged, &keys)).await;
    assert!(
        matches!(broken_at(&v), (p, ChainBreakKind::CheckpointMismatch { .. }) if p == N),
        "{v:?}"
    );

    // A forged manifest: its checkpoint note altered (claims a longer log).
    let forged_manifest = tampered(&file, "forged-manifest.ndjson", |_| {});
    let mpath = mykey_replay::manifest::Manifest::path_for(&forged_manifest);
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
    let note_text = manifest["checkpoint"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    manifest["checkpoint"] =
        Value::String(note_text.replacen(&format!("\n{N}\n"), &format!("\n{}\n", N + 5), 1));
    std::fs::write(&mpath, manifest.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let v = verify(&file_args(&forged_manifest, &keys)).await;
    assert!(!v.intact);
    assert_eq!(v.manifest_checkpoint_verified, Some(false));
    assert!(
        v.problem
            .as_deref()
            .unwrap_or_default()
            .contains("forged or altered"),
        "{v:?}"
    );

    // A corrupt line is reported with its number.
    let corrupt = tampered(&file, "corrupt.ndjson", |l| l[2] = "{\"half\": ".into());
    let v = verify(&file_args(&corrupt, &keys)).await;
    assert_eq!(v.line, Some(3));
    assert!(
        v.problem
            .as_deref()
            .unwrap_or_default()
            .starts_with("line 3:"),
        "{v:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_from_postgres_against_a_saved_checkpoint_catches_rewritten_and_cut_tails() {
    let s = server().await;
    let note = s.sign().await;
    let keys = s.verifier_keys().await;
    let saved = s.save("checkpoint.txt", &note);
    let db_args = |checkpoints: Vec<PathBuf>| VerifyArgs {
        database_url: Some(s.db.url()),
        file: None,
        manifest: None,
        no_manifest: false,
        checkpoints,
        public_keys: keys.clone(),
        from: None,
        to: None,
        json: false,
    };
    let v = verify(&db_args(vec![saved.clone()])).await;
    assert!(v.intact && v.checkpoints_matched == 1, "{v:?}");

    // Someone with database credentials rewrites the newest three events and recomputes every
    // hash after them.
    let mut events = s
        .store
        .read_all(1, N as usize)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    forge_tail(&mut events, (N - 3) as usize);
    let client = s.db.client().await;
    client
        .batch_execute("SET session_replication_role = replica")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for e in &events[(N - 3) as usize..] {
        client
            .execute(
                "UPDATE events SET payload = $1, prev_hash = $2, hash = $3 WHERE global_position = $4",
                &[
                    &e.payload,
                    &e.prev_hash.0.as_slice(),
                    &e.hash.0.as_slice(),
                    &(e.global_position as i64),
                ],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(
        verify(&db_args(vec![])).await.intact,
        "the chain alone is fooled"
    );
    let v = verify(&db_args(vec![saved.clone()])).await;
    assert!(
        matches!(broken_at(&v), (p, ChainBreakKind::CheckpointMismatch { since: 1, .. }) if p == N),
        "{v:?}"
    );

    // The tail deleted: the saved checkpoint says the log reached N.
    client
        .execute(
            "DELETE FROM events WHERE global_position > $1",
            &[&((N - 2) as i64)],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let v = verify(&db_args(vec![saved])).await;
    assert_eq!(
        broken_at(&v),
        (N - 1, ChainBreakKind::Truncated { expected_last: N })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_shows_a_stream_with_compensating_events_marked() {
    let s = server().await;
    let stream = StreamId::new("audit", 0).unwrap_or_else(|e| panic!("{e}"));
    let patch = uuid::Uuid::new_v4();
    let mut req = single(&stream, ExpectedVersion::Exact(EVENTS_PER_STREAM as u64), 1);
    req.metadata.patch_id = Some(patch);
    s.store.append(req).await.unwrap_or_else(|e| panic!("{e}"));
    let file = s.export("history.ndjson").await;
    for source in ["--database-url", "--file"] {
        let value = if source == "--file" {
            file.display().to_string()
        } else {
            s.db.url()
        };
        for json in [false, true] {
            let mut argv = vec![
                "mykey-replay",
                "history",
                "--stream",
                stream.as_str(),
                source,
                &value,
            ];
            if json {
                argv.push("--json");
            }
            let cli = mykey_replay::Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"));
            let mut out = Vec::new();
            let outcome = mykey_replay::run(cli, &mut out)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(outcome, mykey_replay::Outcome::Done);
            let text = String::from_utf8(out).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            // The export was taken before the last checkpoint only if one existed; none was
            // signed here, so it runs to the head and holds the compensating event too.
            assert_eq!(
                lines.len(),
                EVENTS_PER_STREAM + 1,
                "{source} {json}: {text}"
            );
            if json {
                let last: Value =
                    serde_json::from_str(lines[EVENTS_PER_STREAM]).unwrap_or_default();
                assert_eq!(last["compensating"], true);
                assert_eq!(last["patch_id"], patch.to_string());
                assert_eq!(last["actor_role"], "operator");
            } else {
                assert!(
                    lines[EVENTS_PER_STREAM].contains(&format!("[compensating, patch {patch}]"))
                );
                assert!(!lines[0].contains("compensating"), "{text}");
            }
        }
    }
}

#[tokio::test]
async fn bad_arguments_are_usage_errors() {
    for argv in [
        vec!["mykey-replay"],
        vec!["mykey-replay", "verify"],
        vec![
            "mykey-replay",
            "verify",
            "--file",
            "x",
            "--database-url",
            "y",
        ],
        vec!["mykey-replay", "export", "--output", "x"],
        vec!["mykey-replay", "verify", "--file", "x", "--from", "0"],
        vec!["mykey-replay", "frobnicate"],
    ] {
        assert!(
            mykey_replay::Cli::try_parse_from(&argv).is_err(),
            "{argv:?}"
        );
    }
    // replay and diff: tests/it/replay_projections.rs.
    // A checkpoint without a key to check it is refused before anything is read.
    let cli = mykey_replay::Cli::try_parse_from([
        "mykey-replay",
        "verify",
        "--file",
        "x",
        "--checkpoint",
        "c",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let err = mykey_replay::run(cli, &mut Vec::new()).await;
    assert!(
        matches!(err, Err(mykey_replay::ToolError::Usage(_))),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_and_their_keys_are_append_only() {
    let s = server().await;
    s.sign().await;
    let client = s.db.client().await;
    for table in ["audit_checkpoint", "audit_checkpoint_key"] {
        for sql in [
            format!("UPDATE {table} SET id = id"),
            format!("DELETE FROM {table}"),
            format!("TRUNCATE {table} CASCADE"),
        ] {
            let err = client
                .batch_execute(&sql)
                .await
                .err()
                .unwrap_or_else(|| panic!("{sql} was allowed"));
            assert!(
                err.to_string().contains("append-only")
                    || format!("{err:?}").contains("append-only"),
                "{sql}: {err:?}"
            );
        }
    }
    let (_, body) = s.call("GET", "/v1/audit/checkpoints", &s.auditor).await;
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1));
}

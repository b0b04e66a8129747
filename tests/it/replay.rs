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

mod checkpoints;
mod tool;

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
        kafka: None,
        topic_prefix: mykey_projections::kafka::DEFAULT_TOPIC_PREFIX.into(),
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

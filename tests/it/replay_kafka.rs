//! Issue 12: `mykey-replay verify --kafka` against a real broker. The relay
//! (`mykey_projections::kafka`) publishes a real log; then records are produced by hand, in the
//! relay's own format, to repeat, forge, drop, swap or cut events. Each test has its own
//! database and topic prefixes, and deletes its topics.

use crate::kafka::broker::Broker;
use clap::Parser;
use mykey_projections::kafka::{self, message, KafkaSettings};
use mykey_replay::verify::{Verification, VerifyArgs};
use mykey_replay::{Cli, Outcome, ToolError};
use mykey_schemas::{EventEnvelope, StreamId};
use mykey_store::checkpoint::{self, Checkpoint};
use mykey_store::contract::single;
use mykey_store::pg::{PgEventStore, PgStoreOptions};
use mykey_store::{ChainBreakKind, EventStore, ExpectedVersion};
use mykey_tests::TestDb;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Partitions per topic: several, so the verifier must merge.
const PARTITIONS: i32 = 3;
/// Streams per category; each gets [`ROUNDS`] events, appended round-robin so that the
/// streams (and partitions) interleave in the log.
const STREAMS: usize = 4;
const ROUNDS: usize = 5;
const CATEGORIES: [&str; 2] = ["audit", "other"];
/// Events in the log.
const N: u64 = (STREAMS * ROUNDS * CATEGORIES.len()) as u64;
/// Bound on the relay catching up and on one produce.
const WITHIN: Duration = Duration::from_secs(60);
const ORIGIN: &str = "mykey.test/log";

struct Fixture {
    broker: Broker,
    _db: TestDb,
    events: Vec<EventEnvelope>,
    /// Prefixes whose topics the test created (deleted on drop, best effort).
    prefixes: Vec<String>,
    dir: PathBuf,
    key: ring::signature::Ed25519KeyPair,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn admin(brokers: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap_or_else(|e| panic!("admin client: {e}"))
}

fn prefix() -> String {
    format!("v{}", Uuid::new_v4().simple())
}

/// A database with an [`N`]-event log that the real relay published under a prefix of its own.
async fn relayed() -> (Fixture, String) {
    let broker = Broker::shared().await;
    let db = TestDb::create().await;
    let store = PgEventStore::connect(db.config(), PgStoreOptions::default())
        .await
        .unwrap_or_else(|e| panic!("store: {e}"));
    for _ in 0..ROUNDS {
        for category in CATEGORIES {
            for i in 0..STREAMS {
                let s = StreamId::new(category, i).unwrap_or_else(|e| panic!("{e}"));
                store
                    .append(single(&s, ExpectedVersion::Any, 1))
                    .await
                    .unwrap_or_else(|e| panic!("append: {e}"));
            }
        }
    }
    let settings = KafkaSettings {
        brokers: broker.addr.clone(),
        topic_prefix: prefix(),
        partitions: PARTITIONS,
        replication_factor: None,
    };
    let registry = prometheus::Registry::new();
    let relay = kafka::start(store.clone(), db.config(), settings.clone(), &registry)
        .await
        .unwrap_or_else(|e| panic!("relay: {e}"));
    let client = db.client().await;
    let deadline = Instant::now() + WITHIN;
    loop {
        let row = client
            .query_opt(
                "SELECT position FROM relay_position WHERE topic_prefix = $1",
                &[&settings.topic_prefix],
            )
            .await
            .unwrap_or_else(|e| panic!("relay_position: {e}"));
        if row.is_some_and(|r| r.get::<_, i64>(0) as u64 >= N) {
            break;
        }
        assert!(Instant::now() < deadline, "the relay did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.stop().await;
    let events = store
        .read_all(1, N as usize)
        .await
        .unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(events.len() as u64, N);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("replay-kafka-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let key = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .unwrap_or_else(|e| panic!("{e}"));
    let relay_prefix = settings.topic_prefix.clone();
    let fixture = Fixture {
        broker,
        _db: db,
        events,
        prefixes: vec![relay_prefix.clone()],
        dir,
        key,
    };
    (fixture, relay_prefix)
}

impl Fixture {
    /// A signed checkpoint of the log at its head, saved to a file; with its verifier key.
    fn checkpoint(&self) -> (PathBuf, String) {
        let last = &self.events[self.events.len() - 1];
        self.checkpoint_at(last.global_position, last.hash)
    }

    /// A signed checkpoint saying the log's event at `size` has `hash`, saved to a file of its
    /// own; with its verifier key.
    fn checkpoint_at(&self, size: u64, hash: mykey_schemas::Hash) -> (PathBuf, String) {
        let cp = Checkpoint {
            origin: ORIGIN.into(),
            size,
            hash,
            time: chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp(), 0)
                .unwrap_or_default(),
        };
        let note = checkpoint::sign(&cp, &self.key).unwrap_or_else(|e| panic!("{e}"));
        let path = self
            .dir
            .join(format!("checkpoint-{size}-{}.txt", Uuid::new_v4().simple()));
        std::fs::write(&path, note).unwrap_or_else(|e| panic!("{e}"));
        let key = checkpoint::verifier_key(ORIGIN, &self.key).unwrap_or_else(|e| panic!("{e}"));
        (path, key.to_string())
    }

    fn args(&self, prefix: &str, checkpoint: bool) -> VerifyArgs {
        let (checkpoints, public_keys) = if checkpoint {
            let (path, key) = self.checkpoint();
            (vec![path], vec![key])
        } else {
            (vec![], vec![])
        };
        VerifyArgs {
            database_url: None,
            file: None,
            kafka: Some(self.broker.addr.clone()),
            topic_prefix: prefix.to_owned(),
            manifest: None,
            no_manifest: false,
            checkpoints,
            public_keys,
            from: None,
            to: None,
            json: false,
        }
    }

    async fn verify(&self, prefix: &str, checkpoint: bool) -> Verification {
        mykey_replay::verify::verify(&self.args(prefix, checkpoint))
            .await
            .unwrap_or_else(|e| panic!("verify --kafka: {e}"))
    }

    /// Creates `prefix`'s topics (as the relay would) and produces `events` to them in order,
    /// in the relay's format.
    async fn publish(&mut self, prefix: &str, events: &[EventEnvelope]) {
        if !self.prefixes.iter().any(|p| p == prefix) {
            self.prefixes.push(prefix.to_owned());
            let topics: Vec<String> = CATEGORIES
                .iter()
                .map(|c| message::topic(prefix, c))
                .collect();
            let new: Vec<NewTopic> = topics
                .iter()
                .map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(-1)))
                .collect();
            for r in admin(&self.broker.addr)
                .create_topics(&new, &AdminOptions::new())
                .await
                .unwrap_or_else(|e| panic!("create topics: {e}"))
            {
                r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
            }
        }
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.broker.addr)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()
            .unwrap_or_else(|e| panic!("producer: {e}"));
        for e in events {
            let topic = message::topic(prefix, e.stream_id.category());
            let value = message::encode(e).unwrap_or_else(|err| panic!("{err}"));
            let mut headers = OwnedHeaders::new();
            for (key, value) in message::headers(e) {
                headers = headers.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                });
            }
            let record = FutureRecord::to(&topic)
                .key(e.stream_id.as_str())
                .payload(&value)
                .headers(headers);
            producer
                .send(record, WITHIN)
                .await
                .unwrap_or_else(|(err, _)| panic!("produce: {err}"));
        }
    }

    async fn delete_topics(&self) {
        let topics: Vec<String> = self
            .prefixes
            .iter()
            .flat_map(|p| CATEGORIES.iter().map(move |c| message::topic(p, c)))
            .collect();
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        // Best effort: an in-memory broker forgets them anyway.
        let _ = admin(&self.broker.addr)
            .delete_topics(&names, &AdminOptions::new())
            .await;
    }
}

fn broken_at(v: &Verification) -> (u64, ChainBreakKind) {
    assert!(!v.intact, "tampering went unnoticed: {v:?}");
    let b = v
        .first_break()
        .unwrap_or_else(|| panic!("no chain break: {v:?}"));
    (b.position, b.kind.clone())
}

/// What someone with write access to the topics could publish: `e` with other contents and
/// its own hash recomputed.
fn forged(e: &EventEnvelope) -> EventEnvelope {
    let mut f = e.clone();
    f.payload = "{\"forged\":true}".into();
    f.hash = f.compute_hash();
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_from_kafka_checks_the_relayed_log_skips_resends_and_finds_a_forged_record() {
    let (mut f, relay_prefix) = relayed().await;

    // The relay's topics hold the whole log: it verifies, against a signed checkpoint too.
    let v = f.verify(&relay_prefix, true).await;
    assert!(v.intact, "{v:?}");
    assert_eq!((v.report.verified, v.checkpoints_matched), (N, 1));
    assert_eq!(v.report.last_hash, Some(f.events[N as usize - 1].hash));

    // The command line, as an auditor types it.
    let cli = Cli::try_parse_from([
        "mykey-replay",
        "verify",
        "--kafka",
        &f.broker.addr,
        "--topic-prefix",
        &relay_prefix,
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let outcome = mykey_replay::run(cli, &mut out)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out);
    assert_eq!(outcome, Outcome::Done, "{text}");
    assert!(text.contains(&format!("verified {N} events")), "{text}");
    assert!(text.contains("OK: the chain is intact"), "{text}");

    // At-least-once: the relay re-sent two events it had already published. Same contents:
    // skipped, and said so.
    let resent = [f.events[4].clone(), f.events[5].clone()];
    f.publish(&relay_prefix, &resent).await;
    let v = f.verify(&relay_prefix, true).await;
    assert!(v.intact, "{v:?}");
    assert_eq!(v.report.verified, N);
    assert!(
        v.notes
            .iter()
            .any(|n| n.starts_with("2 record(s) repeated")),
        "{:?}",
        v.notes
    );

    // A forged record at position 7 (its own hash recomputed), published after the genuine one.
    let at = 7;
    f.publish(&relay_prefix, &[forged(&f.events[at - 1])]).await;
    let v = f.verify(&relay_prefix, true).await;
    // Found where it comes in the merge, reported at the position it claims.
    assert!(matches!(
        broken_at(&v),
        (p, ChainBreakKind::Duplicated { .. }) if p == at as u64
    ));
    let record = v.record.clone().unwrap_or_default();
    assert!(
        record.starts_with(&message::topic(
            &relay_prefix,
            f.events[at - 1].stream_id.category()
        )),
        "{record}"
    );
    assert_eq!(v.outcome(), Outcome::Failed);

    // A record edited without recomputing its hash.
    let mut edited = f.events[2].clone();
    edited.payload = "{\"edited\":true}".into();
    let p = prefix();
    let mut log = f.events.clone();
    log[2] = edited;
    f.publish(&p, &log).await;
    assert!(matches!(
        broken_at(&f.verify(&p, false).await),
        (3, ChainBreakKind::HashMismatch { .. })
    ));
    f.delete_topics().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_from_kafka_names_missing_reordered_truncated_and_rewritten_positions() {
    let (mut f, _) = relayed().await;
    let events = f.events.clone();

    // Position 6 never published.
    let p = prefix();
    let log: Vec<_> = events
        .iter()
        .filter(|e| e.global_position != 6)
        .cloned()
        .collect();
    f.publish(&p, &log).await;
    assert_eq!(
        broken_at(&f.verify(&p, false).await),
        (6, ChainBreakKind::Missing { found: Some(7) })
    );

    // Two events of one stream (so of one partition) swapped.
    let stream = &events[0].stream_id;
    let of_stream: Vec<usize> = (0..events.len())
        .filter(|&i| &events[i].stream_id == stream)
        .collect();
    let (a, b) = (of_stream[1], of_stream[2]);
    let mut log = events.clone();
    log.swap(a, b);
    let p = prefix();
    f.publish(&p, &log).await;
    let (at, kind) = broken_at(&f.verify(&p, false).await);
    assert_eq!(at, events[a].global_position);
    assert!(matches!(kind, ChainBreakKind::Reordered { .. }), "{kind:?}");

    // The newest three cut off: the chain alone cannot tell, the signed checkpoint can.
    let p = prefix();
    f.publish(&p, &events[..N as usize - 3]).await;
    assert!(f.verify(&p, false).await.intact);
    assert_eq!(
        broken_at(&f.verify(&p, true).await),
        (N - 2, ChainBreakKind::Truncated { expected_last: N })
    );

    // The newest three rewritten with every hash after them recomputed.
    let mut log = events.clone();
    for i in N as usize - 3..log.len() {
        log[i] = forged(&log[i]);
        log[i].prev_hash = log[i - 1].hash;
        log[i].hash = log[i].compute_hash();
    }
    let p = prefix();
    f.publish(&p, &log).await;
    assert!(
        f.verify(&p, false).await.intact,
        "the chain alone is fooled"
    );
    assert!(matches!(
        broken_at(&f.verify(&p, true).await),
        (at, ChainBreakKind::CheckpointMismatch { since: 1, .. }) if at == N
    ));
    f.delete_topics().await;
}

/// Retention dropped the oldest records: the topics begin at position `FROM`. Verifying from
/// 1 finds them missing; `--from FROM`, anchored by the signed checkpoint at `FROM - 1`,
/// verifies the rest; an anchor that is not the log's is a break at `FROM`, and `--from`
/// without its anchor is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_from_kafka_starts_at_a_signed_checkpoint_where_retention_begins() {
    const FROM: u64 = 11;
    let (mut f, _) = relayed().await;
    let retained = prefix();
    let tail: Vec<EventEnvelope> = f.events[(FROM - 1) as usize..].to_vec();
    f.publish(&retained, &tail).await;

    let from_one = f.verify(&retained, false).await;
    assert_eq!(broken_at(&from_one).0, 1, "{from_one:?}");

    let anchor = &f.events[(FROM - 2) as usize];
    assert_eq!(anchor.global_position, FROM - 1);
    let (cp, key) = f.checkpoint_at(anchor.global_position, anchor.hash);
    let (head_cp, _) = f.checkpoint();
    let mut args = f.args(&retained, false);
    args.from = Some(FROM);
    args.checkpoints = vec![cp.clone(), head_cp.clone()];
    args.public_keys = vec![key.clone()];
    let v = mykey_replay::verify::verify(&args)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(v.intact, "{v:?}");
    assert_eq!(v.report.verified, N - FROM + 1, "{v:?}");
    assert_eq!(v.checkpoints_matched, 1, "the head checkpoint: {v:?}");

    // A signed anchor with another hash: the first retained event does not link to it.
    let (wrong, _) = f.checkpoint_at(FROM - 1, f.events[0].hash);
    args.checkpoints = vec![wrong];
    let v = mykey_replay::verify::verify(&args)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(broken_at(&v).0, FROM, "{v:?}");

    // No checkpoint at FROM - 1 among those given: nothing to link to, refused.
    args.checkpoints = vec![head_cp];
    match mykey_replay::verify::verify(&args).await {
        Err(ToolError::Usage(m)) => assert!(m.contains(&format!("{}", FROM - 1)), "{m}"),
        other => panic!("{other:?}"),
    }
    // --from with an export is refused by the parser.
    let parse = |a: &[&str]| Cli::try_parse_from(a.iter().copied());
    assert!(parse(&[
        "mykey-replay",
        "verify",
        "--file",
        "x.ndjson",
        "--from",
        "3"
    ])
    .is_err());
    f.delete_topics().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_from_kafka_refuses_bad_arguments_and_reports_an_unreachable_broker() {
    let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
    // --topic-prefix needs --kafka; --kafka excludes the other sources.
    assert!(parse(&["mykey-replay", "verify", "--topic-prefix", "x"]).is_err());
    assert!(parse(&[
        "mykey-replay",
        "verify",
        "--kafka",
        "h:1",
        "--file",
        "x.ndjson"
    ])
    .is_err());
    let cli = parse(&[
        "mykey-replay",
        "verify",
        "--kafka",
        "127.0.0.1:1",
        "--topic-prefix",
        "a/b",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    assert!(matches!(
        mykey_replay::run(cli, &mut out).await,
        Err(ToolError::Usage(_))
    ));
    // Nothing listens on port 1: an error naming the brokers, not a hang.
    let cli = parse(&["mykey-replay", "verify", "--kafka", "127.0.0.1:1"])
        .unwrap_or_else(|e| panic!("{e}"));
    match mykey_replay::run(cli, &mut out).await {
        Err(ToolError::Kafka(m)) => assert!(m.contains("127.0.0.1:1"), "{m}"),
        other => panic!("{other:?}"),
    }
}

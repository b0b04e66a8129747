//! Login's cache misses answered from the `login_identity` read model (login/src/read_model.rs):
//! through the identity the server builds (a real runner, real PostgreSQL) and end to end on
//! two server instances sharing one database. Which model answered is read from the counters
//! `mykey_login_identity_read_model_total{lookup}` and `mykey_login_identity_fallback_total`.

use crate::auth::{assert_problem, settings, start, App};
use crate::pki::{pki, CardSpec};
use mykey_api::auth::clock::Clock;
use mykey_api::auth::identity::{
    default_identity, CertificateRef, Identity, RelyingPartyId, RequestActor, RpStatus,
};
use mykey_api::auth::read_model::ReadModel;
use mykey_projections::runner::RunnerOptions;
use mykey_projections::{Projection, Projections};
use mykey_store::pg::PgEventStore;
use mykey_tests::TestDb;
use std::sync::Arc;

/// Sum of a counter family's samples whose label `label` is `value` (all samples when None).
fn counter(registry: &prometheus::Registry, family: &str, label: Option<(&str, &str)>) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == family)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            label.is_none_or(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == k && l.value() == v)
            })
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

const ANSWERED: &str = "mykey_login_identity_read_model_total";
const FALLBACK: &str = "mykey_login_identity_fallback_total";

/// A login identity as the server builds it, with its own counters.
struct Login {
    identity: Arc<dyn Identity>,
    registry: prometheus::Registry,
}

impl Login {
    async fn on(db: &TestDb, projections: &Projections) -> Login {
        let store = PgEventStore::connect(db.config(), Default::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let registry = prometheus::Registry::new();
        let pool = mykey_api::http::pool(db.config()).unwrap_or_else(|e| panic!("{e}"));
        let read_model =
            ReadModel::new(projections.clone(), pool, &registry).unwrap_or_else(|e| panic!("{e}"));
        Login {
            identity: default_identity(&store, Some(read_model)),
            registry,
        }
    }

    /// Registers relying party `id` (a municipality with public key `key`); its position.
    async fn register_rp(&self, id: &str, key: &str) -> u64 {
        self.identity
            .register_relying_party(&rp(id), "municipality", "131016", "n", jwk(key), &actor())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Records a login of card `serial` at relying party `id`; the PPID.
    async fn register_login(&self, serial: &str, id: &str) -> String {
        self.identity
            .register_login(&cert(serial), &rp(id), &rp_actor(id))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn answered(&self, lookup: &str) -> u64 {
        counter(&self.registry, ANSWERED, Some(("lookup", lookup)))
    }

    fn fallbacks(&self, reason: Option<&str>) -> u64 {
        counter(&self.registry, FALLBACK, reason.map(|r| ("reason", r)))
    }
}

async fn runner(db: &TestDb, with_login_identity: bool) -> Projections {
    let store = PgEventStore::connect(db.config(), Default::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let models = mykey_projections::models::all()
        .into_iter()
        .filter(|p| {
            with_login_identity
                || p.name() != mykey_projections::models::login_identity::LoginIdentity.name()
        })
        .collect();
    Projections::start(
        store,
        db.config(),
        models,
        &prometheus::Registry::new(),
        RunnerOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

fn actor() -> RequestActor {
    RequestActor::operator("test-operator", uuid::Uuid::new_v4(), None)
}

/// A login is recorded by the relying party it is for.
fn rp_actor(id: &str) -> RequestActor {
    RequestActor {
        actor: mykey_domain::Actor {
            id: id.to_owned(),
            role: mykey_domain::Role::RelyingParty(rp(id)),
        },
        correlation_id: uuid::Uuid::new_v4(),
        client_addr: None,
        command_id: None,
    }
}

fn rp(id: &str) -> RelyingPartyId {
    RelyingPartyId::parse(id).unwrap_or_else(|e| panic!("{e}"))
}

fn cert(serial: &str) -> CertificateRef {
    CertificateRef::new("CN=test ca", serial).unwrap_or_else(|e| panic!("{e}"))
}

fn jwk(n: &str) -> serde_json::Value {
    serde_json::json!({ "kty": "RSA", "n": n, "e": "AQAB" })
}

/// Writer `a` registers an RP and a login; `b` (an empty cache, created before the writes, so
/// its sync must catch up and the read model must be waited for) answers both from the read
/// model, then sees a suspension and a revocation written by `a` right after.
#[tokio::test]
async fn an_empty_cache_answers_from_the_read_model_and_sees_revocations_and_suspensions_at_once() {
    let db = TestDb::create().await;
    let projections = runner(&db, true).await;
    let (a, b) = (
        Login::on(&db, &projections).await,
        Login::on(&db, &projections).await,
    );
    a.register_rp("rp-1", "k1").await;
    // Read your writes: written by a a moment ago, answered by b's read model.
    let got = b
        .identity
        .relying_party(&rp("rp-1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("rp-1 not found"));
    assert_eq!((got.status, got.jwk), (RpStatus::Active, jwk("k1")));

    // b has synced: the login below is an event after its position, which it must wait for.
    let ppid = a.register_login("0a", "rp-1").await;
    let found = b.identity.active_ppid(&cert("0a"), &rp("rp-1")).await;
    assert_eq!(found.ok().flatten().as_deref(), Some(ppid.as_str()));
    let unknown = b.identity.active_ppid(&cert("0b"), &rp("rp-1")).await;
    assert_eq!(unknown.ok().flatten(), None);
    assert_eq!(b.answered("relying_party"), 1);
    assert_eq!(b.answered("active_ppid"), 2);
    assert_eq!(b.fallbacks(None), 0);

    // Cached now: no read-model query.
    let again = b.identity.active_ppid(&cert("0a"), &rp("rp-1")).await;
    assert_eq!(again.ok().flatten().as_deref(), Some(ppid.as_str()));
    assert_eq!(b.answered("active_ppid"), 2);

    // Suspended and revoked by a: b's next lookups refuse (cache cleared, read model agrees).
    a.identity
        .set_relying_party_status(&rp("rp-1"), RpStatus::Suspended, &actor())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let marked = a
        .identity
        .mark_certificates_revoked(&[cert("0a")], &actor())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(marked.written, 1);
    let got = b.identity.relying_party(&rp("rp-1")).await;
    assert_eq!(
        got.ok().flatten().map(|r| r.status),
        Some(RpStatus::Suspended)
    );
    match b.identity.active_ppid(&cert("0a"), &rp("rp-1")).await {
        Err(mykey_api::auth::identity::IdentityError::Rejected { code, .. }) => {
            assert_eq!(code, "CERTIFICATE_REVOKED")
        }
        other => panic!("a revoked certificate answered {other:?}"),
    }
    assert_eq!(b.answered("relying_party"), 2);
    assert_eq!(b.answered("active_ppid"), 3);
    assert_eq!(b.fallbacks(None), 0);
    projections.shutdown().await;
}

/// No login_identity projection running: the write model answers, and the counter says so.
#[tokio::test]
async fn without_the_projection_the_write_model_answers_and_the_fallback_is_counted() {
    let db = TestDb::create().await;
    let projections = runner(&db, false).await;
    let (a, b) = (
        Login::on(&db, &projections).await,
        Login::on(&db, &projections).await,
    );
    a.register_rp("rp-2", "k").await;
    let ppid = a.register_login("0c", "rp-2").await;
    let got = b.identity.relying_party(&rp("rp-2")).await;
    assert_eq!(got.ok().flatten().map(|r| r.jwk), Some(jwk("k")));
    let found = b.identity.active_ppid(&cert("0c"), &rp("rp-2")).await;
    assert_eq!(found.ok().flatten().as_deref(), Some(ppid.as_str()));
    assert_eq!(b.fallbacks(Some("not_serving")), 2);
    assert_eq!(b.answered("relying_party") + b.answered("active_ppid"), 0);
    projections.shutdown().await;
}

/// The projection stops on an event it cannot apply: lookups that need that event go to the
/// write model (right answer, fallback counted) instead of failing the login.
#[tokio::test]
async fn a_failed_projection_falls_back_to_the_write_model() {
    let db = TestDb::create().await;
    let projections = runner(&db, true).await;
    let (a, b) = (
        Login::on(&db, &projections).await,
        Login::on(&db, &projections).await,
    );
    let registered = a.register_rp("rp-3", "k").await;
    let name = mykey_projections::models::login_identity::LoginIdentity.name();
    // Serving (its schema created) once it holds the registration.
    projections
        .wait_for(name, registered, std::time::Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let schema = projections
        .active_schema(name)
        .unwrap_or_else(|| panic!("login_identity not serving"));
    // Every new PPID row is refused: the next PPID event stops the projection.
    db.client()
        .await
        .batch_execute(&format!(
            "ALTER TABLE {schema}.login_ppid ADD CONSTRAINT refuse_all CHECK (false) NOT VALID"
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ppid = a.register_login("0d", "rp-3").await;
    let found = b.identity.active_ppid(&cert("0d"), &rp("rp-3")).await;
    assert_eq!(found.ok().flatten().as_deref(), Some(ppid.as_str()));
    assert_eq!(b.fallbacks(Some("failed")), 1);
    projections.shutdown().await;
}

/// End to end: a card registered through instance A is found by かざし at instance B
/// immediately (B's cache is empty for it, B's read model is waited for), and an RP
/// suspended at A is refused at B right after.
#[tokio::test]
async fn a_card_registered_at_one_instance_logs_in_by_kazashi_at_another_at_once() {
    let db = TestDb::create().await;
    let s = settings(false);
    let a = App {
        base: start(&db, &s).await,
        http: reqwest::Client::new(),
        clock: Clock::system(),
        db,
    };
    // B serves a.db too; its own (empty) database only fills the field.
    let b = App {
        base: start(&a.db, &s).await,
        http: reqwest::Client::new(),
        clock: Clock::system(),
        db: TestDb::create().await,
    };
    let rp = a.register_rp("rp-two").await;
    // B's first answer about rp-two comes from the read model.
    let tb = b.access_token(&rp).await;
    let ta = a.access_token(&rp).await;
    let card = CardSpec::valid(&pki().ca_a).issue();
    let registered = a.pin_login(&ta, &card).await;
    assert_eq!(registered.0, 200, "{:?}", registered.2);
    let k = b.kazashi(&tb, &card).await;
    assert_eq!(k.0, 200, "{:?}", k.2);
    assert_eq!(k.2["ppid"], registered.2["ppid"]);
    let metrics = b.metrics().await;
    assert!(
        sample(&metrics, ANSWERED, "active_ppid") >= 1.0,
        "{metrics}"
    );
    assert!(
        sample(&metrics, ANSWERED, "relying_party") >= 1.0,
        "{metrics}"
    );
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with(FALLBACK) && !l.ends_with(" 0")),
        "{metrics}"
    );

    let got = a
        .operator(
            "/v1/operator/relying-parties/rp-two/suspend",
            Vec::new().into(),
            "application/json",
        )
        .await;
    assert_eq!(got.0, 204, "{:?}", got.2);
    assert_problem(&b.kazashi(&tb, &card).await, 403, "CLIENT_SUSPENDED");
}

/// The value of `family{lookup="<lookup>"}` in a Prometheus text page (0 when absent).
fn sample(metrics: &str, family: &str, lookup: &str) -> f64 {
    let prefix = format!("{family}{{lookup=\"{lookup}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

impl App {
    async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .text()
            .await
            .unwrap_or_default()
    }
}

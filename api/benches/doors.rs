//! The doors of issue 10 under load, on loopback: a PPID's status at a fixed request rate,
//! application submission (apply + link) throughput, and the access log's cost per request.
//!
//! ```text
//! cargo bench -p mykey-api --bench doors
//! ```
//!
//! Starts the real server (`Application::build`, every projection, the access log, route
//! metrics) in this process on a fresh database of the PostgreSQL at `MYKEY_TEST_DATABASE_URL`
//! (default 127.0.0.1:5432, user postgres), registers a municipality and a payment-service
//! provider through the operator door and gets their access tokens. The database is dropped at
//! the end. Knobs: `MYKEY_BENCH_CLIENTS` (64), `MYKEY_BENCH_SECS` (10), `MYKEY_BENCH_RATE`
//! (2,000 requests/s), `MYKEY_BENCH_PPIDS` (2,000).
//!
//! - `ppid-status`: `GET /v1/rp/ppids/{ppid}` by the municipality, `MYKEY_BENCH_RATE`
//!   requests/s spread evenly over the clients, each on a fixed schedule (open loop). Latency
//!   is measured from the **scheduled** send time, so a stalled server is not hidden by clients
//!   that wait for it (no coordinated omission).
//! - `apply+link`: a citizen's application and the provider's link, through the command
//!   handlers on the server's event log (the citizen door is another branch's), as many as
//!   the clients manage in the time: two appends, each deciding on the program's and the
//!   provider's streams as loaded.
//! - `access-log`: the access log's writer (`AccessLog`, what the middleware hands every
//!   request to) fed 100,000 records in chunks of half its queue, each chunk waited for in the
//!   table; its CPU per record is the log's cost per request.
//!
//! CPU is this process's (server and clients, `/proc/self/stat`) plus the PostgreSQL backends
//! connected to the bench's database (`pg_stat_activity`, `/proc/<pid>/stat`): other work on
//! the machine (other builds, other databases) is not counted, so the figure holds on a shared
//! machine better than throughput does.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::Utc;
use mykey_api::config::Settings;
use mykey_api::http::access_log::{AccessLog, AccessRecord, ACCESS_LOG_QUEUE};
use mykey_api::startup::Application;
use mykey_commands::{CertificateRef, CommandMeta, Commands, CreateProgram};
use mykey_domain::{ProgramId, RelyingPartyId, Role, SubjectId};
use mykey_store::pg::{PgEventStore, PgStoreOptions};
use mykey_store::EventStore;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const ISSUER: &str = "https://mykey.bench";
const OPERATOR_TOKEN: &str = "bench-operator-token-0123456789abcdef";
/// Records the access-log phase writes.
const ACCESS_LOG_RECORDS: usize = 100_000;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn b64u(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn admin_config() -> Result<tokio_postgres::Config, BoxError> {
    let url = std::env::var("MYKEY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".to_owned());
    Ok(tokio_postgres::Config::from_str(&url)?)
}

async fn connect(cfg: &tokio_postgres::Config) -> Result<tokio_postgres::Client, BoxError> {
    let (c, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(c)
}

/// utime + stime of `/proc/<pid>/stat` in seconds (USER_HZ = 100).
fn proc_cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// CPU seconds of this process and of the PostgreSQL backends serving `db`.
struct CpuMeter {
    pg: tokio_postgres::Client,
    db: String,
}

impl CpuMeter {
    async fn read(&self) -> Result<HashMap<String, f64>, BoxError> {
        let rows = self
            .pg
            .query(
                "SELECT pid::text FROM pg_stat_activity WHERE datname = $1",
                &[&self.db],
            )
            .await?;
        let mut out = HashMap::new();
        out.insert("self".to_owned(), proc_cpu_secs("self").unwrap_or(0.0));
        for r in rows {
            let pid: String = r.get(0);
            if let Some(s) = proc_cpu_secs(&pid) {
                out.insert(pid, s);
            }
        }
        Ok(out)
    }

    /// CPU seconds spent since `before` (a backend born since counts whole; one that ended is
    /// lost, which the server's long-lived pools make rare).
    async fn since(&self, before: &HashMap<String, f64>) -> Result<f64, BoxError> {
        let now = self.read().await?;
        Ok(now
            .iter()
            .map(|(pid, s)| s - before.get(pid).copied().unwrap_or(0.0))
            .sum())
    }
}

fn percentiles(mut lat: Vec<Duration>) -> (f64, f64, f64) {
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    (pct(0.50), pct(0.99), pct(0.999))
}

struct Rp {
    id: RelyingPartyId,
    token: String,
}

/// Registers `id` through the operator door and gets its access token.
async fn register(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    kind: &str,
) -> Result<Rp, BoxError> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|e| format!("{e}"))?;
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|e| format!("{e}"))?;
    let pt = key.public_key().as_ref();
    let jwk = json!({ "kty": "EC", "crv": "P-256", "x": b64u(&pt[1..33]), "y": b64u(&pt[33..65]) });
    let resp = http
        .post(format!("{base}/v1/operator/relying-parties"))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({ "id": id, "kind": kind, "code": "131016", "name": id, "jwk": jwk }))
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(format!("register {id}: {}", resp.text().await?).into());
    }
    let now = Utc::now().timestamp();
    let claims = json!({ "iss": id, "sub": id, "aud": format!("{ISSUER}/v1/oauth/token"),
                         "exp": now + 300, "iat": now, "jti": Uuid::new_v4().to_string() });
    let input = format!(
        "{}.{}",
        b64u(br#"{"alg":"ES256","typ":"JWT"}"#),
        b64u(claims.to_string().as_bytes())
    );
    let sig = key
        .sign(&rng, input.as_bytes())
        .map_err(|e| format!("{e}"))?;
    let resp = http
        .post(format!("{base}/v1/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            (
                "client_assertion",
                &format!("{input}.{}", b64u(sig.as_ref())),
            ),
        ])
        .send()
        .await?;
    let tok: Value = resp.json().await?;
    Ok(Rp {
        id: RelyingPartyId::parse(id)?,
        token: tok["access_token"]
            .as_str()
            .ok_or(format!("no token for {id}: {tok}"))?
            .to_owned(),
    })
}

/// Registers `n` citizens at `city` (first PIN logins through the command handlers): their
/// PPIDs for the municipality.
async fn ppids(
    cmds: &Arc<Commands<PgEventStore>>,
    city: &RelyingPartyId,
    n: usize,
) -> Result<Vec<String>, BoxError> {
    let mut tasks = Vec::new();
    let workers = 16;
    for w in 0..workers {
        let (cmds, city) = (cmds.clone(), city.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in (w..n).step_by(workers) {
                let cert = CertificateRef::new("bench-ca", &format!("{:x}", 0x1000_0000 + i))?;
                let meta = CommandMeta::new("platform", Role::System, Uuid::new_v4());
                let l = cmds.register_login(&meta, &cert, &city).await?;
                out.push(l.ppid.as_str().to_owned());
            }
            Ok::<_, BoxError>(out)
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

/// The offered load of a fixed-rate phase.
#[derive(Clone, Copy)]
struct Load {
    clients: usize,
    /// Requests per second, all clients together.
    rate: usize,
    secs: u64,
}

async fn ppid_status_phase(
    http: &reqwest::Client,
    base: &str,
    city: &Rp,
    ppids: Arc<Vec<String>>,
    load: Load,
    meter: &CpuMeter,
) -> Result<String, BoxError> {
    let Load {
        clients,
        rate,
        secs,
    } = load;
    let interval = Duration::from_secs_f64(clients as f64 / rate.max(1) as f64);
    let per_client = (secs as f64 / interval.as_secs_f64()) as usize;
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let cpu = meter.read().await?;
    let wall = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, ppids) = (http.clone(), ppids.clone());
        let url = format!("{base}/v1/rp/ppids/");
        let token = city.token.clone();
        tasks.push(tokio::spawn(async move {
            let offset = interval.mul_f64(c as f64 / clients as f64);
            let mut lat = Vec::with_capacity(per_client);
            let mut errors = 0usize;
            for k in 0..per_client {
                let due = start + offset + interval * k as u32;
                tokio::time::sleep_until(due).await;
                let ppid = &ppids[(c + k * clients) % ppids.len()];
                let ok = match http
                    .get(format!("{url}{ppid}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    lat.push(due.elapsed());
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    let elapsed = wall.elapsed().as_secs_f64() - 0.1;
    let cpu = meter.since(&cpu).await?;
    let n = all.len();
    let (p50, p99, p999) = percentiles(all);
    Ok(format!(
        "ppid-status  offered {rate}/s, answered {:.0}/s  p50 {p50:.2} ms  p99 {p99:.2} ms  p99.9 {p999:.2} ms  CPU {:.3} ms/request  ({n} ok, {errors} errors, {clients} clients, {elapsed:.1} s)",
        n as f64 / elapsed,
        cpu * 1000.0 / n.max(1) as f64,
    ))
}

async fn apply_link_phase(
    cmds: Arc<Commands<PgEventStore>>,
    program: &ProgramId,
    psp: &RelyingPartyId,
    clients: usize,
    secs: u64,
    meter: &CpuMeter,
) -> Result<String, BoxError> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let cpu = meter.read().await?;
    let wall = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (cmds, program, psp) = (cmds.clone(), program.clone(), psp.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut first_error = None;
            while Instant::now() < deadline {
                let s = SubjectId(Uuid::new_v4());
                let t = Instant::now();
                let citizen = CommandMeta::new(s.to_string(), Role::Citizen(s), Uuid::new_v4());
                let provider = CommandMeta::new(
                    psp.as_str(),
                    Role::RelyingParty(psp.clone()),
                    Uuid::new_v4(),
                );
                let r = async {
                    cmds.submit_application(&citizen, s, &program, &psp).await?;
                    cmds.link_payment_service(&provider, &program, s, "acct")
                        .await
                }
                .await;
                match r {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(e) => {
                        first_error.get_or_insert(e.to_string());
                    }
                }
            }
            (lat, first_error)
        }));
    }
    let mut all = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors.extend(e);
    }
    let elapsed = wall.elapsed().as_secs_f64();
    let cpu = meter.since(&cpu).await?;
    let n = all.len();
    let (p50, p99, _) = percentiles(all);
    Ok(format!(
        "apply+link   {:.0} applications/s  p50 {p50:.1} ms  p99 {p99:.1} ms  CPU {:.2} ms/application  ({n} ok, {} clients with errors{}, {clients} clients, {elapsed:.1} s)",
        n as f64 / elapsed,
        cpu * 1000.0 / n.max(1) as f64,
        errors.len(),
        errors.first().map(|e| format!(": {e}")).unwrap_or_default(),
    ))
}

async fn access_log_phase(
    db: &tokio_postgres::Config,
    meter: &CpuMeter,
) -> Result<String, BoxError> {
    let mut cfg = deadpool_postgres::Config::new();
    cfg.host = Some("127.0.0.1".to_owned());
    let hosts = db.get_hosts();
    if let Some(tokio_postgres::config::Host::Tcp(h)) = hosts.first() {
        cfg.host = Some(h.clone());
    }
    cfg.port = db.get_ports().first().copied();
    cfg.user = db.get_user().map(str::to_owned);
    cfg.dbname = db.get_dbname().map(str::to_owned);
    let pool = cfg.create_pool(
        Some(deadpool_postgres::Runtime::Tokio1),
        tokio_postgres::NoTls,
    )?;
    let counter = pool.get().await?;
    let count = || async {
        Ok::<i64, BoxError>(
            counter
                .query_one("SELECT count(*) FROM access_log", &[])
                .await?
                .get(0),
        )
    };
    let registry = prometheus::Registry::new();
    let log = AccessLog::spawn(pool.clone(), &registry)?;
    let chunk = ACCESS_LOG_QUEUE / 2;
    let base = count().await?;
    let cpu = meter.read().await?;
    let wall = Instant::now();
    let mut sent = 0usize;
    while sent < ACCESS_LOG_RECORDS {
        for _ in 0..chunk {
            log.record(AccessRecord {
                at: Utc::now(),
                principal: Some("bench-city".to_owned()),
                role: Some("relying_party".to_owned()),
                rp: Some("bench-city".to_owned()),
                route: "/v1/rp/ppids/{ppid}".to_owned(),
                method: "GET".to_owned(),
                status: 200,
                latency_us: 900,
                correlation_id: Uuid::new_v4(),
            });
        }
        sent += chunk;
        // Poll until the writer has stored the chunk (bounded).
        let until = Instant::now() + Duration::from_secs(30);
        while count().await? < base + sent as i64 {
            if Instant::now() > until {
                return Err("the access log did not write its records within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let elapsed = wall.elapsed().as_secs_f64();
    let cpu = meter.since(&cpu).await?;
    // Every record was counted in the table: none was dropped.
    Ok(format!(
        "access-log   {sent} records in {elapsed:.2} s = {:.0} records/s  CPU {:.4} ms/record (queue, writer task and batched INSERTs; includes polling the count)",
        sent as f64 / elapsed,
        cpu * 1000.0 / sent as f64,
    ))
}

async fn run(db_name: &str) -> Result<(), BoxError> {
    let clients = env_num("MYKEY_BENCH_CLIENTS", 64);
    let secs = env_num("MYKEY_BENCH_SECS", 10) as u64;
    let rate = env_num("MYKEY_BENCH_RATE", 2_000);
    let n_ppids = env_num("MYKEY_BENCH_PPIDS", 2_000);
    let vars: HashMap<&str, String> = HashMap::from([
        ("MYKEY_LISTEN", "127.0.0.1:0".to_owned()),
        ("MYKEY_ISSUER", ISSUER.to_owned()),
        ("MYKEY_REQUIRE_CRL", "false".to_owned()),
        ("MYKEY_OPERATOR_TOKEN", OPERATOR_TOKEN.to_owned()),
    ]);
    let settings = Settings::from_lookup(|k| vars.get(k).cloned())?;
    let mut pg = admin_config()?;
    pg.dbname(db_name);
    let app = Application::build(&settings, pg.clone()).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let meter = CpuMeter {
        pg: connect(&pg).await?,
        db: db_name.to_owned(),
    };

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let city = register(&http, &base, "bench-city", "municipality").await?;
    let psp = register(&http, &base, "bench-psp", "payment_service_provider").await?;
    let store = PgEventStore::connect(pg.clone(), PgStoreOptions::default()).await?;
    let cmds = Arc::new(Commands::new(store));
    let program = ProgramId::parse("bench-points")?;
    let now = Utc::now();
    cmds.create_program(
        &CommandMeta::new("op-bench", Role::Operator, Uuid::new_v4()),
        CreateProgram {
            id: program.clone(),
            municipality: city.id.clone(),
            name: "bench points".into(),
            period_start: now - chrono::Duration::days(1),
            period_end: now + chrono::Duration::days(30),
        },
    )
    .await?;

    let t = Instant::now();
    let ppids = Arc::new(ppids(&cmds, &city.id, n_ppids).await?);
    // Until the PPID read model has them all (each read waits at most 2 s for the position).
    let head = cmds.store().head().await?;
    let probe = format!("{base}/v1/rp/ppids/{}", ppids[0]);
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let r = http
            .get(&probe)
            .bearer_auth(&city.token)
            .header("mykey-min-position", head.to_string())
            .send()
            .await?;
        if r.status().is_success() {
            break;
        }
        if Instant::now() > until {
            return Err(format!("the PPID read model did not reach {head}: {}", r.status()).into());
        }
    }
    println!(
        "prepared {} PPIDs (first logins through the handlers) and caught up in {:.1} s",
        ppids.len(),
        t.elapsed().as_secs_f64()
    );
    // Warm-up (connections, caches), untimed.
    let load = Load {
        clients,
        rate,
        secs,
    };
    ppid_status_phase(
        &http,
        &base,
        &city,
        ppids.clone(),
        Load { secs: 1, ..load },
        &meter,
    )
    .await?;
    println!(
        "{}",
        ppid_status_phase(&http, &base, &city, ppids.clone(), load, &meter).await?
    );
    println!(
        "{}",
        apply_link_phase(cmds.clone(), &program, &psp.id, clients, secs, &meter).await?
    );
    // Let the projections apply the submissions before measuring the access log alone.
    let head = cmds.store().head().await?;
    let until = Instant::now() + Duration::from_secs(300);
    loop {
        let r = http
            .get(format!("{base}/v1/rp/applications?limit=1"))
            .bearer_auth(&city.token)
            .header("mykey-min-position", head.to_string())
            .send()
            .await?;
        if r.status().is_success() || Instant::now() > until {
            break;
        }
    }
    println!("{}", access_log_phase(&pg, &meter).await?);
    Ok(())
}

fn main() -> Result<(), BoxError> {
    // `cargo bench` passes --bench; nothing else to parse.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let db = format!("mykey_bench_{}", Uuid::new_v4().simple());
        let admin = connect(&admin_config()?).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await?;
        let result = run(&db).await;
        // The server still holds connections: force the drop.
        let dropped = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .await;
        result.and(dropped.map_err(Into::into))
    })
}

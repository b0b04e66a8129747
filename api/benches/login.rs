//! Login throughput over HTTP on loopback: PIN logins/s and かざし logins/s, p50/p99.
//!
//! ```text
//! cargo bench -p mykey-api --bench login
//! ```
//!
//! Starts the real server (Application::build) in this process on a fresh database of the
//! PostgreSQL at `MYKEY_TEST_DATABASE_URL` (default 127.0.0.1:5432, user postgres), makes a
//! JPKI-profile test CA and `MYKEY_BENCH_CARDS` cards (default 22,000), and runs
//! `MYKEY_BENCH_CLIENTS` (64) concurrent clients through four phases. The database is dropped
//! at the end.
//!
//! - `PIN-first`: every card's first PIN login, once (registration: writes events); the
//!   first 2,000 cards untimed, to warm the server up.
//! - `PIN`: PIN logins of registered cards for `MYKEY_BENCH_SECS` (10) seconds.
//! - `kazashi`: かざし logins for the same time.
//! - `PIN-login`: challenges issued and signed before the clock starts, then the login
//!   requests alone: the platform's share of a PIN login.
//! - `flood`: (last, it empties the address's bucket) token requests for an unknown client
//!   from one address: after the limiter's burst each is answered 429 before any database
//!   work; the figure is how many such refusals the server gives per second.
//!
//! A PIN login is two requests (challenge, login) plus the card's RSA-2048 signature, which the
//! client computes here (on a real card the chip does it), on the same cores as the server.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use mykey_api::config::Settings;
use mykey_api::startup::Application;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SerialNumber,
};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/auth");
const ISSUER: &str = "https://mykey.bench";
const OPERATOR_TOKEN: &str = "bench-operator-token-0123456789abcdef";

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type CardKey = openssl::pkey::PKey<openssl::pkey::Private>;

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

async fn admin(sql: &str) -> Result<(), BoxError> {
    let (c, conn) = admin_config()?.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    c.batch_execute(sql).await?;
    Ok(())
}

struct Card {
    b64: String,
}

/// The test CA's key for rcgen, signing with OpenSSL: issuing tens of thousands of cards with
/// ring's RSA would take longer than the benchmark itself.
struct OpensslCa {
    public_raw: Vec<u8>,
    key: CardKey,
}

impl rcgen::RemoteKeyPair for OpensslCa {
    fn public_key(&self) -> &[u8] {
        &self.public_raw
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        sign(&self.key, msg).map_err(|_| rcgen::Error::RemoteKeyError)
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

/// The test CA: its certificate and key sign the cards and the CRL.
struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// First serial of the cards; CRL entries for unknown certificates start at twice this.
const CARD_SERIAL_BASE: u64 = 0x1000_0000_0000_0000;

fn pki(cards: usize, dir: &std::path::Path) -> Result<(Vec<Card>, Arc<CardKey>, TestCa), BoxError> {
    let ca_ring = KeyPair::from_pem_and_sign_algo(
        &std::fs::read_to_string(format!("{FIXTURES}/ca-a.key.pem"))?,
        &rcgen::PKCS_RSA_SHA256,
    )?;
    let ca_key = KeyPair::from_remote(Box::new(OpensslCa {
        public_raw: ca_ring.public_key_raw().to_vec(),
        key: openssl::pkey::PKey::private_key_from_pkcs8(&ca_ring.serialize_der())?,
    }))?;
    let card_pem = std::fs::read_to_string(format!("{FIXTURES}/card-1.key.pem"))?;
    let card_key = KeyPair::from_pem_and_sign_algo(&card_pem, &rcgen::PKCS_RSA_SHA256)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "JP");
    dn.push(DnType::OrganizationName, "JPKI");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = p.self_signed(&ca_key)?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    let now = time::OffsetDateTime::now_utc();
    let mut out = Vec::with_capacity(cards);
    for i in 0..cards {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "JP");
        dn.push(DnType::CommonName, format!("BENCH{i:011}"));
        p.distinguished_name = dn;
        p.serial_number = Some(SerialNumber::from(CARD_SERIAL_BASE + i as u64));
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(365);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let mut e = CustomExtension::from_oid_content(
            &[2, 5, 29, 32],
            vec![
                0x30, 0x0f, 0x30, 0x0d, 0x06, 0x0b, 0x2a, 0x83, 0x08, 0x8c, 0x9b, 0x55, 0x08, 0x05,
                0x01, 0x03, 0x1e,
            ],
        );
        e.set_criticality(true);
        p.custom_extensions = vec![e];
        let cert = p.signed_by(&card_key, &ca, &ca_key)?;
        out.push(Card {
            b64: STANDARD.encode(cert.der()),
        });
    }
    let signer = openssl::pkey::PKey::private_key_from_pkcs8(&card_key.serialize_der())?;
    Ok((
        out,
        Arc::new(signer),
        TestCa {
            cert: ca,
            key: ca_key,
        },
    ))
}

/// The card's signature: RSASSA-PKCS1-v1_5 with SHA-256 over the nonce. OpenSSL rather than
/// ring because it is ~3.4x faster here (AVX-512 IFMA: 0.25 ms vs 0.86 ms per signature), and
/// this signing is the card chip's work, not the platform's, yet shares the benchmark's cores.
fn sign(key: &CardKey, msg: &[u8]) -> Result<Vec<u8>, BoxError> {
    let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), key)?;
    signer.set_rsa_padding(openssl::rsa::Padding::PKCS1)?;
    signer.update(msg)?;
    Ok(signer.sign_to_vec()?)
}

struct Ctx {
    http: reqwest::Client,
    base: String,
    token: String,
    cards: Vec<Card>,
    key: Arc<CardKey>,
    /// A well-formed client assertion of a client that does not exist.
    junk_assertion: String,
    /// Only the first failure is printed.
    error_shown: std::sync::atomic::AtomicBool,
}

async fn post(ctx: &Ctx, path: &str, body: Option<&Value>) -> Result<Value, BoxError> {
    let mut req = ctx
        .http
        .post(format!("{}{path}", ctx.base))
        .bearer_auth(&ctx.token);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let v: Value = resp.json().await?;
    if !status.is_success() {
        return Err(format!("{path}: {status} {v}").into());
    }
    Ok(v)
}

async fn pin_login(ctx: &Ctx, card: &Card) -> Result<(), BoxError> {
    let c = post(ctx, "/v1/auth/challenges", None).await?;
    let nonce = URL_SAFE_NO_PAD.decode(c["nonce"].as_str().unwrap_or_default())?;
    let sig = sign(&ctx.key, &nonce)?;
    post(
        ctx,
        "/v1/auth/login",
        Some(&json!({ "challenge_id": c["challenge_id"], "certificate": card.b64, "signature": STANDARD.encode(sig) })),
    )
    .await?;
    Ok(())
}

/// One unauthenticated token request; expected to be refused (429 once the burst is spent).
async fn flood(ctx: &Ctx) -> Result<(), BoxError> {
    let resp = ctx
        .http
        .post(format!("{}/v1/oauth/token", ctx.base))
        .form(&[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", ctx.junk_assertion.as_str()),
        ])
        .send()
        .await?;
    match resp.status().as_u16() {
        401 | 429 => Ok(()),
        other => Err(format!("flood: unexpected {other}").into()),
    }
}

async fn kazashi(ctx: &Ctx, card: &Card) -> Result<(), BoxError> {
    post(
        ctx,
        "/v1/auth/kazashi",
        Some(&json!({ "certificate": card.b64 })),
    )
    .await?;
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The first PIN login of cards `from..to`, once per card: registration, which writes
    /// the subject, certificate and PPID events.
    PinFirst {
        from: usize,
        to: usize,
    },
    /// PIN login of a registered card: challenge, the card's signature, login.
    Pin,
    /// The login request alone, with a challenge issued and signed before the timed phase:
    /// what the platform does for a PIN login once the card (not the platform) has signed.
    PinPresigned,
    Kazashi,
    /// Unauthenticated token requests from one address (refused, mostly by the limiter).
    Flood,
}

/// Cards registered before the timed first-login phase.
const WARMUP_CARDS: usize = 2_000;

/// At most this many challenges are prepared for the presigned phase: all usable within their
/// 120 s validity.
const PRESIGNED_POOL: usize = 19_000;

/// A login body whose challenge was issued and signed before the timed phase.
type Presigned = Value;

async fn presign(ctx: &Ctx, card: &Card) -> Result<Presigned, BoxError> {
    let c = post(ctx, "/v1/auth/challenges", None).await?;
    let nonce = URL_SAFE_NO_PAD.decode(c["nonce"].as_str().unwrap_or_default())?;
    let sig = sign(&ctx.key, &nonce)?;
    Ok(
        json!({ "challenge_id": c["challenge_id"], "certificate": card.b64, "signature": STANDARD.encode(sig) }),
    )
}

/// Busy CPU time of the whole machine (client, server and PostgreSQL alike) in seconds, from
/// /proc/stat; `None` where that is unavailable. Divided by logins it is a cost per login that
/// noisy neighbours disturb far less than throughput.
fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...: everything but idle and iowait.
    let busy: f64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    // USER_HZ is 100 on Linux.
    Some(busy / 100.0)
}

async fn phase(
    ctx: Arc<Ctx>,
    kind: Kind,
    clients: usize,
    secs: u64,
    pool: Vec<Vec<Presigned>>,
) -> Result<String, BoxError> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let busy_before = machine_busy_secs();
    let mut tasks = Vec::new();
    let mut pools = pool.into_iter();
    for c in 0..clients {
        let ctx = ctx.clone();
        let mut presigned = pools.next().unwrap_or_default();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut i = match kind {
                Kind::PinFirst { from, .. } => from + c,
                _ => c,
            };
            // Bounded by time (or, for first logins, by the cards) and count.
            while lat.len() < 1_000_000 {
                let more = match kind {
                    Kind::PinFirst { to, .. } => i < to,
                    _ => Instant::now() < deadline,
                };
                if !more {
                    break;
                }
                let card = &ctx.cards[i % ctx.cards.len()];
                i += clients;
                let t = Instant::now();
                let r = match kind {
                    Kind::Pin | Kind::PinFirst { .. } => pin_login(&ctx, card).await,
                    Kind::PinPresigned => match presigned.pop() {
                        Some(body) => post(&ctx, "/v1/auth/login", Some(&body)).await.map(|_| ()),
                        None => break,
                    },
                    Kind::Kazashi => kazashi(&ctx, card).await,
                    Kind::Flood => flood(&ctx).await,
                };
                match r {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        if !ctx
                            .error_shown
                            .swap(true, std::sync::atomic::Ordering::Relaxed)
                        {
                            eprintln!("first error: {e}");
                        }
                    }
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
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_ms = match (busy_before, machine_busy_secs()) {
        (Some(a), Some(b)) if !all.is_empty() => {
            format!("{:.2}", (b - a) * 1000.0 / all.len() as f64)
        }
        _ => "-".to_owned(),
    };
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(format!(
        "{:<9} {:>6.0} {}/s  p50 {:>5.1} ms  p99 {:>5.1} ms  CPU {} ms/login  ({} ok, {} errors, {} clients, {:.1} s)",
        match kind {
            Kind::PinFirst { .. } => "PIN-first",
            Kind::Pin => "PIN",
            Kind::PinPresigned => "PIN-login",
            Kind::Kazashi => "kazashi",
            Kind::Flood => "flood",
        },
        all.len() as f64 / elapsed,
        if kind == Kind::Flood {
            "refusals"
        } else {
            "logins"
        },
        pct(0.50),
        pct(0.99),
        cpu_ms,
        all.len(),
        errors,
        clients,
        elapsed
    ))
}

/// An operator loading a CRL the size of a national one: `MYKEY_BENCH_CRL_ENTRIES` (200,000)
/// serials, of which the first 100 registered cards (each gets a CertificateRevoked event).
async fn crl_phase(ctx: &Ctx, ca: &TestCa) -> Result<String, BoxError> {
    let entries = env_num("MYKEY_BENCH_CRL_ENTRIES", 200_000).max(100);
    let known = ctx.cards.len().min(100);
    let now = time::OffsetDateTime::now_utc();
    let entry = |serial: u64| rcgen::RevokedCertParams {
        serial_number: SerialNumber::from(serial),
        revocation_time: now,
        reason_code: Some(rcgen::RevocationReason::KeyCompromise),
        invalidity_date: None,
    };
    let revoked_certs = (0..known as u64)
        .map(|i| entry(CARD_SERIAL_BASE + i))
        .chain((0..(entries - known) as u64).map(|i| entry(2 * CARD_SERIAL_BASE + i)))
        .collect();
    let der = rcgen::CertificateRevocationListParams {
        this_update: now - time::Duration::minutes(1),
        next_update: now + time::Duration::days(1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&ca.cert, &ca.key)?
    .der()
    .to_vec();
    let t = Instant::now();
    let resp = ctx
        .http
        .post(format!("{}/v1/operator/crls", ctx.base))
        .bearer_auth(OPERATOR_TOKEN)
        .header("content-type", "application/pkix-crl")
        .body(der.clone())
        .send()
        .await?;
    let status = resp.status();
    let report: Value = resp.json().await?;
    let secs = t.elapsed().as_secs_f64();
    if !status.is_success() {
        return Err(format!("load CRL: {status} {report}").into());
    }
    Ok(format!(
        "CRL load  {entries} entries ({} KiB), {} known certificates revoked, in {secs:.1} s = {:.0} entries/s",
        der.len() / 1024,
        report["known_certificates_revoked"],
        entries as f64 / secs
    ))
}

async fn run(db_name: &str) -> Result<(), BoxError> {
    let clients = env_num("MYKEY_BENCH_CLIENTS", 64);
    let n_cards = env_num("MYKEY_BENCH_CARDS", 22_000);
    let secs = env_num("MYKEY_BENCH_SECS", 10) as u64;
    let dir = std::env::temp_dir().join(format!("mykey-bench-{}", std::process::id()));
    let (cards, key, ca) = pki(n_cards, &dir)?;

    let vars: HashMap<&str, String> = HashMap::from([
        ("MYKEY_LISTEN", "127.0.0.1:0".to_owned()),
        ("MYKEY_ISSUER", ISSUER.to_owned()),
        ("MYKEY_TRUST_ANCHORS", dir.display().to_string()),
        ("MYKEY_REQUIRE_CRL", "false".to_owned()),
        ("MYKEY_OPERATOR_TOKEN", OPERATOR_TOKEN.to_owned()),
    ]);
    let settings = Settings::from_lookup(|k| vars.get(k).cloned())?;
    let mut pg = admin_config()?;
    pg.dbname(db_name);
    // One runtime for server and clients: measured against a runtime of the server's own,
    // this gave the higher and steadier figures on 2 cores (fewer threads contending).
    let app = Application::build(&settings, pg).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    // One relying party with an ES256 key.
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|e| format!("{e}"))?;
    let rp_key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|e| format!("{e}"))?;
    let pt = rp_key.public_key().as_ref();
    let jwk = json!({ "kty": "EC", "crv": "P-256", "x": b64u(&pt[1..33]), "y": b64u(&pt[33..65]) });
    let resp = http
        .post(format!("{base}/v1/operator/relying-parties"))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({ "id": "bench-rp", "kind": "private_business", "code": "bench", "name": "bench", "jwk": jwk }))
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(format!("register RP: {}", resp.text().await?).into());
    }
    let now = chrono::Utc::now().timestamp();
    let claims = json!({ "iss": "bench-rp", "sub": "bench-rp", "aud": format!("{ISSUER}/v1/oauth/token"), "exp": now + 300, "jti": uuid::Uuid::new_v4().to_string() });
    let input = format!(
        "{}.{}",
        b64u(br#"{"alg":"ES256"}"#),
        b64u(claims.to_string().as_bytes())
    );
    let sig = rp_key
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
    let junk_claims = json!({ "iss": "bench-nobody", "sub": "bench-nobody", "aud": format!("{ISSUER}/v1/oauth/token"), "exp": now + 300, "jti": "junk" });
    let junk_input = format!(
        "{}.{}",
        b64u(br#"{"alg":"ES256"}"#),
        b64u(junk_claims.to_string().as_bytes())
    );
    let junk_sig = rp_key
        .sign(&rng, junk_input.as_bytes())
        .map_err(|e| format!("{e}"))?;
    let junk_assertion = format!("{junk_input}.{}", b64u(junk_sig.as_ref()));
    let token = tok["access_token"]
        .as_str()
        .ok_or(format!("no token: {tok}"))?
        .to_owned();
    let ctx = Arc::new(Ctx {
        http,
        base,
        token,
        cards,
        key,
        junk_assertion,
        error_shown: std::sync::atomic::AtomicBool::new(false),
    });

    // Registration first: every later phase logs in registered cards. The first
    // WARMUP_CARDS are registered untimed: a fresh server opens its database connections
    // and fills its caches during its first second.
    let warm = WARMUP_CARDS.min(ctx.cards.len());
    let all = ctx.cards.len();
    phase(
        ctx.clone(),
        Kind::PinFirst { from: 0, to: warm },
        clients,
        secs,
        Vec::new(),
    )
    .await?;
    println!(
        "{}",
        phase(
            ctx.clone(),
            Kind::PinFirst {
                from: warm,
                to: all
            },
            clients,
            secs,
            Vec::new()
        )
        .await?
    );
    println!(
        "{}",
        phase(ctx.clone(), Kind::Pin, clients, secs, Vec::new()).await?
    );
    println!(
        "{}",
        phase(ctx.clone(), Kind::Kazashi, clients, secs, Vec::new()).await?
    );

    // Untimed preparation for the presigned phase: challenges issued and signed as a card
    // would, so the timed phase measures the platform's work for the login request alone.
    let t = Instant::now();
    let per_client = PRESIGNED_POOL / clients.max(1);
    let mut prep = Vec::new();
    for c in 0..clients {
        let ctx = ctx.clone();
        prep.push(tokio::spawn(async move {
            let mut bodies = Vec::with_capacity(per_client);
            for k in 0..per_client {
                let card = &ctx.cards[(c + k * clients) % ctx.cards.len()];
                bodies.push(presign(&ctx, card).await?);
            }
            Ok::<_, BoxError>(bodies)
        }));
    }
    let mut pool = Vec::new();
    for p in prep {
        pool.push(p.await??);
    }
    println!(
        "prepared {} challenges (issued + signed by the client) in {:.1} s",
        per_client * clients,
        t.elapsed().as_secs_f64()
    );
    println!(
        "{}",
        phase(ctx.clone(), Kind::PinPresigned, clients, secs, pool).await?
    );
    println!("{}", crl_phase(&ctx, &ca).await?);
    println!(
        "{}",
        phase(ctx.clone(), Kind::Flood, clients, secs, Vec::new()).await?
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn main() -> Result<(), BoxError> {
    // `cargo bench` passes --bench; nothing else to parse.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let db = format!("mykey_bench_{}", uuid::Uuid::new_v4().simple());
        admin(&format!("CREATE DATABASE {db}")).await?;
        let result = run(&db).await;
        // The server still holds connections: force the drop.
        let dropped = admin(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
        result.and(dropped)
    })
}

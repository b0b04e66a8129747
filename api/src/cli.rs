//! The `mykey-server` command line, parsed with `clap` before anything else happens: `--help`
//! or a typo never starts a private PostgreSQL. With no subcommand the binary runs the server.
//!
//! Operator subcommands run against the same database as the server (`DATABASE_URL`, or the
//! private cluster under `MYKEY_VAR_DIR`) and call the same code as the operator endpoints; a
//! running server picks up CRLs and signing keys within
//! [`crate::auth::MAINTENANCE_INTERVAL_SECS`]. Logs go to stderr; stdout carries only the
//! JSON result, so scripts can parse it.
//!
//! New subcommands (rebuild, report, relay, projector, ...) are new [`Command`] variants; say
//! in [`Command::needs_database`] whether they need the event-log database.

use crate::auth::identity::{parse_rp_id, RequestActor, RpStatus};
use crate::auth::jws::VerifyKey;
use crate::auth::Auth;
use crate::config::Settings;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

/// `mykey-server [COMMAND]`.
#[derive(Debug, Parser)]
#[command(
    name = "mykey-server",
    version,
    about = "MyKey Platform server; with a COMMAND, one operator task against its database"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Register a relying party (kinds: municipality, payment_service_provider, library_system,
    /// private_business).
    RegisterRp {
        #[arg(long)]
        id: String,
        #[arg(long)]
        kind: String,
        #[arg(long)]
        code: String,
        #[arg(long)]
        name: String,
        /// File holding the RP's public JWK (EC P-256 or RSA >= 2048 bits, no private members).
        #[arg(long)]
        jwk: PathBuf,
    },
    /// Replace a relying party's public key.
    RotateRpKey {
        #[arg(long)]
        id: String,
        #[arg(long)]
        jwk: PathBuf,
    },
    /// Suspend a relying party (its tokens stop working).
    SuspendRp {
        #[arg(long)]
        id: String,
    },
    /// Resume a suspended relying party.
    ResumeRp {
        #[arg(long)]
        id: String,
    },
    /// Retire a relying party for good.
    RetireRp {
        #[arg(long)]
        id: String,
    },
    /// Load a CA's complete CRL (DER); needs MYKEY_TRUST_ANCHORS.
    LoadCrl {
        #[arg(long)]
        file: PathBuf,
    },
    /// Import renewal links (CSV: issuer,old serial,new serial); exits non-zero when a line failed.
    ImportRenewals {
        #[arg(long)]
        file: PathBuf,
    },
    /// Rotate the token-signing key.
    RotateSigningKey,
    /// Make an operator token: prints it and its MYKEY_OPERATOR_TOKENS_FILE line.
    NewOperatorToken {
        #[arg(long)]
        id: String,
        /// Comma-separated roles: operator, approver, auditor.
        #[arg(long, default_value = "operator")]
        roles: String,
        /// Last day the credential is valid (YYYY-MM-DD); default in 90 days (the specification
        /// rotates credentials every three months).
        #[arg(long)]
        expires: Option<String>,
    },
    /// Sign the log's head now (a C2SP signed-note checkpoint).
    SignCheckpoint,
    /// Run only the Kafka relay (needs KAFKA_BROKERS); one relay per database publishes at a
    /// time, the others stand by.
    Relay,
    /// Run the read models that need only each stream's order from Kafka (needs KAFKA_BROKERS
    /// and a running relay): several projector processes share the topics' partitions as one
    /// consumer group; the others (daily_counters) stay with the server's PostgreSQL runner.
    Projector {
        /// The consumer group (default: `<prefix>.projector.<hash of the schema layout and
        /// projection versions>`, so a new projection version starts a new group that reads
        /// the topics from the start).
        #[arg(long)]
        group: Option<String>,
        /// Connections per projection: a batch's partitions are split between them and applied
        /// at once. 2 suits a small database host; more pay off only with more of its cores.
        #[arg(long, default_value_t = mykey_projections::kafka::projector::DEFAULT_LANES as u16,
              value_parser = clap::value_parser!(u16).range(1..=64))]
        lanes: u16,
    },
    /// Rebuild one projection from position 1 into fresh tables while the current ones keep
    /// serving, then switch readers to it (progress bar on a terminal, plain lines otherwise).
    Rebuild {
        /// The projection's name (e.g. ppids, programs, daily_counters).
        projection: String,
    },
    /// A report from the read models: CSV, JSON or an SVG chart on stdout.
    Report {
        /// daily (citizen card), weekly (point programs) or monthly (operations).
        kind: String,
        /// A day in the period, YYYY-MM-DD (Asia/Tokyo calendar days).
        #[arg(long)]
        date: String,
        /// csv, json or svg.
        #[arg(long, default_value = "csv")]
        format: String,
    },
    /// Make a new checkpoint key; old ones stay listed, so old checkpoints stay verifiable.
    RotateCheckpointKey,
    /// Export the access log (`from <= time < to`, RFC 3339) to stdout as CSV or NDJSON.
    AccessLog {
        #[arg(long, value_parser = parse_time)]
        from: chrono::DateTime<chrono::Utc>,
        #[arg(long, value_parser = parse_time)]
        to: chrono::DateTime<chrono::Utc>,
        /// Only this principal's requests.
        #[arg(long)]
        principal: Option<String>,
        #[arg(long, value_enum, default_value = "ndjson")]
        format: crate::http::access_log::ExportFormat,
    },
    /// Make a MYKEY_KEY_ENCRYPTION_KEY_FILE (mode 0600).
    NewKeyEncryptionKey {
        #[arg(long)]
        file: PathBuf,
    },
}

impl Command {
    /// False for commands that only make credentials: they run before (and without) any
    /// database, private or not.
    pub fn needs_database(&self) -> bool {
        !matches!(
            self,
            Command::NewOperatorToken { .. } | Command::NewKeyEncryptionKey { .. }
        )
    }
}

type BoxError = Box<dyn std::error::Error>;

fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{s}: not an RFC 3339 time with an offset ({e})"))
}

/// `access-log`: stdout is the export itself (not a JSON result).
async fn export_access_log(
    pg: tokio_postgres::Config,
    filter: crate::http::access_log::ExportFilter,
    format: crate::http::access_log::ExportFormat,
) -> Result<(), BoxError> {
    let (mut client, connection) = pg.connect(tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let n = crate::http::access_log::export(&mut client, &filter, format, &mut out).await?;
    drop(client);
    let _ = connection.await;
    tracing::info!(records = n, "access log exported");
    Ok(())
}

fn parse(args: &[String]) -> Result<Command, BoxError> {
    let cli = Cli::try_parse_from(
        std::iter::once("mykey-server".to_owned()).chain(args.iter().cloned()),
    )?;
    cli.command.ok_or_else(|| "a command is required".into())
}

fn read_jwk(path: &Path) -> Result<serde_json::Value, BoxError> {
    let path = path.display();
    let text = std::fs::read_to_string(path.to_string()).map_err(|e| format!("{path}: {e}"))?;
    let jwk: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    VerifyKey::from_jwk(&jwk).map_err(|e| format!("{path}: {e}"))?;
    Ok(jwk)
}

fn problem(p: crate::errors::Problem) -> BoxError {
    format!("{}: {}", p.code, p.detail.unwrap_or(p.title)).into()
}

fn actor() -> RequestActor {
    RequestActor::operator(
        std::env::var("USER").unwrap_or_else(|_| "operator-cli".to_owned()),
        uuid::Uuid::new_v4(),
        None,
    )
}

/// Runs `args` if it is a command that needs no database (making credentials); `None` when it
/// is not one (or does not parse).
pub fn run_offline(args: &[String]) -> Option<Result<(), BoxError>> {
    match parse(args) {
        Ok(cmd) if !cmd.needs_database() => Some(run_offline_command(&cmd)),
        _ => None,
    }
}

/// Runs a command that [`Command::needs_database`] says needs none. Prints a JSON result.
pub fn run_offline_command(cmd: &Command) -> Result<(), BoxError> {
    let out = match cmd {
        Command::NewOperatorToken { id, roles, expires } => {
            // The token goes to the operator, the line to the tokens file.
            crate::auth::operators::new_operator_token_command(
                id,
                Some(roles),
                expires.as_deref(),
                chrono::Utc::now().date_naive(),
            )?
        }
        Command::NewKeyEncryptionKey { file } => {
            crate::auth::keywrap::KeyWrap::create_file(file)?;
            serde_json::json!({ "key_encryption_key_file": file.display().to_string() })
        }
        other => return Err(format!("{other:?} needs the database").into()),
    };
    println!("{out}");
    Ok(())
}

/// Parses `args` (`args[0]` is the command) and runs it against `pg`.
pub async fn run(
    settings: &Settings,
    pg: tokio_postgres::Config,
    args: &[String],
) -> Result<(), BoxError> {
    run_command(settings, pg, &parse(args)?).await
}

/// Runs one command that needs the database. Prints a JSON result on stdout on success.
pub async fn run_command(
    settings: &Settings,
    pg: tokio_postgres::Config,
    cmd: &Command,
) -> Result<(), BoxError> {
    if !cmd.needs_database() {
        return run_offline_command(cmd);
    }
    if let Command::AccessLog {
        from,
        to,
        principal,
        format,
    } = cmd
    {
        let filter = crate::http::access_log::ExportFilter {
            from: *from,
            to: *to,
            principal: principal.clone(),
        };
        return export_access_log(pg, filter, *format).await;
    }
    let checkpoint_cmd = match cmd {
        Command::SignCheckpoint => Some("sign-checkpoint"),
        Command::RotateCheckpointKey => Some("rotate-checkpoint-key"),
        _ => None,
    };
    match cmd {
        Command::Rebuild { projection } => return rebuild(pg, projection).await,
        Command::Report { kind, date, format } => return report(pg, kind, date, format).await,
        _ => {}
    }
    if let Some(name) = checkpoint_cmd {
        if let Some(result) = crate::audit::run_cli(settings, &pg, name).await {
            println!("{}", result?);
            return Ok(());
        }
    }
    let store = mykey_store::pg::PgEventStore::connect(pg.clone(), Default::default()).await?;
    let identity = crate::auth::identity::default_identity(&store, None);
    let auth = Auth::build(settings.auth.clone(), pg, identity).await?;
    let who = actor();
    let mut failed = None;
    let out = match cmd {
        Command::RegisterRp {
            id,
            kind,
            code,
            name,
            jwk,
        } => {
            let jwk = read_jwk(jwk)?;
            auth.identity
                .register_relying_party(&parse_rp_id(id)?, kind, code, name, jwk, &who)
                .await?;
            serde_json::json!({ "registered": id })
        }
        Command::RotateRpKey { id, jwk } => {
            let jwk = read_jwk(jwk)?;
            auth.identity
                .rotate_relying_party_key(&parse_rp_id(id)?, jwk, &who)
                .await?;
            serde_json::json!({ "rotated": id })
        }
        Command::SuspendRp { id } | Command::ResumeRp { id } | Command::RetireRp { id } => {
            let status = match cmd {
                Command::SuspendRp { .. } => RpStatus::Suspended,
                Command::ResumeRp { .. } => RpStatus::Active,
                _ => RpStatus::Retired,
            };
            auth.identity
                .set_relying_party_status(&parse_rp_id(id)?, status, &who)
                .await?;
            serde_json::json!({ "relying_party": id, "status": format!("{status:?}") })
        }
        Command::LoadCrl { file } => {
            let der = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
            serde_json::to_value(
                auth.load_crl(&der, &who)
                    .await
                    .map_err(|e| problem(e.into()))?
                    .0,
            )?
        }
        Command::ImportRenewals { file } => {
            let csv =
                std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
            let (report, _) = auth
                .import_renewals(&csv, &who)
                .await
                .map_err(|e| problem(e.into()))?;
            if !report.failed.is_empty() {
                failed = Some(format!(
                    "{} renewal line(s) failed (see \"failed\" in the result)",
                    report.failed.len()
                ));
            }
            serde_json::to_value(report)?
        }
        Command::RotateSigningKey => {
            let kid = auth
                .rotate_signing_key()
                .await
                .map_err(|e| problem(e.into()))?;
            serde_json::json!({ "kid": kid })
        }
        Command::NewOperatorToken { .. } | Command::NewKeyEncryptionKey { .. } => {
            return run_offline_command(cmd)
        }
        Command::SignCheckpoint
        | Command::RotateCheckpointKey
        | Command::Rebuild { .. }
        | Command::Report { .. } => return Err("handled above".into()),
        Command::Relay | Command::Projector { .. } => {
            return Err("the relay and the projector run from the server binary".into())
        }
        Command::AccessLog { .. } => return Err("access-log is handled above".into()),
    };
    println!("{out}");
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// `mykey-server rebuild <projection>`.
async fn rebuild(pg: tokio_postgres::Config, name: &str) -> Result<(), BoxError> {
    use mykey_projections::runner::cli::{rebuild, ProgressMode};
    let store = mykey_store::pg::PgEventStore::connect(pg.clone(), Default::default()).await?;
    let all = mykey_projections::models::all();
    let report = rebuild(&store, &pg, &all, name, ProgressMode::Auto).await?;
    println!(
        "{}",
        serde_json::json!({
            "projection": name,
            "schema": report.schema,
            "replaced": report.replaced,
            "position": report.position,
            "events_per_second": report.events_per_second().round(),
        })
    );
    Ok(())
}

/// `mykey-server report <kind> --date D --format F`: from the read models the runner serves now
/// (their position is what the server last applied).
async fn report(
    pg: tokio_postgres::Config,
    kind: &str,
    date: &str,
    format: &str,
) -> Result<(), BoxError> {
    use mykey_projections::reports::{cli::run_args, Sources};
    use mykey_projections::runner::registry;
    // Connecting the store applies pending migrations (auth_audit and auth_crl are read).
    let _store = mykey_store::pg::PgEventStore::connect(pg.clone(), Default::default()).await?;
    let (client, connection) = pg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let counters = registry::active(&client, "daily_counters")
        .await?
        .ok_or("the daily_counters read model does not exist yet: start the server once")?;
    let sources = Sources {
        counters: counters.schema,
    };
    let out = run_args(&client, &sources, kind, date, format, chrono::Utc::now()).await?;
    print!("{out}");
    Ok(())
}

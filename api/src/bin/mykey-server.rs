//! `mykey-server`: parses its arguments (clap: `--help` and typos end here, before any
//! database is touched), reads configuration, starts telemetry, then runs the server until
//! SIGTERM/Ctrl-C or one operator command (see `mykey_api::cli`).

use clap::Parser;
use mykey_api::cli::{Cli, Command};
use mykey_api::config::Settings;
use mykey_api::local_pg::LocalPostgres;
use mykey_api::startup::Application;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        None => mykey_api::telemetry::init(),
        // stdout is the command's JSON result only.
        Some(_) => init_stderr_logging(),
    }
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("mykey-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_stderr_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(command: Option<Command>) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(cmd) = command.as_ref().filter(|c| !c.needs_database()) {
        return mykey_api::cli::run_offline_command(cmd);
    }
    let settings = Settings::from_env()?;
    let (pg_config, owner_config, local) = match (
        &settings.database_url,
        &settings.owner_database_url,
    ) {
        (Some(runtime), Some(owner)) => (
            runtime.parse::<tokio_postgres::Config>()?,
            Some(owner.parse::<tokio_postgres::Config>()?),
            None,
        ),
        (Some(one), None) | (None, Some(one)) => {
            tracing::warn!(
                "only one of DATABASE_URL and MYKEY_OWNER_DATABASE_URL is set: the server runs \
                 as the role that owns the tables, which can disable or drop the append-only \
                 triggers, so the event log and auth_audit are tamper-evident only against \
                 mistakes, not against a compromised server (see README, Database roles)"
            );
            (one.parse::<tokio_postgres::Config>()?, None, None)
        }
        (None, None) => {
            let var_dir = settings.var_dir.clone();
            let local =
                tokio::task::spawn_blocking(move || LocalPostgres::start(&var_dir)).await??;
            if let Err(e) = local.ensure_database().await {
                let _ = tokio::task::spawn_blocking(move || local.stop()).await;
                return Err(e.into());
            }
            tracing::info!(
                data_dir = %local.data_dir().display(),
                "no DATABASE_URL: using the private PostgreSQL cluster (Unix socket in its data directory)"
            );
            (local.runtime_config(), Some(local.config()), Some(local))
        }
    };
    let migrated = match &owner_config {
        Some(owner) => mykey_store::pg::migrations::migrate_database(owner)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        None => Ok(()),
    };
    if let Err(e) = migrated {
        if let Some(local) = local {
            let _ = tokio::task::spawn_blocking(move || local.stop()).await;
        }
        return Err(e.into());
    }
    let result = match &command {
        Some(Command::Relay) => relay(&settings, pg_config).await,
        Some(Command::Projector { group, lanes }) => {
            projector(&settings, pg_config, group.clone(), usize::from(*lanes)).await
        }
        Some(cmd) => mykey_api::cli::run_command(&settings, pg_config, cmd).await,
        None => serve(&settings, pg_config).await,
    };
    if let Some(local) = local {
        tracing::info!("stopping the private PostgreSQL cluster");
        if let Err(e) = tokio::task::spawn_blocking(move || local.stop()).await? {
            tracing::error!("{e}");
        }
    }
    result
}

async fn serve(
    settings: &Settings,
    pg_config: tokio_postgres::Config,
) -> Result<(), Box<dyn std::error::Error>> {
    let app = Application::build(settings, pg_config).await?;
    tracing::info!(listen = %settings.listen, port = app.port(), "mykey-server listening");
    let handle = app.handle();
    let server = tokio::spawn(app.run_until_stopped());
    shutdown_signal().await?;
    tracing::info!("shutdown signal received; draining requests");
    handle.stop(true).await;
    server.await??;
    Ok(())
}

/// `mykey-server relay`: the Kafka relay alone (needs `KAFKA_BROKERS`).
async fn relay(
    settings: &Settings,
    pg_config: tokio_postgres::Config,
) -> Result<(), Box<dyn std::error::Error>> {
    let kafka = settings
        .kafka
        .clone()
        .ok_or("relay mode needs KAFKA_BROKERS")?;
    let stop = async {
        if let Err(e) = shutdown_signal().await {
            tracing::error!("cannot wait for a shutdown signal: {e}");
        }
    };
    mykey_projections::kafka::relay::run_standalone(pg_config, kafka, stop).await?;
    Ok(())
}

/// `mykey-server projector`: the Kafka-mode read models as one member of the projectors'
/// consumer group (needs `KAFKA_BROKERS`), with `/metrics` and `/readyz` on
/// `MYKEY_METRICS_LISTEN` (else `MYKEY_LISTEN`).
async fn projector(
    settings: &Settings,
    pg_config: tokio_postgres::Config,
    group: Option<String>,
    lanes: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    use mykey_projections::kafka::projector::{self, ProjectorOptions};
    let kafka = settings
        .kafka
        .clone()
        .ok_or("projector mode needs KAFKA_BROKERS")?;
    let options = ProjectorOptions {
        group_id: group,
        lanes,
        ..Default::default()
    };
    let registry = prometheus::Registry::new();
    let mut handle = projector::start(
        pg_config,
        kafka,
        &mykey_projections::models::all(),
        options,
        &registry,
    )
    .await?;
    let addr = settings.metrics_listen.unwrap_or(settings.listen);
    let (port, server) = mykey_api::projector_http::serve(addr, registry, handle.status())?;
    tracing::info!(%addr, port, "projector: /metrics and /readyz");
    let http = server.handle();
    let http_task = tokio::spawn(server);
    let ended = tokio::select! {
        r = shutdown_signal() => {
            if let Err(e) = r {
                tracing::error!("cannot wait for a shutdown signal: {e}");
            }
            None
        }
        r = handle.join() => Some(r),
    };
    let result = match ended {
        Some(r) => r,
        None => handle.stop().await,
    };
    http.stop(true).await;
    let _ = http_task.await;
    result?;
    Ok(())
}

async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

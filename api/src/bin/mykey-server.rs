//! `mykey-server`: reads configuration, starts telemetry, runs the server until SIGTERM/Ctrl-C.

use mykey_api::config::Settings;
use mykey_api::local_pg::LocalPostgres;
use mykey_api::startup::Application;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    mykey_api::telemetry::init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("mykey-server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(done) = mykey_api::cli::run_offline(&args) {
        return done;
    }
    let settings = Settings::from_env()?;
    let (pg_config, local) = match &settings.database_url {
        Some(url) => (url.parse::<tokio_postgres::Config>()?, None),
        None => {
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
            (local.config(), Some(local))
        }
    };
    let result = match args.first().map(String::as_str) {
        Some("relay") => relay(&settings, pg_config).await,
        Some(cmd) if mykey_api::cli::COMMANDS.contains(&cmd) => {
            mykey_api::cli::run(&settings, pg_config, &args).await
        }
        Some(_) => Err(mykey_api::cli::USAGE.into()),
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

async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

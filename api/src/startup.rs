//! The server as a testable object: build it (bind, connect, migrate), then run it.

use crate::config::Settings;
use crate::errors::json_error_handler;
use crate::routes;
use actix_web::dev::{Server, Service as _};
use actix_web::{web, App, HttpServer};
use mykey_projections::{Projections, RunnerOptions};
use mykey_store::pg::{PgEventStore, PgStoreOptions};
use std::net::TcpListener;
use std::sync::Arc;

/// Largest JSON body any endpoint accepts; the biggest legitimate body is a certificate.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// Shared by every request handler.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: PgEventStore,
    /// This server's metrics: components register their collectors here (never in the
    /// global default registry; tests run several servers in one process).
    pub registry: Arc<prometheus::Registry>,
    /// The read models: serving schemas, read-your-writes and status for `/readyz`.
    pub projections: Projections,
    /// Idempotency-Key claims and first answers ([`crate::http::idempotency`]).
    pub idempotency: crate::http::idempotency::Idempotency,
    /// How far each read model has applied the log ([`crate::http::consistency`]); the
    /// projection runner's once wired.
    pub read_models: Arc<dyn crate::http::consistency::ReadModelClock>,
    /// Connections for read-model queries (the HTTP layer's pool).
    pub read_pool: deadpool_postgres::Pool,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("event store: {0}")]
    Store(#[from] mykey_store::StoreError),
    #[error("citizen-card login: {0}")]
    Auth(#[from] crate::auth::AuthStartError),
    #[error("checkpoints: {0}")]
    Audit(#[from] crate::audit::AuditError),
    #[error("projections: {0}")]
    Projections(#[from] mykey_projections::runner::RunnerError),
    #[error("Kafka relay: {0}")]
    Kafka(#[from] mykey_projections::kafka::RelayError),
    #[error("HTTP layer: {0}")]
    Http(#[from] crate::http::HttpLayerError),
}

pub struct Application {
    port: u16,
    server: Server,
    /// `MYKEY_METRICS_LISTEN`'s server, when set.
    metrics: Option<(u16, Server)>,
    registry: Arc<prometheus::Registry>,
    projections: Projections,
    /// The Kafka relay task when `KAFKA_BROKERS` is set; dropped (stopped) with the server.
    _relay: Option<mykey_projections::kafka::RelayHandle>,
    /// Dropped with the server: stops the health-probe recorder.
    _probes: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Connects to `pg`, applies migrations, and binds `settings.listen` (port 0 picks one).
    pub async fn build(
        settings: &Settings,
        pg: tokio_postgres::Config,
    ) -> Result<Application, StartupError> {
        let store = PgEventStore::connect(pg.clone(), PgStoreOptions::default()).await?;
        // This server's metrics: components register their collectors here (never in the
        // global default registry: tests run several servers in one process).
        let registry = Arc::new(prometheus::Registry::new());
        let relay = match &settings.kafka {
            Some(kafka) => Some(
                mykey_projections::kafka::start(
                    store.clone(),
                    pg.clone(),
                    kafka.clone(),
                    &registry,
                )
                .await?,
            ),
            None => None,
        };
        let listener = TcpListener::bind(settings.listen).map_err(|source| StartupError::Bind {
            addr: settings.listen.to_string(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind {
                addr: settings.listen.to_string(),
                source,
            })?
            .port();
        let checkpoints = crate::audit::CheckpointSigner::start(
            pg.clone(),
            settings.audit.checkpoint_origin.clone(),
            settings.auth.key_encryption_key_file.as_deref(),
        )
        .await?;
        checkpoints.spawn_periodic(settings.audit.checkpoint_interval_secs);
        let checkpoints = web::Data::from(checkpoints);
        let http_pool = crate::http::pool(pg.clone())?;
        let observer = crate::http::Observer {
            access_log: crate::http::access_log::AccessLog::spawn(http_pool.clone(), &registry)
                .map_err(crate::http::HttpLayerError::from)?,
            metrics: crate::http::route_metrics::RouteMetrics::register(&registry)
                .map_err(crate::http::HttpLayerError::from)?,
        };
        let idempotency = crate::http::idempotency::Idempotency::new(http_pool.clone());
        idempotency.spawn_pruning();
        // Started before login: the identity cache answers its misses from login_identity.
        let projections = Projections::start(
            store.clone(),
            pg.clone(),
            mykey_projections::models::all(),
            &registry,
            RunnerOptions::default(),
        )
        .await?;
        let read_model = crate::auth::read_model::ReadModel::new(
            projections.clone(),
            http_pool.clone(),
            &registry,
        )
        .map_err(crate::auth::AuthStartError::from)?;
        let identity = crate::auth::identity::default_identity(&store, Some(read_model));
        let pg_probe = pg.clone();
        let auth = crate::auth::Auth::build_with_registry(
            settings.auth.clone(),
            pg,
            identity,
            registry.clone(),
        )
        .await?;
        auth.spawn_maintenance();
        let auth = web::Data::from(auth);
        let registry_data = web::Data::from(registry.clone());
        let metrics = match settings.metrics_listen {
            Some(addr) => {
                let registry = registry_data.clone();
                Some(internal_server(addr, move |cfg| {
                    cfg.app_data(registry.clone());
                    routes::auth::configure_metrics(cfg);
                })?)
            }
            None => None,
        };
        let public_metrics = metrics.is_none();
        let state = web::Data::new(AppState {
            store,
            registry: registry.clone(),
            projections: projections.clone(),
            idempotency,
            read_models: Arc::new(projections.clone()),
            read_pool: http_pool,
        });
        crate::patch_expiry::spawn(
            state.get_ref().clone(),
            crate::patch_expiry::interval_from_env(),
        );
        let citizen_door = web::Data::new(settings.citizen.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(citizen_door.clone())
                .app_data(auth.clone())
                .app_data(registry_data.clone())
                .wrap(crate::errors::routing_problems())
                .app_data(checkpoints.clone())
                .app_data(
                    web::JsonConfig::default()
                        .limit(MAX_JSON_BODY)
                        .error_handler(json_error_handler),
                )
                .wrap_fn(|req, srv| crate::auth::cache::within_request(srv.call(req)))
                // Outermost: sees every answer, including the error handlers' problems.
                .wrap_fn({
                    let observer = observer.clone();
                    move |req, srv| crate::http::observe(&observer, req, srv)
                })
                .service(routes::health::healthz)
                .service(routes::health::readyz)
                .service(crate::http::openapi::serve)
                .configure(routes::auth::configure)
                .configure(routes::operations::configure)
                .configure(crate::audit::routes::configure)
                .configure(routes::rp::configure)
                .configure(routes::provider::configure)
                .configure(routes::citizen::configure)
                .configure(|cfg| {
                    if public_metrics {
                        routes::auth::configure_metrics(cfg);
                    }
                    routes::configure_method_fallbacks(cfg, public_metrics);
                })
        })
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            addr: settings.listen.to_string(),
            source,
        })?
        // SIGTERM/SIGINT are handled by main, which also stops the private PostgreSQL.
        .disable_signals()
        .run();
        let probes = spawn_health_recorder(pg_probe, projections.clone(), port);
        Ok(Application {
            port,
            server,
            metrics,
            registry,
            projections,
            _relay: relay,
            _probes: probes,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the separate metrics listener (`MYKEY_METRICS_LISTEN`), if any.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.as_ref().map(|(port, _)| *port)
    }

    /// This server's metrics registry, for components that add their own collectors.
    pub fn registry(&self) -> Arc<prometheus::Registry> {
        self.registry.clone()
    }

    /// A handle to stop the server gracefully.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Runs until the public server stops; the metrics listener stops with it, and the
    /// projections stop at their next batch boundary.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = match self.metrics {
            None => self.server.await,
            Some((_, metrics)) => {
                let handle = metrics.handle();
                let metrics = tokio::spawn(metrics);
                let result = self.server.await;
                handle.stop(true).await;
                let _ = metrics.await;
                result
            }
        };
        self.projections.shutdown().await;
        result
    }
}

/// A one-worker server on `addr` for operators' probes (`/metrics` alone, or the
/// projector's `/metrics` and `/readyz`): the routes `configure` adds, unknown paths answered
/// as problem+json. Returns the bound port (for `:0`) and the server to run.
pub(crate) fn internal_server(
    addr: std::net::SocketAddr,
    configure: impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
) -> Result<(u16, Server), StartupError> {
    let bind_err = |source| StartupError::Bind {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).map_err(bind_err)?;
    let port = listener.local_addr().map_err(bind_err)?.port();
    let server = HttpServer::new(move || {
        App::new()
            .wrap(crate::errors::routing_problems())
            .configure(configure.clone())
    })
    .workers(1)
    .listen(listener)
    .map_err(bind_err)?
    .disable_signals()
    .run();
    Ok((port, server))
}

/// Records one health probe a minute in `ops_health_probe` (the monthly report's availability):
/// ok while no projection has stopped on an event; a minute in which the database cannot take
/// the probe is missing, which the report counts as down. Stops when the returned sender drops.
fn spawn_health_recorder(
    pg: tokio_postgres::Config,
    projections: Projections,
    port: u16,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // One id per server process: availability counts a minute up when any instance was.
    let instance = format!("{port}-{}", uuid::Uuid::new_v4().simple());
    tokio::spawn(async move {
        let client = match pg.connect(tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                client
            }
            Err(e) => {
                tracing::warn!("health probes are not recorded: {e}");
                return;
            }
        };
        let check = || {
            let failed: Vec<String> = projections
                .statuses()
                .into_iter()
                .filter(|s| matches!(s.state, mykey_projections::runner::RunState::Failed(_)))
                .map(|s| s.name.to_string())
                .collect();
            async move {
                if failed.is_empty() {
                    (true, String::new())
                } else {
                    (false, format!("projections stopped: {}", failed.join(", ")))
                }
            }
        };
        let shutdown = async {
            let _ = stopped.await;
        };
        mykey_projections::reports::health::run_recorder(
            &client,
            &instance,
            check,
            |e| tracing::warn!("health probe not recorded: {e}"),
            shutdown,
        )
        .await;
    });
    stop
}

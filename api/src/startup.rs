//! The server as a testable object: build it (bind, connect, migrate), then run it.

use crate::config::Settings;
use crate::errors::json_error_handler;
use crate::routes;
use actix_web::dev::{Server, Service as _};
use actix_web::{web, App, HttpServer};
use mykey_store::pg::{PgEventStore, PgStoreOptions};
use std::net::TcpListener;

/// Largest JSON body any endpoint accepts; the biggest legitimate body is a certificate.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// Shared by every request handler.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: PgEventStore,
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
    #[error("Kafka relay: {0}")]
    Kafka(#[from] mykey_projections::kafka::RelayError),
}

pub struct Application {
    port: u16,
    server: Server,
    /// The Kafka relay task when `KAFKA_BROKERS` is set; dropped (stopped) with the server.
    _relay: Option<mykey_projections::kafka::RelayHandle>,
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
        // Lead: at merge, register into the Application's registry (login-a) instead.
        let metrics = prometheus::Registry::new();
        let relay = match &settings.kafka {
            Some(kafka) => Some(
                mykey_projections::kafka::start(store.clone(), pg.clone(), kafka.clone(), &metrics)
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
        let identity = crate::auth::identity::default_identity(&store);
        let auth = crate::auth::Auth::build(settings.auth.clone(), pg, identity).await?;
        auth.spawn_maintenance();
        let auth = web::Data::from(auth);
        let state = web::Data::new(AppState { store });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(auth.clone())
                .app_data(
                    web::JsonConfig::default()
                        .limit(MAX_JSON_BODY)
                        .error_handler(json_error_handler),
                )
                .wrap_fn(|req, srv| crate::auth::cache::within_request(srv.call(req)))
                .service(routes::health::healthz)
                .service(routes::health::readyz)
                .configure(routes::auth::configure)
        })
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            addr: settings.listen.to_string(),
            source,
        })?
        // SIGTERM/SIGINT are handled by main, which also stops the private PostgreSQL.
        .disable_signals()
        .run();
        Ok(Application {
            port,
            server,
            _relay: relay,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server gracefully.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

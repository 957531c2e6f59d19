//! Wiring: builds the store, the fleet and the authenticator from [`Config`], and runs the
//! server with a shutdown future (`run(listener, state, shutdown)`), so tests bind port 0.

use std::{future::Future, sync::Arc, time::Duration as StdDuration};

use anyhow::Context;
use chrono::Duration;
use tokio::net::TcpListener;

use crate::{
    api::{self, ApiSettings, AppState},
    auth::{self, Authenticator},
    clock::{Clock, SystemClock},
    config::{Config, FleetKind, StoreKind},
    fleet::{RoomHosting, janus_hosts::JanusHosts},
    store::{Store, cosmos::CosmosStore, sqlite::SqliteStore},
};

/// The running parts of the service, kept alive while it serves.
pub struct App {
    pub state: AppState,
    /// The Janus hosts (with the local Janus process for `FLEET=local`, stopped on shutdown).
    pub janus: Arc<JanusHosts>,
}

/// Opens the configured store. Fails fast with a message naming what is missing.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &config.store {
        StoreKind::Sqlite => {
            let path = config.data_dir.join("suroga.sqlite3");
            Arc::new(SqliteStore::open(&path).with_context(|| format!("opening the SQLite store at {}", path.display()))?)
        }
        StoreKind::Cosmos(c) => Arc::new(CosmosStore::connect(c).await.context("connecting to Cosmos DB")?),
    })
}

/// Builds every part from configuration.
pub async fn build(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<App> {
    let store = open_store(config).await?;
    let http = reqwest::Client::builder()
        .connect_timeout(StdDuration::from_secs(5))
        .timeout(StdDuration::from_secs(10))
        .build()?;
    let auth = Arc::new(Authenticator::new(&config.auth, &config.data_dir, http).context("authentication settings")?);
    let janus = Arc::new(match config.fleet {
        FleetKind::Local => JanusHosts::start_local(config).await.context("starting the local Janus host")?,
        FleetKind::Static | FleetKind::Azure => JanusHosts::from_config(config).context("Janus hosts")?,
    });
    let fleet: Arc<dyn RoomHosting> = janus.clone();
    let state = AppState {
        store,
        fleet,
        auth,
        clock,
        settings: Arc::new(ApiSettings { policy: config.policy.clone(), join_token_grace: config.join_token_grace }),
    };
    Ok(App { state, janus })
}

/// Serves `state` on `listener` until `shutdown` completes.
pub async fn run(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    axum::serve(listener, api::router(state)).with_graceful_shutdown(shutdown).await
}

/// `suroga serve`: binds the configured address, serves until SIGTERM or Ctrl-C, then stops
/// local Janus hosts.
pub async fn serve_forever(config: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.addr).await.with_context(|| format!("binding {}", config.addr))?;
    let app = build(&config, Arc::new(SystemClock)).await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        under_functions_host = config.under_functions_host,
        store = ?std::mem::discriminant(&config.store),
        "Suroga Stream listening"
    );
    run(listener, app.state.clone(), shutdown_signal()).await?;
    if let Err(e) = app.janus.shutdown().await {
        tracing::warn!(error = %e, "stopping the local Janus host");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}

/// A development token for the local HS256 secret (`suroga token`).
pub fn dev_token(config: &Config, sub: &str, admin: bool, ttl: Duration) -> anyhow::Result<String> {
    let secret = auth::local_secret(&config.auth, &config.data_dir)?
        .ok_or_else(|| anyhow::anyhow!("local tokens are off: AUTH_ISSUER is set and AUTH_HS256_SECRET is not"))?;
    Ok(auth::mint_dev_token(&secret, sub, admin, &config.auth.admin_role, ttl, chrono::Utc::now()))
}

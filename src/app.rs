//! Wiring: builds the store, the fleet and the authenticator from [`Config`], and runs the
//! server with a shutdown future (`run(listener, state, shutdown)`), so tests bind port 0.
//!
//! Local Janus hosts post their events to the service's own address (`config.addr`), so the
//! listener is bound BEFORE the app is built ([`serve_forever`] does; tests bind port 0 and put
//! the bound address in the config): see [`local_events_url`].

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration as StdDuration};

use anyhow::Context;
use axum::Router;
use chrono::Duration;
use tokio::net::TcpListener;

use crate::{
    api::{self, ApiSettings, AppState, Shared},
    auth::{self, Authenticator},
    clock::{Clock, SystemClock},
    config::Secret,
    config::{Config, FleetKind, StoreKind},
    fleet::{
        alerts::Alerter,
        azure::{AzureOptions, AzurePower, managed_identity},
        control::{Fleet, FleetHost, FleetPolicy},
        hosting::PlannedHosting,
        janus_hosts::{JanusHost, JanusHosts},
        local::{LocalJanusOptions, LocalPower},
        power::{PowerControl, StaticPower},
        power_cache::CachedPower,
        reconciler::Reconciler,
    },
    jobs::Jobs,
    sessions::{SessionKey, SessionSettings, Sessions},
    store::{Store, cosmos::CosmosStore, sqlite::SqliteStore},
    webhooks::Webhooks,
};

/// Capacity of a local Janus host, in concurrent sessions.
pub const LOCAL_HOST_CAPACITY: u32 = 20;

/// The running parts of the service, kept alive while it serves.
pub struct App {
    pub state: AppState,
    /// The Janus hosts by URL.
    pub janus: Arc<JanusHosts>,
    /// The fleet: hosts, power backend, policy (the same as `state.fleet_ops`).
    pub fleet: Arc<Fleet>,
    pub reconciler: Arc<Reconciler>,
    /// The timer jobs (`POST /fleet-reconcile`, `POST /purge-keys`, standalone schedules).
    pub jobs: Jobs,
    /// The local Janus processes for `FLEET=local` (stopped by [`App::shutdown`]).
    pub local: Option<Arc<LocalPower>>,
}

impl App {
    /// The whole HTTP surface: the API plus the timer functions, every answer with the security
    /// headers.
    pub fn router(&self) -> Router {
        api::router(self.state.clone())
            .merge(self.jobs.router())
            .layer(axum::middleware::from_fn(api::headers::security_headers))
    }

    /// Stops the local Janus hosts, if any. Idempotent.
    pub async fn shutdown(&self) {
        if let Some(local) = &self.local {
            local.stop_all().await;
        }
    }
}

/// Opens the configured store. Fails fast with a message naming what is missing.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &config.store {
        StoreKind::Sqlite => {
            let path = config.data_dir.join("suroga.sqlite3");
            Arc::new(
                SqliteStore::open(&path).with_context(|| format!("opening the SQLite store at {}", path.display()))?,
            )
        }
        StoreKind::Cosmos(c) => Arc::new(CosmosStore::connect(c).await.context("connecting to Cosmos DB")?),
    })
}

/// The events route as local Janus hosts reach it: `http://<addr>/api/v1/janus/events`, an
/// unspecified bind address (`0.0.0.0`) reached on loopback. `None` while the port is 0 (not
/// bound yet): then local hosts post no events.
pub fn local_events_url(addr: SocketAddr) -> Option<String> {
    if addr.port() == 0 {
        return None;
    }
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    Some(format!("http://{}{}/janus/events", SocketAddr::new(ip, addr.port()), crate::api::API_PREFIX))
}

/// Builds every part from configuration.
pub async fn build(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<App> {
    build_with(config, clock, |p| p).await
}

/// [`build`], with the power backend passed through `wrap_power` first (tests wrap it to
/// inject failures). With `FLEET=local`, every local host is started here: the API's
/// synchronous room creation works at once, and the reconciler deallocates idle hosts later.
pub async fn build_with(
    config: &Config,
    clock: Arc<dyn Clock>,
    wrap_power: impl FnOnce(Arc<dyn PowerControl>) -> Arc<dyn PowerControl>,
) -> anyhow::Result<App> {
    let store = open_store(config).await?;
    build_on(config, clock, store, wrap_power).await
}

/// [`build_with`] on a store the caller opened (tests run the API on the Cosmos emulator).
pub async fn build_on(
    config: &Config,
    clock: Arc<dyn Clock>,
    store: Arc<dyn Store>,
    wrap_power: impl FnOnce(Arc<dyn PowerControl>) -> Arc<dyn PowerControl>,
) -> anyhow::Result<App> {
    let http = reqwest::Client::builder()
        .connect_timeout(StdDuration::from_secs(5))
        .timeout(StdDuration::from_secs(10))
        .build()?;
    let auth = Arc::new(Authenticator::new(&config.auth, &config.data_dir, http).context("authentication settings")?);

    #[allow(clippy::type_complexity)]
    let (janus, power, hosts, local, root, events_secret): (
        JanusHosts,
        Arc<dyn PowerControl>,
        Vec<FleetHost>,
        Option<Arc<LocalPower>>,
        String,
        Option<Secret>,
    ) = match config.fleet {
        FleetKind::Local => {
            let events_backend = local_events_url(config.addr);
            if events_backend.is_none() {
                tracing::warn!("the listen port is not known yet: local Janus hosts post no events");
            }
            let options = LocalJanusOptions { events_backend, ..LocalJanusOptions::default() };
            let (local, secrets) = LocalPower::from_config(config, options).context("local Janus hosts")?;
            local.start_all().await.context("starting the local Janus hosts")?;
            let mut janus_hosts = Vec::new();
            for name in local.names() {
                let (http_url, ws_url) = local.urls(&name).await.expect("a name LocalPower listed");
                janus_hosts.push(JanusHost {
                    name,
                    backend_url: http_url.clone(),
                    public_http_url: http_url,
                    public_ws_url: ws_url,
                });
            }
            let fleet_hosts =
                janus_hosts.iter().map(|h| FleetHost { name: h.name.clone(), capacity: LOCAL_HOST_CAPACITY }).collect();
            let local = Arc::new(local);
            let janus = JanusHosts::for_local(config, janus_hosts, &secrets).context("local Janus hosts")?;
            let events = Some(Secret::new(secrets.events_secret.clone()));
            (janus, local.clone(), fleet_hosts, Some(local), secrets.api_secret.clone(), events)
        }
        FleetKind::Static => {
            let janus = JanusHosts::from_config(config).context("Janus hosts")?;
            let names: Vec<String> = config.hosts.iter().map(|h| h.name.clone()).collect();
            let hosts = configured_hosts(config);
            (
                janus,
                Arc::new(StaticPower::new(names)),
                hosts,
                None,
                api_secret(config)?,
                config.janus_events_secret.clone(),
            )
        }
        FleetKind::Azure => {
            let janus = JanusHosts::from_config(config).context("Janus hosts")?;
            let subscription = config
                .fleet_settings
                .azure_subscription_id
                .clone()
                .context("FLEET=azure needs AZURE_SUBSCRIPTION_ID")?;
            let credential = managed_identity().context("the managed identity for Azure VM control")?;
            let power = AzurePower::from_hosts(credential, subscription, &config.hosts, AzureOptions::default())
                .context("Azure VM control")?;
            (
                janus,
                Arc::new(power),
                configured_hosts(config),
                None,
                api_secret(config)?,
                config.janus_events_secret.clone(),
            )
        }
    };
    let janus = Arc::new(janus);
    let always_on = config.fleet == FleetKind::Static;
    let power = Arc::new(CachedPower::new(
        wrap_power(power),
        clock.clone(),
        config.fleet_settings.power_cache,
        hosts.iter().map(|h| h.name.clone()),
    ));
    let fleet = Arc::new(Fleet {
        janus: janus.clone(),
        power,
        hosts,
        policy: FleetPolicy::from_settings(&config.fleet_settings),
        always_on,
        store: store.clone(),
        clock: clock.clone(),
    });
    let webhooks = match &config.webhook {
        Some(w) => Some(Arc::new(Webhooks::new(w, store.clone(), clock.clone()).context("webhooks")?)),
        None => None,
    };
    let sessions = Arc::new(
        Sessions::new(
            store.clone(),
            PlannedHosting::new(fleet.clone()),
            clock.clone(),
            SessionKey::from_root(&root),
            SessionSettings {
                policy: config.policy.clone(),
                grace: config.session_grace,
                public_base_url: config.public_base_url.clone(),
                ice: config.ice.clone(),
                quotas: config.quotas,
            },
        )
        .with_webhooks(webhooks.clone()),
    );
    let state = AppState::new(Shared {
        store: store.clone(),
        sessions: sessions.clone(),
        fleet_ops: fleet.clone(),
        auth,
        clock,
        settings: Arc::new(ApiSettings::from_config(config)),
        web: Arc::new(config.web.clone()),
        janus_events_secret: events_secret,
        webhooks,
    });
    let alerts = Alerter::new(config.fleet_settings.alert_webhook_url.clone(), store);
    let reconciler = Arc::new(Reconciler::new(fleet.clone(), alerts, sessions));
    let jobs = Jobs { state: state.clone(), reconciler: reconciler.clone() };
    Ok(App { state, janus, fleet, reconciler, jobs, local })
}

/// The root of the session credentials' key: the Janus API secret (required for these fleets).
fn api_secret(config: &Config) -> anyhow::Result<String> {
    Ok(config
        .janus_api_secret
        .as_ref()
        .context("JANUS_API_SECRET is required for Janus hosts that are not local")?
        .expose()
        .to_string())
}

fn configured_hosts(config: &Config) -> Vec<FleetHost> {
    config.hosts.iter().map(|h| FleetHost { name: h.name.clone(), capacity: h.capacity }).collect()
}

/// Serves `router` (see [`App::router`]) on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The peer address: rate limits count anonymous callers by it, timer routes want loopback.
    axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

/// `suroga serve`: binds the configured address and serves until SIGTERM or Ctrl-C. Without
/// the Functions host, the timer jobs run in-process on their schedules; under the host, the
/// host invokes them. On the way out: timers stop, then local Janus hosts.
pub async fn serve_forever(mut config: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.addr).await.with_context(|| format!("binding {}", config.addr))?;
    // The address bound (a port 0 becomes the real one): where local Janus hosts post events.
    config.addr = listener.local_addr()?;
    let app = build(&config, Arc::new(SystemClock)).await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        under_functions_host = config.under_functions_host,
        store = match &config.store { StoreKind::Sqlite => "sqlite", StoreKind::Cosmos(_) => "cosmos" },
        "Suroga Stream listening"
    );
    let (stop_timers, timers_stopped) = tokio::sync::watch::channel(false);
    let timers = (!config.under_functions_host).then(|| tokio::spawn(app.jobs.clone().run_schedules(timers_stopped)));
    run(listener, app.router(), shutdown_signal()).await?;
    let _ = stop_timers.send(true);
    if let Some(t) = timers {
        let _ = t.await;
    }
    app.shutdown().await;
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
        .ok_or_else(|| anyhow::anyhow!(
            "local tokens are off: AUTH_ISSUER is set (local tokens need AUTH_ALLOW_LOCAL_TOKENS=true and AUTH_HS256_SECRET)"
        ))?;
    Ok(auth::mint_dev_token(&secret, sub, admin, &config.auth.admin_role, ttl, chrono::Utc::now()))
}

/// `suroga plan`: a dry run of the Janus host schedule for the next `days` days, as a table.
/// Reads the store only: it starts, stops and asks no host, so hosts count as off (as on) for
/// `FLEET=local`/`azure` (`static`), and every booking not yet assigned is placed afresh.
pub async fn plan_table(config: &Config, days: i64) -> anyhow::Result<String> {
    use std::fmt::Write;

    use crate::fleet::planner::{self, CurrentAssignment, HostAction, PlanBooking, PlanHost};

    anyhow::ensure!((1..=31).contains(&days), "--days must be between 1 and 31");
    let store = open_store(config).await?;
    let policy = FleetPolicy::from_settings(&config.fleet_settings).plan;
    let hosts: Vec<FleetHost> = match config.fleet {
        FleetKind::Local => (1..=config.fleet_settings.local_hosts.max(1))
            .map(|i| FleetHost { name: crate::fleet::local::local_host_name(i), capacity: LOCAL_HOST_CAPACITY })
            .collect(),
        FleetKind::Static | FleetKind::Azure => configured_hosts(config),
    };
    let now = chrono::Utc::now();
    let (from, to) = (now, now + Duration::days(days));
    let window = crate::domain::TimeSlot::new(from - policy.grace, to + policy.lead)?;
    let bookings = store.bookings_between(window).await?;
    let ids: Vec<_> = bookings.iter().map(|b| b.id).collect();
    let current: Vec<CurrentAssignment> = store
        .assignments(&ids)
        .await?
        .into_iter()
        .map(|a| CurrentAssignment { booking: a.booking_id, host: a.host, materialized: a.ready_at.is_some() })
        .collect();
    let plan_bookings: Vec<PlanBooking> = bookings.iter().map(|b| PlanBooking::new(b.id, b.room_id, b.slot)).collect();
    let plan_hosts: Vec<PlanHost> =
        hosts.iter().map(|h| PlanHost::new(h.name.clone(), h.capacity, config.fleet == FleetKind::Static)).collect();
    let plan = planner::plan(&plan_bookings, &plan_hosts, &current, &policy, now);

    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%a %Y-%m-%d %H:%M").to_string();
    let mut out = String::new();
    writeln!(out, "Janus host plan, {} to {} UTC ({} bookings; dry run)", fmt(from), fmt(to), bookings.len())?;
    writeln!(out, "{:<12} {:<22} {:<22} {:>8} {:>9}", "host", "on from", "off at", "hours", "bookings")?;
    for h in &plan.hosts {
        let intervals: Vec<_> = h.on_intervals.iter().filter(|i| i.end > from && i.start < to).collect();
        if intervals.is_empty() {
            writeln!(out, "{:<12} (off all week)", h.name)?;
        }
        for i in intervals {
            let hours = (i.end - i.start).num_minutes() as f64 / 60.0;
            writeln!(
                out,
                "{:<12} {:<22} {:<22} {:>8.2} {:>9}",
                h.name,
                fmt(i.start),
                fmt(i.end),
                hours,
                i.bookings.len()
            )?;
        }
        let now_action = match &h.action {
            HostAction::Start { .. } => "start now",
            HostAction::KeepOn { .. } => "keep on",
            HostAction::Deallocate { .. } => "deallocate now",
            HostAction::StayOff { .. } => "stay off",
        };
        writeln!(out, "{:<12} now: {now_action}", "")?;
    }
    let always_on = hosts.len() as f64 * days as f64 * 24.0;
    // Adding +0.0 turns a -0.0 sum into 0.0 for printing.
    let planned = plan.vm_minutes() / 60.0 + 0.0;
    writeln!(
        out,
        "total: {planned:.1} VM-hours in {} starts; always on: {always_on:.0} VM-hours ({:.0}% saved)",
        plan.starts(),
        if always_on > 0.0 { (1.0 - planned / always_on) * 100.0 } else { 0.0 }
    )?;
    for w in &plan.warnings {
        writeln!(out, "warning: {w:?}")?;
    }
    Ok(out)
}

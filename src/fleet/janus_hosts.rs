//! [`JanusHosts`]: Janus hosts by URL and the Janus operations the service performs on one host.
//! It never owns a host: local Janus processes belong to [`super::local::LocalPower`], VMs to
//! their power backend, and which host serves a booking is [`super::hosting::PlannedHosting`]'s.
//!
//! - [`JanusHosts::ensure_room`] creates a session room (idempotent: a room that exists counts);
//!   [`JanusHosts::destroy_room`] destroys one (a room Janus does not know counts as destroyed);
//!   [`JanusHosts::rooms_on`] lists every room on a host with the VideoRoom `admin_key`.
//! - [`JanusHosts::participants_on`] answers from a per-process cache for [`PARTICIPANTS_TTL`]
//!   (5 s) per room: a read may lag Janus by that much; `ensure_room` and `destroy_room` clear
//!   the room's entry.
//! - [`JanusHosts::grant`] signs the two client tokens of one session room.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::local::{HostSecrets, LocalHostError, LocalJanusHost};
use super::{FleetError, HostHealth, JoinGrant, Participant};
use crate::config::{Config, HostConfig, Secret};
use crate::domain::RoomId;
use crate::janus::token::{self, TokenAlgorithm};
use crate::janus::{CreateRoom, JanusClient, JanusClientConfig, JanusError, ListedRoom, VIDEOROOM, videoroom_codes};

/// How long a `participants` answer is reused for the same room in this process.
pub const PARTICIPANTS_TTL: Duration = Duration::from_secs(5);

/// One always-on Janus host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JanusHost {
    pub name: String,
    /// Janus HTTP API root the server uses (`http://10.0.0.4:8088/janus`).
    pub backend_url: String,
    /// Janus HTTP API root given to clients.
    pub public_http_url: String,
    /// Janus WebSocket URL given to clients.
    pub public_ws_url: String,
}

impl From<&HostConfig> for JanusHost {
    fn from(h: &HostConfig) -> Self {
        Self {
            name: h.name.clone(),
            backend_url: h.backend_url.clone(),
            public_http_url: h.public_http_url.clone(),
            public_ws_url: h.public_ws_url.clone(),
        }
    }
}

/// Credentials and limits shared by every host.
#[derive(Debug, Clone)]
pub struct JanusHostsSettings {
    pub api_secret: Secret,
    /// VideoRoom `admin_key`, when the hosts set one.
    pub admin_key: Option<Secret>,
    /// Janus `token_auth_secret`: signs the client tokens of join grants.
    pub token_secret: Secret,
    pub token_algorithm: TokenAlgorithm,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

/// Why a [`JanusHosts`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum FleetSetupError {
    /// A setting is missing or wrong; the message names it.
    #[error("fleet configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Local(#[from] LocalHostError),
    #[error(transparent)]
    Client(#[from] JanusError),
}

/// Always-on Janus hosts behind the [`RoomHosting`] seam.
pub struct JanusHosts {
    hosts: Vec<JanusHost>,
    client: JanusClient,
    token_secret: Secret,
    token_algorithm: TokenAlgorithm,
    /// Per-process read cache; never a source of truth (see the module docs).
    participants_cache: Mutex<HashMap<u64, (Instant, Vec<Participant>)>>,
}

impl std::fmt::Debug for JanusHosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JanusHosts").field("hosts", &self.hosts).finish_non_exhaustive()
    }
}

impl JanusHosts {
    /// Hosts sharing one client configuration. Fails on an empty host list.
    pub fn new(hosts: Vec<JanusHost>, settings: JanusHostsSettings) -> Result<Self, FleetSetupError> {
        if hosts.is_empty() {
            return Err(FleetSetupError::Config("at least one Janus host is needed".into()));
        }
        let client = JanusClient::new(JanusClientConfig {
            api_secret: settings.api_secret,
            admin_key: settings.admin_key,
            connect_timeout: settings.connect_timeout,
            request_timeout: settings.request_timeout,
        })?;
        Ok(Self {
            hosts,
            client,
            token_secret: settings.token_secret,
            token_algorithm: settings.token_algorithm,
            participants_cache: Mutex::new(HashMap::new()),
        })
    }

    /// `FLEET=static` and `FLEET=azure`: the hosts of `JANUS_HOSTS` with `JANUS_API_SECRET`,
    /// `JANUS_ADMIN_KEY` (required: only with it can a token holder not create rooms, and only
    /// with it does `list` show the private session rooms), `JANUS_TOKEN_SECRET` (required: join
    /// grants need it), `JANUS_TOKEN_ALGORITHM` and the Janus timeouts.
    pub fn from_config(config: &Config) -> Result<Self, FleetSetupError> {
        let missing = |k: &str| FleetSetupError::Config(format!("{k} is required for Janus hosts that are not local"));
        let settings = JanusHostsSettings {
            api_secret: config.janus_api_secret.clone().ok_or_else(|| missing("JANUS_API_SECRET"))?,
            admin_key: Some(config.janus_admin_key.clone().ok_or_else(|| missing("JANUS_ADMIN_KEY"))?),
            token_secret: config.janus_token_secret.clone().ok_or_else(|| missing("JANUS_TOKEN_SECRET"))?,
            token_algorithm: algorithm(config)?,
            connect_timeout: config.janus_connect_timeout,
            request_timeout: config.janus_request_timeout,
        };
        Self::new(config.hosts.iter().map(JanusHost::from).collect(), settings)
    }

    /// `FLEET=local`: hosts by URL for local hosts that share `secrets` (see
    /// [`super::local::LocalPower::from_config`]); `hosts` come from [`Self::describe`] or
    /// [`super::local::LocalPower::urls`] after the hosts were started once.
    pub fn for_local(config: &Config, hosts: Vec<JanusHost>, secrets: &HostSecrets) -> Result<Self, FleetSetupError> {
        let settings = JanusHostsSettings {
            api_secret: Secret::new(secrets.api_secret.clone()),
            admin_key: Some(Secret::new(secrets.admin_key.clone())),
            token_secret: Secret::new(secrets.token_secret.clone()),
            token_algorithm: algorithm(config)?,
            connect_timeout: config.janus_connect_timeout,
            request_timeout: config.janus_request_timeout,
        };
        Self::new(hosts, settings)
    }

    /// The [`JanusHost`] entry of a running local host.
    pub fn describe(host: &LocalJanusHost) -> JanusHost {
        JanusHost {
            name: host.name().to_string(),
            backend_url: host.backend_url(),
            public_http_url: host.public_http_url(),
            public_ws_url: host.public_ws_url(),
        }
    }

    /// The hosts, in configuration order.
    pub fn hosts(&self) -> &[JanusHost] {
        &self.hosts
    }

    /// The host that serves `room`: `room_id % hosts.len()`.
    pub fn host_for(&self, room: RoomId) -> &JanusHost {
        &self.hosts[(room.get() % self.hosts.len() as u64) as usize]
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> Option<&JanusHost> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The shared Janus client (for callers that need raw Janus operations).
    pub fn client(&self) -> &JanusClient {
        &self.client
    }

    fn forget_participants(&self, room: u64) {
        self.participants_cache.lock().expect("cache lock").remove(&room);
    }
}

fn algorithm(config: &Config) -> Result<TokenAlgorithm, FleetSetupError> {
    config
        .janus_token_algorithm
        .parse()
        .map_err(|e: token::UnknownAlgorithm| FleetSetupError::Config(format!("JANUS_TOKEN_ALGORITHM: {e}")))
}

/// Unreachable and timeout mean the host is unavailable (503); anything Janus refused is 502.
impl From<JanusError> for FleetError {
    fn from(e: JanusError) -> Self {
        if e.is_unavailable() { FleetError::Unavailable(e.to_string()) } else { FleetError::Janus(e.to_string()) }
    }
}

impl JanusHosts {
    /// Makes the session room `room` exist on `host`. Idempotent: creating a room that exists
    /// (427, another instance or an earlier call made it) counts as done. `Unavailable` when the
    /// host does not answer, `Janus` when it refuses.
    #[tracing::instrument(level = "info", skip_all, fields(room = room.room, host = %host.name))]
    pub async fn ensure_room(&self, host: &JanusHost, room: &CreateRoom<'_>) -> Result<(), FleetError> {
        self.forget_participants(room.room);
        match self.client.create_room(&host.backend_url, room).await {
            Ok(()) => {
                tracing::info!("session room created on Janus");
                Ok(())
            }
            Err(e) if e.videoroom_code() == Some(videoroom_codes::ROOM_EXISTS) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Destroys room `room` on `host` (everyone in it gets a `destroyed` event and is out); a
    /// room Janus does not know (426) counts as destroyed.
    #[tracing::instrument(level = "info", skip_all, fields(room, host = %host.name))]
    pub async fn destroy_room(&self, host: &JanusHost, room: u64, secret: &str) -> Result<(), FleetError> {
        self.forget_participants(room);
        match self.client.destroy_room(&host.backend_url, room, secret).await {
            Ok(()) => {
                tracing::info!("room destroyed on Janus");
                Ok(())
            }
            Err(e) if e.videoroom_code() == Some(videoroom_codes::NO_SUCH_ROOM) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every room on `host` (with the VideoRoom `admin_key`, private rooms included).
    pub async fn rooms_on(&self, host: &JanusHost) -> Result<Vec<ListedRoom>, FleetError> {
        Ok(self.client.list_rooms(&host.backend_url).await?)
    }

    /// Participants of room `room` on `host`, or from this process's cache when asked within
    /// 5 s. A room Janus does not know (426: not opened yet, or closed) has none;
    /// `Unavailable` when the host does not answer.
    pub async fn participants_on(&self, host: &JanusHost, room: u64) -> Result<Vec<Participant>, FleetError> {
        let now = Instant::now();
        if let Some((at, list)) = self.participants_cache.lock().expect("cache lock").get(&room) {
            if now.duration_since(*at) < PARTICIPANTS_TTL {
                return Ok(list.clone());
            }
        }
        let list = self.participants_fresh(host, room).await?;
        let mut cache = self.participants_cache.lock().expect("cache lock");
        if cache.len() >= 4096 {
            cache.retain(|_, (at, _)| now.duration_since(*at) < PARTICIPANTS_TTL);
        }
        cache.insert(room, (now, list.clone()));
        Ok(list)
    }

    /// Participants of room `room` on `host` straight from Janus (no cache). A room Janus does
    /// not know (426) has none.
    pub async fn participants_fresh(&self, host: &JanusHost, room: u64) -> Result<Vec<Participant>, FleetError> {
        match self.client.list_participants(&host.backend_url, room).await {
            Ok(list) => Ok(list
                .into_iter()
                .map(|p| Participant { id: p.id, display: p.display, publisher: p.publisher })
                .collect()),
            Err(e) if e.videoroom_code() == Some(videoroom_codes::NO_SUCH_ROOM) => Ok(vec![]),
            Err(e) => Err(e.into()),
        }
    }

    /// Forgets every cached participant list (after a host stopped, its rooms are empty).
    pub fn forget_all_participants(&self) {
        self.participants_cache.lock().expect("cache lock").clear();
    }

    /// `host`'s public URLs and the two tokens of room `room`, valid until `expires_at`
    /// (truncated to whole seconds): the core token for the VideoRoom plugin and the room token
    /// for `room` only. No I/O.
    pub fn grant(&self, host: &JanusHost, room: RoomId, expires_at: DateTime<Utc>) -> JoinGrant {
        let expires_at = DateTime::from_timestamp(expires_at.timestamp(), 0).unwrap_or(expires_at);
        let secret = self.token_secret.expose();
        JoinGrant {
            http_url: host.public_http_url.clone(),
            ws_url: host.public_ws_url.clone(),
            token: token::sign(secret, self.token_algorithm, expires_at, &[VIDEOROOM]),
            room_token: token::sign_room(secret, self.token_algorithm, expires_at, room.get()),
            token_expires_at: expires_at,
        }
    }

    /// `GET /janus/info` on every host at once: `ok` or `unavailable`. Never fails.
    pub async fn health(&self) -> Vec<HostHealth> {
        let checks = self.hosts.iter().map(|h| async move {
            let janus = match self.answers(h).await {
                Ok(()) => "ok",
                Err(e) => {
                    tracing::warn!(host = %h.name, error = %e, "Janus host health check failed");
                    "unavailable"
                }
            };
            HostHealth { name: h.name.clone(), janus }
        });
        futures::future::join_all(checks).await
    }

    /// True when Janus on `host` answers `GET /janus/info`.
    pub async fn answers(&self, host: &JanusHost) -> Result<(), FleetError> {
        self.client.info(&host.backend_url).await.map(|_| ()).map_err(Into::into)
    }
}

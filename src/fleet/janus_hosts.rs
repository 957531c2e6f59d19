//! [`JanusHosts`]: Janus hosts by URL, and the [`RoomHosting`] implementation for always-on
//! hosts (`FLEET=static`). It never owns a host: local Janus processes belong to
//! [`super::local::LocalPower`], VMs to their power backend. The per-host operations
//! ([`JanusHosts::materialize_on`], [`JanusHosts::destroy_on`], [`JanusHosts::participants_on`],
//! [`JanusHosts::grant`], [`JanusHosts::answers`]) are what [`super::hosting::PlannedHosting`]
//! and the reconciler use for hosts that are switched on and off.
//!
//! - Which host serves a room is `room_id % hosts.len()`: every API instance agrees without
//!   shared state (a change of the host list moves rooms; `materialize` puts them back).
//! - `materialize` is idempotent: `exists`, then `create` (a 427 race counts as exists) or
//!   `edit` (pin, description, publishers) with the room's admin secret.
//! - `participants` answers from a per-process cache for [`PARTICIPANTS_TTL`] (5 s) per room:
//!   a read may lag Janus by that much; `materialize` and `destroy` clear the room's entry.
//! - `join` signs a Janus token for the VideoRoom plugin, expiring at the caller's `expires_at`.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::local::{HostSecrets, LocalHostError, LocalJanusHost};
use super::{FleetError, HostHealth, JoinGrant, Participant, RoomHosting};
use crate::config::{Config, HostConfig, Secret};
use crate::domain::{Booking, Room, RoomId};
use crate::janus::token::{self, TokenAlgorithm};
use crate::janus::{CreateRoom, EditRoom, JanusClient, JanusClientConfig, JanusError, VIDEOROOM, videoroom_codes};

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
    participants_cache: Mutex<HashMap<RoomId, (Instant, Vec<Participant>)>>,
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

    /// `FLEET=static`: the hosts of `JANUS_HOSTS` with `JANUS_API_SECRET`, `JANUS_ADMIN_KEY`
    /// (optional), `JANUS_TOKEN_SECRET` (required: join grants need it), `JANUS_TOKEN_ALGORITHM`
    /// and the Janus timeouts.
    pub fn from_config(config: &Config) -> Result<Self, FleetSetupError> {
        let missing = |k: &str| FleetSetupError::Config(format!("{k} is required for static Janus hosts"));
        let settings = JanusHostsSettings {
            api_secret: config.janus_api_secret.clone().ok_or_else(|| missing("JANUS_API_SECRET"))?,
            admin_key: config.janus_admin_key.clone(),
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

    fn forget_participants(&self, room: RoomId) {
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

fn description(room: &Room) -> String {
    room.name.clone().unwrap_or_else(|| format!("room {}", room.id))
}

impl JanusHosts {
    /// Makes `room` exist on `host` with the stored pin, description and publishers. Idempotent:
    /// creates the room when missing, otherwise edits it (Janus cannot show the current pin, so
    /// it always edits). `Unavailable` when the host does not answer, `Janus` when the room exists
    /// with another admin secret (433).
    #[tracing::instrument(level = "info", skip_all, fields(room = %room.id, host = %host.name))]
    pub async fn materialize_on(&self, host: &JanusHost, room: &Room) -> Result<(), FleetError> {
        let base = host.backend_url.as_str();
        let id = room.id.get();
        let description = description(room);
        self.forget_participants(room.id);
        let edit = EditRoom {
            room: id,
            secret: &room.admin_secret,
            new_pin: Some(&room.password),
            new_description: Some(&description),
            new_publishers: Some(room.max_participants.into()),
        };
        if self.client.room_exists(base, id).await? {
            self.client.edit_room(base, &edit).await?;
            tracing::info!("room edited on Janus");
            return Ok(());
        }
        let create = CreateRoom {
            room: id,
            description: &description,
            secret: &room.admin_secret,
            pin: &room.password,
            publishers: room.max_participants.into(),
        };
        match self.client.create_room(base, &create).await {
            Ok(()) => {
                tracing::info!("room created on Janus");
                Ok(())
            }
            // Another instance created it between our exists and create: make it ours.
            Err(e) if e.videoroom_code() == Some(videoroom_codes::ROOM_EXISTS) => {
                self.client.edit_room(base, &edit).await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Destroys `room` on `host`; a room Janus does not know (426) counts as destroyed.
    pub async fn destroy_on(&self, host: &JanusHost, room: &Room) -> Result<(), FleetError> {
        self.forget_participants(room.id);
        match self.client.destroy_room(&host.backend_url, room.id.get(), &room.admin_secret).await {
            Err(e) if e.videoroom_code() == Some(videoroom_codes::NO_SUCH_ROOM) => Ok(()),
            other => Ok(other?),
        }
    }

    /// Participants of `room` on `host`, or from this process's cache when asked within 5 s.
    /// `Janus` when the room is not on the host (426), `Unavailable` when the host does not answer.
    pub async fn participants_on(&self, host: &JanusHost, room: &Room) -> Result<Vec<Participant>, FleetError> {
        let now = Instant::now();
        if let Some((at, list)) = self.participants_cache.lock().expect("cache lock").get(&room.id) {
            if now.duration_since(*at) < PARTICIPANTS_TTL {
                return Ok(list.clone());
            }
        }
        let list: Vec<Participant> = self
            .client
            .list_participants(&host.backend_url, room.id.get())
            .await?
            .into_iter()
            .map(|p| Participant { id: p.id, display: p.display, publisher: p.publisher })
            .collect();
        let mut cache = self.participants_cache.lock().expect("cache lock");
        if cache.len() >= 4096 {
            cache.retain(|_, (at, _)| now.duration_since(*at) < PARTICIPANTS_TTL);
        }
        cache.insert(room.id, (now, list.clone()));
        Ok(list)
    }

    /// Participants of `room` on `host` straight from Janus (no cache): what the reconciler asks
    /// before deallocating. A room Janus does not know (426) has none; other errors as Janus
    /// gave them (see [`JanusError::is_unavailable`]).
    pub async fn participants_fresh(&self, host: &JanusHost, room: &Room) -> Result<Vec<Participant>, JanusError> {
        match self.client.list_participants(&host.backend_url, room.id.get()).await {
            Ok(list) => Ok(list
                .into_iter()
                .map(|p| Participant { id: p.id, display: p.display, publisher: p.publisher })
                .collect()),
            Err(e) if e.videoroom_code() == Some(videoroom_codes::NO_SUCH_ROOM) => Ok(vec![]),
            Err(e) => Err(e),
        }
    }

    /// Forgets every cached participant list (after a host stopped, its rooms are empty).
    pub fn forget_all_participants(&self) {
        self.participants_cache.lock().expect("cache lock").clear();
    }

    /// `host`'s public URLs and a VideoRoom token valid until `expires_at` (truncated to whole
    /// seconds). No I/O.
    pub fn grant(&self, host: &JanusHost, expires_at: DateTime<Utc>) -> JoinGrant {
        let expires_at = DateTime::from_timestamp(expires_at.timestamp(), 0).unwrap_or(expires_at);
        JoinGrant {
            http_url: host.public_http_url.clone(),
            ws_url: host.public_ws_url.clone(),
            token: token::sign(self.token_secret.expose(), self.token_algorithm, expires_at, &[VIDEOROOM]),
            token_expires_at: expires_at,
        }
    }

    /// True when Janus on `host` answers `GET /janus/info`.
    pub async fn answers(&self, host: &JanusHost) -> Result<(), FleetError> {
        self.client.info(&host.backend_url).await.map(|_| ()).map_err(Into::into)
    }
}

#[async_trait]
impl RoomHosting for JanusHosts {
    /// [`JanusHosts::materialize_on`] the room's host (`room_id % hosts.len()`).
    async fn materialize(&self, room: &Room) -> Result<(), FleetError> {
        self.materialize_on(self.host_for(room.id), room).await
    }

    /// Destroys the room on its host (must succeed; 426 counts as destroyed) and, best effort,
    /// on the other hosts, where an older host list may have put it.
    #[tracing::instrument(level = "info", skip_all, fields(room = %room.id))]
    async fn destroy(&self, room: &Room) -> Result<(), FleetError> {
        let serving = self.host_for(room.id);
        self.destroy_on(serving, room).await?;
        let others = self
            .hosts
            .iter()
            .filter(|h| h.name != serving.name)
            .map(|h| async move { (h, self.destroy_on(h, room).await) });
        for (h, r) in futures::future::join_all(others).await {
            if let Err(e) = r {
                tracing::warn!(host = %h.name, error = %e, "could not check a non-serving host for the room");
            }
        }
        Ok(())
    }

    /// Participants from Janus, or from this process's cache when asked within 5 s.
    /// `Janus` when the room is not on its host (426).
    async fn participants(&self, room: &Room) -> Result<Vec<Participant>, FleetError> {
        self.participants_on(self.host_for(room.id), room).await
    }

    /// The serving host's public URLs and a VideoRoom token valid until `expires_at`
    /// (truncated to whole seconds). Never `NotReady`: these hosts are always on.
    async fn join(&self, room: &Room, _booking: &Booking, expires_at: DateTime<Utc>) -> Result<JoinGrant, FleetError> {
        Ok(self.grant(self.host_for(room.id), expires_at))
    }

    /// `GET /janus/info` on every host at once: `ok` or `unavailable`.
    async fn health(&self) -> Vec<HostHealth> {
        let checks = self.hosts.iter().map(|h| async move {
            let janus = match self.client.info(&h.backend_url).await {
                Ok(_) => "ok",
                Err(e) => {
                    tracing::warn!(host = %h.name, error = %e, "Janus host health check failed");
                    "unavailable"
                }
            };
            HostHealth { name: h.name.clone(), janus }
        });
        futures::future::join_all(checks).await
    }
}

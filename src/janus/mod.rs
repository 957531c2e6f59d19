//! The Janus side: a client for Janus's HTTP API, VideoRoom operations, signed client tokens
//! and the configuration templates Janus hosts run with.
//!
//! - [`JanusClient`]: one reusable HTTP pool, the server credential (`apisecret`) and the
//!   VideoRoom `admin_key`; room operations each on a short session ([`JanusClient::room_exists`],
//!   [`JanusClient::create_room`], [`JanusClient::destroy_room`], [`JanusClient::list_rooms`],
//!   [`JanusClient::list_participants`]) because rooms outlive the session that created them.
//! - [`Session`] and [`Handle`]: a session and a plugin handle the caller keeps, with either
//!   credential ([`Credential`]): what a participant does (`join`) and what tests need.
//! - [`JanusError`]: transport failures, core errors (`{"janus":"error"}`) and VideoRoom errors
//!   that arrive inside a successful reply (`plugindata.data.error_code`).
//! - [`token`]: signed client tokens; [`templates`]: Janus configuration from `infra/janus/`;
//!   [`events`]: what Janus's event handler posts to the service.
//!
//! The API reference is Janus 1.1.2: <https://github.com/meetecho/janus-gateway/blob/v1.1.2/src/mainpage.dox>
//! (section "RESTful, WebSockets, RabbitMQ, MQTT, Nanomsg and UnixSockets API") and the VideoRoom
//! plugin documentation at the top of
//! <https://github.com/meetecho/janus-gateway/blob/v1.1.2/src/plugins/janus_videoroom.c>.
//! No secret (apisecret, admin_key, token, room secret or pin) ever enters an error or a log line.

pub mod events;
pub mod templates;
pub mod token;

use std::{fmt, future::Future, time::Duration};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Secret;

/// The VideoRoom plugin's package name.
pub const VIDEOROOM: &str = "janus.plugin.videoroom";

/// Janus core error codes (`src/apierror.h` at v1.1.2) this service meets.
pub mod core_codes {
    /// Wrong or missing `apisecret` or token.
    pub const UNAUTHORIZED: i64 = 403;
    /// The token is not valid for the plugin being attached.
    pub const UNAUTHORIZED_PLUGIN: i64 = 405;
    /// The session does not exist (or timed out).
    pub const SESSION_NOT_FOUND: i64 = 458;
    /// The plugin is not loaded.
    pub const PLUGIN_NOT_FOUND: i64 = 460;
}

/// VideoRoom error codes (`JANUS_VIDEOROOM_ERROR_*` in `janus_videoroom.c` at v1.1.2).
pub mod videoroom_codes {
    /// Unknown request.
    pub const UNKNOWN_REQUEST: i64 = 423;
    /// The participant already joined on this handle.
    pub const ALREADY_JOINED: i64 = 425;
    /// No such room.
    pub const NO_SUCH_ROOM: i64 = 426;
    /// The room already exists (`create`).
    pub const ROOM_EXISTS: i64 = 427;
    /// A mandatory element is missing; 1.1.2 answers this (not 433) to `create` without `admin_key`.
    pub const MISSING_ELEMENT: i64 = 429;
    /// An element has the wrong type or value.
    pub const INVALID_ELEMENT: i64 = 430;
    /// Wrong room secret, pin or admin_key.
    pub const UNAUTHORIZED: i64 = 433;
    /// The participant id is taken.
    pub const ID_EXISTS: i64 = 436;
}

/// Why a Janus call failed. `Display` names the host (its URL without credentials) and the
/// Janus reason, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum JanusError {
    /// The host could not be reached (connection refused, DNS, reset).
    #[error("Janus at {host} is unreachable: {detail}")]
    Unreachable { host: String, detail: String },
    /// The host accepted the connection (or not) but did not answer in time.
    #[error("Janus at {host} did not answer within {after:?}")]
    Timeout { host: String, after: Duration },
    /// A core error: `{"janus":"error","error":{"code":C,"reason":".."}}`.
    #[error("Janus core error {code}: {reason}")]
    Core { code: i64, reason: String },
    /// A VideoRoom error inside a successful reply: `plugindata.data.error_code`.
    #[error("Janus VideoRoom error {code}: {reason}")]
    VideoRoom { code: i64, reason: String },
    /// An answer this client does not understand.
    #[error("unexpected answer from Janus at {host}: {detail}")]
    Protocol { host: String, detail: String },
    /// The HTTP client could not be built.
    #[error("cannot build the Janus HTTP client: {0}")]
    Client(String),
}

impl JanusError {
    /// True for failures of reach (unreachable, timeout): the host is unavailable, not refusing.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Timeout { .. })
    }
    /// The VideoRoom `error_code`, when this is a VideoRoom error.
    pub fn videoroom_code(&self) -> Option<i64> {
        match self {
            Self::VideoRoom { code, .. } => Some(*code),
            _ => None,
        }
    }
    /// The core error code, when this is a core error.
    pub fn core_code(&self) -> Option<i64> {
        match self {
            Self::Core { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// How a request authenticates: the server's `apisecret`, or a client's signed `token`.
#[derive(Clone)]
pub enum Credential {
    ApiSecret(Secret),
    Token(Secret),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ApiSecret(_) => f.write_str("ApiSecret(***)"),
            Self::Token(_) => f.write_str("Token(***)"),
        }
    }
}

impl Credential {
    fn field(&self) -> (&'static str, &str) {
        match self {
            Self::ApiSecret(s) => ("apisecret", s.expose()),
            Self::Token(t) => ("token", t.expose()),
        }
    }
}

/// Settings of a [`JanusClient`].
#[derive(Debug, Clone)]
pub struct JanusClientConfig {
    /// The Janus `api_secret`, sent as `apisecret` on every server-side request.
    pub api_secret: Secret,
    /// The VideoRoom `admin_key`, sent with `create` when set.
    pub admin_key: Option<Secret>,
    /// Longest wait for a TCP connection (default 2 s).
    pub connect_timeout: Duration,
    /// Longest wait for a whole request (default 5 s).
    pub request_timeout: Duration,
}

/// A Janus HTTP API client over one reusable connection pool. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct JanusClient {
    http: reqwest::Client,
    api_secret: Secret,
    admin_key: Option<Secret>,
    request_timeout: Duration,
}

impl fmt::Debug for JanusClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JanusClient").field("request_timeout", &self.request_timeout).finish_non_exhaustive()
    }
}

/// What `create` sets on a new room. The room is always private (`is_private`: `list` shows it
/// only to holders of the `admin_key`) and not saved to Janus's configuration
/// (`permanent: false`): the store is the source of truth.
#[derive(Debug, Clone)]
pub struct CreateRoom<'a> {
    pub room: u64,
    pub description: &'a str,
    /// The room admin secret (`secret`), needed later by `kick` and `destroy`.
    pub secret: &'a str,
    /// The join password (`pin`).
    pub pin: &'a str,
    /// Maximum concurrent publishers (`publishers`).
    pub publishers: u32,
    /// `signed_tokens`: every `join` must carry a room token for this room (see [`token::sign_room`]).
    pub signed_tokens: bool,
    /// `lock_record`: recording can only be switched with the room secret.
    pub lock_record: bool,
    /// `require_pvtid`: a subscriber must name its own publisher's `private_id`, so every
    /// subscription belongs to a participant `listparticipants` shows (and `kick` removes).
    pub require_pvtid: bool,
}

/// A room as `list` reports it (with the `admin_key`, private rooms too).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ListedRoom {
    pub room: u64,
    #[serde(default)]
    pub description: String,
    /// Participants joined as publishers (subscribers are not counted).
    #[serde(default)]
    pub num_participants: u64,
}

/// A VideoRoom `join` as a publisher.
#[derive(Debug, Clone, Copy)]
pub struct JoinRoom<'a> {
    pub room: u64,
    pub display: &'a str,
    /// The room's `pin`, when it has one.
    pub pin: Option<&'a str>,
    /// The room token (`token` in the join body), for rooms with `signed_tokens`.
    pub room_token: Option<&'a str>,
}

/// A participant as `listparticipants` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ListedParticipant {
    pub id: u64,
    #[serde(default)]
    pub display: Option<String>,
    /// True while the participant is publishing media (joined as publisher and sent an offer).
    #[serde(default)]
    pub publisher: bool,
}

/// What a successful `join` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The participant id Janus assigned.
    pub id: u64,
    /// The participant's `private_id`, which its own subscriptions name.
    pub private_id: Option<u64>,
    /// Ids of the publishers already in the room.
    pub publishers: Vec<u64>,
}

impl JanusClient {
    /// Builds the client and its pool. Fails only if the TLS backend cannot start.
    pub fn new(config: JanusClientConfig) -> Result<Self, JanusError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| JanusError::Client(e.without_url().to_string()))?;
        Ok(Self {
            http,
            api_secret: config.api_secret,
            admin_key: config.admin_key,
            request_timeout: config.request_timeout,
        })
    }

    /// The per-request time limit.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// `GET {base}/info`: the server description; needs no credential. `base` is the API root
    /// (`http://host:8088/janus`).
    // https://github.com/meetecho/janus-gateway/blob/v1.1.2/src/mainpage.dox ("info" request)
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn info(&self, base: &str) -> Result<Value, JanusError> {
        let base = base.trim_end_matches('/');
        let resp = self
            .http
            .get(format!("{base}/info"))
            .send()
            .await
            .map_err(|e| transport_error(base, e, self.request_timeout))?;
        let v = read_json(base, resp, self.request_timeout).await?;
        check_core(&v)?;
        if v["janus"] != "server_info" {
            return Err(protocol(base, "info did not answer server_info"));
        }
        Ok(v)
    }

    /// Opens a session with the server credential (`apisecret`).
    pub async fn session(&self, base: &str) -> Result<Session, JanusError> {
        self.session_with(base, Credential::ApiSecret(self.api_secret.clone())).await
    }

    /// Opens a session with the given credential. A client token that is expired, tampered or
    /// signed with another secret fails with core error 403.
    // https://github.com/meetecho/janus-gateway/blob/v1.1.2/src/mainpage.dox ("create" on /janus)
    #[tracing::instrument(level = "debug", skip(self, credential))]
    pub async fn session_with(&self, base: &str, credential: Credential) -> Result<Session, JanusError> {
        let base = base.trim_end_matches('/').to_string();
        let v = post(&self.http, &base, &base, &credential, json!({"janus": "create"}), self.request_timeout).await?;
        let id = success_id(&base, &v)?;
        Ok(Session { client: self.clone(), base, id, credential })
    }

    /// Runs `op` on a VideoRoom handle of a fresh session, then destroys the session (also
    /// when `op` fails, unless the host is unreachable: then it would only add a timeout).
    async fn with_videoroom<T, F, Fut>(&self, base: &str, op: F) -> Result<T, JanusError>
    where
        F: FnOnce(Handle) -> Fut,
        Fut: Future<Output = Result<T, JanusError>>,
    {
        let session = self.session(base).await?;
        let result = match session.attach(VIDEOROOM).await {
            Ok(handle) => op(handle).await,
            Err(e) => Err(e),
        };
        if !matches!(&result, Err(e) if e.is_unavailable()) {
            if let Err(e) = session.destroy().await {
                tracing::debug!(error = %e, "destroying a short Janus session failed; it will time out");
            }
        }
        result
    }

    /// Whether the room exists on the host.
    pub async fn room_exists(&self, base: &str, room: u64) -> Result<bool, JanusError> {
        self.with_videoroom(base, |h| async move { h.exists(room).await }).await
    }

    /// Creates the room. `VideoRoom { code: 427 }` when it already exists.
    pub async fn create_room(&self, base: &str, req: &CreateRoom<'_>) -> Result<(), JanusError> {
        self.with_videoroom(base, |h| async move { h.create(req, self.admin_key.as_ref()).await }).await
    }

    /// Destroys the room. `VideoRoom { code: 426 }` when it does not exist.
    pub async fn destroy_room(&self, base: &str, room: u64, secret: &str) -> Result<(), JanusError> {
        self.with_videoroom(base, |h| async move { h.destroy(room, secret).await }).await
    }

    /// The room's participants. `VideoRoom { code: 426 }` when it does not exist.
    pub async fn list_participants(&self, base: &str, room: u64) -> Result<Vec<ListedParticipant>, JanusError> {
        self.with_videoroom(base, |h| async move { h.list_participants(room).await }).await
    }

    /// Every room on the host, private ones included (needs the `admin_key`; without it Janus
    /// lists public rooms only, and this service makes none).
    pub async fn list_rooms(&self, base: &str) -> Result<Vec<ListedRoom>, JanusError> {
        self.with_videoroom(base, |h| async move { h.list(self.admin_key.as_ref()).await }).await
    }
}

/// A Janus session the caller keeps. Janus drops it after `session_timeout` (60 s) without
/// requests; [`Session::destroy`] ends it at once.
#[derive(Clone)]
pub struct Session {
    client: JanusClient,
    base: String,
    id: u64,
    credential: Credential,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("base", &self.base).field("id", &self.id).finish_non_exhaustive()
    }
}

impl Session {
    /// The Janus session id.
    pub fn id(&self) -> u64 {
        self.id
    }

    fn url(&self) -> String {
        format!("{}/{}", self.base, self.id)
    }

    /// Attaches a plugin. Core error 460 for an unknown plugin, 405 when the session's token
    /// does not name the plugin.
    // https://github.com/meetecho/janus-gateway/blob/v1.1.2/src/mainpage.dox ("attach" on /janus/<session>)
    pub async fn attach(&self, plugin: &str) -> Result<Handle, JanusError> {
        let v = post(
            &self.client.http,
            &self.base,
            &self.url(),
            &self.credential,
            json!({"janus": "attach", "plugin": plugin}),
            self.client.request_timeout,
        )
        .await?;
        let id = success_id(&self.base, &v)?;
        Ok(Handle { session: self.clone(), id })
    }

    /// Waits up to `wait` for events on the session (HTTP long poll, at most 10 events).
    /// Janus answers a bare `keepalive` after 30 s without events; that yields an empty list.
    // https://github.com/meetecho/janus-gateway/blob/v1.1.2/src/mainpage.dox (GET /janus/<session>, "maxev")
    pub async fn events(&self, wait: Duration) -> Result<Vec<Value>, JanusError> {
        let (field, value) = self.credential.field();
        let resp = self
            .client
            .http
            .get(self.url())
            .query(&[("maxev", "10"), (field, value)])
            .timeout(wait)
            .send()
            .await
            .map_err(|e| transport_error(&self.base, e, wait))?;
        let v = read_json(&self.base, resp, wait).await?;
        match v {
            Value::Array(events) => Ok(events),
            Value::Object(_) if v["janus"] == "keepalive" => Ok(vec![]),
            other => {
                check_core(&other)?;
                Err(protocol(&self.base, "long poll answered neither events nor keepalive"))
            }
        }
    }

    /// Destroys the session and its handles. Core error 458 when it is already gone.
    // https://github.com/meetecho/janus-gateway/blob/v1.1.2/src/mainpage.dox ("destroy" on /janus/<session>)
    pub async fn destroy(&self) -> Result<(), JanusError> {
        let v = post(
            &self.client.http,
            &self.base,
            &self.url(),
            &self.credential,
            json!({"janus": "destroy"}),
            self.client.request_timeout,
        )
        .await?;
        expect_janus(&self.base, &v, "success")
    }
}

/// A plugin handle inside a [`Session`].
#[derive(Debug, Clone)]
pub struct Handle {
    session: Session,
    id: u64,
}

/// The immediate answer to a plugin message.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageReply {
    /// A synchronous request's result: `plugindata.data` (already checked for `error_code`).
    Data(Value),
    /// An asynchronous request was accepted; its result comes as an event with this transaction.
    Ack { transaction: String },
}

impl Handle {
    /// The Janus handle id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Sends a plugin message with `body`. A VideoRoom `error_code` in a synchronous answer
    /// becomes [`JanusError::VideoRoom`].
    // https://github.com/meetecho/janus-gateway/blob/v1.1.2/src/mainpage.dox ("message" on /janus/<session>/<handle>)
    pub async fn message(&self, body: Value) -> Result<MessageReply, JanusError> {
        let s = &self.session;
        let transaction = uuid::Uuid::new_v4().to_string();
        let request = json!({"janus": "message", "body": body, "transaction": transaction});
        let url = format!("{}/{}", s.url(), self.id);
        let v = post(&s.client.http, &s.base, &url, &s.credential, request, s.client.request_timeout).await?;
        match v["janus"].as_str() {
            Some("ack") => Ok(MessageReply::Ack { transaction }),
            Some("success") => Ok(MessageReply::Data(plugin_data(&s.base, &v)?)),
            _ => Err(protocol(&s.base, "message answered neither success nor ack")),
        }
    }

    /// A synchronous VideoRoom request: its `plugindata.data`.
    async fn request(&self, body: Value) -> Result<Value, JanusError> {
        match self.message(body).await? {
            MessageReply::Data(d) => Ok(d),
            MessageReply::Ack { .. } => {
                Err(protocol(&self.session.base, "a synchronous request was only acknowledged"))
            }
        }
    }

    /// VideoRoom `exists`.
    // https://github.com/meetecho/janus-gateway/blob/v1.1.2/src/plugins/janus_videoroom.c ("exists")
    pub async fn exists(&self, room: u64) -> Result<bool, JanusError> {
        let d = self.request(json!({"request": "exists", "room": room})).await?;
        d["exists"].as_bool().ok_or_else(|| protocol(&self.session.base, "exists without a boolean"))
    }

    /// VideoRoom `create` of a private, non-permanent room.
    // https://github.com/meetecho/janus-gateway/blob/v1.1.2/src/plugins/janus_videoroom.c ("create")
    pub async fn create(&self, req: &CreateRoom<'_>, admin_key: Option<&Secret>) -> Result<(), JanusError> {
        let mut body = json!({
            "request": "create",
            "room": req.room,
            "description": req.description,
            "secret": req.secret,
            "pin": req.pin,
            "publishers": req.publishers,
            "is_private": true,
            "permanent": false,
            "signed_tokens": req.signed_tokens,
            "lock_record": req.lock_record,
            "require_pvtid": req.require_pvtid,
        });
        if let Some(k) = admin_key {
            body["admin_key"] = Value::String(k.expose().to_string());
        }
        let d = self.request(body).await?;
        expect_videoroom(&self.session.base, &d, "created")
    }

    /// VideoRoom `destroy`.
    // https://github.com/meetecho/janus-gateway/blob/v1.1.2/src/plugins/janus_videoroom.c ("destroy")
    pub async fn destroy(&self, room: u64, secret: &str) -> Result<(), JanusError> {
        let d = self.request(json!({"request": "destroy", "room": room, "secret": secret})).await?;
        expect_videoroom(&self.session.base, &d, "destroyed")
    }

    /// VideoRoom `list`: every room, private ones too when `admin_key` is the plugin's key.
    // https://github.com/meetecho/janus-gateway/blob/v1.1.2/src/plugins/janus_videoroom.c ("list")
    pub async fn list(&self, admin_key: Option<&Secret>) -> Result<Vec<ListedRoom>, JanusError> {
        let mut body = json!({"request": "list"});
        if let Some(k) = admin_key {
            body["admin_key"] = Value::String(k.expose().to_string());
        }
        let d = self.request(body).await?;
        expect_videoroom(&self.session.base, &d, "success")?;
        serde_json::from_value(d["list"].clone())
            .map_err(|_| protocol(&self.session.base, "list is not a list of rooms"))
    }

    /// VideoRoom `listparticipants`.
    // https://github.com/meetecho/janus-gateway/blob/v1.1.2/src/plugins/janus_videoroom.c ("listparticipants")
    pub async fn list_participants(&self, room: u64) -> Result<Vec<ListedParticipant>, JanusError> {
        let d = self.request(json!({"request": "listparticipants", "room": room})).await?;
        expect_videoroom(&self.session.base, &d, "participants")?;
        serde_json::from_value(d["participants"].clone())
            .map_err(|_| protocol(&self.session.base, "participants is not a list of participants"))
    }

    /// VideoRoom `join` as a publisher (without publishing media yet). Asynchronous in Janus:
    /// the message is acknowledged and the result arrives as an event, awaited here within
    /// the request timeout. `VideoRoom { code: 433 }` for a wrong pin or room token, 426 for
    /// an unknown room.
    // https://github.com/meetecho/janus-gateway/blob/v1.1.2/src/plugins/janus_videoroom.c ("join", ptype publisher)
    pub async fn join(&self, req: &JoinRoom<'_>) -> Result<Joined, JanusError> {
        self.join_as(req, None).await
    }

    /// [`Handle::join`] with the participant id `id` (Janus picks one when `None`): what a client
    /// does with the `participant_id` of its join answer. `VideoRoom { code: 436 }` when the id is taken.
    // https://github.com/meetecho/janus-gateway/blob/v1.1.2/src/plugins/janus_videoroom.c ("join", "id")
    pub async fn join_as(&self, req: &JoinRoom<'_>, id: Option<u64>) -> Result<Joined, JanusError> {
        let mut body = json!({"request": "join", "room": req.room, "ptype": "publisher", "display": req.display});
        if let Some(id) = id {
            body["id"] = id.into();
        }
        if let Some(p) = req.pin {
            body["pin"] = Value::String(p.to_string());
        }
        if let Some(t) = req.room_token {
            body["token"] = Value::String(t.to_string());
        }
        let d = self.async_request(body).await?;
        let base = &self.session.base;
        expect_videoroom(base, &d, "joined")?;
        let id = d["id"].as_u64().ok_or_else(|| protocol(base, "joined without a participant id"))?;
        let publishers = d["publishers"].as_array().into_iter().flatten().filter_map(|p| p["id"].as_u64()).collect();
        Ok(Joined { id, private_id: d["private_id"].as_u64(), publishers })
    }

    /// VideoRoom `join` as a subscriber to `feed` (Janus then offers the feed's media; this
    /// client does not answer). `VideoRoom { code: 433 }` for a wrong pin, room token or
    /// `private_id` (rooms with `require_pvtid`), 426 for an unknown room.
    // https://github.com/meetecho/janus-gateway/blob/v1.1.2/src/plugins/janus_videoroom.c ("join", ptype subscriber)
    pub async fn subscribe(
        &self,
        room: u64,
        feed: u64,
        private_id: Option<u64>,
        pin: Option<&str>,
        room_token: Option<&str>,
    ) -> Result<(), JanusError> {
        let mut body = json!({"request": "join", "room": room, "ptype": "subscriber", "streams": [{"feed": feed}]});
        if let Some(p) = private_id {
            body["private_id"] = p.into();
        }
        if let Some(p) = pin {
            body["pin"] = Value::String(p.to_string());
        }
        if let Some(t) = room_token {
            body["token"] = Value::String(t.to_string());
        }
        let d = self.async_request(body).await?;
        expect_videoroom(&self.session.base, &d, "attached")
    }

    /// Sends an asynchronous request and waits (within the request timeout) for the event that
    /// answers its transaction: its `plugindata.data`, `error_code` turned into an error.
    async fn async_request(&self, body: Value) -> Result<Value, JanusError> {
        let base = &self.session.base;
        let transaction = match self.message(body).await? {
            MessageReply::Ack { transaction } => transaction,
            MessageReply::Data(d) => return Ok(d),
        };
        let limit = self.session.client.request_timeout;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(JanusError::Timeout { host: base.clone(), after: limit });
            }
            for event in self.session.events(left).await? {
                if event["transaction"] == transaction.as_str() && event["janus"] == "event" {
                    return plugin_data(base, &event);
                }
            }
        }
    }
}

/// POSTs a Janus request with a fresh transaction and the credential; checks core errors.
async fn post(
    http: &reqwest::Client,
    base: &str,
    url: &str,
    credential: &Credential,
    mut request: Value,
    timeout: Duration,
) -> Result<Value, JanusError> {
    if request.get("transaction").is_none() {
        request["transaction"] = Value::String(uuid::Uuid::new_v4().to_string());
    }
    let (field, value) = credential.field();
    request[field] = Value::String(value.to_string());
    let resp = http.post(url).json(&request).send().await.map_err(|e| transport_error(base, e, timeout))?;
    let v = read_json(base, resp, timeout).await?;
    check_core(&v)?;
    Ok(v)
}

async fn read_json(base: &str, resp: reqwest::Response, timeout: Duration) -> Result<Value, JanusError> {
    let status = resp.status();
    if !status.is_success() {
        return Err(protocol(base, &format!("HTTP status {status}")));
    }
    let bytes = resp.bytes().await.map_err(|e| transport_error(base, e, timeout))?;
    serde_json::from_slice(&bytes).map_err(|_| protocol(base, "the body is not JSON"))
}

fn check_core(v: &Value) -> Result<(), JanusError> {
    if v["janus"] == "error" {
        return Err(JanusError::Core {
            code: v["error"]["code"].as_i64().unwrap_or(0),
            reason: v["error"]["reason"].as_str().unwrap_or("").to_string(),
        });
    }
    Ok(())
}

fn success_id(base: &str, v: &Value) -> Result<u64, JanusError> {
    expect_janus(base, v, "success")?;
    v["data"]["id"].as_u64().ok_or_else(|| protocol(base, "success without data.id"))
}

fn expect_janus(base: &str, v: &Value, want: &str) -> Result<(), JanusError> {
    if v["janus"] == want { Ok(()) } else { Err(protocol(base, &format!("expected \"janus\":\"{want}\""))) }
}

/// `plugindata.data` of a reply or event, with a VideoRoom `error_code` turned into an error.
fn plugin_data(base: &str, v: &Value) -> Result<Value, JanusError> {
    let d = v
        .get("plugindata")
        .and_then(|p| p.get("data"))
        .ok_or_else(|| protocol(base, "reply without plugindata.data"))?;
    if let Some(code) = d.get("error_code").and_then(Value::as_i64) {
        return Err(JanusError::VideoRoom { code, reason: d["error"].as_str().unwrap_or("").to_string() });
    }
    Ok(d.clone())
}

fn expect_videoroom(base: &str, d: &Value, want: &str) -> Result<(), JanusError> {
    if d["videoroom"] == want { Ok(()) } else { Err(protocol(base, &format!("expected \"videoroom\":\"{want}\""))) }
}

fn protocol(base: &str, detail: &str) -> JanusError {
    JanusError::Protocol { host: base.to_string(), detail: detail.to_string() }
}

/// Maps a transport failure without its URL (the long poll carries the credential in the query).
fn transport_error(base: &str, e: reqwest::Error, after: Duration) -> JanusError {
    if e.is_timeout() {
        return JanusError::Timeout { host: base.to_string(), after };
    }
    let e = e.without_url();
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    JanusError::Unreachable { host: base.to_string(), detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn videoroom_errors_inside_success_are_errors() {
        let v = json!({"janus":"success","plugindata":{"plugin":VIDEOROOM,"data":{"videoroom":"event","error_code":426,"error":"No such room (1)"}}});
        let e = plugin_data("http://h/janus", &v).unwrap_err();
        assert_eq!(e.videoroom_code(), Some(videoroom_codes::NO_SUCH_ROOM));
        assert!(!e.is_unavailable());
    }

    #[test]
    fn core_errors_carry_their_code() {
        let v = json!({"janus":"error","error":{"code":403,"reason":"Unauthorized request (wrong or missing secret/token)"}});
        assert_eq!(check_core(&v).unwrap_err().core_code(), Some(core_codes::UNAUTHORIZED));
    }

    #[test]
    fn credentials_are_redacted_in_debug() {
        let c = Credential::ApiSecret(Secret::new("hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}

//! The Janus side against a real Janus 1.1.2: each test starts its own private Janus on free
//! loopback ports through `LocalJanusHost` (killed when the test ends, also on panic).

use std::{collections::HashMap, net::SocketAddr, time::Duration};
#[path = "support/proxy.rs"]
mod proxy;
use proxy::delaying_proxy;

use chrono::{Duration as ChronoDuration, Utc};
use suroga::config::{Config, Secret};
use suroga::fleet::FleetError;
use suroga::fleet::janus_hosts::{JanusHost, JanusHosts, JanusHostsSettings};
use suroga::fleet::local::{HostSecrets, LocalJanusHost, LocalJanusOptions};
use suroga::janus::token::{self, TokenAlgorithm};
use suroga::janus::{
    Credential, JanusClient, JanusClientConfig, JanusError, JoinRoom, VIDEOROOM, core_codes, videoroom_codes,
};
use suroga::sessions::{SessionCredentials, SessionKey, room_spec};
use tempfile::TempDir;
use uuid::Uuid;

/// A running Janus and its folder; the host is declared first so it is killed before the
/// folder goes away.
struct TestJanus {
    host: LocalJanusHost,
    _dir: TempDir,
}

impl TestJanus {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut host = LocalJanusHost::new(
            "test",
            dir.path().join("janus"),
            HostSecrets::generate(),
            LocalJanusOptions::default(),
        )
        .unwrap();
        host.start().await.unwrap();
        Self { host, _dir: dir }
    }

    fn base(&self) -> String {
        self.host.backend_url()
    }

    fn settings(&self, request_timeout: Duration) -> JanusHostsSettings {
        let s = self.host.secrets();
        JanusHostsSettings {
            api_secret: Secret::new(&s.api_secret),
            admin_key: Some(Secret::new(&s.admin_key)),
            token_secret: Secret::new(&s.token_secret),
            token_algorithm: TokenAlgorithm::HmacSha1,
            connect_timeout: Duration::from_secs(2),
            request_timeout,
        }
    }

    fn hosts(&self) -> JanusHosts {
        JanusHosts::new(vec![JanusHosts::describe(&self.host)], self.settings(Duration::from_secs(5))).unwrap()
    }

    fn described(&self) -> JanusHost {
        JanusHosts::describe(&self.host)
    }

    fn client(&self) -> JanusClient {
        let s = self.host.secrets();
        JanusClient::new(JanusClientConfig {
            api_secret: Secret::new(&s.api_secret),
            admin_key: Some(Secret::new(&s.admin_key)),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        })
        .unwrap()
    }

    /// A session and VideoRoom handle opened with a client's core token, as a browser would.
    async fn as_client(&self, core_token: &str) -> Result<(suroga::janus::Session, suroga::janus::Handle), JanusError> {
        let session = self.client().session_with(&self.base(), Credential::Token(Secret::new(core_token))).await?;
        let handle = session.attach(VIDEOROOM).await?;
        Ok((session, handle))
    }

    /// Joins `room` as a publisher with a fresh client session holding `grant`'s tokens; the
    /// session stays open (and the participant in the room) while the returned session lives.
    async fn join(
        &self,
        grant: &suroga::fleet::JoinGrant,
        room: u64,
        pin: &str,
        display: &str,
    ) -> Result<(suroga::janus::Session, suroga::janus::Joined), JanusError> {
        let (session, handle) = self.as_client(&grant.token).await?;
        let joined =
            handle.join(&JoinRoom { room, display, pin: Some(pin), room_token: Some(&grant.room_token) }).await?;
        Ok((session, joined))
    }
}

/// A fresh session room's credentials.
fn session_room() -> SessionCredentials {
    SessionKey::from_root("test-root").credentials(Uuid::new_v4(), 0)
}

fn soon() -> chrono::DateTime<Utc> {
    Utc::now() + ChronoDuration::hours(1)
}

#[tokio::test]
async fn a_session_room_admits_its_pin_with_its_room_token_only() {
    let janus = TestJanus::start().await;
    let hosts = janus.hosts();
    let host = janus.described();
    let room = session_room();
    hosts.ensure_room(&host, &room_spec(&room)).await.unwrap();
    assert!(janus.client().room_exists(&janus.base(), room.room.get()).await.unwrap());
    let grant = hosts.grant(&host, room.room, soon());
    let r = room.room.get();

    janus.join(&grant, r, &room.pin, "alice").await.expect("pin and room token admit");
    let wrong_pin = janus.join(&grant, r, "not-the-pin", "mallory").await.unwrap_err();
    assert_eq!(wrong_pin.videoroom_code(), Some(videoroom_codes::UNAUTHORIZED), "{wrong_pin}");

    let (_s, handle) = janus.as_client(&grant.token).await.unwrap();
    let no_token =
        handle.join(&JoinRoom { room: r, display: "x", pin: Some(&room.pin), room_token: None }).await.unwrap_err();
    assert_eq!(no_token.videoroom_code(), Some(videoroom_codes::UNAUTHORIZED), "{no_token}");
    // The core token is not a room token.
    let core = handle
        .join(&JoinRoom { room: r, display: "x", pin: Some(&room.pin), room_token: Some(&grant.token) })
        .await
        .unwrap_err();
    assert_eq!(core.videoroom_code(), Some(videoroom_codes::UNAUTHORIZED), "{core}");
    // A room token of another session does not open this one.
    let other = session_room();
    hosts.ensure_room(&host, &room_spec(&other)).await.unwrap();
    let other_grant = hosts.grant(&host, other.room, soon());
    let foreign = handle
        .join(&JoinRoom { room: r, display: "x", pin: Some(&room.pin), room_token: Some(&other_grant.room_token) })
        .await
        .unwrap_err();
    assert_eq!(foreign.videoroom_code(), Some(videoroom_codes::UNAUTHORIZED), "{foreign}");
    // An expired room token neither.
    let expired = token::sign_room(
        &janus.host.secrets().token_secret,
        TokenAlgorithm::HmacSha1,
        Utc::now() - ChronoDuration::seconds(5),
        r,
    );
    let late = handle
        .join(&JoinRoom { room: r, display: "x", pin: Some(&room.pin), room_token: Some(&expired) })
        .await
        .unwrap_err();
    assert_eq!(late.videoroom_code(), Some(videoroom_codes::UNAUTHORIZED), "{late}");
}

#[tokio::test]
async fn a_subscriber_needs_the_room_token_and_the_pin() {
    let janus = TestJanus::start().await;
    let hosts = janus.hosts();
    let host = janus.described();
    let room = session_room();
    hosts.ensure_room(&host, &room_spec(&room)).await.unwrap();
    let grant = hosts.grant(&host, room.room, soon());
    let r = room.room.get();
    let (_alice, alice) = janus.join(&grant, r, &room.pin, "alice").await.unwrap();
    assert!(alice.private_id.is_some());

    // Janus checks the room token and the pin before it looks at the feed; the private_id
    // (`require_pvtid`) after it, so that check needs a publishing feed (the browser tests).
    let (_s, sub) = janus.as_client(&grant.token).await.unwrap();
    let tokenless = sub.subscribe(r, alice.id, alice.private_id, Some(&room.pin), None).await.unwrap_err();
    assert_eq!(tokenless.videoroom_code(), Some(videoroom_codes::UNAUTHORIZED), "{tokenless}");
    let pinless = sub.subscribe(r, alice.id, alice.private_id, None, Some(&grant.room_token)).await.unwrap_err();
    assert_eq!(pinless.videoroom_code(), Some(videoroom_codes::MISSING_ELEMENT), "{pinless}");
}

#[tokio::test]
async fn creating_an_existing_room_is_427_and_ensure_room_is_idempotent() {
    let janus = TestJanus::start().await;
    let client = janus.client();
    let room = session_room();
    client.create_room(&janus.base(), &room_spec(&room)).await.unwrap();
    let again = client.create_room(&janus.base(), &room_spec(&room)).await.unwrap_err();
    assert_eq!(again.videoroom_code(), Some(videoroom_codes::ROOM_EXISTS), "{again}");
    let hosts = janus.hosts();
    hosts.ensure_room(&janus.described(), &room_spec(&room)).await.unwrap();
    hosts.ensure_room(&janus.described(), &room_spec(&room)).await.unwrap();
}

#[tokio::test]
async fn a_destroyed_room_removes_its_participants_and_refuses_joins() {
    let janus = TestJanus::start().await;
    let hosts = janus.hosts();
    let host = janus.described();
    let room = session_room();
    hosts.ensure_room(&host, &room_spec(&room)).await.unwrap();
    let grant = hosts.grant(&host, room.room, soon());
    let (_alice, _) = janus.join(&grant, room.room.get(), &room.pin, "alice").await.unwrap();
    assert_eq!(hosts.participants_fresh(&host, room.room.get()).await.unwrap().len(), 1);

    hosts.destroy_room(&host, room.room.get(), &room.secret).await.unwrap();
    assert!(!janus.client().room_exists(&janus.base(), room.room.get()).await.unwrap());
    assert!(hosts.participants_fresh(&host, room.room.get()).await.unwrap().is_empty());
    let e = janus.join(&grant, room.room.get(), &room.pin, "late").await.unwrap_err();
    assert_eq!(e.videoroom_code(), Some(videoroom_codes::NO_SUCH_ROOM), "{e}");
    // Destroying it again (or any unknown room) is fine.
    hosts.destroy_room(&host, room.room.get(), &room.secret).await.unwrap();
}

#[tokio::test]
async fn destroying_with_a_wrong_secret_is_a_janus_refusal() {
    let janus = TestJanus::start().await;
    let hosts = janus.hosts();
    let room = session_room();
    hosts.ensure_room(&janus.described(), &room_spec(&room)).await.unwrap();
    let e = hosts.destroy_room(&janus.described(), room.room.get(), "wrong").await.unwrap_err();
    assert!(matches!(e, FleetError::Janus(_)), "{e:?}");
}

#[tokio::test]
async fn rooms_are_listed_with_the_admin_key_only() {
    let janus = TestJanus::start().await;
    let hosts = janus.hosts();
    let host = janus.described();
    let room = session_room();
    hosts.ensure_room(&host, &room_spec(&room)).await.unwrap();
    let grant = hosts.grant(&host, room.room, soon());
    let (_alice, _) = janus.join(&grant, room.room.get(), &room.pin, "alice").await.unwrap();

    let listed = hosts.rooms_on(&host).await.unwrap();
    let found = listed.iter().find(|r| r.room == room.room.get()).expect("the private session room is listed");
    assert_eq!(found.description, room.description);
    assert_eq!(found.num_participants, 1);
    // A participant's token lists nothing: every session room is private.
    let (_s, handle) = janus.as_client(&grant.token).await.unwrap();
    assert!(handle.list(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_joined_participant_is_listed_without_publishing() {
    let janus = TestJanus::start().await;
    let hosts = janus.hosts();
    let host = janus.described();
    let room = session_room();
    hosts.ensure_room(&host, &room_spec(&room)).await.unwrap();
    let grant = hosts.grant(&host, room.room, soon());
    let (_session, joined) = janus.join(&grant, room.room.get(), &room.pin, "alice").await.unwrap();

    let listed = hosts.participants_on(&host, room.room.get()).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, joined.id);
    assert_eq!(listed[0].display.as_deref(), Some("alice"));
    // Joined as a publisher but sent no media: Janus lists it as not (yet) publishing.
    assert!(!listed[0].publisher);
}

#[tokio::test]
async fn participants_are_reused_for_five_seconds_until_the_room_changes() {
    let janus = TestJanus::start().await;
    let hosts = janus.hosts();
    let host = janus.described();
    let room = session_room();
    hosts.ensure_room(&host, &room_spec(&room)).await.unwrap();
    let grant = hosts.grant(&host, room.room, soon());
    let r = room.room.get();
    let (_alice, _) = janus.join(&grant, r, &room.pin, "alice").await.unwrap();
    assert_eq!(hosts.participants_on(&host, r).await.unwrap().len(), 1);

    let (_bob, _) = janus.join(&grant, r, &room.pin, "bob").await.unwrap();
    // Within the cache window the earlier answer is reused...
    assert_eq!(hosts.participants_on(&host, r).await.unwrap().len(), 1);
    // ...and ensuring the room drops it.
    hosts.ensure_room(&host, &room_spec(&room)).await.unwrap();
    assert_eq!(hosts.participants_on(&host, r).await.unwrap().len(), 2);
}

#[tokio::test]
async fn an_unknown_room_has_no_participants() {
    let janus = TestJanus::start().await;
    let listed = janus.hosts().participants_on(&janus.described(), session_room().room.get()).await.unwrap();
    assert!(listed.is_empty());
}

#[tokio::test]
async fn a_core_token_opens_a_session_but_cannot_create_rooms() {
    let janus = TestJanus::start().await;
    let hosts = janus.hosts();
    let host = janus.described();
    let room = session_room();
    hosts.ensure_room(&host, &room_spec(&room)).await.unwrap();
    let grant = hosts.grant(&host, room.room, soon());
    assert_eq!(grant.http_url, janus.host.public_http_url());
    assert_eq!(grant.ws_url, janus.host.public_ws_url());

    let (_session, handle) = janus.as_client(&grant.token).await.unwrap();
    // `create` needs the admin_key (1.1.2 answers 429, not 433).
    let other = session_room();
    let e = handle.create(&room_spec(&other), None).await.unwrap_err();
    assert_eq!(e.videoroom_code(), Some(videoroom_codes::MISSING_ELEMENT), "{e}");
}

#[tokio::test]
async fn an_expired_token_is_refused_with_403() {
    let janus = TestJanus::start().await;
    let secret = &janus.host.secrets().token_secret;
    let expired = token::sign(secret, TokenAlgorithm::HmacSha1, Utc::now() - ChronoDuration::seconds(5), &[VIDEOROOM]);
    let e = janus.client().session_with(&janus.base(), Credential::Token(Secret::new(expired))).await.unwrap_err();
    assert_eq!(e.core_code(), Some(core_codes::UNAUTHORIZED), "{e}");
}

#[tokio::test]
async fn a_tampered_token_is_refused_with_403() {
    let janus = TestJanus::start().await;
    let secret = &janus.host.secrets().token_secret;
    let good = token::sign(secret, TokenAlgorithm::HmacSha1, Utc::now() + ChronoDuration::hours(1), &[VIDEOROOM]);
    // Extend the expiry without re-signing.
    let (expiry, rest) = good.split_once(',').unwrap();
    let tampered = format!("{}{rest}", expiry.parse::<i64>().unwrap() + 86_400);
    let e = janus.client().session_with(&janus.base(), Credential::Token(Secret::new(tampered))).await.unwrap_err();
    assert_eq!(e.core_code(), Some(core_codes::UNAUTHORIZED), "{e}");
}

#[tokio::test]
async fn a_sha256_token_is_refused_by_janus_1_1() {
    let janus = TestJanus::start().await;
    let secret = &janus.host.secrets().token_secret;
    let t = token::sign(secret, TokenAlgorithm::HmacSha256, Utc::now() + ChronoDuration::hours(1), &[VIDEOROOM]);
    let e = janus.client().session_with(&janus.base(), Credential::Token(Secret::new(t))).await.unwrap_err();
    assert_eq!(e.core_code(), Some(core_codes::UNAUTHORIZED), "{e}");
}

#[tokio::test]
async fn a_token_for_another_plugin_cannot_attach_the_videoroom() {
    let janus = TestJanus::start().await;
    let secret = &janus.host.secrets().token_secret;
    let t = token::sign(
        secret,
        TokenAlgorithm::HmacSha1,
        Utc::now() + ChronoDuration::hours(1),
        &["janus.plugin.echotest"],
    );
    let session = janus.client().session_with(&janus.base(), Credential::Token(Secret::new(t))).await.unwrap();
    let e = session.attach(VIDEOROOM).await.unwrap_err();
    assert_eq!(e.core_code(), Some(core_codes::UNAUTHORIZED_PLUGIN), "{e}");
}

#[tokio::test]
async fn a_stopped_janus_is_unavailable_at_once() {
    let mut janus = TestJanus::start().await;
    let hosts = janus.hosts();
    janus.host.stop().await.unwrap();
    assert!(!janus.host.is_running());

    let started = std::time::Instant::now();
    let e = hosts.ensure_room(&janus.described(), &room_spec(&session_room())).await.unwrap_err();
    assert!(matches!(e, FleetError::Unavailable(_)), "{e:?}");
    assert!(started.elapsed() < Duration::from_millis(500), "took {:?}", started.elapsed());
    assert_eq!(hosts.health().await[0].janus, "unavailable");
}

#[tokio::test]
async fn a_slow_janus_hits_the_request_timeout_and_is_unavailable() {
    let janus = TestJanus::start().await;
    let url = url::Url::parse(&janus.base()).unwrap();
    let target: SocketAddr = format!("127.0.0.1:{}", url.port().unwrap()).parse().unwrap();
    let proxy = delaying_proxy(target, Duration::from_secs(3)).await;
    let slow = JanusHost {
        name: "slow".into(),
        backend_url: format!("http://{proxy}/janus"),
        public_http_url: format!("http://{proxy}/janus"),
        public_ws_url: janus.host.public_ws_url(),
    };
    let limit = Duration::from_millis(300);
    let hosts = JanusHosts::new(vec![slow.clone()], janus.settings(limit)).unwrap();

    let started = std::time::Instant::now();
    let e = hosts.ensure_room(&slow, &room_spec(&session_room())).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, FleetError::Unavailable(_)), "{e:?}");
    assert!(took >= limit && took < limit * 3, "took {took:?}");
}

#[tokio::test]
async fn no_error_shows_the_api_secret_or_admin_key() {
    let mut janus = TestJanus::start().await;
    let secrets = janus.host.secrets().clone();
    let mut messages = vec![];

    // Wrong credentials: Janus's 403.
    let mut wrong = janus.settings(Duration::from_secs(5));
    wrong.api_secret = Secret::new(format!("{}-wrong", secrets.api_secret));
    let bad = JanusHosts::new(vec![JanusHosts::describe(&janus.host)], wrong).unwrap();
    let host = janus.described();
    messages.push(bad.ensure_room(&host, &room_spec(&session_room())).await.unwrap_err().to_string());
    // A VideoRoom refusal.
    let hosts = janus.hosts();
    let room = session_room();
    hosts.ensure_room(&host, &room_spec(&room)).await.unwrap();
    messages.push(hosts.destroy_room(&host, room.room.get(), "wrong-secret").await.unwrap_err().to_string());
    // A long poll carries the credential in its query string: its transport error must not.
    let session = janus.client().session(&janus.base()).await.unwrap();
    janus.host.stop().await.unwrap();
    messages.push(session.events(Duration::from_secs(1)).await.unwrap_err().to_string());
    messages.push(hosts.ensure_room(&host, &room_spec(&room)).await.unwrap_err().to_string());

    for m in &messages {
        assert!(!m.contains(&secrets.api_secret), "{m}");
        assert!(!m.contains(&secrets.admin_key), "{m}");
        assert!(!m.contains(&room.secret) && !m.contains(&room.pin), "{m}");
    }
    assert!(messages[0].contains("403"), "{}", messages[0]);
}

#[tokio::test]
async fn a_local_host_restarts_on_the_same_urls() {
    let mut janus = TestJanus::start().await;
    let hosts = janus.hosts();
    let url = janus.base();
    let started = std::time::Instant::now();
    janus.host.stop().await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "stop took {took:?}: {}",
        std::fs::read_to_string(janus.host.log_path()).unwrap()
    );
    assert_eq!(hosts.health().await[0].janus, "unavailable");
    let started = std::time::Instant::now();
    janus.host.start().await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "restart took {took:?}: {}",
        std::fs::read_to_string(janus.host.log_path()).unwrap()
    );
    assert_eq!(janus.base(), url);
    assert_eq!(hosts.health().await[0].janus, "ok");
    // A second start of a running host changes nothing.
    let pid = janus.host.pid();
    janus.host.start().await.unwrap();
    assert_eq!(janus.host.pid(), pid);
}

/// FLEET=local as the service builds it: `LocalPower` owns the processes, `JanusHosts` talks to them.
async fn start_local(config: &Config) -> (suroga::fleet::local::LocalPower, JanusHosts) {
    let (local, secrets) = suroga::fleet::local::LocalPower::from_config(config, LocalJanusOptions::default()).unwrap();
    local.start_all().await.unwrap();
    let mut hosts = Vec::new();
    for name in local.names() {
        let (http, ws) = local.urls(&name).await.unwrap();
        hosts.push(suroga::fleet::janus_hosts::JanusHost {
            name,
            backend_url: http.clone(),
            public_http_url: http,
            public_ws_url: ws,
        });
    }
    let janus = JanusHosts::for_local(config, hosts, &secrets).unwrap();
    (local, janus)
}

#[tokio::test]
async fn fleet_local_starts_janus_in_the_data_dir_and_keeps_its_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let env = HashMap::from([("SUROGA_DATA_DIR".to_string(), dir.path().to_str().unwrap().to_string())]);
    let config = Config::from_map(&env).unwrap();

    let (local, first) = start_local(&config).await;
    let folder = dir.path().join("janus").join("local-1");
    assert!(folder.join("janus.jcfg").exists());
    assert!(folder.join("plugins").join("libjanus_videoroom.so").exists());
    assert_eq!(first.health().await[0].janus, "ok");
    let room = session_room();
    let host = first.hosts()[0].clone();
    first.ensure_room(&host, &room_spec(&room)).await.unwrap();
    let secrets = std::fs::read(folder.join("secrets.json")).unwrap();
    local.stop_all().await;
    drop((local, first));

    let (local, second) = start_local(&config).await;
    assert_eq!(std::fs::read(folder.join("secrets.json")).unwrap(), secrets);
    // Rooms are not permanent: a restarted Janus has none, and ensure_room puts them back.
    assert!(!second.client().room_exists(&second.hosts()[0].backend_url, room.room.get()).await.unwrap());
    second.ensure_room(&second.hosts()[0].clone(), &room_spec(&room)).await.unwrap();
    local.stop_all().await;
}

/// A host whose chosen port is taken before Janus binds it: Janus itself runs on without that
/// listener, so the first start must notice and move the host to fresh ports.
#[tokio::test]
async fn a_first_start_whose_websocket_port_was_taken_moves_to_fresh_ports() {
    let dir = tempfile::tempdir().unwrap();
    let mut host =
        LocalJanusHost::new("test", dir.path().join("janus"), HostSecrets::generate(), LocalJanusOptions::default())
            .unwrap();
    let taken_ws = host.public_ws_url();
    let port: u16 = taken_ws.rsplit(':').next().unwrap().parse().unwrap();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let started = std::time::Instant::now();
    host.start().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "noticed at once, not at the 10 s deadline");
    assert_ne!(host.public_ws_url(), taken_ws);
    // The new WebSocket port is Janus's: it answers a WebSocket upgrade for Janus's protocol.
    let ws_port: u16 = host.public_ws_url().rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(websocket_upgrade_status(ws_port).await, 101);
    drop(squatter);
}

/// A restart keeps its published ports; when one was taken meanwhile it fails at once, naming
/// the port, instead of waiting out its deadline.
#[tokio::test]
async fn a_restart_whose_http_port_was_taken_fails_at_once_with_the_reason() {
    let mut janus = TestJanus::start().await;
    janus.host.stop().await.unwrap();
    let port: u16 = janus.base().trim_end_matches("/janus").rsplit(':').next().unwrap().parse().unwrap();
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let started = std::time::Instant::now();
    let err = janus.host.start().await.unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_secs(5), "failed at once: {err}");
    assert!(err.contains(&format!("Couldn't start webserver on port {port}")), "{err}");
    assert!(!janus.host.is_running());
}

/// The status of a WebSocket upgrade with Janus's subprotocol at `127.0.0.1:port`.
async fn websocket_upgrade_status(port: u16) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: janus-protocol\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

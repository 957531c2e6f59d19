//! The Janus side against a real Janus 1.1.2: each test starts its own private Janus on free
//! loopback ports through `LocalJanusHost` (killed when the test ends, also on panic).

use std::{collections::HashMap, net::SocketAddr, time::Duration};
#[path = "support/proxy.rs"]
mod proxy;
use proxy::delaying_proxy;

use chrono::{Duration as ChronoDuration, Utc};
use suroga::config::{Config, Secret};
use suroga::domain::{self, Booking, Room, RoomId, TimeSlot};
use suroga::fleet::janus_hosts::{JanusHost, JanusHosts, JanusHostsSettings};
use suroga::fleet::local::{HostSecrets, LocalJanusHost, LocalJanusOptions};
use suroga::fleet::{FleetError, RoomHosting};
use suroga::janus::token::{self, TokenAlgorithm};
use suroga::janus::{
    CreateRoom, Credential, EditRoom, JanusClient, JanusClientConfig, JanusError, VIDEOROOM, core_codes,
    videoroom_codes,
};
use tempfile::TempDir;

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

    /// Joins `room` as a fresh participant with the server credential; the session stays
    /// open (and the participant in the room) while the returned session lives in Janus.
    async fn join(&self, room: RoomId, pin: &str, display: &str) -> Result<(suroga::janus::Session, u64), JanusError> {
        let session = self.client().session(&self.base()).await?;
        let handle = session.attach(VIDEOROOM).await?;
        let joined = handle.join(room.get(), Some(pin), display).await?;
        Ok((session, joined.id))
    }
}

fn new_room() -> Room {
    let now = Utc::now();
    Room {
        id: RoomId::random(),
        name: Some("consultation".into()),
        password: domain::new_password(),
        admin_secret: domain::new_admin_secret(),
        max_participants: 2,
        metadata: Default::default(),
        created_at: now,
        updated_at: now,
    }
}

fn booking_of(room: &Room) -> Booking {
    let start = Utc::now() + ChronoDuration::minutes(5);
    Booking {
        id: uuid::Uuid::new_v4(),
        room_id: room.id,
        owner: "user-1".into(),
        slot: TimeSlot::new(start, start + ChronoDuration::minutes(30)).unwrap(),
        created_at: Utc::now(),
        cancelled_at: None,
        access: Default::default(),
    }
}

fn create_req(room: &Room) -> CreateRoom<'_> {
    CreateRoom {
        room: room.id.get(),
        description: "consultation",
        secret: &room.admin_secret,
        pin: &room.password,
        publishers: 2,
    }
}

#[tokio::test]
async fn a_created_room_exists_admits_its_pin_and_refuses_a_wrong_one() {
    let janus = TestJanus::start().await;
    let client = janus.client();
    let room = new_room();
    client.create_room(&janus.base(), &create_req(&room)).await.unwrap();
    assert!(client.room_exists(&janus.base(), room.id.get()).await.unwrap());

    janus.join(room.id, &room.password, "alice").await.unwrap();
    let refused = janus.join(room.id, "not-the-pin", "mallory").await.unwrap_err();
    assert_eq!(refused.videoroom_code(), Some(videoroom_codes::UNAUTHORIZED), "{refused}");
}

#[tokio::test]
async fn creating_an_existing_room_is_427() {
    let janus = TestJanus::start().await;
    let client = janus.client();
    let room = new_room();
    client.create_room(&janus.base(), &create_req(&room)).await.unwrap();
    let again = client.create_room(&janus.base(), &create_req(&room)).await.unwrap_err();
    assert_eq!(again.videoroom_code(), Some(videoroom_codes::ROOM_EXISTS), "{again}");
}

#[tokio::test]
async fn editing_the_pin_refuses_the_old_pin_and_admits_the_new_one() {
    let janus = TestJanus::start().await;
    let client = janus.client();
    let room = new_room();
    client.create_room(&janus.base(), &create_req(&room)).await.unwrap();
    let new_pin = domain::new_password();
    let edit = EditRoom {
        room: room.id.get(),
        secret: &room.admin_secret,
        new_pin: Some(&new_pin),
        new_description: None,
        new_publishers: None,
    };
    client.edit_room(&janus.base(), &edit).await.unwrap();

    let old = janus.join(room.id, &room.password, "old").await.unwrap_err();
    assert_eq!(old.videoroom_code(), Some(videoroom_codes::UNAUTHORIZED), "{old}");
    janus.join(room.id, &new_pin, "new").await.unwrap();
}

#[tokio::test]
async fn editing_with_a_wrong_room_secret_is_433() {
    let janus = TestJanus::start().await;
    let client = janus.client();
    let room = new_room();
    client.create_room(&janus.base(), &create_req(&room)).await.unwrap();
    let edit = EditRoom {
        room: room.id.get(),
        secret: "wrong",
        new_pin: Some("x"),
        new_description: None,
        new_publishers: None,
    };
    let e = client.edit_room(&janus.base(), &edit).await.unwrap_err();
    assert_eq!(e.videoroom_code(), Some(videoroom_codes::UNAUTHORIZED), "{e}");
}

#[tokio::test]
async fn a_destroyed_room_no_longer_exists_and_refuses_joins() {
    let janus = TestJanus::start().await;
    let hosts = janus.hosts();
    let room = new_room();
    hosts.materialize(&room).await.unwrap();
    hosts.destroy(&room).await.unwrap();
    assert!(!janus.client().room_exists(&janus.base(), room.id.get()).await.unwrap());
    let e = janus.join(room.id, &room.password, "late").await.unwrap_err();
    assert_eq!(e.videoroom_code(), Some(videoroom_codes::NO_SUCH_ROOM), "{e}");
}

#[tokio::test]
async fn destroying_an_unknown_room_is_ok() {
    let janus = TestJanus::start().await;
    let hosts = janus.hosts();
    hosts.destroy(&new_room()).await.unwrap();
}

#[tokio::test]
async fn materialize_twice_is_harmless() {
    let janus = TestJanus::start().await;
    let hosts = janus.hosts();
    let room = new_room();
    hosts.materialize(&room).await.unwrap();
    hosts.materialize(&room).await.unwrap();
    assert!(janus.client().room_exists(&janus.base(), room.id.get()).await.unwrap());
    janus.join(room.id, &room.password, "alice").await.unwrap();
}

#[tokio::test]
async fn materialize_after_a_password_change_edits_the_pin() {
    let janus = TestJanus::start().await;
    let hosts = janus.hosts();
    let mut room = new_room();
    hosts.materialize(&room).await.unwrap();
    let old_pin = std::mem::replace(&mut room.password, domain::new_password());
    hosts.materialize(&room).await.unwrap();

    let old = janus.join(room.id, &old_pin, "old").await.unwrap_err();
    assert_eq!(old.videoroom_code(), Some(videoroom_codes::UNAUTHORIZED), "{old}");
    janus.join(room.id, &room.password, "new").await.unwrap();
}

#[tokio::test]
async fn materialize_of_a_room_held_with_another_secret_is_a_janus_refusal() {
    let janus = TestJanus::start().await;
    let hosts = janus.hosts();
    let room = new_room();
    hosts.materialize(&room).await.unwrap();
    let impostor = Room { admin_secret: domain::new_admin_secret(), ..room.clone() };
    let e = hosts.materialize(&impostor).await.unwrap_err();
    assert!(matches!(e, FleetError::Janus(_)), "{e:?}");
}

#[tokio::test]
async fn a_joined_participant_is_listed_without_publishing() {
    let janus = TestJanus::start().await;
    let hosts = janus.hosts();
    let room = new_room();
    hosts.materialize(&room).await.unwrap();
    let (_session, id) = janus.join(room.id, &room.password, "alice").await.unwrap();

    let listed = hosts.participants(&room).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].display.as_deref(), Some("alice"));
    // Joined as a publisher but sent no media: Janus lists it as not (yet) publishing.
    assert!(!listed[0].publisher);
}

#[tokio::test]
async fn participants_are_reused_for_five_seconds_until_the_room_changes() {
    let janus = TestJanus::start().await;
    let hosts = janus.hosts();
    let room = new_room();
    hosts.materialize(&room).await.unwrap();
    let (_alice, _) = janus.join(room.id, &room.password, "alice").await.unwrap();
    assert_eq!(hosts.participants(&room).await.unwrap().len(), 1);

    let (_bob, _) = janus.join(room.id, &room.password, "bob").await.unwrap();
    // Within the cache window the earlier answer is reused...
    assert_eq!(hosts.participants(&room).await.unwrap().len(), 1);
    // ...and materializing the room drops it.
    hosts.materialize(&room).await.unwrap();
    assert_eq!(hosts.participants(&room).await.unwrap().len(), 2);
}

#[tokio::test]
async fn participants_of_an_unknown_room_is_a_janus_refusal() {
    let janus = TestJanus::start().await;
    let e = janus.hosts().participants(&new_room()).await.unwrap_err();
    assert!(matches!(e, FleetError::Janus(_)), "{e:?}");
}

#[tokio::test]
async fn a_join_token_opens_a_session_and_attaches_the_videoroom() {
    let janus = TestJanus::start().await;
    let hosts = janus.hosts();
    let room = new_room();
    hosts.materialize(&room).await.unwrap();
    let grant = hosts.join(&room, &booking_of(&room), Utc::now() + ChronoDuration::hours(1)).await.unwrap();
    assert_eq!(grant.http_url, janus.host.public_http_url());
    assert_eq!(grant.ws_url, janus.host.public_ws_url());

    let session =
        janus.client().session_with(&grant.http_url, Credential::Token(Secret::new(&grant.token))).await.unwrap();
    let handle = session.attach(VIDEOROOM).await.unwrap();
    // The token holder joins with the room's pin like any participant...
    handle.join(room.id.get(), Some(&room.password), "owner").await.unwrap();
    // ...but cannot create rooms: `create` needs the admin_key (1.1.2 answers 429, not 433).
    let other = new_room();
    let e = handle.create(&create_req(&other), None).await.unwrap_err();
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
    let e = hosts.materialize(&new_room()).await.unwrap_err();
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
    let hosts = JanusHosts::new(vec![slow], janus.settings(limit)).unwrap();

    let started = std::time::Instant::now();
    let e = hosts.materialize(&new_room()).await.unwrap_err();
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
    messages.push(bad.materialize(&new_room()).await.unwrap_err().to_string());
    // A VideoRoom refusal.
    let hosts = janus.hosts();
    let room = new_room();
    hosts.materialize(&room).await.unwrap();
    let impostor = Room { admin_secret: domain::new_admin_secret(), ..room.clone() };
    messages.push(hosts.materialize(&impostor).await.unwrap_err().to_string());
    // A long poll carries the credential in its query string: its transport error must not.
    let session = janus.client().session(&janus.base()).await.unwrap();
    janus.host.stop().await.unwrap();
    messages.push(session.events(Duration::from_secs(1)).await.unwrap_err().to_string());
    messages.push(hosts.materialize(&room).await.unwrap_err().to_string());

    for m in &messages {
        assert!(!m.contains(&secrets.api_secret), "{m}");
        assert!(!m.contains(&secrets.admin_key), "{m}");
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
    let room = new_room();
    first.materialize(&room).await.unwrap();
    let secrets = std::fs::read(folder.join("secrets.json")).unwrap();
    local.stop_all().await;
    drop((local, first));

    let (local, second) = start_local(&config).await;
    assert_eq!(std::fs::read(folder.join("secrets.json")).unwrap(), secrets);
    // Rooms are not permanent: a restarted Janus has none, and materialize puts them back.
    assert!(!second.client().room_exists(&second.hosts()[0].backend_url, room.id.get()).await.unwrap());
    second.materialize(&room).await.unwrap();
    local.stop_all().await;
}

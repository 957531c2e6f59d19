//! Spawns the service in-process on 127.0.0.1:0 with a real SQLite store in a fresh folder, a real
//! local Janus host, and a manual clock, and gives typed helpers to call it over HTTP.
#![allow(dead_code)]

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use chrono::{DateTime, Duration, DurationRound, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use suroga::{
    app,
    clock::ManualClock,
    config::{Config, Secret},
    fleet::{
        local::{HostSecrets, LocalJanusHost, LocalJanusOptions},
        power::PowerControl,
    },
};
use uuid::Uuid;

pub const SECRET: &str = "test-secret-for-hs256-tokens-0123456789";

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub clock: ManualClock,
    pub app: app::App,
    pub data_dir: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

/// A fresh data folder under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("suroga-test-{tag}-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The settings of an always-on fleet (`FLEET=static`) over `hosts` (a `JANUS_HOSTS` value) whose
/// Janus servers share `secrets`.
pub fn static_fleet(env: &mut HashMap<String, String>, hosts: &Value, secrets: &HostSecrets) {
    env.insert("FLEET".into(), "static".into());
    env.insert("JANUS_HOSTS".into(), hosts.to_string());
    env.insert("JANUS_API_SECRET".into(), secrets.api_secret.clone());
    env.insert("JANUS_ADMIN_KEY".into(), secrets.admin_key.clone());
    env.insert("JANUS_TOKEN_SECRET".into(), secrets.token_secret.clone());
    env.insert("JANUS_EVENTS_SECRET".into(), secrets.events_secret.clone());
}

/// An app over one always-on host, `own`: a Janus the test owns (started with `options`), so it
/// can stop it or read what it posts behind the service's back. Returns the test's folder too.
pub async fn over_own_janus(tag: &str, options: LocalJanusOptions) -> (TestApp, LocalJanusHost, PathBuf) {
    let dir = temp_dir(tag);
    let secrets = HostSecrets::generate();
    let mut janus = LocalJanusHost::new("own", dir.join("janus"), secrets.clone(), options).unwrap();
    janus.start().await.unwrap();
    let hosts = json!([{"name": "own", "backend_url": janus.backend_url(),
        "public_http_url": janus.public_http_url(), "public_ws_url": janus.public_ws_url()}]);
    let app = TestApp::spawn_with(|env| static_fleet(env, &hosts, &secrets)).await;
    (app, janus, dir)
}

/// Settings for a test instance: local store and Janus in a fresh folder, a fixed token secret.
pub fn test_env(data_dir: &std::path::Path) -> HashMap<String, String> {
    HashMap::from([
        ("SUROGA_DATA_DIR".into(), data_dir.display().to_string()),
        ("AUTH_HS256_SECRET".into(), SECRET.into()),
        ("SUROGA_ADDR".into(), "127.0.0.1:0".into()),
    ])
}

/// Now, rounded to the minute: tests place bookings relative to it.
pub fn base_now() -> DateTime<Utc> {
    Utc::now().duration_trunc(Duration::minutes(1)).unwrap()
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Spawns with another store backend (e.g. Cosmos on the emulator) instead of SQLite.
    pub async fn spawn_with_store(store: Arc<dyn suroga::store::Store>) -> Self {
        Self::spawn_with_store_and(store, |_| {}).await
    }

    /// Spawns on another store backend with extra settings applied to the environment map.
    pub async fn spawn_with_store_and(
        store: Arc<dyn suroga::store::Store>,
        f: impl FnOnce(&mut HashMap<String, String>),
    ) -> Self {
        Self::spawn_inner(f, Some(store), |p| p, None).await
    }

    /// Spawns with extra settings applied to the environment map.
    pub async fn spawn_with(f: impl FnOnce(&mut HashMap<String, String>)) -> Self {
        Self::spawn_inner(f, None, |p| p, None).await
    }

    /// Spawns on a clock the test made (shared with fakes that must read the same time).
    pub async fn spawn_with_clock(clock: ManualClock, f: impl FnOnce(&mut HashMap<String, String>)) -> Self {
        Self::spawn_inner(f, None, |p| p, Some(clock)).await
    }

    /// Spawns with extra settings and the power backend passed through `wrap_power`.
    pub async fn spawn_wrapping(
        f: impl FnOnce(&mut HashMap<String, String>),
        wrap_power: impl FnOnce(Arc<dyn PowerControl>) -> Arc<dyn PowerControl>,
    ) -> Self {
        Self::spawn_inner(f, None, wrap_power, None).await
    }

    async fn spawn_inner(
        f: impl FnOnce(&mut HashMap<String, String>),
        store: Option<Arc<dyn suroga::store::Store>>,
        wrap_power: impl FnOnce(Arc<dyn PowerControl>) -> Arc<dyn PowerControl>,
        clock: Option<ManualClock>,
    ) -> Self {
        let data_dir = temp_dir("app");
        let mut env = test_env(&data_dir);
        f(&mut env);
        let mut config = Config::from_map(&env).expect("test config");
        // Bound first, so local Janus hosts post their events to this app.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        config.addr = listener.local_addr().unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let clock = clock.unwrap_or_else(|| ManualClock::new(base_now()));
        let app = match store {
            Some(store) => app::build_on(&config, Arc::new(clock.clone()), store, wrap_power).await,
            None => app::build_with(&config, Arc::new(clock.clone()), wrap_power).await,
        }
        .expect("app builds");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let router = app.router();
        tokio::spawn(async move {
            app::run(listener, router, async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        TestApp { base, http: reqwest::Client::new(), clock, app, data_dir, shutdown: Some(tx) }
    }

    pub fn now(&self) -> DateTime<Utc> {
        use suroga::clock::Clock;
        self.clock.now()
    }

    pub fn token(&self, sub: &str, admin: bool) -> String {
        suroga::auth::mint_dev_token(&Secret::new(SECRET), sub, admin, "admin", Duration::hours(1), Utc::now())
    }

    /// A user's token with a `name` claim (the display name the other participant sees).
    pub fn named_token(&self, sub: &str, name: &str) -> String {
        suroga::auth::mint_named_dev_token(
            &Secret::new(SECRET),
            sub,
            Some(name),
            false,
            "admin",
            Duration::hours(1),
            Utc::now(),
        )
    }

    /// Sends a request as `user` (None: no Authorization header) and returns status and JSON body
    /// (Null when the body is empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        user: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(u) = user {
            let admin = u.starts_with("admin");
            req = req.bearer_auth(self.token(u, admin));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let text = res.text().await.unwrap();
        let v = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, v)
    }

    pub async fn get(&self, path: &str, user: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(user), None).await
    }
    pub async fn post(&self, path: &str, user: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(user), Some(body)).await
    }
    pub async fn delete(&self, path: &str, user: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Some(user), None).await
    }

    /// Books `[now + start_min, now + end_min)` minutes, optionally in a given room; asserts 201.
    pub async fn book(&self, user: &str, start_min: i64, end_min: i64, room: Option<u64>) -> Value {
        let (st, b) = self.post("/api/v1/bookings", user, self.slot_body(start_min, end_min, room)).await;
        assert_eq!(st, StatusCode::CREATED, "booking failed: {b}");
        b
    }

    pub fn slot_body(&self, start_min: i64, end_min: i64, room: Option<u64>) -> Value {
        let now = self.now();
        let mut v = json!({
            "start_time": (now + Duration::minutes(start_min)).to_rfc3339(),
            "end_time": (now + Duration::minutes(end_min)).to_rfc3339(),
        });
        if let Some(r) = room {
            v["room_id"] = json!(r);
        }
        v
    }

    pub async fn create_room(&self, user: &str) -> Value {
        let (st, r) = self.post("/api/v1/rooms", user, json!({})).await;
        assert_eq!(st, StatusCode::CREATED, "room creation failed: {r}");
        r
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

pub fn user() -> String {
    format!("user-{}", Uuid::new_v4())
}

pub fn admin() -> String {
    format!("admin-{}", Uuid::new_v4())
}

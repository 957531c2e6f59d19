//! The whole API through the emulated Azure Functions host: the real `suroga` binary started with
//! the settings of local.settings.json.example, requests routed only through `handlers/`, in both
//! of the host's HTTP modes (forwarding, as older hosts do; proxying, as current hosts do with our
//! host.json).

#[path = "support/functions_host.rs"]
mod functions_host;

use chrono::{Duration, Utc};
use functions_host::{FunctionsHost, HttpMode};
use reqwest::StatusCode;
use serde_json::{Value, json};
use suroga::config::Secret;

struct Client {
    http: reqwest::Client,
    base: String,
    secret: Secret,
}

impl Client {
    fn new(host: &FunctionsHost) -> Self {
        // The settings file leaves the secret empty: the app generated one into its data folder.
        let data_dir = host.setting("SUROGA_DATA_DIR").expect("the host sets the data folder");
        let secret = suroga::auth::load_or_create_dev_secret(std::path::Path::new(&data_dir))
            .expect("the app generated its local token secret");
        Self { http: reqwest::Client::new(), base: host.url(), secret }
    }
    fn token(&self, sub: &str, admin: bool) -> String {
        suroga::auth::mint_dev_token(&self.secret, sub, admin, "admin", Duration::hours(1), Utc::now())
    }
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        as_user: Option<(&str, bool)>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some((u, admin)) = as_user {
            req = req.bearer_auth(self.token(u, admin));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let st = res.status();
        let text = res.text().await.unwrap();
        (st, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
    /// A POST with `Content-Type: application/json` and no body, as `curl -X POST -H ...` sends it.
    async fn post_bare(&self, path: &str, as_user: (&str, bool)) -> (StatusCode, Value) {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.token(as_user.0, as_user.1))
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        let st = res.status();
        let text = res.text().await.unwrap();
        (st, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

#[tokio::test]
async fn the_whole_api_works_through_a_forwarding_host() {
    the_whole_api_works_through_the_functions_host(HttpMode::Forwarding).await;
}

#[tokio::test]
async fn the_whole_api_works_through_a_proxying_host() {
    the_whole_api_works_through_the_functions_host(HttpMode::Proxying).await;
}

async fn the_whole_api_works_through_the_functions_host(mode: HttpMode) {
    let host = FunctionsHost::start_in(Some(mode), &[]).await;
    assert_eq!(host.mode(), mode);
    let c = Client::new(&host);
    use reqwest::Method as M;

    let (st, h) = c.call(M::GET, "/api/v1/health", None, None).await;
    assert_eq!(st, StatusCode::OK, "{h}");
    assert_eq!(h["database"], "ok");
    assert_eq!(c.call(M::GET, "/api/v1/openapi.json", None, None).await.0, StatusCode::OK);
    assert_eq!(c.call(M::GET, "/api/docs", None, None).await.0, StatusCode::OK);
    assert_eq!(c.call(M::GET, "/api/v1/rooms", None, None).await.0, StatusCode::UNAUTHORIZED);

    let alice = ("alice", false);
    let admin = ("root", true);
    let (st, room) =
        c.call(M::POST, "/api/v1/rooms", Some(alice), Some(json!({"max_participants": 2, "optional_name": "A"}))).await;
    assert_eq!(st, StatusCode::CREATED, "{room}");
    let rid = room["room_id"].as_u64().unwrap();
    assert_eq!(c.call(M::GET, &format!("/api/v1/rooms/{rid}"), Some(alice), None).await.0, StatusCode::OK);
    assert_eq!(
        c.call(M::GET, "/api/v1/rooms?max_participants=2", Some(alice), None).await.1.as_array().unwrap().len(),
        1
    );

    let start = Utc::now() + Duration::minutes(10);
    let slot = json!({"start_time": start.to_rfc3339(), "end_time": (start + Duration::hours(1)).to_rfc3339(), "room_id": rid});
    let (st, b) = c.call(M::POST, "/api/v1/bookings", Some(alice), Some(slot.clone())).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    assert_eq!(c.call(M::POST, "/api/v1/bookings", Some(("bob", false)), Some(slot)).await.0, StatusCode::CONFLICT);
    let bid = b["booking_id"].as_str().unwrap();
    let (st, any) = c
        .call(
            M::POST,
            "/api/v1/bookings",
            Some(("bob", false)),
            Some(json!({"start_time": start.to_rfc3339(), "end_time": (start + Duration::hours(1)).to_rfc3339()})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{any}");
    assert_ne!(any["room_id"], json!(rid));

    let q = format!(
        "/api/v1/rooms/availability?start_time={}&end_time={}",
        urlencode(&start.to_rfc3339()),
        urlencode(&(start + Duration::hours(1)).to_rfc3339())
    );
    let (st, avail) = c.call(M::GET, &q, Some(alice), None).await;
    assert_eq!(st, StatusCode::OK, "{avail}");
    assert_eq!(avail, json!({"available_rooms": []}));

    assert_eq!(
        c.call(M::GET, "/api/v1/bookings?status=upcoming", Some(alice), None).await.1.as_array().unwrap().len(),
        1
    );
    let (st, mine) = c.call(M::GET, &format!("/api/v1/bookings/{bid}"), Some(alice), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(mine["password"], b["password"], "the booking's pin, inside the reveal window");
    let (st, join) = c.call(M::GET, &format!("/api/v1/bookings/{bid}/join"), Some(alice), None).await;
    assert_eq!(st, StatusCode::OK, "{join}");
    assert_eq!(c.call(M::GET, &format!("/api/v1/rooms/{rid}/participants"), Some(admin), None).await.0, StatusCode::OK);
    assert_eq!(
        c.call(M::GET, &format!("/api/v1/bookings/{bid}/participants"), Some(alice), None).await.0,
        StatusCode::OK
    );
    // The guest's way in, with no token.
    let (st, inv) = c.call(M::POST, &format!("/api/v1/bookings/{bid}/invitation"), Some(alice), None).await;
    assert_eq!(st, StatusCode::CREATED, "{inv}");
    let code = inv["code"].as_str().unwrap().to_string();
    let code = code.as_str();
    assert_eq!(
        c.call(M::GET, &format!("/api/v1/bookings/{bid}/invitation"), Some(alice), None).await.0,
        StatusCode::OK
    );
    let (st, landing) = c.call(M::GET, &format!("/api/v1/invitations/{code}"), None, None).await;
    assert_eq!(st, StatusCode::OK, "{landing}");
    let (st, guest) =
        c.call(M::POST, &format!("/api/v1/invitations/{code}/join"), None, Some(json!({"display_name": "Bea"}))).await;
    assert_eq!(st, StatusCode::OK, "{guest}");
    assert_eq!((guest["room_id"].clone(), guest["role"].clone()), (join["room_id"].clone(), json!("guest")));
    assert_eq!(
        c.call(M::DELETE, &format!("/api/v1/bookings/{bid}/invitation"), Some(alice), None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.call(M::POST, &format!("/api/v1/rooms/{rid}/password/reset"), Some(admin), None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        c.call(M::POST, &format!("/api/v1/bookings/{bid}/cancel"), Some(alice), None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.call(
            M::DELETE,
            &format!("/api/v1/bookings/{}", any["booking_id"].as_str().unwrap()),
            Some(("bob", false)),
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(c.call(M::DELETE, &format!("/api/v1/rooms/{rid}"), Some(admin), None).await.0, StatusCode::NO_CONTENT);

    // Client mistakes stay 4xx through the host.
    assert_eq!(c.call(M::GET, "/api/v1/rooms/abc", Some(alice), None).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(
        c.call(M::POST, "/api/v1/bookings", Some(alice), Some(json!({"start_time": "x"}))).await.0,
        StatusCode::BAD_REQUEST
    );
    let (st, none) = c.post_bare("/api/v1/bookings", alice).await;
    assert_eq!((st, &none["detail"]), (StatusCode::BAD_REQUEST, &json!("a JSON body is required")));

    // Manual overrides with a bare Content-Type and no body: a proxying host keeps that header,
    // and the override still takes its defaults. While the host is off, /join answers 503: a
    // warning, which goes to stderr.
    let soon = Utc::now() + Duration::minutes(10);
    let (st, b) = c
        .call(
            M::POST,
            "/api/v1/bookings",
            Some(alice),
            Some(json!({"start_time": soon.to_rfc3339(), "end_time": (soon + Duration::hours(1)).to_rfc3339()})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let waiting = b["booking_id"].as_str().unwrap();
    let (st, r) = c.post_bare("/api/v1/hosts/local-1/deallocate", admin).await;
    assert_eq!(st, StatusCode::OK, "deallocate with a bare Content-Type: {r}");
    let (st, r) = c.call(M::GET, &format!("/api/v1/bookings/{waiting}/join"), Some(alice), None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{r}");
    let (st, r) = c.post_bare("/api/v1/hosts/local-1/start", admin).await;
    assert_eq!(st, StatusCode::OK, "start with a bare Content-Type: {r}");
    assert_eq!(r["result"], "ok");

    // Logs: one JSON object per line; warnings and errors on stderr, the rest on stdout; nothing
    // the host would log as an error; no Janus secret anywhere.
    let level = |line: &str, stream: &str| -> String {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{stream} line is not JSON ({e}): {line}"));
        v["level"].as_str().unwrap_or_else(|| panic!("{stream} line without a level: {line}")).to_string()
    };
    let out = host.stdout_lines();
    assert!(!out.is_empty());
    for line in &out {
        assert!(["INFO", "DEBUG", "TRACE"].contains(&level(line, "stdout").as_str()), "on stdout: {line}");
    }
    let err = host.stderr_lines();
    for line in &err {
        assert!(["WARN", "ERROR"].contains(&level(line, "stderr").as_str()), "on stderr: {line}");
    }
    assert!(
        err.iter().any(|l| l.contains(r#""status":503"#) && l.contains(&format!("/bookings/{waiting}/join"))),
        "the 503 is a warning on stderr: {err:?}"
    );
    assert!(host.error_lines().is_empty(), "stderr: {:?}", host.error_lines());
    let data_dir = host.setting("SUROGA_DATA_DIR").unwrap().to_string();
    let secrets: Value =
        serde_json::from_slice(&std::fs::read(format!("{data_dir}/janus/local-1/secrets.json")).unwrap()).unwrap();
    let all = out.join("\n") + &err.join("\n") + &join.to_string();
    for k in ["api_secret", "admin_key", "token_secret", "admin_secret"] {
        let s = secrets[k].as_str().unwrap();
        assert!(!all.contains(s), "{k} leaked into logs or answers");
    }
    // Neither the invitation code (it is in request paths) nor the session room's secret.
    let logs = out.join("\n") + &err.join("\n");
    assert!(!logs.contains(code), "the invitation code leaked into the logs");
    let room_secret = suroga::sessions::SessionKey::from_root(secrets["api_secret"].as_str().unwrap())
        .credentials(bid.parse().unwrap(), 0)
        .secret;
    assert!(!all.contains(&room_secret), "a room secret leaked into logs or answers");
}

#[tokio::test]
async fn every_route_in_the_openapi_document_is_declared_to_the_host() {
    let host = FunctionsHost::start(&[]).await;
    let doc = suroga::api::openapi();
    for (path, item) in doc.paths.paths.iter() {
        let concrete =
            path.replace("{room_id}", "12345").replace("{booking_id}", "5c1f0d4e-2f4a-4b7e-9a51-3d7f8c1e2b90");
        for method in ["get", "post", "delete"] {
            let declared = match method {
                "get" => item.get.is_some(),
                "post" => item.post.is_some(),
                _ => item.delete.is_some(),
            };
            if !declared {
                // The host may still route it to a parameterised function of the same shape
                // (as ASP.NET routing does); the API then answers 405 itself.
                continue;
            }
            let m = axum::http::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let routed = host.app().route(&m, &concrete);
            assert!(routed.is_some(), "{method} {path} is not declared in handlers/");
        }
    }
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

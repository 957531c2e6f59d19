//! The Azure Functions host contract, through the host emulator in `support/functions_host.rs`.
//!
//! - The harness itself (routing by function.json, the host's 404, query re-encoding, headers,
//!   bodies, readiness, timer envelopes) is tested against a fake custom handler: this test
//!   binary re-executed as `fake_custom_handler`, started by the emulator exactly as it starts
//!   `suroga`.
//! - `handlers/` must equal what `suroga functions export` generates (drift test).
//! - The real binary under the host: `real_binary_*` (enabled once `suroga serve` exists).

#[path = "support/functions_host.rs"]
mod functions_host;

use std::{collections::BTreeMap, path::Path, time::Duration};

use axum::{
    Router,
    body::Bytes,
    extract::Request,
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use functions_host::*;
use serde_json::{Value, json};
use suroga::functions::{TimerInvocation, timer_error_reply, timer_reply};
use utoipa::openapi::{
    OpenApi, OpenApiBuilder,
    path::{HttpMethod, OperationBuilder, PathItem, PathsBuilder},
};

/// The API's OpenAPI document, from which `handlers/` is generated.
// Placeholder until the API exists: replace the body with `suroga::api::openapi()`, then run
// `suroga functions export` (or this test with SUROGA_UPDATE_HANDLERS=1) to regenerate handlers/.
fn api_document() -> OpenApi {
    suroga::api::openapi()
}

// ---------------------------------------------------------------------------------------------
// The fake custom handler: this test binary, re-executed by the emulator.

const FAKE_ENV: &str = "FAKE_CUSTOM_HANDLER";

#[tokio::test]
#[ignore = "not a test: the fake custom handler process the harness tests start"]
async fn fake_custom_handler() {
    let Ok(mode) = std::env::var(FAKE_ENV) else {
        return;
    };
    match mode.as_str() {
        "exit" => {
            eprintln!("boom: cannot start");
            std::process::exit(3);
        }
        "silent" => std::future::pending::<()>().await,
        _ => {}
    }
    eprintln!("warning: fake handler starting (the host logs this line as a warning, not an error)");
    let port = std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT").expect("the host sets FUNCTIONS_CUSTOMHANDLER_PORT");
    let app = Router::new()
        // Not found on purpose: any HTTP answer means ready.
        .route("/", get(|| async { StatusCode::NOT_FOUND }))
        .route("/fleet-reconcile", post(describe_timer))
        .route("/purge-keys", post(describe_timer))
        .route("/empty-timer", post(|| async { StatusCode::OK }))
        .route(
            "/failing-timer",
            post(|| async { timer_error_reply(vec!["scanned 1".into()], &std::io::Error::other("janus unreachable")) }),
        )
        .fallback(echo);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>().unwrap())).await.unwrap();
    axum::serve(listener, app).await.unwrap();
}

async fn describe_timer(inv: TimerInvocation) -> Response {
    timer_reply(vec![format!(
        "method={} first_run={} past_due={} monitor={}",
        inv.method_name().unwrap_or("?"),
        inv.last_run().is_none(),
        inv.is_past_due(),
        inv.next_run().is_some()
    )])
}

/// Echoes what arrived; `?status=N` sets the reply status.
async fn echo(req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let mut headers = BTreeMap::<String, Vec<String>>::new();
    for (k, v) in &parts.headers {
        headers.entry(k.to_string()).or_default().push(v.to_str().unwrap_or("?").to_string());
    }
    let env: BTreeMap<&str, Option<String>> =
        ["FUNCTIONS_WORKER_RUNTIME", "STORE", "SUROGA_DATA_DIR", "FUNCTIONS_CUSTOMHANDLER_PORT", "AzureWebJobsStorage"]
            .into_iter()
            .map(|k| (k, std::env::var(k).ok()))
            .collect();
    let echo = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "argv": std::env::args().collect::<Vec<_>>(),
        "env": env,
    });
    println!(
        "{}",
        json!({"level": "INFO", "message": "request", "method": parts.method.as_str(), "path": parts.uri.path()})
    );
    let status = parts
        .uri
        .query()
        .and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "status").map(|(_, v)| v.into_owned())
        })
        .and_then(|s| s.parse::<u16>().ok())
        .map(|s| StatusCode::from_u16(s).unwrap())
        .unwrap_or(StatusCode::OK);
    let mut h = HeaderMap::new();
    h.insert("x-handler", "echo".parse().unwrap());
    h.insert("location", "/api/v1/rooms".parse().unwrap());
    (status, h, axum::Json(echo)).into_response()
}

fn test_api() -> OpenApi {
    let op = || OperationBuilder::new().build();
    let paths = PathsBuilder::new()
        .path("/api/v1/rooms/{room_id}", PathItem::new(HttpMethod::Get, op()))
        .path("/api/v1/rooms/{room_id}", PathItem::new(HttpMethod::Delete, op()))
        .path("/api/v1/rooms", PathItem::new(HttpMethod::Get, op()))
        .path("/api/v1/rooms", PathItem::new(HttpMethod::Post, op()))
        .build();
    OpenApiBuilder::new().paths(paths).build()
}

/// A function app whose handler is the fake: function folders generated by
/// `suroga::functions::export`, two extra test timers, and host.json with the repo's settings but
/// arguments that run `fake_custom_handler` (with a `%FAKE_TAG%` to expand).
fn fake_app(dir: &Path) -> HostLayout {
    suroga::functions::export(dir, &test_api()).unwrap();
    for name in ["empty-timer", "failing-timer"] {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        let fj = json!({"bindings":[{"type":"timerTrigger","direction":"in","name":"timer","schedule":"0 */5 * * * *","useMonitor":true}]});
        std::fs::write(dir.join(name).join("function.json"), fj.to_string()).unwrap();
    }
    let mut host: Value = serde_json::from_str(suroga::functions::package::HOST_JSON).unwrap();
    host["customHandler"]["description"]["arguments"] =
        json!(["fake_custom_handler", "--exact", "--ignored", "--nocapture", "--quiet", "%FAKE_TAG%"]);
    std::fs::write(dir.join("host.json"), host.to_string()).unwrap();
    HostLayout {
        host_json: dir.join("host.json"),
        functions_dir: dir.to_path_buf(),
        settings_file: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("local.settings.json.example")),
    }
}

struct Fake {
    host: FunctionsHost,
    tag: String,
    _dir: tempfile::TempDir,
}

async fn try_fake(mode: &str, deadline: Duration) -> Result<Fake, HostError> {
    try_fake_in(Some(HttpMode::Forwarding), mode, deadline).await
}

async fn try_fake_in(http: Option<HttpMode>, mode: &str, deadline: Duration) -> Result<Fake, HostError> {
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("tag-{}", uuid::Uuid::new_v4());
    let config = HostConfig {
        layout: fake_app(dir.path()),
        mode: http,
        program: std::env::current_exe().unwrap(),
        overrides: vec![(FAKE_ENV.into(), mode.into()), ("FAKE_TAG".into(), tag.clone())],
        readiness_deadline: deadline,
    };
    let host = FunctionsHost::try_start(config).await?;
    Ok(Fake { host, tag, _dir: dir })
}

/// The fake handler behind an older host, which forwards (it ignores `enableProxyingHttpRequest`).
async fn fake() -> Fake {
    try_fake("serve", READINESS_DEADLINE).await.expect("the fake handler starts")
}

/// The fake handler behind a current host, which proxies (host.json enables both modes).
async fn fake_proxying() -> Fake {
    let f = try_fake_in(None, "serve", READINESS_DEADLINE).await.expect("the fake handler starts");
    assert_eq!(f.host.mode(), HttpMode::Proxying, "a current host proxies when host.json enables it");
    f
}

async fn get_json(url: String) -> (StatusCode, Value) {
    let r = reqwest::Client::new().get(url).send().await.unwrap();
    (r.status(), r.json().await.unwrap())
}

// ---------------------------------------------------------------------------------------------
// Start and readiness

#[tokio::test]
async fn handler_gets_the_port_the_settings_and_expanded_arguments() {
    let f = fake().await;
    let (status, echo) = get_json(format!("{}/api/v1/rooms/42", f.host.url())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo["env"]["FUNCTIONS_WORKER_RUNTIME"], "custom");
    assert_eq!(echo["env"]["AzureWebJobsStorage"], "UseDevelopmentStorage=true");
    assert_eq!(echo["env"]["STORE"], "sqlite");
    assert_eq!(echo["env"]["FUNCTIONS_CUSTOMHANDLER_PORT"], f.host.handler_addr().port().to_string());
    // A fresh data dir, not the example's ./data.
    let data_dir = f.host.setting("SUROGA_DATA_DIR").unwrap();
    assert_eq!(echo["env"]["SUROGA_DATA_DIR"], data_dir);
    assert_ne!(data_dir, "./data");
    let argv: Vec<String> = serde_json::from_value(echo["argv"].clone()).unwrap();
    assert!(argv.contains(&f.tag), "%FAKE_TAG% was not expanded: {argv:?}");
}

#[tokio::test]
async fn readiness_accepts_a_404_on_get_root() {
    let f = fake().await;
    let r = reqwest::get(format!("http://{}/", f.host.handler_addr())).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn public_get_root_is_answered_by_the_host_not_the_handler() {
    let f = fake().await;
    let r = reqwest::get(format!("{}/", f.host.url())).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("Functions"));
}

#[tokio::test]
async fn a_handler_that_exits_before_ready_is_reported_with_code_and_stderr() {
    match try_fake("exit", READINESS_DEADLINE).await {
        Err(HostError::Exited { status, stderr }) => {
            assert_eq!(status.code(), Some(3));
            assert!(stderr.contains("boom"), "{stderr}");
        }
        other => panic!("expected Exited, got {:?}", other.map(|f| f.host)),
    }
}

#[tokio::test]
async fn a_handler_that_never_listens_is_not_ready_by_the_deadline() {
    let err = try_fake("silent", Duration::from_millis(300)).await.map(|f| f.host).unwrap_err();
    assert!(matches!(err, HostError::NotReady(..)), "{err}");
}

#[tokio::test]
async fn stdout_and_stderr_are_captured_and_warnings_are_not_errors() {
    let f = fake().await;
    reqwest::get(format!("{}/api/v1/rooms", f.host.url())).await.unwrap();
    let line = f.host.wait_for_stdout(Duration::from_secs(10), |l| l.contains(r#""path":"/api/v1/rooms""#)).await;
    assert!(serde_json::from_str::<Value>(&line).is_ok());
    assert!(f.host.stderr_lines().iter().any(|l| l.starts_with("warning: fake handler")));
    assert_eq!(f.host.error_lines(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// Routing through function.json

#[tokio::test]
async fn undeclared_routes_and_methods_get_the_hosts_404_and_never_reach_the_handler() {
    let f = fake().await;
    let c = reqwest::Client::new();
    let url = f.host.url();
    for (method, path) in [
        (Method::GET, "/api/v1/bookings"),
        (Method::PUT, "/api/v1/rooms/7"),
        (Method::GET, "/v1/rooms"),
        (Method::GET, "/api/v1/rooms/7/extra"),
        (Method::POST, "/fleet-reconcile"),
    ] {
        let r = c.request(method.clone(), format!("{url}{path}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{method} {path}");
        assert!(r.headers().get("x-handler").is_none(), "{method} {path} reached the handler");
    }
    // A declared request afterwards; once its log line is in, any earlier forward would be too.
    c.get(format!("{url}/api/v1/rooms?sentinel=1")).send().await.unwrap();
    f.host.wait_for_stdout(Duration::from_secs(10), |l| l.contains("/api/v1/rooms")).await;
    let handled: Vec<String> =
        f.host.stdout_lines().into_iter().filter(|l| l.contains(r#""message":"request""#)).collect();
    assert_eq!(handled.len(), 1, "{handled:?}");
    let journal = f.host.front_door_journal();
    assert_eq!(journal.iter().filter(|e| e.function.is_none()).count(), 5);
    assert_eq!(journal.last().unwrap().function.as_deref(), Some("v1-rooms"));
}

#[tokio::test]
async fn routes_match_parameters_and_methods_case_insensitively() {
    let f = fake().await;
    let c = reqwest::Client::new();
    let r = c
        .request(Method::from_bytes(b"delete").unwrap(), format!("{}/API/V1/Rooms/abc-1", f.host.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["path"], "/API/V1/Rooms/abc-1");
    assert_eq!(f.host.front_door_journal()[0].function.as_deref(), Some("v1-rooms-room_id"));
}

#[tokio::test]
async fn the_fixed_extra_routes_are_declared() {
    let f = fake().await;
    let (status, echo) = get_json(format!("{}/api/v1/openapi.json", f.host.url())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo["path"], "/api/v1/openapi.json");
    let (status, _) = get_json(format!("{}/api/docs", f.host.url())).await;
    assert_eq!(status, StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// Forwarding

/// What the fake handler echoed of `request`.
async fn echo_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// Sends `DELETE /api/v1/rooms/r-9{query}` with a few client headers through the front door and
/// returns what the handler saw, after checking what both modes keep: the method, the path, the
/// client's headers, and the host's version and a fresh invocation id.
async fn echo_of_a_delete(f: &Fake, query: &str) -> Value {
    let echo = echo_of(
        reqwest::Client::new()
            .delete(format!("{}/api/v1/rooms/r-9{query}", f.host.url()))
            .header("x-custom", "kept")
            .header("authorization", "Bearer abc")
            .header("user-agent", "test-agent/1"),
    )
    .await;
    assert_eq!(echo["method"], "DELETE");
    assert_eq!(echo["path"], "/api/v1/rooms/r-9");
    let h = &echo["headers"];
    assert_eq!(h["x-custom"], json!(["kept"]));
    assert_eq!(h["authorization"], json!(["Bearer abc"]));
    assert_eq!(h["x-azure-functions-hostversion"], json!([HOST_VERSION]));
    let id = h["x-azure-functions-invocationid"][0].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    echo
}

#[tokio::test]
async fn forwarding_keeps_path_method_and_headers_and_adds_the_hosts() {
    let f = fake().await;
    let h = &echo_of_a_delete(&f, "").await["headers"];
    assert_eq!(h["user-agent"], json!([format!("test-agent/1 Azure-Functions-Host/{HOST_VERSION}")]));
    // The original Host header, as the host forwards it.
    assert_eq!(h["host"], json!([f.host.url().trim_start_matches("http://")]));
}

#[tokio::test]
async fn repeated_query_keys_arrive_joined_with_a_comma() {
    let f = fake().await;
    let (_, echo) = get_json(format!("{}/api/v1/rooms?a=1&b=x+y&a=2&c=%2F", f.host.url())).await;
    assert_eq!(echo["query"], "a=1,2&b=x%20y&c=%2F");
}

#[tokio::test]
async fn a_body_with_content_length_is_forwarded() {
    let f = fake().await;
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/rooms", f.host.url()))
        .body("{\"name\":\"r\"}")
        .send()
        .await
        .unwrap();
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["body"], "{\"name\":\"r\"}");
    assert_eq!(echo["headers"]["content-length"], json!(["12"]));
}

#[tokio::test]
async fn a_chunked_body_is_dropped() {
    let f = fake().await;
    let front: std::net::SocketAddr = f.host.url().trim_start_matches("http://").parse().unwrap();
    let (status, _, body) = post_chunked(front, "/api/v1/rooms", b"{\"name\":\"r\"}").await.unwrap();
    assert_eq!(status, 200);
    let echo: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["body"], "");
    assert!(echo["headers"].get("transfer-encoding").is_none());
}

#[tokio::test]
async fn responses_come_back_as_is_without_following_redirects() {
    let f = fake().await;
    let c = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = c.get(format!("{}/api/v1/rooms?status=302", f.host.url())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(r.headers()["x-handler"], "echo");
    assert_eq!(r.headers()["location"], "/api/v1/rooms");
    let r = c.get(format!("{}/api/v1/rooms?status=418", f.host.url())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(r.headers()["content-type"], "application/json");
}

/// What the handler saw of `POST /api/v1/rooms` with `Content-Type: application/json` and no body
/// (as `curl -X POST -H 'Content-Type: application/json'` sends it): never a body.
async fn echo_of_a_bare_post(f: &Fake) -> Value {
    let bare = reqwest::Client::new().post(format!("{}/api/v1/rooms", f.host.url()));
    let echo = echo_of(bare.header("content-type", "application/json").header("content-length", "0")).await;
    assert_eq!(echo["body"], "");
    echo
}

#[tokio::test]
async fn forwarding_drops_content_headers_of_a_request_without_a_body() {
    let f = fake().await;
    let echo = echo_of_a_bare_post(&f).await;
    assert!(echo["headers"].get("content-type").is_none(), "{echo}");
}

// ---------------------------------------------------------------------------------------------
// Proxying (current hosts: host.json enables it, and it wins over forwarding)

#[tokio::test]
async fn proxying_keeps_path_query_and_headers_as_sent() {
    let f = fake_proxying().await;
    let echo = echo_of_a_delete(&f, "?a=1&b=x+y&a=2").await;
    assert_eq!(echo["query"], "a=1&b=x+y&a=2", "the query is not re-encoded");
    let h = &echo["headers"];
    assert_eq!(h["user-agent"], json!(["test-agent/1"]), "no suffix when proxying");
    assert_eq!(h["x-forwarded-host"], json!([f.host.url().trim_start_matches("http://")]));
    assert_eq!(h["host"], json!([f.host.handler_addr().to_string()]), "addressed to the handler");
}

#[tokio::test]
async fn proxying_keeps_the_content_type_of_a_request_without_a_body() {
    let f = fake_proxying().await;
    let echo = echo_of_a_bare_post(&f).await;
    assert_eq!(echo["headers"]["content-type"], json!(["application/json"]), "{echo}");
    assert_eq!(echo["headers"]["content-length"], json!(["0"]), "{echo}");
}

#[tokio::test]
async fn proxying_passes_bodies_with_a_length_and_chunked_ones() {
    let f = fake_proxying().await;
    let post = reqwest::Client::new().post(format!("{}/api/v1/rooms", f.host.url()));
    let echo = echo_of(post.header("content-type", "application/json").body("{\"name\":\"r\"}")).await;
    assert_eq!(echo["body"], "{\"name\":\"r\"}");
    assert_eq!(echo["headers"]["content-type"], json!(["application/json"]));
    let front: std::net::SocketAddr = f.host.url().trim_start_matches("http://").parse().unwrap();
    let (status, _, body) = post_chunked(front, "/api/v1/rooms", b"{\"name\":\"c\"}").await.unwrap();
    assert_eq!(status, 200);
    let echo: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["body"], "{\"name\":\"c\"}", "a chunked body is proxied, not dropped");
}

#[tokio::test]
async fn a_host_json_without_proxying_is_forwarded_even_by_a_current_host() {
    let dir = tempfile::tempdir().unwrap();
    let layout = fake_app(dir.path());
    let mut host: Value = serde_json::from_str(&std::fs::read_to_string(&layout.host_json).unwrap()).unwrap();
    host["customHandler"]["enableProxyingHttpRequest"] = json!(false);
    std::fs::write(&layout.host_json, host.to_string()).unwrap();
    let app = App::load(&layout).unwrap();
    assert_eq!(app.current_host_mode(), HttpMode::Forwarding);
    // And the repository's host.json enables both: current hosts proxy, older ones forward.
    let repo = App::load(&HostLayout::repo()).unwrap();
    assert!(repo.forwarding && repo.proxying);
    assert_eq!(repo.current_host_mode(), HttpMode::Proxying);
}

// ---------------------------------------------------------------------------------------------
// Timers

#[tokio::test]
async fn first_timer_run_sends_last_without_offset_and_the_handler_parses_it() {
    let f = fake().await;
    let logs = f.host.invoke_timer("fleet-reconcile", true, false).await;
    assert_eq!(logs, ["method=fleet-reconcile first_run=true past_due=false monitor=true"]);
}

#[tokio::test]
async fn later_past_due_timer_run_sends_offsets() {
    let f = fake().await;
    let logs = f.host.invoke_timer("purge-keys", false, true).await;
    assert_eq!(logs, ["method=purge-keys first_run=false past_due=true monitor=true"]);
}

#[tokio::test]
async fn timer_run_without_schedule_status() {
    let f = fake().await;
    let out = f.host.timer("fleet-reconcile").null_schedule_status().send().await;
    assert_eq!(out.status, 200);
    assert_eq!(out.logs, ["method=fleet-reconcile first_run=true past_due=false monitor=false"]);
}

#[tokio::test]
#[should_panic(expected = "empty reply body")]
async fn an_empty_timer_reply_fails_the_test() {
    let f = fake().await;
    f.host.invoke_timer("empty-timer", false, false).await;
}

#[tokio::test]
async fn a_failing_timer_reply_keeps_the_shape_and_the_error() {
    let f = fake().await;
    let out = f.host.timer("failing-timer").send().await;
    assert_eq!(out.status, 500);
    assert_eq!(out.logs, ["scanned 1", "error: janus unreachable"]);
}

#[tokio::test]
#[should_panic(expected = "no timer function")]
async fn an_undeclared_timer_is_never_invoked() {
    let f = fake().await;
    f.host.invoke_timer("no-such-timer", false, false).await;
}

#[test]
fn timer_envelope_matches_the_reference() {
    let t = DeclaredTimer { name: "fleet-reconcile".into(), schedule: "0 */1 * * * *".into(), use_monitor: true };
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-30T14:44:00.46239Z").unwrap().to_utc();
    let first = timer_envelope(&t, now, true, false, false);
    assert_eq!(first["Data"]["timer"]["ScheduleStatus"]["Last"], "0001-01-01T00:00:00");
    assert_eq!(first["Data"]["timer"]["ScheduleStatus"]["Next"], "2026-11-30T14:45:00+00:00");
    assert_eq!(first["Data"]["timer"]["Schedule"], json!({"AdjustForDST": true}));
    assert_eq!(first["Data"]["timer"]["IsPastDue"], false);
    assert_eq!(first["Metadata"]["sys"]["MethodName"], "fleet-reconcile");
    assert_eq!(first["Metadata"]["sys"]["UtcNow"], "2026-11-30T14:44:00.462390Z");
    let later = timer_envelope(&t, now, false, true, false);
    assert_eq!(later["Data"]["timer"]["ScheduleStatus"]["Last"], "2026-11-30T14:44:00+00:00");
    assert_eq!(later["Data"]["timer"]["IsPastDue"], true);
    assert_eq!(timer_envelope(&t, now, false, false, true)["Data"]["timer"]["ScheduleStatus"], Value::Null);
}

// ---------------------------------------------------------------------------------------------
// What the host refuses at start

fn layout_with(functions: &[(&str, Value)], host_patch: impl FnOnce(&mut Value)) -> (tempfile::TempDir, HostLayout) {
    let dir = tempfile::tempdir().unwrap();
    let mut host: Value = serde_json::from_str(suroga::functions::package::HOST_JSON).unwrap();
    host_patch(&mut host);
    std::fs::write(dir.path().join("host.json"), host.to_string()).unwrap();
    for (name, fj) in functions {
        std::fs::create_dir_all(dir.path().join(name)).unwrap();
        std::fs::write(dir.path().join(name).join("function.json"), fj.to_string()).unwrap();
    }
    let layout = HostLayout::publish(dir.path());
    (dir, layout)
}

fn http_fn(route: &str, methods: Value, auth: &str) -> Value {
    json!({"bindings":[{"type":"httpTrigger","direction":"in","name":"req","authLevel":auth,"methods":methods,"route":route},
                       {"type":"http","direction":"out","name":"res"}]})
}

#[test]
fn host_refuses_http_functions_that_would_not_be_forwarded_raw() {
    let mut fj = http_fn("v1/x", json!(["get"]), "anonymous");
    fj["bindings"].as_array_mut().unwrap().push(json!({"type":"queue","direction":"out","name":"q","queueName":"q"}));
    let (_d, layout) = layout_with(&[("v1-x", fj)], |_| {});
    assert!(matches!(App::load(&layout), Err(HostError::InvalidFunction { .. })));
}

#[test]
fn host_refuses_keyed_http_functions() {
    let (_d, layout) = layout_with(&[("v1-x", http_fn("v1/x", json!(["get"]), "function"))], |_| {});
    assert!(matches!(App::load(&layout), Err(HostError::InvalidFunction { .. })));
}

#[test]
fn host_refuses_overlapping_routes_but_accepts_disjoint_methods() {
    let (_d, layout) = layout_with(
        &[
            ("a", http_fn("v1/x", json!(["get", "post"]), "anonymous")),
            ("b", http_fn("v1/x", json!(["post"]), "anonymous")),
        ],
        |_| {},
    );
    assert!(matches!(App::load(&layout), Err(HostError::InvalidFunction { name, .. }) if name == "b"));
    let (_d, layout) = layout_with(
        &[("a", http_fn("v1/x", json!(["get"]), "anonymous")), ("b", http_fn("v1/x", json!(["post"]), "anonymous"))],
        |_| {},
    );
    assert_eq!(App::load(&layout).unwrap().http.len(), 2);
}

#[test]
fn host_refuses_reserved_routes_and_bad_names() {
    let (_d, layout) = layout_with(&[("a", http_fn("admin/x", json!(["get"]), "anonymous"))], |_| {});
    assert!(matches!(App::load(&layout), Err(HostError::InvalidFunction { .. })));
    let (_d, layout) = layout_with(&[("Upper", http_fn("v1/x", json!(["get"]), "anonymous"))], |_| {});
    assert!(matches!(App::load(&layout), Err(HostError::InvalidFunction { .. })));
}

#[test]
fn host_requires_a_forwarding_or_proxying_flag() {
    let (_d, layout) = layout_with(&[], |h| {
        let c = h["customHandler"].as_object_mut().unwrap();
        c.remove("enableForwardingHttpRequest");
        c.remove("enableProxyingHttpRequest");
    });
    assert!(matches!(App::load(&layout), Err(HostError::HostJson(_))));
    // Proxying alone: a current host proxies, an older host (which only forwards) cannot serve it.
    let (_d, layout) = layout_with(&[], |h| {
        h["customHandler"].as_object_mut().unwrap().remove("enableForwardingHttpRequest");
    });
    let app = App::load(&layout).unwrap();
    assert_eq!(app.current_host_mode(), HttpMode::Proxying);
    assert!(!app.forwarding);
}

#[test]
fn route_templates_support_constraints_optionals_and_catch_alls() {
    let (_d, layout) = layout_with(
        &[
            ("n", http_fn("v1/n/{id:int}", json!(["get"]), "anonymous")),
            ("o", http_fn("v1/o/{id?}", json!(["get"]), "anonymous")),
            ("c", http_fn("v1/c/{*rest}", json!([]), "anonymous")),
        ],
        // A prefix, as hosts default to (this app's own host.json has none).
        |h| h["extensions"]["http"]["routePrefix"] = json!("api"),
    );
    let app = App::load(&layout).unwrap();
    let name = |m: Method, p: &str| app.route(&m, p).map(|f| f.name.clone());
    assert_eq!(name(Method::GET, "/api/v1/n/12"), Some("n".into()));
    assert_eq!(name(Method::GET, "/api/v1/n/x"), None);
    assert_eq!(name(Method::GET, "/api/v1/o"), Some("o".into()));
    assert_eq!(name(Method::GET, "/api/v1/o/5/"), Some("o".into()));
    assert_eq!(name(Method::PATCH, "/api/v1/c/a/b/c"), Some("c".into()));
    assert_eq!(name(Method::GET, "/api/v1/c"), Some("c".into()));
    assert_eq!(name(Method::GET, "/apix/v1/n/12"), None);
}

#[test]
fn query_reencoding() {
    assert_eq!(reencode_query("a=1&a=2"), "a=1,2");
    assert_eq!(reencode_query("A=1&a=2&b"), "A=1,2&b=");
    assert_eq!(reencode_query("q=caf%C3%A9+au+lait"), "q=caf%C3%A9%20au%20lait");
    assert_eq!(reencode_query(""), "");
}

#[test]
fn argument_expansion() {
    let s = BTreeMap::from([("MODE".to_string(), "serve".to_string())]);
    assert_eq!(expand_settings("%MODE%", &s), "serve");
    assert_eq!(expand_settings("--x=%MODE%-%UNKNOWN_SETTING_XYZ%", &s), "--x=serve-%UNKNOWN_SETTING_XYZ%");
    assert_eq!(expand_settings("100%", &s), "100%");
}

// ---------------------------------------------------------------------------------------------
// This repository's app

fn tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            for (k, v) in tree(&p) {
                out.insert(format!("{name}/{k}"), v);
            }
        } else {
            out.insert(name, std::fs::read_to_string(&p).unwrap());
        }
    }
    out
}

#[test]
fn handlers_folder_matches_the_generated_function_table() {
    let handlers = Path::new(env!("CARGO_MANIFEST_DIR")).join("handlers");
    if std::env::var_os("SUROGA_UPDATE_HANDLERS").is_some() {
        suroga::functions::export(&handlers, &api_document()).unwrap();
    }
    let generated = tempfile::tempdir().unwrap();
    suroga::functions::export(generated.path(), &api_document()).unwrap();
    assert!(
        tree(&handlers) == tree(generated.path()),
        "handlers/ has drifted from the route and timer tables; run `suroga functions export` \
         (or this test with SUROGA_UPDATE_HANDLERS=1) and commit the result"
    );
}

#[test]
fn the_repo_app_declares_the_timers_the_fixed_routes_and_serve() {
    let app = App::load(&HostLayout::repo()).unwrap();
    assert_eq!(app.arguments, ["serve"]);
    assert_eq!(app.route_prefix, "", "routes are full paths: /api/... and /app/...");
    for t in suroga::functions::TIMERS {
        let declared = app.timer(t.name).unwrap();
        assert_eq!(declared.schedule, t.schedule);
        assert!(declared.use_monitor);
    }
    assert_eq!(app.route(&Method::GET, "/api/v1/openapi.json").unwrap().name, "v1-openapi_json");
    assert_eq!(app.route(&Method::GET, "/api/docs").unwrap().name, "docs");
    for path in
        ["/app", "/app/", "/app/i/some-code", "/app/bookings/0b4d3f4e-8f7e-4a43-9d34-7d6f0c3f6b21", "/app/assets/x.js"]
    {
        assert_eq!(app.route(&Method::GET, path).unwrap().name, "app-path", "{path}");
        assert_eq!(app.route(&Method::HEAD, path).unwrap().name, "app-path", "{path}");
    }
    assert!(app.route(&Method::POST, "/app/").is_none());
    assert!(app.route(&Method::GET, "/apps").is_none());
}

#[test]
fn local_settings_example_is_valid_and_has_what_a_local_run_needs() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("local.settings.json.example")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["IsEncrypted"], false);
    let values = &v["Values"];
    assert_eq!(values["FUNCTIONS_WORKER_RUNTIME"], "custom");
    assert!(values["AzureWebJobsStorage"].is_string());
    assert_eq!(values["STORE"], "sqlite");
    assert!(values["SUROGA_DATA_DIR"].is_string());
    // Empty: the app generates a local secret into its data folder (a placeholder would be refused).
    assert_eq!(values["AUTH_HS256_SECRET"], "");
    assert!(values.as_object().unwrap().values().all(Value::is_string), "app settings are strings");
}

#[test]
fn the_built_binary_is_judged_by_its_glibc_needs() {
    use suroga::functions::package::{Linkage, MAX_GLIBC, PackageError, check_runs_on_functions_image, inspect_elf};
    let bin = Path::new(env!("CARGO_BIN_EXE_suroga"));
    let linkage = inspect_elf(bin).unwrap();
    match (&linkage, check_runs_on_functions_image(bin)) {
        (Linkage::Static, Ok(_)) => {}
        (Linkage::Dynamic { max_glibc: Some(v), .. }, Err(PackageError::GlibcTooNew { found, .. })) => {
            assert!(*v > MAX_GLIBC);
            assert_eq!(found, *v);
        }
        (Linkage::Dynamic { max_glibc, .. }, Ok(_)) => {
            assert!(max_glibc.is_none_or(|v| v <= MAX_GLIBC))
        }
        (l, r) => panic!("{l:?} judged {r:?}"),
    }
}

/// The real binary under the host: ready, JSON logs on stdout, no errors on stderr, timers answered.
#[tokio::test]
async fn real_binary_starts_under_the_host_and_answers_timers() {
    let host = FunctionsHost::start(&[]).await;
    let r = reqwest::get(format!("{}/api/v1/openapi.json", host.url())).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for t in suroga::functions::TIMERS {
        host.invoke_timer(t.name, true, false).await;
        host.invoke_timer(t.name, false, true).await;
        assert_eq!(host.timer(t.name).null_schedule_status().send().await.status, 200);
    }
    assert!(!host.stdout_lines().is_empty());
    for line in host.stdout_lines() {
        assert!(serde_json::from_str::<Value>(&line).is_ok(), "stdout line is not JSON: {line}");
    }
    assert_eq!(host.error_lines(), Vec::<String>::new());
}

/// A Key Vault reference the platform could not resolve reaches the app as its literal text: the
/// app refuses to start and says which setting, on stderr (the host logs it as an error).
#[tokio::test]
async fn an_unresolved_key_vault_reference_stops_the_app_naming_the_setting() {
    let reference = "@Microsoft.KeyVault(SecretUri=https://suroga-kv.vault.azure.net/secrets/janus-admin-key/)";
    match FunctionsHost::try_start(HostConfig::suroga(&[("JANUS_ADMIN_KEY", reference)])).await {
        Err(HostError::Exited { status, stderr }) => {
            assert!(!status.success());
            assert!(
                stderr.contains("JANUS_ADMIN_KEY") && stderr.contains("unresolved Key Vault reference"),
                "{stderr}"
            );
            assert!(!stderr.contains("suroga-kv.vault.azure.net"), "{stderr}");
        }
        other => panic!("expected the app to exit, got {:?}", other.map(|h| h.url())),
    }
}

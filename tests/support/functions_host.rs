//! An Azure Functions host emulator for tests (the real host, `func`, cannot be installed here).
//!
//! It behaves like the host as described in /work/shared/reference/functions-host.md:
//! - starts the handler (by default the real `suroga` binary) with the arguments from host.json
//!   (`%SETTING%` expanded), `FUNCTIONS_CUSTOMHANDLER_PORT` set to a free port and the `Values` of
//!   local.settings.json.example plus the test's overrides; stdout and stderr are captured;
//! - waits for readiness by polling `GET /` every 25 ms (any HTTP status means ready);
//! - opens a front door on its own 127.0.0.1 port that routes a request ONLY if some
//!   `function.json` httpTrigger route and method match it, and answers 404 itself otherwise;
//! - passes requests on in one of the host's two HTTP modes ([`HttpMode`]; a current host uses
//!   proxying when host.json enables it, an older host ignores that flag and forwards):
//!   - forwarding (`enableForwardingHttpRequest`, the host rebuilds the request): original path
//!     (with `/api`), method, headers plus `X-Azure-Functions-InvocationId`,
//!     `X-Azure-Functions-HostVersion` and a `User-Agent` suffix, the query re-encoded with
//!     repeated keys joined by a comma, the body and its `Content-Type` only when
//!     `Content-Length > 0` (chunked bodies are dropped);
//!   - proxying (`enableProxyingHttpRequest`, YARP's forwarder with its default transforms): path
//!     and query as received, every header but the hop-by-hop ones and `Host`, plus
//!     `X-Forwarded-For/-Proto/-Host` and the two `X-Azure-Functions-*` headers, `User-Agent`
//!     untouched, the body whenever there is one (chunked too), and on a request WITHOUT a body
//!     its content headers (`Content-Type`...) kept with `Content-Length: 0`;
//! - passes the response back as is (both modes);
//! - invokes timers like the host: `POST /{name}` with the JSON envelope, sent chunked, and
//!   fails the test unless the reply is 200 JSON shaped `{"Outputs":..,"Logs":[..],"ReturnValue":..}`;
//! - kills the handler process on drop.
//!
//! Typical use:
//! ```ignore
//! let host = FunctionsHost::start(&[("FLEET", "local")]).await;
//! let r = reqwest::get(format!("{}/api/v1/rooms", host.url())).await?;
//! let logs = host.invoke_timer("fleet-reconcile", true, false).await;
//! assert!(host.stdout_lines().iter().all(|l| l.starts_with('{')));
//! ```
#![allow(dead_code)] // each test crate uses a different part of the harness

use std::{
    collections::BTreeMap,
    fmt,
    net::{SocketAddr, TcpListener as StdTcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    process::{Child, Command},
    sync::Notify,
    task::JoinHandle,
};

/// The host version the emulator claims in `X-Azure-Functions-HostVersion` and `User-Agent`.
pub const HOST_VERSION: &str = "4.1037.1.1";
/// How often the host probes `GET /` before the handler is ready.
pub const READINESS_POLL: Duration = Duration::from_millis(25);
/// How long the host waits for readiness (its initialization timeout).
pub const READINESS_DEADLINE: Duration = Duration::from_secs(30);

/// Where the app's host.json and function folders are.
#[derive(Debug, Clone)]
pub struct HostLayout {
    pub host_json: PathBuf,
    /// The folder whose immediate subfolders hold `function.json` files.
    pub functions_dir: PathBuf,
    /// local.settings.json(-like) file whose `Values` become app settings, if any.
    pub settings_file: Option<PathBuf>,
}

impl HostLayout {
    /// This repository: `host.json`, `handlers/`, `local.settings.json.example`.
    pub fn repo() -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        Self {
            host_json: root.join("host.json"),
            functions_dir: root.join("handlers"),
            settings_file: Some(root.join("local.settings.json.example")),
        }
    }

    /// A publish folder: host.json and the function folders side by side, and its
    /// local.settings.json when there is one.
    pub fn publish(dir: &Path) -> Self {
        let settings = dir.join("local.settings.json");
        Self {
            host_json: dir.join("host.json"),
            functions_dir: dir.to_path_buf(),
            settings_file: settings.is_file().then_some(settings),
        }
    }
}

/// How the host passes an HTTP request to the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMode {
    /// `enableForwardingHttpRequest`: the host rebuilds the request (the only mode of older hosts).
    Forwarding,
    /// `enableProxyingHttpRequest`: the host proxies the request with YARP (current hosts, Flex
    /// Consumption first, whenever host.json enables it).
    Proxying,
}

/// Everything [`FunctionsHost::try_start`] needs.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub layout: HostLayout,
    /// `None`: what a current host does with this host.json ([`App::current_host_mode`]);
    /// `Some(Forwarding)`: an older host that ignores `enableProxyingHttpRequest`.
    pub mode: Option<HttpMode>,
    /// The handler executable (the host resolves `defaultExecutablePath`; tests pass the built binary).
    pub program: PathBuf,
    /// App settings added after (and overriding) the settings file's `Values`.
    pub overrides: Vec<(String, String)>,
    pub readiness_deadline: Duration,
}

impl HostConfig {
    /// The real `suroga` binary in this repository's layout.
    pub fn suroga(overrides: &[(&str, &str)]) -> Self {
        Self {
            layout: HostLayout::repo(),
            mode: None,
            program: PathBuf::from(env!("CARGO_BIN_EXE_suroga")),
            overrides: overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            readiness_deadline: READINESS_DEADLINE,
        }
    }
}

/// Why the emulated host could not start the app.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: invalid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("host.json: {0}")]
    HostJson(&'static str),
    #[error("host.json does not enable {0:?} (customHandler.enable{0:?}HttpRequest)")]
    ModeNotEnabled(HttpMode),
    #[error("function {name}: {reason}")]
    InvalidFunction { name: String, reason: String },
    #[error("handler exited before it was ready ({status}); stderr:\n{stderr}")]
    Exited { status: std::process::ExitStatus, stderr: String },
    #[error("handler not ready after {0:?} (no HTTP answer on GET /); stderr:\n{1}")]
    NotReady(Duration, String),
}

/// An HTTP function as the host reads it from function.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredHttp {
    pub name: String,
    /// Route template under the prefix, e.g. `v1/rooms/{room_id}`.
    pub route: String,
    /// Uppercase methods; empty means every method.
    pub methods: Vec<String>,
}

/// A timer function as the host reads it from function.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredTimer {
    pub name: String,
    pub schedule: String,
    pub use_monitor: bool,
}

/// The app as the host indexed it at start.
#[derive(Debug, Clone, Default)]
pub struct App {
    pub route_prefix: String,
    /// `customHandler.enableForwardingHttpRequest`.
    pub forwarding: bool,
    /// `customHandler.enableProxyingHttpRequest`.
    pub proxying: bool,
    pub http: Vec<DeclaredHttp>,
    pub timers: Vec<DeclaredTimer>,
    pub arguments: Vec<String>,
}

fn read_json(path: &Path) -> Result<Value, HostError> {
    let text = std::fs::read_to_string(path).map_err(|source| HostError::Io { path: path.into(), source })?;
    serde_json::from_str(&text).map_err(|source| HostError::Json { path: path.into(), source })
}

fn is_valid_name(name: &str) -> bool {
    let mut c = name.chars();
    name.len() <= 128
        && !name.eq_ignore_ascii_case("host")
        && c.next().is_some_and(|c| c.is_ascii_lowercase())
        && c.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

impl App {
    /// Indexes host.json and every immediate subfolder's function.json, refusing what the host
    /// refuses: no forwarding flag, invalid names, reserved routes, HTTP functions that would not be
    /// forwarded raw, overlapping route + method pairs.
    pub fn load(layout: &HostLayout) -> Result<Self, HostError> {
        let host = read_json(&layout.host_json)?;
        let forwarding = host["customHandler"]["enableForwardingHttpRequest"] == json!(true);
        let proxying = host["customHandler"]["enableProxyingHttpRequest"] == json!(true);
        if !forwarding && !proxying {
            return Err(HostError::HostJson(
                "customHandler.enableForwardingHttpRequest or enableProxyingHttpRequest must be true",
            ));
        }
        let route_prefix =
            host["extensions"]["http"]["routePrefix"].as_str().unwrap_or("api").trim_matches('/').to_string();
        let arguments = host["customHandler"]["description"]["arguments"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default();
        let mut app = App { route_prefix, forwarding, proxying, arguments, ..Default::default() };
        let dir = &layout.functions_dir;
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| HostError::Io { path: dir.clone(), source })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("function.json").is_file())
            .collect();
        entries.sort();
        for folder in entries {
            let name = folder.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            let invalid = |reason: String| HostError::InvalidFunction { name: name.clone(), reason };
            if !is_valid_name(&name) {
                return Err(invalid("name must match ^[a-z][a-z0-9_\\-]{0,127}$ and not be host".into()));
            }
            let doc = read_json(&folder.join("function.json"))?;
            let bindings = doc["bindings"].as_array().cloned().unwrap_or_default();
            let trigger = bindings
                .iter()
                .find(|b| b["direction"] == "in" && b["type"].as_str().is_some_and(|t| t.ends_with("Trigger")));
            match trigger.and_then(|t| t["type"].as_str()) {
                Some("httpTrigger") => {
                    let t = trigger.unwrap();
                    let forwarded =
                        bindings.len() == 2 && bindings.iter().any(|b| b["type"] == "http" && b["direction"] == "out");
                    if !forwarded {
                        return Err(invalid(
                            "an HTTP function needs exactly one httpTrigger and one http out binding to be forwarded"
                                .into(),
                        ));
                    }
                    if t["authLevel"] != "anonymous" {
                        return Err(invalid(format!(
                            "authLevel is {} (a key would be required); set \"anonymous\"",
                            t["authLevel"]
                        )));
                    }
                    let route = t["route"].as_str().unwrap_or(&name).trim_matches('/').to_string();
                    let first = route.split('/').next().unwrap_or_default().to_ascii_lowercase();
                    if first == "admin" || first == "runtime" {
                        return Err(invalid(format!("route {route} is reserved")));
                    }
                    let methods: Vec<String> = t["methods"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|m| m.as_str()).map(|m| m.to_ascii_uppercase()).collect())
                        .unwrap_or_default();
                    for other in &app.http {
                        let overlap = other.route.eq_ignore_ascii_case(&route)
                            && (methods.is_empty()
                                || other.methods.is_empty()
                                || methods.iter().any(|m| other.methods.contains(m)));
                        if overlap {
                            return Err(invalid(format!("route {route} overlaps function {} on a method", other.name)));
                        }
                    }
                    app.http.push(DeclaredHttp { name, route, methods });
                }
                Some("timerTrigger") => {
                    let t = trigger.unwrap();
                    let schedule = t["schedule"]
                        .as_str()
                        .ok_or_else(|| invalid("timerTrigger without schedule".into()))?
                        .to_string();
                    let use_monitor = t["useMonitor"].as_bool().unwrap_or(true);
                    app.timers.push(DeclaredTimer { name, schedule, use_monitor });
                }
                other => return Err(invalid(format!("unsupported trigger {other:?}"))),
            }
        }
        Ok(app)
    }

    /// The HTTP function that serves `method path`, as the host's router picks it: the path must be
    /// under the route prefix and match a route template (`{p}`, `{p:constraint}`, `{p?}`, `{*rest}`;
    /// literal segments case-insensitive), and the method must be declared (case-insensitive).
    pub fn route(&self, method: &Method, path: &str) -> Option<&DeclaredHttp> {
        let rest = if self.route_prefix.is_empty() {
            path.strip_prefix('/')?
        } else {
            let after = path.strip_prefix('/')?;
            let (first, rest) = after.split_once('/').unwrap_or((after, ""));
            if !first.eq_ignore_ascii_case(&self.route_prefix) {
                return None;
            }
            rest
        };
        let segments: Vec<&str> = rest.trim_end_matches('/').split('/').filter(|s| !s.is_empty()).collect();
        self.http.iter().find(|f| {
            (f.methods.is_empty() || f.methods.iter().any(|m| m.eq_ignore_ascii_case(method.as_str())))
                && template_matches(&f.route, &segments)
        })
    }

    pub fn timer(&self, name: &str) -> Option<&DeclaredTimer> {
        self.timers.iter().find(|t| t.name == name)
    }

    /// The mode a current host uses: proxying wins when host.json enables it.
    pub fn current_host_mode(&self) -> HttpMode {
        if self.proxying { HttpMode::Proxying } else { HttpMode::Forwarding }
    }

    /// `mode` if host.json enables it; `None` picks [`App::current_host_mode`].
    fn mode(&self, mode: Option<HttpMode>) -> Result<HttpMode, HostError> {
        match mode {
            None => Ok(self.current_host_mode()),
            Some(HttpMode::Forwarding) if self.forwarding => Ok(HttpMode::Forwarding),
            Some(HttpMode::Proxying) if self.proxying => Ok(HttpMode::Proxying),
            Some(m) => Err(HostError::ModeNotEnabled(m)),
        }
    }
}

fn template_matches(template: &str, segments: &[&str]) -> bool {
    let parts: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
    let mut i = 0;
    for (k, part) in parts.iter().enumerate() {
        if let Some(param) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            if param.starts_with('*') {
                return true; // catch-all takes the rest, even nothing
            }
            let optional = param.ends_with('?');
            let Some(seg) = segments.get(i) else {
                return optional && k == parts.len() - 1;
            };
            let constraint = param.trim_end_matches('?').split_once(':').map(|(_, c)| c);
            let ok = match constraint {
                Some("int") | Some("long") => seg.parse::<i64>().is_ok(),
                Some("guid") => uuid::Uuid::parse_str(seg).is_ok(),
                Some("alpha") => seg.chars().all(|c| c.is_ascii_alphabetic()),
                _ => true,
            };
            if !ok {
                return false;
            }
        } else if !segments.get(i).is_some_and(|s| s.eq_ignore_ascii_case(part)) {
            return false;
        }
        i += 1;
    }
    i == segments.len()
}

/// Percent-encodes like .NET `Uri.EscapeDataString`: only RFC 3986 unreserved characters stay.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Re-encodes a raw query string the way the host does: parsed (`+` is a space), keys grouped
/// case-insensitively in first-seen order, repeated values joined with a comma, each key and
/// value percent-encoded. `a=1&b=x+y&a=2` → `a=1,2&b=x%20y`. Empty input gives an empty string.
pub fn reencode_query(raw: &str) -> String {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
        match groups.iter_mut().find(|(key, _)| key.eq_ignore_ascii_case(&k)) {
            Some((_, values)) => values.push(v.into_owned()),
            None => groups.push((k.into_owned(), vec![v.into_owned()])),
        }
    }
    groups
        .iter()
        .map(|(k, vs)| format!("{}={}", escape(k), vs.iter().map(|v| escape(v)).collect::<Vec<_>>().join(",")))
        .collect::<Vec<_>>()
        .join("&")
}

/// A captured output stream of the handler process.
#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
    changed: Notify,
}

impl Lines {
    fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

fn capture(stream: impl tokio::io::AsyncRead + Unpin + Send + 'static, into: Arc<Lines>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            into.lines.lock().unwrap().push(line);
            into.changed.notify_waiters();
        }
    })
}

/// What the front door did with one request (for assertions about routing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontDoorEntry {
    pub method: String,
    /// Path and raw query as received.
    pub uri: String,
    /// The function that took it, or `None` when the host answered 404 itself.
    pub function: Option<String>,
}

struct Shared {
    app: App,
    mode: HttpMode,
    backend: SocketAddr,
    client: reqwest::Client,
    journal: Mutex<Vec<FrontDoorEntry>>,
}

/// The result of a timer invocation whose reply had the host's shape.
#[derive(Debug, Clone)]
pub struct TimerOutcome {
    pub status: u16,
    pub logs: Vec<String>,
    pub body: Value,
}

/// A timer invocation being prepared; see [`FunctionsHost::timer`].
pub struct TimerCall<'a> {
    host: &'a FunctionsHost,
    name: String,
    first_run: bool,
    past_due: bool,
    null_status: bool,
    now: Option<DateTime<Utc>>,
}

impl TimerCall<'_> {
    /// `Last` is `0001-01-01T00:00:00` (no offset), as on a function's first run.
    pub fn first_run(mut self, yes: bool) -> Self {
        self.first_run = yes;
        self
    }
    pub fn past_due(mut self, yes: bool) -> Self {
        self.past_due = yes;
        self
    }
    /// Sends `"ScheduleStatus": null`, as the host does without `useMonitor`.
    pub fn null_schedule_status(mut self) -> Self {
        self.null_status = true;
        self
    }
    /// The host clock (`Metadata.sys.UtcNow`); default: now.
    pub fn at(mut self, now: DateTime<Utc>) -> Self {
        self.now = Some(now);
        self
    }
    /// Sends the invocation; panics unless the reply is JSON in the host's reply shape (any status).
    pub async fn send(self) -> TimerOutcome {
        self.host.send_timer(self).await
    }
}

/// A running emulated Functions host with its handler process.
pub struct FunctionsHost {
    front: SocketAddr,
    shared: Arc<Shared>,
    settings: BTreeMap<String, String>,
    child: Option<Child>,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
    tasks: Vec<JoinHandle<()>>,
    /// Keeps the default data directory alive as long as the host.
    _scratch: Option<tempfile::TempDir>,
}

fn free_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

/// Expands `%NAME%` from `settings`, then the process environment; unknown names stay as is.
pub fn expand_settings(arg: &str, settings: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(start) = rest.find('%') {
        let Some(len) = rest[start + 1..].find('%') else {
            break;
        };
        let name = &rest[start + 1..start + 1 + len];
        out.push_str(&rest[..start]);
        match settings.get(name).cloned().or_else(|| std::env::var(name).ok()) {
            Some(v) if !name.is_empty() => out.push_str(&v),
            _ => out.push_str(&rest[start..start + len + 2]),
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

impl FunctionsHost {
    /// Starts the real `suroga` binary under the emulated host with this repository's host.json,
    /// `handlers/` and local.settings.json.example, plus `overrides`. `SUROGA_DATA_DIR` defaults to
    /// a fresh temporary folder. Panics (failing the test) if the app cannot start.
    pub async fn start(overrides: &[(&str, &str)]) -> Self {
        Self::start_in(None, overrides).await
    }

    /// As [`FunctionsHost::start`], passing HTTP requests in `mode` (`None`: as a current host).
    pub async fn start_in(mode: Option<HttpMode>, overrides: &[(&str, &str)]) -> Self {
        match Self::try_start(HostConfig { mode, ..HostConfig::suroga(overrides) }).await {
            Ok(h) => h,
            Err(e) => panic!("the Functions host could not start the app: {e}"),
        }
    }

    /// Starts any handler program under the emulated host.
    pub async fn try_start(config: HostConfig) -> Result<Self, HostError> {
        let app = App::load(&config.layout)?;
        let mode = app.mode(config.mode)?;
        let mut settings = BTreeMap::new();
        if let Some(file) = &config.layout.settings_file {
            if let Some(values) = read_json(file)?["Values"].as_object() {
                for (k, v) in values {
                    settings.insert(k.clone(), v.as_str().map(String::from).unwrap_or_else(|| v.to_string()));
                }
            }
        }
        let scratch = tempfile::tempdir().map_err(|source| HostError::Io { path: std::env::temp_dir(), source })?;
        settings.insert("SUROGA_DATA_DIR".into(), scratch.path().join("data").display().to_string());
        for (k, v) in &config.overrides {
            settings.insert(k.clone(), v.clone());
        }
        let port = free_port();
        settings.insert("FUNCTIONS_CUSTOMHANDLER_PORT".into(), port.to_string());
        let args: Vec<String> = app.arguments.iter().map(|a| expand_settings(a, &settings)).collect();

        let mut child = Command::new(&config.program)
            .args(&args)
            .envs(&settings)
            // The handler's working directory is the app root; a scratch one keeps relative paths
            // (like the example's ./data) out of the repository.
            .current_dir(scratch.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| HostError::Io { path: config.program.clone(), source })?;
        let (stdout, stderr) = (Arc::new(Lines::default()), Arc::new(Lines::default()));
        let mut tasks = vec![
            capture(child.stdout.take().expect("piped stdout"), stdout.clone()),
            capture(child.stderr.take().expect("piped stderr"), stderr.clone()),
        ];
        let backend = SocketAddr::from(([127, 0, 0, 1], port));
        let client = http_client();

        // Readiness: any HTTP answer to GET / within the deadline.
        let deadline = tokio::time::Instant::now() + config.readiness_deadline;
        let mut tick = tokio::time::interval(READINESS_POLL);
        loop {
            tick.tick().await;
            if let Some(status) =
                child.try_wait().map_err(|source| HostError::Io { path: config.program.clone(), source })?
            {
                // Let the capture tasks drain what the process wrote before it exited.
                for t in tasks.drain(..) {
                    let _ = t.await;
                }
                return Err(HostError::Exited { status, stderr: stderr.snapshot().join("\n") });
            }
            let probe = client.get(format!("http://{backend}/")).timeout(Duration::from_secs(1)).send().await;
            if probe.is_ok() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(HostError::NotReady(config.readiness_deadline, stderr.snapshot().join("\n")));
            }
        }

        let mut host = Self::open_front_door(app, mode, backend, client).await;
        host.settings = settings;
        host.child = Some(child);
        host.stdout = stdout;
        host.stderr = stderr;
        host.tasks.extend(tasks);
        host._scratch = Some(scratch);
        Ok(host)
    }

    /// Fronts a handler that is already listening on `backend` (e.g. an in-process router), with
    /// the routing of the app in `layout`. No process is started or captured.
    pub async fn front(backend: SocketAddr, layout: &HostLayout, mode: Option<HttpMode>) -> Result<Self, HostError> {
        let app = App::load(layout)?;
        let mode = app.mode(mode)?;
        Ok(Self::open_front_door(app, mode, backend, http_client()).await)
    }

    async fn open_front_door(app: App, mode: HttpMode, backend: SocketAddr, client: reqwest::Client) -> Self {
        let shared = Arc::new(Shared { app, mode, backend, client, journal: Mutex::new(Vec::new()) });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the front door");
        let front = listener.local_addr().expect("front door address");
        let router = axum::Router::new().fallback(front_door).with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            front,
            shared,
            settings: BTreeMap::new(),
            child: None,
            stdout: Arc::default(),
            stderr: Arc::default(),
            tasks: vec![server],
            _scratch: None,
        }
    }

    /// The public endpoint, e.g. `http://127.0.0.1:40123`; API requests go to `{url}/api/...`.
    pub fn url(&self) -> String {
        format!("http://{}", self.front)
    }

    /// The handler's own address (what the host calls); bypasses the front door.
    pub fn handler_addr(&self) -> SocketAddr {
        self.shared.backend
    }

    /// How this host passes HTTP requests to the handler.
    pub fn mode(&self) -> HttpMode {
        self.shared.mode
    }

    /// The app as indexed from host.json and the function.json files.
    pub fn app(&self) -> &App {
        &self.shared.app
    }

    /// The effective app setting passed to the handler (settings file, overrides, port, data dir).
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings.get(name).map(String::as_str)
    }

    /// Every request the front door received, with the function that took it.
    pub fn front_door_journal(&self) -> Vec<FrontDoorEntry> {
        self.shared.journal.lock().unwrap().clone()
    }

    /// Lines the handler wrote to stdout so far (the host logs them as Information).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.snapshot()
    }

    /// Lines the handler wrote to stderr so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.snapshot()
    }

    /// The stderr lines the host would log as Error: those not containing "warn".
    pub fn error_lines(&self) -> Vec<String> {
        self.stderr_lines().into_iter().filter(|l| !l.to_ascii_lowercase().contains("warn")).collect()
    }

    /// Waits until a stdout line satisfies `pred` and returns it; panics after `timeout`.
    pub async fn wait_for_stdout(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let wait = async {
            loop {
                let notified = self.stdout.changed.notified();
                if let Some(l) = self.stdout.snapshot().into_iter().find(|l| pred(l)) {
                    return l;
                }
                notified.await;
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(l) => l,
            Err(_) => panic!("no matching stdout line within {timeout:?}; stdout:\n{}", self.stdout_lines().join("\n")),
        }
    }

    /// Whether the handler process has exited (and how); `None` while it runs or when fronting.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Prepares a timer invocation of the declared timer function `name`.
    pub fn timer(&self, name: &str) -> TimerCall<'_> {
        TimerCall {
            host: self,
            name: name.to_string(),
            first_run: false,
            past_due: false,
            null_status: false,
            now: None,
        }
    }

    /// Invokes the timer function `name` like the host and returns the reply's `Logs`; panics
    /// (failing the test) unless the reply is 200 with the host's JSON shape.
    pub async fn invoke_timer(&self, name: &str, first_run: bool, past_due: bool) -> Vec<String> {
        let outcome = self.timer(name).first_run(first_run).past_due(past_due).send().await;
        assert_eq!(
            outcome.status,
            200,
            "timer {name} failed (the host marks the invocation failed): {}\nstderr:\n{}",
            outcome.body,
            self.stderr_lines().join("\n")
        );
        outcome.logs
    }

    async fn send_timer(&self, call: TimerCall<'_>) -> TimerOutcome {
        let name = &call.name;
        let timer = self
            .app()
            .timer(name)
            .unwrap_or_else(|| panic!("no timer function {name} is declared; the host would never call it"))
            .clone();
        let envelope = timer_envelope(
            &timer,
            call.now.unwrap_or_else(Utc::now),
            call.first_run,
            call.past_due,
            call.null_status || !timer.use_monitor,
        );
        let (status, headers, body) =
            post_chunked(self.shared.backend, &format!("/{name}"), &serde_json::to_vec(&envelope).unwrap())
                .await
                .unwrap_or_else(|e| panic!("timer {name}: the handler did not answer: {e}"));
        let ct = headers.get("content-type").cloned().unwrap_or_default();
        assert!(
            !body.is_empty(),
            "timer {name}: empty reply body (status {status}); the real host would wait for functionTimeout and restart the handler"
        );
        assert!(ct.starts_with("application/json"), "timer {name}: reply Content-Type is {ct:?}, not application/json");
        let json: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("timer {name}: reply is not JSON ({e}): {}", String::from_utf8_lossy(&body)));
        assert!(
            json.is_object()
                && json["Outputs"].is_object()
                && json["Logs"].is_array()
                && json.get("ReturnValue").is_some(),
            "timer {name}: reply is not {{\"Outputs\":{{}},\"Logs\":[..],\"ReturnValue\":..}}: {json}"
        );
        let logs = json["Logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                l.as_str().unwrap_or_else(|| panic!("timer {name}: a Logs entry is not a string: {l}")).to_string()
            })
            .collect();
        TimerOutcome { status, logs, body: json }
    }
}

impl Drop for FunctionsHost {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        for t in &self.tasks {
            t.abort();
        }
        if std::thread::panicking() && self.child.is_some() {
            eprintln!("--- handler stdout ---\n{}", self.stdout_lines().join("\n"));
            eprintln!("--- handler stderr ---\n{}", self.stderr_lines().join("\n"));
        }
    }
}

impl fmt::Debug for FunctionsHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionsHost").field("front", &self.front).field("backend", &self.shared.backend).finish()
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().expect("an HTTP client")
}

/// The timer envelope the host posts, per the reference.
pub fn timer_envelope(
    timer: &DeclaredTimer,
    now: DateTime<Utc>,
    first_run: bool,
    past_due: bool,
    null_status: bool,
) -> Value {
    let next = suroga::functions::next_after(&timer.schedule, now).expect("the declared schedule is valid NCRONTAB");
    let offset = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S%.f+00:00").to_string();
    let status = if null_status {
        Value::Null
    } else {
        // The previous occurrence: the latest one not after `now` (searching back a day is enough
        // for the schedules we use; otherwise fall back to a minute ago).
        let last = (1..=1440)
            .map(|m| now - chrono::Duration::minutes(m))
            .filter_map(|t| suroga::functions::next_after(&timer.schedule, t).ok())
            .find(|t| *t <= now)
            .unwrap_or(now - chrono::Duration::minutes(1));
        json!({
            "Last": if first_run { "0001-01-01T00:00:00".to_string() } else { offset(last) },
            "Next": offset(next),
            "LastUpdated": offset(now - chrono::Duration::milliseconds(596)),
        })
    };
    json!({
        "Data": {"timer": {"Schedule": {"AdjustForDST": true}, "ScheduleStatus": status, "IsPastDue": past_due}},
        "Metadata": {"sys": {
            "MethodName": timer.name,
            "UtcNow": now.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            "RandGuid": uuid::Uuid::new_v4().to_string(),
        }},
    })
}

/// POSTs `body` with `Transfer-Encoding: chunked`, as the host sends invocation payloads, and
/// reads the whole reply (status, lowercase headers, decoded body).
pub async fn post_chunked(
    addr: SocketAddr,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, BTreeMap<String, String>, Vec<u8>)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json; charset=utf-8\r\n\
         X-Azure-Functions-InvocationId: {}\r\nX-Azure-Functions-HostVersion: {HOST_VERSION}\r\n\
         User-Agent: Azure-Functions-Host/{HOST_VERSION}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n",
        uuid::Uuid::new_v4(),
        body.len()
    );
    // One write: a handler may answer without reading the body, and a request that is still
    // being written when it closes would end in a reset instead of its reply.
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    request.extend_from_slice(b"\r\n0\r\n\r\n");
    stream.write_all(&request).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let bad =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("malformed HTTP reply: {what}"));
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("status line"))?;
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut rest = &raw[split + 4..];
    let body = if headers.get("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        let mut out = Vec::new();
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n").ok_or_else(|| bad("chunk size"))?;
            let size_text = String::from_utf8_lossy(&rest[..eol]);
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("chunk size"))?;
            rest = &rest[eol + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(..size).ok_or_else(|| bad("short chunk"))?);
            rest = rest.get(size + 2..).ok_or_else(|| bad("chunk end"))?;
        }
        out
    } else {
        match headers.get("content-length").and_then(|l| l.parse::<usize>().ok()) {
            Some(n) => rest.get(..n).ok_or_else(|| bad("short body"))?.to_vec(),
            None => rest.to_vec(),
        }
    };
    Ok((status, headers, body))
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
];

async fn front_door(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let function = shared.app.route(&parts.method, &path).map(|f| f.name.clone());
    shared.journal.lock().unwrap().push(FrontDoorEntry {
        method: parts.method.to_string(),
        uri: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        function: function.clone(),
    });
    if function.is_none() {
        if parts.method == Method::GET && path == "/" {
            // The host answers its own home page; the handler never sees public `GET /`.
            return (StatusCode::OK, [(header::CONTENT_TYPE, "text/html")], "Your Functions 4.0 app is up and running")
                .into_response();
        }
        return StatusCode::NOT_FOUND.into_response();
    }

    match shared.mode {
        HttpMode::Forwarding => forward(&shared, parts, body).await,
        HttpMode::Proxying => proxy(&shared, parts, body).await,
    }
}

/// Headers .NET keeps on `HttpContent`, not on the request: they travel only with a content.
const CONTENT_HEADERS: &[&str] = &[
    "allow",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "expires",
    "last-modified",
];

/// Forwarding mode (the host's `ToHttpRequestMessage`): the request is rebuilt.
async fn forward(shared: &Shared, parts: axum::http::request::Parts, body: Body) -> Response {
    let path = parts.uri.path();
    let query = parts.uri.query().map(reencode_query).filter(|q| !q.is_empty());
    let url = format!("http://{}{}{}", shared.backend, path, query.map(|q| format!("?{q}")).unwrap_or_default());
    // The body goes through only when Content-Length says there is one; chunked bodies are dropped.
    let body = match body_if(declared_length(&parts.headers) > 0, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut headers = HeaderMap::new();
    for (k, v) in &parts.headers {
        // Content headers cannot be request headers in .NET: they are dropped, and only
        // Content-Type comes back, on the content, when there is a body.
        if !HOP_BY_HOP.contains(&k.as_str()) && k != header::USER_AGENT && !CONTENT_HEADERS.contains(&k.as_str()) {
            headers.append(k.clone(), v.clone());
        }
    }
    if !body.is_empty() {
        if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
            headers.insert(header::CONTENT_TYPE, ct.clone());
        }
    }
    let ua = match parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()) {
        Some(orig) => format!("{orig} Azure-Functions-Host/{HOST_VERSION}"),
        None => format!("Azure-Functions-Host/{HOST_VERSION}"),
    };
    headers.insert(
        header::USER_AGENT,
        HeaderValue::from_str(&ua).unwrap_or(HeaderValue::from_static("Azure-Functions-Host")),
    );
    add_invocation_headers(&mut headers);

    let mut request = shared.client.request(parts.method.clone(), url).headers(headers);
    if !body.is_empty() {
        request = request.body(body);
    }
    relay(request.send().await).await
}

/// Request headers YARP never copies (its `RequestUtilities` exclusion list), plus `Host`: the
/// proxied request is addressed to the handler.
const YARP_SKIPPED: &[&str] = &[
    "connection",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authentication-info",
    "proxy-authorization",
    "proxy-features",
    "proxy-instruction",
    "security-scheme",
    "alpn",
    "close",
    "http2-settings",
    "upgrade-insecure-requests",
    "te",
    "alt-svc",
    "host",
];

/// Proxying mode (YARP's `HttpForwarder` with `HttpTransformer.Default`, as the host sets it up).
async fn proxy(shared: &Shared, parts: axum::http::request::Parts, body: Body) -> Response {
    // Path and query exactly as received.
    let url = format!("http://{}{}", shared.backend, parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    // YARP's body detection for HTTP/1.1: Transfer-Encoding, or a Content-Length above 0. YARP
    // streams the body; the bytes are the same.
    let has_body = parts.headers.contains_key(header::TRANSFER_ENCODING) || declared_length(&parts.headers) > 0;
    let body = match body_if(has_body, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut headers = HeaderMap::new();
    for (k, v) in &parts.headers {
        if !YARP_SKIPPED.contains(&k.as_str()) && k != header::CONTENT_LENGTH {
            headers.append(k.clone(), v.clone());
        }
    }
    // A content header on a request without a body makes YARP attach an empty content (its
    // `EmptyHttpContent`), which .NET sends as `Content-Length: 0`: the header stays.
    if !has_body && parts.headers.keys().any(|k| CONTENT_HEADERS.contains(&k.as_str())) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
    // The default transforms: X-Forwarded-* set (not appended), the original Host kept there.
    headers.insert(HeaderName::from_static("x-forwarded-for"), HeaderValue::from_static("127.0.0.1"));
    headers.insert(HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static("http"));
    if let Some(host) = parts.headers.get(header::HOST) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
    }
    add_invocation_headers(&mut headers);

    let request = shared.client.request(parts.method.clone(), url).headers(headers).body(body);
    relay(request.send().await).await
}

/// The request's `Content-Length`, 0 when absent or unreadable.
fn declared_length(headers: &HeaderMap) -> u64 {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).unwrap_or(0)
}

/// The whole body when `has_body`, else nothing (what arrived is not read); 400 if it breaks off.
async fn body_if(has_body: bool, body: Body) -> Result<Bytes, Response> {
    if !has_body {
        return Ok(Bytes::new());
    }
    axum::body::to_bytes(body, usize::MAX).await.map_err(|_| StatusCode::BAD_REQUEST.into_response())
}

/// `X-Azure-Functions-InvocationId` (fresh) and `X-Azure-Functions-HostVersion`, replacing any
/// the caller sent.
fn add_invocation_headers(headers: &mut HeaderMap) {
    headers.insert(
        HeaderName::from_static("x-azure-functions-invocationid"),
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).unwrap(),
    );
    headers.insert(HeaderName::from_static("x-azure-functions-hostversion"), HeaderValue::from_static(HOST_VERSION));
}

/// The handler's response, as is (minus hop-by-hop headers); 500 when it cannot be reached.
async fn relay(sent: reqwest::Result<reqwest::Response>) -> Response {
    match sent {
        Ok(r) => {
            let status = r.status();
            let mut out_headers = HeaderMap::new();
            for (k, v) in r.headers() {
                if !HOP_BY_HOP.contains(&k.as_str()) {
                    out_headers.append(k.clone(), v.clone());
                }
            }
            let bytes = r.bytes().await.unwrap_or_default();
            let mut resp = Response::new(Body::from(bytes));
            *resp.status_mut() = status;
            *resp.headers_mut() = out_headers;
            resp
        }
        // The host answers 500 when the handler cannot be reached.
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

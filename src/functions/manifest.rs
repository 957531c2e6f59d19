//! The function table: which Azure Functions the app declares, and their `function.json` files.
//!
//! HTTP functions come from the API's OpenAPI document (one function per path, with all its
//! methods) plus [`EXTRA_HTTP`]; timer functions come from [`TIMERS`]. [`export`] writes them as
//! `<dir>/<function>/function.json`, so the checked-in `handlers/` folder is generated from the
//! router and cannot drift (a test compares them). Spec: /work/shared/reference/functions-host.md.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    path::{Path, PathBuf},
};

use serde::Serialize;
use utoipa::openapi::OpenApi;

/// The host's HTTP route prefix (`extensions.http.routePrefix` in host.json): empty, so that a
/// function's route is the request path itself. The app serves two roots, `/api/...` (the REST
/// API) and `/app/...` (the web client, whose invitation links must be the same URLs locally and
/// under the host); a prefix of `api` could never reach `/app`.
pub const ROUTE_PREFIX: &str = "";

/// The first path segments the app serves; every HTTP function's route starts with one.
pub const SERVED_ROOTS: [&str; 2] = ["api", "app"];

/// HTTP methods in the order function.json lists them.
pub const METHODS: [&str; 8] = ["get", "post", "put", "patch", "delete", "head", "options", "trace"];

/// An HTTP path the binary serves outside the OpenAPI paths (the document itself, the docs page,
/// the web client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtraHttp {
    /// Full request path (route template), starting with `/api/` or `/app/`.
    pub path: &'static str,
    /// Lowercase methods.
    pub methods: &'static [&'static str],
}

/// HTTP routes served by the binary that the OpenAPI document does not list. Extend as needed.
pub const EXTRA_HTTP: &[ExtraHttp] = &[
    ExtraHttp { path: "/api/v1/openapi.json", methods: &["get"] },
    ExtraHttp { path: "/api/docs", methods: &["get"] },
    // Every page and asset of the web client (a catch-all also matches `/app` itself).
    ExtraHttp { path: "/app/{*path}", methods: &["get", "head"] },
];

/// One HTTP-triggered function, forwarded raw to the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpFunction {
    /// Function (folder) name, e.g. `v1-rooms-room_id`.
    pub name: String,
    /// Route (the request path, as the prefix is empty), e.g. `api/v1/rooms/{room_id}`.
    pub route: String,
    /// Lowercase methods in [`METHODS`] order.
    pub methods: Vec<&'static str>,
}

/// One timer-triggered function. The host calls `POST /{name}` on its schedule; standalone
/// `suroga serve` fires the same job in-process on the same schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerFunction {
    /// Function (folder) name, also the handler's path (`POST /fleet-reconcile`).
    pub name: &'static str,
    /// 6-field NCRONTAB schedule in UTC (see [`super::ncrontab`]).
    pub schedule: &'static str,
    /// What the job does, for humans.
    pub description: &'static str,
}

/// The timer jobs. Both must be idempotent: after a lost lease the host may replay an occurrence.
pub const TIMERS: &[TimerFunction] = &[
    TimerFunction {
        name: "fleet-reconcile",
        schedule: "0 */1 * * * *",
        description: "start and deallocate Janus hosts around bookings; open and close session rooms",
    },
    TimerFunction {
        name: "purge-keys",
        schedule: "0 30 3 * * *",
        description: "forget Idempotency-Keys older than 24 hours",
    },
    TimerFunction {
        name: "deliver-webhooks",
        schedule: "30 * * * * *",
        description: "send due webhook events (first attempts and retries); dead-letter the too old",
    },
];

/// The next instant strictly after `now` at which any timer fires, with every timer due then (in
/// [`TIMERS`] order): what standalone `suroga serve` sleeps until, to fire the same jobs the host
/// would. Timers whose schedule is invalid or never fires are skipped (the manifest tests keep
/// them valid). `None` only if no timer ever fires.
pub fn next_timers(
    now: chrono::DateTime<chrono::Utc>,
) -> Option<(chrono::DateTime<chrono::Utc>, Vec<&'static TimerFunction>)> {
    let due: Vec<_> =
        TIMERS.iter().filter_map(|t| super::ncrontab::next_after(t.schedule, now).ok().map(|at| (t, at))).collect();
    let first = due.iter().map(|(_, at)| *at).min()?;
    Some((first, due.into_iter().filter(|(_, at)| *at == first).map(|(t, _)| t).collect()))
}

/// Why the function table cannot be deployed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The path is not under `/api/` or `/app/` (see [`SERVED_ROOTS`]).
    #[error("path {path:?} is not under /api/ or /app/")]
    OutsidePrefix { path: String },
    /// The derived name breaks `^[a-z][a-z0-9_\-]{{0,127}}$` or is the reserved `host`.
    #[error("function name {name:?} is not a valid Azure Functions name")]
    InvalidName { name: String },
    /// Two functions got the same name.
    #[error("two functions are named {name:?}")]
    DuplicateName { name: String },
    /// The route starts with a segment the host reserves.
    #[error("route {route:?} starts with the reserved segment admin or runtime")]
    ReservedRoute { route: String },
    /// A path has no methods.
    #[error("API path {path:?} has no HTTP methods")]
    NoMethods { path: String },
    /// A timer schedule is not a valid 6-field NCRONTAB expression.
    #[error("timer {name:?}: {source}")]
    Schedule { name: String, source: super::ncrontab::ScheduleError },
}

/// Why [`export`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ExportError + '_ {
    move |source| ExportError::Io { path: path.to_path_buf(), source }
}

/// Whether `name` is a valid function name: `^[a-z][a-z0-9_\-]{0,127}$` and not `host`.
pub fn is_valid_function_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 128
        && name != "host"
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// The function name for a route: segments joined by `-`, braces (and a catch-all's `*`) dropped,
/// anything else outside `[a-z0-9_]` mapped to `_` (`v1/rooms/{room_id}` → `v1-rooms-room_id`).
pub fn function_name(route: &str) -> String {
    route
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|seg| {
            seg.trim_start_matches('{')
                .trim_end_matches('}')
                .trim_start_matches('*')
                .chars()
                .map(|c| match c.to_ascii_lowercase() {
                    c @ ('a'..='z' | '0'..='9' | '_') => c,
                    _ => '_',
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn path_methods(item: &utoipa::openapi::PathItem) -> impl Iterator<Item = &'static str> + '_ {
    let ops = [&item.get, &item.post, &item.put, &item.patch, &item.delete, &item.head, &item.options, &item.trace];
    METHODS.into_iter().zip(ops).filter(|(_, op)| op.is_some()).map(|(m, _)| m)
}

/// One HTTP function per OpenAPI path (all its methods), plus [`EXTRA_HTTP`] (merged by path).
/// The route is the path; the name leaves out the `api/` root, so API functions keep names like
/// `v1-rooms-room_id` and the web client's is `app-path`. Sorted by name. Errors: a path outside
/// [`SERVED_ROOTS`], an invalid or duplicate name, a reserved route, a path without methods.
pub fn http_functions(api: &OpenApi) -> Result<Vec<HttpFunction>, ManifestError> {
    let mut by_path: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    for (path, item) in api.paths.paths.iter() {
        by_path.entry(path.clone()).or_default().extend(path_methods(item));
    }
    for extra in EXTRA_HTTP {
        let methods = extra.methods.iter().filter_map(|m| METHODS.iter().copied().find(|k| k == m));
        by_path.entry(extra.path.to_string()).or_default().extend(methods);
    }
    let mut functions = Vec::with_capacity(by_path.len());
    let mut names = BTreeSet::new();
    for (path, methods) in by_path {
        let route = path.trim_start_matches('/').trim_end_matches('/');
        let root = route.split('/').next().unwrap_or_default();
        let served = SERVED_ROOTS.contains(&root) && route.len() > root.len() + 1;
        if !served {
            return Err(ManifestError::OutsidePrefix { path });
        }
        let first = route.split('/').next().unwrap_or_default().to_ascii_lowercase();
        if first == "admin" || first == "runtime" {
            return Err(ManifestError::ReservedRoute { route: route.to_string() });
        }
        if methods.is_empty() {
            return Err(ManifestError::NoMethods { path });
        }
        let name = function_name(route.strip_prefix("api/").unwrap_or(route));
        if !is_valid_function_name(&name) {
            return Err(ManifestError::InvalidName { name });
        }
        if !names.insert(name.clone()) {
            return Err(ManifestError::DuplicateName { name });
        }
        let methods = METHODS.into_iter().filter(|m| methods.contains(m)).collect();
        functions.push(HttpFunction { name, route: route.to_string(), methods });
    }
    functions.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(functions)
}

// Field order here is the order in the written file.
#[derive(Serialize)]
struct FunctionJson {
    bindings: Vec<Binding>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Binding {
    HttpTrigger {
        r#type: &'static str,
        direction: &'static str,
        name: &'static str,
        #[serde(rename = "authLevel")]
        auth_level: &'static str,
        methods: Vec<&'static str>,
        route: String,
    },
    HttpOut {
        r#type: &'static str,
        direction: &'static str,
        name: &'static str,
    },
    TimerTrigger {
        r#type: &'static str,
        direction: &'static str,
        name: &'static str,
        schedule: &'static str,
        #[serde(rename = "useMonitor")]
        use_monitor: bool,
    },
}

fn render(f: &FunctionJson) -> String {
    // Serializing plain structs of strings cannot fail.
    let mut s = serde_json::to_string_pretty(f).unwrap_or_default();
    s.push('\n');
    s
}

impl HttpFunction {
    /// The function.json text: exactly one anonymous `httpTrigger` and one `http` out, the only
    /// shape the host forwards raw. Pretty JSON with a trailing newline.
    pub fn function_json(&self) -> String {
        render(&FunctionJson {
            bindings: vec![
                Binding::HttpTrigger {
                    r#type: "httpTrigger",
                    direction: "in",
                    name: "req",
                    auth_level: "anonymous",
                    methods: self.methods.clone(),
                    route: self.route.clone(),
                },
                Binding::HttpOut { r#type: "http", direction: "out", name: "res" },
            ],
        })
    }
}

impl TimerFunction {
    /// The function.json text: one `timerTrigger` named `timer` with the schedule monitor on
    /// (so the host sends `ScheduleStatus` and detects past-due runs).
    pub fn function_json(&self) -> String {
        render(&FunctionJson {
            bindings: vec![Binding::TimerTrigger {
                r#type: "timerTrigger",
                direction: "in",
                name: "timer",
                schedule: self.schedule,
                use_monitor: true,
            }],
        })
    }
}

/// Every function's (name, function.json text), sorted by name; the whole deployable table.
/// Errors: any [`ManifestError`], including timer names and schedules that are invalid, and names
/// shared between HTTP and timer functions.
pub fn function_files(api: &OpenApi) -> Result<BTreeMap<String, String>, ManifestError> {
    let mut files = BTreeMap::new();
    for f in http_functions(api)? {
        files.insert(f.name.clone(), f.function_json());
    }
    for t in TIMERS {
        if !is_valid_function_name(t.name) {
            return Err(ManifestError::InvalidName { name: t.name.to_string() });
        }
        super::ncrontab::Schedule::parse(t.schedule)
            .map_err(|source| ManifestError::Schedule { name: t.name.to_string(), source })?;
        if files.insert(t.name.to_string(), t.function_json()).is_some() {
            return Err(ManifestError::DuplicateName { name: t.name.to_string() });
        }
    }
    Ok(files)
}

/// Writes `<dir>/<function>/function.json` for every function and removes stale function folders
/// (subfolders of `dir` holding a function.json that is no longer in the table); other entries of
/// `dir` are left alone. Idempotent; files whose content is unchanged are not rewritten.
/// Errors: [`ExportError::Manifest`] before anything is written, [`ExportError::Io`].
pub fn export(dir: &Path, api: &OpenApi) -> Result<(), ExportError> {
    let files = function_files(api)?;
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        let stale = path.is_dir()
            && path.join("function.json").is_file()
            && !path.file_name().and_then(|n| n.to_str()).is_some_and(|n| files.contains_key(n));
        if stale {
            fs::remove_dir_all(&path).map_err(io_err(&path))?;
        }
    }
    for (name, text) in &files {
        let folder = dir.join(name);
        fs::create_dir_all(&folder).map_err(io_err(&folder))?;
        let file = folder.join("function.json");
        if fs::read_to_string(&file).ok().as_deref() != Some(text.as_str()) {
            fs::write(&file, text).map_err(io_err(&file))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::openapi::{
        OpenApiBuilder,
        path::{HttpMethod, OperationBuilder, PathItem, PathsBuilder},
    };

    fn api(paths: &[(&str, &[HttpMethod])]) -> OpenApi {
        let mut b = PathsBuilder::new();
        for (p, ms) in paths {
            for m in ms.iter() {
                b = b.path(*p, PathItem::new(m.clone(), OperationBuilder::new().build()));
            }
        }
        OpenApiBuilder::new().paths(b.build()).build()
    }

    #[test]
    fn one_function_per_path_with_all_its_methods() {
        let api = api(&[
            ("/api/v1/rooms/{room_id}", &[HttpMethod::Delete, HttpMethod::Get]),
            ("/api/v1/rooms", &[HttpMethod::Post, HttpMethod::Get]),
        ]);
        let fs = http_functions(&api).unwrap();
        let room = fs.iter().find(|f| f.name == "v1-rooms-room_id").unwrap();
        assert_eq!(room.route, "api/v1/rooms/{room_id}");
        assert_eq!(room.methods, ["get", "delete"]);
        let rooms = fs.iter().find(|f| f.name == "v1-rooms").unwrap();
        assert_eq!(rooms.methods, ["get", "post"]);
        let names: Vec<_> = fs.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["app-path", "docs", "v1-openapi_json", "v1-rooms", "v1-rooms-room_id"]);
        let app = fs.iter().find(|f| f.name == "app-path").unwrap();
        assert_eq!((app.route.as_str(), app.methods.as_slice()), ("app/{*path}", ["get", "head"].as_slice()));
    }

    #[test]
    fn http_function_json_matches_the_reference_shape() {
        let f = HttpFunction {
            name: "v1-rooms-room_id".into(),
            route: "v1/rooms/{room_id}".into(),
            methods: vec!["get", "delete"],
        };
        let v: serde_json::Value = serde_json::from_str(&f.function_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"bindings":[
                {"type":"httpTrigger","direction":"in","name":"req","authLevel":"anonymous","methods":["get","delete"],"route":"v1/rooms/{room_id}"},
                {"type":"http","direction":"out","name":"res"}]})
        );
        assert!(f.function_json().ends_with("}\n"));
        assert!(f.function_json().find("\"type\"").unwrap() < f.function_json().find("\"direction\"").unwrap());
    }

    #[test]
    fn timer_function_json_matches_the_reference_shape() {
        let v: serde_json::Value = serde_json::from_str(&TIMERS[0].function_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"bindings":[{"type":"timerTrigger","direction":"in","name":"timer","schedule":"0 */1 * * * *","useMonitor":true}]})
        );
    }

    #[test]
    fn timer_table_has_the_jobs_on_valid_schedules() {
        let files = function_files(&api(&[])).unwrap();
        assert!(files.contains_key("fleet-reconcile"));
        assert!(files.contains_key("purge-keys"));
        assert!(files.contains_key("deliver-webhooks"));
        for t in TIMERS {
            crate::functions::ncrontab::Schedule::parse(t.schedule).unwrap();
        }
    }

    #[test]
    fn next_timers_gives_every_timer_due_at_the_earliest_instant() {
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        let (when, due) = next_timers(at("2026-11-30T02:58:30Z")).unwrap();
        assert_eq!(when, at("2026-11-30T02:59:00Z"));
        assert_eq!(due.iter().map(|t| t.name).collect::<Vec<_>>(), ["fleet-reconcile"]);
        let (when, due) = next_timers(at("2026-11-30T03:29:30Z")).unwrap();
        assert_eq!(when, at("2026-11-30T03:30:00Z"));
        assert_eq!(due.iter().map(|t| t.name).collect::<Vec<_>>(), ["fleet-reconcile", "purge-keys"]);
    }

    #[test]
    fn paths_outside_the_prefix_are_refused() {
        let e = http_functions(&api(&[("/v1/rooms", &[HttpMethod::Get])])).unwrap_err();
        assert_eq!(e, ManifestError::OutsidePrefix { path: "/v1/rooms".into() });
    }

    #[test]
    fn the_hosts_reserved_roots_are_outside_the_served_ones() {
        for p in ["/admin/x", "/runtime/webhooks", "/api", "/app"] {
            let e = http_functions(&api(&[(p, &[HttpMethod::Get])])).unwrap_err();
            assert_eq!(e, ManifestError::OutsidePrefix { path: p.into() });
        }
    }

    #[test]
    fn colliding_names_are_refused() {
        let e = http_functions(&api(&[("/api/v1/a/{b}", &[HttpMethod::Get]), ("/api/v1/a/b", &[HttpMethod::Post])]))
            .unwrap_err();
        assert_eq!(e, ManifestError::DuplicateName { name: "v1-a-b".into() });
    }

    #[test]
    fn names_that_start_with_a_digit_are_refused() {
        let e = http_functions(&api(&[("/api/1x", &[HttpMethod::Get])])).unwrap_err();
        assert_eq!(e, ManifestError::InvalidName { name: "1x".into() });
    }

    #[test]
    fn name_rules() {
        assert!(is_valid_function_name("v1-rooms-room_id"));
        assert!(!is_valid_function_name("host"));
        assert!(!is_valid_function_name("Rooms"));
        assert!(!is_valid_function_name(""));
        assert!(!is_valid_function_name(&"a".repeat(129)));
        assert!(is_valid_function_name(&"a".repeat(128)));
        assert_eq!(function_name("v1/Rooms/{room-id}/join.json"), "v1-rooms-room_id-join_json");
    }

    #[test]
    fn export_writes_every_function_and_removes_only_stale_function_folders() {
        let dir = std::env::temp_dir().join(format!("suroga-export-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(dir.join("old-fn")).unwrap();
        fs::write(dir.join("old-fn/function.json"), "{}").unwrap();
        fs::create_dir_all(dir.join("notes")).unwrap();
        fs::write(dir.join("host.json"), "{}").unwrap();
        let api = api(&[("/api/v1/rooms", &[HttpMethod::Get])]);
        export(&dir, &api).unwrap();
        assert!(!dir.join("old-fn").exists());
        assert!(dir.join("notes").is_dir());
        assert!(dir.join("host.json").is_file());
        let mut written: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("function.json").is_file())
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        written.sort();
        assert_eq!(
            written,
            ["app-path", "deliver-webhooks", "docs", "fleet-reconcile", "purge-keys", "v1-openapi_json", "v1-rooms"]
        );
        assert_eq!(
            fs::read_to_string(dir.join("v1-rooms/function.json")).unwrap(),
            function_files(&api).unwrap()["v1-rooms"]
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}

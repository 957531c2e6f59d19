//! Local Janus hosts: a private Janus process per host, from the templates in `infra/janus/`.
//!
//! A [`LocalJanusHost`] owns a folder (`<data_dir>/janus/<name>`) with the rendered `.jcfg`
//! files, `plugins/ transports/ events/ loggers/` holding symlinks to only the modules it needs,
//! and `janus.log` (Janus's output, never our stdout). It picks free loopback ports below the
//! kernel's ephemeral range, starts `janus -F <folder>`, waits until it answers on all three of
//! its listeners (a taken port fails one listener, not Janus), stops with SIGTERM, and is killed
//! when dropped (and when our process dies: `PR_SET_PDEATHSIG`). Start and stop repeat freely.
//!
//! [`LocalPower`] is the `FLEET=local` power backend over several such hosts (`local-1`,
//! `local-2`, ...): `start` runs Janus, `deallocate` stops it, the power state is whether the
//! process is alive. It owns the processes; [`super::janus_hosts::JanusHosts`] only talks to them
//! by URL. The hosts are started at service start ([`LocalPower::start_all`]) so the API's
//! synchronous room creation works at once and every host's ports are proven (its URLs never
//! change afterwards); the reconciler then deallocates the idle ones and starts them again around
//! bookings. A room created while its host is off waits in the store until the host is started.

use std::{
    fs,
    io::{self, Write},
    net::TcpListener,
    os::unix::fs::{OpenOptionsExt, symlink},
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use std::collections::BTreeMap;

use async_trait::async_trait;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

use super::power::{PermanentCause, PowerControl, PowerError, PowerOutcome, PowerState, TransientCause};
use crate::config::{Config, Secret};
use crate::janus::templates::{self, JanusConfigParams, TemplateError};
use crate::janus::{JanusClient, JanusClientConfig};

/// The transports a host's `GET /janus/info` lists once both its API listeners are up.
const TRANSPORTS: &[&str] = &["janus.transport.http", "janus.transport.websockets"];
/// The plugin `GET /janus/info` lists once it loaded.
const VIDEOROOM: &str = "janus.plugin.videoroom";

/// Where Debian's `janus` package installs its modules.
pub const DEFAULT_MODULES_DIR: &str = "/usr/lib/x86_64-linux-gnu/janus";

/// The modules a host loads, by kind folder: VideoRoom, HTTP and WebSockets, the event handler.
const MODULES: &[(&str, &str)] = &[
    ("plugins", "libjanus_videoroom.so"),
    ("transports", "libjanus_http.so"),
    ("transports", "libjanus_websockets.so"),
    ("events", "libjanus_sampleevh.so"),
];

/// Why a local host could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum LocalHostError {
    /// No Janus binary or modules where expected.
    #[error("Janus is not installed ({path} is missing): install it with `apt-get install janus`")]
    JanusMissing { path: PathBuf },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("Janus configuration: {0}")]
    Template(#[from] TemplateError),
    /// Janus exited while starting; see its log.
    #[error("Janus exited while starting ({status}); see {log}")]
    Exited { status: ExitStatus, log: PathBuf },
    /// Janus logged a fatal error while starting (most often one of its ports was taken by
    /// another process: Janus then runs on without that listener); it was killed.
    #[error("Janus failed while starting: {line}; see {log}")]
    StartFailed { line: String, log: PathBuf },
    /// Janus did not answer on all its listeners before the deadline; it was killed.
    #[error("Janus did not answer within {after:?} (its log ends: {tail}); see {log}")]
    NotReady { after: Duration, tail: String, log: PathBuf },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> LocalHostError {
    let context = context.into();
    move |source| LocalHostError::Io { context, source }
}

/// The credentials a Janus host is configured with.
#[derive(Clone, Serialize, Deserialize)]
pub struct HostSecrets {
    /// Janus `api_secret` (the server's `apisecret`).
    pub api_secret: String,
    /// Janus `admin_secret` for the admin API (loopback only).
    pub admin_secret: String,
    /// VideoRoom `admin_key`, needed to create rooms.
    pub admin_key: String,
    /// `token_auth_secret` for signed client tokens.
    pub token_secret: String,
    /// The event handler's password (basic auth, user `janus`) for the service's events route.
    /// Empty in files written before it existed: [`HostSecrets::load_or_generate`] fills it in.
    #[serde(default)]
    pub events_secret: String,
}

impl std::fmt::Debug for HostSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostSecrets(***)")
    }
}

impl HostSecrets {
    /// Fresh random secrets (32 alphanumeric characters each).
    pub fn generate() -> Self {
        let random = || -> String {
            rand::thread_rng().sample_iter(rand::distributions::Alphanumeric).take(32).map(char::from).collect()
        };
        Self {
            api_secret: random(),
            admin_secret: random(),
            admin_key: random(),
            token_secret: random(),
            events_secret: random(),
        }
    }

    /// Reads `path` (JSON) when it exists, or generates secrets and writes them there with
    /// mode 0600, so a restarted service finds the same credentials.
    pub fn load_or_generate(path: &Path) -> Result<Self, LocalHostError> {
        match fs::read(path) {
            Ok(bytes) => {
                let mut s: Self = serde_json::from_slice(&bytes).map_err(|e| LocalHostError::Io {
                    context: format!("reading {}", path.display()),
                    source: io::Error::new(io::ErrorKind::InvalidData, e),
                })?;
                if s.events_secret.is_empty() {
                    // A file from before the event handler had a password: add one, kept from now on.
                    s.events_secret = Self::generate().events_secret;
                    write_private(path, &serde_json::to_vec_pretty(&s).expect("secrets serialize"))?;
                }
                Ok(s)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let s = Self::generate();
                if let Some(dir) = path.parent() {
                    crate::files::create_private_dir(dir).map_err(io_err(format!("creating {}", dir.display())))?;
                }
                write_private(path, &serde_json::to_vec_pretty(&s).expect("secrets serialize"))?;
                Ok(s)
            }
            Err(e) => Err(io_err(format!("reading {}", path.display()))(e)),
        }
    }
}

/// Where Janus is and how long to wait for it.
#[derive(Debug, Clone)]
pub struct LocalJanusOptions {
    /// The Janus binary (default `/usr/bin/janus`).
    pub janus_bin: PathBuf,
    /// The folder with `plugins/ transports/ events/ loggers/` of the installed Janus.
    pub modules_dir: PathBuf,
    /// Longest wait from launch to Janus answering on all its listeners (default 10 s).
    pub ready_timeout: Duration,
    /// Longest wait after SIGTERM before SIGKILL (default 10 s).
    pub stop_timeout: Duration,
    /// Event handler backend URL; `None` disables the event handler.
    pub events_backend: Option<String>,
}

impl Default for LocalJanusOptions {
    fn default() -> Self {
        Self {
            janus_bin: PathBuf::from("/usr/bin/janus"),
            modules_dir: PathBuf::from(DEFAULT_MODULES_DIR),
            ready_timeout: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(10),
            events_backend: None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Ports {
    http: u16,
    admin: u16,
    ws: u16,
}

/// A private Janus process on loopback. Not `Clone`: one owner starts and stops it.
#[derive(Debug)]
pub struct LocalJanusHost {
    name: String,
    dir: PathBuf,
    secrets: HostSecrets,
    options: LocalJanusOptions,
    ports: Ports,
    /// True once Janus answered on `ports`: later starts keep them (the URLs are published).
    ports_proven: bool,
    child: Option<Child>,
}

impl LocalJanusHost {
    /// A stopped host named `name` with its folder `dir` (created on start) and free loopback
    /// ports. Nothing runs until [`start`](Self::start).
    pub fn new(
        name: &str,
        dir: PathBuf,
        secrets: HostSecrets,
        options: LocalJanusOptions,
    ) -> Result<Self, LocalHostError> {
        // Janus resolves the folders in its configuration itself: give it absolute paths.
        let dir = std::path::absolute(&dir).map_err(io_err(format!("resolving {}", dir.display())))?;
        Ok(Self {
            name: name.to_string(),
            dir,
            secrets,
            options,
            ports: free_ports()?,
            ports_proven: false,
            child: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    /// The host's folder (configuration, module links, `janus.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Janus's output.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("janus.log")
    }
    pub fn secrets(&self) -> &HostSecrets {
        &self.secrets
    }
    /// The HTTP API root for the server (`http://127.0.0.1:<port>/janus`). The first start may
    /// move to other ports if these were taken meanwhile: read it after `start`.
    pub fn backend_url(&self) -> String {
        format!("http://127.0.0.1:{}/janus", self.ports.http)
    }
    /// The HTTP API root for clients (the same as the backend URL on loopback).
    pub fn public_http_url(&self) -> String {
        self.backend_url()
    }
    /// The WebSocket URL for clients (`ws://127.0.0.1:<port>`).
    pub fn public_ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.ports.ws)
    }
    /// The OS process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// True while the Janus process is alive.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Starts Janus and waits until it answers. Idempotent: a running host is left alone.
    /// On the first start, a port taken meanwhile by someone else makes Janus exit or fail one
    /// listener; it is then retried on fresh ports (up to three times). Later starts keep the
    /// ports (their URLs are published) and fail with the reason.
    /// Errors: [`LocalHostError::JanusMissing`], `Exited`, `StartFailed` and `NotReady` (the
    /// process is killed), `Io`.
    ///
    /// Janus gets SIGKILL when the thread that started it exits (`PR_SET_PDEATHSIG` is per
    /// thread): call this from a runtime worker or the main thread, not from a short-lived
    /// thread such as one of tokio's blocking pool.
    #[tracing::instrument(level = "info", skip(self), fields(host = %self.name))]
    pub async fn start(&mut self) -> Result<(), LocalHostError> {
        if self.is_running() {
            return Ok(());
        }
        self.child = None;
        if !self.options.janus_bin.exists() {
            return Err(LocalHostError::JanusMissing { path: self.options.janus_bin.clone() });
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.launch().await {
                Ok(()) => {
                    self.ports_proven = true;
                    tracing::info!(url = %self.backend_url(), "local Janus host is up");
                    return Ok(());
                }
                Err(e @ (LocalHostError::Exited { .. } | LocalHostError::StartFailed { .. }))
                    if !self.ports_proven && attempt < 3 =>
                {
                    tracing::warn!(attempt, error = %e, "Janus did not start; retrying on fresh ports");
                    self.ports = free_ports()?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn launch(&mut self) -> Result<(), LocalHostError> {
        self.write_folder()?;
        let log_path = self.log_path();
        let log = fs::File::create(&log_path).map_err(io_err(format!("creating {}", log_path.display())))?;
        let log_err = log.try_clone().map_err(io_err("duplicating the log handle"))?;
        let mut cmd = Command::new(&self.options.janus_bin);
        cmd.arg("-F").arg(&self.dir).arg("-o").stdin(Stdio::null()).stdout(log).stderr(log_err).kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe and touches only the child's own state.
        unsafe {
            cmd.pre_exec(|| {
                // Janus must not outlive us, even if we are killed without running destructors.
                // SIGKILL, not SIGTERM: a Janus whose parent is gone may hang in its graceful
                // shutdown (its event handler still posting to us) and keep its ports for good.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => LocalHostError::JanusMissing { path: self.options.janus_bin.clone() },
            _ => io_err("starting janus")(e),
        })?;
        self.child = Some(child);

        let probe = JanusClient::new(JanusClientConfig {
            api_secret: Secret::new(&self.secrets.api_secret),
            admin_key: None,
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_millis(500),
        })
        .map_err(|e| LocalHostError::Io {
            context: "building the readiness probe".into(),
            source: io::Error::other(e.to_string()),
        })?;
        let deadline = tokio::time::Instant::now() + self.options.ready_timeout;
        loop {
            let child = self.child.as_mut().expect("just spawned");
            if let Some(status) = child.try_wait().map_err(io_err("waiting for janus"))? {
                self.child = None;
                return Err(LocalHostError::Exited { status, log: log_path });
            }
            // The log is read after the probe: once every listener answers, Janus has finished
            // loading its transports, so a failure it logged while loading them is seen here.
            let ready = self.answers(&probe).await;
            if let Some(line) = startup_failure(&log_path) {
                self.kill().await;
                return Err(LocalHostError::StartFailed { line, log: log_path });
            }
            if ready {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                self.kill().await;
                let tail = log_tail(&log_path, 3);
                return Err(LocalHostError::NotReady { after: self.options.ready_timeout, tail, log: log_path });
            }
            // Janus announces readiness only by answering; poll at a short interval.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// True when Janus answers on all three listeners: `GET /janus/info` lists both transports
    /// (so the WebSocket listener is up: a transport whose listener failed is not listed) and
    /// the VideoRoom plugin, and `GET /admin/info` answers (the admin listener failing does not
    /// fail its transport).
    async fn answers(&self, probe: &JanusClient) -> bool {
        let Ok(info) = probe.info(&self.backend_url()).await else { return false };
        let (transports, plugins) = (&info["transports"], &info["plugins"]);
        if !TRANSPORTS.iter().all(|t| transports.get(t).is_some()) || plugins.get(VIDEOROOM).is_none() {
            return false;
        }
        probe.info(&format!("http://127.0.0.1:{}/admin", self.ports.admin)).await.is_ok()
    }

    /// Stops Janus: SIGTERM, repeated every second, then SIGKILL after `stop_timeout`. Idempotent.
    #[tracing::instrument(level = "info", skip(self), fields(host = %self.name))]
    pub async fn stop(&mut self) -> Result<(), LocalHostError> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let deadline = tokio::time::Instant::now() + self.options.stop_timeout;
        loop {
            if let Some(pid) = child.id() {
                // Janus 1.1.2 sometimes misses a SIGTERM that arrives right after it started
                // answering (it then waits forever); a repeated signal wakes it, and its third
                // signal forces an exit.
                // SAFETY: plain kill(2) on our own child's pid, which has not been reaped yet.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
            }
            let wait = Duration::from_secs(1).min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            match tokio::time::timeout(wait, child.wait()).await {
                Ok(r) => {
                    r.map_err(io_err("waiting for janus to stop"))?;
                    return Ok(());
                }
                Err(_) if tokio::time::Instant::now() < deadline => continue,
                Err(_) => {
                    tracing::warn!("Janus ignored SIGTERM; killing it");
                    child.kill().await.map_err(io_err("killing janus"))?;
                    return Ok(());
                }
            }
        }
    }

    async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Renders the configuration and links the modules into the host's folder.
    fn write_folder(&self) -> Result<(), LocalHostError> {
        let dir = &self.dir;
        crate::files::create_private_dir(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        for kind in ["plugins", "transports", "events", "loggers"] {
            let sub = dir.join(kind);
            fs::create_dir_all(&sub).map_err(io_err(format!("creating {}", sub.display())))?;
        }
        for (kind, file) in MODULES {
            let target = self.options.modules_dir.join(kind).join(file);
            if !target.exists() {
                return Err(LocalHostError::JanusMissing { path: target });
            }
            let link = dir.join(kind).join(file);
            match fs::remove_file(&link) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(format!("replacing {}", link.display()))(e)),
            }
            symlink(&target, &link).map_err(io_err(format!("linking {}", link.display())))?;
        }
        let folder = dir.to_str().ok_or_else(|| LocalHostError::Io {
            context: format!("{} is not UTF-8", dir.display()),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        let params = JanusConfigParams {
            configs_folder: folder.to_string(),
            modules_folder: folder.to_string(),
            interface: "127.0.0.1".into(),
            server_name: self.name.clone(),
            api_secret: self.secrets.api_secret.clone(),
            admin_secret: self.secrets.admin_secret.clone(),
            token_secret: self.secrets.token_secret.clone(),
            admin_key: self.secrets.admin_key.clone(),
            rtp_port_range: "20000-40000".into(),
            http_ip: "127.0.0.1".into(),
            http_port: self.ports.http,
            http_acl: "127.".into(),
            admin_ip: "127.0.0.1".into(),
            admin_port: self.ports.admin,
            admin_acl: "127.".into(),
            ws_ip: "127.0.0.1".into(),
            ws_port: self.ports.ws,
            ws_acl: "127.".into(),
            events_enabled: self.options.events_backend.is_some(),
            events_backend: self.options.events_backend.clone().unwrap_or_else(|| "http://127.0.0.1:9/".into()),
            events_secret: self.secrets.events_secret.clone(),
        };
        for (file, text) in templates::render_all(&params)? {
            write_private(&dir.join(file), text.as_bytes())?;
        }
        Ok(())
    }
}

impl Drop for LocalJanusHost {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.start_kill();
        }
    }
}

/// `FLEET=local`: local Janus hosts switched on and off as processes. See the module docs.
/// Calls for one host are serialized (a start and a stop never interleave); calls for different
/// hosts run concurrently.
#[derive(Debug)]
pub struct LocalPower {
    hosts: BTreeMap<String, tokio::sync::Mutex<LocalJanusHost>>,
}

/// The name of the `i`-th local host (1-based): `local-1`, `local-2`, ...
pub fn local_host_name(i: usize) -> String {
    format!("local-{i}")
}

impl LocalPower {
    /// A backend over these (stopped or running) hosts, keyed by their names.
    pub fn new(hosts: impl IntoIterator<Item = LocalJanusHost>) -> Self {
        Self { hosts: hosts.into_iter().map(|h| (h.name().to_string(), tokio::sync::Mutex::new(h))).collect() }
    }

    /// The hosts of `FLEET=local`: `FLEET_LOCAL_HOSTS` hosts `local-1..` in
    /// `<data_dir>/janus/<name>`, all with the same credentials: `JANUS_API_SECRET` /
    /// `JANUS_ADMIN_KEY` / `JANUS_TOKEN_SECRET` when all three are set, otherwise those kept in
    /// `<data_dir>/janus/local-1/secrets.json` (generated on first use); `JANUS_EVENTS_SECRET`
    /// when set, otherwise the kept one. Nothing is started.
    pub fn from_config(config: &Config, options: LocalJanusOptions) -> Result<(Self, HostSecrets), LocalHostError> {
        let root = config.data_dir.join("janus");
        let kept = HostSecrets::load_or_generate(&root.join(local_host_name(1)).join("secrets.json"))?;
        let secrets = match (&config.janus_api_secret, &config.janus_admin_key, &config.janus_token_secret) {
            (Some(a), Some(k), Some(t)) => HostSecrets {
                api_secret: a.expose().to_string(),
                admin_key: k.expose().to_string(),
                token_secret: t.expose().to_string(),
                admin_secret: kept.admin_secret,
                events_secret: kept.events_secret,
            },
            _ => kept,
        };
        let secrets = match &config.janus_events_secret {
            Some(e) => HostSecrets { events_secret: e.expose().to_string(), ..secrets },
            None => secrets,
        };
        let hosts = (1..=config.fleet_settings.local_hosts.max(1))
            .map(|i| {
                let name = local_host_name(i);
                LocalJanusHost::new(&name, root.join(&name), secrets.clone(), options.clone())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((Self::new(hosts), secrets))
    }

    /// Host names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.hosts.keys().cloned().collect()
    }

    /// The host's URLs as `(backend/public HTTP, WebSocket)`; `None` for an unknown name. Read
    /// after [`start_all`](Self::start_all): a first start may move a host to other ports.
    pub async fn urls(&self, name: &str) -> Option<(String, String)> {
        let h = self.hosts.get(name)?.lock().await;
        Some((h.backend_url(), h.public_ws_url()))
    }

    /// Starts every host (service start). Errors with the first host that cannot start.
    pub async fn start_all(&self) -> Result<(), LocalHostError> {
        for h in self.hosts.values() {
            h.lock().await.start().await?;
        }
        Ok(())
    }

    /// Stops every host (service shutdown), each attempted even when another fails. Idempotent.
    pub async fn stop_all(&self) {
        for (name, h) in &self.hosts {
            if let Err(e) = h.lock().await.stop().await {
                tracing::warn!(host = %name, error = %e, "stopping a local Janus host");
            }
        }
    }

    /// The OS process id of a running host.
    pub async fn pid(&self, name: &str) -> Option<u32> {
        self.hosts.get(name)?.lock().await.pid()
    }

    fn host(&self, name: &str) -> Result<&tokio::sync::Mutex<LocalJanusHost>, PowerError> {
        self.hosts.get(name).ok_or_else(|| PowerError::UnknownHost(name.to_string()))
    }
}

/// A missing Janus needs an install (permanent); a process that died, hung or could not be
/// spawned may start next time (transient, retried on the next reconcile).
fn power_error(host: &str, e: LocalHostError) -> PowerError {
    match e {
        LocalHostError::JanusMissing { .. } | LocalHostError::Template(_) => PowerError::Permanent {
            host: host.to_string(),
            cause: PermanentCause::Misconfigured { what: "Janus is not installed where LocalJanusOptions says" },
        },
        other => PowerError::Transient {
            host: host.to_string(),
            cause: TransientCause::LocalProcess { detail: other.to_string() },
            retry_after: Duration::from_secs(60),
        },
    }
}

#[async_trait]
impl PowerControl for LocalPower {
    /// `Running` while the Janus process is alive, else `Deallocated` (a local host bills nothing).
    async fn power_state(&self, host: &str) -> Result<PowerState, PowerError> {
        let running = self.host(host)?.lock().await.is_running();
        Ok(if running { PowerState::Running } else { PowerState::Deallocated })
    }

    /// Runs Janus and waits until it answers on all its listeners. Idempotent.
    async fn start(&self, host: &str) -> Result<PowerOutcome, PowerError> {
        self.host(host)?.lock().await.start().await.map_err(|e| power_error(host, e))?;
        Ok(PowerOutcome::Done)
    }

    /// Stops Janus (SIGTERM, then SIGKILL). Idempotent.
    async fn deallocate(&self, host: &str) -> Result<PowerOutcome, PowerError> {
        self.host(host)?.lock().await.stop().await.map_err(|e| power_error(host, e))?;
        Ok(PowerOutcome::Done)
    }
}

/// Three distinct free loopback ports, all bound at once so they differ, then released for
/// Janus. They are drawn at random from below the kernel's ephemeral range: a free port inside
/// that range may be handed to any outgoing connection before Janus binds it (the test suite
/// and the service itself open many), one below it only to another explicit bind.
fn free_ports() -> Result<Ports, LocalHostError> {
    let below = ephemeral_start().clamp(LISTEN_PORTS_FROM + 1, u16::MAX);
    let mut rng = rand::thread_rng();
    let mut held = Vec::with_capacity(3);
    for _ in 0..200 {
        if held.len() == 3 {
            break;
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", rng.gen_range(LISTEN_PORTS_FROM..below))) {
            held.push(l);
        }
    }
    // A crowded range: let the kernel choose (the old way, still correct, only less safe).
    while held.len() < 3 {
        held.push(TcpListener::bind("127.0.0.1:0").map_err(io_err("finding a free port"))?);
    }
    let port = |l: &TcpListener| l.local_addr().map(|a| a.port()).map_err(io_err("finding a free port"));
    Ok(Ports { http: port(&held[0])?, admin: port(&held[1])?, ws: port(&held[2])? })
}

/// The lowest port a host listens on.
const LISTEN_PORTS_FROM: u16 = 10_000;

/// The first port of the kernel's ephemeral range (`net.ipv4.ip_local_port_range`; Linux's
/// default 32768 when it cannot be read).
fn ephemeral_start() -> u16 {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// The first line where Janus reported that a transport failed while starting: a listener that
/// could not bind logs `[FATAL] [transports/...]`, and a transport that gave up "could not be
/// initialized". Other modules' `[FATAL]` lines are not failures: the event handler logs one
/// whenever it is disabled.
fn startup_failure(log: &Path) -> Option<String> {
    let text = fs::read_to_string(log).ok()?;
    text.lines()
        .find(|l| {
            l.contains("[FATAL] [transports/")
                || (l.contains("'janus.transport.") && l.contains("could not be initialized"))
        })
        .map(|l| l.trim().to_string())
}

/// The last `n` lines of Janus's log, joined with " | " (empty when unreadable).
fn log_tail(log: &Path, n: usize) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(n).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// Writes a file readable only by us (it holds secrets).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), LocalHostError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(format!("writing {}", path.display())))?;
    f.write_all(bytes).map_err(io_err(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_differ_and_are_config_safe() {
        let (a, b) = (HostSecrets::generate(), HostSecrets::generate());
        assert_ne!(a.api_secret, b.api_secret);
        assert_ne!(a.api_secret, a.token_secret);
        assert!(a.api_secret.chars().all(|c| c.is_ascii_alphanumeric()));
        assert!(!format!("{a:?}").contains(&a.api_secret));
    }

    #[test]
    fn secrets_persist_across_loads() {
        let dir = std::env::temp_dir().join(format!("suroga-secrets-{}", uuid::Uuid::new_v4()));
        let path = dir.join("secrets.json");
        let first = HostSecrets::load_or_generate(&path).unwrap();
        let second = HostSecrets::load_or_generate(&path).unwrap();
        assert_eq!(first.token_secret, second.token_secret);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_secrets_file_without_an_events_secret_gets_one_that_is_kept() {
        let dir = std::env::temp_dir().join(format!("suroga-secrets-{}", uuid::Uuid::new_v4()));
        let path = dir.join("secrets.json");
        fs::create_dir_all(&dir).unwrap();
        fs::write(&path, r#"{"api_secret":"a","admin_secret":"b","admin_key":"c","token_secret":"d"}"#).unwrap();
        let first = HostSecrets::load_or_generate(&path).unwrap();
        assert_eq!(first.api_secret, "a");
        assert_eq!(first.events_secret.len(), 32);
        assert_eq!(HostSecrets::load_or_generate(&path).unwrap().events_secret, first.events_secret);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_relative_folder_becomes_absolute() {
        let host =
            LocalJanusHost::new("x", "data/janus/x".into(), HostSecrets::generate(), Default::default()).unwrap();
        assert!(host.dir().is_absolute());
        assert!(host.dir().ends_with("data/janus/x"));
    }

    #[tokio::test]
    async fn local_power_reports_a_missing_janus_as_permanent_and_unknown_hosts() {
        let opts = LocalJanusOptions { janus_bin: "/nonexistent/janus".into(), ..Default::default() };
        let dir = std::env::temp_dir().join(format!("suroga-nojanus-{}", uuid::Uuid::new_v4()));
        let p = LocalPower::new([LocalJanusHost::new("x", dir, HostSecrets::generate(), opts).unwrap()]);
        assert_eq!(p.power_state("x").await, Ok(PowerState::Deallocated));
        assert!(matches!(p.start("x").await, Err(PowerError::Permanent { .. })));
        assert_eq!(p.deallocate("x").await, Ok(PowerOutcome::Done), "stopping a stopped host is idempotent");
        assert_eq!(p.start("y").await, Err(PowerError::UnknownHost("y".into())));
    }

    #[tokio::test]
    async fn a_missing_janus_says_how_to_install_it() {
        let opts = LocalJanusOptions { janus_bin: "/nonexistent/janus".into(), ..Default::default() };
        let dir = std::env::temp_dir().join(format!("suroga-nojanus-{}", uuid::Uuid::new_v4()));
        let mut host = LocalJanusHost::new("x", dir, HostSecrets::generate(), opts).unwrap();
        let e = host.start().await.unwrap_err();
        assert!(matches!(e, LocalHostError::JanusMissing { .. }));
        assert!(e.to_string().contains("apt-get install janus"));
    }
}

//! One [`Config`] read from the environment (Functions app settings) at start, validated, with
//! secrets redacted in `Debug`. Nothing is required for the local default.

use std::{collections::HashMap, fmt, net::SocketAddr, path::PathBuf, time::Duration as StdDuration};

use chrono::Duration;

use crate::domain::BookingPolicy;

/// A secret value: shown as `***` in logs and `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A configuration value that could not be used; the message names the setting.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// Which store backend.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreKind {
    Sqlite,
    Cosmos(CosmosConfig),
}

/// Cosmos DB settings (`STORE=cosmos`).
#[derive(Debug, Clone, PartialEq)]
pub struct CosmosConfig {
    /// `COSMOS_ENDPOINT`, e.g. `https://suroga.documents.azure.com:443/`.
    pub endpoint: String,
    /// `COSMOS_DATABASE` (default `suroga`).
    pub database: String,
    /// `COSMOS_CONTAINER` (default `rooms`): rooms, bookings and their idempotency keys.
    pub container: String,
    /// `COSMOS_OPS_CONTAINER` (default `ops`): operations log, markers, state.
    pub ops_container: String,
    /// `COSMOS_KEY`: an account key, only as an explicit development option.
    pub key: Option<Secret>,
    /// `COSMOS_REGION` (default `West Europe`): the preferred region.
    pub region: String,
    /// `COSMOS_CREDENTIAL`: which Entra ID credential to use when `COSMOS_KEY` is unset.
    pub credential: CosmosCredentialKind,
}

/// The Entra ID credential the Cosmos backend uses (`COSMOS_CREDENTIAL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CosmosCredentialKind {
    /// `managed-identity`: the Function App's managed identity. The default when
    /// `IDENTITY_ENDPOINT` is set, which App Service and Functions do.
    ManagedIdentity,
    /// `developer`: the Azure CLI / Azure Developer CLI login of whoever runs the binary.
    /// The default everywhere else.
    DeveloperTools,
}

/// Which fleet of Janus hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetKind {
    Local,
    Static,
    Azure,
}

/// A Janus host given in configuration (`JANUS_HOSTS`, for `FLEET=static` and `FLEET=azure`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    pub name: String,
    /// Backend URL of Janus's HTTP API (`http://10.0.0.4:8088/janus`), used by the server.
    pub backend_url: String,
    /// Public Janus HTTP API URL given to clients.
    pub public_http_url: String,
    /// Public Janus WebSocket URL given to clients.
    pub public_ws_url: String,
    /// Concurrent sessions this host takes (default 20).
    #[serde(default = "default_capacity")]
    pub capacity: u32,
    /// Azure VM resource group (`FLEET=azure`).
    #[serde(default)]
    pub resource_group: Option<String>,
    /// Azure VM name (`FLEET=azure`).
    #[serde(default)]
    pub vm_name: Option<String>,
}

fn default_capacity() -> u32 {
    20
}

/// How the fleet scheduler runs hosts (`FLEET_*`, `ALERT_WEBHOOK_URL`, `AZURE_SUBSCRIPTION_ID`).
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSettings {
    /// `FLEET_LEAD_MINUTES` (30): a host is on this long before its first session starts.
    pub lead: Duration,
    /// `FLEET_GRACE_MINUTES` (10): a host stays on this long after its last session ends.
    pub grace: Duration,
    /// `FLEET_KEEP_WARM_MINUTES` (30): gaps between sessions shorter than this keep the host on.
    pub keep_warm: Duration,
    /// `FLEET_MAX_HOSTS` (unset: no limit): most hosts on at the same time.
    pub max_hosts: Option<usize>,
    /// `FLEET_OVERRUN_LIMIT_MINUTES` (60): a session still occupied after its end keeps its host
    /// on until it empties or this long after the end has passed.
    pub overrun_limit: Duration,
    /// `FLEET_LOCAL_HOSTS` (1): how many local Janus hosts `FLEET=local` runs (1 to 16).
    pub local_hosts: usize,
    /// `ALERT_WEBHOOK_URL` (unset: alerts go to the log and the operations log only):
    /// a Slack-compatible incoming webhook that gets `{"text": ...}`.
    pub alert_webhook_url: Option<Secret>,
    /// `AZURE_SUBSCRIPTION_ID`: the subscription of the Janus VMs (required for `FLEET=azure`).
    pub azure_subscription_id: Option<String>,
}

impl Default for FleetSettings {
    fn default() -> Self {
        Self {
            lead: Duration::minutes(30),
            grace: Duration::minutes(10),
            keep_warm: Duration::minutes(30),
            max_hosts: None,
            overrun_limit: Duration::minutes(60),
            local_hosts: 1,
            alert_webhook_url: None,
            azure_subscription_id: None,
        }
    }
}

/// Authentication settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `AUTH_HS256_SECRET`: local tokens. Generated into the data dir when unset and no issuer is set.
    pub hs256_secret: Option<Secret>,
    /// `AUTH_ISSUER`: Entra ID issuer (RS256 via the issuer's JWKS).
    pub issuer: Option<String>,
    /// `AUTH_AUDIENCE`.
    pub audience: Option<String>,
    /// `AUTH_JWKS_URL`: overrides discovery from the issuer.
    pub jwks_url: Option<String>,
    /// `AUTH_ADMIN_ROLE` (default `admin`).
    pub admin_role: String,
}

/// Everything the service reads from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `SUROGA_ADDR` (default `127.0.0.1:7071`); under the Functions host
    /// `FUNCTIONS_CUSTOMHANDLER_PORT` wins and the address is `127.0.0.1:<port>`.
    pub addr: SocketAddr,
    /// True when started by the Functions host (`FUNCTIONS_CUSTOMHANDLER_PORT` set): timers
    /// then come from the host, not from the in-process scheduler.
    pub under_functions_host: bool,
    /// `SUROGA_DATA_DIR` (default `./data`).
    pub data_dir: PathBuf,
    pub store: StoreKind,
    pub auth: AuthConfig,
    pub fleet: FleetKind,
    /// `JANUS_HOSTS`: JSON list of [`HostConfig`].
    pub hosts: Vec<HostConfig>,
    /// Scheduler policy, alerts and the Azure subscription.
    pub fleet_settings: FleetSettings,
    /// `JANUS_API_SECRET` (generated for local hosts).
    pub janus_api_secret: Option<Secret>,
    /// `JANUS_ADMIN_KEY` (generated for local hosts).
    pub janus_admin_key: Option<Secret>,
    /// `JANUS_TOKEN_SECRET` (generated for local hosts).
    pub janus_token_secret: Option<Secret>,
    /// `JANUS_TOKEN_ALGORITHM`: `hmac-sha1` (Janus 1.1.x, default) or `hmac-sha256`.
    pub janus_token_algorithm: String,
    /// `JANUS_CONNECT_TIMEOUT_MS` (default 2000).
    pub janus_connect_timeout: StdDuration,
    /// `JANUS_REQUEST_TIMEOUT_MS` (default 5000).
    pub janus_request_timeout: StdDuration,
    /// `SESSION_GRACE_MINUTES` (default 5): how long a session (its Janus room and its tokens)
    /// outlives the booked end; never past the start of the room's next booking.
    pub session_grace: Duration,
    /// `PUBLIC_BASE_URL` (default `http://<listen address>`): the app's public address, without a
    /// trailing slash; invitation links are `<it>/app/i/<code>`.
    pub public_base_url: String,
    /// Booking rules: `MAX_SESSION_MINUTES` (480), `MIN_CANCEL_NOTICE_MINUTES` (0),
    /// `PASSWORD_REVEAL_MINUTES` (15).
    pub policy: BookingPolicy,
    /// `LOG_FORMAT`: `json` (default) or `text`.
    pub log_json: bool,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_map(&std::env::vars().collect())
    }

    /// Reads settings from a map (tests pass their own).
    pub fn from_map(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        refuse_unresolved_references(env)?;
        let get = |k: &str| env.get(k).map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let secret = |k: &str| get(k).map(Secret::new);
        let minutes = |k: &str, default: i64| -> Result<Duration, ConfigError> {
            match get(k) {
                None => Ok(Duration::minutes(default)),
                Some(v) => v
                    .parse::<i64>()
                    .ok()
                    .filter(|m| *m >= 0)
                    .map(Duration::minutes)
                    .ok_or_else(|| ConfigError(format!("{k} must be a whole number of minutes, got {v:?}"))),
            }
        };
        let millis = |k: &str, default: u64| -> Result<StdDuration, ConfigError> {
            match get(k) {
                None => Ok(StdDuration::from_millis(default)),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|m| *m > 0)
                    .map(StdDuration::from_millis)
                    .ok_or_else(|| ConfigError(format!("{k} must be a positive number of milliseconds, got {v:?}"))),
            }
        };

        let (addr, under_functions_host) = match get("FUNCTIONS_CUSTOMHANDLER_PORT") {
            Some(port) => {
                let port: u16 = port
                    .parse()
                    .map_err(|_| ConfigError(format!("FUNCTIONS_CUSTOMHANDLER_PORT must be a port, got {port:?}")))?;
                (SocketAddr::from(([127, 0, 0, 1], port)), true)
            }
            None => {
                let a = get("SUROGA_ADDR").unwrap_or_else(|| "127.0.0.1:7071".into());
                let addr = a.parse().map_err(|_| ConfigError(format!("SUROGA_ADDR must be host:port, got {a:?}")))?;
                (addr, false)
            }
        };

        let store = match get("STORE").as_deref() {
            None | Some("sqlite") => StoreKind::Sqlite,
            Some("cosmos") => StoreKind::Cosmos(CosmosConfig {
                endpoint: get("COSMOS_ENDPOINT")
                    .ok_or_else(|| ConfigError("STORE=cosmos needs COSMOS_ENDPOINT".into()))?,
                database: get("COSMOS_DATABASE").unwrap_or_else(|| "suroga".into()),
                container: get("COSMOS_CONTAINER").unwrap_or_else(|| "rooms".into()),
                ops_container: get("COSMOS_OPS_CONTAINER").unwrap_or_else(|| "ops".into()),
                key: secret("COSMOS_KEY"),
                region: get("COSMOS_REGION").unwrap_or_else(|| "West Europe".into()),
                credential: match get("COSMOS_CREDENTIAL").as_deref() {
                    Some("managed-identity") => CosmosCredentialKind::ManagedIdentity,
                    Some("developer") => CosmosCredentialKind::DeveloperTools,
                    None if get("IDENTITY_ENDPOINT").is_some() => CosmosCredentialKind::ManagedIdentity,
                    None => CosmosCredentialKind::DeveloperTools,
                    Some(other) => {
                        return Err(ConfigError(format!(
                            "COSMOS_CREDENTIAL must be managed-identity or developer, got {other:?}"
                        )));
                    }
                },
            }),
            Some(other) => return Err(ConfigError(format!("STORE must be sqlite or cosmos, got {other:?}"))),
        };

        let fleet = match get("FLEET").as_deref() {
            None | Some("local") => FleetKind::Local,
            Some("static") => FleetKind::Static,
            Some("azure") => FleetKind::Azure,
            Some(other) => return Err(ConfigError(format!("FLEET must be local, static or azure, got {other:?}"))),
        };
        let hosts: Vec<HostConfig> = match get("JANUS_HOSTS") {
            None => vec![],
            Some(j) => serde_json::from_str(&j).map_err(|e| ConfigError(format!("JANUS_HOSTS: {e}")))?,
        };
        if fleet != FleetKind::Local && hosts.is_empty() {
            return Err(ConfigError("FLEET=static and FLEET=azure need JANUS_HOSTS (a JSON list of hosts)".into()));
        }
        if fleet != FleetKind::Local && get("JANUS_API_SECRET").is_none() {
            return Err(ConfigError("FLEET=static and FLEET=azure need JANUS_API_SECRET".into()));
        }

        let count =
            |k: &str, min: usize, max: usize| -> Result<Option<usize>, ConfigError> {
                match get(k) {
                    None => Ok(None),
                    Some(v) => v.parse::<usize>().ok().filter(|n| (min..=max).contains(n)).map(Some).ok_or_else(|| {
                        ConfigError(format!("{k} must be a whole number from {min} to {max}, got {v:?}"))
                    }),
                }
            };
        let fleet_settings = FleetSettings {
            lead: minutes("FLEET_LEAD_MINUTES", 30)?,
            grace: minutes("FLEET_GRACE_MINUTES", 10)?,
            keep_warm: minutes("FLEET_KEEP_WARM_MINUTES", 30)?,
            max_hosts: count("FLEET_MAX_HOSTS", 1, 10_000)?,
            overrun_limit: minutes("FLEET_OVERRUN_LIMIT_MINUTES", 60)?,
            local_hosts: count("FLEET_LOCAL_HOSTS", 1, 16)?.unwrap_or(1),
            alert_webhook_url: match get("ALERT_WEBHOOK_URL") {
                None => None,
                Some(u) => match url::Url::parse(&u) {
                    Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Some(Secret::new(u)),
                    // The URL carries the webhook's token: never echo it.
                    _ => return Err(ConfigError("ALERT_WEBHOOK_URL must be an http(s) URL".into())),
                },
            },
            azure_subscription_id: get("AZURE_SUBSCRIPTION_ID"),
        };
        if fleet == FleetKind::Azure && fleet_settings.azure_subscription_id.is_none() {
            return Err(ConfigError("FLEET=azure needs AZURE_SUBSCRIPTION_ID".into()));
        }

        let janus_token_algorithm = get("JANUS_TOKEN_ALGORITHM").unwrap_or_else(|| "hmac-sha1".into());
        if !matches!(janus_token_algorithm.as_str(), "hmac-sha1" | "hmac-sha256") {
            return Err(ConfigError(format!(
                "JANUS_TOKEN_ALGORITHM must be hmac-sha1 or hmac-sha256, got {janus_token_algorithm:?}"
            )));
        }

        let auth = AuthConfig {
            hs256_secret: secret("AUTH_HS256_SECRET"),
            issuer: get("AUTH_ISSUER"),
            audience: get("AUTH_AUDIENCE"),
            jwks_url: get("AUTH_JWKS_URL"),
            admin_role: get("AUTH_ADMIN_ROLE").unwrap_or_else(|| "admin".into()),
        };
        if auth.issuer.is_some() != auth.audience.is_some() {
            return Err(ConfigError("AUTH_ISSUER and AUTH_AUDIENCE go together".into()));
        }

        let public_base_url = match get("PUBLIC_BASE_URL") {
            None => format!("http://{addr}"),
            Some(v) => match url::Url::parse(&v) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() && u.query().is_none() => {
                    v.trim_end_matches('/').to_string()
                }
                _ => {
                    return Err(ConfigError(format!(
                        "PUBLIC_BASE_URL must be an http(s) URL without a query, like https://stream.example.com; got {v:?}"
                    )));
                }
            },
        };

        let max_session = minutes("MAX_SESSION_MINUTES", 480)?;
        if max_session <= Duration::zero() {
            return Err(ConfigError("MAX_SESSION_MINUTES must be positive".into()));
        }

        Ok(Config {
            addr,
            under_functions_host,
            data_dir: PathBuf::from(get("SUROGA_DATA_DIR").unwrap_or_else(|| "./data".into())),
            store,
            auth,
            fleet,
            hosts,
            fleet_settings,
            janus_api_secret: secret("JANUS_API_SECRET"),
            janus_admin_key: secret("JANUS_ADMIN_KEY"),
            janus_token_secret: secret("JANUS_TOKEN_SECRET"),
            janus_token_algorithm,
            janus_connect_timeout: millis("JANUS_CONNECT_TIMEOUT_MS", 2000)?,
            janus_request_timeout: millis("JANUS_REQUEST_TIMEOUT_MS", 5000)?,
            session_grace: minutes("SESSION_GRACE_MINUTES", 5)?,
            public_base_url,
            policy: BookingPolicy {
                max_duration: max_session,
                min_cancel_notice: minutes("MIN_CANCEL_NOTICE_MINUTES", 0)?,
                reveal_before: minutes("PASSWORD_REVEAL_MINUTES", 15)?,
            },
            log_json: get("LOG_FORMAT").as_deref() != Some("text"),
        })
    }
}

/// Refuses settings that still hold an App Service Key Vault reference (`@Microsoft.KeyVault(...)`):
/// the platform passes the reference text through when it cannot resolve it (the secret is
/// missing, or the app's identity may not read it), and a secret used as that text would fail
/// every Janus call or every alert much later, far from the cause. The error names the settings,
/// never their values.
fn refuse_unresolved_references(env: &HashMap<String, String>) -> Result<(), ConfigError> {
    const REFERENCE: &str = "@Microsoft.KeyVault(";
    let mut unresolved: Vec<&str> = env
        .iter()
        .filter(|(_, v)| v.trim_start().get(..REFERENCE.len()).is_some_and(|p| p.eq_ignore_ascii_case(REFERENCE)))
        .map(|(k, _)| k.as_str())
        .collect();
    if unresolved.is_empty() {
        return Ok(());
    }
    unresolved.sort_unstable();
    Err(ConfigError(format!(
        "{} {} an unresolved Key Vault reference: check that the secret exists and that the app's identity \
         may read it, then refresh the references (docs/deploy.md, \"Key Vault references\")",
        unresolved.join(", "),
        if unresolved.len() == 1 { "is" } else { "are" }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_environment_is_the_local_default() {
        let c = Config::from_map(&HashMap::new()).unwrap();
        assert_eq!(c.addr.to_string(), "127.0.0.1:7071");
        assert_eq!(c.store, StoreKind::Sqlite);
        assert_eq!(c.fleet, FleetKind::Local);
        assert!(!c.under_functions_host);
        assert_eq!(c.public_base_url, "http://127.0.0.1:7071");
        assert_eq!(c.session_grace, Duration::minutes(5));
    }

    #[test]
    fn public_base_url_is_an_http_url_without_its_trailing_slash() {
        let with = |v: &str| Config::from_map(&HashMap::from([("PUBLIC_BASE_URL".to_string(), v.to_string())]));
        assert_eq!(with("https://stream.example.com/").unwrap().public_base_url, "https://stream.example.com");
        assert_eq!(with("https://example.com/suroga").unwrap().public_base_url, "https://example.com/suroga");
        for bad in ["stream.example.com", "ftp://example.com", "https://example.com/?a=1"] {
            let e = with(bad).unwrap_err();
            assert!(e.0.contains("PUBLIC_BASE_URL"), "{bad}: {e}");
        }
    }

    #[test]
    fn functions_port_wins_and_binds_loopback() {
        let env = HashMap::from([("FUNCTIONS_CUSTOMHANDLER_PORT".to_string(), "41234".to_string())]);
        let c = Config::from_map(&env).unwrap();
        assert_eq!(c.addr.to_string(), "127.0.0.1:41234");
        assert!(c.under_functions_host);
    }

    #[test]
    fn secrets_are_redacted() {
        let env = HashMap::from([("AUTH_HS256_SECRET".to_string(), "hunter2hunter2".to_string())]);
        let c = Config::from_map(&env).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn fleet_settings_default_to_the_design_values() {
        let f = Config::from_map(&HashMap::new()).unwrap().fleet_settings;
        assert_eq!(f, FleetSettings::default());
        assert_eq!(
            (f.lead, f.grace, f.keep_warm),
            (Duration::minutes(30), Duration::minutes(10), Duration::minutes(30))
        );
        assert_eq!((f.max_hosts, f.overrun_limit, f.local_hosts), (None, Duration::minutes(60), 1));
    }

    #[test]
    fn fleet_settings_are_read() {
        let c = Config::from_map(&env(&[
            ("FLEET_LEAD_MINUTES", "20"),
            ("FLEET_GRACE_MINUTES", "5"),
            ("FLEET_KEEP_WARM_MINUTES", "0"),
            ("FLEET_MAX_HOSTS", "3"),
            ("FLEET_OVERRUN_LIMIT_MINUTES", "90"),
            ("FLEET_LOCAL_HOSTS", "2"),
            ("ALERT_WEBHOOK_URL", "https://hooks.example.test/T0/B0/secret-token"),
        ]))
        .unwrap();
        let f = &c.fleet_settings;
        assert_eq!((f.lead, f.grace, f.keep_warm), (Duration::minutes(20), Duration::minutes(5), Duration::zero()));
        assert_eq!((f.max_hosts, f.overrun_limit, f.local_hosts), (Some(3), Duration::minutes(90), 2));
        assert_eq!(f.alert_webhook_url.as_ref().unwrap().expose(), "https://hooks.example.test/T0/B0/secret-token");
        assert!(!format!("{c:?}").contains("secret-token"), "the webhook URL is a secret");
    }

    #[test]
    fn bad_fleet_settings_name_the_setting() {
        for (k, v) in [
            ("FLEET_LEAD_MINUTES", "-5"),
            ("FLEET_MAX_HOSTS", "0"),
            ("FLEET_LOCAL_HOSTS", "17"),
            ("FLEET_OVERRUN_LIMIT_MINUTES", "soon"),
            ("ALERT_WEBHOOK_URL", "not a url"),
        ] {
            let e = Config::from_map(&env(&[(k, v)])).unwrap_err().to_string();
            assert!(e.contains(k), "{k}={v}: {e}");
        }
    }

    #[test]
    fn azure_needs_a_subscription() {
        let hosts = r#"[{"name":"j1","backend_url":"http://10.0.0.4:8088/janus","public_http_url":"https://j1/janus","public_ws_url":"wss://j1/ws","resource_group":"rg","vm_name":"vm1"}]"#;
        let base = [("FLEET", "azure"), ("JANUS_HOSTS", hosts), ("JANUS_API_SECRET", "s")];
        let e = Config::from_map(&env(&base)).unwrap_err().to_string();
        assert!(e.contains("AZURE_SUBSCRIPTION_ID"), "{e}");
        let mut with = base.to_vec();
        with.push(("AZURE_SUBSCRIPTION_ID", "00000000-0000-0000-0000-000000000000"));
        let c = Config::from_map(&env(&with)).unwrap();
        assert_eq!(c.fleet_settings.azure_subscription_id.as_deref(), Some("00000000-0000-0000-0000-000000000000"));
    }

    #[test]
    fn cosmos_credential_is_managed_identity_under_app_service_and_developer_elsewhere() {
        let cosmos = |extra: &[(&str, &str)]| {
            let mut env = HashMap::from([
                ("STORE".to_string(), "cosmos".to_string()),
                ("COSMOS_ENDPOINT".to_string(), "https://a.documents.azure.com:443/".to_string()),
            ]);
            env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            match Config::from_map(&env).map(|c| c.store) {
                Ok(StoreKind::Cosmos(c)) => Ok(c.credential),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.to_string()),
            }
        };
        assert_eq!(cosmos(&[]), Ok(CosmosCredentialKind::DeveloperTools));
        assert_eq!(
            cosmos(&[("IDENTITY_ENDPOINT", "http://127.0.0.1:41000/msi")]),
            Ok(CosmosCredentialKind::ManagedIdentity)
        );
        assert_eq!(
            cosmos(&[("IDENTITY_ENDPOINT", "http://x"), ("COSMOS_CREDENTIAL", "developer")]),
            Ok(CosmosCredentialKind::DeveloperTools)
        );
        assert!(cosmos(&[("COSMOS_CREDENTIAL", "password")]).unwrap_err().contains("COSMOS_CREDENTIAL"));
    }

    #[test]
    fn an_unresolved_key_vault_reference_is_refused_naming_the_setting() {
        let reference = "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/janus-api-secret/)";
        let e =
            Config::from_map(&env(&[("JANUS_API_SECRET", reference), ("STORE", "sqlite")])).unwrap_err().to_string();
        assert!(e.contains("JANUS_API_SECRET") && e.contains("Key Vault"), "{e}");
        assert!(!e.contains("kv.vault.azure.net"), "the reference itself is not echoed: {e}");
        let two =
            [("ALERT_WEBHOOK_URL", " @microsoft.keyvault(VaultName=kv;SecretName=x)"), ("JANUS_ADMIN_KEY", reference)];
        let e = Config::from_map(&env(&two)).unwrap_err().to_string();
        assert!(e.contains("ALERT_WEBHOOK_URL, JANUS_ADMIN_KEY are"), "{e}");
        // A resolved value is just a value.
        assert!(Config::from_map(&env(&[("JANUS_API_SECRET", "resolved-secret")])).is_ok());
    }

    #[test]
    fn bad_values_name_the_setting() {
        let env = HashMap::from([("STORE".to_string(), "postgres".to_string())]);
        assert!(Config::from_map(&env).unwrap_err().to_string().contains("STORE"));
    }
}

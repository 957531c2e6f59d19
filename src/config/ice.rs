//! The ICE settings browsers get with every join: the STUN and TURN servers of the session's host
//! (`TURN_URLS`), the shared secret their per-join TURN credentials are minted from
//! (`TURN_SHARED_SECRET`, coturn's `static-auth-secret`) and which candidates browsers may use
//! (`ICE_TRANSPORT_POLICY`). Read with the rest of [`super::Config`]; every refusal names its
//! setting. Minting lives in [`crate::sessions::turn`].
//!
//! URLs are checked here, strictly (RFC 7064 and 7065: `stun:host[:port]`,
//! `turn[s]:host[:port][?transport=udp|tcp]`), because a browser throws on a malformed one when
//! it builds its `RTCPeerConnection`: one bad URL would break every call, far from the cause.

use std::collections::{BTreeMap, HashMap};

use super::{ConfigError, Secret};

/// `ICE_TRANSPORT_POLICY`: the `iceTransportPolicy` browsers build their connections with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IceTransportPolicy {
    /// Every candidate: direct (host, server-reflexive) and relayed.
    #[default]
    All,
    /// Relayed candidates only: all media through the host's TURN server.
    Relay,
}

/// `TURN_URLS`: which STUN and TURN URLs the participants of each host's sessions get.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TurnUrls {
    /// Unset (or `[]`): no ICE server; browsers gather their host candidates only.
    #[default]
    None,
    /// A plain JSON list of URLs: the same servers for every host (handy locally).
    EveryHost(Vec<String>),
    /// `[{"name": <host>, "urls": [...]}]`: each host's own servers (one coturn per Janus VM).
    PerHost(BTreeMap<String, Vec<String>>),
}

impl TurnUrls {
    /// The URLs for the participants of `host`'s sessions; empty when it has none.
    pub fn for_host(&self, host: &str) -> &[String] {
        match self {
            TurnUrls::None => &[],
            TurnUrls::EveryHost(urls) => urls,
            TurnUrls::PerHost(by_host) => by_host.get(host).map(Vec::as_slice).unwrap_or(&[]),
        }
    }
}

/// The ICE settings (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceConfig {
    /// `TURN_URLS` (unset: none).
    pub urls: TurnUrls,
    /// `TURN_SHARED_SECRET` (unset: no TURN; required when a `turn:`/`turns:` URL is given).
    pub turn_shared_secret: Option<Secret>,
    /// `ICE_TRANSPORT_POLICY` (`all`, the default, or `relay`).
    pub transport_policy: IceTransportPolicy,
}

/// One entry of the per-host form of `TURN_URLS`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HostUrls {
    name: String,
    urls: Vec<String>,
}

/// Whether an ICE URL names a TURN server (which needs credentials) or a STUN server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceUrlKind {
    Stun,
    Turn,
}

impl IceConfig {
    /// Reads the three settings. `hosts` are the names of the fleet's Janus hosts: a per-host
    /// `TURN_URLS` may name only those, and `ICE_TRANSPORT_POLICY=relay` needs a TURN URL for
    /// each of them.
    pub(super) fn from_map(env: &HashMap<String, String>, hosts: &[String]) -> Result<Self, ConfigError> {
        let get = |k: &str| env.get(k).map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let urls = match get("TURN_URLS") {
            None => TurnUrls::None,
            Some(json) => parse_turn_urls(&json, hosts).map_err(|e| ConfigError(format!("TURN_URLS: {e}")))?,
        };
        let turn_shared_secret = get("TURN_SHARED_SECRET").map(Secret::new);
        let transport_policy = match get("ICE_TRANSPORT_POLICY").as_deref() {
            None | Some("all") => IceTransportPolicy::All,
            Some("relay") => IceTransportPolicy::Relay,
            Some(other) => {
                return Err(ConfigError(format!("ICE_TRANSPORT_POLICY must be all or relay, got {other:?}")));
            }
        };
        let has_turn = |urls: &[String]| urls.iter().any(|u| ice_url_kind(u) == Ok(IceUrlKind::Turn));
        let any_turn = match &urls {
            TurnUrls::None => false,
            TurnUrls::EveryHost(u) => has_turn(u),
            TurnUrls::PerHost(by_host) => by_host.values().any(|u| has_turn(u)),
        };
        if any_turn && turn_shared_secret.is_none() {
            return Err(ConfigError(
                "TURN_URLS has turn: or turns: URLs, so TURN_SHARED_SECRET must be set (coturn's static-auth-secret): \
                 their credentials are minted from it"
                    .into(),
            ));
        }
        if transport_policy == IceTransportPolicy::Relay {
            if let Some(host) = hosts.iter().find(|h| !has_turn(urls.for_host(h))) {
                return Err(ConfigError(format!(
                    "ICE_TRANSPORT_POLICY=relay needs a turn: or turns: URL in TURN_URLS for every host, and host \
                     {host:?} has none: its sessions could never connect"
                )));
            }
        }
        Ok(IceConfig { urls, turn_shared_secret, transport_policy })
    }
}

/// `TURN_URLS`: a JSON list of URL strings (every host) or of `{"name", "urls"}` (per host).
fn parse_turn_urls(json: &str, hosts: &[String]) -> Result<TurnUrls, String> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let serde_json::Value::Array(items) = value else {
        return Err("must be a JSON list: of URLs, or of {\"name\": <a Janus host>, \"urls\": [...]}".into());
    };
    if items.is_empty() {
        return Ok(TurnUrls::None);
    }
    let check_all = |urls: &[String]| -> Result<(), String> {
        if urls.is_empty() {
            return Err("a list of URLs is empty".into());
        }
        urls.iter().try_for_each(|u| ice_url_kind(u).map(|_| ()))
    };
    if items.iter().all(serde_json::Value::is_string) {
        let urls: Vec<String> = items.into_iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
        check_all(&urls)?;
        return Ok(TurnUrls::EveryHost(urls));
    }
    if !items.iter().all(serde_json::Value::is_object) {
        return Err("mixes URLs and host entries: give either a list of URLs or a list of host entries".into());
    }
    let entries: Vec<HostUrls> = serde_json::from_value(serde_json::Value::Array(items))
        .map_err(|e| format!("each entry is {{\"name\": <a Janus host>, \"urls\": [...]}}: {e}"))?;
    let mut by_host = BTreeMap::new();
    for HostUrls { name, urls } in entries {
        if !hosts.contains(&name) {
            return Err(format!("{name:?} is not a Janus host (the hosts are {})", hosts.join(", ")));
        }
        check_all(&urls).map_err(|e| format!("{name}: {e}"))?;
        if by_host.insert(name.clone(), urls).is_some() {
            return Err(format!("{name:?} is listed twice"));
        }
    }
    Ok(TurnUrls::PerHost(by_host))
}

/// Checks one STUN or TURN URL (RFC 7064, RFC 7065) as strictly as browsers do, and says which
/// it is. The error quotes the URL (URLs carry no secret).
pub fn ice_url_kind(url: &str) -> Result<IceUrlKind, String> {
    let bad = |why: &str| format!("{url:?} {why}");
    let (kind, rest) = if let Some(rest) = url.strip_prefix("stun:") {
        (IceUrlKind::Stun, rest)
    } else if let Some(rest) = url.strip_prefix("turns:").or_else(|| url.strip_prefix("turn:")) {
        (IceUrlKind::Turn, rest)
    } else {
        return Err(bad("must start with stun:, turn: or turns:"));
    };
    let (authority, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    match (kind, query) {
        (_, None) => {}
        (IceUrlKind::Turn, Some("transport=udp" | "transport=tcp")) => {}
        (IceUrlKind::Turn, Some(_)) => return Err(bad("may end only in ?transport=udp or ?transport=tcp")),
        (IceUrlKind::Stun, Some(_)) => return Err(bad("is a stun: URL, which takes no ?query")),
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(|| bad("has an IPv6 address without its closing ]"))?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("has an invalid IPv6 address"));
        }
        match after {
            "" => (addr, None),
            p => (addr, Some(p.strip_prefix(':').ok_or_else(|| bad("has something after its IPv6 address"))?)),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let name_ok = |h: &str| {
        !h.is_empty()
            && h.len() <= 253
            && h.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    };
    if !authority.starts_with('[') && !name_ok(host) {
        return Err(bad("must be <scheme>:<host name or address>[:<port>], like turn:turn.example.org:3478"));
    }
    if let Some(p) = port {
        if !p.chars().all(|c| c.is_ascii_digit()) || !matches!(p.parse::<u16>(), Ok(1..)) {
            return Err(bad("has a port that is not 1 to 65535"));
        }
    }
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const AZURE_HOSTS: &str = r#"[{"name":"suroga-janus-1","backend_url":"http://10.40.1.10:8088/janus","public_http_url":"https://j1/janus","public_ws_url":"wss://j1/ws"},{"name":"suroga-janus-2","backend_url":"http://10.40.1.11:8088/janus","public_http_url":"https://j2/janus","public_ws_url":"wss://j2/ws"}]"#;

    fn static_fleet(extra: &[(&str, &str)]) -> Result<IceConfig, String> {
        let mut e = env(&[
            ("FLEET", "static"),
            ("JANUS_HOSTS", AZURE_HOSTS),
            ("JANUS_API_SECRET", "s"),
            ("JANUS_EVENTS_SECRET", "e"),
        ]);
        e.extend(env(extra));
        Config::from_map(&e).map(|c| c.ice).map_err(|e| e.to_string())
    }

    #[test]
    fn unset_means_no_ice_servers_and_every_candidate() {
        let c = Config::from_map(&HashMap::new()).unwrap().ice;
        assert_eq!(c, IceConfig::default());
        assert_eq!(c.urls.for_host("local-1"), &[] as &[String]);
        assert_eq!(c.transport_policy, IceTransportPolicy::All);
    }

    #[test]
    fn per_host_urls_as_the_deployment_writes_them() {
        let urls = r#"[{"name":"suroga-janus-1","urls":["stun:t1.example.org:3478","turn:t1.example.org:3478?transport=udp","turn:t1.example.org:3478?transport=tcp","turns:t1.example.org:443?transport=tcp"]},
                      {"name":"suroga-janus-2","urls":["turn:t2.example.org:3478?transport=udp"]}]"#;
        let c = static_fleet(&[("TURN_URLS", urls), ("TURN_SHARED_SECRET", "coturn-shared-secret")]).unwrap();
        assert_eq!(c.urls.for_host("suroga-janus-1").len(), 4);
        assert_eq!(c.urls.for_host("suroga-janus-2"), &["turn:t2.example.org:3478?transport=udp".to_string()]);
        assert_eq!(c.urls.for_host("another"), &[] as &[String]);
        assert_eq!(c.turn_shared_secret.as_ref().map(Secret::expose), Some("coturn-shared-secret"));
    }

    #[test]
    fn a_plain_list_serves_every_host_and_local_hosts_are_named() {
        let c = Config::from_map(&env(&[
            ("TURN_URLS", r#"["stun:127.0.0.1:3478", "turn:127.0.0.1:3478?transport=udp", "turn:[::1]:3478"]"#),
            ("TURN_SHARED_SECRET", "s3cret"),
            ("ICE_TRANSPORT_POLICY", "relay"),
        ]))
        .unwrap();
        assert_eq!(c.ice.urls.for_host("local-1").len(), 3);
        assert_eq!(c.ice.urls.for_host("anything").len(), 3);
        assert_eq!(c.ice.transport_policy, IceTransportPolicy::Relay);
        let per_host =
            env(&[("FLEET_LOCAL_HOSTS", "2"), ("TURN_URLS", r#"[{"name":"local-2","urls":["stun:127.0.0.1:3478"]}]"#)]);
        assert_eq!(Config::from_map(&per_host).unwrap().ice.urls.for_host("local-2").len(), 1);
        let e = Config::from_map(&env(&[("TURN_URLS", r#"[{"name":"local-3","urls":["stun:a"]}]"#)])).unwrap_err();
        assert!(e.0.contains("TURN_URLS") && e.0.contains("\"local-3\" is not a Janus host"), "{e}");
    }

    #[test]
    fn the_shared_secret_is_redacted() {
        let c = Config::from_map(&env(&[
            ("TURN_URLS", r#"["turn:t.example.org"]"#),
            ("TURN_SHARED_SECRET", "hunter2-turn"),
        ]))
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn turn_urls_without_a_shared_secret_are_refused() {
        let e = static_fleet(&[(
            "TURN_URLS",
            r#"[{"name":"suroga-janus-1","urls":["turns:t1.example.org:443?transport=tcp"]}]"#,
        )])
        .unwrap_err();
        assert!(e.contains("TURN_SHARED_SECRET"), "{e}");
        // STUN needs no credentials.
        assert!(static_fleet(&[("TURN_URLS", r#"["stun:t1.example.org"]"#)]).is_ok());
    }

    #[test]
    fn relay_needs_a_turn_url_for_every_host() {
        let one = r#"[{"name":"suroga-janus-1","urls":["turn:t1.example.org"]}, {"name":"suroga-janus-2","urls":["stun:t2.example.org"]}]"#;
        let e = static_fleet(&[("TURN_URLS", one), ("TURN_SHARED_SECRET", "s"), ("ICE_TRANSPORT_POLICY", "relay")])
            .unwrap_err();
        assert!(e.contains("ICE_TRANSPORT_POLICY=relay") && e.contains("suroga-janus-2"), "{e}");
        let e = Config::from_map(&env(&[("ICE_TRANSPORT_POLICY", "relay")])).unwrap_err();
        assert!(e.0.contains("ICE_TRANSPORT_POLICY=relay"), "{e}");
        let e = Config::from_map(&env(&[("ICE_TRANSPORT_POLICY", "none")])).unwrap_err();
        assert!(e.0.contains("ICE_TRANSPORT_POLICY must be all or relay"), "{e}");
    }

    #[test]
    fn nonsense_is_refused_naming_the_setting() {
        for bad in [
            "turn:t.example.org",
            "{}",
            r#"["http://t.example.org"]"#,
            r#"["stun:t.example.org", {"name":"suroga-janus-1","urls":["stun:a"]}]"#,
            r#"[{"name":"suroga-janus-1"}]"#,
            r#"[{"name":"suroga-janus-1","urls":[]}]"#,
            r#"[{"name":"suroga-janus-1","urls":["stun:a"],"port":3478}]"#,
            r#"[{"name":"suroga-janus-1","urls":["stun:a"]},{"name":"suroga-janus-1","urls":["stun:b"]}]"#,
            r#"[{"name":"nowhere","urls":["stun:a"]}]"#,
            r#"[3478]"#,
        ] {
            let e = static_fleet(&[("TURN_URLS", bad), ("TURN_SHARED_SECRET", "s")]).unwrap_err();
            assert!(e.contains("TURN_URLS"), "{bad}: {e}");
        }
    }

    #[test]
    fn urls_are_checked_as_browsers_parse_them() {
        for good in [
            "stun:stun.example.org",
            "stun:198.18.7.1:3478",
            "turn:turn.example.org:3478?transport=udp",
            "turn:turn.example.org:3478?transport=tcp",
            "turns:turn.example.org:443?transport=tcp",
            "turn:[2001:db8::1]:3478",
            "turns:[::1]",
        ] {
            assert!(ice_url_kind(good).is_ok(), "{good}: {:?}", ice_url_kind(good));
        }
        assert_eq!(ice_url_kind("stun:a"), Ok(IceUrlKind::Stun));
        assert_eq!(ice_url_kind("turns:a"), Ok(IceUrlKind::Turn));
        for bad in [
            "",
            "stun:",
            "turn:",
            "STUN:a",
            "turn://turn.example.org",
            "turn:user@turn.example.org",
            "turn:turn.example.org:0",
            "turn:turn.example.org:65536",
            "turn:turn.example.org:34x8",
            "turn:turn.example.org:3478?transport=sctp",
            "turn:turn.example.org:3478?transport=udp&x=1",
            "stun:stun.example.org?transport=udp",
            "turn:turn example.org",
            "turn:turn.example.org.",
            "turn:-turn.example.org",
            "turn:[2001:db8::zz]",
            "turn:[2001:db8::1",
            "turn:[2001:db8::1]3478",
            " stun:a",
        ] {
            let e = ice_url_kind(bad).unwrap_err();
            assert!(e.starts_with(&format!("{bad:?}")), "{bad}: {e}");
        }
    }
}

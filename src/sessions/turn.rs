//! The ICE servers a participant gets with a join: the STUN and TURN URLs of the session's host
//! (`TURN_URLS`), the TURN ones with credentials minted for this join from `TURN_SHARED_SECRET`
//! in coturn's TURN REST API scheme (`use-auth-secret`): the username is
//! `<expiry, Unix seconds>:<opaque id>` and the credential `base64(HMAC-SHA1(secret, username))`.
//! coturn recomputes the credential from the username with the same secret and refuses an
//! allocation (or its refresh) once the expiry has passed, so a credential dies with the
//! session's Janus tokens. Pure: the caller gives the time and the id.

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Serialize;

use crate::config::{IceConfig, IceUrlKind, ice_url_kind};

/// A server the browser may use for ICE, in its `RTCIceServer` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// The TURN REST API username: `<expiry>:<id>`. `id` is opaque to coturn (it shows in its log).
pub fn username(expires_at: DateTime<Utc>, id: &str) -> String {
    format!("{}:{id}", expires_at.timestamp())
}

/// The TURN REST API credential for `username`: standard (padded) base64 of
/// HMAC-SHA1(`secret`, `username`), what coturn computes with `static-auth-secret`.
pub fn credential(secret: &str, username: &str) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// The `ice_servers` for a participant of a session on `host`: one entry with its STUN URLs (no
/// credentials) and one with its TURN URLs and a credential minted for `id`, valid until
/// `expires_at`. Empty when the host has no URLs. (Configuration guarantees a shared secret
/// whenever there is a TURN URL; without one the TURN URLs are left out.)
pub fn ice_servers(ice: &IceConfig, host: &str, expires_at: DateTime<Utc>, id: &str) -> Vec<IceServer> {
    let urls = ice.urls.for_host(host);
    let of = |kind| urls.iter().filter(|u| ice_url_kind(u) == Ok(kind)).cloned().collect::<Vec<_>>();
    let (stun, turn) = (of(IceUrlKind::Stun), of(IceUrlKind::Turn));
    let mut servers = Vec::new();
    if !stun.is_empty() {
        servers.push(IceServer { urls: stun, username: None, credential: None });
    }
    if let (false, Some(secret)) = (turn.is_empty(), &ice.turn_shared_secret) {
        let username = username(expires_at, id);
        let credential = credential(secret.expose(), &username);
        servers.push(IceServer { urls: turn, username: Some(username), credential: Some(credential) });
    }
    servers
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeZone;

    use super::*;
    use crate::config::{Secret, TurnUrls};

    const BOOKING: &str = "0b7a5c2e-3f4d-4e1a-9c8b-2d6f1e0a7b35";

    fn at_2026() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 1, 0, 0).unwrap()
    }

    #[test]
    fn credentials_match_a_fixed_vector() {
        // Computed independently:
        // printf '%s' '1767229200:0b7a5c2e-3f4d-4e1a-9c8b-2d6f1e0a7b35.host' |
        //   openssl dgst -sha1 -hmac coturn-shared-secret -binary | base64
        let user = username(at_2026(), &format!("{BOOKING}.host"));
        assert_eq!(user, "1767229200:0b7a5c2e-3f4d-4e1a-9c8b-2d6f1e0a7b35.host");
        assert_eq!(credential("coturn-shared-secret", &user), "1a6Y9HGZOdo7lknPvQoO646KAvs=");
        let guest = username(at_2026(), &format!("{BOOKING}.guest"));
        assert_eq!(credential("coturn-shared-secret", &guest), "HMgfAqtiwkrqdu7ODBo9r7CDaLA=");
    }

    fn per_host() -> IceConfig {
        IceConfig {
            urls: TurnUrls::PerHost(BTreeMap::from([
                (
                    "janus-1".to_string(),
                    vec![
                        "stun:t1.example.org:3478".to_string(),
                        "turn:t1.example.org:3478?transport=udp".to_string(),
                        "turns:t1.example.org:443?transport=tcp".to_string(),
                    ],
                ),
                ("janus-2".to_string(), vec!["stun:t2.example.org:3478".to_string()]),
            ])),
            turn_shared_secret: Some(Secret::new("coturn-shared-secret")),
            ..IceConfig::default()
        }
    }

    #[test]
    fn stun_without_credentials_and_turn_with_them_for_the_sessions_host() {
        let servers = ice_servers(&per_host(), "janus-1", at_2026(), &format!("{BOOKING}.host"));
        assert_eq!(
            servers,
            vec![
                IceServer { urls: vec!["stun:t1.example.org:3478".into()], username: None, credential: None },
                IceServer {
                    urls: vec![
                        "turn:t1.example.org:3478?transport=udp".into(),
                        "turns:t1.example.org:443?transport=tcp".into()
                    ],
                    username: Some("1767229200:0b7a5c2e-3f4d-4e1a-9c8b-2d6f1e0a7b35.host".into()),
                    credential: Some("1a6Y9HGZOdo7lknPvQoO646KAvs=".into()),
                },
            ]
        );
        // The browser's shape: no null fields.
        assert_eq!(
            serde_json::to_value(&servers[0]).unwrap(),
            serde_json::json!({"urls": ["stun:t1.example.org:3478"]})
        );
    }

    #[test]
    fn each_host_gets_its_own_servers_and_none_is_empty() {
        let two = ice_servers(&per_host(), "janus-2", at_2026(), "x");
        assert_eq!(
            two,
            vec![IceServer { urls: vec!["stun:t2.example.org:3478".into()], username: None, credential: None }]
        );
        assert!(ice_servers(&per_host(), "janus-3", at_2026(), "x").is_empty());
        assert!(ice_servers(&IceConfig::default(), "janus-1", at_2026(), "x").is_empty());
    }
}

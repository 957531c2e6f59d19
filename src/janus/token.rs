//! Signed Janus client tokens (`token_auth_secret` mode).
//!
//! Janus 1.1.2 (`src/auth.c`, `janus_auth_check_signature`) accepts
//! `<expiry>,<realm>,<descriptor>[,<descriptor>...]:<signature>` where the signature is
//! `base64(HMAC-SHA1(secret, "<expiry>,<realm>,<descriptors>"))` in STANDARD, padded base64:
//! <https://github.com/meetecho/janus-gateway/blob/v1.1.2/src/auth.c>.
//! Newer Janus builds sign with HMAC-SHA256 and URL-safe base64 without padding; 1.1.2 refuses
//! those, so the algorithm is a setting ([`TokenAlgorithm`]).
//!
//! A participant holds two tokens:
//! - the CORE token ([`sign`]): realm `janus`, the plugins it may attach as descriptors
//!   (`janus_auth_check_plugin`); sent at the top level of every Janus request;
//! - the ROOM token ([`sign_room`]): realm `janus.plugin.videoroom`, descriptor `room=<id>`; a
//!   room created with `signed_tokens` admits a `join` only with it in the join body
//!   (`janus_videoroom_access_room` calls `janus_auth_check_signature_contains`).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};

/// The realm Janus checks in every signed token.
pub const REALM: &str = "janus";

/// How tokens are signed; must match the Janus build the hosts run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenAlgorithm {
    /// HMAC-SHA1, standard padded base64: Janus 1.1.x (the default).
    #[default]
    HmacSha1,
    /// HMAC-SHA256, URL-safe base64 without padding: newer Janus builds.
    HmacSha256,
}

/// A token algorithm name that is neither `hmac-sha1` nor `hmac-sha256`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown Janus token algorithm {0:?} (expected hmac-sha1 or hmac-sha256)")]
pub struct UnknownAlgorithm(pub String);

impl std::str::FromStr for TokenAlgorithm {
    type Err = UnknownAlgorithm;
    /// Parses the `JANUS_TOKEN_ALGORITHM` values `hmac-sha1` and `hmac-sha256`.
    fn from_str(s: &str) -> Result<Self, UnknownAlgorithm> {
        match s {
            "hmac-sha1" => Ok(Self::HmacSha1),
            "hmac-sha256" => Ok(Self::HmacSha256),
            other => Err(UnknownAlgorithm(other.to_string())),
        }
    }
}

/// Mints a core token valid until `expires_at` (whole seconds, truncated) for the given plugins,
/// e.g. `["janus.plugin.videoroom"]`. Pure: same inputs, same token.
pub fn sign(secret: &str, algorithm: TokenAlgorithm, expires_at: DateTime<Utc>, plugins: &[&str]) -> String {
    sign_realm(secret, algorithm, expires_at, REALM, plugins)
}

/// Mints a VideoRoom room token valid until `expires_at` that admits a `join` (publisher or
/// subscriber) to room `room` only. Pure.
pub fn sign_room(secret: &str, algorithm: TokenAlgorithm, expires_at: DateTime<Utc>, room: u64) -> String {
    sign_realm(secret, algorithm, expires_at, crate::janus::VIDEOROOM, &[&format!("room={room}")])
}

fn sign_realm(
    secret: &str,
    algorithm: TokenAlgorithm,
    expires_at: DateTime<Utc>,
    realm: &str,
    descriptors: &[&str],
) -> String {
    let mut data = format!("{},{realm}", expires_at.timestamp());
    for d in descriptors {
        data.push(',');
        data.push_str(d);
    }
    let signature = match algorithm {
        TokenAlgorithm::HmacSha1 => {
            let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
            mac.update(data.as_bytes());
            STANDARD.encode(mac.finalize().into_bytes())
        }
        TokenAlgorithm::HmacSha256 => {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
            mac.update(data.as_bytes());
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        }
    };
    format!("{data}:{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const VIDEOROOM: &str = "janus.plugin.videoroom";

    #[test]
    fn sha1_matches_a_fixed_vector() {
        // Computed independently: printf '1795507463,janus,janus.plugin.videoroom' |
        //   openssl dgst -sha1 -hmac janus -binary | base64
        let t = Utc.timestamp_opt(1_795_507_463, 0).unwrap();
        assert_eq!(
            sign("janus", TokenAlgorithm::HmacSha1, t, &[VIDEOROOM]),
            "1795507463,janus,janus.plugin.videoroom:5S9B19WMnMRrQPGskD9Fo/7PdkM="
        );
    }

    #[test]
    fn sha256_matches_a_fixed_vector_url_safe_without_padding() {
        // printf '1795507463,janus,janus.plugin.videoroom' | openssl dgst -sha256 -hmac janus -binary
        //   | base64 | tr '+/' '-_' | tr -d '='
        let t = Utc.timestamp_opt(1_795_507_463, 0).unwrap();
        assert_eq!(
            sign("janus", TokenAlgorithm::HmacSha256, t, &[VIDEOROOM]),
            "1795507463,janus,janus.plugin.videoroom:rMllOKeDG2T4yIqzPz8jnuz6CQweyI3XErdkDld7TeQ"
        );
    }

    #[test]
    fn room_tokens_name_the_videoroom_realm_and_the_room() {
        // printf '1795507463,janus.plugin.videoroom,room=4711' | openssl dgst -sha1 -hmac janus -binary | base64
        let t = Utc.timestamp_opt(1_795_507_463, 0).unwrap();
        assert_eq!(
            sign_room("janus", TokenAlgorithm::HmacSha1, t, 4711),
            "1795507463,janus.plugin.videoroom,room=4711:7VqU7XginS+2+93tMjmeDOxcqOI="
        );
    }

    #[test]
    fn several_plugins_are_comma_separated() {
        let t = Utc.timestamp_opt(10, 0).unwrap();
        let token = sign("s", TokenAlgorithm::HmacSha1, t, &["a", "b"]);
        assert!(token.starts_with("10,janus,a,b:"));
    }

    #[test]
    fn algorithm_names_parse() {
        assert_eq!("hmac-sha1".parse::<TokenAlgorithm>().unwrap(), TokenAlgorithm::HmacSha1);
        assert_eq!("hmac-sha256".parse::<TokenAlgorithm>().unwrap(), TokenAlgorithm::HmacSha256);
        assert!("sha1".parse::<TokenAlgorithm>().is_err());
    }
}

//! `POST /api/v1/janus/events`: Janus's event handler reports what happens in the session rooms
//! (`janus.eventhandler.sampleevh`, configured by `infra/janus/` on every host). Basic auth: user
//! `janus`, password `JANUS_EVENTS_SECRET` (generated for local hosts); 401 otherwise. The body is
//! checked whole ([`crate::janus::events::parse`]): a malformed one is 400 and changes nothing.
//! The sessions layer records the rest ([`crate::sessions::Sessions::record_janus_events`]);
//! events about rooms that are no session room are accepted and ignored, so Janus does not
//! retry them. A store failure is 503: Janus retries (`max_retransmissions`).

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, header},
};
use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{AppState, error::ApiError};
use crate::janus::events;

/// The user name the event handler sends (`backend_user` in `infra/janus/`).
pub const EVENTS_USER: &str = "janus";

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(janus_events))
}

/// What was done with a post.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventsAccepted {
    /// Events new to their session's record.
    pub recorded: usize,
    /// Events about rooms that are no session room of this service (ignored).
    pub ignored: usize,
}

/// True when `headers` carry the event handler's credentials of this deployment.
pub(super) fn from_event_handler(s: &AppState, headers: &HeaderMap) -> bool {
    s.janus_events_secret.as_ref().is_some_and(|secret| authorized(headers, secret.expose()))
}

/// True when `headers` carry basic auth `janus:<secret>` (compared in constant time).
fn authorized(headers: &HeaderMap, secret: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    let Some(encoded) = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic ")) else { return false };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
    let expected = format!("{EVENTS_USER}:{secret}");
    // Digests first: equal lengths, and the comparison below runs over all of them.
    let (a, b) = (Sha256::digest(&decoded), Sha256::digest(expected.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Janus's events (one event object, or an array of them), as its HTTP event handler posts them.
#[utoipa::path(post, path = "/janus/events", tag = "janus",
    request_body(content = Object, description = "a Janus event handler post: an event object or an array of them"),
    security(("basic" = [])),
    responses((status = 200, body = EventsAccepted), (status = 400, description = "Not an event handler post"),
        (status = 401, description = "Missing or wrong credentials"), (status = 413), (status = 503)))]
async fn janus_events(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<EventsAccepted>, ApiError> {
    if !from_event_handler(&s, &headers) {
        return Err(ApiError::BasicAuthRequired("Janus events need the event handler's credentials".into()));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    let parsed = events::parse(&value).map_err(|e| ApiError::BadRequest(e.0))?;
    let report = s.sessions.record_janus_events(parsed).await?;
    Ok(Json(EventsAccepted { recorded: report.recorded, ignored: report.unknown_rooms }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_pass: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_pass));
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn only_the_event_handlers_credentials_pass() {
        assert!(authorized(&basic("janus:s3cret"), "s3cret"));
        assert!(!authorized(&basic("janus:wrong"), "s3cret"));
        assert!(!authorized(&basic("other:s3cret"), "s3cret"));
        assert!(!authorized(&HeaderMap::new(), "s3cret"));
        let mut bearer = HeaderMap::new();
        bearer.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(!authorized(&bearer, "s3cret"));
    }
}

//! `GET /api/v1/health` (specification 5.2): the store decides the status code.
//!
//! Anyone may ask, so the anonymous answer is cheap: liveness and one store ping, never a call to
//! Janus or to the power backend (Azure Resource Manager). An admin's token adds each Janus
//! host's state (`janus`): its power state from the fleet's power cache (a few seconds old at
//! most) and, for running hosts, whether Janus answers.

use std::collections::BTreeMap;

use axum::{Json, extract::State, http::StatusCode};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::AppState;
use crate::auth::Caller;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health))
}

/// The service's health.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` when the database cannot be reached.
    pub status: &'static str,
    /// `ok` or `unavailable`.
    pub database: &'static str,
    /// The service version.
    pub version: &'static str,
    /// Admins only: each Janus host, `ok` or `unavailable` (a host switched off to save cost is
    /// `unavailable`). Absent for everyone else.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub janus: Option<BTreeMap<String, &'static str>>,
}

/// Health check; no authentication needed. 503 when the database is unreachable. With an admin's
/// token the answer also lists each Janus host's state.
#[utoipa::path(get, path = "/health", tag = "health",
    security((), ("bearer" = [])),
    responses((status = 200, body = Health), (status = 401, description = "A token was sent and does not verify"),
        (status = 429, description = "Too many requests from this address"), (status = 503, body = Health)))]
async fn health(State(s): State<AppState>, caller: Option<Caller>) -> (StatusCode, Json<Health>) {
    let admin = caller.is_some_and(|c| c.admin);
    let details = async {
        if admin {
            Some(s.sessions.hosting().health().await.into_iter().map(|h| (h.name, h.janus)).collect())
        } else {
            None
        }
    };
    let (db, janus) = tokio::join!(s.store.ping(), details);
    let database = match db {
        Ok(()) => "ok",
        Err(e) => {
            tracing::warn!(error = %e, "health: store unreachable");
            "unavailable"
        }
    };
    let status = if database == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = Health {
        status: if database == "ok" { "ok" } else { "unavailable" },
        database,
        version: env!("CARGO_PKG_VERSION"),
        janus,
    };
    (status, Json(body))
}

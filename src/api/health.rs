//! `GET /api/v1/health` (specification 5.2): the store decides the status code; Janus hosts are
//! reported per host without failing the API's own health.

use std::collections::BTreeMap;

use axum::{Json, extract::State, http::StatusCode};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::AppState;

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
    /// Each Janus host: `ok` or `unavailable` (a host switched off to save cost is `unavailable`).
    pub janus: BTreeMap<String, &'static str>,
}

/// Health check; no authentication. 503 when the database is unreachable.
#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn health(State(s): State<AppState>) -> (StatusCode, Json<Health>) {
    let (db, hosts) = tokio::join!(s.store.ping(), s.sessions.hosting().health());
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
        janus: hosts.into_iter().map(|h| (h.name, h.janus)).collect(),
    };
    (status, Json(body))
}

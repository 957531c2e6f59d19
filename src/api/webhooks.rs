//! The webhook outbox for operators (admin only): `GET /api/v1/webhooks/deliveries` lists events
//! and their delivery (`?status=failed` for the dead letters), `POST
//! /api/v1/webhooks/deliveries/{id}/redeliver` makes one due again and sends it at once.

use axum::{
    Json,
    extract::{OriginalUri, State},
    http::HeaderMap,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    AppState,
    error::ApiError,
    extract::{ApiPath, ApiQuery},
    paging::{Page, PageRequest},
};
use crate::{
    auth::AdminCaller,
    domain::events::EventType,
    store::{Delivery, DeliveryKey, DeliveryStatus, StoreError},
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_deliveries)).routes(routes!(redeliver))
}

/// `GET /webhooks/deliveries` filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// `pending`, `delivered` or `failed` (dead-lettered); all when absent.
    #[param(value_type = Option<DeliveryStatus>)]
    pub status: Option<String>,
    /// Most events in the answer: 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Where to go on: the `cursor` of the previous answer's `Link` (opaque).
    #[param(max_length = 512)]
    pub cursor: Option<String>,
}

/// An event in the outbox and how its delivery went.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// The event id (the `webhook-id` header).
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub booking_id: Uuid,
    /// When what it reports happened.
    pub occurred_at: DateTime<Utc>,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub enqueued_at: DateTime<Utc>,
    /// For pending events: not before this.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The last failed attempt's reason (an HTTP status or a transport error).
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The exact body every attempt sends.
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        Self {
            body: serde_json::from_str(&d.event.body).unwrap_or(serde_json::Value::Null),
            id: d.event.id,
            event_type: d.event.event_type,
            booking_id: d.event.booking_id,
            occurred_at: d.event.at,
            next_attempt_at: (d.status == DeliveryStatus::Pending).then_some(d.next_attempt_at),
            status: d.status,
            attempts: d.attempts,
            enqueued_at: d.enqueued_at,
            last_error: d.last_error,
            delivered_at: d.delivered_at,
        }
    }
}

/// Webhook events and their delivery, newest first, a page at a time (`Link: <...>; rel="next"`
/// while more remain); `status=failed` lists the dead letters.
#[utoipa::path(get, path = "/webhooks/deliveries", tag = "webhooks", params(DeliveriesQuery),
    security(("bearer" = [])),
    responses((status = 200, body = [DeliveryView], headers(("Link" = String, description = "The next page: `<url>; rel=\"next\"`"))),
        (status = 400, description = "Invalid status, limit or cursor"), (status = 401), (status = 403)))]
async fn list_deliveries(
    State(s): State<AppState>,
    _admin: AdminCaller,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> Result<Page<DeliveryView>, ApiError> {
    let page = PageRequest::<DeliveryKey>::parse("deliveries", q.limit, q.cursor.as_deref())?;
    let status = q.status.as_deref().map(str::parse::<DeliveryStatus>).transpose().map_err(ApiError::BadRequest)?;
    let list = s.store.deliveries_page(status, page.after.as_ref(), page.fetch()).await?;
    Ok(Page::new(list, &page, "deliveries", DeliveryKey::of, &uri, &headers).map(DeliveryView::from))
}

/// Makes an event pending again (a dead letter, or one delivered that the receiver lost), due
/// now with its age restarted, and sends it at once.
#[utoipa::path(post, path = "/webhooks/deliveries/{id}/redeliver", tag = "webhooks",
    params(("id" = String, Path, description = "the event id")), security(("bearer" = [])),
    responses((status = 202, body = DeliveryView), (status = 401), (status = 403), (status = 404)))]
async fn redeliver(
    State(s): State<AppState>,
    admin: AdminCaller,
    ApiPath(id): ApiPath<String>,
) -> Result<(axum::http::StatusCode, Json<DeliveryView>), ApiError> {
    let now = s.clock.now();
    let d = s.store.redeliver(&id, now).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::NotFound(format!("no webhook event {id:?}")),
        other => other.into(),
    })?;
    tracing::info!(event_id = %id, admin = %admin.0.user, "webhook event queued for redelivery");
    if let Some(w) = &s.webhooks {
        w.deliver_soon(vec![(d.event.booking_id, d.event.id.clone())]);
    }
    Ok((axum::http::StatusCode::ACCEPTED, Json(d.into())))
}

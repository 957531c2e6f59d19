//! The operators' surface (admin only): the Janus hosts, manual start/deallocate overrides, the
//! dry-run plan and VM usage for billing (specification 1.2, 1.3).

use std::collections::BTreeMap;

use axum::{Json, extract::State};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    AppState,
    error::ApiError,
    extract::{ApiPath, ApiQuery, JsonBody},
};
use crate::{
    auth::AdminCaller,
    domain::{TimeSlot, parse_instant},
    fleet::{
        boots::LeadInfo,
        control::{FleetPlan, HostOverride, OverrideAction},
        planner::{HostAction, Warning},
        power::{PowerError, PowerOutcome},
        usage::{UsageInput, UsageReport, usage},
    },
    store::{OpAction, Operation},
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_hosts))
        .routes(routes!(start_host))
        .routes(routes!(deallocate_host))
        .routes(routes!(get_plan))
        .routes(routes!(get_usage))
}

/// Longest period `GET /plan` and `GET /usage` cover.
const MAX_PERIOD_DAYS: i64 = 31;
/// Longest operator override.
const MAX_OVERRIDE_DAYS: i64 = 7;

/// A planned on-interval of a host.
#[derive(Debug, Serialize, ToSchema)]
pub struct OnIntervalView {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub bookings: Vec<Uuid>,
}

/// What the plan says a host should do now.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionView {
    /// `start`, `keep_on`, `deallocate` or `stay_off`.
    pub action: &'static str,
    /// The booking that causes it (the next one for `stay_off`, the last one for `deallocate`).
    pub booking: Option<Uuid>,
}

impl From<&HostAction> for ActionView {
    fn from(a: &HostAction) -> Self {
        match a {
            HostAction::Start { booking } => Self { action: "start", booking: Some(*booking) },
            HostAction::KeepOn { booking } => Self { action: "keep_on", booking: Some(*booking) },
            HostAction::Deallocate { last } => Self { action: "deallocate", booking: *last },
            HostAction::StayOff { next } => Self { action: "stay_off", booking: *next },
        }
    }
}

/// One host as `GET /hosts` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct HostView {
    pub name: String,
    pub capacity: u32,
    /// `running`, `starting`, `stopped`, `deallocating`, `deallocated`, `unknown`; null when the
    /// power backend could not be asked (see `power_error`).
    #[schema(value_type = Option<String>)]
    pub power_state: Option<serde_json::Value>,
    pub power_error: Option<String>,
    /// The operator override in force.
    #[serde(rename = "override")]
    #[schema(value_type = Option<Object>)]
    pub override_: Option<serde_json::Value>,
    /// Bookings the plan puts on this host in the next 24 hours.
    pub bookings: Vec<Uuid>,
    pub next_action: ActionView,
    /// The next planned on-interval (or the current one).
    pub next_on: Option<OnIntervalView>,
    /// How long before a session the host is started: learned from its recent boots (their
    /// 90th percentile plus a margin), at most `FLEET_LEAD_MINUTES`.
    pub lead: LeadInfo,
}

/// A dry run of the schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanView {
    pub now: DateTime<Utc>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub hosts: Vec<HostPlanView>,
    /// Booking id → host.
    pub assignments: BTreeMap<Uuid, String>,
    pub warnings: Vec<String>,
    pub vm_minutes: f64,
    pub starts: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HostPlanView {
    pub name: String,
    pub on_intervals: Vec<OnIntervalView>,
    pub action: ActionView,
}

/// `from`/`to` of the dry run and usage.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeriodQuery {
    /// RFC 3339; default now (plan) or 30 days ago (usage).
    pub from: Option<String>,
    /// RFC 3339; default 7 days after `from` (plan) or now (usage).
    pub to: Option<String>,
}

/// `POST /hosts/{name}/start|deallocate` body (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideRequest {
    /// Until when the reconciler must not undo this (RFC 3339); default one hour from now,
    /// at most 7 days.
    pub until: Option<String>,
    /// Deallocate even while a session on the host is in progress.
    pub force: Option<bool>,
}

/// What a manual override did.
#[derive(Debug, Serialize, ToSchema)]
pub struct OverrideResult {
    pub host: String,
    /// `start` or `deallocate`.
    pub action: &'static str,
    pub until: DateTime<Utc>,
    /// `ok`, or `not managed` for always-on hosts.
    pub result: String,
}

fn warning_text(w: &Warning) -> String {
    match w {
        Warning::NoCapacity { booking } => format!("no host has capacity for booking {booking}"),
        Warning::NotReadyInTime { booking, host, short_by } => {
            format!("booking {booking}: host {host} is off {} min into its lead time", short_by.num_minutes())
        }
        Warning::StickyHostMissing { booking, host } => format!("booking {booking}: host {host} is gone; reassigned"),
        Warning::OverCapacity { booking, host } => format!("booking {booking} overloads host {host}"),
    }
}

fn period(q: &PeriodQuery, default_from: DateTime<Utc>, default_len: Duration) -> Result<TimeSlot, ApiError> {
    let from = q.from.as_deref().map(|v| parse_instant("from", v)).transpose()?.unwrap_or(default_from);
    let to = q.to.as_deref().map(|v| parse_instant("to", v)).transpose()?.unwrap_or(from + default_len);
    let slot = TimeSlot::new(from, to).map_err(|_| ApiError::BadRequest("from must be before to".into()))?;
    if slot.duration() > Duration::days(MAX_PERIOD_DAYS) {
        return Err(ApiError::BadRequest(format!("the period may span at most {MAX_PERIOD_DAYS} days")));
    }
    Ok(slot)
}

fn plan_view(p: &FleetPlan, slot: TimeSlot) -> PlanView {
    PlanView {
        now: p.plan.now,
        from: slot.start(),
        to: slot.end(),
        hosts: p
            .plan
            .hosts
            .iter()
            .map(|h| HostPlanView {
                name: h.name.clone(),
                on_intervals: h
                    .on_intervals
                    .iter()
                    .filter(|i| i.end > slot.start() && i.start < slot.end())
                    .map(|i| OnIntervalView { start: i.start, end: i.end, bookings: i.bookings.clone() })
                    .collect(),
                action: ActionView::from(&h.action),
            })
            .collect(),
        assignments: p.plan.assignments.clone(),
        warnings: p.plan.warnings.iter().map(warning_text).collect(),
        vm_minutes: p.plan.vm_minutes(),
        starts: p.plan.starts(),
    }
}

/// The Janus hosts: power state, override, planned bookings and next action.
#[utoipa::path(get, path = "/hosts", tag = "hosts", security(("bearer" = [])),
    responses((status = 200, body = [HostView]), (status = 401), (status = 403)))]
async fn list_hosts(State(s): State<AppState>, _admin: AdminCaller) -> Result<Json<Vec<HostView>>, ApiError> {
    let now = s.clock.now();
    let fleet = &s.fleet_ops;
    let statuses = fleet.host_statuses().await?;
    let plan = fleet.plan_from(now, now, now + Duration::hours(24), &statuses).await?;
    let leads = fleet.host_leads().await?;
    Ok(Json(
        statuses
            .into_iter()
            .map(|st| {
                let hp = plan.plan.hosts.iter().find(|h| h.name == st.name);
                HostView {
                    bookings: hp.map(|h| h.bookings.clone()).unwrap_or_default(),
                    next_action: hp
                        .map(|h| ActionView::from(&h.action))
                        .unwrap_or(ActionView { action: "stay_off", booking: None }),
                    next_on: hp.and_then(|h| h.on_intervals.iter().find(|i| i.end > now)).map(|i| OnIntervalView {
                        start: i.start,
                        end: i.end,
                        bookings: i.bookings.clone(),
                    }),
                    power_state: st.power_state.map(|p| serde_json::to_value(p).unwrap_or_default()),
                    power_error: st.power_error,
                    override_: st.override_.map(|o| serde_json::to_value(o).unwrap_or_default()),
                    lead: leads
                        .get(&st.name)
                        .copied()
                        .unwrap_or_else(|| crate::fleet::boots::learned_lead(&[], fleet.policy.plan.lead)),
                    name: st.name,
                    capacity: st.capacity,
                }
            })
            .collect(),
    ))
}

async fn manual(
    s: &AppState,
    admin: &AdminCaller,
    name: &str,
    action: OverrideAction,
    req: OverrideRequest,
) -> Result<Json<OverrideResult>, ApiError> {
    let fleet = &s.fleet_ops;
    if !fleet.hosts.iter().any(|h| h.name == name) {
        return Err(ApiError::NotFound(format!("no host named {name:?}")));
    }
    let now = s.clock.now();
    let until =
        req.until.as_deref().map(|v| parse_instant("until", v)).transpose()?.unwrap_or(now + Duration::hours(1));
    if until <= now || until - now > Duration::days(MAX_OVERRIDE_DAYS) {
        return Err(ApiError::BadRequest(format!(
            "until must be in the future and at most {MAX_OVERRIDE_DAYS} days away"
        )));
    }
    let (op_action, verb) = match action {
        OverrideAction::Start => (OpAction::Start, "start"),
        OverrideAction::Deallocate => (OpAction::Deallocate, "deallocate"),
    };
    if action == OverrideAction::Deallocate && !req.force.unwrap_or(false) {
        let plan = fleet.plan(now, now, now + Duration::minutes(1)).await?;
        let in_progress =
            plan.bookings.iter().filter(|b| b.slot.contains(now) && plan.plan.host_of(b.id) == Some(name)).count();
        if in_progress > 0 {
            return Err(ApiError::Conflict(format!(
                "{in_progress} session(s) on {name} are in progress; use \"force\": true to deallocate anyway"
            )));
        }
    }
    fleet.set_override(name, &HostOverride { action, until, by: admin.0.user.clone(), at: now }).await?;
    let started = std::time::Instant::now();
    let outcome = match action {
        OverrideAction::Start => fleet.power.start(name).await,
        OverrideAction::Deallocate => fleet.power.deallocate(name).await,
    };
    let result = match &outcome {
        Ok(PowerOutcome::Done) => "ok".to_string(),
        Ok(PowerOutcome::NotManaged) => "not managed".to_string(),
        Err(e) => e.to_string(),
    };
    let _ = s
        .store
        .append_operation(&Operation {
            id: Uuid::new_v4(),
            at: now,
            actor: admin.0.user.clone(),
            action: op_action,
            host: Some(name.to_string()),
            booking_id: None,
            room_id: None,
            result: result.clone(),
            duration_ms: started.elapsed().as_millis() as u64,
        })
        .await;
    tracing::info!(host = name, action = verb, admin = %admin.0.user, %until, %result, "manual host override");
    match outcome {
        Ok(_) => Ok(Json(OverrideResult { host: name.to_string(), action: verb, until, result })),
        Err(e @ PowerError::Transient { .. }) => Err(ApiError::Unavailable {
            detail: format!("the override is stored, but {verb} did not go through yet: {e}; the reconciler retries"),
            retry_after: e.retry_after().map(|d| d.as_secs().max(1)).or(Some(30)),
        }),
        Err(e) => Err(ApiError::BadGateway(format!("the override is stored, but {verb} failed: {e}"))),
    }
}

/// Start a host now and keep it on until `until` (a manual override, logged with who did it).
#[utoipa::path(post, path = "/hosts/{name}/start", tag = "hosts", params(("name" = String, Path)),
    request_body(content = OverrideRequest, description = "optional"), security(("bearer" = [])),
    responses((status = 200, body = OverrideResult), (status = 400), (status = 401), (status = 403), (status = 404),
        (status = 502), (status = 503)))]
async fn start_host(
    State(s): State<AppState>,
    admin: AdminCaller,
    ApiPath(name): ApiPath<String>,
    body: Option<JsonBody<OverrideRequest>>,
) -> Result<Json<OverrideResult>, ApiError> {
    manual(&s, &admin, &name, OverrideAction::Start, body.map(|b| b.value).unwrap_or_default()).await
}

/// Deallocate a host now and keep it off until `until` (a manual override, logged). 409 while a
/// session on it is in progress, unless `force`.
#[utoipa::path(post, path = "/hosts/{name}/deallocate", tag = "hosts", params(("name" = String, Path)),
    request_body(content = OverrideRequest, description = "optional"), security(("bearer" = [])),
    responses((status = 200, body = OverrideResult), (status = 400), (status = 401), (status = 403), (status = 404),
        (status = 409), (status = 502), (status = 503)))]
async fn deallocate_host(
    State(s): State<AppState>,
    admin: AdminCaller,
    ApiPath(name): ApiPath<String>,
    body: Option<JsonBody<OverrideRequest>>,
) -> Result<Json<OverrideResult>, ApiError> {
    manual(&s, &admin, &name, OverrideAction::Deallocate, body.map(|b| b.value).unwrap_or_default()).await
}

/// A dry run of the schedule: which host is on when, for which bookings. Changes nothing.
#[utoipa::path(get, path = "/plan", tag = "hosts", params(PeriodQuery), security(("bearer" = [])),
    responses((status = 200, body = PlanView), (status = 400), (status = 401), (status = 403)))]
async fn get_plan(
    State(s): State<AppState>,
    _admin: AdminCaller,
    ApiQuery(q): ApiQuery<PeriodQuery>,
) -> Result<Json<PlanView>, ApiError> {
    let now = s.clock.now();
    let slot = period(&q, now, Duration::days(7))?;
    let plan = s.fleet_ops.plan(now, slot.start(), slot.end()).await?;
    Ok(Json(plan_view(&plan, slot)))
}

/// VM minutes per host in a period, attributed to bookings and users, and the saving against
/// every host always on. From the operations log.
#[utoipa::path(get, path = "/usage", tag = "hosts", params(PeriodQuery), security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 400), (status = 401), (status = 403)))]
async fn get_usage(
    State(s): State<AppState>,
    _admin: AdminCaller,
    ApiQuery(q): ApiQuery<PeriodQuery>,
) -> Result<Json<UsageReport>, ApiError> {
    let now = s.clock.now();
    let default_to = q.to.as_deref().map(|v| parse_instant("to", v)).transpose()?.unwrap_or(now);
    let slot = period(&q, default_to - Duration::days(30), Duration::days(30))?;
    let fleet = &s.fleet_ops;
    // A host on at `from` was started before it: read the log a week further back.
    let ops = s.store.operations(TimeSlot::new(slot.start() - Duration::days(7), slot.end())?).await?;
    let policy = &fleet.policy.plan;
    let bookings =
        s.store.bookings_between(TimeSlot::new(slot.start() - policy.grace, slot.end() + policy.lead)?).await?;
    let ids: Vec<Uuid> = bookings.iter().map(|b| b.id).collect();
    let hosts_of: BTreeMap<Uuid, String> =
        s.store.assignments(&ids).await?.into_iter().map(|a| (a.booking_id, a.host)).collect();
    let served: Vec<_> = bookings
        .into_iter()
        .filter_map(|b| {
            let host = hosts_of
                .get(&b.id)
                .cloned()
                .or_else(|| fleet.always_on.then(|| fleet.default_host(b.room_id).name.clone()))?;
            Some((b, host))
        })
        .collect();
    let names: Vec<String> = fleet.hosts.iter().map(|h| h.name.clone()).collect();
    Ok(Json(usage(&UsageInput {
        period: slot,
        now,
        hosts: &names,
        always_on: fleet.always_on,
        ops: &ops,
        bookings: &served,
        lead: policy.lead,
        grace: policy.grace,
    })))
}

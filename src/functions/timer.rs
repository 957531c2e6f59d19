//! The timer invocation the Functions host sends to a custom handler, and the reply it expects.
//!
//! Spec: <https://learn.microsoft.com/azure/azure-functions/functions-custom-handlers#request-payload>
//! and /work/shared/reference/functions-host.md. The host sends `POST /{function-name}` with
//! [`TimerInvocation`] as JSON (often chunked); the handler answers [`timer_reply`] or
//! [`timer_error_reply`]. Parsing is tolerant on purpose: the first run's `Last` has no UTC
//! offset, `ScheduleStatus` is `null` without `useMonitor`, and unknown fields are ignored.

use axum::{
    extract::{FromRequest, Request},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Datelike, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// A timestamp as the host writes it: RFC 3339 with an offset, or (for `DateTime.MinValue`, the
/// "never ran" marker) a bare `0001-01-01T00:00:00` that is read as UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostTime(pub DateTime<Utc>);

impl HostTime {
    /// The host's "never" marker: .NET `DateTime.MinValue`, year 1.
    pub fn is_min_value(&self) -> bool {
        self.0.year() <= 1
    }
}

impl<'de> Deserialize<'de> for HostTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_host_time(&s)
            .map(HostTime)
            .ok_or_else(|| serde::de::Error::custom(format!("not a host timestamp: {s:?}")))
    }
}

impl Serialize for HostTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_rfc3339())
    }
}

/// Reads RFC 3339, then offset-less ISO 8601 (with or without fractional seconds) as UTC.
pub fn parse_host_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|t| t.and_utc())
}

/// The whole body of a timer invocation: `{"Data":{"timer":{...}},"Metadata":{"sys":{...}}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct TimerInvocation {
    #[serde(rename = "Data")]
    pub data: TimerData,
    #[serde(rename = "Metadata", default)]
    pub metadata: Metadata,
}

/// `Data`: the trigger's input, keyed by the binding name (`timer` in our function.json files).
#[derive(Debug, Clone, Deserialize)]
pub struct TimerData {
    pub timer: TimerInfo,
}

/// The host's `TimerInfo`.
#[derive(Debug, Clone, Deserialize)]
pub struct TimerInfo {
    /// `{"AdjustForDST":true}` or similar; kept raw because nothing here depends on it.
    #[serde(rename = "Schedule", default)]
    pub schedule: Option<serde_json::Value>,
    /// `null` when the function's `useMonitor` is false.
    #[serde(rename = "ScheduleStatus", default)]
    pub schedule_status: Option<ScheduleStatus>,
    /// True when the host fires an occurrence late (after a restart or a lost lease).
    #[serde(rename = "IsPastDue", default)]
    pub is_past_due: bool,
}

/// When the schedule monitor last and next fires.
#[derive(Debug, Clone, Deserialize)]
pub struct ScheduleStatus {
    /// `0001-01-01T00:00:00` (no offset) before the first run.
    #[serde(rename = "Last")]
    pub last: HostTime,
    #[serde(rename = "Next")]
    pub next: HostTime,
    #[serde(rename = "LastUpdated")]
    pub last_updated: HostTime,
}

/// `Metadata`: only `sys` is read; trigger metadata beyond it is ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub sys: Option<SysMetadata>,
}

/// `Metadata.sys`: the function name, the host's clock and a fresh GUID per invocation.
#[derive(Debug, Clone, Deserialize)]
pub struct SysMetadata {
    #[serde(rename = "MethodName")]
    pub method_name: String,
    #[serde(rename = "UtcNow")]
    pub utc_now: HostTime,
    #[serde(rename = "RandGuid", default)]
    pub rand_guid: Option<String>,
}

impl TimerInvocation {
    /// Parses the host's JSON body. Errors: the body is not JSON or lacks `Data.timer`.
    pub fn from_slice(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The last occurrence the host recorded, or `None` before the first run (or without a monitor).
    pub fn last_run(&self) -> Option<DateTime<Utc>> {
        let last = self.data.timer.schedule_status.as_ref()?.last;
        (!last.is_min_value()).then_some(last.0)
    }

    /// The occurrence the host plans after this one, when it runs a schedule monitor.
    pub fn next_run(&self) -> Option<DateTime<Utc>> {
        self.data.timer.schedule_status.as_ref().map(|s| s.next.0)
    }

    /// Whether this occurrence fires late.
    pub fn is_past_due(&self) -> bool {
        self.data.timer.is_past_due
    }

    /// The host's clock at invocation (`Metadata.sys.UtcNow`), if sent.
    pub fn utc_now(&self) -> Option<DateTime<Utc>> {
        self.metadata.sys.as_ref().map(|s| s.utc_now.0)
    }

    /// The function name the host invoked (`Metadata.sys.MethodName`), if sent.
    pub fn method_name(&self) -> Option<&str> {
        self.metadata.sys.as_ref().map(|s| s.method_name.as_str())
    }
}

/// The reply body the host expects from a custom handler: never empty, never `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationReply {
    #[serde(rename = "Outputs")]
    pub outputs: serde_json::Map<String, serde_json::Value>,
    #[serde(rename = "Logs")]
    pub logs: Vec<String>,
    #[serde(rename = "ReturnValue")]
    pub return_value: Option<serde_json::Value>,
}

fn reply(status: StatusCode, logs: Vec<String>) -> Response {
    let body = InvocationReply { outputs: serde_json::Map::new(), logs, return_value: None };
    // Serializing this struct cannot fail: it holds only strings, maps and null.
    let json = serde_json::to_vec(&body).unwrap_or_else(|_| br#"{"Outputs":{},"Logs":[],"ReturnValue":null}"#.to_vec());
    (status, [(header::CONTENT_TYPE, "application/json")], json).into_response()
}

/// A successful timer invocation: 200, `application/json`,
/// `{"Outputs":{},"Logs":[..],"ReturnValue":null}`. The logs appear in the host's invocation log.
pub fn timer_reply(logs: Vec<String>) -> Response {
    reply(StatusCode::OK, logs)
}

/// A failed timer invocation: 500 with the same JSON shape and the error as the last log line, so
/// the host marks the invocation failed (and shows why) instead of waiting for a body.
pub fn timer_error_reply(mut logs: Vec<String>, error: &dyn std::error::Error) -> Response {
    let mut line = format!("error: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    logs.push(line);
    reply(StatusCode::INTERNAL_SERVER_ERROR, logs)
}

/// Why a timer request body was refused.
#[derive(Debug, thiserror::Error)]
pub enum TimerRejection {
    /// The body could not be read.
    #[error("cannot read the timer invocation body: {0}")]
    Body(#[from] axum::Error),
    /// The body is not a timer invocation.
    #[error("the body is not a timer invocation: {0}")]
    Json(#[from] serde_json::Error),
}

impl IntoResponse for TimerRejection {
    /// 400 in the host's reply shape, so the host records the reason instead of timing out.
    fn into_response(self) -> Response {
        reply(StatusCode::BAD_REQUEST, vec![self.to_string()])
    }
}

/// Extracts a [`TimerInvocation`] from the host's `POST /{function-name}` body, whatever its
/// `Content-Type` and transfer encoding (the host sends it chunked).
impl<S: Send + Sync> FromRequest<S> for TimerInvocation {
    type Rejection = TimerRejection;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::to_bytes(req.into_body(), 1 << 20).await?;
        Ok(TimerInvocation::from_slice(&bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's exact payload (first run: `Last` without offset).
    const FIRST_RUN: &str = r#"{"Data":{"timer":{"Schedule":{"AdjustForDST":true},
  "ScheduleStatus":{"Last":"0001-01-01T00:00:00","Next":"2026-11-30T14:45:00+00:00","LastUpdated":"2026-11-30T14:43:50.403838+00:00"},
  "IsPastDue":false}},
 "Metadata":{"sys":{"MethodName":"fleet-reconcile","UtcNow":"2026-11-30T14:44:00.46239Z","RandGuid":"fa3b2fbc-26ed-4fcb-be75-82db8773b519"}}}"#;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn first_run_payload_parses_with_an_offsetless_last() {
        let inv = TimerInvocation::from_slice(FIRST_RUN.as_bytes()).unwrap();
        assert_eq!(inv.last_run(), None);
        assert_eq!(inv.next_run(), Some(at("2026-11-30T14:45:00Z")));
        assert!(!inv.is_past_due());
        assert_eq!(inv.method_name(), Some("fleet-reconcile"));
        assert_eq!(inv.utc_now(), Some(at("2026-11-30T14:44:00.46239Z")));
        let status = inv.data.timer.schedule_status.unwrap();
        assert!(status.last.is_min_value());
        assert_eq!(status.last_updated.0, at("2026-11-30T14:43:50.403838Z"));
    }

    #[test]
    fn later_run_with_offsets_reports_the_last_occurrence() {
        let body = FIRST_RUN
            .replace(r#""Last":"0001-01-01T00:00:00""#, r#""Last":"2026-11-30T14:44:00.0012+00:00""#)
            .replace(r#""IsPastDue":false"#, r#""IsPastDue":true"#);
        let inv = TimerInvocation::from_slice(body.as_bytes()).unwrap();
        assert_eq!(inv.last_run(), Some(at("2026-11-30T14:44:00.0012Z")));
        assert!(inv.is_past_due());
    }

    #[test]
    fn null_schedule_status_and_unknown_fields_are_accepted() {
        let body = r#"{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":null,"IsPastDue":false,"Extra":1},"other":2},
            "Metadata":{"sys":{"MethodName":"rotate-passwords","UtcNow":"2026-11-30T03:00:00.001Z","RandGuid":"5d6f1e0a-0000-4000-8000-000000000000"},"more":{}}}"#;
        let inv = TimerInvocation::from_slice(body.as_bytes()).unwrap();
        assert_eq!(inv.last_run(), None);
        assert_eq!(inv.next_run(), None);
        assert_eq!(inv.method_name(), Some("rotate-passwords"));
    }

    #[test]
    fn missing_metadata_is_tolerated() {
        let inv =
            TimerInvocation::from_slice(br#"{"Data":{"timer":{"ScheduleStatus":null,"IsPastDue":false}}}"#).unwrap();
        assert_eq!(inv.utc_now(), None);
    }

    #[test]
    fn a_body_without_the_timer_binding_is_an_error() {
        assert!(TimerInvocation::from_slice(br#"{"Data":{}}"#).is_err());
        assert!(TimerInvocation::from_slice(b"").is_err());
    }

    async fn body_of(r: Response) -> (StatusCode, String, serde_json::Value) {
        let status = r.status();
        let ct = r.headers()[header::CONTENT_TYPE].to_str().unwrap().to_string();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, ct, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn reply_is_200_json_in_the_host_shape() {
        let (status, ct, body) = body_of(timer_reply(vec!["scanned 12, started 3".into()])).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct, "application/json");
        assert_eq!(body, serde_json::json!({"Outputs":{},"Logs":["scanned 12, started 3"],"ReturnValue":null}));
    }

    #[tokio::test]
    async fn an_empty_log_still_gives_a_full_body() {
        let (_, _, body) = body_of(timer_reply(vec![])).await;
        assert_eq!(body, serde_json::json!({"Outputs":{},"Logs":[],"ReturnValue":null}));
    }

    #[tokio::test]
    async fn error_reply_is_500_with_the_error_chain_in_logs() {
        #[derive(Debug, thiserror::Error)]
        #[error("reconcile failed")]
        struct Outer(#[source] std::io::Error);
        let err = Outer(std::io::Error::other("vm-1 unreachable"));
        let (status, ct, body) = body_of(timer_error_reply(vec!["scanned 2".into()], &err)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(ct, "application/json");
        assert_eq!(
            body,
            serde_json::json!({"Outputs":{},"Logs":["scanned 2","error: reconcile failed: vm-1 unreachable"],"ReturnValue":null})
        );
    }

    #[tokio::test]
    async fn extractor_rejects_garbage_with_a_host_shaped_400() {
        let req =
            Request::builder().method("POST").uri("/fleet-reconcile").body(axum::body::Body::from("nope")).unwrap();
        let rejection = TimerInvocation::from_request(req, &()).await.unwrap_err();
        let (status, _, body) = body_of(rejection.into_response()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["ReturnValue"], serde_json::Value::Null);
        assert_eq!(body["Logs"].as_array().unwrap().len(), 1);
    }
}

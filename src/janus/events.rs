//! What Janus's event handler posts (`janus.eventhandler.sampleevh`, Janus 1.1.2
//! `src/events/janus_sampleevh.c`): one JSON event per POST with `grouping = false`, or an array
//! of them with `grouping = true`. Every event has an integer `type` and `timestamp` (the
//! host's clock, microseconds since the Unix epoch, `janus_get_real_time`) and, when
//! `server_name` is set, `emitter`. VideoRoom events are type 64 with
//! `event: {plugin: "janus.plugin.videoroom", data: {...}}`; of their `data` the service reads
//! (`src/plugins/janus_videoroom.c`, the `notify_event` calls):
//! - `{"event":"joined","room":R,"id":P,"private_id":..,"display":"..."}` (a publisher joined),
//! - `{"event":"leaving"|"kicked","room":R,"id":P}`,
//! - `{"event":"destroyed","room":R}` (everyone in the room is out; no `leaving` follows).
//!
//! Everything else is valid and ignored. [`parse`] checks the whole body before anything is
//! used, so a malformed post changes nothing.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::VIDEOROOM;

/// The event type of plugin events.
pub const PLUGIN_EVENT: i64 = 64;

/// What happened, of the VideoRoom events the service records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEventKind {
    /// A publisher joined, with its display name.
    Joined { participant: u64, display: Option<String> },
    /// A participant left or was kicked.
    Left { participant: u64 },
    /// The room was destroyed.
    Destroyed,
}

/// A VideoRoom event the service records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomEvent {
    /// The Janus host's `server_name`, when it sends one.
    pub emitter: Option<String>,
    pub at: DateTime<Utc>,
    pub room: u64,
    pub kind: RoomEventKind,
}

/// Why a body was refused (the API answers 400 with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadEvents(pub String);

/// The VideoRoom events of a posted body, or why the body is not an event handler post (then
/// nothing of it may be used). Events of other types and plugins are checked for the common
/// fields and skipped.
pub fn parse(body: &Value) -> Result<Vec<RoomEvent>, BadEvents> {
    let items: Vec<&Value> = match body {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![body],
        _ => return Err(BadEvents("the body must be a Janus event (an object) or an array of them".into())),
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let bad = |what: &str| BadEvents(format!("event {i}: {what}"));
        let obj = item.as_object().ok_or_else(|| bad("not an object"))?;
        let kind = obj.get("type").and_then(Value::as_i64).ok_or_else(|| bad("no integer `type`"))?;
        let micros = obj.get("timestamp").and_then(Value::as_i64).ok_or_else(|| bad("no integer `timestamp`"))?;
        let at = DateTime::from_timestamp_micros(micros).ok_or_else(|| bad("`timestamp` out of range"))?;
        if kind != PLUGIN_EVENT {
            continue;
        }
        let event = obj.get("event").and_then(Value::as_object).ok_or_else(|| bad("a plugin event without `event`"))?;
        if event.get("plugin").and_then(Value::as_str) != Some(VIDEOROOM) {
            continue;
        }
        let data =
            event.get("data").and_then(Value::as_object).ok_or_else(|| bad("a VideoRoom event without `data`"))?;
        let name = data.get("event").and_then(Value::as_str).unwrap_or_default();
        if !matches!(name, "joined" | "leaving" | "kicked" | "destroyed") {
            continue;
        }
        // Rooms and participants are integers unless Janus runs with string ids, which this
        // service never configures.
        let room = data.get("room").and_then(Value::as_u64).ok_or_else(|| bad("`room` is not an integer"))?;
        let participant = || data.get("id").and_then(Value::as_u64).ok_or_else(|| bad("`id` is not an integer"));
        let kind = match name {
            "joined" => RoomEventKind::Joined {
                participant: participant()?,
                display: data.get("display").and_then(Value::as_str).map(str::to_string),
            },
            "destroyed" => RoomEventKind::Destroyed,
            _ => RoomEventKind::Left { participant: participant()? },
        };
        let emitter = obj.get("emitter").and_then(Value::as_str).map(str::to_string);
        out.push(RoomEvent { emitter, at, room, kind });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vr(data: Value) -> Value {
        json!({"emitter":"local-1","type":64,"timestamp":1_900_000_000_000_000i64,"session_id":1,"handle_id":2,
               "event":{"plugin":"janus.plugin.videoroom","data":data}})
    }

    #[test]
    fn videoroom_joins_leaves_and_destroys_are_read_and_the_rest_skipped() {
        let at = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        let body = json!([
            vr(json!({"event":"joined","room":7,"id":11,"private_id":5,"display":"Ana"})),
            vr(json!({"event":"published","room":7,"id":11})),
            vr(json!({"event":"leaving","room":7,"id":11})),
            vr(json!({"event":"kicked","room":7,"id":12})),
            vr(json!({"event":"destroyed","room":7})),
            {"type":1,"timestamp":1,"session_id":3,"event":{"name":"created"}},
            {"type":64,"timestamp":1,"event":{"plugin":"janus.plugin.echotest","data":{"x":1}}},
        ]);
        let events = parse(&body).unwrap();
        let kinds: Vec<_> = events.iter().map(|e| (e.room, e.kind.clone())).collect();
        assert_eq!(
            kinds,
            vec![
                (7, RoomEventKind::Joined { participant: 11, display: Some("Ana".into()) }),
                (7, RoomEventKind::Left { participant: 11 }),
                (7, RoomEventKind::Left { participant: 12 }),
                (7, RoomEventKind::Destroyed),
            ]
        );
        assert!(events.iter().all(|e| e.at == at && e.emitter.as_deref() == Some("local-1")));
        assert_eq!(parse(&vr(json!({"event":"leaving","room":7,"id":11}))).unwrap().len(), 1, "a single object");
    }

    #[test]
    fn a_malformed_body_is_refused_whole() {
        for bad in [
            json!("text"),
            json!([1]),
            json!({"timestamp": 1}),
            json!({"type": 64}),
            json!([vr(json!({"event":"destroyed","room":7})), {"type":"64","timestamp":1}]),
            vr(json!({"event":"joined","room":"7","id":11})),
            vr(json!({"event":"leaving","room":7})),
            json!({"type":64,"timestamp":1,"event":{"plugin":"janus.plugin.videoroom"}}),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
    }
}

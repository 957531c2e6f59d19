//! Extractors that turn every client mistake into a 400-family problem, never a 500.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request},
    http::{HeaderMap, header},
};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::domain::hex;

/// `Path` whose rejection is a 400 problem ("bad ids").
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `Query` whose rejection is a 400 problem.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// A JSON object body: 400 when there is none (an empty body is no body, whatever the headers say),
/// 415 unless the content type is JSON, 413 past the body limit, 400 for malformed JSON, anything
/// but an object, unknown fields or wrong types (with serde's message, which names the field).
/// Keeps the raw body for [`JsonBody::fingerprint`], which only `Idempotency-Key` requests need.
pub struct JsonBody<T> {
    pub value: T,
    raw: Bytes,
}

impl<T> JsonBody<T> {
    /// A digest of the body's canonical form (whitespace and key order do not matter), for
    /// `Idempotency-Key` checks. Computed on demand: most requests carry no key.
    pub fn fingerprint(&self) -> String {
        // The body parsed once already; serde_json's map is ordered by key, so re-serializing
        // the value gives a canonical form.
        let canonical =
            serde_json::from_slice::<serde_json::Value>(&self.raw).map(|v| v.to_string()).unwrap_or_default();
        hex(&Sha256::digest(canonical.as_bytes()))
    }
}

/// Whether the request's `Content-Type` is JSON (`application/json` or `application/*+json`).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
        .unwrap_or(false)
}

/// Reads the whole body; `None` when it is empty. The Functions host's proxying mode keeps
/// `Content-Type` (with `Content-Length: 0`) on a request that has no body, and its forwarding
/// mode drops both: so only the bytes say whether there is a body.
async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<(bool, Option<Bytes>), ApiError> {
    let json = is_json(req.headers());
    let bytes = Bytes::from_request(req, state).await?;
    Ok((json, (!bytes.is_empty()).then_some(bytes)))
}

fn parse<T: DeserializeOwned>(json: bool, bytes: Bytes) -> Result<JsonBody<T>, ApiError> {
    if !json {
        return Err(ApiError::UnsupportedMediaType("the body must be JSON (Content-Type: application/json)".into()));
    }
    let raw: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    // Every body of this API is an object; serde would also read a struct from an array of its
    // fields in order, which no client means and the OpenAPI document does not allow.
    if !raw.is_object() {
        return Err(ApiError::BadRequest("the body must be a JSON object".into()));
    }
    let value = serde_json::from_value(raw).map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))?;
    Ok(JsonBody { value, raw: bytes })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match read_body(req, state).await? {
            (json, Some(bytes)) => parse(json, bytes),
            (_, None) => Err(ApiError::BadRequest("a JSON body is required".into())),
        }
    }
}

/// An optional JSON body: `None` when the request carries no body bytes (whatever its
/// `Content-Type` and `Content-Length` say); otherwise exactly as [`JsonBody`].
impl<S: Send + Sync, T: DeserializeOwned> OptionalFromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, ApiError> {
        match read_body(req, state).await? {
            (json, Some(bytes)) => parse(json, bytes).map(Some),
            (_, None) => Ok(None),
        }
    }
}

/// Reads the optional `Idempotency-Key` header: 1 to 255 visible ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let s = v
        .to_str()
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| ApiError::BadRequest("Idempotency-Key must be 1 to 255 visible ASCII characters".into()))?;
    Ok(Some(s.to_string()))
}

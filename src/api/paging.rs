//! Paging of the list endpoints: the `limit` and `cursor` query parameters, and the
//! `Link: <next page>; rel="next"` header. The body stays a JSON array.
//!
//! A cursor is opaque to clients: the base64url (no padding) of a small JSON document naming the
//! list and the last item's sort key ([`crate::store::pages`]). The next page is read from the
//! store strictly after that key, so a walk sees every item that exists throughout it exactly
//! once, however rows are added meanwhile. A cursor of another list, or one that does not
//! decode, is a 400.
//!
//! Handlers ask the store for `limit + 1` items: the extra one only says whether a next page
//! exists, so the last page never carries a `Link` to an empty one.

use axum::{
    Json,
    http::{HeaderMap, HeaderValue, Uri, header},
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::error::ApiError;

/// Items per page when `limit` is absent.
pub const DEFAULT_LIMIT: usize = 100;
/// Most items one page holds.
pub const MAX_LIMIT: usize = 1000;
/// Longest cursor accepted (the ones handed out are far shorter).
pub const MAX_CURSOR_CHARS: usize = 512;

#[derive(Serialize, Deserialize)]
struct CursorDoc<K> {
    /// The list the cursor belongs to.
    l: String,
    /// The last item's sort key.
    k: K,
}

/// A page request: how many items, and after which key.
#[derive(Debug)]
pub struct PageRequest<K> {
    pub limit: usize,
    pub after: Option<K>,
}

impl<K: DeserializeOwned> PageRequest<K> {
    /// Parses `limit` (1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`]) and `cursor` (one that
    /// `list` handed out). 400 otherwise.
    pub fn parse(list: &str, limit: Option<i64>, cursor: Option<&str>) -> Result<Self, ApiError> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(n) => usize::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| ApiError::BadRequest(format!("limit must be from 1 to {MAX_LIMIT}, got {n}")))?,
        };
        let after = cursor.map(|c| decode(list, c)).transpose()?;
        Ok(Self { limit, after })
    }

    /// What to ask the store for: one more than the page, to learn whether a next page exists.
    pub fn fetch(&self) -> usize {
        self.limit + 1
    }
}

fn decode<K: DeserializeOwned>(list: &str, cursor: &str) -> Result<K, ApiError> {
    let bad = || ApiError::BadRequest(format!("cursor is not one that this list ({list}) handed out"));
    if cursor.len() > MAX_CURSOR_CHARS {
        return Err(bad());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let doc: CursorDoc<K> = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if doc.l != list {
        return Err(bad());
    }
    Ok(doc.k)
}

fn encode<K: Serialize>(list: &str, key: &K) -> String {
    let doc = CursorDoc { l: list.to_owned(), k: key };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&doc).expect("a sort key serializes"))
}

/// A page as the answer: the items as a JSON array, and the next page's `Link` when there is one.
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<HeaderValue>,
}

impl<T> Page<T> {
    /// Cuts `items` (fetched with [`PageRequest::fetch`]) to the page and, when more remain,
    /// links the next page: this request's URL with `cursor` set to the last item's key (every
    /// other query parameter kept).
    pub fn new<K: Serialize>(
        mut items: Vec<T>,
        req: &PageRequest<impl Sized>,
        list: &str,
        key: impl Fn(&T) -> K,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Self {
        let next = (items.len() > req.limit).then(|| {
            items.truncate(req.limit);
            let cursor = encode(list, &key(items.last().expect("a page past its limit has items")));
            next_link(uri, headers, &cursor)
        });
        Self { items, next: next.flatten() }
    }

    /// Maps the items, keeping the link.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page { items: self.items.into_iter().map(f).collect(), next: self.next }
    }
}

impl<T: Serialize> IntoResponse for Page<T> {
    fn into_response(self) -> Response {
        let mut res = Json(self.items).into_response();
        if let Some(link) = self.next {
            res.headers_mut().insert(header::LINK, link);
        }
        res
    }
}

/// `<scheme://host/path?query-with-cursor>; rel="next"`: the scheme the client used (as the
/// platform reports it), the `Host` it asked for, the path and query as received with `cursor`
/// replaced. Without a `Host`, the link is relative to the origin.
fn next_link(uri: &Uri, headers: &HeaderMap, cursor: &str) -> Option<HeaderValue> {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        if k != "cursor" {
            query.append_pair(&k, &v);
        }
    }
    query.append_pair("cursor", cursor);
    let target = format!("{}?{}", uri.path(), query.finish());
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).filter(|h| valid_host(h));
    let url = match host {
        Some(host) => {
            let scheme = if super::headers::served_over_https(headers) { "https" } else { "http" };
            format!("{scheme}://{host}{target}")
        }
        None => target,
    };
    HeaderValue::from_str(&format!("<{url}>; rel=\"next\"")).ok()
}

/// A `Host` value fit to put in a URL: a name or address and an optional port, nothing else.
fn valid_host(h: &str) -> bool {
    !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_keeps_the_other_parameters_and_replaces_the_cursor() {
        let uri: Uri = "/api/v1/rooms?max_participants=2&cursor=old&limit=5".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("example.org:8080"));
        let link = next_link(&uri, &h, "abc").unwrap();
        assert_eq!(link, "<http://example.org:8080/api/v1/rooms?max_participants=2&limit=5&cursor=abc>; rel=\"next\"");
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert(header::HOST, HeaderValue::from_static("bad host>"));
        assert_eq!(
            next_link(&uri, &h, "abc").unwrap(),
            "</api/v1/rooms?max_participants=2&limit=5&cursor=abc>; rel=\"next\""
        );
    }

    #[test]
    fn cursors_belong_to_their_list() {
        let c = encode("rooms", &42u64);
        assert_eq!(decode::<u64>("rooms", &c).unwrap(), 42);
        assert!(decode::<u64>("bookings", &c).is_err());
        assert!(decode::<u64>("rooms", "!!").is_err());
        assert!(decode::<u64>("rooms", &URL_SAFE_NO_PAD.encode(b"{}")).is_err());
    }

    #[test]
    fn limits_outside_1_to_1000_are_refused() {
        assert_eq!(PageRequest::<u64>::parse("x", None, None).unwrap().limit, 100);
        assert_eq!(PageRequest::<u64>::parse("x", Some(1000), None).unwrap().limit, 1000);
        for n in [0, -1, 1001, i64::MAX] {
            assert!(PageRequest::<u64>::parse("x", Some(n), None).is_err(), "{n}");
        }
    }
}

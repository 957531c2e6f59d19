//! The glue to the Azure Cosmos DB SDK: client limits, point reads, paged queries, batches, and
//! the mapping of the service's answers into [`StoreError`].
//!
//! - **Bounded requests.** Client defaults ([`default_operation_options`]): at most
//!   [`CosmosTuning::throttle_retries`] retries on 429 within [`CosmosTuning::throttle_wait`], and
//!   an end-to-end timeout per request, so a throttled account answers within seconds.
//! - **Paged queries.** Every query asks for pages of [`CosmosTuning::page_size`] items, as the
//!   service charges them; [`Containers::query`] reads all pages. Queries name one partition
//!   wherever the data model allows it (see the backend's module docs).
//! - **Errors.** 429 → [`StoreError::Unavailable`] with the server's `retry-after` (or 1 s);
//!   408/410/449/5xx/transport failures → `Unavailable` with 1 s; 404 → `NotFound`; 409 →
//!   `AlreadyExists`; 412 → `PreconditionFailed`. Callers turn 409 and 412 into what their
//!   operation means (a conflict, a lost race to retry).
//! - **Counting.** Every document a point read or a query returns is counted
//!   ([`Containers::docs_read`]), for the benchmark's cost figures and for operators.

use std::{
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration as StdDuration,
};

use azure_data_cosmos::{
    ContainerClient, CosmosClientBuilder, CosmosError, FeedScope, Query, TransactionalBatch,
    models::TransactionalBatchOperationResult,
    options::{
        BatchDeleteOptions, BatchReplaceOptions, EndToEndOperationLatencyPolicy, ItemReadOptions, ItemWriteOptions,
        MaxItemCountHint, OperationOptions, OperationOptionsBuilder, Precondition, QueryOptions,
        ReadConsistencyStrategy, ThrottlingRetryOptionsBuilder,
    },
};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::TryStreamExt;
use rand::Rng;
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use super::super::{StoreError, StoreResult};

/// The partition key path both containers must have.
pub const PARTITION_KEY_PATH: &str = "/pk";

/// Retry-after given when the service did not say.
const DEFAULT_RETRY_AFTER: StdDuration = StdDuration::from_secs(1);

/// Limits that keep every store call bounded. The defaults suit an HTTP API behind the
/// Functions host: a throttled account answers within a few seconds, never minutes.
#[derive(Debug, Clone)]
pub struct CosmosTuning {
    /// End-to-end timeout of one Cosmos request, retries included.
    pub request_timeout: StdDuration,
    /// Retries of a request the service throttled (429) before giving up.
    pub throttle_retries: u32,
    /// Most time spent waiting between 429 retries of one request.
    pub throttle_wait: StdDuration,
    /// Attempts of an etag-guarded write that keeps losing races before answering `Unavailable`.
    pub contention_attempts: u32,
    /// Items per query page.
    pub page_size: u32,
}

impl Default for CosmosTuning {
    fn default() -> Self {
        Self {
            request_timeout: StdDuration::from_secs(5),
            throttle_retries: 3,
            throttle_wait: StdDuration::from_secs(2),
            contention_attempts: 12,
            page_size: 100,
        }
    }
}

/// The client-wide operation defaults that bound each request (429 retries, end-to-end timeout).
pub fn default_operation_options(tuning: &CosmosTuning) -> OperationOptions {
    OperationOptionsBuilder::new()
        .with_end_to_end_latency_policy(EndToEndOperationLatencyPolicy::new(tuning.request_timeout))
        .with_throttling_retry_options(
            ThrottlingRetryOptionsBuilder::new()
                .with_max_retry_count(tuning.throttle_retries)
                .with_max_retry_wait_time(tuning.throttle_wait)
                .build(),
        )
        .build()
}

/// A client builder with [`default_operation_options`] applied. Production and the tests'
/// emulator clients both start here, so both run with the same limits.
pub fn client_builder(tuning: &CosmosTuning) -> CosmosClientBuilder {
    CosmosClientBuilder::new().with_default_operation_options(default_operation_options(tuning))
}

/// The two containers, with the page size and the read counter every access shares.
#[derive(Clone)]
pub(super) struct Containers {
    pub rooms: ContainerClient,
    pub ops: ContainerClient,
    page_size: NonZeroU32,
    docs_read: Arc<AtomicU64>,
}

/// Which container a document lives in.
#[derive(Debug, Clone, Copy)]
pub(super) enum In {
    Rooms,
    Ops,
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Fresh {
    /// The account's session consistency: enough wherever an `If-Match` guards the write that
    /// follows (a stale read only makes that write fail and retry).
    Session,
    /// A quorum read: for the two reads that decide without a guard (a room being deleted and a
    /// booking written into it must see each other).
    Latest,
}

impl Containers {
    pub fn new(rooms: ContainerClient, ops: ContainerClient, tuning: &CosmosTuning) -> Self {
        let page_size = NonZeroU32::new(tuning.page_size.max(1)).unwrap_or(NonZeroU32::MIN);
        Self { rooms, ops, page_size, docs_read: Arc::default() }
    }

    pub fn get(&self, which: In) -> &ContainerClient {
        match which {
            In::Rooms => &self.rooms,
            In::Ops => &self.ops,
        }
    }

    /// Documents read so far by point reads and queries.
    pub fn docs_read(&self) -> u64 {
        self.docs_read.load(Ordering::Relaxed)
    }

    /// A point read: the document and its etag, `None` when it does not exist.
    pub async fn read<T: DeserializeOwned>(
        &self,
        which: In,
        pk: &str,
        id: &str,
        fresh: Fresh,
    ) -> StoreResult<Option<(T, String)>> {
        let opts = (fresh == Fresh::Latest).then(|| ItemReadOptions::default().with_operation_options(latest()));
        match self.get(which).read_item(pk.to_string(), id, opts).await {
            Ok(resp) => {
                let etag = etag_of(resp.headers())?;
                let doc: T = resp.into_model().map_err(map_err)?;
                self.docs_read.fetch_add(1, Ordering::Relaxed);
                Ok(Some((doc, etag)))
            }
            Err(e) if e.status().is_not_found() => Ok(None),
            Err(e) => Err(map_err(e)),
        }
    }

    /// Every page of a query. `pk` names the one partition it reads; `None` fans out over the
    /// whole container (only for rare, admin-sized work).
    pub async fn query<T: DeserializeOwned + Send + 'static>(
        &self,
        which: In,
        q: Query,
        pk: Option<&str>,
        fresh: Fresh,
    ) -> StoreResult<Vec<T>> {
        let mut opts = QueryOptions::default().with_max_item_count(MaxItemCountHint::Limit(self.page_size));
        if fresh == Fresh::Latest {
            opts = opts.with_operation_options(latest());
        }
        let scope = match pk {
            Some(pk) => FeedScope::partition(pk.to_string()),
            None => FeedScope::full_container(),
        };
        let out: Vec<T> = self
            .get(which)
            .query_items::<T>(q, scope, Some(opts))
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        self.docs_read.fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(out)
    }

    /// Creates a document; `Err` carries the status (409 when the id exists in the partition).
    pub async fn create<T: Serialize>(&self, which: In, pk: &str, id: &str, doc: &T) -> Result<String, Fail> {
        let resp = self.get(which).create_item(pk.to_string(), id, doc, None).await.map_err(Fail::from)?;
        etag_of(resp.headers()).map_err(|error| Fail { status: 500, error })
    }

    /// Replaces a document, only if its etag is still `etag`.
    pub async fn replace<T: Serialize>(
        &self,
        which: In,
        pk: &str,
        id: &str,
        doc: &T,
        etag: &str,
    ) -> Result<String, Fail> {
        let resp =
            self.get(which).replace_item(pk.to_string(), id, doc, Some(if_match(etag))).await.map_err(Fail::from)?;
        etag_of(resp.headers()).map_err(|error| Fail { status: 500, error })
    }

    /// Creates or replaces a document whatever it holds.
    pub async fn upsert<T: Serialize>(&self, which: In, pk: &str, id: &str, doc: &T) -> StoreResult<()> {
        self.get(which).upsert_item(pk.to_string(), id, doc, None).await.map(drop).map_err(map_err)
    }

    /// Deletes a document; a missing one is fine.
    pub async fn delete(&self, which: In, pk: &str, id: &str) -> StoreResult<()> {
        match self.get(which).delete_item(pk.to_string(), id, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.status().is_not_found() => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    /// Runs a transactional batch. A failed batch comes back as a 207 with one result per
    /// operation: the failing operation's index and status are the answer (the others say 424).
    pub async fn batch(
        &self,
        which: In,
        batch: TransactionalBatch,
    ) -> Result<Vec<TransactionalBatchOperationResult>, BatchFail> {
        let resp = self.get(which).execute_transactional_batch(batch, None).await.map_err(BatchFail::whole)?;
        let body = resp.into_model().map_err(BatchFail::whole)?;
        let results = body.results().to_vec();
        match results.iter().position(|r| !r.is_success() && r.status_code() != 424) {
            None if results.iter().all(|r| r.is_success()) => Ok(results),
            None => Err(BatchFail {
                op: None,
                fail: Fail { status: 424, error: StoreError::Internal("batch failed without a cause".into()) },
            }),
            Some(i) => {
                let r = &results[i];
                Err(BatchFail {
                    op: Some(i),
                    fail: Fail { status: r.status_code(), error: map_status(r.status_code(), None, r.retry_after()) },
                })
            }
        }
    }
}

/// A failed write: the HTTP status of the operation that failed, and its mapped error.
#[derive(Debug)]
pub(super) struct Fail {
    pub status: u16,
    pub error: StoreError,
}

impl Fail {
    /// True when the write may or may not have happened (timeouts, 503, transport).
    pub fn unknown_outcome(&self) -> bool {
        matches!(self.error, StoreError::Unavailable { .. }) && self.status != 429
    }
}

impl From<CosmosError> for Fail {
    fn from(e: CosmosError) -> Self {
        Self { status: u16::from(e.status().status_code()), error: map_err(e) }
    }
}

/// A failed batch: which operation failed (`None` when the batch as a whole did).
#[derive(Debug)]
pub(super) struct BatchFail {
    pub op: Option<usize>,
    pub fail: Fail,
}

impl BatchFail {
    fn whole(e: CosmosError) -> Self {
        Self { op: None, fail: Fail::from(e) }
    }
}

/// Reads whose answer decides without an etag guard use a quorum read.
fn latest() -> OperationOptions {
    OperationOptionsBuilder::new().with_read_consistency_strategy(ReadConsistencyStrategy::LatestCommitted).build()
}

pub(super) fn if_match(etag: &str) -> ItemWriteOptions {
    ItemWriteOptions::default().with_precondition(Precondition::if_match(etag.to_string()))
}

pub(super) fn replace_if(etag: &str) -> Option<BatchReplaceOptions> {
    Some(BatchReplaceOptions::default().with_precondition(Precondition::if_match(etag.to_string())))
}

pub(super) fn delete_if(etag: &str) -> Option<BatchDeleteOptions> {
    Some(BatchDeleteOptions::default().with_precondition(Precondition::if_match(etag.to_string())))
}

fn etag_of(headers: &azure_data_cosmos::models::ResponseHeaders) -> StoreResult<String> {
    headers.etag().map(|e| e.to_string()).ok_or_else(|| StoreError::Internal("Cosmos response without an etag".into()))
}

/// Maps a Cosmos failure into the shared variants (see the module docs).
pub fn map_err(e: CosmosError) -> StoreError {
    let status = e.status();
    let retry_after = e.response().and_then(|r| r.headers().retry_after_ms).map(StdDuration::from_millis);
    if status.is_read_session_not_available() {
        return map_status(503, Some(&e), retry_after);
    }
    map_status(u16::from(status.status_code()), Some(&e), retry_after)
}

pub(super) fn map_status(code: u16, e: Option<&CosmosError>, retry_after: Option<StdDuration>) -> StoreError {
    let detail = e.map(|e| format!(": {e}")).unwrap_or_default();
    match code {
        404 => StoreError::NotFound,
        409 => StoreError::AlreadyExists,
        412 => StoreError::PreconditionFailed,
        429 => StoreError::Unavailable {
            message: "Cosmos DB is throttling requests (429)".into(),
            retry_after: Some(retry_after.unwrap_or(DEFAULT_RETRY_AFTER)),
        },
        408 | 410 | 449 | 500 | 502 | 503 | 504 => StoreError::Unavailable {
            message: format!("Cosmos DB did not complete the request ({code}){detail}"),
            retry_after: Some(retry_after.unwrap_or(DEFAULT_RETRY_AFTER)),
        },
        _ => StoreError::Internal(format!("Cosmos DB answered {code}{detail}")),
    }
}

/// `Unavailable` after a write kept losing races.
pub(super) fn busy(message: String) -> StoreError {
    StoreError::Unavailable { message, retry_after: Some(DEFAULT_RETRY_AFTER) }
}

/// Jittered exponential backoff between etag races: losers spread out instead of colliding again.
pub(super) async fn backoff(attempt: u32) {
    let cap = (5u64 << attempt.min(6)).min(200);
    let ms = rand::thread_rng().gen_range(0..=cap);
    tokio::time::sleep(StdDuration::from_millis(ms)).await;
}

/// Document ids may not contain `/`, `\`, `?` or `#`: values chosen by users are hashed.
pub(super) fn hex_digest(s: &str) -> String {
    crate::domain::hex(&Sha256::digest(s.as_bytes()))
}

/// Fixed-width UTC timestamps (nanoseconds): lexical order is time order in queries.
pub(super) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

pub(super) fn parse_ts(s: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Internal(format!("stored time {s:?}: {e}")))
}

/// Checks that a container exists and has the expected partition key path; names it otherwise.
pub(super) async fn open_container(
    db: &azure_data_cosmos::DatabaseClient,
    database: &str,
    name: &str,
) -> StoreResult<ContainerClient> {
    let container = db.container_client(name, None).await.map_err(|e| {
        if u16::from(e.status().status_code()) == 404 {
            StoreError::Internal(format!(
                "Cosmos DB container {name:?} (or database {database:?}) does not exist. The app does not create \
                 it: deploy infra (the Bicep template) or run `az cosmosdb sql container create --account-name <account> \
                 --resource-group <rg> --database-name {database} --name {name} --partition-key-path {PARTITION_KEY_PATH}`"
            ))
        } else {
            map_err(e)
        }
    })?;
    let props = container.read(None).await.map_err(map_err)?.into_model().map_err(map_err)?;
    let paths: Vec<String> = props.partition_key.paths().iter().map(|p| p.to_string()).collect();
    if paths != [PARTITION_KEY_PATH] {
        return Err(StoreError::Internal(format!(
            "Cosmos DB container {name:?} has partition key {paths:?}; it must be {PARTITION_KEY_PATH:?} (recreate it)"
        )));
    }
    Ok(container)
}

//! All in-memory Cosmos DB emulator set-up for tests and benches, in one place.
//!
//! The emulator (`azure_data_cosmos_driver`'s `__internal_in_memory_emulator`) replaces only
//! the HTTP layer: the real SDK pipeline (retries, timeouts, routing, batches) runs above it.
//! One [`Emulator`] is one virtual account with the database and both containers created the
//! way infrastructure creates them (partition key `/pk`); several [`CosmosStore`]s built from
//! it are several app instances sharing that account. Fault rules are per store (per client).

#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use azure_core::{
    credentials::Secret,
    http::{
        Request,
        headers::{HeaderName, Headers},
    },
};
use azure_data_cosmos::{AccountReference, CosmosRuntimeBuilder, RoutingStrategy};
use azure_data_cosmos_driver::{
    fault_injection::{
        FaultInjectionConditionBuilder, FaultInjectionErrorType, FaultInjectionResultBuilder, FaultInjectionRule,
        FaultInjectionRuleBuilder, FaultOperationType,
    },
    in_memory_emulator::{
        ConsistencyLevel, InMemoryEmulatorHttpClient, RequestObserver, VirtualAccountConfig, VirtualRegion,
    },
};
use suroga::store::cosmos::{CosmosStore, CosmosTuning, PARTITION_KEY_PATH, client_builder};

pub const DATABASE: &str = "suroga";
pub const ROOMS: &str = "rooms";
pub const OPS: &str = "ops";
const REGION: &str = "West Europe";
const URL: &str = "https://westeurope.emulator.local";

/// Counts the requests that reach the emulator, by kind (`GET docs`, `POST docs`, ...), and
/// estimates their request units from Microsoft's published costs (see `estimate_ru`).
#[derive(Debug, Default)]
pub struct RequestCounter {
    total: AtomicU64,
    /// Estimated request units, in thousandths.
    milli_ru: AtomicU64,
    /// The largest request body since the last `reset_largest`.
    largest: AtomicU64,
    by_kind: Mutex<BTreeMap<String, u64>>,
}

/// Published costs: a point read of 1 KB is 1 RU (a quorum read twice that), a create about 5.7 RU
/// per KB, a replace or upsert about 10.7, a delete 5.7, a query page at least 2.8.
const RU_READ: f64 = 1.0;
const RU_CREATE: f64 = 5.7;
const RU_REPLACE: f64 = 10.7;
const RU_DELETE: f64 = 5.7;
const RU_QUERY_PAGE: f64 = 2.8;
/// What a query pays per document it returns (about one 1 KB read each).
const RU_QUERY_DOC: f64 = 1.0;

fn kb(len: usize) -> f64 {
    (len as f64 / 1024.0).ceil().max(1.0)
}

impl RequestCounter {
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }
    pub fn by_kind(&self) -> BTreeMap<String, u64> {
        self.by_kind.lock().unwrap().clone()
    }
    /// Estimated request units of every request so far, without the per-document part of
    /// queries (the emulator's answers are not seen here: add `ru_per_query_doc` per document).
    pub fn ru(&self) -> f64 {
        self.milli_ru.load(Ordering::SeqCst) as f64 / 1000.0
    }
    pub fn ru_per_query_doc(&self) -> f64 {
        RU_QUERY_DOC
    }
    /// The largest request body (bytes) since the last `reset_largest`.
    pub fn largest(&self) -> u64 {
        self.largest.load(Ordering::SeqCst)
    }
    pub fn reset_largest(&self) {
        self.largest.store(0, Ordering::SeqCst);
    }

    fn estimate_ru(method: &str, resource: &str, is_item: bool, headers: &Headers, body: &[u8]) -> f64 {
        let header = |name: &'static str| headers.get_optional_str(&HeaderName::from_static(name));
        if resource != "docs" {
            // Metadata (account, collections, partition key ranges): cached by the SDK.
            return RU_READ;
        }
        if header("x-ms-documentdb-isquery").is_some() {
            return RU_QUERY_PAGE;
        }
        if header("x-ms-cosmos-is-batch-request").is_some() {
            let ops: Vec<serde_json::Value> = serde_json::from_slice(body).unwrap_or_default();
            return ops
                .iter()
                .map(|op| {
                    let size = op.get("resourceBody").map(|b| b.to_string().len()).unwrap_or(0);
                    match op.get("operationType").and_then(|t| t.as_str()).unwrap_or("") {
                        "Create" => RU_CREATE * kb(size),
                        "Replace" | "Upsert" => RU_REPLACE * kb(size),
                        "Delete" => RU_DELETE,
                        _ => RU_READ,
                    }
                })
                .sum();
        }
        match (method, is_item) {
            ("GET", true) => {
                let quorum = header("x-ms-cosmos-read-consistency-strategy") == Some("LatestCommitted");
                RU_READ * if quorum { 2.0 } else { 1.0 }
            }
            ("POST", _) if header("x-ms-documentdb-is-upsert") == Some("True") => RU_REPLACE * kb(body.len()),
            ("POST", _) => RU_CREATE * kb(body.len()),
            ("PUT", _) => RU_REPLACE * kb(body.len()),
            ("DELETE", _) => RU_DELETE,
            _ => RU_READ,
        }
    }
}

impl RequestObserver for RequestCounter {
    fn on_request(&self, request: &Request) {
        self.total.fetch_add(1, Ordering::SeqCst);
        // The resource type is the last even path segment: .../docs/{id} or .../docs.
        let segs: Vec<&str> = request.url().path().split('/').filter(|s| !s.is_empty()).collect();
        let is_item = segs.len() % 2 == 0;
        let resource = if is_item { segs.get(segs.len().wrapping_sub(2)) } else { segs.last() };
        let resource = resource.copied().unwrap_or("account");
        let header = |name: &'static str| request.headers().get_optional_str(&HeaderName::from_static(name)).is_some();
        let (is_query, is_batch) = (header("x-ms-documentdb-isquery"), header("x-ms-cosmos-is-batch-request"));
        let method = request.method().to_string();
        let body = azure_core::Bytes::from(request.body()).to_vec();
        self.largest.fetch_max(body.len() as u64, Ordering::SeqCst);
        let ru = Self::estimate_ru(&method, resource, is_item, request.headers(), &body);
        self.milli_ru.fetch_add((ru * 1000.0) as u64, Ordering::SeqCst);
        let kind = format!(
            "{method} {resource}{}",
            if is_query {
                " (query)"
            } else if is_batch {
                " (batch)"
            } else {
                ""
            }
        );
        *self.by_kind.lock().unwrap().entry(kind).or_default() += 1;
    }
}

/// One virtual Cosmos DB account in memory, provisioned like production.
pub struct Emulator {
    http: Arc<InMemoryEmulatorHttpClient>,
    pub counter: Arc<RequestCounter>,
}

impl Emulator {
    /// A fresh account with the `suroga` database and the `rooms` and `ops` containers
    /// (partition key `/pk`, four physical partitions so cross-partition paths really run).
    pub fn new() -> Self {
        Self::with_containers(&[ROOMS, OPS])
    }

    /// A fresh account with only the given containers (to test start-up checks).
    pub fn with_containers(containers: &[&str]) -> Self {
        let cfg = VirtualAccountConfig::new(vec![VirtualRegion::new(REGION, url::Url::parse(URL).unwrap())])
            .unwrap()
            .with_consistency(ConsistencyLevel::Session);
        let counter = Arc::new(RequestCounter::default());
        let http = Arc::new(InMemoryEmulatorHttpClient::new(cfg).with_request_observer(counter.clone()));
        let store = http.store();
        store.create_database(DATABASE);
        for c in containers {
            store.create_container(
                DATABASE,
                c,
                serde_json::from_value(
                    serde_json::json!({ "paths": [PARTITION_KEY_PATH], "kind": "Hash", "version": 2 }),
                )
                .unwrap(),
            );
        }
        Self { http, counter }
    }

    /// A new app instance (its own client) on this account.
    pub async fn store(&self) -> CosmosStore {
        self.try_store(vec![], CosmosTuning::default()).await.unwrap()
    }

    /// A new app instance whose requests pass through `rules` first.
    pub async fn store_with_faults(&self, rules: Vec<Arc<FaultInjectionRule>>) -> CosmosStore {
        self.try_store(rules, CosmosTuning::default()).await.unwrap()
    }

    pub async fn try_store(
        &self,
        rules: Vec<Arc<FaultInjectionRule>>,
        tuning: CosmosTuning,
    ) -> Result<CosmosStore, suroga::store::StoreError> {
        let runtime = if rules.is_empty() {
            self.http.runtime_builder()
        } else {
            self.http.runtime_builder_with_fault_rules(rules)
        };
        let client = client_builder(&tuning)
            .with_runtime(CosmosRuntimeBuilder::from(runtime).build().await.unwrap())
            .build(
                AccountReference::with_authentication_key(URL.parse().unwrap(), Secret::new("dGVzdGtleQ==")),
                RoutingStrategy::ProximityTo(REGION.into()),
            )
            .await
            .unwrap();
        CosmosStore::from_client(&client, DATABASE, ROOMS, OPS, tuning).await
    }
}

/// A rule that answers `error` to operations of type `op`, at most `hits` times (or always),
/// created disabled so set-up traffic passes; call `enable()` when the test is ready.
pub fn fault(op: FaultOperationType, error: FaultInjectionErrorType, hits: Option<u32>) -> Arc<FaultInjectionRule> {
    let result = FaultInjectionResultBuilder::new().with_error(error).build();
    let mut rule = FaultInjectionRuleBuilder::new(format!("{op:?}-{error:?}"), result)
        .with_condition(FaultInjectionConditionBuilder::new().with_operation_type(op).build());
    if let Some(h) = hits {
        rule = rule.with_hit_limit(h);
    }
    let rule = Arc::new(rule.build());
    rule.disable();
    rule
}

/// A rule that delays every operation of type `op` by `ms` and then lets it through: it
/// widens the gap between a check and its write, so racing instances really interleave.
pub fn latency(op: FaultOperationType, ms: u64) -> Arc<FaultInjectionRule> {
    let result = FaultInjectionResultBuilder::new().with_delay(std::time::Duration::from_millis(ms)).build();
    Arc::new(
        FaultInjectionRuleBuilder::new(format!("{op:?}-latency"), result)
            .with_condition(FaultInjectionConditionBuilder::new().with_operation_type(op).build())
            .build(),
    )
}

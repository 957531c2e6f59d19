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

use azure_core::{credentials::Secret, http::Request};
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

/// Counts the requests that reach the emulator, by kind (`GET docs`, `POST docs`, ...).
#[derive(Debug, Default)]
pub struct RequestCounter {
    total: AtomicU64,
    by_kind: Mutex<BTreeMap<String, u64>>,
}

impl RequestCounter {
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }
    pub fn by_kind(&self) -> BTreeMap<String, u64> {
        self.by_kind.lock().unwrap().clone()
    }
}

impl RequestObserver for RequestCounter {
    fn on_request(&self, request: &Request) {
        self.total.fetch_add(1, Ordering::SeqCst);
        // The resource type is the last even path segment: .../docs/{id} or .../docs.
        let segs: Vec<&str> = request.url().path().split('/').filter(|s| !s.is_empty()).collect();
        let resource = if segs.len() % 2 == 0 { segs.get(segs.len().wrapping_sub(2)) } else { segs.last() };
        let is_query = request
            .headers()
            .get_optional_str(&azure_core::http::headers::HeaderName::from_static("x-ms-documentdb-isquery"))
            .is_some();
        let is_batch = request
            .headers()
            .get_optional_str(&azure_core::http::headers::HeaderName::from_static("x-ms-cosmos-is-batch-request"))
            .is_some();
        let kind = format!(
            "{} {}{}",
            request.method(),
            resource.copied().unwrap_or("account"),
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

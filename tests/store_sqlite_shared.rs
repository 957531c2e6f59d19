//! The store conformance suite with every case against ONE shared SQLite file, all at once:
//! proves the cases keep out of each other's way, as they must on a shared Cosmos container.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use suroga::store::Store;
use suroga::store::sqlite::SqliteStore;

fn shared() -> Arc<dyn Store> {
    static STORE: OnceLock<Arc<dyn Store>> = OnceLock::new();
    STORE
        .get_or_init(|| {
            // One file per run, under target/tmp: the process ends before anyone could remove it.
            let path: PathBuf = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("shared-store-{}", uuid::Uuid::new_v4()))
                .join("suroga.db");
            Arc::new(SqliteStore::open(&path).unwrap())
        })
        .clone()
}

suroga::store_conformance_tests!(async { shared() });

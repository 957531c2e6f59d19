//! Cosmos DB: per-user quota ledgers. One document per user in the `ops` container, in its own
//! partition (`pk` = `id` = `quota-<SHA-256 of the user id>`: user ids may hold characters ids
//! may not). The compare-and-set is the document's etag: a replace with `If-Match`, or a create
//! when no ledger exists yet (a conflict means another writer created it first). Every write
//! carries a nonce, so a write whose answer was lost is read back before it is called a failure.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::CosmosStore;
use super::sdk::{Fresh, In, hex_digest};
use crate::store::{QuotaLedger, StoreError, StoreResult, StoredLedger};

/// A user's ledger in `ops`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LedgerDoc {
    id: String,
    pk: String,
    kind: String,
    version: u64,
    /// Names this write, so an unknown outcome can be read back.
    nonce: String,
    ledger: QuotaLedger,
}

fn ledger_id(user: &str) -> String {
    format!("quota-{}", hex_digest(user))
}

impl CosmosStore {
    /// See [`crate::store::Store::quota_ledger`].
    pub(super) async fn quota_ledger_impl(&self, user: &str) -> StoreResult<Option<StoredLedger>> {
        let id = ledger_id(user);
        Ok(self
            .c
            .read::<LedgerDoc>(In::Ops, &id, &id, Fresh::Session)
            .await?
            .map(|(d, _)| StoredLedger { ledger: d.ledger, version: d.version }))
    }

    /// See [`crate::store::Store::put_quota_ledger`].
    pub(super) async fn put_quota_ledger_impl(
        &self,
        user: &str,
        ledger: &QuotaLedger,
        expected: Option<u64>,
    ) -> StoreResult<u64> {
        let id = ledger_id(user);
        let doc = |version| LedgerDoc {
            id: id.clone(),
            pk: id.clone(),
            kind: "quota".into(),
            version,
            nonce: Uuid::new_v4().to_string(),
            ledger: ledger.clone(),
        };
        let (next, written) = match expected {
            None => {
                let next = doc(1);
                (next.clone(), self.c.create(In::Ops, &id, &id, &next).await.map(drop))
            }
            Some(e) => {
                let Some((current, etag)) = self.c.read::<LedgerDoc>(In::Ops, &id, &id, Fresh::Session).await? else {
                    return Err(StoreError::PreconditionFailed);
                };
                if current.version != e {
                    return Err(StoreError::PreconditionFailed);
                }
                let next = doc(e + 1);
                (next.clone(), self.c.replace(In::Ops, &id, &id, &next, &etag).await.map(drop))
            }
        };
        let Err(e) = written else { return Ok(next.version) };
        let fail = e;
        // Our write may have committed with its answer lost: the nonce says.
        if let Some((found, _)) = self.c.read::<LedgerDoc>(In::Ops, &id, &id, Fresh::Latest).await? {
            if found.nonce == next.nonce {
                return Ok(found.version);
            }
        }
        match fail.status {
            // Created first by another writer, changed by another writer, or removed.
            409 | 412 | 404 => Err(StoreError::PreconditionFailed),
            _ => Err(fail.error),
        }
    }
}

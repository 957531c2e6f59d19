//! Per-user quota ledgers: what one user holds that a quota counts (live future bookings, rooms
//! created in the last 24 hours), one small document per user, changed only by compare-and-set
//! ([`super::Store::put_quota_ledger`]). The sessions layer decides what the entries mean
//! (`crate::sessions::quotas`); the store only keeps the document and its version, so a quota
//! holds across every instance: two writers that read the same version cannot both write.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::RoomId;

/// One booking a user's ledger counts: reserved before the booking is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerBooking {
    /// The booking's id (chosen before the booking is written).
    pub id: Uuid,
    /// The booking's end: the entry stops counting then.
    pub end: DateTime<Utc>,
    /// When it was reserved: a reservation whose booking is still missing after a while was
    /// left by a request that died, and is dropped.
    pub reserved_at: DateTime<Utc>,
    /// The digest of the `Idempotency-Key` it was made with, so a replay finds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// One room creation a user's ledger counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRoom {
    /// The room's id (chosen before the room is written).
    pub id: RoomId,
    /// When it was reserved: it counts for 24 hours from then.
    pub reserved_at: DateTime<Utc>,
    /// The digest of the `Idempotency-Key` it was made with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A user's quota ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaLedger {
    #[serde(default)]
    pub bookings: Vec<LedgerBooking>,
    #[serde(default)]
    pub rooms: Vec<LedgerRoom>,
}

/// A ledger as stored, with the version its compare-and-set checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLedger {
    pub ledger: QuotaLedger,
    /// Opaque; changes with every write.
    pub version: u64,
}

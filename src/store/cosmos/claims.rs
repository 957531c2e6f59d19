//! Idempotency keys on Cosmos DB: claims, leases, and the fence that makes a key book once.
//!
//! A create with an [`IdempotencyClaim`] first creates a claim document in the user's partition
//! (id = hash of scope, user and key): the create is the arbiter when two requests with one key
//! race. A replay reads the claim and answers with the entity as it is now. A claim still pending
//! answers `Unavailable` until its 30 s lease ends; then the next request takes it over.
//!
//! A lease is a clock, and clocks cannot make a stalled first request stop: it may still write
//! after the retry took its key over. So the clock only decides who may *try*; who *commits* is
//! decided by a fence document in the booking's own partition (the day its slot starts, the same
//! for every request with the key, since they carry the same body): every holder's booking batch
//! creates the fence of the key's epoch, Cosmos lets one create succeed, and the other batch fails
//! whole. The loser reads the fence and answers with the winner's booking. Rooms need no fence:
//! every holder writes the room id the claim planned, which Cosmos creates once.
//!
//! A definitive failure (conflict, not found) deletes the claim, so a retry runs afresh; claims
//! and fences carry `ttl` (24 h) for when the container's default TTL is on, and
//! `purge_idempotency` removes old claims where it is off.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use uuid::Uuid;

use super::super::{IDEMPOTENCY_TTL, IdempotencyClaim, StoreError, StoreResult};
use super::CosmosStore;
use super::documents::{FenceDoc, IdemDoc, day_key, day_pk, owner_pk, parse_day};
use super::sdk::{Fresh, In, backoff, busy, hex_digest, parse_ts, ts};

/// How long a pending claim keeps other requests with its key waiting.
const CLAIM_LEASE: Duration = Duration::seconds(30);

/// The right to make the key's entity: the claim as written, with its etag.
#[derive(Debug, Clone)]
pub(super) struct Ticket {
    pub doc: IdemDoc,
    pub etag: String,
}

impl Ticket {
    /// The fence this ticket's booking batch creates, in the slot's start day.
    pub fn fence(&self, booking: Uuid, room: u64) -> StoreResult<FenceDoc> {
        let day =
            self.doc.day.as_deref().ok_or_else(|| StoreError::Internal("a booking claim without a day".into()))?;
        Ok(FenceDoc {
            id: fence_id(&self.doc),
            pk: day_pk(parse_day(day)?),
            kind: "fence".into(),
            booking_id: booking,
            room_id: room,
            ttl: IdemDoc::ttl(),
        })
    }
}

/// What a claim says about the request presenting it.
// Returned once per create and matched at once: boxing the ticket would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(super) enum ClaimStart {
    /// This request holds the key now.
    Fresh(Ticket),
    /// An earlier request with the same body made the entity: this booking, or this room.
    Replay { booking: Option<Uuid>, room: Option<u64> },
}

fn claim_id(claim: &IdempotencyClaim) -> String {
    format!("idem-{}", hex_digest(&format!("{}\n{}\n{}", claim.scope, claim.user, claim.key)))
}

fn fence_id(doc: &IdemDoc) -> String {
    format!("fence-{}", hex_digest(&format!("{}\n{}", doc.id, doc.epoch)))
}

impl CosmosStore {
    /// Claims `claim`'s key. `day` is where a booking's fence lives (its slot's start day);
    /// `room` is the room id an insert plans (kept by whoever takes the key over).
    pub(super) async fn claim_key(
        &self,
        claim: &IdempotencyClaim,
        day: Option<NaiveDate>,
        room: Option<u64>,
    ) -> StoreResult<ClaimStart> {
        let id = claim_id(claim);
        let pk = owner_pk(&claim.user);
        let nonce = Uuid::new_v4().to_string();
        let fresh = IdemDoc {
            id: id.clone(),
            pk: pk.clone(),
            kind: "idem".into(),
            scope: claim.scope.into(),
            user: claim.user.clone(),
            fingerprint: claim.fingerprint.clone(),
            at: ts(claim.now),
            nonce: nonce.clone(),
            epoch: nonce.clone(),
            done: false,
            day: day.map(day_key),
            booking_id: None,
            room_id: room,
            ttl: IdemDoc::ttl(),
        };
        for attempt in 0..self.tuning.contention_attempts {
            let fail = match self.c.create(In::Ops, &pk, &id, &fresh).await {
                Ok(etag) => return Ok(ClaimStart::Fresh(Ticket { doc: fresh, etag })),
                Err(fail) => fail,
            };
            let Some((existing, etag)) = self.c.read::<IdemDoc>(In::Ops, &pk, &id, Fresh::Session).await? else {
                if fail.status == 409 {
                    // Deleted between our create and our read: try again.
                    backoff(attempt).await;
                    continue;
                }
                return Err(fail.error);
            };
            if existing.nonce == nonce {
                // Our own create, whose answer was lost.
                return Ok(ClaimStart::Fresh(Ticket { doc: existing, etag }));
            }
            let since = parse_ts(&existing.at)?;
            if since + IDEMPOTENCY_TTL <= claim.now {
                // An expired key counts as absent: a new epoch starts here.
                match self.c.replace(In::Ops, &pk, &id, &fresh, &etag).await {
                    Ok(etag) => return Ok(ClaimStart::Fresh(Ticket { doc: fresh, etag })),
                    Err(_) => {
                        backoff(attempt).await;
                        continue;
                    }
                }
            }
            if existing.fingerprint != claim.fingerprint {
                return Err(StoreError::IdempotencyMismatch);
            }
            if let Some(made) = self.made(&existing).await? {
                return Ok(made);
            }
            if existing.done {
                // What the key made is gone (a room removed again after Janus refused it, or
                // deleted since): the key counts as absent, in a new epoch.
                match self.c.replace(In::Ops, &pk, &id, &fresh, &etag).await {
                    Ok(etag) => return Ok(ClaimStart::Fresh(Ticket { doc: fresh, etag })),
                    Err(_) => {
                        backoff(attempt).await;
                        continue;
                    }
                }
            }
            if claim.now < since + CLAIM_LEASE {
                let left = (since + CLAIM_LEASE - claim.now).to_std().unwrap_or_default();
                return Err(StoreError::Unavailable {
                    message: "a request with this idempotency key is still in progress".into(),
                    retry_after: Some(
                        left.clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(30)),
                    ),
                });
            }
            // The holder's lease ended: take the key over in the same epoch, with its plan. If the
            // holder still writes, the fence lets only one of us commit.
            let takeover = IdemDoc { at: ts(claim.now), nonce: nonce.clone(), ..existing };
            match self.c.replace(In::Ops, &pk, &id, &takeover, &etag).await {
                Ok(etag) => return Ok(ClaimStart::Fresh(Ticket { doc: takeover, etag })),
                Err(_) => backoff(attempt).await,
            }
        }
        Err(busy("idempotency key kept changing".into()))
    }

    /// What a claim's key made, if it exists now: the booking its fence names (or its record
    /// says), or the room it planned.
    async fn made(&self, claim: &IdemDoc) -> StoreResult<Option<ClaimStart>> {
        if claim.scope == "rooms" {
            let Some(room) = claim.room_id else { return Ok(None) };
            let id = crate::domain::RoomId::new(room).map_err(|e| StoreError::Internal(e.0))?;
            return Ok(self.room_doc(id).await?.map(|_| ClaimStart::Replay { booking: None, room: Some(room) }));
        }
        let booking = match claim.booking_id {
            Some(b) => Some(b),
            None => self.fenced(claim).await?.map(|f| f.booking_id),
        };
        let Some(booking) = booking else { return Ok(None) };
        Ok(self.booking_entry(booking).await?.map(|_| ClaimStart::Replay { booking: Some(booking), room: None }))
    }

    /// The fence of a booking claim's epoch, if a holder committed.
    pub(super) async fn fenced(&self, claim: &IdemDoc) -> StoreResult<Option<FenceDoc>> {
        let Some(day) = claim.day.as_deref() else { return Ok(None) };
        let pk = day_pk(parse_day(day)?);
        Ok(self.c.read::<FenceDoc>(In::Rooms, &pk, &fence_id(claim), Fresh::Session).await?.map(|(f, _)| f))
    }

    /// The claim marked done with what it made, for the owner's batch (written whatever the
    /// claim holds now: the entity exists, so the key names it).
    pub(super) fn settled(ticket: &Ticket, booking: Option<Uuid>, room: Option<u64>) -> IdemDoc {
        IdemDoc {
            done: true,
            booking_id: booking.or(ticket.doc.booking_id),
            room_id: room.or(ticket.doc.room_id),
            ..ticket.doc.clone()
        }
    }

    /// Releases a claim after a definitive failure, so a retry runs afresh. Best effort, and
    /// only while this request still holds it.
    pub(super) async fn release(&self, ticket: &Ticket) {
        let opts = Some(super::sdk::if_match(&ticket.etag));
        if let Err(e) = self.c.ops.delete_item(ticket.doc.pk.clone(), &ticket.doc.id, opts).await {
            tracing::debug!(error = %e, "an idempotency claim was not released");
        }
    }

    /// Forgets claims recorded before `before` (a fan-out: a daily job's work).
    pub(super) async fn purge_claims(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let q = azure_data_cosmos::Query::from("SELECT c.id, c.pk FROM c WHERE c.kind = 'idem' AND c.at < @before")
            .with_parameter("@before", ts(before))
            .map_err(super::sdk::map_err)?;
        #[derive(serde::Deserialize)]
        struct Key {
            id: String,
            pk: String,
        }
        let keys: Vec<Key> = self.c.query(In::Ops, q, None, Fresh::Session).await?;
        let mut n = 0;
        for k in keys {
            self.c.delete(In::Ops, &k.pk, &k.id).await?;
            n += 1;
        }
        Ok(n)
    }
}

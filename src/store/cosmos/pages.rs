//! Cosmos DB: keyset pages of rooms, an owner's bookings and the webhook outbox.
//!
//! Each page is one query `SELECT TOP n … WHERE filters AND (sort key) > (the key) ORDER BY sort
//! key`, so a page costs about n documents read, never the whole container. Rooms and the outbox
//! are the whole fleet's, a cross-partition query whose ordered streams the gateway merges; an
//! owner's bookings are one query in the owner's partition of `ops` (its `owned` documents). The
//! two-field orders need the composite indexes `infra/main.bicep` declares (`/createdAt,/roomId`
//! and `/at,/eventId` on `rooms`, `/start,/id` on `ops`).
//!
//! Rooms free during a slot: the rooms busy in the slot come from one query bounded by the slot
//! (as for `list_rooms`), and pages of candidates are read until `limit` free ones are found.

use std::collections::HashSet;

use azure_data_cosmos::Query;

use super::CosmosStore;
use super::documents::{OwnerDoc, RoomDoc, owner_doc_id, owner_pk};
use super::records::OutboxDoc;
use super::sdk::{Fresh, In, map_err, ts};
use crate::domain::{Booking, BookingStatus, Room};
use crate::store::{
    BookingKey, BookingQuery, Delivery, DeliveryKey, DeliveryStatus, RoomFilter, RoomKey, StoreError, StoreResult,
};

/// A query's text and named parameters, built clause by clause.
struct Text {
    text: String,
    params: Vec<(String, serde_json::Value)>,
}

impl Text {
    fn new(text: &str) -> Self {
        Self { text: text.to_owned(), params: Vec::new() }
    }
    /// Appends ` AND clause`, binding `params` (named as in the clause).
    fn and(&mut self, clause: &str, params: impl IntoIterator<Item = (&'static str, serde_json::Value)>) {
        self.text += " AND ";
        self.text += clause;
        self.params.extend(params.into_iter().map(|(n, v)| (n.to_owned(), v)));
    }
    /// The query: `SELECT TOP limit * FROM c WHERE …clauses ORDER BY order`.
    fn build(&self, limit: usize, order: &str) -> StoreResult<Query> {
        // A limit past any container's size (callers that want everything) needs no TOP.
        let top = if limit <= i32::MAX as usize { format!("SELECT TOP {limit} *") } else { "SELECT *".to_owned() };
        let text = self.text.replacen("SELECT *", &top, 1) + " ORDER BY " + order;
        let mut q = Query::from(text);
        for (name, value) in &self.params {
            q = q.with_parameter(name, value.clone()).map_err(map_err)?;
        }
        Ok(q)
    }
}

impl CosmosStore {
    pub(super) async fn rooms_page_impl(
        &self,
        filter: &RoomFilter,
        after: Option<&RoomKey>,
        limit: usize,
    ) -> StoreResult<Vec<Room>> {
        let mut base = Text::new("SELECT * FROM c WHERE c.kind = 'room' AND c.deleting = false");
        if let Some(m) = filter.max_participants {
            base.and("c.maxParticipants = @mp", [("@mp", m.into())]);
        }
        if let Some(t) = filter.created_before {
            base.and("c.createdAt < @before", [("@before", ts(t).into())]);
        }
        if let Some(t) = filter.created_after {
            base.and("c.createdAt > @after", [("@after", ts(t).into())]);
        }
        let busy = match filter.free_during {
            Some(slot) => self.busy_rooms(slot).await?,
            None => HashSet::new(),
        };
        let mut out = Vec::new();
        let mut after = after.cloned();
        while out.len() < limit {
            let mut text = Text { text: base.text.clone(), params: base.params.clone() };
            if let Some(k) = &after {
                text.and(
                    "(c.createdAt > @kt OR (c.createdAt = @kt AND c.roomId > @kid))",
                    [("@kt", ts(k.created_at).into()), ("@kid", k.id.get().into())],
                );
            }
            // Ask for what is missing plus the busy rooms that may be among them.
            let want = (limit - out.len()).saturating_add(busy.len()).min(limit.saturating_mul(2));
            let q = text.build(want, "c.createdAt, c.roomId")?;
            let docs: Vec<RoomDoc> = self.c.query(In::Rooms, q, None, Fresh::Session).await?;
            let exhausted = docs.len() < want;
            for d in docs {
                let room = d.to_room()?;
                after = Some(RoomKey::of(&room));
                if !busy.contains(&room.id) && out.len() < limit {
                    out.push(room);
                }
            }
            if exhausted {
                break;
            }
        }
        Ok(out)
    }

    pub(super) async fn bookings_page_impl(
        &self,
        q: &BookingQuery,
        after: Option<&BookingKey>,
        limit: usize,
    ) -> StoreResult<Vec<Booking>> {
        let mut text = Text::new("SELECT * FROM c WHERE c.kind = 'owned' AND c.owner = @owner");
        text.params.push(("@owner".into(), q.owner.clone().into()));
        let now = ts(q.now);
        let live = "IS_NULL(c.booking.cancelled_at)";
        match q.status {
            None => {}
            Some(BookingStatus::Cancelled) => text.and(&format!("NOT {live}"), []),
            Some(BookingStatus::Upcoming) => text.and(&format!("{live} AND c.start > @now"), [("@now", now.into())]),
            Some(BookingStatus::Active) => {
                text.and(&format!("{live} AND c.start <= @now AND c.end > @now"), [("@now", now.into())])
            }
            Some(BookingStatus::Past) => text.and(&format!("{live} AND c.end <= @now"), [("@now", now.into())]),
        }
        if let Some(slot) = q.during {
            text.and(
                "c.start < @end AND c.end > @start",
                [("@start", ts(slot.start()).into()), ("@end", ts(slot.end()).into())],
            );
        }
        if let Some(k) = after {
            text.and(
                "(c.start > @ks OR (c.start = @ks AND c.id > @kid))",
                [("@ks", ts(k.start).into()), ("@kid", owner_doc_id(k.id).into())],
            );
        }
        let docs: Vec<OwnerDoc> = self
            .c
            .query(In::Ops, text.build(limit, "c.start, c.id")?, Some(&owner_pk(&q.owner)), Fresh::Session)
            .await?;
        Ok(docs.into_iter().map(|d| d.booking).collect())
    }

    pub(super) async fn deliveries_page_impl(
        &self,
        status: Option<DeliveryStatus>,
        after: Option<&DeliveryKey>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let mut text = Text::new("SELECT * FROM c WHERE c.kind = 'outbox'");
        if let Some(s) = status {
            text.and("c.status = @status", [("@status", s.as_str().into())]);
        }
        if let Some(k) = after {
            text.and(
                "(c.at < @ka OR (c.at = @ka AND c.eventId < @kid))",
                [("@ka", ts(k.at).into()), ("@kid", k.id.clone().into())],
            );
        }
        let docs: Vec<OutboxDoc> =
            self.c.query(In::Rooms, text.build(limit, "c.at DESC, c.eventId DESC")?, None, Fresh::Session).await?;
        docs.iter().map(OutboxDoc::to_delivery).collect::<Result<_, StoreError>>()
    }
}

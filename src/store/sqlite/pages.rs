//! SQLite: keyset pages of rooms, an owner's bookings and the webhook outbox (migration 6 adds
//! the indexes that make each page one index range read, already in the list's order; an
//! owner's index now holds (start, end, cancellation), and SQLite orders the bookings that share
//! a start by id as it reads them).
//!
//! Every page query is "filters AND (sort key) > (the key) ORDER BY sort key LIMIT n": SQLite
//! seeks the index to the key and stops after n rows, so page 1,000 costs what page 1 costs.

use rusqlite::types::Value;
use rusqlite::{Connection, params_from_iter};

use super::{BOOKING_COLUMNS, ROOM_COLUMNS, SqliteStore, booking_from_row, collect, ns, room_from_row, room_key};
use super::{records, start_floor};
use crate::domain::{Booking, BookingStatus, Room};
use crate::store::{BookingKey, BookingQuery, Delivery, DeliveryKey, DeliveryStatus, RoomFilter, RoomKey, StoreResult};

/// The indexes of the paged lists (appended to the store's migrations).
pub(super) const MIGRATION: &str = r#"
-- An owner's bookings by (start, id): the order of GET /bookings, so a page is a range read.
CREATE INDEX bookings_owner_page ON bookings (owner, slot_start, id);
DROP INDEX bookings_owner_start;
-- The outbox newest first (read backwards), with and without a status.
CREATE INDEX outbox_page ON outbox (at, id);
CREATE INDEX outbox_status_page ON outbox (status, at, id);
DROP INDEX outbox_status;
"#;

/// SQL text and its positional arguments, built clause by clause.
#[derive(Default)]
struct Sql {
    text: String,
    args: Vec<Value>,
}

impl Sql {
    fn new(text: impl Into<String>) -> Self {
        Self { text: text.into(), args: Vec::new() }
    }
    /// Appends ` AND clause`, whose `?` placeholders take `args` in order.
    fn and(&mut self, clause: &str, args: impl IntoIterator<Item = Value>) {
        self.push(" AND ", clause, args);
    }
    /// Appends the order and the limit.
    fn order_limit(&mut self, order: &str, limit: usize) {
        self.push(
            " ORDER BY ",
            &format!("{order} LIMIT ?"),
            [Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX))],
        );
    }
    fn push(&mut self, separator: &str, clause: &str, args: impl IntoIterator<Item = Value>) {
        let mut out = String::with_capacity(clause.len() + 8);
        let mut args = args.into_iter();
        for ch in clause.chars() {
            if ch == '?' {
                self.args.push(args.next().expect("one argument per placeholder"));
                out += &format!("?{}", self.args.len());
            } else {
                out.push(ch);
            }
        }
        self.text += separator;
        self.text += &out;
    }
    fn run<T>(
        &self,
        tx: &Connection,
        map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> StoreResult<Vec<T>> {
        let mut st = tx.prepare_cached(&self.text)?;
        collect(st.query_map(params_from_iter(self.args.iter()), map)?)
    }
}

impl SqliteStore {
    pub(super) async fn rooms_page_impl(
        &self,
        filter: &RoomFilter,
        after: Option<&RoomKey>,
        limit: usize,
    ) -> StoreResult<Vec<Room>> {
        let mut sql = Sql::new(format!("SELECT {ROOM_COLUMNS} FROM rooms r WHERE 1"));
        if let Some(m) = filter.max_participants {
            sql.and("r.max_participants = ?", [Value::Integer(m.into())]);
        }
        if let Some(t) = filter.created_before {
            sql.and("r.created_at < ?", [Value::Integer(ns(t)?)]);
        }
        if let Some(t) = filter.created_after {
            sql.and("r.created_at > ?", [Value::Integer(ns(t)?)]);
        }
        if let Some(k) = after {
            let (t, id) = (ns(k.created_at)?, room_key(k.id));
            sql.and("(r.created_at > ? OR (r.created_at = ? AND r.id > ?))", [t, t, id].map(Value::Integer));
        }
        let free = filter.free_during.map(|s| Ok::<_, crate::store::StoreError>((ns(s.start())?, ns(s.end())?)));
        let free = free.transpose()?;
        self.read(move |tx| {
            let mut sql = sql;
            if let Some((start, end)) = free {
                // The index floor of the overlap probe is only known inside the snapshot.
                let floor = start_floor(tx, start)?;
                sql.and(
                    "NOT EXISTS (SELECT 1 FROM bookings b WHERE b.room_id = r.id AND b.cancelled_at IS NULL
                       AND b.slot_start > ? AND b.slot_start < ? AND b.slot_end > ?)",
                    [floor, end, start].map(Value::Integer),
                );
            }
            sql.order_limit("r.created_at, r.id", limit);
            sql.run(tx, room_from_row)
        })
        .await
    }

    pub(super) async fn bookings_page_impl(
        &self,
        q: &BookingQuery,
        after: Option<&BookingKey>,
        limit: usize,
    ) -> StoreResult<Vec<Booking>> {
        let mut sql = Sql::new(format!("SELECT {BOOKING_COLUMNS} FROM bookings b WHERE b.owner = ?1"));
        sql.args.push(Value::Text(q.owner.clone()));
        let now = ns(q.now)?;
        match q.status {
            None => {}
            Some(BookingStatus::Cancelled) => sql.and("cancelled_at IS NOT NULL", []),
            Some(BookingStatus::Upcoming) => sql.and("cancelled_at IS NULL AND slot_start > ?", [Value::Integer(now)]),
            Some(BookingStatus::Active) => {
                sql.and("cancelled_at IS NULL AND slot_start <= ? AND slot_end > ?", [now, now].map(Value::Integer))
            }
            Some(BookingStatus::Past) => sql.and("cancelled_at IS NULL AND slot_end <= ?", [Value::Integer(now)]),
        }
        if let Some(k) = after {
            let (t, id) = (ns(k.start)?, k.id.to_string());
            sql.and(
                "(slot_start > ? OR (slot_start = ? AND id > ?))",
                [Value::Integer(t), Value::Integer(t), Value::Text(id)],
            );
        }
        let during = q.during.map(|s| Ok::<_, crate::store::StoreError>((ns(s.start())?, ns(s.end())?)));
        let during = during.transpose()?;
        self.read(move |tx| {
            let mut sql = sql;
            if let Some((start, end)) = during {
                let floor = start_floor(tx, start)?;
                sql.and("slot_start > ? AND slot_start < ? AND slot_end > ?", [floor, end, start].map(Value::Integer));
            }
            sql.order_limit("slot_start, id", limit);
            sql.run(tx, booking_from_row)
        })
        .await
    }

    pub(super) async fn deliveries_page_impl(
        &self,
        status: Option<DeliveryStatus>,
        after: Option<&DeliveryKey>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let mut sql = Sql::new(format!("SELECT {} FROM outbox WHERE 1", records::DELIVERY_COLUMNS));
        if let Some(s) = status {
            sql.and("status = ?", [Value::Text(s.as_str().into())]);
        }
        if let Some(k) = after {
            let t = ns(k.at)?;
            sql.and(
                "(at < ? OR (at = ? AND id < ?))",
                [Value::Integer(t), Value::Integer(t), Value::Text(k.id.clone())],
            );
        }
        sql.order_limit("at DESC, id DESC", limit);
        self.read(move |tx| sql.run(tx, records::delivery_from_row)).await
    }
}

//! Pure types and rules of the booking domain: ids, time slots, statuses, passwords; what
//! happened in a session ([`session`]) and the events integrators hear about ([`events`]).
//! Nothing here does I/O; time is always a parameter so tests pin it.

pub mod events;
pub mod session;

use std::fmt;

use chrono::{DateTime, Datelike, Duration, SecondsFormat, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Largest room id plus one: ids stay exact in JavaScript numbers and in Janus (53-bit ids).
pub const ROOM_ID_LIMIT: u64 = 1 << 53;

/// Why a value from a client was refused. The message is shown to the client as `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(msg: impl Into<String>) -> Invalid {
    Invalid(msg.into())
}

/// A Janus VideoRoom id: a positive integer below 2^53.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct RoomId(u64);

impl RoomId {
    /// Parses an id given by a client; refuses 0 and values at or above 2^53.
    pub fn new(v: u64) -> Result<Self, Invalid> {
        if v == 0 || v >= ROOM_ID_LIMIT {
            return Err(invalid(format!("room_id must be a positive integer below 2^53, got {v}")));
        }
        Ok(Self(v))
    }
    /// A fresh random id, uniform over `1..2^53`.
    pub fn random() -> Self {
        Self(rand::thread_rng().gen_range(1..ROOM_ID_LIMIT))
    }
    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for RoomId {
    type Error = Invalid;
    fn try_from(v: u64) -> Result<Self, Invalid> {
        Self::new(v)
    }
}
impl From<RoomId> for u64 {
    fn from(r: RoomId) -> u64 {
        r.0
    }
}
impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
impl std::str::FromStr for RoomId {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        let v: u64 = s.parse().map_err(|_| invalid(format!("room_id must be a positive integer, got {s:?}")))?;
        Self::new(v)
    }
}

/// The first year a client may name in a time or a date.
pub const FIRST_YEAR: i32 = 1970;
/// The last year a client may name in a time or a date. Far inside what every part can hold
/// (nanosecond timestamps end in 2262, chrono at year 262143), so no arithmetic on a client's
/// time (a join window, a host's lead, a day's end) can overflow.
pub const LAST_YEAR: i32 = 2199;

/// True when `year` is one of the years [`FIRST_YEAR`]..=[`LAST_YEAR`].
fn in_sane_range(year: i32) -> bool {
    (FIRST_YEAR..=LAST_YEAR).contains(&year)
}

/// Parses an RFC 3339 timestamp that carries an explicit offset, and converts it to UTC.
/// Naive times (`2026-01-01T10:00:00`) are refused: their meaning depends on the reader. So are
/// times outside the years [`FIRST_YEAR`] to [`LAST_YEAR`] (UTC), which no booking needs.
pub fn parse_instant(field: &str, s: &str) -> Result<DateTime<Utc>, Invalid> {
    let t = DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|_| {
        invalid(format!("{field} must be an RFC 3339 time with an offset, like 2026-06-20T10:00:00Z; got {s:?}"))
    })?;
    if !in_sane_range(t.year()) {
        return Err(invalid(format!("{field} must lie in the years {FIRST_YEAR} to {LAST_YEAR}; got {s:?}")));
    }
    Ok(t)
}

/// Parses a calendar day `YYYY-MM-DD` (in the years [`FIRST_YEAR`] to [`LAST_YEAR`]) into the
/// slot `[00:00, 24:00)` UTC of that day.
pub fn parse_day(field: &str, s: &str) -> Result<TimeSlot, Invalid> {
    let day =
        chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().filter(|d| in_sane_range(d.year())).ok_or_else(|| {
            invalid(format!("{field} must be a day YYYY-MM-DD in the years {FIRST_YEAR} to {LAST_YEAR}, got {s:?}"))
        })?;
    let start = day.and_time(chrono::NaiveTime::MIN).and_utc();
    TimeSlot::new(start, start + Duration::days(1))
}

/// `bytes` in lowercase hex, two digits a byte: how digests and derived secrets are written.
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Formats a time as the API answers it: RFC 3339 in UTC with a `Z`, whole seconds unless sub-second.
pub fn format_instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A half-open interval `[start, end)` in UTC with `start < end`.
/// Two slots that only touch (`a.end == b.start`) do not overlap: back-to-back bookings are fine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TimeSlot {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl TimeSlot {
    /// A slot for queries (availability, filters): only `start < end` is required.
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Self, Invalid> {
        if start >= end {
            return Err(invalid("start_time must be before end_time"));
        }
        Ok(Self { start, end })
    }
    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }
    pub fn end(&self) -> DateTime<Utc> {
        self.end
    }
    pub fn duration(&self) -> Duration {
        self.end - self.start
    }
    /// True when the two half-open intervals share at least one instant.
    pub fn overlaps(&self, other: &TimeSlot) -> bool {
        self.start < other.end && other.start < self.end
    }
    /// True when `t` lies in `[start, end)`.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }
}

/// Booking rules that depend on configuration.
#[derive(Debug, Clone)]
pub struct BookingPolicy {
    /// Longest session a client may book.
    pub max_duration: Duration,
    /// How long before the start a booking may still be cancelled (0: until it starts).
    pub min_cancel_notice: Duration,
    /// From how long before the start the owner sees the room password (and may join).
    pub reveal_before: Duration,
    /// How far ahead a booking may start.
    pub horizon: Duration,
}

impl Default for BookingPolicy {
    fn default() -> Self {
        Self {
            max_duration: Duration::hours(8),
            min_cancel_notice: Duration::zero(),
            reveal_before: Duration::minutes(15),
            horizon: Duration::days(180),
        }
    }
}

impl BookingPolicy {
    /// Validates a slot a client wants to book at `now`: it must not start in the past nor
    /// further ahead than the horizon, and must not last longer than the maximum session.
    pub fn bookable_slot(&self, slot: TimeSlot, now: DateTime<Utc>) -> Result<TimeSlot, Invalid> {
        if slot.start() < now {
            return Err(invalid("start_time is in the past"));
        }
        if slot.start() > now + self.horizon {
            return Err(invalid(format!(
                "start_time may be at most {} days ahead (until {})",
                self.horizon.num_days(),
                format_instant(now + self.horizon)
            )));
        }
        if slot.duration() > self.max_duration {
            return Err(invalid(format!("a session may last at most {} minutes", self.max_duration.num_minutes())));
        }
        Ok(slot)
    }

    /// The window in which a booking's owner sees the password and may join: from
    /// `reveal_before` ahead of the start until the end.
    pub fn join_window(&self, slot: TimeSlot) -> TimeSlot {
        TimeSlot { start: slot.start() - self.reveal_before, end: slot.end() }
    }
}

/// The status of a booking, derived from its slot, its cancellation and `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BookingStatus {
    /// Starts in the future.
    Upcoming,
    /// `start <= now < end`.
    Active,
    /// Ended.
    Past,
    /// Cancelled by its owner or an admin.
    Cancelled,
}

impl BookingStatus {
    pub fn of(slot: TimeSlot, cancelled: bool, now: DateTime<Utc>) -> Self {
        if cancelled {
            Self::Cancelled
        } else if now < slot.start() {
            Self::Upcoming
        } else if now < slot.end() {
            Self::Active
        } else {
            Self::Past
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upcoming => "upcoming",
            Self::Active => "active",
            Self::Past => "past",
            Self::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for BookingStatus {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        match s {
            "upcoming" => Ok(Self::Upcoming),
            "active" => Ok(Self::Active),
            "past" => Ok(Self::Past),
            "cancelled" => Ok(Self::Cancelled),
            _ => Err(invalid(format!("status must be one of upcoming, active, past, cancelled; got {s:?}"))),
        }
    }
}

const PASSWORD_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";

/// A room password (the Janus `pin`): 12 characters from an unambiguous alphanumeric alphabet,
/// about 70 bits. Alphanumeric so it survives URLs, shells and Janus's config syntax unescaped.
pub fn new_password() -> String {
    random_string(12)
}

fn random_string(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len).map(|_| PASSWORD_ALPHABET[rng.gen_range(0..PASSWORD_ALPHABET.len())] as char).collect()
}

/// Largest accepted `metadata` object on a room, serialized.
pub const MAX_METADATA_BYTES: usize = 4096;
/// Largest accepted `optional_name`.
pub const MAX_NAME_CHARS: usize = 200;
/// Range of `max_participants`.
pub const MAX_PARTICIPANTS: std::ops::RangeInclusive<u8> = 1..=16;

/// A room: the stored desired state of one Janus VideoRoom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Room {
    pub id: RoomId,
    pub name: Option<String>,
    /// The room's password (specification 5.3.2). It opens no session: each booking's session
    /// has its own pin, derived per booking (see [`crate::sessions::credentials`]).
    pub password: String,
    pub max_participants: u8,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Room {
    /// A new room with a random id and password.
    pub fn generate(
        name: Option<String>,
        max_participants: u8,
        metadata: serde_json::Map<String, serde_json::Value>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: RoomId::random(),
            name,
            password: new_password(),
            max_participants,
            metadata,
            created_at: now,
            updated_at: now,
        }
    }
}

/// A booking of one room for one slot by one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Booking {
    pub id: Uuid,
    pub room_id: RoomId,
    /// The owner's user id (the token's `oid` or `sub`).
    pub owner: String,
    pub slot: TimeSlot,
    pub created_at: DateTime<Utc>,
    pub cancelled_at: Option<DateTime<Utc>>,
    /// Who besides the owner may join the session, and which generation of credentials is current.
    #[serde(default)]
    pub access: Access,
}

/// Who may join a booking's session besides its owner, and which credentials are current.
///
/// A booking's session credentials (its Janus room id, pin and room secret) are derived from the
/// booking id and [`Access::generation`] with a server-side key, so none of them is stored.
/// Changing the generation rotates all of them at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// Bumped whenever the session's credentials must change, e.g. a guest who joined lost the
    /// invitation. Starts at 0.
    pub generation: u32,
    /// The live guest invitation, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invitation: Option<Invitation>,
}

/// A guest invitation to a booking's session: a bearer code, stored only as its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// Lowercase hex SHA-256 of the code. The code itself is never stored.
    pub code_hash: String,
    /// The only user who may use it, when the owner named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<String>,
    /// The owner's name as the guest's landing page shows it.
    pub host_display: String,
    pub created_at: DateTime<Utc>,
    /// When a guest first received join credentials with it: from then on, revoking it must
    /// rotate the session's credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined_at: Option<DateTime<Utc>>,
}

impl Booking {
    /// A fresh booking id that sorts by `now`: a UUIDv7 (48 bits of Unix milliseconds, then 74
    /// random bits), so a store's id index takes new bookings at its end rather than at random
    /// places. A store may still give the booking another id (see `Store::book_room`).
    pub fn new_id(now: DateTime<Utc>) -> Uuid {
        let ms = u128::from(now.timestamp_millis().max(0) as u64 & ((1 << 48) - 1));
        let random: u128 = rand::thread_rng().r#gen();
        let rand_a = (random >> 64) & 0xfff;
        let rand_b = random & ((1 << 62) - 1);
        Uuid::from_u128(ms << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b)
    }
    pub fn status(&self, now: DateTime<Utc>) -> BookingStatus {
        BookingStatus::of(self.slot, self.cancelled_at.is_some(), now)
    }
    /// A live booking holds its room: not cancelled. (Past bookings no longer matter for overlap
    /// because new bookings cannot start in the past.)
    pub fn is_live(&self) -> bool {
        self.cancelled_at.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_instant("t", s).unwrap()
    }

    #[test]
    fn booking_ids_are_uuid_v7_and_sort_by_time() {
        let early = Booking::new_id(t("2030-01-01T00:00:00Z"));
        let later = Booking::new_id(t("2030-01-01T00:00:00.001Z"));
        assert_eq!(early.get_version_num(), 7);
        assert_eq!(early.get_variant(), uuid::Variant::RFC4122);
        assert!(early < later && early.to_string() < later.to_string());
        assert_ne!(Booking::new_id(t("2030-01-01T00:00:00Z")), early);
    }

    #[test]
    fn back_to_back_slots_do_not_overlap() {
        let a = TimeSlot::new(t("2026-01-01T10:00:00Z"), t("2026-01-01T11:00:00Z")).unwrap();
        let b = TimeSlot::new(t("2026-01-01T11:00:00Z"), t("2026-01-01T12:00:00Z")).unwrap();
        let c = TimeSlot::new(t("2026-01-01T10:59:59Z"), t("2026-01-01T12:00:00Z")).unwrap();
        assert!(!a.overlaps(&b) && !b.overlaps(&a));
        assert!(a.overlaps(&c) && c.overlaps(&a));
    }

    #[test]
    fn naive_times_are_refused_and_offsets_become_utc() {
        assert!(parse_instant("start_time", "2026-01-01T10:00:00").is_err());
        assert_eq!(format_instant(t("2026-01-01T12:00:00+02:00")), "2026-01-01T10:00:00Z");
    }

    #[test]
    fn room_ids_stay_below_2_pow_53() {
        assert!(RoomId::new(0).is_err());
        assert!(RoomId::new(ROOM_ID_LIMIT).is_err());
        for _ in 0..1000 {
            assert!(RoomId::random().get() < ROOM_ID_LIMIT);
        }
    }

    #[test]
    fn status_follows_the_clock() {
        let s = TimeSlot::new(t("2026-01-01T10:00:00Z"), t("2026-01-01T11:00:00Z")).unwrap();
        assert_eq!(BookingStatus::of(s, false, t("2026-01-01T09:00:00Z")), BookingStatus::Upcoming);
        assert_eq!(BookingStatus::of(s, false, t("2026-01-01T10:00:00Z")), BookingStatus::Active);
        assert_eq!(BookingStatus::of(s, false, t("2026-01-01T11:00:00Z")), BookingStatus::Past);
        assert_eq!(BookingStatus::of(s, true, t("2026-01-01T10:30:00Z")), BookingStatus::Cancelled);
    }
}

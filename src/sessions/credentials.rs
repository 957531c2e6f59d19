//! A booking's session credentials, derived rather than stored.
//!
//! Every booking's session lives in its own Janus VideoRoom. The room's id, its `pin` and its
//! admin `secret` are HMAC-SHA256 derivations from a server-side key and
//! `(booking id, generation)` ([`SessionKey::credentials`]): nothing secret is stored, two
//! bookings never share a room, and bumping the booking's [`Access::generation`] rotates all
//! three at once. The room secret also derives from the room id alone
//! ([`SessionKey::room_secret`]), so a room found on a Janus host can be destroyed knowing only
//! its id, and a room's description names its booking and generation ([`describe`], [`parse`]),
//! so the reconciler can tell which rooms must stay. Each role of a session also gets its own
//! Janus participant id ([`SessionKey::participant_id`]): a client that joins with it is named
//! by role in Janus's events.
//!
//! The key is itself derived from the Janus API secret (server side only, known to the Janus
//! hosts, which hold every room anyway). Rotating that secret restarts the hosts, whose rooms
//! are not permanent, so no room outlives its key.
//!
//! [`Access::generation`]: crate::domain::Access::generation

use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::domain::{ROOM_ID_LIMIT, RoomId, session::Role};

type HmacSha256 = Hmac<Sha256>;

/// Characters of a pin: alphanumeric without look-alikes (as room passwords).
const PIN_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
/// Pin length: 12 characters of 57, about 70 bits.
const PIN_CHARS: usize = 12;
/// What every session room's description starts with.
const DESCRIPTION_PREFIX: &str = "suroga-session";

/// The credentials of one booking's session in one generation.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionCredentials {
    /// The Janus VideoRoom id: below 2^53, unguessable without the key.
    pub room: RoomId,
    /// The room's join password (`pin`), given to the session's two participants.
    pub pin: String,
    /// The room's admin `secret`; never leaves the server.
    pub secret: String,
    /// The room's description: names the booking and generation (see [`parse`]).
    pub description: String,
}

impl std::fmt::Debug for SessionCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCredentials").field("room", &self.room).finish_non_exhaustive()
    }
}

/// The derivation key. Cheap to clone.
#[derive(Clone)]
pub struct SessionKey {
    key: [u8; 32],
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(***)")
    }
}

impl SessionKey {
    /// The key derived from `root` (the Janus API secret), with its own label so it is never
    /// the root itself.
    pub fn from_root(root: &str) -> Self {
        let mut mac = HmacSha256::new_from_slice(root.as_bytes()).expect("HMAC takes any key length");
        mac.update(b"suroga session credentials v1");
        Self { key: mac.finalize().into_bytes().into() }
    }

    fn derive(&self, label: &str, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(label.as_bytes());
        for p in parts {
            // Length-prefixed, so no two inputs concatenate alike.
            mac.update(&(p.len() as u32).to_be_bytes());
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    /// The session credentials of `booking` in `generation`. Pure: the same inputs always give
    /// the same credentials, on every instance.
    pub fn credentials(&self, booking: Uuid, generation: u32) -> SessionCredentials {
        let parts: [&[u8]; 2] = [booking.as_bytes(), &generation.to_be_bytes()];
        let id_bytes = self.derive("room", &parts);
        let raw = u64::from_be_bytes(id_bytes[..8].try_into().expect("8 bytes"));
        let room = RoomId::new(raw % (ROOM_ID_LIMIT - 1) + 1).expect("1..2^53 is a room id");
        SessionCredentials {
            room,
            pin: self.pin(booking, generation),
            secret: self.room_secret(room),
            description: describe(booking, generation),
        }
    }

    /// The pin of [`Self::credentials`] alone (what a new booking answers), without deriving
    /// the rest.
    pub fn pin(&self, booking: Uuid, generation: u32) -> String {
        let pin_bytes = self.derive("pin", &[booking.as_bytes(), &generation.to_be_bytes()]);
        // 32 bytes, each reduced mod 57: the bias (256 = 4 * 57 + 28) is far below what a
        // guess could use against a 70-bit pin.
        pin_bytes.iter().take(PIN_CHARS).map(|b| PIN_ALPHABET[*b as usize % PIN_ALPHABET.len()] as char).collect()
    }

    /// The Janus participant id of `role` in `booking`'s session in `generation`: the client
    /// sends it as `id` in its publisher `join`, so Janus's events about it name its role.
    /// Below 2^53 (exact in JavaScript), never 0, different for the two roles.
    pub fn participant_id(&self, booking: Uuid, generation: u32, role: Role) -> u64 {
        let label = match role {
            Role::Host => "participant host",
            Role::Guest => "participant guest",
        };
        let bytes = self.derive(label, &[booking.as_bytes(), &generation.to_be_bytes()]);
        let raw = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        raw % (ROOM_ID_LIMIT - 1) + 1
    }

    /// The role whose participant id (in `booking`'s session in `generation`) is `id`, if any.
    pub fn role_of(&self, booking: Uuid, generation: u32, id: u64) -> Option<Role> {
        [Role::Host, Role::Guest].into_iter().find(|r| self.participant_id(booking, generation, *r) == id)
    }

    /// The admin secret of a session room, from its id alone.
    pub fn room_secret(&self, room: RoomId) -> String {
        crate::domain::hex(&self.derive("secret", &[&room.get().to_be_bytes()]))
    }
}

/// A session room's description: `suroga-session <booking id> <generation>`.
pub fn describe(booking: Uuid, generation: u32) -> String {
    format!("{DESCRIPTION_PREFIX} {booking} {generation}")
}

/// The booking and generation a room's description names; `None` for rooms this service did
/// not make as session rooms.
pub fn parse(description: &str) -> Option<(Uuid, u32)> {
    let mut words = description.split(' ');
    if words.next()? != DESCRIPTION_PREFIX {
        return None;
    }
    let booking = Uuid::parse_str(words.next()?).ok()?;
    let generation = words.next()?.parse().ok()?;
    words.next().is_none().then_some((booking, generation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_stable_per_booking_and_generation_and_differ_otherwise() {
        let key = SessionKey::from_root("janus-api-secret");
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(key.credentials(a, 0), key.credentials(a, 0));
        let creds = [key.credentials(a, 0), key.credentials(a, 1), key.credentials(b, 0)];
        for (i, x) in creds.iter().enumerate() {
            for y in &creds[i + 1..] {
                assert_ne!(x.room, y.room);
                assert_ne!(x.pin, y.pin);
                assert_ne!(x.secret, y.secret);
            }
        }
        let other = SessionKey::from_root("another-secret").credentials(a, 0);
        assert_ne!(other.room, creds[0].room);
        assert_ne!(other.pin, creds[0].pin);
    }

    #[test]
    fn pins_use_the_alphabet_and_the_secret_follows_the_room_id() {
        let key = SessionKey::from_root("k");
        for _ in 0..200 {
            let c = key.credentials(Uuid::new_v4(), 7);
            assert_eq!(c.pin.len(), PIN_CHARS);
            assert!(c.pin.bytes().all(|b| PIN_ALPHABET.contains(&b)), "{}", c.pin);
            assert!(c.room.get() >= 1 && c.room.get() < ROOM_ID_LIMIT);
            assert_eq!(c.secret, key.room_secret(c.room));
            assert_eq!(c.secret.len(), 64);
        }
    }

    #[test]
    fn descriptions_round_trip_and_foreign_ones_do_not_parse() {
        let b = Uuid::new_v4();
        assert_eq!(parse(&describe(b, 3)), Some((b, 3)));
        for foreign in [
            "",
            "room 42",
            "suroga-session",
            "suroga-session not-a-uuid 1",
            &format!("suroga-session {b}"),
            &format!("suroga-session {b} 1 extra"),
            &format!("suroga-session {b} -1"),
        ] {
            assert_eq!(parse(foreign), None, "{foreign:?}");
        }
    }

    #[test]
    fn each_role_has_its_own_participant_id_per_generation() {
        let key = SessionKey::from_root("k");
        let b = Uuid::new_v4();
        let (h, g) = (key.participant_id(b, 0, Role::Host), key.participant_id(b, 0, Role::Guest));
        assert_ne!(h, g);
        assert!(h > 0 && h < ROOM_ID_LIMIT && g > 0 && g < ROOM_ID_LIMIT);
        assert_ne!(h, key.participant_id(b, 1, Role::Host));
        assert_eq!(key.role_of(b, 0, h), Some(Role::Host));
        assert_eq!(key.role_of(b, 0, g), Some(Role::Guest));
        assert_eq!(key.role_of(b, 1, h), None);
        assert_eq!(key.role_of(b, 0, 12345), None);
    }

    #[test]
    fn debug_shows_no_secret() {
        let key = SessionKey::from_root("hunter2");
        let c = key.credentials(Uuid::new_v4(), 0);
        let shown = format!("{key:?} {c:?}");
        assert!(!shown.contains("hunter2") && !shown.contains(&c.pin) && !shown.contains(&c.secret), "{shown}");
    }
}

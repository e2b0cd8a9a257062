//! A per-thread memory of values the engine found clean.
//!
//! Most of what a request carries repeats across requests: the Host, the
//! User-Agent and Accept headers of a client, the path of a popular
//! endpoint. The rules are pure functions of a value and the target it was
//! read from, so a value that no rule of a group matched once will match
//! none the next time either. The engine remembers, per (target, these
//! exact bytes), a bit mask of the rule groups that found nothing, and
//! skips those groups for them. One entry serves every group that reads
//! the target: one hash and one probe per value, not one per group.
//!
//! Exactness: an entry holds the value's full bytes and is compared
//! byte for byte (a hash collision can only miss the cache, never skip an
//! inspection); a bit records only "no rule of this group matched" (not
//! "no rule was reported"), and only when every rule of the group was
//! evaluated (none excluded for the route); it names the compiled engine it
//! was made by, so a reload's new rules never see an old verdict.
//!
//! Bounded: a direct-mapped table of [`SLOTS`] entries per worker thread,
//! values up to [`MAX_VALUE`] bytes. Admission: a value takes a slot only
//! the second time it is seen (a doorkeeper remembers a fingerprint of the
//! first sighting), so values that never come back (page numbers, ids,
//! whole query strings) neither evict the hot ones nor cost an allocation.

use std::cell::RefCell;
use std::hash::{BuildHasher, Hasher};

/// Entries per thread.
pub const SLOTS: usize = 4096;
/// Longest value remembered (longer ones are always inspected).
pub const MAX_VALUE: usize = 256;

struct Slot {
    engine: u64,
    scope: u32,
    /// Which groups found nothing in the value (bit g: group g).
    clean: u64,
    value: Box<[u8]>,
}

#[derive(Default)]
struct Table {
    slots: Vec<Option<Slot>>,
    /// A fingerprint of the last value that asked for each slot and was
    /// not admitted yet.
    door: Vec<u32>,
}

thread_local! {
    static TABLE: RefCell<Table> = RefCell::new(Table::default());
}

/// Where (engine, scope, value) lives in the table, or `None` when the
/// value is too long to remember. The scope says what the value was read
/// as (the native engine: its target; the Core Rule Set: a rule group).
#[derive(Debug, Clone, Copy)]
pub struct Key<'v> {
    engine: u64,
    scope: u32,
    value: &'v [u8],
    slot: usize,
    fingerprint: u32,
}

impl<'v> Key<'v> {
    pub fn new(engine: u64, scope: usize, value: &'v [u8]) -> Option<Key<'v>> {
        if value.len() > MAX_VALUE {
            return None;
        }
        let scope = scope as u32;
        let mut h = foldhash::fast::FixedState::default().build_hasher();
        h.write_u64(engine);
        h.write_u32(scope);
        h.write(value);
        let hash = h.finish();
        Some(Key {
            engine,
            scope,
            value,
            slot: (hash as usize) % SLOTS,
            // Never 0, so an empty doorkeeper slot matches nothing.
            fingerprint: ((hash >> 32) as u32) | 1,
        })
    }

    /// Whether the slot holds this key (the same bytes, not only the hash).
    fn is_in(&self, s: &Slot) -> bool {
        s.engine == self.engine && s.scope == self.scope && *s.value == *self.value
    }

    /// The groups found clean in this value before (0: none, or unknown).
    pub fn clean(&self) -> u64 {
        TABLE.with_borrow(|t| {
            t.slots
                .get(self.slot)
                .and_then(Option::as_ref)
                .filter(|s| self.is_in(s))
                .map_or(0, |s| s.clean)
        })
    }

    /// Remembers that the groups in `clean` found nothing in this value
    /// (added to what was remembered of it). A value not remembered yet
    /// is admitted at its second sighting.
    pub fn remember(&self, clean: u64) {
        if clean == 0 {
            return;
        }
        TABLE.with_borrow_mut(|t| {
            if t.slots.is_empty() {
                t.slots.resize_with(SLOTS, || None);
                t.door.resize(SLOTS, 0);
            }
            if let Some(s) = t.slots[self.slot].as_mut().filter(|s| self.is_in(s)) {
                s.clean |= clean;
                return;
            }
            if t.door[self.slot] != self.fingerprint {
                t.door[self.slot] = self.fingerprint;
                return;
            }
            t.door[self.slot] = 0;
            t.slots[self.slot] = Some(Slot {
                engine: self.engine,
                scope: self.scope,
                clean,
                value: self.value.into(),
            });
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_engine_scope_and_bytes_are_clean() {
        let k = Key::new(1, 3, b"Mozilla/5.0").unwrap();
        assert_eq!(k.clean(), 0);
        k.remember(0b01);
        assert_eq!(k.clean(), 0, "admitted at the second sighting only");
        k.remember(0b01);
        assert_eq!(k.clean(), 0b01);
        k.remember(0b10);
        assert_eq!(k.clean(), 0b11, "groups add up");
        for other in [
            Key::new(2, 3, b"Mozilla/5.0"),
            Key::new(1, 4, b"Mozilla/5.0"),
            Key::new(1, 3, b"Mozilla/5.1"),
        ] {
            assert_eq!(other.unwrap().clean(), 0);
        }
        assert!(Key::new(1, 3, &[b'a'; MAX_VALUE + 1]).is_none());
        // Another thread has its own table.
        std::thread::spawn(|| assert_eq!(Key::new(1, 3, b"Mozilla/5.0").unwrap().clean(), 0))
            .join()
            .unwrap();
    }

    #[test]
    fn values_seen_once_do_not_evict_remembered_ones() {
        let hot = Key::new(7, 0, b"Mozilla/5.0 (X11; Linux x86_64)").unwrap();
        hot.remember(1);
        hot.remember(1);
        assert_eq!(hot.clean(), 1);
        // A flood of one-time values, many landing on the hot slot.
        for i in 0..(SLOTS * 8) {
            let v = format!("page={i}");
            Key::new(7, 0, v.as_bytes()).unwrap().remember(1);
        }
        assert_eq!(hot.clean(), 1);
    }
}

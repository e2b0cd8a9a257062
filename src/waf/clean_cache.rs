//! A per-thread memory of values the engine found clean.
//!
//! Most of what a request carries repeats across requests: the Host, the
//! User-Agent and Accept headers of a client, the path of a popular
//! endpoint. The rules are pure functions of a value and the target it was
//! read from, so a value that no rule of a group matched once will match
//! none the next time either: the engine remembers "group g, target t,
//! these exact bytes: nothing matched" and skips the group for them.
//!
//! Exactness: an entry holds the value's full bytes and is compared
//! byte for byte (a hash collision can only miss the cache, never skip an
//! inspection); it records only "no rule matched" (not "no rule was
//! reported"), and only when every rule of the group was evaluated (none
//! excluded for the route); it names the compiled engine it was made by,
//! so a reload's new rules never see an old verdict. Bounded: a direct-mapped
//! table of [`SLOTS`] entries per worker thread, values up to
//! [`MAX_VALUE`] bytes; a flood of unique values only evicts.

use std::cell::RefCell;
use std::hash::{BuildHasher, Hasher};

/// Entries per thread.
pub const SLOTS: usize = 4096;
/// Longest value remembered (longer ones are always inspected).
pub const MAX_VALUE: usize = 256;

struct Slot {
    engine: u64,
    group: u32,
    target: u32,
    value: Box<[u8]>,
}

thread_local! {
    static TABLE: RefCell<Vec<Option<Slot>>> = const { RefCell::new(Vec::new()) };
}

/// Where (engine, group, target, value) lives in the table, or `None`
/// when the value is too long to remember.
#[derive(Debug, Clone, Copy)]
pub struct Key<'v> {
    engine: u64,
    group: u32,
    target: u32,
    value: &'v [u8],
    slot: usize,
}

impl<'v> Key<'v> {
    pub fn new(engine: u64, group: usize, target: usize, value: &'v [u8]) -> Option<Key<'v>> {
        if value.len() > MAX_VALUE {
            return None;
        }
        let (group, target) = (group as u32, target as u32);
        let mut h = foldhash::fast::FixedState::default().build_hasher();
        h.write_u64(engine);
        h.write_u32(group);
        h.write_u32(target);
        h.write(value);
        let slot = (h.finish() as usize) % SLOTS;
        Some(Key {
            engine,
            group,
            target,
            value,
            slot,
        })
    }

    /// Whether this value was found clean before.
    pub fn is_clean(&self) -> bool {
        TABLE.with_borrow(|t| {
            t.get(self.slot).and_then(Option::as_ref).is_some_and(|s| {
                s.engine == self.engine
                    && s.group == self.group
                    && s.target == self.target
                    && *s.value == *self.value
            })
        })
    }

    /// Remembers that no rule matched this value.
    pub fn remember_clean(&self) {
        TABLE.with_borrow_mut(|t| {
            if t.is_empty() {
                t.resize_with(SLOTS, || None);
            }
            t[self.slot] = Some(Slot {
                engine: self.engine,
                group: self.group,
                target: self.target,
                value: self.value.into(),
            });
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_engine_group_target_and_bytes_are_clean() {
        let k = Key::new(1, 2, 3, b"Mozilla/5.0").unwrap();
        assert!(!k.is_clean());
        k.remember_clean();
        assert!(k.is_clean());
        for other in [
            Key::new(2, 2, 3, b"Mozilla/5.0"),
            Key::new(1, 3, 3, b"Mozilla/5.0"),
            Key::new(1, 2, 4, b"Mozilla/5.0"),
            Key::new(1, 2, 3, b"Mozilla/5.1"),
        ] {
            assert!(!other.unwrap().is_clean());
        }
        assert!(Key::new(1, 2, 3, &[b'a'; MAX_VALUE + 1]).is_none());
        // Another thread has its own table.
        std::thread::spawn(|| assert!(!Key::new(1, 2, 3, b"Mozilla/5.0").unwrap().is_clean()))
            .join()
            .unwrap();
    }
}

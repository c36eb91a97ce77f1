//! The A/B slot decisions, as pure functions of what the ESP holds, so they
//! can be tested without a disk: which slot a cold start restores, and
//! which slot a new last-known-good overwrites.

/// One of the two last-known-good slots on the ESP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    A,
    B,
}

pub const SLOTS: [Slot; 2] = [Slot::A, Slot::B];

impl Slot {
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }

    /// The slot's folder on the ESP.
    pub fn dir(self) -> &'static str {
        match self {
            Slot::A => "ember/a",
            Slot::B => "ember/b",
        }
    }
}

/// The slot a cold start restores: the one the boot entry named
/// (`ember.slot=`) when it holds a record, else the newest generation.
/// `generations[i]` is slot `SLOTS[i]`'s generation, `None` when the slot
/// has no readable record.
pub fn for_restore(generations: [Option<u64>; 2], booted_from: Option<Slot>) -> Option<Slot> {
    let present = |s: Slot| generations[s as usize].is_some();
    if let Some(s) = booted_from.filter(|s| present(*s)) {
        return Some(s);
    }
    match generations {
        [None, None] => None,
        [Some(_), None] => Some(Slot::A),
        [None, Some(_)] => Some(Slot::B),
        [Some(a), Some(b)] => Some(if b > a { Slot::B } else { Slot::A }),
    }
}

/// The slot a new last-known-good goes to, and its generation: an empty
/// slot first, else the older one; the other slot, the current
/// last-known-good, is never touched.
pub fn for_write(generations: [Option<u64>; 2]) -> (Slot, u64) {
    let next = generations.iter().flatten().copied().max().unwrap_or(0) + 1;
    let slot = match generations {
        [None, _] => Slot::A,
        [_, None] => Slot::B,
        [Some(a), Some(b)] if a <= b => Slot::A,
        _ => Slot::B,
    };
    (slot, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cold_start_restores_the_named_slot_else_the_newest() {
        assert_eq!(for_restore([None, None], None), None);
        assert_eq!(for_restore([Some(1), None], None), Some(Slot::A));
        assert_eq!(for_restore([None, Some(4)], None), Some(Slot::B));
        assert_eq!(for_restore([Some(3), Some(4)], None), Some(Slot::B));
        assert_eq!(for_restore([Some(5), Some(4)], None), Some(Slot::A));
        assert_eq!(
            for_restore([Some(3), Some(4)], Some(Slot::A)),
            Some(Slot::A)
        );
        // A boot entry naming an empty slot falls back to the newest.
        assert_eq!(for_restore([Some(3), None], Some(Slot::B)), Some(Slot::A));
    }

    #[test]
    fn writes_go_to_the_empty_or_older_slot_with_the_next_generation() {
        assert_eq!(for_write([None, None]), (Slot::A, 1));
        assert_eq!(for_write([Some(1), None]), (Slot::B, 2));
        assert_eq!(for_write([None, Some(7)]), (Slot::A, 8));
        assert_eq!(for_write([Some(2), Some(3)]), (Slot::A, 4));
        assert_eq!(for_write([Some(5), Some(3)]), (Slot::B, 6));
    }
}

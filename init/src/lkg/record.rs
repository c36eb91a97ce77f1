//! Reading `slot.rec` ([`ember_proto::slot`] is the format) from the ESP.

use alloc::format;

pub use ember_proto::slot::{SealedKey, SlotRecord, RECORD_VERSION};

use super::esp::Mounted;
use super::slots::{Slot, SLOTS};
use crate::fsutil;

/// Reads a slot's record; `None` when it is missing or unreadable (logged).
/// Not inlined: [`read_both`]'s `map` would emit it (and the record's
/// decoder) once per slot.
#[inline(never)]
pub fn read(esp: &Mounted, slot: Slot) -> Option<SlotRecord> {
    let bytes = fsutil::read_file_raw(&esp.path(&format!("{}/slot.rec", slot.dir()))).ok()?;
    SlotRecord::from_bytes(&bytes)
        .inspect_err(|e| crate::warn!("lkg: slot {}: {e}: ignored", slot.name()))
        .ok()
}

/// Both slots' records, in [`SLOTS`] order.
pub fn read_both(esp: &Mounted) -> [Option<SlotRecord>; 2] {
    SLOTS.map(|s| read(esp, s))
}

/// The generations of both slots, for [`super::slots`]' decisions.
pub fn generations(records: &[Option<SlotRecord>; 2]) -> [Option<u64>; 2] {
    [
        records[0].as_ref().map(|r| r.generation),
        records[1].as_ref().map(|r| r.generation),
    ]
}

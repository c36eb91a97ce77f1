//! `slot.rec`: what a slot holds, as a postcard record. Versioned so a
//! newer init can refuse an older format clearly instead of misreading it.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use super::esp::Mounted;
use super::slots::{Slot, SLOTS};
use crate::fsutil;

pub const RECORD_VERSION: u32 = 1;

/// The overlay a slot holds, as the boot server described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayInfo {
    pub id: String,
    pub sha256: [u8; 32],
    pub size: u64,
}

/// The overlay key sealed by the TPM to the boot-phase PCR value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedKey {
    /// TPM2B_PUBLIC and TPM2B_PRIVATE of the sealed data object.
    pub public: Vec<u8>,
    pub private: Vec<u8>,
    /// The PCR (sha256 bank) and value the policy requires.
    pub pcr_index: u8,
    pub pcr_value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    pub version: u32,
    pub generation: u64,
    pub overlay: OverlayInfo,
    pub key: SealedKey,
    /// The kernel command line the slot boots with.
    pub cmdline: String,
}

/// Reads a slot's record; `None` when it is missing or unreadable (logged).
pub fn read(esp: &Mounted, slot: Slot) -> Option<SlotRecord> {
    let bytes = fsutil::read_file_raw(&esp.path(&format!("{}/slot.rec", slot.dir()))).ok()?;
    match postcard::from_bytes::<SlotRecord>(&bytes) {
        Ok(r) if r.version == RECORD_VERSION => Some(r),
        Ok(r) => {
            log::warn!(
                "lkg: slot {} has record version {}, expected {RECORD_VERSION}",
                slot.name(),
                r.version
            );
            None
        }
        Err(_) => {
            log::warn!("lkg: slot {} record is unreadable", slot.name());
            None
        }
    }
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

//! `slot.rec`: what a slot holds, as a postcard record. Versioned so a
//! newer init can refuse an older format clearly instead of misreading it.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use ember_proto::manifest::SignedManifest;
use serde::{Deserialize, Serialize};

use super::esp::Mounted;
use super::slots::{Slot, SLOTS};
use crate::fsutil;

/// 2: the overlay is the server's signed manifest and its data key (1 held
/// an unauthenticated description and a per-boot stream key). 3: the key's
/// policy includes the TPM rollback counter (`sealed_for`).
pub const RECORD_VERSION: u32 = 3;

/// The overlay's data key sealed by the TPM to the boot-phase PCR value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedKey {
    /// TPM2B_PUBLIC and TPM2B_PRIVATE of the sealed data object.
    pub public: Vec<u8>,
    pub private: Vec<u8>,
    /// The PCR (sha256 bank) and value the policy requires.
    pub pcr_index: u8,
    pub pcr_value: Vec<u8>,
    /// The key unseals only while the TPM rollback counter is at most
    /// this (PolicyNV; see [`super::epoch`]).
    pub sealed_for: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    pub version: u32,
    pub generation: u64,
    /// The overlay's manifest exactly as the boot server signed it:
    /// verified with the initrd's key on every cold start.
    pub manifest: SignedManifest,
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

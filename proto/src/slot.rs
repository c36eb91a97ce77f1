//! `slot.rec`: what a last-known-good slot on the ESP holds beside its UKI
//! and sealed overlay blob, as a postcard record. The init writes and reads
//! it; tests that play an attacker with the disk write it too, so the
//! format lives here, once. Versioned so a newer init refuses an older
//! format clearly instead of misreading it.

use crate::ErrorKind;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::manifest::{SignedBootImage, SignedManifest};
use crate::Error;

// ANCHOR: record
/// 4: the slot is the UKI the node booted, named by a signed boot image
/// record, and its key is sealed to PCR 4 + 11 (+ 12, the loader entry's
/// options, and under Secure Boot 7: `keys[].pcrs` lists them) and the TPM
/// rollback counter (`sealed_for`). 2 held a kernel and an initrd snapshot, the key
/// sealed to the init's own PCR 11; 3 had no counter term.
pub const RECORD_VERSION: u32 = 4;

/// The overlay's data key sealed by the TPM (TPM2_Create under the SRK)
/// with PolicyPCR over `pcrs` (sha256 bank) equal to `values`, and
/// PolicyNV: the TPM rollback counter at most `sealed_for`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedKey {
    /// TPM2B_PUBLIC and TPM2B_PRIVATE of the sealed data object.
    pub public: Vec<u8>,
    pub private: Vec<u8>,
    /// The PCR indices (ascending) and the value each must hold.
    pub pcrs: Vec<u8>,
    pub values: Vec<Vec<u8>>,
    /// The key unseals only while the TPM rollback counter is at most
    /// this (the init's `lkg::epoch`).
    pub sealed_for: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    pub version: u32,
    pub generation: u64,
    /// The overlay's manifest exactly as the boot server signed it:
    /// verified with the initrd's key on every cold start.
    pub manifest: SignedManifest,
    /// The boot image record the slot's UKI and seal came from.
    pub boot_image: SignedBootImage,
    /// The data key, sealed once per boot path the slot may be booted by
    /// (one PCR 4 value each); any one unsealing is enough.
    pub keys: Vec<SealedKey>,
    /// The kernel command line the slot's loader entry passes.
    pub cmdline: String,
}
// ANCHOR_END: record

impl SlotRecord {
    /// The stored form (postcard).
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Parses a stored record; an older or newer format is named by its
    /// version (read first), not called malformed.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        match postcard::take_from_bytes::<u32>(bytes) {
            Ok((RECORD_VERSION, _)) => {}
            Ok((got, _)) => return Err(Error::new(ErrorKind::SlotRecordVersion { got })),
            Err(_) => {
                return Err(Error::new(ErrorKind::Decode {
                    what: "slot record",
                }))
            }
        }
        match postcard::take_from_bytes::<SlotRecord>(bytes) {
            Ok((r, [])) => Ok(r),
            _ => Err(Error::new(ErrorKind::Decode {
                what: "slot record",
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_another_version_is_named() {
        let r = SlotRecord {
            version: RECORD_VERSION,
            generation: 4,
            manifest: SignedManifest {
                body: alloc::vec![1, 2],
                signature: alloc::vec![3; 64],
            },
            boot_image: SignedBootImage {
                body: alloc::vec![4],
                signature: alloc::vec![5; 64],
            },
            keys: alloc::vec![SealedKey {
                public: alloc::vec![6; 10],
                private: alloc::vec![7; 20],
                pcrs: alloc::vec![4, 11],
                values: alloc::vec![alloc::vec![8; 32], alloc::vec![9; 32]],
                sealed_for: 2,
            }],
            cmdline: "console=ttyS0".into(),
        };
        let bytes = r.to_bytes();
        assert_eq!(SlotRecord::from_bytes(&bytes).unwrap(), r);
        let mut old = bytes.clone();
        old[0] = 2;
        assert_eq!(
            SlotRecord::from_bytes(&old),
            Err(Error::new(ErrorKind::SlotRecordVersion { got: 2 }))
        );
        for n in 0..bytes.len() {
            assert!(SlotRecord::from_bytes(&bytes[..n]).is_err());
        }
    }
}

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

/// The slots' names, as loader entries (`ember-a…`) and `ember.slot=` name them.
pub const SLOT_NAMES: [&str; 2] = ["a", "b"];

/// A boot's command line (`/proc/cmdline`) minus what a loader adds, as a
/// slot's loader entry repeats it: GRUB's `BOOT_IMAGE=`, `initrd=` for the
/// EFI stub, the slot, and the image name iPXE puts first (`ember artifact
/// ipxe` names it `vmlinuz`, or `uki.efi` when it chains a unified kernel
/// image). The init writes entries from it and the boot server predicts
/// their PCR 12 from it: one function, so the two cannot disagree.
pub fn slot_cmdline(cmdline: &str) -> String {
    let mut kept = String::new();
    for (i, w) in cmdline.split_ascii_whitespace().enumerate() {
        let added = w.starts_with("BOOT_IMAGE=")
            || w.starts_with("initrd=")
            || w.starts_with("ember.slot=")
            || (i == 0 && (w == "vmlinuz" || w == "uki.efi"));
        if !added {
            if !kept.is_empty() {
                kept.push(' ');
            }
            kept.push_str(w);
        }
    }
    kept
}

/// The `options` line of slot `slot`'s loader entry, which systemd-boot
/// passes to the UKI and measures into PCR 12: the boot's command line
/// ([`slot_cmdline`]), then `ember.slot=`.
pub fn entry_options(cmdline: &str, slot: &str) -> String {
    let mut o = String::from(cmdline.trim());
    if !o.is_empty() {
        o.push(' ');
    }
    o.push_str("ember.slot=");
    o.push_str(slot);
    o
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

    #[test]
    fn the_slot_command_line_drops_what_loaders_add() {
        assert_eq!(
            slot_cmdline("uki.efi  console=ttyS0 initrd=\\x ember.slot=b a=1\n"),
            "console=ttyS0 a=1"
        );
        assert_eq!(slot_cmdline("BOOT_IMAGE=/v vmlinuz q"), "vmlinuz q");
        assert_eq!(slot_cmdline(""), "");
        assert_eq!(entry_options(" a=1 ", "b"), "a=1 ember.slot=b");
        assert_eq!(entry_options("", SLOT_NAMES[0]), "ember.slot=a");
    }
}

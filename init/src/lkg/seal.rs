//! The last-known-good overlay key, sealed by the TPM to the PCRs a boot
//! of the slot's UKI from the ESP reaches ([`slot_pcrs`]): PCR 11 as
//! systemd-stub measures the UKI's sections, PCR 4 as the firmware
//! measures the ESP's loader, the UKI and its kernel, PCR 12 as
//! systemd-boot measures the loader entry's options, and under Secure Boot
//! PCR 7. Both are set before
//! any Ember code runs, so neither a patched initrd nor code that skips the
//! stub can reach them; the boot server computed and signed them. Each
//! sealed object also carries PolicyNV on the TPM rollback counter
//! ([`super::epoch`]): once a newer slot is blessed and the counter moves
//! past `sealed_for`, the TPM itself refuses this slot's key.

use alloc::vec::Vec;

use ember_proto::manifest::BootImage;
use ember_tpm::{counter, CreatedKey, HashAlg, PcrSelection, PolicyDigest, PublicArea};
use sha2::{Digest, Sha256};

use super::record::SealedKey;
use crate::tpm::NodeTpm;
use crate::{Error, ErrorKind};

/// PCR 4 (UEFI boot manager code: the loader, the UKI, its kernel).
const PCR_BOOT_LOADER_CODE: u8 = 4;

/// One PolicyPCR a key is sealed to: PCR indices (ascending, sha256 bank)
/// and the value each must hold.
pub struct PcrPolicy {
    pub pcrs: Vec<u8>,
    pub values: Vec<Vec<u8>>,
}

/// PCR 7 (Secure Boot policy: SecureBoot, PK, KEK, db, dbx and the db
/// entry that verified the loader and the UKI).
const PCR_SECURE_BOOT_POLICY: u8 = 7;
/// PCR 12 (kernel parameters: the loader entry's options).
const PCR_KERNEL_PARAMETERS: u8 = 12;

/// What a cold start from the slot measures besides PCR 4 and 11.
pub struct ColdStart {
    /// PCR 7 as this boot found it, when the firmware enforces Secure
    /// Boot (the network boot the slot is written from went through the
    /// same firmware and keys; the server's policy may pin it too).
    pub pcr7: Option<Vec<u8>>,
    /// PCR 12 after the loader entry's options were measured
    /// ([`entry_pcr12`]).
    pub pcr12: [u8; 32],
}

/// PCR 12 as a cold start from a loader entry with `options` leaves it:
/// systemd-boot (252) measures the options (EV_IPL, UTF-16LE with their
/// NUL); without Secure Boot systemd-stub measures them again (and boots
/// with them), under Secure Boot it ignores them. Both seen in a real OVMF
/// boot (docs/src/secure-boot.md).
pub fn entry_pcr12(options: &str, secure_boot: bool) -> [u8; 32] {
    let mut h = Sha256::new();
    for unit in options.encode_utf16().chain([0]) {
        h.update(unit.to_le_bytes());
    }
    let event = h.finalize();
    let mut pcr = [0u8; 32];
    for _ in 0..if secure_boot { 1 } else { 2 } {
        pcr = Sha256::new()
            .chain_update(pcr)
            .chain_update(event)
            .finalize()
            .into();
    }
    pcr
}

/// What a slot's key is sealed to: PCR 4 and 11 as booting the signed boot
/// image from the ESP leaves them, one policy per PCR 4 the server allows
/// (straight from the disk, after 1, 2, … failed boot options; Secure Boot
/// off and on), with PCR 12 (the loader entry's options: editing them on
/// the disk changes it) and, under Secure Boot, PCR 7.
pub fn slot_pcrs(image: &BootImage, cold: &ColdStart) -> Vec<PcrPolicy> {
    image
        .pcr4
        .iter()
        .map(|pcr4| {
            let mut pcrs = alloc::vec![PCR_BOOT_LOADER_CODE];
            let mut values = alloc::vec![pcr4.to_vec()];
            if let Some(pcr7) = &cold.pcr7 {
                pcrs.push(PCR_SECURE_BOOT_POLICY);
                values.push(pcr7.clone());
            }
            pcrs.extend([crate::measure::BOOT_PCR, PCR_KERNEL_PARAMETERS]);
            values.extend([image.pcr11.to_vec(), cold.pcr12.to_vec()]);
            PcrPolicy { pcrs, values }
        })
        .collect()
}

fn selection(pcrs: &[u8]) -> Result<PcrSelection, Error> {
    Ok(PcrSelection::new(HashAlg::Sha256, pcrs)?)
}

/// Seals `key` once per policy, under one SRK, each also bound to the
/// rollback counter being at most `sealed_for`.
pub fn seal_key(
    tpm: &mut NodeTpm,
    key: &[u8; 32],
    policies: &[PcrPolicy],
    sealed_for: u64,
) -> Result<Vec<SealedKey>, Error> {
    let srk = tpm.create_srk()?;
    let sealed = seal_each(tpm, srk.handle, key, policies, sealed_for);
    let flushed = tpm.flush_context(srk.handle);
    let sealed = sealed?;
    flushed?;
    Ok(sealed)
}

fn seal_each(
    tpm: &mut NodeTpm,
    srk: u32,
    key: &[u8; 32],
    policies: &[PcrPolicy],
    sealed_for: u64,
) -> Result<Vec<SealedKey>, Error> {
    let mut out = Vec::with_capacity(policies.len());
    for p in policies {
        let mut composite = Sha256::new();
        for v in &p.values {
            composite.update(v);
        }
        let pcr = PolicyDigest::new().pcr(&selection(&p.pcrs)?, &composite.finalize())?;
        let policy = counter::not_past(pcr, sealed_for)?;
        let sealed = tpm.seal(srk, key, policy.as_bytes())?;
        out.push(SealedKey {
            public: sealed.public.to_bytes()?,
            private: sealed.private,
            pcrs: p.pcrs.clone(),
            values: p.values.clone(),
            sealed_for,
        });
    }
    Ok(out)
}

/// Unseals a last-known-good key with the first of `sealed` the TPM
/// releases; it refuses (policy failure) each whose PCRs differ from now:
/// another UKI, loader or boot path, or the rollback counter has passed
/// the slot (a newer slot was blessed).
pub fn unseal_key(tpm: &mut NodeTpm, sealed: &[SealedKey]) -> Result<[u8; 32], Error> {
    let srk = tpm.create_srk()?;
    let mut result = Err(Error::new(ErrorKind::Lkg("the slot holds no sealed key")));
    for s in sealed {
        result = unseal_one(tpm, srk.handle, s);
        if result.is_ok() {
            break;
        }
    }
    let flushed = tpm.flush_context(srk.handle);
    let key = result?;
    flushed?;
    Ok(key)
}

fn unseal_one(tpm: &mut NodeTpm, srk: u32, sealed: &SealedKey) -> Result<[u8; 32], Error> {
    let object = CreatedKey {
        private: sealed.private.clone(),
        public: PublicArea::from_bytes(&sealed.public)?,
    };
    let selection = selection(&sealed.pcrs)?;
    let data = tpm.unseal_not_past(srk, &object, &selection, sealed.sealed_for)?;
    data.as_slice()
        .try_into()
        .map_err(|_| Error::new(ErrorKind::TpmAnswer("unsealed key has the wrong length")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_pcr12_is_one_or_two_extends_of_the_options() {
        // A real OVMF + swtpm boot through systemd-boot 252 with the entry
        // "options console=ttyS0 panic=-1 ember.slot=a" (docs/src/secure-boot.md):
        // Secure Boot on, PCR 12 = 43051fb4…; off, 28efb5d0….
        let o = "console=ttyS0 panic=-1 ember.slot=a";
        assert_eq!(
            ember_fs::hex::hex(&entry_pcr12(o, true)),
            "43051fb4e0ce040ac93565c9dd7a112423c3ba3133a2408b72c518d489f1f783"
        );
        assert_eq!(
            ember_fs::hex::hex(&entry_pcr12(o, false)),
            "28efb5d05bf47a18cec8f6bb664d563cfcbc976209329f4731f8ddc1f7bd8973"
        );
    }
}

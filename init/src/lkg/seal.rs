//! The last-known-good overlay key, sealed by the TPM to the PCRs a boot
//! of the slot's UKI from the ESP reaches ([`slot_pcrs`]): PCR 11 as
//! systemd-stub measures the UKI's sections, and PCR 4 as the firmware
//! measures the ESP's loader, the UKI and its kernel. Both are set before
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

/// What a slot's key is sealed to: PCR 4 and 11 as booting the signed boot
/// image from the ESP leaves them, one policy per PCR 4 the server allows
/// (straight from the disk, after 1, 2, … failed boot options).
pub fn slot_pcrs(image: &BootImage) -> Vec<PcrPolicy> {
    image
        .pcr4
        .iter()
        .map(|pcr4| PcrPolicy {
            pcrs: alloc::vec![PCR_BOOT_LOADER_CODE, crate::measure::BOOT_PCR],
            values: alloc::vec![pcr4.to_vec(), image.pcr11.to_vec()],
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

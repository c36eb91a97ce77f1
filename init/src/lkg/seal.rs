//! The last-known-good overlay key, sealed by the TPM to PCR 11's
//! boot-phase value (see [`crate::measure`]): only a boot of the same
//! initrd, before the runtime starts, can unseal it; and only while the
//! TPM rollback counter has not passed the slot ([`super::epoch`]).

use ember_tpm::{counter, CreatedKey, PolicyDigest, PublicArea};
use sha2::{Digest, Sha256};

use super::record::SealedKey;
use crate::measure::{boot_pcr_selection, BOOT_PCR};
use crate::tpm::NodeTpm;
use crate::Error;

/// Seals `key` under a fresh SRK with PolicyPCR(PCR 11 == `pcr_value`)
/// ∧ PolicyNV(rollback counter ≤ `sealed_for`).
pub fn seal_key(
    tpm: &mut NodeTpm,
    key: &[u8; 32],
    pcr_value: &[u8],
    sealed_for: u64,
) -> Result<SealedKey, Error> {
    let pcr = PolicyDigest::new().pcr(&boot_pcr_selection()?, &Sha256::digest(pcr_value))?;
    let policy = counter::not_past(pcr, sealed_for)?;
    let srk = tpm.create_srk()?;
    let sealed = tpm.seal(srk.handle, key, policy.as_bytes());
    let flushed = tpm.flush_context(srk.handle);
    let sealed = sealed?;
    flushed?;
    Ok(SealedKey {
        public: sealed.public.to_bytes()?,
        private: sealed.private,
        pcr_index: BOOT_PCR,
        pcr_value: pcr_value.to_vec(),
        sealed_for,
    })
}

/// Unseals a last-known-good key; the TPM refuses when PCR 11 differs from
/// the value it was sealed to (another initrd booted: TPM_RC_POLICY_FAIL)
/// or the rollback counter has passed `sealed_for` (TPM_RC_POLICY).
pub fn unseal_key(tpm: &mut NodeTpm, sealed: &SealedKey) -> Result<[u8; 32], Error> {
    let object = CreatedKey {
        private: sealed.private.clone(),
        public: PublicArea::from_bytes(&sealed.public)?,
    };
    let srk = tpm.create_srk()?;
    let selection = boot_pcr_selection()?;
    let data = tpm.unseal_with_policy(srk.handle, &object, |t, s| {
        t.policy_pcr(s, &selection, &[])?;
        t.policy_rollback_not_past(s, sealed.sealed_for)
    });
    let flushed = tpm.flush_context(srk.handle);
    let data = data?;
    flushed?;
    data.as_slice()
        .try_into()
        .map_err(|_| Error::TpmAnswer("unsealed key has the wrong length"))
}

//! The last-known-good overlay key, sealed by the TPM to PCR 11's
//! boot-phase value (see [`crate::measure`]): only a boot of the same
//! initrd, before the runtime starts, can unseal it.

use ember_tpm::{policy_pcr_digest, CreatedKey, PublicArea};
use sha2::{Digest, Sha256};

use super::record::SealedKey;
use crate::measure::{boot_pcr_selection, BOOT_PCR};
use crate::tpm::NodeTpm;
use crate::Error;

/// Seals `key` under a fresh SRK with PolicyPCR(PCR 11 == `pcr_value`).
pub fn seal_key(tpm: &mut NodeTpm, key: &[u8; 32], pcr_value: &[u8]) -> Result<SealedKey, Error> {
    let policy = policy_pcr_digest(&boot_pcr_selection()?, &Sha256::digest(pcr_value))?;
    let srk = tpm.create_srk()?;
    let sealed = tpm.seal(srk.handle, key, &policy);
    let flushed = tpm.flush_context(srk.handle);
    let sealed = sealed?;
    flushed?;
    Ok(SealedKey {
        public: sealed.public.to_bytes()?,
        private: sealed.private,
        pcr_index: BOOT_PCR,
        pcr_value: pcr_value.to_vec(),
    })
}

/// Unseals a last-known-good key; the TPM refuses (policy failure) when PCR
/// 11 differs from the value it was sealed to: another initrd booted.
pub fn unseal_key(tpm: &mut NodeTpm, sealed: &SealedKey) -> Result<[u8; 32], Error> {
    let object = CreatedKey {
        private: sealed.private.clone(),
        public: PublicArea::from_bytes(&sealed.public)?,
    };
    let srk = tpm.create_srk()?;
    let data = tpm.unseal_with_pcr_policy(srk.handle, &object, &boot_pcr_selection()?);
    let flushed = tpm.flush_context(srk.handle);
    let data = data?;
    flushed?;
    data.as_slice()
        .try_into()
        .map_err(|_| Error::TpmAnswer("unsealed key has the wrong length"))
}

//! The init's use of the TPM outside attestation: measuring the initrd it
//! booted into PCR 11, closing the boot phase, and sealing the overlay key
//! for last-known-good to PCR 11's boot-phase value.
//!
//! PCR 11 starts at zero (neither the firmware nor systemd-boot's Type #1
//! entries extend it). The init extends it with the SHA-256 of its initrd
//! snapshot, so a different initrd gives a different value and cannot
//! unseal a key sealed for this one; then, before the runtime starts, with
//! a fixed "leaving initrd" event, so nothing the runtime runs can unseal
//! the cached key or quote as a node in its boot phase. (This is the init
//! measuring itself: with a measured-boot chain such as systemd-stub the
//! firmware-side measurement would be stronger; see the README.)

use alloc::vec::Vec;

use ember_tpm::{
    policy_pcr_digest, CreatedKey, DeviceTransport, HashAlg, PcrSelection, PublicArea, Tpm,
};
use sha2::{Digest, Sha256};

use crate::lkg::SealedKey;
use crate::Error;

pub const BOOT_PCR: u8 = 11;
const LEAVE_EVENT: &[u8] = b"ember: leaving initrd boot phase";

pub type NodeTpm = Tpm<Metered>;

/// The device transport, counting commands and the time spent in them so
/// the boot log can say what the TPM cost (`metrics: tpm_commands=...`).
pub struct Metered {
    device: DeviceTransport,
    pub commands: u32,
    pub busy_ms: u64,
}

impl ember_tpm::Transport for Metered {
    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> ember_tpm::Result<usize> {
        let start = crate::clock::now_ms();
        let result = self.device.transact(command, response);
        self.commands += 1;
        self.busy_ms += crate::clock::now_ms().saturating_sub(start);
        result
    }

    fn before_retry(&mut self, attempt: u32) {
        self.device.before_retry(attempt)
    }
}

pub fn open() -> Result<NodeTpm, Error> {
    let device = DeviceTransport::open_default()?;
    let mut tpm = Tpm::new(Metered {
        device,
        commands: 0,
        busy_ms: 0,
    });
    // The firmware normally did this; a TPM that reports INITIALIZE is fine.
    tpm.startup(true)?;
    Ok(tpm)
}

fn selection() -> Result<PcrSelection, Error> {
    Ok(PcrSelection::new(HashAlg::Sha256, &[BOOT_PCR])?)
}

fn read_boot_pcr(tpm: &mut NodeTpm) -> Result<Vec<u8>, Error> {
    let values = tpm.pcr_read(&selection()?)?;
    values
        .get(HashAlg::Sha256, BOOT_PCR)
        .map(<[u8]>::to_vec)
        .ok_or(Error::Trust("the TPM has no sha256 bank for PCR 11"))
}

/// Extends PCR 11 with the initrd's measurement; returns the new value,
/// which is what a last-known-good key is sealed to.
pub fn measure_initrd(tpm: &mut NodeTpm, snapshot_sha256: &[u8; 32]) -> Result<Vec<u8>, Error> {
    let event = Sha256::new()
        .chain_update(b"ember: initrd ")
        .chain_update(snapshot_sha256)
        .finalize();
    tpm.pcr_extend(BOOT_PCR, &[(HashAlg::Sha256, &event)])?;
    read_boot_pcr(tpm)
}

/// Ends the boot phase in PCR 11.
pub fn leave_initrd(tpm: &mut NodeTpm) -> Result<(), Error> {
    let event = Sha256::digest(LEAVE_EVENT);
    tpm.pcr_extend(BOOT_PCR, &[(HashAlg::Sha256, &event)])?;
    Ok(())
}

/// Seals `key` under a fresh SRK with PolicyPCR(PCR 11 == `pcr_value`).
pub fn seal_key(tpm: &mut NodeTpm, key: &[u8; 32], pcr_value: &[u8]) -> Result<SealedKey, Error> {
    let policy = policy_pcr_digest(&selection()?, &Sha256::digest(pcr_value))?;
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
    let data = tpm.unseal_with_pcr_policy(srk.handle, &object, &selection()?);
    let flushed = tpm.flush_context(srk.handle);
    let data = data?;
    flushed?;
    data.as_slice()
        .try_into()
        .map_err(|_| Error::Trust("unsealed key has the wrong length"))
}

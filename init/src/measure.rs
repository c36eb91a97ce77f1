//! The boot PCR: the init extends PCR 11 with the SHA-256 of its initrd
//! snapshot (`measure` phase) and, before the runtime starts, with a fixed
//! "leaving initrd" event (`seal-boot-phase`), so nothing the runtime runs
//! can unseal the cached key or quote as a node in its boot phase.
//!
//! PCR 11 starts at zero (neither the firmware nor systemd-boot's Type #1
//! entries extend it), so this is the init measuring itself: with a
//! measured-boot chain such as systemd-stub the firmware-side measurement
//! would be stronger; see the README's trust section.

use alloc::vec::Vec;

use ember_tpm::{HashAlg, PcrSelection};
use sha2::{Digest, Sha256};

use crate::tpm::NodeTpm;
use crate::Error;

pub const BOOT_PCR: u8 = 11;
const LEAVE_EVENT: &[u8] = b"ember: leaving initrd boot phase";

/// The TPM after the initrd was measured, and PCR 11's value then: what a
/// last-known-good key is sealed to.
pub struct Measured {
    pub tpm: NodeTpm,
    pub boot_pcr: Vec<u8>,
}

pub fn boot_pcr_selection() -> Result<PcrSelection, Error> {
    Ok(PcrSelection::new(HashAlg::Sha256, &[BOOT_PCR])?)
}

/// Opens the TPM and extends PCR 11 with the initrd's measurement.
pub fn initrd(snapshot_sha256: &[u8; 32]) -> Result<Measured, Error> {
    let mut tpm = crate::tpm::open()?;
    let event = Sha256::new()
        .chain_update(b"ember: initrd ")
        .chain_update(snapshot_sha256)
        .finalize();
    tpm.pcr_extend(BOOT_PCR, &[(HashAlg::Sha256, &event)])?;
    let values = tpm.pcr_read(&boot_pcr_selection()?)?;
    let boot_pcr = values
        .get(HashAlg::Sha256, BOOT_PCR)
        .map(<[u8]>::to_vec)
        .ok_or(Error::TpmAnswer("the TPM has no sha256 bank for PCR 11"))?;
    log::info!(
        "measure: initrd sha256 {} extended into PCR 11 = {}",
        ember_fs::hex::hex(snapshot_sha256),
        ember_fs::hex::hex(&boot_pcr)
    );
    Ok(Measured { tpm, boot_pcr })
}

/// Ends the boot phase in PCR 11 (nothing to do without a TPM).
pub fn leave_initrd(tpm: Option<&mut Measured>) -> Result<(), Error> {
    let Some(m) = tpm else { return Ok(()) };
    let event = Sha256::digest(LEAVE_EVENT);
    m.tpm.pcr_extend(BOOT_PCR, &[(HashAlg::Sha256, &event)])?;
    Ok(())
}

//! The boot PCR (11) and the firmware's event log.
//!
//! Booted from a unified kernel image, systemd-stub has measured the UKI's
//! sections (kernel, os-release, command line, initrd) into PCR 11 before
//! the kernel ran, and the firmware measured the UKI itself into PCR 4:
//! that chain starts in firmware, and the init adds nothing to it before
//! it quotes. Booted any other way (QEMU -kernel/-initrd, iPXE loading a
//! kernel and an initrd), PCR 11 is still zero when the init starts: the
//! init then says so and extends PCR 11 with a fixed event,
//! [`NOT_MEASURED_EVENT`] (it does not hash its initrd: the kernel keeps no
//! copy of it, and a self-measurement proves nothing a patched init could
//! not replay). That value is never firmware-rooted; a server policy made
//! by `ember policy set --uki` refuses it, and such a boot writes no
//! last-known-good slot.
//!
//! Either way, before the runtime starts the init extends a fixed "leave
//! initrd" event (`seal-boot-phase`, as systemd-pcrphase does) into PCR 11,
//! so nothing the runtime runs can quote or unseal as a node in its boot
//! phase, and the same event into PCR 15, after which nothing can move the
//! rollback counter (its write policy wants PCR 15 zero). A network boot
//! extends PCR 15 only once its new last-known-good slot is written and the
//! counter moved to it ([`close_counter`]), so the older slot is revoked
//! while the node runs, not at the next boot; until then the runtime could
//! move the counter too, which only revokes slots (a denial of
//! last-known-good), never brings one back.

use alloc::vec::Vec;

use ember_tpm::{HashAlg, PcrSelection};
use sha2::{Digest, Sha256};

use crate::tpm::NodeTpm;
use crate::{Error, ErrorKind};

pub const BOOT_PCR: u8 = 11;
const LEAVE_EVENT: &[u8] = b"ember: leaving initrd boot phase";
/// Extended into PCR 11 (its SHA-256) when nothing measured this boot
/// before the kernel: PCR 11 then differs from zero and from every value
/// systemd-stub produces.
pub const NOT_MEASURED_EVENT: &[u8] = b"ember: initrd not measured by systemd-stub";
/// The firmware's TCG event log, as the kernel exposes it (securityfs).
const EVENT_LOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";

/// How PCR 11 got its boot-phase value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Root {
    /// systemd-stub measured the UKI's sections (firmware-rooted).
    Stub,
    /// PCR 11 was zero: nothing measured this boot (not rooted); the init
    /// extended [`NOT_MEASURED_EVENT`].
    SelfMeasured,
}

/// The TPM after the `measure` phase and how PCR 11 got its value.
pub struct Measured {
    pub tpm: NodeTpm,
    pub root: Root,
    /// PCR 11 (sha256) as the init found it: systemd-stub's measurement of
    /// the UKI when `root` is [`Root::Stub`].
    pub boot_pcr: Vec<u8>,
}

pub fn boot_pcr_selection() -> Result<PcrSelection, Error> {
    Ok(PcrSelection::new(HashAlg::Sha256, &[BOOT_PCR])?)
}

fn read_boot_pcr(tpm: &mut NodeTpm) -> Result<Vec<u8>, Error> {
    let values = tpm.pcr_read(&boot_pcr_selection()?)?;
    values
        .get(HashAlg::Sha256, BOOT_PCR)
        .map(<[u8]>::to_vec)
        .ok_or(Error::new(ErrorKind::TpmAnswer(
            "the TPM has no sha256 bank for PCR 11",
        )))
}

/// Opens the TPM and reads PCR 11: non-zero means systemd-stub measured
/// this boot; zero means nothing did, and the init extends
/// [`NOT_MEASURED_EVENT`].
pub fn boot() -> Result<Measured, Error> {
    let mut tpm = crate::tpm::open()?;
    let at_start = read_boot_pcr(&mut tpm)?;
    if at_start.iter().any(|&b| b != 0) {
        crate::info!(
            "measure: PCR 11 = {} set by systemd-stub (unified kernel image): boot measured from firmware",
            ember_fs::hex::hex(&at_start)
        );
        return Ok(Measured {
            tpm,
            root: Root::Stub,
            boot_pcr: at_start,
        });
    }
    let event = Sha256::digest(NOT_MEASURED_EVENT);
    tpm.pcr_extend(BOOT_PCR, &[(HashAlg::Sha256, &event)])?;
    let boot_pcr = read_boot_pcr(&mut tpm)?;
    crate::warn!(
        "measure: PCR 11 was zero: not booted from a unified kernel image, so nothing before the kernel measured this initrd; NOT firmware-rooted (a UKI policy refuses it, no last-known-good slot is written). Extended the fixed not-measured event: PCR 11 = {}",
        ember_fs::hex::hex(&boot_pcr)
    );
    Ok(Measured {
        tpm,
        root: Root::SelfMeasured,
        boot_pcr,
    })
}

/// Ends the boot phase in PCR 11, and in PCR 15 (which the rollback
/// counter's write policy requires at zero) unless `counter` is
/// [`Counter::KeepOpen`] (nothing to do without a TPM).
pub fn leave_initrd(tpm: Option<&mut Measured>, counter: Counter) -> Result<(), Error> {
    let Some(m) = tpm else { return Ok(()) };
    let event = Sha256::digest(LEAVE_EVENT);
    m.tpm.pcr_extend(BOOT_PCR, &[(HashAlg::Sha256, &event)])?;
    if counter == Counter::Close {
        close_counter(Some(m))?;
    }
    Ok(())
}

/// Whether [`leave_initrd`] also ends the rollback counter's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Close,
    /// A network boot: the counter moves to the slot it writes after Ready.
    KeepOpen,
}

/// Extends PCR 15: from now on nothing moves the rollback counter.
pub fn close_counter(tpm: Option<&mut Measured>) -> Result<(), Error> {
    let Some(m) = tpm else { return Ok(()) };
    let event = Sha256::digest(LEAVE_EVENT);
    m.tpm.pcr_extend(
        ember_tpm::counter::BOOT_PHASE_PCR,
        &[(HashAlg::Sha256, &event)],
    )?;
    Ok(())
}

/// The firmware's event log for the quote: empty when the kernel exposes
/// none (no TPM driver log, a non-UEFI boot) or it is larger than the
/// protocol carries; the server then judges by PCR values alone, where
/// its policy allows that.
pub fn event_log() -> Vec<u8> {
    match crate::fsutil::read_file_raw(EVENT_LOG) {
        Ok(log) if log.len() <= ember_proto::msg::MAX_EVENT_LOG => {
            crate::info!("measure: firmware event log {} bytes", log.len());
            log
        }
        Ok(log) => {
            crate::warn!(
                "measure: firmware event log of {} bytes exceeds {}; not sent",
                log.len(),
                ember_proto::msg::MAX_EVENT_LOG
            );
            Vec::new()
        }
        Err(errno) => {
            crate::warn!("measure: no firmware event log at {EVENT_LOG} ({errno}); not sent");
            Vec::new()
        }
    }
}

//! The rollback floor, in two layers.
//!
//! **The TPM counter** ([`ember_tpm::counter`]) is what an attacker with
//! the disk cannot lower. It counts blessings: every slot is sealed with
//! PolicyNV(counter ≤ n) for the `n` in its record (`SealedKey::sealed_for`,
//! one more than the counter when the slot was written), and the network
//! boot that wrote it moves the counter to its `n` right after the write
//! ([`advance_to`]; the first boot phase after a cut write does it,
//! [`settle`]), so from then on the older slot's key does not unseal, in
//! the TPM itself. Only the boot phase can move it (PCR 15 is zero until
//! the slot is written or, on a cold start, "leave initrd"). Someone who boots other code
//! can increment it too: that revokes the slots (a denial of
//! last-known-good), never brings an older one back.
//!
//! **The ESP record** `ember/epoch` keeps the highest signed manifest epoch
//! booted to Ready: a cold start refuses an older manifest by name ("epoch
//! 1 is older than the blessed epoch 2"). An attacker with the disk can
//! lower it, so it is only the explanation an operator reads; the counter
//! is the protection.

use alloc::format;

use ember_tpm::counter::Found;
use ember_tpm::tpm2_rc::TpmRcBase;

use super::esp::{self, Mounted};
use super::record;
use super::write::write_atomic;
use crate::measure::Measured;
use crate::tpm::NodeTpm;
use crate::{fsutil, Error, ErrorKind};

const FILE: &str = "ember/epoch";

/// The blessed epoch: 0 when none was recorded yet. An unreadable record
/// fails closed.
pub fn read(esp: &Mounted) -> Result<u64, Error> {
    match fsutil::read_file_raw(&esp.path(FILE)) {
        Ok(bytes) => parse(&bytes).ok_or(Error::new(ErrorKind::Lkg(
            "the blessed-epoch record is unreadable",
        ))),
        Err(rustix::io::Errno::NOENT) => Ok(0),
        Err(errno) => Err(Error::new(ErrorKind::Read {
            path: esp.path(FILE).into(),
            errno,
        })),
    }
}

/// Raises the record to `epoch` (never lowers it).
pub fn raise(esp: &Mounted, epoch: u64) -> Result<(), Error> {
    if read(esp).unwrap_or(0) >= epoch {
        return Ok(());
    }
    write_atomic(&esp.path(FILE), format!("{epoch}\n").as_bytes())
}

/// Refuses a manifest older than the blessed epoch.
pub fn check(epoch: u64, blessed: u64) -> Result<(), ember_proto::Error> {
    if epoch < blessed {
        return Err(ember_proto::Error::new(
            ember_proto::ErrorKind::ManifestRollback { epoch, blessed },
        ));
    }
    Ok(())
}

/// The boot-phase step (before "leave initrd", before a slot is chosen):
/// makes sure the counter exists and has a value, and blesses the newest
/// slot on the ESP by moving the counter to the value it was sealed for.
/// Diskless nodes (no ESP) have nothing to protect and define nothing.
pub fn settle(tpm: Option<&mut Measured>) -> Result<(), Error> {
    let Some(m) = tpm else { return Ok(()) };
    let Some(dev) = esp::find()? else {
        return Ok(());
    };
    let newest = record::read_both(&Mounted::mount(&dev, false)?)
        .iter()
        .flatten()
        .flat_map(|r| r.keys.iter().map(|k| k.sealed_for))
        .max();
    let tpm = &mut m.tpm;
    let found = tpm.rollback_counter().map_err(foreign)?;
    if found == Found::Absent {
        define(tpm)?;
    }
    let mut value = match found {
        Found::Counter(v) => v,
        // Defined (now, or by an operator) but never written: start it.
        _ => {
            increment(tpm)?;
            counter_value(tpm)?
        }
    };
    // A written slot is one above the counter; an edited record claiming
    // more costs at most this one step (a denial, never a rollback).
    if newest == Some(value.saturating_add(1)) {
        increment(tpm)?;
        value = value.saturating_add(1);
    }
    crate::info!("lkg: rollback counter = {value}");
    Ok(())
}

/// Right after a network boot wrote its slot (still in the counter's
/// phase, PCR 15 zero): moves the counter to the value the slot was
/// sealed for, so the older slot stops unsealing before the node runs on.
/// A counter already there is left (a cut before this step is finished
/// by [`settle`] at the next boot).
pub fn advance_to(tpm: &mut NodeTpm, sealed_for: u64) -> Result<(), Error> {
    let now = counter_value(tpm)?;
    if now.saturating_add(1) == sealed_for {
        increment(tpm)?;
        crate::info!("lkg: rollback counter = {sealed_for}: older slots no longer unseal");
    }
    Ok(())
}

/// The counter's value (any time: reading needs no boot phase).
pub fn counter_value(tpm: &mut NodeTpm) -> Result<u64, Error> {
    match tpm.rollback_counter().map_err(foreign)? {
        Found::Counter(v) => Ok(v),
        _ => Err(Error::new(ErrorKind::Lkg(
            "the TPM rollback counter is not set up",
        ))),
    }
}

/// Refuses a slot sealed for a counter value the counter has passed
/// (the TPM would refuse to unseal it anyway; this says why).
pub fn check_counter(tpm: &mut NodeTpm, sealed_for: u64) -> Result<(), Error> {
    let now = counter_value(tpm)?;
    if sealed_for < now {
        crate::error!("lkg: the slot is sealed for rollback counter <= {sealed_for}, the TPM counter is at {now}: a newer slot was blessed since");
        return Err(Error::new(ErrorKind::Lkg(
            "rollback refused by the TPM counter",
        )));
    }
    Ok(())
}

fn define(tpm: &mut NodeTpm) -> Result<(), Error> {
    match tpm.define_rollback_counter(&[]) {
        Err(e) if e.is_tpm(TpmRcBase::BadAuth) || e.is_tpm(TpmRcBase::AuthFail) => Err(Error::new(ErrorKind::Lkg(
            "the TPM owner hierarchy has a password, so the rollback counter cannot be defined: clear it (tpm2_changeauth -c o -p OLD) or define 0x01800e70 as the book's \"Last-known-good and cold starts\" shows",
        ))),
        r => Ok(r?),
    }
}

fn increment(tpm: &mut NodeTpm) -> Result<(), Error> {
    tpm.increment_rollback_counter().inspect_err(|e| {
        if e.is_tpm(TpmRcBase::PolicyFail) {
            crate::error!("lkg: PCR 15 is not zero at boot (Ember reserves it for the boot phase), so the rollback counter cannot move");
        }
    })?;
    Ok(())
}

fn foreign(e: ember_tpm::Error) -> Error {
    if let ember_tpm::ErrorKind::ForeignNvIndex { .. } = e.kind() {
        crate::error!("lkg: {e}; someone defined it before Ember: remove it (tpm2_nvundefine 0x01800e70 -C o) to re-enable last-known-good");
    }
    Error::from(e)
}

fn parse(bytes: &[u8]) -> Option<u64> {
    let text = core::str::from_utf8(bytes).ok()?;
    text.trim_end_matches('\n').parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_epoch_is_refused_an_equal_or_newer_one_is_not() {
        assert_eq!(
            check(4, 5),
            Err(ember_proto::Error::new(
                ember_proto::ErrorKind::ManifestRollback {
                    epoch: 4,
                    blessed: 5
                }
            ))
        );
        assert_eq!(check(5, 5), Ok(()));
        assert_eq!(check(6, 5), Ok(()));
        assert_eq!(check(1, 0), Ok(()));
    }

    #[test]
    fn record_parses_strictly() {
        assert_eq!(parse(b"17\n"), Some(17));
        assert_eq!(parse(b"17"), Some(17));
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"-1\n"), None);
        assert_eq!(parse(b"1 7\n"), None);
        assert_eq!(parse(&[0xff, 0x31]), None);
    }
}

//! Last-known-good on the ESP: two slots (A/B), each the unified kernel
//! image (UKI) a network boot came from and its overlay, chosen by
//! systemd-boot from Type #1 loader entries (`efi`) with boot counting.
//!
//! ```text
//! EFI/BOOT/BOOTX64.EFI            systemd-boot (installed with the disk)
//! loader/loader.conf              timeout 0
//! loader/entries/ember-a+3.conf   new slot, 3 tries left (systemd-boot counts down)
//! loader/entries/ember-b.conf     blessed: booted to Ready at least once
//! ember/a/ember.efi               the UKI this node booted, fetched by its signed SHA-256
//! ember/a/overlay.sealed          the sealed overlay blob exactly as downloaded
//! ember/a/slot.rec                postcard SlotRecord: generation, signed manifest,
//!                                 signed boot image record, data key sealed to PCR 4, 11,
//!                                 12 (the entry's options) and 7 under Secure Boot
//! ember/epoch                     the highest manifest epoch booted to Ready
//! (TPM NV 0x01800e70)             the rollback counter each slot's key is sealed against
//! ```
//!
//! Only a boot measured by systemd-stub writes a slot: its key is sealed
//! to the PCR 4 and PCR 11 the boot server predicted and signed for a boot
//! of that UKI from the ESP (firmware → systemd-boot → the UKI → its
//! kernel), values that no code after the firmware can set, to the PCR 12
//! systemd-boot (and without Secure Boot systemd-stub) measures from the
//! slot's loader entry options, so editing them on the disk makes the key
//! unusable, and under Secure Boot to this boot's PCR 7 (the firmware's
//! keys, Secure Boot on).
//!
//! A cold start trusts nothing on the ESP: the slot's manifest must verify
//! with the initrd's key, its boot image record too and name this TPM's EK
//! ([`target`]: made for this node), its epoch must not be below `ember/epoch`, the
//! TPM rollback counter must not have passed it (the TPM enforces this in
//! the key's policy), the TPM must unseal the data key (the PCRs hold what
//! the firmware and the stub measured), the key must match the manifest's
//! commitment, and the blob must open under it.
//!
//! The rooms: [`slots`] decides (pure functions), [`record`] is the slot's
//! record, [`write`](mod@write) puts a slot on the ESP power-cut safely, [`seal`] is
//! the TPM-sealed key, [`epoch`] the rollback floor, [`esp`] finds and
//! mounts the partition. This file
//! is the two operations the boot sequence calls: [`restore`] on a cold
//! start and [`persist`] after Ready.

pub mod epoch;
pub mod esp;
pub mod loader;
pub mod record;
pub mod seal;
pub mod slots;
pub mod target;
pub mod write;

use alloc::format;
use alloc::string::String;

use ember_fs::hex::hex;
use ember_proto::manifest::Envelope;
use ember_tpm::{HashAlg, PcrSelection};
use rustix::fs::{Mode, OFlags};

use crate::fsutil::{self, Stop};
use crate::measure::{Measured, Root};
use crate::session::{Fetched, Session};
use crate::{overlay, Error, ErrorKind};
use record::SealedKey;
use slots::Slot;

/// What a cold start restored.
#[derive(Debug, Clone, Copy)]
pub struct Restored {
    pub slot: Slot,
    /// The restored manifest's epoch (blessed once the node is Ready).
    pub epoch: u64,
}

/// Cold start: the overlay of the slot systemd-boot booted ([`loader`]),
/// else of the newest slot:
/// its manifest verified and checked against the blessed epoch, its data
/// key unsealed by the TPM and checked against the manifest, opened into `/`.
pub fn restore(tpm: Option<&mut Measured>, booted_from: Option<Slot>) -> Result<Restored, Error> {
    let dev = esp::find()?.ok_or(Error::new(ErrorKind::Missing(
        "boot server and no EFI System Partition with a last-known-good",
    )))?;
    let esp = esp::Mounted::mount(&dev, false)?;
    let records = record::read_both(&esp);
    let slot = slots::for_restore(record::generations(&records), booted_from)
        .ok_or(Error::new(ErrorKind::Lkg("the ESP holds no slot")))?;
    let Some(record) = &records[slot as usize] else {
        return Err(Error::new(ErrorKind::Lkg("the ESP holds no slot")));
    };
    let trusted = overlay::trusted_key()?;
    let manifest = trusted
        .verify(&record.manifest)
        .inspect_err(|e| crate::error!("lkg: slot {}: {e}", slot.name()))?;
    // The record the server signed beside this manifest for one node.
    let image = trusted
        .verify_boot_image(&record.boot_image, &record.manifest)
        .inspect_err(|e| crate::error!("lkg: slot {}: boot image record: {e}", slot.name()))?;
    crate::info!(
        "lkg: slot {} generation {} overlay {} epoch {} on {}",
        slot.name(),
        record.generation,
        manifest.version_id,
        manifest.epoch,
        dev.partition
    );
    let blessed = epoch::read(&esp)?;
    epoch::check(manifest.epoch, blessed)
        .inspect_err(|e| crate::error!("lkg: slot {}: {e}", slot.name()))?;
    let tpm = tpm.ok_or(Error::new(ErrorKind::Missing(
        "TPM to unseal the last-known-good key",
    )))?;
    target::check(&image, &target::this_ek(&mut tpm.tpm)?)
        .inspect_err(|_| crate::error!("lkg: slot {}: refused", slot.name()))?;
    if let Some(k) = record.keys.first() {
        epoch::check_counter(&mut tpm.tpm, k.sealed_for)
            .inspect_err(|e| crate::error!("lkg: slot {}: {e}", slot.name()))?;
    }
    let key = seal::unseal_key(&mut tpm.tpm, &record.keys).inspect_err(|e| {
        crate::error!(
            "lkg: the TPM refused to unseal the overlay key ({e}): the boot chain (PCR 4, 7, 11, 12) differs from what slot {} was sealed to, or the rollback counter moved past it",
            slot.name()
        );
        log_pcrs(tpm, &record.keys);
    })?;
    let envelope = Envelope::new(manifest, key)?;
    let path = esp.path(&format!("{}/overlay.sealed", slot.dir()));
    let read_err = |errno| {
        Error::new(ErrorKind::Read {
            path: path.as_str().into(),
            errno,
        })
    };
    let fd = rustix::fs::open(
        path.as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(read_err)?;
    let mut stages = overlay::Stages::default();
    overlay::open_into_root(&envelope, &mut stages, |open| {
        let mut buf = alloc::vec![0u8; 64 * 1024];
        fsutil::read_each(&fd, &mut buf, open).map_err(|e| match e {
            Stop::Read(errno) => read_err(errno),
            Stop::Each(e) => Error::from(e),
        })
    })?;
    stages.log();
    let m = &envelope.manifest;
    crate::info!(
        "lkg: overlay {} restored from slot {}",
        m.version_id,
        slot.name()
    );
    Ok(Restored {
        slot,
        epoch: m.epoch,
    })
}

/// After Ready: a network boot becomes the new last-known-good (written to
/// the slot [`slots::for_write`] picks); a last-known-good boot blesses its
/// slot. Without an ESP (diskless) nothing is persisted.
pub fn persist(tpm: Option<&mut Measured>, from: Persist<'_>) -> Result<(), Error> {
    let Some(dev) = esp::find()? else {
        crate::info!("lkg: no EFI System Partition: diskless mode, nothing persisted");
        return Ok(());
    };
    // The ESP is unmounted (and so flushed) before a result is logged.
    let esp = esp::Mounted::mount(&dev, true)?;
    let (session, fetched) = match from {
        Persist::Bless(restored) => {
            let slot = restored.slot;
            let blessed = write::bless(&esp, slot)?;
            epoch::raise(&esp, restored.epoch)?;
            drop(esp);
            if blessed {
                crate::info!("lkg: slot {} blessed (booted to Ready)", slot.name());
            }
            return Ok(());
        }
        Persist::Write(session, fetched) => (session, fetched),
    };
    let tpm = tpm.ok_or(Error::new(ErrorKind::Missing(
        "TPM to seal the overlay key",
    )))?;
    if tpm.root != Root::Stub {
        crate::warn!("lkg: not booted from a UKI measured by systemd-stub: nothing firmware-rooted to seal to; no slot written");
        return Ok(());
    }
    let Some(record) = &fetched.boot_image else {
        crate::warn!(
            "lkg: the boot server knows no UKI for this boot (its log says why); no slot written"
        );
        return Ok(());
    };
    let signed_image = &record.signed;
    // Verified before the overlay was extracted: nothing the runtime or
    // the overlay wrote since is read as a trust file.
    let image = record.verified.as_ref().map_err(|e| {
        crate::error!("lkg: boot image record: {e}");
        Error::from(e.clone())
    })?;
    if image.pcr11[..] != tpm.boot_pcr[..] {
        crate::error!(
            "lkg: the boot image record's PCR 11 {} is not this boot's {}",
            hex(&image.pcr11),
            hex(&tpm.boot_pcr)
        );
        return Err(Error::new(ErrorKind::Lkg(
            "the boot image record is for another UKI",
        )));
    }
    // The slot first: its loader entry's options (PCR 12) are sealed to.
    let (slot, generation) = slots::for_write(record::generations(&record::read_both(&esp)));
    let cmdline = slot_cmdline()?;
    let cold = cold_start(tpm, &write::entry_options(&cmdline, slot))?;
    // Sealed for the next blessing: the first boot phase after this write
    // moves the counter there, and the older slot stops unsealing.
    let sealed_for = epoch::counter_value(&mut tpm.tpm)?.saturating_add(1);
    let keys = seal::seal_key(
        &mut tpm.tpm,
        fetched.envelope.data_key(),
        &seal::slot_pcrs(image, &cold),
        sealed_for,
    )?;
    let m = &fetched.envelope.manifest;
    let art = write::Artifacts {
        manifest: fetched.signed.clone(),
        boot_image: signed_image.clone(),
        version_id: m.version_id,
        keys,
        cmdline,
    };
    let mut fetch = |each: &mut dyn FnMut(&[u8]) -> Result<(), Error>| {
        let mut failed = None;
        let got = session.fetch_boot_image(&image.sha256, &mut |piece| {
            each(piece).map_err(|e| {
                failed = Some(e);
                ember_proto::Error::new(ember_proto::ErrorKind::SealedUnusable)
            })
        });
        match failed {
            Some(e) => Err(e),
            None => got,
        }
    };
    let uki = write::Image {
        what: "boot image",
        sha256: &image.sha256,
        size: image.size,
        fetch: &mut fetch,
    };
    let mut fetch_blob = |each: &mut dyn FnMut(&[u8]) -> Result<(), Error>| {
        let mut failed = None;
        let got = session.fetch_sealed_blob(&fetched.envelope, &mut |piece| {
            each(piece).map_err(|e| {
                failed = Some(e);
                ember_proto::Error::new(ember_proto::ErrorKind::SealedUnusable)
            })
        });
        match failed {
            Some(e) => Err(e),
            None => got,
        }
    };
    let overlay = write::Image {
        what: "sealed overlay",
        sha256: &m.blob_sha256,
        size: m.blob_size,
        fetch: &mut fetch_blob,
    };
    crate::info!("lkg: writing slot {} generation {generation}", slot.name());
    write::slot(&esp, slot, generation, uki, overlay, &art)?;
    // Only once the slot is complete: a cut write leaves the older slot
    // bootable, and its epoch must still be accepted.
    epoch::raise(&esp, m.epoch)?;
    drop(esp);
    // And the TPM revokes the older slot now, while this boot runs, not at
    // the next boot: deleting this slot's record cannot bring it back.
    epoch::advance_to(&mut tpm.tpm, sealed_for)?;
    crate::info!(
        "lkg: wrote slot {} generation {} (overlay {} epoch {}) to {}",
        slot.name(),
        generation,
        m.version_id,
        m.epoch,
        dev.partition
    );
    Ok(())
}

/// What [`persist`] does with this boot's overlay.
pub enum Persist<'a> {
    /// This boot came from the network: write it as a new slot, its UKI
    /// fetched from the session's server.
    Write(&'a Session, &'a Fetched),
    /// This boot came from a slot and reached Ready: bless it.
    Bless(Restored),
}

/// After a refused unseal: each PCR the slot's keys are sealed to, now,
/// and whether any key was sealed to that value, for the operator to see
/// what moved (the loader, the UKI, the boot path, the Secure Boot keys,
/// the loader entry's options).
fn log_pcrs(tpm: &mut Measured, keys: &[SealedKey]) {
    let Some(first) = keys.first() else { return };
    let Ok(sel) = PcrSelection::new(HashAlg::Sha256, &first.pcrs) else {
        return;
    };
    let Ok(now) = tpm.tpm.pcr_read(&sel) else {
        return;
    };
    for (i, &pcr) in first.pcrs.iter().enumerate() {
        let Some(v) = now.get(HashAlg::Sha256, pcr) else {
            continue;
        };
        if !keys
            .iter()
            .any(|k| k.values.get(i).is_some_and(|s| s[..] == v[..]))
        {
            crate::error!(
                "lkg: PCR {pcr} is {}: not what the slot was sealed to",
                hex(v)
            );
        }
    }
}

/// What a cold start from a slot whose entry has `options` measures
/// besides PCR 4 and 11: PCR 12 of those options, and under Secure Boot
/// this boot's PCR 7. Secure Boot is told from the kernel's lockdown
/// (Debian's kernel locks itself down, integrity, when the firmware
/// enforces Secure Boot, and nothing lifts it): a lockdown forced from a
/// measured command line without Secure Boot only makes the slot never
/// unseal.
fn cold_start(tpm: &mut Measured, options: &str) -> Result<seal::ColdStart, Error> {
    let lockdown = fsutil::read_text("/sys/kernel/security/lockdown").unwrap_or_default();
    let secure_boot = !lockdown.is_empty() && !lockdown.starts_with("[none]");
    let pcr7 = match secure_boot {
        true => {
            let now = tpm
                .tpm
                .pcr_read(&PcrSelection::new(HashAlg::Sha256, &[7])?)?;
            now.get(HashAlg::Sha256, 7).map(<[u8]>::to_vec)
        }
        false => None,
    };
    Ok(seal::ColdStart {
        pcr7,
        pcr12: seal::entry_pcr12(options, secure_boot),
    })
}

/// This boot's command line minus what the loader added
/// ([`ember_proto::slot::slot_cmdline`]), for the slot's loader entry.
fn slot_cmdline() -> Result<String, Error> {
    let text = fsutil::read_text("/proc/cmdline")?;
    Ok(ember_proto::slot::slot_cmdline(&text))
}

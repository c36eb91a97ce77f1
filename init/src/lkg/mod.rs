//! Last-known-good on the ESP: two slots (A/B), each a complete bootable
//! set, chosen by systemd-boot from Type #1 loader entries with boot
//! counting.
//!
//! ```text
//! EFI/BOOT/BOOTX64.EFI            systemd-boot (installed with the disk)
//! loader/loader.conf              timeout 0
//! loader/entries/ember-a+3.conf   new slot, 3 tries left (systemd-boot counts down)
//! loader/entries/ember-b.conf     blessed: booted to Ready at least once
//! ember/a/vmlinuz                 the running kernel (carried in the initrd at /boot/vmlinuz)
//! ember/a/initrd.cpio             the running initrd (the init's snapshot of it)
//! ember/a/overlay.sealed          the sealed overlay blob exactly as downloaded
//! ember/a/slot.rec                postcard SlotRecord: generation, signed manifest, TPM-sealed data key
//! ember/epoch                     the highest manifest epoch booted to Ready
//! (TPM NV 0x01800e70)             the rollback counter each slot's key is sealed against
//! ```
//!
//! A cold start trusts nothing on the ESP: the slot's manifest must verify
//! with the initrd's key, its epoch must not be below `ember/epoch`, the
//! TPM rollback counter must not have passed it (the TPM enforces this in
//! the key's policy), the unsealed data key must match the manifest's
//! commitment, and the blob must open under it.
//!
//! The rooms: [`slots`] decides (pure functions), [`record`] is the slot's
//! record, [`write`] puts a slot on the ESP power-cut safely, [`seal`] is
//! the TPM-sealed key, [`epoch`] the rollback floor, [`esp`] finds and
//! mounts the partition. This file
//! is the two operations the boot sequence calls: [`restore`] on a cold
//! start and [`persist`] after Ready.

pub mod epoch;
pub mod esp;
pub mod record;
pub mod seal;
pub mod slots;
pub mod write;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use ember_proto::manifest::Envelope;
use rustix::fs::{Mode, OFlags};

use crate::fsutil::{self, Stop};
use crate::measure::{Measured, Root};
use crate::session::{Fetched, SEALED_COPY};
use crate::{overlay, rootfs, Error};
use slots::Slot;

/// The kernel carried in the initrd (`ember initrd build --kernel`).
const KERNEL_IN_INITRD: &str = "/boot/vmlinuz";

/// What a cold start restored.
#[derive(Debug, Clone, Copy)]
pub struct Restored {
    pub slot: Slot,
    /// The restored manifest's epoch (blessed once the node is Ready).
    pub epoch: u64,
}

/// Cold start: the newest slot's overlay (or the one the boot entry named):
/// its manifest verified and checked against the blessed epoch, its data
/// key unsealed by the TPM and checked against the manifest, opened into `/`.
pub fn restore(tpm: Option<&mut Measured>, booted_from: Option<Slot>) -> Result<Restored, Error> {
    let dev = esp::find()?.ok_or(Error::Missing(
        "boot server and no EFI System Partition with a last-known-good",
    ))?;
    let esp = esp::Mounted::mount(&dev, false)?;
    let records = record::read_both(&esp);
    let slot = slots::for_restore(record::generations(&records), booted_from)
        .ok_or(Error::Lkg("the ESP holds no slot"))?;
    let Some(record) = &records[slot as usize] else {
        return Err(Error::Lkg("the ESP holds no slot"));
    };
    let manifest = overlay::trusted_key()?
        .verify(&record.manifest)
        .inspect_err(|e| log::error!("lkg: slot {}: {e}", slot.name()))?;
    log::info!(
        "lkg: slot {} generation {} overlay {} epoch {} on {}",
        slot.name(),
        record.generation,
        manifest.version_id,
        manifest.epoch,
        dev.partition
    );
    let blessed = epoch::read(&esp)?;
    epoch::check(manifest.epoch, blessed)
        .inspect_err(|e| log::error!("lkg: slot {}: {e}", slot.name()))?;
    let tpm = tpm.ok_or(Error::Missing("TPM to unseal the last-known-good key"))?;
    epoch::check_counter(&mut tpm.tpm, record.key.sealed_for)
        .inspect_err(|e| log::error!("lkg: slot {}: {e}", slot.name()))?;
    let key = seal::unseal_key(&mut tpm.tpm, &record.key).inspect_err(|_| {
        log::error!("lkg: the TPM refused to unseal the overlay key: the boot chain (PCR 11) changed since it was sealed, or the rollback counter moved past it");
    })?;
    let envelope = Envelope::new(manifest, key)?;
    let path = esp.path(&format!("{}/overlay.sealed", slot.dir()));
    let read_err = |errno| Error::Read {
        path: path.clone(),
        errno,
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
            Stop::Each(e) => Error::Attest(e),
        })
    })?;
    stages.log();
    let m = &envelope.manifest;
    log::info!(
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
        log::info!("lkg: no EFI System Partition: diskless mode, nothing persisted");
        return Ok(());
    };
    // The ESP is unmounted (and so flushed) before a result is logged.
    let esp = esp::Mounted::mount(&dev, true)?;
    let fetched = match from {
        Persist::Bless(restored) => {
            let slot = restored.slot;
            let blessed = write::bless(&esp, slot)?;
            epoch::raise(&esp, restored.epoch)?;
            drop(esp);
            if blessed {
                log::info!("lkg: slot {} blessed (booted to Ready)", slot.name());
            }
            return Ok(());
        }
        Persist::Write(fetched) => fetched,
    };
    let tpm = tpm.ok_or(Error::Missing("TPM to seal the overlay key"))?;
    // The slot boots kernel + initrd (no stub), so its PCR 11 is the
    // initrd's self-measured value, whatever this boot's root was.
    if tpm.root == Root::Stub {
        log::warn!("lkg: the slot is kernel + initrd: its key is sealed to the self-measured PCR 11 of this initrd, not to the UKI's firmware-rooted measurements");
    }
    // Sealed for the next blessing: the first boot phase after this write
    // moves the counter there, and the older slot stops unsealing.
    let sealed_for = epoch::counter_value(&mut tpm.tpm)?.saturating_add(1);
    let sealed = seal::seal_key(
        &mut tpm.tpm,
        fetched.envelope.data_key(),
        &tpm.slot_pcr,
        sealed_for,
    )?;
    let m = &fetched.envelope.manifest;
    let art = write::Artifacts {
        kernel: KERNEL_IN_INITRD,
        initrd: rootfs::INITRD_SNAPSHOT,
        sealed_overlay: SEALED_COPY,
        manifest: fetched.signed.clone(),
        version_id: m.version_id,
        key: sealed,
        cmdline: slot_cmdline()?,
    };
    let (slot, generation) = slots::for_write(record::generations(&record::read_both(&esp)));
    log::info!("lkg: writing slot {} generation {generation}", slot.name());
    write::slot(&esp, slot, generation, &art)?;
    // Only once the slot is complete: a cut write leaves the older slot
    // bootable, and its epoch must still be accepted.
    epoch::raise(&esp, m.epoch)?;
    drop(esp);
    log::info!(
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
    /// This boot came from the network: write it as a new slot.
    Write(&'a Fetched),
    /// This boot came from a slot and reached Ready: bless it.
    Bless(Restored),
}

/// This boot's command line, minus what the loader adds, for the slot's
/// loader entry: GRUB's `BOOT_IMAGE=`, `initrd=` for the EFI stub, our
/// slot, and the image name iPXE puts first (`ember artifact ipxe` names
/// it `vmlinuz`, or `uki.efi` when it chains a unified kernel image).
fn slot_cmdline() -> Result<String, Error> {
    let text = fsutil::read_text("/proc/cmdline")?;
    let kept: Vec<&str> = text
        .split_ascii_whitespace()
        .enumerate()
        .filter(|&(i, w)| {
            !w.starts_with("BOOT_IMAGE=")
                && !w.starts_with("initrd=")
                && !w.starts_with("ember.slot=")
                && !(i == 0 && (w == "vmlinuz" || w == "uki.efi"))
        })
        .map(|(_, w)| w)
        .collect();
    Ok(kept.join(" "))
}

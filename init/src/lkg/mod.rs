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
//! ember/a/overlay.sealed          the sealed overlay exactly as downloaded
//! ember/a/slot.rec                postcard SlotRecord: generation, overlay, TPM-sealed key
//! ```
//!
//! The rooms: [`slots`] decides (pure functions), [`record`] is the slot's
//! record, [`write`] puts a slot on the ESP power-cut safely, [`seal`] is
//! the TPM-sealed key, [`esp`] finds and mounts the partition. This file
//! is the two operations the boot sequence calls: [`restore`] on a cold
//! start and [`persist`] after Ready.

pub mod esp;
pub mod record;
pub mod seal;
pub mod slots;
pub mod write;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use ember_proto::sealed::Expected;
use rustix::fs::{Mode, OFlags};

use crate::fsutil::{self, Stop};
use crate::measure::{Measured, Root};
use crate::session::{Fetched, SEALED_COPY};
use crate::{overlay, rootfs, Error};
use slots::Slot;

/// The kernel carried in the initrd (`ember initrd build --kernel`).
const KERNEL_IN_INITRD: &str = "/boot/vmlinuz";

/// Cold start: the newest slot's overlay (or the one the boot entry named),
/// its key unsealed by the TPM, opened into `/`.
pub fn restore(tpm: Option<&mut Measured>, booted_from: Option<Slot>) -> Result<Slot, Error> {
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
    log::info!(
        "lkg: slot {} generation {} overlay {} on {}",
        slot.name(),
        record.generation,
        record.overlay.id,
        dev.partition
    );
    let tpm = tpm.ok_or(Error::Missing("TPM to unseal the last-known-good key"))?;
    let key = seal::unseal_key(&mut tpm.tpm, &record.key).inspect_err(|_| {
        log::error!("lkg: the TPM refused to unseal the overlay key: the boot chain (PCR 11) changed since it was sealed");
    })?;
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
    let expected = Expected {
        sha256: record.overlay.sha256,
        size: record.overlay.size,
    };
    let mut stages = overlay::Stages::default();
    overlay::open_into_root(key, expected, &mut stages, |open| {
        let mut buf = alloc::vec![0u8; 64 * 1024];
        fsutil::read_each(&fd, &mut buf, open).map_err(|e| match e {
            Stop::Read(errno) => read_err(errno),
            Stop::Each(e) => Error::Attest(e),
        })
    })?;
    stages.log();
    log::info!(
        "lkg: overlay {} restored from slot {}",
        record.overlay.id,
        slot.name()
    );
    Ok(slot)
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
        Persist::Bless(slot) => {
            let blessed = write::bless(&esp, slot)?;
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
    let sealed = seal::seal_key(&mut tpm.tpm, &fetched.key, &tpm.slot_pcr)?;
    let art = write::Artifacts {
        kernel: KERNEL_IN_INITRD,
        initrd: rootfs::INITRD_SNAPSHOT,
        sealed_overlay: SEALED_COPY,
        overlay: record::OverlayInfo {
            id: format!("{}", fetched.meta.version_id),
            sha256: fetched.meta.sha256,
            size: fetched.meta.size,
        },
        key: sealed,
        cmdline: slot_cmdline()?,
    };
    let (slot, generation) = slots::for_write(record::generations(&record::read_both(&esp)));
    log::info!("lkg: writing slot {} generation {generation}", slot.name());
    write::slot(&esp, slot, generation, &art)?;
    drop(esp);
    log::info!(
        "lkg: wrote slot {} generation {} (overlay {}) to {}",
        slot.name(),
        generation,
        fetched.meta.version_id,
        dev.partition
    );
    Ok(())
}

/// What [`persist`] does with this boot's overlay.
pub enum Persist<'a> {
    /// This boot came from the network: write it as a new slot.
    Write(&'a Fetched),
    /// This boot came from a slot and reached Ready: bless it.
    Bless(Slot),
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

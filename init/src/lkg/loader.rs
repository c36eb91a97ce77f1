//! Which slot this cold start came from, as systemd-boot recorded it.
//!
//! Under Secure Boot systemd-stub ignores the loader entry's options (the
//! UKI's own `.cmdline` wins), so `ember.slot=` never reaches
//! /proc/cmdline. systemd-boot still says which entry it booted: it sets
//! `LoaderEntrySelected` (volatile, before it starts the UKI) and measures
//! that entry's options, `ember.slot=` included, into PCR 12. The init
//! reads the variable through efivarfs and restores that entry's slot;
//! the slot's key is sealed to PCR 12 of exactly its own entry's options
//! (`seal::entry_pcr12`), so a variable naming another slot than the one
//! booted only makes the unseal fail: the choice is checked by what was
//! measured, never taken from unmeasured text.

use ember_fs::efivar::{LoaderEntry, LOADER_ENTRY_SELECTED};
use rustix::fs::{mkdir, Mode};
use rustix::io::Errno;
use rustix::mount::{mount, MountFlags};

use super::slots::Slot;
use crate::{fsutil, mounts, Error, ErrorKind};

const EFIVARS: &str = "/sys/firmware/efi/efivars";

/// The slot to restore: the one systemd-boot booted (`LoaderEntrySelected`)
/// when the firmware is UEFI and a systemd-boot set it, else the
/// `ember.slot=` of the command line (`cmdline`, measured by systemd-stub
/// into PCR 12 when it used the entry's options), else none (the newest).
pub fn booted_slot(cmdline: Option<Slot>) -> Result<Option<Slot>, Error> {
    let Some(entry) = selected_entry()? else {
        return Ok(cmdline);
    };
    let Some(slot) = entry
        .base_name()
        .strip_prefix("ember-")
        .and_then(Slot::parse)
    else {
        crate::error!(
            "lkg: systemd-boot booted the loader entry {} (LoaderEntrySelected), which is no Ember slot",
            entry.id
        );
        return Err(Error::new(ErrorKind::Lkg(
            "systemd-boot booted a loader entry that is no Ember slot",
        )));
    };
    crate::info!(
        "lkg: systemd-boot booted loader entry {} (LoaderEntrySelected): slot {}",
        entry.id,
        slot.name()
    );
    if let Some(c) = cmdline.filter(|c| *c != slot) {
        crate::warn!(
            "lkg: the command line names slot {}, systemd-boot booted slot {}: restoring slot {}",
            c.name(),
            slot.name(),
            slot.name()
        );
    }
    Ok(Some(slot))
}

/// `LoaderEntrySelected`, or none when there is no UEFI, no efivarfs or
/// no such variable (the firmware started the UKI itself). A variable
/// that is not in the shape systemd-boot writes fails closed.
fn selected_entry() -> Result<Option<LoaderEntry>, Error> {
    if !fsutil::exists("/sys/firmware/efi") {
        return Ok(None);
    }
    if !mount_efivarfs() {
        return Ok(None);
    }
    let bytes = match fsutil::read_file_raw(LOADER_ENTRY_SELECTED) {
        Ok(b) => b,
        Err(Errno::NOENT) => {
            crate::info!("lkg: no LoaderEntrySelected: not started by systemd-boot");
            return Ok(None);
        }
        Err(errno) => {
            return Err(Error::new(ErrorKind::Read {
                path: LOADER_ENTRY_SELECTED.into(),
                errno,
            }))
        }
    };
    LoaderEntry::parse(&bytes).map(Some).map_err(|e| {
        crate::error!("lkg: LoaderEntrySelected refused: {e}");
        Error::new(ErrorKind::Lkg(
            "LoaderEntrySelected is not as systemd-boot writes it",
        ))
    })
}

/// Mounts efivarfs read-only where the kernel shows EFI variables (the
/// `efivarfs` module is loaded from modules.list; the early mounts ran
/// before it). False, logged, when that is not possible.
fn mount_efivarfs() -> bool {
    let table = fsutil::read_text("/proc/self/mounts").unwrap_or_default();
    if mounts::is_mount_point(&table, EFIVARS) {
        return true;
    }
    match mkdir(EFIVARS, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(errno) => {
            crate::warn!("lkg: cannot create {EFIVARS}: {errno}");
            return false;
        }
    }
    let flags = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    match mount("efivarfs", EFIVARS, "efivarfs", flags, None) {
        Ok(()) | Err(Errno::BUSY) => true,
        Err(errno) => {
            crate::warn!(
                "lkg: cannot mount efivarfs ({errno}; is the efivarfs module in the initrd?): the booted slot is taken from the command line"
            );
            false
        }
    }
}

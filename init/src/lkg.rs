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
//! A write goes to the slot with the lower generation: its loader entry is
//! removed first (a half-written slot is never bootable), its files are
//! written to temporary names, fsynced and renamed, and only then is a new
//! entry created. The other slot, the current last-known-good, is not
//! touched, so a power cut at any point leaves it bootable. Entries carry
//! `version <generation>`, so systemd-boot prefers the newest; a new entry
//! that fails to reach Ready three times is marked bad by systemd-boot's
//! counting and the older slot boots again.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use crate::esp::Mounted;
use crate::{fsutil, Error};

pub const RECORD_VERSION: u32 = 1;
pub const SLOTS: [Slot; 2] = [Slot::A, Slot::B];
/// Tries systemd-boot gives a new slot before falling back.
pub const TRIES: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }

    fn dir(self) -> String {
        format!("ember/{}", self.name())
    }
}

/// The overlay a slot holds, as the boot server described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayInfo {
    pub id: String,
    pub sha256: [u8; 32],
    pub size: u64,
}

/// The overlay key sealed by the TPM to the boot-phase PCR value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedKey {
    /// TPM2B_PUBLIC and TPM2B_PRIVATE of the sealed data object.
    pub public: Vec<u8>,
    pub private: Vec<u8>,
    /// The PCR (sha256 bank) and value the policy requires.
    pub pcr_index: u8,
    pub pcr_value: Vec<u8>,
}

/// `slot.rec`: what a slot holds. Versioned so a newer init can refuse an
/// older format clearly instead of misreading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    pub version: u32,
    pub generation: u64,
    pub overlay: OverlayInfo,
    pub key: SealedKey,
    /// The kernel command line the slot boots with.
    pub cmdline: String,
}

/// Everything a slot is written from.
pub struct Artifacts<'a> {
    pub kernel: &'a str,
    pub initrd: &'a str,
    pub sealed_overlay: &'a str,
    pub overlay: OverlayInfo,
    pub key: SealedKey,
    pub cmdline: String,
}

fn io(path: &str) -> impl Fn(Errno) -> Error + '_ {
    move |errno| Error::Write {
        path: String::from(path),
        errno,
    }
}

/// Reads a slot's record; `None` when it is missing or unreadable.
pub fn read_record(esp: &Mounted, slot: Slot) -> Option<SlotRecord> {
    let bytes = fsutil::read_file_raw(&esp.path(&format!("{}/slot.rec", slot.dir()))).ok()?;
    match postcard::from_bytes::<SlotRecord>(&bytes) {
        Ok(r) if r.version == RECORD_VERSION => Some(r),
        Ok(r) => {
            log::warn!(
                "lkg: slot {} has record version {}, expected {RECORD_VERSION}",
                slot.name(),
                r.version
            );
            None
        }
        Err(_) => {
            log::warn!("lkg: slot {} record is unreadable", slot.name());
            None
        }
    }
}

/// The slot a new write goes to, and its generation.
pub fn next_slot(esp: &Mounted) -> (Slot, u64) {
    let gens: Vec<Option<u64>> = SLOTS
        .iter()
        .map(|s| read_record(esp, *s).map(|r| r.generation))
        .collect();
    let max = gens.iter().flatten().copied().max().unwrap_or(0);
    let target = match (gens[0], gens[1]) {
        (None, _) => Slot::A,
        (_, None) => Slot::B,
        (Some(a), Some(b)) if a <= b => Slot::A,
        _ => Slot::B,
    };
    (target, max + 1)
}

/// Writes a complete slot and switches the boot entry to it.
pub fn persist(esp: &Mounted, art: &Artifacts<'_>) -> Result<(Slot, u64), Error> {
    let (slot, generation) = next_slot(esp);
    ensure_dirs(esp, slot)?;
    ensure_loader_conf(esp)?;
    // Never leave an entry pointing at files that are being replaced.
    remove_entries(esp, slot)?;
    fsync_dir(&esp.path("loader/entries"))?;

    let dir = slot.dir();
    copy_file(art.kernel, &esp.path(&format!("{dir}/vmlinuz")))?;
    copy_file(art.initrd, &esp.path(&format!("{dir}/initrd.cpio")))?;
    copy_file(
        art.sealed_overlay,
        &esp.path(&format!("{dir}/overlay.sealed")),
    )?;
    let record = SlotRecord {
        version: RECORD_VERSION,
        generation,
        overlay: art.overlay.clone(),
        key: art.key.clone(),
        cmdline: art.cmdline.clone(),
    };
    let bytes = postcard::to_allocvec(&record).map_err(|_| Error::Write {
        path: String::from("slot.rec"),
        errno: Errno::INVAL,
    })?;
    write_atomic(&esp.path(&format!("{dir}/slot.rec")), &bytes)?;
    fsync_dir(&esp.path(&dir))?;

    let entry = format!(
        "title Ember (slot {s}, generation {generation}, overlay {id})\nversion {generation}\nsort-key ember\nlinux /{dir}/vmlinuz\ninitrd /{dir}/initrd.cpio\noptions {cmdline} ember.slot={s}\n",
        s = slot.name(),
        id = art.overlay.id,
        cmdline = art.cmdline,
    );
    write_atomic(
        &esp.path(&format!(
            "loader/entries/ember-{}+{TRIES}.conf",
            slot.name()
        )),
        entry.as_bytes(),
    )?;
    fsync_dir(&esp.path("loader/entries"))?;
    Ok((slot, generation))
}

/// Marks a slot good after it booted to Ready: its counting entry
/// (`ember-a+2-1.conf`) becomes `ember-a.conf`, as systemd-bless-boot does.
pub fn bless(esp: &Mounted, slot: Slot) -> Result<bool, Error> {
    let entries = esp.path("loader/entries");
    let plain = format!("ember-{}.conf", slot.name());
    let prefix = format!("ember-{}+", slot.name());
    for name in fsutil::list_dir(&entries)? {
        if name.starts_with(&prefix) && name.ends_with(".conf") {
            let from = format!("{entries}/{name}");
            let to = format!("{entries}/{plain}");
            rfs::rename(from.as_str(), to.as_str()).map_err(io(&to))?;
            fsync_dir(&entries)?;
            return Ok(true);
        }
    }
    Ok(false)
}

fn remove_entries(esp: &Mounted, slot: Slot) -> Result<(), Error> {
    let entries = esp.path("loader/entries");
    let prefix = format!("ember-{}", slot.name());
    for name in fsutil::list_dir(&entries)? {
        let rest = name.strip_prefix(&prefix).unwrap_or("");
        if name.starts_with(&prefix) && (rest.starts_with('+') || rest == ".conf") {
            let p = format!("{entries}/{name}");
            rfs::unlink(p.as_str()).map_err(io(&p))?;
        }
    }
    Ok(())
}

fn ensure_dirs(esp: &Mounted, slot: Slot) -> Result<(), Error> {
    for d in ["loader", "loader/entries", "ember", &slot.dir()] {
        let p = esp.path(d);
        match rfs::mkdir(p.as_str(), Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(io(&p)(e)),
        }
    }
    Ok(())
}

fn ensure_loader_conf(esp: &Mounted) -> Result<(), Error> {
    let p = esp.path("loader/loader.conf");
    if !fsutil::exists(&p) {
        write_atomic(&p, b"timeout 0\neditor no\n")?;
    }
    Ok(())
}

/// Writes `path` through a temporary name, fsynced, then renamed over it.
pub fn write_atomic(path: &str, data: &[u8]) -> Result<(), Error> {
    let tmp = format!("{path}.tmp");
    let fd = rfs::open(
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(io(path))?;
    fsutil::write_all(&fd, data).map_err(io(path))?;
    rfs::fsync(&fd).map_err(io(path))?;
    drop(fd);
    rfs::rename(tmp.as_str(), path).map_err(io(path))
}

/// Copies a file through a temporary name, fsynced, then renamed.
fn copy_file(from: &str, to: &str) -> Result<(), Error> {
    let src =
        rfs::open(from, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).map_err(|errno| {
            Error::Read {
                path: String::from(from),
                errno,
            }
        })?;
    let tmp = format!("{to}.tmp");
    let dst = rfs::open(
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(io(to))?;
    let mut buf = alloc::vec![0u8; 64 * 1024];
    loop {
        let n = match rustix::io::read(&src, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(Errno::INTR) => continue,
            Err(errno) => {
                return Err(Error::Read {
                    path: String::from(from),
                    errno,
                })
            }
        };
        fsutil::write_all(&dst, &buf[..n]).map_err(io(to))?;
    }
    rfs::fsync(&dst).map_err(io(to))?;
    drop(dst);
    rfs::rename(tmp.as_str(), to).map_err(io(to))
}

fn fsync_dir(path: &str) -> Result<(), Error> {
    let fd = rfs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io(path))?;
    rfs::fsync(&fd).map_err(io(path))
}

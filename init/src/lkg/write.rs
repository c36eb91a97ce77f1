//! Writing a slot onto the ESP so that a power cut at any point leaves the
//! other slot bootable: the slot's loader entry is removed first (a
//! half-written slot is never bootable), its files are written to
//! temporary names, fsynced and renamed, and only then is a new entry
//! created. Entries carry `version <generation>`, so systemd-boot prefers
//! the newest; a new entry that fails to reach Ready three times is marked
//! bad by systemd-boot's counting and the older slot boots again.

use alloc::format;
use alloc::string::String;

use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::io::Errno;

use super::esp::Mounted;
use super::record::{SealedKey, SlotRecord, RECORD_VERSION};
use super::slots::Slot;
use crate::fsutil::{self, Stop};
use crate::Error;
use ember_proto::manifest::SignedManifest;

/// Tries systemd-boot gives a new slot before falling back.
pub const TRIES: u32 = 3;

/// Everything a slot is written from.
pub struct Artifacts<'a> {
    pub kernel: &'a str,
    pub initrd: &'a str,
    pub sealed_overlay: &'a str,
    pub manifest: SignedManifest,
    /// The manifest's overlay version, for the loader entry's title.
    pub version_id: u64,
    pub key: SealedKey,
    pub cmdline: String,
}

fn io(path: &str) -> impl Fn(Errno) -> Error + '_ {
    move |errno| Error::Write {
        path: String::from(path),
        errno,
    }
}

/// Writes a complete slot and switches the boot entry to it.
pub fn slot(esp: &Mounted, slot: Slot, generation: u64, art: &Artifacts<'_>) -> Result<(), Error> {
    ensure_dirs(esp, slot)?;
    ensure_loader_conf(esp)?;
    // Never leave an entry pointing at files that are being replaced.
    remove_entries(esp, slot)?;
    fsync_dir(&esp.path("loader/entries"))?;

    let dir = slot.dir();
    copy_file(art.kernel, &esp.path(&format!("{dir}/vmlinuz")))?;
    // Progress for the console (the copies take seconds); the power-cut
    // test cuts here, with the slot half written and its entry absent.
    log::info!("lkg: slot {}: kernel written", slot.name());
    copy_file(art.initrd, &esp.path(&format!("{dir}/initrd.cpio")))?;
    copy_file(
        art.sealed_overlay,
        &esp.path(&format!("{dir}/overlay.sealed")),
    )?;
    let record = SlotRecord {
        version: RECORD_VERSION,
        generation,
        manifest: art.manifest.clone(),
        key: art.key.clone(),
        cmdline: art.cmdline.clone(),
    };
    let bytes = postcard::to_allocvec(&record).map_err(|_| Error::Write {
        path: String::from("slot.rec"),
        errno: Errno::INVAL,
    })?;
    write_atomic(&esp.path(&format!("{dir}/slot.rec")), &bytes)?;
    fsync_dir(&esp.path(dir))?;

    let entry = format!(
        "title Ember (slot {s}, generation {generation}, overlay {id})\nversion {generation}\nsort-key ember\nlinux /{dir}/vmlinuz\ninitrd /{dir}/initrd.cpio\noptions {cmdline} ember.slot={s}\n",
        s = slot.name(),
        id = art.version_id,
        cmdline = art.cmdline,
    );
    write_atomic(
        &esp.path(&format!(
            "loader/entries/ember-{}+{TRIES}.conf",
            slot.name()
        )),
        entry.as_bytes(),
    )?;
    fsync_dir(&esp.path("loader/entries"))
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
    for d in ["loader", "loader/entries", "ember", slot.dir()] {
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
    fsutil::read_each(&src, &mut buf, |piece| fsutil::write_all(&dst, piece)).map_err(
        |e| match e {
            Stop::Read(errno) => Error::Read {
                path: String::from(from),
                errno,
            },
            Stop::Each(errno) => io(to)(errno),
        },
    )?;
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

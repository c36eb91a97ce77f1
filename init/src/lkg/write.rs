//! Writing a slot onto the ESP so that a power cut at any point leaves the
//! other slot bootable. The slot's UKI and its sealed overlay are fetched
//! to temporary names and checked against their signed SHA-256 and size
//! first (a wrong file is never renamed into place, and nothing else
//! changes); then the slot's loader
//! entry is removed (a half-written slot is never bootable), its files
//! are renamed or written through temporary names and fsynced, and only
//! then is a new entry created. Entries carry `version <generation>`, so
//! systemd-boot prefers the newest; a new entry that fails to reach Ready
//! three times is marked bad by systemd-boot's counting and the older slot
//! boots again.

use alloc::format;
use alloc::string::String;

use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::io::Errno;

use super::esp::Mounted;
use super::record::{SealedKey, SlotRecord, RECORD_VERSION};
use super::slots::Slot;
use crate::fsutil;
use crate::{Error, ErrorKind};
use alloc::vec::Vec;
use ember_fs::hex::hex;
use ember_proto::manifest::{SignedBootImage, SignedManifest};
use sha2::{Digest, Sha256};

/// Tries systemd-boot gives a new slot before falling back.
pub const TRIES: u32 = 3;

/// Streams bytes, a piece at a time, into the callback it is given.
pub type Fetch<'a> =
    dyn FnMut(&mut dyn FnMut(&[u8]) -> Result<(), Error>) -> Result<(), Error> + 'a;

/// A file of the slot as the boot server serves it by its signed digest:
/// the UKI (its digest in the signed boot image record) or the sealed
/// overlay blob (its digest in the signed manifest).
pub struct Image<'a> {
    /// What it is, for the log ("boot image", "sealed overlay").
    pub what: &'static str,
    pub sha256: &'a [u8; 32],
    pub size: u64,
    /// Streams the file's bytes into the callback it is given.
    pub fetch: &'a mut Fetch<'a>,
}

/// Everything a slot is written from.
pub struct Artifacts {
    pub manifest: SignedManifest,
    pub boot_image: SignedBootImage,
    /// The manifest's overlay version, for the loader entry's title.
    pub version_id: u64,
    pub keys: Vec<SealedKey>,
    pub cmdline: String,
}

fn io(path: &str) -> impl Fn(Errno) -> Error + '_ {
    move |errno| {
        Error::new(ErrorKind::Write {
            path: path.into(),
            errno,
        })
    }
}

/// Writes a complete slot and switches the boot entry to it.
pub fn slot(
    esp: &Mounted,
    slot: Slot,
    generation: u64,
    image: Image<'_>,
    overlay: Image<'_>,
    art: &Artifacts,
) -> Result<(), Error> {
    ensure_dirs(esp, slot)?;
    ensure_loader_conf(esp)?;
    // The slot's folder is on the disk before anything is written into it.
    fsync_dir(&esp.path("ember"))?;
    let dir = slot.dir();
    let uki = esp.path(&format!("{dir}/ember.efi"));
    // Progress for the console (the download takes seconds); the power-cut
    // test cuts here, with the slot's files half written.
    crate::info!(
        "lkg: slot {}: fetching the boot image {} ({} bytes)",
        slot.name(),
        hex(image.sha256),
        image.size
    );
    fetch_checked(&uki, image)?;
    let uki_tmp = format!("{uki}.tmp");
    // The overlay again, by the digest its signed manifest names: the boot
    // opened it straight from the network and kept no copy (the book,
    // Measurements, "Overlay pipeline").
    let sealed = esp.path(&format!("{dir}/overlay.sealed"));
    crate::info!(
        "lkg: slot {}: fetching the sealed overlay {} ({} bytes)",
        slot.name(),
        hex(overlay.sha256),
        overlay.size
    );
    if let Err(e) = fetch_checked(&sealed, overlay) {
        let _ = rfs::unlink(uki_tmp.as_str());
        return Err(e);
    }
    // Never leave an entry pointing at files that are being replaced.
    remove_entries(esp, slot)?;
    fsync_dir(&esp.path("loader/entries"))?;
    rfs::rename(uki_tmp.as_str(), uki.as_str()).map_err(io(&uki))?;
    // A slot of the older format kept a kernel and an initrd snapshot.
    for old in ["vmlinuz", "initrd.cpio"] {
        let _ = rfs::unlink(esp.path(&format!("{dir}/{old}")).as_str());
    }
    let sealed_tmp = format!("{sealed}.tmp");
    rfs::rename(sealed_tmp.as_str(), sealed.as_str()).map_err(io(&sealed))?;
    let record = SlotRecord {
        version: RECORD_VERSION,
        generation,
        manifest: art.manifest.clone(),
        boot_image: art.boot_image.clone(),
        keys: art.keys.clone(),
        cmdline: art.cmdline.clone(),
    };
    write_atomic(&esp.path(&format!("{dir}/slot.rec")), &record.to_bytes())?;
    fsync_dir(&esp.path(dir))?;

    // systemd-boot passes `options` to the UKI as its load options
    // (systemd-stub, without Secure Boot, boots with them and measures them
    // into PCR 12; PCR 11 measures the UKI's own sections either way).
    // The key is sealed to PCR 12 of exactly these options (seal::entry_pcr12).
    let entry = format!(
        "title Ember (slot {s}, generation {generation}, overlay {id})\nversion {generation}\nsort-key ember\nefi /{dir}/ember.efi\noptions {options}\n",
        s = slot.name(),
        id = art.version_id,
        options = entry_options(&art.cmdline, slot),
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

/// Streams the file into `<to>.tmp`, hashing it, and keeps it only when
/// its SHA-256 and size are the signed ones (fsynced, for the rename).
fn fetch_checked(to: &str, image: Image<'_>) -> Result<(), Error> {
    let tmp = format!("{to}.tmp");
    let dst = rfs::open(
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(io(to))?;
    let mut sha = Sha256::new();
    let mut len = 0u64;
    let fetched = (image.fetch)(&mut |piece| {
        len += piece.len() as u64;
        if len > image.size {
            return Err(Error::new(ErrorKind::Lkg(
                "a slot's file is longer than signed",
            )));
        }
        sha.update(piece);
        fsutil::write_all(&dst, piece).map_err(io(to))
    })
    .and_then(|()| rfs::fsync(&dst).map_err(io(to)));
    drop(dst);
    let got: [u8; 32] = sha.finalize().into();
    let checked = fetched.and_then(|()| {
        if len == image.size && got == *image.sha256 {
            return Ok(());
        }
        crate::error!(
            "lkg: the {} served has sha256 {} ({len} bytes), the server signed {} ({} bytes): not written",
            image.what,
            hex(&got),
            hex(image.sha256),
            image.size
        );
        Err(Error::new(ErrorKind::Lkg(
            "a slot's file differs from its signed digest",
        )))
    });
    if checked.is_err() {
        let _ = rfs::unlink(tmp.as_str());
    }
    checked
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

fn fsync_dir(path: &str) -> Result<(), Error> {
    let fd = rfs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io(path))?;
    rfs::fsync(&fd).map_err(io(path))
}

/// The options of `slot`'s loader entry, as systemd-boot reads (and
/// measures into PCR 12) the `options` line
/// ([`ember_proto::slot::entry_options`]).
pub fn entry_options(cmdline: &str, slot: Slot) -> String {
    ember_proto::slot::entry_options(cmdline, slot.name())
}

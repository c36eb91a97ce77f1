//! Unified kernel images (UKIs): `ember_build::pe` reads a PE file's
//! headers and Authenticode digest, [`measure`] predicts the PCR 11 systemd-stub and
//! the PCR 4 UEFI firmware produce booting one, [`secureboot`] the PCR 7 a
//! firmware enforcing Secure Boot produces. [`Known`] is what the boot
//! server knows of the UKIs among its boot artifacts (`ember policy set
//! --uki` and `ember artifact ipxe --uki` store them there): which one a
//! node booted, for the boot image record its last-known-good slot is
//! written and sealed from.

pub mod measure;
pub mod secureboot;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use ember_tpm::HashAlg;
use sha2::Digest;

use ember_build::pe::PeImage;
use measure::{predict_pcr11, predict_pcr4_each_mode, PCR_BOOT_LOADER_CODE};

/// Debian's systemd-boot (package systemd-boot-efi), the loader an Ember
/// ESP carries as `EFI/BOOT/BOOTX64.EFI` (`qemu/make-disk`).
pub const DEBIAN_ESP_LOADER: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// Boot options the firmware may try and fail before it boots the ESP
/// (`ember serve --esp-failed-boot-options`): OVMF with QEMU's iPXE ROM
/// and a boot server down fails 5 (PXE and HTTP over IPv4 and IPv6, and
/// iPXE), each extending "Returning from…" and "Calling…" into PCR 4
/// ([`measure::predict_pcr4_after`]). A slot is sealed to the PCR 4 of
/// each count: those events are no code, so this widens nothing an
/// attacker could run.
pub const DEFAULT_FAILED_BOOT_OPTIONS: u8 = 8;

/// One UKI among the boot artifacts, measured once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uki {
    /// SHA-256 of the file: its name under `/v1/boot/`.
    pub sha256: [u8; 32],
    pub size: u64,
    /// PCR 11 (sha256) after systemd-stub booted it (no boot phases).
    pub pcr11: [u8; 32],
    /// Its Authenticode digest (sha256): what firmware extends PCR 4 with
    /// when it loads it.
    pub authenticode: [u8; 32],
    /// PCR 4 (sha256) when the firmware boots the ESP's loader, then this
    /// UKI and its kernel: straight, then after 1, 2, … failed boot options;
    /// then the same with Secure Boot on, where the firmware does not
    /// measure the kernel ([`measure::predict_pcr4_each_mode`]).
    /// Empty without an ESP loader (`ember serve --esp-loader`): the UKI is
    /// still identified (for the rollback floor), but no slot can be sealed.
    pub pcr4_from_esp: Vec<[u8; 32]>,
}

/// The UKIs among the boot artifacts, each measured the first time it is
/// looked for (artifacts are content-addressed, so never remeasured).
pub struct Known {
    /// The ESP's boot loader (`ember serve --esp-loader`), for PCR 4.
    loader: Option<Vec<u8>>,
    /// The most failed boot options before the ESP a slot must survive.
    failed_options: usize,
    /// File name → the UKI it holds (`None`: not a UKI, or unreadable).
    seen: Mutex<HashMap<String, Option<Arc<Uki>>>>,
}

impl Known {
    /// Reads the ESP loader; without it no slot PCR 4 can be predicted, so
    /// no boot image record is offered (said once here).
    pub fn new(esp_loader: &Path, failed_options: usize) -> Known {
        let loader = match std::fs::read(esp_loader) {
            Ok(b) if PeImage::parse(&b).is_ok() => Some(b),
            Ok(_) => {
                tracing::warn!("--esp-loader {} is not a PE image: nodes get no boot image and write no last-known-good slot", esp_loader.display());
                None
            }
            Err(e) => {
                tracing::warn!("--esp-loader {}: {e}: nodes get no boot image and write no last-known-good slot (install systemd-boot-efi or give --esp-loader)", esp_loader.display());
                None
            }
        };
        Known {
            loader,
            failed_options,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// The UKI among the artifacts in `dir` whose PCR 11 is `pcr11` and,
    /// when PCR 4's extends are given (only ones the caller checked against
    /// the quote), whose Authenticode digest is one of them. PCR 11 covers
    /// the UKI's sections, not its stub: two UKIs that differ only there
    /// share it, and without PCR 4 they are [`Found::Ambiguous`], never one
    /// picked by the order a map keeps them in.
    pub fn find(
        &self,
        dir: &Path,
        pcr11: &[u8],
        pcr4_extends: Option<&[Vec<u8>]>,
    ) -> Result<Found> {
        let loader = self.loader.as_deref();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let names = std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))?;
        for entry in names {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Artifacts are named by their SHA-256; anything else is a
            // file being stored.
            if name.len() != 64 || seen.contains_key(&name) {
                continue;
            }
            let uki = measure_file(&entry.path(), loader, self.failed_options).map(Arc::new);
            seen.insert(name, uki);
        }
        let mut matches: Vec<&Arc<Uki>> = seen
            .values()
            .flatten()
            .filter(|u| {
                u.pcr11[..] == *pcr11
                    && pcr4_extends.is_none_or(|ds| ds.iter().any(|d| d[..] == u.authenticode[..]))
            })
            .collect();
        matches.sort_by_key(|u| u.sha256);
        matches.dedup_by_key(|u| u.sha256);
        Ok(match matches.as_slice() {
            [] => Found::None,
            [one] => Found::One(Arc::clone(one)),
            many => Found::Ambiguous(many.iter().map(|u| u.sha256).collect()),
        })
    }
}

/// What [`Known::find`] found for one boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// No stored UKI has this PCR 11 (and PCR 4 extend).
    None,
    /// Exactly one: the UKI this boot came from.
    One(Arc<Uki>),
    /// Several stored UKIs (their SHA-256, ascending) fit what was
    /// measured: they differ only outside PCR 11 (the stub), and the
    /// quote holds no PCR 4 to tell them apart.
    Ambiguous(Vec<[u8; 32]>),
}

/// Measures `path` if it is a UKI (a PE file with a `.linux` section);
/// its PCR 4 from the ESP only with the ESP's `loader`.
fn measure_file(path: &Path, loader: Option<&[u8]>, failed_options: usize) -> Option<Uki> {
    let file = std::fs::read(path).ok()?;
    if !file.starts_with(b"MZ") {
        return None;
    }
    let img = PeImage::parse(&file).ok()?;
    img.section(".linux")?;
    let sha = |d: Vec<u8>| <[u8; 32]>::try_from(d).ok();
    let pcr11 = sha(predict_pcr11(&file, HashAlg::Sha256, &[]).ok()?.value)?;
    let authenticode = sha(img.authenticode(&file, HashAlg::Sha256).ok()?)?;
    let pcr4_from_esp = match loader {
        Some(loader) => predict_pcr4_each_mode(failed_options, &[loader], &file, HashAlg::Sha256)
            .ok()?
            .into_iter()
            .map(|p| {
                debug_assert_eq!(p.pcr, PCR_BOOT_LOADER_CODE);
                sha(p.value)
            })
            .collect::<Option<Vec<_>>>()?,
        None => Vec::new(),
    };
    Some(Uki {
        sha256: sha2::Sha256::digest(&file).into(),
        size: file.len() as u64,
        pcr11,
        authenticode,
        pcr4_from_esp,
    })
}

/// The sha256 digests the firmware extended PCR 4 with, per its log.
pub fn pcr4_extends(log: &ember_tpm::eventlog::EventLog<'_>) -> Vec<Vec<u8>> {
    log.events()
        .filter_map(|e| e.ok())
        .filter(|e| e.pcr == u32::from(PCR_BOOT_LOADER_CODE))
        .filter_map(|e| e.digest(HashAlg::Sha256).map(<[u8]>::to_vec))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_build::pe;
    use measure::{predict_pcr4, predict_pcr4_after, predict_pcr4_secure_boot};

    /// A UKI whose kernel is itself a (tiny) PE image, as the stub needs.
    fn tiny_uki(initrd: &[u8]) -> Vec<u8> {
        let kernel = pe::test_stub();
        pe::append_sections(
            &pe::test_stub(),
            &[(".initrd", initrd), (".linux", &kernel)],
        )
        .unwrap()
    }

    #[test]
    fn the_uki_a_node_booted_is_found_by_its_pcr11_and_its_pcr4_extend() {
        let dir = std::env::temp_dir().join(format!("ember-uki-known-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let loader = pe::test_stub();
        let loader_path = dir.join("loader.efi");
        std::fs::write(&loader_path, &loader).unwrap();
        let artifacts = dir.join("boot");
        std::fs::create_dir_all(&artifacts).unwrap();
        let uki = tiny_uki(b"initrd-0");
        let name = |b: &[u8]| ember_fs::hex::hex(&sha2::Sha256::digest(b));
        std::fs::write(artifacts.join(name(&uki)), &uki).unwrap();
        // Not UKIs: a script, a file being stored.
        std::fs::write(artifacts.join(name(b"#!ipxe\n")), b"#!ipxe\n").unwrap();
        std::fs::write(artifacts.join("tmp.123"), &uki).unwrap();

        let known = Known::new(&loader_path, 1);
        let pcr11 = predict_pcr11(&uki, HashAlg::Sha256, &[]).unwrap().value;
        let Found::One(found) = known.find(&artifacts, &pcr11, None).unwrap() else {
            panic!("the UKI is not found");
        };
        assert_eq!(found.sha256[..], sha2::Sha256::digest(&uki)[..]);
        assert_eq!(found.size, uki.len() as u64);
        let direct = predict_pcr4(&[&loader], &uki, HashAlg::Sha256).unwrap();
        let after = predict_pcr4_after(1, &[&loader], &uki, HashAlg::Sha256).unwrap();
        // Secure Boot off (0 and 1 failed options), then on.
        assert_eq!(found.pcr4_from_esp.len(), 4);
        assert_eq!(found.pcr4_from_esp[0][..], direct.value[..]);
        assert_eq!(found.pcr4_from_esp[1][..], after.value[..]);
        assert_ne!(direct.value, after.value);
        let secure = predict_pcr4_secure_boot(&[&loader], &uki, HashAlg::Sha256).unwrap();
        assert_eq!(found.pcr4_from_esp[2][..], secure.value[..]);
        // Under Secure Boot the firmware does not measure the kernel.
        assert_eq!(secure.events.len(), direct.events.len() - 1);
        assert!(direct.events.last().unwrap().label.ends_with(".linux"));
        assert!(secure.events.last().unwrap().label.ends_with(" UKI"));
        // The failed attempt adds "Returning…" and "Calling…" after the separator.
        assert_eq!(after.events.len(), direct.events.len() + 2);
        assert!(after.events[2]
            .label
            .contains("Returning from EFI Application"));

        // With the firmware's log: only if it measured this UKI into PCR 4.
        let authenticode = found.authenticode.to_vec();
        assert_eq!(
            known
                .find(&artifacts, &pcr11, Some(&[vec![1; 32], authenticode]))
                .unwrap(),
            Found::One(found.clone())
        );
        assert_eq!(
            known
                .find(&artifacts, &pcr11, Some(&[vec![1; 32]]))
                .unwrap(),
            Found::None
        );
        // Another UKI's PCR 11 (one initrd byte differs) is no UKI known.
        let other = predict_pcr11(&tiny_uki(b"initrd-1"), HashAlg::Sha256, &[])
            .unwrap()
            .value;
        assert_eq!(known.find(&artifacts, &other, None).unwrap(), Found::None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn without_a_loader_the_uki_is_identified_but_has_no_esp_pcr4() {
        let dir = std::env::temp_dir().join(format!("ember-uki-noloader-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let uki = tiny_uki(b"initrd-0");
        std::fs::write(
            dir.join(ember_fs::hex::hex(&sha2::Sha256::digest(&uki))),
            &uki,
        )
        .unwrap();
        let known = Known::new(Path::new("/nonexistent/systemd-bootx64.efi"), 1);
        let pcr11 = predict_pcr11(&uki, HashAlg::Sha256, &[]).unwrap().value;
        let Found::One(found) = known.find(&dir, &pcr11, None).unwrap() else {
            panic!("the UKI is not found");
        };
        assert_eq!(found.sha256[..], sha2::Sha256::digest(&uki)[..]);
        assert!(found.pcr4_from_esp.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// [`tiny_uki`] on a stub whose code differs in one byte: the same
    /// sections, so the same PCR 11; another Authenticode digest.
    fn tiny_uki_other_stub(initrd: &[u8]) -> Vec<u8> {
        let kernel = pe::test_stub();
        let mut stub = pe::test_stub();
        stub[0x400] = 0x90;
        pe::append_sections(&stub, &[(".initrd", initrd), (".linux", &kernel)]).unwrap()
    }

    #[test]
    fn two_ukis_differing_only_in_the_stub_are_told_apart_by_pcr_4_or_not_at_all() {
        let dir = std::env::temp_dir().join(format!("ember-uki-stub-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let a = tiny_uki(b"initrd-0");
        let b = tiny_uki_other_stub(b"initrd-0");
        let sha = |f: &[u8]| <[u8; 32]>::from(sha2::Sha256::digest(f));
        for f in [&a, &b] {
            std::fs::write(dir.join(ember_fs::hex::hex(&sha(f))), f).unwrap();
        }
        let pcr11 = predict_pcr11(&a, HashAlg::Sha256, &[]).unwrap().value;
        assert_eq!(
            pcr11,
            predict_pcr11(&b, HashAlg::Sha256, &[]).unwrap().value,
            "the stub is outside PCR 11"
        );
        let known = Known::new(Path::new("/nonexistent/systemd-bootx64.efi"), 1);
        // PCR 11 alone cannot say which: neither is picked, every time.
        let mut both = [sha(&a), sha(&b)];
        both.sort();
        for _ in 0..3 {
            assert_eq!(
                known.find(&dir, &pcr11, None).unwrap(),
                Found::Ambiguous(both.to_vec())
            );
        }
        // The firmware's (quote-checked) PCR 4 extend names each one.
        for (file, other) in [(&a, &b), (&b, &a)] {
            let img = PeImage::parse(file).unwrap();
            let authenticode = img.authenticode(file, HashAlg::Sha256).unwrap();
            let other_img = PeImage::parse(other).unwrap();
            assert_ne!(
                authenticode,
                other_img.authenticode(other, HashAlg::Sha256).unwrap()
            );
            let Found::One(u) = known
                .find(&dir, &pcr11, Some(&[vec![7; 32], authenticode]))
                .unwrap()
            else {
                panic!("not identified by its PCR 4 extend");
            };
            assert_eq!(u.sha256, sha(file));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

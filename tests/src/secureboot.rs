//! A Secure Boot lab: keys the test makes (openssl), an OVMF variable store
//! with the project's own PK, KEK and db enrolled and Secure Boot enforced
//! (qemu/secure-boot-vars), and the same keys to sign UKIs (`ember uki
//! build --sign-key`) and systemd-boot (`qemu/make-disk --sign-key`).
//! QEMU boots it with the Secure Boot build of OVMF ([`Boot::secure_boot`]).
//!
//! [`Boot::secure_boot`]: crate::qemu::Boot::secure_boot

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::workspace_root;

/// The owner GUID of every enrolled entry (measured into PCR 7 with it).
pub const OWNER: &str = "7a5a6a07-e4f1-4d55-8c71-5e0b7a3a6e11";

/// A key pair made by openssl: PEM private key and self-signed certificate.
#[derive(Clone, Debug)]
pub struct KeyPair {
    pub key: PathBuf,
    pub cert: PathBuf,
}

impl KeyPair {
    fn make(dir: &Path, name: &str) -> KeyPair {
        let key = dir.join(format!("{name}.key"));
        let cert = dir.join(format!("{name}.pem"));
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256"])
            .args(["-days", "3650", "-subj"])
            .arg(format!("/CN=Ember test {name}/"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        KeyPair { key, cert }
    }

    /// `ember uki build` arguments that sign with this key.
    pub fn uki_args(&self) -> Vec<String> {
        vec![
            "--sign-key".into(),
            self.key.display().to_string(),
            "--sign-cert".into(),
            self.cert.display().to_string(),
        ]
    }
}

/// The keys of one Secure Boot lab and its enrolled variable store.
pub struct SecureBoot {
    pub pk: KeyPair,
    pub kek: KeyPair,
    /// The db entry UKIs and systemd-boot are signed with.
    pub db: KeyPair,
    /// A key the firmware does not know (an attacker's).
    pub other: KeyPair,
    /// The enrolled variable store, Secure Boot enforced: copy it per VM.
    pub vars: PathBuf,
    /// PK.esl, KEK.esl, db.esl, dbx.esl as enrolled (`ember policy predict
    /// --secure-boot`).
    pub esl_dir: PathBuf,
}

impl SecureBoot {
    /// Makes the keys and the variable store under `dir`.
    pub fn new(dir: &Path) -> SecureBoot {
        let keys = dir.join("sb-keys");
        std::fs::create_dir_all(&keys).expect("create the key folder");
        let [pk, kek, db, other] = ["PK", "KEK", "db", "other"].map(|n| KeyPair::make(&keys, n));
        let vars = dir.join("OVMF_VARS_4M.enrolled.fd");
        let esl_dir = dir.join("sb-esl");
        let out = Command::new("bash")
            .arg(workspace_root().join("qemu/secure-boot-vars"))
            .arg("--pk")
            .arg(&pk.cert)
            .arg("--kek")
            .arg(&kek.cert)
            .arg("--db")
            .arg(&db.cert)
            .args(["--owner", OWNER])
            .arg("--esl-dir")
            .arg(&esl_dir)
            .arg("--output")
            .arg(&vars)
            .output()
            .expect("run qemu/secure-boot-vars");
        assert!(
            out.status.success(),
            "qemu/secure-boot-vars failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SecureBoot {
            pk,
            kek,
            db,
            other,
            vars,
            esl_dir,
        }
    }

    /// systemd-boot signed with the db key, as qemu/make-disk puts it on a
    /// node's ESP: the boot server's `--esp-loader` for this lab. (sbsign
    /// pads Debian's systemd-bootx64.efi to 8 bytes, which changes its
    /// Authenticode digest and so PCR 4: predict from the signed file.)
    pub fn signed_loader(&self, dir: &Path) -> PathBuf {
        let out = dir.join("systemd-bootx64.signed.efi");
        let run = Command::new("sbsign")
            .arg("--key")
            .arg(&self.db.key)
            .arg("--cert")
            .arg(&self.db.cert)
            .arg("--output")
            .arg(&out)
            .arg("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
            .output()
            .expect("run sbsign (sbsigntool)");
        assert!(
            run.status.success(),
            "sbsign failed: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        out
    }

    /// A fresh copy of the enrolled store at `to` (a VM writes its variables).
    pub fn vars_copy(&self, to: &Path) -> PathBuf {
        std::fs::copy(&self.vars, to).expect("copy the enrolled variable store");
        to.to_path_buf()
    }

    /// `ember policy predict|set` arguments for PCR 7 of this lab's
    /// firmware verifying images signed with [`Self::db`].
    pub fn policy_args(&self) -> Vec<String> {
        vec![
            "--secure-boot".into(),
            self.esl_dir.display().to_string(),
            "--signed-by".into(),
            self.db.cert.display().to_string(),
        ]
    }
}

/// The firmware's words on the serial console when Secure Boot refused to
/// load a boot option's image (OVMF's BdsDxe), e.g. `BdsDxe: failed to
/// load Boot0001 "UEFI Misc Device" from PciRoot(0x0)/Pci(0x3,0x0): Access
/// Denied`.
pub const FIRMWARE_REFUSED: &str = ": Access Denied";

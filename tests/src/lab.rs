//! One Ember node and everything around it, as the end-to-end tests and
//! `ember-lab` (the README's main command) use it: the Kubernetes API
//! double, `ember serve` with the node's TPM enrolled and an overlay whose
//! runtime is the stand-in, an initrd carrying the server's CA and the
//! kernel, a disk with an empty ESP, and QEMU boots of all that.
//!
//! A network boot is OVMF booting a unified kernel image (`ember uki
//! build`, the boot's command line embedded) from a small FAT disk of its
//! own, ahead of the node's disk: the firmware measures the UKI into PCR 4
//! and systemd-stub its sections into PCR 11, and the server's policy for
//! the lab group is `ember policy set --pcrs 4 --uki` of every UKI the
//! lab built. (The FAT disk has no partition table, so the init never
//! takes it for the node's ESP.) A cold start boots the node's disk:
//! systemd-boot and a last-known-good slot (the UKI the network boot came
//! from, fetched from the server by its signed digest).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::kubeapi::KubeApi;
use crate::overlay::{Overlay, OverlayBuilder};
use crate::qemu::{build_initrd_with, build_uki, esp_tool, make_disk_signed, wait_for_log, Boot};
use crate::secureboot::SecureBoot;
use crate::server::EmberServer;
use crate::swtpm::Swtpm;
use crate::ScratchDir;

pub const NODE: &str = "node-e2e";

/// One node and the services around it.
pub struct Lab {
    pub dir: ScratchDir,
    pub api: KubeApi,
    pub server: Option<EmberServer>,
    pub initrd: PathBuf,
    pub disk: PathBuf,
    pub tpm_state: PathBuf,
    pub vars: PathBuf,
    /// Every UKI this lab built, in order: the lab group's policy allows each.
    pub ukis: RefCell<Vec<PathBuf>>,
    /// A Secure Boot lab ([`Lab::secure_boot`]): the firmware enforces
    /// Secure Boot with these keys, systemd-boot and every UKI the lab
    /// builds are signed with its db key, and the policy binds PCR 7.
    pub secure_boot: Option<SecureBoot>,
}

pub fn overlay(api: &KubeApi, behavior: &'static str, extra: &[(&str, &str)]) -> Overlay {
    let mut b = OverlayBuilder::new(NODE)
        .kube_api(api, true)
        .behavior(behavior)
        .container(true);
    for (k, v) in extra {
        b = b.set(k, v);
    }
    b.build().expect("build the stand-in overlay")
}

/// What every lab initrd carries beside the init: the server's CA and its
/// manifest public key, as copied into the lab's folder.
pub fn trust_files(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    vec![
        (dir.join("ca.pem"), "/etc/ember/ca.pem"),
        (
            dir.join("manifest.pub"),
            ember_proto::manifest::PUBLIC_KEY_PATH,
        ),
    ]
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        Lab::make(tag, false, &[])
    }

    /// A lab whose firmware enforces Secure Boot with keys the lab made.
    pub fn secure_boot(tag: &str) -> Lab {
        Lab::make(tag, true, &[])
    }

    /// A lab whose server also runs the operators' console, on a loopback
    /// port of its own (`EmberServer::console_addr`).
    pub fn with_console(tag: &str) -> Lab {
        Lab::make(tag, false, &["--console-listen", "127.0.0.1:0"])
    }

    fn make(tag: &str, secure_boot: bool, extra: &[&str]) -> Lab {
        let dir = ScratchDir::new(tag);
        let secure_boot = secure_boot.then(|| SecureBoot::new(dir.path()));
        let api = KubeApi::start().expect("start the Kubernetes API double");
        // Secure Boot: the ESP's systemd-boot is the signed one, and PCR 4
        // (and so the slots' seal) follows its Authenticode digest.
        let loader = secure_boot
            .as_ref()
            .map(|sb| sb.signed_loader(dir.path()).display().to_string());
        let mut args = vec![
            "--name",
            "10.0.2.2",
            "--name",
            "127.0.0.1",
            "--http-listen",
            "127.0.0.1:0",
        ];
        if let Some(l) = &loader {
            args.extend(["--esp-loader", l.as_str()]);
        }
        args.extend_from_slice(extra);
        let server = EmberServer::start_with(&args);

        let tpm_state = dir.path().join("tpm");
        Swtpm::setup(&tpm_state).expect("manufacture swtpm");
        {
            let tpm = Swtpm::start_tcp(&tpm_state).expect("start swtpm for enrolment");
            server.enroll_swtpm(NODE, "lab", &tpm).expect_ok("enroll");
        }
        let initrd = dir.path().join("initrd.cpio.gz");
        // Kept beside the lab: initrds made after the server is gone need them too.
        std::fs::copy(server.ca_path(), dir.path().join("ca.pem")).expect("copy the server CA");
        std::fs::copy(server.manifest_pub_path(), dir.path().join("manifest.pub"))
            .expect("copy the manifest public key");
        build_initrd_with(&initrd, &trust_files(dir.path()), false);
        let disk = dir.path().join("disk.img");
        make_disk_signed(&disk, 128, secure_boot.as_ref().map(|s| &s.db));
        let vars = dir.path().join("OVMF_VARS.fd");
        if let Some(sb) = &secure_boot {
            sb.vars_copy(&vars);
        }
        Lab {
            api,
            server: Some(server),
            initrd,
            disk,
            tpm_state,
            vars,
            dir,
            ukis: RefCell::new(Vec::new()),
            secure_boot,
        }
    }

    pub fn server(&self) -> &EmberServer {
        self.server.as_ref().expect("server running")
    }

    pub fn publish(&self, behavior: &'static str, extra: &[(&str, &str)]) -> u64 {
        let o = overlay(&self.api, behavior, extra);
        let version = self.server().add_overlay(o.path(), None);
        self.server()
            .assign(version, "group:lab")
            .expect_ok("assign");
        version
    }

    /// The lab server's URL as the VM reaches it (port 9, where nothing
    /// listens, once the server is gone).
    pub fn attest_url(&self) -> String {
        let port = self.server.as_ref().map_or(9, |s| s.port());
        format!("https://10.0.2.2:{port}")
    }

    pub fn boot(&self, name: &str, from_disk: bool) -> Boot {
        self.boot_with(name, from_disk, &self.attest_url())
    }

    /// A boot with `ember.attest_url=attest_urls` (one URL or a list):
    /// from the node's disk, or (`from_disk` false) the lab's UKI of
    /// `self.initrd` with that command line, which the policy then allows.
    pub fn boot_with(&self, name: &str, from_disk: bool, attest_urls: &str) -> Boot {
        let mut boot = Boot::new(
            &self.initrd,
            &Self::append(attest_urls),
            &self.dir.path().join(format!("{name}.log")),
        );
        boot.tpm_state = Some(self.tpm_state.clone());
        boot.uefi_vars = Some(self.vars.clone());
        boot.secure_boot = self.secure_boot.is_some();
        boot.disks = vec![self.disk.clone()];
        boot.from_disk = true;
        if !from_disk {
            let uki = self.uki(name, &self.initrd, &boot.append);
            self.allow(&uki);
            boot.disks.insert(0, self.uki_disk(name, &uki));
        }
        boot.timeout = Duration::from_secs(600);
        boot
    }

    /// The lab's command line (after `console=ttyS0 panic=-1`).
    pub fn append(attest_urls: &str) -> String {
        // EMBER_LAB_APPEND adds keys for a measurement (e.g.
        // ember.overlay_transport=https), as EMBER_BENCH_APPEND does for qemu/bench.
        let extra = std::env::var("EMBER_LAB_APPEND").unwrap_or_default();
        format!("ember.attest_url={attest_urls} ember.error_delay=2 {extra}")
    }

    /// Builds `<name>.efi`: the UKI of `initrd` with `cmdline` (signed
    /// with the db key in a Secure Boot lab).
    pub fn uki(&self, name: &str, initrd: &Path, cmdline: &str) -> PathBuf {
        let sign = match &self.secure_boot {
            Some(sb) => sb.db.uki_args(),
            None => Vec::new(),
        };
        self.uki_with(name, initrd, cmdline, &sign)
    }

    /// Builds `<name>.efi` with further `ember uki build` arguments
    /// (e.g. another key's --sign-key/--sign-cert).
    pub fn uki_with(&self, name: &str, initrd: &Path, cmdline: &str, extra: &[String]) -> PathBuf {
        let uki = self.dir.path().join(format!("{name}.efi"));
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        build_uki(&uki, initrd, cmdline, &extra);
        uki
    }

    /// Adds `uki` to the UKIs the lab group's policy allows (PCR 4 and 11
    /// as `ember policy predict --uki` gives them, and PCR 7 in a Secure
    /// Boot lab; event log required).
    pub fn allow(&self, uki: &Path) {
        let mut ukis = self.ukis.borrow_mut();
        ukis.push(uki.to_path_buf());
        let mut args = vec!["--group", "lab", "--pcrs", "4"];
        for u in ukis.iter() {
            args.extend(["--uki", u.to_str().expect("UTF-8 path")]);
        }
        // Secure Boot: PCR 7 as this lab's firmware leaves it.
        let sb = self.secure_boot.as_ref().map(SecureBoot::policy_args);
        args.extend(sb.iter().flatten().map(String::as_str));
        self.server()
            .set_policy(&args)
            .expect_ok("policy set --uki");
    }

    /// A FAT disk without a partition table whose removable-media loader
    /// (\EFI\BOOT\BOOTX64.EFI) is `uki`: OVMF boots it and measures it.
    pub fn uki_disk(&self, name: &str, uki: &Path) -> PathBuf {
        let img = self.dir.path().join(format!("{name}-uki.img"));
        let size_kib = std::fs::metadata(uki).expect("UKI").len() / 1024 + 8 * 1024;
        let _ = std::fs::remove_file(&img);
        let out = std::process::Command::new("mkfs.fat")
            .args(["-C", "-n", "EMBERUKI"])
            .arg(&img)
            .arg(size_kib.to_string())
            .output()
            .expect("run mkfs.fat (dosfstools)");
        assert!(
            out.status.success(),
            "mkfs.fat failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let image = img.to_str().expect("UTF-8 path");
        for (tool, args) in [
            ("mmd", vec!["-i", image, "::/EFI", "::/EFI/BOOT"]),
            (
                "mcopy",
                vec![
                    "-i",
                    image,
                    uki.to_str().expect("UTF-8 path"),
                    "::/EFI/BOOT/BOOTX64.EFI",
                ],
            ),
        ] {
            let out = std::process::Command::new(tool)
                .args(&args)
                .env("MTOOLS_SKIP_CHECK", "1")
                .output()
                .expect("run mtools");
            assert!(
                out.status.success(),
                "{tool} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        img
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }
}

pub fn ember_lines(log: &str) -> String {
    log.lines()
        .filter_map(|l| l.split_once("] ember: ").map(|(_, r)| r))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn save_timeline(lab: &Lab, name: &str) {
    // Keep the console of failed runs for a human (EMBER_KEEP_SCRATCH keeps all).
    let _ = std::fs::create_dir_all("/tmp/ember-e2e-logs");
    let _ = std::fs::copy(
        lab.log_path(name),
        format!("/tmp/ember-e2e-logs/{name}.log"),
    );
}

pub fn boot_until(lab: &Lab, name: &str, from_disk: bool, needle: &str) -> String {
    run_until(lab, name, lab.boot(name, from_disk), needle)
}

/// Runs `boot` until its serial log has `needle` (or fails the test with
/// the init's lines), then cuts the power; returns the log.
pub fn run_until(lab: &Lab, name: &str, boot: Boot, needle: &str) -> String {
    let mut guard = boot.start();
    let (found, log) = wait_for_log(
        &lab.log_path(name),
        &mut guard,
        needle,
        Duration::from_secs(600),
    );
    save_timeline(lab, name);
    assert!(
        found,
        "{name}: never saw {needle:?}; init said:\n{}\n--- console tail:\n{}",
        ember_lines(&log),
        tail(&log, 60)
    );
    // Give the init a moment to finish the line's phase, then power is cut.
    std::thread::sleep(Duration::from_millis(500));
    drop(guard);
    std::fs::read_to_string(lab.log_path(name)).unwrap_or(log)
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn esp_entries(disk: &Path) -> String {
    esp_tool(disk, "mdir", &["-b", "::/loader/entries"])
}

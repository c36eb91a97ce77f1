//! Booting initrds in QEMU (through qemu/boot, the same script a developer
//! uses) and reading what the node printed on its serial console.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::ChildGuard;
use crate::{ember_bin, profile_dir, workspace_root};

/// The kernel release qemu/fetch-kernel unpacked (fetching it if needed).
pub fn kernel_release() -> String {
    let out = Command::new("bash")
        .arg(workspace_root().join("qemu/fetch-kernel"))
        .output()
        .expect("run qemu/fetch-kernel");
    assert!(
        out.status.success(),
        "qemu/fetch-kernel failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The module names in qemu/modules.list.
pub fn module_list() -> Vec<String> {
    std::fs::read_to_string(workspace_root().join("qemu/modules.list"))
        .expect("read qemu/modules.list")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// The /init built with this test's profile (scripts/build-init builds it).
pub fn init_bin() -> PathBuf {
    let p = profile_dir().join("ember-init");
    assert!(
        p.exists(),
        "{} missing: run `cargo build -p ember-init` with this test's profile first",
        p.display()
    );
    p
}

/// Builds a node initrd with `ember initrd build`: the standard modules plus
/// `extra` files given as (source, destination) pairs.
pub fn build_initrd(out: &Path, extra: &[(PathBuf, &str)]) -> String {
    build_initrd_with(out, extra, false)
}

/// The kernel image qemu/fetch-kernel unpacked.
pub fn kernel_image() -> PathBuf {
    kernel_release();
    workspace_root().join(".cache/kernel/vmlinuz")
}

/// Like [`build_initrd`]; `with_kernel` carries the kernel at /boot/vmlinuz
/// (what last-known-good copies to the ESP).
pub fn build_initrd_with(out: &Path, extra: &[(PathBuf, &str)], with_kernel: bool) -> String {
    initrd_build(out, extra, with_kernel, &[])
}

/// Like [`build_initrd`], its SBOM tracing files to `debs` (`--sbom-deb`).
pub fn build_initrd_from_debs(out: &Path, extra: &[(PathBuf, &str)], debs: &[PathBuf]) -> String {
    initrd_build(out, extra, false, debs)
}

fn initrd_build(
    out: &Path,
    extra: &[(PathBuf, &str)],
    with_kernel: bool,
    debs: &[PathBuf],
) -> String {
    let release = kernel_release();
    let modules_dir = workspace_root()
        .join(".cache/kernel/root/lib/modules")
        .join(&release);
    let mut cmd = Command::new(ember_bin());
    cmd.args(["initrd", "build", "--init"])
        .arg(init_bin())
        .arg("--modules-dir")
        .arg(&modules_dir)
        .arg("--module")
        .arg(module_list().join(","))
        .arg("--output")
        .arg(out)
        .env("SOURCE_DATE_EPOCH", "0");
    if with_kernel {
        cmd.arg("--kernel").arg(kernel_image());
    }
    for line in image_files() {
        cmd.arg("--file").arg(line);
    }
    for (src, dest) in extra {
        cmd.arg("--file").arg(format!("{}:{dest}", src.display()));
    }
    for d in debs {
        cmd.arg("--sbom-deb").arg(d);
    }
    let output = cmd.output().expect("run ember initrd build");
    assert!(
        output.status.success(),
        "ember initrd build failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The programs every image carries (qemu/image-files: mkfs.ext4 and its
/// libraries), as `SRC:DEST` arguments for `--file`.
pub fn image_files() -> Vec<String> {
    let out = Command::new("bash")
        .arg(workspace_root().join("qemu/image-files"))
        .output()
        .expect("run qemu/image-files");
    assert!(
        out.status.success(),
        "qemu/image-files failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// One QEMU boot: arguments for qemu/boot.
pub struct Boot {
    pub initrd: PathBuf,
    pub append: String,
    pub tpm_state: Option<PathBuf>,
    pub serial_log: PathBuf,
    pub timeout: Duration,
    pub extra_args: Vec<String>,
    /// OVMF variable store (UEFI boot); None boots with SeaBIOS.
    pub uefi_vars: Option<PathBuf>,
    pub disks: Vec<PathBuf>,
    /// Boot the disk through the firmware instead of -kernel/-initrd.
    pub from_disk: bool,
    pub allow_reboot: bool,
    /// Firmware network boot from this URL (an iPXE script), the disks after.
    pub netboot: Option<String>,
    /// The Secure Boot build of OVMF (qemu/boot --secure-boot); enforced
    /// when `uefi_vars` enrolls a PK (crate::secureboot), off with a
    /// fresh OVMF_VARS_4M.fd (copied when `uefi_vars` does not exist).
    pub secure_boot: bool,
}

/// How a boot ended.
#[derive(Debug)]
pub struct Outcome {
    /// qemu/boot's exit code: 0 when the guest powered off, 124 on timeout.
    pub exit_code: Option<i32>,
    pub log: String,
}

impl Outcome {
    pub fn powered_off(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// The init's own lines (`[      ms] ember: ...`), without the prefix stamp.
    pub fn ember_lines(&self) -> Vec<&str> {
        self.log
            .lines()
            .filter_map(|l| l.split_once("] ember: ").map(|(_, rest)| rest))
            .collect()
    }

    pub fn has_line(&self, needle: &str) -> bool {
        self.ember_lines().iter().any(|l| l.contains(needle))
    }
}

impl Boot {
    pub fn new(initrd: &Path, append: &str, serial_log: &Path) -> Self {
        Boot {
            initrd: initrd.to_path_buf(),
            append: format!("console=ttyS0 panic=-1 {append}"),
            tpm_state: None,
            serial_log: serial_log.to_path_buf(),
            timeout: Duration::from_secs(120),
            extra_args: Vec::new(),
            uefi_vars: None,
            disks: Vec::new(),
            from_disk: false,
            allow_reboot: false,
            netboot: None,
            secure_boot: false,
        }
    }

    /// Starts the boot; the guard stops qemu/boot (and so QEMU and swtpm) by PID.
    pub fn start(&self) -> ChildGuard {
        let mut cmd = Command::new("bash");
        cmd.arg(workspace_root().join("qemu/boot"))
            .arg("--initrd")
            .arg(&self.initrd)
            .arg("--append")
            .arg(&self.append)
            .arg("--serial-log")
            .arg(&self.serial_log)
            .arg("--timeout")
            .arg(self.timeout.as_secs().to_string());
        if let Some(state) = &self.tpm_state {
            cmd.arg("--tpm-state").arg(state);
        }
        if let Some(vars) = &self.uefi_vars {
            if !vars.exists() {
                let fresh = if self.secure_boot {
                    "/usr/share/OVMF/OVMF_VARS_4M.fd"
                } else {
                    "/usr/share/OVMF/OVMF_VARS.fd"
                };
                std::fs::copy(fresh, vars).expect("copy a fresh OVMF variable store");
            }
            cmd.arg("--uefi").arg(vars);
            if self.secure_boot {
                cmd.arg("--secure-boot");
            }
        }
        for d in &self.disks {
            cmd.arg("--disk").arg(d);
        }
        if self.from_disk {
            cmd.args(["--kernel", "none"]);
        }
        if self.allow_reboot {
            cmd.arg("--allow-reboot");
        }
        if let Some(url) = &self.netboot {
            cmd.args(["--kernel", "none", "--netboot", url]);
        }
        cmd.args(&self.extra_args);
        ChildGuard::spawn("qemu/boot", &mut cmd).expect("start qemu/boot")
    }

    /// Boots and waits for the guest to power off or the timeout.
    pub fn run(&self) -> Outcome {
        let mut guard = self.start();
        let status = guard.wait_timeout(self.timeout + Duration::from_secs(15));
        let log = std::fs::read_to_string(&self.serial_log).unwrap_or_default();
        Outcome {
            exit_code: status.and_then(|s| s.code()),
            log,
        }
    }
}

/// Makes a node disk (GPT + FAT ESP with systemd-boot) with qemu/make-disk.
pub fn make_disk(out: &Path, size_mib: u32) {
    make_disk_signed(out, size_mib, None)
}

/// [`make_disk`] whose systemd-boot is signed with `key` for Secure Boot.
pub fn make_disk_signed(out: &Path, size_mib: u32, key: Option<&crate::secureboot::KeyPair>) {
    let mut cmd = Command::new("bash");
    cmd.arg(workspace_root().join("qemu/make-disk"));
    if let Some(k) = key {
        cmd.arg("--sign-key")
            .arg(&k.key)
            .arg("--sign-cert")
            .arg(&k.cert);
    }
    let status = cmd
        .arg(out)
        .arg(size_mib.to_string())
        .output()
        .expect("run qemu/make-disk");
    assert!(
        status.status.success(),
        "qemu/make-disk failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

/// Runs an mtools command on the ESP of a disk made by [`make_disk`]
/// (the partition starts at 1 MiB); returns stdout.
pub fn esp_tool(disk: &Path, tool: &str, args: &[&str]) -> String {
    let image = format!("{}@@1048576", disk.display());
    let out = Command::new(tool)
        .arg("-i")
        .arg(&image)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .expect("run mtools");
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until the serial log has a line containing `needle` (or the boot
/// guard's process exits, or `timeout` passes); returns the log.
pub fn wait_for_log(
    log: &Path,
    guard: &mut ChildGuard,
    needle: &str,
    timeout: Duration,
) -> (bool, String) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return (true, text);
        }
        if guard.try_wait().is_some() || std::time::Instant::now() >= deadline {
            return (false, text);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Builds a unified kernel image with `ember uki build` from the kernel
/// qemu/fetch-kernel unpacked, `initrd` and the command line `cmdline`
/// (`extra` are further arguments, e.g. `--os-release FILE`); returns its
/// summary line.
pub fn build_uki(out: &Path, initrd: &Path, cmdline: &str, extra: &[&str]) -> String {
    let output = Command::new(ember_bin())
        .args(["uki", "build", "--kernel"])
        .arg(kernel_image())
        .arg("--initrd")
        .arg(initrd)
        .arg("--cmdline")
        .arg(cmdline)
        .args(extra)
        .arg("--output")
        .arg(out)
        .output()
        .expect("run ember uki build");
    assert!(
        output.status.success(),
        "ember uki build failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A node disk ([`make_disk`]) whose ESP boots `uki` directly: it replaces
/// systemd-boot as the removable-media loader \EFI\BOOT\BOOTX64.EFI.
pub fn make_uki_disk(out: &Path, uki: &Path) {
    make_disk(out, 256);
    let uki = uki.to_str().expect("UTF-8 path");
    esp_tool(out, "mcopy", &["-o", uki, "::/EFI/BOOT/BOOTX64.EFI"]);
}

/// Boots `uki` the way a node boots from its disk: OVMF (fresh variables in
/// `dir`), swtpm (state in `dir/tpm`), a [`make_uki_disk`] ESP; waits for
/// the guest to power off or time out.
pub fn boot_uki_from_esp(uki: &Path, dir: &Path) -> Outcome {
    let disk = dir.join("disk.img");
    make_uki_disk(&disk, uki);
    // The initrd path is not used: the firmware boots \EFI\BOOT\BOOTX64.EFI.
    let mut boot = Boot::new(uki, "", &dir.join("serial.log"));
    boot.uefi_vars = Some(dir.join("OVMF_VARS.fd"));
    boot.disks = vec![disk];
    boot.from_disk = true;
    boot.tpm_state = Some(dir.join("tpm"));
    boot.run()
}

/// A UKI whose initrd is busybox and a script that prints the firmware's
/// event log (hex) to the console and powers off: what a real OVMF + swtpm
/// boot measured, to hold the predictions against. `extra` are further
/// `ember uki build` arguments (e.g. --sign-key/--sign-cert).
pub fn event_log_uki(dir: &Path, extra: &[&str]) -> PathBuf {
    let init = dir.join("init");
    std::fs::write(
        &init,
        "#!/bin/busybox sh\n\
         /bin/busybox mkdir -p /proc /sys\n\
         /bin/busybox mount -t sysfs sysfs /sys\n\
         /bin/busybox mount -t securityfs securityfs /sys/kernel/security\n\
         echo EVENTLOG-BEGIN\n\
         /bin/busybox od -An -v -tx1 /sys/kernel/security/tpm0/binary_bios_measurements\n\
         echo EVENTLOG-END\n\
         /bin/busybox poweroff -f\n",
    )
    .expect("write the event log init");
    let initrd = dir.join("eventlog.cpio.gz");
    let out = Command::new(ember_bin())
        .args(["initrd", "build", "--init"])
        .arg(&init)
        .args(["--file", "/bin/busybox:/bin/busybox", "--output"])
        .arg(&initrd)
        .output()
        .expect("run ember initrd build");
    assert!(
        out.status.success(),
        "ember initrd build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uki = dir.join("eventlog.efi");
    build_uki(&uki, &initrd, "console=ttyS0 panic=-1 quiet", extra);
    uki
}

/// The bytes between the EVENTLOG markers (od's hex) of a serial log.
pub fn event_log_from_console(log: &str) -> Vec<u8> {
    let body = log
        .split("EVENTLOG-BEGIN")
        .nth(1)
        .and_then(|rest| rest.split("EVENTLOG-END").next())
        .unwrap_or_else(|| panic!("no event log on the console:\n{log}"));
    body.split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).unwrap_or_else(|_| panic!("bad hex {h:?}")))
        .collect()
}

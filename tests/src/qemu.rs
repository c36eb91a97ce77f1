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
    for (src, dest) in extra {
        cmd.arg("--file").arg(format!("{}:{dest}", src.display()));
    }
    let output = cmd.output().expect("run ember initrd build");
    assert!(
        output.status.success(),
        "ember initrd build failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// One QEMU boot: arguments for qemu/boot.
pub struct Boot {
    pub initrd: PathBuf,
    pub append: String,
    pub tpm_state: Option<PathBuf>,
    pub serial_log: PathBuf,
    pub timeout: Duration,
    pub extra_args: Vec<String>,
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

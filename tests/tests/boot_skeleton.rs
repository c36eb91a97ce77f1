//! The walking skeleton in a real VM: QEMU (TCG) + swtpm + Debian's kernel +
//! our initrd. Everything is asserted from the serial console.

use ember_tests::qemu::{build_initrd, init_bin, kernel_release, Boot};
use ember_tests::{ember_bin, workspace_root, ScratchDir};

/// The items between the brackets of the line that starts with `prefix[`.
fn listed<'a>(lines: &'a str, prefix: &str) -> Vec<&'a str> {
    lines
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.strip_prefix('['))
        .and_then(|rest| rest.split(']').next())
        .map(|items| items.split(' ').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default()
}

#[test]
fn skeleton_boots_as_pid1_mounts_loads_modules_sees_tpm_and_powers_off() {
    let dir = ScratchDir::new("skeleton");
    let initrd = dir.path().join("initrd.cpio.gz");
    build_initrd(&initrd, &[]);

    let mut boot = Boot::new(
        &initrd,
        "ember.test=poweroff ember.attest_url=https://10.0.2.2:8443/v1 ember.on_error=poweroff ember.iface=eth0",
        &dir.path().join("serial.log"),
    );
    boot.tpm_state = Some(dir.path().join("tpm"));
    let out = boot.run();
    let lines = out.ember_lines().join("\n");

    assert!(
        out.powered_off(),
        "the VM did not power off by itself (exit {:?}); console:\n{}",
        out.exit_code,
        out.log
    );
    assert!(
        out.has_line("starting as pid 1"),
        "/init did not run as PID 1:\n{lines}"
    );
    assert!(
        out.has_line("rootfs: / is a bind mount of the initial rootfs"),
        "/ is not the bind-mounted initial rootfs (runc needs a root it can pivot from):\n{lines}"
    );
    let mounted = listed(&lines, "mounts: mounted ");
    for m in [
        "/proc",
        "/sys",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/run",
        "/tmp",
        "/sys/fs/cgroup",
    ] {
        assert!(mounted.contains(&m), "{m} not mounted:\n{lines}");
    }
    let loaded = listed(&lines, "modules: loaded ");
    for m in [
        "virtio_ring",
        "virtio_pci",
        "virtio_net",
        "virtio_blk",
        "fat",
        "vfat",
    ] {
        assert!(loaded.contains(&m), "module {m} not loaded:\n{lines}");
    }
    // Dependencies load before the modules that need them.
    let pos = |m: &str| loaded.iter().position(|x| *x == m).unwrap();
    assert!(
        pos("virtio_ring") < pos("virtio")
            && pos("virtio") < pos("virtio_net")
            && pos("fat") < pos("vfat")
    );
    assert!(lines.contains("missing []"), "modules missing:\n{lines}");
    assert!(
        out.has_line("tpm: /dev/tpmrm0 present"),
        "no TPM device:\n{lines}"
    );
    assert!(
        out.has_line(
            "cmdline: ember keys [ember.test ember.attest_url ember.on_error ember.iface]"
        ),
        "{lines}"
    );
    assert!(out.has_line("network interfaces: [eth0("), "{lines}");
    for phase in ["rootfs", "mounts", "cmdline", "modules", "inventory"] {
        assert!(
            out.has_line(&format!("phase={phase} status=ok")),
            "phase {phase} did not complete:\n{lines}"
        );
    }
    assert!(out.has_line("shutdown: power off"), "{lines}");
    assert!(
        out.log.contains("reboot: Power down"),
        "the kernel did not power down:\n{}",
        out.log
    );
}

#[test]
fn malformed_attest_url_is_a_clear_error_and_the_failure_policy_runs() {
    let dir = ScratchDir::new("badurl");
    let initrd = dir.path().join("initrd.cpio.gz");
    build_initrd(&initrd, &[]);
    let out = Boot::new(
        &initrd,
        "ember.attest_url=http://insecure.example/ ember.on_error=poweroff ember.error_delay=0",
        &dir.path().join("serial.log"),
    )
    .run();
    let lines = out.ember_lines().join("\n");
    assert!(out.powered_off(), "exit {:?}\n{}", out.exit_code, out.log);
    assert!(
        out.has_line("cmdline: ignoring ember.attest_url: must start with https://"),
        "{lines}"
    );
    assert!(out.has_line("boot failed in phase attest"), "{lines}");
    assert!(
        out.has_line("powering off in 0 s (ember.on_error)"),
        "{lines}"
    );
}

#[test]
fn initrd_build_is_reproducible() {
    let dir = ScratchDir::new("repro");
    let a = build_initrd(&dir.path().join("a.cpio.gz"), &[]);
    let b = build_initrd(&dir.path().join("b.cpio.gz"), &[]);
    let sha = |s: &str| s.rsplit("sha256 ").next().unwrap().trim().to_string();
    assert_eq!(sha(&a), sha(&b));
    assert_eq!(
        std::fs::read(dir.path().join("a.cpio.gz")).unwrap(),
        std::fs::read(dir.path().join("b.cpio.gz")).unwrap()
    );
}

#[test]
fn initrd_build_with_bad_input_fails_clearly_and_leaves_no_output() {
    let dir = ScratchDir::new("badinput");
    let out = dir.path().join("x.cpio.gz");
    let missing = std::process::Command::new(ember_bin())
        .args(["initrd", "build", "--init", "/nonexistent/init", "--output"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/init"));

    let modules_dir = workspace_root()
        .join(".cache/kernel/root/lib/modules")
        .join(kernel_release());
    let unknown = std::process::Command::new(ember_bin())
        .args(["initrd", "build", "--init"])
        .arg(init_bin())
        .arg("--modules-dir")
        .arg(modules_dir)
        .args(["--module", "no_such_module", "--output"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no_such_module"));
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "a partial file was left behind"
    );
}

#[test]
fn every_initrd_compression_holds_the_same_cpio_in_the_kernels_format() {
    let dir = ScratchDir::new("compress");
    let build = |compress: &str| {
        let out = dir.path().join(format!("initrd.{compress}"));
        let status = std::process::Command::new(ember_bin())
            .args(["initrd", "build", "--compress", compress, "--init"])
            .arg(init_bin())
            .arg("--output")
            .arg(&out)
            .env("SOURCE_DATE_EPOCH", "0")
            .status()
            .unwrap();
        assert!(status.success(), "--compress {compress}");
        std::fs::read(out).unwrap()
    };
    let plain = build("none");
    assert!(plain.starts_with(b"070701"));
    for (compress, magic, unpack) in [
        ("gzip", &[0x1f, 0x8b][..], "gzip"),
        // xz stream header: magic, then flags 00 01 = CRC32 (the kernel's
        // decoder has no CRC64).
        ("xz", &[0xfd, b'7', b'z', b'X', b'Z', 0, 0, 1][..], "xz"),
        ("zstd", &[0x28, 0xb5, 0x2f, 0xfd][..], "zstd"),
        // lz4's legacy frame: the only one the kernel reads.
        ("lz4", &[0x02, 0x21, 0x4c, 0x18][..], "lz4"),
    ] {
        let packed = build(compress);
        assert!(
            packed.starts_with(magic),
            "{compress} magic: {:02x?}",
            &packed[..8]
        );
        assert_eq!(packed, build(compress), "{compress} is not reproducible");
        let path = dir.path().join(format!("initrd.{compress}"));
        let out = std::process::Command::new(unpack)
            .arg("-dc")
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{unpack} -dc");
        assert!(
            out.stdout == plain,
            "{compress} does not unpack to the plain cpio"
        );
    }
}

//! The Bazel build path (Debian's bazel-bootstrap, Bazel 4.2.3, offline,
//! WORKSPACE mode) against the Cargo path: `//os:initrd` is byte-identical
//! to `ember initrd build` on the same inputs, stays identical after
//! `bazel clean`, `//os:uki` to `ember uki build` (qemu/build-uki), and
//! `//image` is an OCI layout real tools accept.
//!
//! Bazel takes this test's own `ember`/`ember-init` (prebuilt mode,
//! EMBER_PREBUILT_DIR; see bazel/cargo.bzl), so both paths run the same
//! binaries and nothing is compiled twice.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use ember_tests::{ember_bin, profile_dir, workspace_root, ScratchDir};

/// One Bazel command at a time, and no `bazel clean` under another test's feet.
static BAZEL: Mutex<()> = Mutex::new(());

fn bazel(args: &[&str]) -> String {
    let started = Instant::now();
    let prebuilt = profile_dir();
    for bin in ["ember", "ember-init"] {
        assert!(
            prebuilt.join(bin).exists(),
            "{} missing: run scripts/build-init and cargo build with this test's profile first",
            prebuilt.join(bin).display()
        );
    }
    let mut cmd = Command::new("bazel");
    cmd.args(args);
    if args[0] == "build" {
        cmd.args(["--color=no", "--curses=no"]);
    }
    let out = cmd
        .current_dir(workspace_root())
        .env("EMBER_PREBUILT_DIR", &prebuilt)
        .output()
        .expect("bazel (Debian's bazel-bootstrap, installed by scripts/install-deps)");
    assert!(
        out.status.success(),
        "bazel {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "bazel {} took {:.1} s",
        args.join(" "),
        started.elapsed().as_secs_f64()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn bazel_bin() -> PathBuf {
    PathBuf::from(bazel(&["info", "bazel-bin"]))
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn kernel_modules_dir() -> PathBuf {
    let root = workspace_root();
    let release = std::fs::read_to_string(root.join(".cache/kernel/release"))
        .expect("qemu/fetch-kernel has run (scripts/test runs it first)");
    root.join(".cache/kernel/root/lib/modules")
        .join(release.trim())
}

/// qemu/modules.list as qemu/build-initrd passes it: comments dropped,
/// lines joined with commas.
fn module_arg() -> String {
    let list = std::fs::read_to_string(workspace_root().join("qemu/modules.list")).unwrap();
    list.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

/// The Cargo path: `ember initrd build` with qemu/build-initrd's arguments.
fn cargo_path_initrd(out: &Path, extra: &[&str]) {
    let status = Command::new(ember_bin())
        .env("SOURCE_DATE_EPOCH", "0")
        // Bazel's rule is hermetic: gzip (in-process) or none, never the
        // lz4 tool the Cargo path's default (lz4) runs.
        .args(["initrd", "build", "--compress", "gzip", "--init"])
        .arg(profile_dir().join("ember-init"))
        .arg("--modules-dir")
        .arg(kernel_modules_dir())
        .args(["--module", &module_arg()])
        .args(
            ember_tests::qemu::image_files()
                .iter()
                .flat_map(|f| ["--file", f.as_str()]),
        )
        .args(extra)
        .arg("--output")
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn bazel_initrd_is_byte_identical_to_the_cargo_path_and_to_itself_after_clean() {
    let _lock = BAZEL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = ScratchDir::new("bazel-initrd");

    bazel(&["build", "//os:initrd"]);
    let first = sha256(&bazel_bin().join("os/initrd"));

    let cargo = scratch.path().join("initrd.cpio.gz");
    cargo_path_initrd(&cargo, &[]);
    assert_eq!(
        first,
        sha256(&cargo),
        "//os:initrd differs from `ember initrd build`"
    );

    bazel(&["clean"]);
    bazel(&["build", "//os:initrd"]);
    let second = sha256(&bazel_bin().join("os/initrd"));
    assert_eq!(first, second, "//os:initrd changed across `bazel clean`");
    eprintln!("//os:initrd sha256 {first}");
}

#[test]
fn bazel_uki_is_byte_identical_to_the_cargo_path() {
    let _lock = BAZEL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = ScratchDir::new("bazel-uki");

    bazel(&["build", "//os:uki"]);
    let from_bazel = sha256(&bazel_bin().join("os/uki.efi"));

    // qemu/build-uki's steps: the initrd, then `ember uki build` with the
    // default command line of //os:uki.
    let initrd = scratch.path().join("initrd.cpio.gz");
    cargo_path_initrd(&initrd, &[]);
    let uki = scratch.path().join("ember.efi");
    ember_tests::qemu::build_uki(&uki, &initrd, "console=ttyS0 panic=-1", &[]);
    assert_eq!(
        from_bazel,
        sha256(&uki),
        "//os:uki differs from `ember uki build`"
    );
    eprintln!("//os:uki sha256 {from_bazel}");
}

#[test]
fn bazel_image_is_an_oci_layout_that_umoci_and_skopeo_accept() {
    let _lock = BAZEL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = ScratchDir::new("bazel-image");

    bazel(&["build", "//image"]);
    // Bazel's outputs are read-only: work on a copy.
    let layout = scratch.path().join("image");
    let status = Command::new("cp")
        .arg("-r")
        .arg(bazel_bin().join("image/image"))
        .arg(&layout)
        .status()
        .unwrap();
    assert!(status.success());
    let status = Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(&layout)
        .status()
        .unwrap();
    assert!(status.success());

    let inspect = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:latest", layout.display()))
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["Os"], "linux");

    let bundle = scratch.path().join("bundle");
    let unpack = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:latest", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        unpack.status.success(),
        "{}",
        String::from_utf8_lossy(&unpack.stderr)
    );
    let rootfs = bundle.join("rootfs");
    let init = std::fs::read(profile_dir().join("ember-init")).unwrap();
    assert_eq!(
        std::fs::read(rootfs.join("init")).unwrap(),
        init,
        "/init is ember-init"
    );
    let ca = std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap();
    assert_eq!(
        std::fs::read(rootfs.join("etc/ssl/certs/ca-certificates.crt")).unwrap(),
        ca
    );
    let vmlinuz = std::fs::read(workspace_root().join(".cache/kernel/vmlinuz")).unwrap();
    assert_eq!(std::fs::read(rootfs.join("boot/vmlinuz")).unwrap(), vmlinuz);
    let release = kernel_modules_dir().file_name().unwrap().to_owned();
    let moddir = rootfs.join("lib/modules").join(&release);
    assert!(moddir.join("modules.dep").is_file());
    let virtio_net = std::fs::read_to_string(moddir.join("modules.dep")).unwrap();
    assert!(
        virtio_net.contains("virtio_net.ko"),
        "boot modules are in the image"
    );

    // The image flattens back to the initrd the Cargo path makes from the
    // same inputs (kernel and CA bundle included).
    let direct = scratch.path().join("direct.cpio.gz");
    let ca_arg = "/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt";
    let kernel = workspace_root().join(".cache/kernel/vmlinuz");
    let kernel = kernel.to_str().unwrap();
    cargo_path_initrd(&direct, &["--kernel", kernel, "--file", ca_arg]);
    let from_image = scratch.path().join("from-image.cpio.gz");
    let layout_str = layout.to_str().unwrap();
    cargo_path_initrd(
        &from_image,
        &[
            "--kernel",
            kernel,
            "--file",
            ca_arg,
            "--from-oci",
            layout_str,
        ],
    );
    assert_eq!(sha256(&direct), sha256(&from_image));
}

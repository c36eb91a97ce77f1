//! Fixtures for Ember's integration tests. Each real peer (swtpm, dnsmasq,
//! `ember serve`, QEMU) is started by a fixture that picks free ports, waits
//! for readiness and stops its own process by PID when dropped.

#![forbid(unsafe_code)]

// The Debian package installed with dpkg, its service unit run as systemd would.
pub mod console;
pub mod deb;
pub mod dnsmasq;
// A TCG event log writer: host tests that play the firmware on swtpm.
pub mod eventlog;
pub mod load;
pub mod netns;
pub mod postgres;
pub mod process;
// A TCP proxy that drops chosen connections (an on-path attacker).
pub mod proxy;
// `ember serve` with a fresh state folder (attestation and overlay tests).
pub mod server;
pub mod swtpm;
pub mod tree;
pub mod webdriver;

use std::path::PathBuf;

/// The repository root (the workspace that holds this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate lives one level below the workspace root")
        .to_path_buf()
}

/// A fresh scratch directory under the system temp dir, removed on drop.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ember-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        ScratchDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::env::var_os("EMBER_KEEP_SCRATCH").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The profile directory (`target/<profile>`) of the running test binary,
/// where the workspace's binaries of the same profile are built.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current executable");
    // Tests run from target/<profile>/deps/, binaries (ember-lab) from
    // target/<profile>/.
    let dir = exe.parent().expect("executable has a directory");
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("deps") => dir.parent().expect("deps has a parent").to_path_buf(),
        _ => dir.to_path_buf(),
    }
}

/// The `ember` host tool built with the same profile as this test
/// (`cargo build [--release] -p ember-cli` must have run first; scripts/test does).
pub fn ember_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("EMBER_BIN") {
        return PathBuf::from(p);
    }
    let p = profile_dir().join("ember");
    assert!(
        p.exists(),
        "{} missing: run `cargo build -p ember-cli` with this test's profile first",
        p.display()
    );
    p
}

/// The `ember` host tool built with the `test-hooks` feature (the load
/// test's `--test-replayable-sessions`), kept apart from the release binary
/// in its own folder: `bash scripts/build-test-hooks` builds it into
/// `target/test-hooks/ember` (scripts/test and scripts/bench-server do).
pub fn ember_test_hooks_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("EMBER_TEST_HOOKS_BIN") {
        return PathBuf::from(p);
    }
    let p = profile_dir()
        .parent()
        .expect("profile dir has a parent")
        .join("test-hooks/ember");
    assert!(
        p.exists(),
        "{} missing: run `bash scripts/build-test-hooks` first",
        p.display()
    );
    p
}

// A Kubernetes API test double (nodes) and the stand-in runtime's overlay.
pub mod kubeapi;

pub mod overlay;

// Booting initrds in QEMU through qemu/boot.
pub mod qemu;

// A whole node lab: API double, boot server, TPM, initrd, disk.
pub mod lab;

// Secure Boot: test-made keys, an enrolled OVMF variable store, signing.
pub mod secureboot;

// Test certificates and a static HTTPS server (openssl).
pub mod pki;

// Reading rendered pictures (timeline tests).
pub mod png;

/// `len` incompressible bytes (xorshift64 from `seed`): a payload that
/// still spans several sealed chunks after compression.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

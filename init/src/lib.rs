//! Ember's PID 1. [`boot`] is the seed's boot sequence, one phase per
//! call; the other modules are the mechanisms those phases use. The rooms:
//!
//! | room | holds |
//! |---|---|
//! | [`boot`], [`phase`] | the sequence; phase logging (`phase=NAME status=ok took=..`) |
//! | [`rootfs`], [`mounts`], [`cmdline`], [`kmod`], [`inventory`] | the early phases: tmpfs root, API filesystems, `ember.*` keys, kernel modules, what the node has |
//! | [`tpm`], [`measure`] | the TPM device (metered) and PCR 11: the initrd's measurement, "leaving initrd" |
//! | [`network`] | DHCP bring-up, the lease kept for the node's life, the CA bundle |
//! | [`session`] | the boot server: attest (retries, failover), fetch the overlay, report |
//! | [`overlay`] | the one sealed-overlay pipeline into `/` (network and last-known-good) |
//! | [`lkg`] | last-known-good: slot decisions, records, ESP writes, the sealed key |
//! | [`nodeconf`], [`storage`] | node.conf; read-only root, writable paths, scratch disk, sysctls |
//! | [`ready`] | the runtime as a child, readiness probes |
//! | [`supervisor`], [`power`], [`console`], [`clock`], [`fsutil`], [`disks`] | PID 1's plumbing |
//! | [`testhook`] | `ember.test=poweroff|fetch` stops for the QEMU tests |
//!
//! Everything here is `no_std` + alloc on rustix's linux_raw backend. The
//! binary (`main.rs`) only supplies program start, the allocator and the
//! panic handler; unit tests run the pure parts on the host.
#![cfg_attr(not(test), no_std)]
extern crate alloc;

pub mod boot;
pub mod clock;
pub mod cmdline;
pub mod console;
pub mod disks;
pub mod error;
pub mod fsutil;
pub mod inventory;
pub mod kmod;
pub mod lkg;
pub mod measure;
pub mod mounts;
pub mod network;
pub mod nodeconf;
pub mod overlay;
pub mod phase;
pub mod power;
pub mod ready;
pub mod rootfs;
pub mod session;
pub mod storage;
pub mod supervisor;
pub mod testhook;
pub mod tpm;

pub use error::{Error, ErrorKind};

//! Ember's PID 1. [`boot`] is the seed's boot sequence, one phase per
//! call; the other modules are the mechanisms those phases use. The rooms
//! (the table is also the contributors' book page "Layout and the init's
//! rooms", which includes this file, so the two cannot drift):
//!
#![doc = include_str!("rooms.md")]
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

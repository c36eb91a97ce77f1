//! Ember's PID 1. `boot::run` is the seed's boot sequence, one phase per
//! call; the other modules are the mechanisms those phases use.
//!
//! Everything here is `no_std` + alloc on rustix's linux_raw backend. The
//! binary (`main.rs`) only supplies program start, the allocator and the
//! panic handler; unit tests run the pure parts on the host.
#![cfg_attr(not(test), no_std)]
extern crate alloc;

pub mod attest;
pub mod boot;
pub mod clock;
pub mod cmdline;
pub mod console;
pub mod error;
pub mod esp;
pub mod fsutil;
pub mod json;
pub mod kmod;
pub mod lkg;
pub mod mounts;
pub mod network;
pub mod nodeconf;
pub mod power;
pub mod probe;
pub mod rootfs;
pub mod runtime;
pub mod storage;
pub mod supervisor;
pub mod trust;

pub use error::Error;

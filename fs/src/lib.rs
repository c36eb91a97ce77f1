//! `ember-fs`: the file formats a node reads and the host writes: the initrd's
//! newc cpio, the kernel's modules.dep, gzip, and (in `tar`) the overlay
//! extractor.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
extern crate alloc;

pub mod cpio;
pub mod crc32;
pub mod efivar;
mod error;
pub mod gpt;
pub mod gzip_writer;
pub mod hex;
pub mod link;
pub mod modules_dep;
pub mod quoted;
pub mod tar;

pub use error::Error;

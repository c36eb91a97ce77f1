//! Unified kernel images on the command line: `ember uki build` (the image
//! is assembled by `ember_build::uki`) and `ember policy predict` (the PCRs
//! it boots to, predicted by `ember_server::uki::measure`) read their
//! inputs here.

use std::path::Path;

use anyhow::{Context, Result};

/// Debian's systemd-stub (package systemd-boot-efi, systemd 252).
pub const DEBIAN_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// Reads a whole input file, naming it on error.
pub fn read_input(what: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

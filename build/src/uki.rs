//! Unified kernel images: the kernel, initrd, command line and os-release
//! of one Ember boot in a single PE file on systemd-stub, which measures
//! them into PCR 11 before it starts the kernel (the server predicts that
//! PCR 11 with `ember_server::uki::measure`).

use anyhow::{bail, Result};

use crate::pe;

/// The parts of a UKI. Empty optional parts get no section (the stub then
/// neither uses nor measures them).
pub struct Parts<'a> {
    pub linux: &'a [u8],
    pub initrd: &'a [u8],
    pub cmdline: &'a [u8],
    pub osrel: &'a [u8],
    pub pcrpkey: &'a [u8],
}

/// os-release for the .osrel section when none is given: fixed text, so
/// the UKI (and its PCR 11) depends only on the other inputs.
pub fn default_os_release() -> String {
    format!(
        "NAME=\"Ember\"\nID=ember\nVERSION_ID={}\nPRETTY_NAME=\"Ember {}\"\n",
        env!("CARGO_PKG_VERSION"),
        env!("CARGO_PKG_VERSION")
    )
}

/// Appends the parts to `stub` as .osrel, .cmdline, .pcrpkey, .initrd and
/// .linux (the order ukify uses: small sections first, the kernel last).
pub fn assemble(stub: &[u8], parts: &Parts<'_>) -> Result<Vec<u8>> {
    if parts.linux.is_empty() {
        bail!("the kernel image is empty");
    }
    if parts.cmdline.contains(&0) {
        bail!("the command line contains a NUL byte");
    }
    let sections: Vec<(&str, &[u8])> = [
        (".osrel", parts.osrel),
        (".cmdline", parts.cmdline),
        (".pcrpkey", parts.pcrpkey),
        (".initrd", parts.initrd),
        (".linux", parts.linux),
    ]
    .into_iter()
    .filter(|(_, data)| !data.is_empty())
    .collect();
    Ok(pe::append_sections(stub, &sections)?)
}

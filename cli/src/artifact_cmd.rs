//! `ember artifact`: publishes static boot artifacts (kernel, initrd, iPXE
//! scripts), served by content hash at /v1/boot/SHA256 on `ember serve`'s
//! listeners (`--http-listen` for firmware that cannot do TLS).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use ember_server::overlay::{store_boot_artifact, store_boot_bytes};
use ember_server::store::{hex, StateDir};

#[derive(Args)]
pub struct ArtifactArgs {
    #[command(subcommand)]
    pub cmd: ArtifactCmd,
}

#[derive(Subcommand)]
pub enum ArtifactCmd {
    /// Stores FILE under its SHA-256 and prints the path it is served at.
    Add(AddArgs),
    /// Publishes a kernel, an initrd and an iPXE script that boots them, and
    /// prints the script's path: give the DHCP server (or QEMU's
    /// `-netdev user,bootfile=`) http://SERVER:PORT followed by that path.
    Ipxe(IpxeArgs),
}

#[derive(Args)]
pub struct AddArgs {
    #[arg(long, env = "EMBER_STATE", default_value = "/var/lib/ember")]
    pub state: PathBuf,
    /// File to publish.
    pub file: PathBuf,
}

#[derive(Args)]
pub struct IpxeArgs {
    #[arg(long, env = "EMBER_STATE", default_value = "/var/lib/ember")]
    pub state: PathBuf,
    /// The kernel image (an EFI stub kernel for UEFI firmware).
    #[arg(long)]
    pub kernel: PathBuf,
    /// The Ember initrd.
    #[arg(long)]
    pub initrd: PathBuf,
    /// The kernel command line (e.g. `console=ttyS0 ember.attest_url=https://…`).
    #[arg(long, default_value = "")]
    pub append: String,
}

pub fn run(a: ArtifactArgs) -> Result<()> {
    match a.cmd {
        ArtifactCmd::Add(a) => {
            let blob = store_boot_artifact(&StateDir::new(&a.state), &a.file)?;
            println!("/v1/boot/{} ({} bytes)", hex(&blob.sha256), blob.size);
        }
        ArtifactCmd::Ipxe(a) => {
            let state = StateDir::new(&a.state);
            let kernel = hex(&store_boot_artifact(&state, &a.kernel)?.sha256);
            let initrd = hex(&store_boot_artifact(&state, &a.initrd)?.sha256);
            let script = ipxe_script(&kernel, &initrd, &a.append)?;
            let blob = store_boot_bytes(&state, script.as_bytes())?;
            println!("/v1/boot/{}", hex(&blob.sha256));
        }
    }
    Ok(())
}

/// An iPXE script booting the artifacts `kernel` and `initrd` (SHA-256 hex).
/// The URIs are relative: iPXE resolves them against the script's own URI,
/// so the script does not depend on the server's address. `initrd=initrd`
/// is how the kernel's EFI stub finds the image iPXE registered under
/// that name. iPXE puts the kernel's image name first on the command
/// line; naming it `vmlinuz` lets the init drop it from last-known-good.
fn ipxe_script(kernel: &str, initrd: &str, append: &str) -> Result<String> {
    if append.contains(['\n', '\r']) {
        bail!("--append must be one line");
    }
    let cmdline = format!("initrd=initrd {append}");
    Ok(format!(
        "#!ipxe\n\
         # Ember network boot, written by `ember artifact ipxe`.\n\
         echo ember: iPXE loading the kernel and initrd from the boot server\n\
         kernel --name vmlinuz {kernel} {}\n\
         initrd --name initrd {initrd}\n\
         boot\n",
        cmdline.trim_end()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_boots_both_artifacts_by_relative_uri() {
        let s = ipxe_script("aa", "bb", "console=ttyS0 ember.attest_url=https://x").unwrap();
        assert!(s.starts_with("#!ipxe\n"));
        assert!(s.contains(
            "\nkernel --name vmlinuz aa initrd=initrd console=ttyS0 ember.attest_url=https://x\n"
        ));
        assert!(s.contains("\ninitrd --name initrd bb\n"));
        assert!(s.ends_with("boot\n"));
        assert!(ipxe_script("aa", "bb", "x\nshell").is_err());
    }
}

//! `ember artifact`: publishes static boot artifacts (kernel, initrd, UKI,
//! iPXE scripts), served by content hash at /v1/boot/SHA256 on `ember serve`'s
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
    /// Publishes a kernel and an initrd (or one UKI) and an iPXE script that
    /// boots them, and prints the script's path: give the DHCP server (or
    /// QEMU's `-netdev user,bootfile=`) http://SERVER:PORT followed by that path.
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
    #[arg(long, required_unless_present = "uki", requires = "initrd")]
    pub kernel: Option<PathBuf>,
    /// The Ember initrd.
    #[arg(long, requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// The kernel command line (e.g. `console=ttyS0 ember.attest_url=https://…`).
    #[arg(long, default_value = "", conflicts_with = "uki")]
    pub append: String,
    /// A unified kernel image (`ember uki build`) to chain instead of a
    /// kernel and initrd; its command line is the one it carries.
    #[arg(long, conflicts_with_all = ["kernel", "initrd"])]
    pub uki: Option<PathBuf>,
}

pub fn run(a: ArtifactArgs) -> Result<()> {
    match a.cmd {
        ArtifactCmd::Add(a) => {
            let blob = store_boot_artifact(&StateDir::new(&a.state), &a.file)?;
            println!("/v1/boot/{} ({} bytes)", hex(&blob.sha256), blob.size);
        }
        ArtifactCmd::Ipxe(a) => {
            let state = StateDir::new(&a.state);
            let script = match (&a.uki, &a.kernel, &a.initrd) {
                (Some(uki), _, _) => {
                    let cmdline = uki_cmdline(uki)?;
                    let uki = hex(&store_boot_artifact(&state, uki)?.sha256);
                    ipxe_uki_script(&uki, &cmdline)?
                }
                (None, Some(kernel), Some(initrd)) => {
                    let kernel = hex(&store_boot_artifact(&state, kernel)?.sha256);
                    let initrd = hex(&store_boot_artifact(&state, initrd)?.sha256);
                    ipxe_script(&kernel, &initrd, &a.append)?
                }
                _ => bail!("give --uki, or --kernel and --initrd"),
            };
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

/// The command line a UKI carries in its .cmdline section ("" if none).
pub(crate) fn uki_cmdline(path: &std::path::Path) -> Result<String> {
    let file = crate::uki::read_input("UKI", path)?;
    let img = ember_build::pe::PeImage::parse(&file)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if img.section(".linux").is_none() {
        bail!("{}: not a UKI (no .linux section)", path.display());
    }
    ember_server::uki::measure::embedded_cmdline(&file)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// An iPXE script chaining the UKI `uki` (SHA-256 hex). iPXE hands the
/// image its name and arguments as load options, and systemd-stub 252
/// without Secure Boot boots with load options instead of the embedded
/// .cmdline (measuring them into PCR 12): the script repeats the embedded
/// command line so the kernel sees the same one either way.
pub(crate) fn ipxe_uki_script(uki: &str, cmdline: &str) -> Result<String> {
    if cmdline.contains(['\n', '\r']) {
        bail!("the UKI's command line must be one line");
    }
    Ok(format!(
        "#!ipxe\n\
         # Ember network boot of a unified kernel image, written by `ember artifact ipxe --uki`.\n\
         echo ember: iPXE chaining the UKI from the boot server\n\
         chain --name uki.efi {uki} {}\n",
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

    #[test]
    fn the_uki_script_chains_the_uki_with_its_own_command_line() {
        let s = ipxe_uki_script("cc", "console=ttyS0 ember.test=poweroff").unwrap();
        assert!(s.starts_with("#!ipxe\n"));
        assert!(s.ends_with("\nchain --name uki.efi cc console=ttyS0 ember.test=poweroff\n"));
        assert!(!s.contains("\nkernel ") && !s.contains("\nboot\n"));
        assert!(ipxe_uki_script("cc", "x\nshell").is_err());
    }
}

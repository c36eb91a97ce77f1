//! `ember artifact add`: publishes a static boot artifact (kernel, initrd)
//! served by content hash at /v1/boot/SHA256.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::serve::store::{hex, StateDir};

#[derive(Args)]
pub struct ArtifactArgs {
    #[command(subcommand)]
    pub cmd: ArtifactCmd,
}

#[derive(Subcommand)]
pub enum ArtifactCmd {
    /// Stores FILE under its SHA-256 and prints the path it is served at.
    Add(AddArgs),
}

#[derive(Args)]
pub struct AddArgs {
    #[arg(long, env = "EMBER_STATE", default_value = "/var/lib/ember")]
    pub state: PathBuf,
    /// File to publish.
    pub file: PathBuf,
}

pub fn run(a: ArtifactArgs) -> Result<()> {
    let ArtifactCmd::Add(a) = a.cmd;
    let blob = crate::serve::overlay::store_boot_artifact(&StateDir::new(&a.state), &a.file)?;
    println!("/v1/boot/{} ({} bytes)", hex(&blob.sha256), blob.size);
    Ok(())
}

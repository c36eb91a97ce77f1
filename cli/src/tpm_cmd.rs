//! `ember tpm` subcommands.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum TpmCmd {}

pub fn run(cmd: TpmCmd) -> anyhow::Result<()> {
    match cmd {}
}

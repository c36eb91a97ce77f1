//! `ember tar` subcommands.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum TarCmd {}

pub fn run(cmd: TarCmd) -> anyhow::Result<()> {
    match cmd {}
}

//! `ember initrd` subcommands.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum InitrdCmd {}

pub fn run(cmd: InitrdCmd) -> anyhow::Result<()> {
    match cmd {}
}

//! `ember net` subcommands.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum NetCmd {}

pub fn run(cmd: NetCmd) -> anyhow::Result<()> {
    match cmd {}
}

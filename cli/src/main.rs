//! `ember`: the host-side tool. Builds initrds, runs the boot server, and
//! exposes each node subsystem (TPM, network, tar) for debugging.

mod initrd;
mod initrd_cmd;
mod net_cmd;
mod tar_cmd;
mod tpm_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ember", version, about = "Ember host tool and boot server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build initrd images.
    #[command(subcommand)]
    Initrd(initrd_cmd::InitrdCmd),
    /// Talk to a TPM (swtpm socket or /dev/tpmrm0).
    #[command(subcommand)]
    Tpm(tpm_cmd::TpmCmd),
    /// Network client tools (the node's HTTPS client).
    #[command(subcommand)]
    Net(net_cmd::NetCmd),
    /// Inspect and extract overlays as the node would.
    #[command(subcommand)]
    Tar(tar_cmd::TarCmd),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Initrd(cmd) => initrd_cmd::run(cmd),
        Command::Tpm(cmd) => tpm_cmd::run(cmd),
        Command::Net(cmd) => net_cmd::run(cmd),
        Command::Tar(cmd) => tar_cmd::run(cmd),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ember: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

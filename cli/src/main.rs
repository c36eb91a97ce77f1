//! `ember`: the host-side tool. Builds initrds, runs the boot server, and
//! exposes each node subsystem (TPM, network, tar) for debugging.

#![forbid(unsafe_code)]

mod admin_cmd;
mod artifact_cmd;
mod attest;
mod enroll_cmd;
mod image_cmd;
mod initrd;
mod initrd_cmd;
mod logging;
mod man_cmd;
mod net_cmd;
mod nodes_cmd;
mod oci;
mod overlay_cmd;
mod policy_cmd;
mod provenance;
mod rollout_cmd;
mod sbom;
mod serve_cmd;
mod state_args;
mod tar_cmd;
mod timeline_cmd;
mod tpm_cmd;
mod uki;
mod uki_cmd;
mod verify_cmd;

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
    /// Build OCI image layouts of the OS root filesystem.
    #[command(subcommand)]
    Image(image_cmd::ImageCmd),
    /// Talk to a TPM (swtpm socket or /dev/tpmrm0).
    #[command(subcommand)]
    Tpm(tpm_cmd::TpmCmd),
    /// Network client tools (the node's HTTPS client).
    #[command(subcommand)]
    Net(net_cmd::NetCmd),
    /// Inspect and extract overlays as the node would.
    #[command(subcommand)]
    Tar(tar_cmd::TarCmd),
    /// Draw a boot's phases from its serial log as an SVG timeline.
    Timeline(timeline_cmd::TimelineCmd),
    /// Run the boot server (attestation, sealed overlays, boot artifacts).
    Serve(serve_cmd::ServeArgs),
    /// Enroll a TPM by its EK certificate, EK public area or EK hash.
    Enroll(enroll_cmd::EnrollArgs),
    /// Publish and assign configuration overlays.
    #[command(subcommand)]
    Overlay(overlay_cmd::OverlayCmd),
    /// Set or show PCR policies.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCmd),
    /// Roll a group out to a newer UKI in waves gated on attested success.
    #[command(subcommand)]
    Rollout(rollout_cmd::RolloutCmd),
    /// List enrolled nodes and their boots.
    Nodes(nodes_cmd::NodesArgs),
    /// Run the node's attestation flow against a server from this machine.
    Attest(attest::AttestArgs),
    /// Publish a static boot artifact (kernel, initrd) by content hash.
    Artifact(artifact_cmd::ArtifactArgs),
    /// Build unified kernel images (kernel + initrd + command line on systemd-stub).
    #[command(subcommand)]
    Uki(uki_cmd::UkiCmd),
    /// Check an initrd's or UKI's signed provenance (in-toto, SLSA v1).
    Verify(verify_cmd::VerifyArgs),
    /// Administration: console operators' certificates.
    #[command(subcommand)]
    Admin(admin_cmd::AdminCmd),
    /// Write the manual pages (one per subcommand) into a folder.
    #[command(hide = true)]
    Man(man_cmd::ManArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    logging::init(match &cli.command {
        Command::Serve(a) => a.log_format,
        _ => logging::LogFormat::Text,
    });
    let result = match cli.command {
        Command::Initrd(cmd) => initrd_cmd::run(cmd),
        Command::Image(cmd) => image_cmd::run(cmd),
        Command::Tpm(cmd) => tpm_cmd::run(cmd),
        Command::Net(cmd) => net_cmd::run(cmd),
        Command::Tar(cmd) => tar_cmd::run(cmd),
        Command::Timeline(cmd) => timeline_cmd::run(cmd),
        Command::Serve(a) => serve_cmd::run(a),
        Command::Enroll(a) => enroll_cmd::run(a),
        Command::Overlay(cmd) => overlay_cmd::run(cmd),
        Command::Policy(cmd) => policy_cmd::run(cmd),
        Command::Rollout(cmd) => rollout_cmd::run(cmd),
        Command::Nodes(a) => nodes_cmd::run(a),
        Command::Attest(a) => attest::run(a),
        Command::Artifact(a) => artifact_cmd::run(a),
        Command::Uki(cmd) => uki_cmd::run(cmd),
        Command::Verify(a) => verify_cmd::run(a),
        Command::Admin(cmd) => admin_cmd::run(cmd),
        Command::Man(a) => man_cmd::run(a, <Cli as clap::CommandFactory>::command()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // Through the subscriber: `ember serve --log-format json`
            // reports why it stopped as a JSON line too.
            tracing::error!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

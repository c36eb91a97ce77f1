//! `ember-build`: the host-side builders of what a node boots and what it
//! receives, shared by the `ember` tool and the boot server.
//!
//! - [`pe`]: PE/COFF (PE32+) images: a checked view of their headers (the
//!   server reads the UKIs among its boot artifacts through it to measure
//!   them) and the one edit a UKI build makes, appending sections;
//! - [`uki`]: a unified kernel image from its parts on systemd-stub
//!   (`ember uki build`);
//! - [`overlay`]: an overlay as a deterministic tar of a directory, or a
//!   given tar re-encoded, in the compression asked for (`ember overlay
//!   publish`).
//!
//! Nothing here runs on a node: the node reads these formats with
//! ember-fs and ember-proto.

#![forbid(unsafe_code)]

pub mod overlay;
pub mod pe;
pub mod uki;

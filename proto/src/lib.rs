//! Ember's attestation protocol, shared by the boot server and the node.
//!
//! - [`msg`]: the versioned postcard messages (Start, Finish, Report) and the
//!   error body every refusal carries.
//! - [`keys`]: the session transcript, the proof of the activated secret and
//!   the overlay key, all derived the same way on both sides.
//! - [`sealed`]: the streaming AEAD format of a sealed overlay.
//! - [`client`]: the node's side of the protocol, over small traits for the
//!   TPM, the HTTPS transport and the extractor.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
extern crate alloc;

pub mod client;
pub mod error;
pub mod keys;
pub mod msg;
pub mod sealed;

pub use error::Error;
pub use msg::PROTOCOL_VERSION;
#[cfg(feature = "fs")]
pub mod fs;
#[cfg(feature = "host")]
pub mod host;
#[cfg(feature = "net")]
pub mod net;
#[cfg(feature = "tpm")]
pub mod tpm;

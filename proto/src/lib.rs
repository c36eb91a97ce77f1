//! Ember's attestation protocol, shared by the boot server and the node.
//!
//! - [`msg`]: the versioned postcard messages (Start, Finish, Report) and the
//!   error body every refusal carries.
//! - [`keys`]: the session transcript, the proof of the activated secret and
//!   the wrapped overlay data key, all derived the same way on both sides.
//! - [`manifest`]: the signed overlay manifest (one format for the network
//!   path and last-known-good).
//! - [`sealed`]: the streaming AEAD format of a sealed overlay blob.
//! - [`timeline`]: a boot's phase table, bounded and versioned, sent after
//!   the Report.
//! - [`untrusted`]: a node's text (reasons, console lines) shown to an
//!   operator with control and bidi characters escaped.
//! - [`client`]: the node's side of the protocol, over small traits for the
//!   TPM, the HTTPS transport and the extractor; features `tpm`, `net` and
//!   `fs` implement them over `ember-tpm`, `ember-net` and `ember-fs`.
//!
//! PID 1's sequence (`no_std` + alloc; features `tpm`, `net`, `fs`):
//!
//! ```ignore
//! let url = client::Url::parse(attest_url)?;                       // ember.attest_url
//! let https = ember_net::https::Client::new(&cas, &lease_dns);     // bundled CA (DER)
//! let mut http = net::NetTransport::new(&https, &url);
//! let mut tpm = ember_tpm::Tpm::new(ember_tpm::DeviceTransport::open_default()?);
//! let mut dev = tpm::TpmAttestor::new(&mut tpm);
//! let cred = client::attest(&mut dev, &mut http, &url, &event_log)?; // steps 1-2
//! dev.close()?;                                                    // flush EK/AK
//! let trust = manifest::PublicKey::from_pem(&manifest_pub)?;        // /etc/ember/manifest.pub
//! let envelope = cred.open_grant(&trust)?;                         // signature, key, commitment
//! let compression = envelope.manifest.compression.into();          // gzip, lz4 or none
//! let mut x = ember_fs::tar::Extractor::authenticated(sink, Limits::default(), compression);
//! client::fetch_overlay(&mut http, &url, &envelope, &mut x)?;     // step 3
//! // ... start rke2, wait for the node ...
//! client::report(&mut http, &url, &cred, msg::Outcome::Joined, Some(envelope.manifest.version_id), "")?; // step 4
//! ```
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]
extern crate alloc;

pub mod client;
pub mod ct;
pub mod error;
pub mod keys;
pub mod manifest;
pub mod msg;
pub mod retry;
pub mod sealed;
pub mod slot;
pub mod timeline;
pub mod untrusted;

pub use error::{Error, ErrorKind};
pub use msg::PROTOCOL_VERSION;
#[cfg(feature = "fs")]
pub mod fs;
#[cfg(feature = "host")]
pub mod host;
#[cfg(feature = "net")]
pub mod net;
#[cfg(feature = "test-hooks")]
pub mod tap;
#[cfg(feature = "tpm")]
pub mod tpm;

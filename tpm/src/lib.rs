//! TPM 2.0 for Ember, without a TSS: commands marshalled by hand into one
//! reused buffer (framing and response codes checked with `tpm2-protocol`),
//! sent over /dev/tpmrm0 on the node or swtpm's raw data socket on a host.
//!
//! * Node side (`no_std` + alloc, used by PID 1): [`Tpm`] over a
//!   [`Transport`] ([`DeviceTransport`]; with `std` also [`SocketTransport`]),
//!   one typed method per TPM command, [`PublicArea`] templates for EKs, AKs,
//!   storage keys and sealed objects, TPM-style names and PCR digests, and
//!   [`Attest`] parsing. No RSA or ECC arithmetic happens here: the TPM does it.
//! * Host side (feature `host`): [`host::make_credential`],
//!   [`host::verify_quote`], [`host::verify_ek_certificate`] and
//!   [`host::ek_certificate_matches`] for the boot server.
//!
//! # Node side: what an attestation client does
//!
//! ```no_run
//! use ember_tpm::*;
//! # fn main() -> Result<()> {
//! let mut tpm = Tpm::new(DeviceTransport::open_default()?); // /dev/tpmrm0, else /dev/tpm0
//! tpm.startup(true)?; // TPM_RC_INITIALIZE (firmware already did it) is fine
//! let ek = tpm.create_ek(EkTemplate::Rsa2048)?;
//! let ek_cert = tpm.nv_read_ek_certificate(EkTemplate::Rsa2048)?; // DER, for the server
//! let srk = tpm.create_srk()?;
//! let (ak_blob, ak) = tpm.create_ak(srk.handle, AkKind::EccP256)?;
//! // Send ek.public.to_bytes()?, ek_cert and ak.public.to_bytes()? to the server;
//! // it answers with host::make_credential(..) output:
//! # let (credential_blob, encrypted_secret) = (vec![], vec![]);
//! let secret = tpm.activate_credential(&ak, &ek, &credential_blob, &encrypted_secret)?;
//! let selection = PcrSelection::parse("sha256:0,1,2,3,4,5,6,7").unwrap();
//! # let nonce = [0u8; 16];
//! let quote = tpm.quote(ak.handle, &nonce, &selection)?; // .attest, .signature to the server
//! let pcrs = tpm.pcr_read(&selection)?;
//! for h in [ak.handle, srk.handle, ek.handle] {
//!     tpm.flush_context(h)?;
//! }
//! # let _ = (ek_cert, ak_blob, secret, quote, pcrs);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]
extern crate alloc;

mod attest;
pub mod consts;
pub mod counter;
mod device;
mod error;
pub mod eventlog;
mod nv;
mod pcr;
mod public;
mod session;
#[cfg(feature = "std")]
mod socket;
mod tpm;
mod transport;
mod wire;

/// Hex test vectors (golden bytes from tpm2-tools) for the unit tests.
#[cfg(test)]
mod test_hex {
    pub fn unhex(s: &str) -> alloc::vec::Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}

#[cfg(feature = "host")]
pub mod host;

/// Response-code types from `tpm2-protocol`, for matching on [`Error::is_tpm`].
pub mod tpm2_rc {
    pub use tpm2_protocol::data::{TpmRc, TpmRcBase, TpmRcIndex};
}

pub use attest::{Attest, ClockInfo, QuoteAttest, Signature};
pub use consts::HashAlg;
pub use consts::{EK_CERT_ECC_NV_INDEX, EK_CERT_ECC_P384_NV_INDEX, EK_CERT_RSA_NV_INDEX};
pub use device::DeviceTransport;
pub use error::{Error, ErrorKind, ResponseCode, Result};
pub use nv::attributes as nv_attributes;
pub use pcr::{pcr_composite_digest, PcrSelection, PcrValue, PcrValues};
pub use public::{
    ak_template, attributes, ek_template, name_of, sealed_object_template, srk_template, AkKind,
    EccPoint, EkTemplate, PublicArea, PublicParams, Scheme, SymDef, Unique,
};
pub use session::{policy_pcr_digest, NvCompare, PolicyDigest, PolicySession, SessionKind};
#[cfg(feature = "std")]
pub use socket::{open_transport, SocketTransport};
pub use tpm::{
    AlgProperty, Auth, Capabilities, CreatedKey, Hierarchy, LoadedObject, NvPublic, QuoteResult,
    SealedObject, Tpm, TpmProperty, MAX_RETRIES,
};
#[cfg(any(test, feature = "test-hooks"))]
pub use transport::FakeTransport;
pub use transport::{Transport, MAX_RESPONSE_SIZE};
pub use wire::Reader;

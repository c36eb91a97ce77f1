//! The server's side of TPM attestation (feature `host`): wrapping a secret
//! for an EK with MakeCredential, verifying quotes, and validating EK
//! certificates. Uses RustCrypto; never compiled into the init.

mod credential;
mod ekcert;
mod kdf;
mod quote;

pub use credential::{make_credential, make_credential_with_seed, Credential};
pub use ekcert::{
    certificates_from_pem_or_der, ek_certificate_matches, parse_ek_certificate,
    verify_ek_certificate, EkCertKey, EkCertificate, CA_KEY_USAGE_CHECK, CRITICAL_EXTENSION_CHECK,
    EKU_CHECK, PATH_LEN_CHECK, RSA_SIZE_CHECK,
};
pub use kdf::{kdf_a, kdf_e};
pub use quote::{verify_quote, QuoteInfo};

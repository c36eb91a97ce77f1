//! Who may open the console: operators holding a client certificate that
//! `ember admin operator issue` made, signed by the state folder's
//! operator CA (`tls/operator-ca.pem`, apart from the CA that signs the
//! server's certificate, so no server or node certificate is ever an
//! operator's), and not revoked: the `operators` table decides on every
//! request, so a revocation holds at once on every replica. Nodes
//! authenticate with bearer credentials, which the console never reads.
//!
//! Forms that change something (allow rollback) carry a CSRF token bound
//! to the operator's certificate: a browser sends a client certificate on
//! any site's request, so the certificate alone does not prove the operator
//! meant it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::store::StateDir;

/// The operator CA's certificate and key in the state folder.
pub fn operator_ca_paths(state: &StateDir) -> (PathBuf, PathBuf) {
    let dir = state.tls();
    (dir.join("operator-ca.pem"), dir.join("operator-ca.key"))
}

/// The operator CA's parameters. Fixed, so the CA certificate made again
/// from its stored key to sign a new operator certificate has the same
/// subject and key identifier as the stored one the console trusts.
fn ca_params() -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Ember console operator CA");
    dn.push(DnType::OrganizationName, "Ember");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2074, 1, 1);
    Ok(p)
}

/// Loads the operator CA's key, creating the CA on first use.
fn ensure_ca(state: &StateDir) -> Result<KeyPair> {
    let (cert, key) = operator_ca_paths(state);
    if key.exists() && cert.exists() {
        let pem =
            std::fs::read_to_string(&key).with_context(|| format!("read {}", key.display()))?;
        return KeyPair::from_pem(&pem).with_context(|| format!("parse {}", key.display()));
    }
    std::fs::create_dir_all(state.tls())?;
    let kp = KeyPair::generate().context("generate the operator CA key")?;
    let ca = ca_params()?
        .self_signed(&kp)
        .context("self-sign the operator CA")?;
    crate::tls::write_private(&key, &kp.serialize_pem())?;
    crate::tls::write_public(&cert, &ca.pem())?;
    Ok(kp)
}

/// The operator CA certificate the console trusts (made on first use).
pub fn operator_ca(state: &StateDir) -> Result<PathBuf> {
    ensure_ca(state)?;
    Ok(operator_ca_paths(state).0)
}

/// A newly issued operator certificate.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    /// SHA-256 of the certificate's DER: how the console knows it.
    pub sha256: [u8; 32],
}

/// Whether `name` may be an operator's name: what the floor log and the
/// certificate's subject say, so plain and short.
pub fn valid_operator_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// Signs a client certificate for operator `name` with the operator CA,
/// valid for `days` from now. The caller records it (`operators::insert`).
pub fn issue(state: &StateDir, name: &str, days: u32) -> Result<Issued> {
    anyhow::ensure!(
        valid_operator_name(name),
        "operator name {name:?}: 1 to 64 of [A-Za-z0-9-_.@]"
    );
    let ca_key = ensure_ca(state)?;
    let ca = ca_params()?.self_signed(&ca_key)?;
    let key = KeyPair::generate().context("generate the operator key")?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "Ember operators");
    p.distinguished_name = dn;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let now = std::time::SystemTime::now();
    p.not_before = (now - std::time::Duration::from_secs(3600)).into();
    p.not_after = (now + std::time::Duration::from_secs(u64::from(days) * 86_400)).into();
    let cert = p
        .signed_by(&key, &ca, &ca_key)
        .context("sign the operator certificate")?;
    Ok(Issued {
        sha256: Sha256::digest(cert.der()).into(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The console listener's TLS: the server's certificate, and client
/// certificates checked against the operator CA. A client without one
/// still connects, so the console can answer 401 with what to do.
pub fn server_config(
    identity: &crate::tls::Identity,
    operator_ca: &Path,
) -> Result<Arc<rustls::ServerConfig>> {
    let pem = std::fs::read(&identity.cert_chain)
        .with_context(|| format!("read {}", identity.cert_chain.display()))?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&pem).collect::<std::result::Result<_, _>>()?;
    let key_pem = std::fs::read(&identity.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .with_context(|| format!("parse key {}", identity.key.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let ca_pem = std::fs::read(operator_ca)?;
    for c in CertificateDer::pem_slice_iter(&ca_pem) {
        roots.add(c?).context("operator CA certificate")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .context("client certificate verifier")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The key CSRF tokens are made with, shared by replicas through the
/// state folder's tls/ (as the server certificate is).
pub fn csrf_key(state: &StateDir) -> Result<[u8; 32]> {
    let path = state.tls().join("console-csrf.key");
    if let Ok(hexed) = std::fs::read_to_string(&path) {
        if let Some(k) =
            crate::store::unhex(hexed.trim()).and_then(|k| <[u8; 32]>::try_from(k).ok())
        {
            return Ok(k);
        }
    }
    let mut k = [0u8; 32];
    getrandom::getrandom(&mut k).context("getrandom")?;
    std::fs::create_dir_all(state.tls())?;
    crate::tls::write_private(&path, &crate::store::hex(&k))?;
    Ok(k)
}

/// The CSRF token of the operator holding certificate `cert`.
pub fn csrf_token(key: &[u8; 32], cert: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(b"ember console csrf v1");
    h.update(key);
    h.update(cert);
    crate::store::hex(&h.finalize())
}

/// Whether `given` is that operator's token (constant time).
pub fn csrf_ok(key: &[u8; 32], cert: &[u8; 32], given: &str) -> bool {
    let want = csrf_token(key, cert);
    given.len() == want.len() && ember_proto::keys::ct_eq(given.as_bytes(), want.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_certificates_chain_to_the_stored_ca_and_server_ones_do_not() {
        let d = tempdir();
        let state = StateDir::new(&d);
        let a = issue(&state, "alice", 30).unwrap();
        let b = issue(&state, "bob", 30).unwrap();
        assert_ne!(a.sha256, b.sha256);
        let mut roots = rustls::RootCertStore::empty();
        let ca = std::fs::read(operator_ca(&state).unwrap()).unwrap();
        roots
            .add(CertificateDer::from_pem_slice(&ca).unwrap())
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let now = rustls::pki_types::UnixTime::now();
        for issued in [&a, &b] {
            let leaf = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
            assert_eq!(
                <[u8; 32]>::from(Sha256::digest(leaf.as_ref())),
                issued.sha256
            );
            verifier.verify_client_cert(&leaf, &[], now).unwrap();
        }
        // The server's own certificate (another CA) never opens the console.
        let (id, _) = crate::tls::ensure_identity(&state, &[]).unwrap();
        let server = std::fs::read(&id.cert_chain).unwrap();
        let server = CertificateDer::from_pem_slice(&server).unwrap();
        assert!(verifier.verify_client_cert(&server, &[], now).is_err());
        assert!(issue(&state, "no spaces", 1).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "ember-console-auth-{}-{}",
            std::process::id(),
            crate::store::now_ms()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_csrf_token_is_the_operators_own() {
        let k = [7; 32];
        let t = csrf_token(&k, &[1; 32]);
        assert!(csrf_ok(&k, &[1; 32], &t));
        assert!(!csrf_ok(&k, &[2; 32], &t));
        assert!(!csrf_ok(&[8; 32], &[1; 32], &t));
        assert!(!csrf_ok(&k, &[1; 32], ""));
    }
}

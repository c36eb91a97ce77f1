//! The server's TLS identity: on first start with an empty state folder an
//! Ember CA and a server certificate signed by it (rcgen, ECDSA P-256, what
//! the node's embedded TLS client verifies); or an operator's certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::store::StateDir;

pub struct Identity {
    pub cert_chain: PathBuf,
    pub key: PathBuf,
    /// Set when Ember made the CA (and nodes' initrds must bundle it).
    pub ca: Option<PathBuf>,
}

pub(crate) fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub(crate) fn write_public(path: &Path, contents: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Loads the state folder's CA and server certificate, creating them on
/// first start with `names` (DNS names or IP addresses) as the server's SANs.
pub fn ensure_identity(state: &StateDir, names: &[String]) -> Result<(Identity, bool)> {
    let dir = state.tls();
    let (ca, cert, key) = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    if cert.exists() && key.exists() {
        return Ok((
            Identity {
                cert_chain: cert,
                key,
                ca: Some(ca),
            },
            false,
        ));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let (ca_cert, ca_key) = new_ca()?;
    let (server_cert, server_key) = new_server_cert(names, &ca_cert, &ca_key)?;
    // The CA key is kept so an operator can re-issue the server certificate.
    write_private(&dir.join("ca.key"), &ca_key.serialize_pem())?;
    write_public(&ca, &ca_cert.pem())?;
    write_private(&key, &server_key.serialize_pem())?;
    write_public(&cert, &format!("{}{}", server_cert.pem(), ca_cert.pem()))?;
    Ok((
        Identity {
            cert_chain: cert,
            key,
            ca: Some(ca),
        },
        true,
    ))
}

/// A self-signed CA that may sign server certificates only (path length 0).
fn new_ca() -> Result<(Certificate, KeyPair)> {
    let ca_key = KeyPair::generate().context("generate CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Ember boot server CA");
    dn.push(DnType::OrganizationName, "Ember");
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    ca_params.not_after = rcgen::date_time_ymd(2074, 1, 1);
    let ca_cert = ca_params.self_signed(&ca_key).context("self-sign CA")?;
    Ok((ca_cert, ca_key))
}

/// A server certificate for `names` (localhost and 127.0.0.1 when none)
/// signed by the CA.
fn new_server_cert(
    names: &[String],
    ca_cert: &Certificate,
    ca_key: &KeyPair,
) -> Result<(Certificate, KeyPair)> {
    let mut names = names.to_vec();
    if names.is_empty() {
        names = vec!["localhost".into(), "127.0.0.1".into()];
    }
    let server_key = KeyPair::generate().context("generate server key")?;
    let mut params = CertificateParams::new(names.clone()).context("server certificate names")?;
    let mut dn = DistinguishedName::new();
    // The node's TLS verifier matches DNS names against the CN too.
    dn.push(DnType::CommonName, names[0].clone());
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2074, 1, 1);
    let server_cert = params
        .signed_by(&server_key, ca_cert, ca_key)
        .context("sign server certificate")?;
    Ok((server_cert, server_key))
}

/// rustls configuration for the HTTPS listener.
pub fn server_config(id: &Identity) -> Result<Arc<rustls::ServerConfig>> {
    let pem = std::fs::read(&id.cert_chain)
        .with_context(|| format!("read {}", id.cert_chain.display()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("parse {}", id.cert_chain.display()))?;
    if chain.is_empty() {
        bail!("{}: no certificate", id.cert_chain.display());
    }
    let key_pem = std::fs::read(&id.key).with_context(|| format!("read {}", id.key.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .with_context(|| format!("parse key {}", id.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

//! embedded-tls glue: the certificate verifier (chain to a bundled CA, IPv4
//! and DNS SANs, validity at the current time, P-256 ECDSA), the crypto
//! provider (getrandom RNG, optional P-256 client identity), the one cipher
//! suite the node offers (TLS_CHACHA20_POLY1305_SHA256) and the embedded-io
//! transport over a kernel TCP socket with timeouts.
//!
//! Verification has no off switch: the only way through `verify_certificate`
//! is a chain that ends at one of the given CAs.

use crate::clock;
use crate::error::{Error, Result};
#[cfg(feature = "client-cert")]
use crate::x509::Der;
use crate::x509::{self, Certificate};
use crate::ErrorKind;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::Cell;
use core::time::Duration;
use embedded_tls::{
    CertificateEntryRef, CertificateRef, CertificateVerifyRef, CryptoProvider, SignatureScheme,
    TlsCipherSuite, TlsError, TlsVerifier,
};
use ember_aead::aead::consts::{U12, U32, U54};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use rustix::event::PollFlags;
use rustix::fd::{AsFd, OwnedFd};
use rustix::net::{self, RecvFlags, SendFlags};
use sha2::Digest;

/// TLS_CHACHA20_POLY1305_SHA256 (RFC 8446 B.4, 0x1303), the only suite the
/// node offers. The overlay is sealed with ChaCha20-Poly1305 too, so /init
/// carries one AEAD: no AES or GHASH code (about 14 KB of /init), and in
/// software (no AES-NI, as under TCG) ChaCha20-Poly1305 is about twice as
/// fast as AES-128-GCM. rustls and OpenSSL servers enable it by default.
pub struct Chacha20Poly1305Sha256;

impl TlsCipherSuite for Chacha20Poly1305Sha256 {
    const CODE_POINT: u16 = 0x1303;
    type Cipher = ember_aead::ChaCha20Poly1305;
    type KeyLen = U32;
    type IvLen = U12;
    type Hash = sha2::Sha256;
    /// embedded-tls's HKDF label buffer: hash length + longest label (12) +
    /// label overhead (10) = 32 + 22.
    type LabelBufferSize = U54;
}

/// How deep a chain may go (leaf, intermediates) before the CA.
const MAX_CHAIN: usize = 5;

/// Checks a presented chain against `cas`; returns the leaf's DER.
pub fn verify_chain<'c>(
    presented: &[&'c [u8]],
    cas: &[Vec<u8>],
    host: &str,
    now: u64,
) -> Result<&'c [u8]> {
    let certs = presented
        .iter()
        .map(|d| Certificate::parse(d))
        .collect::<Result<Vec<_>>>()?;
    let anchors = cas
        .iter()
        .map(|d| Certificate::parse(d))
        .collect::<Result<Vec<_>>>()?;
    let leaf = certs.first().ok_or(Error::new(ErrorKind::CertMalformed(
        "empty certificate chain",
    )))?;
    let mut cur = leaf;
    for _ in 0..MAX_CHAIN {
        let mut named_by_anchor = None;
        for ca in anchors.iter().filter(|ca| ca.subject == cur.issuer) {
            match cur.verify_signed_by(ca) {
                Ok(()) => {
                    ca.check_validity(now)?;
                    return finish(leaf, presented[0], host, now);
                }
                Err(e) => named_by_anchor = Some(e),
            }
        }
        let next = certs[1..]
            .iter()
            .find(|c| c.subject == cur.issuer && c.is_ca && cur.verify_signed_by(c).is_ok());
        match (next, named_by_anchor.as_ref().map(Error::kind)) {
            (Some(next), _) => {
                next.check_validity(now)?;
                cur = next;
            }
            (None, Some(ErrorKind::CertUnsupportedAlgorithm)) => {
                return Err(Error::new(ErrorKind::CertUnsupportedAlgorithm))
            }
            // A CA with our anchor's name but another key is still not ours.
            (None, _) => return Err(Error::new(ErrorKind::CertUnknownIssuer)),
        }
    }
    Err(Error::new(ErrorKind::CertUnknownIssuer))
}

fn finish<'c>(
    leaf: &Certificate<'_>,
    leaf_der: &'c [u8],
    host: &str,
    now: u64,
) -> Result<&'c [u8]> {
    leaf.check_validity(now)?;
    if !leaf.matches_host(host) {
        return Err(Error::new(ErrorKind::CertHostMismatch));
    }
    Ok(leaf_der)
}

/// The `TlsVerifier` embedded-tls calls during the handshake. The reason for
/// a refusal is kept in `failure`, since embedded-tls only carries
/// `InvalidCertificate`.
pub struct Verifier<'a> {
    cas: &'a [Vec<u8>],
    host: &'a str,
    now: u64,
    leaf: Option<Vec<u8>>,
    transcript: Option<[u8; 32]>,
    pub failure: Option<Error>,
}

impl<'a> Verifier<'a> {
    pub fn new(cas: &'a [Vec<u8>], host: &'a str, now: u64) -> Self {
        Verifier {
            cas,
            host,
            now,
            leaf: None,
            transcript: None,
            failure: None,
        }
    }

    fn fail(&mut self, e: Error) -> TlsError {
        self.failure = Some(e);
        TlsError::InvalidCertificate
    }
}

impl TlsVerifier<Chacha20Poly1305Sha256> for Verifier<'_> {
    fn set_hostname_verification(&mut self, _hostname: &str) -> core::result::Result<(), TlsError> {
        // The host is fixed at construction (it may be an IP literal, which
        // is not sent as SNI).
        Ok(())
    }

    fn verify_certificate(
        &mut self,
        transcript: &sha2::Sha256,
        cert: CertificateRef,
    ) -> core::result::Result<(), TlsError> {
        let mut ders = Vec::new();
        for entry in cert.entries.iter() {
            match entry {
                CertificateEntryRef::X509(d) => ders.push(*d),
                CertificateEntryRef::RawPublicKey(_) => {
                    return Err(self.fail(Error::new(ErrorKind::CertMalformed("raw public key"))))
                }
            }
        }
        match verify_chain(&ders, self.cas, self.host, self.now) {
            Ok(leaf) => {
                self.leaf = Some(leaf.to_vec());
                self.transcript = Some(transcript.clone().finalize().into());
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn verify_signature(
        &mut self,
        verify: CertificateVerifyRef,
    ) -> core::result::Result<(), TlsError> {
        let (Some(leaf), Some(hash)) = (self.leaf.take(), self.transcript.take()) else {
            return Err(self.fail(Error::new(ErrorKind::CertMalformed(
                "CertificateVerify before Certificate",
            ))));
        };
        if verify.signature_scheme != SignatureScheme::EcdsaSecp256r1Sha256 {
            return Err(self.fail(Error::new(ErrorKind::CertUnsupportedAlgorithm)));
        }
        // RFC 8446 §4.4.3: 64 spaces, context string, NUL, transcript hash.
        let mut msg = Vec::with_capacity(64 + 34 + 32);
        msg.resize(64, 0x20);
        msg.extend_from_slice(b"TLS 1.3, server CertificateVerify\0");
        msg.extend_from_slice(&hash);
        let result =
            Certificate::parse(&leaf).and_then(|c| x509::verify_p256(&c, &msg, verify.signature));
        result.map_err(|e| self.fail(e))
    }
}

/// `getrandom(2)` as a rand_core RNG.
pub struct OsRng;

impl rand_core::RngCore for OsRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_ne_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_ne_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let mut filled = 0;
        while filled < dest.len() {
            match rustix::rand::getrandom(
                &mut dest[filled..],
                rustix::rand::GetRandomFlags::empty(),
            ) {
                Ok(n) => filled += n,
                Err(rustix::io::Errno::INTR) => {}
                // getrandom(2) does not fail once the pool is initialised;
                // returning zeros would be worse than stopping.
                Err(_) => panic!("getrandom failed"),
            }
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> core::result::Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for OsRng {}

/// A client certificate and its P-256 key, for mutual TLS (feature
/// `client-cert`: the host tool's probes present one, /init never does).
#[cfg(feature = "client-cert")]
pub struct ClientIdentity {
    pub cert_der: Vec<u8>,
    key: SigningKey,
}

/// Without the `client-cert` feature no client identity exists, so the
/// handshake can never sign a CertificateVerify: ECDSA signing (with
/// RFC 6979 nonces) stays out of /init (about 5.4 KB).
#[cfg(not(feature = "client-cert"))]
pub enum ClientIdentity {}

#[cfg(not(feature = "client-cert"))]
impl ClientIdentity {
    fn key(&self) -> &SigningKey {
        match *self {}
    }

    fn cert_der(&self) -> &[u8] {
        match *self {}
    }
}

#[cfg(feature = "client-cert")]
impl ClientIdentity {
    fn key(&self) -> &SigningKey {
        &self.key
    }

    fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }
}

#[cfg(feature = "client-cert")]
impl ClientIdentity {
    /// `key_der` is SEC1 (`EC PRIVATE KEY`) or PKCS#8 (`PRIVATE KEY`).
    pub fn from_der(cert_der: Vec<u8>, key_der: &[u8]) -> Result<Self> {
        let sec1 = pkcs8_inner(key_der).unwrap_or(key_der);
        let secret = sec1_private_key(sec1).ok_or(Error::new(ErrorKind::BadClientKey))?;
        Certificate::parse(&cert_der)?;
        Ok(ClientIdentity {
            cert_der,
            key: SigningKey::from(&secret),
        })
    }

    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self> {
        let (_, cert) = crate::pem::decode_first(cert_pem, &["CERTIFICATE"])?;
        let (_, key) = crate::pem::decode_first(key_pem, &["EC PRIVATE KEY", "PRIVATE KEY"])?;
        Self::from_der(cert, &key)
    }
}

/// PKCS#8 PrivateKeyInfo: the SEC1 key inside its OCTET STRING.
#[cfg(feature = "client-cert")]
fn pkcs8_inner(der: &[u8]) -> Option<&[u8]> {
    let outer = Der::new(der).expect(x509::TAG_SEQUENCE, "pkcs8").ok()?;
    let mut d = Der::new(outer.content);
    let version = d.expect(x509::TAG_INTEGER, "version").ok()?;
    if version.content != [0] {
        return None;
    }
    let alg = d.expect(x509::TAG_SEQUENCE, "algorithm").ok()?;
    let mut a = Der::new(alg.content);
    if a.expect(x509::TAG_OID, "oid").ok()?.content != x509::OID_EC_PUBLIC_KEY {
        return None;
    }
    Some(d.expect(x509::TAG_OCTET_STRING, "key").ok()?.content)
}

/// SEC1 ECPrivateKey (RFC 5915): `SEQUENCE { version 1, privateKey OCTET
/// STRING (32 bytes), [0] parameters (P-256 if present), [1] publicKey }`.
#[cfg(feature = "client-cert")]
fn sec1_private_key(der: &[u8]) -> Option<p256::SecretKey> {
    let mut outer = Der::new(der);
    let seq = outer.expect(x509::TAG_SEQUENCE, "ECPrivateKey").ok()?;
    let mut d = Der::new(seq.content);
    if d.expect(x509::TAG_INTEGER, "version").ok()?.content != [1] {
        return None;
    }
    let key = d.expect(x509::TAG_OCTET_STRING, "privateKey").ok()?.content;
    if d.peek_tag() == Some(0xa0) {
        let params = d.read().ok()?;
        let mut p = Der::new(params.content);
        if p.expect(x509::TAG_OID, "curve").ok()?.content != x509::OID_P256 || !p.is_empty() {
            return None;
        }
    }
    if d.peek_tag() == Some(0xa1) {
        d.read().ok()?;
    }
    if !d.is_empty() || !outer.is_empty() || key.len() != 32 {
        return None;
    }
    p256::SecretKey::from_slice(key).ok()
}

/// A DER-encoded ECDSA signature (TLS CertificateVerify wants DER).
pub struct DerEcdsaSignature {
    bytes: [u8; 72],
    len: usize,
}

impl AsRef<[u8]> for DerEcdsaSignature {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Signs CertificateVerify with the client key and encodes the signature
/// with x509's DER code (so /init has no second DER implementation).
struct DerSigner<'a>(&'a SigningKey);

impl Signer<DerEcdsaSignature> for DerSigner<'_> {
    fn try_sign(
        &self,
        msg: &[u8],
    ) -> core::result::Result<DerEcdsaSignature, p256::ecdsa::signature::Error> {
        let sig: Signature = self.0.try_sign(msg)?;
        let mut bytes = [0u8; 72];
        let len = x509::ecdsa_signature_to_der(&sig, &mut bytes);
        Ok(DerEcdsaSignature { bytes, len })
    }
}

pub struct Provider<'a> {
    rng: OsRng,
    pub verifier: Verifier<'a>,
    identity: Option<&'a ClientIdentity>,
}

impl<'a> Provider<'a> {
    pub fn new(verifier: Verifier<'a>, identity: Option<&'a ClientIdentity>) -> Self {
        Provider {
            rng: OsRng,
            verifier,
            identity,
        }
    }
}

impl CryptoProvider for Provider<'_> {
    type CipherSuite = Chacha20Poly1305Sha256;
    type Signature = DerEcdsaSignature;

    fn rng(&mut self) -> impl embedded_tls::CryptoRngCore {
        &mut self.rng
    }

    fn verifier(
        &mut self,
    ) -> core::result::Result<&mut impl TlsVerifier<Chacha20Poly1305Sha256>, TlsError> {
        Ok(&mut self.verifier)
    }

    fn signer(
        &mut self,
    ) -> core::result::Result<
        (
            impl p256::ecdsa::signature::SignerMut<DerEcdsaSignature>,
            SignatureScheme,
        ),
        TlsError,
    > {
        let id = self.identity.ok_or(TlsError::InvalidPrivateKey)?;
        Ok((DerSigner(id.key()), SignatureScheme::EcdsaSecp256r1Sha256))
    }

    fn client_cert(&mut self) -> Option<embedded_tls::Certificate<impl AsRef<[u8]>>> {
        self.identity
            .map(|id| embedded_tls::Certificate::X509(id.cert_der()))
    }
}

/// A connected, non-blocking kernel TCP socket whose reads and writes wait
/// at most `timeout`. Why an I/O call failed is kept in `failure` (shared
/// with the caller), since embedded-tls reduces it to an `ErrorKind`.
pub struct TcpStream {
    fd: OwnedFd,
    timeout: Duration,
    failure: Rc<Cell<Option<Error>>>,
}

impl TcpStream {
    pub fn connect(
        addr: [u8; 4],
        port: u16,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> Result<(Self, Rc<Cell<Option<Error>>>)> {
        use core::net::{Ipv4Addr, SocketAddrV4};
        let fd = net::socket_with(
            net::AddressFamily::INET,
            net::SocketType::STREAM,
            net::SocketFlags::CLOEXEC | net::SocketFlags::NONBLOCK,
            None,
        )
        .map_err(Error::sys("tcp socket"))?;
        match net::connect(&fd, &SocketAddrV4::new(Ipv4Addr::from(addr), port)) {
            Ok(()) => {}
            Err(rustix::io::Errno::INPROGRESS) => {
                if !clock::wait_fd(fd.as_fd(), PollFlags::OUT, connect_timeout)
                    .map_err(Error::sys("poll"))?
                {
                    return Err(Error::new(ErrorKind::ConnectTimeout));
                }
                match net::sockopt::socket_error(&fd).map_err(Error::sys("SO_ERROR"))? {
                    Ok(()) => {}
                    Err(e) => return Err(Error::new(ErrorKind::Connect(e))),
                }
            }
            Err(e) => return Err(Error::new(ErrorKind::Connect(e))),
        }
        let _ = net::sockopt::set_tcp_nodelay(&fd, true);
        let failure = Rc::new(Cell::new(None));
        Ok((
            TcpStream {
                fd,
                timeout: io_timeout,
                failure: failure.clone(),
            },
            failure,
        ))
    }

    fn wait(&self, events: PollFlags) -> core::result::Result<(), embedded_io::ErrorKind> {
        match clock::wait_fd(self.fd.as_fd(), events, self.timeout) {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.failure.set(Some(Error::new(ErrorKind::ReadTimeout)));
                Err(embedded_io::ErrorKind::TimedOut)
            }
            Err(e) => {
                self.failure.set(Some(Error::new(ErrorKind::Sys {
                    op: "poll",
                    errno: e,
                })));
                Err(embedded_io::ErrorKind::Other)
            }
        }
    }
}

impl embedded_io::ErrorType for TcpStream {
    type Error = embedded_io::ErrorKind;
}

impl embedded_io::Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> core::result::Result<usize, Self::Error> {
        loop {
            match net::recv(&self.fd, &mut *buf, RecvFlags::DONTWAIT) {
                Ok((n, _)) => return Ok(n),
                Err(rustix::io::Errno::AGAIN) => self.wait(PollFlags::IN)?,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    self.failure.set(Some(Error::new(ErrorKind::Sys {
                        op: "recv",
                        errno: e,
                    })));
                    return Err(embedded_io::ErrorKind::Other);
                }
            }
        }
    }
}

impl embedded_io::Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> core::result::Result<usize, Self::Error> {
        loop {
            match net::send(&self.fd, buf, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
                Ok(n) => return Ok(n),
                Err(rustix::io::Errno::AGAIN) => self.wait(PollFlags::OUT)?,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    self.failure.set(Some(Error::new(ErrorKind::Sys {
                        op: "send",
                        errno: e,
                    })));
                    return Err(embedded_io::ErrorKind::Other);
                }
            }
        }
    }
    fn flush(&mut self) -> core::result::Result<(), Self::Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An openssl-made P-256 CA and a leaf for localhost/127.0.0.1 (5 days),
    // shared with the x509 fuzz seeds.
    const CA: &[u8] = include_bytes!("../fuzz/seeds/x509_cert/p256_ca.der");
    const LEAF: &[u8] = include_bytes!("../fuzz/seeds/x509_cert/p256_leaf.der");

    fn issued_at() -> u64 {
        Certificate::parse(LEAF).unwrap().not_before
    }

    #[test]
    fn chain_to_the_ca_with_matching_name_is_accepted() {
        let cas = [CA.to_vec()];
        let now = issued_at() + 3600;
        assert_eq!(verify_chain(&[LEAF], &cas, "localhost", now), Ok(LEAF));
        assert_eq!(verify_chain(&[LEAF], &cas, "127.0.0.1", now), Ok(LEAF));
        // The CA sent along with the leaf changes nothing.
        assert_eq!(verify_chain(&[LEAF, CA], &cas, "LOCALHOST", now), Ok(LEAF));
    }

    #[test]
    fn each_failure_has_its_own_error() {
        let cas = [CA.to_vec()];
        let now = issued_at() + 3600;
        assert_eq!(
            verify_chain(&[LEAF], &cas, "boot.example.org", now),
            Err(Error::new(ErrorKind::CertHostMismatch))
        );
        assert_eq!(
            verify_chain(&[LEAF], &cas, "127.0.0.2", now),
            Err(Error::new(ErrorKind::CertHostMismatch))
        );
        assert_eq!(
            verify_chain(&[LEAF], &cas, "localhost", now + 10 * 86400),
            Err(Error::new(ErrorKind::CertExpired))
        );
        assert_eq!(
            verify_chain(&[LEAF], &cas, "localhost", issued_at() - 86400),
            Err(Error::new(ErrorKind::CertNotYetValid))
        );
        assert_eq!(
            verify_chain(&[LEAF], &[LEAF.to_vec()], "localhost", now),
            Err(Error::new(ErrorKind::CertUnknownIssuer))
        );
        assert_eq!(
            verify_chain(&[], &cas, "localhost", now),
            Err(Error::new(ErrorKind::CertMalformed(
                "empty certificate chain"
            )))
        );
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // `openssl ecparam -name prime256v1 -genkey`, as `openssl ec -outform DER`
    // with and without the public key.
    const SEC1: &str = "30770201010420c1b15ff7719096873487007f0e91b0b2de6a3c5fbdc39190d182a5628a2fb4b3a00a06082a8648ce3d030107a144034200048c5bb192b7489308f03a747125bca2cedead1fb4fa3c7f3c02e26d507d58407173d6c50a449d7edeb79574f7e76f9a7d5a7101cde3b9f1b123540483b8ede757";
    const SEC1_NO_PUBLIC: &str = "30310201010420c1b15ff7719096873487007f0e91b0b2de6a3c5fbdc39190d182a5628a2fb4b3a00a06082a8648ce3d030107";
    // The same key with explicit curve parameters (`-param_enc explicit`).
    const SEC1_EXPLICIT: &str = "308201680201010420c1b15ff7719096873487007f0e91b0b2de6a3c5fbdc39190d182a5628a2fb4b3a081fa3081f7020101302c06072a8648ce3d0101022100ffffffff00000001000000000000000000000000ffffffffffffffffffffffff305b0420ffffffff00000001000000000000000000000000fffffffffffffffffffffffc04205ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b031500c49d360886e704936a6678e1139d26b7819f7e900441046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5022100ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551020101a144034200048c5bb192b7489308f03a747125bca2cedead1fb4fa3c7f3c02e26d507d58407173d6c50a449d7edeb79574f7e76f9a7d5a7101cde3b9f1b123540483b8ede757";

    #[cfg(feature = "client-cert")]
    #[test]
    fn sec1_keys_parse_like_the_sec1_crate() {
        for hex in [SEC1, SEC1_NO_PUBLIC] {
            let der = unhex(hex);
            let ours = sec1_private_key(&der).expect("our parser");
            let theirs = p256::SecretKey::from_sec1_der(&der).expect("sec1 crate");
            assert_eq!(ours.to_bytes(), theirs.to_bytes());
        }
    }

    #[cfg(feature = "client-cert")]
    #[test]
    fn malformed_sec1_keys_are_refused() {
        let good = unhex(SEC1);
        assert!(sec1_private_key(&unhex(SEC1_EXPLICIT)).is_none());
        for cut in 0..good.len() {
            assert!(sec1_private_key(&good[..cut]).is_none(), "cut at {cut}");
        }
        let mut v2 = good.clone();
        v2[4] = 2; // version
        assert!(sec1_private_key(&v2).is_none());
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(sec1_private_key(&trailing).is_none());
        let mut other_curve = unhex(SEC1_NO_PUBLIC);
        *other_curve.last_mut().unwrap() = 0x08;
        assert!(sec1_private_key(&other_curve).is_none());
        let mut zero = unhex(SEC1_NO_PUBLIC);
        zero[7..39].fill(0);
        assert!(sec1_private_key(&zero).is_none());
    }

    #[test]
    fn client_signatures_are_der_that_verifies() {
        use p256::ecdsa::signature::Verifier as _;
        // The private scalar is at bytes 7..39 of the SEC1 encoding.
        let key = SigningKey::from_slice(&unhex(SEC1)[7..39]).unwrap();
        for i in 0..64u32 {
            let msg = i.to_be_bytes();
            let ours = DerSigner(&key).try_sign(&msg).unwrap();
            let sig: Signature = key.sign(&msg);
            assert_eq!(ours.as_ref(), sig.to_der().as_bytes());
            let parsed = Signature::from_der(ours.as_ref()).unwrap();
            key.verifying_key().verify(&msg, &parsed).unwrap();
        }
    }

    #[test]
    fn tampered_leaf_does_not_verify() {
        let cas = [CA.to_vec()];
        let mut leaf = LEAF.to_vec();
        // Flip a byte inside the subject public key (near the end of the TBS).
        let n = leaf.len();
        leaf[n - 90] ^= 1;
        assert!(verify_chain(&[&leaf], &cas, "localhost", issued_at() + 3600).is_err());
    }
}

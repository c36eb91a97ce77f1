//! The signed overlay manifest: what an overlay blob is, who it is for and
//! which data key opens it, signed by the boot server. One format for the
//! network path (inside Finish) and for last-known-good (beside the cached
//! blob on the ESP), parsed here only.
//!
//! ```text
//! SignedManifest = postcard { body: bytes (postcard Manifest), signature: [u8; 64] }
//! signature      = ECDSA P-256 / SHA-256 over SIGNING_LABEL || body  (r || s, 32 bytes each)
//! ```
//!
//! The signature covers the body's exact bytes, so the body is decoded only
//! after it verified: a forged manifest never reaches the postcard decoder.
//!
//! Beside the manifest, per boot, the server signs a [`BootImage`] record
//! with the same key under its own label: the unified kernel image the node
//! booted (its SHA-256, which last-known-good fetches and checks) and the
//! PCR values a boot of that image from the ESP reaches (what the slot's
//! data key is sealed to).

use crate::ErrorKind;
use alloc::string::String;
use alloc::vec::Vec;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ct::ct_eq;
use crate::Error;

/// The manifest format this crate writes and reads.
pub const MANIFEST_FORMAT: u16 = 1;
/// Domain separation: an Ember manifest signature never verifies as
/// anything else the key might sign, and vice versa.
const SIGNING_LABEL: &[u8] = b"ember/overlay-manifest/v1\0";
const COMMITMENT_LABEL: &[u8] = b"ember/overlay-data-key/v1\0";
/// Domain separation of [`BootImage`] signatures from manifest signatures.
const BOOT_IMAGE_LABEL: &[u8] = b"ember/boot-image/v1\0";
/// The boot image record format this crate writes and reads: 2 names the
/// node it was signed for ([`BootImage::ek`]); 1 did not, and a cold start
/// refuses it by its format (the next network boot writes a format 2 slot).
pub const BOOT_IMAGE_FORMAT: u16 = 2;
/// Longest signed manifest accepted (a body is about 150 bytes).
pub const MAX_SIGNED: usize = 4096;
/// Where the initrd carries the public half of the signing key.
pub const PUBLIC_KEY_PATH: &str = "/etc/ember/manifest.pub";
/// The PEM label of that file (SubjectPublicKeyInfo, as `openssl pkey -pubout`).
pub const PEM_LABEL: &str = "PUBLIC KEY";

/// How the sealed plaintext is compressed: the node decodes what this
/// says, and nothing else. Variants are only ever appended (postcard
/// encodes the index).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// A tar.gz (one or more gzip members).
    Gzip,
    /// A tar in LZ4 frames.
    Lz4,
}

impl Compression {
    pub const ALL: [Compression; 3] = [Compression::None, Compression::Gzip, Compression::Lz4];

    /// What a tar, tar.gz or tar.lz4 stream starting with `head` is.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&ember_fs::tar::LZ4_MAGIC) {
            Compression::Lz4
        } else {
            Compression::None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Lz4 => "lz4",
        }
    }

    /// The inverse of [`Compression::name`] (the server's stored column).
    pub fn from_name(name: &str) -> Option<Compression> {
        Compression::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl From<Compression> for ember_fs::tar::Compression {
    fn from(c: Compression) -> Self {
        match c {
            Compression::None => ember_fs::tar::Compression::None,
            Compression::Gzip => ember_fs::tar::Compression::Gzip,
            Compression::Lz4 => ember_fs::tar::Compression::Lz4,
        }
    }
}

/// Whom an overlay assignment is for.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Node(String),
    Group(String),
}

/// What the server promises about one overlay assignment.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u16,
    /// The overlay version in the server's store.
    pub version_id: u64,
    /// Monotonic over every manifest the server signs: a node refuses an
    /// epoch lower than the highest it has blessed (rollback).
    pub epoch: u64,
    pub target: Target,
    /// SHA-256 of the sealed blob: its name (`/v1/blob/<hex>`).
    pub blob_sha256: [u8; 32],
    /// Length of the sealed blob.
    pub blob_size: u64,
    /// Length of the plaintext tar(.gz).
    pub plain_size: u64,
    /// Plaintext bytes per sealed chunk.
    pub chunk_size: u32,
    pub compression: Compression,
    /// [`key_commitment`] of the blob's data key.
    pub key_commitment: [u8; 32],
}

/// A manifest body and the server's signature over it, as carried.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SignedManifest {
    /// The postcard-encoded [`Manifest`], exactly as signed.
    pub body: Vec<u8>,
    /// ECDSA P-256 r || s.
    pub signature: Vec<u8>,
}

impl SignedManifest {
    /// The stored and carried form (postcard).
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Parses the carried form; the signature is checked by
    /// [`PublicKey::verify`], never here.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_SIGNED {
            return Err(Error::new(ErrorKind::Decode {
                what: "signed manifest",
            }));
        }
        match postcard::take_from_bytes::<SignedManifest>(bytes) {
            Ok((m, [])) => Ok(m),
            _ => Err(Error::new(ErrorKind::Decode {
                what: "signed manifest",
            })),
        }
    }
}

/// SHA-256 over a domain-separated data key: what a manifest commits to.
pub fn key_commitment(data_key: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(COMMITMENT_LABEL);
    h.update(data_key);
    h.finalize().into()
}

fn signed_message(label: &[u8], body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(label.len() + body.len());
    m.extend_from_slice(label);
    m.extend_from_slice(body);
    m
}

/// What the server promises about the unified kernel image (UKI) a node
/// booted, signed per boot: last-known-good writes exactly these bytes to
/// the ESP and seals the overlay's data key to these PCR values.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BootImage {
    /// [`BOOT_IMAGE_FORMAT`].
    pub format: u16,
    /// SHA-256 of the signed manifest body granted with it: a record is
    /// good only beside its own manifest.
    pub manifest_sha256: [u8; 32],
    /// SHA-256 of the UKI's bytes: its name (`/v1/boot/<hex>`).
    pub sha256: [u8; 32],
    pub size: u64,
    /// PCR 11 (sha256) after systemd-stub measured the UKI's sections: the
    /// same on every path that boots it.
    pub pcr11: [u8; 32],
    /// PCR 4 (sha256) values the firmware reaches booting the ESP's loader,
    /// the UKI and its kernel: straight from the disk, then after 1, 2, …
    /// failed boot options (a network boot whose server is down).
    pub pcr4: Vec<[u8; 32]>,
    /// The EK identity ([`crate::keys::ek_hash_ecc`], `ek_hash_rsa`) of
    /// the node the server made this record for, in an attested session:
    /// a cold start restores a slot only when it names this TPM's EK, so
    /// a slot built around another node's (or group's) record and a data
    /// key its maker knows is refused.
    pub ek: [u8; 32],
}

/// A [`BootImage`] body and the server's signature over it, as carried.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SignedBootImage {
    /// The postcard-encoded [`BootImage`], exactly as signed.
    pub body: Vec<u8>,
    /// ECDSA P-256 r || s.
    pub signature: Vec<u8>,
}

impl SignedManifest {
    /// SHA-256 of the body: what a [`BootImage`] names.
    pub fn body_sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.body).into()
    }
}

/// The verifying half, from the initrd's `manifest.pub`.
#[derive(Clone, Debug)]
pub struct PublicKey(VerifyingKey);

/// DER prefix of a P-256 SubjectPublicKeyInfo with an uncompressed point.
const SPKI_P256_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

impl PublicKey {
    /// From a DER SubjectPublicKeyInfo (P-256 only).
    pub fn from_spki_der(der: &[u8]) -> Result<Self, Error> {
        if der.len() != SPKI_P256_PREFIX.len() + 65 || der[..26] != SPKI_P256_PREFIX {
            return Err(Error::new(ErrorKind::ManifestKey));
        }
        VerifyingKey::from_sec1_bytes(&der[26..])
            .map(PublicKey)
            .map_err(|_| Error::new(ErrorKind::ManifestKey))
    }

    /// From the PEM text of `manifest.pub`.
    pub fn from_pem(pem: &[u8]) -> Result<Self, Error> {
        let ders = ember_net::pem::decode_all(pem, PEM_LABEL)
            .map_err(|_| Error::new(ErrorKind::ManifestKey))?;
        match ders.as_slice() {
            [der] => Self::from_spki_der(der),
            _ => Err(Error::new(ErrorKind::ManifestKey)),
        }
    }

    pub fn to_spki_der(&self) -> Vec<u8> {
        let point = self.0.to_encoded_point(false);
        let mut der = SPKI_P256_PREFIX.to_vec();
        der.extend_from_slice(point.as_bytes());
        der
    }

    /// Checks the signature, then decodes the body it covers. The format
    /// is checked after the signature: an unknown format from the genuine
    /// server is a version problem, not a forgery.
    pub fn verify(&self, signed: &SignedManifest) -> Result<Manifest, Error> {
        self.check(SIGNING_LABEL, &signed.body, &signed.signature)
            .map_err(|_| Error::new(ErrorKind::ManifestSignature))?;
        let format = postcard::take_from_bytes::<u16>(&signed.body)
            .map(|(v, _)| v)
            .map_err(|_| Error::new(ErrorKind::Decode { what: "manifest" }))?;
        if format != MANIFEST_FORMAT {
            return Err(Error::new(ErrorKind::ManifestFormat { got: format }));
        }
        match postcard::take_from_bytes::<Manifest>(&signed.body) {
            Ok((m, [])) => Ok(m),
            _ => Err(Error::new(ErrorKind::Decode { what: "manifest" })),
        }
    }

    /// Checks a boot image record's signature, decodes it, and refuses a
    /// record signed beside another manifest than `manifest`.
    pub fn verify_boot_image(
        &self,
        signed: &SignedBootImage,
        manifest: &SignedManifest,
    ) -> Result<BootImage, Error> {
        self.check(BOOT_IMAGE_LABEL, &signed.body, &signed.signature)
            .map_err(|_| Error::new(ErrorKind::BootImageSignature))?;
        let format = postcard::take_from_bytes::<u16>(&signed.body)
            .map(|(v, _)| v)
            .map_err(|_| Error::new(ErrorKind::Decode { what: "boot image" }))?;
        if format != BOOT_IMAGE_FORMAT {
            return Err(Error::new(ErrorKind::BootImageFormat { got: format }));
        }
        let image = match postcard::take_from_bytes::<BootImage>(&signed.body) {
            Ok((b, [])) => b,
            _ => return Err(Error::new(ErrorKind::Decode { what: "boot image" })),
        };
        if !ct_eq(&image.manifest_sha256, &manifest.body_sha256()) {
            return Err(Error::new(ErrorKind::BootImageOtherManifest));
        }
        Ok(image)
    }

    fn check(&self, label: &[u8], body: &[u8], signature: &[u8]) -> Result<(), ()> {
        let sig = Signature::from_slice(signature).map_err(|_| ())?;
        self.0
            .verify(&signed_message(label, body), &sig)
            .map_err(|_| ())
    }
}

/// The server's signing half (kept in its state folder).
pub struct SigningSecret(SigningKey);

impl SigningSecret {
    /// From the 32-byte scalar; fails for zero or out-of-range values.
    pub fn from_bytes(secret: &[u8]) -> Result<Self, Error> {
        SigningKey::from_slice(secret)
            .map(SigningSecret)
            .map_err(|_| Error::new(ErrorKind::ManifestKey))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(*self.0.verifying_key())
    }

    pub fn sign(&self, manifest: &Manifest) -> SignedManifest {
        let body = postcard::to_allocvec(manifest).unwrap_or_default();
        let signature = self.sign_body(SIGNING_LABEL, &body);
        SignedManifest { body, signature }
    }

    pub fn sign_boot_image(&self, image: &BootImage) -> SignedBootImage {
        let body = postcard::to_allocvec(image).unwrap_or_default();
        let signature = self.sign_body(BOOT_IMAGE_LABEL, &body);
        SignedBootImage { body, signature }
    }

    fn sign_body(&self, label: &[u8], body: &[u8]) -> Vec<u8> {
        let sig: Signature = self.0.sign(&signed_message(label, body));
        sig.to_bytes().to_vec()
    }
}

/// A manifest whose signature verified, with the data key it commits to:
/// the only way to open a blob ([`crate::sealed::Opener::for_manifest`]).
pub struct Envelope {
    pub manifest: Manifest,
    data_key: [u8; 32],
}

impl Envelope {
    /// Pairs a verified manifest with a data key, refusing a key the
    /// manifest does not commit to.
    pub fn new(manifest: Manifest, data_key: [u8; 32]) -> Result<Self, Error> {
        if !ct_eq(&key_commitment(&data_key), &manifest.key_commitment) {
            return Err(Error::new(ErrorKind::KeyCommitmentMismatch));
        }
        Ok(Envelope { manifest, data_key })
    }

    pub fn data_key(&self) -> &[u8; 32] {
        &self.data_key
    }
}

impl Drop for Envelope {
    fn drop(&mut self) {
        self.data_key = [0; 32];
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn manifest(data_key: &[u8; 32]) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            version_id: 3,
            epoch: 7,
            target: Target::Group("lab".into()),
            blob_sha256: [0xB1; 32],
            blob_size: 1000,
            plain_size: 900,
            chunk_size: 64,
            compression: Compression::Gzip,
            key_commitment: key_commitment(data_key),
        }
    }

    pub fn server_key() -> SigningSecret {
        SigningSecret::from_bytes(&[0x11; 32]).unwrap()
    }

    #[test]
    fn signed_manifest_verifies_and_round_trips() {
        let m = manifest(&[5; 32]);
        let signed = server_key().sign(&m);
        assert_eq!(server_key().public().verify(&signed).unwrap(), m);
    }

    #[test]
    fn manifest_signed_by_another_key_is_forged() {
        let signed = SigningSecret::from_bytes(&[0x22; 32])
            .unwrap()
            .sign(&manifest(&[5; 32]));
        assert_eq!(
            server_key().public().verify(&signed),
            Err(Error::new(ErrorKind::ManifestSignature))
        );
    }

    #[test]
    fn any_edit_of_body_or_signature_is_forged() {
        let signed = server_key().sign(&manifest(&[5; 32]));
        for i in 0..signed.body.len() {
            let mut s = signed.clone();
            s.body[i] ^= 1;
            assert_eq!(
                server_key().public().verify(&s),
                Err(Error::new(ErrorKind::ManifestSignature)),
                "body byte {i}"
            );
        }
        let mut s = signed.clone();
        s.signature[40] ^= 1;
        assert_eq!(
            server_key().public().verify(&s),
            Err(Error::new(ErrorKind::ManifestSignature))
        );
        let mut s = signed;
        s.signature.truncate(63);
        assert_eq!(
            server_key().public().verify(&s),
            Err(Error::new(ErrorKind::ManifestSignature))
        );
    }

    #[test]
    fn key_other_than_the_committed_one_is_refused() {
        let m = manifest(&[5; 32]);
        assert!(Envelope::new(m.clone(), [5; 32]).is_ok());
        assert_eq!(
            Envelope::new(m, [6; 32]).err(),
            Some(Error::new(ErrorKind::KeyCommitmentMismatch))
        );
    }

    #[test]
    fn unknown_format_is_a_version_error_after_the_signature() {
        let mut m = manifest(&[5; 32]);
        m.format = 2;
        let signed = server_key().sign(&m);
        assert_eq!(
            server_key().public().verify(&signed),
            Err(Error::new(ErrorKind::ManifestFormat { got: 2 }))
        );
    }

    fn boot_image(manifest: &SignedManifest) -> BootImage {
        BootImage {
            format: BOOT_IMAGE_FORMAT,
            manifest_sha256: manifest.body_sha256(),
            sha256: [0xAB; 32],
            size: 11_000_000,
            pcr11: [0x11; 32],
            pcr4: alloc::vec![[0x04; 32], [0x44; 32]],
            ek: [0xEE; 32],
        }
    }

    #[test]
    fn boot_image_record_verifies_only_beside_its_manifest_and_with_its_label() {
        let signed = server_key().sign(&manifest(&[5; 32]));
        let image = boot_image(&signed);
        let record = server_key().sign_boot_image(&image);
        let public = server_key().public();
        assert_eq!(public.verify_boot_image(&record, &signed).unwrap(), image);
        // Another manifest (another grant, an older slot's) is refused.
        let mut other_manifest = manifest(&[5; 32]);
        other_manifest.epoch += 1;
        let other = server_key().sign(&other_manifest);
        assert_eq!(
            public.verify_boot_image(&record, &other),
            Err(Error::new(ErrorKind::BootImageOtherManifest))
        );
        // An edited record, or one signed by another key, is forged.
        let mut edited = record.clone();
        let last = edited.body.len() - 1;
        edited.body[last] ^= 1;
        assert_eq!(
            public.verify_boot_image(&edited, &signed),
            Err(Error::new(ErrorKind::BootImageSignature))
        );
        let foreign = SigningSecret::from_bytes(&[0x22; 32])
            .unwrap()
            .sign_boot_image(&image);
        assert_eq!(
            public.verify_boot_image(&foreign, &signed),
            Err(Error::new(ErrorKind::BootImageSignature))
        );
        // A manifest signature never verifies as a boot image record and
        // vice versa (distinct labels).
        let as_record = SignedBootImage {
            body: signed.body.clone(),
            signature: signed.signature.clone(),
        };
        assert_eq!(
            public.verify_boot_image(&as_record, &signed),
            Err(Error::new(ErrorKind::BootImageSignature))
        );
        let as_manifest = SignedManifest {
            body: record.body.clone(),
            signature: record.signature.clone(),
        };
        assert_eq!(
            public.verify(&as_manifest),
            Err(Error::new(ErrorKind::ManifestSignature))
        );
    }

    #[test]
    fn public_key_round_trips_through_spki_and_refuses_other_curves() {
        let public = server_key().public();
        let der = public.to_spki_der();
        assert_eq!(der.len(), 91);
        let back = PublicKey::from_spki_der(&der).unwrap();
        let signed = server_key().sign(&manifest(&[5; 32]));
        assert!(back.verify(&signed).is_ok());
        let mut other = der.clone();
        other[20] ^= 1; // another curve OID
        assert_eq!(
            PublicKey::from_spki_der(&other).err(),
            Some(Error::new(ErrorKind::ManifestKey))
        );
        assert_eq!(
            PublicKey::from_spki_der(&der[..90]).err(),
            Some(Error::new(ErrorKind::ManifestKey))
        );
        assert_eq!(
            PublicKey::from_pem(b"not pem").err(),
            Some(Error::new(ErrorKind::ManifestKey))
        );
    }
}

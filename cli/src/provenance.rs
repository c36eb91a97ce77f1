//! Build provenance: an in-toto Statement (SLSA provenance v1) naming an
//! artifact by its SHA-256, the builder, the inputs with their digests and
//! the command, in a DSSE envelope signed with the operator's ECDSA P-256
//! key (`--sign-provenance KEY`), written as `ARTIFACT.intoto.json`, and
//! checked by `ember verify`.
//!
//! Why ECDSA P-256 through ring: ring is already in the tree (the server's
//! TLS provider), so no new cryptography enters it; P-256 keys are what
//! `openssl genpkey`, cosign and every HSM make; and DSSE with ECDSA is
//! what sigstore's tools verify, so a statement can be checked outside
//! Ember too.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// Why a statement was refused, or a key could not be used.
#[derive(Debug)]
pub enum Error {
    Io(PathBuf, std::io::Error),
    /// The file is not a PEM block of the expected label, or not base64.
    NotPem(PathBuf, &'static str),
    /// A private key that is not PKCS#8 ECDSA P-256.
    BadPrivateKey(PathBuf),
    /// A public key that is not an uncompressed P-256 SubjectPublicKeyInfo.
    BadPublicKey(PathBuf),
    /// The envelope or statement is not the JSON this module writes.
    Malformed(String),
    /// The envelope's payload type is not in-toto's.
    PayloadType(String),
    /// No signature verifies under the given key.
    BadSignature,
    /// The statement is about another artifact.
    SubjectMismatch {
        statement: String,
        artifact: String,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(p, e) => write!(f, "reading {}: {e}", p.display()),
            Error::NotPem(p, label) => write!(f, "{} is not a PEM {label}", p.display()),
            Error::BadPrivateKey(p) => write!(
                f,
                "{} is not an ECDSA P-256 private key in PKCS#8 \
                 (make one: openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256)",
                p.display()
            ),
            Error::BadPublicKey(p) => write!(
                f,
                "{} is not an ECDSA P-256 public key \
                 (openssl pkey -in KEY -pubout gives it)",
                p.display()
            ),
            Error::Malformed(why) => write!(f, "not a signed in-toto statement: {why}"),
            Error::PayloadType(t) => {
                write!(f, "the envelope carries {t:?}, not an in-toto statement")
            }
            Error::BadSignature => write!(
                f,
                "the statement's signature does not verify with this key \
                 (edited after signing, or signed with another key)"
            ),
            Error::SubjectMismatch {
                statement,
                artifact,
            } => write!(
                f,
                "the statement is about sha256 {statement}, the artifact is sha256 {artifact}"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// An in-toto v1 Statement with a SLSA v1 predicate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub statement_type: String,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: Provenance,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    pub name: String,
    pub digest: Digest,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    pub build_definition: BuildDefinition,
    pub run_details: RunDetails,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildDefinition {
    pub build_type: String,
    /// `{"command": [...]}`: the arguments the build ran with.
    pub external_parameters: Value,
    pub resolved_dependencies: Vec<Dependency>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dependency {
    pub name: String,
    pub uri: String,
    pub digest: Digest,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunDetails {
    pub builder: Builder,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Builder {
    pub id: String,
}

/// A DSSE envelope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub payload_type: String,
    pub payload: String,
    pub signatures: Vec<Signature>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    pub keyid: String,
    pub sig: String,
}

/// An input of a build: a name, the path given, and the bytes' SHA-256.
pub struct Input<'a> {
    pub name: &'a str,
    pub path: &'a Path,
    pub data: &'a [u8],
}

/// The statement for `artifact` (its file name and bytes' SHA-256) built
/// by `build_type` from `inputs` with the process's arguments.
pub fn statement(
    build_type: &str,
    artifact_name: &str,
    artifact_sha256: &str,
    inputs: &[Input],
) -> Statement {
    let command: Vec<String> = std::env::args().collect();
    Statement {
        statement_type: STATEMENT_TYPE.into(),
        subject: vec![Subject {
            name: artifact_name.into(),
            digest: Digest {
                sha256: artifact_sha256.into(),
            },
        }],
        predicate_type: PREDICATE_TYPE.into(),
        predicate: Provenance {
            build_definition: BuildDefinition {
                build_type: format!("https://ember.invalid/build/{build_type}/v1"),
                external_parameters: serde_json::json!({ "command": command }),
                resolved_dependencies: inputs
                    .iter()
                    .map(|i| Dependency {
                        name: i.name.into(),
                        uri: format!("file:{}", i.path.display()),
                        digest: Digest {
                            sha256: sha256_hex(i.data),
                        },
                    })
                    .collect(),
            },
            run_details: RunDetails {
                builder: Builder {
                    id: format!(
                        "https://ember.invalid/builder/ember-cli@{}",
                        env!("CARGO_PKG_VERSION")
                    ),
                },
            },
        },
    }
}

fn sha256_hex(data: &[u8]) -> String {
    ember_fs::hex::hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// DSSE's pre-authentication encoding: what is signed.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

fn read_pem(path: &Path, label: &'static str) -> Result<Vec<u8>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io(path.into(), e))?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = text
        .split_once(&begin)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(body, _)| body)
        .ok_or(Error::NotPem(path.into(), label))?;
    let b64: String = body.split_whitespace().collect();
    B64.decode(b64)
        .map_err(|_| Error::NotPem(path.into(), label))
}

/// The DER SubjectPublicKeyInfo prefix of every uncompressed P-256 key
/// (id-ecPublicKey, prime256v1, a 66-byte bit string).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The key id: SHA-256 of the public key's SubjectPublicKeyInfo.
fn key_id(point: &[u8]) -> String {
    let mut spki = P256_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(point);
    sha256_hex(&spki)
}

/// Reads the key before a build starts: a wrong key fails before any
/// artifact is written.
pub fn check_key(key: &Path) -> Result<(), Error> {
    let der = read_pem(key, "PRIVATE KEY")?;
    EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &der,
        &SystemRandom::new(),
    )
    .map(|_| ())
    .map_err(|_| Error::BadPrivateKey(key.into()))
}

/// Signs `statement` with the PKCS#8 PEM key at `key`.
pub fn sign(statement: &Statement, key: &Path) -> Result<Envelope, Error> {
    let der = read_pem(key, "PRIVATE KEY")?;
    let rng = SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &der, &rng)
        .map_err(|_| Error::BadPrivateKey(key.into()))?;
    let payload = serde_json::to_vec(statement).expect("a statement serialises");
    let sig = pair
        .sign(&rng, &pae(PAYLOAD_TYPE, &payload))
        .map_err(|_| Error::BadPrivateKey(key.into()))?;
    Ok(Envelope {
        payload_type: PAYLOAD_TYPE.into(),
        payload: B64.encode(&payload),
        signatures: vec![Signature {
            keyid: key_id(pair.public_key().as_ref()),
            sig: B64.encode(sig.as_ref()),
        }],
    })
}

/// Checks `envelope` with the SubjectPublicKeyInfo PEM at `public_key` and
/// that its statement names an artifact whose SHA-256 is `artifact_sha256`.
pub fn verify(
    envelope: &[u8],
    public_key: &Path,
    artifact_sha256: &str,
) -> Result<Statement, Error> {
    let spki = read_pem(public_key, "PUBLIC KEY")?;
    let point = spki
        .strip_prefix(&P256_SPKI_PREFIX[..])
        .filter(|p| p.len() == 65)
        .ok_or(Error::BadPublicKey(public_key.into()))?;
    let envelope: Envelope =
        serde_json::from_slice(envelope).map_err(|e| Error::Malformed(e.to_string()))?;
    if envelope.payload_type != PAYLOAD_TYPE {
        return Err(Error::PayloadType(envelope.payload_type));
    }
    let payload = B64
        .decode(&envelope.payload)
        .map_err(|e| Error::Malformed(format!("payload: {e}")))?;
    let key = signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, point);
    let message = pae(&envelope.payload_type, &payload);
    let verified = envelope.signatures.iter().any(|s| {
        B64.decode(&s.sig)
            .is_ok_and(|sig| key.verify(&message, &sig).is_ok())
    });
    if !verified {
        return Err(Error::BadSignature);
    }
    // Only signed bytes are read past this point.
    let statement: Statement =
        serde_json::from_slice(&payload).map_err(|e| Error::Malformed(e.to_string()))?;
    if statement.statement_type != STATEMENT_TYPE || statement.predicate_type != PREDICATE_TYPE {
        return Err(Error::Malformed(format!(
            "statement type {} with predicate {}",
            statement.statement_type, statement.predicate_type
        )));
    }
    match statement.subject.as_slice() {
        [s] if s.digest.sha256 == artifact_sha256 => Ok(statement),
        [s] => Err(Error::SubjectMismatch {
            statement: s.digest.sha256.clone(),
            artifact: artifact_sha256.into(),
        }),
        _ => Err(Error::Malformed("expected exactly one subject".into())),
    }
}

/// `ARTIFACT.intoto.json`: where the signed statement is written.
pub fn path_beside(artifact: &Path) -> PathBuf {
    let mut p = artifact.as_os_str().to_owned();
    p.push(".intoto.json");
    PathBuf::from(p)
}

/// Signs and writes the statement beside `artifact`.
pub fn write_signed(artifact: &Path, statement: &Statement, key: &Path) -> anyhow::Result<PathBuf> {
    let envelope = sign(statement, key)?;
    let path = path_beside(artifact);
    let mut bytes = serde_json::to_vec_pretty(&envelope).expect("an envelope serialises");
    bytes.push(b'\n');
    std::fs::write(&path, bytes).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_is_dsse_v1() {
        // The DSSE spec's own example.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }
}

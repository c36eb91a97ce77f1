//! The protocol's messages. Every message starts with its protocol version,
//! so a peer can refuse a version it does not speak before decoding the rest
//! ([`peek_version`]). Encoding is postcard.
//!
//! TPM structures travel as the TPM's own marshalled bytes (no TPM2B size
//! prefix): the server parses them with `ember-tpm`.

use crate::ErrorKind;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::Error;

/// The protocol version this crate speaks.
/// 2: the overlay grant carries the signed boot image record.
pub const PROTOCOL_VERSION: u16 = 2;

/// HTTP paths, relative to the server's base URL.
pub mod path {
    pub const START: &str = "/v1/attest/start";
    pub const FINISH: &str = "/v1/attest/finish";
    /// Sealed overlay blobs by SHA-256: `/v1/blob/<hex>`, on both listeners.
    pub const BLOB: &str = "/v1/blob";
    pub const REPORT: &str = "/v1/report";
    /// The iPXE script a node's next network boot gets, by node name
    /// (`/v1/boot/node/<name>`): the UKI its rollout hands it.
    pub const BOOT_NODE: &str = "/v1/boot/node";
    /// FleetLock-style reboot locks, taken and released with the node's
    /// credential (`Authorization: Bearer`).
    pub const LOCK: &str = "/v1/rollout/lock";
    pub const UNLOCK: &str = "/v1/rollout/unlock";
    /// Static boot artifacts by SHA-256: `/v1/boot/<hex>`.
    pub const BOOT: &str = "/v1/boot";
}

/// Content type of every protocol body.
pub const CONTENT_TYPE: &str = "application/x-ember-postcard";
/// Response header naming the refusal reason, readable without the body.
pub const ERROR_HEADER: &str = "ember-error";

/// Longest body the client accepts for a non-streaming response.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// TPM_ALG_SHA256.
pub const ALG_SHA256: u16 = 0x000B;

/// Longest TCG event log a node sends with its quote (OVMF booting a UKI
/// writes about 3 KiB; firmware with Secure Boot databases tens of KiB).
/// Leaves room in a [`MAX_MESSAGE`] Finish for the quote itself.
pub const MAX_EVENT_LOG: usize = 48 * 1024;

/// Which PCRs of which bank the quote covers.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcrSelection {
    /// TPM_ALG_ID of the bank.
    pub hash_alg: u16,
    /// Bit i set = PCR i selected (PCRs 0..=23).
    pub mask: u32,
}

impl PcrSelection {
    pub const fn sha256(mask: u32) -> Self {
        PcrSelection {
            hash_alg: ALG_SHA256,
            mask,
        }
    }

    /// Selected PCR indices in ascending order (the TPM's quote order).
    pub fn indices(&self) -> impl Iterator<Item = u8> + '_ {
        (0u8..24).filter(move |i| self.mask & (1 << i) != 0)
    }

    pub fn count(&self) -> usize {
        (self.mask & 0x00FF_FFFF).count_ones() as usize
    }
}

/// Step 1, node → server.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StartRequest {
    pub version: u16,
    /// The EK's TPMT_PUBLIC.
    pub ek_public: Vec<u8>,
    /// The EK certificate (DER) from the TPM's NV, when it has one.
    pub ek_cert: Option<Vec<u8>>,
    /// The freshly created AK's TPMT_PUBLIC.
    pub ak_public: Vec<u8>,
}

/// Step 1, server → node.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StartResponse {
    pub version: u16,
    pub session: [u8; 16],
    /// Qualifying data the quote must carry.
    pub nonce: [u8; 32],
    /// MakeCredential output: TPM2B_ID_OBJECT contents.
    pub credential_blob: Vec<u8>,
    /// MakeCredential output: TPM2B_ENCRYPTED_SECRET contents.
    pub encrypted_secret: Vec<u8>,
    /// PCRs the quote must cover.
    pub pcrs: PcrSelection,
    /// Seconds until the session expires.
    pub expires_in_s: u32,
}

/// Step 2, node → server.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FinishRequest {
    pub version: u16,
    pub session: [u8; 16],
    /// TPMS_ATTEST bytes the AK signed.
    pub attest: Vec<u8>,
    /// TPMT_SIGNATURE over `attest`.
    pub signature: Vec<u8>,
    /// The selected PCRs' values in ascending index order.
    pub pcr_values: Vec<Vec<u8>>,
    /// HMAC-SHA256 keyed by the activated secret over the transcript
    /// ([`crate::keys::finish_proof`]).
    pub proof: [u8; 32],
    /// The firmware's TCG event log (binary_bios_measurements), at most
    /// [`MAX_EVENT_LOG`] bytes; empty when the node has none. The server
    /// replays it against the quoted PCRs to name what differs.
    pub event_log: Vec<u8>,
}

/// The overlay assigned to the node: its signed manifest, its data key
/// wrapped for this session ([`crate::keys::wrap_data_key`]), and where the
/// blob is served without TLS.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct OverlayGrant {
    pub manifest: crate::manifest::SignedManifest,
    pub wrapped_key: Vec<u8>,
    /// The server's plain-HTTP port (`ember serve --http-listen`), if any:
    /// the blob is ciphertext bound to the manifest, so it needs no TLS.
    pub http_port: Option<u16>,
    /// The unified kernel image this boot came from, for last-known-good:
    /// `None` when the server does not know one (no slot is written).
    pub boot_image: Option<crate::manifest::SignedBootImage>,
}

/// Step 2, server → node.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FinishResponse {
    pub version: u16,
    /// Bearer credential for the overlay and report requests.
    pub credential: [u8; 32],
    pub expires_in_s: u32,
    /// `None` when no overlay is assigned to the node or its group.
    pub overlay: Option<OverlayGrant>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The node joined the cluster with this overlay.
    Joined,
    /// The boot failed.
    Failed,
}

/// Step 4, node → server (with the bearer credential).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReportRequest {
    pub version: u16,
    pub outcome: Outcome,
    pub overlay_version: Option<u64>,
    pub reason: String,
}

/// Step 4, server → node.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReportResponse {
    pub version: u16,
    /// Failed boots since the last success.
    pub attempts: u32,
    pub last_known_good: Option<u64>,
}

/// Every refusal's reason. Each has its own code, HTTP status and name so a
/// node's log line says exactly why it was refused.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    Malformed = 1,
    UnsupportedVersion = 2,
    UnknownEk = 3,
    BadEkCertificate = 4,
    EkMismatch = 5,
    BadAkAttributes = 6,
    UnknownSession = 7,
    SessionExpired = 8,
    SessionReused = 9,
    BadProof = 10,
    BadSignature = 11,
    StaleNonce = 12,
    PcrDigestMismatch = 13,
    PcrPolicyMismatch = 14,
    MissingCredential = 15,
    UnknownCredential = 16,
    CredentialExpired = 17,
    NoOverlay = 18,
    NotFound = 19,
    Internal = 20,
    /// The EK or the peer already has as many open sessions as the server
    /// allows: finish or let them expire, then start again.
    TooManySessions = 21,
    /// The event log sent with the quote does not replay to the quoted
    /// PCR values (or is malformed, or missing where the policy needs it).
    EventLogMismatch = 22,
    /// The UKI this boot came from is older than one the node already
    /// blessed (its rollback floor on the server), or cannot be ordered
    /// against it: no overlay, no key.
    BootImageRollback = 23,
    /// A report claims another overlay version than the one its
    /// credential's session was granted: refused, nothing recorded.
    ReportMismatch = 24,
    /// The server cannot decide now (its database does not answer): an
    /// outage, not a verdict. Retry after the `Retry-After` the response
    /// carries, or ask the next server; nothing about the node was judged.
    Unavailable = 25,
    /// A reboot lock (`/v1/rollout/lock`) is refused: as many of the
    /// group's nodes as its rollout allows are rebooting. Retry after the
    /// `Retry-After` the response carries.
    RebootLockHeld = 26,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 26] = [
        ErrorCode::Malformed,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnknownEk,
        ErrorCode::BadEkCertificate,
        ErrorCode::EkMismatch,
        ErrorCode::BadAkAttributes,
        ErrorCode::UnknownSession,
        ErrorCode::SessionExpired,
        ErrorCode::SessionReused,
        ErrorCode::BadProof,
        ErrorCode::BadSignature,
        ErrorCode::StaleNonce,
        ErrorCode::PcrDigestMismatch,
        ErrorCode::PcrPolicyMismatch,
        ErrorCode::MissingCredential,
        ErrorCode::UnknownCredential,
        ErrorCode::CredentialExpired,
        ErrorCode::NoOverlay,
        ErrorCode::NotFound,
        ErrorCode::Internal,
        ErrorCode::TooManySessions,
        ErrorCode::EventLogMismatch,
        ErrorCode::BootImageRollback,
        ErrorCode::ReportMismatch,
        ErrorCode::Unavailable,
        ErrorCode::RebootLockHeld,
    ];

    /// The stable, log-friendly name (also sent in [`ERROR_HEADER`]).
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnsupportedVersion => "unsupported-version",
            ErrorCode::UnknownEk => "unknown-ek",
            ErrorCode::BadEkCertificate => "bad-ek-certificate",
            ErrorCode::EkMismatch => "ek-certificate-mismatch",
            ErrorCode::BadAkAttributes => "bad-ak-attributes",
            ErrorCode::UnknownSession => "unknown-session",
            ErrorCode::SessionExpired => "session-expired",
            ErrorCode::SessionReused => "session-reused",
            ErrorCode::BadProof => "bad-proof",
            ErrorCode::BadSignature => "bad-signature",
            ErrorCode::StaleNonce => "stale-nonce",
            ErrorCode::PcrDigestMismatch => "pcr-digest-mismatch",
            ErrorCode::PcrPolicyMismatch => "pcr-policy-mismatch",
            ErrorCode::MissingCredential => "missing-credential",
            ErrorCode::UnknownCredential => "unknown-credential",
            ErrorCode::CredentialExpired => "credential-expired",
            ErrorCode::NoOverlay => "no-overlay",
            ErrorCode::NotFound => "not-found",
            ErrorCode::Internal => "internal",
            ErrorCode::TooManySessions => "too-many-sessions",
            ErrorCode::EventLogMismatch => "event-log-mismatch",
            ErrorCode::BootImageRollback => "boot-image-rollback",
            ErrorCode::ReportMismatch => "report-mismatch",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::RebootLockHeld => "reboot-lock-held",
        }
    }

    pub fn from_name(name: &str) -> Option<ErrorCode> {
        Self::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// The HTTP status the server answers with.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::Malformed => 400,
            ErrorCode::UnsupportedVersion => 426,
            ErrorCode::UnknownEk | ErrorCode::BadEkCertificate | ErrorCode::EkMismatch => 403,
            ErrorCode::BadAkAttributes => 422,
            ErrorCode::UnknownSession | ErrorCode::NotFound | ErrorCode::NoOverlay => 404,
            ErrorCode::SessionExpired | ErrorCode::CredentialExpired => 410,
            ErrorCode::SessionReused | ErrorCode::StaleNonce => 409,
            ErrorCode::BadProof | ErrorCode::BadSignature => 401,
            ErrorCode::PcrDigestMismatch
            | ErrorCode::PcrPolicyMismatch
            | ErrorCode::EventLogMismatch
            | ErrorCode::BootImageRollback
            | ErrorCode::ReportMismatch => 403,
            ErrorCode::MissingCredential | ErrorCode::UnknownCredential => 401,
            ErrorCode::Internal => 500,
            ErrorCode::TooManySessions => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::RebootLockHeld => 423,
        }
    }

    /// Whether the refusal says "not now" rather than "not you": the
    /// server is overloaded or cannot reach its database. A client waits
    /// (honouring `Retry-After`), tries its next server, and may fall back
    /// to what it booted before; every other code judged the request or
    /// the node and stays final.
    pub const fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorCode::Unavailable | ErrorCode::TooManySessions | ErrorCode::Internal
        )
    }
}

/// The body of every refusal.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    pub version: u16,
    pub code: ErrorCode,
    pub detail: String,
}

/// Encodes a message.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Encoding into a Vec fails only on allocation failure, which aborts.
    postcard::to_allocvec(msg).unwrap_or_default()
}

/// Reads the leading protocol version without decoding the rest.
pub fn peek_version(bytes: &[u8]) -> Result<u16, Error> {
    postcard::take_from_bytes::<u16>(bytes)
        .map(|(v, _)| v)
        .map_err(|_| Error::new(ErrorKind::Decode { what: "version" }))
}

/// Decodes a whole message of type `T`, refusing other versions and
/// trailing bytes.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, Error> {
    let version = peek_version(bytes)?;
    if version != PROTOCOL_VERSION {
        return Err(Error::new(ErrorKind::UnsupportedVersion { got: version }));
    }
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((msg, [])) => Ok(msg),
        _ => Err(Error::new(ErrorKind::Decode { what })),
    }
}

/// A Report's body: the [`ReportRequest`], then (from nodes that send
/// one) the boot's phase table. A node without a table sends the request
/// alone, as every node did before the table existed.
pub fn encode_report(req: &ReportRequest, timeline: Option<&crate::timeline::Timeline>) -> Vec<u8> {
    let mut body = encode(req);
    if let Some(t) = timeline {
        body.extend_from_slice(&t.encode());
    }
    body
}

/// Splits a Report's body into its request and the bytes after it (empty
/// from a node that sends no phase table; read them with
/// [`Timeline::decode`](crate::timeline::Timeline::decode)).
pub fn decode_report(bytes: &[u8]) -> Result<(ReportRequest, &[u8]), Error> {
    let version = peek_version(bytes)?;
    if version != PROTOCOL_VERSION {
        return Err(Error::new(ErrorKind::UnsupportedVersion { got: version }));
    }
    postcard::take_from_bytes::<ReportRequest>(bytes)
        .map_err(|_| Error::new(ErrorKind::Decode { what: "report" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_request_round_trips() {
        let req = StartRequest {
            version: PROTOCOL_VERSION,
            ek_public: vec![1, 2, 3],
            ek_cert: None,
            ak_public: vec![9; 40],
        };
        let bytes = encode(&req);
        assert_eq!(decode::<StartRequest>("start", &bytes).unwrap(), req);
    }

    #[test]
    fn encoding_is_stable() {
        // Captured once: version 1, session, nonce, blob [7], secret [8], pcrs sha256 mask 0x81, 60 s.
        let resp = StartResponse {
            version: 1,
            session: [0xAA; 16],
            nonce: [0xBB; 32],
            credential_blob: vec![7],
            encrypted_secret: vec![8],
            pcrs: PcrSelection::sha256(0x81),
            expires_in_s: 60,
        };
        let bytes = encode(&resp);
        let mut expected = vec![1u8];
        expected.extend([0xAA; 16]);
        expected.extend([0xBB; 32]);
        expected.extend([1, 7, 1, 8, 0x0B, 0x81, 0x01, 60]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn other_version_is_refused_before_decoding() {
        let mut bytes = encode(&ReportRequest {
            version: PROTOCOL_VERSION,
            outcome: Outcome::Joined,
            overlay_version: Some(3),
            reason: "ok".into(),
        });
        bytes[0] = 1;
        assert_eq!(
            decode::<ReportRequest>("report", &bytes),
            Err(Error::new(ErrorKind::UnsupportedVersion { got: 1 }))
        );
    }

    #[test]
    fn a_report_carries_its_timeline_after_the_request_and_old_ones_have_none() {
        use crate::timeline::{Phase, PhaseStatus, Timeline};
        let req = ReportRequest {
            version: PROTOCOL_VERSION,
            outcome: Outcome::Failed,
            overlay_version: None,
            reason: "phase dhcp: no lease".into(),
        };
        let old = encode_report(&req, None);
        assert_eq!(old, encode(&req));
        assert_eq!(decode_report(&old).unwrap(), (req.clone(), &[][..]));

        let mut t = Timeline::default();
        t.push(Phase {
            name: "dhcp".into(),
            start_ms: 2500,
            took_ms: 3000,
            cpu_ms: 2,
            status: PhaseStatus::Failed,
        });
        let new = encode_report(&req, Some(&t));
        let (back, tail) = decode_report(&new).unwrap();
        assert_eq!(back, req);
        assert_eq!(Timeline::decode(tail).unwrap(), t);

        let mut other = new.clone();
        other[0] = 1;
        assert_eq!(
            decode_report(&other).unwrap_err(),
            Error::new(ErrorKind::UnsupportedVersion { got: 1 })
        );
        assert_eq!(
            decode_report(&old[..old.len() - 1]).unwrap_err(),
            Error::new(ErrorKind::Decode { what: "report" })
        );
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut bytes = encode(&ReportResponse {
            version: PROTOCOL_VERSION,
            attempts: 0,
            last_known_good: None,
        });
        bytes.push(0);
        assert_eq!(
            decode::<ReportResponse>("report", &bytes),
            Err(Error::new(ErrorKind::Decode { what: "report" }))
        );
    }

    #[test]
    fn truncated_message_is_malformed_not_a_panic() {
        let bytes = encode(&StartRequest {
            version: 1,
            ek_public: vec![1; 300],
            ek_cert: Some(vec![2; 10]),
            ak_public: vec![],
        });
        for n in 0..bytes.len() {
            assert!(decode::<StartRequest>("start", &bytes[..n]).is_err());
        }
    }

    #[test]
    fn error_codes_have_distinct_names() {
        for (i, a) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(ErrorCode::from_name(a.name()), Some(*a));
            for b in &ErrorCode::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
        }
    }
}

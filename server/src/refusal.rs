//! Why a request was refused, and the conversions every layer's errors
//! take into one: the store's, the verifier's, a message that does not
//! decode. The attestation steps, measured-boot judging and rollback
//! floors all refuse with it; the HTTP layer turns it into a response.

use std::borrow::Cow;

use ember_proto::msg::{decode, ErrorCode, PROTOCOL_VERSION};

use crate::store;
use crate::verify::VerifyError;

/// Why a request was refused: the code and a short reason the client sees
/// (fixed words, never secrets, PCR values or database errors), and the
/// detail that only the server log gets.
#[derive(Debug)]
pub struct Refusal {
    pub code: ErrorCode,
    pub reason: Cow<'static, str>,
    pub detail: String,
}

impl Refusal {
    /// A refusal whose reason is the code's name.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Refusal {
            code,
            reason: Cow::Borrowed(code.name()),
            detail: detail.into(),
        }
    }

    /// Names the cause more precisely than the code (e.g. which EK
    /// certificate check failed).
    pub fn because(mut self, reason: impl Into<Cow<'static, str>>) -> Self {
        self.reason = reason.into();
        self
    }
}

impl From<anyhow::Error> for Refusal {
    fn from(e: anyhow::Error) -> Self {
        Refusal::new(ErrorCode::Internal, format!("{e:#}"))
    }
}

impl From<store::Error> for Refusal {
    fn from(e: store::Error) -> Self {
        // `internal` makes a node try its next server: a replica whose
        // database is down sends nodes on to one whose database answers.
        let reason = match e {
            store::Error::Unavailable(_) => "database-unavailable",
            _ => "database",
        };
        Refusal::new(ErrorCode::Internal, format!("{e}")).because(reason)
    }
}

impl From<VerifyError> for Refusal {
    fn from(e: VerifyError) -> Self {
        let (code, reason) = match &e {
            VerifyError::Malformed(_) => (ErrorCode::Malformed, "malformed-tpm-structure"),
            VerifyError::BadEkCertificate { reason, .. } => (ErrorCode::BadEkCertificate, *reason),
            VerifyError::EkMismatch => (ErrorCode::EkMismatch, "ek-certificate-mismatch"),
            VerifyError::BadAkAttributes { reason, .. } => (ErrorCode::BadAkAttributes, *reason),
            VerifyError::BadSignature(_) => (ErrorCode::BadSignature, "quote-signature"),
            VerifyError::Sha1AkName => (ErrorCode::BadAkAttributes, "ak-name-sha1"),
            VerifyError::Sha1Quote => (ErrorCode::BadSignature, "quote-signed-with-sha1"),
            VerifyError::StaleNonce => (ErrorCode::StaleNonce, "stale-nonce"),
            VerifyError::PcrDigestMismatch(_) => {
                (ErrorCode::PcrDigestMismatch, "pcr-digest-mismatch")
            }
            VerifyError::Internal(_) => (ErrorCode::Internal, "internal"),
        };
        Refusal::new(code, e.to_string()).because(reason)
    }
}

/// A request body as its message, or the refusal that says why not: a
/// version this server does not speak, or anything else malformed.
pub fn decode_msg<T: serde::de::DeserializeOwned>(
    what: &'static str,
    body: &[u8],
) -> Result<T, Refusal> {
    decode(what, body).map_err(refusal_of)
}

/// A message that did not decode, as the node is told.
fn refusal_of(e: ember_proto::Error) -> Refusal {
    match *e.kind() {
        ember_proto::ErrorKind::UnsupportedVersion { got } => Refusal::new(
            ErrorCode::UnsupportedVersion,
            format!("protocol version {got} not supported (this server speaks {PROTOCOL_VERSION})"),
        ),
        _ => Refusal::new(ErrorCode::Malformed, e.to_string()),
    }
}

/// Splits a Report's body ([`ember_proto::msg::decode_report`]) into its
/// request and the phase-table bytes after it, refusing as [`decode_msg`].
pub fn decode_report(body: &[u8]) -> Result<(ember_proto::msg::ReportRequest, &[u8]), Refusal> {
    ember_proto::msg::decode_report(body).map_err(refusal_of)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_proto::msg::{encode, ReportRequest};

    #[test]
    fn a_database_that_does_not_answer_is_named_apart_from_one_that_fails() {
        let down = Refusal::from(store::Error::Unavailable("connection refused".into()));
        assert_eq!(down.code, ErrorCode::Internal);
        assert_eq!(down.reason, "database-unavailable");
        let failed = Refusal::from(store::Error::Shape("no row".into()));
        assert_eq!(
            (failed.code, &*failed.reason),
            (ErrorCode::Internal, "database")
        );
        // The client never sees the detail; the log does.
        assert!(failed.detail.contains("no row"));
    }

    #[test]
    fn verifier_errors_keep_their_codes() {
        let r = Refusal::from(VerifyError::StaleNonce);
        assert_eq!((r.code, &*r.reason), (ErrorCode::StaleNonce, "stale-nonce"));
        let r = Refusal::from(VerifyError::Sha1Quote);
        assert_eq!(r.code, ErrorCode::BadSignature);
    }

    #[test]
    fn bodies_that_do_not_decode_are_malformed_or_of_another_version() {
        let mut req = ReportRequest {
            version: PROTOCOL_VERSION,
            outcome: ember_proto::msg::Outcome::Joined,
            overlay_version: Some(3),
            reason: "ok".into(),
        };
        let good = encode(&req);
        let back: ReportRequest = decode_msg("report", &good).unwrap();
        assert_eq!(back.overlay_version, Some(3));
        let mut cut = good.clone();
        cut.pop();
        let r = decode_msg::<ReportRequest>("report", &cut).unwrap_err();
        assert_eq!(r.code, ErrorCode::Malformed);
        req.version = PROTOCOL_VERSION + 1;
        let r = decode_msg::<ReportRequest>("report", &encode(&req)).unwrap_err();
        assert_eq!(r.code, ErrorCode::UnsupportedVersion);
        assert!(r.detail.contains("not supported"), "{}", r.detail);
    }
}

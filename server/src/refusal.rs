//! Why a request was refused, and the conversions every layer's errors
//! take into one: the store's, the verifier's, a message that does not
//! decode. The attestation steps, measured-boot judging and rollback
//! floors all refuse with it; the HTTP layer turns it into a response.

use std::borrow::Cow;

use ember_proto::msg::{decode, ErrorCode, PROTOCOL_VERSION};

use crate::store;
use crate::store::reports::Explanation;
use crate::verify::VerifyError;

/// Why a request was refused: the code and a short reason the client sees
/// (fixed words, never secrets, PCR values or database errors), and the
/// detail that only the server log gets, and for a measured-boot or
/// rollback refusal the explanation its operator sees (expected against
/// received, the command that allows it; kept with the node's boots, never
/// sent to the node).
#[derive(Debug)]
pub struct Refusal {
    pub code: ErrorCode,
    pub reason: Cow<'static, str>,
    pub detail: String,
    /// Boxed: every step returns a Refusal as its error, and most never
    /// carry one.
    pub explanation: Option<Box<Explanation>>,
}

impl Refusal {
    /// A refusal whose reason is the code's name.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Refusal {
            code,
            reason: Cow::Borrowed(code.name()),
            detail: detail.into(),
            explanation: None,
        }
    }

    /// Attaches what the operator is shown about this refusal.
    pub fn explained(mut self, e: Explanation) -> Self {
        self.explanation = Some(Box::new(e));
        self
    }

    /// Names the cause more precisely than the code (e.g. which EK
    /// certificate check failed).
    pub fn because(mut self, reason: impl Into<Cow<'static, str>>) -> Self {
        self.reason = reason.into();
        self
    }

    /// The `Retry-After` (seconds) sent with a refusal that says "not
    /// now": an unavailable database is usually back, or its connections
    /// reconnected, within one statement timeout; a full session cap frees
    /// as sessions finish.
    pub fn retry_after_s(&self) -> Option<u32> {
        match self.code {
            ErrorCode::Unavailable => Some(RETRY_UNAVAILABLE_S),
            ErrorCode::TooManySessions => Some(RETRY_TOO_MANY_S),
            ErrorCode::RebootLockHeld => Some(RETRY_LOCK_S),
            _ => None,
        }
    }
}

/// `Retry-After` on 503: about one PostgreSQL statement timeout.
pub const RETRY_UNAVAILABLE_S: u32 = 5;
/// `Retry-After` on a reboot lock held by others (423).
pub const RETRY_LOCK_S: u32 = 15;
/// `Retry-After` on 429.
pub const RETRY_TOO_MANY_S: u32 = 10;

/// Whether a store error means the database cannot answer now (down,
/// silent, out of connections, SQLite busy past its timeout) rather than
/// that it answered with a failure.
fn outage(e: &store::Error) -> bool {
    match e {
        store::Error::Unavailable(_) => true,
        store::Error::Sqlite(e) => matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        ),
        _ => false,
    }
}

impl From<anyhow::Error> for Refusal {
    fn from(e: anyhow::Error) -> Self {
        Refusal::new(ErrorCode::Internal, format!("{e:#}"))
    }
}

impl From<store::Error> for Refusal {
    fn from(e: store::Error) -> Self {
        // A database that does not answer is an outage, not a verdict:
        // 503 `unavailable` sends a node on to its next server, then to
        // its last-known-good. A database that answered with an error is
        // `internal`.
        if outage(&e) {
            Refusal::new(ErrorCode::Unavailable, format!("{e}")).because("database-unavailable")
        } else {
            Refusal::new(ErrorCode::Internal, format!("{e}")).because("database")
        }
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
        assert_eq!(down.code, ErrorCode::Unavailable);
        assert_eq!(down.code.http_status(), 503);
        assert_eq!(down.reason, "database-unavailable");
        assert_eq!(down.retry_after_s(), Some(RETRY_UNAVAILABLE_S));
        let busy = Refusal::from(store::Error::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        )));
        assert_eq!(busy.code, ErrorCode::Unavailable);
        let failed = Refusal::from(store::Error::Shape("no row".into()));
        assert_eq!(
            (failed.code, &*failed.reason),
            (ErrorCode::Internal, "database")
        );
        assert_eq!(failed.retry_after_s(), None);
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

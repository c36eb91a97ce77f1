//! How a client retries, shared by the node (`/init`) and the load test's
//! simulated nodes, so that a storm is tested as nodes behave under a busy
//! or failing fleet (`ember attest`, an operator's one-shot, uses the
//! report policy but tries each server once):
//! - attestation: rounds over every listed server, a failure sorted into
//!   "no answer", "not now" or "not you" ([`AttestFailure`]), and waits
//!   between rounds that a server's `Retry-After` can raise but never past
//!   [`MAX_ROUND_WAIT_MS`] (a node must reach its last-known-good in
//!   bounded time);
//! - the report: bounded tries with doubling waits ([`after_report_failure`]).

use crate::msg::ErrorCode;
use crate::{Error, ErrorKind};

/// Rounds over every listed server; between rounds the wait doubles
/// (2 s, 4 s), raised to the longest `Retry-After` a busy server sent and
/// capped at [`MAX_ROUND_WAIT_MS`], so an unreachable or unavailable fleet
/// costs a bounded ~6-20 s plus timeouts before last-known-good is tried.
pub const ATTEST_ROUNDS: u32 = 3;

/// The longest wait between rounds, whatever `Retry-After` a server asks
/// for.
pub const MAX_ROUND_WAIT_MS: u64 = 10_000;

/// What one server's failure to attest a node means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttestFailure {
    /// No exchange happened (no route, refused, timed out before TLS).
    Unreachable,
    /// The server answered "not now": 503 `unavailable` (its database is
    /// down or busy), 429, 500, or a 5xx without a protocol body. It judged
    /// nothing about this node.
    Busy { retry_after_s: Option<u32> },
    /// Anything else: a refusal that names the node (unknown EK, policy,
    /// rollback, bad proof), or a TLS/certificate failure. Final: replicas
    /// share one decision, and a man in the middle must not be able to
    /// pick the outcome by making one server look bad.
    Final,
}

impl AttestFailure {
    pub fn of(e: &Error) -> AttestFailure {
        match e.kind() {
            ErrorKind::Transport {
                unreachable: true, ..
            } => AttestFailure::Unreachable,
            ErrorKind::Server {
                code,
                retry_after_s,
                ..
            } if code.is_transient() => AttestFailure::Busy {
                retry_after_s: *retry_after_s,
            },
            ErrorKind::UnexpectedResponse {
                status: 429 | 500..=599,
                ..
            } => AttestFailure::Busy {
                retry_after_s: None,
            },
            _ => AttestFailure::Final,
        }
    }
}

/// The wait after `round` (1-based) before the next: 2 s doubling, at
/// least the longest `Retry-After` heard in the round, at most
/// [`MAX_ROUND_WAIT_MS`].
pub fn round_wait_ms(round: u32, retry_after_s: Option<u32>) -> u64 {
    let doubling = 2_000u64 << round.saturating_sub(1).min(16);
    let asked = retry_after_s.map_or(0, |s| u64::from(s).saturating_mul(1000));
    doubling.max(asked).min(MAX_ROUND_WAIT_MS)
}

/// Tries a report gets before the node gives up on it: the first, then
/// after 1, 2, 4 and 8 s (15 s of waiting, plus each try's timeouts).
/// A Joined report raises the node's rollback floor on the server, so one
/// dropped connection must not be enough to keep the floor down.
pub const REPORT_ATTEMPTS: u32 = 5;

/// What to do after report attempt `attempt` (1-based) failed with `e`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterReport {
    /// Try again after this many milliseconds.
    RetryIn(u64),
    /// An earlier attempt reached the server and only its answer was lost:
    /// the server refuses a second report on one credential
    /// (`session-reused`), so it has the first.
    Delivered,
    /// A refusal another try cannot change, or the tries are used up.
    GiveUp,
}

/// The report retry policy, shared by the node and `ember attest`:
/// bounded by [`REPORT_ATTEMPTS`], doubling waits, and only for failures
/// another try may fix (no answer, a cut connection, a server error).
pub fn after_report_failure(attempt: u32, e: &Error) -> AfterReport {
    let retryable = match e.kind() {
        ErrorKind::Transport { .. } => true,
        ErrorKind::UnexpectedResponse { status, .. } => *status >= 500,
        ErrorKind::Server { code, .. } => match code {
            ErrorCode::SessionReused if attempt > 1 => return AfterReport::Delivered,
            // "Not now" (a database outage, a full server): the report may
            // still be delivered once the server can decide.
            c => c.is_transient(),
        },
        _ => false,
    };
    if !retryable || attempt >= REPORT_ATTEMPTS {
        return AfterReport::GiveUp;
    }
    AfterReport::RetryIn(1_000u64 << (attempt.saturating_sub(1)).min(16))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_at(step: &'static str, code: ErrorCode, retry_after_s: Option<u32>) -> Error {
        Error::new(ErrorKind::Server {
            step,
            status: code.http_status(),
            code,
            detail: Default::default(),
            retry_after_s,
        })
    }

    #[test]
    fn not_now_is_retried_and_not_you_is_final() {
        assert_eq!(
            AttestFailure::of(&refused_at("start", ErrorCode::Unavailable, Some(5))),
            AttestFailure::Busy {
                retry_after_s: Some(5)
            }
        );
        for code in [ErrorCode::TooManySessions, ErrorCode::Internal] {
            assert!(matches!(
                AttestFailure::of(&refused_at("start", code, None)),
                AttestFailure::Busy { .. }
            ));
        }
        for status in [429, 502, 503] {
            let e = Error::new(ErrorKind::UnexpectedResponse {
                step: "start",
                status,
            });
            assert!(
                matches!(AttestFailure::of(&e), AttestFailure::Busy { .. }),
                "{status}"
            );
        }
        let down = Error::new(ErrorKind::Transport {
            step: "start",
            detail: Default::default(),
            unreachable: true,
        });
        assert_eq!(AttestFailure::of(&down), AttestFailure::Unreachable);
        // Refusals that name the node, and anything not "not now", stay
        // final: no next server, no last-known-good.
        for code in ErrorCode::ALL {
            if !code.is_transient() {
                assert_eq!(
                    AttestFailure::of(&refused_at("start", code, Some(1))),
                    AttestFailure::Final,
                    "{code:?}"
                );
            }
        }
        for code in [
            ErrorCode::UnknownEk,
            ErrorCode::PcrPolicyMismatch,
            ErrorCode::BootImageRollback,
            ErrorCode::BadProof,
        ] {
            assert!(!code.is_transient(), "{code:?}");
        }
        let broken_tls = Error::new(ErrorKind::Transport {
            step: "start",
            detail: Default::default(),
            unreachable: false,
        });
        assert_eq!(AttestFailure::of(&broken_tls), AttestFailure::Final);
        let e = Error::new(ErrorKind::UnexpectedResponse {
            step: "start",
            status: 404,
        });
        assert_eq!(AttestFailure::of(&e), AttestFailure::Final);
    }

    #[test]
    fn round_waits_double_honour_retry_after_and_are_capped() {
        assert_eq!(round_wait_ms(1, None), 2_000);
        assert_eq!(round_wait_ms(2, None), 4_000);
        assert_eq!(round_wait_ms(1, Some(5)), 5_000);
        assert_eq!(round_wait_ms(2, Some(1)), 4_000);
        // A server cannot hold a node away from its last-known-good.
        assert_eq!(round_wait_ms(1, Some(3_600)), MAX_ROUND_WAIT_MS);
        assert_eq!(round_wait_ms(1, Some(u32::MAX)), MAX_ROUND_WAIT_MS);
        assert_eq!(round_wait_ms(40, None), MAX_ROUND_WAIT_MS);
        assert_eq!(round_wait_ms(0, None), 2_000);
        // Total wait over the rounds is bounded.
        let total: u64 = (1..ATTEST_ROUNDS)
            .map(|r| round_wait_ms(r, Some(u32::MAX)))
            .sum();
        assert!(total <= u64::from(ATTEST_ROUNDS - 1) * MAX_ROUND_WAIT_MS);
    }

    fn transport() -> Error {
        Error::new(ErrorKind::Transport {
            step: "report",
            detail: Default::default(),
            unreachable: false,
        })
    }

    fn refused(code: ErrorCode) -> Error {
        refused_at("report", code, None)
    }

    #[test]
    fn a_lost_report_is_retried_with_doubling_waits_then_given_up() {
        let waits: Vec<AfterReport> = (1..=REPORT_ATTEMPTS)
            .map(|n| after_report_failure(n, &transport()))
            .collect();
        assert_eq!(
            waits,
            [
                AfterReport::RetryIn(1_000),
                AfterReport::RetryIn(2_000),
                AfterReport::RetryIn(4_000),
                AfterReport::RetryIn(8_000),
                AfterReport::GiveUp
            ]
        );
        for code in [ErrorCode::Internal, ErrorCode::Unavailable] {
            assert_eq!(
                after_report_failure(1, &refused(code)),
                AfterReport::RetryIn(1_000),
                "{code:?}"
            );
        }
        let gateway = Error::new(ErrorKind::UnexpectedResponse {
            step: "report",
            status: 502,
        });
        assert_eq!(
            after_report_failure(2, &gateway),
            AfterReport::RetryIn(2_000)
        );
    }

    #[test]
    fn a_refusal_is_final_and_session_reused_after_a_lost_answer_is_delivered() {
        for code in [
            ErrorCode::ReportMismatch,
            ErrorCode::CredentialExpired,
            ErrorCode::UnknownCredential,
        ] {
            assert_eq!(after_report_failure(1, &refused(code)), AfterReport::GiveUp);
        }
        let not_found = Error::new(ErrorKind::UnexpectedResponse {
            step: "report",
            status: 404,
        });
        assert_eq!(after_report_failure(1, &not_found), AfterReport::GiveUp);
        // On the first try it means someone else reported on this
        // credential; on a retry, that the first try arrived.
        let reused = refused(ErrorCode::SessionReused);
        assert_eq!(after_report_failure(1, &reused), AfterReport::GiveUp);
        assert_eq!(after_report_failure(2, &reused), AfterReport::Delivered);
    }
}

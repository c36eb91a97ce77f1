//! Step 4: telling the boot server how the boot ended (Joined after Ready,
//! Failed with the phase and reason), with the phases run so far. A report
//! that cannot be delivered is logged; it never changes the node's course.
//! A Joined report raises the node's rollback floor on the server, so one
//! that got no answer is tried again ([`Pending`], from the supervisor's
//! loop, never blocking it) under the policy `ember attest` follows too
//! ([`retry::after_report_failure`]): bounded, doubling waits, and only
//! for failures another try may fix.

use ember_proto::client;
use ember_proto::msg::Outcome;
use ember_proto::net::NetTransport;
use ember_proto::retry::{self, AfterReport};

use super::Session;
use crate::clock;

/// A report the server has not acknowledged yet: tried again at `due_ms`
/// ([`clock::now_ms`]).
#[derive(Debug, Clone, Copy)]
pub struct Pending {
    outcome: Outcome,
    reason: &'static str,
    /// Attempts made so far.
    attempt: u32,
    pub due_ms: u64,
}

impl Session {
    /// One report attempt; `Some` when it should be tried again.
    pub fn report(&self, outcome: Outcome, reason: &str) -> Option<Pending> {
        self.attempt(outcome, reason, 1)
            .map(|(attempt, wait)| Pending {
                outcome,
                // Only Joined is retried, and its reason is fixed.
                reason: "node is Ready",
                attempt,
                due_ms: clock::now_ms().saturating_add(wait),
            })
    }

    /// Tries a pending report again; `Some` while it should go on.
    pub fn retry(&self, p: Pending) -> Option<Pending> {
        let next = p.attempt + 1;
        self.attempt(p.outcome, p.reason, next)
            .map(|(attempt, wait)| Pending {
                attempt,
                due_ms: clock::now_ms().saturating_add(wait),
                ..p
            })
    }

    /// Attempt number `attempt`; the attempt count and the wait before the
    /// next one when a Joined report should be tried again.
    fn attempt(&self, outcome: Outcome, reason: &str, attempt: u32) -> Option<(u32, u64)> {
        let client = self.client();
        let mut http = NetTransport::new(&client, &self.server);
        let said = match outcome {
            Outcome::Joined => "Joined",
            Outcome::Failed => "Failed",
        };
        let e = match client::report(
            &mut http,
            &self.server,
            &self.cred,
            outcome,
            self.overlay_version(),
            reason,
            Some(&crate::phase::timeline()),
        ) {
            Ok(_) => {
                crate::info!("report: told the boot server {said}");
                return None;
            }
            Err(e) => e,
        };
        match retry::after_report_failure(attempt, &e) {
            // A failed boot is about to reboot: it is not held back for
            // its report.
            AfterReport::RetryIn(ms) if outcome == Outcome::Joined => {
                crate::warn!(
                    "report: {e}; attempt {attempt} of {}, trying again in {ms} ms",
                    retry::REPORT_ATTEMPTS
                );
                Some((attempt, ms))
            }
            AfterReport::Delivered => {
                crate::info!("report: told the boot server {said} (an earlier attempt arrived; its answer was lost)");
                None
            }
            _ => {
                crate::warn!(
                    "report: {e}; the boot server was not told {said} (attempt {attempt})"
                );
                None
            }
        }
    }
}

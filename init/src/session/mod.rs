//! The attested session with the boot server: `attest` (steps 1-2 of the
//! protocol, with bounded retries and failover across the servers
//! `ember.attest_url=` lists), `fetch` (step 3: the sealed overlay) and
//! `report` (step 4: how the boot ended).

mod fetch;
mod report;

use alloc::string::String;
use alloc::vec::Vec;
use core::cell::Cell;

use ember_net::https::Client;
use ember_net::url::ServerUrl;
use ember_proto::client::{self, Credential};
use ember_proto::net::NetTransport;
use ember_proto::tpm::TpmAttestor;

pub use fetch::Fetched;
pub use report::Pending;

use crate::network::{self, Network};
use crate::tpm::{Meter, NodeTpm};
use crate::{clock, Error, ErrorKind};

/// Rounds over every listed server; between rounds the wait doubles
/// (2 s, 4 s), raised to the longest `Retry-After` a busy server sent and
/// capped at [`MAX_WAIT_MS`], so an unreachable or unavailable fleet costs
/// a bounded ~6-20 s plus timeouts before last-known-good is tried.
const ROUNDS: u32 = 3;

/// The longest wait between rounds, whatever `Retry-After` a server asks
/// for: a node must reach its last-known-good in bounded time.
pub const MAX_WAIT_MS: u64 = 10_000;

/// What one server's failure to attest us means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// No exchange happened (no route, refused, timed out before TLS).
    Unreachable,
    /// The server answered "not now": 503 `unavailable` (its database is
    /// down), 429, 500, or a 5xx without a protocol body. It judged
    /// nothing about this node.
    Busy { retry_after_s: Option<u32> },
    /// Anything else: a refusal that names the node (unknown EK, policy,
    /// rollback, bad proof), or a TLS/certificate failure. Final: replicas
    /// share one decision, and a man in the middle must not be able to
    /// pick the outcome by making one server look bad.
    Final,
}

impl Retry {
    pub fn of(e: &ember_proto::Error) -> Retry {
        use ember_proto::ErrorKind as K;
        match e.kind() {
            K::Transport {
                unreachable: true, ..
            } => Retry::Unreachable,
            K::Server {
                code,
                retry_after_s,
                ..
            } if code.is_transient() => Retry::Busy {
                retry_after_s: *retry_after_s,
            },
            K::UnexpectedResponse {
                status: 429 | 500..=599,
                ..
            } => Retry::Busy {
                retry_after_s: None,
            },
            _ => Retry::Final,
        }
    }
}

/// The wait after `round` (1-based) before the next: 2 s doubling, at
/// least the longest `Retry-After` heard in the round, at most
/// [`MAX_WAIT_MS`].
pub fn backoff_ms(round: u32, retry_after_s: Option<u32>) -> u64 {
    let doubling = 2_000u64 << round.saturating_sub(1).min(16);
    let asked = retry_after_s.map_or(0, |s| u64::from(s).saturating_mul(1000));
    doubling.max(asked).min(MAX_WAIT_MS)
}

/// A credential from one boot server, and what it takes to talk to it again.
pub struct Session {
    /// The server that answered (the first of the list that did).
    pub server: ServerUrl,
    cred: Credential,
    /// The initrd's CA bundle (DER) and the lease's DNS servers at attest
    /// time: enough to fetch and report without the network phase's state.
    cas: Vec<Vec<u8>>,
    dns: Vec<[u8; 4]>,
    /// The overlay version, once its manifest verified (for the report).
    overlay_version: Cell<Option<u64>>,
}

impl Session {
    fn client(&self) -> Client<'_> {
        Client::new(&self.cas, &self.dns)
    }

    /// The overlay version this session was granted, once its manifest
    /// verified.
    pub fn overlay_version(&self) -> Option<u64> {
        self.overlay_version.get()
    }
}

/// Attests with the first of `servers` that answers. A server that cannot
/// be reached, or answers "not now" ([`Retry::Busy`]), is passed over for
/// the next, for up to [`ROUNDS`] rounds; anything else ([`Retry::Final`])
/// ends the attempt.
pub fn attest(tpm: &mut NodeTpm, net: &Network, servers: &[ServerUrl]) -> Result<Session, Error> {
    if servers.is_empty() {
        return Err(Error::new(ErrorKind::Cmdline(
            String::from("ember.attest_url=https://… is required to boot").into(),
        )));
    }
    let cas = network::https_cas()?;
    let client = Client::new(&cas, &net.lease.dns);
    let meter = Meter::start(tpm);
    let event_log = crate::measure::event_log();
    let mut last = None;
    let mut asked: Option<u32> = None;
    for round in 1..=ROUNDS {
        for server in servers {
            let mut http = NetTransport::new(&client, server);
            let mut attestor = TpmAttestor::new(tpm);
            let result = client::attest(&mut attestor, &mut http, server, &event_log);
            if let Err(e) = attestor.close() {
                crate::warn!("attest: flushing transient TPM objects: {e}");
            }
            match result {
                Ok(cred) => {
                    crate::info!(
                        "attest: credential valid for {} s from {server}",
                        cred.expires_in_s
                    );
                    meter.log(tpm);
                    return Ok(Session {
                        server: server.clone(),
                        cred,
                        cas: cas.clone(),
                        dns: net.lease.dns.clone(),
                        overlay_version: Cell::new(None),
                    });
                }
                Err(e) => match Retry::of(&e) {
                    Retry::Final => return Err(Error::from(e)),
                    retry => {
                        if let Retry::Busy {
                            retry_after_s: Some(s),
                        } = retry
                        {
                            asked = asked.max(Some(s));
                        }
                        crate::warn!("attest: {server} round {round}/{ROUNDS}: {e}");
                        last = Some(e);
                    }
                },
            }
        }
        if round < ROUNDS {
            let delay = backoff_ms(round, asked.take());
            crate::warn!("attest: no boot server could attest; retrying in {delay} ms");
            clock::sleep_ms(delay);
        }
    }
    Err(Error::from(last.unwrap_or(ember_proto::Error::new(
        ember_proto::ErrorKind::Transport {
            step: "start",
            detail: Default::default(),
            unreachable: true,
        },
    ))))
}

/// Whether an attest failure means "no boot server could decide" (none
/// reachable, or each unavailable or busy), the one case in which
/// last-known-good may be used instead. A refusal that names the node, or
/// a TLS or certificate failure, is not: it fails the boot with its reason.
pub fn undecided(e: &Error) -> bool {
    match e.kind() {
        ErrorKind::Attest(e) => Retry::of(e) != Retry::Final,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_proto::msg::ErrorCode;
    use ember_proto::ErrorKind as K;

    fn refused(code: ErrorCode, retry_after_s: Option<u32>) -> ember_proto::Error {
        ember_proto::Error::new(K::Server {
            step: "start",
            status: code.http_status(),
            code,
            detail: Default::default(),
            retry_after_s,
        })
    }

    #[test]
    fn not_now_is_retried_and_not_you_is_final() {
        assert_eq!(
            Retry::of(&refused(ErrorCode::Unavailable, Some(5))),
            Retry::Busy {
                retry_after_s: Some(5)
            }
        );
        for code in [ErrorCode::TooManySessions, ErrorCode::Internal] {
            assert!(matches!(
                Retry::of(&refused(code, None)),
                Retry::Busy { .. }
            ));
        }
        for status in [429, 502, 503] {
            let e = ember_proto::Error::new(K::UnexpectedResponse {
                step: "start",
                status,
            });
            assert!(matches!(Retry::of(&e), Retry::Busy { .. }), "{status}");
        }
        let down = ember_proto::Error::new(K::Transport {
            step: "start",
            detail: Default::default(),
            unreachable: true,
        });
        assert_eq!(Retry::of(&down), Retry::Unreachable);
        // Refusals that name the node, and anything not "not now", stay
        // final: no next server, no last-known-good.
        for code in ErrorCode::ALL {
            if !code.is_transient() {
                assert_eq!(Retry::of(&refused(code, Some(1))), Retry::Final, "{code:?}");
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
        let broken_tls = ember_proto::Error::new(K::Transport {
            step: "start",
            detail: Default::default(),
            unreachable: false,
        });
        assert_eq!(Retry::of(&broken_tls), Retry::Final);
        let e = ember_proto::Error::new(K::UnexpectedResponse {
            step: "start",
            status: 404,
        });
        assert_eq!(Retry::of(&e), Retry::Final);
    }

    #[test]
    fn backoff_doubles_honours_retry_after_and_is_capped() {
        assert_eq!(backoff_ms(1, None), 2_000);
        assert_eq!(backoff_ms(2, None), 4_000);
        assert_eq!(backoff_ms(1, Some(5)), 5_000);
        assert_eq!(backoff_ms(2, Some(1)), 4_000);
        // A server cannot hold a node away from its last-known-good.
        assert_eq!(backoff_ms(1, Some(3_600)), MAX_WAIT_MS);
        assert_eq!(backoff_ms(1, Some(u32::MAX)), MAX_WAIT_MS);
        assert_eq!(backoff_ms(40, None), MAX_WAIT_MS);
        assert_eq!(backoff_ms(0, None), 2_000);
        // Total wait over the rounds is bounded.
        let total: u64 = (1..ROUNDS).map(|r| backoff_ms(r, Some(u32::MAX))).sum();
        assert!(total <= u64::from(ROUNDS - 1) * MAX_WAIT_MS);
    }
}

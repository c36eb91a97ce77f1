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
use ember_proto::retry::{round_wait_ms, AttestFailure, ATTEST_ROUNDS};
use ember_proto::tpm::TpmAttestor;

pub use fetch::Fetched;
pub use report::Pending;

use crate::network::{self, Network};
use crate::tpm::{Meter, NodeTpm};
use crate::{clock, Error, ErrorKind};

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
/// be reached, or answers "not now" ([`AttestFailure::Busy`]), is passed over for
/// the next, for up to [`ATTEST_ROUNDS`] rounds (the policy in
/// [`ember_proto::retry`]); anything else ([`AttestFailure::Final`])
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
    for round in 1..=ATTEST_ROUNDS {
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
                Err(e) => match AttestFailure::of(&e) {
                    AttestFailure::Final => return Err(Error::from(e)),
                    retry => {
                        if let AttestFailure::Busy {
                            retry_after_s: Some(s),
                        } = retry
                        {
                            asked = asked.max(Some(s));
                        }
                        crate::warn!("attest: {server} round {round}/{ATTEST_ROUNDS}: {e}");
                        last = Some(e);
                    }
                },
            }
        }
        if round < ATTEST_ROUNDS {
            let delay = round_wait_ms(round, asked.take());
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
        ErrorKind::Attest(e) => AttestFailure::of(e) != AttestFailure::Final,
        _ => false,
    }
}

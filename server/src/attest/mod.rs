//! The protocol's server side, one file per step: `start` (a session
//! for an EK and AK), `finish` (the quote judged, the credential and the
//! overlay grant released) and `report` (a node says how its boot went,
//! authenticated by that credential). The steps are synchronous functions
//! over the store; the HTTP layer runs each on the blocking pool. Every
//! refusal is a [`Refusal`] with its own code.

mod finish;
mod grant;
mod report;
mod start;

use ember_proto::msg::{ErrorCode, PcrSelection};

pub use crate::refusal::Refusal;
use crate::store::{self, hex, Node, Policy, Sql, StateDir};
use crate::verify::Verifier;
pub use report::Authorized;

/// Server settings that shape the protocol.
#[derive(Clone, Debug)]
pub struct Settings {
    pub session_ttl_ms: i64,
    pub credential_ttl_ms: i64,
    /// Group for nodes admitted by a manufacturer certificate chain.
    pub auto_enroll_group: Option<String>,
    /// Open (started, unfinished, unexpired) sessions one EK may hold.
    pub max_sessions_per_ek: u64,
    /// Open sessions one client address may hold.
    pub max_sessions_per_peer: u64,
    /// Lab mode (`ember serve --lab-record-first-boot`): a node with no
    /// PCR policy gets its first boot's PCRs 0-7 recorded as its policy.
    /// Off, such a node is refused.
    pub lab_record_first_boot: bool,
    /// Boots kept per node (`--keep-boots`): older reports and their phase
    /// tables are dropped as new ones arrive.
    pub keep_boots: u32,
    /// Test mode: nonce and secret derived from the AK, so recorded
    /// transcripts replay (load tests only; never in production builds).
    #[cfg(feature = "test-hooks")]
    pub replayable_sessions: bool,
}

pub struct Server {
    pub state: StateDir,
    /// SQLite's one connection or a few to PostgreSQL.
    pub db: store::Store,
    pub verifier: Verifier,
    pub settings: Settings,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// How long a client may take to send a request body.
    pub body_timeout: std::time::Duration,
    /// The plain-HTTP listener's port, told to nodes in Finish so they
    /// fetch the sealed blob without TLS (set once it is bound).
    pub http_port: std::sync::OnceLock<u16>,
    /// The manifest key, which also signs each boot's boot image record.
    pub signing_key: ember_proto::manifest::SigningSecret,
    /// The UKIs among the boot artifacts, for last-known-good.
    pub ukis: crate::uki::Known,
}

/// A step's answer: the response body and the node it was for.
pub struct Started {
    pub body: Vec<u8>,
    pub node: String,
}

fn random<const N: usize>() -> Result<[u8; N], Refusal> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b)
        .map_err(|e| Refusal::new(ErrorCode::Internal, format!("getrandom: {e}")))?;
    Ok(b)
}

/// Seconds a node is told a session or credential lives: at least one,
/// and never more than a `u32` holds.
fn ttl_seconds(ttl_ms: i64) -> u32 {
    u32::try_from((ttl_ms / 1000).max(1)).unwrap_or(u32::MAX)
}

impl Server {
    /// A connection for one step; never hold two at once (SQLite has one).
    pub(crate) fn db(&self) -> Result<store::Pooled<'_>, Refusal> {
        Ok(self.db.get()?)
    }

    /// The policy that applies to `who`: its own, its group's, the
    /// default, or (lab mode only) record-on-first-boot; none is a refusal.
    fn policy_for(&self, db: &mut dyn Sql, who: &Who) -> Result<Policy, Refusal> {
        match store::policies::effective(db, who.name(), who.group())? {
            Some(p) => Ok(p),
            None if self.settings.lab_record_first_boot => Ok(store::policies::lab_record()),
            None => Err(Refusal::new(
                ErrorCode::PcrPolicyMismatch,
                format!(
                    "no PCR policy for node {} (group {}): set one with `ember policy set --uki`; `ember serve --lab-record-first-boot` records first boots (lab only)",
                    who.name(),
                    who.group()
                ),
            )
            .because("no PCR policy set for this node")),
        }
    }

    /// Open sessions over all replicas (the metrics gauge); None when the
    /// database does not answer.
    pub fn open_sessions(&self) -> Option<u64> {
        let mut db = self.db().ok()?;
        store::sessions::open(&mut db, store::now_ms()).ok()
    }
}

/// Who a session is for.
#[derive(Debug)]
enum Who {
    Enrolled(Node),
    /// Not enrolled, admitted by its EK certificate chain: becomes a node
    /// at Finish.
    Admitted {
        name: String,
        group: String,
        cert: Vec<u8>,
    },
}

impl Who {
    fn name(&self) -> &str {
        match self {
            Who::Enrolled(n) => &n.name,
            Who::Admitted { name, .. } => name,
        }
    }
    fn group(&self) -> &str {
        match self {
            Who::Enrolled(n) => &n.group,
            Who::Admitted { group, .. } => group,
        }
    }
}

/// The name a node admitted by its EK certificate gets.
fn admitted_name(ek_hash: &[u8; 32]) -> String {
    format!("ek-{}", hex(&ek_hash[..6]))
}

/// A session claimed for one Finish.
#[derive(Debug)]
struct Session {
    id: [u8; 16],
    who: Who,
    ek_hash: [u8; 32],
    secret: [u8; 32],
    nonce: [u8; 32],
    ak_public: Vec<u8>,
    transcript: [u8; 32],
    pcrs: PcrSelection,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_whole_seconds_of_at_least_one() {
        assert_eq!(ttl_seconds(0), 1);
        assert_eq!(ttl_seconds(999), 1);
        assert_eq!(ttl_seconds(120_000), 120);
        assert_eq!(ttl_seconds(i64::MAX), u32::MAX);
    }

    #[test]
    fn an_admitted_node_is_named_by_its_ek() {
        let mut ek = [0u8; 32];
        ek[..6].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0x01, 0x02]);
        assert_eq!(admitted_name(&ek), "ek-deadbeef0102");
        let who = Who::Admitted {
            name: admitted_name(&ek),
            group: "auto".into(),
            cert: vec![],
        };
        assert_eq!((who.name(), who.group()), ("ek-deadbeef0102", "auto"));
    }
}

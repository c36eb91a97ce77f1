//! FleetLock-style reboot locks: before a node reboots (into the UKI its
//! rollout handed it), it, or whatever reboots it, takes a lock; at most
//! the open rollout's `--max-rebooting` nodes of a group hold one. The
//! endpoint is authenticated by the node's credential (the one its last
//! attestation released), so a lock is always its own: nobody takes or
//! releases another node's. The engine also releases a node's lock once
//! it is judged (upgraded or failed), so a node that never comes back
//! does not hold its group's lock forever.

use ember_proto::msg::ErrorCode;

use super::engine;
use crate::attest::{Refusal, Server};
use crate::store::{now_ms, rollouts, Node};

impl Server {
    /// Takes (`take`) or releases the node's reboot lock; the body says
    /// what happened.
    pub fn reboot_lock(&self, node: &Node, take: bool) -> Result<Vec<u8>, Refusal> {
        let mut db = self.db()?;
        let mut tx = db.transaction()?;
        let text = if take {
            let max = engine::max_rebooting(&mut tx, &node.group)?;
            match rollouts::take_lock(&mut tx, node.id, &node.group, max, now_ms())? {
                Ok(()) => format!(
                    "reboot lock taken by {} (group {}, at most {max})\n",
                    node.name, node.group
                ),
                Err(holders) => {
                    let detail = format!(
                        "group {} allows {max} rebooting node(s) and {} hold the lock: {}",
                        node.group,
                        holders.len(),
                        holders.join(", ")
                    );
                    return Err(
                        Refusal::new(ErrorCode::RebootLockHeld, detail.clone()).because(detail)
                    );
                }
            }
        } else if rollouts::release_lock(&mut tx, node.id)? {
            format!("reboot lock released by {}\n", node.name)
        } else {
            format!("{} held no reboot lock\n", node.name)
        };
        tx.commit()?;
        Ok(text.into_bytes())
    }
}

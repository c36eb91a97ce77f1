//! Step 4: telling the boot server how the boot ended (Joined after Ready,
//! Failed with the phase and reason), with the phases run so far. A report that cannot be delivered is
//! logged; it never changes the node's course.

use ember_proto::client;
use ember_proto::msg::Outcome;
use ember_proto::net::NetTransport;

use super::Session;

impl Session {
    pub fn report(&self, outcome: Outcome, reason: &str) {
        let client = self.client();
        let mut http = NetTransport::new(&client, &self.server);
        let said = match outcome {
            Outcome::Joined => "Joined",
            Outcome::Failed => "Failed",
        };
        match client::report(
            &mut http,
            &self.server,
            &self.cred,
            outcome,
            self.overlay_version(),
            reason,
            Some(&crate::phase::timeline()),
        ) {
            Ok(_) => crate::info!("report: told the boot server {said}"),
            Err(e) => crate::warn!("report: {e}"),
        }
    }
}

//! The node on the network: DHCP bring-up at boot, the lease kept for the
//! node's life from the init's event loop, and the HTTPS client settings
//! (bundled CA, the lease's DNS servers).

use alloc::vec::Vec;
use core::time::Duration;

use ember_net::{DhcpClient, Lease, LeaseEvent, NetConfig};

use crate::cmdline::Config;
use crate::{fsutil, Error};

/// CA certificates (PEM) bundled into the initrd for the boot server.
pub const CA_BUNDLE: &str = "/etc/ember/ca.pem";

pub struct Network {
    pub dhcp: DhcpClient,
    pub lease: Lease,
}

/// Links up, interface chosen, first lease applied (address, route, MTU,
/// /etc/resolv.conf).
pub fn bring_up(cfg: &Config) -> Result<Network, Error> {
    let net = NetConfig {
        iface: cfg.iface.as_deref(),
        hostname: cfg.hostname.as_deref(),
        carrier_timeout: Duration::from_secs(cfg.carrier_timeout_s.into()),
        dhcp_timeout: Duration::from_secs(cfg.dhcp_timeout_s.into()),
    };
    let (dhcp, lease) = ember_net::bring_up(&net)?;
    let [a, b, c, d] = lease.address;
    crate::info!(
        "dhcp: {} got {a}.{b}.{c}.{d}/{} router {} dns {} lease {} s from {}",
        dhcp.link().name,
        lease.prefix_len,
        lease
            .router
            .map(ip)
            .unwrap_or_else(|| alloc::string::String::from("none")),
        lease
            .dns
            .iter()
            .map(|a| ip(*a))
            .collect::<Vec<_>>()
            .join(","),
        lease.lease_time.unwrap_or(0),
        ip(lease.server_id),
    );
    Ok(Network { dhcp, lease })
}

impl Network {
    /// Runs due DHCP work (renew at T1, rebind at T2, restart after a NAK)
    /// and logs what changed. Errors are logged: the lease machinery keeps
    /// trying, and PID 1 keeps running.
    pub fn poll(&mut self) {
        match self.dhcp.poll() {
            Ok(Some(LeaseEvent::Acquired(lease))) => {
                crate::info!("dhcp: acquired {}/{}", ip(lease.address), lease.prefix_len);
                self.lease = lease;
            }
            Ok(Some(LeaseEvent::Renewed(lease))) => {
                crate::info!(
                    "dhcp: renewed {} for {} s",
                    ip(lease.address),
                    lease.lease_time.unwrap_or(0)
                );
                self.lease = lease;
            }
            Ok(Some(LeaseEvent::Lost { address })) => {
                crate::warn!("dhcp: lost lease on {}; address removed", ip(address))
            }
            Ok(None) => {}
            Err(e) => crate::warn!("dhcp: {e}"),
        }
    }

    pub fn next_wakeup_ms(&mut self) -> u64 {
        self.dhcp.next_wakeup().as_millis() as u64
    }
}

/// The initrd's CA bundle for the boot server, as DER certificates.
pub fn https_cas() -> Result<Vec<Vec<u8>>, Error> {
    let pem = fsutil::read_file(CA_BUNDLE)?;
    Ok(ember_net::pem::decode_all(&pem, "CERTIFICATE")?)
}

pub fn ip(a: [u8; 4]) -> alloc::string::String {
    alloc::format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
}

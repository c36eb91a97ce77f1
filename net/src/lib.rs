//! ember-net: brings the node onto the network and gives the init a verified
//! HTTPS client.
//!
//! - [`bring_up`]: links up, interface choice, first DHCP lease applied to the
//!   kernel (address, route, MTU, resolv.conf). It returns the
//!   [`DhcpClient`] the init keeps polling for the node's whole life.
//! - [`dns::resolve`]: A records over UDP from the lease's servers.
//! - [`https::Client`]: TLS 1.3 (embedded-tls) over the kernel's TCP, with
//!   chain, host name and validity checks that cannot be switched off.
//!
//! From PID 1 (no_std, one synchronous event loop):
//!
//! ```ignore
//! let cfg = ember_net::NetConfig { iface: Some("eth0"), ..Default::default() }; // the init fills it from its cmdline
//! let (mut dhcp, lease) = ember_net::bring_up(&cfg)?;    // boot: up to carrier + DHCP timeouts
//! // event loop: poll(2) on dhcp.fd() (readable) with timeout dhcp.next_wakeup(),
//! // then call dhcp.poll() -> Ok(Some(LeaseEvent::{Acquired, Renewed, Lost})) as it changes.
//! let cas = ember_net::pem::decode_all(&ca_pem, "CERTIFICATE")?;
//! let client = ember_net::https::Client::new(&cas, &lease.dns);
//! client.get("https://boot.example/overlay.tar", &mut |chunk| sink(chunk))?;
//! ```
#![cfg_attr(not(any(test, feature = "std")), no_std)]
extern crate alloc;

pub mod clock;
pub mod config;
pub mod dhcp;
pub mod dns;
pub mod error;
pub mod http;
pub mod https;
pub mod iface;
pub mod netlink;
pub mod pem;
pub mod phy;
pub mod resolv;
pub mod tls;
pub mod url;
pub mod wire;
pub mod x509;

pub use config::NetConfig;
pub use dhcp::{DhcpClient, DhcpConfig, Lease, LeaseEvent};
pub use error::{Error, ErrorKind, Result};

/// Boot-time bring-up: every link up, the interface chosen (`ember.iface=`
/// or the first with carrier), the first lease acquired and applied, DNS
/// written to /etc/resolv.conf. Keep the returned client and poll it.
pub fn bring_up(cfg: &NetConfig<'_>) -> Result<(DhcpClient, Lease)> {
    let mut nl = netlink::Netlink::open()?;
    let link = iface::bring_up_and_choose(&mut nl, cfg.iface, cfg.carrier_timeout)?;
    let dhcp_cfg = DhcpConfig {
        hostname: cfg.hostname.map(alloc::string::String::from),
        resolv_conf: Some(alloc::string::String::from(resolv::PATH)),
        max_lease: None,
    };
    let mut client = DhcpClient::new(&link, &dhcp_cfg)?;
    let lease = client.acquire(cfg.dhcp_timeout)?;
    Ok((client, lease))
}

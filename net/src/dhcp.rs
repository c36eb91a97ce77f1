//! The DHCP client PID 1 keeps for the node's whole life.
//!
//! smoltcp's DHCPv4 socket runs the protocol (DISCOVER/REQUEST, renew at T1,
//! rebind at T2, restart on NAK, deconfigure at expiry) over an AF_PACKET
//! socket; this module applies each outcome to the kernel over rtnetlink and
//! reports it as a [`LeaseEvent`]. TCP never runs through smoltcp: only the
//! kernel's stack owns the address, so no second stack answers with RSTs.
//!
//! The client is a poll-driven object: the init adds [`DhcpClient::fd`] to its
//! `poll(2)` set, sleeps at most [`DhcpClient::next_wakeup`], and calls
//! [`DhcpClient::poll`] whenever it wakes.

use crate::clock;
use crate::error::{Error, Result};
use crate::netlink::{Link, Netlink};
use crate::phy::PacketSocket;
use crate::resolv;
use crate::wire::dhcp as wire;
use crate::ErrorKind;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Write;
use core::time::Duration;
use rustix::event::PollFlags;
use rustix::fd::BorrowedFd;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::dhcpv4;
use smoltcp::time::{Duration as SmolDuration, Instant};
use smoltcp::wire::{DhcpOption, EthernetAddress, HardwareAddress, IpCidr, Ipv4Address, Ipv4Cidr};

/// The configuration a DHCP server granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: [u8; 4],
    pub prefix_len: u8,
    pub router: Option<[u8; 4]>,
    pub dns: Vec<[u8; 4]>,
    pub domain: Option<String>,
    /// Seconds, as the server granted it (before any client-side cap).
    pub lease_time: Option<u32>,
    pub server_id: [u8; 4],
    pub mtu: Option<u16>,
    /// The host name the server assigned, if it sent one.
    pub hostname: Option<String>,
}

/// What a call to [`DhcpClient::poll`] changed on the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    /// A new address is configured (first lease, or after a NAK/expiry).
    Acquired(Lease),
    /// The server extended the lease on the same address.
    Renewed(Lease),
    /// The lease expired or was refused; the address was removed.
    Lost { address: [u8; 4] },
}

/// Client settings; `Default` is what the node uses.
#[derive(Debug, Clone, Default)]
pub struct DhcpConfig {
    /// Sent as option 12; `None` derives `ember-<mac>` from the MAC.
    pub hostname: Option<String>,
    /// Where to write the DNS servers; `None` leaves resolv.conf alone.
    pub resolv_conf: Option<String>,
    /// Caps the server's lease time (tests use it to exercise renewal
    /// quickly against a server whose minimum lease is minutes).
    pub max_lease: Option<Duration>,
}

enum State {
    Unbound,
    Bound(Lease),
}

pub struct DhcpClient {
    phy: PacketSocket,
    iface: Interface,
    sockets: SocketSet<'static>,
    handle: SocketHandle,
    netlink: Netlink,
    link: Link,
    resolv_conf: Option<String>,
    state: State,
}

fn now() -> Instant {
    Instant::from_millis(clock::monotonic_ms() as i64)
}

/// Random bytes that never block (GRND_INSECURE, Linux 5.6+; older
/// kernels fall back to the blocking call).
pub(crate) fn insecure_random_u64() -> Result<u64> {
    let mut b = [0u8; 8];
    match rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::INSECURE) {
        Ok(_) => {}
        Err(rustix::io::Errno::INVAL) => {
            rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty())
                .map_err(Error::sys("getrandom"))?;
        }
        Err(e) => {
            return Err(Error::new(ErrorKind::Sys {
                op: "getrandom",
                errno: e,
            }))
        }
    }
    Ok(u64::from_ne_bytes(b))
}

/// `ember-0200000000ab`: stable across boots, so the boot server can key on it.
pub fn hostname_from_mac(mac: [u8; 6]) -> String {
    let mut s = String::from("ember-");
    for b in mac {
        let _ = write!(s, "{b:02x}");
    }
    s
}

impl DhcpClient {
    /// Moves where lease renewals write the DNS servers (the init points
    /// it under /run once / is read-only).
    pub fn set_resolv_conf(&mut self, path: Option<String>) {
        self.resolv_conf = path;
    }

    /// Opens the packet socket on `link` and starts discovering at once.
    pub fn new(link: &Link, config: &DhcpConfig) -> Result<Self> {
        let mac = link
            .mac
            .ok_or_else(|| Error::new(ErrorKind::NotEthernet(link.name.as_str().into())))?;
        let mtu = if link.mtu == 0 {
            1500
        } else {
            link.mtu as usize
        };
        let mut phy = PacketSocket::open(link.index, mac, mtu)?;

        // The seed only picks transaction IDs. At boot the kernel's CRNG is
        // often not initialised yet, and a blocking getrandom stalled the
        // first lease by seconds in QEMU: take what the pool has now.
        let seed = insecure_random_u64()?;
        let mut iface_config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        iface_config.random_seed = seed;
        let iface = Interface::new(iface_config, &mut phy, now());

        // smoltcp's socket borrows its options and receive buffer for its
        // whole life; the client lives as long as the node, so these few
        // hundred bytes are leaked once rather than made self-referential.
        let hostname = config
            .hostname
            .clone()
            .unwrap_or_else(|| hostname_from_mac(mac));
        let hostname: &'static [u8] = Box::leak(hostname.into_bytes().into_boxed_slice());
        let options: &'static [DhcpOption<'static>] = Box::leak(Box::new([DhcpOption {
            kind: wire::OPT_HOSTNAME,
            data: hostname,
        }]));
        let packet_buf: &'static mut [u8] = Box::leak(vec![0u8; 1500].into_boxed_slice());
        static REQUEST_LIST: [u8; 7] = [
            wire::OPT_SUBNET_MASK,
            wire::OPT_ROUTER,
            wire::OPT_DNS,
            wire::OPT_DOMAIN,
            wire::OPT_MTU,
            wire::OPT_RENEWAL,
            wire::OPT_REBINDING,
        ];

        let mut socket = dhcpv4::Socket::new();
        socket.set_outgoing_options(options);
        socket.set_receive_packet_buffer(packet_buf);
        socket.set_parameter_request_list(&REQUEST_LIST);
        socket.set_max_lease_duration(
            config
                .max_lease
                .map(|d| SmolDuration::from_millis(d.as_millis() as u64)),
        );
        // Boot speed: smoltcp waits 10 s between DISCOVERs by default.
        let mut retry = socket.get_retry_config();
        retry.discover_timeout = SmolDuration::from_secs(2);
        retry.initial_request_timeout = SmolDuration::from_secs(1);
        retry.max_renew_timeout = SmolDuration::from_secs(3600);
        socket.set_retry_config(retry);
        let mut sockets = SocketSet::new(Vec::new());
        let handle = sockets.add(socket);
        Ok(DhcpClient {
            phy,
            iface,
            sockets,
            handle,
            netlink: Netlink::open()?,
            link: link.clone(),
            resolv_conf: config.resolv_conf.clone(),
            state: State::Unbound,
        })
    }

    /// The fd to add to the caller's poll set (readable: a frame arrived).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.phy.fd()
    }

    pub fn link(&self) -> &Link {
        &self.link
    }

    pub fn lease(&self) -> Option<&Lease> {
        match &self.state {
            State::Bound(l) => Some(l),
            State::Unbound => None,
        }
    }

    /// How long the caller may sleep before the next timer (retransmit,
    /// T1, T2, expiry) is due.
    pub fn next_wakeup(&mut self) -> Duration {
        match self.iface.poll_delay(now(), &self.sockets) {
            Some(d) => Duration::from_millis(d.total_millis()),
            None => Duration::from_secs(3600),
        }
    }

    /// Processes queued frames and due timers; applies any change to the
    /// kernel and reports it.
    pub fn poll(&mut self) -> Result<Option<LeaseEvent>> {
        self.iface.poll(now(), &mut self.phy, &mut self.sockets);
        let socket = self.sockets.get_mut::<dhcpv4::Socket>(self.handle);
        let lease = match socket.poll() {
            None => return Ok(None),
            Some(dhcpv4::Event::Deconfigured) => None,
            Some(dhcpv4::Event::Configured(cfg)) => Some(lease_from(&cfg, self.link.mac)),
        };
        // Timers may have moved; let smoltcp send what is due right away.
        self.iface.poll(now(), &mut self.phy, &mut self.sockets);
        match lease {
            None => self
                .lose()
                .map(|a| a.map(|address| LeaseEvent::Lost { address })),
            Some(lease) => self.apply(lease).map(Some),
        }
    }

    fn lose(&mut self) -> Result<Option<[u8; 4]>> {
        let State::Bound(old) = core::mem::replace(&mut self.state, State::Unbound) else {
            return Ok(None);
        };
        self.iface.update_ip_addrs(|a| a.clear());
        self.iface.routes_mut().remove_default_ipv4_route();
        if let Some(gw) = old.router {
            // The kernel drops the route with the address anyway.
            let _ = self.netlink.del_default_route(self.link.index, gw);
        }
        self.netlink
            .del_address(self.link.index, old.address, old.prefix_len)?;
        Ok(Some(old.address))
    }

    fn apply(&mut self, lease: Lease) -> Result<LeaseEvent> {
        let renewed = matches!(&self.state, State::Bound(old) if old.address == lease.address && old.prefix_len == lease.prefix_len);
        if !renewed {
            if let State::Bound(old) = &self.state {
                let (addr, len) = (old.address, old.prefix_len);
                self.netlink.del_address(self.link.index, addr, len)?;
            }
        }
        let idx = self.link.index;
        if let Some(mtu) = lease.mtu {
            if u32::from(mtu) != self.link.mtu {
                self.netlink.set_mtu(idx, u32::from(mtu))?;
                self.link.mtu = u32::from(mtu);
            }
        }
        self.netlink
            .add_address(idx, lease.address, lease.prefix_len)?;
        if let Some(gw) = lease.router {
            self.netlink.replace_default_route(idx, gw)?;
        }
        if let (Some(path), false) = (&self.resolv_conf, lease.dns.is_empty()) {
            resolv::write(path, &resolv::render(&lease.dns, lease.domain.as_deref()))?;
        }
        // smoltcp needs the address and route too: renewals are unicast.
        let cidr = Ipv4Cidr::new(Ipv4Address::from(lease.address), lease.prefix_len);
        self.iface.update_ip_addrs(|a| {
            a.clear();
            let _ = a.push(IpCidr::Ipv4(cidr));
        });
        match lease.router {
            Some(gw) => {
                let _ = self
                    .iface
                    .routes_mut()
                    .add_default_ipv4_route(Ipv4Address::from(gw));
            }
            None => {
                self.iface.routes_mut().remove_default_ipv4_route();
            }
        }
        self.state = State::Bound(lease.clone());
        Ok(if renewed {
            LeaseEvent::Renewed(lease)
        } else {
            LeaseEvent::Acquired(lease)
        })
    }

    /// Blocks until the first lease is configured or `timeout` passes.
    pub fn acquire(&mut self, timeout: Duration) -> Result<Lease> {
        let start = clock::monotonic_ms();
        let limit = timeout.as_millis() as u64;
        loop {
            if let Some(LeaseEvent::Acquired(lease) | LeaseEvent::Renewed(lease)) = self.poll()? {
                return Ok(lease);
            }
            let waited = clock::monotonic_ms() - start;
            if waited >= limit {
                return Err(Error::new(ErrorKind::DhcpTimeout { waited_ms: waited }));
            }
            let wait = self
                .next_wakeup()
                .min(Duration::from_millis(limit - waited));
            clock::wait_fd(self.fd(), PollFlags::IN, wait).map_err(Error::sys("poll"))?;
        }
    }
}

/// smoltcp's view of the ACK, completed by our own parse of the packet for
/// the fields smoltcp does not keep (lease time, domain, MTU).
fn lease_from(cfg: &dhcpv4::Config<'_>, mac: Option<[u8; 6]>) -> Lease {
    let mut lease = Lease {
        address: cfg.address.address().octets(),
        prefix_len: cfg.address.prefix_len(),
        router: cfg.router.map(|r| r.octets()),
        dns: cfg
            .dns_servers
            .iter()
            .take(wire::MAX_DNS)
            .map(|d| d.octets())
            .collect(),
        domain: None,
        lease_time: None,
        server_id: cfg.server.identifier.octets(),
        mtu: None,
        hostname: None,
    };
    let extra = cfg
        .packet
        .as_ref()
        .and_then(|p| wire::Packet::new_checked(p.into_inner()).ok())
        .and_then(|p| wire::Repr::parse(&p).ok());
    if let Some(repr) = extra {
        // Only trust the buffer if it is the ACK smoltcp accepted.
        if repr.message_type == wire::MSG_ACK
            && Some(repr.chaddr) == mac
            && repr.your_addr == lease.address
        {
            lease.domain = repr.domain;
            lease.lease_time = repr.lease_time;
            lease.mtu = repr.mtu;
            lease.hostname = repr.hostname;
        }
    }
    lease
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::dhcp::tests::dnsmasq_ack;
    use smoltcp::wire::DhcpPacket;

    fn config(packet: &[u8]) -> dhcpv4::Config<'_> {
        let mut cfg = dhcpv4::Config {
            server: dhcpv4::ServerInfo {
                address: Ipv4Address::new(10, 77, 0, 1),
                identifier: Ipv4Address::new(10, 77, 0, 1),
            },
            address: Ipv4Cidr::new(Ipv4Address::new(10, 77, 0, 50), 24),
            router: Some(Ipv4Address::new(10, 77, 0, 1)),
            dns_servers: Default::default(),
            packet: Some(DhcpPacket::new_unchecked(packet)),
        };
        let _ = cfg.dns_servers.push(Ipv4Address::new(10, 77, 0, 1));
        cfg
    }

    #[test]
    fn lease_takes_extra_options_from_the_accepted_ack() {
        let ack = dnsmasq_ack();
        let lease = lease_from(&config(&ack), Some([2, 0, 0, 0, 0, 9]));
        assert_eq!(lease.address, [10, 77, 0, 50]);
        assert_eq!(lease.prefix_len, 24);
        assert_eq!(lease.router, Some([10, 77, 0, 1]));
        assert_eq!(lease.dns, [[10, 77, 0, 1]]);
        assert_eq!(lease.server_id, [10, 77, 0, 1]);
        assert_eq!(lease.domain.as_deref(), Some("ember.lan"));
        assert_eq!(lease.lease_time, Some(120));
        assert_eq!(lease.mtu, Some(1500));
    }

    #[test]
    fn packet_for_another_mac_contributes_nothing() {
        let ack = dnsmasq_ack();
        let lease = lease_from(&config(&ack), Some([2, 0, 0, 0, 0, 7]));
        assert_eq!(lease.domain, None);
        assert_eq!(lease.lease_time, None);
        assert_eq!(lease.address, [10, 77, 0, 50]);
    }

    #[test]
    fn malformed_packet_buffer_leaves_the_smoltcp_fields() {
        let mut ack = dnsmasq_ack();
        ack.truncate(250);
        ack[245] = 200; // an option length past the end
        let lease = lease_from(&config(&ack), Some([2, 0, 0, 0, 0, 9]));
        assert_eq!(lease.domain, None);
        assert_eq!(lease.router, Some([10, 77, 0, 1]));
    }

    #[test]
    fn hostname_is_derived_from_the_mac() {
        assert_eq!(
            hostname_from_mac([2, 0, 0xab, 0, 0, 1]),
            "ember-0200ab000001"
        );
    }
}

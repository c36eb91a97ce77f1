//! rtnetlink requests over a NETLINK_ROUTE socket: list links, set a link up,
//! set its MTU, add/remove IPv4 addresses and the default route.

use crate::error::{Error, Result};
use crate::wire::netlink::*;
use crate::ErrorKind;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use rustix::fd::OwnedFd;
use rustix::net::{
    self, netlink::SocketAddrNetlink, AddressFamily, RecvFlags, SendFlags, SocketType,
};

/// One network interface as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub flags: u32,
    pub carrier: bool,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
}

impl Link {
    pub fn is_loopback(&self) -> bool {
        self.flags & IFF_LOOPBACK != 0
    }
    pub fn is_up(&self) -> bool {
        self.flags & IFF_UP != 0
    }
}

pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    pub fn open() -> Result<Self> {
        let fd = net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            net::SocketFlags::CLOEXEC,
            None,
        )
        .map_err(Error::sys("netlink socket"))?;
        net::bind(&fd, &SocketAddrNetlink::new(0, 0)).map_err(Error::sys("netlink bind"))?;
        Ok(Netlink { fd, seq: 1 })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends one request and waits for its acknowledgement (or error).
    fn request(&mut self, op: &'static str, msg: Vec<u8>, seq: u32) -> Result<()> {
        net::send(&self.fd, &msg, SendFlags::empty()).map_err(Error::sys("netlink send"))?;
        let mut buf = vec![0u8; 8192];
        loop {
            let (n, _) = net::recv(&self.fd, &mut buf[..], RecvFlags::empty())
                .map_err(Error::sys("netlink recv"))?;
            for m in Messages::new(&buf[..n]) {
                if m.seq() != seq || m.msg_type() != NLMSG_ERROR {
                    continue;
                }
                return match m.error_code() {
                    Some(0) => Ok(()),
                    Some(e) => Err(Error::new(ErrorKind::Netlink { op, errno: -e })),
                    None => Err(Error::new(ErrorKind::NetlinkMalformed)),
                };
            }
        }
    }

    pub fn links(&mut self) -> Result<Vec<Link>> {
        let seq = self.next_seq();
        let msg = Builder::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq)
            .link(0, 0, 0)
            .finish();
        net::send(&self.fd, &msg, SendFlags::empty()).map_err(Error::sys("netlink send"))?;
        let mut buf = vec![0u8; 32 * 1024];
        let mut links = Vec::new();
        loop {
            let (n, _) = net::recv(&self.fd, &mut buf[..], RecvFlags::empty())
                .map_err(Error::sys("netlink recv"))?;
            for m in Messages::new(&buf[..n]) {
                if m.seq() != seq {
                    continue;
                }
                match m.msg_type() {
                    NLMSG_DONE => return Ok(links),
                    NLMSG_ERROR => {
                        return Err(Error::new(ErrorKind::Netlink {
                            op: "getlink",
                            errno: -m.error_code().unwrap_or(0),
                        }))
                    }
                    RTM_NEWLINK => {
                        if let Some(link) = parse_link(m.payload()) {
                            links.push(link);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    pub fn set_up(&mut self, index: u32) -> Result<()> {
        let seq = self.next_seq();
        let msg = Builder::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq)
            .link(index, IFF_UP, IFF_UP)
            .finish();
        self.request("link up", msg, seq)
    }

    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        let seq = self.next_seq();
        let msg = Builder::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq)
            .link(index, 0, 0)
            .attr(IFLA_MTU, &mtu.to_ne_bytes())
            .finish();
        self.request("set mtu", msg, seq)
    }

    pub fn add_address(&mut self, index: u32, addr: [u8; 4], prefix_len: u8) -> Result<()> {
        let seq = self.next_seq();
        let bcast = broadcast(addr, prefix_len);
        let msg = Builder::new(
            RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            seq,
        )
        .addr(index, prefix_len)
        .attr(IFA_LOCAL, &addr)
        .attr(IFA_ADDRESS, &addr)
        .attr(IFA_BROADCAST, &bcast)
        .finish();
        self.request("add address", msg, seq)
    }

    pub fn del_address(&mut self, index: u32, addr: [u8; 4], prefix_len: u8) -> Result<()> {
        let seq = self.next_seq();
        let msg = Builder::new(RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, seq)
            .addr(index, prefix_len)
            .attr(IFA_LOCAL, &addr)
            .attr(IFA_ADDRESS, &addr)
            .finish();
        self.request("delete address", msg, seq)
    }

    pub fn replace_default_route(&mut self, index: u32, gateway: [u8; 4]) -> Result<()> {
        let seq = self.next_seq();
        let msg = Builder::new(
            RTM_NEWROUTE,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            seq,
        )
        .route(0)
        .attr(RTA_GATEWAY, &gateway)
        .attr(RTA_OIF, &index.to_ne_bytes())
        .finish();
        self.request("default route", msg, seq)
    }

    pub fn del_default_route(&mut self, index: u32, gateway: [u8; 4]) -> Result<()> {
        let seq = self.next_seq();
        let msg = Builder::new(RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK, seq)
            .route(0)
            .attr(RTA_GATEWAY, &gateway)
            .attr(RTA_OIF, &index.to_ne_bytes())
            .finish();
        self.request("delete default route", msg, seq)
    }
}

fn parse_link(payload: &[u8]) -> Option<Link> {
    let msg = LinkMessage::new_checked(payload)?;
    let mut link = Link {
        index: msg.index(),
        name: String::new(),
        flags: msg.flags(),
        carrier: msg.flags() & IFF_LOWER_UP != 0,
        mac: None,
        mtu: 0,
    };
    for (kind, data) in msg.attrs() {
        match kind {
            IFLA_IFNAME => {
                let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                link.name = String::from_utf8_lossy(&data[..end]).into_owned();
            }
            IFLA_ADDRESS if data.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(data);
                link.mac = Some(mac);
            }
            IFLA_MTU if data.len() == 4 => {
                link.mtu = u32::from_ne_bytes([data[0], data[1], data[2], data[3]])
            }
            IFLA_CARRIER if data.len() == 1 => link.carrier = data[0] != 0,
            _ => {}
        }
    }
    Some(link)
}

pub fn broadcast(addr: [u8; 4], prefix_len: u8) -> [u8; 4] {
    let mask = prefix_mask(prefix_len);
    (u32::from_be_bytes(addr) | !mask).to_be_bytes()
}

pub fn prefix_mask(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        p if p >= 32 => u32::MAX,
        p => u32::MAX << (32 - p as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_follows_prefix() {
        assert_eq!(broadcast([10, 1, 2, 3], 24), [10, 1, 2, 255]);
        assert_eq!(broadcast([10, 1, 2, 3], 32), [10, 1, 2, 3]);
        assert_eq!(broadcast([10, 1, 2, 3], 0), [255; 4]);
    }

    #[test]
    fn link_message_yields_name_mac_and_carrier() {
        let msg = Builder::new(RTM_NEWLINK, 0, 1)
            .link(4, IFF_UP | IFF_LOWER_UP, 0)
            .attr(IFLA_IFNAME, b"veth0\0")
            .attr(IFLA_ADDRESS, &[2, 0, 0, 0, 0, 1])
            .attr(IFLA_MTU, &1500u32.to_ne_bytes())
            .attr(IFLA_CARRIER, &[1])
            .finish();
        let link = parse_link(&msg[HEADER_LEN..]).unwrap();
        assert_eq!(link.name, "veth0");
        assert_eq!(link.index, 4);
        assert_eq!(link.mac, Some([2, 0, 0, 0, 0, 1]));
        assert!(link.carrier && link.is_up() && !link.is_loopback());
        assert_eq!(link.mtu, 1500);
    }
}

//! The parts of a DHCPv4 (BOOTP) message that smoltcp's socket does not hand
//! out: lease/renewal times, domain name, MTU, server identifier. smoltcp
//! drives the exchange; this parser reads the ACK it accepted, and is the
//! target of the `dhcp_options` fuzzer.

use crate::error::{Error, Result};
use crate::ErrorKind;
use alloc::string::String;
use alloc::vec::Vec;

mod field {
    use core::ops::Range;
    pub const OP: usize = 0;
    pub const HTYPE: usize = 1;
    pub const HLEN: usize = 2;
    pub const XID: Range<usize> = 4..8;
    pub const YIADDR: Range<usize> = 16..20;
    pub const CHADDR: Range<usize> = 28..34;
    pub const MAGIC: Range<usize> = 236..240;
    pub const OPTIONS: usize = 240;
}

pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
pub const OP_BOOTREPLY: u8 = 2;

pub const OPT_PAD: u8 = 0;
pub const OPT_SUBNET_MASK: u8 = 1;
pub const OPT_ROUTER: u8 = 3;
pub const OPT_DNS: u8 = 6;
pub const OPT_HOSTNAME: u8 = 12;
pub const OPT_DOMAIN: u8 = 15;
pub const OPT_MTU: u8 = 26;
pub const OPT_LEASE_TIME: u8 = 51;
pub const OPT_MESSAGE_TYPE: u8 = 53;
pub const OPT_SERVER_ID: u8 = 54;
pub const OPT_RENEWAL: u8 = 58;
pub const OPT_REBINDING: u8 = 59;
pub const OPT_END: u8 = 255;

pub const MSG_ACK: u8 = 5;
pub const MSG_NAK: u8 = 6;

/// The DNS servers we keep from one lease (resolv.conf honours three).
pub const MAX_DNS: usize = 3;

/// A view over a BOOTP message; `new_checked` makes sure the fixed part and
/// the magic cookie are present.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    buf: &'a [u8],
}

impl<'a> Packet<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self> {
        if buf.len() < field::OPTIONS {
            return Err(Error::new(ErrorKind::DhcpMalformed(
                "shorter than the BOOTP header",
            )));
        }
        if buf[field::MAGIC] != MAGIC_COOKIE {
            return Err(Error::new(ErrorKind::DhcpMalformed("no DHCP magic cookie")));
        }
        Ok(Packet { buf })
    }
    pub fn op(&self) -> u8 {
        self.buf[field::OP]
    }
    pub fn htype(&self) -> u8 {
        self.buf[field::HTYPE]
    }
    pub fn hlen(&self) -> u8 {
        self.buf[field::HLEN]
    }
    pub fn xid(&self) -> u32 {
        let b = &self.buf[field::XID];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
    pub fn yiaddr(&self) -> [u8; 4] {
        let b = &self.buf[field::YIADDR];
        [b[0], b[1], b[2], b[3]]
    }
    pub fn chaddr(&self) -> [u8; 6] {
        let b = &self.buf[field::CHADDR];
        [b[0], b[1], b[2], b[3], b[4], b[5]]
    }
    pub fn options(&self) -> Options<'a> {
        Options {
            rest: &self.buf[field::OPTIONS..],
        }
    }
}

/// Iterates over (code, data); a length that runs past the buffer is an error.
pub struct Options<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<(u8, &'a [u8])>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (&code, tail) = self.rest.split_first()?;
            match code {
                OPT_PAD => self.rest = tail,
                OPT_END => {
                    self.rest = &[];
                    return None;
                }
                _ => {
                    let Some((&len, tail)) = tail.split_first() else {
                        self.rest = &[];
                        return Some(Err(Error::new(ErrorKind::DhcpMalformed(
                            "option without length",
                        ))));
                    };
                    let len = len as usize;
                    if len > tail.len() {
                        self.rest = &[];
                        return Some(Err(Error::new(ErrorKind::DhcpMalformed(
                            "option runs past the packet",
                        ))));
                    }
                    let (data, tail) = tail.split_at(len);
                    self.rest = tail;
                    return Some(Ok((code, data)));
                }
            }
        }
    }
}

/// What a DHCP reply says, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Repr {
    pub xid: u32,
    pub chaddr: [u8; 6],
    pub your_addr: [u8; 4],
    pub message_type: u8,
    pub server_id: Option<[u8; 4]>,
    pub prefix_len: Option<u8>,
    pub router: Option<[u8; 4]>,
    pub dns: Vec<[u8; 4]>,
    pub domain: Option<String>,
    pub hostname: Option<String>,
    pub mtu: Option<u16>,
    pub lease_time: Option<u32>,
    pub renewal_time: Option<u32>,
    pub rebinding_time: Option<u32>,
}

fn ipv4(data: &[u8], what: &'static str) -> Result<[u8; 4]> {
    <[u8; 4]>::try_from(data).map_err(|_| Error::new(ErrorKind::DhcpMalformed(what)))
}

fn be_u32(data: &[u8], what: &'static str) -> Result<u32> {
    Ok(u32::from_be_bytes(ipv4(data, what)?))
}

/// A DNS-ish name: letters, digits, '-', '.', '_'; at most 253 bytes.
fn name(data: &[u8], what: &'static str) -> Result<String> {
    let data = data.strip_suffix(&[0]).unwrap_or(data);
    if data.is_empty()
        || data.len() > 253
        || !data
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(Error::new(ErrorKind::DhcpMalformed(what)));
    }
    // Checked ASCII above.
    Ok(String::from_utf8_lossy(data).into_owned())
}

fn mask_to_prefix(mask: [u8; 4]) -> Result<u8> {
    let m = u32::from_be_bytes(mask);
    let ones = m.leading_ones();
    if m.checked_shl(ones).unwrap_or(0) != 0 {
        return Err(Error::new(ErrorKind::DhcpMalformed(
            "subnet mask not contiguous",
        )));
    }
    Ok(ones as u8)
}

impl Repr {
    pub fn parse(packet: &Packet<'_>) -> Result<Repr> {
        if packet.op() != OP_BOOTREPLY {
            return Err(Error::new(ErrorKind::DhcpMalformed("not a BOOTREPLY")));
        }
        if packet.htype() != 1 || packet.hlen() != 6 {
            return Err(Error::new(ErrorKind::DhcpMalformed(
                "not an Ethernet client",
            )));
        }
        let mut repr = Repr {
            xid: packet.xid(),
            chaddr: packet.chaddr(),
            your_addr: packet.yiaddr(),
            ..Repr::default()
        };
        for opt in packet.options() {
            let (code, data) = opt?;
            match code {
                OPT_MESSAGE_TYPE => {
                    let [t] = data else {
                        return Err(Error::new(ErrorKind::DhcpMalformed("message type length")));
                    };
                    repr.message_type = *t;
                }
                OPT_SERVER_ID => repr.server_id = Some(ipv4(data, "server id length")?),
                OPT_SUBNET_MASK => {
                    repr.prefix_len = Some(mask_to_prefix(ipv4(data, "subnet mask length")?)?)
                }
                OPT_ROUTER => {
                    if data.is_empty() || data.len() % 4 != 0 {
                        return Err(Error::new(ErrorKind::DhcpMalformed("router length")));
                    }
                    repr.router = Some(ipv4(&data[..4], "router length")?);
                }
                OPT_DNS => {
                    if data.is_empty() || data.len() % 4 != 0 {
                        return Err(Error::new(ErrorKind::DhcpMalformed("DNS server length")));
                    }
                    repr.dns = data
                        .chunks_exact(4)
                        .take(MAX_DNS)
                        .map(|c| [c[0], c[1], c[2], c[3]])
                        .collect();
                }
                OPT_DOMAIN => repr.domain = Some(name(data, "domain name")?),
                OPT_HOSTNAME => repr.hostname = Some(name(data, "host name")?),
                OPT_MTU => {
                    let b: [u8; 2] = data
                        .try_into()
                        .map_err(|_| Error::new(ErrorKind::DhcpMalformed("MTU length")))?;
                    let mtu = u16::from_be_bytes(b);
                    // RFC 2132: the minimum legal value is 68.
                    if mtu < 68 {
                        return Err(Error::new(ErrorKind::DhcpMalformed("MTU below 68")));
                    }
                    repr.mtu = Some(mtu);
                }
                OPT_LEASE_TIME => repr.lease_time = Some(be_u32(data, "lease time length")?),
                OPT_RENEWAL => repr.renewal_time = Some(be_u32(data, "renewal time length")?),
                OPT_REBINDING => repr.rebinding_time = Some(be_u32(data, "rebinding time length")?),
                _ => {}
            }
        }
        if repr.message_type == 0 {
            return Err(Error::new(ErrorKind::DhcpMalformed("no message type")));
        }
        Ok(repr)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A DHCPACK as dnsmasq 2.89 sends it (captured over a veth pair; the
    /// sname/file fields are zero).
    pub fn dnsmasq_ack() -> Vec<u8> {
        let mut p = alloc::vec![0u8; 240];
        p[0] = 2;
        p[1] = 1;
        p[2] = 6;
        p[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        p[16..20].copy_from_slice(&[10, 77, 0, 50]);
        p[20..24].copy_from_slice(&[10, 77, 0, 1]);
        p[28..34].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        p[236..240].copy_from_slice(&MAGIC_COOKIE);
        p.extend_from_slice(&[53, 1, 5]);
        p.extend_from_slice(&[54, 4, 10, 77, 0, 1]);
        p.extend_from_slice(&[51, 4, 0, 0, 0, 120]);
        p.extend_from_slice(&[58, 4, 0, 0, 0, 60]);
        p.extend_from_slice(&[59, 4, 0, 0, 0, 105]);
        p.extend_from_slice(&[1, 4, 255, 255, 255, 0]);
        p.extend_from_slice(&[28, 4, 10, 77, 0, 255]);
        p.extend_from_slice(&[3, 4, 10, 77, 0, 1]);
        p.extend_from_slice(&[6, 8, 10, 77, 0, 1, 10, 77, 0, 2]);
        p.extend_from_slice(&[15, 9]);
        p.extend_from_slice(b"ember.lan");
        p.extend_from_slice(&[26, 2, 0x05, 0xdc]);
        p.extend_from_slice(&[0, 0, 255, 0, 0]);
        p
    }

    #[test]
    fn dnsmasq_ack_yields_every_lease_field() {
        let buf = dnsmasq_ack();
        let repr = Repr::parse(&Packet::new_checked(&buf).unwrap()).unwrap();
        assert_eq!(repr.message_type, MSG_ACK);
        assert_eq!(repr.xid, 0x1234_5678);
        assert_eq!(repr.your_addr, [10, 77, 0, 50]);
        assert_eq!(repr.chaddr, [2, 0, 0, 0, 0, 9]);
        assert_eq!(repr.server_id, Some([10, 77, 0, 1]));
        assert_eq!(repr.prefix_len, Some(24));
        assert_eq!(repr.router, Some([10, 77, 0, 1]));
        assert_eq!(repr.dns, [[10, 77, 0, 1], [10, 77, 0, 2]]);
        assert_eq!(repr.domain.as_deref(), Some("ember.lan"));
        assert_eq!(repr.mtu, Some(1500));
        assert_eq!(repr.lease_time, Some(120));
        assert_eq!(repr.renewal_time, Some(60));
        assert_eq!(repr.rebinding_time, Some(105));
    }

    #[test]
    fn every_truncation_is_an_error_or_a_shorter_lease_never_a_panic() {
        let buf = dnsmasq_ack();
        for cut in 0..buf.len() {
            if let Ok(p) = Packet::new_checked(&buf[..cut]) {
                let _ = Repr::parse(&p);
            }
        }
    }

    #[test]
    fn option_with_wrong_length_is_refused() {
        let mut buf = dnsmasq_ack();
        // Server id claiming 3 bytes.
        let pos = buf.windows(2).position(|w| w == [54, 4]).unwrap();
        buf[pos + 1] = 3;
        assert_eq!(
            Repr::parse(&Packet::new_checked(&buf).unwrap()),
            Err(Error::new(ErrorKind::DhcpMalformed("server id length")))
        );
    }

    #[test]
    fn non_contiguous_mask_and_tiny_mtu_are_refused() {
        assert!(mask_to_prefix([255, 0, 255, 0]).is_err());
        assert_eq!(mask_to_prefix([255, 255, 240, 0]), Ok(20));
        let mut buf = dnsmasq_ack();
        let pos = buf.windows(2).position(|w| w == [26, 2]).unwrap();
        buf[pos + 2] = 0;
        buf[pos + 3] = 10;
        assert_eq!(
            Repr::parse(&Packet::new_checked(&buf).unwrap()),
            Err(Error::new(ErrorKind::DhcpMalformed("MTU below 68")))
        );
    }

    #[test]
    fn missing_cookie_is_refused() {
        let mut buf = dnsmasq_ack();
        buf[236] = 0;
        assert!(Packet::new_checked(&buf).is_err());
    }
}

//! rtnetlink messages: `nlmsghdr`, `ifinfomsg`, `ifaddrmsg`, `rtmsg` and
//! `rtattr`, in the kernel's native byte order. Views check their length once
//! at construction; builders size the buffer as they go.

use alloc::vec::Vec;

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const RTM_NEWLINK: u16 = 16;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_DELADDR: u16 = 21;
pub const RTM_NEWROUTE: u16 = 24;
pub const RTM_DELROUTE: u16 = 25;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;

pub const IFF_UP: u32 = 0x1;
pub const IFF_LOOPBACK: u32 = 0x8;
pub const IFF_LOWER_UP: u32 = 0x1_0000;

pub const IFLA_ADDRESS: u16 = 1;
pub const IFLA_IFNAME: u16 = 3;
pub const IFLA_MTU: u16 = 4;
pub const IFLA_CARRIER: u16 = 33;

pub const IFA_ADDRESS: u16 = 1;
pub const IFA_LOCAL: u16 = 2;
pub const IFA_BROADCAST: u16 = 4;

pub const RTA_DST: u16 = 1;
pub const RTA_OIF: u16 = 4;
pub const RTA_GATEWAY: u16 = 5;

pub const AF_INET: u8 = 2;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_DHCP: u8 = 16;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;

pub const HEADER_LEN: usize = 16;
pub const IFINFO_LEN: usize = 16;
pub const IFADDR_LEN: usize = 8;
pub const RTMSG_LEN: usize = 12;

#[inline]
pub const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

mod field {
    use core::ops::Range;
    pub const LEN: Range<usize> = 0..4;
    pub const TYPE: Range<usize> = 4..6;
    pub const FLAGS: Range<usize> = 6..8;
    pub const SEQ: Range<usize> = 8..12;
}

fn ne_u16(b: &[u8]) -> u16 {
    u16::from_ne_bytes([b[0], b[1]])
}
fn ne_u32(b: &[u8]) -> u32 {
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

/// One netlink message (header + payload) inside a receive buffer.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    buf: &'a [u8],
}

impl<'a> Message<'a> {
    /// Checks that the header fits and that its length field stays inside `buf`.
    pub fn new_checked(buf: &'a [u8]) -> Option<Self> {
        if buf.len() < HEADER_LEN {
            return None;
        }
        let len = ne_u32(&buf[field::LEN]) as usize;
        if len < HEADER_LEN || len > buf.len() {
            return None;
        }
        Some(Message { buf: &buf[..len] })
    }
    pub fn msg_type(&self) -> u16 {
        ne_u16(&self.buf[field::TYPE])
    }
    pub fn flags(&self) -> u16 {
        ne_u16(&self.buf[field::FLAGS])
    }
    pub fn seq(&self) -> u32 {
        ne_u32(&self.buf[field::SEQ])
    }
    pub fn total_len(&self) -> usize {
        self.buf.len()
    }
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[HEADER_LEN..]
    }
    /// For NLMSG_ERROR: the (negative) errno, 0 for an acknowledgement.
    pub fn error_code(&self) -> Option<i32> {
        let p = self.payload();
        (p.len() >= 4).then(|| i32::from_ne_bytes([p[0], p[1], p[2], p[3]]))
    }
}

/// Iterates over the messages of one `recv` buffer; stops at the first one
/// whose length is out of bounds.
pub struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Messages { rest: buf }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Message<'a>;
    fn next(&mut self) -> Option<Message<'a>> {
        let msg = Message::new_checked(self.rest)?;
        let step = align4(msg.total_len()).min(self.rest.len());
        self.rest = &self.rest[step..];
        Some(msg)
    }
}

/// Attributes (`rtattr`) following a fixed family header.
pub struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Attrs<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Attrs { rest: buf }
    }
}

impl<'a> Iterator for Attrs<'a> {
    /// (type without the nested/byte-order bits, payload)
    type Item = (u16, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < 4 {
            return None;
        }
        let len = ne_u16(&self.rest[0..2]) as usize;
        let kind = ne_u16(&self.rest[2..4]) & 0x3fff;
        if len < 4 || len > self.rest.len() {
            self.rest = &[];
            return None;
        }
        let data = &self.rest[4..len];
        let step = align4(len).min(self.rest.len());
        self.rest = &self.rest[step..];
        Some((kind, data))
    }
}

/// `ifinfomsg` view: the fixed part of RTM_NEWLINK.
#[derive(Debug, Clone, Copy)]
pub struct LinkMessage<'a> {
    buf: &'a [u8],
}

impl<'a> LinkMessage<'a> {
    pub fn new_checked(payload: &'a [u8]) -> Option<Self> {
        (payload.len() >= IFINFO_LEN).then_some(LinkMessage { buf: payload })
    }
    pub fn index(&self) -> u32 {
        ne_u32(&self.buf[4..8])
    }
    pub fn flags(&self) -> u32 {
        ne_u32(&self.buf[8..12])
    }
    pub fn attrs(&self) -> Attrs<'a> {
        Attrs::new(&self.buf[IFINFO_LEN..])
    }
}

/// Builds one request message: header, family header, then attributes.
pub struct Builder {
    buf: Vec<u8>,
}

impl Builder {
    pub fn new(msg_type: u16, flags: u16, seq: u32) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&msg_type.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        Builder { buf }
    }

    /// `ifinfomsg` with the given flags/change mask.
    pub fn link(mut self, index: u32, flags: u32, change: u32) -> Self {
        self.buf.extend_from_slice(&[0, 0, 0, 0]); // family AF_UNSPEC, pad, type
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&change.to_ne_bytes());
        self
    }

    /// `ifaddrmsg` for an IPv4 address.
    pub fn addr(mut self, index: u32, prefix_len: u8) -> Self {
        self.buf
            .extend_from_slice(&[AF_INET, prefix_len, 0, RT_SCOPE_UNIVERSE]);
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self
    }

    /// `rtmsg` for an IPv4 unicast route in the main table, marked as DHCP's.
    pub fn route(mut self, dst_len: u8) -> Self {
        self.buf.extend_from_slice(&[
            AF_INET,
            dst_len,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_DHCP,
            RT_SCOPE_UNIVERSE,
            RTN_UNICAST,
        ]);
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self
    }

    pub fn attr(mut self, kind: u16, data: &[u8]) -> Self {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[field::LEN].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_sets_length_and_aligns_attributes() {
        let msg = Builder::new(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK, 7)
            .addr(3, 24)
            .attr(IFA_LOCAL, &[10, 0, 0, 2])
            .attr(99, &[1])
            .finish();
        assert_eq!(msg.len(), 16 + 8 + 8 + 8);
        let m = Message::new_checked(&msg).unwrap();
        assert_eq!(m.msg_type(), RTM_NEWADDR);
        assert_eq!(m.seq(), 7);
        let attrs: Vec<_> = Attrs::new(&m.payload()[IFADDR_LEN..]).collect();
        assert_eq!(attrs, [(IFA_LOCAL, &[10u8, 0, 0, 2][..]), (99, &[1u8][..])]);
    }

    #[test]
    fn truncated_messages_and_attributes_stop_iteration() {
        let msg = Builder::new(RTM_NEWLINK, 0, 1)
            .link(2, 0, 0)
            .attr(IFLA_IFNAME, b"eth0\0")
            .finish();
        for cut in 0..msg.len() {
            let n = Messages::new(&msg[..cut]).count();
            assert_eq!(n, 0, "cut at {cut}");
        }
        let mut bad = msg.clone();
        bad[HEADER_LEN + IFINFO_LEN] = 200; // attribute length past the end
        let m = Message::new_checked(&bad).unwrap();
        let link = LinkMessage::new_checked(m.payload()).unwrap();
        assert_eq!(link.attrs().count(), 0);
    }
}

//! A smoltcp `Device` over an AF_PACKET raw socket bound to one interface.
//! A classic BPF filter keeps only ARP and UDP to port 68 so that, for the
//! node's whole life, PID 1 wakes only for DHCP traffic, not for every frame
//! the containers exchange.

use crate::error::{Error, Result};
use crate::ErrorKind;
use alloc::vec;
use alloc::vec::Vec;
use core::mem::size_of;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::net::addr::{SocketAddrArg, SocketAddrLen, SocketAddrOpaque};
use rustix::net::{self, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use smoltcp::phy::{Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

const ETH_P_ALL: u16 = 0x0003;
const FRAME_MAX: usize = 2048;

/// `struct sockaddr_ll`.
#[repr(C)]
struct SockaddrLl {
    family: u16,
    protocol_be: u16,
    ifindex: i32,
    hatype: u16,
    pkttype: u8,
    halen: u8,
    addr: [u8; 8],
}

// SAFETY: `SockaddrLl` is `#[repr(C)]` with the kernel's `sockaddr_ll`
// layout, and the pointer handed to `f` lives for the whole call.
unsafe impl SocketAddrArg for SockaddrLl {
    unsafe fn with_sockaddr<R>(
        &self,
        f: impl FnOnce(*const SocketAddrOpaque, SocketAddrLen) -> R,
    ) -> R {
        f(
            (self as *const SockaddrLl).cast(),
            size_of::<SockaddrLl>() as SocketAddrLen,
        )
    }
}

/// `struct sock_filter`.
#[repr(C)]
#[derive(Clone, Copy)]
struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

/// Accept ARP replies (smoltcp resolves the server for unicast renewals;
/// the kernel answers ARP requests for the leased address) and unfragmented
/// IPv4 UDP to port 68; drop the rest, so broadcast chatter on a busy LAN
/// does not wake PID 1.
static DHCP_FILTER: [SockFilter; 14] = [
    insn(0x28, 0, 0, 12),     // 0  ldh [12]           ethertype
    insn(0x15, 0, 2, 0x0806), // 1  jne ARP -> 4
    insn(0x28, 0, 0, 20),     // 2  ldh [20]           ARP opcode
    insn(0x15, 8, 9, 2),      // 3  reply -> accept, else drop
    insn(0x15, 0, 8, 0x0800), // 4  jne IPv4 -> drop
    insn(0x30, 0, 0, 23),     // 5  ldb [23]           IP protocol
    insn(0x15, 0, 6, 17),     // 6  jne UDP -> drop
    insn(0x28, 0, 0, 20),     // 7  ldh [20]           fragment offset
    insn(0x45, 4, 0, 0x1fff), // 8  jset -> drop
    insn(0xb1, 0, 0, 14),     // 9  ldxb 4*([14]&0xf)  IP header length
    insn(0x48, 0, 0, 16),     // 10 ldh [x+16]         UDP destination port
    insn(0x15, 0, 1, 68),     // 11 jne 68 -> drop
    insn(0x06, 0, 0, 0xffff), // 12 accept
    insn(0x06, 0, 0, 0),      // 13 drop
];

#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const SockFilter,
}

/// rustix has no SO_ATTACH_FILTER; issue the setsockopt directly.
fn attach_filter(fd: BorrowedFd<'_>) -> Result<()> {
    let prog = SockFprog {
        len: DHCP_FILTER.len() as u16,
        filter: DHCP_FILTER.as_ptr(),
    };
    let raw = rustix::fd::AsRawFd::as_raw_fd(&fd) as usize;
    const SOL_SOCKET: usize = 1;
    const SO_ATTACH_FILTER: usize = 26;
    let ret = raw_setsockopt(
        raw,
        SOL_SOCKET,
        SO_ATTACH_FILTER,
        (&prog as *const SockFprog) as usize,
        size_of::<SockFprog>(),
    );
    match ret {
        Some(r) if r < 0 => Err(Error::new(ErrorKind::Sys {
            op: "SO_ATTACH_FILTER",
            errno: rustix::io::Errno::from_raw_os_error(-r as i32),
        })),
        // Architectures without the raw call: every frame reaches smoltcp,
        // which ignores what is not DHCP or ARP.
        _ => Ok(()),
    }
}

#[cfg(target_arch = "x86_64")]
fn raw_setsockopt(fd: usize, level: usize, name: usize, val: usize, len: usize) -> Option<isize> {
    let ret: isize;
    // SAFETY: setsockopt(2) reads `len` bytes at `val`, which points to a live
    // `SockFprog` whose filter array is static.
    unsafe {
        core::arch::asm!("syscall", inlateout("rax") 54isize => ret, in("rdi") fd, in("rsi") level,
            in("rdx") name, in("r10") val, in("r8") len, lateout("rcx") _, lateout("r11") _,
            options(nostack));
    }
    Some(ret)
}

#[cfg(target_arch = "aarch64")]
fn raw_setsockopt(fd: usize, level: usize, name: usize, val: usize, len: usize) -> Option<isize> {
    let ret: isize;
    // SAFETY: as above.
    unsafe {
        core::arch::asm!("svc 0", in("x8") 208usize, inlateout("x0") fd as isize => ret, in("x1") level,
            in("x2") name, in("x3") val, in("x4") len, options(nostack));
    }
    Some(ret)
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn raw_setsockopt(_: usize, _: usize, _: usize, _: usize, _: usize) -> Option<isize> {
    None
}

pub struct PacketSocket {
    fd: OwnedFd,
    mac: [u8; 6],
    mtu: usize,
    rx: Vec<u8>,
    tx: Vec<u8>,
}

impl PacketSocket {
    pub fn open(ifindex: u32, mac: [u8; 6], mtu: usize) -> Result<Self> {
        let proto = rustix::net::Protocol::from_raw(
            rustix::net::RawProtocol::new(ETH_P_ALL.to_be() as u32)
                .ok_or(Error::new(ErrorKind::NoInterface))?,
        );
        let fd = net::socket_with(
            AddressFamily::PACKET,
            SocketType::RAW,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            Some(proto),
        )
        .map_err(Error::sys("packet socket"))?;
        attach_filter(fd.as_fd())?;
        let addr = SockaddrLl {
            family: AddressFamily::PACKET.as_raw(),
            protocol_be: ETH_P_ALL.to_be(),
            ifindex: ifindex as i32,
            hatype: 0,
            pkttype: 0,
            halen: 0,
            addr: [0; 8],
        };
        net::bind(&fd, &addr).map_err(Error::sys("packet bind"))?;
        Ok(PacketSocket {
            fd,
            mac,
            mtu: mtu.max(576),
            rx: vec![0; FRAME_MAX],
            tx: vec![0; FRAME_MAX],
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The next frame someone else sent, if any is queued.
    fn recv_foreign(&mut self) -> Option<usize> {
        loop {
            let (_, n) = net::recv(&self.fd, &mut self.rx[..], RecvFlags::DONTWAIT).ok()?;
            // Our own transmissions are looped back to packet sockets.
            if n >= 14 && self.rx[6..12] != self.mac {
                return Some(n.min(FRAME_MAX));
            }
        }
    }
}

pub struct Rx<'a>(&'a [u8]);
pub struct Tx<'a> {
    fd: &'a OwnedFd,
    buf: &'a mut Vec<u8>,
}

impl smoltcp::phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl smoltcp::phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(self.buf.len());
        let r = f(&mut self.buf[..len]);
        // A lost frame is a lost datagram: DHCP retransmits on its own.
        let _ = net::send(self.fd, &self.buf[..len], SendFlags::DONTWAIT);
        r
    }
}

impl Device for PacketSocket {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        let n = self.recv_foreign()?;
        Some((
            Rx(&self.rx[..n]),
            Tx {
                fd: &self.fd,
                buf: &mut self.tx,
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx {
            fd: &self.fd,
            buf: &mut self.tx,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu + 14;
        // Frames from a local sender (veth, or a virtio host with offload)
        // reach packet sockets before their UDP checksum is filled in
        // (CHECKSUM_PARTIAL); the kernel vouches for them, so verify only
        // what we send.
        caps.checksum.udp = smoltcp::phy::Checksum::Tx;
        caps
    }
}

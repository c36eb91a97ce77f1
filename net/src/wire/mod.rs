//! Wire formats as bounds-checked views over byte slices (smoltcp style).

pub mod dhcp;
pub mod dns;
pub mod netlink;

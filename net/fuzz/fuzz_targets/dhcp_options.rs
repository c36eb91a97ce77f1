//! DHCP replies from the wire: the option parser must refuse or parse any
//! bytes, never panic.
#![no_main]
use ember_net::wire::dhcp::{Packet, Repr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::new_checked(data) {
        if let Ok(repr) = Repr::parse(&packet) {
            assert!(repr.dns.len() <= ember_net::wire::dhcp::MAX_DNS);
            assert!(repr.mtu.is_none_or(|m| m >= 68));
        }
        for opt in packet.options() {
            if opt.is_err() {
                break;
            }
        }
    }
});

//! /etc/resolv.conf from a lease.

use crate::error::{Error, Result};
use alloc::string::String;
use core::fmt::Write;
use rustix::fs::{self, Mode, OFlags};

pub const PATH: &str = "/etc/resolv.conf";

pub fn render(dns: &[[u8; 4]], domain: Option<&str>) -> String {
    let mut out = String::from("# written by ember from its DHCP lease\n");
    if let Some(d) = domain {
        let _ = writeln!(out, "search {d}");
    }
    for [a, b, c, d] in dns {
        let _ = writeln!(out, "nameserver {a}.{b}.{c}.{d}");
    }
    out
}

/// Replaces `path` atomically (write a sibling, then rename) so a reader
/// never sees half a file.
pub fn write(path: &str, contents: &str) -> Result<()> {
    let mut tmp = String::from(path);
    tmp.push_str(".ember-tmp");
    let fd = fs::open(
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(Error::sys("open resolv.conf"))?;
    let mut rest = contents.as_bytes();
    while !rest.is_empty() {
        let n = rustix::io::write(&fd, rest).map_err(Error::sys("write resolv.conf"))?;
        rest = &rest[n..];
    }
    drop(fd);
    fs::rename(tmp.as_str(), path).map_err(Error::sys("rename resolv.conf"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn resolv_conf_lists_search_domain_then_servers() {
        let s = super::render(&[[10, 0, 0, 1], [10, 0, 0, 2]], Some("ember.lan"));
        assert_eq!(
            s,
            "# written by ember from its DHCP lease\nsearch ember.lan\nnameserver 10.0.0.1\nnameserver 10.0.0.2\n"
        );
    }
}

//! `https://host[:port][/path]`: the only URLs the node fetches, and
//! [`ServerUrl`], a boot server's base URL, parsed once with the same rules
//! (the init's `ember.attest_url=`, `ember attest --url`, the protocol
//! client all take the typed value).

use crate::ErrorKind;
use alloc::format;
use alloc::string::String;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Url<'a> {
    pub host: &'a str,
    pub port: u16,
    /// Path and query, starting with '/'.
    pub path: &'a str,
}

pub fn parse(url: &str) -> Result<Url<'_>> {
    let rest = url
        .strip_prefix("https://")
        .ok_or(Error::new(ErrorKind::BadUrl("must start with https://")))?;
    // `split_at_checked`, not `[..]`: str slicing's panic path drags char
    // formatting and Unicode tables into /init.
    let (authority, path) = match rest
        .find(['/', '?', '#'])
        .and_then(|i| rest.split_at_checked(i))
    {
        Some(parts) => parts,
        None => (rest, "/"),
    };
    let path = path.split('#').next().unwrap_or("/");
    let path = if path.starts_with('/') {
        path
    } else if path.is_empty() {
        "/"
    } else {
        return Err(Error::new(ErrorKind::BadUrl("query without path")));
    };
    if authority.contains('@') {
        return Err(Error::new(ErrorKind::BadUrl("user info is not supported")));
    }
    if authority.starts_with('[') {
        return Err(Error::new(ErrorKind::BadUrl(
            "IPv6 literals are not supported",
        )));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or(Error::new(ErrorKind::BadUrl("bad port")))?,
        ),
        None => (authority, 443),
    };
    if host.is_empty() || host.len() > 253 {
        return Err(Error::new(ErrorKind::BadUrl("bad host")));
    }
    if parse_ipv4(host).is_none() && !valid_dns_name(host) {
        return Err(Error::new(ErrorKind::BadUrl("bad host")));
    }
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(Error::new(ErrorKind::BadUrl(
            "path has spaces or control characters",
        )));
    }
    Ok(Url { host, port, path })
}

pub fn valid_dns_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A boot server: `https://host[:port][/prefix]`, no query or fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    pub host: String,
    pub port: u16,
    /// Path prefix of every protocol path: "" or "/prefix", no trailing '/'.
    pub base_path: String,
}

impl ServerUrl {
    pub fn parse(text: &str) -> Result<ServerUrl> {
        let url = parse(text)?;
        if url.path.contains(['?', '#']) {
            return Err(Error::new(ErrorKind::BadUrl(
                "a boot server URL has no query",
            )));
        }
        Ok(ServerUrl {
            host: String::from(url.host),
            port: url.port,
            base_path: String::from(url.path.trim_end_matches('/')),
        })
    }

    /// `https://host:port`, what protocol paths are appended to.
    pub fn origin(&self) -> String {
        format!("https://{}:{}", self.host, self.port)
    }
}

impl core::fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "https://{}:{}{}", self.host, self.port, self.base_path)
    }
}

/// Dotted-quad IPv4 literal (no leading zeros, no shorthand forms).
pub fn parse_ipv4(s: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = s.split('.');
    for slot in &mut out {
        let p = parts.next()?;
        if p.is_empty()
            || p.len() > 3
            || (p.len() > 1 && p.starts_with('0'))
            || !p.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        *slot = p.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_path() {
        assert_eq!(
            parse("https://boot.lan/x?y=1").unwrap(),
            Url {
                host: "boot.lan",
                port: 443,
                path: "/x?y=1"
            }
        );
        assert_eq!(
            parse("https://10.0.2.2:8443").unwrap(),
            Url {
                host: "10.0.2.2",
                port: 8443,
                path: "/"
            }
        );
        assert!(parse("http://boot.lan/").is_err());
        assert!(parse("https://a@b/").is_err());
        assert!(parse("https://boot.lan:0/").is_err());
        assert!(parse("https://bad_host/").is_err());
        assert!(parse("https://h/a b").is_err());
    }

    #[test]
    fn server_urls_keep_their_prefix_without_trailing_slash() {
        assert_eq!(
            ServerUrl::parse("https://boot.example:8443/ember/").unwrap(),
            ServerUrl {
                host: "boot.example".into(),
                port: 8443,
                base_path: "/ember".into()
            }
        );
        let plain = ServerUrl::parse("https://10.0.2.2").unwrap();
        assert_eq!((plain.port, plain.base_path.as_str()), (443, ""));
        assert_eq!(plain.origin(), "https://10.0.2.2:443");
        assert!(ServerUrl::parse("http://x").is_err());
        assert!(ServerUrl::parse("https://:9").is_err());
        assert!(ServerUrl::parse("https://h:notaport").is_err());
        assert!(ServerUrl::parse("https://h/x?y=1").is_err());
    }

    /// One rule for every reader: an IPv6 literal is refused when the
    /// command line is read, not later as an "unreachable" server.
    #[test]
    fn ipv6_literals_are_refused_with_a_reason() {
        assert_eq!(
            ServerUrl::parse("https://[fd00::1]:8443/"),
            Err(Error::new(ErrorKind::BadUrl(
                "IPv6 literals are not supported"
            )))
        );
    }

    #[test]
    fn ipv4_literals_are_strict() {
        assert_eq!(parse_ipv4("127.0.0.1"), Some([127, 0, 0, 1]));
        assert_eq!(parse_ipv4("127.0.0"), None);
        assert_eq!(parse_ipv4("127.0.0.01"), None);
        assert_eq!(parse_ipv4("256.0.0.1"), None);
    }
}

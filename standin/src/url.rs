//! `https://host[:port][/prefix]`, the only URL form the API server takes.

use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsUrl {
    /// Without brackets for IPv6 literals.
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing '/', empty for the root.
    pub prefix: String,
}

impl HttpsUrl {
    pub fn parse(text: &str) -> Result<Self, Error> {
        let bad = |why: &'static str| Error::Url {
            url: text.to_string(),
            why,
        };
        let rest = text
            .strip_prefix("https://")
            .ok_or(bad("must start with https://"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(bad("user information is not allowed"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or(bad("unclosed '['"))?;
            match after {
                "" => (h, 443),
                p => (
                    h,
                    p.strip_prefix(':')
                        .and_then(|p| p.parse().ok())
                        .ok_or(bad("invalid port"))?,
                ),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().map_err(|_| bad("invalid port"))?),
                None => (authority, 443),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if port == 0 {
            return Err(bad("invalid port"));
        }
        if path.contains(['?', '#']) {
            return Err(bad("query and fragment are not allowed"));
        }
        Ok(HttpsUrl {
            host: host.to_string(),
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    /// The `Host` header value.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_and_prefix_are_split() {
        let u = HttpsUrl::parse("https://10.0.2.2:6443/k8s/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("10.0.2.2", 6443, "/k8s")
        );
        let u = HttpsUrl::parse("https://kubernetes.ember.test").unwrap();
        assert_eq!((u.port, u.prefix.as_str()), (443, ""));
        let u = HttpsUrl::parse("https://[::1]:8443").unwrap();
        assert_eq!(
            (u.host.as_str(), u.authority().as_str()),
            ("::1", "[::1]:8443")
        );
    }

    #[test]
    fn non_https_and_malformed_urls_are_refused() {
        for bad in [
            "http://x:1",
            "https://",
            "https://x:0",
            "https://x:99999",
            "https://u@x",
            "https://[::1",
            "https://x/?a",
        ] {
            assert!(HttpsUrl::parse(bad).is_err(), "{bad}");
        }
    }
}

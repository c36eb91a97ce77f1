//! The `ember.*` kernel command-line options the network bring-up honours.
//! There is deliberately no option to switch TLS verification off.

use core::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig<'a> {
    /// `ember.iface=NAME`: use this interface instead of the first with carrier.
    pub iface: Option<&'a str>,
    /// `ember.hostname=NAME`: DHCP host name (option 12); default `ember-<mac>`.
    pub hostname: Option<&'a str>,
    /// `ember.carrier_timeout=SECONDS` (default 10).
    pub carrier_timeout: Duration,
    /// `ember.dhcp_timeout=SECONDS` (default 30).
    pub dhcp_timeout: Duration,
}

impl Default for NetConfig<'_> {
    fn default() -> Self {
        NetConfig {
            iface: None,
            hostname: None,
            carrier_timeout: Duration::from_secs(10),
            dhcp_timeout: Duration::from_secs(30),
        }
    }
}

impl<'a> NetConfig<'a> {
    /// Reads the options from /proc/cmdline's text; unknown words and
    /// malformed values are ignored (the defaults stay).
    pub fn from_cmdline(cmdline: &'a str) -> Self {
        let mut cfg = NetConfig::default();
        for word in cmdline.split_ascii_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            let secs = || {
                value
                    .parse::<u16>()
                    .ok()
                    .filter(|&s| s > 0)
                    .map(|s| Duration::from_secs(s.into()))
            };
            match key {
                "ember.iface" if valid_name(value, 15) => cfg.iface = Some(value),
                "ember.hostname" if valid_name(value, 63) => cfg.hostname = Some(value),
                "ember.carrier_timeout" => {
                    cfg.carrier_timeout = secs().unwrap_or(cfg.carrier_timeout)
                }
                "ember.dhcp_timeout" => cfg.dhcp_timeout = secs().unwrap_or(cfg.dhcp_timeout),
                _ => {}
            }
        }
        cfg
    }
}

fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_options_are_read_and_bad_values_ignored() {
        let c = NetConfig::from_cmdline(
            "console=ttyS0 ember.iface=eth1 ember.hostname=node-7 ember.dhcp_timeout=5 ember.carrier_timeout=x",
        );
        assert_eq!(c.iface, Some("eth1"));
        assert_eq!(c.hostname, Some("node-7"));
        assert_eq!(c.dhcp_timeout, Duration::from_secs(5));
        assert_eq!(c.carrier_timeout, Duration::from_secs(10));
        let c = NetConfig::from_cmdline("ember.iface=a/b ember.hostname=");
        assert_eq!(c, NetConfig::default());
    }
}

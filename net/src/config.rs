//! What the network bring-up needs to know. The init fills it from its one
//! command-line parser (`ember.iface=`, `ember.hostname=`,
//! `ember.carrier_timeout=`, `ember.dhcp_timeout=`). There is deliberately
//! no setting to switch TLS verification off.

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

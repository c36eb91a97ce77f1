//! The kernel command line, split the way the kernel splits it
//! (`lib/cmdline.c: next_arg`), and Ember's `ember.*` keys read from it.
//!
//! Splitting: parameters are separated by spaces; a double quote starts or
//! ends a quoted run in which spaces do not separate; the quotes themselves
//! are dropped (`a="b c"` and `"a=b c"` both give `a` = `b c`). Parameters
//! after a bare `--` belong to init's argv and carry no keys.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use ember_net::url::ServerUrl;

use crate::{fsutil, Error};

/// Most boot servers `ember.attest_url=` may list: each costs its connect
/// timeout when down, and the boot's wait must stay bounded.
pub const MAX_SERVERS: usize = 8;

/// One `key[=value]` parameter with quotes removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub key: String,
    pub value: Option<String>,
}

/// Splits a command line into parameters.
pub fn split(cmdline: &str) -> Vec<Param> {
    let mut params = Vec::new();
    let mut chars = cmdline.trim_end_matches(['\n', '\0']).chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut word = String::new();
        let mut in_quote = false;
        let mut eq_at = None;
        for c in chars.by_ref() {
            match c {
                '"' => in_quote = !in_quote,
                c if c.is_ascii_whitespace() && !in_quote => break,
                '=' if eq_at.is_none() => {
                    eq_at = Some(word.len());
                    word.push(c);
                }
                c => word.push(c),
            }
        }
        if word == "--" && eq_at.is_none() {
            break;
        }
        // `split_at_checked` and `get`, not `[..]`: str slicing's panic
        // path drags char formatting and Unicode tables into /init.
        let param = match eq_at.and_then(|i| word.split_at_checked(i)) {
            Some((key, eq_value)) => Param {
                key: String::from(key),
                value: Some(String::from(eq_value.get(1..).unwrap_or(""))),
            },
            None => Param {
                key: word,
                value: None,
            },
        };
        params.push(param);
    }
    params
}

/// What to do when the boot cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Reboot,
    Poweroff,
}

/// Test hooks the integration tests drive from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestAction {
    /// After the skeleton's checks, power off cleanly.
    Poweroff,
    /// After DHCP, fetch `ember.test_url` over HTTPS with the bundled CA,
    /// log the body's length and SHA-256, then power off.
    Fetch,
}

/// How the sealed overlay blob is fetched (`ember.overlay_transport=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayTransport {
    /// Plain HTTP on the port Finish names (the default): the blob is
    /// ciphertext bound to the signed manifest, TLS would only add an AEAD
    /// pass. Falls back to HTTPS when the server has no plain listener.
    Http,
    /// HTTPS to the boot server that attested the node.
    Https,
}

/// Ember's settings from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `ember.attest_url=https://a[,https://b...]`: the boot servers, tried
    /// in turn (a name with several addresses is tried address by address).
    pub attest_urls: Vec<ServerUrl>,
    /// `ember.on_error=reboot|poweroff` (default reboot).
    pub on_error: OnError,
    /// `ember.error_delay=SECONDS` before acting on a fatal error (default 10).
    pub error_delay_s: u32,
    /// `ember.iface=NAME`: the primary interface, instead of the first with carrier.
    pub iface: Option<String>,
    /// `ember.hostname=NAME`.
    pub hostname: Option<String>,
    /// `ember.carrier_timeout=SECONDS` to wait for a link (default 10).
    pub carrier_timeout_s: u16,
    /// `ember.dhcp_timeout=SECONDS` for the first lease (default 30).
    pub dhcp_timeout_s: u16,
    /// `ember.ready_timeout=SECONDS` for the node to join (default 600).
    pub ready_timeout_s: u32,
    /// `ember.modules=a,b`: modules to load besides the initrd's list.
    pub extra_modules: Vec<String>,
    /// `ember.slot=a|b`: the last-known-good slot this boot came from
    /// (written into loader entries by the init itself).
    pub slot: Option<String>,
    /// `ember.overlay_transport=http|https` (default http).
    pub overlay_transport: OverlayTransport,
    /// `ember.test=poweroff|fetch`.
    pub test: Option<TestAction>,
    /// `ember.test_url=https://…` for `ember.test=fetch`.
    pub test_url: Option<String>,
    /// `ember.loglevel=error|warn|info|debug`.
    pub log_level: log::LevelFilter,
    /// Every `ember.*` key seen, for the boot log.
    pub keys: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            attest_urls: Vec::new(),
            on_error: OnError::Reboot,
            error_delay_s: 10,
            iface: None,
            hostname: None,
            carrier_timeout_s: 10,
            dhcp_timeout_s: 30,
            ready_timeout_s: 600,
            extra_modules: Vec::new(),
            slot: None,
            overlay_transport: OverlayTransport::Http,
            test: None,
            test_url: None,
            log_level: log::LevelFilter::Info,
            keys: Vec::new(),
        }
    }
}

/// A known key whose value is unusable. The key is ignored (its default
/// stays) and the problem is logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    pub key: String,
    pub reason: &'static str,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

impl Config {
    /// Reads `ember.*` keys; other keys are the kernel's and are ignored, as
    /// are unknown `ember.*` keys (a newer initrd's cmdline on an older
    /// init must still boot). Later duplicates win, as in the kernel.
    pub fn parse(cmdline: &str) -> (Config, Vec<KeyError>) {
        let mut cfg = Config::default();
        let mut errors = Vec::new();
        for Param { key, value } in split(cmdline) {
            let Some(name) = key.strip_prefix("ember.") else {
                continue;
            };
            cfg.keys.push(key.clone());
            let value = value.unwrap_or_default();
            let mut fail = |reason| {
                errors.push(KeyError {
                    key: key.clone(),
                    reason,
                })
            };
            match name {
                "attest_url" => match parse_servers(&value) {
                    Ok(urls) => cfg.attest_urls = urls,
                    Err(reason) => fail(reason),
                },
                "on_error" => match value.as_str() {
                    "reboot" => cfg.on_error = OnError::Reboot,
                    "poweroff" => cfg.on_error = OnError::Poweroff,
                    _ => fail("expected reboot or poweroff"),
                },
                "error_delay" => match value.parse::<u32>() {
                    Ok(s) if s <= 3600 => cfg.error_delay_s = s,
                    _ => fail("expected seconds, 0..=3600"),
                },
                "iface" => match valid_ifname(&value) {
                    true => cfg.iface = Some(value),
                    false => fail("expected an interface name of 1 to 15 printable characters"),
                },
                "hostname" => match valid_hostname(&value) {
                    true => cfg.hostname = Some(value),
                    false => fail("expected a DNS host name (letters, digits, '-', '.'; at most 63 per label)"),
                },
                "carrier_timeout" => match value.parse::<u16>() {
                    Ok(s) if s > 0 => cfg.carrier_timeout_s = s,
                    _ => fail("expected seconds, 1..=65535"),
                },
                "dhcp_timeout" => match value.parse::<u16>() {
                    Ok(s) if s > 0 => cfg.dhcp_timeout_s = s,
                    _ => fail("expected seconds, 1..=65535"),
                },
                "ready_timeout" => match value.parse::<u32>() {
                    Ok(s) if s > 0 => cfg.ready_timeout_s = s,
                    _ => fail("expected a positive number of seconds"),
                },
                "modules" => {
                    for m in value.split(',').filter(|m| !m.is_empty()) {
                        if m.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                            cfg.extra_modules.push(String::from(m));
                        } else {
                            fail("expected comma-separated module names");
                        }
                    }
                }
                "test" => match value.as_str() {
                    "poweroff" => cfg.test = Some(TestAction::Poweroff),
                    "fetch" => cfg.test = Some(TestAction::Fetch),
                    _ => fail("expected poweroff or fetch"),
                },
                "overlay_transport" => match value.as_str() {
                    "http" => cfg.overlay_transport = OverlayTransport::Http,
                    "https" => cfg.overlay_transport = OverlayTransport::Https,
                    _ => fail("expected http or https"),
                },
                "slot" => match value.as_str() {
                    "a" | "b" => cfg.slot = Some(value),
                    _ => fail("expected a or b"),
                },
                "test_url" => match ember_net::url::parse(&value) {
                    Ok(_) => cfg.test_url = Some(value),
                    Err(e) => fail(url_reason(e)),
                },
                "loglevel" => match value.as_str() {
                    "error" => cfg.log_level = log::LevelFilter::Error,
                    "warn" => cfg.log_level = log::LevelFilter::Warn,
                    "info" => cfg.log_level = log::LevelFilter::Info,
                    "debug" => cfg.log_level = log::LevelFilter::Debug,
                    _ => fail("expected error, warn, info or debug"),
                },
                _ => {}
            }
        }
        (cfg, errors)
    }
}

/// Reads `/proc/cmdline`, logging each unusable key (its default stays).
pub fn read() -> Result<Config, Error> {
    let text = fsutil::read_text("/proc/cmdline")?;
    let (cfg, errors) = Config::parse(&text);
    for e in &errors {
        crate::error!("cmdline: ignoring {e}");
    }
    crate::info!("cmdline: ember keys [{}]", cfg.keys.join(" "));
    log::set_max_level(cfg.log_level);
    Ok(cfg)
}

/// Comma-separated boot server URLs, each parsed by ember-net's one URL
/// parser (https only, a host, no user information, no IPv6 literal), so a
/// URL the node could never connect to is refused here, by name.
fn parse_servers(value: &str) -> Result<Vec<ServerUrl>, &'static str> {
    let mut urls = Vec::new();
    for part in value.split(',').filter(|p| !p.is_empty()) {
        if urls.len() == MAX_SERVERS {
            return Err("lists more than 8 boot servers");
        }
        urls.push(ServerUrl::parse(part).map_err(url_reason)?);
    }
    if urls.is_empty() {
        return Err("names no boot server");
    }
    Ok(urls)
}

fn url_reason(e: ember_net::Error) -> &'static str {
    match *e.kind() {
        ember_net::ErrorKind::BadUrl(why) => why,
        _ => "is not a usable https:// URL",
    }
}

fn valid_ifname(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

fn valid_hostname(name: &str) -> bool {
    (1..=253).contains(&name.len())
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(key: &str, value: Option<&str>) -> Param {
        Param {
            key: key.into(),
            value: value.map(Into::into),
        }
    }

    #[test]
    fn splits_like_the_kernel() {
        let params = split("console=ttyS0 quiet  ember.a=\"x y\" \"ember.b=1 2\" foo= bar=\"\"\n");
        assert_eq!(
            params,
            [
                p("console", Some("ttyS0")),
                p("quiet", None),
                p("ember.a", Some("x y")),
                p("ember.b", Some("1 2")),
                p("foo", Some("")),
                p("bar", Some("")),
            ]
        );
    }

    #[test]
    fn stops_at_double_dash() {
        assert_eq!(split("a=1 -- ember.test=poweroff"), [p("a", Some("1"))]);
    }

    #[test]
    fn value_keeps_later_equals() {
        assert_eq!(
            split("ember.attest_url=https://h/x?a=b"),
            [p("ember.attest_url", Some("https://h/x?a=b"))]
        );
    }

    #[test]
    fn unterminated_quote_runs_to_the_end() {
        assert_eq!(split("a=\"b c"), [p("a", Some("b c"))]);
    }

    #[test]
    fn reads_known_keys() {
        let (cfg, errors) = Config::parse(
            "BOOT_IMAGE=/vmlinuz console=ttyS0 ember.attest_url=https://boot.example:8443/v1 ember.on_error=poweroff \
             ember.iface=eth0 ember.test=poweroff ember.modules=virtio_net,e1000 ember.unknown=1 \
             ember.overlay_transport=https",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            cfg.attest_urls,
            [ServerUrl::parse("https://boot.example:8443/v1").unwrap()]
        );
        assert_eq!(cfg.on_error, OnError::Poweroff);
        assert_eq!(cfg.iface.as_deref(), Some("eth0"));
        assert_eq!(cfg.test, Some(TestAction::Poweroff));
        assert_eq!(cfg.extra_modules, ["virtio_net", "e1000"]);
        assert_eq!(cfg.overlay_transport, OverlayTransport::Https);
        assert_eq!(cfg.keys.len(), 7);
    }

    #[test]
    fn plain_http_attest_url_is_an_error() {
        let (cfg, errors) = Config::parse("ember.attest_url=http://boot.example/");
        assert!(cfg.attest_urls.is_empty());
        assert_eq!(
            errors,
            [KeyError {
                key: "ember.attest_url".into(),
                reason: "must start with https://"
            }]
        );
    }

    #[test]
    fn malformed_values_keep_defaults() {
        let (cfg, errors) = Config::parse(
            "ember.attest_url=https:// ember.attest_url=https://h:99999/ ember.attest_url=https://u@h/ \
             ember.on_error=explode ember.ready_timeout=0 ember.iface=waytoolonginterfacename ember.hostname=-bad \
             ember.overlay_transport=ftp",
        );
        assert_eq!(
            cfg,
            Config {
                keys: cfg.keys.clone(),
                ..Config::default()
            }
        );
        let reasons: Vec<&str> = errors.iter().map(|e| e.reason).collect();
        assert_eq!(reasons.len(), 8, "{reasons:?}");
    }

    #[test]
    fn accepts_ipv4_literal_hosts_and_refuses_ipv6_by_name() {
        assert!(parse_servers("https://10.0.2.2:8443/").is_ok());
        // The HTTPS client cannot reach an IPv6 literal: said here, not
        // later as an "unreachable" server that falls back to LKG.
        assert_eq!(
            parse_servers("https://[fe80::1]:8443/"),
            Err("IPv6 literals are not supported")
        );
    }

    #[test]
    fn several_boot_servers_are_kept_in_order() {
        let (cfg, errors) =
            Config::parse("ember.attest_url=https://a.example:8443,https://10.0.2.2:9443/x");
        assert!(errors.is_empty(), "{errors:?}");
        let hosts: Vec<&str> = cfg.attest_urls.iter().map(|u| u.host.as_str()).collect();
        assert_eq!(hosts, ["a.example", "10.0.2.2"]);
        assert_eq!(cfg.attest_urls[1].base_path, "/x");
        // One bad entry refuses the list: a half-understood list would
        // silently skip a server the operator meant.
        let (cfg, errors) = Config::parse("ember.attest_url=https://a.example,http://b");
        assert!(cfg.attest_urls.is_empty());
        assert_eq!(errors.len(), 1);
        let many = ["https://h"; 9].join(",");
        let (_, errors) = Config::parse(&alloc::format!("ember.attest_url={many}"));
        assert_eq!(errors[0].reason, "lists more than 8 boot servers");
    }

    #[test]
    fn garbage_never_panics() {
        for s in [
            "\"",
            "=",
            "==",
            "\"=\"",
            "ember.",
            "ember.=x",
            "\u{0}\u{ff}",
            "a\"b\"c=d\"e f\"",
        ] {
            let _ = Config::parse(s);
        }
    }
}

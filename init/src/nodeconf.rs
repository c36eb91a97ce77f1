//! The node configuration the overlay carries at /etc/ember/node.conf:
//! `key = value` lines, `#` comments. Keys prefixed `standin_` belong to
//! the test runtime and are ignored here; other unknown keys are logged.
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `role` | `agent` or `server` (rke2's subcommand) | `agent` |
//! | `runtime` | the runtime command line | `/usr/local/bin/rke2 <role>` |
//! | `node_name` | the Kubernetes node name | the DHCP host name |
//! | `ready_probe` | `api` (Node Ready on the API) or `healthz` | `api` |
//! | `api_server` | `https://HOST:PORT` of the Kubernetes API | required for `api` |
//! | `api_ca` | PEM CA of the API server | required for `api` |
//! | `api_token_file` | file with a bearer token for the API | required for `api` |
//! | `healthz_url` | `http://127.0.0.1:PORT/PATH` for `healthz` | `http://127.0.0.1:10248/healthz` |
//! | `ready_timeout` | seconds to become Ready (overrides `ember.ready_timeout`) | cmdline |
//! | `debug_console` | a program (e.g. a shell) started on the console | none |
//! | `writable`, `writable_extra`, `scratch_disk`, `scratch_mount`, `mkfs`, `sysctl.*` | see [`crate::storage`] | |

use alloc::string::String;
use alloc::vec::Vec;

use crate::storage::StorageConf;

pub const PATH: &str = "/etc/ember/node.conf";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Api,
    Healthz,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConf {
    pub runtime: Vec<String>,
    pub node_name: Option<String>,
    pub probe: Probe,
    pub api_server: Option<String>,
    pub api_ca: Option<String>,
    pub api_token_file: Option<String>,
    pub healthz_url: String,
    pub ready_timeout_s: Option<u32>,
    /// No shell or getty runs unless this names one.
    pub debug_console: Option<Vec<String>>,
    pub storage: StorageConf,
}

/// A line that could not be used; the boot fails on these, since a node
/// running a half-understood configuration is worse than one that says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfError {
    pub line: usize,
    pub reason: &'static str,
}

impl core::fmt::Display for ConfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{PATH} line {}: {}", self.line, self.reason)
    }
}

impl NodeConf {
    pub fn parse(text: &str) -> Result<NodeConf, ConfError> {
        let mut role = "agent";
        let mut runtime: Option<Vec<String>> = None;
        let mut conf = NodeConf {
            runtime: Vec::new(),
            node_name: None,
            probe: Probe::Api,
            api_server: None,
            api_ca: None,
            api_token_file: None,
            healthz_url: String::from("http://127.0.0.1:10248/healthz"),
            ready_timeout_s: None,
            debug_console: None,
            storage: StorageConf::default(),
        };
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason| ConfError {
                line: i + 1,
                reason,
            };
            let (key, value) = line.split_once('=').ok_or(err("expected key = value"))?;
            let (key, value) = (key.trim(), value.trim());
            if value.is_empty() {
                return Err(err("empty value"));
            }
            match key {
                "role" => match value {
                    "agent" => role = "agent",
                    "server" => role = "server",
                    _ => return Err(err("role must be agent or server")),
                },
                "runtime" => {
                    runtime = Some(value.split_ascii_whitespace().map(String::from).collect())
                }
                "node_name" => conf.node_name = Some(String::from(value)),
                "ready_probe" => {
                    conf.probe = match value {
                        "api" => Probe::Api,
                        "healthz" => Probe::Healthz,
                        _ => return Err(err("ready_probe must be api or healthz")),
                    }
                }
                "api_server" if value.starts_with("https://") => {
                    conf.api_server = Some(String::from(value))
                }
                "api_server" => return Err(err("api_server must be an https:// URL")),
                "api_ca" => conf.api_ca = Some(String::from(value)),
                "api_token_file" => conf.api_token_file = Some(String::from(value)),
                // The init verifies the URL's own host (DNS or IP SANs); the
                // name is for clients that can only match DNS names.
                "api_tls_name" => {}
                "healthz_url" if value.starts_with("http://") => {
                    conf.healthz_url = String::from(value)
                }
                "healthz_url" => return Err(err("healthz_url must be an http:// URL")),
                "ready_timeout" => {
                    conf.ready_timeout_s = Some(
                        value
                            .parse()
                            .ok()
                            .filter(|&s| s > 0)
                            .ok_or(err("ready_timeout must be positive seconds"))?,
                    )
                }
                "debug_console" => {
                    conf.debug_console =
                        Some(value.split_ascii_whitespace().map(String::from).collect())
                }
                k if k.starts_with("standin_") => {}
                _ => {
                    if !conf.storage.set(key, value).map_err(err)? {
                        log::warn!("{PATH} line {}: unknown key {key}, ignored", i + 1)
                    }
                }
            }
        }
        conf.runtime = runtime.unwrap_or_else(|| {
            alloc::vec![String::from("/usr/local/bin/rke2"), String::from(role)]
        });
        if conf.probe == Probe::Api
            && (conf.api_server.is_none() || conf.api_ca.is_none() || conf.api_token_file.is_none())
        {
            return Err(ConfError {
                line: 0,
                reason: "ready_probe = api needs api_server, api_ca and api_token_file",
            });
        }
        Ok(conf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "\
# node configuration
role = server
node_name = node-7
api_server = https://10.0.2.2:6443
api_ca = /etc/ember/api-ca.pem
api_token_file = /etc/ember/api-token
standin_behavior = ready
";

    #[test]
    fn reads_a_full_configuration() {
        let c = NodeConf::parse(FULL).unwrap();
        assert_eq!(c.runtime, ["/usr/local/bin/rke2", "server"]);
        assert_eq!(c.node_name.as_deref(), Some("node-7"));
        assert_eq!(c.probe, Probe::Api);
        assert_eq!(c.api_server.as_deref(), Some("https://10.0.2.2:6443"));
    }

    #[test]
    fn healthz_needs_no_api_settings() {
        let c = NodeConf::parse("ready_probe = healthz\nruntime = /bin/rt --flag\n").unwrap();
        assert_eq!(c.runtime, ["/bin/rt", "--flag"]);
        assert_eq!(c.probe, Probe::Healthz);
        assert_eq!(c.healthz_url, "http://127.0.0.1:10248/healthz");
    }

    #[test]
    fn bad_lines_name_their_line() {
        assert_eq!(
            NodeConf::parse("role = server\nrole = mayor\n").unwrap_err(),
            ConfError {
                line: 2,
                reason: "role must be agent or server"
            }
        );
        assert_eq!(NodeConf::parse("garbage\n").unwrap_err().line, 1);
        assert!(NodeConf::parse("api_server = http://x\n").is_err());
        assert!(NodeConf::parse("ready_probe = api\n").is_err());
        let bad_storage = "ready_probe = healthz\nwritable = /var:lots\n";
        assert_eq!(NodeConf::parse(bad_storage).unwrap_err().line, 2);
    }
}

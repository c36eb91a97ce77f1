//! The node configuration the overlay carries at /etc/ember/node.conf:
//! `key = value` lines, `#` comments, read with the syntax the runtime
//! shares ([`ember_nodeapi::nodeconf`]: a key set twice is an error, an
//! empty value means unset). Keys prefixed `standin_` belong to the test
//! runtime and are ignored here; other unknown keys are logged.
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
pub enum ConfError {
    /// The shared syntax refused a line (no `=`, a bad key, a key set twice).
    Syntax(ember_nodeapi::Error),
    /// A known key with a value the init cannot use.
    Value { line: usize, reason: &'static str },
}

impl core::fmt::Display for ConfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConfError::Syntax(e) => write!(f, "{PATH}: {e}"),
            ConfError::Value { line, reason } => write!(f, "{PATH} line {line}: {reason}"),
        }
    }
}

impl ConfError {
    /// The 1-based line at fault (0: the file as a whole).
    pub fn line(&self) -> usize {
        match self {
            ConfError::Syntax(
                ember_nodeapi::Error::ConfNoEquals { line }
                | ember_nodeapi::Error::ConfBadKey { line }
                | ember_nodeapi::Error::ConfDuplicate { line },
            ) => *line,
            ConfError::Syntax(_) => 0,
            ConfError::Value { line, .. } => *line,
        }
    }
}

/// The `nodeconf` phase: reads and checks /etc/ember/node.conf.
pub fn read() -> Result<NodeConf, crate::Error> {
    let text = crate::fsutil::read_text(PATH)?;
    NodeConf::parse(&text).map_err(crate::Error::from)
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
        for entry in ember_nodeapi::nodeconf::entries(text) {
            let entry = entry.map_err(ConfError::Syntax)?;
            let (line, key, value) = (entry.line, entry.key, entry.value);
            let err = |reason| ConfError::Value { line, reason };
            if value.is_empty() {
                continue; // unset: the default stays
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
                        crate::warn!("{PATH} line {line}: unknown key {key}, ignored")
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
            return Err(ConfError::Value {
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
            NodeConf::parse("node_name = n\nrole = mayor\n").unwrap_err(),
            ConfError::Value {
                line: 2,
                reason: "role must be agent or server"
            }
        );
        assert_eq!(NodeConf::parse("garbage\n").unwrap_err().line(), 1);
        assert!(NodeConf::parse("api_server = http://x\n").is_err());
        assert!(NodeConf::parse("ready_probe = api\n").is_err());
        let bad_storage = "ready_probe = healthz\nwritable = /var:lots\n";
        assert_eq!(NodeConf::parse(bad_storage).unwrap_err().line(), 2);
    }

    /// The init and the runtime read one syntax: a key set twice is refused
    /// (which value would the other reader take?), an empty value is unset.
    #[test]
    fn repeated_keys_are_refused_and_empty_values_are_unset() {
        assert_eq!(
            NodeConf::parse("role = server\nrole = agent\n").unwrap_err(),
            ConfError::Syntax(ember_nodeapi::Error::ConfDuplicate { line: 2 })
        );
        let c = NodeConf::parse("ready_probe = healthz\nrole =\nnode_name = \n").unwrap();
        assert_eq!(c.runtime, ["/usr/local/bin/rke2", "agent"]);
        assert_eq!(c.node_name, None);
    }
}

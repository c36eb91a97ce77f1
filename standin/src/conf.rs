//! The node configuration, /etc/ember/node.conf: `key = value` lines.
//!
//! One file serves the init and the stand-in. Keys without a prefix are the
//! init's (runtime command, readiness probe, API endpoint and credentials);
//! keys starting with `standin_` are read only by this program. The stand-in
//! ignores keys it does not know unless they carry its prefix, so a typo in
//! a `standin_` key is an error rather than a silently ignored setting.
//!
//! Syntax (`ember_nodeapi::nodeconf`, shared with the init): one
//! `key = value` per line; surrounding blanks are trimmed; blank lines and
//! lines whose first non-blank character is `#` are ignored; keys are
//! `[a-z0-9_]+`; a key may appear once; an empty value means "unset" (the
//! default applies).

use std::path::PathBuf;
use std::time::Duration;

use ember_nodeapi::nodeconf;

use crate::error::Error;
use crate::url::HttpsUrl;

pub const DEFAULT_PATH: &str = "/etc/ember/node.conf";
pub const DEFAULT_HEALTHZ: &str = "127.0.0.1:10248";
pub const DEFAULT_RUNC: &str = "/usr/sbin/runc";
pub const DEFAULT_RUNC_ROOT: &str = "/run/standin-runc";
pub const DEFAULT_EXIT_AFTER_S: u64 = 3;
pub const DEFAULT_EXIT_CODE: i32 = 1;
pub const DEFAULT_HEARTBEAT_S: u64 = 10;
pub const DEFAULT_CONTAINER_TIMEOUT_S: u64 = 120;

const STANDIN_KEYS: [&str; 10] = [
    "standin_behavior",
    "standin_exit_after",
    "standin_exit_code",
    "standin_heartbeat",
    "standin_healthz",
    "standin_container",
    "standin_container_timeout",
    "standin_runc",
    "standin_runc_root",
    "standin_exec",
];

/// What the stand-in does once started (`standin_behavior`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Registers its Node with Ready=True and keeps heartbeating.
    Ready,
    /// Registers its Node with Ready=False (a runtime that never gets ready).
    Fail,
    /// Never registers; runs forever.
    Hang,
    /// Never registers; exits non-zero after `standin_exit_after` seconds.
    Exit,
}

impl Behavior {
    fn parse(value: &str) -> Option<Self> {
        match value {
            "ready" => Some(Behavior::Ready),
            "fail" => Some(Behavior::Fail),
            "hang" => Some(Behavior::Hang),
            "exit" => Some(Behavior::Exit),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Behavior::Ready => "ready",
            Behavior::Fail => "fail",
            Behavior::Hang => "hang",
            Behavior::Exit => "exit",
        }
    }

    /// Whether this behavior talks to the Kubernetes API at all.
    pub fn registers(self) -> bool {
        matches!(self, Behavior::Ready | Behavior::Fail)
    }
}

/// Where the stand-in finds the API and proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConf {
    pub server: HttpsUrl,
    /// The name checked against the server certificate (DNS name or IP).
    pub tls_name: String,
    pub ca: PathBuf,
    pub token_file: PathBuf,
}

/// A runc bundle to run once at start (`standin_container`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerConf {
    pub bundle: PathBuf,
    pub runc: PathBuf,
    pub state_root: PathBuf,
    pub timeout: Duration,
}

/// Everything the stand-in reads from node.conf, typed and defaulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConf {
    pub node_name: String,
    pub behavior: Behavior,
    /// Present when the behavior registers (required then).
    pub api: Option<ApiConf>,
    pub healthz: std::net::SocketAddr,
    /// `standin_exit_after`: for `exit` the delay (default 3 s); for other
    /// behaviors an optional crash after that many seconds.
    pub exit_after: Option<Duration>,
    pub exit_code: i32,
    /// Zero disables heartbeats.
    pub heartbeat: Duration,
    pub container: Option<ContainerConf>,
    /// `standin_exec`: a command (absolute path, then arguments, split at
    /// blanks) the runtime runs once at start, its output logged: what a
    /// workload on the node might try (tests: attesting from the runtime).
    pub exec: Option<Vec<String>>,
}

fn find<'a>(pairs: &'a [(usize, &'a str, &'a str)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(_, k, v)| *k == key && !v.is_empty())
        .map(|(_, _, v)| *v)
}

fn required<'a>(
    pairs: &'a [(usize, &'a str, &'a str)],
    key: &'static str,
) -> Result<&'a str, Error> {
    find(pairs, key).ok_or(Error::ConfMissing(key))
}

fn seconds(key: &'static str, value: &str) -> Result<Duration, Error> {
    value
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| Error::ConfValue {
            key,
            value: value.to_string(),
            expected: "a whole number of seconds",
        })
}

/// Splits the file into `(line number, key, value)` triples with the
/// syntax shared with the init (`ember_nodeapi::nodeconf`), refusing
/// unknown `standin_` keys.
pub fn pairs(text: &str) -> Result<Vec<(usize, &str, &str)>, Error> {
    let mut out = Vec::new();
    for entry in nodeconf::entries(text) {
        let entry = entry.map_err(Error::Conf)?;
        if entry.key.starts_with("standin_") && !STANDIN_KEYS.contains(&entry.key) {
            return Err(Error::ConfUnknownKey {
                line: entry.line,
                key: entry.key.to_string(),
            });
        }
        out.push((entry.line, entry.key, entry.value));
    }
    Ok(out)
}

impl NodeConf {
    pub fn parse(text: &str) -> Result<Self, Error> {
        let pairs = pairs(text)?;
        let node_name = required(&pairs, "node_name")?.to_string();
        if !valid_node_name(&node_name) {
            return Err(Error::ConfValue {
                key: "node_name",
                value: node_name,
                expected: "a DNS subdomain name (lowercase letters, digits, '-', '.'; at most 253)",
            });
        }
        let behavior = match find(&pairs, "standin_behavior") {
            None => Behavior::Ready,
            Some(v) => Behavior::parse(v).ok_or_else(|| Error::ConfValue {
                key: "standin_behavior",
                value: v.to_string(),
                expected: "ready, fail, hang or exit",
            })?,
        };
        let api = if behavior.registers() {
            let server = HttpsUrl::parse(required(&pairs, "api_server")?)?;
            let tls_name = find(&pairs, "api_tls_name")
                .map(str::to_string)
                .unwrap_or_else(|| server.host.clone());
            Some(ApiConf {
                server,
                tls_name,
                ca: absolute("api_ca", required(&pairs, "api_ca")?)?,
                token_file: absolute("api_token_file", required(&pairs, "api_token_file")?)?,
            })
        } else {
            None
        };
        let healthz_text = find(&pairs, "standin_healthz").unwrap_or(DEFAULT_HEALTHZ);
        let healthz = healthz_text.parse().map_err(|_| Error::ConfValue {
            key: "standin_healthz",
            value: healthz_text.to_string(),
            expected: "an IP address and port such as 127.0.0.1:10248",
        })?;
        let exit_after = match find(&pairs, "standin_exit_after") {
            Some(v) => Some(seconds("standin_exit_after", v)?),
            None if behavior == Behavior::Exit => Some(Duration::from_secs(DEFAULT_EXIT_AFTER_S)),
            None => None,
        };
        let exit_code = match find(&pairs, "standin_exit_code") {
            None => DEFAULT_EXIT_CODE,
            Some(v) => match v.parse::<i32>() {
                Ok(c) if (1..=255).contains(&c) => c,
                _ => {
                    return Err(Error::ConfValue {
                        key: "standin_exit_code",
                        value: v.to_string(),
                        expected: "a status from 1 to 255",
                    })
                }
            },
        };
        let heartbeat = match find(&pairs, "standin_heartbeat") {
            None => Duration::from_secs(DEFAULT_HEARTBEAT_S),
            Some(v) => seconds("standin_heartbeat", v)?,
        };
        let container = match find(&pairs, "standin_container") {
            None => None,
            Some(bundle) => Some(ContainerConf {
                bundle: absolute("standin_container", bundle)?,
                runc: absolute(
                    "standin_runc",
                    find(&pairs, "standin_runc").unwrap_or(DEFAULT_RUNC),
                )?,
                state_root: absolute(
                    "standin_runc_root",
                    find(&pairs, "standin_runc_root").unwrap_or(DEFAULT_RUNC_ROOT),
                )?,
                timeout: match find(&pairs, "standin_container_timeout") {
                    None => Duration::from_secs(DEFAULT_CONTAINER_TIMEOUT_S),
                    Some(v) => seconds("standin_container_timeout", v)?,
                },
            }),
        };
        let exec = match find(&pairs, "standin_exec") {
            None => None,
            Some(line) => {
                let argv: Vec<String> = line.split_whitespace().map(String::from).collect();
                absolute("standin_exec", &argv[0])?;
                Some(argv)
            }
        };
        Ok(NodeConf {
            node_name,
            behavior,
            api,
            healthz,
            exit_after,
            exit_code,
            heartbeat,
            container,
            exec,
        })
    }
}

fn absolute(key: &'static str, value: &str) -> Result<PathBuf, Error> {
    if value.starts_with('/') {
        Ok(PathBuf::from(value))
    } else {
        Err(Error::ConfValue {
            key,
            value: value.to_string(),
            expected: "an absolute path",
        })
    }
}

/// Kubernetes node names are DNS subdomains (RFC 1123).
fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "\
# written by scripts/build-standin-overlay
runtime = /usr/local/bin/rke2 agent
node_name = ember-node-1
ready_probe = api
api_server = https://10.0.2.2:6443
api_tls_name = kubernetes.ember.test
api_ca = /etc/ember/api-ca.pem
api_token_file = /etc/ember/api-token

standin_behavior = fail
standin_heartbeat = 0
standin_healthz = 127.0.0.1:20248
standin_container = /var/lib/standin/bundle
";

    #[test]
    fn full_file_parses_into_typed_settings() {
        let c = NodeConf::parse(FULL).unwrap();
        assert_eq!(c.node_name, "ember-node-1");
        assert_eq!(c.behavior, Behavior::Fail);
        let api = c.api.unwrap();
        assert_eq!(api.server.host, "10.0.2.2");
        assert_eq!(api.server.port, 6443);
        assert_eq!(api.tls_name, "kubernetes.ember.test");
        assert_eq!(api.ca, PathBuf::from("/etc/ember/api-ca.pem"));
        assert_eq!(c.heartbeat, Duration::ZERO);
        assert_eq!(c.healthz.port(), 20248);
        let ct = c.container.unwrap();
        assert_eq!(ct.runc, PathBuf::from(DEFAULT_RUNC));
        assert_eq!(ct.bundle, PathBuf::from("/var/lib/standin/bundle"));
        assert_eq!(c.exit_after, None);
    }

    #[test]
    fn defaults_apply_when_keys_are_absent_or_empty() {
        let c = NodeConf::parse(
            "node_name = n\napi_server = https://k:6443\napi_ca = /ca\napi_token_file = /t\nstandin_container =\n",
        )
        .unwrap();
        assert_eq!(c.behavior, Behavior::Ready);
        assert_eq!(c.api.as_ref().unwrap().tls_name, "k");
        assert_eq!(c.healthz, DEFAULT_HEALTHZ.parse().unwrap());
        assert_eq!(c.heartbeat, Duration::from_secs(DEFAULT_HEARTBEAT_S));
        assert_eq!(c.container, None);
    }

    #[test]
    fn exit_behavior_needs_no_api_and_defaults_its_delay() {
        let c = NodeConf::parse("node_name = n\nstandin_behavior = exit\nstandin_exit_code = 7\n")
            .unwrap();
        assert_eq!(c.api, None);
        assert_eq!(
            c.exit_after,
            Some(Duration::from_secs(DEFAULT_EXIT_AFTER_S))
        );
        assert_eq!(c.exit_code, 7);
    }

    #[test]
    fn registering_behavior_without_api_server_is_refused() {
        assert!(matches!(
            NodeConf::parse("node_name = n\n"),
            Err(Error::ConfMissing("api_server"))
        ));
    }

    #[test]
    fn misspelt_standin_key_is_refused_but_foreign_keys_are_ignored() {
        let err = NodeConf::parse("node_name = n\nstandin_behaviour = hang\n").unwrap_err();
        assert!(
            matches!(err, Error::ConfUnknownKey { line: 2, .. }),
            "{err}"
        );
        let c =
            NodeConf::parse("node_name = n\nstandin_behavior = hang\nsomething_new = 1\n").unwrap();
        assert_eq!(c.behavior, Behavior::Hang);
    }

    #[test]
    fn duplicate_keys_and_lines_without_equals_are_refused() {
        use ember_nodeapi::Error as Syntax;
        assert!(matches!(
            pairs("a = 1\na = 2\n"),
            Err(Error::Conf(Syntax::ConfDuplicate { line: 2 }))
        ));
        assert!(matches!(
            pairs("just words\n"),
            Err(Error::Conf(Syntax::ConfNoEquals { line: 1 }))
        ));
        assert!(matches!(
            pairs("Key = v\n"),
            Err(Error::Conf(Syntax::ConfBadKey { line: 1 }))
        ));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("node_name = Not_A_Name\n", "node_name"),
            (
                "node_name = n\nstandin_behavior = maybe\n",
                "standin_behavior",
            ),
            (
                "node_name = n\nstandin_behavior = hang\nstandin_healthz = localhost\n",
                "standin_healthz",
            ),
            (
                "node_name = n\nstandin_behavior = exit\nstandin_exit_after = soon\n",
                "standin_exit_after",
            ),
            (
                "node_name = n\nstandin_behavior = exit\nstandin_exit_code = 0\n",
                "standin_exit_code",
            ),
            (
                "node_name = n\nstandin_behavior = hang\nstandin_container = bundle\n",
                "standin_container",
            ),
        ] {
            match NodeConf::parse(text) {
                Err(Error::ConfValue { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn value_keeps_inner_equals_and_spaces() {
        let p = pairs("runtime = /usr/local/bin/rke2 agent --x=y\n").unwrap();
        assert_eq!(p[0].2, "/usr/local/bin/rke2 agent --x=y");
    }
}

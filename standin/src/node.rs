//! The Node object as kubelet posts it: labels, the four conditions kubelet
//! maintains, addresses, capacity and nodeInfo.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::json::{obj, s, Json};

/// What this machine says about itself, collected once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    pub name: String,
    pub server_role: bool,
    pub internal_ip: Option<String>,
    pub kernel_version: String,
    pub boot_id: String,
    pub machine_id: String,
    pub system_uuid: String,
    pub cpus: u32,
    pub memory_kib: u64,
    pub container_runtime: String,
}

/// The node's Ready condition as the stand-in reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Readiness {
    pub fn ready() -> Self {
        Readiness {
            ready: true,
            reason: "KubeletReady",
            message: "kubelet is posting ready status".into(),
        }
    }

    pub fn not_ready(message: impl Into<String>) -> Self {
        Readiness {
            ready: false,
            reason: "KubeletNotReady",
            message: message.into(),
        }
    }
}

pub const KUBELET_VERSION: &str = "v1.31.1+standin";

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_string())
        .unwrap_or_default()
}

fn meminfo_total_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

impl NodeFacts {
    /// Reads /proc and /sys; `internal_ip` is the source address the kernel
    /// picks towards the API server.
    pub fn collect(
        name: &str,
        server_role: bool,
        internal_ip: Option<String>,
        container_runtime: String,
    ) -> Self {
        NodeFacts {
            name: name.to_string(),
            server_role,
            internal_ip,
            kernel_version: read_trimmed("/proc/sys/kernel/osrelease"),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            machine_id: read_trimmed("/etc/machine-id"),
            system_uuid: read_trimmed("/sys/class/dmi/id/product_uuid"),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            memory_kib: meminfo_total_kib(),
            container_runtime,
        }
    }
}

/// Heartbeat time and the time the condition last changed.
#[derive(Debug, Clone, Copy)]
pub struct Stamps<'a> {
    pub now: &'a str,
    pub since: &'a str,
}

fn condition(kind: &str, status: bool, reason: &str, message: &str, t: Stamps) -> Json {
    obj([
        ("type", s(kind)),
        ("status", s(if status { "True" } else { "False" })),
        ("lastHeartbeatTime", s(t.now)),
        ("lastTransitionTime", s(t.since)),
        ("reason", s(reason)),
        ("message", s(message)),
    ])
}

fn conditions(r: &Readiness, t: Stamps) -> Json {
    Json::Arr(vec![
        condition(
            "MemoryPressure",
            false,
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
            t,
        ),
        condition(
            "DiskPressure",
            false,
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
            t,
        ),
        condition(
            "PIDPressure",
            false,
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
            t,
        ),
        condition("Ready", r.ready, r.reason, &r.message, t),
    ])
}

fn labels(f: &NodeFacts) -> Json {
    let mut fields = vec![
        ("beta.kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("kubernetes.io/hostname", f.name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("node.kubernetes.io/instance-type", "rke2"),
    ];
    if f.server_role {
        fields.extend([
            ("node-role.kubernetes.io/control-plane", "true"),
            ("node-role.kubernetes.io/etcd", "true"),
            ("node-role.kubernetes.io/master", "true"),
        ]);
    }
    Json::Obj(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), s(v)))
            .collect(),
    )
}

fn resources(f: &NodeFacts) -> Json {
    obj([
        ("cpu", s(f.cpus.to_string())),
        ("memory", s(format!("{}Ki", f.memory_kib))),
        ("pods", s("110")),
    ])
}

fn status(f: &NodeFacts, r: &Readiness, t: Stamps) -> Json {
    let mut addresses = Vec::new();
    if let Some(ip) = &f.internal_ip {
        addresses.push(obj([
            ("type", s("InternalIP")),
            ("address", s(ip.as_str())),
        ]));
    }
    addresses.push(obj([
        ("type", s("Hostname")),
        ("address", s(f.name.as_str())),
    ]));
    obj([
        ("capacity", resources(f)),
        ("allocatable", resources(f)),
        ("conditions", conditions(r, t)),
        ("addresses", Json::Arr(addresses)),
        (
            "daemonEndpoints",
            obj([("kubeletEndpoint", obj([("Port", Json::Num(10250))]))]),
        ),
        (
            "nodeInfo",
            obj([
                ("machineID", s(f.machine_id.as_str())),
                ("systemUUID", s(f.system_uuid.as_str())),
                ("bootID", s(f.boot_id.as_str())),
                ("kernelVersion", s(f.kernel_version.as_str())),
                ("osImage", s("Ember")),
                ("containerRuntimeVersion", s(f.container_runtime.as_str())),
                ("kubeletVersion", s(KUBELET_VERSION)),
                ("kubeProxyVersion", s(KUBELET_VERSION)),
                ("operatingSystem", s("linux")),
                ("architecture", s("amd64")),
            ]),
        ),
    ])
}

/// The body of `POST /api/v1/nodes`.
pub fn node_json(f: &NodeFacts, r: &Readiness, t: Stamps) -> String {
    obj([
        ("kind", s("Node")),
        ("apiVersion", s("v1")),
        (
            "metadata",
            obj([
                ("name", s(f.name.as_str())),
                ("labels", labels(f)),
                (
                    "annotations",
                    obj([
                        ("node.alpha.kubernetes.io/ttl", s("0")),
                        (
                            "volumes.kubernetes.io/controller-managed-attach-detach",
                            s("true"),
                        ),
                    ]),
                ),
            ]),
        ),
        ("spec", obj([])),
        ("status", status(f, r, t)),
    ])
    .to_text()
}

/// The body of `PATCH /api/v1/nodes/NAME/status` with
/// `application/merge-patch+json`: a merge patch replaces lists whole, so
/// it carries every condition, as kubelet's status update does.
pub fn status_patch_json(f: &NodeFacts, r: &Readiness, t: Stamps) -> String {
    obj([("status", status(f, r, t))]).to_text()
}

/// RFC 3339 UTC, second precision, as Kubernetes writes timestamps.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    ember_nodeapi::utc::UtcTime::from_unix(i64::try_from(secs).unwrap_or(i64::MAX)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn facts() -> NodeFacts {
        NodeFacts {
            name: "ember-node-1".into(),
            server_role: false,
            internal_ip: Some("10.0.2.15".into()),
            kernel_version: "6.1.0-28-amd64".into(),
            boot_id: "b".into(),
            machine_id: String::new(),
            system_uuid: String::new(),
            cpus: 2,
            memory_kib: 1024,
            container_runtime: "runc://1.1.5".into(),
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_650_863);
        assert_eq!(rfc3339(t), "2026-11-25T23:54:23Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn ready_node_carries_a_true_ready_condition_and_node_info() {
        let text = node_json(
            &facts(),
            &Readiness::ready(),
            Stamps {
                now: "2026-11-25T00:00:00Z",
                since: "2026-11-24T00:00:00Z",
            },
        );
        assert!(text.starts_with(
            r#"{"kind":"Node","apiVersion":"v1","metadata":{"name":"ember-node-1","labels":{"#
        ));
        assert!(text.contains(r#"{"type":"Ready","status":"True","lastHeartbeatTime":"2026-11-25T00:00:00Z","lastTransitionTime":"2026-11-24T00:00:00Z","reason":"KubeletReady","message":"kubelet is posting ready status"}"#));
        assert!(text.contains(r#""addresses":[{"type":"InternalIP","address":"10.0.2.15"},{"type":"Hostname","address":"ember-node-1"}]"#));
        assert!(text.contains(r#""containerRuntimeVersion":"runc://1.1.5""#));
        assert!(text.contains(r#""memory":"1024Ki""#));
        assert!(!text.contains("control-plane"));
    }

    #[test]
    fn failing_node_reports_not_ready_with_its_message() {
        let r = Readiness::not_ready("told to fail");
        let text = status_patch_json(
            &facts(),
            &r,
            Stamps {
                now: "t",
                since: "t",
            },
        );
        assert!(text.starts_with(r#"{"status":{"capacity""#));
        assert!(text.contains(r#"{"type":"Ready","status":"False","lastHeartbeatTime":"t","lastTransitionTime":"t","reason":"KubeletNotReady","message":"told to fail"}"#));
    }

    #[test]
    fn posted_node_reads_back_with_the_inits_parser() {
        use ember_nodeapi::nodestatus::{node_status, Ready};
        let stamps = Stamps {
            now: "t",
            since: "t",
        };
        let text = node_json(&facts(), &Readiness::ready(), stamps);
        let s = node_status(text.as_bytes()).unwrap();
        assert_eq!(
            (s.name, s.ready, s.reason),
            (Some("ember-node-1"), Ready::True, Some("KubeletReady"))
        );
        let text = node_json(
            &facts(),
            &Readiness::not_ready("a \"quoted\" reason"),
            stamps,
        );
        let s = node_status(text.as_bytes()).unwrap();
        assert_eq!(
            (s.ready, s.message),
            (Ready::False, Some(r#"a \"quoted\" reason"#))
        );
    }

    #[test]
    fn server_role_adds_control_plane_labels() {
        let mut f = facts();
        f.server_role = true;
        let text = node_json(
            &f,
            &Readiness::ready(),
            Stamps {
                now: "t",
                since: "t",
            },
        );
        assert!(text.contains(r#""node-role.kubernetes.io/control-plane":"true""#));
    }
}

//! The stand-in runtime against the Kubernetes API test double, on the
//! host: what the API records for each behavior, and kubelet's healthz.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ember_tests::kubeapi::{ready_condition, KubeApi};
use ember_tests::overlay::{HostStandin, OverlayBuilder};
use ember_tests::process::free_port;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

fn healthz_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// GET /healthz on the stand-in: (status code, body), or None if nothing
/// answers yet.
fn healthz(addr: SocketAddr) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let code = raw.get(9..12)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

fn start(builder: OverlayBuilder) -> (ember_tests::overlay::Overlay, HostStandin) {
    let overlay = builder.build().expect("assemble overlay");
    let standin = overlay.start_on_host().expect("start stand-in");
    (overlay, standin)
}

fn condition<'a>(node: &'a Value, kind: &str) -> &'a Value {
    node["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

#[test]
fn ready_standin_registers_a_ready_node_heartbeats_and_healthz_says_ok() {
    let api = KubeApi::start().unwrap();
    let hz = healthz_addr();
    let (_overlay, standin) = start(
        OverlayBuilder::new("ember-ready-1")
            .kube_api(&api, false)
            .healthz(hz)
            .set("standin_heartbeat", "1"),
    );
    let node = api
        .wait_for_node("ember-ready-1", WAIT, |n| ready_condition(n) == Some(true))
        .unwrap_or_else(|| {
            panic!(
                "node never became Ready; output:\n{}",
                standin.output().join("\n")
            )
        });

    assert_eq!(node["kind"], "Node");
    assert_eq!(node["apiVersion"], "v1");
    assert_eq!(
        node["metadata"]["labels"]["kubernetes.io/hostname"],
        "ember-ready-1"
    );
    assert!(
        node["metadata"]["uid"].is_string() && node["metadata"]["creationTimestamp"].is_string()
    );
    let ready = condition(&node, "Ready");
    assert_eq!(ready["status"], "True");
    assert_eq!(ready["reason"], "KubeletReady");
    for kind in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert_eq!(condition(&node, kind)["status"], "False", "{kind}");
    }
    let info = &node["status"]["nodeInfo"];
    assert_eq!(info["operatingSystem"], "linux");
    assert_eq!(info["architecture"], "amd64");
    assert!(info["kubeletVersion"].as_str().unwrap().starts_with("v1."));
    assert!(!info["kernelVersion"].as_str().unwrap().is_empty());
    let addresses = node["status"]["addresses"].as_array().unwrap();
    assert!(
        addresses.contains(&json!({"type": "InternalIP", "address": "127.0.0.1"})),
        "{addresses:?}"
    );

    let first = &api.requests()[0];
    assert_eq!(
        (first.method.as_str(), first.path.as_str(), first.status),
        ("POST", "/api/v1/nodes", 201)
    );
    assert!(first.authorized);
    assert_eq!(first.content_type.as_deref(), Some("application/json"));
    assert!(first
        .user_agent
        .as_deref()
        .unwrap_or("")
        .starts_with("ember-standin/"));
    assert!(standin
        .wait_for_line("standin: registered node ember-ready-1", WAIT)
        .is_some());
    assert!(standin
        .wait_for_line("standin: node ember-ready-1 is Ready", WAIT)
        .is_some());

    assert_eq!(healthz(hz), Some((200, "ok".to_string())));

    // Heartbeats: status PATCHes that move lastHeartbeatTime but not the
    // transition time.
    let beat = ready["lastHeartbeatTime"].clone();
    let later = api
        .wait_for_node("ember-ready-1", WAIT, |n| {
            condition(n, "Ready")["lastHeartbeatTime"] != beat
        })
        .expect("a heartbeat moves lastHeartbeatTime");
    assert_eq!(
        condition(&later, "Ready")["lastTransitionTime"],
        ready["lastTransitionTime"]
    );
    assert!(api.requests().iter().any(|r| r.method == "PATCH"
        && r.path == "/api/v1/nodes/ember-ready-1/status"
        && r.status == 200
        && r.content_type.as_deref() == Some("application/merge-patch+json")));
    // Every request carried the token.
    assert!(api.requests().iter().all(|r| r.authorized));
}

#[test]
fn failing_standin_registers_a_not_ready_node_and_healthz_fails() {
    let api = KubeApi::start().unwrap();
    let hz = healthz_addr();
    let (_overlay, standin) = start(
        OverlayBuilder::new("ember-fail-1")
            .kube_api(&api, false)
            .behavior("fail")
            .healthz(hz),
    );
    let node = api
        .wait_for_node("ember-fail-1", WAIT, |_| true)
        .unwrap_or_else(|| {
            panic!(
                "node never registered; output:\n{}",
                standin.output().join("\n")
            )
        });
    let ready = condition(&node, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "KubeletNotReady");
    assert!(ready["message"]
        .as_str()
        .unwrap()
        .contains("standin_behavior = fail"));
    assert!(standin
        .wait_for_line("standin: node ember-fail-1 is NotReady", WAIT)
        .is_some());
    let (code, body) = healthz(hz).expect("healthz answers");
    assert_eq!(code, 500, "{body}");
    // Still running: a runtime that never gets ready, not one that exits.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(api.node_ready("ember-fail-1"), Some(false));
}

#[test]
fn hanging_standin_never_registers_and_keeps_running() {
    let api = KubeApi::start().unwrap();
    let hz = healthz_addr();
    let (_overlay, mut standin) = start(
        OverlayBuilder::new("ember-hang-1")
            .kube_api(&api, false)
            .behavior("hang")
            .healthz(hz),
    );
    assert!(standin
        .wait_for_line(
            "standin: behavior hang: node ember-hang-1 will never register",
            WAIT
        )
        .is_some());
    std::thread::sleep(Duration::from_secs(2));
    assert!(standin.try_wait().is_none(), "hang must not exit");
    assert!(api.requests().is_empty(), "{:?}", api.requests());
    assert!(api.nodes().is_empty());
    assert_eq!(healthz(hz).map(|(c, _)| c), Some(500));
}

#[test]
fn exiting_standin_exits_with_its_status_after_the_delay_without_registering() {
    let api = KubeApi::start().unwrap();
    let (_overlay, mut standin) = start(
        OverlayBuilder::new("ember-exit-1")
            .kube_api(&api, false)
            .behavior("exit")
            .healthz(healthz_addr())
            .set("standin_exit_after", "1")
            .set("standin_exit_code", "3"),
    );
    let started = Instant::now();
    let status = standin.wait_exit(WAIT).expect("stand-in exits");
    assert_eq!(status.code(), Some(3), "{}", standin.output().join("\n"));
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(standin
        .output()
        .iter()
        .any(|l| l == "standin: exiting with status 3 as configured"));
    assert!(api.requests().is_empty());
}

#[test]
fn node_left_by_an_earlier_boot_gets_its_status_updated() {
    let api = KubeApi::start().unwrap();
    api.insert_node(json!({
        "kind": "Node", "apiVersion": "v1",
        "metadata": {"name": "ember-again-1", "labels": {"kept": "yes"}},
        "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady"}]}
    }));
    let (_overlay, standin) = start(
        OverlayBuilder::new("ember-again-1")
            .kube_api(&api, false)
            .role("server")
            .healthz(healthz_addr()),
    );
    let node = api
        .wait_for_node("ember-again-1", WAIT, |n| ready_condition(n) == Some(true))
        .unwrap_or_else(|| {
            panic!(
                "node never became Ready; output:\n{}",
                standin.output().join("\n")
            )
        });
    // Status replaced, object (labels) kept: the PATCH went to /status.
    assert_eq!(node["metadata"]["labels"]["kept"], "yes");
    let calls: Vec<(String, String, u16)> = api
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path, r.status))
        .collect();
    assert_eq!(
        calls[..2],
        [
            ("POST".into(), "/api/v1/nodes".into(), 409),
            (
                "PATCH".into(),
                "/api/v1/nodes/ember-again-1/status".into(),
                200
            )
        ]
    );
    assert!(standin
        .wait_for_line("already existed; status updated", WAIT)
        .is_some());
}

#[test]
fn server_role_registers_a_control_plane_node() {
    let api = KubeApi::start().unwrap();
    let (_overlay, standin) = start(
        OverlayBuilder::new("ember-cp-1")
            .kube_api(&api, false)
            .role("server")
            .healthz(healthz_addr()),
    );
    let node = api
        .wait_for_node("ember-cp-1", WAIT, |_| true)
        .unwrap_or_else(|| panic!("no node; output:\n{}", standin.output().join("\n")));
    assert_eq!(
        node["metadata"]["labels"]["node-role.kubernetes.io/control-plane"],
        "true"
    );
    assert!(standin.output()[0].contains("playing rke2 server"));
}

#[test]
fn wrong_token_is_refused_with_401_and_the_standin_retries() {
    let api = KubeApi::start().unwrap();
    let wrong = ember_tests::ScratchDir::new("wrong-token");
    let token = wrong.path().join("token");
    std::fs::write(&token, "not-the-token\n").unwrap();
    let (_overlay, standin) = start(
        OverlayBuilder::new("ember-badtoken-1")
            .api(
                &api.url(),
                ember_tests::kubeapi::TLS_NAME,
                &api.ca_pem_path(),
                &token,
            )
            .healthz(healthz_addr()),
    );
    assert!(
        standin.wait_for_line("retrying in 2 s", WAIT).is_some(),
        "{}",
        standin.output().join("\n")
    );
    let reqs = api.requests();
    assert!(
        reqs.len() >= 2 && reqs.iter().all(|r| r.status == 401 && !r.authorized),
        "{reqs:?}"
    );
    assert!(standin
        .output()
        .iter()
        .any(|l| l.contains("POST answered 401") && l.contains("\"reason\":\"Unauthorized\"")));
    assert!(api.nodes().is_empty());
}

#[test]
fn api_with_a_certificate_from_another_ca_is_refused() {
    let api = KubeApi::start().unwrap();
    let other = KubeApi::start().unwrap();
    let (_overlay, standin) = start(
        OverlayBuilder::new("ember-badca-1")
            .api(
                &api.url(),
                ember_tests::kubeapi::TLS_NAME,
                &other.ca_pem_path(),
                &api.token_path(),
            )
            .healthz(healthz_addr()),
    );
    let line = standin
        .wait_for_line("registering node ember-badca-1 failed", WAIT)
        .expect("a failure line");
    assert!(
        line.contains("TLS") && line.contains("certificate"),
        "{line}"
    );
    assert!(api.requests().is_empty());
}

#[test]
fn api_double_answers_with_kubernetes_status_objects() {
    let api = KubeApi::start().unwrap();
    let token = Some(api.token());
    let (code, body) = api
        .request("GET", "/api/v1/nodes/nope", token, None)
        .unwrap();
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(code, 404);
    assert_eq!(
        (
            status["kind"].as_str(),
            status["status"].as_str(),
            status["reason"].as_str(),
            status["code"].as_u64()
        ),
        (Some("Status"), Some("Failure"), Some("NotFound"), Some(404))
    );
    assert_eq!(status["details"]["name"], "nope");

    let (code, body) = api.request("GET", "/api/v1/nodes", None, None).unwrap();
    assert_eq!(code, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["reason"],
        "Unauthorized"
    );

    let node = json!({"kind": "Node", "apiVersion": "v1", "metadata": {"name": "n1"}});
    let (code, body) = api
        .request(
            "POST",
            "/api/v1/nodes",
            token,
            Some(("application/json", node.to_string().as_bytes())),
        )
        .unwrap();
    assert_eq!(code, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(created["metadata"]["name"], "n1");
    let (code, _) = api
        .request(
            "POST",
            "/api/v1/nodes",
            token,
            Some(("application/json", node.to_string().as_bytes())),
        )
        .unwrap();
    assert_eq!(code, 409);

    let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    let (code, _) = api
        .request(
            "PATCH",
            "/api/v1/nodes/n1/status",
            token,
            Some((
                "application/strategic-merge-patch+json",
                patch.to_string().as_bytes(),
            )),
        )
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(api.node_ready("n1"), Some(true));
    let (code, body) = api.request("GET", "/api/v1/nodes/n1", token, None).unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        ready_condition(&serde_json::from_str(&body).unwrap()),
        Some(true)
    );

    let (code, _) = api
        .request(
            "PATCH",
            "/api/v1/nodes/n1",
            token,
            Some(("application/json-patch+json", b"[]")),
        )
        .unwrap();
    assert_eq!(code, 415);
    let (code, body) = api.request("GET", "/api/v1/nodes", token, None).unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (code, _) = api
        .request("DELETE", "/api/v1/nodes/n1", token, None)
        .unwrap();
    assert_eq!(code, 200);
    assert!(api.nodes().is_empty());
    assert_eq!(
        api.request("GET", "/readyz", None, None).unwrap(),
        (200, "ok".to_string())
    );
}

//! A real container started by the stand-in with Debian's runc from the
//! overlay (binary, ELF interpreter and libraries as the script carries
//! them) on the busybox bundle, on the host as root.

use std::time::Duration;

use ember_tests::kubeapi::{ready_condition, KubeApi};
use ember_tests::overlay::OverlayBuilder;
use ember_tests::process::free_port;

const WAIT: Duration = Duration::from_secs(60);

fn healthz() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], free_port()))
}

#[test]
fn standin_runs_the_busybox_container_with_runc_and_then_registers_ready() {
    let api = KubeApi::start().unwrap();
    let overlay = OverlayBuilder::new("ember-ctr-1")
        .kube_api(&api, false)
        .healthz(healthz())
        .container(true)
        .build()
        .unwrap();
    // Everything runc needs is in the overlay, at the paths the binary names.
    for p in [
        "usr/sbin/runc",
        "lib64/ld-linux-x86-64.so.2",
        "var/lib/standin/bundle/config.json",
        "var/lib/standin/bundle/rootfs/bin/busybox",
    ] {
        assert!(
            overlay.path().join(p).is_file(),
            "{p} missing from the overlay"
        );
    }
    let standin = overlay.start_on_host().unwrap();
    let node = api
        .wait_for_node("ember-ctr-1", WAIT, |_| true)
        .unwrap_or_else(|| panic!("no node; output:\n{}", standin.output().join("\n")));
    let out = standin.output();
    assert!(
        out.iter()
            .any(|l| l == "standin: container stdout: ember-container-ok"),
        "{}",
        out.join("\n")
    );
    assert!(
        out.iter()
            .any(|l| l.starts_with("standin: container standin-")
                && l.ends_with("exited: exit status: 0")),
        "{}",
        out.join("\n")
    );
    // The container ran before the node reported Ready, and the node names
    // runc as its runtime.
    let ran = out
        .iter()
        .position(|l| l.contains("ember-container-ok"))
        .unwrap();
    let registered = out
        .iter()
        .position(|l| l.contains("registered node"))
        .unwrap();
    assert!(ran < registered);
    assert_eq!(ready_condition(&node), Some(true));
    let runtime = node["status"]["nodeInfo"]["containerRuntimeVersion"]
        .as_str()
        .unwrap();
    assert!(runtime.starts_with("runc://1."), "{runtime}");
}

#[test]
fn container_that_fails_leaves_the_node_not_ready() {
    let api = KubeApi::start().unwrap();
    let overlay = OverlayBuilder::new("ember-ctr-bad-1")
        .kube_api(&api, false)
        .healthz(healthz())
        .container(true)
        .build()
        .unwrap();
    let config = overlay.path().join("var/lib/standin/bundle/config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    let broken = text.replace(
        r#""/bin/busybox", "echo", "ember-container-ok""#,
        r#""/bin/busybox", "false""#,
    );
    assert_ne!(text, broken);
    std::fs::write(&config, broken).unwrap();

    let standin = overlay.start_on_host().unwrap();
    let node = api
        .wait_for_node("ember-ctr-bad-1", WAIT, |_| true)
        .unwrap_or_else(|| panic!("no node; output:\n{}", standin.output().join("\n")));
    assert_eq!(ready_condition(&node), Some(false));
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("container runtime is down"),
        "{ready}"
    );
    assert!(standin
        .wait_for_line("exited: exit status: 1", WAIT)
        .is_some());
}

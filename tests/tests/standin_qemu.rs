//! The stand-in overlay in a VM before the real /init drives it: a
//! busybox-static init moves the initrd into a fresh tmpfs root (as Ember's
//! init does, so runc's pivot_root works), brings up QEMU user networking
//! and starts `/usr/local/bin/rke2 agent` from the overlay. The node must
//! reach the host's Kubernetes API double at 10.0.2.2 over HTTPS (the DNS
//! name in the certificate), run the busybox container with the overlay's
//! runc, register Ready and answer kubelet's healthz inside the VM.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ember_tests::kubeapi::{ready_condition, KubeApi};
use ember_tests::overlay::OverlayBuilder;
use ember_tests::qemu::{kernel_release, Boot};
use ember_tests::{workspace_root, ScratchDir};

/// Stage 1: everything in the initrd moves to a tmpfs, which becomes `/`.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /newroot
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t tmpfs -o mode=0755 tmpfs /newroot
for e in /*; do
  case "$e" in /proc|/newroot) ;; *) /bin/busybox cp -a "$e" /newroot/ ;; esac
done
/bin/busybox umount /proc
exec /bin/busybox switch_root /newroot /stage2
"#;

/// Stage 2: the mounts and network Ember's init provides, then the runtime.
const STAGE2: &str = r#"#!/bin/busybox sh
bb=/bin/busybox
$bb mkdir -p /proc /sys /dev /run /tmp
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
$bb mount -t cgroup2 cgroup2 /sys/fs/cgroup
$bb mount -t tmpfs -o mode=0755 tmpfs /run
$bb mount -t tmpfs tmpfs /tmp
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net; do
  $bb insmod /modules/$m.ko || echo "smoke: insmod $m failed"
done
$bb ip link set lo up
for i in $($bb seq 1 50); do [ -e /sys/class/net/eth0 ] && break; $bb sleep 0.1; done
$bb ip link set eth0 up
$bb ip addr add 10.0.2.15/24 dev eth0
$bb ip route add default via 10.0.2.2
if $bb grep -q ' / rootfs ' /proc/mounts; then echo "smoke: root is still rootfs"; fi
echo "smoke: starting runtime"
/usr/local/bin/rke2 agent &
for i in $($bb seq 1 240); do
  if [ "$($bb wget -q -O - http://127.0.0.1:10248/healthz 2>/dev/null)" = ok ]; then
    echo "smoke: healthz ok"
    break
  fi
  $bb sleep 0.5
done
$bb sleep 1
$bb poweroff -f
"#;

const MODULES: [&str; 8] = [
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
];

fn write_exec(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn sh(cmd: &str) {
    let st = Command::new("sh").args(["-c", cmd]).status().unwrap();
    assert!(st.success(), "{cmd}");
}

#[test]
fn standin_in_a_vm_runs_a_container_and_registers_ready_through_user_networking() {
    let api = KubeApi::start().unwrap();
    let overlay = OverlayBuilder::new("ember-vm-1")
        .kube_api(&api, true)
        .container(true)
        .build()
        .unwrap();

    let scratch = ScratchDir::new("standin-vm");
    let stage = scratch.path().join("stage");
    std::fs::create_dir_all(stage.join("bin")).unwrap();
    std::fs::create_dir_all(stage.join("modules")).unwrap();
    sh(&format!(
        "cp -a {}/. {}/",
        overlay.path().display(),
        stage.display()
    ));
    std::fs::copy("/bin/busybox", stage.join("bin/busybox")).unwrap();
    write_exec(&stage.join("init"), INIT);
    write_exec(&stage.join("stage2"), STAGE2);
    let release = kernel_release();
    let kmods = workspace_root()
        .join(".cache/kernel/root/lib/modules")
        .join(&release)
        .join("kernel");
    for m in MODULES {
        let name = Path::new(m).file_name().unwrap();
        std::fs::copy(kmods.join(m), stage.join("modules").join(name)).unwrap();
    }
    let initrd = scratch.path().join("initrd.cpio");
    sh(&format!(
        "cd {} && find . | cpio -o -H newc --quiet > {}",
        stage.display(),
        initrd.display()
    ));

    let log = scratch.path().join("serial.log");
    let mut boot = Boot::new(&initrd, "quiet", &log);
    boot.timeout = Duration::from_secs(240);
    let outcome = boot.run();
    let serial = &outcome.log;
    assert!(
        outcome.powered_off(),
        "VM did not power off: {:?}\n{serial}",
        outcome.exit_code
    );
    assert!(!serial.contains("smoke: root is still rootfs"), "{serial}");
    assert!(serial.contains("standin: ember-standin"), "{serial}");
    assert!(
        serial.contains("standin: container stdout: ember-container-ok"),
        "{serial}"
    );
    assert!(serial.contains("exited: exit status: 0"), "{serial}");
    assert!(
        serial.contains("standin: node ember-vm-1 is Ready"),
        "{serial}"
    );
    assert!(serial.contains("smoke: healthz ok"), "{serial}");

    let node = api
        .node("ember-vm-1")
        .expect("node registered on the API double");
    assert_eq!(ready_condition(&node), Some(true));
    let info = &node["status"]["nodeInfo"];
    assert_eq!(info["kernelVersion"], release.as_str());
    assert!(info["containerRuntimeVersion"]
        .as_str()
        .unwrap()
        .starts_with("runc://"));
    let addresses = node["status"]["addresses"].to_string();
    assert!(addresses.contains("10.0.2.15"), "{addresses}");
    let post = &api.requests()[0];
    assert!(post.authorized && post.status == 201, "{post:?}");
}

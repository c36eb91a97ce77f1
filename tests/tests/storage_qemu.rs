//! Minimal mutability and node storage in QEMU: a node boots with a second,
//! blank virtual disk and `scratch_disk = first-empty`. The overlay's
//! runtime is a busybox script that checks, from inside the node, what the
//! init promised and then execs the stand-in: writes outside the writable
//! paths fail with EROFS, every writable path takes a write, a 1 MiB
//! writable path stops at 1 MiB, the runtime's data path is the scratch
//! disk and is empty, sysctls are set and the runtime inherited no
//! descriptor of the init. The node then reboots (a second boot on the
//! same disks) and the scratch disk is empty again.

use std::path::Path;

use ember_tests::lab::{ember_lines, run_until, tail, Lab};

/// The writable paths the check writes to: the init's defaults, plus the
/// small one this test adds.
const WRITABLE: &[&str] = &[
    "/run",
    "/tmp",
    "/root",
    "/etc/rancher",
    "/etc/cni",
    "/opt/cni",
    "/var",
    "/var/lib/rancher",
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/var/log",
    "/srv/small",
];

const CHECK: &str = r#"#!/usr/local/bin/busybox sh
# Issue 8's promises, checked from inside the node; then the real runtime.
bb=/usr/local/bin/busybox
say() { echo "storage-check: $*"; }
for d in / /usr /etc /lib /boot /usr/local/bin; do
  if err=$($bb touch "$d/.ember-probe" 2>&1); then
    say "FAIL $d is writable"; $bb rm -f "$d/.ember-probe"
  else
    case "$err" in
      *"Read-only file system"*) say "ok $d read-only" ;;
      *) say "FAIL $d: $err" ;;
    esac
  fi
done
for d in @WRITABLE@; do
  if $bb touch "$d/.ember-probe" && $bb rm "$d/.ember-probe"; then
    say "ok $d writable"
  else
    say "FAIL $d not writable"
  fi
done
if $bb dd if=/dev/zero of=/srv/small/fill bs=64k count=64 2>/tmp/dd.err; then
  say "FAIL /srv/small took 4 MiB"
else
  size=$($bb stat -c %s /srv/small/fill)
  case "$($bb cat /tmp/dd.err)" in
    *"No space left"*) say "ok /srv/small full at $size bytes" ;;
    *) say "FAIL dd: $($bb cat /tmp/dd.err)" ;;
  esac
fi
$bb rm -f /srv/small/fill
say "mount $($bb grep ' /var/lib/rancher ' /proc/mounts)"
if [ -e /var/lib/rancher/ember-marker ]; then say "scratch not empty"; else say "scratch empty"; fi
echo "written by the previous boot" > /var/lib/rancher/ember-marker
$bb sync
say "sysctl ip_forward=$($bb cat /proc/sys/net/ipv4/ip_forward) kptr_restrict=$($bb cat /proc/sys/kernel/kptr_restrict) max_map_count=$($bb cat /proc/sys/vm/max_map_count)"
fds=""
for fd in /proc/$$/fd/*; do fds="$fds $($bb basename $fd)=$($bb readlink $fd)"; done
say "fds$fds"
say "resolv $($bb readlink /etc/resolv.conf)"
say "done"
exec "$@"
"#;

fn publish_with_check(lab: &Lab) {
    let o = ember_tests::lab::overlay(
        &lab.api,
        "ready",
        &[
            (
                "runtime",
                "/usr/local/bin/storage-check /usr/local/bin/rke2 agent",
            ),
            ("scratch_disk", "first-empty"),
            ("writable_extra", "/srv/small:1m"),
            ("sysctl.vm.max_map_count", "262144"),
        ],
    );
    let bin = o.path().join("usr/local/bin");
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copy busybox-static");
    let script = CHECK.replace("@WRITABLE@", &WRITABLE.join(" "));
    write_exec(&bin.join("storage-check"), &script);
    let version = lab.server().add_overlay(o.path(), None);
    lab.server()
        .assign(version, "group:lab")
        .expect_ok("assign");
}

fn write_exec(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write the check script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Boots the lab's node with `scratch` as a second disk until it is Ready;
/// returns the console log.
fn boot_with_scratch(lab: &Lab, name: &str, scratch: &Path) -> String {
    let mut boot = lab.boot(name, false);
    boot.disks.push(scratch.to_path_buf());
    assert_eq!(
        boot.disks.len() - 1,
        SCRATCH_INDEX,
        "the lab's disks moved: the scratch disk is no longer {SCRATCH_DEV}"
    );
    run_until(lab, name, boot, "phase=ready status=ok")
}

/// The scratch disk is the third virtio disk: the lab's UKI disk (what
/// OVMF boots) and the node's ESP disk come first.
const SCRATCH_INDEX: usize = 2;
const SCRATCH_DEV: &str = "/dev/vdc";

fn check_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter_map(|l| l.split_once("storage-check: ").map(|(_, r)| r.trim_end()))
        .collect()
}

fn assert_promises_hold(name: &str, log: &str) {
    let lines = check_lines(log);
    let all = lines.join("\n");
    assert!(
        lines.contains(&"done"),
        "{name}: the check did not finish:\n{all}\n{}",
        tail(log, 60)
    );
    assert!(!all.contains("FAIL"), "{name}: a promise failed:\n{all}");
    for d in ["/", "/usr", "/etc", "/lib", "/boot", "/usr/local/bin"] {
        assert!(
            lines.contains(&format!("ok {d} read-only").as_str()),
            "{name}: {d}:\n{all}"
        );
    }
    for d in WRITABLE {
        assert!(
            lines.contains(&format!("ok {d} writable").as_str()),
            "{name}: {d}:\n{all}"
        );
    }
    let full = lines
        .iter()
        .find_map(|l| l.strip_prefix("ok /srv/small full at "))
        .unwrap_or_else(|| panic!("{name}: no size-limit line:\n{all}"));
    let bytes: u64 = full.trim_end_matches(" bytes").parse().expect("byte count");
    assert!(
        bytes <= 1024 * 1024,
        "{name}: a 1 MiB writable path took {bytes} bytes"
    );
    let mount = lines
        .iter()
        .find(|l| l.starts_with("mount "))
        .unwrap_or_else(|| panic!("{name}: no mount line:\n{all}"));
    assert!(
        mount.starts_with(&format!("mount {SCRATCH_DEV} /var/lib/rancher ext4 ")),
        "{name}: the runtime's data path is not on the scratch disk: {mount}"
    );
    assert!(
        lines.contains(&"scratch empty"),
        "{name}: scratch disk not empty:\n{all}"
    );
    assert!(
        lines.contains(&"sysctl ip_forward=1 kptr_restrict=1 max_map_count=262144"),
        "{name}: sysctls:\n{all}"
    );
    let fds = lines
        .iter()
        .find(|l| l.starts_with("fds"))
        .unwrap_or_else(|| panic!("{name}: no fd line:\n{all}"));
    for leaked in ["socket:", "anon_inode:", "/dev/tpm", "/boot/", "/run/ember"] {
        assert!(
            !fds.contains(leaked),
            "{name}: the runtime inherited an init descriptor ({leaked}): {fds}"
        );
    }
    assert!(
        lines.contains(&"resolv /run/ember/resolv.conf"),
        "{name}: resolv.conf is not renewable under a read-only /etc:\n{all}"
    );
    let init = ember_lines(log);
    assert!(
        init.contains(&format!(
            "storage: scratch disk {SCRATCH_DEV} wiped and formatted"
        )),
        "{name}:\n{init}"
    );
    assert!(init.contains("storage: / is read-only"), "{name}:\n{init}");
}

#[test]
fn read_only_root_writable_paths_size_limits_and_an_ephemeral_scratch_disk() {
    let lab = Lab::new("storage");
    publish_with_check(&lab);
    let scratch = lab.dir.path().join("scratch.img");
    let f = std::fs::File::create(&scratch).expect("create the scratch disk");
    f.set_len(256 << 20).expect("size the scratch disk");
    drop(f);

    let first = boot_with_scratch(&lab, "storage-1", &scratch);
    assert_promises_hold("first boot", &first);

    // The first boot left a marker on the scratch disk; the next boot must
    // not see it.
    let second = boot_with_scratch(&lab, "storage-2", &scratch);
    assert_promises_hold("second boot", &second);
}

#[test]
fn a_configured_scratch_disk_that_is_missing_fails_the_boot_clearly() {
    let lab = Lab::new("storage-missing");
    lab.publish("ready", &[("scratch_disk", "partlabel:no-such-disk")]);
    let log = run_until(
        &lab,
        "storage-missing",
        lab.boot("storage-missing", false),
        "phase=storage status=failed",
    );
    let init = ember_lines(&log);
    assert!(
        init.contains("scratch disk partlabel:no-such-disk: no such disk or partition"),
        "{init}"
    );
    assert!(
        !init.contains("phase=runtime status=ok"),
        "the runtime started anyway:\n{init}"
    );
}

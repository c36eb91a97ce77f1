//! The whole boot in QEMU (TCG, OVMF, swtpm, a disk with a GPT and a FAT
//! ESP holding systemd-boot): `ember serve` on the host attests the VM's
//! TPM and serves a sealed overlay whose runtime is the stand-in, which
//! registers its Node on the Kubernetes API double. Nothing inside the VM
//! is faked but the runtime. Every assertion reads the serial log, the
//! server's records, the API double or the ESP.

use std::time::Duration;

use ember_tests::lab::{
    boot_until, ember_lines, esp_entries, run_until, save_timeline, tail, trust_files, Lab, NODE,
};
use ember_tests::qemu::{build_initrd_with, esp_tool, wait_for_log};
use ember_tests::server::EmberServer;

#[test]
fn network_boot_reaches_ready_writes_last_known_good_then_cold_start_boots_it() {
    let mut lab = Lab::new("e2e-net");
    lab.publish("ready", &[]);

    // 1. Network boot to Ready.
    let log = boot_until(&lab, "net-boot", false, "lkg: wrote slot a generation 1");
    let lines = ember_lines(&log);
    for phase in [
        "rootfs",
        "mounts",
        "modules",
        "measure",
        "dhcp",
        "attest",
        "overlay",
        "seal-boot-phase",
        "nodeconf",
        "runtime",
        "ready",
        "lkg",
    ] {
        assert!(
            lines.contains(&format!("phase={phase} status=ok")),
            "phase {phase} missing:\n{lines}"
        );
    }
    assert!(
        log.contains("standin: container output: ember-container-ok")
            || log.contains("ember-container-ok"),
        "the container did not run:\n{}",
        tail(&log, 80)
    );
    assert_eq!(
        lab.api.node_ready(NODE),
        Some(true),
        "the API double has no Ready node"
    );
    assert!(
        lines.contains("report: told the boot server Joined"),
        "{lines}"
    );
    let nodes = lab.server().nodes();
    assert!(
        nodes.contains(NODE) && nodes.to_lowercase().contains("joined"),
        "server records: {nodes}"
    );
    let entries = esp_entries(&lab.disk);
    assert!(entries.contains("ember-a+3.conf"), "ESP entries: {entries}");
    let slot = esp_tool(&lab.disk, "mdir", &["-b", "::/ember/a"]);
    for f in ["vmlinuz", "initrd.cpio", "overlay.sealed", "slot.rec"] {
        assert!(slot.contains(f), "ESP slot a lacks {f}: {slot}");
    }

    // 3. Cold start with the boot server gone: firmware → systemd-boot → slot a.
    lab.api.remove_node(NODE);
    lab.server = None;
    let log = boot_until(&lab, "cold-start", true, "lkg: slot a blessed");
    let lines = ember_lines(&log);
    assert!(lines.contains("boot server unreachable"), "{lines}");
    assert!(
        lines.contains("lkg: overlay 1 restored from slot a"),
        "{lines}"
    );
    assert!(lines.contains("phase=ready status=ok"), "{lines}");
    assert_eq!(lab.api.node_ready(NODE), Some(true));
    let entries = esp_entries(&lab.disk);
    assert!(
        entries.contains("ember-a.conf"),
        "slot a not blessed: {entries}"
    );
}

/// Failover: with the first listed boot server down (nothing listens on
/// port 9), the node passes it over and attests with the next one, and the
/// log says which answered.
#[test]
fn first_listed_boot_server_down_the_node_attests_with_the_next() {
    let lab = Lab::new("e2e-failover");
    lab.publish("ready", &[]);
    let live = lab.attest_url();
    let urls = format!("https://10.0.2.2:9,{live}");
    let boot = lab.boot_with("failover", false, &urls);
    let log = run_until(&lab, "failover", boot, "phase=overlay status=ok");
    let lines = ember_lines(&log);
    assert!(
        lines.contains("attest: https://10.0.2.2:9 round 1/3"),
        "the dead server was not tried first:\n{lines}"
    );
    assert!(
        lines.contains(&format!("from {live}")),
        "the log does not name the server that answered:\n{lines}"
    );
    assert!(!lines.contains("last-known-good"), "{lines}");
}

/// A man in the middle answering with a certificate from another CA does
/// not get the node onto its cached overlay: the boot fails in `attest`
/// with the certificate error, and last-known-good is not tried.
#[test]
fn boot_server_with_a_wrong_certificate_fails_the_boot_without_lkg_fallback() {
    let lab = Lab::new("e2e-mitm");
    lab.publish("ready", &[]);
    boot_until(&lab, "good", false, "lkg: wrote slot a generation 1");
    // Another `ember serve`, with its own CA, where the node expects its server.
    let impostor = EmberServer::start_with(&["--name", "10.0.2.2", "--name", "127.0.0.1"]);
    let url = format!("https://10.0.2.2:{}", impostor.port());
    let boot = lab.boot_with("mitm", false, &url);
    let log = run_until(&lab, "mitm", boot, "boot failed in phase attest");
    let lines = ember_lines(&log);
    assert!(
        lines.contains("certificate: not issued by the trusted CA"),
        "the refusal does not name the certificate:\n{lines}"
    );
    assert!(!lines.contains("lkg-restore"), "fell back to LKG:\n{lines}");
    assert!(!lines.contains("phase=overlay"), "{lines}");
}

/// The overlay sealed as LZ4 frames, or as a plain tar, reaches the node
/// like the gzip default: the signed manifest names the compression, the
/// node decodes that one, and the runtime the overlay carries starts.
#[test]
fn overlay_sealed_as_lz4_or_as_a_plain_tar_starts_its_runtime() {
    let lab = Lab::new("e2e-compress");
    let overlay = ember_tests::lab::overlay(&lab.api, "ready", &[]);
    let src = overlay.path().display().to_string();
    for compression in ["lz4", "none"] {
        let args = [
            "overlay",
            "add",
            &src,
            "--group",
            "lab",
            "--compress",
            compression,
        ];
        let added = lab
            .server()
            .ember(&args)
            .expect_ok("overlay add --compress");
        // "overlay V: SIZE bytes, sha256 HEX, sealed blob HEX (N bytes, COMPRESSION)"
        let words: Vec<&str> = added.stdout.split_whitespace().collect();
        assert!(
            added.stdout.contains(&format!(" bytes, {compression})")),
            "{}",
            added.stdout
        );
        let plain_size = words[2];
        let sha256 = words[5].trim_end_matches(',');
        let stored = std::fs::read(lab.server().state().join("blobs").join(sha256))
            .expect("the stored plaintext blob");
        assert_eq!(plain_size, stored.len().to_string());
        assert_eq!(
            ember_proto::manifest::Compression::sniff(&stored).name(),
            compression
        );
        let name = format!("compress-{compression}");
        let log = boot_until(&lab, &name, false, "phase=runtime status=ok");
        let lines = ember_lines(&log);
        // The node opened exactly that plaintext, then ran what it carries.
        assert!(
            lines.contains(&format!("overlay_plain_bytes={plain_size} ")),
            "{compression}: the node did not open the {plain_size} stored bytes:\n{lines}"
        );
        assert!(
            lines.contains("phase=overlay status=ok"),
            "{compression}: {lines}"
        );
    }
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

#[test]
fn bad_configuration_reboots_and_reports_until_a_good_overlay_is_assigned() {
    let lab = Lab::new("e2e-loop");
    // The runtime never registers: not Ready within 25 s, every boot.
    lab.publish("hang", &[("ready_timeout", "25")]);
    let mut boot = lab.boot("loop", false);
    boot.allow_reboot = true;
    boot.timeout = Duration::from_secs(900);
    let log_path = lab.log_path("loop");
    let mut guard = boot.start();
    let reported_twice = ember_tests::process::wait_until(Duration::from_secs(420), || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        count(&log, "report: told the boot server Failed") >= 2
            && count(&log, "Ember init 0.1.0 starting as pid 1") >= 3
    });
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    save_timeline(&lab, "loop");
    assert!(
        reported_twice,
        "no reboot loop with failure reports:\n{}",
        ember_lines(&log)
    );
    assert!(
        ember_lines(&log).contains(
            "boot failed in phase ready: runtime: not Ready within 25 s; rebooting in 2 s"
        ),
        "{}",
        ember_lines(&log)
    );
    let nodes = lab.server().nodes();
    assert!(
        nodes.to_lowercase().contains("failed"),
        "the server did not record the failures: {nodes}"
    );

    // The operator assigns a good overlay; the loop's next boot joins.
    lab.publish("ready", &[]);
    let (joined, log) = wait_for_log(
        &log_path,
        &mut guard,
        "lkg: wrote slot a generation 1",
        Duration::from_secs(420),
    );
    save_timeline(&lab, "loop");
    assert!(
        joined,
        "the node never joined after a good overlay was assigned:\n{}",
        ember_lines(&log)
    );
    assert!(
        ember_lines(&log).contains("overlay: version 2"),
        "{}",
        ember_lines(&log)
    );
    drop(guard);
    assert_eq!(lab.api.node_ready(NODE), Some(true));
}

#[test]
fn tampered_cached_overlay_or_changed_initrd_yields_no_plaintext_and_a_clear_error() {
    let mut lab = Lab::new("e2e-tamper");
    lab.publish("ready", &[]);
    boot_until(&lab, "tamper-net", false, "lkg: wrote slot a generation 1");
    lab.server = None;
    lab.api.remove_node(NODE);

    // A flipped byte in the first sealed chunk: nothing authenticates.
    let sealed = lab.dir.path().join("overlay.sealed");
    esp_tool(
        &lab.disk,
        "mcopy",
        &["-o", "::/ember/a/overlay.sealed", sealed.to_str().unwrap()],
    );
    let original = std::fs::read(&sealed).unwrap();
    let mut bad = original.clone();
    bad[200] ^= 0x40;
    std::fs::write(&sealed, &bad).unwrap();
    esp_tool(
        &lab.disk,
        "mcopy",
        &["-o", sealed.to_str().unwrap(), "::/ember/a/overlay.sealed"],
    );
    let log = boot_until(
        &lab,
        "tamper-overlay",
        true,
        "boot failed in phase lkg-restore",
    );
    let lines = ember_lines(&log);
    assert!(lines.contains("phase=lkg-restore status=failed"), "{lines}");
    assert!(
        lines.to_lowercase().contains("chunk"),
        "the error does not say the chunk failed authentication:\n{lines}"
    );
    assert!(
        !lines.contains("phase=nodeconf"),
        "the boot went on after a tampered overlay:\n{lines}"
    );

    // The original overlay, but another initrd: PCR 11 differs, the TPM refuses.
    std::fs::write(&sealed, &original).unwrap();
    esp_tool(
        &lab.disk,
        "mcopy",
        &["-o", sealed.to_str().unwrap(), "::/ember/a/overlay.sealed"],
    );
    let other = lab.dir.path().join("other-initrd.cpio.gz");
    let marker = lab.dir.path().join("marker");
    std::fs::write(&marker, "a different initrd\n").unwrap();
    let mut files = trust_files(lab.dir.path());
    files.push((marker.clone(), "/etc/ember/marker"));
    build_initrd_with(&other, &files, true);
    esp_tool(
        &lab.disk,
        "mcopy",
        &["-o", other.to_str().unwrap(), "::/ember/a/initrd.cpio"],
    );
    let log = boot_until(
        &lab,
        "tamper-initrd",
        true,
        "boot failed in phase lkg-restore",
    );
    let lines = ember_lines(&log);
    assert!(
        lines.contains("the boot chain (PCR 11) changed since it was sealed"),
        "{lines}"
    );
    assert!(lines.contains("TPM_RC_POLICY_FAIL"), "{lines}");
    assert!(!lines.contains("phase=nodeconf"), "{lines}");
}

#[test]
fn older_slot_brought_back_on_cold_start_is_refused_as_a_rollback() {
    let mut lab = Lab::new("e2e-rollback");
    lab.publish("ready", &[]); // manifest epoch 1
    boot_until(&lab, "rb-first", false, "lkg: wrote slot a generation 1");
    lab.publish("ready", &[]); // a new overlay version: manifest epoch 2
    boot_until(&lab, "rb-second", false, "lkg: wrote slot b generation 2");

    // An attacker with the disk points the loader back at slot a, whose
    // genuinely signed manifest is older than the epoch already blessed.
    let entries = esp_entries(&lab.disk);
    let newer = entries
        .split_whitespace()
        .find(|e| e.contains("ember-b"))
        .unwrap_or_else(|| panic!("no entry for slot b: {entries}"))
        .to_string();
    // `mdir -b` lists full paths (::/loader/entries/ember-b+3.conf).
    esp_tool(&lab.disk, "mdel", &[&newer]);
    lab.server = None;
    lab.api.remove_node(NODE);
    let log = boot_until(&lab, "rb-cold", true, "boot failed in phase lkg-restore");
    let lines = ember_lines(&log);
    assert!(
        lines.contains("epoch 1 is older than the blessed epoch 2"),
        "{lines}"
    );
    assert!(!lines.contains("phase=nodeconf"), "{lines}");
}

#[test]
fn power_cut_during_the_esp_write_leaves_the_previous_slot_bootable() {
    let mut lab = Lab::new("e2e-powercut");
    lab.publish("ready", &[]);
    boot_until(&lab, "first", false, "lkg: wrote slot a generation 1");

    // The second good boot writes slot b; the power goes as soon as its
    // kernel is on the ESP, while the initrd (16 MB) is being copied.
    let boot = lab.boot("second", false);
    let mut guard = boot.start();
    let (started, log) = wait_for_log(
        &lab.log_path("second"),
        &mut guard,
        "lkg: slot b: kernel written",
        Duration::from_secs(600),
    );
    drop(guard);
    save_timeline(&lab, "second");
    assert!(
        started,
        "the second boot never reached the lkg phase:\n{}",
        ember_lines(&log)
    );
    assert!(
        !log.contains("lkg: wrote slot b"),
        "the write finished before the power cut; the test proves nothing"
    );
    let slot_b = esp_tool(&lab.disk, "mdir", &["-b", "::/ember"]);
    assert!(
        slot_b.contains("::/ember/b"),
        "the power was cut before the write began: {slot_b}"
    );
    let entries = esp_entries(&lab.disk);
    assert!(
        entries.contains("ember-a+3.conf"),
        "slot a's entry is gone: {entries}"
    );
    assert!(
        !entries.contains("ember-b"),
        "a half-written slot b is bootable: {entries}"
    );

    // Cold start: systemd-boot finds slot a and the node comes back.
    lab.server = None;
    lab.api.remove_node(NODE);
    let log = boot_until(&lab, "after-cut", true, "lkg: slot a blessed");
    assert!(
        ember_lines(&log).contains("lkg: overlay 1 restored from slot a"),
        "{}",
        ember_lines(&log)
    );
    assert_eq!(lab.api.node_ready(NODE), Some(true));
}

/// Test 5: the firmware boots from the network. OVMF runs QEMU's iPXE EFI
/// ROM, QEMU's DHCP hands it the URL of an iPXE script published with
/// `ember artifact ipxe --uki`, and iPXE chains the lab's UKI from `ember
/// serve --http-listen` by SHA-256; systemd-stub measures it into PCR 11,
/// which the policy pins (PCR 4 holds iPXE's chain here, not the ESP
/// boot's that `ember policy predict` computes, so this policy leaves it
/// out). With the server gone, iPXE fails, the firmware goes on to the
/// disk, and systemd-boot boots last-known-good.
#[test]
fn firmware_network_boot_from_the_boot_server_falls_back_to_the_disk() {
    let mut lab = Lab::new("e2e-fwnet");
    lab.publish("ready", &[]);
    let server = lab.server();
    let cmdline = format!(
        "console=ttyS0 panic=-1 ember.attest_url=https://10.0.2.2:{} ember.error_delay=2",
        server.port()
    );
    let uki = lab.uki("fw-net", &lab.initrd, &cmdline);
    let uki = uki.display().to_string();
    server
        .set_policy(&["--group", "lab", "--uki", &uki])
        .expect_ok("policy set --uki");
    let published = server
        .ember(&["artifact", "ipxe", "--uki", &uki])
        .expect_ok("ember artifact ipxe");
    let path = published.stdout.trim().to_string();
    assert!(path.starts_with("/v1/boot/"), "{path}");
    let http = server.http_port().expect("--http-listen port");
    let url = format!("http://10.0.2.2:{http}{path}");

    // 1. Network boot by the firmware, to Ready and a last-known-good slot.
    let mut boot = lab.boot("fw-net", true);
    boot.netboot = Some(url.clone());
    let log = run_until(&lab, "fw-net", boot, "lkg: wrote slot a generation 1");
    assert!(
        log.contains("ember: iPXE chaining the UKI from the boot server"),
        "iPXE did not run the boot script:\n{}",
        tail(&log, 60)
    );
    let lines = ember_lines(&log);
    assert!(
        lines.contains("set by systemd-stub (unified kernel image)"),
        "{lines}"
    );
    for phase in ["dhcp", "attest", "overlay", "ready", "lkg"] {
        assert!(
            lines.contains(&format!("phase={phase} status=ok")),
            "phase {phase} missing:\n{lines}"
        );
    }
    let served = lab.server().log();
    assert!(
        served.matches("step=boot node=- outcome=ok").count() >= 2,
        "the server did not serve the script and the UKI:\n{served}"
    );
    let entries = esp_entries(&lab.disk);
    assert!(entries.contains("ember-a+3.conf"), "ESP entries: {entries}");
    let entry = esp_tool(&lab.disk, "mtype", &["::/loader/entries/ember-a+3.conf"]);
    assert!(
        entry.contains("options console=ttyS0") && !entry.contains("uki.efi"),
        "the loader entry carries iPXE's additions: {entry}"
    );

    // 2. The boot server is down: the firmware falls back to the disk.
    lab.api.remove_node(NODE);
    lab.server = None;
    let mut boot = lab.boot("fw-fallback", true);
    boot.netboot = Some(url);
    let log = run_until(&lab, "fw-fallback", boot, "lkg: slot a blessed");
    let lines = ember_lines(&log);
    assert!(
        !log.contains("ember: iPXE chaining the UKI"),
        "iPXE booted without a server?\n{}",
        tail(&log, 60)
    );
    assert!(
        lines.contains("lkg: overlay 1 restored from slot a"),
        "{lines}"
    );
    assert!(lines.contains("phase=ready status=ok"), "{lines}");
    assert_eq!(lab.api.node_ready(NODE), Some(true));
}

//! The whole boot in QEMU (TCG, OVMF, swtpm, a disk with a GPT and a FAT
//! ESP holding systemd-boot): `ember serve` on the host attests the VM's
//! TPM and serves a sealed overlay whose runtime is the stand-in, which
//! registers its Node on the Kubernetes API double. Nothing inside the VM
//! is faked but the runtime. Every assertion reads the serial log, the
//! server's records, the API double or the ESP.

use std::time::Duration;

use ember_proto::manifest::{key_commitment, PublicKey, SigningSecret};
use ember_proto::slot::{SealedKey, SlotRecord};
use ember_tests::lab::{
    boot_until, ember_lines, esp_entries, run_until, save_timeline, tail, trust_files, Lab, NODE,
};
use ember_tests::qemu::{build_initrd_with, esp_tool, wait_for_log, Boot};
use ember_tests::server::EmberServer;
use ember_tests::swtpm::Swtpm;
use ember_tpm::{counter, HashAlg, PcrSelection, PolicyDigest, SocketTransport, Tpm};
use sha2::{Digest, Sha256};

#[test]
fn network_boot_reaches_ready_writes_last_known_good_then_cold_start_boots_it() {
    let lab = Lab::new("e2e-net");
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
    assert!(
        lines.contains("lkg: slot a: fetching the boot image"),
        "{lines}"
    );
    let entries = esp_entries(&lab.disk);
    assert!(entries.contains("ember-a+3.conf"), "ESP entries: {entries}");
    let entry = esp_tool(&lab.disk, "mtype", &["::/loader/entries/ember-a+3.conf"]);
    assert!(
        entry.contains("\nefi /ember/a/ember.efi\n") && entry.contains(" ember.slot=a"),
        "the loader entry does not boot the slot's UKI: {entry}"
    );
    let slot = esp_tool(&lab.disk, "mdir", &["-b", "::/ember/a"]);
    for f in ["ember.efi", "overlay.sealed", "slot.rec"] {
        assert!(slot.contains(f), "ESP slot a lacks {f}: {slot}");
    }
    for f in ["vmlinuz", "initrd.cpio", ".tmp"] {
        assert!(!slot.contains(f), "ESP slot a holds {f}: {slot}");
    }
    // The slot is byte for byte the UKI the node booted.
    let copied = lab.dir.path().join("slot-a.efi");
    esp_tool(
        &lab.disk,
        "mcopy",
        &["-o", "::/ember/a/ember.efi", copied.to_str().unwrap()],
    );
    assert!(
        std::fs::read(&copied).unwrap()
            == std::fs::read(lab.dir.path().join("net-boot.efi")).unwrap(),
        "the slot's UKI differs from the one booted"
    );

    // 3. Cold start while the boot server answers 503: its database is
    // locked by another writer, so every Start waits out SQLite's busy
    // timeout and is answered `database-unavailable` (an outage, not a
    // verdict). The node goes round its servers (ember_proto::retry), then
    // firmware → systemd-boot → slot a. (Other tests cold-start with the
    // server gone: power_cut_…, firmware_network_boot_….)
    lab.api.remove_node(NODE);
    let seen = lab.server().log().len();
    let lock = lab.server().lock_database();
    let log = boot_until(&lab, "cold-start", true, "lkg: slot a blessed");
    drop(lock);
    let served = lab.server().log()[seen..].to_string();
    assert!(
        served.contains("status=503"),
        "the server did not answer 503:\n{served}"
    );
    let lines = ember_lines(&log);
    assert!(
        lines
            .lines()
            .any(|l| l.contains("round 3/3") && l.contains("server refused with 503")),
        "the node did not go round its server as the retry policy says:\n{lines}"
    );
    // systemd-boot → the slot's UKI: the stub measured it, and the key
    // sealed to PCR 4 + 11 unsealed.
    assert!(
        lines.contains("set by systemd-stub (unified kernel image)"),
        "{lines}"
    );
    assert!(
        lines.contains("boot server unreachable or unavailable"),
        "{lines}"
    );
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
    let net_cmdline = Boot::new(
        &lab.initrd,
        &Lab::append(&lab.attest_url()),
        &lab.log_path("x"),
    )
    .append;
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

    // The original overlay, but a UKI with another initrd: PCR 4 and 11
    // differ, the TPM refuses.
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
    build_initrd_with(&other, &files, false);
    let other_uki = lab.uki("other", &other, &net_cmdline);
    esp_tool(
        &lab.disk,
        "mcopy",
        &["-o", other_uki.to_str().unwrap(), "::/ember/a/ember.efi"],
    );
    let log = boot_until(
        &lab,
        "tamper-initrd",
        true,
        "boot failed in phase lkg-restore",
    );
    let lines = ember_lines(&log);
    assert!(
        lines.contains("set by systemd-stub (unified kernel image)"),
        "{lines}"
    );
    assert!(
        lines.contains("lkg: the TPM refused to unseal the overlay key"),
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
    let log = boot_until(&lab, "rb-second", false, "lkg: wrote slot b generation 2");
    // The network boot revoked slot a in the TPM as soon as slot b was
    // written, before the node ran on: not at the next boot.
    assert!(
        ember_lines(&log).contains(": older slots no longer unseal"),
        "{}",
        ember_lines(&log)
    );

    // An attacker with the disk (or root in the runtime while the node
    // runs) deletes slot b's record and entry and so points the loader
    // back at slot a, whose genuinely signed manifest is older than the
    // epoch already blessed. With slot b's record gone no later boot can
    // learn that the counter should have moved: it must have moved already.
    let entries = esp_entries(&lab.disk);
    let newer = entries
        .split_whitespace()
        .find(|e| e.contains("ember-b"))
        .unwrap_or_else(|| panic!("no entry for slot b: {entries}"))
        .to_string();
    // `mdir -b` lists full paths (::/loader/entries/ember-b+3.conf).
    esp_tool(&lab.disk, "mdel", &[&newer]);
    esp_tool(&lab.disk, "mdel", &["::/ember/b/slot.rec"]);
    lab.server = None;
    lab.api.remove_node(NODE);
    let log = boot_until(&lab, "rb-cold", true, "boot failed in phase lkg-restore");
    let lines = ember_lines(&log);
    assert!(
        lines.contains("epoch 1 is older than the blessed epoch 2"),
        "{lines}"
    );
    // The counter stood at slot b's value already.
    assert!(lines.contains("lkg: rollback counter = "), "{lines}");
    assert!(!lines.contains("phase=nodeconf"), "{lines}");

    // The attacker also deletes the ESP's epoch record and edits slot a's
    // generation (postcard: the byte after the record version) so that it
    // looks newest: the TPM counter still refuses it, and its key would
    // not unseal (tests/tests/tpm_rollback.rs proves that at the TPM).
    esp_tool(&lab.disk, "mdel", &["::/ember/epoch"]);
    let rec = lab.dir.path().join("slot-a.rec");
    esp_tool(
        &lab.disk,
        "mcopy",
        &["-o", "::/ember/a/slot.rec", rec.to_str().unwrap()],
    );
    let mut bytes = std::fs::read(&rec).unwrap();
    assert_eq!(&bytes[..2], &[4, 1], "slot.rec version 4, generation 1");
    bytes[1] = 9;
    std::fs::write(&rec, &bytes).unwrap();
    esp_tool(
        &lab.disk,
        "mcopy",
        &["-o", rec.to_str().unwrap(), "::/ember/a/slot.rec"],
    );
    let log = boot_until(&lab, "rb-edited", true, "boot failed in phase lkg-restore");
    let lines = ember_lines(&log);
    assert!(lines.contains("slot a generation 9"), "{lines}");
    assert!(lines.contains("a newer slot was blessed since"), "{lines}");
    assert!(
        lines.contains("rollback refused by the TPM counter"),
        "{lines}"
    );
    assert!(!lines.contains("phase=nodeconf"), "{lines}");
}

#[test]
fn power_cut_during_the_esp_write_leaves_the_previous_slot_bootable() {
    let mut lab = Lab::new("e2e-powercut");
    lab.publish("ready", &[]);
    boot_until(&lab, "first", false, "lkg: wrote slot a generation 1");

    // The second good boot writes slot b; the power goes as soon as it
    // starts fetching the slot's UKI onto the ESP.
    let boot = lab.boot("second", false);
    let mut guard = boot.start();
    let (started, log) = wait_for_log(
        &lab.log_path("second"),
        &mut guard,
        "lkg: slot b: fetching the boot image",
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

/// The boot server serves a UKI whose bytes differ from the digest it
/// signed (its artifact store tampered with after it measured the image,
/// or a man in the middle on plain HTTP): the node never renames it into
/// place, says why, and the older slot stays as it was.
#[test]
fn boot_image_differing_from_its_signed_digest_is_never_written() {
    let lab = Lab::new("e2e-image");
    lab.publish("ready", &[]);
    boot_until(&lab, "image-first", false, "lkg: wrote slot a generation 1");

    // The same UKI again (same initrd and command line, same bytes); the
    // server already measured it and signs its digest, but serves other bytes.
    let boot = lab.boot("image-second", false);
    let uki = std::fs::read(lab.dir.path().join("image-second.efi")).unwrap();
    let stored = lab
        .server()
        .state()
        .join("boot")
        .join(ember_fs::hex::hex(&Sha256::digest(&uki)));
    let mut bad = std::fs::read(&stored).expect("the stored UKI");
    let middle = bad.len() / 2;
    bad[middle] ^= 0x01;
    std::fs::write(&stored, &bad).unwrap();

    let log = run_until(&lab, "image-second", boot, "phase=lkg status=failed");
    let lines = ember_lines(&log);
    assert!(
        lines.contains("lkg: the boot image served has sha256"),
        "{lines}"
    );
    assert!(
        lines.contains("the previous last-known-good stays"),
        "{lines}"
    );
    assert!(!lines.contains("lkg: wrote slot b"), "{lines}");
    let entries = esp_entries(&lab.disk);
    assert!(
        entries.contains("ember-a+3.conf") && !entries.contains("ember-b"),
        "ESP entries: {entries}"
    );
    let slot_b = esp_tool(&lab.disk, "mdir", &["-b", "::/ember"]);
    assert!(
        !slot_b.contains("ember.efi") && !slot_b.contains(".tmp"),
        "the wrong image reached the ESP: {slot_b}"
    );
}

/// The data key `key` sealed as an attacker with the TPM would seal it,
/// outside the init: under the SRK template every Ember node uses, with
/// exactly the policy of `genuine` (PolicyPCR on its PCRs and values ∧
/// PolicyNV on the rollback counter: the counter's Name is public).
fn seal_outside_the_init(
    tpm_state: &std::path::Path,
    key: &[u8; 32],
    genuine: &[SealedKey],
) -> Vec<SealedKey> {
    let swtpm = Swtpm::start_tcp(tpm_state).expect("start swtpm");
    let mut tpm = Tpm::new(SocketTransport::connect_tcp(&swtpm.addr()).expect("connect swtpm"));
    let srk = tpm.create_srk().expect("CreatePrimary SRK");
    let keys = genuine
        .iter()
        .map(|g| {
            let selection = PcrSelection::new(HashAlg::Sha256, &g.pcrs).unwrap();
            let mut composite = Sha256::new();
            for v in &g.values {
                composite.update(v);
            }
            let pcr = PolicyDigest::new()
                .pcr(&selection, &composite.finalize())
                .unwrap();
            let policy = counter::not_past(pcr, g.sealed_for).unwrap();
            let sealed = tpm
                .seal(srk.handle, key, policy.as_bytes())
                .expect("Create sealed object");
            SealedKey {
                public: sealed.public.to_bytes().unwrap(),
                private: sealed.private,
                pcrs: g.pcrs.clone(),
                values: g.values.clone(),
                sealed_for: g.sealed_for,
            }
        })
        .collect();
    tpm.flush_context(srk.handle).expect("flush SRK");
    keys
}

fn put_record(lab: &Lab, record: &SlotRecord) {
    let path = lab.dir.path().join("planted-slot.rec");
    std::fs::write(&path, record.to_bytes()).unwrap();
    esp_tool(
        &lab.disk,
        "mcopy",
        &["-o", path.to_str().unwrap(), "::/ember/a/slot.rec"],
    );
}

/// An attacker with the disk and the TPM, not the server, plants a slot: a
/// data key of their own, sealed outside the init under the same SRK
/// template with a PolicyPCR matching the PCRs the cold start reaches
/// (the TPM does unseal it), beside the slot's genuinely signed, older
/// manifest, then beside a manifest they signed themselves. Both are
/// refused before one byte is extracted, with the reason logged.
#[test]
fn planted_slot_sealed_outside_the_init_is_refused_on_cold_start() {
    let mut lab = Lab::new("e2e-plant");
    lab.publish("ready", &[]);
    boot_until(&lab, "plant-net", false, "lkg: wrote slot a generation 1");
    lab.server = None;
    lab.api.remove_node(NODE);
    let rec = lab.dir.path().join("slot.rec");
    esp_tool(
        &lab.disk,
        "mcopy",
        &["-o", "::/ember/a/slot.rec", rec.to_str().unwrap()],
    );
    let genuine = SlotRecord::from_bytes(&std::fs::read(&rec).unwrap()).expect("slot.rec");
    assert!(
        genuine
            .keys
            .iter()
            .all(|k| k.pcrs == [4, 11, 12] && k.values.len() == 3),
        "the slot's key is not sealed to PCR 4 + 11 + 12: {:?}",
        genuine.keys.iter().map(|k| &k.pcrs).collect::<Vec<_>>()
    );
    let attacker_key = [0x66u8; 32];
    let planted_keys = seal_outside_the_init(&lab.tpm_state, &attacker_key, &genuine.keys);

    // 1. The genuine (older) manifest: it commits to a key the attacker
    //    does not know.
    let mut planted = genuine.clone();
    planted.keys = planted_keys;
    put_record(&lab, &planted);
    let log = boot_until(&lab, "plant-old", true, "boot failed in phase lkg-restore");
    let lines = ember_lines(&log);
    assert!(
        lines.contains("set by systemd-stub (unified kernel image)"),
        "{lines}"
    );
    assert!(
        lines.contains("data key differs from the manifest's commitment"),
        "{lines}"
    );
    assert!(!lines.contains("phase=nodeconf"), "{lines}");

    // 2. A manifest committing to the planted key, signed by the attacker.
    let trust =
        PublicKey::from_pem(&std::fs::read(lab.dir.path().join("manifest.pub")).unwrap()).unwrap();
    let mut forged = trust
        .verify(&genuine.manifest)
        .expect("the genuine manifest");
    forged.key_commitment = key_commitment(&attacker_key);
    forged.epoch += 1;
    planted.manifest = SigningSecret::from_bytes(&[0x42; 32])
        .unwrap()
        .sign(&forged);
    put_record(&lab, &planted);
    let log = boot_until(
        &lab,
        "plant-forged",
        true,
        "boot failed in phase lkg-restore",
    );
    let lines = ember_lines(&log);
    assert!(
        lines.contains("manifest signature does not verify (forged)"),
        "{lines}"
    );
    assert!(!lines.contains("phase=nodeconf"), "{lines}");
}

/// An attacker with the disk and the TPM who also runs a node of their
/// own, in another group, on the same server: their node attests (here a
/// host swtpm extended as booting the victim's UKI) and so knows its
/// overlay's data key and holds a genuinely signed manifest and boot image
/// record for it. They seal that key on the victim's TPM with the PCRs the
/// victim's cold start reaches, put their node's signed pair beside it in
/// the victim's slot, choose `sealed_for` far above the TPM counter and
/// lower `ember/epoch` to 0. Every signature verifies, the key matches its
/// commitment and the TPM unseals it: only the record's target, the EK of
/// the node it was made for, is not the victim's. The cold start refuses
/// it by that check, before one byte is extracted.
#[test]
fn a_slot_made_for_another_group_s_node_is_refused_on_cold_start() {
    use ember_proto::client::{self, Url};
    use ember_proto::host::HttpsClient;
    use ember_proto::tpm::TpmAttestor;
    use ember_tests::eventlog;

    let mut lab = Lab::new("e2e-other");
    lab.publish("ready", &[]);
    boot_until(&lab, "other-net", false, "lkg: wrote slot a generation 1");
    let rec = lab.dir.path().join("slot.rec");
    esp_tool(
        &lab.disk,
        "mcopy",
        &["-o", "::/ember/a/slot.rec", rec.to_str().unwrap()],
    );
    let genuine = SlotRecord::from_bytes(&std::fs::read(&rec).unwrap()).expect("slot.rec");

    // The attacker's own node, in group rack-b, booting the same UKI.
    let server = lab.server();
    let uki = lab.dir.path().join("other-net.efi");
    let tpm_b = server.enroll_node_with_token("node-b", "rack-b", lab.dir.path());
    server
        .set_policy(&[
            "--group",
            "rack-b",
            "--pcrs",
            "4",
            "--uki",
            uki.to_str().unwrap(),
        ])
        .expect_ok("policy for rack-b");
    let boot = eventlog::measurements(&uki);
    let swtpm = Swtpm::start_tcp(tpm_b.path()).expect("start node-b's swtpm");
    eventlog::extend(&swtpm, &boot);
    let mut t = Tpm::new(SocketTransport::connect_tcp(&swtpm.addr()).unwrap());
    let mut dev = TpmAttestor::new(&mut t);
    let url = Url::parse(&server.url()).unwrap();
    let mut https = HttpsClient::new(&url, &std::fs::read(server.ca_path()).unwrap()).unwrap();
    let cred = client::attest(&mut dev, &mut https, &url, &eventlog::write(&boot))
        .expect("node-b attests");
    dev.close().unwrap();
    drop(t);
    drop(swtpm);
    let trust =
        PublicKey::from_pem(&std::fs::read(lab.dir.path().join("manifest.pub")).unwrap()).unwrap();
    let envelope = cred.open_grant(&trust).expect("node-b's grant");
    let grant = cred.overlay.as_ref().expect("node-b's grant");
    let record_b = grant
        .boot_image
        .clone()
        .expect("node-b was given a boot image record");
    assert_ne!(
        trust.verify(&grant.manifest).unwrap().target,
        trust.verify(&genuine.manifest).unwrap().target,
        "rack-b's overlay is another assignment than the victim's"
    );

    // The planted slot: node-b's signed pair, node-b's known data key
    // sealed on the victim's TPM, sealed_for and the epoch the attacker's.
    let mut chosen = genuine.keys.clone();
    for k in &mut chosen {
        k.sealed_for = 1_000_000;
    }
    let mut planted = genuine.clone();
    planted.manifest = grant.manifest.clone();
    planted.boot_image = record_b;
    planted.keys = seal_outside_the_init(&lab.tpm_state, envelope.data_key(), &chosen);
    put_record(&lab, &planted);
    let epoch = lab.dir.path().join("epoch");
    std::fs::write(&epoch, b"0\n").unwrap();
    esp_tool(
        &lab.disk,
        "mcopy",
        &["-o", epoch.to_str().unwrap(), "::/ember/epoch"],
    );
    lab.server = None;
    lab.api.remove_node(NODE);
    let log = boot_until(
        &lab,
        "other-plant",
        true,
        "boot failed in phase lkg-restore",
    );
    let lines = ember_lines(&log);
    assert!(
        lines.contains(
            "the slot was made for another node (its boot image record names another EK)"
        ),
        "{lines}"
    );
    assert!(
        lines.contains("lkg: the slot's signed boot image record was made for the node with EK"),
        "{lines}"
    );
    assert!(!lines.contains("phase=nodeconf"), "{lines}");
    assert!(!lines.contains("restored from slot"), "{lines}");
}

/// An attacker on the path drops the node's Joined report (the third
/// connection to the boot server's TLS port: Start, Finish, Report; the
/// overlay and the UKI come over plain HTTP). The init keeps the report
/// and tries it again from its supervisor loop a second later: the server
/// gets it, so the node's rollback floor still rises.
#[test]
fn a_dropped_joined_report_is_tried_again_by_the_node() {
    use ember_tests::proxy::DropProxy;

    let lab = Lab::new("e2e-report");
    lab.publish("ready", &[]);
    let proxy = DropProxy::start(lab.server().addr(), &[3]);
    let port = proxy.url().rsplit(':').next().unwrap().to_string();
    let boot = lab.boot_with("report-drop", false, &format!("https://10.0.2.2:{port}"));
    let log = run_until(
        &lab,
        "report-drop",
        boot,
        "report: told the boot server Joined",
    );
    let lines = ember_lines(&log);
    assert!(
        lines.contains("attempt 1 of 5, trying again in 1000 ms"),
        "{lines}"
    );
    assert!(lines.contains("phase=ready status=ok"), "{lines}");
    assert_eq!(
        proxy.connections(),
        4,
        "start, finish, the dropped report, its retry"
    );
    let server = lab.server();
    assert!(
        server.wait_log(&format!("step=report node={NODE} outcome=ok")),
        "{}",
        server.log()
    );
}

/// Two releases of the node's UKI, both genuine and both allowed by the
/// lab's policy (older first). Once the node booted the newer one to Ready
/// and reported Joined, booting the older one again (an attacker's
/// rollback, or a stale boot medium) gets nothing: the server refuses its
/// attestation as a rollback below the node's floor, and the boot fails
/// with that reason, without falling back to last-known-good.
#[test]
fn older_uki_booted_after_a_newer_one_was_blessed_is_refused_by_the_server() {
    let lab = Lab::new("e2e-floor");
    lab.publish("ready", &[]);
    // The lab's command line (with the console Boot::new puts first) and
    // a word that makes each release's UKI its own.
    let release = |tag: &str| {
        let mut boot = lab.boot_with(tag, true, &lab.attest_url());
        boot.append.push_str(&format!(" ember.release={tag}"));
        let uki = lab.uki(tag, &lab.initrd, &boot.append);
        lab.allow(&uki);
        uki
    };
    let (older, newer) = (release("1"), release("2"));
    let boot_of = |name: &str, uki: &std::path::Path| {
        let mut boot = lab.boot_with(name, true, &lab.attest_url());
        boot.disks.insert(0, lab.uki_disk(name, uki));
        run_until(&lab, name, boot, "report: told the boot server Joined")
    };
    boot_of("floor-older", &older);
    boot_of("floor-newer", &newer);
    let mut boot = lab.boot_with("floor-back", true, &lab.attest_url());
    boot.disks.insert(0, lab.uki_disk("floor-back", &older));
    let log = run_until(&lab, "floor-back", boot, "boot failed in phase attest");
    let lines = ember_lines(&log);
    assert!(lines.contains("boot-image-rollback"), "{lines}");
    assert!(
        lines.contains(
            "(image epoch 1) is older than node node-e2e's rollback floor, image epoch 2"
        ),
        "{lines}"
    );
    assert!(!lines.contains("lkg-restore"), "fell back to LKG:\n{lines}");
    assert!(!lines.contains("phase=overlay"), "{lines}");
    let server = lab.server();
    assert!(
        server.wait_log("step=finish node=node-e2e outcome=boot-image-rollback status=403"),
        "{}",
        server.log()
    );
    let nodes = server.nodes();
    assert!(
        nodes.contains("ember nodes allow-rollback --node node-e2e"),
        "{nodes}"
    );
}

//! Measured boot attacks on a real boot chain: OVMF and swtpm measure a
//! unified kernel image, systemd-stub its sections, and `ember serve`
//! judges the quote and the event log against `ember policy set --pcrs 4
//! --uki` of the genuine UKI (the e2e [`Lab`]). Assertions read the serial
//! log, the server's log and `ember nodes`.

use std::path::Path;

use ember_tests::lab::{ember_lines, overlay, run_until, Lab, NODE};

/// Copies `bin` and the libraries it links (ldd, same paths) under `root`.
fn carry(root: &Path, bin: &Path, at: &str) {
    let dest = root.join(at.trim_start_matches('/'));
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(bin, &dest).unwrap();
    let out = std::process::Command::new("ldd").arg(bin).output().unwrap();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let lib = match line.split_once("=> ") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|l| l.starts_with('/')),
        };
        let Some(lib) = lib.filter(|l| l.starts_with('/')) else {
            continue;
        };
        let dest = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(std::fs::canonicalize(lib).unwrap(), &dest).unwrap();
    }
}

#[test]
fn a_uki_whose_initrd_differs_by_one_byte_is_refused_naming_the_initrd_event() {
    let lab = Lab::new("mb-initrd");
    lab.publish("ready", &[]);
    // The genuine UKI for this boot's command line is what the policy allows.
    let mut boot = lab.boot_with("evil", true, &lab.attest_url());
    let genuine = lab.uki("genuine", &lab.initrd, &boot.append);
    lab.allow(&genuine);
    // One byte more: a NUL after the archive, which the kernel skips, so
    // this initrd boots exactly as the genuine one does.
    let patched = lab.dir.path().join("patched.cpio.gz");
    let mut bytes = std::fs::read(&lab.initrd).unwrap();
    bytes.push(0);
    std::fs::write(&patched, &bytes).unwrap();
    let evil = lab.uki("evil-uki", &patched, &boot.append);
    boot.disks.insert(0, lab.uki_disk("evil", &evil));

    let log = run_until(&lab, "evil", boot, "boot failed in phase attest");
    let lines = ember_lines(&log);
    assert!(
        lines.contains("set by systemd-stub (unified kernel image)"),
        "the stub did not measure the patched UKI:\n{lines}"
    );
    assert!(lines.contains("pcr-policy-mismatch"), "{lines}");
    assert!(
        lines.contains("(.initrd) differs"),
        "the node's refusal does not name the initrd:\n{lines}"
    );
    assert!(!lines.contains("phase=overlay"), "{lines}");
    let served = lab.server().log();
    assert!(
        served.contains("PCR 11 sha256 event ") && served.contains(" (.initrd) differs: expected "),
        "the server log does not name PCR 11's .initrd event:\n{served}"
    );
    assert!(
        !served.contains("step=overlay"),
        "the server served an overlay:\n{served}"
    );
    let nodes = lab.server().nodes();
    assert!(
        nodes.contains("(.initrd) differs"),
        "ember nodes does not say why: {nodes}"
    );
}

#[test]
fn the_runtime_cannot_attest_as_the_booting_node_after_leave_initrd() {
    let lab = Lab::new("mb-runtime");
    // The runtime (the stand-in) runs the node's own attestation with the
    // node's TPM and event log once it starts, as a workload might.
    let cmd = format!(
        "/usr/bin/ember attest --tpm /dev/tpmrm0 --url {} --ca /etc/ember/ca.pem --no-overlay",
        lab.attest_url()
    );
    let o = overlay(&lab.api, "ready", &[("standin_exec", &cmd)]);
    carry(o.path(), &ember_tests::ember_bin(), "/usr/bin/ember");
    let version = lab.server().add_overlay(o.path(), None);
    lab.server()
        .assign(version, "group:lab")
        .expect_ok("assign");

    let boot = lab.boot("runtime", false);
    let log = run_until(&lab, "runtime", boot, "standin: exec exited");
    let lines = ember_lines(&log);
    assert!(
        lines.contains("phase=attest status=ok")
            && lines.contains("phase=seal-boot-phase status=ok"),
        "the node itself did not attest:\n{lines}"
    );
    let exec: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("standin: exec"))
        .collect();
    let exec = exec.join("\n");
    assert!(
        exec.contains("exec exited: ") && !exec.contains("exit status: 0"),
        "{exec}"
    );
    assert!(exec.contains("event-log-mismatch"), "{exec}");
    let served = lab.server().log();
    assert!(
        served.contains(&format!(
            "step=finish node={NODE} outcome=event-log-mismatch"
        )),
        "{served}"
    );
    assert!(
        served.contains("PCR 11 sha256: the event log replays to"),
        "{served}"
    );
}

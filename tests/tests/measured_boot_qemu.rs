//! Measured boot attacks on a real boot chain: OVMF and swtpm measure a
//! unified kernel image, systemd-stub its sections, and `ember serve`
//! judges the quote and the event log against `ember policy set --pcrs 4
//! --uki` of the genuine UKI (the e2e [`Lab`]). Assertions read the serial
//! log, the server's log and `ember nodes`.

use std::path::{Path, PathBuf};

use ember_tests::ember_bin;
use ember_tests::lab::{ember_lines, overlay, run_until, Lab, NODE};
use sha2::{Digest, Sha256};

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

/// The runtime's `standin: exec output:` lines, without the prefix.
fn exec_output(log: &str) -> Vec<&str> {
    log.lines()
        .filter_map(|l| l.split_once("standin: exec output: ").map(|(_, r)| r))
        .collect()
}

/// `lab.initrd` with one byte more: a NUL after the archive, which the
/// kernel skips, so it boots exactly as the genuine one does.
fn one_byte_more(lab: &Lab) -> PathBuf {
    let patched = lab.dir.path().join("patched.cpio.gz");
    let mut bytes = std::fs::read(&lab.initrd).unwrap();
    bytes.push(0);
    std::fs::write(&patched, &bytes).unwrap();
    patched
}

/// Publishes `extra` as the lab group's overlay, with `ember` (and
/// `also`, host path → path in the overlay) carried into it.
fn publish_with_ember(lab: &Lab, extra: &[(&str, &str)], also: &[(&Path, &str)]) {
    let o = overlay(&lab.api, "ready", extra);
    carry(o.path(), &ember_bin(), "/usr/bin/ember");
    for (from, to) in also {
        carry(o.path(), from, to);
    }
    let version = lab.server().add_overlay(o.path(), None);
    lab.server()
        .assign(version, "group:lab")
        .expect_ok("assign");
}

#[test]
fn a_uki_whose_initrd_differs_by_one_byte_is_refused_naming_the_initrd_event() {
    let lab = Lab::new("mb-initrd");
    lab.publish("ready", &[]);
    // The genuine UKI for this boot's command line is what the policy allows.
    let mut boot = lab.boot_with("evil", true, &lab.attest_url());
    let genuine = lab.uki("genuine", &lab.initrd, &boot.append);
    lab.allow(&genuine);
    let evil = lab.uki("evil-uki", &one_byte_more(&lab), &boot.append);
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
    server_refused(&lab.server().log(), 11, ".initrd");
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
    publish_with_ember(&lab, &[("standin_exec", &cmd)], &[]);

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

/// The one-byte attack over the network: OVMF runs QEMU's iPXE ROM, which
/// chains the UKI `ember artifact ipxe --uki` published from `ember serve
/// --http-listen`. On that path the firmware measures the UKI into PCR 4
/// twice (iPXE's LoadImage probe, then the real load) and no boot manager,
/// and systemd-stub boots with iPXE's load options, measured into PCR 12.
/// The policy pins all three as `ember policy set --pcrs 4 --loader UKI
/// --uki UKI --load-options "uki.efi ARGS"` predicts them (the UKI as its
/// own loader), event log required. Under it the genuine UKI chained so
/// attests (its runtime decodes the event log the init sent: PCR 4 and 12
/// are those predictions, PCR 4 is not the direct boot's), and the UKI
/// whose initrd differs by one byte is refused naming its `.initrd` event
/// (and its image digest in PCR 4); it gets no overlay and does not fall
/// back to the slot the genuine boot left on the disk. The genuine UKI
/// chained by someone else's script with one argument more is refused on
/// PCR 12.
#[test]
fn over_ipxe_the_genuine_uki_attests_and_one_whose_initrd_differs_by_one_byte_is_refused() {
    let lab = Lab::new("mb-ipxe");
    let dump = "/usr/bin/ember tpm eventlog --pcr 4,12";
    publish_with_ember(&lab, &[("standin_exec", dump)], &[]);
    let server = lab.server();
    let cmdline = lab.boot_with("genuine", true, &lab.attest_url()).append;
    let genuine = lab.uki("genuine", &lab.initrd, &cmdline);
    let evil = lab.uki("evil", &one_byte_more(&lab), &cmdline);
    let uki = genuine.to_str().unwrap();
    let options = format!("uki.efi {}", cmdline.trim_end());
    server
        .set_policy(&[
            "--group",
            "lab",
            "--pcrs",
            "4",
            "--loader",
            uki,
            "--uki",
            uki,
            "--load-options",
            &options,
        ])
        .expect_ok("policy set --pcrs 4 --loader UKI --uki UKI --load-options");
    let http = server.http_port().expect("--http-listen port");
    let script = |uki: &Path| {
        let out = server
            .ember(&["artifact", "ipxe", "--uki", uki.to_str().unwrap()])
            .expect_ok("ember artifact ipxe --uki");
        format!("http://10.0.2.2:{http}{}", out.stdout.trim())
    };

    // 1. The genuine UKI over iPXE: attests, gets its overlay, writes a slot.
    let (log, lines) = ipxe_boot(
        &lab,
        "genuine",
        script(&genuine),
        "lkg: wrote slot a generation 1",
    );
    for phase in ["attest", "overlay", "ready"] {
        assert!(
            lines.contains(&format!("phase={phase} status=ok")),
            "phase {phase} missing:\n{lines}"
        );
    }
    // What the firmware and the stub measured on this path, from the log
    // the init sent (decoded by ember_tpm::eventlog in the runtime).
    let events = exec_output(&log);
    let replayed = |pcr: u32| {
        pcr_value(events.iter().copied(), pcr)
            .unwrap_or_else(|| panic!("no replayed PCR {pcr}: {events:#?}"))
    };
    // What `ember policy predict` gives: PCR 4 with the UKI as its own
    // loader (not the direct boot it predicts without one), and PCR 12 from
    // the load options iPXE passes (the image name, then the script's
    // arguments), which systemd-stub measures in one EV_IPL event.
    let predicted = |extra: &[&str], pcr: u32| {
        let out = std::process::Command::new(ember_bin())
            .args(["policy", "predict", "--uki", uki])
            .args(extra)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        pcr_value(out.lines(), pcr).unwrap_or_else(|| panic!("no PCR {pcr} in {out}"))
    };
    assert_eq!(replayed(4), predicted(&["--loader", uki], 4));
    assert_ne!(replayed(4), predicted(&[], 4));
    assert_eq!(
        events.iter().filter(|l| l.contains(": PCR 12 ")).count(),
        1,
        "PCR 12 events: {events:#?}"
    );
    assert_eq!(
        replayed(12),
        predicted(&["--load-options", &options], 12),
        "PCR 12 is not the load options {options:?}: {events:#?}"
    );
    eprintln!("over iPXE the init sent:\n{}", events.join("\n"));

    // 2. One byte more in the initrd, same chain, same policy: refused.
    let seen = server.log().len();
    let (log, lines) = ipxe_boot(&lab, "evil", script(&evil), "boot failed in phase attest");
    assert!(lines.contains("pcr-policy-mismatch"), "{lines}");
    assert!(
        lines.contains("PCR 11 event ") && lines.contains("(.initrd) differs"),
        "the node's refusal does not name the initrd:\n{lines}"
    );
    assert!(
        lines.contains("(EV_EFI_BOOT_SERVICES_APPLICATION loader 1) differs"),
        "the node's refusal does not name the UKI's image digest in PCR 4:\n{lines}"
    );
    assert!(!lines.contains("phase=overlay"), "{lines}");
    assert!(
        !lines.contains("restored from slot") && !lines.contains("lkg-restore"),
        "the refused node fell back to the cached slot:\n{lines}"
    );
    assert!(exec_output(&log).is_empty(), "a runtime ran:\n{log}");
    server_refused(&server.log()[seen..], 11, ".initrd");
    let nodes = server.nodes();
    assert!(
        nodes.contains("(.initrd) differs"),
        "ember nodes does not say why: {nodes}"
    );

    // 3. Someone on the network serves their own script: the genuine UKI,
    // with one argument more. The stub boots with it; PCR 12 refuses it.
    let sha = ember_fs::hex::hex(&Sha256::digest(std::fs::read(&genuine).unwrap()));
    let evil_script = format!(
        "#!ipxe\necho ember: iPXE chaining the UKI from the boot server\n\
         chain --name uki.efi http://10.0.2.2:{http}/v1/boot/{sha} {} ipxe.attacker=1\n",
        cmdline.trim_end()
    );
    let port = serve_once(evil_script);
    let seen = server.log().len();
    let (log, lines) = ipxe_boot(
        &lab,
        "args",
        format!("http://10.0.2.2:{port}/boot.ipxe"),
        "boot failed in phase attest",
    );
    assert!(
        log.contains("ipxe.attacker=1"),
        "the kernel did not get the script's arguments:\n{log}"
    );
    // None of the command lines the policy allows (the UKI's own, the
    // script's, the ESP entries'): named as the node logged it (an EV_IPL
    // too long to print whole).
    assert!(
        lines.contains("PCR 12 event ")
            && lines.contains("(not in the policy; logged as EV_IPL) differs"),
        "the node's refusal does not name PCR 12's load options:\n{lines}"
    );
    assert!(!lines.contains(".initrd"), "{lines}");
    assert!(!lines.contains("phase=overlay"), "{lines}");
    server_refused(
        &server.log()[seen..],
        12,
        "not in the policy; logged as EV_IPL",
    );
}

/// Checks the server's log of a refused boot: it names the `label` event
/// of PCR `pcr` as what differs, and it served no overlay.
fn server_refused(served: &str, pcr: u32, label: &str) {
    assert!(
        served.contains(&format!("PCR {pcr} sha256 event "))
            && served.contains(&format!(" ({label}) differs: expected ")),
        "the server log does not name PCR {pcr}'s {label} event:\n{served}"
    );
    assert!(
        !served.contains("step=overlay"),
        "the server served an overlay:\n{served}"
    );
}

/// Boots the lab node by firmware network boot from `script` (an iPXE
/// script URL) until `needle`; checks iPXE ran the script and the stub
/// measured the UKI; returns the serial log and the init's lines.
fn ipxe_boot(lab: &Lab, name: &str, script: String, needle: &str) -> (String, String) {
    let mut boot = lab.boot_with(name, true, &lab.attest_url());
    boot.netboot = Some(script);
    let log = run_until(lab, name, boot, needle);
    assert!(
        log.contains("ember: iPXE chaining the UKI from the boot server"),
        "iPXE did not chain the UKI:\n{log}"
    );
    let lines = ember_lines(&log);
    assert!(
        lines.contains("set by systemd-stub (unified kernel image)"),
        "{lines}"
    );
    (log, lines)
}

/// The value of `PCR <pcr> sha256 <hex>` among `lines` (`ember tpm
/// eventlog`'s and `ember policy predict`'s form).
fn pcr_value<'a>(lines: impl IntoIterator<Item = &'a str>, pcr: u32) -> Option<String> {
    let prefix = format!("PCR {pcr} sha256 ");
    lines
        .into_iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(String::from)
}

/// Serves `body` as the answer to the next HTTP request on 127.0.0.1 (the
/// guest's 10.0.2.2): a boot script from someone on the network. Returns
/// the port; the thread ends after that one answer.
fn serve_once(body: String) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let mut request = [0u8; 4096];
        let _ = s.read(&mut request);
        let _ = write!(
            s,
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    });
    port
}

/// What a hostile root workload runs: on a cold start from a slot, it
/// mounts the ESP, takes the slot record, asks the TPM for the overlay key
/// with the slot's own policy, and tries to move the rollback counter.
const HOSTILE: &str = r#"B=/bin/busybox
case "$($B cat /proc/cmdline)" in
  *ember.slot=*) ;;
  *) echo "hostile: not booted from a slot"; exit 0 ;;
esac
$B mkdir -p /tmp/esp
for d in /dev/vda1 /dev/vdb1; do $B mount -t vfat "$d" /tmp/esp && break; done
$B cp /tmp/esp/ember/a/slot.rec /tmp/slot.rec
$B umount /tmp/esp
/usr/bin/ember tpm counter read
/usr/bin/ember tpm unseal --slot /tmp/slot.rec
echo "hostile: unseal exit $?"
/usr/bin/ember tpm counter increment
echo "hostile: increment exit $?"
/usr/bin/ember tpm counter read
"#;

/// A workload on the node (the stand-in's `standin_exec`, root) goes for
/// last-known-good on the cold start that booted the slot, where PCR 4 and
/// 11 were exactly as sealed until leave-initrd and the init itself
/// unsealed the key: after leave-initrd the TPM refuses it the key (PCR 11)
/// and the counter increment (PCR 15), and the next cold start still
/// unseals the slot, so the counter did not move.
#[test]
fn the_runtime_cannot_unseal_the_slot_key_nor_move_the_rollback_counter() {
    let mut lab = Lab::new("mb-unseal");
    let script = lab.dir.path().join("hostile.sh");
    std::fs::write(&script, HOSTILE).unwrap();
    let exec = "/bin/busybox sh /usr/lib/ember-hostile.sh";
    publish_with_ember(
        &lab,
        &[("standin_exec", exec)],
        &[
            (Path::new("/bin/busybox"), "/bin/busybox"),
            (&script, "/usr/lib/ember-hostile.sh"),
        ],
    );

    // 1. Network boot (the lab's UKI): Ready, then slot a.
    let boot = lab.boot("net", false);
    let log = run_until(&lab, "net", boot, "lkg: wrote slot a generation 1");
    assert!(
        exec_output(&log).contains(&"hostile: not booted from a slot"),
        "{log}"
    );

    // 2. Cold start from slot a, the server gone: the init unseals the
    // key, then the runtime tries.
    lab.api.remove_node(NODE);
    lab.server = None;
    let log = run_until(&lab, "cold", lab.boot("cold", true), "standin: exec exited");
    let lines = ember_lines(&log);
    assert!(
        lines.contains("lkg: overlay 1 restored from slot a")
            && lines.contains("phase=seal-boot-phase status=ok"),
        "the init did not restore slot a and leave the initrd:\n{lines}"
    );
    let out = exec_output(&log);
    let text = out.join("\n");
    let counters: Vec<&str> = out
        .iter()
        .filter_map(|l| l.strip_prefix("rollback counter 0x01800e70: "))
        .collect();
    assert_eq!(counters.len(), 2, "{text}");
    assert_eq!(counters[0], counters[1], "the counter moved:\n{text}");
    let keys: Vec<&&str> = out.iter().filter(|l| l.starts_with("key ")).collect();
    assert!(!keys.is_empty(), "no sealed key tried:\n{text}");
    assert!(
        keys.iter().all(|k| k.contains("refused by the TPM: ")),
        "the TPM released a slot key to the runtime:\n{text}"
    );
    // The key the init unsealed: PCR 4 and the counter as sealed; only
    // the leave-initrd extend of PCR 11 differs, and the TPM refuses.
    let sealed_for = format!("counter <= {}", counters[0]);
    assert!(
        keys.iter()
            .any(|k| k.contains("PCR 4 as sealed, PCR 11 differs: ")
                && k.contains(&sealed_for)
                && k.contains("TPM_CC_Unseal failed: [TPM_RC_POLICY_FAIL")),
        "no key refused for PCR 11 alone:\n{text}"
    );
    assert!(text.contains("hostile: unseal exit 1"), "{text}");
    assert!(
        text.contains("TPM_CC_NV_Increment failed: [TPM_RC_POLICY_FAIL")
            && text.contains("hostile: increment exit 1"),
        "the counter increment was not refused by the TPM:\n{text}"
    );

    // 3. The next cold start still unseals slot a.
    let log = run_until(
        &lab,
        "cold-again",
        lab.boot("cold-again", true),
        "lkg: overlay 1 restored from slot a",
    );
    assert!(
        !ember_lines(&log).contains("a newer slot was blessed since"),
        "{}",
        ember_lines(&log)
    );
}

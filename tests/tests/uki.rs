//! Unified kernel images: `ember uki build` is reproducible and page
//! aligned, OVMF boots it from the ESP with its embedded command line, and
//! `ember policy predict` gives the PCR 11 that systemd-measure (systemd
//! 252, the reference) computes for the same sections.

use std::path::{Path, PathBuf};
use std::process::Command;

use ember_tests::qemu::{
    boot_uki_from_esp, build_initrd, build_uki, event_log_from_console, event_log_uki, Boot,
};
use ember_tests::server::EmberServer;
use ember_tests::{ember_bin, ScratchDir};

const SYSTEMD_MEASURE: &str = "/usr/lib/systemd/systemd-measure";

/// The command line the UKI carries; `ember.test=poweroff` makes the init
/// power off once its boot phases ran.
const CMDLINE: &str =
    "console=ttyS0 panic=-1 ember.test=poweroff ember.on_error=poweroff ember.iface=eth0";

fn ember(args: &[&str]) -> String {
    let out = Command::new(ember_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ember {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A UKI of the test initrd with a fixed os-release; returns (uki, initrd, os-release).
fn uki_fixture(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let initrd = dir.join("initrd.cpio.gz");
    build_initrd(&initrd, &[]);
    let osrel = dir.join("os-release");
    std::fs::write(&osrel, "ID=ember\nVERSION_ID=test\n").unwrap();
    let uki = dir.join("ember.efi");
    build_uki(
        &uki,
        &initrd,
        CMDLINE,
        &["--os-release", osrel.to_str().unwrap()],
    );
    (uki, initrd, osrel)
}

/// `ember policy predict` output: the PCR 11 value of one bank.
fn predicted(uki: &Path, bank: &str, extra: &[&str]) -> String {
    predicted_pcr(uki, 11, bank, extra)
}

/// `ember policy predict` output: the value of `pcr` in `bank`.
fn predicted_pcr(uki: &Path, pcr: u32, bank: &str, extra: &[&str]) -> String {
    let uki = uki.to_str().unwrap();
    let mut args = vec!["policy", "predict", "--uki", uki, "--bank", bank];
    args.extend_from_slice(extra);
    let out = ember(&args);
    let prefix = format!("PCR {pcr} {bank} ");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no PCR {pcr} in predict output {out:?}"))
        .to_string()
}

/// systemd-measure's PCR 11 for these section files (JSON, one bank).
fn systemd_measure(sections: &[(&str, &Path)], bank: &str, phase: &str) -> String {
    let mut cmd = Command::new(SYSTEMD_MEASURE);
    cmd.arg("calculate")
        .arg(format!("--bank={bank}"))
        .arg(format!("--phase={phase}"))
        .arg("--json=short");
    for (opt, path) in sections {
        cmd.arg(format!("--{opt}={}", path.display()));
    }
    let out = cmd
        .output()
        .expect("systemd-measure (Debian's systemd 252)");
    assert!(
        out.status.success(),
        "systemd-measure failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = &json[bank][0];
    assert_eq!(entry["pcr"], 11, "{json}");
    entry["hash"].as_str().unwrap().to_string()
}

/// The command line the kernel printed ("Command line: ...").
fn kernel_cmdline(log: &str) -> &str {
    log.lines()
        .find_map(|l| l.split_once("Command line: ").map(|(_, c)| c.trim()))
        .unwrap_or_else(|| panic!("the kernel printed no command line:\n{log}"))
}

#[test]
fn uki_build_is_reproducible_and_its_sections_are_page_aligned() {
    let dir = ScratchDir::new("uki-repro");
    let (a, initrd, osrel) = uki_fixture(dir.path());
    let b = dir.path().join("again.efi");
    build_uki(
        &b,
        &initrd,
        CMDLINE,
        &["--os-release", osrel.to_str().unwrap()],
    );
    let bytes = std::fs::read(&a).unwrap();
    assert_eq!(
        bytes,
        std::fs::read(&b).unwrap(),
        "same inputs, different UKI"
    );

    // objdump (binutils) reads the headers independently of our PE code.
    let out = Command::new("objdump").arg("-h").arg(&a).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut seen = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 6 && f[1].starts_with('.') {
            let vma = u64::from_str_radix(f[3], 16).unwrap();
            let file_off = u64::from_str_radix(f[5], 16).unwrap();
            if [".osrel", ".cmdline", ".initrd", ".linux"].contains(&f[1]) {
                assert_eq!(vma % 0x1000, 0, "{} at {vma:#x} is not page aligned", f[1]);
                assert_eq!(file_off % 0x200, 0, "{} at file offset {file_off:#x}", f[1]);
                seen.push(f[1].to_string());
            }
        }
    }
    assert_eq!(seen, [".osrel", ".cmdline", ".initrd", ".linux"], "{text}");
}

#[test]
fn ovmf_boots_the_uki_from_the_esp_with_its_embedded_command_line() {
    let dir = ScratchDir::new("uki-boot");
    let (uki, _, _) = uki_fixture(dir.path());
    let out = boot_uki_from_esp(&uki, dir.path());
    let lines = out.ember_lines().join("\n");
    assert!(
        out.powered_off(),
        "the UKI boot did not power off (exit {:?}):\n{}",
        out.exit_code,
        out.log
    );
    let kernel_cmdline = kernel_cmdline(&out.log);
    assert_eq!(
        kernel_cmdline, CMDLINE,
        "the kernel did not get the UKI's embedded command line"
    );
    assert!(out.has_line("starting as pid 1"), "{lines}");
    assert!(
        out.has_line("cmdline: ember keys [ember.test ember.on_error ember.iface]"),
        "{lines}"
    );
    assert!(out.has_line("tpm: /dev/tpmrm0 present"), "{lines}");
    assert!(out.has_line("shutdown: power off"), "{lines}");
}

#[test]
fn policy_predict_equals_systemd_measure_for_the_same_uki() {
    let dir = ScratchDir::new("uki-measure");
    let (uki, initrd, osrel) = uki_fixture(dir.path());
    let cmdline = dir.path().join("cmdline");
    std::fs::write(&cmdline, CMDLINE).unwrap();
    let kernel = ember_tests::qemu::kernel_image();
    let sections = [
        ("linux", kernel.as_path()),
        ("osrel", osrel.as_path()),
        ("cmdline", cmdline.as_path()),
        ("initrd", initrd.as_path()),
    ];
    for bank in ["sha256", "sha384", "sha512"] {
        assert_eq!(
            predicted(&uki, bank, &[]),
            systemd_measure(&sections, bank, ""),
            "{bank}: ember policy predict and systemd-measure disagree"
        );
    }
    // With systemd-pcrphase's words extended after the stub.
    assert_eq!(
        predicted(
            &uki,
            "sha256",
            &["--phase", "enter-initrd", "--phase", "leave-initrd"]
        ),
        systemd_measure(&sections, "sha256", "enter-initrd:leave-initrd"),
    );
}

#[test]
fn one_changed_initrd_byte_changes_pcr11_and_predict_names_the_initrd_event() {
    let dir = ScratchDir::new("uki-tamper");
    let (uki, initrd, osrel) = uki_fixture(dir.path());
    let mut bytes = std::fs::read(&initrd).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let patched = dir.path().join("patched.cpio.gz");
    std::fs::write(&patched, &bytes).unwrap();
    let evil = dir.path().join("evil.efi");
    build_uki(
        &evil,
        &patched,
        CMDLINE,
        &["--os-release", osrel.to_str().unwrap()],
    );

    assert_ne!(
        predicted(&uki, "sha256", &[]),
        predicted(&evil, "sha256", &[])
    );
    let events = |p: &Path| {
        ember(&[
            "policy",
            "predict",
            "--uki",
            p.to_str().unwrap(),
            "--events",
        ])
        .lines()
        .skip(1)
        // The PCR 11 events: up to the "PCR 4" line.
        .take_while(|l| !l.starts_with("PCR "))
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let (good, bad) = (events(&uki), events(&evil));
    assert_eq!(good.len(), 8, "4 sections, name + data each: {good:?}");
    let differ: Vec<_> = good.iter().zip(&bad).filter(|(a, b)| a != b).collect();
    assert_eq!(differ.len(), 1, "{differ:?}");
    assert!(differ[0].0.ends_with(" .initrd"), "{differ:?}");
}

#[test]
fn policy_set_takes_the_predicted_pcr11_and_refuses_a_non_uki() {
    let dir = ScratchDir::new("uki-policy");
    let (uki, initrd, _) = uki_fixture(dir.path());
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let value = predicted(&uki, "sha256", &[]);
    let out = ember(&[
        "policy",
        "set",
        "--state",
        state,
        "--pcrs",
        "4",
        "--value",
        &format!("4={}", "00".repeat(32)),
        "--uki",
        uki.to_str().unwrap(),
    ]);
    assert!(out.contains("PCRs [4, 11, 12]"), "{out}");
    let show = ember(&["policy", "show", "--state", state]);
    assert!(show.contains(&format!("PCR 11 = {value}")), "{show}");

    // --pcrs 4 without a value: the PCR 4 value the firmware gives this UKI.
    let pcr4 = predicted_pcr(&uki, 4, "sha256", &[]);
    let out = ember(&[
        "policy",
        "set",
        "--state",
        state,
        "--group",
        "uki",
        "--pcrs",
        "4",
        "--uki",
        uki.to_str().unwrap(),
    ]);
    assert!(out.contains("PCRs [4, 11, 12]"), "{out}");
    let show = ember(&["policy", "show", "--state", state]);
    assert!(show.contains(&format!("PCR  4 = {pcr4}")), "{show}");

    let bad = Command::new(ember_bin())
        .args(["policy", "set", "--state", state, "--uki"])
        .arg(&initrd)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("not a PE image"), "{err}");
}

#[test]
fn a_real_ovmf_boot_measures_the_predicted_pcr11_and_pcr4() {
    use ember_tpm::eventlog::{replay, EventLog};
    use ember_tpm::HashAlg;

    let dir = ScratchDir::new("uki-eventlog");
    let uki = event_log_uki(dir.path(), &[]);
    let out = boot_uki_from_esp(&uki, dir.path());
    assert!(out.powered_off(), "exit {:?}:\n{}", out.exit_code, out.log);

    let bytes = event_log_from_console(&out.log);
    let log = EventLog::parse(&bytes).expect("the firmware's event log parses");
    let pcrs = replay(&log, HashAlg::Sha256).expect("the event log replays");
    let hex = |v: &[u8]| v.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(
        hex(pcrs[11]
            .as_deref()
            .expect("systemd-stub measured into PCR 11")),
        predicted_pcr(&uki, 11, "sha256", &[]),
        "PCR 11 of the real boot differs from ember policy predict"
    );
    assert_eq!(
        hex(pcrs[4]
            .as_deref()
            .expect("the firmware measured into PCR 4")),
        predicted_pcr(&uki, 4, "sha256", &[]),
        "PCR 4 of the real boot differs from ember policy predict"
    );

    // The same log against a UKI whose initrd differs by one byte: the
    // refusal names the PCR, the event and the section.
    let log_file = dir.path().join("binary_bios_measurements");
    std::fs::write(&log_file, &bytes).unwrap();
    let log_arg = log_file.to_str().unwrap();
    let ok = ember(&[
        "policy",
        "predict",
        "--uki",
        uki.to_str().unwrap(),
        "--check-log",
        log_arg,
    ]);
    assert_eq!(ok.matches("matches the event log").count(), 2, "{ok}");
    let initrd = dir.path().join("eventlog.cpio.gz");
    let mut patched = std::fs::read(&initrd).unwrap();
    patched.push(0);
    let patched_initrd = dir.path().join("patched.cpio.gz");
    std::fs::write(&patched_initrd, &patched).unwrap();
    let evil = dir.path().join("evil.efi");
    build_uki(&evil, &patched_initrd, "console=ttyS0 panic=-1 quiet", &[]);
    let out = Command::new(ember_bin())
        .args([
            "policy",
            "predict",
            "--uki",
            evil.to_str().unwrap(),
            "--check-log",
            log_arg,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a patched initrd matched the log");
    assert!(err.contains("PCR 11 sha256 event "), "{err}");
    assert!(err.contains(" (.initrd) differs: expected "), "{err}");
    assert!(
        err.contains("(EV_EFI_BOOT_SERVICES_APPLICATION UKI) differs"),
        "{err}"
    );
}

/// Firmware network boot of the UKI: OVMF runs QEMU's iPXE EFI ROM, which
/// fetches the script `ember artifact ipxe --uki` published and chains the
/// UKI from `ember serve --http-listen`; the node boots with the UKI's
/// command line (iPXE's load options repeat it, see artifact_cmd.rs).
#[test]
fn firmware_network_boot_chains_the_uki_from_ember_serve() {
    let dir = ScratchDir::new("uki-netboot");
    let (uki, initrd, _) = uki_fixture(dir.path());
    let server = EmberServer::start_with(&["--http-listen", "127.0.0.1:0"]);
    let published = server
        .ember(&["artifact", "ipxe", "--uki", uki.to_str().unwrap()])
        .expect_ok("ember artifact ipxe --uki");
    let path = published.stdout.trim().to_string();
    let http = server.http_port().expect("--http-listen port");

    let mut boot = Boot::new(&initrd, "", &dir.path().join("serial.log"));
    boot.uefi_vars = Some(dir.path().join("OVMF_VARS.fd"));
    boot.tpm_state = Some(dir.path().join("tpm"));
    boot.netboot = Some(format!("http://10.0.2.2:{http}{path}"));
    let out = boot.run();
    assert!(
        out.powered_off(),
        "the network boot did not power off (exit {:?}):\n{}",
        out.exit_code,
        out.log
    );
    assert!(
        out.log
            .contains("ember: iPXE chaining the UKI from the boot server"),
        "iPXE did not run the UKI script:\n{}",
        out.log
    );
    let kernel_cmdline = kernel_cmdline(&out.log);
    assert_eq!(kernel_cmdline, format!("uki.efi {CMDLINE}"));
    assert!(out.has_line("starting as pid 1"), "{}", out.log);
    assert!(
        out.has_line("cmdline: ember keys [ember.test ember.on_error ember.iface]"),
        "{}",
        out.log
    );
}

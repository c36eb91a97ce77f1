//! Secure Boot: OVMF's Secure Boot build with the test's own PK, KEK and db
//! enrolled (tests/src/secureboot.rs) boots only images signed by the db
//! key (`ember uki build --sign-key`, systemd-boot signed by qemu/make-disk)
//! and measures its policy into PCR 7, which `ember policy predict
//! --secure-boot` computes and `ember policy set --secure-boot` binds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ember_tests::lab::{ember_lines, esp_entries, run_until, tail, Lab};
use ember_tests::qemu::{
    esp_tool, event_log_from_console, event_log_uki, make_uki_disk, wait_for_log, Boot, Outcome,
};
use ember_tests::secureboot::{SecureBoot, FIRMWARE_REFUSED};
use ember_tests::{ember_bin, ScratchDir};

/// Boots `uki` as the ESP's removable-media loader with the Secure Boot
/// firmware and a copy of `sb`'s enrolled variables, until the guest
/// powers off or the console shows `until`; returns the outcome.
fn boot_with_secure_boot(
    sb: &SecureBoot,
    uki: &Path,
    dir: &Path,
    name: &str,
    until: Option<&str>,
) -> Outcome {
    let disk = dir.join(format!("{name}.img"));
    make_uki_disk(&disk, uki);
    let log = dir.join(format!("{name}.log"));
    let mut boot = Boot::new(uki, "", &log);
    boot.uefi_vars = Some(sb.vars_copy(&dir.join(format!("{name}-vars.fd"))));
    boot.secure_boot = true;
    boot.disks = vec![disk];
    boot.from_disk = true;
    boot.tpm_state = Some(dir.join(format!("{name}-tpm")));
    boot.timeout = Duration::from_secs(240);
    match until {
        None => boot.run(),
        Some(needle) => {
            let mut guard = boot.start();
            let (_, text) = wait_for_log(&log, &mut guard, needle, boot.timeout);
            drop(guard);
            Outcome {
                exit_code: None,
                log: text,
            }
        }
    }
}

/// `ember policy predict` with `args`; (success, stdout, stderr).
fn predict(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(ember_bin())
        .args(["policy", "predict"])
        .args(args)
        .output()
        .expect("run ember policy predict");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The signed UKI boots with Secure Boot enforced and the firmware's own
/// event log replays to the PCR 7 (and 4 and 11) `ember policy predict
/// --secure-boot` gives; an unsigned UKI and one signed by a key the
/// firmware does not know are refused by the firmware before any of their
/// code runs.
#[test]
fn secure_boot_runs_the_signed_uki_as_predicted_and_refuses_unsigned_and_foreign_ones() {
    use ember_tpm::eventlog::{replay, EventLog};
    use ember_tpm::HashAlg;

    let dir = ScratchDir::new("sb-firmware");
    let sb = SecureBoot::new(dir.path());
    let signed_dir = dir.path().join("signed");
    std::fs::create_dir_all(&signed_dir).unwrap();
    let db = sb.db.uki_args();
    let db: Vec<&str> = db.iter().map(String::as_str).collect();
    let uki = event_log_uki(&signed_dir, &db);

    // 1. Signed with the db key: it runs, and prints what was measured.
    let out = boot_with_secure_boot(&sb, &uki, dir.path(), "signed", None);
    assert!(
        out.powered_off(),
        "exit {:?}:\n{}",
        out.exit_code,
        tail(&out.log, 40)
    );
    let bytes = event_log_from_console(&out.log);
    let log_file = dir.path().join("binary_bios_measurements");
    std::fs::write(&log_file, &bytes).unwrap();
    let log = EventLog::parse(&bytes).expect("the firmware's event log parses");
    let pcrs = replay(&log, HashAlg::Sha256).expect("the event log replays");
    let policy = sb.policy_args();
    let mut args = vec![
        "--uki",
        uki.to_str().unwrap(),
        "--check-log",
        log_file.to_str().unwrap(),
    ];
    args.extend(policy.iter().map(String::as_str));
    let (ok, stdout, stderr) = predict(&args);
    assert!(ok, "the real log differs from the prediction: {stderr}");
    assert_eq!(
        stdout.matches("matches the event log").count(),
        3,
        "{stdout}"
    );
    let predicted7 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PCR 7 sha256 "))
        .unwrap_or_else(|| panic!("no PCR 7 predicted: {stdout}"));
    assert_eq!(hex(pcrs[7].as_deref().expect("PCR 7 measured")), predicted7);
    // The same log against the firmware's keys with Secure Boot seen as
    // another signer: the authority event differs and is named.
    let mut args = vec![
        "--uki",
        uki.to_str().unwrap(),
        "--check-log",
        log_file.to_str().unwrap(),
    ];
    let esl = sb.esl_dir.display().to_string();
    let pk = sb.pk.cert.display().to_string();
    args.extend(["--secure-boot", &esl, "--signed-by", &pk]);
    let (ok, _, stderr) = predict(&args);
    assert!(!ok);
    assert!(
        stderr.contains("the signing certificate is not in db"),
        "{stderr}"
    );

    // 2. Unsigned, and 3. signed by a key not in db: the firmware refuses
    // to load them; nothing of theirs runs.
    let foreign = sb.other.uki_args();
    let foreign: Vec<&str> = foreign.iter().map(String::as_str).collect();
    for (name, extra) in [("unsigned", &[][..]), ("foreign", &foreign[..])] {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let bad = event_log_uki(&d, extra);
        let out = boot_with_secure_boot(&sb, &bad, dir.path(), name, Some(FIRMWARE_REFUSED));
        let refused: Vec<&str> = out
            .log
            .lines()
            .filter(|l| l.contains(FIRMWARE_REFUSED))
            .collect();
        assert!(
            refused
                .iter()
                .any(|l| l.contains("BdsDxe: failed to load Boot")),
            "{name}: the firmware did not refuse the UKI:\n{}",
            tail(&out.log, 30)
        );
        assert!(
            !out.log.contains("EVENTLOG-BEGIN") && !out.log.contains("Linux version"),
            "{name}: the UKI ran:\n{}",
            tail(&out.log, 30)
        );
    }
}

/// A node in the Secure Boot lab: the signed UKI attests under a policy
/// that binds PCR 7 and writes its last-known-good slot; the same UKI
/// booted by the same firmware with Secure Boot turned off (no keys
/// enrolled) is refused by the server naming PCR 7's SecureBoot variable;
/// with the server gone, the signed systemd-boot cold-starts the slot, and
/// once one argument is added to the slot's loader entry the cold start
/// cannot unseal and names PCR 12.
#[test]
fn with_secure_boot_the_node_attests_and_cold_starts_and_secure_boot_off_is_refused_naming_pcr7() {
    let mut lab = Lab::secure_boot("sb-node");
    lab.publish("ready", &[]);

    // 1. Network boot of the signed UKI to Ready and slot a.
    let log = run_until(
        &lab,
        "signed",
        lab.boot("signed", false),
        "lkg: wrote slot a generation 1",
    );
    let lines = ember_lines(&log);
    assert!(lines.contains("phase=attest status=ok"), "{lines}");
    assert!(
        log.contains("Secure boot enabled"),
        "the kernel did not see Secure Boot on:\n{}",
        tail(&log, 60)
    );
    let policy = lab
        .server()
        .ember(&["policy", "show"])
        .expect_ok("policy show")
        .stdout;
    assert!(
        policy.contains("PCR  7 = "),
        "the policy does not bind PCR 7:\n{policy}"
    );

    // 2. Secure Boot off: the same firmware with no keys enrolled.
    let mut boot = lab.boot_with("sb-off", false, &lab.attest_url());
    boot.uefi_vars = Some(fresh(&lab.dir.path().join("OVMF_VARS_4M.off.fd")));
    let seen = lab.server().log().len();
    let log = run_until(&lab, "sb-off", boot, "boot failed in phase attest");
    assert!(!log.contains("Secure boot enabled"), "{}", tail(&log, 60));
    let lines = ember_lines(&log);
    assert!(lines.contains("pcr-policy-mismatch"), "{lines}");
    assert!(!lines.contains("phase=overlay"), "{lines}");
    let served = lab.server().log()[seen..].to_string();
    assert!(
        served.contains("PCR 7 sha256 event ")
            && served.contains(" (EV_EFI_VARIABLE_DRIVER_CONFIG SecureBoot) differs: expected "),
        "the server does not name PCR 7's SecureBoot variable:\n{served}"
    );
    assert!(
        !served.contains("step=overlay"),
        "the server served an overlay:\n{served}"
    );
    let nodes = lab.server().nodes();
    assert!(
        nodes.contains("SecureBoot"),
        "ember nodes does not say why: {nodes}"
    );

    // 3. A/B fallback: a newer slot b whose entry ran out of tries
    // (systemd-boot's counting marked it bad, +0-3) sits beside slot a.
    // systemd-boot falls back to slot a's entry; under Secure Boot the
    // stub drops the entry's `ember.slot=a`, so only what systemd-boot
    // recorded (LoaderEntrySelected) says which slot it booted. The init
    // restores slot a, not the newest.
    fallen_back_slot_b(&lab);
    // Cold start, the server gone: firmware → signed systemd-boot → the
    // slot's signed UKI; the TPM unseals the key sealed to that PCR 4.
    lab.api.remove_node(ember_tests::lab::NODE);
    lab.server = None;
    let log = run_until(
        &lab,
        "cold",
        lab.boot("cold", true),
        "lkg: overlay 1 restored from slot a",
    );
    assert!(log.contains("Secure boot enabled"), "{}", tail(&log, 60));
    let lines = ember_lines(&log);
    assert!(
        lines.contains("lkg: systemd-boot booted loader entry ember-a")
            && lines.contains("(LoaderEntrySelected): slot a"),
        "the slot was not taken from LoaderEntrySelected: {lines}"
    );
    assert!(!lines.contains("restored from slot b"), "{lines}");

    // 4. Someone with the disk adds one argument to the loader entry's
    // options (an ACPI table of their own): systemd-boot measures the
    // options into PCR 12, the slot key is sealed to PCR 12, and the TPM
    // refuses it; the node says which PCR moved.
    let entries = esp_entries(&lab.disk);
    let entry = entries
        .lines()
        .map(str::trim)
        .find(|l| l.contains("ember-a"))
        .unwrap_or_else(|| panic!("no entry for slot a: {entries}"))
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let local = lab.dir.path().join("entry.conf");
    let on_esp = format!("::/loader/entries/{entry}");
    esp_tool(
        &lab.disk,
        "mcopy",
        &["-o", &on_esp, local.to_str().unwrap()],
    );
    let text = std::fs::read_to_string(&local).unwrap();
    assert!(text.contains("\noptions "), "{text}");
    std::fs::write(
        &local,
        text.replace("\noptions ", "\noptions efivar_ssdt=evil "),
    )
    .unwrap();
    esp_tool(
        &lab.disk,
        "mcopy",
        &["-o", local.to_str().unwrap(), &on_esp],
    );
    let log = run_until(
        &lab,
        "edited",
        lab.boot("edited", true),
        "boot failed in phase lkg-restore",
    );
    let lines = ember_lines(&log);
    assert!(
        lines.contains("lkg: the TPM refused to unseal the overlay key"),
        "{lines}"
    );
    let moved: Vec<&str> = lines
        .lines()
        .filter(|l| l.contains("not what the slot was sealed to"))
        .collect();
    assert!(
        moved.iter().any(|l| l.contains("lkg: PCR 12 is "))
            && !moved
                .iter()
                .any(|l| l.contains("PCR 11 ") || l.contains("PCR 7 ")),
        "the node does not name PCR 12 alone: {moved:?}\n{lines}"
    );
    assert!(!lines.contains("restored from slot"), "{lines}");
}

/// Puts a slot b on the ESP that is newer than slot a (generation 2, a
/// copy of slot a's UKI, overlay and record, so it would unseal and open
/// too) with a loader entry whose tries are used up (`+0-3`): what the
/// disk holds after a new slot failed to boot three times and
/// systemd-boot went back to the old one.
fn fallen_back_slot_b(lab: &Lab) {
    let dir = lab.dir.path().join("slot-b");
    std::fs::create_dir_all(&dir).unwrap();
    esp_tool(&lab.disk, "mmd", &["::/ember/b"]);
    for f in ["ember.efi", "overlay.sealed", "slot.rec"] {
        let local = dir.join(f);
        esp_tool(
            &lab.disk,
            "mcopy",
            &["-o", &format!("::/ember/a/{f}"), local.to_str().unwrap()],
        );
        if f == "slot.rec" {
            let mut bytes = std::fs::read(&local).unwrap();
            assert_eq!(bytes[1], 1, "slot.rec generation 1");
            bytes[1] = 2;
            std::fs::write(&local, &bytes).unwrap();
        }
        esp_tool(
            &lab.disk,
            "mcopy",
            &["-o", local.to_str().unwrap(), &format!("::/ember/b/{f}")],
        );
    }
    let entry = esp_tool(&lab.disk, "mtype", &["::/loader/entries/ember-a+3.conf"]);
    let entry_b = entry
        .replace("slot a, generation 1", "slot b, generation 2")
        .replace("version 1\n", "version 2\n")
        .replace("/ember/a/", "/ember/b/")
        .replace("ember.slot=a", "ember.slot=b");
    assert!(entry_b.contains("ember.slot=b"), "{entry_b}");
    let local = dir.join("entry.conf");
    std::fs::write(&local, entry_b).unwrap();
    esp_tool(
        &lab.disk,
        "mcopy",
        &[
            "-o",
            local.to_str().unwrap(),
            "::/loader/entries/ember-b+0-3.conf",
        ],
    );
}

/// A path for a variable store that does not exist yet: Boot then starts
/// from a fresh OVMF_VARS_4M.fd (Secure Boot off, setup mode).
fn fresh(path: &Path) -> PathBuf {
    let _ = std::fs::remove_file(path);
    path.to_path_buf()
}

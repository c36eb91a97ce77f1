//! Measured boot as an attacker meets it, on a host-side swtpm playing the
//! firmware: the server's policy is `ember policy set --pcrs 4 --uki` of a
//! genuine UKI; each test resets the TPM (a fresh swtpm start is a reboot),
//! extends what the firmware and systemd-stub would measure for some image,
//! then runs the node's attestation (`ember attest`) with an event log.
//! Only the genuine chain gets the overlay; every refusal names its cause
//! in the server's log and `ember nodes`, and nothing is extracted.

use std::path::PathBuf;

use ember_tests::eventlog::{self, leave_initrd, measurements, LogEvent, EV_IPL, EV_NO_ACTION};
use ember_tests::qemu::{build_initrd, build_uki};
use ember_tests::server::{EmberServer, Run};
use ember_tests::swtpm::Swtpm;
use ember_tests::ScratchDir;
use sha2::{Digest, Sha256};

const CMDLINE: &str = "console=ttyS0 panic=-1 ember.iface=eth0";

struct Bench {
    server: EmberServer,
    tpm_dir: ScratchDir,
    dir: ScratchDir,
    genuine: PathBuf,
    /// The genuine UKI with one initrd byte changed.
    evil: PathBuf,
}

/// A genuine UKI and a one-byte-different one, a strict server (no lab
/// mode) whose rack1 policy pins PCRs 4 and 11 to the genuine UKI, an
/// enrolled swtpm and an overlay for rack1.
fn bench() -> Bench {
    let dir = ScratchDir::new("measured");
    let initrd = dir.path().join("initrd.cpio.gz");
    build_initrd(&initrd, &[]);
    let genuine = dir.path().join("genuine.efi");
    build_uki(&genuine, &initrd, CMDLINE, &[]);
    let mut bytes = std::fs::read(&initrd).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let patched = dir.path().join("patched.cpio.gz");
    std::fs::write(&patched, &bytes).unwrap();
    let evil = dir.path().join("evil.efi");
    build_uki(&evil, &patched, CMDLINE, &[]);

    let server = EmberServer::start_strict(&[]);
    let tpm_dir = server.enroll_node_with_token("node-a", "rack1", dir.path());
    let uki = genuine.to_str().unwrap();
    server
        .set_policy(&["--group", "rack1", "--pcrs", "4", "--uki", uki])
        .expect_ok("policy set --uki");
    Bench {
        server,
        tpm_dir,
        dir,
        genuine,
        evil,
    }
}

impl Bench {
    /// A reboot: a fresh swtpm on the node's state (PCRs reset), then
    /// `extends` as the firmware and whatever runs after it make them.
    /// The previous boot's swtpm must be dropped first (one per state).
    fn reboot(&self, extends: &[LogEvent]) -> Swtpm {
        let tpm = Swtpm::start_tcp(self.tpm_dir.path()).expect("start swtpm");
        eventlog::extend(&tpm, extends);
        tpm
    }

    /// `ember attest` sending `log`; extracts into a fresh folder.
    fn attest(&self, tpm: &Swtpm, log: &[u8], name: &str) -> (Run, PathBuf) {
        let log_path = self.dir.path().join(format!("{name}.log"));
        std::fs::write(&log_path, log).unwrap();
        let into = self.dir.path().join(format!("{name}-root"));
        let run = self.server.attest(
            &tpm.spec(),
            &[
                "--into",
                into.to_str().unwrap(),
                "--event-log",
                log_path.to_str().unwrap(),
            ],
        );
        (run, into)
    }

    /// Asserts a refusal with `code` whose server log line and `ember
    /// nodes` reason contain `detail`, and that nothing was extracted.
    fn assert_refused(&self, (run, into): (Run, PathBuf), code: &str, detail: &str) {
        assert!(!run.ok, "attested:\n{}", run.stderr);
        assert!(run.stderr.contains(code), "{}", run.stderr);
        assert!(!into.exists(), "the refused node got an overlay");
        let log = self.server.log();
        assert!(
            self.server.wait_log(&format!(
                "step=finish node=node-a outcome={code} status=403"
            )),
            "{log}"
        );
        assert!(log.contains(detail), "server log lacks {detail:?}:\n{log}");
        let nodes = self.server.nodes();
        assert!(
            nodes.contains(detail),
            "ember nodes lacks {detail:?}:\n{nodes}"
        );
    }
}

/// A command line as systemd-boot and systemd-stub measure it into PCR 12:
/// EV_IPL of the UTF-16LE text with its NUL (the log's data is the same).
fn command_line(options: &str) -> LogEvent {
    let utf16: Vec<u8> = options
        .encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect();
    LogEvent {
        pcr: 12,
        event_type: EV_IPL,
        digest: Sha256::digest(&utf16).into(),
        description: options.into(),
    }
}

/// An orderly power-off (TPM2_Shutdown) before the next reboot: five
/// unclean restarts in a row would count as dictionary-attack failures
/// and lock the TPM out.
fn power_off(tpm: Swtpm) {
    tpm.tpm2_run("tpm2_shutdown", &[]).expect("tpm2_shutdown");
}

/// `ember policy set --uki` pins PCR 12 without being asked (the bench's
/// policy names only `--pcrs 4 --uki`): a slot's loader entry on the ESP,
/// measured by systemd-boot and again by systemd-stub, attests, and so
/// does the chain `ember artifact ipxe`'s script makes; the
/// genuine UKI chained by someone else's iPXE script with one argument
/// more is refused naming the options it was given, and so is the slot's
/// entry with one argument added on the disk. (PCR 4 stays the policy's
/// direct boot here: this is PCR 12's test; the ESP's PCR 4 is
/// `--loader`'s.)
#[test]
fn pcr12_is_pinned_by_default_and_one_argument_more_is_refused() {
    let b = bench();
    let show = b
        .server
        .ember(&["policy", "show"])
        .expect_ok("policy show")
        .stdout;
    assert!(
        show.contains("PCR 12 = "),
        "PCR 12 is not pinned:
{show}"
    );
    let genuine = measurements(&b.genuine);
    let entry = format!("{CMDLINE} ember.slot=b");
    // The first PCR 12 event's number (the log's header is event 0).
    let first = genuine.len() + 1;

    let mut esp = genuine.clone();
    esp.extend([command_line(&entry), command_line(&entry)]);
    let tpm = b.reboot(&esp);
    let (run, into) = b.attest(&tpm, &eventlog::write(&esp), "esp");
    assert!(
        run.ok,
        "the ESP entry's PCR 12 was refused:\n{}",
        run.stderr
    );
    assert!(into.join("etc/token").exists());
    power_off(tpm);

    // `ember artifact ipxe`'s own script: the UKI's command line, after
    // the image name. Allowed without --load-options.
    let mut scripted = genuine.clone();
    scripted.push(command_line(&format!("uki.efi {CMDLINE}")));
    let tpm = b.reboot(&scripted);
    let (run, _) = b.attest(&tpm, &eventlog::write(&scripted), "scripted");
    assert!(
        run.ok,
        "the script's own chain was refused:\n{}",
        run.stderr
    );
    power_off(tpm);

    let options = format!("uki.efi {CMDLINE} ipxe.attacker=1");
    let mut chained = genuine.clone();
    chained.push(command_line(&options));
    let tpm = b.reboot(&chained);
    b.assert_refused(
        b.attest(&tpm, &eventlog::write(&chained), "chained"),
        "pcr-policy-mismatch",
        &format!("PCR 12 sha256 event {first} (not in the policy; logged as {options}) differs"),
    );
    power_off(tpm);

    let edited = format!("{entry} efivar_ssdt=evil");
    let mut disk = genuine;
    disk.extend([command_line(&edited), command_line(&edited)]);
    let tpm = b.reboot(&disk);
    b.assert_refused(
        b.attest(&tpm, &eventlog::write(&disk), "edited"),
        "pcr-policy-mismatch",
        &format!("PCR 12 sha256 event {first} (not in the policy; logged as EV_IPL) differs"),
    );
}

#[test]
fn the_genuine_firmware_and_stub_measurements_get_the_overlay() {
    let b = bench();
    let genuine = measurements(&b.genuine);
    let tpm = b.reboot(&genuine);
    let (run, into) = b.attest(&tpm, &eventlog::write(&genuine), "genuine");
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(into.join("etc/token")).unwrap(),
        "cluster-secret\n"
    );
}

#[test]
fn a_uki_whose_initrd_differs_by_one_byte_is_refused_naming_the_initrd_event() {
    let b = bench();
    let evil = measurements(&b.evil);
    let tpm = b.reboot(&evil);
    // Its honest log: the server names the extend that differs.
    let log = eventlog::write(&evil);
    // The .initrd data event (after its name event); the header is event 0.
    let initrd_event = 1 + evil
        .iter()
        .rposition(|e| e.pcr == 11 && e.description == ".initrd")
        .unwrap();
    b.assert_refused(
        b.attest(&tpm, &log, "evil"),
        "pcr-policy-mismatch",
        &format!("PCR 11 sha256 event {initrd_event} (.initrd) differs: expected "),
    );
    // The same, its .initrd event retyped EV_NO_ACTION (as if it extended
    // nothing): judged by digests, the log no longer replays to the quote.
    let mut retyped = log.clone();
    let at = eventlog::type_offset(&evil, initrd_event);
    retyped[at..at + 4].copy_from_slice(&EV_NO_ACTION.to_le_bytes());
    drop(tpm);
    let tpm = b.reboot(&evil);
    b.assert_refused(
        b.attest(&tpm, &retyped, "retyped"),
        "event-log-mismatch",
        "event log replays to",
    );
}

#[test]
fn replaying_a_genuine_boot_into_pcr11_without_the_firmware_measuring_the_genuine_image_is_refused()
{
    let b = bench();
    let genuine = measurements(&b.genuine);
    let genuine_pcr11: Vec<LogEvent> = genuine.iter().filter(|e| e.pcr == 11).cloned().collect();
    // What a genuine boot shows in PCR 11, for the comparison below.
    let tpm = b.reboot(&genuine);
    let genuine_value = eventlog::pcr_value(&tpm, 11);
    drop(tpm);

    // The firmware measured the attacker's image (here the one-byte
    // UKI, booted past its stub) into PCR 4; the attacker's code then
    // replays every genuine PCR 11 extend and, for good measure, the
    // genuine PCR 4 extends too.
    let evil_pcr4: Vec<LogEvent> = measurements(&b.evil)
        .into_iter()
        .filter(|e| e.pcr == 4)
        .collect();
    let mut extends = evil_pcr4.clone();
    extends.extend(genuine_pcr11.iter().cloned());
    let tpm = b.reboot(&extends);
    assert_eq!(
        eventlog::pcr_value(&tpm, 11),
        genuine_value,
        "the replay did not reproduce the genuine PCR 11"
    );
    // Sending the genuine boot's log: PCR 4's replay is not the quote.
    b.assert_refused(
        b.attest(&tpm, &eventlog::write(&genuine), "replay-genuine-log"),
        "event-log-mismatch",
        "PCR 4 sha256: the event log replays to",
    );
    // Sending its own honest log: PCR 4 names the image the firmware loaded.
    let mut honest = evil_pcr4.clone();
    honest.extend(genuine_pcr11.iter().cloned());
    b.assert_refused(
        b.attest(&tpm, &eventlog::write(&honest), "replay-honest-log"),
        "pcr-policy-mismatch",
        "(EV_EFI_BOOT_SERVICES_APPLICATION UKI) differs",
    );
    // Extending the genuine PCR 4 events on top changes nothing: an
    // extend cannot take back the firmware's.
    let genuine_pcr4: Vec<LogEvent> = genuine.iter().filter(|e| e.pcr == 4).cloned().collect();
    eventlog::extend(&tpm, &genuine_pcr4);
    let mut both = evil_pcr4;
    both.extend(genuine_pcr4);
    both.extend(genuine_pcr11.iter().cloned());
    b.assert_refused(
        b.attest(&tpm, &eventlog::write(&both), "replay-pcr4-too"),
        "pcr-policy-mismatch",
        "PCR 4 sha256 event",
    );
    // And with the init's leave-initrd extend replayed as well.
    drop(tpm);
    let tpm = b.reboot(&extends);
    eventlog::extend(&tpm, &[leave_initrd()]);
    b.assert_refused(
        b.attest(&tpm, &eventlog::write(&genuine), "replay-leave"),
        "event-log-mismatch",
        "the event log replays to",
    );
}

#[test]
fn after_leave_initrd_the_runtime_cannot_attest_as_the_booting_node() {
    let b = bench();
    let genuine = measurements(&b.genuine);
    // The genuine chain, then the init's leave-initrd before the runtime
    // starts: the runtime quoting now has PCR 11 past the policy's value,
    // whatever log it sends.
    let mut extends = genuine.clone();
    extends.push(leave_initrd());
    let tpm = b.reboot(&extends);
    b.assert_refused(
        b.attest(&tpm, &eventlog::write(&genuine), "runtime"),
        "event-log-mismatch",
        "PCR 11 sha256: the event log replays to",
    );
    // Owning up to the extend in its log does not help either.
    b.assert_refused(
        b.attest(&tpm, &eventlog::write(&extends), "runtime-honest"),
        "pcr-policy-mismatch",
        "(not in the policy; logged as leave-initrd) differs",
    );
}

#[test]
fn without_a_policy_a_strict_server_refuses_and_says_how_to_set_one() {
    let b = bench();
    b.server.ember(&["policy", "show"]).expect_ok("policy show");
    // Another group, no policy of its own and no default.
    let tpm_dir = ScratchDir::new("measured-tpm2");
    Swtpm::setup(tpm_dir.path()).expect("manufacture swtpm");
    let tpm = Swtpm::start_tcp(tpm_dir.path()).expect("start swtpm");
    b.server
        .enroll_swtpm("node-b", "rack2", &tpm)
        .expect_ok("enroll");
    let run = b.server.attest(&tpm.spec(), &["--no-overlay"]);
    assert!(!run.ok);
    assert!(run.stderr.contains("no PCR policy set"), "{}", run.stderr);
    let log = b.server.log();
    assert!(log.contains("ember serve --lab-record-first-boot"), "{log}");
}

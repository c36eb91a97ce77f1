//! `ember tpm` against swtpm, as someone debugging a node would use it.

use ember_tests::swtpm::{Swtpm, LOCALCA_ISSUER, LOCALCA_ROOT};
use ember_tests::{ember_bin, ScratchDir};
use std::process::Command;

#[test]
fn ember_tpm_info_pcrs_ek_and_quote_work_against_swtpm() {
    let dir = ScratchDir::new("tpm-cli");
    let state = dir.path().join("state");
    Swtpm::setup_cached(&state).unwrap();
    let sw = Swtpm::start_tcp(&state).unwrap();

    let (ok, out) = sw.ember_tpm(&["info"]);
    assert!(ok, "{out}");
    assert!(out.contains("family:            2.0"), "{out}");
    assert!(out.contains("pcr bank:          sha256 (24 PCRs)"), "{out}");
    assert!(out.contains("0x01c00002"), "{out}");

    let (ok, out) = sw.ember_tpm(&["pcrs", "--pcrs", "sha256:0,16"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("sha256:16 {}", "00".repeat(32))),
        "{out}"
    );

    let (ok, out) = sw.ember_tpm(&["ek", "--ca", LOCALCA_ISSUER, "--ca", LOCALCA_ROOT]);
    assert!(ok, "{out}");
    assert!(
        out.contains("key:       matches the EK") && out.contains("chain:     valid"),
        "{out}"
    );
    let (ok, out) = sw.ember_tpm(&["ek", "--alg", "ecc384"]);
    assert!(
        ok && out.contains("ECC NIST P-384") && out.contains("matches the EK"),
        "{out}"
    );
    // Only the issuer, not the root: the chain is refused.
    let (ok, out) = sw.ember_tpm(&["ek", "--ca", LOCALCA_ISSUER]);
    assert!(!ok && out.contains("EK certificate chain"), "{out}");

    let qdir = dir.path().join("quote");
    let qd = qdir.display().to_string();
    let (ok, out) = sw.ember_tpm(&[
        "quote",
        "--nonce",
        "0badcafe",
        "--pcrs",
        "sha256:0,1,2",
        "--out-dir",
        &qd,
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("nonce:       0badcafe") && out.contains("verified:"),
        "{out}"
    );
    // The files it wrote verify with tpm2_checkquote as well.
    let p = |f: &str| qdir.join(f).display().to_string();
    sw.tpm2_run(
        "tpm2_checkquote",
        &[
            "-u",
            &p("ak.pub"),
            "-m",
            &p("quote.msg"),
            "-s",
            &p("quote.sig"),
            "-f",
            &p("pcrs.bin"),
            "-l",
            "sha256:0,1,2",
            "-g",
            "sha256",
            "-q",
            "0badcafe",
        ],
    )
    .unwrap();

    let (ok, out) = sw.ember_tpm(&["quote", "--nonce", "xyz"]);
    assert!(!ok && out.contains("hex"), "{out}");
    drop(sw);
    // No TPM at all: a clear error, not a panic.
    let out = Command::new(ember_bin())
        .args(["tpm", "info", "--tpm", "swtpm:127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("opening TPM"));
}

/// `ember tpm eventlog` on a log OVMF and systemd-stub wrote (the one
/// ember_tpm's unit tests replay): each event of the selected PCRs with
/// what it says it measured, then their replayed values.
#[test]
fn ember_tpm_eventlog_decodes_a_real_ovmf_log() {
    let log = ember_tests::workspace_root().join("tpm/src/testdata/ovmf-uki-eventlog.bin");
    let out = Command::new(ember_bin())
        .args(["tpm", "eventlog", "--pcr", "4,11", "--log"])
        .arg(&log)
        .output()
        .expect("run ember");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(": PCR 4 EV_EFI_ACTION sha256 3d6772b4f84ed47595d72a2c4c5ffd15f5bb72c7507fe26f2aaee2c69d5633ba Calling EFI Application from Boot Option"),
        "{text}"
    );
    assert!(
        text.contains(": PCR 11 EV_IPL sha256 15ee37e75f1e8d42080e91fdbbd2560780918c81fe3687ae6d15c472bbdaac75 .initrd"),
        "{text}"
    );
    assert!(!text.contains(": PCR 7 "), "{text}");
    assert!(
        text.contains(
            "\nPCR 4 sha256 4724c90d11ada3e995962c0fecf6f1ecf7f5ceec68b8777791e8356d3e046eac\n"
        ) && text.ends_with(
            "\nPCR 11 sha256 352e51d0178af3e4090ef36a9075ee9c5af678e009b83289d22215e908d962f8\n"
        ),
        "{text}"
    );
    let bad = Command::new(ember_bin())
        .args(["tpm", "eventlog", "--log"])
        .arg(ember_tests::workspace_root().join("README.md"))
        .output()
        .expect("run ember");
    assert!(!bad.status.success());
}

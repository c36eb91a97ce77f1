//! The last-known-good rollback counter (`ember_tpm::counter`) on a real
//! swtpm, attacked the way someone with the disk or a shell on the node
//! would, and cross-checked with tpm2-tools (Debian's 5.4): the index's
//! Name, its write policy and the PolicyNV term the slot keys are sealed
//! with. swtpm serves one connection at a time, so ours is dropped before
//! a tool runs.

use ember_tests::swtpm::TpmFixture;
use ember_tpm::counter::{self, Found, INDEX};
use ember_tpm::tpm2_rc::TpmRcBase;
use ember_tpm::*;

/// What the init's lkg-floor phase does on a fresh TPM.
fn define_and_start(f: &TpmFixture) -> u64 {
    let mut tpm = f.connect();
    assert_eq!(tpm.rollback_counter().unwrap(), Found::Absent);
    tpm.define_rollback_counter(&[]).unwrap();
    assert_eq!(tpm.rollback_counter().unwrap(), Found::Unwritten);
    tpm.increment_rollback_counter().unwrap();
    match tpm.rollback_counter().unwrap() {
        Found::Counter(v) => v,
        other => panic!("counter not written: {other:?}"),
    }
}

fn value(tpm: &mut Tpm<SocketTransport>) -> u64 {
    match tpm.rollback_counter().unwrap() {
        Found::Counter(v) => v,
        other => panic!("counter not written: {other:?}"),
    }
}

fn slot_pcrs() -> PcrSelection {
    PcrSelection::parse("sha256:16").unwrap()
}

/// A slot key as the init seals it: PolicyPCR ∧ PolicyNV(counter ≤ n).
fn seal_slot(tpm: &mut Tpm<SocketTransport>, srk: u32, secret: &[u8], n: u64) -> SealedObject {
    let sel = slot_pcrs();
    let values = tpm.pcr_read(&sel).unwrap();
    let digest = pcr_composite_digest(HashAlg::Sha256, &sel, &values).unwrap();
    let policy = counter::not_past(PolicyDigest::new().pcr(&sel, &digest).unwrap(), n).unwrap();
    tpm.seal(srk, secret, policy.as_bytes()).unwrap()
}

/// Unseal straight at the TPM, claiming `n`: no software check in between.
fn unseal_slot(
    tpm: &mut Tpm<SocketTransport>,
    srk: u32,
    sealed: &SealedObject,
    n: u64,
) -> Result<Vec<u8>> {
    tpm.unseal_not_past(srk, sealed, &slot_pcrs(), n)
}

#[test]
fn counter_name_and_policies_equal_what_tpm2_tools_compute() {
    let f = TpmFixture::new("nv-tools");
    // tpm2-tools builds the write policy in a trial session...
    let session = f.p("trial.ctx");
    let write_policy = f.p("write.pol");
    f.tool("tpm2_startauthsession", &["-S", &session]);
    f.tool(
        "tpm2_policycommandcode",
        &["-S", &session, "TPM2_CC_NV_Increment"],
    );
    f.tool(
        "tpm2_policypcr",
        &["-S", &session, "-l", "sha256:15", "-L", &write_policy],
    );
    f.tool("tpm2_flushcontext", &[&session]);
    assert_eq!(
        std::fs::read(&write_policy).unwrap(),
        counter::WRITE_POLICY,
        "write policy"
    );
    // ...and defines the index with it: Ember takes that index as its own
    // (same attributes, policy, size) and starts it.
    f.tool(
        "tpm2_nvdefine",
        &[
            &format!("0x{INDEX:08x}"),
            "-C",
            "o",
            "-s",
            "8",
            "-a",
            "nt=counter|policywrite|authread|no_da",
            "-L",
            &write_policy,
        ],
    );
    {
        let mut tpm = f.connect();
        assert_eq!(tpm.rollback_counter().unwrap(), Found::Unwritten);
        tpm.increment_rollback_counter().unwrap();
        let public = tpm.nv_read_public(INDEX).unwrap();
        assert_eq!(public.name, counter::NAME, "our Name is the TPM's");
        assert_eq!(value(&mut tpm), 1);
    }
    // tpm2_nvreadpublic prints the same Name.
    let shown =
        String::from_utf8(f.tool("tpm2_nvreadpublic", &[&format!("0x{INDEX:08x}")])).unwrap();
    let hex: String = counter::NAME.iter().map(|b| format!("{b:02x}")).collect();
    assert!(shown.contains(&hex), "{shown}");
    // tpm2_policynv against the live index gives our PolicyNV term.
    let operand = f.p("operand.bin");
    std::fs::write(&operand, 5u64.to_be_bytes()).unwrap();
    let nv_policy = f.p("nv.pol");
    f.tool("tpm2_startauthsession", &["-S", &session]);
    f.tool(
        "tpm2_policynv",
        &[
            "-S",
            &session,
            "-i",
            &operand,
            &format!("0x{INDEX:08x}"),
            "ule",
            "-C",
            &format!("0x{INDEX:08x}"),
            "-L",
            &nv_policy,
        ],
    );
    f.tool("tpm2_flushcontext", &[&session]);
    let ours = counter::not_past(PolicyDigest::new(), 5).unwrap();
    assert_eq!(std::fs::read(&nv_policy).unwrap(), ours.as_bytes());
}

#[test]
fn older_slot_key_stops_unsealing_in_the_tpm_once_a_newer_slot_is_blessed() {
    let f = TpmFixture::new("nv-rollback");
    let start = define_and_start(&f);
    let mut tpm = f.connect();
    let srk = tpm.create_srk().unwrap().handle;
    // Slot a was blessed at `start`; slot b was written after it.
    let older = seal_slot(&mut tpm, srk, b"older-slot-key", start);
    let newer = seal_slot(&mut tpm, srk, b"newer-slot-key", start + 1);
    assert_eq!(
        unseal_slot(&mut tpm, srk, &older, start).unwrap(),
        b"older-slot-key"
    );
    assert_eq!(
        unseal_slot(&mut tpm, srk, &newer, start + 1).unwrap(),
        b"newer-slot-key"
    );

    // The boot phase blesses slot b.
    tpm.increment_rollback_counter().unwrap();
    assert_eq!(value(&mut tpm), start + 1);
    assert_eq!(
        unseal_slot(&mut tpm, srk, &newer, start + 1).unwrap(),
        b"newer-slot-key"
    );

    // Slot a, straight at the TPM with no software check: PolicyNV fails.
    let err = unseal_slot(&mut tpm, srk, &older, start).unwrap_err();
    assert!(err.is_tpm(TpmRcBase::Policy), "{err}");
    // Slot a with its record edited to claim b's value: the session then
    // computes another digest than the key's authPolicy.
    let err = unseal_slot(&mut tpm, srk, &older, start + 1).unwrap_err();
    assert!(err.is_tpm(TpmRcBase::PolicyFail), "{err}");
    // Without the NV term at all (a PCR-only session): refused too.
    let err = tpm
        .unseal_with_pcr_policy(srk, &older, &slot_pcrs())
        .unwrap_err();
    assert!(err.is_tpm(TpmRcBase::PolicyFail), "{err}");
    tpm.flush_context(srk).unwrap();
    assert_eq!(
        tpm.get_handles(consts::HR_TRANSIENT).unwrap(),
        Vec::<u32>::new()
    );
}

#[test]
fn after_leave_initrd_nothing_can_move_the_counter() {
    let f = TpmFixture::new("nv-runtime");
    let start = define_and_start(&f);
    let mut tpm = f.connect();
    // What the init's leave-initrd step does to PCR 15.
    let event = HashAlg::Sha256
        .digest(&[b"ember: leaving initrd boot phase"])
        .unwrap();
    tpm.pcr_extend(counter::BOOT_PHASE_PCR, &[(HashAlg::Sha256, &event)])
        .unwrap();
    let err = tpm.increment_rollback_counter().unwrap_err();
    assert!(err.is_tpm(TpmRcBase::PolicyFail), "{err}");
    // The index's (empty) authValue does not authorize a write.
    let err = tpm.nv_increment(INDEX, Auth::Password(&[])).unwrap_err();
    assert!(err.is_tpm(TpmRcBase::AuthUnavailable), "{err}");
    assert_eq!(value(&mut tpm), start);
    drop(tpm);
    // Nor does the owner, through tpm2-tools.
    assert!(!f
        .swtpm
        .tpm2("tpm2_nvincrement")
        .args([&format!("0x{INDEX:08x}"), "-C", "o"])
        .output()
        .unwrap()
        .status
        .success());
    assert_eq!(value(&mut f.connect()), start);
}

#[test]
fn an_index_planted_with_other_attributes_or_policy_is_refused_by_name() {
    for (attrs, policy, what) in [
        (
            "nt=counter|authwrite|authread|no_da",
            false,
            "its attributes differ",
        ),
        (
            "nt=counter|policywrite|authread|no_da",
            true,
            "its authPolicy differs",
        ),
    ] {
        let f = TpmFixture::new("nv-planted");
        let mut args = vec![
            format!("0x{INDEX:08x}"),
            "-C".into(),
            "o".into(),
            "-s".into(),
            "8".into(),
            "-a".into(),
            attrs.into(),
        ];
        if policy {
            // A policy the attacker can satisfy whenever they like.
            let pol = f.p("any.pol");
            std::fs::write(&pol, [0x11u8; 32]).unwrap();
            args.extend(["-L".into(), pol]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        f.tool("tpm2_nvdefine", &args);
        let mut tpm = f.connect();
        let err = tpm.rollback_counter().unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::ForeignNvIndex { index: INDEX, what: w, .. } if *w == what),
            "{err}"
        );
        let shown = err.to_string();
        assert!(shown.contains("0x01800e70"), "{shown}");
        assert!(shown.contains(what), "{shown}");
        // Defining over it is refused by the TPM: the node cannot be
        // talked into using the planted index.
        let err = tpm.define_rollback_counter(&[]).unwrap_err();
        assert!(err.is_tpm(TpmRcBase::NvDefined), "{err}");
    }
}

#[test]
fn deleting_and_redefining_the_counter_does_not_lower_it() {
    let f = TpmFixture::new("nv-redefine");
    let start = define_and_start(&f);
    let mut tpm = f.connect();
    for _ in 0..3 {
        tpm.increment_rollback_counter().unwrap();
    }
    assert_eq!(value(&mut tpm), start + 3);
    // The owner (empty auth on this TPM, as on most) deletes it...
    tpm.nv_undefine_space(&[], INDEX).unwrap();
    assert_eq!(tpm.rollback_counter().unwrap(), Found::Absent);
    // ...and the node defines it again: the TPM starts it above the old value.
    tpm.define_rollback_counter(&[]).unwrap();
    tpm.increment_rollback_counter().unwrap();
    assert!(
        value(&mut tpm) > start + 3,
        "a re-defined counter went back"
    );
}

#[test]
fn a_set_owner_password_is_a_named_refusal() {
    let f = TpmFixture::new("nv-owner");
    f.tool("tpm2_changeauth", &["-c", "o", "owner-secret"]);
    let mut tpm = f.connect();
    let err = tpm.define_rollback_counter(&[]).unwrap_err();
    assert!(
        err.is_tpm(TpmRcBase::BadAuth) || err.is_tpm(TpmRcBase::AuthFail),
        "{err}"
    );
    // With the owner password the same definition works.
    tpm.define_rollback_counter(b"owner-secret").unwrap();
    assert_eq!(tpm.rollback_counter().unwrap(), Found::Unwritten);
}

/// `ember tpm unseal` and `ember tpm counter`, the commands a workload on a
/// node would run against last-known-good (`measured_boot_qemu` runs them
/// inside a booted VM): while the slot's PCR and PCR 15 are as sealed, the
/// key unseals and the counter moves; after the boot-phase extends the TPM
/// refuses both and the counter stays where it was.
#[test]
fn ember_tpm_unseal_and_counter_increment_are_refused_once_the_pcrs_move() {
    use ember_proto::manifest::{SignedBootImage, SignedManifest};
    use ember_proto::slot::{SealedKey, SlotRecord, RECORD_VERSION};

    let f = TpmFixture::new("nv-cli");
    let start = define_and_start(&f);
    let mut tpm = f.connect();
    let srk = tpm.create_srk().unwrap();
    // Sealed as the init seals a slot: for the counter's next blessing.
    let sealed = seal_slot(&mut tpm, srk.handle, &[7; 32], start + 1);
    tpm.flush_context(srk.handle).unwrap();
    let pcr16 = tpm.pcr_read(&slot_pcrs()).unwrap();
    let record = SlotRecord {
        version: RECORD_VERSION,
        generation: 1,
        manifest: SignedManifest {
            body: vec![],
            signature: vec![],
        },
        boot_image: SignedBootImage {
            body: vec![],
            signature: vec![],
        },
        keys: vec![SealedKey {
            public: sealed.public.to_bytes().unwrap(),
            private: sealed.private.clone(),
            pcrs: vec![16],
            values: vec![pcr16.get(HashAlg::Sha256, 16).unwrap().to_vec()],
            sealed_for: start + 1,
        }],
        cmdline: String::new(),
    };
    std::fs::write(f.path("slot.rec"), record.to_bytes()).unwrap();
    let slot = f.p("slot.rec");
    drop(tpm);

    let (ok, out) = f.swtpm.ember_tpm(&["unseal", "--slot", &slot]);
    let released = format!(
        "key 0 (PCR 16 as sealed; counter <= {}): the TPM released 32 bytes",
        start + 1
    );
    assert!(ok && out.contains(&released), "{out}");
    let (ok, out) = f.swtpm.ember_tpm(&["counter", "increment"]);
    let moved = format!("rollback counter 0x01800e70: {}", start + 1);
    assert!(ok && out.contains(&moved), "{out}");
    let (ok, out) = f
        .swtpm
        .ember_tpm(&["unseal", "--slot", &slot, "--key", "0"]);
    assert!(ok && out.contains(&released), "{out}");

    // Leave-initrd, and something else extending the slot's PCR.
    let mut tpm = f.connect();
    let event = HashAlg::Sha256
        .digest(&[b"ember: leaving initrd boot phase"])
        .unwrap();
    for pcr in [counter::BOOT_PHASE_PCR, 16] {
        tpm.pcr_extend(pcr, &[(HashAlg::Sha256, &event)]).unwrap();
    }
    drop(tpm);
    let (ok, out) = f.swtpm.ember_tpm(&["counter", "increment"]);
    assert!(!ok && out.contains("TPM_RC_POLICY_FAIL"), "{out}");
    let (ok, out) = f.swtpm.ember_tpm(&["counter", "read"]);
    assert!(ok && out.contains(&moved), "the counter moved: {out}");
    let (ok, out) = f.swtpm.ember_tpm(&["unseal", "--slot", &slot]);
    assert!(!ok, "{out}");
    assert!(out.contains("key 0 (PCR 16 differs: now "), "{out}");
    assert!(
        out.contains("refused by the TPM: TPM_CC_Unseal failed: [TPM_RC_POLICY_FAIL"),
        "{out}"
    );
    assert!(out.contains("the TPM released no key of"), "{out}");
    let (ok, out) = f
        .swtpm
        .ember_tpm(&["unseal", "--slot", &slot, "--key", "1"]);
    assert!(
        !ok && out.contains("holds 1 sealed keys: no key 1"),
        "{out}"
    );
}

//! Responses a broken or hostile TPM (or a man in the middle on the bus)
//! might send: every one is a typed error, none panics, none is read past
//! its end.

use ember_tpm::consts::HR_TRANSIENT;
use ember_tpm::tpm2_rc::{TpmRcBase, TpmRcIndex};
use ember_tpm::*;

fn header(tag: u16, size: u32, rc: u32) -> Vec<u8> {
    let mut v = tag.to_be_bytes().to_vec();
    v.extend_from_slice(&size.to_be_bytes());
    v.extend_from_slice(&rc.to_be_bytes());
    v
}

fn frame(tag: u16, rc: u32, body: &[u8]) -> Vec<u8> {
    let mut v = header(tag, (10 + body.len()) as u32, rc);
    v.extend_from_slice(body);
    v
}

fn tpm_with(responses: &[Vec<u8>]) -> Tpm<FakeTransport> {
    let mut t = FakeTransport::new();
    for r in responses {
        t.push(r);
    }
    Tpm::new(t)
}

/// A well-formed GetRandom response carrying `bytes`.
fn get_random_ok(bytes: &[u8]) -> Vec<u8> {
    let mut body = (bytes.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(bytes);
    frame(0x8001, 0, &body)
}

#[test]
fn truncated_header_is_response_too_short() {
    for n in 0..10 {
        let mut tpm = tpm_with(&[get_random_ok(&[1, 2, 3, 4])[..n].to_vec()]);
        assert_eq!(
            tpm.get_random(4).unwrap_err(),
            Error::new(ErrorKind::ResponseTooShort { len: n })
        );
    }
}

#[test]
fn size_field_disagreeing_with_arrived_bytes_is_refused() {
    let mut r = get_random_ok(&[1, 2, 3, 4]);
    r[5] += 1; // header claims one byte more than arrived
    let mut tpm = tpm_with(&[r.clone()]);
    assert_eq!(
        tpm.get_random(4).unwrap_err(),
        Error::new(ErrorKind::ResponseSizeMismatch {
            declared: 17,
            received: 16
        })
    );
    r[5] -= 2; // and one byte less
    let mut tpm = tpm_with(&[r]);
    assert_eq!(
        tpm.get_random(4).unwrap_err(),
        Error::new(ErrorKind::ResponseSizeMismatch {
            declared: 15,
            received: 16
        })
    );
}

#[test]
fn unknown_tag_is_refused() {
    let mut r = get_random_ok(&[1, 2]);
    r[1] = 0x77;
    let mut tpm = tpm_with(&[r]);
    assert_eq!(
        tpm.get_random(2).unwrap_err(),
        Error::new(ErrorKind::BadResponseTag { tag: 0x8077 })
    );
}

#[test]
fn sessions_tag_on_a_command_without_sessions_is_refused() {
    let mut body = vec![0, 0, 0, 4, 0, 2, 1, 2];
    body.extend_from_slice(&[0, 0, 0, 0, 0]); // one empty auth response
    let r = frame(0x8002, 0, &body);
    let mut tpm = tpm_with(&[r]);
    assert!(matches!(
        tpm.get_random(2).unwrap_err().kind(),
        ErrorKind::BadResponseTag { .. } | ErrorKind::BadFrame { .. }
    ));
}

#[test]
fn oversized_response_is_refused_by_the_transport() {
    let big = frame(0x8001, 0, &vec![0u8; MAX_RESPONSE_SIZE]);
    let mut tpm = tpm_with(&[big]);
    assert_eq!(
        tpm.get_random(4).unwrap_err(),
        Error::new(ErrorKind::ResponseTooLarge {
            declared: MAX_RESPONSE_SIZE + 10,
            limit: MAX_RESPONSE_SIZE
        })
    );
}

#[test]
fn parameter_running_past_the_end_is_malformed() {
    // TPM2B claims 200 bytes, 4 follow.
    let r = frame(0x8001, 0, &[0, 200, 1, 2, 3, 4]);
    let mut tpm = tpm_with(&[r]);
    assert!(matches!(
        tpm.get_random(4).unwrap_err().kind(),
        ErrorKind::Malformed {
            what: "randomBytes",
            ..
        }
    ));
    // More random bytes than asked for.
    let mut tpm = tpm_with(&[get_random_ok(&[9; 8])]);
    assert!(matches!(
        tpm.get_random(4).unwrap_err().kind(),
        ErrorKind::Malformed { .. }
    ));
}

#[test]
fn error_codes_decode_to_named_errors_with_their_index() {
    // TPM_RC_POLICY_FAIL on session 1: 0x99d.
    let mut tpm = tpm_with(&[header(0x8001, 10, 0x99d)]);
    let err = tpm.get_random(1).unwrap_err();
    let rc = err.response_code().unwrap();
    assert!(err.is_tpm(TpmRcBase::PolicyFail));
    assert_eq!(rc.index(), Some(TpmRcIndex::Session(1)));
    assert_eq!(
        err.to_string(),
        "TPM_CC_GetRandom failed: [TPM_RC_POLICY_FAIL, session[1]] (0x0000099d)"
    );
    // TPM_RC_VALUE on parameter 1: 0x1c4.
    let mut tpm = tpm_with(&[header(0x8001, 10, 0x1c4)]);
    let rc = tpm.get_random(1).unwrap_err().response_code().unwrap();
    assert_eq!(
        (rc.base(), rc.index()),
        (Some(TpmRcBase::Value), Some(TpmRcIndex::Parameter(1)))
    );
    // TPM_RC_HANDLE on handle 1: 0x18b.
    let mut tpm = tpm_with(&[header(0x8001, 10, 0x18b)]);
    let rc = tpm
        .flush_context(0x8000_0000)
        .unwrap_err()
        .response_code()
        .unwrap();
    assert_eq!(
        (rc.base(), rc.index()),
        (Some(TpmRcBase::Handle), Some(TpmRcIndex::Handle(1)))
    );
    // A vendor code is still an error, just without a name.
    let mut tpm = tpm_with(&[header(0x8001, 10, 0x0000_0c00 | 0x400)]);
    let err = tpm.get_random(1).unwrap_err();
    assert!(err.response_code().is_some());
    // An error code with a body is malformed framing.
    let mut tpm = tpm_with(&[frame(0x8001, 0x101, &[0, 0])]);
    assert!(matches!(
        tpm.get_random(1).unwrap_err().kind(),
        ErrorKind::BadResponseTag { .. }
    ));
}

#[test]
fn retry_warnings_are_retried_a_bounded_number_of_times() {
    // TPM_RC_RETRY (0x922), TPM_RC_YIELDED (0x908), TPM_RC_TESTING (0x90a), then success.
    let mut tpm = tpm_with(&[
        header(0x8001, 10, 0x922),
        header(0x8001, 10, 0x908),
        header(0x8001, 10, 0x90a),
        get_random_ok(&[7, 7]),
    ]);
    assert_eq!(tpm.get_random(2).unwrap(), vec![7, 7]);
    assert_eq!(tpm.transport_mut().commands.len(), 4);
    // The same command bytes were resent each time.
    let cmds = &tpm.transport_mut().commands;
    assert!(cmds.iter().all(|c| c == &cmds[0]));

    let endless: Vec<Vec<u8>> = (0..=MAX_RETRIES + 5)
        .map(|_| header(0x8001, 10, 0x922))
        .collect();
    let mut tpm = tpm_with(&endless);
    let err = tpm.get_random(2).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::RetriesExhausted { .. }),
        "{err}"
    );
    assert_eq!(tpm.transport_mut().commands.len(), MAX_RETRIES as usize + 1);
}

#[test]
fn startup_tolerates_initialize() {
    let mut tpm = tpm_with(&[header(0x8001, 10, 0x100)]);
    tpm.startup(true).unwrap();
    let mut tpm = tpm_with(&[header(0x8001, 10, 0x101)]);
    assert!(tpm.startup(true).unwrap_err().is_tpm(TpmRcBase::Failure));
}

#[test]
fn commands_are_marshalled_as_the_spec_lays_them_out() {
    let mut tpm = tpm_with(&[frame(0x8001, 0, &[])]);
    tpm.flush_context(0x8000_0001).unwrap();
    assert_eq!(
        tpm.transport_mut().commands[0],
        [0x80, 0x01, 0, 0, 0, 14, 0, 0, 0x01, 0x65, 0x80, 0, 0, 1]
    );

    // PCR_Extend: handle, password session, TPML_DIGEST_VALUES.
    let mut tpm = tpm_with(&[frame(0x8002, 0, &[0, 0, 0, 0, 0, 0, 0, 0, 0])]);
    tpm.pcr_extend(16, &[(HashAlg::Sha256, &[0xaa; 32])])
        .unwrap();
    let c = &tpm.transport_mut().commands[0];
    assert_eq!(&c[..10], &[0x80, 0x02, 0, 0, 0, 65, 0, 0, 0x01, 0x82]);
    assert_eq!(&c[10..14], &[0, 0, 0, 16]);
    assert_eq!(&c[14..27], &[0, 0, 0, 9, 0x40, 0, 0, 9, 0, 0, 0, 0, 0]);
    assert_eq!(&c[27..33], &[0, 0, 0, 1, 0, 0x0b]);
    assert_eq!(&c[33..], &[0xaa; 32]);
}

#[test]
fn oversized_arguments_fail_before_anything_is_sent() {
    let mut tpm = tpm_with(&[]);
    let huge = vec![0u8; 5000];
    let sel = PcrSelection::parse("sha256:0").unwrap();
    assert!(matches!(
        tpm.quote(0x8000_0000, &huge, &sel).unwrap_err().kind(),
        ErrorKind::CommandTooLarge { .. }
    ));
    assert!(tpm.transport_mut().commands.is_empty());
}

#[test]
fn pcr_read_refuses_values_it_did_not_ask_for() {
    // Asked sha256:0, TPM answers with sha256:1.
    let mut body = vec![0, 0, 0, 5];
    body.extend_from_slice(&[0, 0, 0, 1, 0, 0x0b, 3, 2, 0, 0]);
    body.extend_from_slice(&[0, 0, 0, 1, 0, 32]);
    body.extend_from_slice(&[0; 32]);
    let mut tpm = tpm_with(&[frame(0x8001, 0, &body)]);
    let err = tpm
        .pcr_read(&PcrSelection::parse("sha256:0").unwrap())
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Malformed { .. }), "{err}");
}

#[test]
fn every_truncation_and_bit_flip_of_real_responses_is_handled() {
    // A GetCapability(HANDLES) and a ReadPublic-shaped response: cut at every
    // length and flip every byte; the parser must return, never panic.
    let mut caps = vec![0, 0, 0, 0, 1, 0, 0, 0, 2, 0x80, 0, 0, 0, 0x80, 0, 0, 1];
    caps[0] = 0;
    let caps = frame(0x8001, 0, &caps);
    let pubarea = ak_template(AkKind::EccP256).to_bytes().unwrap();
    let mut rp = (pubarea.len() as u16).to_be_bytes().to_vec();
    rp.extend_from_slice(&pubarea);
    rp.extend_from_slice(&[0, 2, 0, 0x0b, 0, 0]);
    let rp = frame(0x8001, 0, &rp);
    for base in [caps, rp] {
        for n in 0..=base.len() {
            let mut cut = base[..n].to_vec();
            if n >= 6 {
                cut[2..6].copy_from_slice(&(n as u32).to_be_bytes());
            }
            let _ = tpm_with(&[cut.clone()]).get_handles(HR_TRANSIENT);
            let _ = tpm_with(&[cut]).read_public(0x8000_0000);
        }
        for i in 0..base.len() {
            for bit in [0x01u8, 0x80, 0xff] {
                let mut f = base.clone();
                f[i] ^= bit;
                let _ = tpm_with(&[f.clone()]).get_handles(HR_TRANSIENT);
                let _ = tpm_with(&[f]).read_public(0x8000_0000);
            }
        }
    }
}

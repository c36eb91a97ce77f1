//! ember-tpm against a real swtpm: every command, its failure modes, and the
//! whole attestation round trip (EK → AK → MakeCredential →
//! ActivateCredential → Quote → verify).

use ember_tests::swtpm::{Swtpm, LOCALCA_ISSUER, LOCALCA_ROOT};
use ember_tests::ScratchDir;
use ember_tpm::consts::{HR_NV_INDEX, HR_TRANSIENT, RH_ENDORSEMENT};
use ember_tpm::tpm2_rc::TpmRcBase;
use ember_tpm::*;

/// Field order is drop order: connection, then swtpm, then its state.
struct Fixture {
    tpm: Tpm<SocketTransport>,
    swtpm: Swtpm,
    _dir: ScratchDir,
}

fn fixture(tag: &str) -> Fixture {
    let dir = ScratchDir::new(tag);
    Swtpm::setup_cached(dir.path()).expect("manufacture swtpm state");
    let swtpm = Swtpm::start_tcp(dir.path()).expect("start swtpm");
    let tpm = Tpm::new(SocketTransport::connect_tcp(&swtpm.addr()).expect("connect to swtpm"));
    Fixture {
        tpm,
        swtpm,
        _dir: dir,
    }
}

fn local_ca() -> Vec<Vec<u8>> {
    let mut cas = Vec::new();
    for p in [LOCALCA_ISSUER, LOCALCA_ROOT] {
        let bytes = std::fs::read(p).expect("swtpm local CA certificate");
        cas.extend(host::certificates_from_pem_or_der(&bytes).expect("parse CA PEM"));
    }
    cas
}

fn assert_no_transient_objects(tpm: &mut Tpm<SocketTransport>) {
    assert_eq!(
        tpm.get_handles(HR_TRANSIENT).unwrap(),
        Vec::<u32>::new(),
        "transient objects left behind"
    );
}

#[test]
fn attestation_round_trip_ek_ak_credential_quote_verify() {
    let mut f = fixture("tpm-roundtrip");
    let tpm = &mut f.tpm;
    tpm.startup(true).unwrap();

    // EK and its certificate, validated to swtpm's local CA.
    let ek = tpm.create_ek(EkTemplate::Rsa2048).unwrap();
    let cert_der = tpm.nv_read_ek_certificate(EkTemplate::Rsa2048).unwrap();
    let cert = host::verify_ek_certificate(&cert_der, &local_ca()).unwrap();
    host::ek_certificate_matches(&cert, &ek.public).unwrap();
    assert_eq!(
        ek.name,
        ek.public.name().unwrap(),
        "TPM's EK Name equals ours"
    );

    // AK under the SRK.
    let srk = tpm.create_srk().unwrap();
    let (_ak_blob, ak) = tpm.create_ak(srk.handle, AkKind::Rsa2048).unwrap();
    assert_eq!(
        ak.name,
        ak.public.name().unwrap(),
        "TPM's AK Name equals ours"
    );

    // Server wraps a secret for (EK, AK name); the TPM unwraps it.
    let ek_wire = ek.public.to_bytes().unwrap();
    let ak_wire = ak.public.to_bytes().unwrap();
    let server_ek = PublicArea::from_bytes(&ek_wire).unwrap();
    let secret = b"ember-attest-secret-0123456789ab";
    let cred = host::make_credential(&server_ek, &name_of(&ak_wire).unwrap(), secret).unwrap();
    let recovered = tpm
        .activate_credential(&ak, &ek, &cred.credential_blob, &cred.encrypted_secret)
        .unwrap();
    assert_eq!(recovered, secret);

    // Quote over PCRs 0-7 and 16 with a fresh nonce, verified by the server.
    tpm.pcr_extend(16, &[(HashAlg::Sha256, &[0x42; 32])])
        .unwrap();
    let sel = PcrSelection::parse("sha256:0,1,2,3,4,5,6,7,16").unwrap();
    let nonce = tpm.get_random(20).unwrap();
    let quote = tpm.quote(ak.handle, &nonce, &sel).unwrap();
    let pcrs = tpm.pcr_read(&sel).unwrap();
    let info =
        host::verify_quote(&ak_wire, &quote.attest, &quote.signature, &nonce, &pcrs).unwrap();
    assert_eq!(info.quote.pcr_select, sel);
    assert_eq!(info.qualified_signer.len(), 34);

    // What a verifier must refuse.
    assert_eq!(
        host::verify_quote(
            &ak_wire,
            &quote.attest,
            &quote.signature,
            b"old nonce",
            &pcrs
        )
        .unwrap_err(),
        Error::new(ErrorKind::NonceMismatch)
    );
    let mut other = pcrs.clone();
    other.values[8].digest[0] ^= 1;
    assert_eq!(
        host::verify_quote(&ak_wire, &quote.attest, &quote.signature, &nonce, &other).unwrap_err(),
        Error::new(ErrorKind::PcrDigestMismatch)
    );
    let mut forged = quote.attest.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert_eq!(
        host::verify_quote(&ak_wire, &forged, &quote.signature, &nonce, &pcrs).unwrap_err(),
        Error::new(ErrorKind::BadSignature { what: "quote" })
    );

    for h in [ak.handle, srk.handle, ek.handle] {
        tpm.flush_context(h).unwrap();
    }
    assert_no_transient_objects(tpm);
}

#[test]
fn ecc_attestation_key_quote_verifies() {
    let mut f = fixture("tpm-ecc-ak");
    let tpm = &mut f.tpm;
    let srk = tpm.create_srk().unwrap();
    let (blob, ak) = tpm.create_ak(srk.handle, AkKind::EccP256).unwrap();
    let sel = PcrSelection::parse("sha256:0,1,2").unwrap();
    let quote = tpm.quote(ak.handle, b"nonce-1", &sel).unwrap();
    let pcrs = tpm.pcr_read(&sel).unwrap();
    host::verify_quote(
        &ak.public.to_bytes().unwrap(),
        &quote.attest,
        &quote.signature,
        b"nonce-1",
        &pcrs,
    )
    .unwrap();
    assert!(matches!(
        Signature::from_bytes(&quote.signature).unwrap(),
        Signature::Ecdsa { .. }
    ));

    // The stored blob loads again into the same key.
    tpm.flush_context(ak.handle).unwrap();
    let again = tpm.load(srk.handle, &[], &blob).unwrap();
    assert_eq!(again.name, ak.name);
    tpm.flush_context(again.handle).unwrap();
    tpm.flush_context(srk.handle).unwrap();
    assert_no_transient_objects(tpm);
}

#[test]
fn make_credential_works_for_every_ek_template() {
    let mut f = fixture("tpm-mkcred");
    let tpm = &mut f.tpm;
    let srk = tpm.create_srk().unwrap();
    let (_, ak) = tpm.create_ak(srk.handle, AkKind::EccP256).unwrap();
    for t in [
        EkTemplate::Rsa2048,
        EkTemplate::EccP256,
        EkTemplate::EccP384,
    ] {
        let ek = tpm.create_ek(t).unwrap();
        let secret = [t as u8 + 1; 32];
        let cred = host::make_credential(&ek.public, &ak.name, &secret).unwrap();
        let got = tpm
            .activate_credential(&ak, &ek, &cred.credential_blob, &cred.encrypted_secret)
            .unwrap();
        assert_eq!(got, secret, "template {t:?}");

        // Bound to the AK's Name: a credential for another name fails the
        // integrity check inside the TPM.
        let mut wrong_name = ak.name.clone();
        wrong_name[5] ^= 0xff;
        let cred = host::make_credential(&ek.public, &wrong_name, &secret).unwrap();
        let err = tpm
            .activate_credential(&ak, &ek, &cred.credential_blob, &cred.encrypted_secret)
            .unwrap_err();
        assert!(err.is_tpm(TpmRcBase::Integrity), "{t:?}: {err}");
        tpm.flush_context(ek.handle).unwrap();
    }
    tpm.flush_context(ak.handle).unwrap();
    tpm.flush_context(srk.handle).unwrap();
    assert_no_transient_objects(tpm);
}

#[test]
fn ek_certificates_match_their_templates_and_chain_to_swtpm_local_ca() {
    let mut f = fixture("tpm-ekcert");
    let tpm = &mut f.tpm;
    let nv = tpm.get_handles(HR_NV_INDEX).unwrap();
    assert!(
        nv.contains(&EK_CERT_RSA_NV_INDEX) && nv.contains(&EK_CERT_ECC_P384_NV_INDEX),
        "{nv:x?}"
    );
    for t in [EkTemplate::Rsa2048, EkTemplate::EccP384] {
        let public = tpm.nv_read_public(t.certificate_nv_index()).unwrap();
        let der = tpm.nv_read_ek_certificate(t).unwrap();
        assert_eq!(der.len(), public.data_size as usize);
        let cert = host::verify_ek_certificate(&der, &local_ca()).unwrap();
        let ek = tpm.create_ek(t).unwrap();
        host::ek_certificate_matches(&cert, &ek.public).unwrap();
        tpm.flush_context(ek.handle).unwrap();
    }
    // The RSA certificate does not certify the ECC EK.
    let rsa_cert =
        host::parse_ek_certificate(&tpm.nv_read_ek_certificate(EkTemplate::Rsa2048).unwrap())
            .unwrap();
    let ecc = tpm.create_ek(EkTemplate::EccP384).unwrap();
    assert_eq!(
        host::ek_certificate_matches(&rsa_cert, &ecc.public),
        Err(Error::new(ErrorKind::EkKeyMismatch))
    );
    tpm.flush_context(ecc.handle).unwrap();
    // Without the root, or with an unrelated CA, the chain is untrusted.
    let der = tpm.nv_read_ek_certificate(EkTemplate::Rsa2048).unwrap();
    let issuer_only =
        host::certificates_from_pem_or_der(&std::fs::read(LOCALCA_ISSUER).unwrap()).unwrap();
    assert!(matches!(
        host::verify_ek_certificate(&der, &issuer_only)
            .as_ref()
            .map_err(Error::kind),
        Err(ErrorKind::UntrustedChain { .. })
    ));
    assert!(matches!(
        host::verify_ek_certificate(&der, &[])
            .as_ref()
            .map_err(Error::kind),
        Err(ErrorKind::UntrustedChain { .. })
    ));
    // A flipped bit in the signed part breaks the signature.
    let mut tampered = der.clone();
    tampered[200] ^= 1;
    assert!(host::verify_ek_certificate(&tampered, &local_ca()).is_err());
}

#[test]
fn sealed_secret_unseals_until_a_pcr_changes() {
    let mut f = fixture("tpm-seal");
    let tpm = &mut f.tpm;
    let srk = tpm.create_srk().unwrap();
    let sel = PcrSelection::parse("sha256:7,16").unwrap();
    let values = tpm.pcr_read(&sel).unwrap();
    let digest = pcr_composite_digest(HashAlg::Sha256, &sel, &values).unwrap();
    let policy = policy_pcr_digest(&sel, &digest).unwrap();

    // Our software policy digest is the one the TPM computes.
    let trial = tpm.start_policy_session(SessionKind::Trial).unwrap();
    tpm.policy_pcr(&trial, &sel, &digest).unwrap();
    assert_eq!(tpm.policy_get_digest(&trial).unwrap(), policy);
    tpm.flush_context(trial.handle).unwrap();

    let sealed = tpm.seal(srk.handle, b"disk-key-material", &policy).unwrap();
    assert_eq!(
        tpm.unseal_with_pcr_policy(srk.handle, &sealed, &sel)
            .unwrap(),
        b"disk-key-material"
    );

    // Plain password auth is not enough: the object has no userWithAuth.
    let obj = tpm.load(srk.handle, &[], &sealed).unwrap();
    let err = tpm.unseal(obj.handle, Auth::Password(&[])).unwrap_err();
    assert!(err.is_tpm(TpmRcBase::AuthUnavailable), "{err}");
    tpm.flush_context(obj.handle).unwrap();

    tpm.pcr_extend(16, &[(HashAlg::Sha256, &[1; 32])]).unwrap();
    let err = tpm
        .unseal_with_pcr_policy(srk.handle, &sealed, &sel)
        .unwrap_err();
    assert!(err.is_tpm(TpmRcBase::PolicyFail), "{err}");
    assert_eq!(
        err.response_code().unwrap().index(),
        Some(tpm2_rc::TpmRcIndex::Session(1))
    );
    tpm.flush_context(srk.handle).unwrap();
    assert_no_transient_objects(tpm);
}

#[test]
fn wrong_auth_wrong_policy_and_stale_handles_are_named_errors() {
    let mut f = fixture("tpm-negative");
    let tpm = &mut f.tpm;
    // Wrong owner password.
    let err = tpm
        .create_primary(Hierarchy::Owner, b"not-the-owner-password", &srk_template())
        .unwrap_err();
    assert!(
        err.is_tpm(TpmRcBase::BadAuth) || err.is_tpm(TpmRcBase::AuthFail),
        "{err}"
    );
    assert!(
        err.to_string().contains("TPM2_CreatePrimary") || err.to_string().contains("CreatePrimary"),
        "{err}"
    );

    // EK used through a policy session that never ran PolicySecret.
    let ek = tpm.create_ek(EkTemplate::Rsa2048).unwrap();
    let srk = tpm.create_srk().unwrap();
    let (_, ak) = tpm.create_ak(srk.handle, AkKind::EccP256).unwrap();
    let cred = host::make_credential(&ek.public, &ak.name, b"s").unwrap();
    let session = tpm.start_policy_session(SessionKind::Policy).unwrap();
    let err = tpm
        .activate_credential_with(
            ak.handle,
            Auth::Password(&[]),
            ek.handle,
            Auth::Policy(session),
            &cred.credential_blob,
            &cred.encrypted_secret,
        )
        .unwrap_err();
    assert!(err.is_tpm(TpmRcBase::PolicyFail), "{err}");
    // PolicySecret with the wrong endorsement password.
    let err = tpm
        .policy_secret(&session, RH_ENDORSEMENT, b"wrong")
        .unwrap_err();
    assert!(
        err.is_tpm(TpmRcBase::BadAuth) || err.is_tpm(TpmRcBase::AuthFail),
        "{err}"
    );
    tpm.flush_context(session.handle).unwrap();

    // Flushing twice: the second names a handle that no longer exists.
    tpm.flush_context(ak.handle).unwrap();
    let err = tpm.flush_context(ak.handle).unwrap_err();
    assert!(
        err.is_tpm(TpmRcBase::Handle) || err.is_tpm(TpmRcBase::ReferenceH0),
        "{err}"
    );
    // Quoting with the flushed AK.
    let err = tpm
        .quote(ak.handle, b"n", &PcrSelection::parse("sha256:0").unwrap())
        .unwrap_err();
    assert!(err.response_code().is_some(), "{err}");

    // An NV index that does not exist.
    let err = tpm.nv_read_public(0x01c0_0099).unwrap_err();
    assert!(err.is_tpm(TpmRcBase::Handle), "{err}");

    // Startup on a started TPM is tolerated (TPM_RC_INITIALIZE).
    tpm.startup(true).unwrap();
    tpm.flush_context(ek.handle).unwrap();
    tpm.flush_context(srk.handle).unwrap();
    assert_no_transient_objects(tpm);
}

#[test]
fn capabilities_random_and_pcrs_behave_like_a_tpm() {
    let mut f = fixture("tpm-caps");
    let tpm = &mut f.tpm;
    let caps = tpm.capabilities().unwrap();
    assert_eq!(caps.family, u32::from_be_bytes(*b"2.0\0"));
    assert_eq!(caps.vendor.trim(), "SW   TPM".trim());
    assert!(caps.nv_buffer_max >= 512);
    assert!(caps.algorithms.iter().any(|a| a.alg == consts::ALG_SHA256));
    assert!(caps
        .pcr_banks
        .banks
        .contains(&(HashAlg::Sha256, 0x00ff_ffff)));

    let a = tpm.get_random(100).unwrap();
    let b = tpm.get_random(100).unwrap();
    assert_eq!(a.len(), 100);
    assert_ne!(a, b);

    // 24 PCRs take several PCR_Read round trips (8 digests each).
    let all =
        PcrSelection::parse("sha256:0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23")
            .unwrap();
    let before = tpm.pcr_read(&all).unwrap();
    assert_eq!(before.values.len(), 24);
    let d = [9u8; 32];
    tpm.pcr_extend(23, &[(HashAlg::Sha256, &d)]).unwrap();
    let after = tpm
        .pcr_read(&PcrSelection::parse("sha256:23").unwrap())
        .unwrap();
    let expected = HashAlg::Sha256
        .digest(&[before.get(HashAlg::Sha256, 23).unwrap(), &d])
        .unwrap();
    assert_eq!(after.get(HashAlg::Sha256, 23).unwrap(), expected.as_slice());
    // The inactive sha1 bank yields no values rather than garbage.
    assert!(tpm
        .pcr_read(&PcrSelection::parse("sha1:0").unwrap())
        .unwrap()
        .values
        .is_empty());

    let srk = tpm.create_srk().unwrap();
    let read = tpm.read_public(srk.handle).unwrap();
    assert_eq!(read.public, srk.public);
    assert_eq!(read.name, srk.name);
    tpm.flush_context(srk.handle).unwrap();
    assert!(f.swtpm.pid() > 0);
}

#[test]
fn unix_socket_transport_reaches_swtpm() {
    let dir = ScratchDir::new("tpm-unix");
    let state = dir.path().join("state");
    Swtpm::setup_cached(&state).unwrap();
    let sock = dir.path().join("tpm.sock");
    let _swtpm = Swtpm::start_unix(&state, &sock).unwrap();
    let mut tpm =
        Tpm::new(SocketTransport::connect_spec(&format!("unix:{}", sock.display())).unwrap());
    assert_eq!(tpm.get_random(32).unwrap().len(), 32);
    let ek = tpm.create_ek(EkTemplate::EccP384).unwrap();
    let cert =
        host::parse_ek_certificate(&tpm.nv_read_ek_certificate(EkTemplate::EccP384).unwrap())
            .unwrap();
    host::ek_certificate_matches(&cert, &ek.public).unwrap();
    tpm.flush_context(ek.handle).unwrap();
}

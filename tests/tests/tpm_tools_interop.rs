//! Cross-checks with an implementation nobody here wrote: tpm2-tools
//! (Debian's 5.4, through its swtpm TCTI) against the same swtpm.
//! swtpm serves one connection at a time, so our connection is closed
//! before each tool runs; tpm2-tools leave transient objects behind
//! without a resource manager, so they are flushed with `tpm2_flushcontext -t`.

use ember_tests::swtpm::TpmFixture;
use ember_tpm::*;

fn tpm2b(bytes: &[u8]) -> Vec<u8> {
    let mut v = (bytes.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(bytes);
    v
}

use ember_fs::hex::hex;

/// tpm2-tools' credential file: magic 0xBADCC0DE, version 1,
/// TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
fn write_tools_credential(c: &host::Credential) -> Vec<u8> {
    let mut v = vec![0xba, 0xdc, 0xc0, 0xde, 0, 0, 0, 1];
    v.extend(tpm2b(&c.credential_blob));
    v.extend(tpm2b(&c.encrypted_secret));
    v
}

fn read_tools_credential(b: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut r = Reader::new(b);
    assert_eq!(r.u32("magic").unwrap(), 0xbadc_c0de);
    assert_eq!(r.u32("version").unwrap(), 1);
    let blob = r.tpm2b("id object").unwrap().to_vec();
    let secret = r.tpm2b("encrypted secret").unwrap().to_vec();
    r.finish("credential file").unwrap();
    (blob, secret)
}

#[test]
fn ek_from_our_create_primary_equals_tpm2_createek() {
    let f = TpmFixture::new("tpm-tools-ek");
    for (alg, template) in [("rsa", EkTemplate::Rsa2048), ("ecc", EkTemplate::EccP256)] {
        let ours = {
            let mut tpm = f.connect();
            let ek = tpm.create_ek(template).unwrap();
            tpm.flush_context(ek.handle).unwrap();
            ek
        };
        let pub_path = f.p(&format!("ek-{alg}.pub"));
        f.tool(
            "tpm2_createek",
            &[
                "-c",
                &f.p(&format!("ek-{alg}.ctx")),
                "-G",
                alg,
                "-u",
                &pub_path,
            ],
        );
        f.flush_tool_objects();
        let theirs = std::fs::read(&pub_path).unwrap();
        assert_eq!(
            theirs,
            tpm2b(&ours.public.to_bytes().unwrap()),
            "{alg} EK public differs"
        );
        assert_eq!(PublicArea::from_tpm2b(&theirs).unwrap(), ours.public);
    }
}

#[test]
fn our_quote_verifies_with_tpm2_checkquote() {
    let f = TpmFixture::new("tpm-tools-quote");
    for kind in [AkKind::EccP256, AkKind::Rsa2048] {
        let sel_spec = "sha256:0,1,2,7,16";
        let sel = PcrSelection::parse(sel_spec).unwrap();
        let nonce = b"ember-nonce-123".to_vec();
        let (ak_pub, quote, pcrs) = {
            let mut tpm = f.connect();
            tpm.pcr_extend(16, &[(HashAlg::Sha256, &[0x5a; 32])])
                .unwrap();
            let srk = tpm.create_srk().unwrap();
            let (_, ak) = tpm.create_ak(srk.handle, kind).unwrap();
            let quote = tpm.quote(ak.handle, &nonce, &sel).unwrap();
            let pcrs = tpm.pcr_read(&sel).unwrap();
            tpm.flush_context(ak.handle).unwrap();
            tpm.flush_context(srk.handle).unwrap();
            (ak.public.to_bytes().unwrap(), quote, pcrs)
        };
        std::fs::write(f.path("ak.pub"), tpm2b(&ak_pub)).unwrap();
        std::fs::write(f.path("msg"), &quote.attest).unwrap();
        std::fs::write(f.path("sig"), &quote.signature).unwrap();
        let values: Vec<u8> = sel
            .iter()
            .flat_map(|(b, i)| pcrs.get(b, i).unwrap().to_vec())
            .collect();
        std::fs::write(f.path("pcrs"), &values).unwrap();
        let args = |q: &str| -> Vec<String> {
            [
                "-u",
                &f.p("ak.pub"),
                "-m",
                &f.p("msg"),
                "-s",
                &f.p("sig"),
                "-f",
                &f.p("pcrs"),
                "-l",
                sel_spec,
                "-g",
                "sha256",
                "-q",
                q,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        };
        let good = args(&hex(&nonce));
        let good: Vec<&str> = good.iter().map(|s| s.as_str()).collect();
        f.tool("tpm2_checkquote", &good);
        // tpm2_checkquote itself refuses a replayed nonce and other PCR values.
        let bad = args("00112233");
        let bad: Vec<&str> = bad.iter().map(|s| s.as_str()).collect();
        assert!(
            !f.tool_ok("tpm2_checkquote", &bad),
            "{kind:?}: wrong nonce accepted"
        );
        let mut tampered = values.clone();
        tampered[0] ^= 1;
        std::fs::write(f.path("pcrs"), &tampered).unwrap();
        assert!(
            !f.tool_ok("tpm2_checkquote", &good),
            "{kind:?}: wrong PCRs accepted"
        );
    }
}

#[test]
fn our_make_credential_is_activated_by_tpm2_activatecredential() {
    let f = TpmFixture::new("tpm-tools-activate");
    let (ek_ctx, ak_ctx, session) = (f.p("ek.ctx"), f.p("ak.ctx"), f.p("session.ctx"));
    f.tool(
        "tpm2_createek",
        &["-c", &ek_ctx, "-G", "rsa", "-u", &f.p("ek.pub")],
    );
    f.tool(
        "tpm2_createak",
        &[
            "-C",
            &ek_ctx,
            "-c",
            &ak_ctx,
            "-G",
            "ecc",
            "-g",
            "sha256",
            "-s",
            "ecdsa",
            "-u",
            &f.p("ak.pub"),
            "-n",
            &f.p("ak.name"),
        ],
    );
    f.flush_tool_objects();

    // The server's view: EK public (from the node) and the AK's Name.
    let ek_public = PublicArea::from_tpm2b(&std::fs::read(f.path("ek.pub")).unwrap()).unwrap();
    let ak_name = std::fs::read(f.path("ak.name")).unwrap();
    let ak_public = PublicArea::from_tpm2b(&std::fs::read(f.path("ak.pub")).unwrap()).unwrap();
    assert_eq!(
        ak_public.name().unwrap(),
        ak_name,
        "our Name computation equals tpm2-tools'"
    );
    let secret = b"0123456789abcdef0123456789abcdef";
    let cred = host::make_credential(&ek_public, &ak_name, secret).unwrap();
    std::fs::write(f.path("cred.in"), write_tools_credential(&cred)).unwrap();

    f.tool(
        "tpm2_startauthsession",
        &["--policy-session", "-S", &session],
    );
    f.tool("tpm2_policysecret", &["-S", &session, "-c", "e"]);
    let auth = format!("session:{session}");
    f.tool(
        "tpm2_activatecredential",
        &[
            "-c",
            &ak_ctx,
            "-C",
            &ek_ctx,
            "-i",
            &f.p("cred.in"),
            "-o",
            &f.p("secret.out"),
            "-P",
            &auth,
        ],
    );
    f.tool("tpm2_flushcontext", &[&session]);
    f.flush_tool_objects();
    assert_eq!(std::fs::read(f.path("secret.out")).unwrap(), secret);
}

#[test]
fn tpm2_makecredential_is_activated_by_our_activate_credential() {
    let f = TpmFixture::new("tpm-tools-makecred");
    let mut tpm = f.connect();
    let ek = tpm.create_ek(EkTemplate::Rsa2048).unwrap();
    let srk = tpm.create_srk().unwrap();
    let (_, ak) = tpm.create_ak(srk.handle, AkKind::EccP256).unwrap();
    std::fs::write(f.path("ek.pub"), tpm2b(&ek.public.to_bytes().unwrap())).unwrap();
    let secret = b"made-by-tpm2-tools";
    std::fs::write(f.path("secret.bin"), secret).unwrap();
    // Software-only (-T none): no second connection to swtpm needed.
    let out = std::process::Command::new("tpm2_makecredential")
        .args([
            "-T",
            "none",
            "-u",
            &f.p("ek.pub"),
            "-s",
            &f.p("secret.bin"),
            "-n",
            &hex(&ak.name),
            "-o",
            &f.p("cred.out"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (blob, enc) = read_tools_credential(&std::fs::read(f.path("cred.out")).unwrap());
    assert_eq!(
        tpm.activate_credential(&ak, &ek, &blob, &enc).unwrap(),
        secret
    );
    for h in [ak.handle, srk.handle, ek.handle] {
        tpm.flush_context(h).unwrap();
    }
}

#[test]
fn our_pcr_read_equals_tpm2_pcrread_after_extends() {
    let f = TpmFixture::new("tpm-tools-pcr");
    {
        let mut tpm = f.connect();
        tpm.pcr_extend(16, &[(HashAlg::Sha256, &[0x11; 32])])
            .unwrap();
        tpm.pcr_extend(23, &[(HashAlg::Sha256, &[0x22; 32])])
            .unwrap();
    }
    f.tool(
        "tpm2_pcrextend",
        &[&format!("16:sha256={}", hex(&[0x33; 32]))],
    );
    f.tool(
        "tpm2_pcrread",
        &["sha256:0,7,16,23", "-o", &f.p("pcrs.bin")],
    );
    let theirs = std::fs::read(f.path("pcrs.bin")).unwrap();
    let sel = PcrSelection::parse("sha256:0,7,16,23").unwrap();
    let ours = f.connect().pcr_read(&sel).unwrap();
    let flat: Vec<u8> = sel
        .iter()
        .flat_map(|(b, i)| ours.get(b, i).unwrap().to_vec())
        .collect();
    assert_eq!(flat, theirs);
    // And the value is the extend chain we expect.
    let p16 = HashAlg::Sha256
        .digest(&[
            &HashAlg::Sha256.digest(&[&[0u8; 32], &[0x11; 32]]).unwrap(),
            &[0x33; 32],
        ])
        .unwrap();
    assert_eq!(ours.get(HashAlg::Sha256, 16).unwrap(), p16.as_slice());
}

//! Feeds arbitrary bytes to ember-tpm as TPM responses to every command it
//! sends, and as the wire structures it parses (TPMT_PUBLIC, TPMS_ATTEST,
//! TPMT_SIGNATURE, TPML_PCR_SELECTION). Nothing may panic or read past the
//! buffer; errors are fine.
#![no_main]

use ember_tpm::*;
use libfuzzer_sys::fuzz_target;

fn tpm(data: &[u8], copies: usize) -> Tpm<FakeTransport> {
    let mut t = FakeTransport::new();
    for _ in 0..copies {
        t.push(data);
    }
    Tpm::new(t)
}

fuzz_target!(|input: &[u8]| {
    let Some((&op, data)) = input.split_first() else {
        return;
    };
    let sel = PcrSelection::parse("sha256:0,1,2,16").unwrap();
    let obj = LoadedObject {
        handle: 0x8000_0000,
        public: ak_template(AkKind::EccP256),
        name: vec![0, 0x0b],
    };
    let key = CreatedKey {
        private: vec![1; 16],
        public: ak_template(AkKind::EccP256),
    };
    match op % 18 {
        0 => drop(tpm(data, 4).get_random(48)),
        1 => drop(tpm(data, 4).get_handles(consts::HR_NV_INDEX)),
        2 => drop(tpm(data, 4).pcr_read(&sel)),
        3 => drop(tpm(data, 1).read_public(0x8000_0000)),
        4 => drop(tpm(data, 1).nv_read_public(0x01c0_0002)),
        5 => drop(tpm(data, 8).nv_read_certificate(0x01c0_0002)),
        6 => drop(tpm(data, 1).create_primary(
            Hierarchy::Endorsement,
            &[],
            &ek_template(EkTemplate::Rsa2048),
        )),
        7 => drop(tpm(data, 1).create(0x8000_0000, &[], &ak_template(AkKind::Rsa2048), &[])),
        8 => drop(tpm(data, 1).quote(0x8000_0000, b"nonce", &sel)),
        9 => drop(tpm(data, 2).start_policy_session(SessionKind::Policy)),
        10 => drop(tpm(data, 4).activate_credential(&obj, &obj, &[1; 10], &[2; 10])),
        11 => drop(tpm(data, 6).unseal_with_pcr_policy(0x8100_0001, &key, &sel)),
        12 => drop(tpm(data, 4).capabilities()),
        13 => drop(PublicArea::from_bytes(data)),
        14 => drop(Attest::parse(data)),
        15 => drop(tpm(data, 2).rollback_counter()),
        16 => drop(tpm(data, 6).increment_rollback_counter()),
        _ => {
            drop(Signature::from_bytes(data));
            drop(PublicArea::from_tpm2b(data));
        }
    }
});

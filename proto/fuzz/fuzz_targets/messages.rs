//! Every protocol message decoder on arbitrary bytes: no panic, and what
//! decodes re-encodes to something that decodes to the same message.
#![no_main]
use ember_proto::msg::*;
use libfuzzer_sys::fuzz_target;

fn check<T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + core::fmt::Debug>(data: &[u8]) {
    if let Ok(m) = decode::<T>("fuzz", data) {
        let again: T = decode("fuzz", &encode(&m)).expect("re-encoded message decodes");
        assert_eq!(again, m);
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = peek_version(data);
    check::<StartRequest>(data);
    check::<StartResponse>(data);
    check::<FinishRequest>(data);
    check::<FinishResponse>(data);
    check::<ReportRequest>(data);
    check::<ReportResponse>(data);
    check::<ErrorResponse>(data);
    // A Report's body with a phase table after it: the split never panics,
    // and a table that decodes is within its bounds and re-encodes equal.
    if let Ok((_, tail)) = decode_report(data) {
        if let Ok(t) = ember_proto::timeline::Timeline::decode(tail) {
            assert!(t.phases.len() <= ember_proto::timeline::MAX_PHASES);
            assert!(t.phases.iter().all(|p| ember_proto::timeline::valid_name(&p.name)));
            assert_eq!(ember_proto::timeline::Timeline::decode(&t.encode()).expect("re-encoded"), t);
        }
    }
    // The signed manifest's carried form, and verification of whatever it
    // holds under a fixed key: never a panic, never accepted unsigned.
    if let Ok(signed) = ember_proto::manifest::SignedManifest::from_bytes(data) {
        let key = ember_proto::manifest::SigningSecret::from_bytes(&[9; 32]).expect("key");
        assert!(key.public().verify(&signed).is_err(), "a fuzzed manifest verified");
    }
});

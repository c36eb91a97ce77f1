//! Certificates from a server: the DER/X.509 parser and the chain check
//! must refuse anything malformed without panicking.
#![no_main]
use ember_net::x509::Certificate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cert) = Certificate::parse(data) {
        let _ = cert.matches_host("boot.example.org");
        let _ = cert.matches_host("10.0.2.2");
        let _ = cert.check_validity(1_800_000_000);
        let _ = cert.verify_signed_by(&cert);
    }
    let cas = [data.to_vec()];
    let _ = ember_net::tls::verify_chain(&[data], &cas, "boot.example.org", 1_800_000_000);
});

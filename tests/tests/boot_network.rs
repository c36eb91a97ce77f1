//! The node on the network in a real VM: DHCP from QEMU's user-mode
//! server, then a verified HTTPS GET from a TLS 1.3 server on the host
//! (reached at 10.0.2.2), with the CA bundled in the initrd.

use ember_tests::pki::{StaticHttpsServer, TestCa};
use ember_tests::qemu::{build_initrd, Boot};
use ember_tests::ScratchDir;
use sha2::{Digest, Sha256};

fn boot_and_fetch(tag: &str, server_sans: &[&str]) -> (ember_tests::qemu::Outcome, String) {
    let dir = ScratchDir::new(tag);
    let ca = TestCa::new(&dir.path().join("pki"));
    let leaf = ca.issue("server", server_sans);
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(www.join("payload.bin"), &payload).unwrap();
    let server = StaticHttpsServer::start(&www, &leaf);

    let initrd = dir.path().join("initrd.cpio.gz");
    build_initrd(&initrd, &[(ca.cert_path(), "/etc/ember/ca.pem")]);
    let out = Boot::new(
        &initrd,
        &format!(
            "ember.test=fetch ember.test_url=https://10.0.2.2:{}/payload.bin ember.on_error=poweroff ember.error_delay=0",
            server.port
        ),
        &dir.path().join("serial.log"),
    )
    .run();
    let sha = format!("{:x}", Sha256::digest(&payload));
    (out, sha)
}

#[test]
fn vm_gets_a_lease_from_qemu_and_fetches_over_verified_tls() {
    let (out, sha) = boot_and_fetch("netfetch", &["IP:10.0.2.2", "DNS:boot.ember.test"]);
    let lines = out.ember_lines().join("\n");
    assert!(out.powered_off(), "exit {:?}\n{}", out.exit_code, out.log);
    assert!(
        out.has_line("dhcp: eth0 got 10.0.2.15/24 router 10.0.2.2"),
        "{lines}"
    );
    assert!(out.has_line("phase=dhcp status=ok"), "{lines}");
    assert!(
        out.has_line(&format!("status 200 body 300000 bytes sha256 {sha}")),
        "the fetched body is not the served file:\n{lines}"
    );
}

#[test]
fn vm_refuses_a_server_whose_certificate_does_not_name_it() {
    let (out, _) = boot_and_fetch("netwrongname", &["DNS:other.ember.test"]);
    let lines = out.ember_lines().join("\n");
    assert!(out.powered_off(), "exit {:?}\n{}", out.exit_code, out.log);
    assert!(out.has_line("phase=test-fetch status=failed"), "{lines}");
    assert!(
        !out.has_line("status 200"),
        "a body was accepted from a misnamed server:\n{lines}"
    );
}

//! End to end on loopback through the CLI: `ember serve` with a fresh state,
//! a manufactured swtpm (EK certificates from swtpm's local CA), `ember
//! enroll`, `ember overlay add`, and `ember attest` doing the node's flow.

use ember_proto::client::Transport;
use ember_tests::server::EmberServer;
use ember_tests::swtpm::Swtpm;
use ember_tests::tree::{assert_same, Compare};
use ember_tests::ScratchDir;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A source tree spanning several 64 KiB sealed chunks.
fn overlay_source(dir: &Path) {
    std::fs::create_dir_all(dir.join("etc/rancher/rke2")).unwrap();
    std::fs::create_dir_all(dir.join("var/lib/ember")).unwrap();
    std::fs::write(
        dir.join("etc/rancher/rke2/config.yaml"),
        "server: https://10.0.2.2:9345\ntoken: t0k3n\n",
    )
    .unwrap();
    std::fs::set_permissions(
        dir.join("etc/rancher/rke2/config.yaml"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(dir.join("etc/hostname"), "node-a\n").unwrap();
    // Incompressible, so the sealed stream really has several chunks.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let noise: Vec<u8> = (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(dir.join("var/lib/ember/blob.bin"), noise).unwrap();
    std::fs::write(dir.join("var/lib/ember/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(
        dir.join("var/lib/ember/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("rke2/config.yaml", dir.join("etc/rancher/config.yaml")).unwrap();
}

struct Lab {
    server: EmberServer,
    tpm: Swtpm,
    src: std::path::PathBuf,
    _tpm_dir: ScratchDir,
}

fn lab(serve_args: &[&str]) -> Lab {
    let tpm_dir = ScratchDir::new("srv-tpm");
    Swtpm::setup_cached(tpm_dir.path()).expect("manufacture swtpm");
    let tpm = Swtpm::start_tcp(tpm_dir.path()).expect("start swtpm");
    let server = EmberServer::start_with(serve_args);
    server
        .enroll_swtpm("node-a", "rack1", &tpm)
        .expect_ok("enroll");
    let src = server.scratch().join("overlay-src");
    overlay_source(&src);
    server.add_overlay(&src, Some("group:rack1"));
    Lab {
        server,
        tpm,
        src,
        _tpm_dir: tpm_dir,
    }
}

fn compare() -> Compare {
    Compare {
        xattrs: false,
        mtime_nanos: false,
        symlink_mtimes: false,
        root: false,
    }
}

fn staging_leftovers(parent: &Path) -> Vec<String> {
    std::fs::read_dir(parent)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("ember-staging"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn attested_node_extracts_its_overlay_equal_to_the_source_and_reports_joined() {
    let lab = lab(&[]);
    let into = lab.server.scratch().join("root");
    let run = lab
        .server
        .attest(
            &lab.tpm.spec(),
            &[
                "--into",
                &into.display().to_string(),
                "--report",
                "joined",
                "--reason",
                "node Ready",
            ],
        )
        .expect_ok("ember attest");
    assert!(run.stdout.contains("extracted into"), "{}", run.stdout);
    assert_same(&lab.src, &into, compare(), "extracted overlay");
    let nodes = lab.server.nodes();
    let line = nodes
        .lines()
        .find(|l| l.starts_with("node-a"))
        .unwrap_or_else(|| panic!("node-a missing:\n{nodes}"));
    assert!(line.contains("joined"), "{line}");
    assert!(
        line.split_whitespace().any(|w| w == "1"),
        "last-known-good 1 expected: {line}"
    );
    for step in [
        "step=start node=node-a outcome=ok",
        "step=finish node=node-a outcome=ok",
        "step=blob node=- outcome=ok",
        "step=report node=node-a outcome=ok",
    ] {
        assert!(
            lab.server.wait_log(step),
            "missing log line {step:?}:\n{}",
            lab.server.log()
        );
    }
}

#[test]
fn second_boot_reextracts_over_an_existing_tree() {
    let lab = lab(&[]);
    let into = lab.server.scratch().join("root");
    let into_s = into.display().to_string();
    lab.server
        .attest(&lab.tpm.spec(), &["--into", &into_s])
        .expect_ok("first attest");
    std::fs::write(into.join("etc/hostname"), "changed\n").unwrap();
    lab.server
        .attest(&lab.tpm.spec(), &["--into", &into_s])
        .expect_ok("second attest");
    assert_eq!(
        std::fs::read_to_string(into.join("etc/hostname")).unwrap(),
        "node-a\n"
    );
}

fn refused_stream(fault: &str, reason: &str) {
    refused_stream_in(&lab(&[]), fault, reason)
}

fn refused_stream_in(lab: &Lab, fault: &str, reason: &str) {
    let into = lab.server.scratch().join("root");
    let run = lab.server.attest(
        &lab.tpm.spec(),
        &["--into", &into.display().to_string(), "--fault", fault],
    );
    assert!(
        !run.ok,
        "a corrupted stream ({fault}) was accepted:\n{}",
        run.stdout
    );
    assert!(
        run.stderr.contains(reason),
        "expected {reason:?} for {fault}, got:\n{}",
        run.stderr
    );
    assert!(
        !into.exists(),
        "plaintext reached the target folder after {fault}"
    );
    assert_eq!(
        staging_leftovers(lab.server.scratch()),
        Vec::<String>::new()
    );
}

// Sealed layout: 48-byte header, then chunks of 65536 + 16 bytes.
#[test]
fn tampered_overlay_chunk_is_refused_and_nothing_reaches_the_target() {
    refused_stream("tamper:70000", "chunk 1 failed authentication");
}

#[test]
fn truncated_overlay_stream_is_refused_and_nothing_reaches_the_target() {
    refused_stream(
        &format!("truncate:{}", 48 + 2 * 65552),
        "stream truncated at chunk 1",
    );
}

#[test]
fn swapped_overlay_chunks_are_refused_and_nothing_reaches_the_target() {
    refused_stream("swap:0:1", "chunk 0 failed authentication");
}

#[test]
fn forged_manifest_is_refused_and_nothing_reaches_the_target() {
    let lab = lab(&[]);
    let into = lab.server.scratch().join("root");
    // Another server's manifest key: the genuine manifest does not verify.
    let other = EmberServer::start();
    let run = lab.server.attest(
        &lab.tpm.spec(),
        &[
            "--into",
            &into.display().to_string(),
            "--manifest-key",
            &other.manifest_pub_path().display().to_string(),
        ],
    );
    assert!(!run.ok, "a manifest under another key was accepted");
    assert!(
        run.stderr.contains("signature does not verify"),
        "{}",
        run.stderr
    );
    assert!(!into.exists(), "plaintext reached the target folder");
}

#[test]
fn another_overlays_blob_is_refused_and_nothing_reaches_the_target() {
    let lab = lab(&[]);
    let sealed = lab.server.state().join("sealed");
    let before: Vec<_> = std::fs::read_dir(&sealed)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let src = lab.server.scratch().join("other-src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("other"), b"another overlay\n").unwrap();
    lab.server.add_overlay(&src, None);
    let other = std::fs::read_dir(&sealed)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|f| !before.contains(f))
        .expect("the second overlay's blob");
    refused_stream_in(
        &lab,
        &format!("replace:{}", other.display()),
        "another overlay's blob",
    );
}

#[test]
fn pcr_extended_after_enrolment_is_refused() {
    let lab = lab(&[]);
    lab.server
        .set_policy(&[
            "--pcrs",
            "0,1,2,3,4,5,6,7",
            "--lab-record-first-boot",
            "--group",
            "rack1",
        ])
        .expect_ok("policy");
    lab.server
        .attest(&lab.tpm.spec(), &["--no-overlay"])
        .expect_ok("first boot records the PCRs");
    lab.tpm
        .tpm2_run(
            "tpm2_pcrextend",
            &["7:sha256=0101010101010101010101010101010101010101010101010101010101010101"],
        )
        .expect("extend PCR 7");
    let into = lab.server.scratch().join("root");
    let run = lab
        .server
        .attest(&lab.tpm.spec(), &["--into", &into.display().to_string()]);
    assert!(!run.ok, "boot with an extended PCR 7 was accepted");
    assert!(
        run.stderr.contains("pcr-policy-mismatch") && run.stderr.contains("PCR 7"),
        "{}",
        run.stderr
    );
    assert!(!into.exists());
    assert!(
        lab.server
            .wait_log("step=finish node=node-a outcome=pcr-policy-mismatch status=403"),
        "{}",
        lab.server.log()
    );
}

#[test]
fn node_assignment_overrides_the_group_and_failed_boots_count_attempts() {
    let lab = lab(&[]);
    let other = lab.server.scratch().join("other-src");
    std::fs::create_dir_all(other.join("etc")).unwrap();
    std::fs::write(other.join("etc/hostname"), "special\n").unwrap();
    let v = lab.server.add_overlay(&other, None);
    lab.server
        .assign(v, "node:node-a")
        .expect_ok("assign to the node");
    let into = lab.server.scratch().join("root");
    let into_s = into.display().to_string();
    let run = lab.server.attest(
        &lab.tpm.spec(),
        &[
            "--into",
            &into_s,
            "--report",
            "failed",
            "--reason",
            "rke2 did not start",
        ],
    );
    let run = run.expect_ok("attest");
    assert!(run.stdout.contains("attempts 1"), "{}", run.stdout);
    assert_same(&other, &into, compare(), "node overlay");
    let nodes = lab.server.nodes();
    assert!(nodes.contains("rke2 did not start"), "{nodes}");
}

#[test]
fn admin_commands_refuse_bad_arguments_without_writing() {
    let server = EmberServer::start();
    let bad = server.ember(&["enroll", "--name", "x y", "--ek-hash", &"00".repeat(32)]);
    assert!(
        !bad.ok && bad.stderr.contains("node name"),
        "{}",
        bad.stderr
    );
    let bad = server.ember(&["enroll", "--name", "n", "--ek-hash", "abc"]);
    assert!(!bad.ok && bad.stderr.contains("64 hex"), "{}", bad.stderr);
    server
        .ember(&["enroll", "--name", "n", "--ek-hash", &"11".repeat(32)])
        .expect_ok("enroll");
    let dup = server.ember(&[
        "enroll",
        "--name",
        "m",
        "--group",
        "new-group",
        "--ek-hash",
        &"11".repeat(32),
    ]);
    assert!(
        !dup.ok && dup.stderr.contains("already enrolled"),
        "{}",
        dup.stderr
    );
    let groups = server
        .ember(&[
            "policy",
            "set",
            "--pcrs",
            "0",
            "--lab-record-first-boot",
            "--group",
            "g",
        ])
        .expect_ok("policy");
    assert!(groups.ok);
    let bad = server.ember(&["policy", "set", "--pcrs", "0,24", "--lab-record-first-boot"]);
    assert!(
        !bad.ok && bad.stderr.contains("out of range"),
        "{}",
        bad.stderr
    );
    let bad = server.ember(&["policy", "set", "--pcrs", "0", "--value", "0=abcd"]);
    assert!(!bad.ok && bad.stderr.contains("bytes"), "{}", bad.stderr);
    let bad = server.ember(&["overlay", "assign", "99", "--group", "g"]);
    assert!(
        !bad.ok && bad.stderr.contains("no overlay version 99"),
        "{}",
        bad.stderr
    );
    let bad = server.ember(&["overlay", "add", "/nonexistent/overlay"]);
    assert!(!bad.ok, "{}", bad.stderr);
    let nodes = server.nodes();
    assert!(
        !nodes.contains("new-group") && nodes.lines().count() == 2,
        "{nodes}"
    );
}

#[test]
fn boot_artifacts_are_served_by_content_hash_over_plain_http() {
    use std::io::{Read, Write};
    let port = ember_tests::process::free_port();
    let server = EmberServer::start_with(&["--http-listen", &format!("127.0.0.1:{port}")]);
    let file = server.scratch().join("vmlinuz");
    std::fs::write(&file, b"not really a kernel").unwrap();
    let run = server
        .ember(&["artifact", "add", &file.display().to_string()])
        .expect_ok("artifact add");
    let path = run.stdout.split_whitespace().next().unwrap().to_string();
    let get = |p: &str| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "GET {p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    ember_tests::process::wait_until(std::time::Duration::from_secs(5), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let ok = get(&path);
    assert!(
        ok.starts_with("HTTP/1.1 200") && ok.ends_with("not really a kernel"),
        "{ok}"
    );
    let missing = get(&format!("/v1/boot/{}", "0".repeat(64)));
    assert!(
        missing.starts_with("HTTP/1.1 404") && missing.contains("ember-error: not-found"),
        "{missing}"
    );
}

#[test]
fn tpm_enrolled_from_ember_tpm_ek_output_attests() {
    let dir = ScratchDir::new("srv-tpm-ek");
    Swtpm::setup_cached(dir.path()).expect("manufacture swtpm");
    let tpm = Swtpm::start_tcp(dir.path()).expect("start swtpm");
    let server = EmberServer::start();
    let public = server.scratch().join("ek.pub");
    let out = std::process::Command::new(ember_tests::ember_bin())
        .args([
            "tpm",
            "ek",
            "--alg",
            "ecc384",
            "--tpm",
            &tpm.spec(),
            "--public-out",
        ])
        .arg(&public)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ember tpm ek: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    server
        .ember(&[
            "enroll",
            "--name",
            "from-public",
            "--ek-pub",
            &public.display().to_string(),
        ])
        .expect_ok("enroll from the EK public area");
    let run = server
        .attest(&tpm.spec(), &["--no-overlay"])
        .expect_ok("attest");
    assert!(
        server.wait_log("step=finish node=from-public outcome=ok"),
        "{}{}",
        run.stderr,
        server.log()
    );
}

#[test]
fn operator_certificate_is_served_instead_of_a_generated_one() {
    let issuer = EmberServer::start_with(&["--name", "localhost"]);
    let tls = issuer.state().join("tls");
    let (cert, key) = (
        tls.join("server.pem").display().to_string(),
        tls.join("server.key").display().to_string(),
    );
    let dir = ScratchDir::new("srv-tpm-op");
    Swtpm::setup_cached(dir.path()).expect("manufacture swtpm");
    let tpm = Swtpm::start_tcp(dir.path()).expect("start swtpm");
    let server = EmberServer::start_with(&["--cert", &cert, "--key", &key]);
    assert!(
        !server.ca_path().exists(),
        "no CA is generated next to an operator certificate"
    );
    server
        .enroll_swtpm("node-a", "default", &tpm)
        .expect_ok("enroll");
    let url = format!("https://localhost:{}", server.port());
    let attest = |ca: &std::path::Path| {
        std::process::Command::new(ember_tests::ember_bin())
            .args([
                "attest",
                "--no-overlay",
                "--tpm",
                &tpm.spec(),
                "--url",
                &url,
            ])
            .arg("--ca")
            .arg(ca)
            .output()
            .unwrap()
    };
    let ok = attest(&issuer.ca_path());
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let other = EmberServer::start();
    let refused = attest(&other.ca_path());
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("TLS"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// GET http://ADDR/metrics over plain TCP.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the metrics listener");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

#[test]
fn metrics_count_attestations_refusals_connections_and_overlay_bytes() {
    let lab = lab(&["--metrics-listen", "127.0.0.1:0", "--replica-id", "boot-1"]);
    let metrics = lab
        .server
        .metrics_addr()
        .expect("metrics address")
        .to_string();
    let target = lab.server.scratch().join("root");
    let run = lab.server.attest(
        &lab.tpm.spec(),
        &[
            "--into",
            &target.display().to_string(),
            "--report",
            "joined",
        ],
    );
    assert!(run.ok, "{}{}", run.stdout, run.stderr);
    // One refusal: a Start that is not a protocol message.
    let url = ember_proto::client::Url::parse(&lab.server.url()).unwrap();
    let ca = std::fs::read(lab.server.ca_path()).unwrap();
    let junk = ember_proto::host::HttpsClient::new(&url, &ca)
        .unwrap()
        .post(ember_proto::msg::path::START, None, b"")
        .expect("post junk");
    assert_eq!(junk.status, 400);
    assert!(lab.server.wait_log("step=start node=- outcome=malformed"));
    let text = scrape(&metrics);
    eprintln!("{text}");
    for want in [
        "ember_replica_info{replica=\"boot-1\"",
        "ember_attestations_total{replica=\"boot-1\",outcome=\"ok\"} 1",
        "ember_requests_total{replica=\"boot-1\",step=\"start\",outcome=\"malformed\"} 1",
        "ember_requests_total{replica=\"boot-1\",step=\"report\",outcome=\"ok\"} 1",
        "ember_attestation_seconds_count{replica=\"boot-1\"} 1",
        "ember_attestation_seconds_bucket{replica=\"boot-1\",le=\"+Inf\"} 1",
        "ember_sessions_open{replica=\"boot-1\"} 0",
        "# TYPE ember_connections_open gauge",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    let overlay_bytes: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("ember_overlay_bytes_total{replica=\"boot-1\"} "))
        .and_then(|v| v.trim().parse().ok())
        .expect("overlay bytes counter");
    assert!(overlay_bytes > 300_000, "{overlay_bytes}");
    // The metrics listener is not the nodes' listener: no protocol there.
    let mut s = std::net::TcpStream::connect(&metrics).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"POST /v1/attest/start HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(!out.starts_with("HTTP/1.1 200"), "{out}");
}

#[test]
fn attest_fails_over_past_an_unreachable_server_but_a_refusal_is_final() {
    let lab = lab(&[]);
    // A port nothing listens on: the first server of the list is down.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("https://{}", dead.local_addr().unwrap());
    drop(dead);
    let target = lab.server.scratch().join("root");
    let urls = format!("{dead_url},{}", lab.server.url());
    let key = lab.server.manifest_pub_path();
    let out = attest_with_failover(&lab.tpm.spec(), &urls, &lab.server.ca_path(), &key)
        .args(["--timeout", "2s", "--into"])
        .arg(&target)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("server 1 of 2") && stderr.contains("unavailable"),
        "{stderr}"
    );
    assert!(stderr.contains("server 2 of 2 answered"), "{stderr}");
    assert_same(
        &lab.src,
        &target,
        compare(),
        "overlay through the second server",
    );

    // A server that refuses (this TPM is not enrolled there) is the answer:
    // the next server is not asked.
    let stranger = EmberServer::start();
    let both_cas = lab.server.scratch().join("both-cas.pem");
    let mut pem = std::fs::read(stranger.ca_path()).unwrap();
    pem.extend(std::fs::read(lab.server.ca_path()).unwrap());
    std::fs::write(&both_cas, pem).unwrap();
    let urls = format!("{},{}", stranger.url(), lab.server.url());
    let out = attest_with_failover(&lab.tpm.spec(), &urls, &both_cas, &key)
        .arg("--no-overlay")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("unknown-ek") && !stderr.contains("server 2 of 2"),
        "{stderr}"
    );
}

/// `ember attest --tpm SPEC --url URLS --ca CA --manifest-key KEY`, for
/// the failover cases.
fn attest_with_failover(
    tpm: &str,
    urls: &str,
    ca: &std::path::Path,
    manifest_key: &std::path::Path,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(ember_tests::ember_bin());
    cmd.args(["attest", "--tpm", tpm, "--url", urls, "--ca"])
        .arg(ca)
        .arg("--manifest-key")
        .arg(manifest_key);
    cmd
}

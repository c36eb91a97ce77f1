//! Load: a rack powering on. N simulated nodes (default 200) attest at once
//! against one `ember serve`, each with its own AK. A pool of four swtpm
//! instances first records one real transcript per node (the server runs in
//! its test mode where the nonce and secret follow from the AK, so a recorded
//! quote replays); then all N replay the whole protocol concurrently: Start
//! (the server checks the EK and AK and runs MakeCredential), Finish (proof,
//! quote signature, PCR policy), the sealed overlay (opened and checked) and
//! Report. All must succeed; latency percentiles are printed. Then 50 more
//! replay against two servers, the first one down: the 25 that start there
//! fail over to the second and all succeed.

use ember_tests::server::EmberServer;
use ember_tests::swtpm::Swtpm;
use ember_tests::{ember_bin, ScratchDir};
use std::process::{Command, Stdio};
use std::time::Instant;

const POOL: usize = 4;

#[test]
fn rack_power_on_all_nodes_attest_concurrently() {
    let nodes: usize = std::env::var("EMBER_LOAD_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    // One EK, many AKs, all at once from one address: the caps are lifted.
    let server = EmberServer::start_replayable(&[
        "--max-sessions-per-ek",
        "100000",
        "--max-sessions-per-peer",
        "100000",
    ]);
    let dirs: Vec<ScratchDir> = (0..POOL).map(|_| ScratchDir::new("load-tpm")).collect();
    let pool: Vec<Swtpm> = dirs
        .iter()
        .map(|d| {
            Swtpm::setup_cached(d.path()).expect("manufacture swtpm");
            Swtpm::start_tcp(d.path()).expect("start swtpm")
        })
        .collect();
    // The cached manufacture gives every instance the same EK: one node
    // identity, many AKs (each simulated node's own session and key).
    server
        .enroll_swtpm("rack", "default", &pool[0])
        .expect_ok("enroll");
    let src = server.scratch().join("overlay");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/config.yaml"), "token: load\n".repeat(10_000)).unwrap();
    server.add_overlay(&src, Some("group:default"));

    let rec = server.scratch().join("recordings");
    let per = nodes.div_ceil(POOL);
    let t = Instant::now();
    let recorders: Vec<_> = pool
        .iter()
        .map(|tpm| {
            Command::new(ember_bin())
                .args([
                    "attest",
                    "--tpm",
                    &tpm.spec(),
                    "--url",
                    &server.url(),
                    "--no-overlay",
                    "--repeat",
                    &per.to_string(),
                ])
                .arg("--ca")
                .arg(server.ca_path())
                .arg("--record")
                .arg(&rec)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn recorder")
        })
        .collect();
    for r in recorders {
        let out = r.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "recording failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let recorded = std::fs::read_dir(&rec).unwrap().count();
    assert_eq!(recorded, per * POOL);
    eprintln!(
        "load: recorded {recorded} transcripts on {POOL} swtpm in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let out = Command::new(ember_bin())
        .args([
            "attest",
            "--url",
            &server.url(),
            "--concurrency",
            &nodes.to_string(),
        ])
        .arg("--ca")
        .arg(server.ca_path())
        .arg("--manifest-key")
        .arg(server.manifest_pub_path())
        .arg("--replay")
        .arg(&rec)
        .stdin(Stdio::null())
        .output()
        .expect("run the replay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The figures, for the report (visible with --nocapture).
    eprint!("{stdout}");
    assert!(
        out.status.success(),
        "load test failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("nodes={nodes} "))
            && stdout.contains(&format!("ok={nodes} failed=0")),
        "{stdout}"
    );
    assert!(
        stdout.contains("total_ms p50=") && stdout.contains(" p99="),
        "{stdout}"
    );
    let log = server.log();
    let finished = log
        .lines()
        .filter(|l| l.contains("step=finish node=rack outcome=ok"))
        .count();
    assert_eq!(
        finished,
        nodes + per * POOL,
        "every recording and every replay finished once"
    );

    // Client-side failover: half the simulated nodes start at a server
    // that is down (nothing listens on its port) and move to the next.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let urls = format!("https://{},{}", dead.local_addr().unwrap(), server.url());
    drop(dead);
    let out = Command::new(ember_bin())
        .args([
            "attest",
            "--url",
            &urls,
            "--concurrency",
            "50",
            "--timeout",
            "5s",
        ])
        .arg("--ca")
        .arg(server.ca_path())
        .arg("--manifest-key")
        .arg(server.manifest_pub_path())
        .arg("--replay")
        .arg(&rec)
        .stdin(Stdio::null())
        .output()
        .expect("run the failover replay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprint!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("servers=2 ok=50 failed=0 failed_over=25 "),
        "failover replay:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

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

use ember_tests::load::{self, Rack, UNCAPPED};
use ember_tests::server::EmberServer;

#[test]
fn rack_power_on_all_nodes_attest_concurrently() {
    let nodes: usize = std::env::var("EMBER_LOAD_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let server = EmberServer::start_replayable(&UNCAPPED);
    let rack = Rack::new();
    rack.enroll(&server);
    let (rec, recorded) = rack.record(&server, nodes);

    let out = load::replay(
        &server.url(),
        &server.ca_path(),
        &server.manifest_pub_path(),
        &rec,
        nodes,
        &[],
    )
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
        nodes + recorded,
        "every recording and every replay finished once"
    );

    // Client-side failover: half the simulated nodes start at a server
    // that is down (nothing listens on its port) and move to the next.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let urls = format!("https://{},{}", dead.local_addr().unwrap(), server.url());
    drop(dead);
    let out = load::replay(
        &urls,
        &server.ca_path(),
        &server.manifest_pub_path(),
        &rec,
        50,
        &["--timeout", "5s"],
    )
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

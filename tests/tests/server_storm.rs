//! Storm: a data centre powering on. 1,000 simulated nodes (recorded swtpm
//! transcripts, as `server_load` replays them; EMBER_STORM_NODES to change)
//! attest at once, first against one `ember serve` on SQLite, then against
//! three replicas sharing one PostgreSQL, nodes spread over the three, then
//! again while one replica is killed mid-storm (SIGKILL, by PID): every
//! node must succeed, those it dropped by failing over to the next URL.
//! Last, PostgreSQL is stopped (SIGSTOP) for 20 s mid-storm: every node
//! finishes after SIGCONT, and no session yields two credentials.
//! Each node connects from its own loopback address and the servers keep
//! their default connection and per-source caps: only the per-EK session
//! cap is lifted (every recording is of one EK). The
//! figures (p50/p90/p99, throughput) of the runs are printed as one table and
//! written as JSON (EMBER_STORM_REPORT, default target/<profile>/storm.json).
//! Slow is reported, never failed; a node that fails, fails the test.

use ember_tests::load::{self, Figures, Rack, ONE_EK, SPREAD_SOURCES};
use ember_tests::postgres::Postgres;
use ember_tests::process::wait_until;
use ember_tests::server::EmberServer;
use ember_tests::ScratchDir;
use std::process::Stdio;
use std::time::Duration;

const REPLICAS: usize = 3;

fn finished(server: &EmberServer) -> usize {
    server
        .log()
        .lines()
        .filter(|l| l.contains("step=finish node=rack outcome=ok"))
        .count()
}

/// Runs the replay to its end; panics with its output unless every node
/// succeeded.
fn check(out: std::process::Output, nodes: usize, what: &str) -> Figures {
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprint!("{what}:\n{stdout}");
    assert!(
        out.status.success(),
        "{what}: not every node attested:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = Figures::parse(&stdout).unwrap_or_else(|| panic!("{what}: no figures in {stdout}"));
    assert_eq!(
        (f.nodes, f.ok, f.failed),
        (nodes as u64, nodes as u64, 0),
        "{what}"
    );
    f
}

#[test]
fn thousand_nodes_on_three_replicas_survive_losing_one() {
    let nodes: usize = std::env::var("EMBER_STORM_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let pg = Postgres::start();
    let shared = ScratchDir::new("storm-state");
    let state = shared.path().join("state");
    let replica = |i: usize| {
        let id = format!("r{i}");
        let mut args = vec!["--replica-id", id.as_str()];
        args.extend_from_slice(&ONE_EK);
        EmberServer::start_replica(&pg.url(), &state, true, &args)
    };
    // The first replica makes the shared TLS identity; the others read it.
    let mut replicas = vec![replica(1)];
    replicas.extend((2..=REPLICAS).map(replica));
    let rack = Rack::new();
    rack.enroll(&replicas[0]);
    let (rec, _) = rack.record(&replicas[0], nodes);

    // The baseline: one process on SQLite, the same recordings.
    let single = EmberServer::start_replayable(&ONE_EK);
    rack.enroll(&single);
    let baseline = check(
        load::replay(
            &single.url(),
            &single.ca_path(),
            &single.manifest_pub_path(),
            &rec,
            nodes,
            &[SPREAD_SOURCES],
        )
        .output()
        .expect("run the SQLite storm"),
        nodes,
        "sqlite, 1 process",
    );
    drop(single);

    let urls = replicas
        .iter()
        .map(|r| r.url())
        .collect::<Vec<_>>()
        .join(",");
    let ca = replicas[0].ca_path();
    // One manifest key for all: it lives in the shared state folder.
    let manifest_key = replicas[0].manifest_pub_path();
    // The replicas' cost alone, all three up.
    let steady = check(
        load::replay(&urls, &ca, &manifest_key, &rec, nodes, &[SPREAD_SOURCES])
            .output()
            .expect("run the PostgreSQL storm"),
        nodes,
        "postgres, 3 replicas",
    );

    // A storm in the background, for the phases that break something
    // while it runs.
    let spawn_storm = |n: usize| {
        load::replay(
            &urls,
            &ca,
            &manifest_key,
            &rec,
            n,
            &["--timeout", "10s", SPREAD_SOURCES],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a storm")
    };
    let before: Vec<usize> = replicas.iter().map(finished).collect();
    let mut storm = spawn_storm(nodes);
    // Kill the second replica once it is busy: it has finished some
    // attestations (so others are in flight there) and the storm is not over.
    let victim = &replicas[1];
    let busy = wait_until(Duration::from_secs(120), || {
        finished(victim) >= before[1] + nodes / (REPLICAS * 10)
    });
    let storm_running = storm.try_wait().expect("poll the storm").is_none();
    let pid = rustix::process::Pid::from_raw(victim.pid() as i32).expect("replica pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill the replica");
    let killed_at = finished(victim) - before[1];
    let out = storm.wait_with_output().expect("wait for the storm");
    let replicated = check(out, nodes, "postgres, 3 replicas, 1 killed mid-storm");
    assert!(
        busy && storm_running,
        "the replica was not killed mid-storm"
    );
    assert!(
        replicated.failed_over > 0,
        "no node failed over from the killed replica: {replicated:?}"
    );
    let served: Vec<usize> = replicas
        .iter()
        .zip(&before)
        .map(|(r, b)| finished(r) - b)
        .collect();
    eprintln!("storm: attestations finished per replica {served:?}; r2 killed after {killed_at}");
    assert!(served.iter().sum::<usize>() >= nodes, "{served:?}");

    // PostgreSQL black-holed (SIGSTOP) for 20 s in the middle of a storm
    // against three replicas (the killed one started again): the nodes
    // get 503s and timeouts, go round the replicas and wait as the node
    // does, and all finish after SIGCONT. Nothing is doubled: no session
    // yields two credentials, and no rollback floor moves.
    replicas[1] = replica(2);
    let paused_nodes = nodes / 2;
    let floors = |pg: &Postgres| {
        pg.psql(
            "SELECT coalesce(string_agg(name || '=' || coalesce(rollback_floor::text, '-'), ',' \
             ORDER BY name), '') || ';' || (SELECT count(*) FROM floor_changes) FROM nodes",
        )
    };
    let floors_before = floors(&pg);
    let before: Vec<usize> = replicas.iter().map(finished).collect();
    let mut storm = spawn_storm(paused_nodes);
    let started = wait_until(Duration::from_secs(120), || {
        let done: usize = replicas
            .iter()
            .zip(&before)
            .map(|(r, b)| finished(r) - b)
            .sum();
        done >= paused_nodes / 10
    });
    let storm_running = storm.try_wait().expect("poll the storm").is_none();
    pg.pause();
    std::thread::sleep(Duration::from_secs(20));
    pg.resume();
    let out = storm.wait_with_output().expect("wait for the storm");
    let paused = check(
        out,
        paused_nodes,
        "postgres, 3 replicas, PostgreSQL stopped 20 s mid-storm",
    );
    assert!(
        started && storm_running,
        "PostgreSQL was not stopped mid-storm"
    );
    assert_eq!(
        pg.psql(
            "SELECT count(*) FROM (SELECT session_id FROM credentials \
             GROUP BY session_id HAVING count(*) > 1) twice"
        ),
        "0",
        "a session yielded two credentials"
    );
    assert_eq!(floors(&pg), floors_before, "a rollback floor moved");

    let rows = [
        ("sqlite, 1 process", &baseline),
        ("postgres, 3 replicas", &steady),
        ("postgres, 3 replicas, 1 killed mid-storm", &replicated),
        ("postgres, 3 replicas, PostgreSQL stopped 20 s", &paused),
    ];
    let json = format!(
        "{{\"nodes\":{nodes},\"runs\":[{}]}}\n",
        rows.iter()
            .map(|(setup, f)| f.to_json(setup))
            .collect::<Vec<_>>()
            .join(",")
    );
    let path = std::env::var_os("EMBER_STORM_REPORT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| ember_tests::profile_dir().join("storm.json"));
    std::fs::write(&path, &json).expect("write the storm report");
    eprintln!("\nstorm: {nodes} nodes (report: {})", path.display());
    eprintln!(
        "| {:<46} | {:>9} | {:>8} | {:>8} | {:>8} | {:>11} |",
        "setup", "nodes/s", "p50 ms", "p90 ms", "p99 ms", "failed over"
    );
    for (setup, f) in rows {
        eprintln!(
            "| {setup:<46} | {:>9.1} | {:>8.0} | {:>8.0} | {:>8.0} | {:>11} |",
            f.throughput, f.p50_ms, f.p90_ms, f.p99_ms, f.failed_over
        );
    }
}

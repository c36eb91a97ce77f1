//! A rollout as an operator runs it and an attacker meets it: two
//! `ember serve` replicas on one PostgreSQL, three enrolled swtpm nodes
//! whose boots are real attestations of two genuine UKIs (a fresh swtpm
//! extended as firmware and systemd-stub do is a reboot, as in
//! rollback_floor.rs). `ember rollout start` makes node-a the canary and
//! node-b, node-c the first wave; each node's next network boot
//! (/v1/boot/node/NAME) names the UKI its rollout hands it. Reboot locks
//! are the node's own: refused without a credential, refused over the
//! limit, and one node's release frees nothing of another's. The canary
//! upgrades and counts; then one replica is killed and the other carries
//! on. node-c's new UKI never reaches Ready and it comes back on its old
//! slot: failed, never done. node-b attests on the old UKI and reports
//! Joined anyway: not counted, failed. Over the wave's budget the rollout
//! halts by itself, auto-revert hands the old UKI back, and `abort
//! --revert` says what it did. (The 200-node run across canary, waves, a
//! closing maintenance window, a halt and auto-revert is the engine's
//! store-level test, server/src/rollout/tests.rs, on its own clock.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ember_proto::client::{self, Credential, Transport, Url};
use ember_proto::host::HttpsClient;
use ember_proto::msg::{path, Outcome};
use ember_proto::tpm::TpmAttestor;
use ember_tests::console::Client;
use ember_tests::eventlog::{self, measurements, LogEvent};
use ember_tests::postgres::Postgres;
use ember_tests::process::wait_until;
use ember_tests::qemu::{build_initrd, build_uki};
use ember_tests::server::EmberServer;
use ember_tests::swtpm::Swtpm;
use ember_tests::ScratchDir;
use ember_tpm::{SocketTransport, Tpm};
use sha2::{Digest, Sha256};

const CMDLINE: &str = "console=ttyS0 panic=-1 ember.iface=eth0";

struct Release {
    path: PathBuf,
    boot: Vec<LogEvent>,
    sha256: String,
}

impl Release {
    fn build(dir: &Path, initrd: &Path, name: &str) -> Release {
        let path = dir.join(format!("{name}.efi"));
        build_uki(
            &path,
            initrd,
            &format!("{CMDLINE} ember.release={name}"),
            &[],
        );
        let sha256 = Sha256::digest(std::fs::read(&path).unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Release {
            boot: measurements(&path),
            path,
            sha256,
        }
    }

    fn short(&self) -> &str {
        &self.sha256[..16]
    }
}

struct Node {
    name: &'static str,
    tpm_dir: ScratchDir,
}

fn https(server: &EmberServer) -> HttpsClient {
    let url = Url::parse(&server.url()).unwrap();
    HttpsClient::new(&url, &std::fs::read(server.ca_path()).unwrap()).unwrap()
}

fn cfg() -> Url {
    Url::parse("https://boot.test").unwrap()
}

fn shut_down(tpm: Swtpm) {
    tpm.tpm2_run("tpm2_shutdown", &[]).expect("tpm2_shutdown");
}

/// A reboot of `node` into `uki`: attests at `server` with the protocol
/// client, then reports `report` if given; returns the credential.
fn boot(server: &EmberServer, node: &Node, uki: &Release, report: Option<Outcome>) -> Credential {
    let tpm = Swtpm::start_tcp(node.tpm_dir.path()).expect("start swtpm");
    eventlog::extend(&tpm, &uki.boot);
    let mut t = Tpm::new(SocketTransport::connect_tcp(&tpm.addr()).unwrap());
    let mut dev = TpmAttestor::new(&mut t);
    let cred = client::attest(
        &mut dev,
        &mut https(server),
        &cfg(),
        &eventlog::write(&uki.boot),
    )
    .unwrap_or_else(|e| panic!("{} booting {}: {e}", node.name, uki.short()));
    dev.close().unwrap();
    drop(t);
    shut_down(tpm);
    if let Some(outcome) = report {
        client::report(
            &mut https(server),
            &cfg(),
            &cred,
            outcome,
            None,
            "node is Ready",
            None,
        )
        .unwrap_or_else(|e| panic!("{} report: {e}", node.name));
    }
    cred
}

/// POSTs to a reboot lock endpoint with `bearer`; (status, body, code header).
fn lock(server: &EmberServer, what: &str, bearer: Option<&str>) -> (u16, String) {
    let r = https(server).post(what, bearer, &[]).expect("lock request");
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

/// The iPXE script a node's next network boot gets, over plain HTTP.
fn boot_script(server: &EmberServer, node: &str) -> String {
    let port = server.http_port().expect("--http-listen");
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {}/{node} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        path::BOOT_NODE
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn status(server: &EmberServer) -> String {
    server
        .ember(&["rollout", "status", "--group", "fleet"])
        .expect_ok("rollout status")
        .stdout
}

/// Waits (ticks are a second apart) until `rollout status` shows each
/// (node, wave, state) of `nodes` and contains `text`.
fn wait_status(server: &EmberServer, nodes: &[(&str, &str, &str)], text: &str) -> String {
    let mut last = String::new();
    let ok = wait_until(Duration::from_secs(30), || {
        last = status(server);
        last.contains(text)
            && nodes
                .iter()
                .all(|(n, w, st)| node_state(&last, n) == Some((w.to_string(), st.to_string())))
    });
    assert!(ok, "status never showed {nodes:?} and {text:?}:\n{last}");
    last
}

/// A node's wave and state from its status line (`NAME wave W STATE REASON`).
fn node_state(status: &str, name: &str) -> Option<(String, String)> {
    status.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        (w.len() >= 4 && w[0] == name && w[1] == "wave")
            .then(|| (w[2].to_string(), w[3].to_string()))
    })
}

/// The status line of one node (`NAME wave W STATE REASON`).
fn node_line<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no line for {name}:\n{status}"))
}

#[test]
fn a_rollout_on_replicas_counts_only_attested_upgrades_halts_and_reverts() {
    let started = Instant::now();
    let pg = Postgres::start();
    let shared = ScratchDir::new("rollout-state");
    let state = shared.path().join("state");
    let replica = |id: &str| {
        EmberServer::start_replica(
            &pg.url(),
            &state,
            false,
            &[
                "--replica-id",
                id,
                "--http-listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ],
        )
    };
    let r1 = replica("r1");
    let r2 = EmberServer::start_replica(
        &pg.url(),
        &state,
        false,
        &[
            "--replica-id",
            "r2",
            "--http-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--console-listen",
            "127.0.0.1:0",
        ],
    );

    let dir = ScratchDir::new("rollout");
    let initrd = dir.path().join("initrd.cpio.gz");
    build_initrd(&initrd, &[]);
    let older = Release::build(dir.path(), &initrd, "older");
    let newer = Release::build(dir.path(), &initrd, "newer");
    // Three TPMs of their own (freshly manufactured: distinct EKs).
    let nodes: Vec<Node> = ["node-a", "node-b", "node-c"]
        .into_iter()
        .map(|name| {
            let tpm_dir = ScratchDir::new("rollout-tpm");
            Swtpm::setup(tpm_dir.path()).expect("manufacture swtpm");
            let tpm = Swtpm::start_tcp(tpm_dir.path()).expect("start swtpm");
            r1.enroll_swtpm(name, "fleet", &tpm).expect_ok("enroll");
            shut_down(tpm);
            Node { name, tpm_dir }
        })
        .collect();
    let src = dir.path().join("overlay-src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/token"), "cluster-secret\n").unwrap();
    r1.add_overlay(&src, Some("group:fleet"));
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    r1.set_policy(&[
        "--group",
        "fleet",
        "--pcrs",
        "4",
        "--uki",
        older.path.to_str().unwrap(),
        "--uki",
        newer.path.to_str().unwrap(),
    ])
    .expect_ok("policy set --uki older --uki newer");
    // Every node runs the older UKI and blessed it; their credentials
    // (of the boot they run now) are what they take reboot locks with.
    let creds: Vec<Credential> = nodes
        .iter()
        .map(|n| boot(&r1, n, &older, Some(Outcome::Joined)))
        .collect();
    // Nobody is in a rollout yet.
    assert!(boot_script(&r1, "node-a").starts_with("HTTP/1.1 404"));

    let run = r2
        .ember(&[
            "rollout",
            "start",
            "--group",
            "fleet",
            "--uki",
            newer.path.to_str().unwrap(),
            "--from",
            older.path.to_str().unwrap(),
            "--canary",
            "1",
            "--waves",
            "2",
            "--max-in-flight",
            "2",
            "--failure-budget",
            "1",
            "--soak",
            "1s",
            "--timeout",
            "2m",
            "--max-rebooting",
            "1",
            "--auto-revert",
        ])
        .expect_ok("rollout start");
    assert!(
        run.stdout.contains(&format!(
            "from UKI {} to {}, waves [1, 2] (wave 0: canaries)",
            older.short(),
            newer.short()
        )),
        "{}",
        run.stdout
    );
    // A second rollout of the same group is refused while this one is open.
    let again = r1.ember(&[
        "rollout",
        "start",
        "--group",
        "fleet",
        "--uki",
        newer.path.to_str().unwrap(),
        "--from",
        older.path.to_str().unwrap(),
    ]);
    assert!(
        !again.ok && again.stderr.contains("already has rollout"),
        "{}",
        again.stderr
    );

    // The server chose node-a as the canary: its next boot (from either
    // replica) names the new UKI; the others keep the old one.
    wait_status(&r1, &[("node-a", "0", "handed")], "running");
    for r in [&r1, &r2] {
        let s = boot_script(r, "node-a");
        assert!(
            s.contains(&format!("chain --name uki.efi /v1/boot/{} ", newer.sha256)),
            "{s}"
        );
        let s = boot_script(r, "node-b");
        assert!(s.contains(&format!("/v1/boot/{} ", older.sha256)), "{s}");
    }

    // Reboot locks: only with a credential, at most one, each node's own.
    assert_eq!(lock(&r1, path::LOCK, None).0, 401);
    assert_eq!(lock(&r1, path::LOCK, Some(&"00".repeat(32))).0, 401);
    let (st, body) = lock(&r1, path::LOCK, Some(creds[0].bearer()));
    assert_eq!(st, 200, "{body}");
    let (st, _) = lock(&r2, path::LOCK, Some(creds[1].bearer()));
    assert_eq!(st, 423, "a second node over --max-rebooting 1");
    let (st, body) = lock(&r2, path::UNLOCK, Some(creds[1].bearer()));
    assert_eq!((st, body.as_str()), (200, "node-b held no reboot lock\n"));
    assert!(status(&r2).contains("reboot locks: 1 of 1 (node-a)"));

    // The canary reboots into the new UKI, reaches Ready, reports Joined.
    boot(&r2, a, &newer, Some(Outcome::Joined));
    let s = wait_status(
        &r2,
        &[("node-b", "1", "handed"), ("node-c", "1", "handed")],
        "",
    );
    assert!(
        s.contains("reboot locks: 0 of 1"),
        "judging the canary released its lock:\n{s}"
    );
    // One replica dies mid-rollout; the other carries on alone.
    let pid = rustix::process::Pid::from_raw(r1.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill r1");
    let killed_at = started.elapsed();

    // node-c: the new UKI never reaches Ready (attested, no report); boot
    // counting brings it back on its old slot, where it Joins.
    boot(&r2, c, &newer, None);
    boot(&r2, c, &older, Some(Outcome::Joined));
    let s = wait_status(&r2, &[("node-c", "1", "failed")], "");
    assert!(
        node_line(&s, "node-c").contains(&format!("came back on UKI {}", older.short())),
        "{s}"
    );
    assert!(
        s.contains("running"),
        "one failure is within the budget:\n{s}"
    );

    // node-b claims Joined without a quote of the target: not counted.
    boot(&r2, b, &older, Some(Outcome::Joined));
    let s = wait_status(
        &r2,
        &[("node-b", "1", "reverted"), ("node-c", "1", "reverted")],
        "halted",
    );
    eprintln!("rollout status after the halt (r1 killed at {killed_at:?}):\n{s}");
    assert!(
        s.contains("why: wave 1: 2 failed, over its failure budget of 1"),
        "{s}"
    );
    // The canary upgraded (and so is not among the listed nodes).
    assert_eq!(node_state(&s, "node-a"), None, "{s}");
    assert!(
        s.contains("upgraded")
            && s.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["canary", "1", "0", "0", "1", "0", "0"]),
        "{s}"
    );
    for n in ["node-b", "node-c"] {
        let line = node_line(&s, n);
        assert!(
            line.contains("reverted") && line.contains("auto-revert after: came back on UKI"),
            "{line}"
        );
        let script = boot_script(&r2, n);
        assert!(
            script.contains(&format!("/v1/boot/{} ", older.sha256)),
            "{script}"
        );
    }
    assert!(
        s.contains(&format!(
            "auto-revert: handed the old UKI {} back to 2 node(s): node-b, node-c",
            older.short()
        )),
        "{s}"
    );
    assert!(boot_script(&r2, "node-a").contains(&newer.sha256));
    assert!(
        r2.log().contains("HALTED"),
        "the surviving replica decided the halt"
    );
    let metrics = r2.metrics();
    for (state, n) in [("upgraded", 1), ("reverted", 2), ("handed", 0)] {
        let line =
            format!("ember_rollout_nodes{{replica=\"r2\",rollout=\"1\",state=\"{state}\"}} {n}");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }

    // The console's rollouts page: progress by wave, each node's state,
    // the halt's reason, the timeline.
    let certs = ScratchDir::new("rollout-operator");
    r2.ember(&[
        "admin",
        "operator",
        "issue",
        "alice",
        "--out",
        certs.path().to_str().unwrap(),
    ])
    .expect_ok("issue alice");
    let alice = Client::new(
        r2.console_addr().unwrap(),
        &r2.ca_path(),
        Some((
            &certs.path().join("alice.pem"),
            &certs.path().join("alice.key"),
        )),
    );
    let page = alice.get("/rollouts");
    assert_eq!(page.status, 200, "{}", page.body);
    for want in [
        "Rollout 1 · group fleet",
        "<span class=\"badge bad\">halted</span>",
        "Why: </strong>wave 1: 2 failed, over its failure budget of 1",
        "<th scope=\"row\">canary</th><td>0</td><td>0</td><td>1</td><td>0</td><td>0</td>",
        "<th scope=\"row\">1</th><td>0</td><td>0</td><td>0</td><td>0</td><td>2</td>",
        "<a href=\"/node/node-c\">node-c</a>",
        "auto-revert: handed the old UKI",
    ] {
        assert!(page.body.contains(want), "{want} not in\n{}", page.body);
    }
    assert_eq!(
        Client::new(r2.console_addr().unwrap(), &r2.ca_path(), None)
            .get("/rollouts")
            .status,
        401
    );

    // A halt is not resumed; abort --revert works and says what it did.
    let resume = r2.ember(&["rollout", "resume", "--group", "fleet"]);
    assert!(
        !resume.ok && resume.stderr.contains("is halted"),
        "{}",
        resume.stderr
    );
    let out = r2
        .ember(&["rollout", "abort", "--group", "fleet", "--revert"])
        .expect_ok("abort --revert")
        .stdout;
    eprintln!("{out}");
    assert!(
        out.contains("aborted by") && out.contains("while halted"),
        "{out}"
    );
    assert!(
        out.contains(&format!("1 upgraded node(s) keep UKI {}", newer.short())),
        "{out}"
    );
    assert!(status(&r2).contains("aborted"));
    eprintln!(
        "rollout_replicas took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

//! Several `ember serve` replicas on one PostgreSQL (Debian's postgresql-15,
//! started per test on a Unix socket): a node's Start on one replica and
//! its Finish, overlay and Report on another all work, because sessions and
//! credentials live in the database; a Finish replayed at the other replica
//! is refused, and one sent to two replicas at once is accepted once; the
//! admin commands edit the same state through --database.
//! When PostgreSQL is down a replica refuses with 503 `unavailable`
//! (reason `database-unavailable`, which sends a node on to its next
//! server) and serves again once PostgreSQL is back, without a restart
//! (server_outage.rs has the silent database and the retry hint).

use ember_proto::client::{self, BodySink, Response, Transport, Url};
use ember_proto::host::HttpsClient;
use ember_proto::msg::{self, decode, ErrorCode, ErrorResponse, Outcome};
use ember_proto::sealed::Sink;
use ember_proto::tap::{Tap, Tapped};
use ember_proto::tpm::TpmAttestor;
use ember_tests::postgres::Postgres;
use ember_tests::server::EmberServer;
use ember_tests::swtpm::Swtpm;
use ember_tests::ScratchDir;
use ember_tpm::{SocketTransport, Tpm};

/// Start goes to one replica, every other request to another.
struct Split {
    start: HttpsClient,
    rest: HttpsClient,
}

impl Transport for Split {
    type Error = <HttpsClient as Transport>::Error;
    fn post(
        &mut self,
        path: &str,
        bearer: Option<&str>,
        body: &[u8],
    ) -> Result<Response, Self::Error> {
        if path == msg::path::START {
            self.start.post(path, bearer, body)
        } else {
            self.rest.post(path, bearer, body)
        }
    }
    fn get(
        &mut self,
        path: &str,
        bearer: Option<&str>,
        sink: &mut dyn BodySink,
    ) -> Result<(), Self::Error> {
        self.rest.get(path, bearer, sink)
    }
}

fn https(server: &EmberServer) -> HttpsClient {
    let url = Url::parse(&server.url()).unwrap();
    HttpsClient::new(&url, &std::fs::read(server.ca_path()).unwrap()).unwrap()
}

/// Keeps the Finish body.
#[derive(Default)]
struct KeepFinish(Option<Vec<u8>>);
impl Tap for KeepFinish {
    fn post(&mut self, path: &str, body: &mut Vec<u8>) {
        if path == msg::path::FINISH {
            self.0 = Some(body.clone());
        }
    }
}

struct Count(u64);
impl Sink for Count {
    type Error = std::convert::Infallible;
    fn write(&mut self, p: &[u8]) -> Result<(), Self::Error> {
        self.0 += p.len() as u64;
        Ok(())
    }
    fn finish(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

fn swtpm() -> (ScratchDir, Swtpm) {
    let dir = ScratchDir::new("replica-tpm");
    Swtpm::setup_cached(dir.path()).expect("manufacture swtpm");
    let tpm = Swtpm::start_tcp(dir.path()).expect("start swtpm");
    (dir, tpm)
}

#[test]
fn start_on_one_replica_finish_on_another() {
    let pg = Postgres::start();
    let shared = ScratchDir::new("replica-state");
    let state = shared.path().join("state");
    let metrics = ["--metrics-listen", "127.0.0.1:0"];
    let a = EmberServer::start_replica(
        &pg.url(),
        &state,
        false,
        &[&metrics[..], &["--replica-id", "a"]].concat(),
    );
    let b = EmberServer::start_replica(
        &pg.url(),
        &state,
        false,
        &[&metrics[..], &["--replica-id", "b"]].concat(),
    );
    let (_tpm_dir, tpm) = swtpm();
    // Admin commands through one replica's flags, seen by the other.
    a.enroll_swtpm("node-a", "default", &tpm)
        .expect_ok("enroll");
    let src = shared.path().join("overlay");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("config"), vec![5u8; 70_000]).unwrap();
    let version = b.add_overlay(&src, Some("group:default"));
    assert_eq!(pg.psql("SELECT count(*) FROM nodes"), "1");

    let mut t = Tpm::new(SocketTransport::connect_tcp(&tpm.addr()).unwrap());
    let mut dev = TpmAttestor::new(&mut t);
    let mut keep = KeepFinish::default();
    let mut split = Tapped {
        inner: Split {
            start: https(&a),
            rest: https(&b),
        },
        tap: &mut keep,
    };
    let cfg = Url::parse("https://boot.test").unwrap();
    let cred = client::attest(&mut dev, &mut split, &cfg, &[]).expect("Start on a, Finish on b");
    dev.close().unwrap();
    // b signed the manifest with the one key in the shared state folder,
    // and a serves the sealed blob `overlay add` wrote there.
    let envelope = cred
        .open_grant(&a.manifest_key())
        .expect("manifest signed with the shared key");
    let mut sink = Count(0);
    client::fetch_overlay(&mut https(&a), &cfg, &envelope, &mut sink).expect("overlay from a");
    let m = &envelope.manifest;
    assert_eq!((m.version_id, sink.0), (version, m.plain_size));
    // The credential b issued opens the Report on a.
    let r = client::report(
        &mut https(&a),
        &cfg,
        &cred,
        Outcome::Joined,
        Some(version),
        "ok",
        None,
    )
    .expect("report on a");
    assert_eq!(r.last_known_good, Some(version));
    assert!(
        a.wait_log("step=start node=node-a outcome=ok"),
        "{}",
        a.log()
    );
    assert!(
        b.wait_log("step=finish node=node-a outcome=ok"),
        "{}",
        b.log()
    );
    assert!(
        a.wait_log("step=report node=node-a outcome=ok"),
        "{}",
        a.log()
    );

    // The Finish b accepted, replayed at a: the session is used up in the
    // database both read.
    let replay = https(&a)
        .post(msg::path::FINISH, None, keep.0.as_ref().unwrap())
        .unwrap();
    let e: ErrorResponse = decode("error", &replay.body).unwrap();
    assert_eq!((replay.status, e.code), (409, ErrorCode::SessionReused));

    let nodes = b.nodes();
    assert!(
        nodes.contains("node-a") && nodes.contains("joined"),
        "{nodes}"
    );
    for (server, id) in [(&a, "a"), (&b, "b")] {
        let m = server.metrics();
        assert!(
            m.contains(&format!("ember_replica_info{{replica=\"{id}\"")),
            "{m}"
        );
    }
    // The attestation counts where it finished.
    assert!(!a
        .metrics()
        .contains("ember_attestations_total{replica=\"a\",outcome=\"ok\"}"));
    assert!(b
        .metrics()
        .contains("ember_attestations_total{replica=\"b\",outcome=\"ok\"} 1"));
}

#[test]
fn postgres_down_is_refused_with_a_code_and_the_replica_recovers() {
    let mut pg = Postgres::start();
    let shared = ScratchDir::new("replica-state");
    let state = shared.path().join("state");
    let server = EmberServer::start_replica(
        &pg.url(),
        &state,
        false,
        &["--metrics-listen", "127.0.0.1:0"],
    );
    let (_tpm_dir, tpm) = swtpm();
    server
        .enroll_swtpm("node-a", "default", &tpm)
        .expect_ok("enroll");
    let attest = || server.attest(&tpm.spec(), &["--no-overlay", "--timeout", "5s"]);
    let run = attest();
    assert!(run.ok, "{}{}", run.stdout, run.stderr);
    // Several connections sit idle in the pool when PostgreSQL stops
    // (concurrent /metrics scrapes each take one): after the restart none
    // of them may be handed to a request.
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| server.metrics());
        }
    });

    pg.stop_server();
    let run = attest();
    assert!(!run.ok, "attested with PostgreSQL down:\n{}", run.stdout);
    assert!(
        server.wait_log("outcome=unavailable status=503"),
        "{}",
        server.log()
    );
    let log = server.log();
    assert!(log.contains("reason=\"database-unavailable\""), "{log}");
    // The client learns the code and the reason, never the detail.
    assert!(run.stderr.contains("unavailable"), "{}", run.stderr);
    assert!(!run.stderr.contains("sock"), "{}", run.stderr);
    let admin = server.ember(&["nodes"]);
    assert!(
        !admin.ok && admin.stderr.contains("database unavailable"),
        "{}",
        admin.stderr
    );

    pg.start_server();
    let run = attest();
    assert!(
        run.ok,
        "no recovery after PostgreSQL came back: {}{}",
        run.stdout, run.stderr
    );
}

/// Keeps the real Finish body and sends one for another session instead,
/// so the kept body's session stays unclaimed.
#[derive(Default)]
struct DivertFinish(Option<Vec<u8>>);
impl Tap for DivertFinish {
    fn post(&mut self, path: &str, body: &mut Vec<u8>) {
        if path == msg::path::FINISH {
            self.0 = Some(body.clone());
            let mut f: msg::FinishRequest = decode("finish", body).unwrap();
            f.session[0] ^= 1;
            *body = msg::encode(&f);
        }
    }
}

#[test]
fn one_finish_sent_to_two_replicas_at_once_is_accepted_once() {
    let pg = Postgres::start();
    let shared = ScratchDir::new("replica-state");
    let state = shared.path().join("state");
    let a = EmberServer::start_replica(&pg.url(), &state, false, &[]);
    let b = EmberServer::start_replica(&pg.url(), &state, false, &[]);
    let (_tpm_dir, tpm) = swtpm();
    a.enroll_swtpm("node-a", "default", &tpm)
        .expect_ok("enroll");
    let cfg = Url::parse("https://boot.test").unwrap();
    let mut t = Tpm::new(SocketTransport::connect_tcp(&tpm.addr()).unwrap());
    let mut dev = TpmAttestor::new(&mut t);
    let mut divert = DivertFinish::default();
    let diverted = client::attest(
        &mut dev,
        &mut Tapped {
            inner: https(&a),
            tap: &mut divert,
        },
        &cfg,
        &[],
    );
    assert!(diverted.is_err(), "the diverted Finish named no session");
    dev.close().unwrap();
    let finish = divert.0.expect("a Finish was sent");
    let barrier = std::sync::Barrier::new(2);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let racers: Vec<_> = [&a, &b]
            .map(|server| {
                let (barrier, finish) = (&barrier, &finish);
                s.spawn(move || {
                    let mut http = https(server);
                    barrier.wait();
                    http.post(msg::path::FINISH, None, finish).unwrap().status
                })
            })
            .into_iter()
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let mut sorted = statuses.clone();
    sorted.sort();
    assert_eq!(sorted, [200, 409], "both replicas answered {statuses:?}");
    assert_eq!(pg.psql("SELECT count(*) FROM credentials"), "1");
}

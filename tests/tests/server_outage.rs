//! The boot server when its database fails, and when it is stopped.
//!
//! - SIGTERM (what `systemctl stop` sends) drains and exits 0 on SQLite and
//!   on PostgreSQL: the PostgreSQL replica used to abort (exit 134, "Cannot
//!   start a runtime from within a runtime") as its blocking client was
//!   dropped on an async worker.
//! - PostgreSQL stopped: requests are refused with 503 `unavailable` and a
//!   `Retry-After`, at once (an outage, not a verdict: the node may try
//!   its next server and its last-known-good), and the replica serves
//!   again once PostgreSQL is back.
//! - PostgreSQL black-holed (SIGSTOP to its postmaster and backends, by the
//!   PIDs the fixture started): every request still answers, 503 within
//!   [`SILENT_BOUND`], /metrics answers within [`METRICS_BOUND`]; after
//!   SIGCONT a node attests, and no credential was issued twice.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use ember_proto::client::{self, Url};
use ember_proto::host::HttpsClient;
use ember_proto::msg;
use ember_proto::tap::{Tap, Tapped};
use ember_proto::tpm::TpmAttestor;
use ember_tests::postgres::Postgres;
use ember_tests::process::wait_until;
use ember_tests::server::EmberServer;
use ember_tests::swtpm::Swtpm;
use ember_tests::ScratchDir;
use ember_tpm::{SocketTransport, Tpm};

/// A request on a silent PostgreSQL answers within this: the server's
/// pool-acquire (5 s), connect (3 s) and statement (5 s) timeouts, plus
/// slack for a loaded 2-core machine.
const SILENT_BOUND: Duration = Duration::from_secs(16);
/// /metrics waits at most 1 s for its one database gauge.
const METRICS_BOUND: Duration = Duration::from_secs(3);
/// SIGTERM to exit: the drain bound (5 s) plus the runtime's 2 s.
const STOP_BOUND: Duration = Duration::from_secs(9);

fn swtpm() -> (ScratchDir, Swtpm) {
    let dir = ScratchDir::new("outage-tpm");
    Swtpm::setup_cached(dir.path()).expect("manufacture swtpm");
    let tpm = Swtpm::start_tcp(dir.path()).expect("start swtpm");
    (dir, tpm)
}

/// Keeps the Start body a real flow sent (a valid EK and AK, so a replay
/// of it reaches the database).
#[derive(Default)]
struct KeepStart(Option<Vec<u8>>);
impl Tap for KeepStart {
    fn post(&mut self, path: &str, body: &mut Vec<u8>) {
        if path == msg::path::START {
            self.0 = Some(body.clone());
        }
    }
}

/// Attests once with the library client; returns the Start body it sent.
fn attest_keeping_start(server: &EmberServer, tpm: &Swtpm) -> Vec<u8> {
    let url = Url::parse(&server.url()).unwrap();
    let https = HttpsClient::new(&url, &std::fs::read(server.ca_path()).unwrap()).unwrap();
    let mut t = Tpm::new(SocketTransport::connect_tcp(&tpm.addr()).unwrap());
    let mut dev = TpmAttestor::new(&mut t);
    let mut keep = KeepStart::default();
    let mut tapped = Tapped {
        inner: https,
        tap: &mut keep,
    };
    client::attest(&mut dev, &mut tapped, &url, &[]).expect("attest with PostgreSQL up");
    dev.close().unwrap();
    keep.0.expect("a Start was sent")
}

/// What a raw POST got back.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<u32>,
    error: Option<String>,
    took: Duration,
}

/// One POST over a fresh TLS connection, reading the status line and the
/// headers the test checks (the library client does not expose headers).
fn post_raw(server: &EmberServer, path: &str, body: &[u8]) -> Answer {
    let started = Instant::now();
    let mut s = server.tls_connect().expect("TLS to the server");
    s.sock
        .set_read_timeout(Some(SILENT_BOUND + Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        msg::CONTENT_TYPE,
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    s.flush().unwrap();
    let mut raw = Vec::new();
    // A close without close_notify is fine here: the headers are in.
    let _ = s.read_to_end(&mut raw);
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line after {took:?}: {text:?}"));
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    Answer {
        status,
        retry_after: header("retry-after").and_then(|v| v.parse().ok()),
        error: header(msg::ERROR_HEADER),
        took,
    }
}

/// A /metrics scrape with a read timeout; returns the text and how long
/// it took.
fn scrape(server: &EmberServer) -> (String, Duration) {
    let started = Instant::now();
    let addr = server.metrics_addr().expect("--metrics-listen");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    (text, started.elapsed())
}

/// Credentials issued, and how many distinct sessions they came from.
fn credentials(pg: &Postgres) -> (u64, u64) {
    let n = pg.psql("SELECT count(*) FROM credentials").parse().unwrap();
    let sessions = pg
        .psql("SELECT count(DISTINCT session_id) FROM credentials")
        .parse()
        .unwrap();
    (n, sessions)
}

/// Enrolls a swtpm, attests, holds one idle TLS connection open, sends
/// SIGTERM: the server must exit 0 within [`STOP_BOUND`].
fn stops_cleanly(mut server: EmberServer, what: &str) {
    let (_dir, tpm) = swtpm();
    server
        .enroll_swtpm("node-a", "default", &tpm)
        .expect_ok("enroll");
    // Connections are opened and used on the blocking pool: the client
    // the old code dropped on an async worker at shutdown.
    server
        .attest(&tpm.spec(), &["--no-overlay", "--timeout", "20s"])
        .expect_ok("attest");
    let _idle = server.tls_connect().expect("an idle TLS connection");
    let (status, took) = server
        .terminate(STOP_BOUND)
        .unwrap_or_else(|| panic!("{what}: still running {STOP_BOUND:?} after SIGTERM"));
    let log = server.log();
    assert_eq!(status.code(), Some(0), "{what}: {status:?}\n{log}");
    assert!(!log.contains("panicked"), "{what}:\n{log}");
    assert!(log.contains("step=shutdown"), "{what}:\n{log}");
    eprintln!("{what}: SIGTERM to exit 0 in {} ms", took.as_millis());
}

#[test]
fn sigterm_drains_and_exits_zero_on_sqlite_and_on_postgres() {
    // The default backend (SQLite unless EMBER_TEST_DATABASE=postgres).
    stops_cleanly(EmberServer::start(), "default backend");
    let pg = Postgres::start();
    let shared = ScratchDir::new("outage-state");
    let server = EmberServer::start_replica(&pg.url(), &shared.path().join("state"), false, &[]);
    stops_cleanly(server, "postgres");
}

#[test]
fn a_stopped_or_silent_postgres_is_an_outage_not_a_verdict() {
    let mut pg = Postgres::start();
    let shared = ScratchDir::new("outage-state");
    let server = EmberServer::start_replica(
        &pg.url(),
        &shared.path().join("state"),
        false,
        &["--metrics-listen", "127.0.0.1:0"],
    );
    let (_dir, tpm) = swtpm();
    server
        .enroll_swtpm("node-a", "default", &tpm)
        .expect_ok("enroll");
    let start = attest_keeping_start(&server, &tpm);
    assert_eq!(credentials(&pg), (1, 1));
    let attest =
        |timeout: &str| server.attest(&tpm.spec(), &["--no-overlay", "--timeout", timeout]);

    // Down: refused at once, with a retry hint; the node is not judged.
    pg.stop_server();
    let a = post_raw(&server, msg::path::START, &start);
    assert_eq!(
        (a.status, a.retry_after, a.error.as_deref()),
        (503, Some(5), Some("unavailable")),
        "{a:?}"
    );
    assert!(a.took < Duration::from_secs(5), "{a:?}");
    eprintln!("postgres down: 503 in {} ms", a.took.as_millis());
    let run = attest("20s");
    assert!(!run.ok, "attested with PostgreSQL down:\n{}", run.stdout);
    assert!(run.stderr.contains("unavailable"), "{}", run.stderr);
    assert!(
        server.wait_log("outcome=unavailable status=503"),
        "{}",
        server.log()
    );
    assert!(server.log().contains("reason=\"database-unavailable\""));
    pg.start_server();
    attest("20s").expect_ok("attest after PostgreSQL came back");
    assert_eq!(credentials(&pg), (2, 2));

    // Black-holed: every request still answers, /metrics too.
    pg.pause();
    let paused = Instant::now();
    let answers: Vec<Answer> = std::thread::scope(|s| {
        let posts: Vec<_> = (0..4)
            .map(|_| s.spawn(|| post_raw(&server, msg::path::START, &start)))
            .collect();
        let (text, took) = scrape(&server);
        assert!(took < METRICS_BOUND, "/metrics took {took:?}");
        assert!(text.contains("ember_requests_total"), "{text}");
        eprintln!("postgres silent: /metrics in {} ms", took.as_millis());
        posts.into_iter().map(|p| p.join().unwrap()).collect()
    });
    for a in &answers {
        assert_eq!(
            (a.status, a.error.as_deref()),
            (503, Some("unavailable")),
            "{a:?}"
        );
        assert_eq!(a.retry_after, Some(5), "{a:?}");
        assert!(a.took < SILENT_BOUND, "{a:?}");
    }
    let slowest = answers.iter().map(|a| a.took).max().unwrap();
    eprintln!(
        "postgres silent: 4 concurrent Starts answered 503 within {} ms",
        slowest.as_millis()
    );
    // A second wave, once the first one's connections were given up: new
    // connects to the stopped server time out the same way.
    let a = post_raw(&server, msg::path::START, &start);
    assert_eq!(a.status, 503, "{a:?}");
    assert!(a.took < SILENT_BOUND, "{a:?}");
    let run = attest("30s");
    assert!(!run.ok, "attested with PostgreSQL stopped:\n{}", run.stdout);
    assert!(run.stderr.contains("unavailable"), "{}", run.stderr);
    let (_, took) = scrape(&server);
    assert!(took < METRICS_BOUND, "/metrics took {took:?}");

    // Some seconds of silence, then SIGCONT: the replica serves again
    // without a restart.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(paused.elapsed()));
    pg.resume();
    let resumed = Instant::now();
    let mut last = None;
    let ok = wait_until(Duration::from_secs(30), || {
        let run = attest("20s");
        let ok = run.ok;
        last = Some(run);
        ok
    });
    let last = last.unwrap();
    assert!(
        ok,
        "no attest after SIGCONT: {}{}",
        last.stdout, last.stderr
    );
    eprintln!(
        "postgres silent {} s: attested {} ms after SIGCONT",
        resumed.duration_since(paused).as_secs(),
        resumed.elapsed().as_millis()
    );
    // Three attests succeeded; every credential from its own session.
    assert_eq!(credentials(&pg), (3, 3));
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

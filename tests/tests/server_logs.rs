//! What `ember serve` writes to its logs, as an operator's log pipeline
//! meets it: with `--log-format json` every line is a JSON object with a
//! timestamp, level, target, message and fields; in either format no
//! secret of an attestation (the activated session secret, the bearer
//! credential, the overlay's data key, a refused credential), no private
//! key of the state folder and no database password ever appears.

use ember_proto::client::{self, Transport, Url};
use ember_proto::host::HttpsClient;
use ember_proto::msg::{self, Outcome};
use ember_proto::sealed::Sink;
use ember_proto::tpm::TpmAttestor;
use ember_tests::postgres::Postgres;
use ember_tests::server::EmberServer;
use ember_tests::swtpm::Swtpm;
use ember_tests::{ember_bin, ScratchDir};
use ember_tpm::{SocketTransport, Tpm};
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

/// The protocol functions take the server's URL for its path prefix (none
/// here); the transport already carries the origin.
fn cfg() -> Url {
    Url::parse("https://boot.test").unwrap()
}

fn https(server: &EmberServer) -> HttpsClient {
    let url = Url::parse(&server.url()).unwrap();
    HttpsClient::new(&url, &std::fs::read(server.ca_path()).unwrap()).unwrap()
}

/// Every line of `text` as a JSON object with the five keys, their types
/// checked; panics naming the line that is not.
fn json_lines(text: &str) -> Vec<serde_json::Map<String, Value>> {
    text.lines()
        .map(|line| {
            let Ok(Value::Object(o)) = serde_json::from_str::<Value>(line) else {
                panic!("not a JSON object: {line:?}\nin:\n{text}");
            };
            let ts = o["timestamp"].as_str().unwrap_or_default();
            // RFC 3339 in UTC: 2026-12-07T07:30:00.123456Z
            assert!(
                ts.len() >= 20 && ts.as_bytes()[10] == b'T' && ts.ends_with('Z'),
                "timestamp {ts:?} in {line}"
            );
            assert!(
                ["ERROR", "WARN", "INFO"].contains(&o["level"].as_str().unwrap_or_default()),
                "level in {line}"
            );
            assert!(
                o["target"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("ember"),
                "target in {line}"
            );
            assert!(o["message"].is_string(), "message in {line}");
            assert!(o["fields"].is_object(), "fields in {line}");
            o
        })
        .collect()
}

/// The one line whose fields hold every `(key, value)` of `want`.
fn find<'a>(
    lines: &'a [serde_json::Map<String, Value>],
    want: &[(&str, Value)],
) -> &'a serde_json::Map<String, Value> {
    let hits: Vec<_> = lines
        .iter()
        .filter(|o| want.iter().all(|(k, v)| o["fields"].get(*k) == Some(v)))
        .collect();
    assert_eq!(hits.len(), 1, "lines with {want:?}: {hits:?}");
    hits[0]
}

#[test]
fn json_log_format_writes_one_object_per_line_with_its_fields() {
    let server = EmberServer::start_with(&[
        "--log-format",
        "json",
        "--http-listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--replica-id",
        "logs-1",
    ]);
    // A refused request: a Start that is not a protocol message.
    let junk = https(&server)
        .post(msg::path::START, None, b"")
        .expect("post junk");
    assert_eq!(junk.status, 400);
    // A TLS handshake that fails: a client that speaks no TLS.
    let mut tcp = std::net::TcpStream::connect(server.addr()).unwrap();
    tcp.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    drop(tcp);
    assert!(
        server.wait_log("\"outcome\":\"malformed\"")
            && server.wait_log("\"outcome\":\"handshake-failed\""),
        "{}",
        server.log()
    );

    let logged = json_lines(&server.log());
    let start = find(
        &logged,
        &[("step", "start".into()), ("outcome", "malformed".into())],
    );
    assert_eq!(start["level"], "INFO");
    assert_eq!(start["target"], "ember_server::http");
    let f = &start["fields"];
    assert_eq!(f["node"], "-");
    assert_eq!(f["status"], 400);
    assert!(f["ms"].is_f64() && f["reason"].is_string() && f["detail"].is_string());
    let message = start["message"].as_str().unwrap();
    assert!(
        message.starts_with("step=start node=- outcome=malformed status=400 ms="),
        "{message}"
    );
    let tls = find(&logged, &[("outcome", "handshake-failed".into())]);
    assert_eq!(tls["target"], "ember_server::conn");
    assert!(tls["fields"]["peer"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    let settings = find(&logged, &[("replica", "logs-1".into())]);
    assert!(
        settings["fields"]["max_connections"].is_u64(),
        "{settings:?}"
    );
    assert_eq!(settings["fields"]["body_timeout"], "10s");
    // The test servers run in lab mode, which the tool itself warns about.
    let lab = logged
        .iter()
        .find(|o| o["message"].as_str().unwrap().starts_with("LAB MODE"))
        .expect("the lab mode warning");
    assert_eq!(lab["level"], "WARN");
    assert_eq!(lab["target"], "ember::serve_cmd");

    // Announcements stay on stdout, as JSON too.
    let announced = json_lines(&server.stdout());
    assert!(announced
        .iter()
        .all(|o| o["target"] == "ember_server::announce" && o["level"] == "INFO"));
    let messages: Vec<&str> = announced
        .iter()
        .map(|o| o["message"].as_str().unwrap())
        .collect();
    let listening = format!("listening on https://{}", server.addr());
    assert_eq!(messages.last(), Some(&listening.as_str()), "{messages:?}");
    let metrics = format!(
        "metrics on http://{}/metrics",
        server.metrics_addr().unwrap()
    );
    assert!(messages.contains(&metrics.as_str()), "{messages:?}");
}

#[test]
fn json_log_format_reports_a_failed_start_as_a_json_error() {
    let busy = EmberServer::start();
    let dir = ScratchDir::new("serve-busy");
    let out = Command::new(ember_bin())
        .args(["serve", "--log-format", "json", "--listen", busy.addr()])
        .arg("--state")
        .arg(dir.path().join("state"))
        .stdin(Stdio::null())
        .output()
        .expect("run ember serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = json_lines(&stderr);
    let last = lines.last().expect("a line");
    assert_eq!(last["level"], "ERROR");
    assert_eq!(last["target"], "ember");
    let message = last["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("error: listen on {}", busy.addr())),
        "{message}"
    );
}

/// Discards the overlay, noting that it ended.
#[derive(Default)]
struct Discard(bool);
impl Sink for Discard {
    type Error = std::convert::Infallible;
    fn write(&mut self, _: &[u8]) -> Result<(), Self::Error> {
        Ok(())
    }
    fn finish(&mut self) -> Result<(), Self::Error> {
        self.0 = true;
        Ok(())
    }
}

/// The ways a secret could be printed: hex either case (and its first
/// half, should a line shorten it), base64, a Rust byte list, raw bytes.
fn printed_forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let hex = ember_fs::hex::hex(secret);
    let debug = secret[..8]
        .iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    vec![
        hex.clone().into_bytes(),
        hex.to_uppercase().into_bytes(),
        hex.as_bytes()[..hex.len() / 2].to_vec(),
        base64(secret).into_bytes(),
        debug.into_bytes(),
        secret.to_vec(),
    ]
}

fn base64(b: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &x)| n | ((x as u32) << (16 - 8 * i)));
        for i in 0..=c.len() {
            s.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    s
}

/// The first printed form of `secret` that `log` holds.
fn printed_in(log: &[u8], secret: &[u8]) -> Option<Vec<u8>> {
    printed_forms(secret)
        .into_iter()
        .find(|form| log.windows(form.len()).any(|w| w == form.as_slice()))
}

#[track_caller]
fn assert_absent(log: &[u8], what: &str, secret: &[u8]) {
    if let Some(form) = printed_in(log, secret) {
        panic!(
            "the server's log holds the {what} ({:?}):\n{}",
            String::from_utf8_lossy(&form),
            String::from_utf8_lossy(log)
        );
    }
}

/// The search above finds a secret in each way a careless line could
/// print it (so its silence in the tests below means something).
#[test]
fn the_secret_search_finds_every_printed_form() {
    let secret: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
    let hex = ember_fs::hex::hex(&secret);
    let lines = [
        format!("ember-serve: step=finish secret={hex}"),
        format!("ember-serve: key={}", hex.to_uppercase()),
        format!("ember-serve: prefix={}...", &hex[..32]),
        format!("ember-serve: b64={}==", base64(&secret)),
        format!("ember-serve: {secret:?}"),
    ];
    for line in &lines {
        assert!(printed_in(line.as_bytes(), &secret).is_some(), "{line}");
    }
    let mut raw = b"ember-serve: ".to_vec();
    raw.extend_from_slice(&secret);
    assert!(printed_in(&raw, &secret).is_some());
    assert!(printed_in(b"ember-serve: step=finish outcome=ok", &secret).is_none());
    // Known answers (RFC 4648) for the encoder itself.
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64(b"fooba"), "Zm9vYmE");
}

/// The base64 lines of a PEM file's body.
fn pem_body_lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_string)
        .collect()
}

/// A whole attestation (Start, Finish, overlay, Report) and a Report
/// refused for a made-up credential, against a
/// server logging in `format`; asserts that no secret it saw is in the
/// server's stdout or stderr.
fn attest_and_check_the_log(format: &str) {
    let tpm_dir = ScratchDir::new("logs-tpm");
    Swtpm::setup_cached(tpm_dir.path()).expect("manufacture swtpm");
    let swtpm = Swtpm::start_tcp(tpm_dir.path()).expect("start swtpm");
    let server = EmberServer::start_with(&["--log-format", format]);
    server
        .enroll_swtpm("node-a", "default", &swtpm)
        .expect_ok("enroll");
    let src = server.scratch().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("hello"), vec![7u8; 10_000]).unwrap();
    server.add_overlay(&src, Some("group:default"));

    let mut tpm = Tpm::new(SocketTransport::connect_tcp(&swtpm.addr()).expect("connect swtpm"));
    let mut http = https(&server);
    let mut dev = TpmAttestor::new(&mut tpm);
    let cred = client::attest(&mut dev, &mut http, &cfg(), &[]).expect("attest");
    dev.close().unwrap();
    let envelope = cred.open_grant(&server.manifest_key()).expect("grant");
    let mut sink = Discard::default();
    client::fetch_overlay(&mut http, &cfg(), &envelope, &mut sink).expect("overlay");
    assert!(sink.0);
    let version = Some(envelope.manifest.version_id);
    client::report(
        &mut http,
        &cfg(),
        &cred,
        Outcome::Joined,
        version,
        "ok",
        None,
    )
    .expect("report");
    // A credential the server never issued: refused, and not logged either.
    let forged = [0x5au8, 0x17, 0xc3, 0x08].repeat(8);
    let refused = http
        .post(msg::path::REPORT, Some(&ember_fs::hex::hex(&forged)), b"")
        .expect("post a forged report");
    assert_eq!(refused.status, 401);
    assert!(
        server.wait_log("step=report node=node-a outcome=ok")
            || server.wait_log("\"step\":\"report\",\"node\":\"node-a\",\"outcome\":\"ok\""),
        "{}",
        server.log()
    );
    assert!(server.wait_log("unknown-credential"), "{}", server.log());

    let mut log = server.log().into_bytes();
    log.extend_from_slice(server.stdout().as_bytes());
    let bearer = ember_fs::hex::unhex(cred.bearer()).expect("the bearer is hex");
    assert_absent(&log, "session secret", cred.secret());
    assert_absent(&log, "bearer credential", &bearer);
    assert_absent(&log, "overlay data key", envelope.data_key());
    assert_absent(&log, "refused credential", &forged);
    let state = server.state();
    // The manifest signing key is its raw 32-byte scalar; the TLS keys PEM.
    let scalar = std::fs::read(state.join("manifest.key")).expect("read manifest.key");
    assert_absent(&log, "manifest signing key", &scalar);
    for key in ["tls/ca.key", "tls/server.key"] {
        for line in pem_body_lines(&state.join(key)) {
            assert!(
                !log.windows(line.len()).any(|w| w == line.as_bytes()),
                "the server's log holds a line of {key}"
            );
        }
    }
}

#[test]
fn no_attestation_secret_reaches_the_text_log() {
    attest_and_check_the_log("text");
}

#[test]
fn no_attestation_secret_reaches_the_json_log() {
    attest_and_check_the_log("json");
}

#[test]
fn the_database_password_never_reaches_the_log() {
    const PASSWORD: &str = "hunter2-never-logged";
    let pg = Postgres::start();
    // Local connections are trusted: the password is never asked for,
    // but it is in the URL the server was given.
    let url = pg
        .url()
        .replacen("postgres@", &format!("postgres:{PASSWORD}@"), 1);
    assert!(url.contains(PASSWORD), "{url}");
    let state = ScratchDir::new("logs-state");
    for format in ["text", "json"] {
        let server =
            EmberServer::start_replica(&url, state.path(), false, &["--log-format", format]);
        let junk = https(&server)
            .post(msg::path::START, None, b"")
            .expect("post junk");
        assert_eq!(junk.status, 400);
        assert!(server.wait_log("malformed"), "{}", server.log());
        let log = server.log() + &server.stdout();
        assert!(log.contains("postgres"), "the database is named:\n{log}");
        assert!(!log.contains(PASSWORD), "{log}");
    }
}

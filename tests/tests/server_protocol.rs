//! The protocol's refusals, each driven through the node-side client
//! (`ember_proto::client`) against a real `ember serve` and a real swtpm,
//! with one step of the node's behaviour made hostile at a time. Every
//! refusal must carry its own code, and the server must log it.

use ember_proto::client::{self, AttestTpm, BodySink, Quote, Transport, Url};
use ember_proto::host::HttpsClient;
use ember_proto::msg::{
    self, decode, encode, ErrorCode, ErrorResponse, FinishRequest, Outcome, PcrSelection,
    StartRequest,
};
use ember_proto::sealed::Sink;
use ember_proto::tap::{Tap, Tapped};
use ember_proto::tpm::TpmAttestor;
use ember_proto::Error;
use ember_tests::server::EmberServer;
use ember_tests::swtpm::{Swtpm, LOCALCA_ISSUER, LOCALCA_ROOT};
use ember_tests::ScratchDir;
use ember_tpm::{SocketTransport, Tpm};
use std::time::Duration;

struct Peer {
    server: EmberServer,
    tpm: Swtpm,
    _dir: ScratchDir,
}

/// A server and a swtpm, enrolled unless `enroll` is false.
fn peer(serve_args: &[&str], enroll: bool) -> Peer {
    let dir = ScratchDir::new("proto-tpm");
    Swtpm::setup_cached(dir.path()).expect("manufacture swtpm");
    let tpm = Swtpm::start_tcp(dir.path()).expect("start swtpm");
    let server = EmberServer::start_with(serve_args);
    if enroll {
        server
            .enroll_swtpm("node-a", "default", &tpm)
            .expect_ok("enroll");
        let src = server.scratch().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("hello"), vec![7u8; 100_000]).unwrap();
        server.add_overlay(&src, Some("group:default"));
    }
    Peer {
        server,
        tpm,
        _dir: dir,
    }
}

impl Peer {
    fn http(&self) -> HttpsClient {
        let url = Url::parse(&self.server.url()).unwrap();
        HttpsClient::new(&url, &std::fs::read(self.server.ca_path()).unwrap()).unwrap()
    }

    fn tpm(&self) -> Tpm<SocketTransport> {
        Tpm::new(SocketTransport::connect_tcp(&self.tpm.addr()).expect("connect swtpm"))
    }

    fn expect_logged(&self, code: ErrorCode) {
        let needle = format!("outcome={} status={}", code.name(), code.http_status());
        assert!(
            self.server.wait_log(&needle),
            "server did not log {needle:?}:\n{}",
            self.server.log()
        );
    }
}

/// The protocol functions take the server's URL for its path prefix (none
/// here); the transport under test already carries the origin.
fn cfg() -> Url {
    Url::parse("https://boot.test").unwrap()
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(r: Result<T, Error>, want: ErrorCode) {
    match r {
        Err(Error::Server { code, status, .. }) => {
            assert_eq!(code, want, "wrong refusal reason");
            assert_eq!(status, want.http_status());
        }
        other => panic!("expected refusal {}, got {other:?}", want.name()),
    }
}

/// Delegates to the real attestor, with one hostile change.
struct Hostile<'a, 'b> {
    real: TpmAttestor<'a, SocketTransport>,
    other: Option<TpmAttestor<'b, SocketTransport>>,
    stale_nonce: bool,
    wrong_pcr_value: bool,
}

impl<'a, 'b> Hostile<'a, 'b> {
    fn new(real: TpmAttestor<'a, SocketTransport>) -> Self {
        Hostile {
            real,
            other: None,
            stale_nonce: false,
            wrong_pcr_value: false,
        }
    }
}

impl AttestTpm for Hostile<'_, '_> {
    type Error = ember_tpm::Error;
    fn ek_public(&mut self) -> Result<Vec<u8>, Self::Error> {
        self.real.ek_public()
    }
    fn ek_certificate(&mut self) -> Result<Option<Vec<u8>>, Self::Error> {
        self.real.ek_certificate()
    }
    fn create_ak(&mut self) -> Result<Vec<u8>, Self::Error> {
        self.real.create_ak()
    }
    fn activate_credential(&mut self, blob: &[u8], secret: &[u8]) -> Result<Vec<u8>, Self::Error> {
        self.real.activate_credential(blob, secret)
    }
    fn quote(&mut self, nonce: &[u8], pcrs: &PcrSelection) -> Result<Quote, Self::Error> {
        if let Some(other) = self.other.as_mut() {
            other.create_ak()?;
            return other.quote(nonce, pcrs);
        }
        let nonce = if self.stale_nonce {
            vec![0u8; 32]
        } else {
            nonce.to_vec()
        };
        let mut q = self.real.quote(&nonce, pcrs)?;
        if self.wrong_pcr_value {
            q.pcr_values[0][0] ^= 1;
        }
        Ok(q)
    }
}

/// Rewrites the Finish body, delays it, or keeps it (and the Report).
#[derive(Default)]
struct FinishTap {
    bad_proof: bool,
    delay_finish: Option<Duration>,
    finish: Option<Vec<u8>>,
    report: Option<Vec<u8>>,
}

impl Tap for FinishTap {
    fn post(&mut self, path: &str, body: &mut Vec<u8>) {
        if path == msg::path::FINISH {
            if self.bad_proof {
                let mut f: FinishRequest = decode("finish", body).unwrap();
                f.proof[0] ^= 1;
                *body = encode(&f);
            }
            if let Some(d) = self.delay_finish {
                std::thread::sleep(d);
            }
            self.finish = Some(body.clone());
        }
        if path == msg::path::REPORT {
            self.report = Some(body.clone());
        }
    }
}

#[derive(Default)]
struct Collect(Vec<u8>, bool);
impl Sink for Collect {
    type Error = std::convert::Infallible;
    fn write(&mut self, p: &[u8]) -> Result<(), Self::Error> {
        self.0.extend_from_slice(p);
        Ok(())
    }
    fn finish(&mut self) -> Result<(), Self::Error> {
        self.1 = true;
        Ok(())
    }
}

#[test]
fn full_flow_through_the_client_library_opens_the_overlay_and_reports() {
    let p = peer(&[], true);
    let mut tpm = p.tpm();
    let mut http = p.http();
    let mut dev = TpmAttestor::new(&mut tpm);
    let cred = client::attest(&mut dev, &mut http, &cfg(), &[]).expect("attest");
    dev.close().unwrap();
    let mut sink = Collect::default();
    let meta = client::fetch_overlay(&mut http, &cfg(), &cred, &mut sink).expect("overlay");
    assert!(sink.1 && sink.0.len() as u64 == meta.size && meta.size > 0);
    let r = client::report(
        &mut http,
        &cfg(),
        &cred,
        Outcome::Joined,
        Some(meta.version_id),
        "ok",
    )
    .expect("report");
    assert_eq!((r.attempts, r.last_known_good), (0, Some(meta.version_id)));
}

#[test]
fn unknown_ek_is_refused() {
    let p = peer(&[], false);
    let mut tpm = p.tpm();
    let mut dev = TpmAttestor::new(&mut tpm);
    assert_refused(
        client::attest(&mut dev, &mut p.http(), &cfg(), &[]),
        ErrorCode::UnknownEk,
    );
    p.expect_logged(ErrorCode::UnknownEk);
}

#[test]
fn ek_certificate_chaining_to_the_manufacturer_ca_admits_the_node() {
    let p = peer(
        &[
            "--manufacturer-ca",
            LOCALCA_ISSUER,
            "--manufacturer-ca",
            LOCALCA_ROOT,
            "--auto-enroll-group",
            "lab",
        ],
        false,
    );
    let mut tpm = p.tpm();
    let mut dev = TpmAttestor::new(&mut tpm);
    let cred = client::attest(&mut dev, &mut p.http(), &cfg(), &[])
        .expect("admitted by its EK certificate");
    assert!(cred.overlay.is_none());
    let nodes = p.server.nodes();
    assert!(
        nodes
            .lines()
            .any(|l| l.starts_with("ek-") && l.contains(" lab ")),
        "{nodes}"
    );
}

#[test]
fn ek_certificate_from_an_untrusted_ca_is_refused() {
    let other = EmberServer::start();
    let ca = other.ca_path().display().to_string();
    let p = peer(&["--manufacturer-ca", &ca], false);
    let mut tpm = p.tpm();
    let mut dev = TpmAttestor::new(&mut tpm);
    assert_refused(
        client::attest(&mut dev, &mut p.http(), &cfg(), &[]),
        ErrorCode::BadEkCertificate,
    );
    p.expect_logged(ErrorCode::BadEkCertificate);
}

#[test]
fn ak_that_could_outlive_the_boot_is_refused() {
    let p = peer(&[], true);
    let mut tpm = p.tpm();
    let mut dev = TpmAttestor::new(&mut tpm);
    let ek_public = dev.ek_public().unwrap();
    let ak = dev.create_ak().unwrap();
    let mut area = ember_tpm::PublicArea::from_bytes(&ak).unwrap();
    area.attributes &= !ember_tpm::attributes::ST_CLEAR;
    let start = StartRequest {
        version: msg::PROTOCOL_VERSION,
        ek_public,
        ek_cert: None,
        ak_public: area.to_bytes().unwrap(),
    };
    let r = p
        .http()
        .post(msg::path::START, None, &encode(&start))
        .unwrap();
    let e: ErrorResponse = decode("error", &r.body).unwrap();
    assert_eq!(
        (r.status, e.code),
        (422, ErrorCode::BadAkAttributes),
        "{}",
        e.detail
    );
    p.expect_logged(ErrorCode::BadAkAttributes);
}

#[test]
fn quote_from_another_tpm_is_refused() {
    let p = peer(&[], true);
    let dir = ScratchDir::new("proto-tpm-b");
    Swtpm::setup_cached(dir.path()).unwrap();
    let b = Swtpm::start_tcp(dir.path()).unwrap();
    let mut tpm_a = p.tpm();
    let mut tpm_b = Tpm::new(SocketTransport::connect_tcp(&b.addr()).unwrap());
    let mut dev = Hostile::new(TpmAttestor::new(&mut tpm_a));
    dev.other = Some(TpmAttestor::new(&mut tpm_b));
    assert_refused(
        client::attest(&mut dev, &mut p.http(), &cfg(), &[]),
        ErrorCode::BadSignature,
    );
    p.expect_logged(ErrorCode::BadSignature);
}

#[test]
fn quote_over_a_stale_nonce_is_refused() {
    let p = peer(&[], true);
    let mut tpm = p.tpm();
    let mut dev = Hostile::new(TpmAttestor::new(&mut tpm));
    dev.stale_nonce = true;
    assert_refused(
        client::attest(&mut dev, &mut p.http(), &cfg(), &[]),
        ErrorCode::StaleNonce,
    );
    p.expect_logged(ErrorCode::StaleNonce);
}

#[test]
fn pcr_values_that_do_not_match_the_quote_are_refused() {
    let p = peer(&[], true);
    let mut tpm = p.tpm();
    let mut dev = Hostile::new(TpmAttestor::new(&mut tpm));
    dev.wrong_pcr_value = true;
    assert_refused(
        client::attest(&mut dev, &mut p.http(), &cfg(), &[]),
        ErrorCode::PcrDigestMismatch,
    );
    p.expect_logged(ErrorCode::PcrDigestMismatch);
}

#[test]
fn finish_without_the_activated_secret_is_refused() {
    let p = peer(&[], true);
    let mut tpm = p.tpm();
    let mut dev = TpmAttestor::new(&mut tpm);
    let mut tap = FinishTap {
        bad_proof: true,
        ..FinishTap::default()
    };
    let mut http = Tapped {
        inner: p.http(),
        tap: &mut tap,
    };
    assert_refused(
        client::attest(&mut dev, &mut http, &cfg(), &[]),
        ErrorCode::BadProof,
    );
    p.expect_logged(ErrorCode::BadProof);
}

#[test]
fn replayed_finish_is_refused() {
    let p = peer(&[], true);
    let mut tpm = p.tpm();
    let mut dev = TpmAttestor::new(&mut tpm);
    let mut tap = FinishTap::default();
    let cred = client::attest(
        &mut dev,
        &mut Tapped {
            inner: p.http(),
            tap: &mut tap,
        },
        &cfg(),
        &[],
    )
    .expect("attest");
    drop(cred);
    let r = p
        .http()
        .post(msg::path::FINISH, None, tap.finish.as_ref().unwrap())
        .unwrap();
    let e: ErrorResponse = decode("error", &r.body).unwrap();
    assert_eq!((r.status, e.code), (409, ErrorCode::SessionReused));
    p.expect_logged(ErrorCode::SessionReused);
}

#[test]
fn finish_after_the_session_expired_is_refused() {
    let p = peer(&["--session-ttl", "1s"], true);
    let mut tpm = p.tpm();
    let mut dev = TpmAttestor::new(&mut tpm);
    let mut tap = FinishTap {
        delay_finish: Some(Duration::from_millis(1600)),
        ..FinishTap::default()
    };
    let mut http = Tapped {
        inner: p.http(),
        tap: &mut tap,
    };
    assert_refused(
        client::attest(&mut dev, &mut http, &cfg(), &[]),
        ErrorCode::SessionExpired,
    );
    p.expect_logged(ErrorCode::SessionExpired);
}

#[test]
fn expired_credential_opens_nothing() {
    let p = peer(&["--credential-ttl", "1s"], true);
    let mut tpm = p.tpm();
    let mut dev = TpmAttestor::new(&mut tpm);
    let cred = client::attest(&mut dev, &mut p.http(), &cfg(), &[]).expect("attest");
    std::thread::sleep(Duration::from_millis(1600));
    let mut sink = Collect::default();
    assert_refused(
        client::fetch_overlay(&mut p.http(), &cfg(), &cred, &mut sink),
        ErrorCode::CredentialExpired,
    );
    assert!(sink.0.is_empty() && !sink.1, "plaintext reached the sink");
    p.expect_logged(ErrorCode::CredentialExpired);
}

#[test]
fn overlay_without_a_credential_is_refused() {
    let p = peer(&[], true);
    let mut c = Collect::default();
    struct S<'a>(&'a mut Collect, u16);
    impl BodySink for S<'_> {
        fn status(&mut self, s: u16) -> bool {
            self.1 = s;
            true
        }
        fn data(&mut self, d: &[u8]) -> bool {
            self.0 .0.extend_from_slice(d);
            true
        }
    }
    let mut s = S(&mut c, 0);
    p.http()
        .get(msg::path::OVERLAY, Some(&"00".repeat(32)), &mut s)
        .unwrap();
    assert_eq!(s.1, 401);
    let e: ErrorResponse = decode("error", &c.0).unwrap();
    assert_eq!(e.code, ErrorCode::UnknownCredential);
    let mut c = Collect::default();
    let mut s = S(&mut c, 0);
    p.http().get(msg::path::OVERLAY, None, &mut s).unwrap();
    assert_eq!(s.1, 401);
    p.expect_logged(ErrorCode::MissingCredential);
}

#[test]
fn replayed_report_is_refused() {
    let p = peer(&[], true);
    let mut tpm = p.tpm();
    let mut dev = TpmAttestor::new(&mut tpm);
    let cred = client::attest(&mut dev, &mut p.http(), &cfg(), &[]).expect("attest");
    let mut tap = FinishTap::default();
    let mut http = Tapped {
        inner: p.http(),
        tap: &mut tap,
    };
    client::report(&mut http, &cfg(), &cred, Outcome::Failed, None, "once").expect("first report");
    assert_refused(
        client::report(&mut p.http(), &cfg(), &cred, Outcome::Failed, None, "twice"),
        ErrorCode::SessionReused,
    );
    let nodes = p.server.nodes();
    let line = nodes.lines().find(|l| l.starts_with("node-a")).unwrap();
    assert!(
        line.contains("failed") && line.split_whitespace().any(|w| w == "1"),
        "one failure counted: {line}"
    );
}

#[test]
fn other_protocol_version_is_refused_with_its_own_status() {
    let p = peer(&[], true);
    let mut start = encode(&StartRequest {
        version: 2,
        ek_public: vec![],
        ek_cert: None,
        ak_public: vec![],
    });
    let r = p.http().post(msg::path::START, None, &start).unwrap();
    let e: ErrorResponse = decode("error", &r.body).unwrap();
    assert_eq!((r.status, e.code), (426, ErrorCode::UnsupportedVersion));
    start[0] = 1;
    start.push(0xFF);
    let r = p.http().post(msg::path::START, None, &start).unwrap();
    let e: ErrorResponse = decode("error", &r.body).unwrap();
    assert_eq!((r.status, e.code), (400, ErrorCode::Malformed));
    p.expect_logged(ErrorCode::UnsupportedVersion);
}

/// The node's own stack: ember-net's HTTPS client (embedded-tls, its own
/// X.509 verifier) as the transport, ember-fs's streaming extractor as the
/// sink, ember-tpm on swtpm: exactly what PID 1 links.
#[test]
fn node_stack_over_ember_net_extracts_the_overlay() {
    use ember_fs::tar::{Confinement, Extractor, FsSink, Limits};
    use ember_proto::net::NetTransport;
    let p = peer(&[], true);
    let cas =
        ember_net::pem::decode_all(&std::fs::read(p.server.ca_path()).unwrap(), "CERTIFICATE")
            .unwrap();
    let client = ember_net::https::Client::new(&cas, &[]);
    let url = Url::parse(&p.server.url()).unwrap();
    let mut http = NetTransport::new(&client, &url);
    let mut tpm = p.tpm();
    let mut dev = TpmAttestor::new(&mut tpm);
    let cred = client::attest(&mut dev, &mut http, &url, &[]).expect("attest over ember-net");
    dev.close().unwrap();
    let into = p.server.scratch().join("root");
    std::fs::create_dir_all(&into).unwrap();
    let mut extractor = Extractor::new(
        FsSink::open(into.as_path(), Confinement::Beneath).unwrap(),
        Limits::default(),
    );
    client::fetch_overlay(&mut http, &url, &cred, &mut extractor).expect("overlay over ember-net");
    assert_eq!(
        std::fs::read(into.join("hello")).unwrap(),
        vec![7u8; 100_000]
    );
    client::report(
        &mut http,
        &url,
        &cred,
        Outcome::Joined,
        cred.overlay.as_ref().map(|o| o.version_id),
        "node stack",
    )
    .expect("report over ember-net");
}

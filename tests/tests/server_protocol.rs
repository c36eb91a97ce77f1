//! The protocol's refusals, each driven through the node-side client
//! (`ember_proto::client`) against a real `ember serve` and a real swtpm,
//! with one step of the node's behaviour made hostile at a time. Every
//! refusal must carry its own code, and the server must log it.

use ember_proto::client::{self, AttestTpm, BodySink, Quote, Transport, Url};
use ember_proto::host::HttpsClient;
use ember_proto::keys;
use ember_proto::msg::{
    self, decode, encode, ErrorCode, ErrorResponse, FinishRequest, Outcome, PcrSelection,
    StartRequest,
};
use ember_proto::sealed::Sink;
use ember_proto::tap::{Tap, Tapped};
use ember_proto::tpm::TpmAttestor;
use ember_proto::{Error, ErrorKind};
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
    match r.as_ref().map_err(Error::kind) {
        Err(ErrorKind::Server { code, status, .. }) => {
            assert_eq!(*code, want, "wrong refusal reason");
            assert_eq!(*status, want.http_status());
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
    let envelope = cred.open_grant(&p.server.manifest_key()).expect("grant");
    client::fetch_overlay(&mut http, &cfg(), &envelope, &mut sink).expect("overlay");
    let meta = &envelope.manifest;
    assert!(sink.1 && sink.0.len() as u64 == meta.plain_size && meta.plain_size > 0);
    let r = client::report(
        &mut http,
        &cfg(),
        &cred,
        Outcome::Joined,
        Some(meta.version_id),
        "ok",
        None,
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
fn expired_credential_cannot_report() {
    let p = peer(&["--credential-ttl", "1s"], true);
    let mut tpm = p.tpm();
    let mut dev = TpmAttestor::new(&mut tpm);
    let cred = client::attest(&mut dev, &mut p.http(), &cfg(), &[]).expect("attest");
    std::thread::sleep(Duration::from_millis(1600));
    assert_refused(
        client::report(
            &mut p.http(),
            &cfg(),
            &cred,
            Outcome::Joined,
            None,
            "late",
            None,
        ),
        ErrorCode::CredentialExpired,
    );
    p.expect_logged(ErrorCode::CredentialExpired);
}

/// Collects a GET's status and body.
struct Got(u16, Vec<u8>);
impl BodySink for Got {
    fn status(&mut self, s: u16) -> bool {
        self.0 = s;
        true
    }
    fn data(&mut self, d: &[u8]) -> bool {
        self.1.extend_from_slice(d);
        true
    }
}

#[test]
fn blobs_are_static_ciphertext_served_by_digest_only() {
    let p = peer(&[], true);
    let mut tpm = p.tpm();
    let mut dev = TpmAttestor::new(&mut tpm);
    let cred = client::attest(&mut dev, &mut p.http(), &cfg(), &[]).expect("attest");
    let envelope = cred.open_grant(&p.server.manifest_key()).expect("grant");
    let m = &envelope.manifest;
    // No credential needed: the blob is the stored file, byte for byte,
    // and none of the plaintext (100 000 bytes of 7) shows through.
    let mut got = Got(0, Vec::new());
    p.http()
        .get(&client::blob_path(&cfg(), &m.blob_sha256), None, &mut got)
        .unwrap();
    assert_eq!(got.0, 200);
    assert_eq!(
        got.1,
        std::fs::read(p.server.sealed_blob(&m.blob_sha256)).unwrap()
    );
    assert_eq!(got.1.len() as u64, m.blob_size);
    assert!(!got.1.windows(64).any(|w| w.iter().all(|&b| b == 7)));
    // A second boot gets the very same blob: nothing is sealed per boot.
    let cred2 = client::attest(&mut dev, &mut p.http(), &cfg(), &[]).expect("attest again");
    dev.close().unwrap();
    let again = cred2.open_grant(&p.server.manifest_key()).expect("grant");
    assert_eq!(again.manifest, envelope.manifest);
    assert_ne!(
        cred.overlay.as_ref().unwrap().wrapped_key,
        cred2.overlay.as_ref().unwrap().wrapped_key,
        "the data key is wrapped per session"
    );
    // Unknown digests and anything that is not a digest: not found.
    for path in [
        format!("{}/{}", msg::path::BLOB, "00".repeat(32)),
        format!("{}/{}", msg::path::BLOB, "..%2Fember.db"),
        format!("{}/{}", msg::path::BLOB, "AB".repeat(32)),
    ] {
        let mut got = Got(0, Vec::new());
        p.http().get(&path, None, &mut got).unwrap();
        assert_eq!(got.0, 404, "{path}");
        let e: ErrorResponse = decode("error", &got.1).unwrap();
        assert_eq!(e.code, ErrorCode::NotFound);
    }
    p.expect_logged(ErrorCode::NotFound);
}

/// What the attacker does to a blob's bytes in flight.
type Rewrite = Box<dyn FnMut(&mut Vec<u8>)>;

/// A transport whose GET bodies an attacker on the path rewrites.
struct BlobTap(Rewrite);
impl Tap for BlobTap {
    fn wants_get_body(&self, path: &str) -> bool {
        path.contains(msg::path::BLOB)
    }
    fn get_body(&mut self, _path: &str, body: &mut Vec<u8>) {
        (self.0)(body)
    }
}

/// Attests, then fetches the granted overlay through `tap`, trusting
/// `trust`; returns what the sink saw.
fn fetch_through(
    p: &Peer,
    grant: impl FnOnce(&client::Credential) -> Result<ember_proto::manifest::Envelope, Error>,
    tap: BlobTap,
) -> (Result<(), Error>, Collect) {
    let mut tpm = p.tpm();
    let mut dev = TpmAttestor::new(&mut tpm);
    let cred = client::attest(&mut dev, &mut p.http(), &cfg(), &[]).expect("attest");
    dev.close().unwrap();
    let mut sink = Collect::default();
    let r = grant(&cred).and_then(|envelope| {
        let mut http = Tapped {
            inner: p.http(),
            tap,
        };
        client::fetch_overlay(&mut http, &cfg(), &envelope, &mut sink)
    });
    (r, sink)
}

fn untouched() -> BlobTap {
    BlobTap(Box::new(|_| {}))
}

#[test]
fn manifest_signed_by_another_key_is_forged_and_nothing_is_fetched() {
    let p = peer(&[], true);
    let other = ember_proto::manifest::SigningSecret::from_bytes(&[0x5a; 32])
        .unwrap()
        .public();
    let (r, sink) = fetch_through(&p, |c| c.open_grant(&other), untouched());
    assert_eq!(r.err(), Some(Error::new(ErrorKind::ManifestSignature)));
    assert!(sink.0.is_empty() && !sink.1, "plaintext reached the sink");
}

#[test]
fn genuinely_signed_manifest_committing_to_another_key_is_refused() {
    use ember_proto::manifest::{key_commitment, SigningSecret};
    let p = peer(&[], true);
    // The attacker holds the server's signing key (the worst case) and
    // hands the node a manifest for another key, with the genuine data key
    // wrapped correctly for its session.
    let signer =
        SigningSecret::from_bytes(&std::fs::read(p.server.state().join("manifest.key")).unwrap())
            .unwrap();
    let trust = p.server.manifest_key();
    let (r, sink) = fetch_through(
        &p,
        |c| {
            let grant = c.overlay.as_ref().unwrap();
            let mut m = trust.verify(&grant.manifest).unwrap();
            let data_key = keys::unwrap_data_key(
                c.secret(),
                &c.session,
                &grant.manifest.body,
                &grant.wrapped_key,
            )
            .unwrap();
            m.key_commitment = key_commitment(&[0x77; 32]);
            let forged = signer.sign(&m);
            let wrapped = keys::wrap_data_key(c.secret(), &c.session, &forged.body, &data_key);
            let mut g = grant.clone();
            g.manifest = forged;
            g.wrapped_key = wrapped.to_vec();
            client::Credential::from_parts(c.session, *c.secret(), &[0; 32], 60, Some(g))
                .open_grant(&trust)
        },
        untouched(),
    );
    assert_eq!(r.err(), Some(Error::new(ErrorKind::KeyCommitmentMismatch)));
    assert!(sink.0.is_empty() && !sink.1, "plaintext reached the sink");
}

#[test]
fn data_key_wrapped_for_another_session_does_not_unwrap() {
    let p = peer(&[], true);
    let (r, sink) = fetch_through(
        &p,
        |c| {
            let mut g = c.overlay.clone().unwrap();
            g.wrapped_key[3] ^= 1;
            client::Credential::from_parts(c.session, *c.secret(), &[0; 32], 60, Some(g))
                .open_grant(&p.server.manifest_key())
        },
        untouched(),
    );
    assert_eq!(r.err(), Some(Error::new(ErrorKind::KeyUnwrap)));
    assert!(sink.0.is_empty() && !sink.1);
}

#[test]
fn another_overlays_blob_swapped_in_is_refused_before_any_chunk() {
    let p = peer(&[], true);
    let before: Vec<_> = std::fs::read_dir(p.server.state().join("sealed"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let src = p.server.scratch().join("other");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("hello"), b"another overlay").unwrap();
    p.server.add_overlay(&src, None);
    let other = std::fs::read_dir(p.server.state().join("sealed"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|f| !before.contains(f))
        .expect("the second overlay's blob");
    let other = std::fs::read(other).unwrap();
    let trust = p.server.manifest_key();
    let (r, sink) = fetch_through(
        &p,
        |c| c.open_grant(&trust),
        BlobTap(Box::new(move |body| *body = other.clone())),
    );
    assert_eq!(r.err(), Some(Error::new(ErrorKind::BlobOtherOverlay)));
    assert!(sink.0.is_empty() && !sink.1, "plaintext reached the sink");
}

#[test]
fn truncated_blob_is_refused_and_never_finishes() {
    let p = peer(&[], true);
    // Incompressible, so the blob has several 64 KiB chunks.
    let src = p.server.scratch().join("noise");
    std::fs::create_dir_all(&src).unwrap();
    let noise = ember_tests::noise(200_000, 0x2545f4914f6cdd1d);
    std::fs::write(src.join("noise"), noise).unwrap();
    p.server.add_overlay(&src, Some("group:default"));
    let trust = p.server.manifest_key();
    // Inside the first chunk: nothing authenticates, nothing is written.
    let (r, sink) = fetch_through(
        &p,
        |c| c.open_grant(&trust),
        BlobTap(Box::new(|body| body.truncate(48 + 1000))),
    );
    assert_eq!(
        r.err(),
        Some(Error::new(ErrorKind::SealedTruncated { index: 0 }))
    );
    assert!(sink.0.is_empty() && !sink.1);
    // At a chunk boundary: a chunk is handed on only once more data shows
    // it is not the last, so after two whole chunks only the first reached
    // the extractor, and the stream never ends: the extractor never finishes.
    let (r, sink) = fetch_through(
        &p,
        |c| c.open_grant(&trust),
        BlobTap(Box::new(|body| body.truncate(48 + 2 * (65536 + 16)))),
    );
    assert_eq!(
        r.err(),
        Some(Error::new(ErrorKind::SealedTruncated { index: 1 }))
    );
    assert_eq!(sink.0.len(), 65536);
    assert!(!sink.1, "a truncated overlay finished");
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
    client::report(
        &mut http,
        &cfg(),
        &cred,
        Outcome::Failed,
        None,
        "once",
        None,
    )
    .expect("first report");
    assert_refused(
        client::report(
            &mut p.http(),
            &cfg(),
            &cred,
            Outcome::Failed,
            None,
            "twice",
            None,
        ),
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
        version: msg::PROTOCOL_VERSION + 1,
        ek_public: vec![],
        ek_cert: None,
        ak_public: vec![],
    });
    let r = p.http().post(msg::path::START, None, &start).unwrap();
    let e: ErrorResponse = decode("error", &r.body).unwrap();
    assert_eq!((r.status, e.code), (426, ErrorCode::UnsupportedVersion));
    start[0] = msg::PROTOCOL_VERSION as u8;
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
    let p = peer(&["--http-listen", "127.0.0.1:0"], true);
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
    let envelope = cred.open_grant(&p.server.manifest_key()).expect("grant");
    let grant = cred.overlay.as_ref().unwrap();
    let port = grant.http_port.expect("Finish names the plain-HTTP port");
    assert_eq!(Some(port), p.server.http_port());
    // Both transports: plain HTTP (the default) and HTTPS.
    for (name, mut blob_http) in [
        ("http", NetTransport::plain(&client, &url, port)),
        ("https", NetTransport::new(&client, &url)),
    ] {
        let into = p.server.scratch().join(format!("root-{name}"));
        std::fs::create_dir_all(&into).unwrap();
        let mut extractor = Extractor::authenticated(
            FsSink::open(into.as_path(), Confinement::Beneath).unwrap(),
            Limits::default(),
            envelope.manifest.compression.into(),
        );
        client::fetch_overlay(&mut blob_http, &url, &envelope, &mut extractor)
            .unwrap_or_else(|e| panic!("overlay over ember-net {name}: {e}"));
        assert_eq!(
            std::fs::read(into.join("hello")).unwrap(),
            vec![7u8; 100_000]
        );
    }
    client::report(
        &mut http,
        &url,
        &cred,
        Outcome::Joined,
        Some(envelope.manifest.version_id),
        "node stack",
        None,
    )
    .expect("report over ember-net");
}

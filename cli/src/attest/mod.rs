//! `ember attest`: the node's attestation flow from a workstation, against a
//! swtpm (or /dev/tpmrm0): Start → Finish → sealed overlay → extracted into
//! a folder → Report. The overlay is extracted into a staging folder next to
//! the target and moved in only once the whole stream authenticated, so a
//! refused stream leaves no plaintext in the target.
//!
//! Hidden test switches: `--fault` corrupts the received sealed stream,
//! `--record`/`--replay` drive the load test.
//!
//! - `mod.rs`: the command, its flow against one server after another, and
//!   the test switches' taps;
//! - `transcript.rs`: what `--record` writes and `--replay` reads (a node's
//!   Start and Finish and its secret), the Finish codec a replay re-proves
//!   with, and [`ServerUnavailable`], the failure that moves on to the next
//!   server;
//! - `replay.rs`: the load test's client, many recorded nodes at once.

mod replay;
mod transcript;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use ember_fs::tar::{Confinement, Extractor, FsSink, Limits};
use ember_proto::client::{self, Credential, Transport, Url};
use ember_proto::host::HttpsClient;
use ember_proto::manifest::{Envelope, PublicKey};
use ember_proto::msg::{self, Outcome, ReportResponse};
use ember_proto::retry::{self, AfterReport};
use ember_proto::sealed;
use ember_proto::tap::{Tap, Tapped};
use ember_tpm::Tpm;

use transcript::ServerUnavailable;

#[derive(Args)]
pub struct AttestArgs {
    /// TPM: swtpm:HOST:PORT, unix:PATH, or a device path (/dev/tpmrm0).
    #[arg(long, required_unless_present = "replay")]
    pub tpm: Option<String>,
    /// Boot server URL(s), comma-separated (the node's ember.attest_url):
    /// tried in turn, each once, when one cannot be reached or fails
    /// internally; a refusal is final.
    #[arg(long)]
    pub url: String,
    /// Per-request network timeout (connect, read, write), e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = crate::serve_cmd::parse_duration)]
    pub timeout: std::time::Duration,
    /// CA certificate (PEM) the server's certificate must chain to.
    #[arg(long)]
    pub ca: PathBuf,
    /// The server's manifest public key (PEM; `ember overlay key`), which
    /// the overlay's signed manifest must verify with.
    #[arg(long, required_unless_present_any = ["replay", "no_overlay"])]
    pub manifest_key: Option<PathBuf>,
    /// Folder to extract the overlay into (created if missing).
    #[arg(long, required_unless_present_any = ["replay", "no_overlay"])]
    pub into: Option<PathBuf>,
    /// Attest only; do not download the overlay.
    #[arg(long)]
    pub no_overlay: bool,
    /// Report this outcome afterwards: joined or failed.
    #[arg(long)]
    pub report: Option<String>,
    /// Reason sent with --report.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Send this boot's phase table with --report, read from a serial log
    /// of a boot (the phases the init logged, as `ember timeline` reads them).
    #[arg(long, value_name = "LOG", requires = "report")]
    pub timeline_from: Option<PathBuf>,
    /// EK template: ecc-p384, rsa2048, ecc-p256 (default: the first with a certificate).
    #[arg(long)]
    pub ek: Option<String>,
    /// The firmware's TCG event log sent with the quote (default: the
    /// kernel's binary_bios_measurements when --tpm is a device, none for
    /// a swtpm).
    #[arg(long, value_name = "FILE")]
    pub event_log: Option<PathBuf>,
    /// TEST: corrupt the sealed blob: tamper:OFFSET, truncate:LEN, swap:A:B (chunk indices), replace:FILE (another blob).
    #[arg(long, hide = true)]
    pub fault: Option<String>,
    /// TEST: record transcripts into this folder for --replay (server in test mode).
    #[arg(long, hide = true)]
    pub record: Option<PathBuf>,
    /// TEST: run the flow this many times (with --record).
    #[arg(long, hide = true, default_value_t = 1)]
    pub repeat: usize,
    /// TEST: replay the recorded transcripts in this folder concurrently (load test).
    #[arg(long, hide = true)]
    pub replay: Option<PathBuf>,
    /// TEST: simulated nodes running at once with --replay.
    #[arg(long, hide = true, default_value_t = 200)]
    pub concurrency: usize,
    /// TEST: with --replay, each simulated node connects from its own
    /// loopback address (127.1.0.0/16), so the server's per-source limits
    /// see a rack of machines rather than one host (servers on loopback).
    #[arg(long, hide = true, requires = "replay")]
    pub spread_sources: bool,
}

/// The servers of `--url`, in the order they are tried.
pub fn parse_urls(list: &str) -> Result<Vec<Url>> {
    let urls = list
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            Url::parse(u)
                .map_err(|e| anyhow!("--url {u:?}: {e}; expected https://HOST[:PORT][/PATH]"))
        })
        .collect::<Result<Vec<_>>>()?;
    if urls.is_empty() {
        bail!("--url: no server given");
    }
    Ok(urls)
}

/// Wraps a protocol error, marking those another server may not have.
fn classify(what: &str, e: ember_proto::Error) -> anyhow::Error {
    use ember_proto::ErrorKind as E;
    let (unavailable, retry_after_s) = match e.kind() {
        E::Transport { .. } => (true, None),
        E::UnexpectedResponse { status, .. } => (*status >= 500, None),
        // 503 `unavailable`, 429 and 500 say "not now", not "not you".
        E::Server {
            code,
            retry_after_s,
            ..
        } => (code.is_transient(), *retry_after_s),
        _ => (false, None),
    };
    if unavailable {
        ServerUnavailable::error(format!("{what}: {e}"), retry_after_s)
    } else {
        anyhow!("{what}: {e}")
    }
}

/// Step 4, tried by `send` and retried as the node retries it
/// ([`retry::after_report_failure`]): `Some` with the server's answer, or
/// `None` when an earlier try arrived and only its answer was lost.
/// `on_retry` hears each failed try and the wait before the next.
pub(crate) fn report_retried(
    mut send: impl FnMut() -> Result<ReportResponse, ember_proto::Error>,
    mut on_retry: impl FnMut(u32, &ember_proto::Error, u64),
) -> Result<Option<ReportResponse>, ember_proto::Error> {
    let mut attempt = 1;
    loop {
        let e = match send() {
            Ok(r) => return Ok(Some(r)),
            Err(e) => e,
        };
        match retry::after_report_failure(attempt, &e) {
            AfterReport::RetryIn(ms) => {
                on_retry(attempt, &e, ms);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                attempt += 1;
            }
            AfterReport::Delivered => return Ok(None),
            AfterReport::GiveUp => return Err(e),
        }
    }
}

pub fn run(a: AttestArgs) -> Result<()> {
    let urls = parse_urls(&a.url)?;
    let ca = std::fs::read(&a.ca).with_context(|| format!("read CA {}", a.ca.display()))?;
    let clients = urls
        .iter()
        .map(|u| {
            HttpsClient::new(u, &ca)
                .map(|c| c.with_timeout(a.timeout))
                .map_err(|e| anyhow!("{e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let trust = a
        .manifest_key
        .as_ref()
        .map(|p| -> Result<PublicKey> {
            let pem = std::fs::read(p).with_context(|| format!("read {}", p.display()))?;
            PublicKey::from_pem(&pem).map_err(|e| anyhow!("{}: {e}", p.display()))
        })
        .transpose()?;
    if let Some(dir) = &a.replay {
        return replay::run(dir, &urls, clients, a.concurrency, a.spread_sources, trust);
    }
    let fault = a.fault.as_deref().map(Fault::parse).transpose()?;
    let outcome = match a.report.as_deref() {
        None => None,
        Some("joined") => Some(Outcome::Joined),
        Some("failed") => Some(Outcome::Failed),
        Some(o) => bail!("--report {o:?}: expected joined or failed"),
    };
    let ek = match a.ek.as_deref() {
        None => None,
        Some("ecc-p384") => Some(ember_tpm::EkTemplate::EccP384),
        Some("rsa2048") => Some(ember_tpm::EkTemplate::Rsa2048),
        Some("ecc-p256") => Some(ember_tpm::EkTemplate::EccP256),
        Some(e) => bail!("--ek {e:?}: expected ecc-p384, rsa2048 or ecc-p256"),
    };
    let spec = a.tpm.clone().unwrap_or_default();
    for i in 0..a.repeat.max(1) {
        let started = Instant::now();
        let mut last = None;
        for (n, (url, http)) in urls.iter().zip(&clients).enumerate() {
            let mut transport = Tapped {
                inner: http.clone(),
                tap: Watch {
                    fault: Faulty(fault.clone()),
                    record: Recorder::default(),
                },
            };
            match attest_once(&spec, ek, &mut transport, url, &a, trust.as_ref(), outcome) {
                Ok(cred) => {
                    if urls.len() > 1 {
                        eprintln!(
                            "ember attest: server {} of {} answered: {}",
                            n + 1,
                            urls.len(),
                            url.origin()
                        );
                    }
                    if let Some(dir) = &a.record {
                        transport.tap.record.save(dir, &cred, i)?;
                    }
                    last = None;
                    break;
                }
                Err(e) if e.downcast_ref::<ServerUnavailable>().is_some() => {
                    eprintln!(
                        "ember attest: server {} of {} ({}) unavailable: {e:#}",
                        n + 1,
                        urls.len(),
                        url.origin()
                    );
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(e) = last {
            return Err(e.context(format!("all {} servers unavailable", urls.len())));
        }
        eprintln!("ember attest: done in {} ms", started.elapsed().as_millis());
    }
    Ok(())
}

/// The whole flow against one server.
fn attest_once(
    spec: &str,
    ek: Option<ember_tpm::EkTemplate>,
    transport: &mut impl Transport,
    url: &Url,
    a: &AttestArgs,
    trust: Option<&PublicKey>,
    outcome: Option<Outcome>,
) -> Result<Credential> {
    if spec.starts_with('/') {
        let path: &'static str = Box::leak(spec.to_string().into_boxed_str());
        let dev =
            ember_tpm::DeviceTransport::open(path).map_err(|e| anyhow!("open {spec}: {e}"))?;
        flow(&mut Tpm::new(dev), ek, transport, url, a, trust, outcome)
    } else {
        let sock = ember_tpm::SocketTransport::connect_spec(spec)
            .map_err(|e| anyhow!("connect {spec}: {e}"))?;
        flow(&mut Tpm::new(sock), ek, transport, url, a, trust, outcome)
    }
}

/// The kernel's copy of the firmware's event log.
const KERNEL_EVENT_LOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";

/// The event log to send: --event-log, the kernel's for a device TPM
/// (none if it has none), or none.
fn event_log(a: &AttestArgs) -> Result<Vec<u8>> {
    match (&a.event_log, &a.tpm) {
        (Some(p), _) => std::fs::read(p).with_context(|| format!("read {}", p.display())),
        (None, Some(t)) if t.starts_with('/') => {
            Ok(std::fs::read(KERNEL_EVENT_LOG).unwrap_or_default())
        }
        _ => Ok(Vec::new()),
    }
}

fn flow<T: ember_tpm::Transport>(
    tpm: &mut Tpm<T>,
    ek: Option<ember_tpm::EkTemplate>,
    http: &mut impl Transport,
    cfg: &Url,
    a: &AttestArgs,
    trust: Option<&PublicKey>,
    outcome: Option<Outcome>,
) -> Result<Credential> {
    let mut dev = match ek {
        Some(t) => ember_proto::tpm::TpmAttestor::with_ek_template(tpm, t),
        None => ember_proto::tpm::TpmAttestor::new(tpm),
    };
    let log = event_log(a)?;
    let attested = client::attest(&mut dev, http, cfg, &log);
    let closed = dev.close();
    let cred = attested.map_err(|e| classify("attestation refused", e))?;
    closed.map_err(|e| anyhow!("flush TPM objects: {e}"))?;
    eprintln!(
        "ember attest: attested; credential valid {} s",
        cred.expires_in_s
    );
    let mut version = None;
    if !a.no_overlay {
        let into = a
            .into
            .as_ref()
            .ok_or_else(|| anyhow!("--into is required"))?;
        let trust = trust.ok_or_else(|| anyhow!("--manifest-key is required"))?;
        let envelope = cred
            .open_grant(trust)
            .map_err(|e| classify("overlay refused", e))?;
        extract_staged(http, cfg, &envelope, into)?;
        let m = &envelope.manifest;
        println!(
            "overlay {} (epoch {}, {} bytes, blob {}) extracted into {}",
            m.version_id,
            m.epoch,
            m.plain_size,
            ember_fs::hex::hex(&m.blob_sha256),
            into.display()
        );
        version = Some(m.version_id);
    }
    if let Some(o) = outcome {
        let timeline = a.timeline_from.as_deref().map(read_timeline).transpose()?;
        report(http, cfg, &cred, o, version, &a.reason, timeline.as_ref())?;
    }
    Ok(cred)
}

/// Step 4, until the server acknowledged it ([`report_retried`]).
fn report(
    http: &mut impl Transport,
    cfg: &Url,
    cred: &Credential,
    o: Outcome,
    version: Option<u64>,
    reason: &str,
    timeline: Option<&ember_proto::timeline::Timeline>,
) -> Result<()> {
    let answer = report_retried(
        || client::report(http, cfg, cred, o, version, reason, timeline),
        |attempt, e, ms| {
            eprintln!(
                "ember attest: report attempt {attempt} of {} failed ({e}); retrying in {ms} ms",
                retry::REPORT_ATTEMPTS
            )
        },
    )
    .map_err(|e| classify("report", e))?;
    match answer {
        Some(r) => println!(
            "reported {o:?}: attempts {}, last known good {:?}",
            r.attempts, r.last_known_good
        ),
        None => {
            println!("reported {o:?}: an earlier attempt reached the server (its answer was lost)")
        }
    }
    Ok(())
}

/// Downloads and opens the overlay into a staging folder beside `into`,
/// then moves it in. Nothing reaches `into` unless the whole stream
/// authenticated and extracted.
fn extract_staged(
    http: &mut impl Transport,
    cfg: &Url,
    envelope: &Envelope,
    into: &Path,
) -> Result<()> {
    let into = absolute(into)?;
    let parent = into
        .parent()
        .ok_or_else(|| anyhow!("--into must not be /"))?;
    std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    let mut r = [0u8; 6];
    getrandom::getrandom(&mut r)?;
    let name = into
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = parent.join(format!(".{name}.ember-staging-{}", ember_fs::hex::hex(&r)));
    std::fs::create_dir(&staging).with_context(|| format!("create {}", staging.display()))?;
    let result = (|| {
        let sink = FsSink::open(staging.as_path(), Confinement::Beneath)
            .map_err(|e| anyhow!("open staging: {e}"))?;
        let mut extractor = Extractor::authenticated(
            sink,
            Limits::default(),
            envelope.manifest.compression.into(),
        );
        client::fetch_overlay(http, cfg, envelope, &mut extractor)
            .map_err(|e| classify("overlay refused", e))?;
        drop(extractor);
        move_into(&staging, &into)
    })();
    if staging.exists() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false)
}

/// Moves the extracted tree into `into`: one rename when `into` is absent
/// or empty, otherwise a merge where the overlay's entries win.
fn move_into(staging: &Path, into: &Path) -> Result<()> {
    if !into.exists() || is_empty_dir(into) {
        if into.exists() {
            std::fs::remove_dir(into)?;
        }
        std::fs::rename(staging, into)
            .with_context(|| format!("move overlay into {}", into.display()))?;
        return Ok(());
    }
    merge(staging, into)
}

fn merge(src: &Path, dst: &Path) -> Result<()> {
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let (s, d) = (entry.path(), dst.join(entry.file_name()));
        let s_md = std::fs::symlink_metadata(&s)?;
        match std::fs::symlink_metadata(&d) {
            Ok(d_md) if s_md.is_dir() && d_md.is_dir() => merge(&s, &d)?,
            Ok(d_md) => {
                if d_md.is_dir() {
                    std::fs::remove_dir_all(&d)?;
                }
                std::fs::rename(&s, &d)?;
            }
            Err(_) => std::fs::rename(&s, &d)?,
        }
    }
    // The overlay's directory metadata wins over the merge's side effects.
    let md = std::fs::metadata(src)?;
    std::fs::set_permissions(dst, md.permissions())?;
    let times = std::fs::FileTimes::new()
        .set_modified(md.modified()?)
        .set_accessed(md.accessed()?);
    std::fs::File::open(dst)?.set_times(times)?;
    Ok(())
}

/// A corruption of the received sealed stream (tests of the AEAD framing
/// end to end, as an attacker on the path would do it).
#[derive(Clone, Debug)]
enum Fault {
    Tamper(u64),
    Truncate(u64),
    Swap(u64, u64),
    /// Serve this file instead (another overlay's blob).
    Replace(PathBuf),
}

impl Fault {
    fn parse(s: &str) -> Result<Fault> {
        let parts: Vec<&str> = s.split(':').collect();
        let n = |i: usize| -> Result<u64> {
            parts
                .get(i)
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| anyhow!("--fault {s:?}"))
        };
        Ok(match parts[0] {
            "tamper" => Fault::Tamper(n(1)?),
            "truncate" => Fault::Truncate(n(1)?),
            "swap" => Fault::Swap(n(1)?, n(2)?),
            "replace" if parts.len() == 2 => Fault::Replace(PathBuf::from(parts[1])),
            _ => bail!(
                "--fault {s:?}: expected tamper:OFFSET, truncate:LEN, swap:A:B or replace:FILE"
            ),
        })
    }

    fn apply(&self, body: &mut Vec<u8>) {
        match *self {
            Fault::Tamper(off) => {
                if let Some(b) = body.get_mut(off as usize) {
                    *b ^= 0x01;
                }
            }
            Fault::Truncate(len) => body.truncate(len as usize),
            Fault::Replace(ref file) => match std::fs::read(file) {
                Ok(other) => *body = other,
                Err(e) => eprintln!("ember attest: --fault replace: {}: {e}", file.display()),
            },
            Fault::Swap(a, b) => {
                let Ok(h) = sealed::Header::new_checked(&body[..]) else {
                    return;
                };
                let c = h.chunk_size() as usize + sealed::TAG_LEN;
                let (a, b) = (
                    sealed::HEADER_LEN + a as usize * c,
                    sealed::HEADER_LEN + b as usize * c,
                );
                if a + c <= body.len() && b + c <= body.len() && a != b {
                    let first = body[a..a + c].to_vec();
                    body.copy_within(b..b + c, a);
                    body[b..b + c].copy_from_slice(&first);
                }
            }
        }
    }
}

/// `--fault`: damages the sealed overlay as it arrives.
struct Faulty(Option<Fault>);

/// `--record`: keeps the last Start and Finish bodies.
#[derive(Default)]
struct Recorder {
    start: Option<Vec<u8>>,
    finish: Option<Vec<u8>>,
}

/// What `ember attest` watches: the recorder and the fault, on one tap.
struct Watch {
    fault: Faulty,
    record: Recorder,
}

impl Tap for Watch {
    fn post(&mut self, path: &str, body: &mut Vec<u8>) {
        if path.ends_with(msg::path::START) {
            self.record.start = Some(body.clone());
        } else if path.ends_with(msg::path::FINISH) {
            self.record.finish = Some(body.clone());
        }
    }

    fn wants_get_body(&self, path: &str) -> bool {
        self.fault.0.is_some() && path.contains(msg::path::BLOB)
    }

    fn get_body(&mut self, _path: &str, body: &mut Vec<u8>) {
        if let Some(fault) = &self.fault.0 {
            fault.apply(body);
        }
    }
}

impl Recorder {
    fn save(&self, dir: &Path, cred: &Credential, i: usize) -> Result<()> {
        let (Some(start), Some(finish)) = (&self.start, &self.finish) else {
            bail!("nothing recorded")
        };
        std::fs::create_dir_all(dir)?;
        let rec = transcript::Recording {
            secret: *cred.secret(),
            start: start.clone(),
            finish: finish.clone(),
        };
        let path = dir.join(format!("{}-{i}.rec", ember_fs::hex::hex(&cred.session)));
        std::fs::write(&path, rec.to_bytes())
            .with_context(|| format!("write {}", path.display()))?;
        Ok(())
    }
}

/// The last boot's phase table in a serial log, as a report sends it.
fn read_timeline(log: &std::path::Path) -> anyhow::Result<ember_proto::timeline::Timeline> {
    let bytes = std::fs::read(log).with_context(|| format!("reading {}", log.display()))?;
    let t = ember_timeline::Timeline::from_log(
        &String::from_utf8_lossy(&bytes),
        ember_timeline::Which::Last,
    )
    .with_context(|| format!("reading a timeline from {}", log.display()))?;
    Ok(t.to_report())
}

//! The load test's client: replays recorded attestation transcripts as N
//! simulated nodes at once against a server in test mode, each running the
//! whole protocol (Start, Finish with a fresh proof, sealed overlay opened
//! and verified, Report), and reports latency percentiles.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ember_proto::client::{self, Credential, Transport, Url};
use ember_proto::host::HttpsClient;
use ember_proto::manifest::PublicKey;
use ember_proto::msg::{decode, ErrorResponse, Outcome};
use ember_proto::retry;
use ember_proto::sealed::Sink;

use super::transcript::{
    decode_finish, encode_finish, finish_for_replay, Recording, ServerUnavailable,
};

struct Discard(u64);

impl Sink for Discard {
    type Error = std::convert::Infallible;
    fn write(&mut self, p: &[u8]) -> Result<(), Self::Error> {
        self.0 += p.len() as u64;
        Ok(())
    }
    fn finish(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

#[derive(Default, Clone, Copy)]
struct Timing {
    start: Duration,
    finish: Duration,
    overlay: Duration,
    report: Duration,
    total: Duration,
}

fn unavailable(what: String) -> anyhow::Error {
    ServerUnavailable::error(what, None)
}

fn post(http: &mut HttpsClient, base: &str, path: &str, body: &[u8]) -> Result<Vec<u8>> {
    let r = http
        .post(&format!("{base}{path}"), None, body)
        .map_err(|e| unavailable(format!("{path}: {e}")))?;
    if r.status >= 500 {
        return Err(ServerUnavailable::error(
            format!("{path}: HTTP {}", r.status),
            r.retry_after_s,
        ));
    }
    if r.status != 200 {
        let why = decode::<ErrorResponse>("error", &r.body)
            .map(|e| format!("{} {}", e.code.name(), e.detail))
            .unwrap_or_default();
        bail!("{path}: HTTP {} {why}", r.status);
    }
    Ok(r.body)
}

fn one(
    http: &mut HttpsClient,
    url: &Url,
    rec: &Recording,
    trust: Option<&PublicKey>,
) -> Result<Timing> {
    let mut t = Timing::default();
    let base = url.base_path.clone();
    let t0 = Instant::now();
    let start_resp = post(http, &base, ember_proto::msg::path::START, &rec.start)?;
    t.start = t0.elapsed();
    let (finish, started) = finish_for_replay(&rec.finish, &rec.start, &start_resp, &rec.secret)?;
    let t1 = Instant::now();
    let fin = decode_finish(&post(
        http,
        &base,
        ember_proto::msg::path::FINISH,
        &encode_finish(&finish),
    )?)?;
    t.finish = t1.elapsed();
    let cred = Credential::from_parts(
        started.session,
        rec.secret,
        &fin.credential,
        fin.expires_in_s,
        fin.overlay.clone(),
    );
    let t2 = Instant::now();
    let mut version = None;
    if fin.overlay.is_some() {
        let trust = trust.ok_or_else(|| anyhow!("overlay: --manifest-key is required"))?;
        let envelope = cred
            .open_grant(trust)
            .map_err(|e| anyhow!("overlay: {e}"))?;
        let mut sink = Discard(0);
        client::fetch_overlay(http, url, &envelope, &mut sink).map_err(|e| match e.kind() {
            ember_proto::ErrorKind::Transport { .. } => unavailable(format!("overlay: {e}")),
            _ => anyhow!("overlay: {e}"),
        })?;
        let m = &envelope.manifest;
        if sink.0 != m.plain_size {
            bail!(
                "overlay: {} bytes opened, {} announced",
                sink.0,
                m.plain_size
            );
        }
        version = Some(m.version_id);
    }
    t.overlay = t2.elapsed();
    let t3 = Instant::now();
    // Retried as the node retries it: a server that answers "not now"
    // (503, a busy database) must not count as a failed node.
    super::report_retried(
        || {
            client::report(
                http,
                url,
                &cred,
                Outcome::Joined,
                version,
                "load test",
                None,
            )
        },
        |_, _, _| {},
    )
    .map_err(|e| match e.kind() {
        ember_proto::ErrorKind::Transport { .. } => unavailable(format!("report: {e}")),
        _ => anyhow!("report: {e}"),
    })?;
    t.report = t3.elapsed();
    t.total = t0.elapsed();
    Ok(t)
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort();
    let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[i.clamp(1, v.len()) - 1].as_secs_f64() * 1000.0
}

/// One simulated node with failover, as the node does it
/// ([`retry::ATTEST_ROUNDS`] rounds): it starts at server `first` (nodes
/// are spread over the servers) and moves to the next while a server is
/// unavailable; after a round over all of them it waits
/// ([`retry::round_wait_ms`], raised by a server's `Retry-After`).
fn one_with_failover(
    clients: &[HttpsClient],
    urls: &[Url],
    first: usize,
    source: Option<IpAddr>,
    rec: &Recording,
    trust: Option<&PublicKey>,
) -> Result<(Timing, usize)> {
    let mut last = None;
    let mut tries = 0;
    for round in 1..=retry::ATTEST_ROUNDS {
        let mut asked = None;
        for k in 0..urls.len() {
            let i = (first + k) % urls.len();
            let mut client = match source {
                Some(ip) => clients[i].clone().with_source(ip),
                None => clients[i].clone(),
            };
            match one(&mut client, &urls[i], rec, trust) {
                Ok(t) => return Ok((t, tries)),
                Err(e) => match e.downcast_ref::<ServerUnavailable>() {
                    Some(u) => {
                        asked = asked.max(u.retry_after_s);
                        tries += 1;
                        last = Some(e);
                    }
                    None => return Err(e),
                },
            }
        }
        if round < retry::ATTEST_ROUNDS {
            std::thread::sleep(Duration::from_millis(retry::round_wait_ms(round, asked)));
        }
    }
    Err(last
        .unwrap_or_else(|| anyhow!("no server"))
        .context(format!(
            "all {} servers unavailable for {} rounds",
            urls.len(),
            retry::ATTEST_ROUNDS
        )))
}

/// Simulated node `i`'s own loopback address: 127.1.0.0/16, so 65,536
/// nodes before two share one.
fn loopback_source(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 1, (i >> 8) as u8, i as u8))
}

pub fn run(
    dir: &Path,
    urls: &[Url],
    clients: Vec<HttpsClient>,
    concurrency: usize,
    spread_sources: bool,
    trust: Option<PublicKey>,
) -> Result<()> {
    let mut recs = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .collect::<std::io::Result<_>>()?;
    names.sort_by_key(|e| e.file_name());
    for e in names {
        if e.path().extension().is_some_and(|x| x == "rec") {
            recs.push(
                Recording::parse(&std::fs::read(e.path())?)
                    .with_context(|| e.path().display().to_string())?,
            );
        }
    }
    if recs.is_empty() {
        bail!("no recordings (*.rec) in {}", dir.display());
    }
    let n = concurrency.max(1);
    let recs = Arc::new(recs);
    let barrier = Arc::new(Barrier::new(n));
    let clients = Arc::new(clients);
    let urls = Arc::new(urls.to_vec());
    let trust = Arc::new(trust);
    let wall = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (recs, barrier, urls, clients, trust) = (
                recs.clone(),
                barrier.clone(),
                urls.clone(),
                clients.clone(),
                trust.clone(),
            );
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    barrier.wait();
                    // Each simulated node uses its own recording (its own AK).
                    one_with_failover(
                        &clients,
                        &urls,
                        i % urls.len(),
                        spread_sources.then(|| loopback_source(i)),
                        &recs[i % recs.len()],
                        trust.as_ref().as_ref(),
                    )
                })
                .expect("spawn a load-test thread")
        })
        .collect();
    let mut ok = Vec::new();
    let mut failures = Vec::new();
    let mut failed_over = 0;
    for h in handles {
        match h.join() {
            Ok(Ok((t, hops))) => {
                ok.push(t);
                failed_over += (hops > 0) as usize;
            }
            Ok(Err(e)) => failures.push(format!("{e:#}")),
            Err(_) => failures.push("thread panicked".into()),
        }
    }
    let wall = wall.elapsed();
    for f in failures.iter().take(5) {
        eprintln!("load: failure: {f}");
    }
    let col = |f: fn(&Timing) -> Duration| ok.iter().map(f).collect::<Vec<_>>();
    let (mut total, mut start, mut finish, mut overlay, mut report) = (
        col(|t| t.total),
        col(|t| t.start),
        col(|t| t.finish),
        col(|t| t.overlay),
        col(|t| t.report),
    );
    println!(
        "load: nodes={n} recordings={} servers={} ok={} failed={} failed_over={failed_over} wall_ms={:.0} throughput={:.1}/s",
        recs.len(),
        urls.len(),
        ok.len(),
        failures.len(),
        wall.as_secs_f64() * 1000.0,
        ok.len() as f64 / wall.as_secs_f64()
    );
    println!(
        "load: total_ms p50={:.1} p90={:.1} p99={:.1} max={:.1}",
        pct(&mut total, 50.0),
        pct(&mut total, 90.0),
        pct(&mut total, 99.0),
        pct(&mut total, 100.0)
    );
    for (name, v) in [
        ("start", &mut start),
        ("finish", &mut finish),
        ("overlay", &mut overlay),
        ("report", &mut report),
    ] {
        println!(
            "load: {name}_ms p50={:.1} p99={:.1} max={:.1}",
            pct(v, 50.0),
            pct(v, 99.0),
            pct(v, 100.0)
        );
    }
    if !failures.is_empty() {
        bail!("{} of {n} simulated nodes failed", failures.len());
    }
    Ok(())
}

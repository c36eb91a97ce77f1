//! The boot sequence, one phase per step, each logged with its duration:
//! `phase=<name> status=ok took=<ms>ms cpu=<ms>ms`. A newcomer looking for "where does
//! X happen" starts here.

use alloc::string::String;
use alloc::vec::Vec;

use ember_fs::tar::{Confinement, Extractor, FsSink, Limits};
use ember_proto::client::{self, Credential, Url};
use ember_proto::msg::{Outcome, OverlayMeta};
use ember_proto::sealed::{Expected, Opener};
use ember_proto::tpm::TpmAttestor;

use crate::attest::{self, Tee};
use crate::cmdline::{Config, OnError, TestAction};
use crate::nodeconf::{self, NodeConf};
use crate::runtime::{self, Readiness};
use crate::supervisor::{self, Event, Request, Supervisor};
use crate::trust::{self, NodeTpm};
use crate::{
    clock, console, esp, fsutil, kmod, lkg, mounts, network, power, rootfs, storage, Error,
};
use ember_net::https::Client;
use ember_proto::net::NetTransport;

/// Runs one named phase and logs its outcome, duration and CPU time.
fn phase<T>(
    name: &'static str,
    f: impl FnOnce() -> Result<T, Error>,
) -> Result<T, (&'static str, Error)> {
    let started = PhaseClock::start(name);
    let result = f();
    started.finish(result.as_ref().err().map(|e| e as &dyn core::fmt::Display));
    result.map_err(|e| (name, e))
}

/// The clocks of a running phase. Kept out of the generic [`phase`], which
/// is instantiated once per call site, so its logging is emitted once.
struct PhaseClock {
    name: &'static str,
    start_ms: u64,
    cpu_start_ms: u64,
}

impl PhaseClock {
    #[inline(never)]
    fn start(name: &'static str) -> PhaseClock {
        log::info!("phase={name} status=start");
        PhaseClock {
            name,
            start_ms: clock::now_ms(),
            cpu_start_ms: clock::cpu_ms(),
        }
    }

    #[inline(never)]
    fn finish(self, failure: Option<&dyn core::fmt::Display>) {
        let name = self.name;
        let took = clock::now_ms().saturating_sub(self.start_ms);
        let cpu = clock::cpu_ms().saturating_sub(self.cpu_start_ms);
        match failure {
            None => log::info!("phase={name} status=ok took={took}ms cpu={cpu}ms"),
            Some(e) => {
                log::error!("phase={name} status=failed took={took}ms cpu={cpu}ms reason={e}")
            }
        }
    }
}

/// PID 1's entry: never returns.
pub fn run() -> ! {
    let mut sup = Supervisor::new();
    console::init(log::LevelFilter::Info);
    log::info!(
        "Ember init {} starting as pid {}",
        env!("CARGO_PKG_VERSION"),
        rustix::process::getpid().as_raw_nonzero()
    );
    let mut node = Node {
        cfg: Config::default(),
        tpm: None,
        boot_pcr: None,
        net: None,
        cas: Vec::new(),
        server: None,
    };
    match boot(&mut sup, &mut node) {
        Ok(()) => supervise(&mut sup, &mut node),
        Err((name, err)) => {
            node.report(Outcome::Failed, &alloc::format!("phase {name}: {err}"));
            fail(&mut sup, &node.cfg, name, &err)
        }
    }
}

/// What the boot has learned and holds, phase by phase.
struct Node {
    cfg: Config,
    tpm: Option<NodeTpm>,
    /// PCR 11 right after the initrd measurement (what LKG keys seal to).
    boot_pcr: Option<Vec<u8>>,
    net: Option<network::Network>,
    /// The initrd's CA bundle for the boot server.
    cas: Vec<Vec<u8>>,
    server: Option<Server>,
}

/// An attested session with the boot server.
struct Server {
    url: Url,
    cred: Credential,
    overlay: Option<OverlayMeta>,
}

/// Where this boot's overlay came from.
enum Source {
    Network { meta: OverlayMeta, key: [u8; 32] },
    LastKnownGood { slot: lkg::Slot },
}

type Failure = (&'static str, Error);

fn boot(sup: &mut Supervisor, node: &mut Node) -> Result<(), Failure> {
    let root = phase("rootfs", rootfs::ensure_tmpfs_root)?;
    match root.moved {
        true => log::info!(
            "rootfs: moved {} files ({} bytes) from the initial rootfs to a tmpfs root; initrd snapshot {} bytes",
            root.files,
            root.bytes,
            root.snapshot_bytes
        ),
        false => log::info!("rootfs: / is already a tmpfs root"),
    }
    let report = phase("mounts", mounts::mount_early)?;
    console::attach_kmsg();
    log::info!(
        "mounts: mounted [{}]; already mounted [{}]; not available [{}]",
        join(&report.mounted),
        join(&report.already),
        join(&report.skipped)
    );

    node.cfg = phase("cmdline", read_cmdline)?;
    log::set_max_level(node.cfg.log_level);
    let cfg = node.cfg.clone();

    let modules = phase("modules", || kmod::load(&cfg.extra_modules))?;
    log::info!(
        "modules: loaded [{}]; already loaded [{}]; built in [{}]; missing [{}]; refused [{}]",
        join(&modules.loaded),
        join(&modules.already_loaded),
        join(&modules.builtin),
        join(&modules.missing),
        modules.failed.len()
    );
    phase("inventory", inventory)?;

    if cfg.test == Some(TestAction::Poweroff) {
        log::info!("ember.test=poweroff: skeleton checks done");
        power::shutdown(sup, Request::Poweroff);
    }

    // Without a TPM the node cannot attest or use last-known-good; that is
    // reported where it matters, and the network still comes up.
    if root.moved {
        match phase("measure", || {
            let mut tpm = trust::open()?;
            let pcr = trust::measure_initrd(&mut tpm, &root.snapshot_sha256)?;
            log::info!(
                "measure: initrd sha256 {} extended into PCR 11 = {}",
                hex(&root.snapshot_sha256),
                hex(&pcr)
            );
            Ok((tpm, pcr))
        }) {
            Ok((tpm, pcr)) => {
                node.tpm = Some(tpm);
                node.boot_pcr = Some(pcr);
            }
            Err((_, e)) => {
                log::error!("measure: {e}; attestation and last-known-good need a working TPM")
            }
        }
    } else {
        log::warn!(
            "measure: / was not the initial rootfs, so there is no initrd snapshot to measure"
        );
    }

    let tpm_before = node
        .tpm
        .as_mut()
        .map(|t| (t.transport_mut().commands, t.transport_mut().busy_ms));
    match phase("dhcp", || network::bring_up(&cfg)) {
        Ok(net) => node.net = Some(net),
        Err((_, e)) if cfg.test.is_none() => {
            log::warn!("dhcp: no lease ({e}); trying last-known-good")
        }
        Err(f) => return Err(f),
    }

    if cfg.test == Some(TestAction::Fetch) {
        let net = node
            .net
            .as_ref()
            .ok_or(("test-fetch", Error::Cmdline(String::from("no network"))))?;
        phase("test-fetch", || test_fetch(&cfg, net))?;
        power::shutdown(sup, Request::Poweroff);
    }

    let source = match node.net.is_some() {
        true => {
            match phase("attest", || node.attest()) {
                Ok(()) => {
                    if let (Some(tpm), Some((c0, t0))) = (node.tpm.as_mut(), tpm_before) {
                        let m = tpm.transport_mut();
                        log::info!(
                            "metrics: tpm_commands={} tpm_ms={}",
                            m.commands - c0,
                            m.busy_ms - t0
                        );
                    }
                    phase("overlay", || node.fetch_overlay())?
                }
                Err((_, Error::Attest(ember_proto::Error::Transport { step, detail }))) => {
                    log::warn!("attest: boot server unreachable ({step}: {detail}); trying last-known-good");
                    phase("lkg-restore", || node.restore_lkg())?
                }
                Err(f) => return Err(f),
            }
        }
        false => phase("lkg-restore", || node.restore_lkg())?,
    };

    phase("seal-boot-phase", || match node.tpm.as_mut() {
        Some(tpm) => trust::leave_initrd(tpm),
        None => Ok(()),
    })?;

    let conf = phase("nodeconf", || {
        let text = fsutil::read_text(nodeconf::PATH)?;
        NodeConf::parse(&text).map_err(Error::NodeConf)
    })?;
    let resolv = phase("storage", || storage::apply(&conf.storage, sup))?;
    if let Some(net) = node.net.as_mut() {
        net.dhcp.set_resolv_conf(Some(String::from(resolv)));
    }
    if let Some(argv) = &conf.debug_console {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        match sup.spawn(
            &argv,
            &[
                "TERM=linux",
                "HOME=/root",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            ],
        ) {
            Ok(_) => log::warn!(
                "debug console: {} runs on the console (node.conf debug_console)",
                argv.join(" ")
            ),
            Err(e) => log::warn!("debug console: {e}"),
        }
    }
    let node_name = node.node_name(&conf);
    let timeout = conf.ready_timeout_s.unwrap_or(cfg.ready_timeout_s);
    let pid = phase("runtime", || runtime::start(sup, &conf, &node_name))?;

    let readiness = {
        let started = PhaseClock::start("ready");
        let r = runtime::wait_ready(sup, node.net.as_mut(), &conf, pid, &node_name, timeout);
        match &r {
            Readiness::Ready => started.finish(None),
            other => started.finish(Some(other)),
        }
        r
    };
    match readiness {
        Readiness::Ready => {}
        Readiness::Shutdown(req) => power::shutdown(sup, req),
        Readiness::Exited(why) => return Err(("ready", Error::Runtime(why))),
        Readiness::TimedOut => {
            return Err((
                "ready",
                Error::Runtime(alloc::format!("not Ready within {timeout} s")),
            ))
        }
    }

    if let Some(hwm) = peak_rss_kb() {
        log::info!("metrics: pid1_vmhwm_kb={hwm}");
    }
    // A failure to persist does not undo a good boot: it is logged and the
    // node keeps running; the previous last-known-good stays.
    if let Err((_, e)) = phase("lkg", || node.persist_lkg(&source)) {
        log::warn!("lkg: {e}; the previous last-known-good stays");
    }
    node.report(Outcome::Joined, "node is Ready");
    Ok(())
}

impl Node {
    fn attest(&mut self) -> Result<(), Error> {
        let url_text = self.cfg.attest_url.clone().ok_or_else(|| {
            Error::Cmdline(String::from(
                "ember.attest_url=https://… is required to boot",
            ))
        })?;
        let url = Url::parse(&url_text)
            .ok_or_else(|| Error::Cmdline(String::from("ember.attest_url does not parse")))?;
        self.cas = network::Network::https_cas()?;
        let tpm = self.tpm.as_mut().ok_or(Error::Trust("no TPM opened"))?;
        let net = self.net.as_ref().ok_or(Error::Trust("no network"))?;
        let client = Client::new(&self.cas, &net.lease.dns);
        let mut http = NetTransport::new(&client, &url.origin());
        let mut last = None;
        for attempt in 1..=ATTEST_TRIES {
            let mut attestor = TpmAttestor::new(tpm);
            let result = client::attest(&mut attestor, &mut http, &url.config());
            if let Err(e) = attestor.close() {
                log::warn!("attest: flushing transient TPM objects: {e}");
            }
            match result {
                Ok(cred) => {
                    let overlay = cred.overlay.clone();
                    log::info!(
                        "attest: credential valid for {} s from {url_text}",
                        cred.expires_in_s
                    );
                    self.server = Some(Server { url, cred, overlay });
                    return Ok(());
                }
                Err(e @ ember_proto::Error::Transport { .. }) if attempt < ATTEST_TRIES => {
                    let delay = 2_000u64 << (attempt - 1);
                    log::warn!(
                        "attest: attempt {attempt}/{ATTEST_TRIES}: {e}; retrying in {} ms",
                        delay
                    );
                    clock::sleep_ms(delay);
                    last = Some(e);
                }
                Err(e) => return Err(Error::Attest(e)),
            }
        }
        Err(Error::Attest(last.unwrap_or(
            ember_proto::Error::Transport {
                step: "start",
                detail: String::new(),
            },
        )))
    }

    /// Downloads, decrypts and extracts the sealed overlay into `/` in one
    /// stream, keeping the ciphertext for last-known-good.
    fn fetch_overlay(&mut self) -> Result<Source, Error> {
        let server = self.server.as_ref().ok_or(Error::Trust("not attested"))?;
        let net = self.net.as_ref().ok_or(Error::Trust("no network"))?;
        server
            .overlay
            .as_ref()
            .ok_or(Error::Attest(ember_proto::Error::Server {
                step: "overlay",
                status: 404,
                code: ember_proto::msg::ErrorCode::NoOverlay,
                detail: String::from("no overlay assigned to this node"),
            }))?;
        let client = Client::new(&self.cas, &net.lease.dns);
        let mut http = Tee::new(NetTransport::new(&client, &server.url.origin()));
        http.copy_next_body_to(attest::SEALED_COPY)
            .map_err(|errno| Error::Write {
                path: String::from(attest::SEALED_COPY),
                errno,
            })?;
        let mut extractor = overlay_extractor()?;
        let meta = client::fetch_overlay(
            &mut http,
            &server.url.config(),
            &server.cred,
            &mut extractor,
        )?;
        let key = server.cred.overlay_key(&meta);
        log::info!(
            "overlay: version {} ({} bytes, sha256 {}) extracted into /",
            meta.version_id,
            meta.size,
            hex(&meta.sha256)
        );
        Ok(Source::Network { meta, key })
    }

    /// Cold start: the overlay cached on the ESP, its key unsealed by the TPM.
    fn restore_lkg(&mut self) -> Result<Source, Error> {
        let dev = esp::find()?.ok_or(Error::Trust(
            "no boot server and no EFI System Partition with a last-known-good",
        ))?;
        let esp = esp::Mounted::mount(&dev, false)?;
        let wanted = self.cfg.slot.as_deref().and_then(lkg::Slot::parse);
        let candidates: Vec<(lkg::Slot, lkg::SlotRecord)> = lkg::SLOTS
            .iter()
            .filter_map(|s| lkg::read_record(&esp, *s).map(|r| (*s, r)))
            .collect();
        let (slot, record) = candidates
            .iter()
            .find(|(s, _)| Some(*s) == wanted)
            .or_else(|| candidates.iter().max_by_key(|(_, r)| r.generation))
            .cloned()
            .ok_or(Error::Trust("the ESP holds no last-known-good slot"))?;
        log::info!(
            "lkg: slot {} generation {} overlay {} on {}",
            slot.name(),
            record.generation,
            record.overlay.id,
            dev.partition
        );
        let tpm = self
            .tpm
            .as_mut()
            .ok_or(Error::Trust("no TPM to unseal the last-known-good key"))?;
        let key = trust::unseal_key(tpm, &record.key).map_err(|e| {
            log::error!("lkg: the TPM refused to unseal the overlay key: the boot chain (PCR 11) changed since it was sealed");
            e
        })?;
        let path = esp.path(&alloc::format!("ember/{}/overlay.sealed", slot.name()));
        let fd = rustix::fs::open(
            path.as_str(),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|errno| Error::Read {
            path: path.clone(),
            errno,
        })?;
        let mut opener = Opener::new(
            key,
            Expected {
                sha256: record.overlay.sha256,
                size: record.overlay.size,
            },
        );
        let mut extractor = overlay_extractor()?;
        let mut buf = alloc::vec![0u8; 64 * 1024];
        loop {
            let n = match rustix::io::read(&fd, &mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(errno) => return Err(Error::Read { path, errno }),
            };
            opener.write(&buf[..n], &mut extractor)?;
        }
        opener.finish(&mut extractor)?;
        log::info!(
            "lkg: overlay {} restored from slot {}",
            record.overlay.id,
            slot.name()
        );
        Ok(Source::LastKnownGood { slot })
    }

    /// After Ready: a network boot becomes the new last-known-good; a
    /// last-known-good boot blesses its slot.
    fn persist_lkg(&mut self, source: &Source) -> Result<(), Error> {
        let Some(dev) = esp::find()? else {
            log::info!("lkg: no EFI System Partition: diskless mode, nothing persisted");
            return Ok(());
        };
        let esp = esp::Mounted::mount(&dev, true)?;
        match source {
            Source::LastKnownGood { slot } => {
                if lkg::bless(&esp, *slot)? {
                    log::info!("lkg: slot {} blessed (booted to Ready)", slot.name());
                }
                Ok(())
            }
            Source::Network { meta, key } => {
                let tpm = self
                    .tpm
                    .as_mut()
                    .ok_or(Error::Trust("no TPM to seal the overlay key"))?;
                let pcr = self
                    .boot_pcr
                    .as_ref()
                    .ok_or(Error::Trust("the initrd was not measured"))?;
                let sealed = trust::seal_key(tpm, key, pcr)?;
                let art = lkg::Artifacts {
                    kernel: KERNEL_IN_INITRD,
                    initrd: rootfs::INITRD_SNAPSHOT,
                    sealed_overlay: attest::SEALED_COPY,
                    overlay: lkg::OverlayInfo {
                        id: alloc::format!("{}", meta.version_id),
                        sha256: meta.sha256,
                        size: meta.size,
                    },
                    key: sealed,
                    cmdline: lkg_cmdline()?,
                };
                let (slot, generation) = lkg::persist(&esp, &art)?;
                log::info!(
                    "lkg: wrote slot {} generation {} (overlay {}) to {}",
                    slot.name(),
                    generation,
                    meta.version_id,
                    dev.partition
                );
                Ok(())
            }
        }
    }

    fn node_name(&self, conf: &NodeConf) -> String {
        if let Some(n) = &conf.node_name {
            return n.clone();
        }
        if let Some(n) = &self.cfg.hostname {
            return n.clone();
        }
        match &self.net {
            Some(net) => match (&net.lease.hostname, net.dhcp.link().mac) {
                (Some(h), _) => h.clone(),
                (None, Some(mac)) => ember_net::dhcp::hostname_from_mac(mac),
                (None, None) => String::from("ember-node"),
            },
            None => String::from("ember-node"),
        }
    }

    /// Tells the boot server how the boot ended, when there is a session.
    fn report(&mut self, outcome: Outcome, reason: &str) {
        let (Some(server), Some(net)) = (self.server.as_ref(), self.net.as_ref()) else {
            return;
        };
        let client = Client::new(&self.cas, &net.lease.dns);
        let mut http = NetTransport::new(&client, &server.url.origin());
        let version = server.overlay.as_ref().map(|o| o.version_id);
        match client::report(
            &mut http,
            &server.url.config(),
            &server.cred,
            outcome,
            version,
            reason,
        ) {
            Ok(_) => log::info!(
                "report: told the boot server {}",
                if outcome == Outcome::Joined {
                    "Joined"
                } else {
                    "Failed"
                }
            ),
            Err(e) => log::warn!("report: {e}"),
        }
    }
}

const ATTEST_TRIES: u32 = 3;
/// The kernel carried in the initrd (`ember initrd build --kernel`).
const KERNEL_IN_INITRD: &str = "/boot/vmlinuz";

fn overlay_extractor() -> Result<Extractor<FsSink>, Error> {
    let sink = FsSink::open("/", Confinement::InRoot)
        .map_err(|kind| Error::Extract(ember_fs::tar::Error::from(kind)))?;
    Ok(Extractor::new(sink, Limits::default()))
}

/// This boot's command line, minus what the loader adds, for the LKG entry:
/// GRUB's `BOOT_IMAGE=`, `initrd=` for the EFI stub, our slot, and the image
/// name iPXE puts first (`ember artifact ipxe` names it `vmlinuz`).
fn lkg_cmdline() -> Result<String, Error> {
    let text = fsutil::read_text("/proc/cmdline")?;
    let kept: Vec<&str> = text
        .split_ascii_whitespace()
        .enumerate()
        .filter(|&(i, w)| {
            !w.starts_with("BOOT_IMAGE=")
                && !w.starts_with("initrd=")
                && !w.starts_with("ember.slot=")
                && !(i == 0 && w == "vmlinuz")
        })
        .map(|(_, w)| w)
        .collect();
    Ok(kept.join(" "))
}

/// After Ready: keep supervising (zombies, the lease, shutdown requests).
fn supervise(sup: &mut Supervisor, node: &mut Node) -> ! {
    loop {
        let event = match node.net.as_mut() {
            Some(net) => {
                let wait = net.next_wakeup_ms().clamp(1, 60_000);
                sup.wait_fd(net.dhcp.fd(), wait)
            }
            None => sup.wait(60_000),
        };
        match event {
            Event::Shutdown(req) => power::shutdown(sup, req),
            Event::Exited { name, status, .. } => {
                log::error!(
                    "{name} {} after the node was Ready",
                    supervisor::describe(status)
                );
                node.report(Outcome::Failed, "runtime exited");
                fail(
                    sup,
                    &node.cfg,
                    "runtime",
                    &Error::Runtime(alloc::format!("{name} exited")),
                );
            }
            Event::Readable | Event::Timeout => {
                if let Some(net) = node.net.as_mut() {
                    net.poll();
                }
            }
        }
    }
}

/// PID 1's peak resident memory, from /proc/self/status (VmHWM).
fn peak_rss_kb() -> Option<u64> {
    let status = fsutil::read_text("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn hex(bytes: &[u8]) -> String {
    ember_proto::client::hex(bytes)
}

/// `ember.test=fetch`: one verified HTTPS GET of `ember.test_url`.
fn test_fetch(cfg: &Config, net: &network::Network) -> Result<(), Error> {
    use sha2::Digest;
    let url = cfg
        .test_url
        .as_deref()
        .ok_or_else(|| Error::Cmdline(String::from("ember.test=fetch needs ember.test_url")))?;
    let cas = network::Network::https_cas()?;
    let client = ember_net::https::Client::new(&cas, &net.lease.dns);
    let mut hasher = sha2::Sha256::new();
    let response = client.get(url, &mut |chunk| {
        hasher.update(chunk);
        Ok(())
    })?;
    log::info!(
        "test-fetch: {url} status {} body {} bytes sha256 {}",
        response.status,
        response.body_len,
        hex(&hasher.finalize())
    );
    Ok(())
}

fn read_cmdline() -> Result<Config, Error> {
    let text = fsutil::read_text("/proc/cmdline")?;
    let (cfg, errors) = Config::parse(&text);
    for e in &errors {
        log::error!("cmdline: ignoring {e}");
    }
    log::info!("cmdline: ember keys [{}]", join(&cfg.keys));
    Ok(cfg)
}

/// What the node has to work with, for the operator reading the console.
fn inventory() -> Result<(), Error> {
    // The TPM driver probes asynchronously; give the device node a moment.
    let deadline = clock::now_ms() + 2_000;
    let tpm = loop {
        if fsutil::exists("/dev/tpmrm0") {
            break Some("/dev/tpmrm0");
        }
        if clock::now_ms() >= deadline {
            break if fsutil::exists("/dev/tpm0") {
                Some("/dev/tpm0")
            } else {
                None
            };
        }
        clock::sleep_ms(20);
    };
    match tpm {
        Some(dev) => log::info!("tpm: {dev} present"),
        None => log::warn!("tpm: no /dev/tpmrm0 or /dev/tpm0; attestation will fail"),
    }
    let mut ifaces = Vec::new();
    for name in fsutil::list_dir("/sys/class/net")? {
        let read = |attr: &str| {
            fsutil::read_text(&alloc::format!("/sys/class/net/{name}/{attr}"))
                .map(|s| String::from(s.trim()))
                .unwrap_or_default()
        };
        ifaces.push(alloc::format!(
            "{name}({} {})",
            read("address"),
            read("operstate")
        ));
    }
    log::info!("network interfaces: [{}]", join(&ifaces));
    Ok(())
}

/// The one failure policy: say what failed, wait (still reaping and
/// honouring shutdown signals), then reboot or power off.
fn fail(sup: &mut Supervisor, cfg: &Config, name: &str, err: &Error) -> ! {
    let (request, verb) = match cfg.on_error {
        OnError::Reboot => (Request::Reboot, "rebooting"),
        OnError::Poweroff => (Request::Poweroff, "powering off"),
    };
    log::error!(
        "boot failed in phase {name}: {err}; {verb} in {} s (ember.on_error)",
        cfg.error_delay_s
    );
    let deadline = clock::now_ms() + u64::from(cfg.error_delay_s) * 1000;
    while clock::now_ms() < deadline {
        if let Event::Shutdown(req) = sup.wait(deadline.saturating_sub(clock::now_ms()).max(1)) {
            power::shutdown(sup, req);
        }
    }
    power::shutdown(sup, request)
}

fn join<S: AsRef<str>>(items: &[S]) -> String {
    let mut out = String::new();
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(s.as_ref());
    }
    out
}

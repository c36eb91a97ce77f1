//! The boot sequence, one phase per step, each logged with its duration:
//! `phase=<name> status=ok took=<ms>ms cpu=<ms>ms`. A newcomer looking for
//! "where does X happen" starts here; every phase is one call into the
//! module that does it, and what a phase produces is passed on by value
//! (a [`Measured`] TPM, a [`Network`], a [`Session`], a [`Source`]), so
//! the phases cannot run out of order.

use alloc::format;

use ember_proto::msg::Outcome;

use crate::cmdline::Config;
use crate::lkg::{self, slots::Slot, Persist};
use crate::measure::{self, Measured};
use crate::network::{self, Network};
use crate::phase::{phase, Failure};
use crate::ready::{self, runtime, Watch};
use crate::session::{self, Fetched, Pending, Session};
use crate::supervisor::{self, Event, Request, Supervisor};
use crate::{
    cmdline, console, inventory, kmod, mounts, nodeconf, power, rootfs, storage, testhook, Error,
    ErrorKind,
};

/// Where this boot's overlay came from.
// One per boot, moved from phase to phase by value: boxing the larger
// variant would cost PID 1 a heap allocation and code for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Source {
    /// The boot server, through an attested session (kept for reports).
    Network { session: Session, fetched: Fetched },
    /// A last-known-good slot on the ESP (no boot server reachable).
    LastKnownGood { restored: lkg::Restored },
}

impl Source {
    /// Tells the boot server (when there is a session) how the boot ended;
    /// a Joined report without an answer is returned to try again.
    fn report(&self, outcome: Outcome, reason: &str) -> Option<Pending> {
        match self {
            Source::Network { session, .. } => session.report(outcome, reason),
            Source::LastKnownGood { .. } => None,
        }
    }

    /// Reports a failed phase, then passes the failure on.
    fn failed(&self, f: Failure) -> Failure {
        let _ = self.report(Outcome::Failed, &format!("phase {}: {}", f.0, f.1));
        f
    }
}

/// A node that reached Ready, as [`supervise`] keeps it.
struct Running {
    net: Option<Network>,
    source: Source,
    /// The Joined report, while the boot server has not acknowledged it.
    report: Option<Pending>,
}

/// PID 1's entry: never returns.
pub fn run() -> ! {
    let mut sup = Supervisor::new();
    console::init(log::LevelFilter::Info);
    crate::info!(
        "Ember init {} starting as pid {}",
        env!("CARGO_PKG_VERSION"),
        rustix::process::getpid().as_raw_nonzero()
    );
    let mut cfg = Config::default();
    match boot(&mut sup, &mut cfg) {
        Ok(node) => supervise(&mut sup, &cfg, node),
        Err((name, err)) => fail(&mut sup, &cfg, name, &err),
    }
}

/// The seed's boot sequence. `cfg` is filled by the `cmdline` phase; the
/// failure policy (`ember.on_error`) is read from it.
fn boot(sup: &mut Supervisor, cfg: &mut Config) -> Result<Running, Failure> {
    let root = phase("rootfs", rootfs::ensure_tmpfs_root)?;
    root.log();
    phase("mounts", mounts::mount_early)?.log();
    console::attach_kmsg();
    *cfg = phase("cmdline", cmdline::read)?;
    phase("modules", || kmod::load(&cfg.extra_modules))?.log();
    phase("inventory", inventory::survey)?;
    testhook::after_inventory(sup, cfg);

    let mut tpm = measure();
    if let Err((_, e)) = phase("lkg-floor", || lkg::epoch::settle(tpm.as_mut())) {
        crate::error!("lkg: {e}; last-known-good cannot be restored or written on this boot");
    }
    let mut net = dhcp(cfg)?;
    testhook::after_dhcp(sup, cfg, net.as_ref())?;
    let source = overlay_source(cfg, tpm.as_mut(), net.as_ref())?;
    let failed = |f| source.failed(f);

    // A network boot keeps the rollback counter's phase (PCR 15) open until
    // its slot is written: the counter then revokes the older slot at once.
    let counter = match &source {
        Source::Network { .. } => measure::Counter::KeepOpen,
        Source::LastKnownGood { .. } => measure::Counter::Close,
    };
    phase("seal-boot-phase", || {
        measure::leave_initrd(tpm.as_mut(), counter)
    })
    .map_err(failed)?;
    let conf = phase("nodeconf", nodeconf::read).map_err(failed)?;
    let resolv = phase("storage", || storage::apply(&conf.storage, sup)).map_err(failed)?;
    if let Some(net) = net.as_mut() {
        net.dhcp.set_resolv_conf(Some(resolv.into()));
    }
    runtime::start_debug_console(sup, &conf);
    let node_name = runtime::node_name(&conf, cfg, net.as_ref());
    let pid = phase("runtime", || runtime::start(sup, &conf, &node_name)).map_err(failed)?;
    let watch = Watch {
        conf: &conf,
        runtime: pid,
        node_name: &node_name,
        timeout_s: conf.ready_timeout_s.unwrap_or(cfg.ready_timeout_s),
    };
    phase("ready", || ready::wait(sup, net.as_mut(), &watch)).map_err(failed)?;

    inventory::log_peak_rss();
    let persist = match &source {
        Source::Network { session, fetched } => Persist::Write(session, fetched),
        Source::LastKnownGood { restored } => Persist::Bless(*restored),
    };
    // A failure to persist does not undo a good boot: it is logged and the
    // node keeps running; the previous last-known-good stays.
    if let Err((_, e)) = phase("lkg", || lkg::persist(tpm.as_mut(), persist)) {
        crate::warn!("lkg: {e}; the previous last-known-good stays");
    }
    if counter == measure::Counter::KeepOpen {
        if let Err((_, e)) = phase("seal-counter", || measure::close_counter(tpm.as_mut())) {
            crate::error!("lkg: {e}; the rollback counter stays movable until the next boot");
        }
    }
    let report = source.report(Outcome::Joined, "node is Ready");
    Ok(Running {
        net,
        source,
        report,
    })
}

/// The `measure` phase. Without a TPM the node cannot attest or use
/// last-known-good; that is reported where it matters, and the network
/// still comes up.
fn measure() -> Option<Measured> {
    match phase("measure", measure::boot) {
        Ok(m) => Some(m),
        Err((_, e)) => {
            crate::error!("measure: {e}; attestation and last-known-good need a working TPM");
            None
        }
    }
}

/// The `dhcp` phase. No lease is not fatal: last-known-good may boot the
/// node (except under `ember.test=`, where it is the test's failure).
fn dhcp(cfg: &Config) -> Result<Option<Network>, Failure> {
    match phase("dhcp", || network::bring_up(cfg)) {
        Ok(net) => Ok(Some(net)),
        Err((_, e)) if cfg.test.is_none() => {
            crate::warn!("dhcp: no lease ({e}); trying last-known-good");
            Ok(None)
        }
        Err(f) => Err(f),
    }
}

/// `attest` then `overlay` from the boot server; `lkg-restore` instead
/// when there is no lease or no boot server could be reached.
fn overlay_source(
    cfg: &Config,
    mut tpm: Option<&mut Measured>,
    net: Option<&Network>,
) -> Result<Source, Failure> {
    let attested = match net {
        Some(net) => phase("attest", || {
            let tpm = tpm
                .as_deref_mut()
                .ok_or(Error::new(ErrorKind::Missing("working TPM")))?;
            session::attest(&mut tpm.tpm, net, &cfg.attest_urls)
        }),
        None => Err(("attest", Error::new(ErrorKind::Missing("network")))),
    };
    match attested {
        Ok(session) => {
            // map_err, not inspect_err: at opt-level "z" inspect_err's
            // closure stays out of line and /init grows by 272 bytes.
            #[allow(clippy::manual_inspect)]
            let fetched = phase("overlay", || session.fetch_overlay(cfg.overlay_transport))
                .map_err(|f| {
                    let _ = session.report(Outcome::Failed, &format!("phase {}: {}", f.0, f.1));
                    f
                })?;
            Ok(Source::Network { session, fetched })
        }
        Err((_, e)) if net.is_none() || session::undecided(&e) => {
            if net.is_some() {
                crate::warn!(
                    "attest: boot server unreachable or unavailable ({e}); trying last-known-good"
                );
            }
            let cmdline_slot = cfg.slot.as_deref().and_then(Slot::parse);
            let restored = phase("lkg-restore", || {
                lkg::restore(tpm, lkg::loader::booted_slot(cmdline_slot)?)
            })?;
            Ok(Source::LastKnownGood { restored })
        }
        Err(f) => Err(f),
    }
}

/// After Ready: keep supervising (zombies, the lease, shutdown requests).
fn supervise(sup: &mut Supervisor, cfg: &Config, mut node: Running) -> ! {
    loop {
        // A Joined report still owed wakes the loop when it is due.
        let report_in = node
            .report
            .map(|p| p.due_ms.saturating_sub(crate::clock::now_ms()));
        let event = match node.net.as_mut() {
            Some(net) => {
                let wait = net.next_wakeup_ms().min(report_in.unwrap_or(u64::MAX));
                sup.wait_fd(net.dhcp.fd(), wait.clamp(1, 60_000))
            }
            None => sup.wait(report_in.unwrap_or(60_000).clamp(1, 60_000)),
        };

        match event {
            Event::Shutdown(req) => power::shutdown(sup, req),
            Event::Exited { name, status, .. } => {
                crate::error!(
                    "{name} {} after the node was Ready",
                    supervisor::describe(status)
                );
                let _ = node.source.report(Outcome::Failed, "runtime exited");
                let err = Error::new(ErrorKind::Runtime(format!("{name} exited").into()));
                fail(sup, cfg, "runtime", &err);
            }
            Event::Readable | Event::Timeout => {
                if let Some(net) = node.net.as_mut() {
                    net.poll();
                }
                if let (Some(p), Source::Network { session, .. }) = (node.report, &node.source) {
                    if crate::clock::now_ms() >= p.due_ms {
                        node.report = session.retry(p);
                    }
                }
            }
        }
    }
}

/// The one failure policy: say what failed, wait (still reaping and
/// honouring shutdown signals), then reboot or power off.
fn fail(sup: &mut Supervisor, cfg: &Config, name: &str, err: &Error) -> ! {
    let (request, verb) = match cfg.on_error {
        cmdline::OnError::Reboot => (Request::Reboot, "rebooting"),
        cmdline::OnError::Poweroff => (Request::Poweroff, "powering off"),
    };
    crate::error!(
        "boot failed in phase {name}: {err}; {verb} in {} s (ember.on_error)",
        cfg.error_delay_s
    );
    let deadline = crate::clock::now_ms() + u64::from(cfg.error_delay_s) * 1000;
    while crate::clock::now_ms() < deadline {
        let left = deadline.saturating_sub(crate::clock::now_ms()).max(1);
        if let Event::Shutdown(req) = sup.wait(left) {
            power::shutdown(sup, req);
        }
    }
    power::shutdown(sup, request)
}

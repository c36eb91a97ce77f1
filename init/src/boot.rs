//! The boot sequence, one phase per step, each logged with its duration:
//! `phase=<name> status=ok took=<ms>ms`. A newcomer looking for "where does
//! X happen" starts here.

use alloc::string::String;
use alloc::vec::Vec;

use crate::cmdline::{Config, OnError, TestAction};
use crate::supervisor::{Event, Request, Supervisor};
use crate::{clock, console, fsutil, kmod, mounts, network, power, rootfs, Error};

/// Runs one named phase and logs its outcome and duration.
fn phase<T>(
    name: &'static str,
    f: impl FnOnce() -> Result<T, Error>,
) -> Result<T, (&'static str, Error)> {
    let start = clock::now_ms();
    log::info!("phase={name} status=start");
    let result = f();
    let took = clock::now_ms().saturating_sub(start);
    match &result {
        Ok(_) => log::info!("phase={name} status=ok took={took}ms"),
        Err(e) => log::error!("phase={name} status=failed took={took}ms reason={e}"),
    }
    result.map_err(|e| (name, e))
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

    let mut cfg = Config::default();
    let outcome = boot(&mut sup, &mut cfg);
    match outcome {
        Ok(()) => idle(&mut sup),
        Err((name, err)) => fail(&mut sup, &cfg, name, &err),
    }
}

fn boot(sup: &mut Supervisor, cfg: &mut Config) -> Result<(), (&'static str, Error)> {
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

    *cfg = phase("cmdline", read_cmdline)?;
    log::set_max_level(cfg.log_level);

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

    let mut net = phase("dhcp", || network::bring_up(cfg))?;

    if cfg.test == Some(TestAction::Fetch) {
        phase("test-fetch", || test_fetch(cfg, &net))?;
        power::shutdown(sup, Request::Poweroff);
    }

    let Some(url) = cfg.attest_url.clone() else {
        return Err((
            "attest",
            Error::Cmdline(String::from(
                "ember.attest_url=https://… is required to boot",
            )),
        ));
    };
    log::info!("boot server: {url}");
    let _ = &mut net;
    Err((
        "attest",
        Error::Cmdline(String::from("attestation is not available in this build")),
    ))
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
    let mut hex = String::new();
    for b in hasher.finalize() {
        let _ = core::fmt::Write::write_fmt(&mut hex, format_args!("{b:02x}"));
    }
    log::info!(
        "test-fetch: {url} status {} body {} bytes sha256 {hex}",
        response.status,
        response.body_len
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

/// Boot finished its work: supervise until asked to shut down.
fn idle(sup: &mut Supervisor) -> ! {
    loop {
        if let Event::Shutdown(req) = sup.wait(60_000) {
            power::shutdown(sup, req);
        }
    }
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

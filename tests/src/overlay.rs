//! Node overlay directories whose runtime is the stand-in (ember-standin as
//! /usr/local/bin/rke2), assembled by scripts/build-standin-overlay so that
//! tests and people build the same tree; and the stand-in run on the host
//! against such a tree (`--root DIR`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::kubeapi::{KubeApi, TLS_NAME};
use crate::process::ChildGuard;
use crate::{profile_dir, workspace_root, ScratchDir};

/// The stand-in binary of this test's profile, (re)built on first use:
/// cargo is a no-op when it is fresh, and a stale binary from an older
/// checkout would test old code (e.g. after `cargo test -p ember-tests`).
/// `EMBER_STANDIN` overrides the path.
pub fn standin_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("EMBER_STANDIN") {
            return PathBuf::from(p);
        }
        let dir = profile_dir();
        let bin = dir.join("ember-standin");
        {
            let target = dir
                .parent()
                .expect("profile dir has a parent")
                .to_path_buf();
            let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
            cmd.args(["build", "-p", "ember-standin"])
                .current_dir(workspace_root())
                .env("CARGO_TARGET_DIR", &target);
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("run cargo build -p ember-standin");
            assert!(status.success(), "cargo build -p ember-standin failed");
        }
        assert!(bin.exists(), "{} missing after building it", bin.display());
        bin
    })
    .clone()
}

/// The settings of one overlay; `build` runs the script.
#[derive(Debug, Clone)]
pub struct OverlayBuilder {
    node_name: String,
    role: &'static str,
    behavior: &'static str,
    probe: &'static str,
    api: Option<(String, String, PathBuf, PathBuf)>,
    healthz: Option<SocketAddr>,
    container: bool,
    extra: Vec<(String, String)>,
}

impl OverlayBuilder {
    pub fn new(node_name: &str) -> Self {
        OverlayBuilder {
            node_name: node_name.to_string(),
            role: "agent",
            behavior: "ready",
            probe: "api",
            api: None,
            healthz: None,
            container: false,
            extra: Vec::new(),
        }
    }

    /// The API at `url` (verified as `tls_name`) with this CA and token file.
    pub fn api(mut self, url: &str, tls_name: &str, ca_pem: &Path, token_file: &Path) -> Self {
        self.api = Some((
            url.into(),
            tls_name.into(),
            ca_pem.into(),
            token_file.into(),
        ));
        self
    }

    /// The test double, as the host reaches it (`guest: false`,
    /// https://127.0.0.1:PORT) or as a QEMU guest does (https://10.0.2.2:PORT).
    /// The TLS name is the certificate's DNS name either way.
    pub fn kube_api(self, api: &KubeApi, guest: bool) -> Self {
        let url = if guest { api.guest_url() } else { api.url() };
        self.api(&url, TLS_NAME, &api.ca_pem_path(), &api.token_path())
    }

    /// "agent" (default) or "server": the rke2 role in the runtime command.
    pub fn role(mut self, role: &'static str) -> Self {
        self.role = role;
        self
    }

    /// "ready" (default), "fail", "hang" or "exit".
    pub fn behavior(mut self, behavior: &'static str) -> Self {
        self.behavior = behavior;
        self
    }

    /// The init's readiness probe: "api" (default) or "healthz".
    pub fn probe(mut self, probe: &'static str) -> Self {
        self.probe = probe;
        self
    }

    /// kubelet's healthz address (default 127.0.0.1:10248); tests on the
    /// host use a free port.
    pub fn healthz(mut self, addr: SocketAddr) -> Self {
        self.healthz = Some(addr);
        self
    }

    /// Carry runc, its libraries and the busybox bundle.
    pub fn container(mut self, on: bool) -> Self {
        self.container = on;
        self
    }

    /// Any node.conf key (overrides the script's value).
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.extra.push((key.into(), value.into()));
        self
    }

    pub fn build(self) -> std::io::Result<Overlay> {
        let dir = ScratchDir::new("overlay");
        let mut cmd = Command::new("bash");
        cmd.arg(workspace_root().join("scripts/build-standin-overlay"))
            .arg(dir.path())
            .arg("--standin")
            .arg(standin_bin())
            .args(["--node-name", &self.node_name])
            .args([
                "--role",
                self.role,
                "--behavior",
                self.behavior,
                "--probe",
                self.probe,
            ]);
        if let Some((url, name, ca, token)) = &self.api {
            cmd.args(["--api-server", url, "--api-tls-name", name])
                .arg("--ca")
                .arg(ca)
                .arg("--token")
                .arg(token);
        }
        if let Some(addr) = self.healthz {
            cmd.args(["--healthz", &addr.to_string()]);
        }
        if self.container {
            cmd.arg("--container");
        }
        for (k, v) in &self.extra {
            cmd.args(["--set", &format!("{k}={v}")]);
        }
        let out = cmd.stdin(Stdio::null()).output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "build-standin-overlay failed: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(Overlay {
            dir,
            node_name: self.node_name,
            role: self.role,
        })
    }
}

/// An assembled overlay directory, removed on drop.
pub struct Overlay {
    dir: ScratchDir,
    node_name: String,
    role: &'static str,
}

impl Overlay {
    /// The directory that becomes the node's `/`.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    pub fn node_conf(&self) -> PathBuf {
        self.path().join("etc/ember/node.conf")
    }

    /// /usr/local/bin/rke2 inside the overlay (the stand-in).
    pub fn runtime(&self) -> PathBuf {
        self.path().join("usr/local/bin/rke2")
    }

    /// Runs the overlay's runtime on the host as the init would start it
    /// (`rke2 agent|server`), with node.conf paths resolved inside the
    /// overlay (`--root`). Its stdout and stderr go to one log file, as
    /// they go to one console on the node.
    pub fn start_on_host(&self) -> std::io::Result<HostStandin> {
        let logs = ScratchDir::new("standin-log");
        let log = logs.path().join("console.log");
        let file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(self.runtime());
        cmd.arg(self.role)
            .arg("--root")
            .arg(self.path())
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = ChildGuard::spawn("ember-standin", &mut cmd)?;
        Ok(HostStandin {
            child,
            log,
            _logs: logs,
        })
    }
}

/// The stand-in running on the host; killed by PID on drop.
pub struct HostStandin {
    child: ChildGuard,
    log: PathBuf,
    _logs: ScratchDir,
}

impl HostStandin {
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Everything it printed so far, one entry per line.
    pub fn output(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits for a line containing `needle`; returns it.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.output().into_iter().find(|l| l.contains(needle)) {
                return Some(l);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.child.wait_timeout(timeout)
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait()
    }
}

//! One real container, run the way containerd's shim runs it: `runc run`
//! on an OCI bundle, output relayed line by line, exit status reported.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::conf::ContainerConf;
use crate::error::Error;
use crate::root::Root;

/// How the container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: Vec<String>,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// `runc://VERSION` as kubelet reports its runtime, or None if runc does
/// not answer `--version`.
pub fn runtime_version(conf: &ContainerConf, root: &Root) -> Option<String> {
    let out = Command::new(root.resolve(&conf.runc))
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.lines().next()?.strip_prefix("runc version ")?.trim();
    Some(format!("runc://{version}"))
}

fn relay<R: Read + Send + 'static>(
    from: R,
    label: &'static str,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            println!("standin: container {label}: {line}");
            lines.push(line);
        }
        lines
    })
}

/// Runs the bundle to completion (bounded by `conf.timeout`).
pub fn run(conf: &ContainerConf, root: &Root, id: &str) -> Result<Outcome, Error> {
    let runc = root.resolve(&conf.runc);
    let state = root.resolve(&conf.state_root);
    let bundle = root.resolve(&conf.bundle);
    std::fs::create_dir_all(&state).map_err(|source| Error::RuncState {
        path: state.clone(),
        source,
    })?;
    let mut child = Command::new(&runc)
        .arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::RuncSpawn {
            runc: runc.clone(),
            source,
        })?;
    let out = child.stdout.take().map(|o| relay(o, "stdout"));
    let err = child.stderr.take().map(|e| relay(e, "stderr"));
    let deadline = Instant::now() + conf.timeout;
    let status = loop {
        match child.try_wait().map_err(Error::RuncWait)? {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                // runc forwards SIGKILL to nothing; kill the container by id.
                let _ = Command::new(&runc)
                    .arg("--root")
                    .arg(&state)
                    .args(["kill", id, "KILL"])
                    .stdin(Stdio::null())
                    .status();
                let _ = child.kill();
                let _ = child.wait();
                let _ = Command::new(&runc)
                    .arg("--root")
                    .arg(&state)
                    .args(["delete", "--force", id])
                    .stdin(Stdio::null())
                    .status();
                return Err(Error::RuncTimeout {
                    seconds: conf.timeout.as_secs(),
                });
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let stdout = out.and_then(|h| h.join().ok()).unwrap_or_default();
    if let Some(h) = err {
        let _ = h.join();
    }
    Ok(Outcome { status, stdout })
}

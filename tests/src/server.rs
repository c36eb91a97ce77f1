//! `ember serve` as a test peer: a fresh state folder, a free loopback port,
//! readiness from the server's "listening" line, stopped by PID on drop.
//! Helpers run the admin commands (`enroll`, `overlay add|assign`, `policy
//! set`, `nodes`) and `ember attest` against this server's state and CA.

use crate::process::{wait_until, ChildGuard};
use crate::swtpm::Swtpm;
use crate::{ember_bin, ScratchDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// NV index of the ECC P-384 EK certificate `swtpm_setup` writes: the EK
/// `ember attest` (and the node) use when the TPM has it.
pub const EK_CERT_ECC_P384_NV: &str = "0x01c00016";

pub struct EmberServer {
    child: ChildGuard,
    dir: ScratchDir,
    /// The state folder (the scratch folder's `state`, or one replicas share).
    state: PathBuf,
    /// `--database` (PostgreSQL), passed to the admin commands too.
    database: Option<String>,
    addr: String,
    http_addr: Option<String>,
    metrics_addr: Option<String>,
    /// The console's address (`--console-listen`).
    console_addr: Option<String>,
    /// The server's own PostgreSQL when the tests run on that backend
    /// (`EMBER_TEST_DATABASE=postgres`); dropped after the server.
    _postgres: Option<crate::postgres::Postgres>,
}

/// Whether single-server tests run on PostgreSQL instead of SQLite:
/// `EMBER_TEST_DATABASE=postgres` (scripts/test runs the server tests on
/// both backends).
fn postgres_backend() -> bool {
    std::env::var("EMBER_TEST_DATABASE").is_ok_and(|v| v == "postgres")
}

/// The outcome of an `ember` command.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics with the command's output unless it succeeded.
    pub fn expect_ok(self, what: &str) -> Run {
        assert!(self.ok, "{what} failed:\n{}{}", self.stdout, self.stderr);
        self
    }
}

impl EmberServer {
    /// Starts `ember serve` with a fresh state folder on 127.0.0.1.
    pub fn start() -> EmberServer {
        Self::start_with(&[])
    }

    /// Like [`EmberServer::start`] with extra `ember serve` arguments
    /// (e.g. `--manufacturer-ca FILE`, `--credential-ttl 1s`, `--name HOST`).
    /// Test servers run in the lab mode (`--lab-record-first-boot`): a
    /// node without a PCR policy has its first boot recorded, which the
    /// protocol tests assume; a policy a test sets is judged strictly.
    pub fn start_with(extra: &[&str]) -> EmberServer {
        Self::start_bin(&ember_bin(), extra)
    }

    /// `ember serve` as in production: no lab mode, so a node without a
    /// PCR policy is refused.
    pub fn start_strict(extra: &[&str]) -> EmberServer {
        Self::launch_mode(&[], &ember_bin(), extra, None, false)
    }

    /// Like [`EmberServer::start_with`], the server started through
    /// `wrapper` (a command that execs the rest, keeping the PID):
    /// `["prlimit", "--nofile=256:256", "--"]` to limit its open files.
    pub fn start_wrapped(wrapper: &[&str], extra: &[&str]) -> EmberServer {
        Self::launch(wrapper, &ember_bin(), extra, None)
    }

    /// Starts the `test-hooks` build of `ember serve` in its test mode
    /// (`--test-replayable-sessions`: recorded transcripts replay).
    pub fn start_replayable(extra: &[&str]) -> EmberServer {
        let mut args = vec!["--test-replayable-sessions"];
        args.extend_from_slice(extra);
        Self::start_bin(&crate::ember_test_hooks_bin(), &args)
    }

    fn start_bin(bin: &Path, extra: &[&str]) -> EmberServer {
        Self::launch(&[], bin, extra, None)
    }

    /// A replica: `ember serve` on the PostgreSQL at `database`, with the
    /// state folder (TLS identity, overlay blobs) that every replica shares.
    /// `replayable`: the `test-hooks` build in its test mode (load tests).
    pub fn start_replica(
        database: &str,
        state: &Path,
        replayable: bool,
        extra: &[&str],
    ) -> EmberServer {
        let mut args = vec!["--database", database];
        let bin = if replayable {
            args.push("--test-replayable-sessions");
            crate::ember_test_hooks_bin()
        } else {
            ember_bin()
        };
        args.extend_from_slice(extra);
        Self::launch(&[], &bin, &args, Some((state, database)))
    }

    fn launch(
        wrapper: &[&str],
        bin: &Path,
        extra: &[&str],
        shared: Option<(&Path, &str)>,
    ) -> EmberServer {
        Self::launch_mode(wrapper, bin, extra, shared, true)
    }

    fn launch_mode(
        wrapper: &[&str],
        bin: &Path,
        extra: &[&str],
        shared: Option<(&Path, &str)>,
        lab: bool,
    ) -> EmberServer {
        let dir = ScratchDir::new("serve");
        // On the PostgreSQL backend, a server of its own gets a database of
        // its own (replicas are given theirs).
        let own_postgres =
            (shared.is_none() && postgres_backend()).then(crate::postgres::Postgres::start);
        let own_url = own_postgres.as_ref().map(|pg| pg.url());
        let database = shared.map(|(_, db)| db.to_string()).or(own_url);
        let state = match shared {
            Some((state, _)) => state.to_path_buf(),
            None => dir.path().join("state"),
        };
        let out = dir.path().join("serve.out");
        let err = dir.path().join("serve.log");
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("serve")
            .arg("--state")
            .arg(&state)
            .args(["--listen", "127.0.0.1:0", "--threads", "2"])
            .args(lab.then_some("--lab-record-first-boot"))
            .args(
                own_postgres
                    .is_some()
                    .then(|| ["--database", database.as_deref().unwrap_or_default()])
                    .into_iter()
                    .flatten(),
            )
            .args(extra)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("create serve.out"))
            .stderr(std::fs::File::create(&err).expect("create serve.log"));
        let mut child = ChildGuard::spawn("ember serve", &mut cmd).expect("spawn ember serve");
        let mut addr = None;
        let mut http_addr = None;
        let mut metrics_addr = None;
        let mut console_addr = None;
        let wants_console = extra.contains(&"--console-listen");
        let wants_http = extra.contains(&"--http-listen");
        let wants_metrics = extra.contains(&"--metrics-listen");
        let up = wait_until(Duration::from_secs(30), || {
            if child.try_wait().is_some() {
                return true;
            }
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            let line = |prefix: &str| {
                text.lines()
                    .map(as_text_line)
                    .find_map(|l| l.strip_prefix(prefix).map(str::to_string))
            };
            addr = line("ember-serve: listening on https://");
            http_addr = line("ember-serve: boot artifacts on http://");
            metrics_addr = line("ember-serve: metrics on http://")
                .map(|a| a.trim_end_matches("/metrics").to_string());
            console_addr = line("ember-serve: console on https://")
                .and_then(|l| l.split_whitespace().next().map(str::to_string));
            addr.is_some()
                && (console_addr.is_some() || !wants_console)
                && (http_addr.is_some() || !wants_http)
                && (metrics_addr.is_some() || !wants_metrics)
        });
        let log = std::fs::read_to_string(&err).unwrap_or_default();
        assert!(
            up && child.try_wait().is_none(),
            "ember serve did not start:\n{log}"
        );
        EmberServer {
            child,
            dir,
            state,
            database,
            addr: addr.expect("listening line"),
            http_addr,
            metrics_addr,
            console_addr,
            _postgres: own_postgres,
        }
    }

    /// The `--database` URL the server runs on, when it is PostgreSQL.
    pub fn database(&self) -> Option<&str> {
        self.database.as_deref()
    }

    /// The plain-HTTP boot artifact listener's port (`--http-listen`).
    pub fn http_port(&self) -> Option<u16> {
        self.http_addr
            .as_deref()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
    }

    /// The metrics listener's `127.0.0.1:PORT` (`--metrics-listen`).
    /// The console's `HOST:PORT`, when started with `--console-listen`.
    pub fn console_addr(&self) -> Option<&str> {
        self.console_addr.as_deref()
    }

    pub fn metrics_addr(&self) -> Option<&str> {
        self.metrics_addr.as_deref()
    }

    /// A TLS connection to the server, handshake done, trusting its CA: a
    /// raw client for tests that misbehave below the protocol.
    pub fn tls_connect(
        &self,
    ) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
        self.tls_connect_with_window(None)
    }

    /// [`EmberServer::tls_connect`] with the socket's receive buffer set
    /// before connecting (a small TCP window: a slow reader).
    pub fn tls_connect_with_window(
        &self,
        rcvbuf: Option<usize>,
    ) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
        use std::sync::{Arc, OnceLock};
        /// One client configuration per CA file (a handshake flood reuses it).
        type Configs = std::sync::Mutex<Vec<(PathBuf, Arc<rustls::ClientConfig>)>>;
        static CONFIGS: OnceLock<Configs> = OnceLock::new();
        let ca = self.ca_path();
        let config = {
            let mut cache = CONFIGS.get_or_init(Default::default).lock().unwrap();
            match cache.iter().find(|(p, _)| *p == ca) {
                Some((_, c)) => c.clone(),
                None => {
                    let mut roots = rustls::RootCertStore::empty();
                    let pem = std::fs::read(&ca)?;
                    for c in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
                        roots
                            .add(c.map_err(std::io::Error::other)?)
                            .map_err(std::io::Error::other)?;
                    }
                    let provider = Arc::new(rustls::crypto::ring::default_provider());
                    let c = Arc::new(
                        rustls::ClientConfig::builder_with_provider(provider)
                            .with_safe_default_protocol_versions()
                            .map_err(std::io::Error::other)?
                            .with_root_certificates(roots)
                            .with_no_client_auth(),
                    );
                    cache.push((ca.clone(), c.clone()));
                    c
                }
            }
        };
        let tcp = match rcvbuf {
            None => std::net::TcpStream::connect(&self.addr)?,
            Some(size) => {
                use rustix::net::{AddressFamily, SocketType};
                let addr: std::net::SocketAddr =
                    self.addr.parse().map_err(std::io::Error::other)?;
                let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None)?;
                rustix::net::sockopt::set_socket_recv_buffer_size(&fd, size)?;
                rustix::net::connect(&fd, &addr)?;
                std::net::TcpStream::from(fd)
            }
        };
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
        let name =
            rustls::pki_types::ServerName::try_from("localhost").map_err(std::io::Error::other)?;
        let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(stream)
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// A `GET /metrics` scrape of the metrics listener (`--metrics-listen`).
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let addr = self.metrics_addr().expect("started with --metrics-listen");
        let mut s = std::net::TcpStream::connect(addr).expect("connect to the metrics listener");
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
            .expect("send the scrape");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read the scrape");
        text
    }

    /// The server's state folder.
    pub fn state(&self) -> PathBuf {
        self.state.clone()
    }

    /// Another process holding an exclusive transaction on the server's
    /// SQLite database until the guard drops (stopped by PID): the
    /// server's writes wait out their busy timeout (10 s) and it answers
    /// 503 `database-unavailable`, as a real outage of its database would.
    pub fn lock_database(&self) -> crate::process::ChildGuard {
        let db = self.state().join("ember.db");
        let mut lock = crate::process::ChildGuard::spawn(
            "sqlite lock",
            Command::new("python3")
                .arg("-c")
                .arg(
                    "import sqlite3, sys, time\n\
                     c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n\
                     c.execute('BEGIN EXCLUSIVE')\n\
                     open(sys.argv[2], 'w').close()\n\
                     time.sleep(3600)\n",
                )
                .arg(&db)
                .arg(self.state().join("locked")),
        )
        .expect("run python3 (sqlite3)");
        let locked = crate::process::wait_until(std::time::Duration::from_secs(30), || {
            self.state().join("locked").exists()
        });
        assert!(
            locked || lock.try_wait().is_none(),
            "the database lock did not start"
        );
        assert!(locked, "the database lock was not taken within 30 s");
        let _ = std::fs::remove_file(self.state().join("locked"));
        lock
    }

    /// The CA certificate to bundle into initrds / pass to `ember attest --ca`.
    pub fn ca_path(&self) -> PathBuf {
        self.state().join("tls/ca.pem")
    }

    /// The manifest public key to bundle into initrds as
    /// /etc/ember/manifest.pub / pass to `ember attest --manifest-key`.
    pub fn manifest_pub_path(&self) -> PathBuf {
        self.state().join("manifest.pub")
    }

    /// The manifest public key, parsed as the node parses it.
    pub fn manifest_key(&self) -> ember_proto::manifest::PublicKey {
        let pem = std::fs::read(self.manifest_pub_path()).expect("read manifest.pub");
        ember_proto::manifest::PublicKey::from_pem(&pem).expect("parse manifest.pub")
    }

    /// The sealed overlay blob named `blob_sha256` in the state folder.
    pub fn sealed_blob(&self, blob_sha256: &[u8; 32]) -> PathBuf {
        self.state()
            .join("sealed")
            .join(ember_fs::hex::hex(blob_sha256))
    }

    /// A scratch folder that lives as long as the server.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Stops the server as systemd does (SIGTERM, by PID) and waits up to
    /// `timeout` for it to exit; returns its exit status and how long the
    /// stop took, or None if it was still running (the guard then kills it
    /// on drop).
    pub fn terminate(&mut self, timeout: Duration) -> Option<(std::process::ExitStatus, Duration)> {
        let started = std::time::Instant::now();
        let pid = rustix::process::Pid::from_raw(self.child.pid() as i32)?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).ok()?;
        let status = self.child.wait_timeout(timeout)?;
        Some((status, started.elapsed()))
    }

    /// Everything the server logged so far (one line per request).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// Everything the server announced on stdout so far (where it listens,
    /// what to bundle into initrds).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.out")).unwrap_or_default()
    }

    /// Waits until the log has a line containing `needle` (requests are
    /// logged as they finish, so a client may see the answer first).
    pub fn wait_log(&self, needle: &str) -> bool {
        wait_until(Duration::from_secs(5), || self.log().contains(needle))
    }

    /// Runs `ember ARGS --state STATE [--database URL]`.
    pub fn ember(&self, args: &[&str]) -> Run {
        // `ember artifact` keeps boot artifacts as files in the state
        // folder only: it has no database to be told about.
        let database = self
            .database
            .as_deref()
            .filter(|_| args.first() != Some(&"artifact"));
        let out = Command::new(ember_bin())
            .args(args)
            .arg("--state")
            .arg(self.state())
            .args(database.iter().flat_map(|d| ["--database", *d]))
            .stdin(Stdio::null())
            .output()
            .expect("run ember");
        Run::from(out)
    }

    /// Enrolls a TPM from an EK certificate file.
    pub fn enroll_cert(&self, name: &str, group: &str, cert: &Path) -> Run {
        self.ember(&[
            "enroll",
            "--name",
            name,
            "--group",
            group,
            "--ek-cert",
            &cert.display().to_string(),
        ])
    }

    /// Enrolls a running swtpm by the EK certificate in its NV (the EK the
    /// node-side client uses).
    pub fn enroll_swtpm(&self, name: &str, group: &str, tpm: &Swtpm) -> Run {
        let cert = self.scratch().join(format!("ek-{name}.der"));
        let der = tpm
            .tpm2_run("tpm2_nvread", &[EK_CERT_ECC_P384_NV])
            .expect("read the EK certificate from swtpm");
        std::fs::write(&cert, der).expect("write EK certificate");
        self.enroll_cert(name, group, &cert)
    }

    /// A node `name` in `group` on a freshly manufactured swtpm, whose
    /// state folder is returned (start a swtpm on it per boot), and an
    /// overlay for `group` holding etc/token ("cluster-secret\n"), made
    /// under `scratch`.
    pub fn enroll_node_with_token(&self, name: &str, group: &str, scratch: &Path) -> ScratchDir {
        let tpm_dir = ScratchDir::new("node-tpm");
        Swtpm::setup_cached(tpm_dir.path()).expect("manufacture swtpm");
        {
            let tpm = Swtpm::start_tcp(tpm_dir.path()).expect("start swtpm");
            self.enroll_swtpm(name, group, &tpm).expect_ok("enroll");
        }
        let src = scratch.join("overlay-src/etc");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("token"), "cluster-secret\n").unwrap();
        self.add_overlay(
            &scratch.join("overlay-src"),
            Some(&format!("group:{group}")),
        );
        tpm_dir
    }

    /// Adds an overlay (directory, tar or tar.gz), assigned to `target`
    /// (`group:G`, `node:N` or none); returns its version id.
    pub fn add_overlay(&self, src: &Path, target: Option<&str>) -> u64 {
        let src = src.display().to_string();
        let mut args = vec!["overlay", "add", src.as_str()];
        let t;
        if let Some(target) = target {
            t = target.split_once(':').expect("target is group:G or node:N");
            args.push(if t.0 == "group" { "--group" } else { "--node" });
            args.push(t.1);
        }
        let run = self.ember(&args).expect_ok("ember overlay add");
        run.stdout
            .strip_prefix("overlay ")
            .and_then(|s| s.split(':').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no version in {:?}", run.stdout))
    }

    /// Assigns overlay `version` to `target` (`group:G` or `node:N`).
    pub fn assign(&self, version: u64, target: &str) -> Run {
        let (kind, name) = target.split_once(':').expect("target is group:G or node:N");
        let flag = if kind == "group" { "--group" } else { "--node" };
        self.ember(&["overlay", "assign", &version.to_string(), flag, name])
    }

    /// `ember policy set ARGS`.
    pub fn set_policy(&self, args: &[&str]) -> Run {
        let mut a = vec!["policy", "set"];
        a.extend_from_slice(args);
        self.ember(&a)
    }

    /// The `ember nodes` table.
    pub fn nodes(&self) -> String {
        self.ember(&["nodes"]).expect_ok("ember nodes").stdout
    }

    /// Runs `ember attest` against this server with `tpm` (`swtpm:HOST:PORT`),
    /// trusting this server's manifest key unless `extra` names another.
    pub fn attest(&self, tpm: &str, extra: &[&str]) -> Run {
        self.attest_via(&self.url(), tpm, extra)
    }

    /// [`EmberServer::attest`] through `url` (a proxy in front of this
    /// server), trusting this server's CA.
    pub fn attest_via(&self, url: &str, tpm: &str, extra: &[&str]) -> Run {
        let mut cmd = Command::new(ember_bin());
        cmd.arg("attest")
            .args(["--tpm", tpm, "--url", url])
            .arg("--ca")
            .arg(self.ca_path());
        if !extra.contains(&"--manifest-key") {
            cmd.arg("--manifest-key").arg(self.manifest_pub_path());
        }
        let out = cmd
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .expect("run ember attest");
        Run::from(out)
    }
}

/// A line of `ember serve`'s output as its text format writes it: a JSON
/// line (`--log-format json`) of the server library becomes
/// `ember-serve: MESSAGE`; any other line is returned as it is.
fn as_text_line(line: &str) -> String {
    let Ok(serde_json::Value::Object(o)) = serde_json::from_str(line) else {
        return line.to_string();
    };
    match (o.get("target"), o.get("message")) {
        (Some(serde_json::Value::String(t)), Some(serde_json::Value::String(m)))
            if t.starts_with("ember_server") =>
        {
            format!("ember-serve: {m}")
        }
        _ => line.to_string(),
    }
}

//! swtpm as a test peer: manufactured state (EK certificates from swtpm's
//! local CA), a TCP instance for host-side conformance tests, and a
//! Unix-socket instance for QEMU's `-tpmdev emulator`.

use crate::process::{free_port_pair, wait_until, ChildGuard};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// swtpm's local CA, which signs the EK certificates `swtpm_setup` writes.
pub const LOCALCA_DIR: &str = "/var/lib/swtpm-localca";
pub const LOCALCA_ISSUER: &str = "/var/lib/swtpm-localca/issuercert.pem";
pub const LOCALCA_ROOT: &str = "/var/lib/swtpm-localca/swtpm-localca-rootca-cert.pem";

/// A running swtpm on loopback; killed by PID when dropped.
pub struct Swtpm {
    child: ChildGuard,
    port: u16,
    state_dir: PathBuf,
}

fn run(cmd: &mut Command, what: &str) -> std::io::Result<()> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{what} failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

fn read_files(dir: &Path) -> std::io::Result<Vec<(std::ffi::OsString, Vec<u8>)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_file() {
            out.push((e.file_name(), std::fs::read(e.path())?));
        }
    }
    Ok(out)
}

impl Swtpm {
    /// Manufactures a TPM 2.0 in `state_dir`: EK certificates (RSA at
    /// 0x01c00002, ECC P-384 at 0x01c00016) and a platform certificate,
    /// signed by swtpm's local CA (created on first use).
    pub fn setup(state_dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(state_dir)?;
        run(
            Command::new("swtpm_setup")
                .args(["--tpm2", "--tpmstate"])
                .arg(state_dir)
                .args(["--create-ek-cert", "--create-platform-cert", "--overwrite"]),
            "swtpm_setup",
        )
    }

    /// Like [`Swtpm::setup`], but manufactures once per test process and
    /// writes a copy of that state (swtpm_setup takes seconds; every copy has
    /// the same EK, which tests that compare against certificates do not
    /// mind). The manufactured state is kept in memory, not on disk.
    pub fn setup_cached(state_dir: &Path) -> std::io::Result<()> {
        type Files = Vec<(std::ffi::OsString, Vec<u8>)>;
        static TEMPLATE: OnceLock<Result<Files, String>> = OnceLock::new();
        let template = TEMPLATE.get_or_init(|| {
            let dir =
                std::env::temp_dir().join(format!("ember-swtpm-template-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let files = Swtpm::setup(&dir).and_then(|_| read_files(&dir));
            let _ = std::fs::remove_dir_all(&dir);
            files.map_err(|e| e.to_string())
        });
        let files = template
            .as_ref()
            .map_err(|e| std::io::Error::other(e.clone()))?;
        std::fs::create_dir_all(state_dir)?;
        for (name, bytes) in files {
            std::fs::write(state_dir.join(name), bytes)?;
        }
        Ok(())
    }

    /// Starts swtpm on a free loopback port pair (data P, control P+1),
    /// already started (TPM2_Startup(CLEAR) done by swtpm), and waits until
    /// the data port accepts connections.
    pub fn start_tcp(state_dir: &Path) -> std::io::Result<Swtpm> {
        for _ in 0..5 {
            let port = free_port_pair();
            let mut cmd = Command::new("swtpm");
            cmd.args(["socket", "--tpm2", "--tpmstate"])
                .arg(format!("dir={}", state_dir.display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .args(["--flags", "not-need-init,startup-clear"])
                .arg("--log")
                .arg(format!("file={}", state_dir.join("swtpm.log").display()))
                .stdin(Stdio::null());
            let mut child = ChildGuard::spawn("swtpm", &mut cmd)?;
            // Both channels: tpm2-tools' swtpm TCTI uses the control port too.
            let up = wait_until(Duration::from_secs(10), || {
                child.try_wait().is_some()
                    || (TcpStream::connect(("127.0.0.1", port)).is_ok()
                        && TcpStream::connect(("127.0.0.1", port + 1)).is_ok())
            });
            if up && child.try_wait().is_none() {
                return Ok(Swtpm {
                    child,
                    port,
                    state_dir: state_dir.to_path_buf(),
                });
            }
            // Lost the port race to another process: try another pair.
        }
        Err(std::io::Error::other(
            "swtpm did not start on any port pair",
        ))
    }

    /// Starts swtpm with its data channel on a Unix socket (`unixio`) and its
    /// control channel next to it, started like [`Swtpm::start_tcp`].
    /// Connect with `SocketTransport::connect_unix(data_sock)`.
    pub fn start_unix(state_dir: &Path, data_sock: &Path) -> std::io::Result<ChildGuard> {
        let ctrl = data_sock.with_extension("ctrl");
        let _ = std::fs::remove_file(data_sock);
        let _ = std::fs::remove_file(&ctrl);
        let mut cmd = Command::new("swtpm");
        cmd.args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state_dir.display()))
            .arg("--server")
            .arg(format!("type=unixio,path={}", data_sock.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", ctrl.display()))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdin(Stdio::null());
        let child = ChildGuard::spawn("swtpm", &mut cmd)?;
        wait_for_listener(child, data_sock, "data")
    }

    /// Starts swtpm for QEMU (`-chardev socket,id=chrtpm,path=SOCK -tpmdev
    /// emulator,id=tpm0,chardev=chrtpm -device tpm-tis,tpmdev=tpm0`) and waits
    /// for the control socket. swtpm exits when QEMU disconnects; start a
    /// fresh one per boot (the state stays in `state_dir`).
    pub fn start_for_qemu(state_dir: &Path, sock_path: &Path) -> std::io::Result<ChildGuard> {
        let _ = std::fs::remove_file(sock_path);
        let mut cmd = Command::new("swtpm");
        cmd.args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state_dir.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", sock_path.display()))
            .arg("--log")
            .arg(format!("file={}", state_dir.join("swtpm.log").display()))
            .stdin(Stdio::null());
        let child = ChildGuard::spawn("swtpm", &mut cmd)?;
        wait_for_listener(child, sock_path, "control")
    }

    /// The data port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, for `SocketTransport::connect_tcp`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `swtpm:127.0.0.1:PORT`, the `ember tpm --tpm` form.
    pub fn spec(&self) -> String {
        format!("swtpm:127.0.0.1:{}", self.port)
    }

    /// The TCTI string tpm2-tools take with `-T`.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// `ember tpm ARGS --tpm <this swtpm>` (no other connection may be
    /// open: swtpm serves one at a time); (success, stdout + stderr).
    pub fn ember_tpm(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(crate::ember_bin())
            .arg("tpm")
            .args(args)
            .args(["--tpm", &self.spec()])
            .output()
            .expect("run ember");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// A tpm2-tools command pointed at this swtpm.
    pub fn tpm2(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.env("TPM2TOOLS_TCTI", self.tcti()).stdin(Stdio::null());
        c
    }

    /// Runs a tpm2-tools command, returning stdout or an error with stderr.
    pub fn tpm2_run(&self, tool: &str, args: &[&str]) -> std::io::Result<Vec<u8>> {
        let out = self.tpm2(tool).args(args).output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "{tool} {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(out.stdout)
    }
}

/// Waits until swtpm listens on `sock`. The socket file appears at bind(),
/// before listen(): a client connecting in between is refused (seen in CI),
/// so readiness is the listening flag in /proc/net/unix. Probing by
/// connecting is not an option for the control socket, whose single
/// client is QEMU.
fn wait_for_listener(
    mut child: ChildGuard,
    sock: &Path,
    what: &str,
) -> std::io::Result<ChildGuard> {
    let up = wait_until(Duration::from_secs(10), || {
        child.try_wait().is_some() || unix_socket_listening(sock)
    });
    if !up || child.try_wait().is_some() {
        return Err(std::io::Error::other(format!(
            "swtpm is not listening on its {what} socket {}",
            sock.display()
        )));
    }
    Ok(child)
}

/// True when a listening Unix socket is bound at `path`.
fn unix_socket_listening(path: &Path) -> bool {
    // /proc/net/unix: "Num RefCount Protocol Flags Type St Inode Path";
    // Flags has __SO_ACCEPTCON (0x10000) set on a listening socket.
    const ACCEPTCON: u32 = 0x1_0000;
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    let want = path.as_os_str().to_string_lossy();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 8
            && fields[7] == want
            && u32::from_str_radix(fields[3], 16).is_ok_and(|f| f & ACCEPTCON != 0)
    })
}

/// A manufactured swtpm on TCP in its own scratch directory, for tests that
/// drive the TPM with both Ember's client and tpm2-tools. Field order is
/// drop order: swtpm (stopped by PID), then its state.
pub struct TpmFixture {
    pub swtpm: Swtpm,
    pub dir: crate::ScratchDir,
}

impl TpmFixture {
    pub fn new(tag: &str) -> Self {
        let dir = crate::ScratchDir::new(tag);
        let state = dir.path().join("state");
        Swtpm::setup_cached(&state).expect("manufacture swtpm state");
        let swtpm = Swtpm::start_tcp(&state).expect("start swtpm");
        TpmFixture { swtpm, dir }
    }

    pub fn connect(&self) -> ember_tpm::Tpm<ember_tpm::SocketTransport> {
        ember_tpm::Tpm::new(
            ember_tpm::SocketTransport::connect_tcp(&self.swtpm.addr()).expect("connect to swtpm"),
        )
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// [`TpmFixture::path`] as a tool argument.
    pub fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// Runs a tpm2-tools command against this swtpm; panics with its
    /// output when it fails.
    pub fn tool(&self, tool: &str, args: &[&str]) -> Vec<u8> {
        self.swtpm
            .tpm2_run(tool, args)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Whether a tpm2-tools command succeeds (for commands expected to fail).
    pub fn tool_ok(&self, tool: &str, args: &[&str]) -> bool {
        self.swtpm
            .tpm2(tool)
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Flushes the transient objects tpm2-tools left loaded.
    pub fn flush_tool_objects(&self) {
        self.tool("tpm2_flushcontext", &["-t"]);
    }
}

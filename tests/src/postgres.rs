//! Debian's PostgreSQL 15 as a test peer: a fresh cluster (initdb) in a
//! scratch folder, listening only on a Unix socket in that folder
//! (`listen_addresses=''`), run as the `postgres` user (PostgreSQL refuses
//! root), stopped by PID on drop (fast shutdown, then SIGKILL).

use crate::process::{wait_until, ChildGuard};
use crate::ScratchDir;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub const BIN: &str = "/usr/lib/postgresql/15/bin";

/// The database ember's tests use in the cluster.
const DATABASE: &str = "ember";

pub struct Postgres {
    child: Option<ChildGuard>,
    dir: ScratchDir,
    uid: u32,
    gid: u32,
}

/// uid and gid of the `postgres` account (Debian's package makes it),
/// else `nobody`.
fn unprivileged_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    for name in ["postgres", "nobody"] {
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() > 3 && f[0] == name {
                if let (Ok(u), Ok(g)) = (f[2].parse(), f[3].parse()) {
                    return (u, g);
                }
            }
        }
    }
    panic!("no postgres or nobody account in /etc/passwd");
}

impl Postgres {
    /// Whether the PostgreSQL 15 server binaries are installed.
    pub fn available() -> bool {
        Path::new(BIN).join("postgres").exists()
    }

    /// initdb into a scratch folder, start the server, create the `ember`
    /// database.
    pub fn start() -> Postgres {
        assert!(
            Self::available(),
            "{BIN}/postgres missing: run scripts/install-deps (postgresql-15)"
        );
        let dir = ScratchDir::new("pg");
        let (uid, gid) = unprivileged_user();
        let mut pg = Postgres {
            child: None,
            dir,
            uid,
            gid,
        };
        for sub in [pg.data(), pg.socket_dir()] {
            std::fs::create_dir_all(&sub).unwrap();
            std::os::unix::fs::chown(&sub, Some(uid), Some(gid)).expect("chown to postgres");
        }
        std::os::unix::fs::chown(pg.dir.path(), Some(uid), Some(gid)).expect("chown scratch");
        let out = pg
            .as_postgres(Path::new(BIN).join("initdb"))
            .arg("-D")
            .arg(pg.data())
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.start_server();
        let created = wait_until(Duration::from_secs(30), || {
            Command::new(Path::new(BIN).join("createdb"))
                .arg("-h")
                .arg(pg.socket_dir())
                .args(["-U", "postgres", DATABASE])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(created, "createdb failed:\n{}", pg.log());
        pg
    }

    fn as_postgres(&self, program: PathBuf) -> Command {
        let mut c = Command::new(program);
        c.uid(self.uid)
            .gid(self.gid)
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .stdin(Stdio::null());
        c
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Where the server's Unix socket is (`.s.PGSQL.5432`).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// Starts the server on the existing cluster and waits for its socket.
    pub fn start_server(&mut self) {
        assert!(self.child.is_none(), "PostgreSQL is already running");
        let log = std::fs::File::create(self.dir.path().join("postgres.log")).unwrap();
        std::os::unix::fs::chown(
            self.dir.path().join("postgres.log"),
            Some(self.uid),
            Some(self.gid),
        )
        .unwrap();
        let mut cmd = self.as_postgres(Path::new(BIN).join("postgres"));
        cmd.arg("-D")
            .arg(self.data())
            .arg("-k")
            .arg(self.socket_dir())
            // Only the Unix socket; commits acknowledged before their WAL
            // flush, as SQLite's WAL with synchronous=NORMAL does.
            .args(["-c", "listen_addresses=", "-c", "synchronous_commit=off"])
            .args(["-c", "max_connections=200", "-c", "shared_buffers=64MB"])
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(ChildGuard::spawn("postgres", &mut cmd).expect("spawn postgres"));
        let sock = self.socket_dir().join(".s.PGSQL.5432");
        let up = wait_until(Duration::from_secs(30), || {
            sock.exists() && self.log().contains("ready to accept connections")
        });
        assert!(up, "postgres did not start:\n{}", self.log());
    }

    /// Stops the server (fast shutdown: clients are disconnected) and waits
    /// for it to exit; the cluster stays for [`Postgres::start_server`].
    pub fn stop_server(&mut self) {
        // A paused server (and its backends) must run to shut down.
        self.resume();
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = rustix::process::Pid::from_raw(child.pid() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        }
        child.wait_timeout(Duration::from_secs(20));
        // Dropping the guard kills it if the fast shutdown did not finish.
    }

    /// Black-holes the server: SIGSTOP to the postmaster this fixture
    /// started and to its backends (its children, found by their parent
    /// PID), so connections stay open and connects are queued by the
    /// kernel but nothing answers. [`Postgres::resume`] undoes it.
    pub fn pause(&self) {
        self.signal_all(rustix::process::Signal::STOP);
    }

    /// SIGCONT to what [`Postgres::pause`] stopped.
    pub fn resume(&self) {
        self.signal_all(rustix::process::Signal::CONT);
    }

    fn signal_all(&self, sig: rustix::process::Signal) {
        let Some(main) = self.pid() else {
            return;
        };
        let mut pids = vec![main];
        pids.extend(children_of(main));
        for pid in pids {
            if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(p, sig);
            }
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ChildGuard::pid)
    }

    /// `postgres://postgres@%2F…%2Fsock/ember`: the Unix socket as the host.
    pub fn url(&self) -> String {
        let host = self.socket_dir().display().to_string().replace('/', "%2F");
        format!("postgres://postgres@{host}/{DATABASE}")
    }

    /// Runs one SQL statement with psql; returns its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(Path::new(BIN).join("psql"))
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-U", "postgres", "-d", DATABASE, "-At", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop_server();
    }
}

/// The PIDs whose parent is `parent` (from /proc/PID/stat: the field after
/// the parenthesised command name is the state, then the parent PID).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|st| {
                    let rest = &st[st.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

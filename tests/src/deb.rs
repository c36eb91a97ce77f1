//! The Debian package as a test peer: `dpkg -i` of the .deb that
//! scripts/build-deb wrote under out/deb/, a service unit read back from the
//! installed unit file, and its ExecStart started as the unit's user.
//!
//! systemd is not PID 1 on the test machines (containers), so [`Unit`] does
//! what the service manager would before it execs ExecStart: it creates the
//! StateDirectory owned by User=, reads Environment= and EnvironmentFile=,
//! expands `$VAR` (split into words) and `${VAR}` (one word) in the command
//! line, and starts it with the unit's user, groups, umask, open-files limit,
//! no new privileges and no capabilities. The rest of the sandbox (mount,
//! system-call and address-family restrictions) needs systemd itself; the
//! unit's settings are checked by `systemd-analyze` instead.
//!
//! Every guard undoes what it did when dropped: the service is stopped by
//! PID, the state folder it made is removed, the package is purged and the
//! system user it created is deleted, leaving the machine as it was.

use crate::process::{wait_until, ChildGuard};
use crate::{workspace_root, ScratchDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The package the .deb installs (`[package.metadata.deb] name`).
pub const PACKAGE: &str = "ember";

/// The .deb scripts/build-deb made (the only one in out/deb/).
pub fn built_deb() -> PathBuf {
    let dir = workspace_root().join("out/deb");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "deb"))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        debs.len(),
        1,
        "expected one .deb in {}: run `bash scripts/build-deb` first",
        dir.display()
    );
    debs.remove(0)
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

fn is_installed(package: &str) -> bool {
    let out = run(Command::new("dpkg-query").args(["-W", "-f", "${Status}", package]));
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok installed")
}

/// A line of /etc/passwd: the user a unit runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

impl Account {
    /// Looks `name` up in /etc/passwd.
    pub fn lookup(name: &str) -> Option<Account> {
        let text = std::fs::read_to_string("/etc/passwd").ok()?;
        Self::find(&text, name)
    }

    fn find(passwd: &str, name: &str) -> Option<Account> {
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() != 7 || f[0] != name {
                return None;
            }
            Some(Account {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
                shell: f[6].to_string(),
            })
        })
    }
}

/// The package, installed with `dpkg -i`; purged when dropped (or by
/// [`Installed::purge`]), with the system user it created.
pub struct Installed {
    /// The service user did not exist before: delete it after purging.
    new_users: Vec<String>,
    purged: bool,
}

impl Installed {
    /// Installs `deb`. Refuses to touch a machine where the package is
    /// already installed (an operator's, not the test's). `users`: the
    /// system users the package creates, deleted again on drop if they did
    /// not exist before.
    pub fn install(deb: &Path, users: &[&str]) -> Installed {
        assert!(
            !is_installed(PACKAGE),
            "package {PACKAGE} is already installed on this machine: not touching it"
        );
        let new_users = users
            .iter()
            .filter(|u| Account::lookup(u).is_none())
            .map(|u| u.to_string())
            .collect();
        let out = run(Command::new("dpkg").arg("-i").arg(deb));
        let installed = Installed {
            new_users,
            purged: false,
        };
        assert!(
            out.status.success(),
            "dpkg -i {} failed:\n{}{}",
            deb.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        installed
    }

    /// `dpkg --purge`, checked: the package and its conffiles are gone.
    pub fn purge(mut self) -> Output {
        self.purged = true;
        let out = run(Command::new("dpkg").args(["--purge", PACKAGE]));
        self.delete_users();
        out
    }

    fn delete_users(&self) {
        for u in &self.new_users {
            let _ = run(Command::new("userdel").arg(u));
            let _ = run(Command::new("groupdel").arg(u));
        }
    }

    /// The installed unit `name` (e.g. `ember-serve.service`).
    pub fn unit(&self, name: &str) -> Unit {
        let path = Path::new("/usr/lib/systemd/system").join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        Unit::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.purged {
            let _ = run(Command::new("dpkg").args(["--purge", PACKAGE]));
            self.delete_users();
        }
    }
}

/// The `[Service]` settings of a unit that say how its process is started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unit {
    pub user: Option<String>,
    pub group: Option<String>,
    /// ExecStart, split into words, `$VAR`s not yet expanded.
    pub exec_start: Vec<String>,
    pub environment: Vec<(String, String)>,
    /// EnvironmentFile= paths; `true` when a missing file is an error.
    pub environment_files: Vec<(PathBuf, bool)>,
    pub state_directory: Option<String>,
    pub state_directory_mode: u32,
    pub umask: u32,
    pub limit_nofile: Option<u64>,
}

impl Unit {
    /// Parses a unit file's `[Service]` section (continuation lines joined,
    /// comments dropped). Settings the test cannot honour (ExecStart
    /// prefixes, several ExecStart lines) are refused, not ignored.
    pub fn parse(text: &str) -> Result<Unit, String> {
        let mut unit = Unit {
            state_directory_mode: 0o755,
            umask: 0o022,
            ..Unit::default()
        };
        let mut section = String::new();
        let mut joined = String::new();
        for raw in text.lines() {
            let line = raw.trim();
            if joined.is_empty() && (line.starts_with('#') || line.starts_with(';')) {
                continue;
            }
            if let Some(rest) = line.strip_suffix('\\') {
                joined.push_str(rest);
                joined.push(' ');
                continue;
            }
            joined.push_str(line);
            let line = std::mem::take(&mut joined);
            if line.starts_with('[') {
                section = line;
                continue;
            }
            if section != "[Service]" || line.is_empty() {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| format!("not KEY=VALUE: {line:?}"))?;
            let (key, value) = (key.trim(), value.trim());
            match key {
                "User" => unit.user = Some(value.to_string()),
                "Group" => unit.group = Some(value.to_string()),
                "ExecStart" => {
                    if !unit.exec_start.is_empty() {
                        return Err("several ExecStart= lines".into());
                    }
                    if value.starts_with(['-', '@', '+', '!', ':']) {
                        return Err(format!("ExecStart prefix not supported: {value:?}"));
                    }
                    unit.exec_start = split_words(value)?;
                }
                "Environment" => {
                    for w in split_words(value)? {
                        let (k, v) = w
                            .split_once('=')
                            .ok_or_else(|| format!("Environment= word {w:?}"))?;
                        unit.environment.push((k.to_string(), v.to_string()));
                    }
                }
                "EnvironmentFile" => {
                    let (path, required) = match value.strip_prefix('-') {
                        Some(p) => (p, false),
                        None => (value, true),
                    };
                    unit.environment_files.push((PathBuf::from(path), required));
                }
                "StateDirectory" => {
                    if value.split_whitespace().count() != 1 {
                        return Err(format!("one StateDirectory= expected: {value:?}"));
                    }
                    unit.state_directory = Some(value.to_string());
                }
                "StateDirectoryMode" => unit.state_directory_mode = octal(value)?,
                "UMask" => unit.umask = octal(value)?,
                "LimitNOFILE" => {
                    unit.limit_nofile = Some(
                        value
                            .parse()
                            .map_err(|_| format!("LimitNOFILE={value}: one number expected"))?,
                    )
                }
                _ => {}
            }
        }
        if unit.exec_start.is_empty() {
            return Err("no ExecStart=".into());
        }
        Ok(unit)
    }

    /// The service's user (User=, which this test needs).
    pub fn account(&self) -> Account {
        let name = self.user.as_deref().expect("the unit names a User=");
        Account::lookup(name).unwrap_or_else(|| panic!("user {name} does not exist"))
    }

    /// `/var/lib/<StateDirectory>`.
    pub fn state_path(&self) -> Option<PathBuf> {
        self.state_directory
            .as_ref()
            .map(|d| Path::new("/var/lib").join(d))
    }

    /// The environment systemd gives the process: the user's variables,
    /// STATE_DIRECTORY, Environment= and then each EnvironmentFile=.
    pub fn env(&self) -> Vec<(String, String)> {
        let acct = self.account();
        let mut env = vec![
            (
                "PATH".to_string(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            ),
            ("HOME".into(), acct.home.clone()),
            ("USER".into(), acct.name.clone()),
            ("LOGNAME".into(), acct.name.clone()),
            ("SHELL".into(), acct.shell.clone()),
        ];
        if let Some(p) = self.state_path() {
            env.push(("STATE_DIRECTORY".into(), p.display().to_string()));
        }
        env.extend(self.environment.iter().cloned());
        for (path, required) in &self.environment_files {
            match std::fs::read_to_string(path) {
                Ok(text) => env.extend(parse_environment_file(&text)),
                Err(e) if *required => panic!("EnvironmentFile {}: {e}", path.display()),
                Err(_) => {}
            }
        }
        env
    }

    /// ExecStart with the environment's variables expanded.
    pub fn exec_argv(&self) -> Result<Vec<String>, String> {
        expand(&self.exec_start, &self.env())
    }

    /// `argv` as the unit would run it: its user and groups, environment,
    /// umask and open-files limit, no new privileges, no capabilities. The
    /// wrappers (`prlimit`, `setpriv`) exec, so the child's PID is the
    /// command's (the shell in between execs too).
    pub fn command(&self, argv: &[String]) -> Command {
        let acct = self.account();
        let mut cmd = Command::new("prlimit");
        if let Some(n) = self.limit_nofile {
            cmd.arg(format!("--nofile={n}:{n}"));
        }
        // The unit's UMask= through the shell's umask builtin, which then
        // execs setpriv (no pre_exec hook: the tests crate has no unsafe).
        cmd.args(["--", "/bin/sh", "-c"])
            .arg(format!("umask {:04o} && exec \"$@\"", self.umask))
            .args(["sh", "/usr/bin/setpriv"])
            .arg(format!("--reuid={}", acct.name))
            .arg(format!(
                "--regid={}",
                self.group.as_deref().unwrap_or(&acct.name)
            ))
            .args([
                "--init-groups",
                "--no-new-privs",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--",
            ])
            .args(argv)
            .env_clear()
            .envs(self.env())
            .current_dir("/")
            .stdin(Stdio::null());
        cmd
    }

    /// Creates the StateDirectory as systemd does before ExecStart: owned
    /// by the user, with StateDirectoryMode. Refuses if it exists (state
    /// that is not the test's).
    pub fn create_state(&self) -> StateFolder {
        let path = self.state_path().expect("the unit has a StateDirectory=");
        assert!(
            !path.exists(),
            "{} exists on this machine: not touching it",
            path.display()
        );
        std::fs::create_dir_all(&path).expect("create the state directory");
        let guard = StateFolder(path.clone());
        let acct = self.account();
        rustix::fs::chown(
            &path,
            Some(rustix::fs::Uid::from_raw(acct.uid)),
            Some(rustix::fs::Gid::from_raw(acct.gid)),
        )
        .expect("chown the state directory");
        rustix::fs::chmod(
            &path,
            rustix::fs::Mode::from_raw_mode(self.state_directory_mode),
        )
        .expect("chmod the state directory");
        guard
    }
}

/// A state folder the test created; removed when dropped.
pub struct StateFolder(PathBuf);

impl StateFolder {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for StateFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn octal(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8).map_err(|_| format!("{s:?}: octal mode expected"))
}

/// Splits a command line into words the way systemd does for the cases
/// unit files use: whitespace separates, double or single quotes group
/// (without escapes inside).
fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&c) = chars.peek() else {
            return Ok(words);
        };
        let mut word = String::new();
        if c == '"' || c == '\'' {
            chars.next();
            loop {
                match chars.next() {
                    Some(x) if x == c => break,
                    Some('\\') => return Err(format!("escapes in quotes not supported: {s:?}")),
                    Some(x) => word.push(x),
                    None => return Err(format!("unterminated quote: {s:?}")),
                }
            }
        } else {
            while let Some(x) = chars.next_if(|c| !c.is_whitespace()) {
                if x == '"' || x == '\'' || x == '\\' {
                    return Err(format!("quote or escape inside a word: {s:?}"));
                }
                word.push(x);
            }
        }
        words.push(word);
    }
}

/// An EnvironmentFile's variables: KEY=VALUE lines, `#`/`;` comments, a
/// value in double or single quotes taken without them.
pub fn parse_environment_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = ['"', '\'']
                .iter()
                .find_map(|q| v.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}

/// systemd's ExecStart expansion: a word that is exactly `$NAME` becomes the
/// variable's value split at whitespace (no word if unset or empty);
/// `${NAME}` inside a word is replaced by the value; `$$` is a `$`.
fn expand(words: &[String], env: &[(String, String)]) -> Result<Vec<String>, String> {
    let get = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let is_name =
        |n: &str| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let mut out = Vec::new();
    for w in words {
        if let Some(name) = w.strip_prefix('$').filter(|n| is_name(n)) {
            out.extend(get(name).unwrap_or("").split_whitespace().map(String::from));
            continue;
        }
        let mut word = String::new();
        let mut rest = w.as_str();
        while let Some(i) = rest.find('$') {
            word.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            if let Some(r) = rest.strip_prefix('$') {
                word.push('$');
                rest = r;
            } else if let Some(r) = rest.strip_prefix('{') {
                let end = r
                    .find('}')
                    .ok_or_else(|| format!("unterminated ${{ in {w:?}"))?;
                word.push_str(get(&r[..end]).unwrap_or(""));
                rest = &r[end + 1..];
            } else {
                return Err(format!(
                    "$NAME inside a word is not expanded by systemd: {w:?}"
                ));
            }
        }
        word.push_str(rest);
        out.push(word);
    }
    Ok(out)
}

/// A unit's ExecStart, running; stopped by PID (SIGTERM, as `systemctl
/// stop` does) when dropped. Its stdout and stderr go to files in a scratch
/// folder: the journal.
pub struct Service {
    child: ChildGuard,
    dir: ScratchDir,
}

impl Service {
    /// Starts `unit`'s ExecStart and waits (up to 30 s) until its stdout has
    /// a line starting with `ready`; returns the rest of that line.
    pub fn start(unit: &Unit, ready: &str) -> (Service, String) {
        let argv = unit.exec_argv().expect("expand ExecStart");
        let dir = ScratchDir::new("unit");
        let out = dir.path().join("stdout");
        let err = dir.path().join("stderr");
        let mut cmd = unit.command(&argv);
        cmd.stdout(std::fs::File::create(&out).expect("create stdout"))
            .stderr(std::fs::File::create(&err).expect("create stderr"));
        let child = ChildGuard::spawn("unit ExecStart", &mut cmd).expect("spawn ExecStart");
        let mut svc = Service { child, dir };
        let mut rest = None;
        wait_until(Duration::from_secs(30), || {
            if svc.child.try_wait().is_some() {
                return true;
            }
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            rest = text
                .lines()
                .find_map(|l| l.strip_prefix(ready))
                .map(String::from);
            rest.is_some()
        });
        match rest {
            Some(r) if svc.child.try_wait().is_none() => (svc, r),
            _ => panic!("{argv:?} did not become ready:\n{}", svc.journal()),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Everything the process wrote so far, stdout then stderr.
    pub fn journal(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!("{}{}", read("stdout"), read("stderr"))
    }

    /// SIGTERM by PID, then waits up to `timeout` for the exit status.
    pub fn stop(mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.pid() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        self.child.wait_timeout(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: &str = "\
[Unit]
Description=x
User=not-this-section

[Service]
# a comment
EnvironmentFile=-/etc/default/x
Environment=A=1 \"B=two words\"
ExecStart=/usr/bin/x serve --state ${STATE_DIRECTORY} \\
    $ARGS --literal $$HOME
User=svc
StateDirectory=x
StateDirectoryMode=0700
UMask=0077
LimitNOFILE=16384
";

    #[test]
    fn service_section_is_read_with_continuations_and_quotes() {
        let u = Unit::parse(UNIT).unwrap();
        assert_eq!(u.user.as_deref(), Some("svc"));
        assert_eq!(
            u.exec_start,
            [
                "/usr/bin/x",
                "serve",
                "--state",
                "${STATE_DIRECTORY}",
                "$ARGS",
                "--literal",
                "$$HOME"
            ]
        );
        assert_eq!(
            u.environment,
            [("A".into(), "1".into()), ("B".into(), "two words".into())]
        );
        assert_eq!(
            u.environment_files,
            [(PathBuf::from("/etc/default/x"), false)]
        );
        assert_eq!(u.state_directory.as_deref(), Some("x"));
        assert_eq!((u.state_directory_mode, u.umask), (0o700, 0o077));
        assert_eq!(u.limit_nofile, Some(16384));
    }

    #[test]
    fn dollar_word_splits_and_braces_do_not() {
        let env = vec![
            ("STATE_DIRECTORY".to_string(), "/var/lib/x".to_string()),
            (
                "ARGS".to_string(),
                " --listen  1.2.3.4:5 --name a ".to_string(),
            ),
        ];
        let u = Unit::parse(UNIT).unwrap();
        assert_eq!(
            expand(&u.exec_start, &env).unwrap(),
            [
                "/usr/bin/x",
                "serve",
                "--state",
                "/var/lib/x",
                "--listen",
                "1.2.3.4:5",
                "--name",
                "a",
                "--literal",
                "$HOME"
            ]
        );
        // Unset: $VAR gives no word, ${VAR} an empty one.
        assert_eq!(
            expand(&["$NOPE".into(), "${NOPE}".into()], &[]).unwrap(),
            [""]
        );
        assert!(expand(&["a$B".into()], &[]).is_err());
    }

    #[test]
    fn unsupported_exec_start_is_refused() {
        for bad in [
            "[Service]\nExecStart=-/bin/x\n",
            "[Service]\nExecStart=/bin/x\nExecStart=/bin/y\n",
            "[Service]\nUser=x\n",
            "[Service]\nExecStart=/bin/x \"a\\\"b\"\n",
        ] {
            assert!(Unit::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn environment_file_drops_comments_and_quotes() {
        let env = parse_environment_file(
            "# c\n; c\nA=\"x y\"\n  B = 'z' \nC=plain\n#D=no\n\nnot a line\n",
        );
        assert_eq!(
            env,
            [
                ("A".into(), "x y".into()),
                ("B".into(), "z".into()),
                ("C".into(), "plain".into())
            ]
        );
    }

    #[test]
    fn passwd_line_gives_the_account() {
        let p = "root:x:0:0:root:/root:/bin/bash\nember:x:998:998:Ember:/var/lib/ember:/usr/sbin/nologin\n";
        assert_eq!(
            Account::find(p, "ember"),
            Some(Account {
                name: "ember".into(),
                uid: 998,
                gid: 998,
                home: "/var/lib/ember".into(),
                shell: "/usr/sbin/nologin".into()
            })
        );
        assert_eq!(Account::find(p, "emb"), None);
    }
}

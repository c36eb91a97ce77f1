//! The Debian package as an operator meets it: `dpkg -i` the .deb that
//! scripts/build-deb made, read `man ember-serve`, set the listen address in
//! /etc/default/ember-serve, start ember-serve.service's ExecStart as the
//! unit's user (systemd is not PID 1 here: the fixture does what it would),
//! enrol and attest a swtpm node against it, stop it, purge the package.
//!
//! Installs system-wide: it refuses to run where a package named `ember` or
//! /var/lib/ember already exists, and leaves the machine as it found it.

use ember_tests::deb::{built_deb, Installed, Service};
use ember_tests::process::free_port;
use ember_tests::server::EK_CERT_ECC_P384_NV;
use ember_tests::swtpm::Swtpm;
use ember_tests::ScratchDir;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `/proc/PID/status` field `key` (e.g. "Uid"), whitespace-normalised.
fn proc_status(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

#[test]
fn installed_package_serves_a_node_as_its_own_user_and_purges_clean() {
    let deb = built_deb();
    let pkg = Installed::install(&deb, &["ember"]);

    // What the package put on the machine.
    for path in [
        "/usr/bin/ember",
        "/usr/lib/systemd/system/ember-serve.service",
        "/usr/share/man/man1/ember.1.gz",
        "/usr/share/man/man1/ember-serve.1.gz",
        "/usr/share/man/man1/ember-overlay-add.1.gz",
        "/etc/default/ember-serve",
    ] {
        assert!(Path::new(path).exists(), "{path} not installed");
    }
    let acct = ember_tests::deb::Account::lookup("ember").expect("postinst created user ember");
    assert!(acct.uid > 0 && acct.uid < 1000, "a system user: {acct:?}");
    assert!(acct.shell.ends_with("nologin"), "no login shell: {acct:?}");

    // `man ember-serve` finds the installed page and it documents the flags.
    let where_ = ok(
        Command::new("man")
            .args(["-w", "ember-serve"])
            .output()
            .unwrap(),
        "man -w ember-serve",
    );
    assert_eq!(where_.trim(), "/usr/share/man/man1/ember-serve.1.gz");
    let page = ok(
        Command::new("man")
            .args(["-P", "cat", "ember-serve"])
            .env("MANWIDTH", "100")
            .stdin(Stdio::null())
            .output()
            .unwrap(),
        "man ember-serve",
    );
    for needle in [
        "ember-serve",
        "--listen",
        "--state",
        "--name",
        "EMBER_STATE",
    ] {
        assert!(
            page.contains(needle),
            "man ember-serve lacks {needle}:\n{page}"
        );
    }

    // The installed unit passes systemd's own checks on this machine.
    let unit_file = "/usr/lib/systemd/system/ember-serve.service";
    ok(
        Command::new("systemd-analyze")
            .args(["verify", unit_file])
            .output()
            .unwrap(),
        "systemd-analyze verify",
    );
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20", unit_file])
        .output()
        .unwrap();
    assert!(
        security.status.success(),
        "exposure above 2.0:\n{}",
        text(&security)
    );

    // The operator's settings, as /etc/default/ember-serve documents them.
    let port = free_port();
    let defaults = std::fs::read_to_string("/etc/default/ember-serve").unwrap();
    assert!(
        defaults.lines().any(|l| l.starts_with("EMBER_SERVE_ARGS=")),
        "{defaults}"
    );
    let defaults: String = defaults
        .lines()
        .map(|l| match l.starts_with("EMBER_SERVE_ARGS=") {
            true => format!(
                "EMBER_SERVE_ARGS=\"--listen 127.0.0.1:{port} --name localhost --name 127.0.0.1 --threads 2\"\n"
            ),
            false => format!("{l}\n"),
        })
        .collect();
    std::fs::write("/etc/default/ember-serve", defaults).unwrap();

    // systemd's part: the state folder, then ExecStart as the unit's user.
    let unit = pkg.unit("ember-serve.service");
    assert_eq!(unit.user.as_deref(), Some("ember"));
    let state = unit.create_state();
    let (server, addr) = Service::start(&unit, "ember-serve: listening on https://");
    assert_eq!(addr, format!("127.0.0.1:{port}"));
    let (uid, gid) = (acct.uid, acct.gid);
    assert_eq!(
        proc_status(server.pid(), "Uid"),
        format!("{uid} {uid} {uid} {uid}")
    );
    assert_eq!(
        proc_status(server.pid(), "Gid"),
        format!("{gid} {gid} {gid} {gid}")
    );
    assert_eq!(proc_status(server.pid(), "NoNewPrivs"), "1");
    assert_eq!(proc_status(server.pid(), "CapEff"), "0000000000000000");
    assert_eq!(proc_status(server.pid(), "CapBnd"), "0000000000000000");

    // The operator's admin commands, as the service's user on its state.
    let admin = |args: &[&str]| {
        let mut argv = vec!["/usr/bin/ember".to_string()];
        argv.extend(args.iter().map(|a| a.to_string()));
        ok(
            unit.command(&argv).output().unwrap(),
            &format!("ember {args:?}"),
        )
    };
    let scratch = ScratchDir::new("deb");
    let tpm_dir = ScratchDir::new("deb-tpm");
    Swtpm::setup_cached(tpm_dir.path()).expect("manufacture swtpm");
    let tpm = Swtpm::start_tcp(tpm_dir.path()).expect("start swtpm");
    let ek = scratch.path().join("ek.der");
    std::fs::write(
        &ek,
        tpm.tpm2_run("tpm2_nvread", &[EK_CERT_ECC_P384_NV]).unwrap(),
    )
    .unwrap();
    admin(&[
        "enroll",
        "--name",
        "node-a",
        "--group",
        "rack1",
        "--ek-cert",
        ek.to_str().unwrap(),
    ]);
    // A fresh TPM without firmware: PCRs 0 and 7 are zero.
    let zero = "00".repeat(32);
    admin(&[
        "policy",
        "set",
        "--group",
        "rack1",
        "--pcrs",
        "0,7",
        "--value",
        &format!("0={zero}"),
        "--value",
        &format!("7={zero}"),
    ]);
    let src = scratch.path().join("overlay/etc");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("token"), "cluster-secret\n").unwrap();
    let overlay = scratch.path().join("overlay");
    admin(&[
        "overlay",
        "add",
        overlay.to_str().unwrap(),
        "--group",
        "rack1",
    ]);

    // The node: `ember attest` from the package, trusting the CA and the
    // manifest key the service made in its state folder.
    let into = scratch.path().join("root");
    let attest = Command::new("/usr/bin/ember")
        .args([
            "attest",
            "--tpm",
            &tpm.spec(),
            "--url",
            &format!("https://{addr}"),
        ])
        .arg("--ca")
        .arg(state.path().join("tls/ca.pem"))
        .arg("--manifest-key")
        .arg(state.path().join("manifest.pub"))
        .arg("--into")
        .arg(&into)
        .args(["--report", "joined", "--reason", "node Ready"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    ok(attest, &format!("ember attest\n{}", server.journal()));
    assert_eq!(
        std::fs::read_to_string(into.join("etc/token")).unwrap(),
        "cluster-secret\n"
    );
    let nodes = admin(&["nodes"]);
    let line = nodes
        .lines()
        .find(|l| l.starts_with("node-a"))
        .unwrap_or_else(|| panic!("node-a missing:\n{nodes}"));
    assert!(line.contains("joined"), "{line}");

    // Everything in the state folder belongs to the service's user, and the
    // unit's UMask kept it private.
    for entry in walk(state.path()) {
        let md = std::fs::symlink_metadata(&entry).unwrap();
        assert_eq!((md.uid(), md.gid()), (uid, gid), "{}", entry.display());
        assert_eq!(
            md.mode() & 0o077,
            0,
            "{} readable by others",
            entry.display()
        );
    }

    // `systemctl stop`: SIGTERM, and the server exits cleanly.
    let journal = server.journal();
    let status = server
        .stop(Duration::from_secs(10))
        .expect("server stops on SIGTERM");
    assert!(status.success(), "exit {status}:\n{journal}");

    drop(tpm);
    drop(state);
    let purge = pkg.purge();
    assert!(purge.status.success(), "dpkg --purge:\n{}", text(&purge));
    for path in [
        "/usr/bin/ember",
        "/usr/lib/systemd/system/ember-serve.service",
        "/etc/default/ember-serve",
    ] {
        assert!(!Path::new(path).exists(), "{path} left after purge");
    }
}

/// Every file and folder under `root`, `root` included.
fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() && !out[i].is_symlink() {
            let mut kids: Vec<_> = std::fs::read_dir(&out[i])
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            out.append(&mut kids);
        }
        i += 1;
    }
    out
}

//! "Which of our nodes run containerd 1.6.20, and since when?" Two UKIs
//! whose initrds carry two builds of a package (each traced to its .deb
//! by `ember initrd build --sbom-deb`); `ember policy set --uki` stores
//! their SBOMs; two nodes (host-side swtpms playing the firmware, as in
//! `measured_boot.rs`) boot one each. `ember nodes --package` answers from
//! the UKI each node's quote identified, so a node that lies about what it
//! booted changes nothing, and an SBOM of other bytes is refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use ember_tests::eventlog::{self, measurements, LogEvent};
use ember_tests::qemu::{build_initrd_from_debs, build_uki};
use ember_tests::server::{EmberServer, Run};
use ember_tests::swtpm::Swtpm;
use ember_tests::ScratchDir;

const CMDLINE: &str = "console=ttyS0 panic=-1 ember.iface=eth0";

/// A .deb of `package` at `version` installing `/usr/bin/<package>` with
/// `content` (what a Debian build of it would install, for tracing).
fn deb(dir: &Path, package: &str, version: &str, content: &str) -> PathBuf {
    let root = dir.join(format!("{package}-{version}"));
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {package}\nVersion: {version}\nArchitecture: amd64\n\
             Maintainer: Ember tests <tests@ember.invalid>\nDescription: test build\n"
        ),
    )
    .unwrap();
    std::fs::write(root.join("usr/bin").join(package), content).unwrap();
    let out = dir.join(format!("{package}_{version}_amd64.deb"));
    let o = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&root)
        .arg(&out)
        .output()
        .expect("run dpkg-deb");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// A UKI whose initrd carries `/usr/bin/containerd` from `version`'s .deb.
fn release(dir: &Path, version: &str) -> (PathBuf, Vec<LogEvent>) {
    let content = format!("containerd {version}\n");
    let deb = deb(dir, "containerd", version, &content);
    let bin = dir.join(format!("bin-containerd-{version}"));
    std::fs::write(&bin, &content).unwrap();
    let initrd = dir.join(format!("initrd-{version}.cpio.gz"));
    build_initrd_from_debs(&initrd, &[(bin, "/usr/bin/containerd")], &[deb]);
    let uki = dir.join(format!("ember-{version}.efi"));
    build_uki(&uki, &initrd, CMDLINE, &[]);
    let boot = measurements(&uki);
    (uki, boot)
}

/// Boots `node` (a fresh swtpm on its state: a reboot) with `extends` and
/// attests sending `log`.
fn boot(server: &EmberServer, node: &ScratchDir, extends: &[LogEvent], log: &[LogEvent]) -> Run {
    let tpm = Swtpm::start_tcp(node.path()).expect("start swtpm");
    eventlog::extend(&tpm, extends);
    let path = node.path().join("boot.log");
    std::fs::write(&path, eventlog::write(log)).unwrap();
    let into = node.path().join("root");
    let _ = std::fs::remove_dir_all(&into);
    server.attest(
        &tpm.spec(),
        &[
            "--event-log",
            path.to_str().unwrap(),
            "--into",
            into.to_str().unwrap(),
        ],
    )
}

/// Enrols `name` in rack1 with a TPM of its own (a fresh EK).
fn enroll(server: &EmberServer, name: &str) -> ScratchDir {
    let tpm_dir = ScratchDir::new("node-tpm");
    Swtpm::setup(tpm_dir.path()).expect("manufacture swtpm");
    let tpm = Swtpm::start_tcp(tpm_dir.path()).expect("start swtpm");
    server.enroll_swtpm(name, "rack1", &tpm).expect_ok("enroll");
    tpm_dir
}

fn package(server: &EmberServer, query: &str) -> String {
    server
        .ember(&["nodes", "--package", query])
        .expect_ok("ember nodes --package")
        .stdout
}

/// The NODE and VERSION columns of `ember nodes --package`'s rows.
fn rows(out: &str) -> Vec<(String, String)> {
    out.lines()
        .skip(1)
        .take_while(|l| !l.starts_with("unknown"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[2].to_string())
        })
        .collect()
}

#[test]
fn nodes_running_a_package_are_answered_from_the_uki_their_quote_identified() {
    let dir = ScratchDir::new("packages");
    let (old, old_boot) = release(dir.path(), "1.6.20~ds1-1");
    let (new, new_boot) = release(dir.path(), "1.7.2-1");

    let server = EmberServer::start_strict(&[]);
    let a = server.enroll_node_with_token("node-a", "rack1", dir.path());
    let (b, c) = (enroll(&server, "node-b"), enroll(&server, "node-c"));

    // An SBOM that is not the UKI's (here the other release's) is refused
    // before anything is stored.
    let wrong = dir.path().join("wrong.efi");
    std::fs::copy(&new, &wrong).unwrap();
    std::fs::copy(
        dir.path().join("ember-1.6.20~ds1-1.efi.spdx.json"),
        dir.path().join("wrong.efi.spdx.json"),
    )
    .unwrap();
    let refused = server.set_policy(&[
        "--group",
        "rack1",
        "--pcrs",
        "4",
        "--uki",
        wrong.to_str().unwrap(),
    ]);
    assert!(!refused.ok, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("does not describe"),
        "{}",
        refused.stderr
    );

    // A third UKI whose SBOM was not kept beside it.
    let bare = dir.path().join("bare.efi");
    build_uki(
        &bare,
        &dir.path().join("initrd-1.7.2-1.cpio.gz"),
        &format!("{CMDLINE} bare=1"),
        &[],
    );
    std::fs::remove_file(dir.path().join("bare.efi.spdx.json")).unwrap();
    let bare_boot = measurements(&bare);

    let set = server
        .set_policy(&[
            "--group",
            "rack1",
            "--pcrs",
            "4",
            "--uki",
            old.to_str().unwrap(),
            "--uki",
            new.to_str().unwrap(),
            "--uki",
            bare.to_str().unwrap(),
        ])
        .expect_ok("policy set --uki old --uki new --uki bare");
    assert_eq!(
        set.stdout.matches("SBOM stored (").count(),
        2,
        "{}",
        set.stdout
    );
    assert!(
        set.stdout.contains("bare.efi: image epoch 3") && set.stdout.contains("no SBOM beside it"),
        "{}",
        set.stdout
    );

    // node-a boots the old release, node-b the new one; node-c has not
    // booted yet.
    let run = boot(&server, &a, &old_boot, &old_boot);
    assert!(run.ok, "{}", run.stderr);
    let run = boot(&server, &b, &new_boot, &new_boot);
    assert!(run.ok, "{}", run.stderr);

    let all = package(&server, "containerd");
    eprintln!("ember nodes --package containerd:\n{all}");
    assert_eq!(
        rows(&all),
        [
            ("node-a".to_string(), "1.6.20~ds1-1".to_string()),
            ("node-b".to_string(), "1.7.2-1".to_string())
        ],
        "{all}"
    );
    let old_only = package(&server, "containerd=1.6.20~ds1-1");
    assert_eq!(rows(&old_only).len(), 1, "{old_only}");
    assert_eq!(rows(&old_only)[0].0, "node-a", "{old_only}");
    let none = package(&server, "containerd=1.5.0");
    assert!(
        none.starts_with("no node's last attested boot ran a UKI containing containerd=1.5.0"),
        "{none}"
    );

    // node-b lies: its TPM measured the new release, its log claims the
    // old one. Refused (the log does not replay to the quote): what it
    // runs is still the new release.
    let run = boot(&server, &b, &new_boot, &old_boot);
    assert!(!run.ok, "a lying node attested:\n{}", run.stdout);
    let old_only = package(&server, "containerd=1.6.20~ds1-1");
    assert_eq!(rows(&old_only).len(), 1, "{old_only}");

    // node-b rolls over to the old release for real (the floor is the
    // operator's to lower): now both run 1.6.20, node-b since this boot.
    server
        .ember(&["nodes", "allow-rollback", "--node", "node-b"])
        .expect_ok("allow-rollback");
    let run = boot(&server, &b, &old_boot, &old_boot);
    assert!(run.ok, "{}", run.stderr);
    let old_only = package(&server, "containerd=1.6.20~ds1-1");
    let nodes: Vec<String> = rows(&old_only).into_iter().map(|(n, _)| n).collect();
    assert_eq!(nodes, ["node-a", "node-b"], "{old_only}");
    assert!(package(&server, "containerd=1.7.2-1").starts_with("no node's"));

    // node-c boots a UKI whose SBOM the server never got: for it the
    // answer is "unknown", never "no".
    let run = boot(&server, &c, &bare_boot, &bare_boot);
    assert!(run.ok, "{}", run.stderr);
    let out = package(&server, "containerd");
    assert!(
        out.contains(
            "unknown for 1 node(s) whose last attested boot ran a UKI with no stored SBOM"
        ) && out.trim_end().ends_with(": node-c"),
        "{out}"
    );
}

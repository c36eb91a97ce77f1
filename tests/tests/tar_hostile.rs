//! Hostile archives: each is refused with an error naming the entry, writes
//! nothing outside the extraction root, and never crashes the extractor.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ember_tests::{ember_bin, ScratchDir};

/// Writes an archive with Python's tarfile from a list of members:
/// `(type, name, linkname_or_data)`, type one of file/dir/symlink/hardlink.
const PY_MAKE: &str = r##"
import io, json, sys, tarfile
out, fmt, members = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
fmt = {"pax": tarfile.PAX_FORMAT, "gnu": tarfile.GNU_FORMAT}[fmt]
with tarfile.open(out, "w", format=fmt) as t:
    for kind, name, arg in members:
        ti = tarfile.TarInfo(name)
        ti.mtime = 1600000000
        if kind == "file":
            data = arg.encode()
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
            continue
        ti.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[kind]
        ti.mode = 0o755
        ti.linkname = arg
        t.addfile(ti)
"##;

struct Arena {
    _scratch: ScratchDir,
    base: PathBuf,
    root: PathBuf,
    outside: PathBuf,
}

impl Arena {
    /// `base/root` is where extraction goes; `base/outside` holds a file an
    /// attacker would like to overwrite.
    fn new(tag: &str) -> Self {
        let scratch = ScratchDir::new(tag);
        let base = scratch.path().to_path_buf();
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"untouched").unwrap();
        Arena {
            _scratch: scratch,
            base,
            root,
            outside,
        }
    }

    fn archive(&self, fmt: &str, members: &[(&str, &str, &str)]) -> PathBuf {
        let out = self.base.join(format!("a-{}.tar", members.len()));
        let json = format!(
            "[{}]",
            members
                .iter()
                .map(|(k, n, a)| format!("[{k:?},{n:?},{a:?}]"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let st = Command::new("python3")
            .arg("-c")
            .arg(PY_MAKE)
            .arg(&out)
            .arg(fmt)
            .arg(json)
            .status()
            .unwrap();
        assert!(st.success());
        out
    }

    fn extract(&self, archive: &Path, extra: &[&str]) -> Output {
        Command::new(ember_bin())
            .args(["tar", "extract"])
            .args(extra)
            .arg("--into")
            .arg(&self.root)
            .arg(archive)
            .output()
            .unwrap()
    }

    /// Everything under `base` except `root` and the archives, with content.
    fn outside_snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut v = Vec::new();
        let mut stack = vec![self.base.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p == self.root || p.extension().is_some_and(|x| x == "tar" || x == "gz") {
                    continue;
                }
                let md = std::fs::symlink_metadata(&p).unwrap();
                if md.is_dir() {
                    stack.push(p.clone());
                    v.push((p, Vec::new()));
                } else {
                    let c = std::fs::read(&p).unwrap_or_default();
                    v.push((p, c));
                }
            }
        }
        v.sort();
        v
    }

    /// Extracts and checks: failure (exit 1, no crash), the error names
    /// `entry` and says `why`, nothing changed outside the root.
    fn refused(&self, archive: &Path, entry: &str, why: &str) {
        self.refused_with(archive, &[], entry, why)
    }

    fn refused_with(&self, archive: &Path, extra: &[&str], entry: &str, why: &str) {
        let before = self.outside_snapshot();
        let out = self.extract(archive, extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "expected a clean refusal, got {:?}: {stderr}",
            out.status
        );
        assert!(
            stderr.contains(entry),
            "error does not name {entry:?}: {stderr}"
        );
        assert!(stderr.contains(why), "error does not say {why:?}: {stderr}");
        assert_eq!(
            before,
            self.outside_snapshot(),
            "something changed outside the root"
        );
        assert_eq!(
            std::fs::read(self.outside.join("secret")).unwrap(),
            b"untouched"
        );
    }
}

#[test]
fn dotdot_path_is_refused() {
    let a = Arena::new("tar-dotdot");
    let ar = a.archive("pax", &[("file", "../outside/secret", "pwned")]);
    a.refused(&ar, "../outside/secret", "`..`");
}

#[test]
fn absolute_path_is_refused() {
    let a = Arena::new("tar-abs");
    let target = a.outside.join("secret");
    let ar = a.archive("gnu", &[("file", target.to_str().unwrap(), "pwned")]);
    a.refused(&ar, target.to_str().unwrap(), "absolute");
}

#[test]
fn file_through_symlink_to_root_or_parent_is_refused() {
    let a = Arena::new("tar-symlink-escape");
    let abs = a
        .outside
        .to_str()
        .unwrap()
        .trim_start_matches('/')
        .to_string();
    let ar = a.archive(
        "pax",
        &[
            ("symlink", "slash", "/"),
            ("file", &format!("slash/{abs}/secret"), "pwned"),
        ],
    );
    a.refused(&ar, "slash/", "symlink leaving the root");
    let ar = a.archive(
        "pax",
        &[
            ("symlink", "up", ".."),
            ("dir", "d", ""),
            ("file", "up/outside/secret", "pwned"),
        ],
    );
    a.refused(&ar, "up/outside/secret", "symlink leaving the root");
    let ar = a.archive(
        "pax",
        &[
            ("symlink", "dd", "d/../.."),
            ("dir", "d", ""),
            ("file", "dd/outside/new", "pwned"),
        ],
    );
    a.refused(&ar, "dd/outside/new", "symlink leaving the root");
}

/// With --confine in-root the root acts as `/`: the same archive lands
/// inside the root instead of failing.
#[test]
fn in_root_confinement_resolves_escaping_symlinks_inside_the_root() {
    let a = Arena::new("tar-inroot");
    let ar = a.archive(
        "pax",
        &[
            ("symlink", "slash", "/"),
            ("symlink", "up", ".."),
            ("file", "slash/etc/x", "one"),
            ("file", "up/up/y", "two"),
        ],
    );
    let before = a.outside_snapshot();
    let out = a.extract(&ar, &["--confine", "in-root"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(a.root.join("etc/x")).unwrap(), b"one");
    assert_eq!(std::fs::read(a.root.join("y")).unwrap(), b"two");
    assert_eq!(before, a.outside_snapshot());
}

#[test]
fn hardlink_to_a_path_outside_is_refused() {
    let a = Arena::new("tar-hardlink-out");
    let ar = a.archive("pax", &[("hardlink", "h", "../outside/secret")]);
    a.refused(&ar, "\"h\"", "hard link target outside the root");
    let abs = a.outside.join("secret");
    let ar = a.archive("gnu", &[("hardlink", "h2", abs.to_str().unwrap())]);
    a.refused(&ar, "\"h2\"", "hard link target outside the root");
    // Through a symlink that leaves the root.
    let ar = a.archive(
        "pax",
        &[
            ("symlink", "s", "../outside"),
            ("hardlink", "h3", "s/secret"),
        ],
    );
    a.refused(&ar, "\"h3\"", "symlink leaving the root");
    // A hard link to the secret must not have been made anywhere.
    let md = std::fs::metadata(a.outside.join("secret")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::nlink(&md), 1);
}

#[test]
fn file_replacing_a_directory_is_refused() {
    let a = Arena::new("tar-file-over-dir");
    let ar = a.archive(
        "pax",
        &[
            ("dir", "d", ""),
            ("file", "d/keep", "kept"),
            ("file", "d", "not a dir"),
        ],
    );
    a.refused(&ar, "\"d\"", "would replace an existing directory");
    assert_eq!(std::fs::read(a.root.join("d/keep")).unwrap(), b"kept");
}

fn simple_archive(a: &Arena) -> Vec<u8> {
    let ar = a.archive(
        "gnu",
        &[
            ("file", "first", "first file"),
            ("file", "second", &"x".repeat(3000)),
        ],
    );
    std::fs::read(ar).unwrap()
}

fn write(a: &Arena, name: &str, bytes: &[u8]) -> PathBuf {
    let p = a.base.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn checksum_bad_header_is_refused() {
    let a = Arena::new("tar-chksum");
    let mut b = simple_archive(&a);
    b[1024 + 100] ^= 1; // mode field of "second"'s header
    let p = write(&a, "bad.tar", &b);
    a.refused(&p, "second", "checksum mismatch");
}

#[test]
fn truncated_in_header_and_in_data_are_refused() {
    let a = Arena::new("tar-trunc");
    let b = simple_archive(&a);
    let p = write(&a, "t1.tar", &b[..1024 + 200]);
    a.refused(&p, "", "truncated (Header)");
    let p = write(&a, "t2.tar", &b[..1024 + 512 + 1000]);
    a.refused(&p, "second", "truncated (Data)");
    // The half-written file is removed.
    assert!(!a.root.join("second").exists());
}

#[test]
fn size_field_larger_than_the_stream_is_refused() {
    let a = Arena::new("tar-size");
    let mut b = simple_archive(&a);
    // "second"'s size: 0o77777777777 (8 GiB - 1), then fix the checksum.
    let h = &mut b[1024..1536];
    h[124..136].copy_from_slice(b"77777777777\0");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&x| u32::from(x)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let p = write(&a, "size.tar", &b);
    a.refused(&p, "second", "truncated (Data)");
}

#[test]
fn pax_header_with_bad_lengths_is_refused() {
    let a = Arena::new("tar-pax");
    let ar = a.archive("pax", &[("file", &"p".repeat(120), "long name needs pax")]);
    let mut b = std::fs::read(ar).unwrap();
    // The pax payload starts at 512 with "<len> path=...": inflate its length.
    let payload = &mut b[512..1024];
    let space = payload.iter().position(|&c| c == b' ').unwrap();
    payload[..space].fill(b'9');
    let p = write(&a, "pax.tar", &b);
    a.refused(&p, "@PaxHeader", "malformed pax header");
}

#[test]
fn zip_bomb_is_stopped_by_the_byte_limit() {
    let a = Arena::new("tar-bomb");
    let bomb = a.base.join("bomb.tar.gz");
    // A member claiming 1 GiB of zeros, compressed to about 1 MB.
    let script = r#"
import gzip, sys, tarfile
with gzip.open(sys.argv[1], "wb", compresslevel=1) as g:
    ti = tarfile.TarInfo("bomb"); ti.size = 1 << 30
    g.write(ti.tobuf(format=tarfile.GNU_FORMAT))
    z = bytes(1 << 20)
    for _ in range(1 << 10): g.write(z)
"#;
    assert!(Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&bomb)
        .status()
        .unwrap()
        .success());
    assert!(std::fs::metadata(&bomb).unwrap().len() < 8 << 20);
    a.refused_with(
        &bomb,
        &["--max-bytes", "67108864"],
        "",
        "inflates beyond the limit of 67108864 bytes",
    );
    assert!(
        !a.root.join("bomb").exists(),
        "partial bomb output left behind"
    );
}

#[test]
fn sha256_mismatch_fails_the_extraction() {
    let a = Arena::new("tar-digest");
    let ar = a.archive("pax", &[("file", "f", "content")]);
    let out = a.extract(&ar, &["--expect-sha256", &"0".repeat(64)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SHA-256 mismatch"));
    let good = Command::new("sha256sum").arg(&ar).output().unwrap();
    let hex = String::from_utf8(good.stdout).unwrap()[..64].to_string();
    let out = a.extract(&ar, &["--expect-sha256", &hex]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A root laid out like the node's `/`: the files the init keeps in its
/// system areas, which an overlay must not reach.
fn system_root(a: &Arena) {
    for d in [
        "proc",
        "sys/kernel",
        "dev",
        "boot",
        "run/ember",
        "etc",
        "mnt",
    ] {
        std::fs::create_dir_all(a.root.join(d)).unwrap();
    }
    std::fs::write(a.root.join("boot/initrd.cpio.gz"), b"genuine initrd").unwrap();
    std::fs::write(a.root.join("run/ember/overlay.sealed"), b"genuine slot").unwrap();
    std::fs::write(a.root.join("sys/kernel/uevent_helper"), b"").unwrap();
}

/// Every file under the root's system areas, with content.
fn system_snapshot(a: &Arena) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v = Vec::new();
    let mut stack: Vec<PathBuf> = ["proc", "sys", "dev", "boot", "run", "mnt"]
        .iter()
        .map(|d| a.root.join(d))
        .collect();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p.clone());
            }
            let content = if md.is_file() {
                std::fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            v.push((p, content));
        }
    }
    v.sort();
    v
}

#[test]
fn overlay_entries_in_system_areas_are_refused_and_nothing_is_written_there() {
    let a = Arena::new("tar-system");
    system_root(&a);
    let before = system_snapshot(&a);
    let protect = ["--confine", "in-root", "--protect-system"];
    let cases: [(&str, &str, &str, &str); 8] = [
        (
            "file",
            "proc/sysrq-trigger",
            "b",
            "/proc is a protected system path",
        ),
        (
            "file",
            "sys/kernel/uevent_helper",
            "/tmp/x",
            "/sys is a protected system path",
        ),
        ("file", "dev/sda", "x", "/dev is a protected system path"),
        (
            "file",
            "boot/initrd.cpio.gz",
            "patched",
            "/boot is a protected system path",
        ),
        (
            "file",
            "run/ember/overlay.sealed",
            "planted",
            "/run/ember is a protected system path",
        ),
        ("dir", "boot/", "", "/boot is a protected system path"),
        (
            "symlink",
            "etc/kernel",
            "/boot",
            "link points into protected system path /boot",
        ),
        (
            "hardlink",
            "etc/slot",
            "run/ember/overlay.sealed",
            "link points into protected system path /run/ember",
        ),
    ];
    for (kind, name, arg, why) in cases {
        let ar = a.archive("pax", &[("file", "etc/hostname", "ok"), (kind, name, arg)]);
        a.refused_with(
            &ar,
            &protect,
            &format!("{:?}", name.trim_end_matches('/')),
            why,
        );
        assert_eq!(before, system_snapshot(&a), "{name}: a system area changed");
    }
    // A symlink the archive makes to an innocent place, then a path that
    // goes up from it into /boot: refused by where it really leads.
    let ar = a.archive(
        "pax",
        &[
            ("symlink", "etc/up", ".."),
            ("file", "etc/up/boot/initrd.cpio.gz", "patched"),
        ],
    );
    a.refused_with(
        &ar,
        &protect,
        "etc/up/boot/initrd.cpio.gz",
        "/boot is a protected system path",
    );
    assert_eq!(before, system_snapshot(&a));
    assert!(!a.root.join("etc/kernel").exists() && !a.root.join("etc/slot").exists());

    // Without --protect-system the same archive writes into /boot: the
    // protection is what stops it.
    let ar = a.archive("pax", &[("file", "boot/initrd.cpio.gz", "patched")]);
    let out = a.extract(&ar, &["--confine", "in-root"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(a.root.join("boot/initrd.cpio.gz")).unwrap(),
        b"patched"
    );
}

#[test]
fn overlay_entries_crossing_a_mount_point_are_refused() {
    let a = Arena::new("tar-mount");
    system_root(&a);
    // A tmpfs on root/mnt in a private mount namespace (gone with the
    // process): the extractor runs inside it.
    let ar = a.archive("pax", &[("file", "mnt/planted", "x")]);
    let via_link = a.archive(
        "pax",
        &[("symlink", "etc/m", "/mnt"), ("file", "etc/m/planted", "x")],
    );
    for (archive, entry) in [(&ar, "mnt/planted"), (&via_link, "etc/m/planted")] {
        let script = format!(
            "mount -t tmpfs ember-test {mnt} && {ember} tar extract --confine in-root --protect-system --into {root} {ar}; \
             rc=$?; ls -A {mnt}; exit $rc",
            mnt = a.root.join("mnt").display(),
            ember = ember_bin().display(),
            root = a.root.display(),
            ar = archive.display(),
        );
        let out = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(entry), "{stderr}");
        assert!(stderr.contains("crosses a mount point"), "{stderr}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "",
            "something was written on the mounted filesystem"
        );
    }
    // Outside the namespace the mount never existed; root/mnt is untouched.
    assert_eq!(std::fs::read_dir(a.root.join("mnt")).unwrap().count(), 0);
}

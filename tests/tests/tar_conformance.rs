//! Conformance: archives written by GNU tar (gnu, pax, ustar, v7; with
//! --xattrs), bsdtar and Python's tarfile extract with `ember tar extract`
//! into trees equal to the source tree they were made from.

use std::path::Path;
use std::process::{Command, Stdio};

use ember_tests::tree::{assert_same, Compare};
use ember_tests::{ember_bin, ScratchDir};

/// Builds the source tree. Variants: `full` (everything), `ustar` (what
/// ustar can hold: names split at 155/100, short link targets, small ids,
/// no xattrs), `v7` (files, dirs, links, names < 100).
const MAKE_TREE: &str = r##"
import os, random, struct, sys
root, variant = sys.argv[1], sys.argv[2]
full, v7 = variant == "full", variant == "v7"
rng = random.Random(7)
stamps = []
def p(*parts): return os.path.join(root, *parts)
def mkdir(rel, mode=0o755, uid=0, gid=0):
    os.makedirs(p(rel), exist_ok=True); stamps.append((rel, mode, uid, gid))
def put(rel, data, mode=0o644, uid=0, gid=0):
    os.makedirs(os.path.dirname(p(rel)), exist_ok=True)
    with open(p(rel), "wb") as f: f.write(data)
    os.chown(p(rel), uid, gid); os.chmod(p(rel), mode)
os.makedirs(root, exist_ok=True)
mkdir("files")
for n in (0, 1, 511, 512, 513, 10000, 100000):
    put(f"files/size_{n}", rng.randbytes(n))
put("files/setuid", b"#!/bin/sh\n", 0o4755)
put("files/setgid", b"x", 0o2711)
put("files/owned", b"owned", 0o640, 1234, 5678)
put("files/readonly", b"ro", 0o444)
os.link(p("files/size_513"), p("files/hard_same_dir"))
mkdir("other")
os.link(p("files/size_513"), p("other/hard_other_dir"))
os.symlink("../files/size_1", p("other/link_rel"))
os.symlink("nowhere/at/all", p("other/link_dangling"))
os.symlink("/etc/passwd", p("other/link_abs"))
os.symlink("../files", p("other/link_dir"))
mkdir("sticky", 0o1777)
mkdir("private", 0o700, 42, 43)
mkdir("ro", 0o555)
put("ro/inside", b"inside a read-only directory")
mkdir("empty_dir")
depth = 15 if v7 else 30  # v7 names stop at 99 bytes
deep = "/".join(["deep"] * depth)
put(deep + "/bottom", b"deep file")
for i in range(depth): stamps.append(("/".join(["deep"] * (i + 1)), 0o755, 0, 0))
if not v7:
    mkdir("dev")
    os.mknod(p("dev/char_1_3"), 0o666 | 0o020000, os.makedev(1, 3))
    os.mknod(p("dev/block_7_0"), 0o660 | 0o060000, os.makedev(7, 0))
    os.mknod(p("dev/fifo"), 0o600 | 0o010000)
    put("ünïcødé/日本語.txt", "unicode ✓".encode())
    stamps.append(("ünïcødé", 0o755, 0, 0))
    # > 100 bytes of name, split into ustar's prefix (<= 155) and name (<= 100)
    mid = "m" * 60 + "/" + "n" * 60
    put(mid + "/" + "f" * 90, b"long path in ustar range")
    stamps += [("m" * 60, 0o755, 0, 0), (mid, 0o755, 0, 0)]
if full:
    long_comp = "c" * 200
    put("long/" + long_comp, b"a 200-byte file name")
    longer = "long/" + "/".join(["x" * 100, "y" * 100, "z" * 100]) + "/file.txt"
    put(longer, b"a path over 255 bytes")
    os.link(p(longer), p("long/hardlink_to_long_path"))
    os.symlink("t" * 150, p("long/symlink_long_target"))
    stamps += [("long", 0o755, 0, 0), ("long/" + "x" * 100, 0o755, 0, 0),
               ("long/" + "x" * 100 + "/" + "y" * 100, 0o755, 0, 0),
               ("long/" + "x" * 100 + "/" + "y" * 100 + "/" + "z" * 100, 0o755, 0, 0)]
    put("files/big_uid", b"uid beyond octal", 0o600, 3000000, 3000001)
    os.mknod(p("dev/char_big"), 0o600 | 0o020000, os.makedev(300, 70000))
    os.setxattr(p("files/size_10000"), "user.comment", b"hello")
    os.setxattr(p("files/size_10000"), "user.binary", b"\x00\x01\n\xff")
    put("files/capable", b"\x7fELF")
    os.setxattr(p("files/capable"), "security.capability", struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0))
    os.setxattr(p("other"), "user.dir_attr", b"on a directory")
# mtimes last, deepest first, so creating children does not disturb them
t = 1600000000
for dirpath, dirs, files in os.walk(root):
    for name in files + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]:
        t += 1; os.utime(os.path.join(dirpath, name), (t, t), follow_symlinks=False)
for rel, mode, uid, gid in sorted(stamps, key=lambda s: -s[0].count("/")):
    os.chown(p(rel), uid, gid); os.chmod(p(rel), mode)
for dirpath, dirs, files in sorted(os.walk(root), key=lambda w: -w[0].count("/")):
    t += 1; os.utime(dirpath, (t, t))
"##;

const PY_TAR: &str = r#"
import sys, tarfile
src, out, fmt, mode = sys.argv[1:5]
fmt = {"pax": tarfile.PAX_FORMAT, "gnu": tarfile.GNU_FORMAT, "ustar": tarfile.USTAR_FORMAT}[fmt]
with tarfile.open(out, mode, format=fmt) as t:
    t.add(src, arcname=".")
"#;

fn sh(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_tree(dir: &Path, variant: &str) {
    sh(
        Command::new("python3")
            .arg("-c")
            .arg(MAKE_TREE)
            .arg(dir)
            .arg(variant),
        "make source tree",
    );
}

fn extract(archive: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let out = Command::new(ember_bin())
        .args(["tar", "extract", "--into"])
        .arg(into)
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ember tar extract {} failed: {}",
        archive.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Case {
    name: &'static str,
    variant: &'static str,
    /// Writes the archive of `src` to `out`.
    make: fn(&Path, &Path),
    xattrs: bool,
}

fn gnu(fmt: &'static str, gz: bool, xattrs: bool) -> impl Fn(&Path, &Path) {
    move |src, out| {
        let mut c = Command::new("tar");
        c.arg(format!("--format={fmt}"));
        if xattrs {
            c.args(["--xattrs", "--xattrs-include=*"]);
        }
        if gz {
            c.arg("-z");
        }
        c.arg("-cf").arg(out).arg("-C").arg(src).arg(".");
        sh(&mut c, &format!("GNU tar --format={fmt}"));
    }
}

fn bsd(fmt: &'static str, gz: bool) -> impl Fn(&Path, &Path) {
    move |src, out| {
        let mut c = Command::new("bsdtar");
        c.arg(format!("--format={fmt}"));
        if fmt == "pax" {
            c.arg("--xattrs");
        }
        if gz {
            c.arg("-z");
        }
        c.arg("-cf").arg(out).arg("-C").arg(src).arg(".");
        sh(&mut c, &format!("bsdtar --format={fmt}"));
    }
}

fn python(fmt: &'static str, mode: &'static str) -> impl Fn(&Path, &Path) {
    move |src, out| {
        sh(
            Command::new("python3")
                .arg("-c")
                .arg(PY_TAR)
                .arg(src)
                .arg(out)
                .arg(fmt)
                .arg(mode),
            &format!("python tarfile {fmt}"),
        )
    }
}

fn run_cases(cases: Vec<Case>) {
    let scratch = ScratchDir::new("tar-conf");
    let mut sources = std::collections::HashMap::new();
    for case in &cases {
        let src = sources
            .entry(case.variant)
            .or_insert_with(|| {
                let d = scratch.path().join(format!("src-{}", case.variant));
                make_tree(&d, case.variant);
                d
            })
            .clone();
        let archive = scratch.path().join(format!("{}.archive", case.name));
        (case.make)(&src, &archive);
        let out = scratch.path().join(format!("out-{}", case.name));
        extract(&archive, &out);
        let cmp = Compare {
            xattrs: case.xattrs,
            ..Compare::default()
        };
        assert_same(&src, &out, cmp, case.name);
    }
}

macro_rules! case {
    ($name:expr, $variant:expr, $make:expr, $xattrs:expr) => {
        Case {
            name: $name,
            variant: $variant,
            make: {
                fn f(s: &Path, o: &Path) {
                    ($make)(s, o)
                }
                f
            },
            xattrs: $xattrs,
        }
    };
}

#[test]
fn gnu_tar_archives_in_every_format_extract_to_the_source_tree() {
    run_cases(vec![
        case!("gnu-pax-xattrs", "full", gnu("pax", false, true), true),
        case!("gnu-pax-xattrs.gz", "full", gnu("pax", true, true), true),
        case!("gnu-gnu", "full", gnu("gnu", false, false), false),
        case!("gnu-gnu.gz", "full", gnu("gnu", true, false), false),
        case!("gnu-ustar", "ustar", gnu("ustar", false, false), false),
        case!("gnu-v7", "v7", gnu("v7", false, false), false),
    ]);
}

#[test]
fn bsdtar_archives_extract_to_the_source_tree() {
    run_cases(vec![
        case!("bsd-pax-xattrs", "full", bsd("pax", false), true),
        case!("bsd-pax-xattrs.gz", "full", bsd("pax", true), true),
        case!("bsd-gnutar", "full", bsd("gnutar", false), false),
        case!("bsd-ustar", "ustar", bsd("ustar", false), false),
    ]);
}

#[test]
fn python_tarfile_archives_extract_to_the_source_tree() {
    run_cases(vec![
        case!("py-pax", "full", python("pax", "w"), false),
        case!("py-pax.gz", "full", python("pax", "w:gz"), false),
        case!("py-gnu", "full", python("gnu", "w"), false),
        case!("py-ustar", "ustar", python("ustar", "w"), false),
    ]);
}

/// A scratch directory on tmpfs, removed on drop.
struct ShmDir(std::path::PathBuf);

impl ShmDir {
    fn new(tag: &str) -> Self {
        let base = if Path::new("/dev/shm").is_dir() {
            Path::new("/dev/shm").to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("ember-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        ShmDir(d)
    }
}

impl Drop for ShmDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file over 8 GiB (a hole made by truncate): its size needs base-256
/// (gnu) or a pax `size` record. Streamed through a pipe, never stored.
#[test]
fn file_over_8_gib_extracts_from_gnu_and_pax_archives() {
    // tmpfs: reading holes there is fast (on ext4 GNU tar needs minutes).
    let scratch = ShmDir::new("tar-big");
    let src = scratch.0.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let big = src.join("big");
    sh(
        Command::new("truncate")
            .arg("-s")
            .arg(((8u64 << 30) + 4097).to_string())
            .arg(&big),
        "truncate",
    );
    // Some data at both ends so content is checked, not only size.
    sh(Command::new("sh").arg("-c").arg(format!(
        "printf head | dd of={0} conv=notrunc status=none && printf tail | dd of={0} bs=1 seek={1} conv=notrunc status=none",
        big.display(),
        (8u64 << 30) + 4093
    )), "write ends");
    sh(
        Command::new("touch")
            .arg("-d")
            .arg("@1600000000")
            .arg(&big)
            .arg(&src),
        "touch",
    );
    for fmt in ["gnu", "pax"] {
        let out = scratch.0.join(format!("out-{fmt}"));
        std::fs::create_dir_all(&out).unwrap();
        let mut tar = Command::new("tar")
            .arg(format!("--format={fmt}"))
            .arg("-cf")
            .arg("-")
            .arg("-C")
            .arg(&src)
            .arg(".")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let status = Command::new(ember_bin())
            .args(["tar", "extract", "--into"])
            .arg(&out)
            .arg("-")
            .stdin(tar.stdout.take().unwrap())
            .status()
            .unwrap();
        assert!(tar.wait().unwrap().success());
        assert!(status.success(), "ember failed on the {fmt} archive");
        assert_same(&src, &out, Compare::default(), fmt);
        std::fs::remove_dir_all(&out).unwrap();
    }
}

/// An existing file is replaced by rename (a reader holding the old inode
/// keeps the old content); an existing directory is merged, not replaced.
#[test]
fn existing_file_is_replaced_atomically_and_existing_directory_merged() {
    let scratch = ScratchDir::new("tar-replace");
    let src = scratch.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/config"), b"new content").unwrap();
    let root = scratch.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/config"), b"old content").unwrap();
    std::fs::write(root.join("etc/unrelated"), b"stays").unwrap();
    // Another name for the old inode: it must keep the old bytes.
    std::fs::hard_link(root.join("etc/config"), root.join("old-inode")).unwrap();
    let archive = scratch.path().join("a.tar");
    gnu("pax", false, false)(&src, &archive);
    extract(&archive, &root);
    assert_eq!(
        std::fs::read(root.join("etc/config")).unwrap(),
        b"new content"
    );
    assert_eq!(
        std::fs::read(root.join("old-inode")).unwrap(),
        b"old content"
    );
    assert_eq!(std::fs::read(root.join("etc/unrelated")).unwrap(), b"stays");
    let leftovers: Vec<_> = std::fs::read_dir(root.join("etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".ember-tar"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// `ember tar list` parses with the node's code and shows every member.
#[test]
fn list_shows_members_with_types_owners_and_links() {
    let scratch = ScratchDir::new("tar-list");
    let src = scratch.path().join("src");
    make_tree(&src, "full");
    let archive = scratch.path().join("a.tar.gz");
    gnu("pax", true, true)(&src, &archive);
    let out = Command::new(ember_bin())
        .args(["tar", "list"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "-rwsr-xr-x 0/0",
        "files/setuid",
        "-rw------- 3000000/3000001",
        "crw------- 0/0    300,70000",
        "other/link_abs -> /etc/passwd",
        "link to ",
        "[xattrs: security.capability]",
        "drwxrwxrwt 0/0",
        "ünïcødé/日本語.txt",
    ] {
        assert!(
            text.contains(needle),
            "missing {needle:?} in listing:\n{text}"
        );
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("sha256 "), "{stderr}");
}

/// The comparison itself notices each kind of difference (so the tests
/// above cannot pass by comparing nothing).
#[test]
fn tree_comparison_notices_every_kind_of_difference() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = ScratchDir::new("tar-treecmp");
    let src = scratch.path().join("src");
    make_tree(&src, "full");
    let archive = scratch.path().join("a.tar");
    gnu("pax", false, true)(&src, &archive);
    type Mutation = (&'static str, fn(&Path));
    let mutations: [Mutation; 8] = [
        ("mode", |d| {
            std::fs::set_permissions(
                d.join("files/setuid"),
                std::fs::Permissions::from_mode(0o755),
            )
            .unwrap()
        }),
        ("content", |d| {
            std::fs::write(d.join("files/size_1"), b"Z").unwrap()
        }),
        ("mtime", |d| {
            sh(
                Command::new("touch")
                    .arg("-d")
                    .arg("@1")
                    .arg(d.join("other")),
                "touch",
            )
        }),
        ("owner", |d| {
            std::os::unix::fs::lchown(d.join("files/size_0"), Some(7), None).unwrap()
        }),
        ("symlink target", |d| {
            std::fs::remove_file(d.join("other/link_abs")).unwrap();
            std::os::unix::fs::symlink("/etc/shadow", d.join("other/link_abs")).unwrap();
        }),
        ("hard-link group", |d| {
            let p = d.join("other/hard_other_dir");
            let bytes = std::fs::read(&p).unwrap();
            std::fs::remove_file(&p).unwrap();
            std::fs::write(&p, bytes).unwrap();
        }),
        ("xattrs", |d| {
            sh(
                Command::new("python3")
                    .arg("-c")
                    .arg("import os,sys; os.setxattr(sys.argv[1], 'user.comment', b'changed')")
                    .arg(d.join("files/size_10000")),
                "setxattr",
            )
        }),
        ("missing", |d| {
            std::fs::remove_file(d.join("dev/fifo")).unwrap()
        }),
    ];
    for (what, mutate) in mutations {
        let out = scratch
            .path()
            .join(format!("out-{}", what.replace(' ', "-")));
        extract(&archive, &out);
        assert!(
            ember_tests::tree::diff(&src, &out, Compare::default()).is_empty(),
            "clean extraction differs"
        );
        mutate(&out);
        let d = ember_tests::tree::diff(&src, &out, Compare::default());
        assert!(
            d.iter().any(|l| l.contains(what)),
            "{what}: not noticed: {d:?}"
        );
    }
}

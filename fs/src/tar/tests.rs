//! Pipeline tests on archives built in memory: every chunking of the input
//! gives the same result, and each malformed input gives its own error.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::header::{fill_checksum, BLOCK};
use super::*;

/// What a recording sink saw, one line per call.
#[derive(Default)]
struct Record {
    log: Vec<String>,
    data: Vec<u8>,
    finished: bool,
    aborted: bool,
}

impl Sink for Record {
    fn begin(&mut self, e: &Entry<'_>) -> Result<(), ErrorKind> {
        let x: Vec<String> = e
            .xattrs()
            .map(|(k, v)| {
                alloc::format!(
                    "{}={}",
                    String::from_utf8_lossy(k),
                    String::from_utf8_lossy(v)
                )
            })
            .collect();
        self.log.push(alloc::format!(
            "{:?} {} -> [{}] mode={:o} {}:{} t={}.{} size={} dev={},{} x={:?}",
            e.meta.kind,
            String::from_utf8_lossy(e.path),
            String::from_utf8_lossy(e.link),
            e.meta.mode,
            e.meta.uid,
            e.meta.gid,
            e.meta.mtime.secs,
            e.meta.mtime.nanos,
            e.meta.size,
            e.meta.dev_major,
            e.meta.dev_minor,
            x
        ));
        Ok(())
    }
    fn data(&mut self, b: &[u8]) -> Result<(), ErrorKind> {
        self.data.extend_from_slice(b);
        Ok(())
    }
    fn end(&mut self, e: &Entry<'_>) -> Result<(), ErrorKind> {
        self.log
            .push(alloc::format!("end {}", String::from_utf8_lossy(e.path)));
        Ok(())
    }
    fn skipped(&mut self, name: &[u8], t: u8) {
        self.log.push(alloc::format!(
            "skip {} {}",
            String::from_utf8_lossy(name),
            t as char
        ));
    }
    fn finish(&mut self) -> Result<(), ErrorKind> {
        self.finished = true;
        Ok(())
    }
    fn abort(&mut self) {
        self.aborted = true;
    }
}

struct H {
    name: Vec<u8>,
    typeflag: u8,
    size: u64,
    mode: u32,
    link: Vec<u8>,
    prefix: Vec<u8>,
    gnu: bool,
}

fn h(name: &str, typeflag: u8, size: u64) -> H {
    H {
        name: name.into(),
        typeflag,
        size,
        mode: 0o644,
        link: Vec::new(),
        prefix: Vec::new(),
        gnu: false,
    }
}

fn octal(dst: &mut [u8], v: u64) {
    let s = alloc::format!("{:0w$o}\0", v, w = dst.len() - 1);
    dst.copy_from_slice(s.as_bytes());
}

fn header(hd: &H) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[..hd.name.len()].copy_from_slice(&hd.name);
    octal(&mut b[100..108], u64::from(hd.mode));
    octal(&mut b[108..116], 1000);
    octal(&mut b[116..124], 100);
    if hd.size >= 1 << 33 {
        b[124] = 0x80;
        b[128..136].copy_from_slice(&hd.size.to_be_bytes());
    } else {
        octal(&mut b[124..136], hd.size);
    }
    octal(&mut b[136..148], 1_600_000_000);
    b[156] = hd.typeflag;
    b[157..157 + hd.link.len()].copy_from_slice(&hd.link);
    if hd.gnu {
        b[257..265].copy_from_slice(b"ustar  \0");
    } else {
        b[257..265].copy_from_slice(b"ustar\x0000");
    }
    octal(&mut b[329..337], 4);
    octal(&mut b[337..345], 64);
    b[345..345 + hd.prefix.len()].copy_from_slice(&hd.prefix);
    fill_checksum(&mut b);
    b
}

fn member(out: &mut Vec<u8>, hd: H, data: &[u8]) {
    out.extend_from_slice(&header(&hd));
    out.extend_from_slice(data);
    let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
    out.extend(core::iter::repeat_n(0, pad));
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body_len = key.len() + value.len() + 3;
    let mut len = body_len + 1;
    loop {
        let total = body_len + alloc::format!("{len}").len();
        if total == len {
            break;
        }
        len = total;
    }
    let mut r = alloc::format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

fn end(out: &mut Vec<u8>) {
    out.extend(core::iter::repeat_n(0, 2 * BLOCK));
}

fn sample() -> Vec<u8> {
    let mut a = Vec::new();
    let mut d = h("dir/", b'5', 0);
    d.mode = 0o1755;
    member(&mut a, d, &[]);
    member(&mut a, h("dir/file", b'0', 5), b"hello");
    let mut l = h("dir/link", b'2', 0);
    l.link = b"file".to_vec();
    member(&mut a, l, &[]);
    let mut hl = h("dir/hard", b'1', 0);
    hl.link = b"./dir/file".to_vec();
    member(&mut a, hl, &[]);
    member(&mut a, h("dev", b'3', 0), &[]);
    member(&mut a, h("fifo", b'6', 0), &[]);
    // pax: long path, nanosecond mtime, big uid, an xattr.
    let long: String = "d/".repeat(70) + "f";
    let mut pax = pax_record("path", long.as_bytes());
    pax.extend(pax_record("mtime", b"1700000000.25"));
    pax.extend(pax_record("uid", b"70000"));
    pax.extend(pax_record("SCHILY.xattr.user.k", b"v\n1"));
    member(&mut a, h("PaxHeaders/x", b'x', pax.len() as u64), &pax);
    member(&mut a, h("short", b'0', 3), b"abc");
    // GNU long name
    let gl: String = "g/".repeat(80) + "long";
    let mut ln = h("././@LongLink", b'L', gl.len() as u64 + 1);
    ln.gnu = true;
    let mut name = gl.clone().into_bytes();
    name.push(0);
    member(&mut a, ln, &name);
    let mut g = h("trunc", b'0', 1);
    g.gnu = true;
    member(&mut a, g, b"z");
    // ustar prefix
    let mut p = h("leaf", b'0', 0);
    p.prefix = b"pre/fix".to_vec();
    member(&mut a, p, &[]);
    // unknown type: skipped with its data
    member(&mut a, h("vol", b'V', 4), b"skip");
    end(&mut a);
    a
}

fn run(chunks: &[&[u8]], limits: Limits) -> (Result<Summary, Error>, Record) {
    drive(Extractor::new(Record::default(), limits), chunks)
}

/// Feeds `chunks` in order (stopping at the first error), then finishes.
fn drive(mut x: Extractor<Record>, chunks: &[&[u8]]) -> (Result<Summary, Error>, Record) {
    let mut r = Ok(());
    for c in chunks {
        r = x.write(c);
        if r.is_err() {
            break;
        }
    }
    let res = r.and_then(|()| x.finish());
    (res, x.into_sink())
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0x08, 0, 0, 0, 0, 0, 3];
    out.extend_from_slice(b"name.tar\0");
    out.extend(miniz_oxide::deflate::compress_to_vec(data, 6));
    let mut crc = crate::crc32::Crc32::new();
    crc.update(data);
    out.extend_from_slice(&crc.value().to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

#[test]
fn every_member_type_reaches_the_sink_in_order() {
    let (res, rec) = run(&[&sample()], Limits::default());
    let s = res.unwrap();
    assert_eq!(s.compression, Compression::None);
    assert_eq!(s.entries, 9);
    assert_eq!(s.skipped, 1);
    assert!(rec.finished);
    let long: String = "d/".repeat(70) + "f";
    let gl: String = "g/".repeat(80) + "long";
    let expect = [
        "Directory dir -> [] mode=1755 1000:100 t=1600000000.0 size=0 dev=0,0 x=[]".into(),
        "end dir".into(),
        "File dir/file -> [] mode=644 1000:100 t=1600000000.0 size=5 dev=0,0 x=[]".into(),
        "end dir/file".into(),
        "Symlink dir/link -> [file] mode=644 1000:100 t=1600000000.0 size=0 dev=0,0 x=[]".into(),
        "end dir/link".into(),
        "Hardlink dir/hard -> [dir/file] mode=644 1000:100 t=1600000000.0 size=0 dev=0,0 x=[]".into(),
        "end dir/hard".into(),
        "CharDevice dev -> [] mode=644 1000:100 t=1600000000.0 size=0 dev=4,64 x=[]".into(),
        "end dev".into(),
        "Fifo fifo -> [] mode=644 1000:100 t=1600000000.0 size=0 dev=0,0 x=[]".into(),
        "end fifo".into(),
        alloc::format!("File {long} -> [] mode=644 70000:100 t=1700000000.250000000 size=3 dev=0,0 x=[\"user.k=v\\n1\"]"),
        alloc::format!("end {long}"),
        alloc::format!("File {gl} -> [] mode=644 1000:100 t=1600000000.0 size=1 dev=0,0 x=[]"),
        alloc::format!("end {gl}"),
        "File pre/fix/leaf -> [] mode=644 1000:100 t=1600000000.0 size=0 dev=0,0 x=[]".into(),
        "end pre/fix/leaf".into(),
        "skip vol V".into(),
    ];
    let expect: Vec<String> = expect.to_vec();
    assert_eq!(rec.log, expect);
    assert_eq!(rec.data, b"helloabcz");
}

#[test]
fn any_split_point_gives_the_same_result() {
    let a = sample();
    let (whole, rec_whole) = run(&[&a], Limits::default());
    let whole = whole.unwrap();
    for cut in (0..a.len()).step_by(7) {
        let (r, rec) = run(&[&a[..cut], &a[cut..]], Limits::default());
        assert_eq!(r.unwrap(), whole, "cut at {cut}");
        assert_eq!(rec.log, rec_whole.log);
    }
    let bytes: Vec<&[u8]> = a.chunks(1).collect();
    let (r, rec) = run(&bytes, Limits::default());
    assert_eq!(r.unwrap(), whole);
    assert_eq!(rec.data, rec_whole.data);
}

#[test]
fn gzip_stream_at_any_split_matches_plain_and_hashes_compressed_bytes() {
    let a = sample();
    let gz = gzip(&a);
    let (plain, rec_plain) = run(&[&a], Limits::default());
    let plain = plain.unwrap();
    for cut in (0..gz.len()).step_by(3) {
        let (r, rec) = run(&[&gz[..cut], &gz[cut..]], Limits::default());
        let s = r.unwrap();
        assert_eq!(s.compression, Compression::Gzip);
        assert_eq!(s.tar_bytes, plain.tar_bytes);
        assert_eq!(s.stream_bytes, gz.len() as u64);
        assert_eq!(rec.log, rec_plain.log);
        assert_eq!(rec.data, rec_plain.data);
        use sha2::Digest;
        let d: [u8; 32] = sha2::Sha256::digest(&gz).into();
        assert_eq!(s.sha256, d);
        s.check_sha256(&d).unwrap();
        assert!(matches!(
            s.check_sha256(&[0; 32]).map_err(|e| e.kind.clone()),
            Err(ErrorKind::DigestMismatch { .. })
        ));
    }
}

#[test]
fn concatenated_gzip_members_are_one_stream() {
    let a = sample();
    let (first, second) = a.split_at(1000);
    let mut gz = gzip(first);
    gz.extend(gzip(second));
    let (r, rec) = run(&[&gz], Limits::default());
    r.unwrap();
    assert_eq!(rec.data, b"helloabcz");
}

#[test]
fn gzip_crc_mismatch_is_an_error() {
    let mut gz = gzip(&sample());
    let n = gz.len();
    gz[n - 8] ^= 1;
    let (r, rec) = run(&[&gz], Limits::default());
    assert!(matches!(r.unwrap_err().kind, ErrorKind::GzipCrc { .. }));
    assert!(rec.aborted);
}

#[test]
fn authenticated_stream_skips_the_crc_and_the_digest_but_not_the_size() {
    // The caller's AEAD vouches for every byte: a CRC (here wrong on
    // purpose) is not computed, nor is the stream hashed.
    let mut gz = gzip(&sample());
    let n = gz.len();
    gz[n - 8] ^= 1;
    let mut x = Extractor::authenticated(Record::default(), Limits::default(), Compression::Gzip);
    x.write(&gz).unwrap();
    let summary = x.finish().unwrap();
    assert_eq!(summary.sha256, [0; 32]);
    assert_eq!(x.into_sink().data, b"helloabcz");
    // ISIZE is still checked (it costs nothing).
    let mut gz = gzip(&sample());
    gz[n - 4] ^= 1;
    let mut x = Extractor::authenticated(Record::default(), Limits::default(), Compression::Gzip);
    let r = x.write(&gz).and_then(|()| x.finish().map(|_| ()));
    assert!(matches!(r.unwrap_err().kind, ErrorKind::GzipSize { .. }));
}

#[test]
fn gzip_truncated_in_trailer_is_an_error() {
    let gz = gzip(&sample());
    let (r, _) = run(&[&gz[..gz.len() - 3]], Limits::default());
    assert_eq!(
        r.unwrap_err().kind,
        ErrorKind::Truncated { part: Part::Gzip }
    );
}

#[test]
fn garbage_after_gzip_is_an_error() {
    let mut gz = gzip(&sample());
    gz.extend_from_slice(b"junk");
    let (r, _) = run(&[&gz], Limits::default());
    assert_eq!(r.unwrap_err().kind, ErrorKind::TrailingGarbage);
}

#[test]
fn zip_bomb_stops_at_the_limit() {
    let zeros = vec![0u8; 8 << 20];
    let gz = gzip(&zeros);
    assert!(gz.len() < 64 * 1024);
    let limits = Limits {
        max_tar_bytes: 1 << 20,
        ..Limits::default()
    };
    let (r, _) = run(&[&gz], limits);
    assert_eq!(r.unwrap_err().kind, ErrorKind::TooLarge { limit: 1 << 20 });
}

#[test]
fn bad_checksum_names_the_entry() {
    let mut a = sample();
    a[BLOCK + 4] ^= 0x20; // inside "dir/file"'s name
    let (r, _) = run(&[&a], Limits::default());
    let e = r.unwrap_err();
    assert!(matches!(e.kind, ErrorKind::BadChecksum { .. }));
    assert_eq!(e.entry.as_deref(), Some("dir/File"));
    assert_eq!(e.offset, BLOCK as u64);
}

#[test]
fn truncation_in_header_data_and_end_marker_is_an_error() {
    let a = sample();
    let (r, _) = run(&[&a[..BLOCK + 100]], Limits::default());
    assert_eq!(
        r.unwrap_err().kind,
        ErrorKind::Truncated { part: Part::Header }
    );
    let (r, _) = run(&[&a[..2 * BLOCK + 2]], Limits::default());
    let e = r.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Truncated { part: Part::Data });
    assert_eq!(e.entry.as_deref(), Some("dir/file"));
    let (r, _) = run(&[&a[..3 * BLOCK]], Limits::default());
    assert_eq!(
        r.unwrap_err().kind,
        ErrorKind::Truncated {
            part: Part::EndMarker
        }
    );
    let (r, _) = run(&[], Limits::default());
    assert_eq!(
        r.unwrap_err().kind,
        ErrorKind::Truncated { part: Part::Header }
    );
}

#[test]
fn size_larger_than_stream_is_truncation() {
    let mut a = Vec::new();
    member(&mut a, h("big", b'0', 10 << 30), b"x");
    let (r, _) = run(&[&a], Limits::default());
    let e = r.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Truncated { part: Part::Data });
    assert_eq!(e.entry.as_deref(), Some("big"));
}

#[test]
fn hostile_names_are_refused_by_name() {
    for (name, kind) in [
        ("../evil", ErrorKind::PathEscapes),
        ("/etc/passwd", ErrorKind::AbsolutePath),
        ("a/../../b", ErrorKind::PathEscapes),
    ] {
        let mut a = Vec::new();
        member(&mut a, h(name, b'0', 0), &[]);
        end(&mut a);
        let (r, rec) = run(&[&a], Limits::default());
        let e = r.unwrap_err();
        assert_eq!(e.kind, kind);
        assert_eq!(e.entry.as_deref(), Some(name));
        assert!(rec.log.is_empty());
    }
    let mut a = Vec::new();
    let mut l = h("link", b'1', 0);
    l.link = b"../../etc/shadow".to_vec();
    member(&mut a, l, &[]);
    let (r, _) = run(&[&a], Limits::default());
    assert_eq!(r.unwrap_err().kind, ErrorKind::LinkOutsideRoot);
}

#[test]
fn pax_with_bad_length_is_refused() {
    let mut a = Vec::new();
    let bad = b"99 path=x\n";
    member(&mut a, h("PaxHeaders/x", b'x', bad.len() as u64), bad);
    member(&mut a, h("x", b'0', 0), &[]);
    end(&mut a);
    let (r, _) = run(&[&a], Limits::default());
    assert!(matches!(
        r.unwrap_err().kind,
        ErrorKind::PaxMalformed { .. }
    ));
}

#[test]
fn oversized_pax_and_names_hit_their_limits() {
    let mut a = Vec::new();
    member(&mut a, h("PaxHeaders/x", b'x', 1 << 30), &[]);
    let (r, _) = run(
        &[&a],
        Limits {
            max_pax: 4096,
            ..Limits::default()
        },
    );
    assert_eq!(
        r.unwrap_err().kind,
        ErrorKind::PaxTooLarge {
            size: 1 << 30,
            limit: 4096
        }
    );
    let mut a = Vec::new();
    let mut l = h("././@LongLink", b'L', 5000);
    l.gnu = true;
    member(&mut a, l, &[]);
    let (r, _) = run(&[&a], Limits::default());
    assert!(matches!(
        r.unwrap_err().kind,
        ErrorKind::NameTooLong { len: 5000, .. }
    ));
}

#[test]
fn base256_size_above_8_gib_is_read() {
    let mut a = Vec::new();
    member(&mut a, h("huge", b'0', 9 << 30), &[]);
    let (r, rec) = run(&[&a], Limits::default());
    assert_eq!(
        r.unwrap_err().kind,
        ErrorKind::Truncated { part: Part::Data }
    );
    assert!(rec.log[0].contains("size=9663676416"), "{:?}", rec.log);
}

#[test]
fn v7_directory_by_trailing_slash() {
    let mut a = Vec::new();
    let mut b = header(&h("old/", b'\0', 0));
    b[257..265].fill(0);
    fill_checksum(&mut b);
    a.extend_from_slice(&b);
    end(&mut a);
    let (r, rec) = run(&[&a], Limits::default());
    r.unwrap();
    assert!(rec.log[0].starts_with("Directory old "), "{:?}", rec.log);
}

/// A scratch extraction root for [`FsSink`] tests, removed on drop.
struct TmpRoot(std::path::PathBuf);

impl TmpRoot {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(alloc::format!("ember-fs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(p.join("boot")).unwrap();
        std::fs::create_dir_all(p.join("run/ember")).unwrap();
        std::fs::create_dir_all(p.join("etc")).unwrap();
        std::fs::write(p.join("boot/initrd.cpio.gz"), b"genuine").unwrap();
        TmpRoot(p)
    }

    /// Extracts `tar` with [`Protection::SYSTEM`] in force.
    fn extract(&self, tar: &[u8]) -> Result<Summary, Error> {
        let sink = FsSink::open(self.0.to_str().unwrap(), Confinement::InRoot)
            .unwrap()
            .protect(Protection::SYSTEM)
            .unwrap();
        let mut x = Extractor::new(sink, Limits::default());
        x.write(tar)?;
        x.finish()
    }

    /// Names under boot/ and run/ember/ (what a refusal must leave alone).
    fn protected_listing(&self) -> Vec<String> {
        let mut v = Vec::new();
        for d in ["boot", "run/ember"] {
            for e in std::fs::read_dir(self.0.join(d)).unwrap() {
                v.push(e.unwrap().file_name().to_string_lossy().into_owned());
            }
        }
        v.sort();
        v
    }
}

impl Drop for TmpRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn link(name: &str, typeflag: u8, target: &str) -> H {
    let mut hd = h(name, typeflag, 0);
    hd.link = target.into();
    hd
}

#[test]
fn protection_refuses_system_paths_by_name_and_writes_nothing() {
    let root = TmpRoot::new("protect-names");
    let cases: [(H, &str, ErrorKind); 6] = [
        (
            h("boot/initrd.cpio.gz", b'0', 4),
            "boot/initrd.cpio.gz",
            ErrorKind::Protected { area: "boot" },
        ),
        (
            h("run/ember/overlay.sealed", b'0', 4),
            "run/ember/overlay.sealed",
            ErrorKind::Protected { area: "run/ember" },
        ),
        (
            h("proc/sys/kernel/x", b'0', 4),
            "proc/sys/kernel/x",
            ErrorKind::Protected { area: "proc" },
        ),
        (
            h("dev/", b'5', 0),
            "dev",
            ErrorKind::Protected { area: "dev" },
        ),
        (
            link("etc/evil", b'2', "../boot"),
            "etc/evil",
            ErrorKind::LinkIntoProtected { area: "boot" },
        ),
        (
            link("etc/h", b'1', "boot/initrd.cpio.gz"),
            "etc/h",
            ErrorKind::LinkIntoProtected { area: "boot" },
        ),
    ];
    for (hd, name, kind) in cases {
        let data: &[u8] = if hd.size > 0 { b"evil" } else { b"" };
        let mut a = Vec::new();
        member(&mut a, hd, data);
        end(&mut a);
        let err = root.extract(&a).unwrap_err();
        assert_eq!(err.kind, kind, "{name}");
        assert_eq!(err.entry.as_deref(), Some(name));
        assert!(alloc::format!("{err}").contains(name));
    }
    assert_eq!(root.protected_listing(), ["initrd.cpio.gz"]);
    assert_eq!(
        std::fs::read(root.0.join("boot/initrd.cpio.gz")).unwrap(),
        b"genuine"
    );
    assert!(!root.0.join("etc/evil").exists() && !root.0.join("etc/h").exists());
}

#[test]
fn the_overlay_cannot_replace_the_initrds_trust_files_but_writes_its_own_etc_ember() {
    let root = TmpRoot::new("protect-trust");
    std::fs::create_dir_all(root.0.join("etc/ember")).unwrap();
    std::fs::write(root.0.join("etc/ember/manifest.pub"), b"genuine key").unwrap();
    let cases: [(H, &str, ErrorKind); 5] = [
        (
            h("etc/ember/manifest.pub", b'0', 4),
            "etc/ember/manifest.pub",
            ErrorKind::Protected {
                area: "etc/ember/manifest.pub",
            },
        ),
        (
            h("etc/ember/ca.pem", b'0', 4),
            "etc/ember/ca.pem",
            ErrorKind::Protected {
                area: "etc/ember/ca.pem",
            },
        ),
        // The folder swapped for a link to one the overlay fills.
        (
            link("etc/ember", b'2', "/var/lib/evil"),
            "etc/ember",
            ErrorKind::Protected {
                area: "etc/ember/manifest.pub",
            },
        ),
        (
            link("etc/key", b'2', "ember/manifest.pub"),
            "etc/key",
            ErrorKind::LinkIntoProtected {
                area: "etc/ember/manifest.pub",
            },
        ),
        (
            h("etc", b'0', 4),
            "etc",
            ErrorKind::Protected {
                area: "etc/ember/manifest.pub",
            },
        ),
    ];
    for (hd, name, kind) in cases {
        let data: &[u8] = if hd.size > 0 { b"evil" } else { b"" };
        let mut a = Vec::new();
        member(&mut a, hd, data);
        end(&mut a);
        let err = root.extract(&a).unwrap_err();
        assert_eq!(err.kind, kind, "{name}");
        assert_eq!(err.entry.as_deref(), Some(name));
        assert!(alloc::format!("{err}").contains("protected"), "{err}");
    }
    assert_eq!(
        std::fs::read(root.0.join("etc/ember/manifest.pub")).unwrap(),
        b"genuine key"
    );
    assert!(!root.0.join("etc/ember/ca.pem").exists());
    assert!(std::fs::symlink_metadata(root.0.join("etc/ember"))
        .unwrap()
        .is_dir());
    // node.conf and the folder itself are the overlay's.
    let mut a = Vec::new();
    member(&mut a, h("etc/", b'5', 0), &[]);
    member(&mut a, h("etc/ember/", b'5', 0), &[]);
    member(&mut a, h("etc/ember/node.conf", b'0', 4), b"conf");
    end(&mut a);
    root.extract(&a).unwrap();
    assert_eq!(
        std::fs::read(root.0.join("etc/ember/node.conf")).unwrap(),
        b"conf"
    );
}

#[test]
fn protection_follows_symlinks_already_in_the_root() {
    let root = TmpRoot::new("protect-real");
    // Put there by the system, not the archive: the lexical check cannot
    // see where etc/kernel leads, the real-location check does.
    std::os::unix::fs::symlink("/boot", root.0.join("etc/kernel")).unwrap();
    let mut a = Vec::new();
    member(&mut a, h("etc/kernel/initrd.cpio.gz", b'0', 4), b"evil");
    end(&mut a);
    let err = root.extract(&a).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Protected { area: "boot" });
    assert_eq!(err.entry.as_deref(), Some("etc/kernel/initrd.cpio.gz"));
    assert_eq!(
        std::fs::read(root.0.join("boot/initrd.cpio.gz")).unwrap(),
        b"genuine"
    );
}

#[test]
fn protection_lets_ordinary_entries_through() {
    let root = TmpRoot::new("protect-ok");
    let mut a = Vec::new();
    member(&mut a, h("etc/", b'5', 0), &[]);
    member(&mut a, h("etc/hostname", b'0', 5), b"node1");
    member(&mut a, h("run/embers", b'0', 1), b"x");
    member(&mut a, link("etc/boot", b'2', "bootstrap"), &[]);
    member(&mut a, link("var/run", b'2', "../run"), &[]);
    end(&mut a);
    let s = root.extract(&a).unwrap();
    assert_eq!(s.entries, 5);
    assert_eq!(
        std::fs::read(root.0.join("etc/hostname")).unwrap(),
        b"node1"
    );
}

/// A tar with a 300 KB file that spans several 64 KiB blocks and repeats
/// itself at distances a linked block reaches into its predecessor for,
/// then 70 KB of incompressible bytes (stored as raw blocks).
fn big_sample() -> Vec<u8> {
    let mut a = Vec::new();
    let text: Vec<u8> = (0..300_000u32)
        .map(|i| b"ember overlay "[(i % 14) as usize] ^ ((i / 40_000) as u8))
        .collect();
    member(&mut a, h("big", b'0', text.len() as u64), &text);
    let mut x = 0x1234_5678u32;
    let noise: Vec<u8> = (0..70_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    member(&mut a, h("noise", b'0', noise.len() as u64), &noise);
    end(&mut a);
    a
}

fn lz4_frame(data: &[u8], configure: impl FnOnce(&mut lz4_flex::frame::FrameInfo)) -> Vec<u8> {
    use std::io::Write;
    let mut info = lz4_flex::frame::FrameInfo::new();
    configure(&mut info);
    let mut e = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn run_authenticated(
    chunks: &[&[u8]],
    compression: Compression,
) -> (Result<Summary, Error>, Record) {
    let x = Extractor::authenticated(Record::default(), Limits::default(), compression);
    drive(x, chunks)
}

#[test]
fn lz4_frames_of_every_shape_extract_like_the_plain_tar() {
    use lz4_flex::frame::{BlockMode, BlockSize};
    let a = big_sample();
    let (plain, rec_plain) = run(&[&a], Limits::default());
    let plain = plain.unwrap();
    type Shape = (&'static str, fn(&mut lz4_flex::frame::FrameInfo));
    let shapes: [Shape; 5] = [
        ("linked 64 KiB (what `ember overlay add` writes)", |i| {
            i.block_size = BlockSize::Max64KB;
            i.block_mode = BlockMode::Linked;
        }),
        ("independent 64 KiB", |i| i.block_size = BlockSize::Max64KB),
        ("independent 4 MiB (the lz4 tool's default)", |i| {
            i.block_size = BlockSize::Max4MB;
        }),
        (
            "linked 256 KiB with every checksum and the content size",
            |i| {
                i.block_size = BlockSize::Max256KB;
                i.block_mode = BlockMode::Linked;
                i.block_checksums = true;
                i.content_checksum = true;
                i.content_size = Some(372_224); // big_sample's length
            },
        ),
        ("1 MiB with block checksums", |i| {
            i.block_size = BlockSize::Max1MB;
            i.block_checksums = true;
        }),
    ];
    for (what, configure) in shapes {
        let lz = lz4_frame(&a, configure);
        for cut in [0, 3, 7, 11, 16, 1000, lz.len() / 2, lz.len() - 5, lz.len()] {
            let (r, rec) = run_authenticated(&[&lz[..cut], &lz[cut..]], Compression::Lz4);
            let s = r.unwrap_or_else(|e| panic!("{what}, cut at {cut}: {e}"));
            assert_eq!(s.compression, Compression::Lz4);
            assert_eq!(s.tar_bytes, plain.tar_bytes, "{what}");
            assert_eq!(rec.log, rec_plain.log, "{what}");
            assert_eq!(rec.data, rec_plain.data, "{what}");
        }
        // Byte by byte through the header and the first block size.
        let mut pieces: Vec<&[u8]> = lz[..24].chunks(1).collect();
        pieces.push(&lz[24..]);
        let (r, rec) = run_authenticated(&pieces, Compression::Lz4);
        r.unwrap();
        assert_eq!(rec.data, rec_plain.data, "{what}");
    }
}

#[test]
fn concatenated_lz4_frames_are_one_stream() {
    let a = sample();
    let (first, second) = a.split_at(1000);
    let mut lz = lz4_frame(first, |_| {});
    lz.extend(lz4_frame(second, |_| {}));
    let (r, rec) = run_authenticated(&[&lz], Compression::Lz4);
    r.unwrap();
    assert_eq!(rec.data, b"helloabcz");
}

#[test]
fn plain_tar_extracts_when_the_manifest_says_none() {
    let (r, rec) = run_authenticated(&[&sample()], Compression::None);
    assert_eq!(r.unwrap().compression, Compression::None);
    assert_eq!(rec.data, b"helloabcz");
}

#[test]
fn a_stream_in_another_compression_than_declared_is_refused() {
    let a = sample();
    let (r, rec) = run_authenticated(&[&gzip(&a)], Compression::Lz4);
    assert_eq!(
        r.unwrap_err().kind,
        ErrorKind::Lz4Header {
            reason: "bad magic"
        }
    );
    assert!(rec.aborted);
    let (r, _) = run_authenticated(&[&lz4_frame(&a, |_| {})], Compression::Gzip);
    assert!(matches!(r.unwrap_err().kind, ErrorKind::GzipHeader { .. }));
    let (r, _) = run_authenticated(&[&lz4_frame(&a, |_| {})], Compression::None);
    assert!(r.is_err());
}

#[test]
fn truncated_lz4_frame_is_an_error_wherever_it_stops() {
    let lz = lz4_frame(&big_sample(), |i| {
        i.block_mode = lz4_flex::frame::BlockMode::Linked;
    });
    // In the header, in a block size, inside a block, before the end mark.
    for keep in [5, 9, 12, 5000, lz.len() - 4] {
        let (r, rec) = run_authenticated(&[&lz[..keep]], Compression::Lz4);
        let kind = r.unwrap_err().kind.clone();
        assert_eq!(
            kind,
            ErrorKind::Truncated { part: Part::Lz4 },
            "keep {keep}"
        );
        assert!(rec.aborted);
    }
}

#[test]
fn malformed_lz4_frames_each_get_their_own_error() {
    let good = lz4_frame(&sample(), |_| {});
    let refused = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut lz = good.clone();
        edit(&mut lz);
        run_authenticated(&[&lz], Compression::Lz4)
            .0
            .unwrap_err()
            .kind
            .clone()
    };
    let header = |reason| ErrorKind::Lz4Header { reason };
    assert_eq!(refused(&|lz| lz[0] ^= 1), header("bad magic"));
    assert_eq!(
        refused(&|lz| lz[4] ^= 0x80),
        header("unknown frame version")
    );
    assert_eq!(refused(&|lz| lz[4] |= 0x02), header("reserved bits set"));
    assert_eq!(refused(&|lz| lz[5] |= 0x01), header("reserved bits set"));
    assert_eq!(refused(&|lz| lz[4] |= 0x01), header("needs a dictionary"));
    assert_eq!(refused(&|lz| lz[5] = 0x30), header("unknown block size"));
    // The first block's size word (after the 7-byte header) claims more
    // than the frame's 64 KiB maximum.
    assert_eq!(
        refused(&|lz| lz[7..11].copy_from_slice(&(70_000u32).to_le_bytes())),
        ErrorKind::Lz4Block {
            reason: "block larger than the frame's block size"
        }
    );
    // A match offset pointing before the block's start (no history in an
    // independent frame): the first sequence's token asks for a match,
    // and its offset is out of range.
    let mut bad = good[..7].to_vec();
    let block = [0x1fu8, b'x', 0xff, 0xff];
    bad.extend_from_slice(&(block.len() as u32).to_le_bytes());
    bad.extend_from_slice(&block);
    bad.extend_from_slice(&[0; 4]);
    let (r, _) = run_authenticated(&[&bad], Compression::Lz4);
    assert_eq!(
        r.unwrap_err().kind,
        ErrorKind::Lz4Block {
            reason: "corrupt block"
        }
    );
    // Garbage after a complete frame is not another frame.
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"junk, not a frame");
    let (r, _) = run_authenticated(&[&trailing], Compression::Lz4);
    assert_eq!(r.unwrap_err().kind, header("bad magic"));
}

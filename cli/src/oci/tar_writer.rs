//! A deterministic tar writer for a tree: POSIX ustar headers, pax records
//! only for what ustar cannot hold (long names, long link targets, sizes of
//! 8 GiB and more). Every member is root-owned and dated `mtime`, in the
//! tree's sorted order, so the same tree gives the same bytes.

use ember_fs::cpio::Output;
use ember_fs::tar::header::{field, fill_checksum, BLOCK};

use crate::initrd::{Node, Tree};

/// The largest value an 11-digit octal size field holds.
const MAX_USTAR_SIZE: u64 = 0o77777777777;

/// One member as the writer sees it.
struct Member<'a> {
    name: String,
    typeflag: u8,
    mode: u32,
    data: &'a [u8],
    link: &'a str,
    dev: (u32, u32),
}

/// Writes `tree` as a tar stream (with the two zero end blocks) to `out`.
pub fn write_tree<O: Output>(tree: &Tree, mtime: u32, out: &mut O) -> Result<(), ember_fs::Error> {
    for (path, node) in tree.iter() {
        let m = member(path, node);
        write_member(out, &m, mtime)?;
    }
    out.put(&[0u8; 2 * BLOCK])
}

fn member<'a>(path: &str, node: &'a Node) -> Member<'a> {
    let base = Member {
        name: path.to_string(),
        typeflag: b'0',
        mode: 0,
        data: &[],
        link: "",
        dev: (0, 0),
    };
    match node {
        Node::Dir { mode } => Member {
            name: format!("{path}/"),
            typeflag: b'5',
            mode: *mode,
            ..base
        },
        Node::File { data, mode } => Member {
            mode: *mode,
            data,
            ..base
        },
        Node::Symlink { target } => Member {
            typeflag: b'2',
            mode: 0o777,
            link: target,
            ..base
        },
        Node::CharDevice { major, minor, mode } => Member {
            typeflag: b'3',
            mode: *mode,
            dev: (*major, *minor),
            ..base
        },
        Node::BlockDevice { major, minor, mode } => Member {
            typeflag: b'4',
            mode: *mode,
            dev: (*major, *minor),
            ..base
        },
        Node::Fifo { mode } => Member {
            typeflag: b'6',
            mode: *mode,
            ..base
        },
    }
}

fn write_member<O: Output>(out: &mut O, m: &Member<'_>, mtime: u32) -> Result<(), ember_fs::Error> {
    let size = m.data.len() as u64;
    let split = split_name(&m.name);
    let mut pax = Vec::new();
    if split.is_none() {
        pax_record(&mut pax, "path", &m.name);
    }
    if m.link.len() > field::LINKNAME.len() {
        pax_record(&mut pax, "linkpath", m.link);
    }
    if size > MAX_USTAR_SIZE {
        pax_record(&mut pax, "size", &size.to_string());
    }
    if !pax.is_empty() {
        // The pax header's own name only has to be stable and fit.
        let base = m
            .name
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("");
        let name: String = format!("PaxHeaders/{base}").chars().take(99).collect();
        let mut block = header(&name, "", b'x', 0o644, pax.len() as u64, mtime, "", (0, 0));
        fill_checksum(&mut block);
        out.put(&block)?;
        put_padded(out, &pax)?;
    }
    let (prefix, name) = split.unwrap_or(("", truncate(&m.name, field::NAME.len())));
    let link = truncate(m.link, field::LINKNAME.len());
    let size_field = if size > MAX_USTAR_SIZE { 0 } else { size };
    let mut block = header(
        name, prefix, m.typeflag, m.mode, size_field, mtime, link, m.dev,
    );
    fill_checksum(&mut block);
    out.put(&block)?;
    put_padded(out, m.data)
}

#[allow(clippy::too_many_arguments)]
fn header(
    name: &str,
    prefix: &str,
    typeflag: u8,
    mode: u32,
    size: u64,
    mtime: u32,
    link: &str,
    dev: (u32, u32),
) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[field::NAME][..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut b[field::MODE], u64::from(mode & 0o7777));
    octal(&mut b[field::UID], 0);
    octal(&mut b[field::GID], 0);
    octal(&mut b[field::SIZE], size);
    octal(&mut b[field::MTIME], u64::from(mtime));
    b[field::TYPEFLAG] = typeflag;
    b[field::LINKNAME][..link.len()].copy_from_slice(link.as_bytes());
    b[field::MAGIC].copy_from_slice(b"ustar\0");
    b[field::VERSION].copy_from_slice(b"00");
    b[field::UNAME][..4].copy_from_slice(b"root");
    b[field::GNAME][..4].copy_from_slice(b"root");
    octal(&mut b[field::DEVMAJOR], u64::from(dev.0));
    octal(&mut b[field::DEVMINOR], u64::from(dev.1));
    b[field::PREFIX][..prefix.len()].copy_from_slice(prefix.as_bytes());
    b
}

/// Zero-padded octal filling the field but its last byte (a NUL).
fn octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    // Values that do not fit were moved to pax records by the caller.
    let s = &s[s.len().saturating_sub(digits)..];
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

/// Splits a name into ustar (prefix, name) at a `/`, if it fits at all.
fn split_name(name: &str) -> Option<(&str, &str)> {
    if name.len() <= field::NAME.len() {
        return Some(("", name));
    }
    // The name part must be non-empty: search from the left so that the
    // prefix is as short as it can be while the rest fits in 100 bytes.
    let body = name.trim_end_matches('/');
    for (i, _) in body.match_indices('/') {
        let (prefix, rest) = (&name[..i], &name[i + 1..]);
        if prefix.len() <= field::PREFIX.len()
            && rest.len() <= field::NAME.len()
            && !rest.is_empty()
        {
            return Some((prefix, rest));
        }
    }
    None
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Appends one `"<len> <key>=<value>\n"` record; the length counts itself.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &str) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}={value}\n").as_bytes());
}

fn put_padded<O: Output>(out: &mut O, data: &[u8]) -> Result<(), ember_fs::Error> {
    out.put(data)?;
    let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
    out.put(&[0u8; BLOCK][..pad])
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_fs::tar::{Entry, ErrorKind, Extractor, Kind, Limits, Sink};

    #[derive(Default)]
    struct Names(Vec<(String, Kind, u32, String, usize)>);

    impl Sink for Names {
        fn begin(&mut self, e: &Entry<'_>) -> Result<(), ErrorKind> {
            self.0.push((
                String::from_utf8_lossy(e.path).into_owned(),
                e.meta.kind,
                e.meta.mode,
                String::from_utf8_lossy(e.link).into_owned(),
                0,
            ));
            Ok(())
        }
        fn data(&mut self, b: &[u8]) -> Result<(), ErrorKind> {
            if let Some(last) = self.0.last_mut() {
                last.4 += b.len();
            }
            Ok(())
        }
        fn end(&mut self, _: &Entry<'_>) -> Result<(), ErrorKind> {
            Ok(())
        }
    }

    #[test]
    fn pax_record_length_counts_its_own_digits() {
        let mut v = Vec::new();
        pax_record(&mut v, "path", "a");
        assert_eq!(v, b"9 path=a\n");
        let mut v = Vec::new();
        let long = "x".repeat(95);
        pax_record(&mut v, "path", &long);
        assert_eq!(v.len(), 105);
        assert!(v.starts_with(b"105 path="));
    }

    #[test]
    fn long_names_and_links_round_trip_through_the_node_tar_reader() {
        let mut t = Tree::new();
        let deep = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        let huge = "n".repeat(300);
        let target = "t/".repeat(80);
        t.insert(
            &deep,
            Node::File {
                data: vec![7; 1000],
                mode: 0o640,
            },
        )
        .unwrap();
        t.insert(
            &huge,
            Node::Symlink {
                target: target.clone(),
            },
        )
        .unwrap();
        t.insert(
            "dev/null",
            Node::CharDevice {
                major: 1,
                minor: 3,
                mode: 0o666,
            },
        )
        .unwrap();
        let mut out = Vec::new();
        write_tree(&t, 0, &mut out).unwrap();
        let mut ex = Extractor::new(Names::default(), Limits::default());
        ex.write(&out).unwrap();
        ex.finish().unwrap();
        let names = ex.into_sink().0;
        let find = |p: &str| names.iter().find(|n| n.0 == p).cloned().unwrap();
        assert_eq!(find(&deep).1, Kind::File);
        assert_eq!(find(&deep).2, 0o640);
        assert_eq!(find(&deep).4, 1000);
        assert_eq!(find(&huge).1, Kind::Symlink);
        assert_eq!(find(&huge).3, target);
        assert_eq!(find("dev/null").1, Kind::CharDevice);
        assert_eq!(names.len(), t.len());
    }

    #[test]
    fn same_tree_gives_same_bytes() {
        let mut t = Tree::new();
        t.insert(
            "a/b",
            Node::File {
                data: b"x".to_vec(),
                mode: 0o644,
            },
        )
        .unwrap();
        let (mut x, mut y) = (Vec::new(), Vec::new());
        write_tree(&t, 5, &mut x).unwrap();
        write_tree(&t, 5, &mut y).unwrap();
        assert_eq!(x, y);
        assert_eq!(x.len() % BLOCK, 0);
    }
}

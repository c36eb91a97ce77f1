//! The tar pipeline (gzip detection, inflate, CRC, SHA-256, header parser,
//! pax, state machine) on arbitrary bytes split at arbitrary points, with a
//! sink that checks the contract the filesystem sink relies on: confined
//! names, begin/data/end pairing, and data summing to the declared size.
#![no_main]

use ember_fs::tar::{Entry, ErrorKind, Extractor, Kind, Limits, Sink};
use libfuzzer_sys::fuzz_target;

#[derive(Default)]
struct Checker {
    open: Option<(Kind, u64)>,
    data: u64,
}

fn confined(p: &[u8]) {
    assert!(!p.starts_with(b"/") && !p.ends_with(b"/"), "not confined: {p:?}");
    if p.is_empty() {
        return;
    }
    for c in p.split(|&b| b == b'/') {
        assert!(!c.is_empty() && c != b"." && c != b"..", "bad component in {p:?}");
        assert!(!c.contains(&0));
    }
}

impl Sink for Checker {
    fn begin(&mut self, e: &Entry<'_>) -> Result<(), ErrorKind> {
        assert!(self.open.is_none(), "begin inside an entry");
        confined(e.path);
        if e.meta.kind == Kind::Hardlink {
            confined(e.link);
            assert!(!e.link.is_empty());
        }
        if e.meta.kind != Kind::Directory {
            assert!(!e.path.is_empty(), "non-directory at the root");
        }
        assert!(e.meta.mode <= 0o7777);
        for (k, _) in e.xattrs() {
            assert!(!k.is_empty());
        }
        self.open = Some((e.meta.kind, e.meta.size));
        self.data = 0;
        Ok(())
    }
    fn data(&mut self, b: &[u8]) -> Result<(), ErrorKind> {
        let (kind, size) = self.open.expect("data outside an entry");
        assert_eq!(kind, Kind::File);
        self.data += b.len() as u64;
        assert!(self.data <= size, "more data than declared");
        Ok(())
    }
    fn end(&mut self, e: &Entry<'_>) -> Result<(), ErrorKind> {
        let (kind, size) = self.open.take().expect("end without begin");
        assert_eq!(kind, e.meta.kind);
        if kind == Kind::File {
            assert_eq!(self.data, size, "file data short of its size");
        }
        Ok(())
    }
}

fuzz_target!(|input: &[u8]| {
    // First byte: how many split points follow (two bytes each).
    let (splits, mut rest) = match input.split_first() {
        Some((&n, rest)) => {
            let n = usize::from(n % 8).min(rest.len() / 2);
            let (s, r) = rest.split_at(n * 2);
            (s, r)
        }
        None => (&[][..], input),
    };
    let limits = Limits { max_tar_bytes: 4 << 20, max_pax: 64 * 1024, max_name: 1024 };
    let mut x = Extractor::new(Checker::default(), limits);
    let mut ok = true;
    for s in splits.chunks(2) {
        let at = (usize::from(s[0]) << 8 | usize::from(s[1])).min(rest.len());
        let (chunk, r) = rest.split_at(at);
        rest = r;
        if x.write(chunk).is_err() {
            ok = false;
            break;
        }
    }
    if ok && x.write(rest).is_ok() {
        if x.finish().is_ok() {
            assert!(x.sink().open.is_none(), "finished inside an entry");
        }
    }
});

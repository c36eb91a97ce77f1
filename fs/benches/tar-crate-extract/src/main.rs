//! `tar-crate-extract FILE DIR`: extracts a tar or tar.gz (detected by
//! magic) with the `tar` crate, preserving what ember preserves.

use std::io::{BufReader, Read};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (file, dir) = match &args[..] {
        [_, f, d] => (f, d),
        _ => {
            eprintln!("usage: tar-crate-extract FILE DIR");
            std::process::exit(2);
        }
    };
    let mut f = BufReader::with_capacity(256 * 1024, std::fs::File::open(file).expect("open archive"));
    let mut magic = [0u8; 2];
    f.get_mut().read_exact(&mut magic).expect("read magic");
    let f = std::fs::File::open(file).expect("reopen archive");
    let input: Box<dyn Read> = if magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(BufReader::with_capacity(256 * 1024, f)))
    } else {
        Box::new(BufReader::with_capacity(256 * 1024, f))
    };
    let mut a = tar::Archive::new(input);
    a.set_preserve_permissions(true);
    a.set_preserve_ownerships(true);
    a.set_preserve_mtime(true);
    a.set_unpack_xattrs(true);
    a.set_overwrite(true);
    if let Err(e) = a.unpack(dir) {
        eprintln!("tar-crate-extract: {e}");
        std::process::exit(1);
    }
}

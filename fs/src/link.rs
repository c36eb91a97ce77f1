//! readlink(2) for PID 1.

use alloc::vec;
use alloc::vec::Vec;
use rustix::fd::AsFd;
use rustix::path::Arg;

/// The target of the symlink `path` (relative to `dirfd`), as bytes.
///
/// rustix's `readlinkat` does the same but returns a `CString` made with
/// `CString::new(..).unwrap()`, whose panic path links `NulError`'s Debug
/// impl into /init (about 1.3 KB); a link target never holds a NUL.
pub fn read_link<Fd: AsFd, P: Arg + Copy>(dirfd: Fd, path: P) -> rustix::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        let n = rustix::fs::readlinkat_raw(dirfd.as_fd(), path, &mut buf[..])?;
        if n < buf.len() {
            buf.truncate(n);
            return Ok(buf);
        }
        // Filled: the target may be longer (the kernel truncates silently).
        buf.resize(buf.len() * 2, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_short_and_long_targets_and_refuses_non_links() {
        let dir = std::env::temp_dir().join(format!("ember-fs-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let long = "d/".repeat(300) + "end";
        for (name, target) in [("short", "a/b"), ("long", long.as_str())] {
            let link = dir.join(name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(target, &link).unwrap();
            let got = read_link(rustix::fs::CWD, link.to_str().unwrap()).unwrap();
            assert_eq!(got, target.as_bytes());
        }
        let err = read_link(rustix::fs::CWD, dir.to_str().unwrap()).unwrap_err();
        assert_eq!(err, rustix::io::Errno::INVAL);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

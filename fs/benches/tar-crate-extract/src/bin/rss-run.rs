//! `rss-run CMD ARGS...`: runs CMD and prints its peak RSS in bytes on stderr
//! as `rss-run: maxrss=N`. Linux carries the spawner's own high-water mark
//! into the child across exec, so the spawner must be small: this is.

use std::os::unix::process::CommandExt;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("usage: rss-run CMD [ARGS...]");
        std::process::exit(2);
    };
    let mut child = std::process::Command::new(cmd).args(rest).process_group(0).spawn().expect("spawn");
    let status = child.wait().expect("wait");
    // SAFETY: rusage is plain integers and timevals: all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let cpu_us = |t: libc::timeval| t.tv_sec as i64 * 1_000_000 + t.tv_usec as i64;
    eprintln!("rss-run: maxrss={} cpu_us={}", ru.ru_maxrss * 1024, cpu_us(ru.ru_utime) + cpu_us(ru.ru_stime));
    std::process::exit(status.code().unwrap_or(1));
}

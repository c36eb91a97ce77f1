//! Links `ember-standin` statically: it runs inside an initrd that has no
//! libc and no dynamic loader.
//!
//! `-C target-feature=+crt-static` cannot be set for one package on stable
//! cargo (and global RUSTFLAGS would reach every crate and build script), so
//! this passes `-static-pie` to this package's links only. rustc still asks for
//! the dynamic system libraries (`-Bdynamic -lgcc_s -lc ...`) on a non
//! crt-static target; the linker scripts below, found first in the search
//! path, redirect each of those names to its static archive.

use std::env;
use std::fs;
use std::path::PathBuf;

const REDIRECTS: [(&str, &str); 7] = [
    ("gcc_s", "INPUT(libgcc_eh.a)"),
    ("util", "INPUT(libutil.a)"),
    ("rt", "INPUT(librt.a)"),
    ("pthread", "INPUT(libpthread.a)"),
    ("m", "INPUT(libm.a)"),
    ("dl", "INPUT(libdl.a)"),
    ("c", "GROUP(libc.a libgcc.a libgcc_eh.a)"),
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // This package is only the program (what the init shares with it lives
    // in ember-nodeapi), so nothing inherits these search paths.
    let target = env::var("TARGET").unwrap_or_default();
    if !target.ends_with("-linux-gnu") {
        // musl targets link statically by default.
        return;
    }
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("static-libs");
    fs::create_dir_all(&out).expect("create OUT_DIR/static-libs");
    for (name, script) in REDIRECTS {
        fs::write(out.join(format!("lib{name}.so")), script).expect("write linker script");
    }
    println!("cargo:rustc-link-search=native={}", out.display());
    // All of the package's linked targets (the binary and its test harnesses)
    // see the redirects, so all of them link statically.
    println!("cargo:rustc-link-arg=-static-pie");
}

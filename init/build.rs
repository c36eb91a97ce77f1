// Only the PID 1 binary is linked without libc and start files; build
// scripts and the library's unit tests stay ordinary host programs.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rustc-link-arg-bins=-nostartfiles");
    println!("cargo:rustc-link-arg-bins=-nostdlib");
    println!("cargo:rustc-link-arg-bins=-static");
    // No dynamic loader ever applies RELRO to this binary, and its page
    // padding is 2 KiB of the 512 KiB budget.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,norelro");
    // Nothing reads a build ID from PID 1 (160 bytes with its note).
    println!("cargo:rustc-link-arg-bins=-Wl,--build-id=none");
    // The unwind tables go at link time (see the script for why).
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = PathBuf::from(manifest).join("no-unwind-tables.ld");
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
    println!("cargo:rerun-if-changed=no-unwind-tables.ld");
    // Identical code folding: generic code instantiated for types with the
    // same layout is emitted once (about 15 KiB of /init). Rust does not
    // promise distinct addresses for distinct functions, so folding is
    // sound. It needs lld; the toolchain ships it as rust-lld with a
    // `ld.lld` wrapper for cc under lib/rustlib/<target>/bin/gcc-ld.
    match rust_lld_dir() {
        Some(dir) => {
            println!("cargo:rustc-link-arg-bins=-B{}", dir.display());
            println!("cargo:rustc-link-arg-bins=-fuse-ld=lld");
            println!("cargo:rustc-link-arg-bins=-Wl,--icf=all");
        }
        None => println!(
            "cargo:warning=rust-lld not found in the toolchain: /init is linked without identical code folding and will be over its size budget"
        ),
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC");
}

fn rust_lld_dir() -> Option<PathBuf> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let sysroot = String::from_utf8(out.stdout).ok()?;
    let host = std::env::var("HOST").ok()?;
    let dir = PathBuf::from(sysroot.trim())
        .join("lib/rustlib")
        .join(host)
        .join("bin/gcc-ld");
    dir.join("ld.lld").is_file().then_some(dir)
}

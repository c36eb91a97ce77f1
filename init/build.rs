// Only the PID 1 binary is linked without libc and start files; build
// scripts and the library's unit tests stay ordinary host programs.
fn main() {
    println!("cargo:rustc-link-arg-bins=-nostartfiles");
    println!("cargo:rustc-link-arg-bins=-nostdlib");
    println!("cargo:rustc-link-arg-bins=-static");
    println!("cargo:rerun-if-changed=build.rs");
}

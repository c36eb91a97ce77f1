//! The /init binary: program start (origin), allocator and panic policy.
//! Everything else is in the library, starting at `boot::run`.
#![no_std]
#![no_main]

extern crate alloc;
extern crate origin;

#[global_allocator]
static GLOBAL: rustix_dlmalloc::GlobalDlmalloc = rustix_dlmalloc::GlobalDlmalloc;

/// PID 1 must not exit, and a panic is a bug: say so on the console, give
/// the operator time to read it, flush filesystems and reboot.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    ember_init::error!("internal error (bug): {info}; rebooting in 10 s");
    ember_init::clock::sleep_ms(10_000);
    rustix::fs::sync();
    let _ = rustix::system::reboot(rustix::system::RebootCommand::Restart);
    loop {
        ember_init::clock::sleep_ms(60_000);
    }
}

#[unsafe(no_mangle)]
unsafe fn origin_main(_argc: usize, _argv: *mut *mut u8, _envp: *mut *mut u8) -> i32 {
    // Run by hand on a workstation, the boot sequence would mount over /tmp
    // and /run and reconfigure the network: only the kernel may start it.
    if !rustix::process::getpid().is_init() {
        let msg = b"ember-init: this is a node's PID 1 and must be started by the kernel; refusing to run\n";
        // SAFETY: fd 2 is whatever stderr the caller gave us (at worst not
        // open, which the write reports as EBADF); nothing here closes it.
        let _ = rustix::io::write(unsafe { rustix::stdio::stderr() }, msg);
        return 2;
    }
    ember_init::boot::run()
}

/// The precompiled `alloc` references the unwinding personality routine
/// even though this binary is built with panic=abort and never unwinds.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

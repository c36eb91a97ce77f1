#![no_std]
#![no_main]
extern crate alloc;
extern crate origin;

#[global_allocator]
static GLOBAL: rustix_dlmalloc::GlobalDlmalloc = rustix_dlmalloc::GlobalDlmalloc;

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(no_mangle)]
unsafe fn origin_main(_argc: usize, _argv: *mut *mut u8, _envp: *mut *mut u8) -> i32 {
    let _ = rustix::io::write(rustix::stdio::stdout(), b"hello\n");
    0
}

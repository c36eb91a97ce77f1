//! How fast the node's AEAD opens and seals, on this CPU, as /init calls it
//! (issue 28 item 4: the opener near the hardware). A bench, never a test:
//! it prints figures and never fails for being slow.
//!
//! `ember_aead::open` and `ember_aead::seal` are timed over `--mb` MiB
//! (default 20, the bench overlay's size) in chunks of the sealed format's
//! default size (`sealed::DEFAULT_CHUNK`, 64 KiB), `--runs` times (default
//! 7), by process CPU time. This binary is built at ember-tests' opt-level
//! ("z", like /init), so it measures what a caller at "z" gets from
//! ember-aead's opt-level-3 code. The backend is the one ember-aead picks at
//! run time: AVX2 on a CPU that has it, the scalar path elsewhere (run it
//! as `qemu-x86_64 -cpu qemu64 target/release/aead-bench` to see the one
//! TCG guests get).
//!
//! Output: one JSON object on the first line (for scripts), then a table.

use ember_aead::{ChaCha20Poly1305, Key, KeyInit, Nonce};
use ember_proto::sealed::DEFAULT_CHUNK;
use rustix::time::{clock_gettime, ClockId};

fn cpu_s() -> f64 {
    let t = clock_gettime(ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    match args.iter().position(|a| a == name) {
        Some(i) => match args.get(i + 1).and_then(|v| v.parse().ok()) {
            Some(v) if v > 0 => v,
            _ => {
                eprintln!("aead-bench: {name} takes a positive number");
                std::process::exit(2);
            }
        },
        None => default,
    }
}

/// Median and minimum of `xs` (seconds), which is not empty.
fn median_min(xs: &mut [f64]) -> (f64, f64) {
    xs.sort_by(f64::total_cmp);
    (xs[xs.len() / 2], xs[0])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: aead-bench [--mb MIB] [--runs N]");
        return;
    }
    let mib = arg(&args, "--mb", 20);
    let runs = arg(&args, "--runs", 7);
    let chunk = DEFAULT_CHUNK as usize;
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&[7u8; 32]));
    let aad = [0x45u8; 48];
    let mut data: Vec<u8> = (0..mib << 20).map(|i| (i * 131 + 7) as u8).collect();
    let chunks = data.len().div_ceil(chunk);
    let nonce = |i: usize| {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&(i as u64).to_be_bytes());
        *Nonce::from_slice(&n)
    };

    let mut tags = Vec::with_capacity(chunks);
    let mut seal = Vec::with_capacity(runs);
    let mut open = Vec::with_capacity(runs);
    for _ in 0..runs {
        // Seal, then open what was sealed: the data round-trips each run.
        tags.clear();
        let t0 = cpu_s();
        for (i, c) in data.chunks_mut(chunk).enumerate() {
            tags.push(ember_aead::seal(&cipher, &nonce(i), &aad, c).expect("seal"));
        }
        let t1 = cpu_s();
        for (i, c) in data.chunks_mut(chunk).enumerate() {
            ember_aead::open(&cipher, &nonce(i), &aad, c, &tags[i]).expect("open");
        }
        let t2 = cpu_s();
        seal.push(t1 - t0);
        open.push(t2 - t1);
    }
    let intact = data
        .iter()
        .enumerate()
        .all(|(i, &b)| b == (i * 131 + 7) as u8);
    if !intact {
        eprintln!("aead-bench: the data did not round-trip");
        std::process::exit(1);
    }
    let bytes = data.len() as f64;
    let (open_med, open_min) = median_min(&mut open);
    let (seal_med, seal_min) = median_min(&mut seal);
    let gbs = |s: f64| bytes / s / 1e9;
    let avx2 = std::arch::is_x86_feature_detected!("avx2");
    println!(
        "{{\"bytes\":{},\"chunk\":{chunk},\"runs\":{runs},\"avx2\":{avx2},\
         \"open_ms_median\":{:.2},\"open_ms_min\":{:.2},\"open_gbps_median\":{:.3},\
         \"seal_ms_median\":{:.2},\"seal_ms_min\":{:.2},\"seal_gbps_median\":{:.3}}}",
        data.len(),
        open_med * 1e3,
        open_min * 1e3,
        gbs(open_med),
        seal_med * 1e3,
        seal_min * 1e3,
        gbs(seal_med),
    );
    println!();
    println!("| {mib} MiB in {chunk}-byte chunks, {runs} runs (AVX2: {avx2}) | median ms | min ms | GB/s (median) |");
    println!("|---|---:|---:|---:|");
    for (name, med, min) in [("open", open_med, open_min), ("seal", seal_med, seal_min)] {
        println!(
            "| {name} | {:.1} | {:.1} | {:.2} |",
            med * 1e3,
            min * 1e3,
            gbs(med)
        );
    }
}

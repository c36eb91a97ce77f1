//! CRC-32 (IEEE, reflected) of every inflated byte: carry-less multiply
//! folding (PCLMULQDQ, detected at run time with cpuid, no std needed) where
//! the CPU has it, slicing-by-8 tables otherwise. Both matter: a 500 MB
//! overlay is half a second of byte-at-a-time table CRC.

fn build_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut s = 1;
    while s < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        s += 1;
    }
    t
}

/// The slicing-by-8 tables, built on first use rather than stored in the
/// binary: 8 KiB of /init's 512 KiB budget for a few microseconds once.
fn tables() -> &'static [[u32; 256]; 8] {
    use core::sync::atomic::{AtomicPtr, Ordering};
    static TABLES: AtomicPtr<[[u32; 256]; 8]> = AtomicPtr::new(core::ptr::null_mut());
    let mut ptr = TABLES.load(Ordering::Acquire);
    if ptr.is_null() {
        let fresh = alloc::boxed::Box::into_raw(alloc::boxed::Box::new(build_tables()));
        ptr = match TABLES.compare_exchange(
            core::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => fresh,
            Err(winner) => {
                // SAFETY: `fresh` came from Box::into_raw above and was
                // never published.
                drop(unsafe { alloc::boxed::Box::from_raw(fresh) });
                winner
            }
        };
    }
    // SAFETY: a published pointer is a leaked Box, never freed or written.
    unsafe { &*ptr }
}

#[derive(Debug, Clone, Copy)]
pub struct Crc32 {
    state: u32,
    clmul: bool,
}

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32 {
    pub fn new() -> Self {
        Crc32 {
            state: 0xFFFF_FFFF,
            clmul: clmul::available(),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        #[cfg(target_arch = "x86_64")]
        if self.clmul && bytes.len() >= 128 {
            // SAFETY: `available()` checked PCLMULQDQ and SSE4.1 with
            // cpuid, and `bytes` holds more than the 64 bytes `fold` loads
            // before its length checks (at least 128, checked just above).
            let (state, rest) = unsafe { clmul::fold(self.state, bytes) };
            self.state = state;
            self.update_table(rest);
            return;
        }
        self.update_table(bytes);
    }

    fn update_table(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let t = tables();
        let mut c = self.state;
        let mut chunks = bytes.chunks_exact(8);
        for ch in &mut chunks {
            let lo = c ^ u32::from_le_bytes([ch[0], ch[1], ch[2], ch[3]]);
            let hi = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]);
            c = t[7][(lo & 0xff) as usize]
                ^ t[6][((lo >> 8) & 0xff) as usize]
                ^ t[5][((lo >> 16) & 0xff) as usize]
                ^ t[4][(lo >> 24) as usize]
                ^ t[3][(hi & 0xff) as usize]
                ^ t[2][((hi >> 8) & 0xff) as usize]
                ^ t[1][((hi >> 16) & 0xff) as usize]
                ^ t[0][(hi >> 24) as usize];
        }
        for &b in chunks.remainder() {
            c = t[0][((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
        }
        self.state = c;
    }

    pub fn value(&self) -> u32 {
        self.state ^ 0xFFFF_FFFF
    }
}

#[cfg(target_arch = "x86_64")]
mod clmul {
    use core::arch::x86_64::*;

    // Folding constants for the reflected IEEE polynomial (x^n mod P(x),
    // as in Intel's "Fast CRC Computation Using PCLMULQDQ").
    const K1: i64 = 0x1_5444_2bd4;
    const K2: i64 = 0x1_c6e4_1596;
    const K3: i64 = 0x1_7519_97d0;
    const K4: i64 = 0x0_ccaa_009e;
    const K5: i64 = 0x1_63cd_6124;
    const P_X: i64 = 0x1_DB71_0641;
    const U_PRIME: i64 = 0x1_F701_1641;

    pub fn available() -> bool {
        // SAFETY: cpuid leaf 1 exists on every x86_64 CPU.
        #[allow(unused_unsafe)]
        let ecx = unsafe { __cpuid(1) }.ecx;
        ecx & (1 << 1) != 0 && ecx & (1 << 19) != 0
    }

    /// The next 16 bytes of `data`, unaligned.
    ///
    /// # Safety
    /// `data` holds at least 16 bytes (the load reads them before the
    /// slice is advanced).
    #[inline(always)]
    unsafe fn load(data: &mut &[u8]) -> __m128i {
        let v = _mm_loadu_si128(data.as_ptr() as *const __m128i);
        *data = &data[16..];
        v
    }

    #[inline(always)]
    unsafe fn fold16(a: __m128i, b: __m128i, k: __m128i) -> __m128i {
        _mm_xor_si128(
            _mm_xor_si128(b, _mm_clmulepi64_si128(a, k, 0x00)),
            _mm_clmulepi64_si128(a, k, 0x11),
        )
    }

    /// Folds whole 16-byte blocks of `data` into the running
    /// (pre-inverted) `state`; returns it and the unfolded tail.
    ///
    /// # Safety
    /// The CPU has PCLMULQDQ and SSE4.1 ([`available`]), and `data` holds
    /// at least 64 bytes: the first four blocks are loaded unchecked; every
    /// later load follows a length check.
    #[target_feature(enable = "pclmulqdq,sse2,sse4.1")]
    pub unsafe fn fold(state: u32, mut data: &[u8]) -> (u32, &[u8]) {
        debug_assert!(data.len() >= 64, "fold needs 64 bytes, got {}", data.len());
        let mut x3 = load(&mut data);
        let mut x2 = load(&mut data);
        let mut x1 = load(&mut data);
        let mut x0 = load(&mut data);
        x3 = _mm_xor_si128(x3, _mm_cvtsi32_si128(state as i32));
        let k1k2 = _mm_set_epi64x(K2, K1);
        while data.len() >= 64 {
            x3 = fold16(x3, load(&mut data), k1k2);
            x2 = fold16(x2, load(&mut data), k1k2);
            x1 = fold16(x1, load(&mut data), k1k2);
            x0 = fold16(x0, load(&mut data), k1k2);
        }
        let k3k4 = _mm_set_epi64x(K4, K3);
        let mut x = fold16(x3, x2, k3k4);
        x = fold16(x, x1, k3k4);
        x = fold16(x, x0, k3k4);
        while data.len() >= 16 {
            x = fold16(x, load(&mut data), k3k4);
        }
        // 128 -> 64 bits, then Barrett reduction to 32 (bit-reflected).
        let low32 = _mm_set_epi32(0, 0, 0, !0);
        let x = _mm_xor_si128(_mm_clmulepi64_si128(x, k3k4, 0x10), _mm_srli_si128(x, 8));
        let x = _mm_xor_si128(
            _mm_clmulepi64_si128(_mm_and_si128(x, low32), _mm_set_epi64x(0, K5), 0x00),
            _mm_srli_si128(x, 4),
        );
        let pu = _mm_set_epi64x(U_PRIME, P_X);
        let t1 = _mm_clmulepi64_si128(_mm_and_si128(x, low32), pu, 0x10);
        let t2 = _mm_clmulepi64_si128(_mm_and_si128(t1, low32), pu, 0x00);
        let c = _mm_extract_epi32(_mm_xor_si128(x, t2), 1) as u32;
        (c, data)
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod clmul {
    pub fn available() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::Crc32;

    #[test]
    fn check_value_matches_the_standard() {
        let mut c = Crc32::new();
        c.update(b"123456789");
        assert_eq!(c.value(), 0xCBF4_3926);
    }

    #[test]
    fn folding_matches_the_tables_for_every_length() {
        let data: alloc::vec::Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for len in (0..data.len())
            .step_by(37)
            .chain([128, 129, 191, 192, 193, 4096])
        {
            let mut fast = Crc32::new();
            fast.update(&data[..len]);
            let mut table = Crc32::new();
            table.update_table(&data[..len]);
            assert_eq!(fast.value(), table.value(), "length {len}");
        }
    }

    #[test]
    fn split_updates_equal_one_update() {
        let data: alloc::vec::Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut one = Crc32::new();
        one.update(&data);
        let mut parts = Crc32::new();
        for ch in data.chunks(13) {
            parts.update(ch);
        }
        assert_eq!(one.value(), parts.value());
    }
}

//! Finding the next byte of a small set (a delimiter, a quote, a line end) 16 bytes at a
//! time: with wasm SIMD in the plugin, SSE2 in native tests, and byte by byte elsewhere.
//! The CSV framer's fast path ([`crate::csv::Framer`]) stands on this.

/// Up to four bytes to stop at. Repeat a byte to use fewer.
#[derive(Debug, Clone, Copy)]
pub struct ByteSet([u8; 4]);

impl ByteSet {
    pub fn new(bytes: [u8; 4]) -> Self {
        ByteSet(bytes)
    }

    #[inline(always)]
    fn contains(&self, b: u8) -> bool {
        self.0.contains(&b)
    }

    /// Index of the first byte of `hay` in the set.
    #[inline(always)]
    pub fn find(&self, hay: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i + 16 <= hay.len() {
            let mask = self.mask16(&hay[i..i + 16]);
            if mask != 0 {
                return Some(i + mask.trailing_zeros() as usize);
            }
            i += 16;
        }
        hay[i..]
            .iter()
            .position(|&b| self.contains(b))
            .map(|k| i + k)
    }

    /// Bit `k` is set when `chunk[k]` is in the set; `chunk` is 16 bytes long.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    #[inline(always)]
    fn mask16(&self, chunk: &[u8]) -> u32 {
        use core::arch::wasm32::*;
        debug_assert_eq!(chunk.len(), 16);
        // SAFETY: `chunk` holds 16 readable bytes; `v128_load` allows any alignment.
        let v = unsafe { v128_load(chunk.as_ptr() as *const v128) };
        let [a, b, c, d] = self.0;
        let hits = v128_or(
            v128_or(u8x16_eq(v, u8x16_splat(a)), u8x16_eq(v, u8x16_splat(b))),
            v128_or(u8x16_eq(v, u8x16_splat(c)), u8x16_eq(v, u8x16_splat(d))),
        );
        u8x16_bitmask(hits) as u32
    }

    /// Bit `k` is set when `chunk[k]` is in the set; `chunk` is 16 bytes long.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn mask16(&self, chunk: &[u8]) -> u32 {
        use core::arch::x86_64::*;
        debug_assert_eq!(chunk.len(), 16);
        let [a, b, c, d] = self.0.map(|x| x as i8);
        // SAFETY: SSE2 is part of x86_64; `chunk` holds 16 readable bytes and
        // `_mm_loadu_si128` allows any alignment.
        unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr() as *const __m128i);
            let hits = _mm_or_si128(
                _mm_or_si128(
                    _mm_cmpeq_epi8(v, _mm_set1_epi8(a)),
                    _mm_cmpeq_epi8(v, _mm_set1_epi8(b)),
                ),
                _mm_or_si128(
                    _mm_cmpeq_epi8(v, _mm_set1_epi8(c)),
                    _mm_cmpeq_epi8(v, _mm_set1_epi8(d)),
                ),
            );
            _mm_movemask_epi8(hits) as u32
        }
    }

    /// Bit `k` is set when `chunk[k]` is in the set; `chunk` is 16 bytes long.
    #[cfg(not(any(
        all(target_arch = "wasm32", target_feature = "simd128"),
        target_arch = "x86_64"
    )))]
    #[inline(always)]
    fn mask16(&self, chunk: &[u8]) -> u32 {
        chunk
            .iter()
            .enumerate()
            .fold(0, |m, (k, &b)| m | ((self.contains(b) as u32) << k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_byte_of_the_set_at_every_offset_and_in_the_tail() {
        let set = ByteSet::new([b',', b'"', b'\n', b'\r']);
        for len in 0..70 {
            let mut hay = vec![b'x'; len];
            assert_eq!(set.find(&hay), None, "none in {len} bytes");
            for at in 0..len {
                for &b in b",\"\n\r" {
                    hay[at] = b;
                    assert_eq!(set.find(&hay), Some(at), "{b} at {at} of {len}");
                    hay[at] = b'x';
                }
            }
        }
    }

    #[test]
    fn bytes_above_127_are_not_confused_with_the_set() {
        let set = ByteSet::new([b',', b',', b',', b',']);
        let hay = "ééééééééééééééééé,".as_bytes();
        assert_eq!(set.find(hay), Some(hay.len() - 1));
    }
}

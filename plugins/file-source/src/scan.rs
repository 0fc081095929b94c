//! Byte-level work of the CSV and JSON Lines hot paths: finding the next byte of a small
//! set (a delimiter, a quote, a line end; for JSON strings, also any control character) 16
//! bytes at a time — with wasm SIMD in the plugin, SSE2 in native tests, byte by byte
//! elsewhere — and copying the short runs of a field.
//!
//! Short copies avoid `memcpy`: in a plugin it becomes a `memory.copy`, which the runtime
//! executes out of line and which costs more than the copy itself for a few bytes.

/// Up to four bytes to stop at (repeat a byte to use fewer) and, with `CONTROLS`, every
/// byte below 0x20: the control characters a JSON string may not hold.
#[derive(Debug, Clone, Copy)]
pub struct ByteSet<const CONTROLS: bool = false>([u8; 4]);

/// The stops inside a JSON string: the given bytes and every control character.
pub type StringStops = ByteSet<true>;

impl ByteSet {
    pub fn new(bytes: [u8; 4]) -> Self {
        ByteSet(bytes)
    }

    /// `bytes` and every control character.
    pub fn with_controls(bytes: [u8; 4]) -> StringStops {
        ByteSet(bytes)
    }
}

impl<const CONTROLS: bool> ByteSet<CONTROLS> {
    #[inline(always)]
    fn contains(&self, b: u8) -> bool {
        self.0.contains(&b) || (CONTROLS && b < 0x20)
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
        let mut hits = v128_or(
            v128_or(u8x16_eq(v, u8x16_splat(a)), u8x16_eq(v, u8x16_splat(b))),
            v128_or(u8x16_eq(v, u8x16_splat(c)), u8x16_eq(v, u8x16_splat(d))),
        );
        if CONTROLS {
            hits = v128_or(hits, u8x16_lt(v, u8x16_splat(0x20)));
        }
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
            let mut hits = _mm_or_si128(
                _mm_or_si128(
                    _mm_cmpeq_epi8(v, _mm_set1_epi8(a)),
                    _mm_cmpeq_epi8(v, _mm_set1_epi8(b)),
                ),
                _mm_or_si128(
                    _mm_cmpeq_epi8(v, _mm_set1_epi8(c)),
                    _mm_cmpeq_epi8(v, _mm_set1_epi8(d)),
                ),
            );
            if CONTROLS {
                // Unsigned v < 0x20 exactly when min(v, 0x1f) == v.
                let low = _mm_set1_epi8(0x1f);
                hits = _mm_or_si128(hits, _mm_cmpeq_epi8(_mm_min_epu8(v, low), v));
            }
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

/// `dst[at..at + src.len()] = src`, growing `dst` when it is too short; returns the end.
#[inline(always)]
pub fn put(dst: &mut Vec<u8>, at: usize, src: &[u8]) -> usize {
    let end = at + src.len();
    if end > dst.len() {
        dst.resize(end.max(dst.len() * 2), 0);
    }
    // SAFETY: `dst[at..end]` is in bounds and initialised.
    unsafe { copy(dst.as_mut_ptr().add(at), src) }
    end
}

/// `dst.extend_from_slice(src)`.
#[inline(always)]
pub fn extend(dst: &mut Vec<u8>, src: &[u8]) {
    dst.reserve(src.len());
    let len = dst.len();
    // SAFETY: `reserve` made room for `src.len()` bytes after `len`, and `copy` writes
    // exactly those.
    unsafe {
        copy(dst.as_mut_ptr().add(len), src);
        dst.set_len(len + src.len());
    }
}

/// Copy `src` to `d` with fixed-size loads and stores for up to 32 bytes.
///
/// # Safety
/// `d` must be valid for writing `src.len()` bytes that do not overlap `src`.
#[inline(always)]
unsafe fn copy(d: *mut u8, src: &[u8]) {
    unsafe fn read<T: Copy>(p: *const u8) -> T {
        std::ptr::read_unaligned(p as *const T)
    }
    unsafe fn write<T: Copy>(p: *mut u8, v: T) {
        std::ptr::write_unaligned(p as *mut T, v)
    }
    let (s, n) = (src.as_ptr(), src.len());
    // Every load reads inside `src` and every store writes inside `d[..n]`; the two halves
    // overlap when `n` is not a power of two.
    if n > 32 {
        std::ptr::copy_nonoverlapping(s, d, n);
    } else if n >= 16 {
        let (a, b) = (read::<u128>(s), read::<u128>(s.add(n - 16)));
        write(d, a);
        write(d.add(n - 16), b);
    } else if n >= 8 {
        let (a, b) = (read::<u64>(s), read::<u64>(s.add(n - 8)));
        write(d, a);
        write(d.add(n - 8), b);
    } else if n >= 4 {
        let (a, b) = (read::<u32>(s), read::<u32>(s.add(n - 4)));
        write(d, a);
        write(d.add(n - 4), b);
    } else if n > 0 {
        // 1 to 3 bytes: first, middle and last cover them all.
        *d = *s;
        *d.add(n / 2) = *s.add(n / 2);
        *d.add(n - 1) = *s.add(n - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_copies_write_exactly_the_bytes_of_every_length() {
        let src: Vec<u8> = (0..80u8).collect();
        for n in 0..=40 {
            for at in [0, 3, 17] {
                let mut dst = b"prefix".to_vec();
                extend(&mut dst, &src[at..at + n]);
                assert_eq!(&dst[..6], b"prefix");
                assert_eq!(&dst[6..], &src[at..at + n], "{n} bytes from {at}");
                let mut buf = vec![0xee; 8];
                assert_eq!(put(&mut buf, 2, &src[at..at + n]), 2 + n);
                assert_eq!(&buf[..2], &[0xee, 0xee]);
                assert_eq!(&buf[2..2 + n], &src[at..at + n], "put {n} bytes from {at}");
                assert!(buf[2 + n..].iter().all(|&b| b == 0xee || b == 0), "{n}");
            }
        }
    }

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

    #[test]
    fn string_stops_find_every_control_character_and_nothing_else_of_the_other_bytes() {
        let stops = ByteSet::with_controls([b'"', b'\\', b'"', b'"']);
        let others: Vec<u8> = (0x20..=0xffu8)
            .filter(|&b| b != b'"' && b != b'\\')
            .collect();
        for len in [5, 16, 17, 40] {
            for start in (0..others.len()).step_by(7) {
                let hay: Vec<u8> = others
                    .iter()
                    .cycle()
                    .skip(start)
                    .take(len)
                    .copied()
                    .collect();
                assert_eq!(stops.find(&hay), None, "{hay:?}");
                for at in 0..len {
                    for control in [0x00, 0x09, 0x0a, 0x0d, 0x1f] {
                        let mut hay = hay.clone();
                        hay[at] = control;
                        assert_eq!(stops.find(&hay), Some(at), "{control:#x} at {at} of {len}");
                    }
                }
            }
        }
    }
}

//! SHA-256 of many short values at once, eight to a set of AVX2 registers: the bulk path of
//! the digest capability on x86-64 processors without SHA instructions.
//!
//! A value of at most [`MAX_SHORT`] bytes fits, with its padding, in the one block that
//! finishes its digest, so eight such values are eight independent compressions of one
//! block each, run in the eight 32-bit lanes of 256-bit registers. Every value starts
//! from the same state after the same number of bytes: the initial state for SHA-256, the
//! state after the padded key for HMAC's inner and outer hashes. Longer values, and
//! processors with SHA instructions (which hash one value faster than this hashes eight),
//! go one at a time through [`finish`] from the same state.

use sha2::digest::generic_array::GenericArray;

/// The longest value whose digest this finishes in one block (64 bytes less the 0x80
/// marker and the 8-byte length).
pub const MAX_SHORT: usize = 55;

/// SHA-256's initial state.
pub const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// `state` after absorbing the 64-byte `block`.
pub fn absorb(mut state: [u32; 8], block: &[u8; 64]) -> [u32; 8] {
    sha2::compress256(&mut state, &[*GenericArray::from_slice(block)]);
    state
}

/// Whether [`digests`] runs eight lanes at once on this processor (AVX2 and no SHA
/// instructions); when it does not, every value takes the caller's path.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && !is_x86_feature_detected!("sha")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The digest of each of `n` values (`value(i)`), each continuing from `state` after
/// `prefix` bytes (a multiple of 64), into `out`: eight at a time where [`available`],
/// one at a time ([`finish`]) for values longer than [`MAX_SHORT`] and elsewhere.
pub fn digests<'a>(
    state: &[u32; 8],
    prefix: u64,
    n: usize,
    value: impl Fn(usize) -> &'a [u8],
    out: &mut [[u8; 32]],
) {
    if available() {
        lanes(state, prefix, n, value, out);
    } else {
        for (i, digest) in out.iter_mut().enumerate().take(n) {
            *digest = finish(*state, prefix, value(i));
        }
    }
}

/// The digest of `value` continuing from `state` after `prefix` bytes, a block at a time
/// (`sha2`'s compression, which uses SHA instructions where the processor has them).
pub fn finish(mut state: [u32; 8], prefix: u64, value: &[u8]) -> [u8; 32] {
    let blocks = value.chunks_exact(64);
    let rest = blocks.remainder();
    for block in blocks {
        state = absorb(state, block.try_into().expect("64-byte block"));
    }
    // The rest, the 0x80 marker and the length in bits: one block, or two when the rest
    // leaves no room for the length.
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let end = if rest.len() <= MAX_SHORT { 64 } else { 128 };
    tail[end - 8..end].copy_from_slice(&((prefix + value.len() as u64) * 8).to_be_bytes());
    for block in tail[..end].chunks_exact(64) {
        state = absorb(state, block.try_into().expect("64-byte block"));
    }
    digest_bytes(&state)
}

/// A state's words as the digest's bytes, big-endian.
fn digest_bytes(state: &[u32; 8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (word, bytes) in state.iter().zip(out.chunks_exact_mut(4)) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// [`digests`] through the eight-lane path, whatever the processor offers beyond AVX2
/// (the tests call it directly so that it is checked on every x86-64 machine).
fn lanes<'a>(
    state: &[u32; 8],
    prefix: u64,
    n: usize,
    value: impl Fn(usize) -> &'a [u8],
    out: &mut [[u8; 32]],
) {
    let mut batch = [0usize; 8];
    let mut filled = 0;
    let run = |batch: &[usize], out: &mut [[u8; 32]]| {
        let mut blocks = [[0u32; 16]; 8];
        for (lane, &i) in batch.iter().enumerate() {
            blocks[lane] = final_block(value(i), prefix);
        }
        let states = compress8(state, &blocks);
        for (lane, &i) in batch.iter().enumerate() {
            out[i] = digest_bytes(&states[lane]);
        }
    };
    for i in 0..n {
        let v = value(i);
        if v.len() > MAX_SHORT {
            out[i] = finish(*state, prefix, v);
            continue;
        }
        batch[filled] = i;
        filled += 1;
        if filled == 8 {
            run(&batch, out);
            filled = 0;
        }
    }
    if filled > 0 {
        run(&batch[..filled], out);
    }
}

/// The words of the block that finishes the digest of `value` after `prefix` bytes: the
/// value, the 0x80 marker, zeros, and the message length in bits, big-endian.
fn final_block(value: &[u8], prefix: u64) -> [u32; 16] {
    debug_assert!(value.len() <= MAX_SHORT);
    let mut block = [0u8; 64];
    block[..value.len()].copy_from_slice(value);
    block[value.len()] = 0x80;
    block[56..].copy_from_slice(&((prefix + value.len() as u64) * 8).to_be_bytes());
    let mut words = [0u32; 16];
    for (w, b) in words.iter_mut().zip(block.chunks_exact(4)) {
        *w = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    }
    words
}

/// The states after compressing each of up to eight blocks from `state`; lanes past
/// `blocks.len()` are computed on zero blocks and ignored.
fn compress8(state: &[u32; 8], blocks: &[[u32; 16]; 8]) -> [[u32; 8]; 8] {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") {
            // SAFETY: the processor has AVX2, checked just above.
            return unsafe { x86::compress8(state, blocks) };
        }
    }
    let mut out = [*state; 8];
    for (lane, words) in blocks.iter().enumerate() {
        let mut block = [0u8; 64];
        for (w, b) in words.iter().zip(block.chunks_exact_mut(4)) {
            b.copy_from_slice(&w.to_be_bytes());
        }
        out[lane] = absorb(*state, &block);
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    macro_rules! rotr {
        ($x:expr, $n:literal) => {
            _mm256_or_si256(
                _mm256_srli_epi32::<$n>($x),
                _mm256_slli_epi32::<{ 32 - $n }>($x),
            )
        };
    }

    macro_rules! xor3 {
        ($a:expr, $b:expr, $c:expr) => {
            _mm256_xor_si256(_mm256_xor_si256($a, $b), $c)
        };
    }

    /// Eight one-block compressions from `state`, one per lane.
    ///
    /// # Safety
    /// The processor must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn compress8(state: &[u32; 8], blocks: &[[u32; 16]; 8]) -> [[u32; 8]; 8] {
        let add = |a, b| _mm256_add_epi32(a, b);
        let mut w = [_mm256_setzero_si256(); 64];
        for (t, word) in w.iter_mut().enumerate().take(16) {
            let lane = |l: usize| blocks[l][t] as i32;
            *word = _mm256_setr_epi32(
                lane(0),
                lane(1),
                lane(2),
                lane(3),
                lane(4),
                lane(5),
                lane(6),
                lane(7),
            );
        }
        for t in 16..64 {
            let x = w[t - 15];
            let s0 = xor3!(rotr!(x, 7), rotr!(x, 18), _mm256_srli_epi32::<3>(x));
            let y = w[t - 2];
            let s1 = xor3!(rotr!(y, 17), rotr!(y, 19), _mm256_srli_epi32::<10>(y));
            w[t] = add(add(w[t - 16], s0), add(w[t - 7], s1));
        }
        let init: [__m256i; 8] = std::array::from_fn(|i| _mm256_set1_epi32(state[i] as i32));
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = init;
        for t in 0..64 {
            let big_s1 = xor3!(rotr!(e, 6), rotr!(e, 11), rotr!(e, 25));
            let ch = _mm256_xor_si256(_mm256_and_si256(e, f), _mm256_andnot_si256(e, g));
            let k = _mm256_set1_epi32(K[t] as i32);
            let t1 = add(add(add(h, big_s1), add(ch, k)), w[t]);
            let big_s0 = xor3!(rotr!(a, 2), rotr!(a, 13), rotr!(a, 22));
            let maj = xor3!(
                _mm256_and_si256(a, b),
                _mm256_and_si256(a, c),
                _mm256_and_si256(b, c)
            );
            let t2 = add(big_s0, maj);
            h = g;
            g = f;
            f = e;
            e = add(d, t1);
            d = c;
            c = b;
            b = a;
            a = add(t1, t2);
        }
        let fin = [a, b, c, d, e, f, g, h];
        let mut words = [[0u32; 8]; 8];
        for (j, v) in fin.iter().enumerate() {
            let v = add(*v, init[j]);
            // SAFETY: `words[j]` is 32 writable bytes; the store allows any alignment.
            _mm256_storeu_si256(words[j].as_mut_ptr() as *mut __m256i, v);
        }
        let mut out = [[0u32; 8]; 8];
        for (lane, state) in out.iter_mut().enumerate() {
            for (j, word) in state.iter_mut().enumerate() {
                *word = words[j][lane];
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// Values of every length from 0 to 70 bytes (short ones and the long ones that take
    /// the caller's path), in a count that leaves a partial last batch.
    fn values() -> Vec<Vec<u8>> {
        (0..203)
            .map(|i| (0..(i % 71)).map(|k| (i * 31 + k * 7) as u8).collect())
            .collect()
    }

    #[test]
    fn eight_lanes_give_the_digests_sha256_gives_one_by_one() {
        let values = values();
        let mut out = vec![[0u8; 32]; values.len()];
        lanes(&IV, 0, values.len(), |i| &values[i], &mut out);
        for (v, d) in values.iter().zip(&out) {
            assert_eq!(d[..], Sha256::digest(v)[..], "value of {} bytes", v.len());
            assert_eq!(finish(IV, 0, v), *d, "one at a time, {} bytes", v.len());
        }
        let mut again = vec![[0u8; 32]; values.len()];
        digests(&IV, 0, values.len(), |i| &values[i], &mut again);
        assert_eq!(again, out);
    }

    #[test]
    fn a_state_after_a_prefix_block_continues_the_digest_of_prefix_and_value() {
        let prefix = [0x36u8; 64];
        let state = absorb(IV, &prefix);
        let values = values();
        let mut out = vec![[0u8; 32]; values.len()];
        let reference = |v: &[u8]| -> [u8; 32] {
            let mut h = Sha256::new();
            h.update(prefix);
            h.update(v);
            h.finalize().into()
        };
        lanes(&state, 64, values.len(), |i| &values[i], &mut out);
        for (v, d) in values.iter().zip(&out) {
            assert_eq!(d, &reference(v), "value of {} bytes", v.len());
        }
    }
}

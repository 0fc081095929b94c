//! Upserts that delete first, for a stream without `_op` into a target whose key is
//! indexed: the keys of a chunk of rows go into a small key table, the target's rows
//! with those keys are deleted through the key's index, and the chunk's rows are copied
//! straight into the target. Each row is written once, into the target, and the server
//! sorts nothing: the sink itself keeps the last row per key of a chunk, and starts a new
//! chunk before a key comes back (a later chunk's delete removes what an earlier one
//! inserted, inside the same transaction). A change stream's keys come back too often for
//! this; it merges a work table.
//!
//! This module owns the chunk: the key and row data waiting to be sent, and which rows of
//! a batch are the last of their key. Keys are compared as their binary COPY encoding.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;

/// A fast, non-cryptographic hash for keys that are compared exactly afterwards or whose
/// collisions only cost an early flush.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for b in words.remainder() {
            self.0 = (self.0.rotate_left(5) ^ *b as u64).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Build = BuildHasherDefault<KeyHasher>;

fn hash(key: &[u8]) -> u64 {
    let mut h = KeyHasher::default();
    h.write(key);
    h.finish()
}

/// Where each row of binary COPY rows `data` (without header or trailer) starts and ends.
pub fn row_ranges(data: &[u8]) -> Result<Vec<Range<usize>>, String> {
    let truncated = || "the encoded keys end mid-row".to_string();
    let mut ranges = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let start = at;
        let fields = data.get(at..at + 2).ok_or_else(truncated)?;
        let fields = i16::from_be_bytes([fields[0], fields[1]]);
        at += 2;
        for _ in 0..fields {
            let len = data.get(at..at + 4).ok_or_else(truncated)?;
            let len = i32::from_be_bytes(len.try_into().expect("4 bytes"));
            at += 4 + len.max(0) as usize;
        }
        if at > data.len() {
            return Err(truncated());
        }
        ranges.push(start..at);
    }
    Ok(ranges)
}

/// Which rows are the last of their key (`keys` holds each row's key at `rows[i]`), or
/// `None` when no key repeats.
pub fn last_per_key(keys: &[u8], rows: &[Range<usize>]) -> Option<Vec<bool>> {
    let mut seen: HashSet<&[u8], Build> =
        HashSet::with_capacity_and_hasher(rows.len(), Build::default());
    let mut keep: Option<Vec<bool>> = None;
    for (i, r) in rows.iter().enumerate().rev() {
        if !seen.insert(&keys[r.clone()]) {
            keep.get_or_insert_with(|| vec![true; rows.len()])[i] = false;
        }
    }
    keep
}

/// The hashes of a batch's keys (`keys` at `rows`), of the rows `keep` allows.
pub fn hashes(keys: &[u8], rows: &[Range<usize>], keep: Option<&[bool]>) -> Vec<u64> {
    rows.iter()
        .enumerate()
        .filter(|(i, _)| keep.is_none_or(|k| k[*i]))
        .map(|(_, r)| hash(&keys[r.clone()]))
        .collect()
}

/// The rows of one chunk, waiting to be sent.
#[derive(Default)]
pub struct Chunk {
    /// Binary COPY rows of the keys to delete, without header or trailer.
    pub keys: Vec<u8>,
    /// Binary COPY rows for the target, without header or trailer.
    pub rows: Vec<u8>,
    /// The rows of the stream the chunk stands for (before the last row per key).
    pub taken: u64,
    /// The hashes of the keys in `keys`.
    hashes: HashSet<u64, Build>,
}

impl Chunk {
    pub fn is_empty(&self) -> bool {
        self.taken == 0
    }

    /// Whether any of a batch's keys, by their [`hashes`], may be in the chunk already.
    /// A false positive only sends the chunk early.
    pub fn holds_any(&self, hashes: &[u64]) -> bool {
        !self.hashes.is_empty() && hashes.iter().any(|h| self.hashes.contains(h))
    }

    /// Add a batch's keys (`keys` at `rows`, the rows `keep` allows), with their
    /// [`hashes`].
    pub fn add_keys(
        &mut self,
        keys: &[u8],
        rows: &[Range<usize>],
        keep: Option<&[bool]>,
        hashes: &[u64],
    ) {
        match keep {
            None => self.keys.extend_from_slice(keys),
            Some(keep) => {
                for (r, _) in rows.iter().zip(keep).filter(|(_, k)| **k) {
                    self.keys.extend_from_slice(&keys[r.clone()]);
                }
            }
        }
        self.hashes.extend(hashes);
    }

    /// Empty the chunk, keeping its buffers.
    pub fn clear(&mut self) {
        self.keys.clear();
        self.rows.clear();
        self.hashes.clear();
        self.taken = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One-column rows holding an int8 each.
    fn int8_rows(values: &[i64]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in values {
            out.extend_from_slice(&1i16.to_be_bytes());
            out.extend_from_slice(&8i32.to_be_bytes());
            out.extend_from_slice(&v.to_be_bytes());
        }
        out
    }

    #[test]
    fn rows_are_found_by_their_field_lengths_including_nulls() {
        let mut data = int8_rows(&[7]);
        data.extend_from_slice(&2i16.to_be_bytes());
        data.extend_from_slice(&(-1i32).to_be_bytes());
        data.extend_from_slice(&3i32.to_be_bytes());
        data.extend_from_slice(b"abc");
        let ranges = row_ranges(&data).unwrap();
        assert_eq!(ranges, vec![0..14, 14..27]);
        assert!(
            row_ranges(&data[..20]).is_err(),
            "a row cut short is refused"
        );
    }

    #[test]
    fn the_last_row_of_each_key_is_kept() {
        let data = int8_rows(&[1, 2, 1, 3, 2, 1]);
        let ranges = row_ranges(&data).unwrap();
        let keep = last_per_key(&data, &ranges).unwrap();
        assert_eq!(keep, vec![false, false, false, true, true, true]);
        let distinct = int8_rows(&[1, 2, 3]);
        assert_eq!(
            last_per_key(&distinct, &row_ranges(&distinct).unwrap()),
            None
        );
    }

    #[test]
    fn a_chunk_knows_the_keys_it_holds() {
        let mut chunk = Chunk::default();
        let first = int8_rows(&[1, 2, 1]);
        let ranges = row_ranges(&first).unwrap();
        let keep = last_per_key(&first, &ranges);
        let kept = hashes(&first, &ranges, keep.as_deref());
        chunk.add_keys(&first, &ranges, keep.as_deref(), &kept);
        assert_eq!(chunk.keys, int8_rows(&[2, 1]), "only the last row per key");

        let of =
            |data: &[u8], keep: Option<&[bool]>| hashes(data, &row_ranges(data).unwrap(), keep);
        let later = int8_rows(&[3, 4]);
        assert!(!chunk.holds_any(&of(&later, None)));
        let again = int8_rows(&[5, 1]);
        assert!(chunk.holds_any(&of(&again, None)));
        // A repeat the batch itself drops does not count.
        assert!(!chunk.holds_any(&of(&again, Some(&[true, false]))));

        chunk.clear();
        assert!(chunk.is_empty() && chunk.keys.is_empty());
        assert!(!chunk.holds_any(&of(&again, None)));
    }
}

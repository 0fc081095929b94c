//! The window: the hashes of the last `capacity` distinct keys, in the order they were first
//! seen, and its checkpoint format.
//!
//! A key enters the window when its first row is kept; a repeat does not move it, so the
//! window forgets keys in the order it learned them (first in, first out).
//!
//! Checkpoint format, version 1 (all integers little-endian):
//!
//! | bytes | what |
//! |---|---|
//! | 8 | magic `DEDUPWIN` |
//! | 2 | format version, `1` |
//! | 8 | fingerprint of the key columns (names, in order) |
//! | 8 | window size (the configured `window` when written) |
//! | 8 | count of hashes that follow |
//! | 16 × count | the hashes, oldest (next evicted) first |
//! | 8 | checksum: the low 64 bits of XXH3-128 of everything before it |

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use twox_hash::XxHash3_128;

/// The first bytes of every checkpoint.
pub const MAGIC: &[u8; 8] = b"DEDUPWIN";
/// The checkpoint format this build writes and reads.
pub const VERSION: u16 = 1;
const HEADER: usize = 8 + 2 + 8 + 8 + 8;
const TRAILER: usize = 8;

/// Keys are hashes already: fold the 128 bits to 64 instead of hashing them again.
#[derive(Default)]
struct Fold(u64);

impl Hasher for Fold {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0 ^ u64::from_le_bytes(word)).rotate_left(29);
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64 ^ (value >> 64) as u64;
    }
}

/// The remembered keys.
#[derive(Debug, Clone)]
pub struct Window {
    capacity: usize,
    /// Oldest first.
    order: VecDeque<u128>,
    seen: HashSet<u128, BuildHasherDefault<Fold>>,
}

/// What [`Window::restore`] did with a checkpoint beyond reading it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restored {
    /// Every key came back.
    Whole { keys: usize },
    /// The window is smaller than when the checkpoint was written: the oldest keys were
    /// forgotten and the newest kept.
    Shrunk {
        was: u64,
        kept: usize,
        forgotten: usize,
    },
    /// The checkpoint was written for other key columns; its hashes cannot match, so the
    /// window starts empty.
    OtherKey,
}

impl Window {
    /// An empty window of `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Window {
            capacity,
            order: VecDeque::new(),
            seen: HashSet::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Remember `key` and return true when it is new; return false for a repeat. A new key
    /// beyond the capacity evicts the oldest one.
    pub fn insert(&mut self, key: u128) -> bool {
        if !self.seen.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > self.capacity {
            let oldest = self.order.pop_front().expect("the window is not empty");
            self.seen.remove(&oldest);
        }
        true
    }

    /// The remembered keys, oldest first.
    pub fn keys(&self) -> impl Iterator<Item = u128> + '_ {
        self.order.iter().copied()
    }

    /// The checkpoint of this window for the key identified by `fingerprint`.
    pub fn checkpoint(&self, fingerprint: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + 16 * self.order.len() + TRAILER);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&fingerprint.to_le_bytes());
        out.extend_from_slice(&(self.capacity as u64).to_le_bytes());
        out.extend_from_slice(&(self.order.len() as u64).to_le_bytes());
        for key in &self.order {
            out.extend_from_slice(&key.to_le_bytes());
        }
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Read a checkpoint back into a window of `capacity` keys for the key identified by
    /// `fingerprint`. A blob that is not a version-1 window checkpoint, or whose bytes do
    /// not add up, is refused with the reason.
    pub fn restore(
        bytes: &[u8],
        capacity: usize,
        fingerprint: u64,
    ) -> Result<(Window, Restored), String> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            let start = &bytes[..bytes.len().min(MAGIC.len())];
            return Err(format!(
                "it is not a dedupe window: it starts with {} instead of `DEDUPWIN`",
                printable(start)
            ));
        }
        if bytes.len() < HEADER + TRAILER {
            return Err(format!(
                "it is truncated: {} bytes, fewer than the {} of an empty window",
                bytes.len(),
                HEADER + TRAILER
            ));
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != VERSION {
            return Err(format!(
                "it is in format version {version}, and this build reads version {VERSION} \
                 only (was it written by a newer version of the plugin?)"
            ));
        }
        let (body, trailer) = bytes.split_at(bytes.len() - TRAILER);
        if checksum(body) != u64::from_le_bytes(trailer.try_into().unwrap()) {
            return Err("its checksum does not match its bytes".into());
        }
        let stored_fingerprint = u64_at(10);
        let was = u64_at(18);
        let count = u64_at(26);
        let hashes = &body[HEADER..];
        if count > was || hashes.len() as u64 != count.saturating_mul(16) {
            return Err(format!(
                "it claims {count} keys in a window of {was}, but holds {} bytes of keys",
                hashes.len()
            ));
        }
        let mut window = Window::new(capacity);
        if stored_fingerprint != fingerprint {
            return Ok((window, Restored::OtherKey));
        }
        let forgotten = (count as usize).saturating_sub(window.capacity);
        // Sized once: growing by doubling would need half as much memory again for a moment.
        let kept = count as usize - forgotten;
        window.order.reserve_exact(kept);
        window.seen.reserve(kept);
        for chunk in hashes.chunks_exact(16).skip(forgotten) {
            let key = u128::from_le_bytes(chunk.try_into().unwrap());
            if !window.insert(key) {
                return Err("it holds the same key twice".into());
            }
        }
        let restored = if forgotten > 0 {
            Restored::Shrunk {
                was,
                kept,
                forgotten,
            }
        } else {
            Restored::Whole { keys: window.len() }
        };
        Ok((window, restored))
    }
}

fn checksum(bytes: &[u8]) -> u64 {
    XxHash3_128::oneshot(bytes) as u64
}

fn printable(bytes: &[u8]) -> String {
    if bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("`{}`", String::from_utf8_lossy(bytes))
    } else {
        let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("bytes 0x{}", hex.join(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(capacity: usize, keys: impl IntoIterator<Item = u128>) -> Window {
        let mut w = Window::new(capacity);
        for k in keys {
            w.insert(k);
        }
        w
    }

    #[test]
    fn repeats_are_refused_and_the_oldest_key_is_evicted_first() {
        let mut w = Window::new(3);
        assert!(w.insert(1));
        assert!(w.insert(2));
        assert!(!w.insert(1), "a repeat");
        assert!(w.insert(3));
        assert!(w.insert(4), "evicts 1");
        assert_eq!(w.keys().collect::<Vec<_>>(), [2, 3, 4]);
        assert!(w.insert(1), "1 was forgotten");
        assert_eq!(w.keys().collect::<Vec<_>>(), [3, 4, 1]);
        // A repeat does not refresh a key: 3 is still the next to go.
        assert!(!w.insert(3));
        assert!(w.insert(5));
        assert_eq!(w.keys().collect::<Vec<_>>(), [4, 1, 5]);
        assert!(w.insert(3));
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn the_largest_window_checkpoints_within_what_the_host_takes_in_one_call() {
        let largest = HEADER + 16 * crate::config::MAX_WINDOW + TRAILER;
        assert!(largest < 128 << 20, "{largest} bytes");
    }

    #[test]
    fn a_checkpoint_restores_the_same_window() {
        let w = filled(5, [10, u128::MAX, 0, 7 << 100]);
        let bytes = w.checkpoint(99);
        assert_eq!(bytes.len(), HEADER + 4 * 16 + TRAILER);
        assert_eq!(&bytes[..8], b"DEDUPWIN");
        let (back, how) = Window::restore(&bytes, 5, 99).unwrap();
        assert_eq!(how, Restored::Whole { keys: 4 });
        assert_eq!(
            back.keys().collect::<Vec<_>>(),
            w.keys().collect::<Vec<_>>()
        );
        // The restored window goes on evicting in the same order.
        let mut a = w.clone();
        let mut b = back;
        for k in [1, 2, 10, 3] {
            assert_eq!(a.insert(k), b.insert(k));
        }
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        assert_eq!(b.keys().next(), Some(7 << 100));
    }

    #[test]
    fn a_smaller_window_keeps_the_newest_keys() {
        let bytes = filled(6, 1..=6).checkpoint(1);
        let (w, how) = Window::restore(&bytes, 4, 1).unwrap();
        assert_eq!(w.keys().collect::<Vec<_>>(), [3, 4, 5, 6]);
        assert_eq!(
            how,
            Restored::Shrunk {
                was: 6,
                kept: 4,
                forgotten: 2
            }
        );
        let (w, how) = Window::restore(&bytes, 10, 1).unwrap();
        assert_eq!(w.len(), 6);
        assert_eq!(w.capacity(), 10);
        assert_eq!(how, Restored::Whole { keys: 6 });
    }

    #[test]
    fn a_checkpoint_of_other_key_columns_starts_an_empty_window() {
        let bytes = filled(4, [1, 2]).checkpoint(1);
        let (w, how) = Window::restore(&bytes, 4, 2).unwrap();
        assert!(w.is_empty());
        assert_eq!(how, Restored::OtherKey);
    }

    #[test]
    fn foreign_corrupt_and_future_blobs_are_refused_with_the_reason() {
        let good = filled(4, [1, 2, 3]).checkpoint(7);
        let err = |bytes: &[u8]| Window::restore(bytes, 4, 7).unwrap_err();

        assert!(err(b"{\"offset\":3}").contains("not a dedupe window"));
        assert!(err(b"{\"offset\":3}").contains("`{\"offset`"));
        assert!(err(&[0xff, 0, 1]).contains("0xff0001"));
        assert!(err(&good[..HEADER]).contains("truncated"));

        let mut flipped = good.clone();
        flipped[HEADER + 5] ^= 1;
        assert!(err(&flipped).contains("checksum"));

        let short = &good[..good.len() - 3];
        assert!(err(short).contains("checksum"));

        let mut future = good.clone();
        future[8] = 2;
        assert!(err(&future).contains("format version 2"));

        // Consistent checksum, inconsistent count.
        let mut lying = good[..good.len() - TRAILER].to_vec();
        lying[26] = 9;
        let sum = checksum(&lying);
        lying.extend_from_slice(&sum.to_le_bytes());
        assert!(err(&lying).contains("claims 9 keys"));

        let mut twice = filled(4, [1, 2]).checkpoint(7);
        twice.truncate(twice.len() - TRAILER);
        twice[HEADER + 16..HEADER + 32].copy_from_slice(&1u128.to_le_bytes());
        let sum = checksum(&twice);
        twice.extend_from_slice(&sum.to_le_bytes());
        assert!(err(&twice).contains("same key twice"));
    }
}

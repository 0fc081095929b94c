//! The subset of the `zstd-safe` crate (which the real `zstd` re-exports as
//! `zstd::zstd_safe`) that users of the bulk API reach for: sizes, levels and the
//! [`WriteBuf`] output-buffer trait.
//!
//! Unlike the real crate's, [`WriteBuf`] here is a safe trait: it hands the writer an
//! initialized `&mut [u8]` rather than a raw pointer, so implementing it needs no
//! `unsafe`. The types that implement it, and where the output lands in each, are the same.

use std::fmt;
use std::io::{self, Cursor};

use crate::frame;

/// A compression level, as the C library takes it.
pub type CompressionLevel = i32;

/// The level zstd uses when none is given.
pub const CLEVEL_DEFAULT: CompressionLevel = 3;

/// The fastest level the C library accepts (its `ZSTD_minCLevel()`, `-(1 << 17)`).
pub fn min_c_level() -> CompressionLevel {
    -(1 << 17)
}

/// The slowest level the C library accepts (its `ZSTD_maxCLevel()`).
pub fn max_c_level() -> CompressionLevel {
    22
}

/// The largest size compressing `src_size` bytes can produce, as the C library's
/// `ZSTD_compressBound()` computes it, and never less than this crate's encoder needs.
pub fn compress_bound(src_size: usize) -> usize {
    const BLOCK: usize = 128 << 10;
    let margin = if src_size < BLOCK {
        (BLOCK - src_size) >> 11
    } else {
        0
    };
    let c_bound = src_size
        .saturating_add(src_size >> 8)
        .saturating_add(margin);
    c_bound.max(frame::worst_case_compressed_len(src_size))
}

/// Returned by [`get_frame_content_size`] when `src` does not start with a readable frame
/// header: it is too short, is not zstd, or the header is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentSizeError;

impl fmt::Display for ContentSizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Could not get content size")
    }
}

impl std::error::Error for ContentSizeError {}

/// The decompressed size of the frame at the start of `src`, read from its header.
///
/// * `Ok(Some(size))` when the header records it (a skippable frame counts as `0`).
/// * `Ok(None)` when the frame does not record it, as streaming compressors may not.
/// * `Err(ContentSizeError)` when `src` is too short for a frame header, or is not zstd.
pub fn get_frame_content_size(src: &[u8]) -> Result<Option<u64>, ContentSizeError> {
    match frame::parse_header(src) {
        Ok(frame::Header::Skippable { .. }) => Ok(Some(0)),
        Ok(frame::Header::Frame { content_size, .. }) => Ok(content_size),
        Err(_) => Err(ContentSizeError),
    }
}

/// The compressed length of the frame (zstd or skippable) at the start of `src`, found by
/// walking its block headers; `src` must hold the whole frame.
///
/// The real `zstd-safe` returns a bare C error code here; this returns an
/// [`io::Error`] that says what is wrong.
pub fn find_frame_compressed_size(src: &[u8]) -> io::Result<usize> {
    frame::frame_len(src)
}

/// A container zstd writes its output into, such as a `Vec<u8>` with spare capacity.
///
/// Where the output goes, as with the real crate:
///
/// * `Vec<u8>` (also behind `&mut`): from the start of the vector, up to its *capacity*,
///   which is never grown; its length becomes the number of bytes written. Reserve room
///   first (for compression, [`compress_bound`]).
/// * `[u8]` and `[u8; N]`: from the start; the length never changes, so only the prefix
///   the call reports as written is meaningful.
/// * [`std::io::Cursor`] over any of these: from the cursor's position on, keeping what
///   comes before it (a gap between the data and the position is zero-filled). The
///   position itself is not moved.
pub trait WriteBuf {
    /// The part of the container that holds data.
    fn as_slice(&self) -> &[u8];

    /// How many bytes can be written, in all.
    fn capacity(&self) -> usize;

    /// Calls `write` with the whole writable region, then records the first `n` bytes of
    /// it as written, where `n` is what `write` returned; returns `n`.
    ///
    /// When `write` fails the container keeps its former length, though bytes of the
    /// writable region may have changed.
    fn write_from<F>(&mut self, write: F) -> io::Result<usize>
    where
        F: FnOnce(&mut [u8]) -> io::Result<usize>;
}

impl WriteBuf for Vec<u8> {
    fn as_slice(&self) -> &[u8] {
        self
    }

    fn capacity(&self) -> usize {
        Vec::capacity(self)
    }

    fn write_from<F>(&mut self, write: F) -> io::Result<usize>
    where
        F: FnOnce(&mut [u8]) -> io::Result<usize>,
    {
        let before = self.len();
        let capacity = Vec::capacity(self);
        // Safe code can only hand out initialized memory: zero the spare capacity.
        self.resize(capacity, 0);
        match write(&mut self[..]) {
            Ok(n) => {
                assert!(n <= capacity, "zstd shim reported writing past the buffer");
                self.truncate(n);
                Ok(n)
            }
            Err(e) => {
                self.truncate(before);
                Err(e)
            }
        }
    }
}

impl WriteBuf for [u8] {
    fn as_slice(&self) -> &[u8] {
        self
    }

    fn capacity(&self) -> usize {
        self.len()
    }

    fn write_from<F>(&mut self, write: F) -> io::Result<usize>
    where
        F: FnOnce(&mut [u8]) -> io::Result<usize>,
    {
        write(self)
    }
}

impl<const N: usize> WriteBuf for [u8; N] {
    fn as_slice(&self) -> &[u8] {
        self
    }

    fn capacity(&self) -> usize {
        N
    }

    fn write_from<F>(&mut self, write: F) -> io::Result<usize>
    where
        F: FnOnce(&mut [u8]) -> io::Result<usize>,
    {
        write(self)
    }
}

impl<T: WriteBuf + ?Sized> WriteBuf for &mut T {
    fn as_slice(&self) -> &[u8] {
        (**self).as_slice()
    }

    fn capacity(&self) -> usize {
        (**self).capacity()
    }

    fn write_from<F>(&mut self, write: F) -> io::Result<usize>
    where
        F: FnOnce(&mut [u8]) -> io::Result<usize>,
    {
        (**self).write_from(write)
    }
}

/// The cursor's position as an index; one that does not fit a `usize` saturates, so it
/// is out of range rather than wrapped around into a valid-looking offset.
fn cursor_position<T>(cursor: &Cursor<T>) -> usize {
    usize::try_from(cursor.position()).unwrap_or(usize::MAX)
}

impl<T: WriteBuf> WriteBuf for Cursor<T> {
    fn as_slice(&self) -> &[u8] {
        self.get_ref()
            .as_slice()
            .get(cursor_position(self)..)
            .unwrap_or(&[])
    }

    fn capacity(&self) -> usize {
        self.get_ref()
            .capacity()
            .saturating_sub(cursor_position(self))
    }

    fn write_from<F>(&mut self, write: F) -> io::Result<usize>
    where
        F: FnOnce(&mut [u8]) -> io::Result<usize>,
    {
        let position = cursor_position(self);
        let mut written = 0;
        self.get_mut().write_from(|region| {
            let capacity = region.len();
            let tail = region.get_mut(position..).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "zstd: the cursor's position {position} is past the end of its \
                         buffer, which has room for {capacity} bytes"
                    ),
                )
            })?;
            written = write(tail)?;
            Ok(position + written)
        })?;
        Ok(written)
    }
}

//! Compress and decompress whole buffers at once: zstd's `bulk` API.
//!
//! [`Decompressor`] reuses its decoding buffers from one call to the next, as the real
//! one reuses its context; use one per thread for many small inputs, such as Parquet pages.

use std::io;
use std::marker::PhantomData;

use ruzstd::decoding::FrameDecoder;

use crate::frame::{self, Output};
use crate::zstd_safe::{self, WriteBuf};

/// Compresses blocks of data, one zstd frame per call.
///
/// Every level compresses the same way, with ruzstd's only implemented level (close to
/// zstd's level 1); the level is kept only to be reported back. The frames are valid zstd,
/// with content size and checksum, but larger than the C library's at higher levels.
/// Leave writing Parquet to the host's native encoder where that matters.
///
/// The lifetime stands where the real type ties a borrowed dictionary; dictionaries are
/// not supported here.
#[derive(Debug)]
pub struct Compressor<'a> {
    level: i32,
    dictionary: PhantomData<&'a [u8]>,
}

impl Compressor<'static> {
    /// Creates a compressor for `level`; any `i32` is accepted, as the C library clamps
    /// levels to [`crate::compression_level_range`] rather than refusing them.
    pub fn new(level: i32) -> io::Result<Self> {
        Ok(Compressor {
            level,
            dictionary: PhantomData,
        })
    }
}

impl Compressor<'_> {
    /// Changes the compression level for the next calls (which, here, changes nothing in
    /// the output).
    pub fn set_compression_level(&mut self, level: i32) -> io::Result<()> {
        self.level = level;
        Ok(())
    }

    /// The level given at creation or by [`Compressor::set_compression_level`].
    pub fn compression_level(&self) -> i32 {
        self.level
    }

    /// Compresses `source` as one frame into `destination` (see [`WriteBuf`] for where it
    /// lands) and returns the compressed length.
    ///
    /// The destination is never grown: give it [`zstd_safe::compress_bound`] bytes of room,
    /// or the call fails with an error saying how much was needed.
    pub fn compress_to_buffer<C: WriteBuf + ?Sized>(
        &mut self,
        source: &[u8],
        destination: &mut C,
    ) -> io::Result<usize> {
        let compressed = frame::compress(source);
        destination.write_from(|region| {
            let Some(target) = region.get_mut(..compressed.len()) else {
                return Err(frame::too_small(format!(
                    "{} bytes compress to {} bytes, and it has room for {}",
                    source.len(),
                    compressed.len(),
                    region.len()
                )));
            };
            target.copy_from_slice(&compressed);
            Ok(compressed.len())
        })
    }

    /// Compresses `data` as one frame into a new vector.
    pub fn compress(&mut self, data: &[u8]) -> io::Result<Vec<u8>> {
        Ok(frame::compress(data))
    }
}

/// Decompresses blocks of data, reusing its buffers between calls.
///
/// Input may be any number of zstd frames back to back, from any compression level and
/// any encoder; skippable frames are stepped over. Each frame's checksum and recorded
/// content size are verified when it carries them. Frames that need a dictionary are
/// refused.
///
/// The lifetime stands where the real type ties a borrowed dictionary.
pub struct Decompressor<'a> {
    decoder: FrameDecoder,
    dictionary: PhantomData<&'a [u8]>,
}

impl std::fmt::Debug for Decompressor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decompressor").finish_non_exhaustive()
    }
}

impl Default for Decompressor<'_> {
    fn default() -> Self {
        Decompressor {
            decoder: FrameDecoder::new(),
            dictionary: PhantomData,
        }
    }
}

impl Decompressor<'static> {
    /// Creates a decompressor. Its buffers are allocated on first use. Never fails; the
    /// `Result` is the real API's.
    pub fn new() -> io::Result<Self> {
        Ok(Self::default())
    }
}

impl Decompressor<'_> {
    /// Decompresses all the frames in `source` into `destination` (see [`WriteBuf`] for
    /// where the output lands) and returns how many bytes were written.
    ///
    /// The destination is never grown: reserve the decompressed size first (the frames
    /// usually record it: [`zstd_safe::get_frame_content_size`]). More output than fits is
    /// an error, as is corrupt or truncated input.
    pub fn decompress_to_buffer<C: WriteBuf + ?Sized>(
        &mut self,
        source: &[u8],
        destination: &mut C,
    ) -> io::Result<usize> {
        if let Some(native) = crate::native_decompressor() {
            let output = native(source, destination.capacity())?;
            return destination.write_from(|region| {
                let Some(target) = region.get_mut(..output.len()) else {
                    return Err(frame::too_small(format!(
                        "{} bytes decompressed, and it has room for {}",
                        output.len(),
                        region.len()
                    )));
                };
                target.copy_from_slice(&output);
                Ok(output.len())
            });
        }
        let decoder = &mut self.decoder;
        destination.write_from(|region| frame::decompress(decoder, source, Output::Fixed(region)))
    }

    /// Decompresses all the frames in `data` into a new vector of at most `capacity` bytes.
    ///
    /// When every frame records its size, the exact size is allocated, and a `capacity`
    /// below it is refused up front with both numbers in the error.
    pub fn decompress(&mut self, data: &[u8], capacity: usize) -> io::Result<Vec<u8>> {
        let capacity = match total_content_size(data) {
            Some(needed) if needed > capacity as u64 => {
                return Err(frame::too_small(format!(
                    "{needed} bytes needed, {capacity} given"
                )));
            }
            Some(needed) => needed as usize,
            None => capacity,
        };
        if let Some(native) = crate::native_decompressor() {
            return native(data, capacity);
        }
        let mut buffer = Vec::with_capacity(capacity);
        self.decompress_to_buffer(data, &mut buffer)?;
        Ok(buffer)
    }

    /// Decompresses all the frames in `data` into a vector that grows as needed, starting
    /// from `capacity` bytes when given.
    pub(crate) fn decompress_growing(
        &mut self,
        data: &[u8],
        capacity: Option<usize>,
    ) -> io::Result<Vec<u8>> {
        if let (Some(native), Some(size)) = (crate::native_decompressor(), capacity) {
            return native(data, size);
        }
        let mut buffer = Vec::with_capacity(capacity.unwrap_or(data.len().saturating_mul(4)));
        frame::decompress(&mut self.decoder, data, Output::Growing(&mut buffer))?;
        Ok(buffer)
    }

    /// The decompressed size of `data`, when every frame in it records its own; `None`
    /// otherwise, or when `data` is not a clean sequence of frames.
    ///
    /// Use it to size the destination of [`Decompressor::decompress_to_buffer`].
    pub fn upper_bound(data: &[u8]) -> Option<usize> {
        total_content_size(data).and_then(|size| usize::try_from(size).ok())
    }
}

/// Adds up the content sizes that the frames in `data` record, walking the frames.
///
/// A frame that claims more than its blocks can hold is corrupt (or hostile): `None`, so
/// that no caller allocates for the claim.
fn total_content_size(mut data: &[u8]) -> Option<u64> {
    let mut total = 0u64;
    while !data.is_empty() {
        let extent = frame::walk(data).ok()?;
        let size = zstd_safe::get_frame_content_size(data).ok()??;
        if size > extent.max_content {
            return None;
        }
        total = total.checked_add(size)?;
        data = data.get(extent.len..)?;
    }
    Some(total)
}

/// Compresses `data` into a new vector, as one frame; see [`Compressor`] about `level`.
pub fn compress(data: &[u8], level: i32) -> io::Result<Vec<u8>> {
    Compressor::new(level)?.compress(data)
}

/// Compresses `source` into `destination`, as one frame; see
/// [`Compressor::compress_to_buffer`].
pub fn compress_to_buffer(source: &[u8], destination: &mut [u8], level: i32) -> io::Result<usize> {
    Compressor::new(level)?.compress_to_buffer(source, destination)
}

/// Decompresses `data` into a new vector of at most `capacity` bytes; see
/// [`Decompressor::decompress`].
pub fn decompress(data: &[u8], capacity: usize) -> io::Result<Vec<u8>> {
    Decompressor::new()?.decompress(data, capacity)
}

/// Decompresses `source` into `destination`; see [`Decompressor::decompress_to_buffer`].
pub fn decompress_to_buffer(source: &[u8], destination: &mut [u8]) -> io::Result<usize> {
    Decompressor::new()?.decompress_to_buffer(source, destination)
}

/// Both types move between threads, as parquet's codecs must.
#[allow(dead_code)]
fn assert_send() {
    fn send<T: Send>() {}
    send::<Compressor<'static>>();
    send::<Decompressor<'static>>();
}

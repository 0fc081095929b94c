//! The zstd frame format where this crate reads it itself (headers, and block headers to
//! find where a frame ends), and the glue to ruzstd's decoder and encoder.
//!
//! Format reference: RFC 8878, section 3.1.

use std::io::{self, Read};

use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder, DEFAULT_MAX_WINDOW_SIZE};
use ruzstd::encoding::{CompressionLevel, FrameCompressor};

/// The magic number that opens a zstd frame.
const MAGIC: u32 = 0xFD2F_B528;
/// The magic numbers that open a skippable frame.
const SKIPPABLE: std::ops::RangeInclusive<u32> = 0x184D_2A50..=0x184D_2A5F;
/// No block holds more than this, compressed or not.
const MAX_BLOCK: usize = 128 << 10;
/// How many bytes the decoder produces between two drains of its window buffer.
const DECODE_STEP: usize = 1 << 20;

/// What a frame header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Header {
    /// A skippable frame (user data that decoders step over), of `frame_len` bytes in all.
    Skippable {
        /// The whole frame's length: 8 header bytes and the user data.
        frame_len: usize,
    },
    /// A zstd frame.
    Frame {
        /// The header's length, magic number included.
        header_len: usize,
        /// The decompressed size, when the header records it.
        content_size: Option<u64>,
        /// Whether a 4-byte checksum follows the last block.
        checksum: bool,
    },
}

/// An [`io::ErrorKind::InvalidData`] error whose message starts with `zstd: `.
pub(crate) fn invalid(message: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {message}"))
}

/// An error saying the destination cannot take the output.
pub(crate) fn too_small(message: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("zstd: destination buffer is too small: {message}"))
}

/// Reads the header of the frame at the start of `src`.
pub(crate) fn parse_header(src: &[u8]) -> io::Result<Header> {
    let Some(magic) = src.get(..4) else {
        return Err(invalid(format!(
            "{} bytes are too few for a frame header",
            src.len()
        )));
    };
    let magic = u32::from_le_bytes(magic.try_into().expect("four bytes"));
    if SKIPPABLE.contains(&magic) {
        let Some(len) = src.get(4..8) else {
            return Err(invalid("the input ends inside a skippable frame's header"));
        };
        let len = u32::from_le_bytes(len.try_into().expect("four bytes"));
        return Ok(Header::Skippable {
            frame_len: 8 + len as usize,
        });
    }
    if magic != MAGIC {
        return Err(invalid(format!(
            "this is not zstd data: it starts with 0x{magic:08X}, not the zstd magic number \
             0x{MAGIC:08X}"
        )));
    }
    let Some(&descriptor) = src.get(4) else {
        return Err(invalid("the input ends inside a frame header"));
    };
    if descriptor & 0x08 != 0 {
        return Err(invalid(
            "the frame header's reserved bit is set: corrupt data, or a format newer than \
             this decoder",
        ));
    }
    let fcs_flag = descriptor >> 6;
    let single_segment = descriptor & 0x20 != 0;
    let checksum = descriptor & 0x04 != 0;
    let dict_id_len = [0, 1, 2, 4][usize::from(descriptor & 0x03)];
    let fcs_len = match fcs_flag {
        0 if single_segment => 1,
        0 => 0,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let window_len = usize::from(!single_segment);
    let fcs_start = 5 + window_len + dict_id_len;
    let header_len = fcs_start + fcs_len;
    let Some(fcs) = src.get(fcs_start..header_len) else {
        return Err(invalid("the input ends inside a frame header"));
    };
    let content_size = (fcs_len > 0).then(|| {
        let mut bytes = [0u8; 8];
        bytes[..fcs_len].copy_from_slice(fcs);
        let size = u64::from_le_bytes(bytes);
        // The two-byte form is offset by 256, so it covers 256..=65791.
        if fcs_len == 2 {
            size + 256
        } else {
            size
        }
    });
    Ok(Header::Frame {
        header_len,
        content_size,
        checksum,
    })
}

/// The length of the frame (zstd or skippable) at the start of `src`, found by walking
/// its block headers.
pub(crate) fn frame_len(src: &[u8]) -> io::Result<usize> {
    walk(src).map(|extent| extent.len)
}

/// Where a frame ends, and the most it can decompress to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    /// The frame's compressed length.
    pub(crate) len: usize,
    /// The most its blocks can hold: 128 KiB each, whatever the header claims.
    pub(crate) max_content: u64,
}

/// Walks the block headers of the frame (zstd or skippable) at the start of `src`.
pub(crate) fn walk(src: &[u8]) -> io::Result<Extent> {
    let (header_len, checksum) = match parse_header(src)? {
        Header::Skippable { frame_len } if frame_len <= src.len() => {
            return Ok(Extent {
                len: frame_len,
                max_content: 0,
            })
        }
        Header::Skippable { .. } => {
            return Err(invalid("the input ends inside a skippable frame"));
        }
        Header::Frame {
            header_len,
            checksum,
            ..
        } => (header_len, checksum),
    };
    let mut at = header_len;
    let mut blocks = 0u64;
    loop {
        let Some(block_header) = src.get(at..at.saturating_add(3)) else {
            return Err(invalid("the input ends inside a frame, at a block header"));
        };
        let block_header = u32::from(block_header[0])
            | u32::from(block_header[1]) << 8
            | u32::from(block_header[2]) << 16;
        let last = block_header & 1 != 0;
        let size = (block_header >> 3) as usize;
        let body = match (block_header >> 1) & 3 {
            // Raw: the bytes themselves.
            0 => size,
            // RLE: one byte, repeated `size` times.
            1 => 1,
            // Compressed.
            2 => size,
            _ => return Err(invalid("a block header has the reserved block type")),
        };
        if size > MAX_BLOCK {
            return Err(invalid(format!(
                "a block claims {size} bytes, more than the format's maximum of {MAX_BLOCK}"
            )));
        }
        at = at.saturating_add(3 + body);
        blocks += 1;
        if last {
            break;
        }
    }
    if checksum {
        at = at.saturating_add(4);
    }
    if at > src.len() {
        return Err(invalid("the input ends inside a frame"));
    }
    Ok(Extent {
        len: at,
        max_content: blocks * MAX_BLOCK as u64,
    })
}

/// The most this crate's encoder writes for `len` bytes of input: a header of at most 14
/// bytes, every block stored raw behind its 3-byte header, and the 4-byte checksum.
pub(crate) fn worst_case_compressed_len(len: usize) -> usize {
    let blocks = len.div_ceil(MAX_BLOCK).max(1);
    len.saturating_add(3 * blocks).saturating_add(14 + 4)
}

/// Compresses `data` into one frame that records its content size and checksum.
pub(crate) fn compress(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(worst_case_compressed_len(data.len()));
    {
        // ruzstd implements only its fastest level (about zstd's level 1); asking for
        // another would panic.
        let mut compressor = FrameCompressor::new(CompressionLevel::Fastest);
        compressor.set_source(data);
        compressor.set_drain(&mut out);
        compressor.compress();
    }
    record_content_size(out, data.len() as u64)
}

/// Adds the content size to the header of `frame`, a frame from ruzstd's encoder, which
/// leaves it out. Decoders use it to size their output, and check it.
fn record_content_size(mut frame: Vec<u8>, size: u64) -> Vec<u8> {
    let header_len = match parse_header(&frame) {
        // Not single-segment (it has a window descriptor) and no content size yet: the
        // size field, last in the header, can be inserted at its end.
        Ok(Header::Frame {
            header_len,
            content_size: None,
            ..
        }) if frame[4] & 0x20 == 0 => header_len,
        // Some other layout: valid as it is, only without the size.
        _ => return frame,
    };
    // With a window descriptor, flag 0 means "no size", so sizes below 256 take 4 bytes.
    let (flag, field): (u8, Vec<u8>) = if (256..=65791).contains(&size) {
        (1, ((size - 256) as u16).to_le_bytes().to_vec())
    } else if let Ok(size) = u32::try_from(size) {
        (2, size.to_le_bytes().to_vec())
    } else {
        (3, size.to_le_bytes().to_vec())
    };
    frame[4] = (frame[4] & 0x3F) | flag << 6;
    frame.splice(header_len..header_len, field);
    frame
}

/// Where decompressed bytes go.
pub(crate) enum Output<'a> {
    /// A fixed slice, filled from its start; more output than it holds is an error.
    Fixed(&'a mut [u8]),
    /// A vector that grows as needed.
    Growing(&'a mut Vec<u8>),
}

impl Output<'_> {
    fn capacity(&self) -> Option<usize> {
        match self {
            Output::Fixed(slice) => Some(slice.len()),
            Output::Growing(_) => None,
        }
    }
}

/// Decompresses every frame in `input` into `output` with `decoder`, returning how many
/// bytes it wrote. Checksums and recorded content sizes are verified.
pub(crate) fn decompress(
    decoder: &mut FrameDecoder,
    input: &[u8],
    mut output: Output<'_>,
) -> io::Result<usize> {
    // A window as large as the whole output is no more memory than the output itself.
    let window_limit = output.capacity().map_or(DEFAULT_MAX_WINDOW_SIZE, |cap| {
        (cap as u64).max(DEFAULT_MAX_WINDOW_SIZE)
    });
    decoder.set_max_window_size(window_limit);
    let mut rest = input;
    let mut written = 0usize;
    let mut index = 0usize;
    while !rest.is_empty() {
        let offset = input.len() - rest.len();
        let where_ = || format!("frame {index} (at byte {offset} of {})", input.len());
        let header = parse_header(rest).map_err(|e| {
            invalid(format!(
                "{}: {}",
                where_(),
                e.to_string().trim_start_matches("zstd: ")
            ))
        })?;
        let (content_size, has_checksum) = match header {
            Header::Skippable { frame_len } => {
                rest = rest.get(frame_len..).ok_or_else(|| {
                    invalid(format!("{}: the skippable frame is truncated", where_()))
                })?;
                index += 1;
                continue;
            }
            Header::Frame {
                content_size,
                checksum,
                ..
            } => (content_size, checksum),
        };
        if let (Some(size), Some(capacity)) = (content_size, output.capacity()) {
            if (written as u64).saturating_add(size) > capacity as u64 {
                return Err(too_small(format!(
                    "{} decompresses to {size} bytes, and only {} of the {capacity} bytes are \
                     left",
                    where_(),
                    capacity - written
                )));
            }
        }
        let frame_start = written;
        decoder
            .reset(&mut rest)
            .map_err(|e| invalid(format!("{}: {e}", where_())))?;
        loop {
            decoder
                .decode_blocks(&mut rest, BlockDecodingStrategy::UptoBytes(DECODE_STEP))
                .map_err(|e| invalid(format!("{} is corrupt or truncated: {e}", where_())))?;
            match &mut output {
                Output::Fixed(slice) => {
                    written += decoder.read(&mut slice[written..])?;
                    if decoder.can_collect() != 0 {
                        return Err(too_small(format!(
                            "the output exceeds its {} bytes in {}",
                            slice.len(),
                            where_()
                        )));
                    }
                }
                Output::Growing(vec) => {
                    written += decoder.collect_to_writer(&mut **vec)?;
                }
            }
            if decoder.is_finished() {
                break;
            }
        }
        let frame_size = (written - frame_start) as u64;
        if let Some(expected) = content_size {
            if frame_size != expected {
                return Err(invalid(format!(
                    "{} decompressed to {frame_size} bytes but its header says {expected}",
                    where_()
                )));
            }
        }
        if has_checksum {
            match (
                decoder.get_checksum_from_data(),
                decoder.get_calculated_checksum(),
            ) {
                (Some(stored), Some(computed)) if stored != computed => {
                    return Err(invalid(format!(
                        "{}: checksum mismatch (stored 0x{stored:08X}, computed \
                         0x{computed:08X}): the data is corrupt",
                        where_()
                    )));
                }
                (None, _) => {
                    return Err(invalid(format!(
                        "{}: the input ends before the frame's checksum",
                        where_()
                    )));
                }
                _ => {}
            }
        }
        index += 1;
    }
    Ok(written)
}

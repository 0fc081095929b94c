//! Round trips through ruzstd's encoder and this crate's decoder, and the edges of the
//! API. Frames from the C library are tested in `tests/c_frames.rs`.

use std::io::Cursor;

use crate::bulk::{Compressor, Decompressor};
use crate::frame::{self, Header};
use crate::zstd_safe::{self, WriteBuf};

/// Deterministic bytes: `random` ones are incompressible, the others are text-like.
fn sample(len: usize, random: bool) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        if random {
            out.extend_from_slice(&state.to_le_bytes());
        } else {
            let word = ["ab", "cde", "fghi", "jk", " ", "\n"][(state % 6) as usize];
            out.extend_from_slice(word.as_bytes());
        }
    }
    out.truncate(len);
    out
}

#[test]
fn round_trips_at_every_size_that_changes_the_header_or_block_layout() {
    for len in [
        0,
        1,
        255,
        256,
        65_791,
        65_792,
        128 * 1024 - 1,
        128 * 1024,
        128 * 1024 + 1,
        300_000,
    ] {
        for random in [false, true] {
            let data = sample(len, random);
            let frame = crate::bulk::compress(&data, 3).unwrap();
            assert_eq!(
                zstd_safe::get_frame_content_size(&frame),
                Ok(Some(len as u64)),
                "{len}"
            );
            assert_eq!(
                zstd_safe::find_frame_compressed_size(&frame).unwrap(),
                frame.len()
            );
            assert!(
                frame.len() <= zstd_safe::compress_bound(len),
                "{len} {random}"
            );
            if !random && len > 1000 {
                assert!(frame.len() < len / 2, "{len}: text should compress");
            }
            let back = crate::bulk::decompress(&frame, len).unwrap();
            assert!(back == data, "{len} {random}");
        }
    }
}

#[test]
fn a_run_of_one_byte_round_trips() {
    let data = vec![7u8; 1_000_000];
    let frame = crate::bulk::compress(&data, 1).unwrap();
    assert!(frame.len() < 100, "{}", frame.len());
    assert!(crate::bulk::decompress(&frame, data.len()).unwrap() == data);
}

#[test]
fn every_level_compresses_and_the_level_is_kept() {
    let data = sample(10_000, false);
    for level in [
        zstd_safe::min_c_level(),
        -5,
        0,
        1,
        3,
        19,
        22,
        zstd_safe::max_c_level(),
    ] {
        let mut compressor = Compressor::new(level).unwrap();
        assert_eq!(compressor.compression_level(), level);
        let frame = compressor.compress(&data).unwrap();
        assert_eq!(crate::bulk::decompress(&frame, data.len()).unwrap(), data);
    }
    let mut compressor = Compressor::new(1).unwrap();
    compressor.set_compression_level(9).unwrap();
    assert_eq!(compressor.compression_level(), 9);
    assert_eq!(crate::compression_level_range(), -131072..=22);
    assert_eq!(crate::DEFAULT_COMPRESSION_LEVEL, 3);
}

/// What parquet's `ZSTDCodec::compress` and `decompress` do: reserve, then write through
/// a `Cursor` positioned at the end of what the `Vec` already holds.
#[test]
fn parquet_style_calls_append_through_a_cursor() {
    let data = sample(200_000, false);
    let mut compressor = Compressor::new(1).unwrap();
    let mut compressed = b"header".to_vec();
    compressed.reserve(zstd_safe::compress_bound(data.len()));
    let mut cursor = Cursor::new(&mut compressed);
    cursor.set_position(6);
    let n = compressor.compress_to_buffer(&data, &mut cursor).unwrap();
    assert_eq!(compressed.len(), 6 + n);
    assert!(compressed.starts_with(b"header"));

    let frame = &compressed[6..];
    let mut decompressor = Decompressor::new().unwrap();
    let mut out = b"prefix".to_vec();
    out.reserve(data.len());
    let mut cursor = Cursor::new(&mut out);
    cursor.set_position(6);
    let n = decompressor
        .decompress_to_buffer(frame, &mut cursor)
        .unwrap();
    assert_eq!(n, data.len());
    assert_eq!(
        cursor.position(),
        6,
        "the position does not move, as in zstd"
    );
    assert!(out[..6] == *b"prefix" && out[6..] == data[..]);
}

#[test]
fn output_lands_where_the_real_crate_puts_it() {
    let frame = crate::bulk::compress(b"hello", 3).unwrap();
    let mut decompressor = Decompressor::new().unwrap();

    // A Vec is written from its start, within its capacity, and takes the output's length.
    let mut vec = Vec::with_capacity(16);
    vec.extend_from_slice(b"old");
    assert_eq!(
        decompressor.decompress_to_buffer(&frame, &mut vec).unwrap(),
        5
    );
    assert_eq!(vec, b"hello");

    // A slice or array keeps its length; the prefix holds the output.
    let mut array = [b'.'; 8];
    assert_eq!(
        decompressor
            .decompress_to_buffer(&frame, &mut array)
            .unwrap(),
        5
    );
    assert_eq!(&array, b"hello...");
    let slice: &mut [u8] = &mut [0u8; 5];
    assert_eq!(decompressor.decompress_to_buffer(&frame, slice).unwrap(), 5);

    // A cursor past the data zero-fills the gap.
    let mut vec = Vec::with_capacity(16);
    vec.extend_from_slice(b"ab");
    let mut cursor = Cursor::new(vec);
    cursor.set_position(4);
    assert_eq!(cursor.capacity(), cursor.get_ref().capacity() - 4);
    decompressor
        .decompress_to_buffer(&frame, &mut cursor)
        .unwrap();
    assert_eq!(cursor.get_ref(), b"ab\0\0hello");
    assert_eq!(cursor.as_slice(), b"hello");

    // A cursor past the capacity is an error that says so.
    let mut cursor = Cursor::new(Vec::with_capacity(4));
    cursor.set_position(1000);
    let err = decompressor
        .decompress_to_buffer(&frame, &mut cursor)
        .unwrap_err();
    assert!(
        err.to_string().contains("past the end of its buffer"),
        "{err}"
    );
}

#[test]
fn too_little_room_is_an_error_that_leaves_the_vec_as_it_was() {
    let data = sample(5000, false);
    let frame = crate::bulk::compress(&data, 3).unwrap();

    let mut out = Vec::with_capacity(100);
    out.extend_from_slice(b"kept");
    let err = Decompressor::new()
        .unwrap()
        .decompress_to_buffer(&frame, &mut out)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "zstd: destination buffer is too small: frame 0 (at byte 0 of {}) decompresses \
             to 5000 bytes, and only {} of the {} bytes are left",
            frame.len(),
            out.capacity(),
            out.capacity()
        )
    );
    assert_eq!(out, b"kept");

    let mut small = [0u8; 10];
    let err = Compressor::new(3)
        .unwrap()
        .compress_to_buffer(&data, &mut small[..])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "zstd: destination buffer is too small: 5000 bytes compress to {} bytes, and it \
             has room for 10",
            frame.len()
        )
    );
}

#[test]
fn frames_from_this_encoder_concatenate() {
    let a = sample(150_000, false);
    let b = sample(10, true);
    let mut input = crate::bulk::compress(&a, 1).unwrap();
    input.extend(crate::bulk::compress(&b, 1).unwrap());
    input.extend(crate::bulk::compress(b"", 1).unwrap());
    assert_eq!(Decompressor::upper_bound(&input), Some(a.len() + b.len()));
    let out = crate::bulk::decompress(&input, a.len() + b.len()).unwrap();
    assert!(out == [a.clone(), b.clone()].concat());
    assert!(crate::decode_all(&input[..]).unwrap() == [a, b].concat());
    let encoded = crate::encode_all(&b"stream"[..], 0).unwrap();
    assert_eq!(crate::decode_all(&encoded[..]).unwrap(), b"stream");
}

#[test]
fn input_that_is_not_zstd_is_refused_with_a_clear_message() {
    let err = crate::bulk::decompress(b"PAR1 definitely not zstd", 100).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(
        err.to_string(),
        "zstd: frame 0 (at byte 0 of 24): this is not zstd data: it starts with \
         0x31524150, not the zstd magic number 0xFD2FB528"
    );
    assert_eq!(
        zstd_safe::get_frame_content_size(b"PAR1"),
        Err(zstd_safe::ContentSizeError)
    );
    assert_eq!(
        zstd_safe::get_frame_content_size(&[0x28, 0xB5]),
        Err(zstd_safe::ContentSizeError)
    );

    // Good frame, then garbage.
    let mut input = crate::bulk::compress(b"fine", 3).unwrap();
    let first = input.len();
    input.extend_from_slice(b"junk");
    let err = crate::bulk::decompress(&input, 100).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "zstd: frame 1 (at byte {first} of {}): ",
            first + 4
        )),
        "{err}"
    );
}

#[test]
fn headers_are_parsed_as_the_format_describes() {
    // Single segment, one-byte content size of 5.
    let single = [0x28, 0xB5, 0x2F, 0xFD, 0x20, 5];
    assert_eq!(
        frame::parse_header(&single).unwrap(),
        Header::Frame {
            header_len: 6,
            content_size: Some(5),
            checksum: false
        }
    );
    // Window descriptor, two-byte content size (offset by 256), checksum flag.
    let two = [0x28, 0xB5, 0x2F, 0xFD, 0x44, 0x50, 0x01, 0x00];
    assert_eq!(
        frame::parse_header(&two).unwrap(),
        Header::Frame {
            header_len: 8,
            content_size: Some(257),
            checksum: true
        }
    );
    // No content size at all.
    let none = [0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x50];
    assert_eq!(zstd_safe::get_frame_content_size(&none), Ok(None));
    // Reserved bit.
    let reserved = [0x28, 0xB5, 0x2F, 0xFD, 0x08, 0x50];
    assert!(frame::parse_header(&reserved)
        .unwrap_err()
        .to_string()
        .contains("reserved bit"));
    // Skippable frames count as empty.
    let skip = [0x50, 0x2A, 0x4D, 0x18, 3, 0, 0, 0, 1, 2, 3];
    assert_eq!(zstd_safe::get_frame_content_size(&skip), Ok(Some(0)));
    assert_eq!(zstd_safe::find_frame_compressed_size(&skip).unwrap(), 11);
    assert!(zstd_safe::find_frame_compressed_size(&skip[..10]).is_err());
}

#[test]
fn compress_bound_is_at_least_the_c_librarys() {
    assert_eq!(zstd_safe::compress_bound(0), 64);
    assert_eq!(zstd_safe::compress_bound(1 << 20), (1 << 20) + (1 << 12));
    for len in [0, 1, 100, 131_071, 131_072, 131_073, 10_000_000] {
        assert!(zstd_safe::compress_bound(len) >= frame::worst_case_compressed_len(len));
    }
}

#[test]
fn a_frame_claiming_more_than_its_blocks_hold_allocates_nothing_for_the_claim() {
    // Header: 8-byte content size of 1 TiB, 1 KiB window; then one RLE block of 10 bytes.
    let mut hostile = vec![0x28, 0xB5, 0x2F, 0xFD, 0xC0, 0x00];
    hostile.extend_from_slice(&(1u64 << 40).to_le_bytes());
    hostile.extend_from_slice(&[0x53, 0x00, 0x00, b'x']);
    assert_eq!(
        zstd_safe::get_frame_content_size(&hostile),
        Ok(Some(1 << 40))
    );
    assert_eq!(
        zstd_safe::find_frame_compressed_size(&hostile).unwrap(),
        hostile.len()
    );
    assert_eq!(Decompressor::upper_bound(&hostile), None);
    let err = crate::decode_all(&hostile[..]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "zstd: frame 0 (at byte 0 of 18) decompressed to 10 bytes but its header says \
         1099511627776"
    );
    let err = crate::bulk::decompress(&hostile, 1 << 20).unwrap_err();
    assert!(
        err.to_string().contains("destination buffer is too small"),
        "{err}"
    );
}

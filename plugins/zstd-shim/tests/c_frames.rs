//! Frames written by the C zstd library (its command-line tool, v1.5.4) decode to their
//! input. The frames are in `tests/data/`, made by `tests/data/generate.sh`; the inputs
//! are rebuilt here by `corpus`, the same generator as `tests/data/corpus.py`.

use std::io::Cursor;

use zstd::bulk::Decompressor;
use zstd::zstd_safe;

/// The input `corpus.py` writes for `lines` lines: eight words from sixteen a line, seven
/// lines in eight repeating an earlier one.
fn corpus(lines: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
        "juliett", "kilo", "lima", "mike", "november", "oscar", "papa",
    ];
    let mut state: u64 = 42;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    let mut out: Vec<String> = Vec::with_capacity(lines);
    for i in 0..lines {
        if i > 0 && next() % 8 != 0 {
            let earlier = out[(next() % i as u64) as usize].clone();
            out.push(earlier);
        } else {
            let words: Vec<&str> = (0..8).map(|_| WORDS[(next() % 16) as usize]).collect();
            out.push(words.join(" ") + "\n");
        }
    }
    out.concat().into_bytes()
}

fn large() -> Vec<u8> {
    corpus(3000)
}

fn small() -> Vec<u8> {
    corpus(1)
}

fn data(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// How many blocks the frame at the start of `frame` has, walking the block headers.
fn blocks(frame: &[u8]) -> usize {
    let descriptor = frame[4];
    let single_segment = descriptor & 0x20 != 0;
    let fcs = match descriptor >> 6 {
        0 => usize::from(single_segment),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let dict = [0, 1, 2, 4][usize::from(descriptor & 3)];
    let mut at = 5 + usize::from(!single_segment) + dict + fcs;
    let mut count = 0;
    loop {
        let header = u32::from_le_bytes([frame[at], frame[at + 1], frame[at + 2], 0]);
        count += 1;
        let size = (header >> 3) as usize;
        at += 3 + if (header >> 1) & 3 == 1 { 1 } else { size };
        if header & 1 == 1 {
            return count;
        }
    }
}

#[test]
fn the_generator_matches_the_one_that_made_the_inputs() {
    let large = large();
    // Over one 128 KiB block, so the frames need several.
    assert_eq!(large.len(), 150_827);
    assert!(large.len() > 128 * 1024);
    assert!(large.starts_with(b"golf charlie charlie papa golf mike juliett golf\n"));
    assert_eq!(
        small(),
        b"golf charlie charlie papa golf mike juliett golf\n"
    );
}

#[test]
fn c_frames_at_levels_1_3_and_19_decode_to_their_input() {
    let expected = large();
    for name in [
        "large-level1.zst",
        "large-level3.zst",
        "large-level19.zst",
        "large-fast5.zst",
    ] {
        let frame = data(name);
        assert!(blocks(&frame) > 1, "{name} should span several blocks");
        assert_eq!(
            zstd_safe::get_frame_content_size(&frame),
            Ok(Some(expected.len() as u64)),
            "{name}"
        );
        assert_eq!(
            zstd_safe::find_frame_compressed_size(&frame).unwrap(),
            frame.len()
        );
        let out = zstd::bulk::decompress(&frame, expected.len()).unwrap();
        assert!(out == expected, "{name} decoded to different bytes");
    }
}

#[test]
fn a_c_frame_without_content_size_or_checksum_decodes() {
    let frame = data("large-level3-stream-nocheck.zst");
    assert_eq!(zstd_safe::get_frame_content_size(&frame), Ok(None));
    assert_eq!(Decompressor::upper_bound(&frame), None);
    let expected = large();
    let out = zstd::bulk::decompress(&frame, expected.len()).unwrap();
    assert!(out == expected);
    // With no size to go by, too little room is found out while decoding.
    let err = zstd::bulk::decompress(&frame, expected.len() - 1).unwrap_err();
    assert!(
        err.to_string().contains("destination buffer is too small"),
        "{err}"
    );
    assert!(zstd::decode_all(&frame[..]).unwrap() == expected);
}

#[test]
fn a_tiny_single_segment_c_frame_decodes() {
    let frame = data("small-level3.zst");
    assert_eq!(
        zstd_safe::get_frame_content_size(&frame),
        Ok(Some(small().len() as u64))
    );
    assert_eq!(zstd::bulk::decompress(&frame, 1000).unwrap(), small());
}

#[test]
fn concatenated_c_frames_and_skippable_frames_decode_as_one_stream() {
    let mut input = data("large-level1.zst");
    // A skippable frame: magic 0x184D2A53, length 5, user data.
    input.extend_from_slice(&0x184D_2A53u32.to_le_bytes());
    input.extend_from_slice(&5u32.to_le_bytes());
    input.extend_from_slice(b"skip!");
    input.extend(data("small-level3.zst"));
    input.extend(data("large-level19.zst"));
    input.extend(data("large-level3-stream-nocheck.zst"));
    let expected = [large(), small(), large(), large()].concat();

    assert_eq!(Decompressor::upper_bound(&input), None);
    let out = zstd::bulk::decompress(&input, expected.len()).unwrap();
    assert!(out == expected);
    assert!(zstd::decode_all(&input[..]).unwrap() == expected);

    // Without the frame that records no size, the total is known up front.
    let sized = &input[..input.len() - data("large-level3-stream-nocheck.zst").len()];
    let sized_len = expected.len() - large().len();
    assert_eq!(Decompressor::upper_bound(sized), Some(sized_len));
    let err = zstd::bulk::decompress(sized, sized_len - 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "zstd: destination buffer is too small: {sized_len} bytes needed, {} given",
            sized_len - 1
        )
    );
}

/// What parquet's `ZSTDCodec::decompress` does: append to a `Vec` that already holds
/// data, through a `Cursor` positioned at its end, after reserving the page's size.
#[test]
fn decoding_appends_after_a_cursor_as_parquet_uses_it() {
    let frame = data("large-level19.zst");
    let expected = large();
    let mut decompressor = Decompressor::new().unwrap();
    let mut output = b"earlier page".to_vec();
    for _ in 0..2 {
        let offset = output.len();
        output.reserve(expected.len());
        let mut cursor = Cursor::new(&mut output);
        cursor.set_position(offset as u64);
        let n = decompressor
            .decompress_to_buffer(&frame, &mut cursor)
            .unwrap();
        assert_eq!(n, expected.len());
        assert_eq!(output.len(), offset + n);
        assert!(output[offset..] == expected[..]);
    }
    assert!(output.starts_with(b"earlier page"));
}

#[test]
fn a_corrupted_c_frame_is_an_error_not_wrong_data() {
    let frame = data("large-level3.zst");
    let expected = large();
    // Damage a byte in the middle of the compressed data, in each of many places: every
    // one must fail (most in decoding, the rest at the checksum), none return wrong bytes.
    let mut decompressor = Decompressor::new().unwrap();
    for at in (20..frame.len() - 4).step_by(97) {
        let mut bad = frame.clone();
        bad[at] ^= 0x55;
        let mut out = Vec::with_capacity(expected.len());
        if let Ok(n) = decompressor.decompress_to_buffer(&bad, &mut out) {
            panic!("damage at byte {at} went unnoticed ({n} bytes out)");
        }
    }
    // The checksum itself.
    let mut bad = frame.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let err = zstd::bulk::decompress(&bad, expected.len()).unwrap_err();
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    // The decompressor still works after all those errors.
    assert!(zstd::bulk::decompress(&frame, expected.len()).unwrap() == expected);
}

#[test]
fn a_truncated_c_frame_is_an_error() {
    let frame = data("large-level1.zst");
    for len in [0, 3, 5, 12, frame.len() / 2, frame.len() - 1] {
        let result = zstd::bulk::decompress(&frame[..len], 1 << 20);
        match (len, result) {
            // No input at all is no frames, as with the C library.
            (0, Ok(out)) => assert!(out.is_empty()),
            (_, Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{len}: {e}"),
            (_, Ok(out)) => panic!("{len} bytes decoded to {} bytes", out.len()),
        }
    }
}

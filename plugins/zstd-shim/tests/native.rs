//! Once a native decoder is set, every bulk decompression goes through it, and its output
//! lands where the destination says. (A test binary of its own: the decoder is set once
//! per process.)

use std::io::{self, Cursor};
use std::sync::atomic::{AtomicUsize, Ordering};

use zstd::bulk::{self, Decompressor};

static CALLS: AtomicUsize = AtomicUsize::new(0);

/// Stands in for the host's decoder: answers with a marker and the frame's last four bytes,
/// so that the test can tell who decoded, and what.
fn native(data: &[u8], capacity: usize) -> io::Result<Vec<u8>> {
    CALLS.fetch_add(1, Ordering::SeqCst);
    let mut out = b"native:".to_vec();
    out.extend_from_slice(&data[data.len() - 4..]);
    if out.len() > capacity {
        return Err(io::Error::other(format!(
            "{} bytes needed, {capacity} given",
            out.len()
        )));
    }
    Ok(out)
}

#[test]
fn a_native_decoder_takes_over_every_bulk_decompression() {
    let frame = bulk::compress(b"what ruzstd would have decoded", 3).unwrap();
    let tail = &frame[frame.len() - 4..];
    let expected = [b"native:".as_slice(), tail].concat();

    // Before: ruzstd decodes.
    assert_eq!(
        bulk::decompress(&frame, 100).unwrap(),
        b"what ruzstd would have decoded"
    );
    assert_eq!(CALLS.load(Ordering::SeqCst), 0);

    assert!(zstd::set_native_decompressor(native));
    assert!(
        !zstd::set_native_decompressor(native),
        "a second decoder is refused"
    );

    // Into a new vector.
    assert_eq!(bulk::decompress(&frame, 100).unwrap(), expected);

    // Into a cursor over a vector, after what it holds (as Parquet's codec asks).
    let mut page = b"header".to_vec();
    page.reserve(64);
    let mut cursor = Cursor::new(&mut page);
    cursor.set_position(6);
    let written = Decompressor::new()
        .unwrap()
        .decompress_to_buffer(&frame, &mut cursor)
        .unwrap();
    assert_eq!(written, expected.len());
    assert_eq!(page, [b"header".as_slice(), &expected].concat());

    // A destination too small for the output is an error.
    let mut small = [0u8; 5];
    let error = Decompressor::new()
        .unwrap()
        .decompress_to_buffer(&frame, &mut small[..])
        .unwrap_err();
    assert!(error.to_string().contains("given"), "{error}");

    // `decode_all` where the frame records its size.
    assert_eq!(zstd::decode_all(frame.as_slice()).unwrap(), expected);
    assert_eq!(CALLS.load(Ordering::SeqCst), 4);
}

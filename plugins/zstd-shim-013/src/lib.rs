//! A pure-Rust stand-in for the part of the [`zstd`](https://crates.io/crates/zstd) 0.13
//! crate that `mysql_common`'s binlog reader uses: [`Decoder`] (`with_buffer`, `Read`) and
//! [`stream::copy_decode`]. MySQL compresses a transaction's events into one payload
//! (`TransactionPayloadEvent`, MySQL 8.0.20+ with `binlog_transaction_compression`);
//! MariaDB never does. Decoding is the 0.14 stand-in's (`../zstd-shim`, on ruzstd): any
//! standard frame, several frames back to back, checksums verified. A payload is decoded
//! whole when the decoder is made, which suits payloads of one transaction.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::io::{self, BufRead, Cursor, Read, Write};
use std::marker::PhantomData;

pub use stream::read::Decoder;

/// Streams, as the real crate's `zstd::stream` module names them.
pub mod stream {
    use super::*;

    /// Decoders that read compressed data.
    pub mod read {
        use super::*;

        /// Decompresses what a reader holds; reads as the decompressed bytes.
        pub struct Decoder<'a, R> {
            decoded: Cursor<Vec<u8>>,
            _source: PhantomData<(&'a (), R)>,
        }

        impl<'a, R: BufRead> Decoder<'a, R> {
            /// Decompress everything `reader` holds.
            pub fn with_buffer(mut reader: R) -> io::Result<Self> {
                let mut compressed = Vec::new();
                reader.read_to_end(&mut compressed)?;
                Ok(Decoder {
                    decoded: Cursor::new(zstd14::decode_all(&compressed[..])?),
                    _source: PhantomData,
                })
            }
        }

        impl<R> Read for Decoder<'_, R> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.decoded.read(buf)
            }
        }
    }

    /// Decompress all of `source` into `destination`.
    pub fn copy_decode<R: Read, W: Write>(source: R, mut destination: W) -> io::Result<()> {
        let decoded = zstd14::decode_all(source)?;
        destination.write_all(&decoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compressed_payload_reads_back_and_copies_back() {
        let data = b"a transaction's events".repeat(50);
        let compressed = zstd14::bulk::compress(&data, 1).unwrap();
        let mut back = Vec::new();
        Decoder::with_buffer(&compressed[..])
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        let mut out = vec![0u8; data.len()];
        stream::copy_decode(&compressed[..], &mut out[..]).unwrap();
        assert_eq!(out, data);
        assert!(Decoder::with_buffer(&b"not zstd"[..]).is_err());
    }
}

//! Record batches (magic 2), the unit Kafka stores and sends: decoding the batches of a
//! fetched partition (checksums verified, compressed batches inflated, control batches and
//! aborted transactions left out) and encoding one batch for a produce request.

use crate::wire::{Decoder, Encoder};
use crate::{Error, Result};

/// One record as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    /// Milliseconds since the epoch (create time or log-append time, as the topic keeps).
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// On the last record read of a batch: the offset after the batch. Positions kept at
    /// batch ends resume on every broker, including those that return only the batches
    /// starting at or after the offset asked for.
    pub batch_end: Option<i64>,
}

/// A record to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewRecord {
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A transaction that was aborted, from a read-committed fetch: records of `producer_id`
/// from `first_offset` on, until its abort marker, are not to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTransaction {
    pub producer_id: i64,
    pub first_offset: i64,
}

/// Size of the batch header, from the base offset to the record count.
const BATCH_HEADER: usize = 61;
/// Bytes from the start of a batch to the first byte its length counts.
const LENGTH_PREFIX: usize = 12;

/// The codec in a batch's attributes.
fn codec_name(codec: i16) -> &'static str {
    match codec {
        0 => "none",
        1 => "gzip",
        2 => "snappy",
        3 => "lz4",
        4 => "zstd",
        _ => "unknown",
    }
}

/// Decode the records at or after `from` in the batches of one fetched partition, in
/// offset order, into `out`; returns the offset to fetch next (after the last batch read
/// whole, which may hold no readable record: a control batch, an aborted transaction).
///
/// A fetch may end inside a batch (the broker fills `max_bytes` with whole batches except
/// perhaps the last); that batch is left for the next fetch. `aborted` comes sorted by
/// `first_offset` (as the broker sends it) or in any order.
pub fn decode_batches(
    data: &[u8],
    from: i64,
    aborted: &[AbortedTransaction],
    out: &mut Vec<Record>,
) -> Result<i64> {
    let mut aborted: Vec<AbortedTransaction> = aborted.to_vec();
    aborted.sort_by_key(|a| a.first_offset);
    let mut aborted = aborted.into_iter().peekable();
    // Producers whose open transaction was aborted: skip their records until the marker.
    let mut skipping: Vec<i64> = Vec::new();
    let mut next = from;
    let mut at = 0usize;
    while data.len() - at >= LENGTH_PREFIX {
        let mut d = Decoder::new(&data[at..], "Fetch");
        let base_offset = d.i64()?;
        let length = d.i32()?;
        if length < (BATCH_HEADER - LENGTH_PREFIX) as i32 {
            return Err(Error::Protocol(format!(
                "a record batch at offset {base_offset} claims {length} bytes"
            )));
        }
        let end = at + LENGTH_PREFIX + length as usize;
        if end > data.len() {
            // Cut short by the fetch's byte limit: read it next time.
            break;
        }
        let batch = &data[at..end];
        at = end;
        let magic = batch[16] as i8;
        if magic != 2 {
            return Err(Error::Protocol(format!(
                "a record batch at offset {base_offset} is in message format {magic}; only format 2 (Kafka 0.11 and later) is read"
            )));
        }
        let mut d = Decoder::new(&batch[17..], "Fetch");
        let crc = d.u32()?;
        let actual = crc32c(&batch[21..]);
        if crc != actual {
            return Err(Error::Protocol(format!(
                "the record batch at offset {base_offset} fails its checksum (CRC-32C {actual:#010x}, stored {crc:#010x})"
            )));
        }
        let attributes = d.i16()?;
        let last_offset_delta = d.i32()?;
        let base_timestamp = d.i64()?;
        let max_timestamp = d.i64()?;
        let producer_id = d.i64()?;
        let _producer_epoch = d.i16()?;
        let _base_sequence = d.i32()?;
        let count = d.i32()?;
        let batch_end = base_offset + i64::from(last_offset_delta) + 1;
        next = next.max(batch_end);
        let transactional = attributes & 0x10 != 0;
        let control = attributes & 0x20 != 0;
        while let Some(a) = aborted.peek() {
            if a.first_offset > base_offset + i64::from(last_offset_delta) {
                break;
            }
            skipping.push(a.producer_id);
            aborted.next();
        }
        if control {
            // A commit or abort marker ends the producer's transaction either way.
            skipping.retain(|p| *p != producer_id);
            continue;
        }
        if transactional && skipping.contains(&producer_id) {
            continue;
        }
        if batch_end <= from {
            continue;
        }
        let codec = attributes & 0x07;
        let inflated;
        let body = if codec == 0 {
            &batch[BATCH_HEADER..]
        } else {
            inflated = decompress(codec, &batch[BATCH_HEADER..]).map_err(|e| {
                Error::Protocol(format!(
                    "the record batch at offset {base_offset} ({} compressed): {e}",
                    codec_name(codec)
                ))
            })?;
            &inflated[..]
        };
        let mut r = Decoder::new(body, "Fetch");
        let first = out.len();
        for _ in 0..count.max(0) {
            let length = r.varint()?;
            let record = r.take(length.max(0) as usize, "a record")?;
            let mut f = Decoder::new(record, "Fetch");
            let _attributes = f.i8()?;
            let timestamp_delta = f.varlong()?;
            let offset = base_offset + i64::from(f.varint()?);
            let key = f.varbytes()?.map(<[u8]>::to_vec);
            let value = f.varbytes()?.map(<[u8]>::to_vec);
            let n = f.varint()?.max(0);
            let mut headers = Vec::with_capacity(n.min(64) as usize);
            for _ in 0..n {
                let name = f.varbytes()?.unwrap_or_default();
                let name = String::from_utf8_lossy(name).into_owned();
                headers.push((name, f.varbytes()?.map(<[u8]>::to_vec)));
            }
            if offset < from {
                continue;
            }
            out.push(Record {
                offset,
                timestamp_ms: if attributes & 0x08 != 0 {
                    // Log-append time: the batch's max timestamp applies to all.
                    max_timestamp
                } else {
                    base_timestamp + timestamp_delta
                },
                key,
                value,
                headers,
                batch_end: None,
            });
        }
        if out.len() > first {
            out.last_mut().expect("pushed above").batch_end = Some(batch_end);
        }
    }
    Ok(next)
}

/// Encode `records` as one uncompressed batch, numbered from offset 0 (the broker assigns
/// the real offsets).
pub fn encode_batch(records: &[NewRecord]) -> Vec<u8> {
    let base_timestamp = records.first().map_or(0, |r| r.timestamp_ms);
    let max_timestamp = records
        .iter()
        .map(|r| r.timestamp_ms)
        .max()
        .unwrap_or(base_timestamp);
    let mut body = Encoder::default();
    let mut one = Encoder::default();
    for (i, r) in records.iter().enumerate() {
        one.buf.clear();
        one.i8(0)
            .varlong(r.timestamp_ms - base_timestamp)
            .varint(i as i32);
        for field in [&r.key, &r.value] {
            match field {
                Some(b) => {
                    one.varint(b.len() as i32);
                    one.buf.extend_from_slice(b);
                }
                None => {
                    one.varint(-1);
                }
            }
        }
        one.varint(r.headers.len() as i32);
        for (k, v) in &r.headers {
            one.varint(k.len() as i32);
            one.buf.extend_from_slice(k.as_bytes());
            one.varint(v.len() as i32);
            one.buf.extend_from_slice(v);
        }
        body.varint(one.buf.len() as i32);
        body.buf.extend_from_slice(&one.buf);
    }
    let mut e = Encoder::default();
    e.i64(0)
        .i32((BATCH_HEADER - LENGTH_PREFIX + body.buf.len()) as i32)
        .i32(-1) // partition leader epoch
        .i8(2) // magic
        .i32(0) // crc, filled in below
        .i16(0) // attributes: no codec, create time
        .i32(records.len().saturating_sub(1) as i32)
        .i64(base_timestamp)
        .i64(max_timestamp)
        .i64(-1) // producer id: not idempotent
        .i16(-1)
        .i32(-1)
        .i32(records.len() as i32);
    e.buf.extend_from_slice(&body.buf);
    let crc = crc32c(&e.buf[21..]);
    e.buf[17..21].copy_from_slice(&crc.to_be_bytes());
    e.buf
}

#[cfg(feature = "codecs")]
fn decompress(codec: i16, data: &[u8]) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::with_capacity(data.len() * 4);
    match codec {
        1 => flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .map(|_| out)
            .map_err(|e| e.to_string()),
        2 => snappy(data),
        3 => lz4_flex::frame::FrameDecoder::new(data)
            .read_to_end(&mut out)
            .map(|_| out)
            .map_err(|e| e.to_string()),
        4 => zstd::decode_all(data).map_err(|e| e.to_string()),
        other => Err(format!("codec {other} is not one of Kafka's")),
    }
}

#[cfg(not(feature = "codecs"))]
fn decompress(codec: i16, _data: &[u8]) -> std::result::Result<Vec<u8>, String> {
    Err(format!(
        "this build reads no compressed batches ({})",
        codec_name(codec)
    ))
}

/// Snappy as Java producers write it: either one raw block, or the xerial framing
/// (a magic header, then blocks each with a 32-bit length).
#[cfg(feature = "codecs")]
fn snappy(data: &[u8]) -> std::result::Result<Vec<u8>, String> {
    const XERIAL: &[u8] = b"\x82SNAPPY\x00";
    let mut dec = snap::raw::Decoder::new();
    if !data.starts_with(XERIAL) {
        return dec.decompress_vec(data).map_err(|e| e.to_string());
    }
    let mut out = Vec::new();
    // The header: magic (8 bytes), version and compatible version (4 bytes each).
    let mut at = 16;
    while at < data.len() {
        let Some(len) = data.get(at..at + 4) else {
            return Err("a snappy block's length is cut short".into());
        };
        let len = u32::from_be_bytes(len.try_into().unwrap()) as usize;
        at += 4;
        let Some(block) = data.get(at..at + len) else {
            return Err("a snappy block is cut short".into());
        };
        out.extend(dec.decompress_vec(block).map_err(|e| e.to_string())?);
        at += len;
    }
    Ok(out)
}

/// CRC-32C (Castagnoli), as record batches are checked with; eight bytes at a time.
pub fn crc32c(data: &[u8]) -> u32 {
    static TABLES: std::sync::OnceLock<[[u32; 256]; 8]> = std::sync::OnceLock::new();
    let t = TABLES.get_or_init(|| {
        let mut t = [[0u32; 256]; 8];
        for i in 0..256u32 {
            let mut c = i;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82f6_3b78
                } else {
                    c >> 1
                };
            }
            t[0][i as usize] = c;
        }
        for i in 0..256 {
            for k in 1..8 {
                let prev = t[k - 1][i];
                t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            }
        }
        t
    });
    let mut crc = !0u32;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) ^ crc;
        let hi = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        crc = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][(hi & 0xff) as usize]
            ^ t[2][((hi >> 8) & 0xff) as usize]
            ^ t[1][((hi >> 16) & 0xff) as usize]
            ^ t[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ t[0][((crc ^ u32::from(b)) & 0xff) as usize];
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ts: i64, key: &str, value: &str) -> NewRecord {
        NewRecord {
            timestamp_ms: ts,
            key: Some(key.as_bytes().to_vec()),
            value: Some(value.as_bytes().to_vec()),
            headers: vec![("trace".into(), b"t1".to_vec())],
        }
    }

    /// A batch as the broker would hand it back: offsets from `base`.
    fn stored(base: i64, records: &[NewRecord]) -> Vec<u8> {
        let mut b = encode_batch(records);
        b[..8].copy_from_slice(&base.to_be_bytes());
        b
    }

    #[test]
    fn crc32c_matches_the_published_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
        let long: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let bytewise = {
            let mut crc = !0u32;
            for &b in &long {
                crc ^= u32::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 != 0 {
                        (crc >> 1) ^ 0x82f6_3b78
                    } else {
                        crc >> 1
                    };
                }
            }
            !crc
        };
        assert_eq!(crc32c(&long), bytewise);
    }

    #[test]
    fn batches_round_trip_and_reading_resumes_inside_a_batch() {
        let mut data = stored(10, &[record(1000, "a", "1"), record(1005, "b", "2")]);
        data.extend(stored(12, &[record(2000, "c", "3")]));
        let mut out = Vec::new();
        assert_eq!(decode_batches(&data, 0, &[], &mut out).unwrap(), 13);
        assert_eq!(
            out.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [10, 11, 12]
        );
        assert_eq!(out[1].timestamp_ms, 1005);
        assert_eq!(out[1].key.as_deref(), Some(&b"b"[..]));
        assert_eq!(
            out[2].headers,
            [("trace".to_string(), Some(b"t1".to_vec()))]
        );
        // The last record of each batch says where the batch ends.
        assert_eq!(
            out.iter().map(|r| r.batch_end).collect::<Vec<_>>(),
            [None, Some(12), Some(13)]
        );
        out.clear();
        // Fetching from 11 returns the whole first batch: offset 10 is left out.
        decode_batches(&data, 11, &[], &mut out).unwrap();
        assert_eq!(out.iter().map(|r| r.offset).collect::<Vec<_>>(), [11, 12]);
    }

    #[test]
    fn a_batch_cut_short_by_the_fetch_is_left_for_the_next() {
        let mut data = stored(0, &[record(1, "a", "1")]);
        let second = stored(1, &[record(2, "b", "2")]);
        data.extend_from_slice(&second[..second.len() - 3]);
        let mut out = Vec::new();
        assert_eq!(decode_batches(&data, 0, &[], &mut out).unwrap(), 1);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_corrupt_batch_fails_its_checksum() {
        let mut data = stored(0, &[record(1, "a", "hello")]);
        let last = data.len() - 3;
        data[last] ^= 0xff;
        let e = decode_batches(&data, 0, &[], &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("fails its checksum"), "{e}");
    }

    #[test]
    fn aborted_transactions_and_control_batches_are_not_read() {
        let producer = 77;
        let mut tx = stored(0, &[record(1, "a", "aborted"), record(1, "b", "aborted")]);
        // Mark the batch transactional, from producer 77, and fix its checksum.
        let fix = |b: &mut Vec<u8>, attributes: i16, producer: i64| {
            b[21..23].copy_from_slice(&attributes.to_be_bytes());
            b[43..51].copy_from_slice(&producer.to_be_bytes());
            let crc = crc32c(&b[21..]);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
        };
        fix(&mut tx, 0x10, producer);
        let mut marker = stored(2, &[record(1, "", "")]);
        fix(&mut marker, 0x30, producer);
        let plain = stored(3, &[record(1, "c", "kept")]);
        let data = [tx, marker, plain].concat();
        let mut out = Vec::new();
        let aborted = [AbortedTransaction {
            producer_id: producer,
            first_offset: 0,
        }];
        assert_eq!(decode_batches(&data, 0, &aborted, &mut out).unwrap(), 4);
        assert_eq!(out.iter().map(|r| r.offset).collect::<Vec<_>>(), [3]);
        // Without the abort list (read uncommitted) the transaction's records are read,
        // the marker still not.
        out.clear();
        decode_batches(&data, 0, &[], &mut out).unwrap();
        assert_eq!(out.iter().map(|r| r.offset).collect::<Vec<_>>(), [0, 1, 3]);
    }

    #[cfg(feature = "codecs")]
    #[test]
    fn compressed_batches_are_inflated() {
        use std::io::Write;
        let plain = stored(5, &[record(1, "k", "compressed value")]);
        let records = &plain[BATCH_HEADER..];
        let gzip = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(records).unwrap();
            e.finish().unwrap()
        };
        let mut batch = plain[..BATCH_HEADER].to_vec();
        batch.extend_from_slice(&gzip);
        let length = (batch.len() - LENGTH_PREFIX) as i32;
        batch[8..12].copy_from_slice(&length.to_be_bytes());
        batch[21..23].copy_from_slice(&1i16.to_be_bytes());
        let crc = crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        let mut out = Vec::new();
        decode_batches(&batch, 0, &[], &mut out).unwrap();
        assert_eq!(out[0].value.as_deref(), Some(&b"compressed value"[..]));
        assert_eq!(out[0].offset, 5);
    }
}

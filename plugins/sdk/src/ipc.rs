//! Arrow IPC at the boundary: every batch and schema crosses as one IPC stream.

use std::io::Cursor;

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::reader::{StreamDecoder, StreamReader};
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{ArrowError, Schema, SchemaRef};

use crate::{Error, Result};

pub use crate::ipc_peek::peek;

/// Encode one batch as an IPC stream (schema message + the batch).
pub fn encode_batch(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(encoded_size(batch));
    let mut writer = StreamWriter::try_new(&mut out, batch.schema_ref())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}

/// About the size of `batch` encoded as IPC: the bytes its columns use, plus room for the
/// messages' headers and padding.
///
/// `RecordBatch::get_array_memory_size` is no estimate here: a column decoded from IPC
/// counts the whole message it points into, so a batch that came from the host would be
/// counted once per buffer, many times its size, and the output buffer reserved that
/// large.
fn encoded_size(batch: &RecordBatch) -> usize {
    let columns: usize = batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
        .sum();
    columns + 4096 + 64 * 4 * batch.num_columns()
}

/// Encode a schema alone as an IPC stream with no batch.
pub fn encode_schema(schema: &Schema) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, schema)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}

/// Decode the first batch of an IPC stream. A stream with no batch decodes to an empty
/// batch of its schema.
pub fn decode_batch(bytes: &[u8]) -> Result<RecordBatch> {
    let mut reader = StreamReader::try_new(Cursor::new(bytes), None)
        .map_err(|e| Error::fatal(format!("malformed Arrow IPC from the host: {e}")))?;
    match reader.next() {
        Some(batch) => Ok(batch?),
        None => Ok(RecordBatch::new_empty(reader.schema())),
    }
}

/// Decode the one batch of an IPC stream handed over by the host, in place: the columns
/// point into `bytes` (copied only where a buffer is misaligned). A stream with no batch
/// decodes to an empty batch of its schema; more than one batch is refused.
pub fn decode_owned(bytes: Vec<u8>) -> Result<RecordBatch> {
    let malformed = |e: ArrowError| Error::fatal(format!("malformed Arrow IPC from the host: {e}"));
    let mut buffer = Buffer::from_vec(bytes);
    let mut decoder = StreamDecoder::new();
    let mut batch = None;
    while !buffer.is_empty() {
        if let Some(decoded) = decoder.decode(&mut buffer).map_err(malformed)? {
            if batch.replace(decoded).is_some() {
                return Err(Error::fatal(
                    "malformed Arrow IPC from the host: the stream holds more than one batch",
                ));
            }
        }
    }
    decoder.finish().map_err(malformed)?;
    match (batch, decoder.schema()) {
        (Some(batch), _) => Ok(batch),
        (None, Some(schema)) => Ok(RecordBatch::new_empty(schema)),
        (None, None) => Err(Error::fatal(
            "malformed Arrow IPC from the host: the stream has no schema",
        )),
    }
}

/// Decode the schema of an IPC stream.
pub fn decode_schema(bytes: &[u8]) -> Result<SchemaRef> {
    let reader = StreamReader::try_new(Cursor::new(bytes), None)
        .map_err(|e| Error::fatal(format!("malformed Arrow IPC schema from the host: {e}")))?;
    Ok(reader.schema())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field};
    use std::sync::Arc;

    #[test]
    fn peek_reads_what_decode_reads() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..100)),
                Arc::new(StringArray::from_iter_values(
                    (0..100).map(|i| i.to_string()),
                )),
            ],
        )
        .unwrap();
        let bytes = encode_batch(&batch).unwrap();
        assert_eq!(decode_owned(bytes.clone()).unwrap(), batch);
        let empty = decode_owned(encode_schema(&schema).unwrap()).unwrap();
        assert_eq!((empty.schema(), empty.num_rows()), (schema.clone(), 0));
        let mut twice = bytes.clone();
        twice.extend_from_slice(&bytes);
        assert!(decode_owned(twice).is_err(), "two streams back to back");
        let (peeked, rows) = peek(&bytes).unwrap();
        assert_eq!((peeked, rows), (schema.clone(), 100));
        assert!(
            peek(&encode_schema(&schema).unwrap()).is_none(),
            "without rows, the decoder reads the stream"
        );
        assert!(peek(b"not arrow").is_none());
        assert!(peek(&bytes[..bytes.len() - 20]).is_none());
    }

    #[test]
    fn the_output_reserved_is_about_the_encoded_size_even_for_a_decoded_batch() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let n = 50_000;
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..n)),
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("value number {i}")),
                )),
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("other {i}")),
                )),
            ],
        )
        .unwrap();
        let bytes = encode_batch(&batch).unwrap();
        // Every column of a decoded batch points into the one message it came in.
        let decoded = decode_owned(bytes.clone()).unwrap();
        for b in [&batch, &decoded] {
            let reserved = encoded_size(b);
            assert!(
                reserved >= bytes.len() && reserved < bytes.len() + 64 * 1024,
                "reserved {reserved} for {} bytes",
                bytes.len()
            );
        }
    }
}

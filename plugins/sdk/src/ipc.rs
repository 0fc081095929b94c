//! Arrow IPC at the boundary: every batch and schema crosses as one IPC stream.

use std::io::Cursor;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_ipc::Message;
use arrow_schema::{Schema, SchemaRef};

use crate::{Error, Result};

/// Encode one batch as an IPC stream (schema message + the batch).
pub fn encode_batch(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(batch.get_array_memory_size() + 1024);
    let mut writer = StreamWriter::try_new(&mut out, batch.schema_ref())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
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

/// Decode the schema of an IPC stream.
pub fn decode_schema(bytes: &[u8]) -> Result<SchemaRef> {
    let reader = StreamReader::try_new(Cursor::new(bytes), None)
        .map_err(|e| Error::fatal(format!("malformed Arrow IPC schema from the host: {e}")))?;
    Ok(reader.schema())
}

/// The schema and row count of a one-batch IPC stream, read from its message headers
/// without decoding the columns; `None` when the headers alone cannot say (dictionaries,
/// more than one batch, a framing error): decode such a stream with [`decode_batch`].
pub fn peek(bytes: &[u8]) -> Option<(SchemaRef, usize)> {
    let mut pos = 0;
    let (first, _) = message(bytes, &mut pos)??;
    let schema = Arc::new(arrow_ipc::convert::try_fb_to_schema(first.header_as_schema()?).ok()?);
    let mut rows = None;
    while let Some((next, body)) = message(bytes, &mut pos)? {
        let header = next.header_as_record_batch()?;
        if rows.is_some() {
            return None;
        }
        for buffer in header.buffers()? {
            let end = u64::try_from(buffer.offset())
                .ok()?
                .checked_add(u64::try_from(buffer.length()).ok()?)?;
            if end > body as u64 {
                return None;
            }
        }
        rows = Some(usize::try_from(header.length()).ok()?);
    }
    Some((schema, rows.unwrap_or(0)))
}

/// The message at `*pos` and the length of its body, moving `*pos` past both; `Some(None)`
/// at the end of the stream, `None` where the framing is not understood.
fn message<'a>(bytes: &'a [u8], pos: &mut usize) -> Option<Option<(Message<'a>, usize)>> {
    let mut rest = &bytes[*pos..];
    if rest.is_empty() {
        return Some(None);
    }
    let mut prefix = 4;
    if rest.starts_with(&[0xff; 4]) {
        rest = &rest[4..];
        prefix = 8;
    }
    let len = usize::try_from(i32::from_le_bytes(rest.get(..4)?.try_into().ok()?)).ok()?;
    if len == 0 {
        *pos = bytes.len();
        return Some(None);
    }
    let message = arrow_ipc::root_as_message(rest.get(4..4 + len)?).ok()?;
    let body = usize::try_from(message.bodyLength()).ok()?;
    let end = pos.checked_add(prefix + len)?.checked_add(body)?;
    if end > bytes.len() {
        return None;
    }
    *pos = end;
    Some(Some((message, body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field};

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
        let (peeked, rows) = peek(&bytes).unwrap();
        assert_eq!((peeked, rows), (schema.clone(), 100));
        assert_eq!(peek(&encode_schema(&schema).unwrap()).unwrap().1, 0);
        assert!(peek(b"not arrow").is_none());
        assert!(peek(&bytes[..bytes.len() - 20]).is_none());
    }
}

//! Arrow IPC at the boundary: every batch and schema crosses as one IPC stream.

use std::io::Cursor;

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
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

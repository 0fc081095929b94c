//! What the host itself reads from the Arrow IPC streams plugins exchange: the schema and
//! row count of a batch (to check a plugin's output against the contract and to count
//! rows), and single rows as JSON for the dead-letter queue and back for its replay.

use std::cell::Cell;
use std::io::Cursor;

use arrow::array::ArrayRef;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::reader::{StreamDecoder, StreamReader};
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

/// The header reader plugins use too: one file, compiled into both.
#[path = "../../plugins/sdk/src/ipc_peek.rs"]
mod ipc_peek;

thread_local! {
    /// Set while an Arrow reader runs over bytes a plugin returned (see [`guarded`]).
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is reading bytes a plugin returned, where a panic of the Arrow
/// reader is turned into an error: a panic hook should then stay quiet.
pub fn in_guarded_read() -> bool {
    GUARDED.with(Cell::get)
}

/// Runs an Arrow reader over bytes a plugin returned. The reader panics on some malformed
/// streams instead of returning an error (found by fuzzing: a dictionary batch whose buffer
/// lies past its body); the panic becomes the error, so a plugin cannot take the host down
/// with crafted IPC.
fn guarded<T>(read: impl FnOnce() -> Result<T, ArrowError>) -> Result<T, ArrowError> {
    let was = GUARDED.with(|g| g.replace(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(read));
    GUARDED.with(|g| g.set(was));
    outcome.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("the reader stopped");
        Err(ArrowError::IpcError(format!(
            "malformed IPC stream: {what}"
        )))
    })
}

/// Decode a one-batch IPC stream; a stream with no batch is an empty batch of its schema.
pub fn decode(bytes: &[u8]) -> Result<RecordBatch, ArrowError> {
    guarded(|| {
        let mut reader = StreamReader::try_new(Cursor::new(bytes), None)?;
        let schema = reader.schema();
        let batch = reader.next().transpose()?;
        if reader.next().is_some() {
            return Err(ArrowError::IpcError(
                "expected one record batch per message, found more".into(),
            ));
        }
        Ok(batch.unwrap_or_else(|| RecordBatch::new_empty(schema)))
    })
}

/// Column `index` alone of a one-batch IPC stream: the other columns' buffers are skipped,
/// not decoded.
pub fn decode_column(bytes: &[u8], index: usize) -> Result<ArrayRef, ArrowError> {
    guarded(|| {
        let mut reader = StreamReader::try_new(Cursor::new(bytes), Some(vec![index]))?;
        match reader.next().transpose()? {
            Some(batch) if batch.num_columns() == 1 => Ok(batch.column(0).clone()),
            _ => Err(ArrowError::IpcError(format!(
                "the stream has no batch with a column {index}"
            ))),
        }
    })
}

/// The schema and row count of a one-batch IPC stream, read from its message headers
/// without decoding the columns. The framing is checked (every message complete, the
/// batch's buffers inside its body, at most one batch); anything the headers alone cannot
/// vouch for (dictionaries, an unusual layout, any error) goes through [`decode`], so a
/// malformed stream is refused with the same error as before.
pub fn inspect(bytes: &[u8]) -> Result<(SchemaRef, u64), ArrowError> {
    if let Some((schema, rows)) = ipc_peek::peek(bytes) {
        return Ok((schema, rows as u64));
    }
    let batch = decode(bytes)?;
    Ok((batch.schema(), batch.num_rows() as u64))
}

/// The one batch of an IPC stream that the caller hands over, decoded in place: the
/// columns point into `bytes` (copied only where a buffer is misaligned). `None` for a
/// stream without a batch; more than one batch is refused.
pub fn decode_owned(bytes: Vec<u8>) -> Result<Option<RecordBatch>, ArrowError> {
    guarded(|| {
        let mut buffer = arrow::buffer::Buffer::from_vec(bytes);
        let mut decoder = StreamDecoder::new();
        let mut batch = None;
        while !buffer.is_empty() {
            if let Some(decoded) = decoder.decode(&mut buffer)? {
                if batch.replace(decoded).is_some() {
                    return Err(ArrowError::IpcError(
                        "the stream holds more than one batch".into(),
                    ));
                }
            }
        }
        decoder.finish()?;
        Ok(batch)
    })
}

/// Decode a schema-only IPC stream.
pub fn decode_schema(bytes: &[u8]) -> Result<SchemaRef, ArrowError> {
    guarded(|| Ok(StreamReader::try_new(Cursor::new(bytes), None)?.schema()))
}

/// Encode a schema as a schema-only IPC stream.
pub fn encode_schema(schema: &Schema) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, schema).expect("writing to memory");
    writer.finish().expect("writing to memory");
    drop(writer);
    out
}

/// Whether `actual` has the columns (names and types, in order) of `declared`.
pub fn same_columns(declared: &Schema, actual: &Schema) -> bool {
    declared.fields().len() == actual.fields().len()
        && declared
            .fields()
            .iter()
            .zip(actual.fields())
            .all(|(d, a)| d.name() == a.name() && d.data_type() == a.data_type())
}

/// Describe the columns of a schema, e.g. `id: Int64, email: Utf8`.
pub fn describe(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Encode one batch as a one-batch IPC stream.
pub fn encode(batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}

/// Rows given as JSON objects (as [`row_as_json`] writes them), as one batch of `schema`
/// encoded as an IPC stream.
pub fn from_json_rows(schema: &SchemaRef, rows: &[&str]) -> Result<Vec<u8>, ArrowError> {
    let text = rows.join("\n");
    let mut reader = arrow::json::ReaderBuilder::new(schema.clone())
        .with_strict_mode(true)
        .with_batch_size(rows.len().max(1))
        .build(Cursor::new(text.as_bytes()))?;
    let batch = reader
        .next()
        .transpose()?
        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone()));
    encode(&batch)
}

/// Row `row` of `batch` as one JSON object.
pub fn row_as_json(batch: &RecordBatch, row: usize) -> String {
    if row >= batch.num_rows() {
        return format!(
            "{{\"error\":\"row {row} is outside the batch of {} rows\"}}",
            batch.num_rows()
        );
    }
    let slice = batch.slice(row, 1);
    let mut out = Vec::new();
    let mut writer = arrow::json::LineDelimitedWriter::new(&mut out);
    if writer.write(&slice).and_then(|_| writer.finish()).is_err() {
        return "{\"error\":\"row could not be rendered as JSON\"}".into();
    }
    String::from_utf8_lossy(&out).trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};
    use std::sync::Arc;

    fn sample(rows: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("email", DataType::Utf8, true),
        ]));
        let ids = Int64Array::from_iter_values(0..rows);
        let emails = StringArray::from_iter_values((0..rows).map(|i| format!("u{i}@x.org")));
        RecordBatch::try_new(schema, vec![Arc::new(ids), Arc::new(emails)]).unwrap()
    }

    #[test]
    fn inspect_reads_schema_and_rows_from_the_headers() {
        let batch = sample(1000);
        let bytes = encode(&batch).unwrap();
        assert!(ipc_peek::peek(&bytes).is_some(), "the fast path reads it");
        let (schema, rows) = inspect(&bytes).unwrap();
        assert_eq!(rows, 1000);
        assert_eq!(schema.as_ref(), batch.schema().as_ref());
        let empty = encode_schema(&batch.schema());
        assert_eq!(inspect(&empty).unwrap().1, 0);
    }

    #[test]
    fn inspect_refuses_what_decode_refuses_with_the_same_error() {
        let bytes = encode(&sample(10)).unwrap();
        let garbage = b"this is not arrow at all".to_vec();
        let truncated = bytes[..bytes.len() - 40].to_vec();
        let mut two = Vec::new();
        let mut writer = StreamWriter::try_new(&mut two, &sample(1).schema()).unwrap();
        writer.write(&sample(1)).unwrap();
        writer.write(&sample(2)).unwrap();
        writer.finish().unwrap();
        drop(writer);
        for bad in [garbage, truncated, two] {
            let fast = inspect(&bad).unwrap_err().to_string();
            let full = decode(&bad).unwrap_err().to_string();
            assert_eq!(fast, full);
        }
    }
}

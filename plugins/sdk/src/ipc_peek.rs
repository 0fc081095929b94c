//! The schema and row count of a one-batch Arrow IPC stream, read from its message headers
//! without decoding any column. Shared, as this one file, by the SDK (`ingest_sdk::ipc`)
//! and the host (`batch::inspect`), which include it as a module; it needs only
//! `arrow_ipc` and `arrow_schema`.

use std::sync::Arc;

use arrow_ipc::Message;
use arrow_schema::{DataType, SchemaRef};

/// The schema and row count of a one-batch IPC stream, read from its message headers
/// without decoding the columns; `None` when the headers alone cannot say (dictionaries,
/// views, unions, compression, more than one batch, a framing error, headers that do not
/// fit the schema): decode such a stream with [`decode_batch`].
///
/// What the headers vouch for is checked: every message is whole, the batch has the field
/// nodes and buffers its schema takes, each column the batch's length, no node more nulls
/// than values, every buffer aligned and inside the body. The buffers' contents (offsets, UTF-8, sizes
/// against the length) are left to the decoder of whoever reads the batch.
pub fn peek(bytes: &[u8]) -> Option<(SchemaRef, usize)> {
    let mut pos = 0;
    let (first, _) = message(bytes, &mut pos)??;
    let schema = Arc::new(arrow_ipc::convert::try_fb_to_schema(first.header_as_schema()?).ok()?);
    // Where each top-level column's node is, how many nodes there are, and what each
    // buffer's length must be a multiple of.
    let (mut nodes_expected, mut units) = (0, Vec::new());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        columns.push(nodes_expected);
        nodes_expected += layout(field.data_type(), &mut units)?;
    }
    let mut rows = None;
    while let Some((next, body)) = message(bytes, &mut pos)? {
        let header = next.header_as_record_batch()?;
        if rows.is_some() || header.compression().is_some() {
            return None;
        }
        let length = header.length();
        let nodes = header.nodes()?;
        let buffers = header.buffers()?;
        if length < 0 || nodes.len() != nodes_expected || buffers.len() != units.len() {
            return None;
        }
        for node in nodes.iter() {
            if node.null_count() < 0 || node.length() < 0 || node.null_count() > node.length() {
                return None;
            }
        }
        if columns.iter().any(|&i| nodes.get(i).length() != length) {
            return None;
        }
        for (buffer, unit) in buffers.iter().zip(&units) {
            // The format aligns every buffer to 8 bytes, and a buffer of values or offsets
            // holds whole ones; the reader does not cope otherwise.
            if buffer.offset() % 8 != 0 || buffer.length() % *unit as i64 != 0 {
                return None;
            }
            let end = u64::try_from(buffer.offset())
                .ok()?
                .checked_add(u64::try_from(buffer.length()).ok()?)?;
            if end > body as u64 {
                return None;
            }
        }
        rows = Some(usize::try_from(length).ok()?);
    }
    // Without rows, decoding costs nothing, and it checks the schema's types as well.
    match rows {
        Some(rows) if rows > 0 => Some((schema, rows)),
        _ => None,
    }
}

/// The field nodes one column of `data_type` takes in a batch, for the types read from the
/// headers alone, pushing onto `units` what each of its buffers' lengths must be a multiple
/// of (1 for validity bitmaps and bytes); `None` for the other types, which are decoded in
/// full.
fn layout(data_type: &DataType, units: &mut Vec<usize>) -> Option<usize> {
    use DataType::*;
    match data_type {
        Utf8 | Binary => units.extend([1, 4, 1]),
        LargeUtf8 | LargeBinary => units.extend([1, 8, 1]),
        Boolean => units.extend([1, 1]),
        FixedSizeBinary(width) if *width > 0 => units.extend([1, 1]),
        Map(entries, _) if !matches!(entries.data_type(), Struct(f) if f.len() == 2) => {
            return None
        }
        List(item) | Map(item, _) => {
            units.extend([1, 4]);
            return Some(1 + layout(item.data_type(), units)?);
        }
        LargeList(item) => {
            units.extend([1, 8]);
            return Some(1 + layout(item.data_type(), units)?);
        }
        FixedSizeList(item, size) if *size > 0 => {
            units.push(1);
            return Some(1 + layout(item.data_type(), units)?);
        }
        Struct(fields) => {
            units.push(1);
            let mut nodes = 1;
            for field in fields {
                nodes += layout(field.data_type(), units)?;
            }
            return Some(nodes);
        }
        // Numbers, decimals, dates and times: validity and whole values.
        other => units.extend([1, other.primitive_width()?]),
    }
    Some(1)
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

//! The schema and row count of a one-batch Arrow IPC stream, read from its message headers
//! without decoding any column. Shared, as this one file, by the SDK (`ingest_sdk::ipc`)
//! and the host (`batch::inspect`), which include it as a module; it needs only
//! `arrow_ipc` and `arrow_schema`.

use std::sync::Arc;

use arrow_ipc::Message;
use arrow_schema::SchemaRef;

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

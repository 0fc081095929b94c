//! A Parquet object read where it lies, by ranged GETs, as the file source's Parquet reader
//! asks for its bytes: the footer with one GET of the object's tail, then each row group
//! whole (in GETs of up to 64 MiB) when it is first touched, never a GET per page. Every GET asks for
//! the version listed (`If-Match`). Only the current row group and the tail are held.

use std::ops::Range;
use std::sync::Mutex;

use bytes::Bytes;
use file_source::parquet::Ranges;
use ingest_sdk::Error;
use s3_client::Bucket;

/// How much of the tail the first footer read fetches: the footer's length and most
/// footers, in one GET.
const TAIL_BYTES: u64 = 64 * 1024;

/// One version of one object.
pub struct ObjectRanges {
    bucket: Bucket,
    key: String,
    etag: String,
    size: u64,
    /// The longest range one GET asks for.
    range_bytes: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The byte ranges of the row groups to be read.
    row_groups: Vec<Range<u64>>,
    /// The tail of the object (the footer), and the current row group.
    tail: Option<(u64, Bytes)>,
    group: Option<(u64, Bytes)>,
    /// The first failed GET, with its kind (transient, access, …), which the Parquet
    /// reader's error cannot carry.
    error: Option<Error>,
}

/// `start..start + length` of `held`, when it lies within it.
fn slice(held: &Option<(u64, Bytes)>, start: u64, length: usize) -> Option<Bytes> {
    let (at, bytes) = held.as_ref()?;
    let from = usize::try_from(start.checked_sub(*at)?).ok()?;
    let to = from.checked_add(length)?;
    (to <= bytes.len()).then(|| bytes.slice(from..to))
}

impl ObjectRanges {
    pub fn new(bucket: Bucket, key: &str, etag: &str, size: u64, range_bytes: u64) -> ObjectRanges {
        ObjectRanges {
            bucket,
            key: key.to_string(),
            etag: etag.to_string(),
            size,
            range_bytes,
            state: Mutex::default(),
        }
    }

    /// The error of the GET that failed, if one did: the Parquet reader's own error says
    /// only that reading failed.
    pub fn take_error(&self) -> Option<Error> {
        self.lock().error.take()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes `range` of the object, in GETs of at most `range_bytes`.
    fn fetch(&self, state: &mut State, range: Range<u64>) -> std::io::Result<Bytes> {
        let mut bytes = Vec::with_capacity((range.end - range.start) as usize);
        let mut at = range.start;
        while at < range.end {
            let end = (at + self.range_bytes).min(range.end);
            if let Err(e) = self
                .bucket
                .read_range_into(&self.key, &self.etag, at, end, &mut bytes)
            {
                let message = e.to_string();
                state.error.get_or_insert(e);
                return Err(std::io::Error::other(message));
            }
            at = end;
        }
        Ok(bytes.into())
    }
}

impl Ranges for ObjectRanges {
    fn size(&self) -> u64 {
        self.size
    }

    fn bytes(&self, start: u64, length: usize) -> std::io::Result<Bytes> {
        let mut state = self.lock();
        if let Some(bytes) =
            slice(&state.group, start, length).or_else(|| slice(&state.tail, start, length))
        {
            return Ok(bytes);
        }
        let end = start + length as u64;
        if end > self.size {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: bytes {start}..{end} asked for, the object has {}",
                    self.bucket.url_of(&self.key),
                    self.size
                ),
            ));
        }
        let group = state
            .row_groups
            .iter()
            .find(|g| g.start <= start && end <= g.end)
            .cloned();
        if let Some(group) = group {
            // The row group's pages are read column by column, interleaved: fetch it whole.
            state.group = None;
            let bytes = self.fetch(&mut state, group.clone())?;
            state.group = Some((group.start, bytes));
            return Ok(slice(&state.group, start, length).expect("the row group holds it"));
        }
        if end == self.size || self.size - start <= TAIL_BYTES {
            let from = self.size.saturating_sub(TAIL_BYTES).min(start);
            let bytes = self.fetch(&mut state, from..self.size)?;
            state.tail = Some((from, bytes));
            return Ok(slice(&state.tail, start, length).expect("the tail holds it"));
        }
        self.fetch(&mut state, start..end)
    }

    fn plan(&self, row_groups: Vec<Range<u64>>) {
        self.lock().row_groups = row_groups;
    }
}

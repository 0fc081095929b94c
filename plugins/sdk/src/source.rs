//! Sources: implement [`Source`] (and its [`Reader`]) and export with [`crate::export_source!`].

use std::cell::RefCell;
use std::marker::PhantomData;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::bindings::source::exports::ingest::plugin::source as wit;
use crate::bindings::wit_types;
use crate::{ipc, Reject, Result};

pub use wit_types::SyncMode;

/// A stream the source offers.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub name: String,
    pub schema: SchemaRef,
    pub primary_key: Vec<String>,
    pub cursor_field: Option<String>,
    pub sync_modes: Vec<SyncMode>,
}

/// An independent unit of work within a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub id: String,
    pub descriptor: Vec<u8>,
}

/// Rows read, with the position just after them and the records that could not be read.
#[derive(Debug)]
pub struct Chunk {
    pub batch: RecordBatch,
    pub position: Vec<u8>,
    pub rejects: Vec<Reject>,
}

/// Records parsed again by [`Source::replay`]: the rows that parse now, and the records
/// that still fail with [`Reject::row`] set to their index in the input.
#[derive(Debug)]
pub struct Replayed {
    pub batch: RecordBatch,
    pub rejects: Vec<Reject>,
}

/// A source connector. Every function receives the plugin's config as JSON; parse it with
/// [`crate::config::parse`].
pub trait Source: 'static {
    type Reader: Reader;

    /// JSON Schema of the config.
    fn spec() -> String;
    /// Validate the config; move no data.
    fn check(config: &str) -> Result<()>;
    /// The streams offered.
    fn discover(config: &str) -> Result<Vec<StreamInfo>>;
    /// The splits of one stream, in read order.
    fn splits(config: &str, stream: &str) -> Result<Vec<Split>>;
    /// Open one split, resuming after `position` when given.
    fn open(
        config: &str,
        stream: &str,
        split: Split,
        position: Option<Vec<u8>>,
    ) -> Result<Self::Reader>;
    /// Parse again, with the current config, records this source rejected earlier (as it
    /// gave them in [`Reject::original`]). By default a source cannot.
    fn replay(_config: &str, stream: &str, _records: Vec<String>) -> Result<Replayed> {
        Err(crate::Error::fatal(format!(
            "this source cannot parse records of stream `{stream}` from the dead-letter queue again"
        )))
    }
}

/// Reads one split.
pub trait Reader: 'static {
    /// The next chunk of about `max_rows` rows, or `None` at the end of the split.
    fn next(&mut self, max_rows: usize) -> Result<Option<Chunk>>;
    /// `position` is durable downstream; release it upstream if the source holds anything.
    fn ack(&mut self, _position: &[u8]) {}
}

/// The position a reader resumes from: `saved` decoded as this source's `T`, or `T`'s
/// default (the start) when there is none. A position of another shape is a fatal error
/// naming `stream`.
pub fn resume_at<T: serde::de::DeserializeOwned + Default>(
    stream: &str,
    saved: Option<Vec<u8>>,
) -> Result<T> {
    match saved {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            crate::Error::fatal(format!(
                "stream `{stream}`: the saved position is not this source's: {e}"
            ))
        }),
        None => Ok(T::default()),
    }
}

/// For a source that offers one stream, `offered`: `asked` is it, or a config error naming
/// both (`kind` is the source's name, e.g. `kafka`).
pub fn check_stream(kind: &str, offered: &str, asked: &str) -> Result<()> {
    if asked == offered {
        Ok(())
    } else {
        Err(crate::Error::config(format!(
            "unknown stream `{asked}`; this {kind} source offers `{offered}`"
        )))
    }
}

#[doc(hidden)]
pub struct Adapter<S>(PhantomData<S>);

#[doc(hidden)]
pub struct ReaderAdapter<S: Source>(RefCell<S::Reader>);

impl<S: Source> wit::Guest for Adapter<S> {
    type Reader = ReaderAdapter<S>;

    fn spec() -> String {
        S::spec()
    }

    fn check(config: String) -> Result<(), wit_types::Error> {
        Ok(S::check(&config)?)
    }

    fn discover(config: String) -> Result<Vec<wit_types::StreamInfo>, wit_types::Error> {
        let streams = S::discover(&config)?;
        let mut out = Vec::with_capacity(streams.len());
        for s in streams {
            out.push(wit_types::StreamInfo {
                name: s.name,
                schema: ipc::encode_schema(&s.schema)?,
                primary_key: s.primary_key,
                cursor_field: s.cursor_field,
                sync_modes: s.sync_modes,
            });
        }
        Ok(out)
    }

    fn splits(config: String, stream: String) -> Result<Vec<wit_types::Split>, wit_types::Error> {
        Ok(S::splits(&config, &stream)?
            .into_iter()
            .map(|s| wit_types::Split {
                id: s.id,
                descriptor: s.descriptor,
            })
            .collect())
    }

    fn replay(
        config: String,
        stream: String,
        records: Vec<String>,
    ) -> Result<wit::Replayed, wit_types::Error> {
        let replayed = S::replay(&config, &stream, records)?;
        Ok(wit::Replayed {
            batch: ipc::encode_batch(&replayed.batch)?,
            rejects: replayed.rejects.into_iter().map(Into::into).collect(),
        })
    }
}

impl<S: Source> wit::GuestReader for ReaderAdapter<S> {
    fn open(
        config: String,
        stream: String,
        split: wit_types::Split,
        position: Option<Vec<u8>>,
    ) -> Result<wit::Reader, wit_types::Error> {
        let split = Split {
            id: split.id,
            descriptor: split.descriptor,
        };
        let reader = S::open(&config, &stream, split, position)?;
        Ok(wit::Reader::new(ReaderAdapter::<S>(RefCell::new(reader))))
    }

    fn next(&self, max_rows: u32) -> Result<Option<wit::Chunk>, wit_types::Error> {
        let chunk = self.0.borrow_mut().next(max_rows.max(1) as usize)?;
        let Some(chunk) = chunk else { return Ok(None) };
        Ok(Some(wit::Chunk {
            batch: ipc::encode_batch(&chunk.batch)?,
            position: chunk.position,
            rejects: chunk.rejects.into_iter().map(Into::into).collect(),
        }))
    }

    fn ack(&self, position: Vec<u8>) {
        self.0.borrow_mut().ack(&position)
    }
}

/// Export a [`Source`] implementation as this component's `source` interface.
#[macro_export]
macro_rules! export_source {
    ($source:ty) => {
        type __IngestSourceAdapter = $crate::source::Adapter<$source>;
        $crate::bindings::source::__export_source!(__IngestSourceAdapter);
    };
}

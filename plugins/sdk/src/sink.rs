//! Sinks: implement [`Sink`] (and its [`Writer`]) and export with [`crate::export_sink!`].

use std::cell::RefCell;
use std::marker::PhantomData;

use arrow_array::RecordBatch;

use crate::bindings::sink::exports::ingest::plugin::sink as wit;
use crate::bindings::wit_types;
use crate::source::{StreamInfo, SyncMode};
use crate::{ipc, Reject, Result};

pub use wit_types::WriteMode;

/// A sink connector: opens one [`Writer`] per stream.
pub trait Sink: 'static {
    type Writer: Writer;

    /// JSON Schema of the config.
    fn spec() -> String;
    /// Validate the config and reach the target; move no data.
    fn check(config: &str) -> Result<()>;
    /// Open a writer for one stream.
    fn open(config: &str, stream: StreamInfo, mode: WriteMode) -> Result<Self::Writer>;
}

/// Writes one stream in epochs: `write`* then `prepare`, then (after the host recorded the
/// token durably) `commit`, or `abort`.
pub trait Writer: 'static {
    /// Stage one batch in the open epoch.
    fn write(&mut self, batch: RecordBatch) -> Result<()>;
    /// Stage one batch, leaving out the rows the target refuses, and return those (each
    /// with [`Reject::row`] set to its index in `batch`): the host routes them by the
    /// sink's `on_error`. The default refuses nothing and calls [`Writer::write`].
    fn write_rejecting(&mut self, batch: RecordBatch) -> Result<Vec<Reject>> {
        self.write(batch)?;
        Ok(Vec::new())
    }
    /// Stage one batch given as the one-batch IPC stream the host sent. The default decodes
    /// it for [`Writer::write_rejecting`]; a sink that can pass the bytes on as they are (to
    /// the host's Parquet encoder, say) overrides it and skips the decode.
    fn write_ipc(&mut self, batch: Vec<u8>) -> Result<Vec<Reject>> {
        self.write_rejecting(ipc::decode_owned(batch)?)
    }
    /// Make the epoch durable but unpublished; the token lets `commit` publish it later,
    /// even from a fresh writer.
    fn prepare(&mut self, epoch: u64) -> Result<Vec<u8>>;
    /// Publish a prepared epoch and return the names of what it published (files, tables).
    /// Must be idempotent: a repeat changes nothing and returns the same names.
    fn commit(&mut self, epoch: u64, token: &[u8]) -> Result<Vec<String>>;
    /// Discard what was staged for `epoch` and not committed.
    fn abort(&mut self, epoch: u64) -> Result<()>;
    /// The stream was read to its end: the next epoch is its last. A sink in `overwrite`
    /// mode publishes the whole run's output with that epoch; the default does nothing.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

#[doc(hidden)]
pub struct Adapter<S>(PhantomData<S>);

#[doc(hidden)]
pub struct WriterAdapter<S: Sink>(RefCell<S::Writer>);

impl<S: Sink> wit::Guest for Adapter<S> {
    type Writer = WriterAdapter<S>;

    fn spec() -> String {
        S::spec()
    }

    fn check(config: String) -> Result<(), wit_types::Error> {
        Ok(S::check(&config)?)
    }
}

impl<S: Sink> wit::GuestWriter for WriterAdapter<S> {
    fn open(
        config: String,
        stream: wit_types::StreamInfo,
        mode: WriteMode,
    ) -> Result<wit::Writer, wit_types::Error> {
        let info = StreamInfo {
            name: stream.name,
            schema: ipc::decode_schema(&stream.schema)?,
            primary_key: stream.primary_key,
            cursor_field: stream.cursor_field,
            sync_modes: stream.sync_modes as Vec<SyncMode>,
        };
        let w = S::open(&config, info, mode)?;
        Ok(wit::Writer::new(WriterAdapter::<S>(RefCell::new(w))))
    }

    fn write(&self, batch: Vec<u8>) -> Result<Vec<wit_types::Reject>, wit_types::Error> {
        let rejects = self.0.borrow_mut().write_ipc(batch)?;
        Ok(rejects.into_iter().map(Into::into).collect())
    }

    fn prepare(&self, epoch: u64) -> Result<Vec<u8>, wit_types::Error> {
        Ok(self.0.borrow_mut().prepare(epoch)?)
    }

    fn commit(&self, epoch: u64, token: Vec<u8>) -> Result<Vec<String>, wit_types::Error> {
        Ok(self.0.borrow_mut().commit(epoch, &token)?)
    }

    fn abort(&self, epoch: u64) -> Result<(), wit_types::Error> {
        Ok(self.0.borrow_mut().abort(epoch)?)
    }

    fn finish(&self) -> Result<(), wit_types::Error> {
        Ok(self.0.borrow_mut().finish()?)
    }
}

/// Export a [`Sink`] implementation as this component's `sink` interface.
#[macro_export]
macro_rules! export_sink {
    ($sink:ty) => {
        type __IngestSinkAdapter = $crate::sink::Adapter<$sink>;
        $crate::bindings::sink::__export_sink!(__IngestSinkAdapter);
    };
}

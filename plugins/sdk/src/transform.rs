//! Transforms: implement [`Transform`] and export with [`crate::export_transform!`].

use std::cell::RefCell;
use std::marker::PhantomData;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::bindings::transform::exports::ingest::plugin::transform as wit;
use crate::bindings::wit_types;
use crate::{ipc, Reject, Result};

/// What one `process` or `flush` call produced.
#[derive(Debug, Default)]
pub struct Output {
    pub batches: Vec<RecordBatch>,
    pub rejects: Vec<Reject>,
}

impl Output {
    /// One batch, nothing rejected.
    pub fn batch(batch: RecordBatch) -> Self {
        Output {
            batches: vec![batch],
            rejects: Vec::new(),
        }
    }
}

/// A transform. One instance is opened per stream and sees its batches in order.
pub trait Transform: Sized + 'static {
    /// JSON Schema of the config.
    fn spec() -> String;
    /// Validate the config; move no data.
    fn check(config: &str) -> Result<()>;
    /// Open for input of `schema`.
    fn open(config: &str, schema: SchemaRef) -> Result<Self>;
    /// The schema of every batch `process` and `flush` emit; by default the input's.
    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        Ok(input.clone())
    }
    /// Transform one batch.
    fn process(&mut self, batch: RecordBatch) -> Result<Output>;
    /// Emit anything held back; called before each epoch closes.
    fn flush(&mut self) -> Result<Output> {
        Ok(Output::default())
    }
    /// The state to keep with the epoch being closed, taken right after [`Transform::flush`];
    /// a stateless transform keeps none.
    fn checkpoint(&mut self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
    /// Resume from what [`Transform::checkpoint`] returned at the last committed epoch;
    /// called right after [`Transform::open`] when there is such state.
    fn restore(&mut self, _state: &[u8]) -> Result<()> {
        Ok(())
    }
}

#[doc(hidden)]
pub struct Adapter<T>(PhantomData<T>);

#[doc(hidden)]
pub struct TransformerAdapter<T> {
    inner: RefCell<T>,
    input_schema: SchemaRef,
}

fn encode(output: Output) -> Result<wit::Output> {
    let mut batches = Vec::with_capacity(output.batches.len());
    for b in &output.batches {
        batches.push(ipc::encode_batch(b)?);
    }
    Ok(wit::Output {
        batches,
        rejects: output.rejects.into_iter().map(Into::into).collect(),
    })
}

impl<T: Transform> wit::Guest for Adapter<T> {
    type Transformer = TransformerAdapter<T>;

    fn spec() -> String {
        T::spec()
    }

    fn check(config: String) -> Result<(), wit_types::Error> {
        Ok(T::check(&config)?)
    }
}

impl<T: Transform> wit::GuestTransformer for TransformerAdapter<T> {
    fn open(
        config: String,
        input_schema: Vec<u8>,
        state: Option<Vec<u8>>,
    ) -> Result<wit::Transformer, wit_types::Error> {
        let schema = ipc::decode_schema(&input_schema)?;
        let mut t = T::open(&config, schema.clone())?;
        if let Some(state) = state.filter(|s| !s.is_empty()) {
            t.restore(&state)?;
        }
        Ok(wit::Transformer::new(TransformerAdapter {
            inner: RefCell::new(t),
            input_schema: schema,
        }))
    }

    fn output_schema(&self) -> Result<Vec<u8>, wit_types::Error> {
        let schema = self.inner.borrow().output_schema(&self.input_schema)?;
        Ok(ipc::encode_schema(&schema)?)
    }

    fn process(&self, batch: Vec<u8>) -> Result<wit::Output, wit_types::Error> {
        let batch = ipc::decode_owned(batch)?;
        let out = self.inner.borrow_mut().process(batch)?;
        Ok(encode(out)?)
    }

    fn flush(&self) -> Result<wit::Output, wit_types::Error> {
        let out = self.inner.borrow_mut().flush()?;
        Ok(encode(out)?)
    }

    fn checkpoint(&self) -> Result<Vec<u8>, wit_types::Error> {
        Ok(self.inner.borrow_mut().checkpoint()?)
    }
}

/// Export a [`Transform`] implementation as this component's `transform` interface.
#[macro_export]
macro_rules! export_transform {
    ($transform:ty) => {
        type __IngestTransformAdapter = $crate::transform::Adapter<$transform>;
        $crate::bindings::transform::__export_transform!(__IngestTransformAdapter);
    };
}

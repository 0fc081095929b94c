//! Capabilities the host grants: logging, secrets and native Parquet encoding.

use arrow_array::RecordBatch;
use arrow_schema::Schema;

use crate::bindings::wit_host as wit;
use crate::{ipc, Error, Result};

pub use wit::Level;

/// Write one line to the host log under this plugin's name.
pub fn log(level: Level, message: &str) {
    wit::log(level, message);
}

/// The value of the secret granted to this plugin under `name`.
pub fn secret(name: &str) -> Result<String> {
    wit::secret(name).map_err(Error::from)
}

/// Options for [`ParquetEncoder`].
#[derive(Debug, Clone)]
pub struct ParquetOptions {
    /// `zstd`, `snappy`, `lz4`, `gzip` or `none`.
    pub compression: String,
    /// Level where the codec has one.
    pub level: Option<i32>,
    /// Rows per row group.
    pub row_group_rows: u32,
}

/// Encodes one Parquet file natively in the host. Append the bytes each call returns to
/// the file, in order.
pub struct ParquetEncoder(wit::ParquetEncoder);

impl ParquetEncoder {
    pub fn open(schema: &Schema, options: &ParquetOptions) -> Result<Self> {
        let schema = ipc::encode_schema(schema)?;
        let options = wit::ParquetOptions {
            compression: options.compression.clone(),
            level: options.level,
            row_group_rows: options.row_group_rows,
        };
        Ok(ParquetEncoder(wit::ParquetEncoder::open(
            &schema, &options,
        )?))
    }

    pub fn write(&self, batch: &RecordBatch) -> Result<Vec<u8>> {
        Ok(self.0.write(&ipc::encode_batch(batch)?)?)
    }

    pub fn finish(&self) -> Result<Vec<u8>> {
        Ok(self.0.finish()?)
    }
}

//! The transform: binds the validated config to one stream's schema at `open` (resolving
//! columns, reading the HMAC key from the host's secrets) and masks each batch.
//!
//! Masked columns become nullable `Utf8` (other types are turned into text first, as
//! arrow-cast displays them); all other columns pass through as the very same arrays.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use ingest_sdk::text::{can_display, to_text};
use ingest_sdk::transform::{Output, Transform};
use ingest_sdk::{host, Error, Result};

use crate::config::{json_schema, MaskConfig};
use crate::rules::{Masker, Rule};

/// One stream's masking transformer.
#[derive(Debug)]
pub struct PiiMask {
    /// The output schema: the input's, with masked columns as nullable `Utf8`.
    schema: SchemaRef,
    /// Number of input columns, to catch batches that do not fit the schema given at open.
    input_columns: usize,
    masked: Vec<MaskedColumn>,
}

#[derive(Debug)]
struct MaskedColumn {
    index: usize,
    name: String,
    masker: Masker,
    /// For the hashing rules inside Wasm: the host computes the digests natively (see
    /// docs/decisions/0002). Natively (the unit tests) the masker does.
    host: Option<HostDigest>,
}

struct HostDigest {
    algorithm: host::Digest,
    key: Vec<u8>,
}

impl std::fmt::Debug for HostDigest {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostDigest({:?}, <key>)", self.algorithm)
    }
}

impl Transform for PiiMask {
    fn spec() -> String {
        json_schema()
    }

    fn check(config: &str) -> Result<()> {
        MaskConfig::from_json(config).map(|_| ())
    }

    fn open(config: &str, schema: SchemaRef) -> Result<Self> {
        let config = MaskConfig::from_json(config)?;
        // Config mistakes first: they are what the user can fix without touching grants.
        resolve(&config, &schema)?;
        let key = match &config.key_secret {
            Some(name) => Some(read_key(name)?),
            None => None,
        };
        PiiMask::new(&config, &schema, key.as_deref())
    }

    /// Masked columns become nullable `Utf8`; the rest keep their fields.
    fn output_schema(&self, _input: &SchemaRef) -> Result<SchemaRef> {
        Ok(self.schema.clone())
    }

    fn process(&mut self, batch: RecordBatch) -> Result<Output> {
        self.mask(&batch).map(Output::batch)
    }
}

/// The HMAC key: the UTF-8 bytes of the secret named by `key_secret`.
fn read_key(name: &str) -> Result<Vec<u8>> {
    let value = host::secret(name).map_err(|e| {
        let context = |m: String| {
            format!(
                "pii-mask: reading the HMAC key from secret `{name}` (config `key_secret`): {m}; \
                 grant the secret to this transform in pipeline.toml"
            )
        };
        match e {
            Error::AccessDenied(m) => Error::AccessDenied(context(m)),
            Error::InvalidConfig(m) => Error::InvalidConfig(context(m)),
            Error::Transient {
                message,
                retry_after_ms,
            } => Error::Transient {
                message: context(message),
                retry_after_ms,
            },
            Error::Data(m) => Error::Data(context(m)),
            Error::Fatal(m) => Error::Fatal(context(m)),
        }
    })?;
    if value.is_empty() {
        return Err(Error::config(format!(
            "pii-mask: secret `{name}` (config `key_secret`) is empty; an HMAC key must not be \
             empty, or the masked values could be recomputed by anyone"
        )));
    }
    Ok(value.into_bytes())
}

impl PiiMask {
    /// Bind `config` to `input`; `key` is the HMAC key when the config has `key_secret`.
    /// Fails with `invalid-config` naming every configured column the schema lacks (and the
    /// columns it has) and every column whose type cannot be turned into text.
    pub fn new(config: &MaskConfig, input: &Schema, key: Option<&[u8]>) -> Result<Self> {
        let resolved = resolve(config, input)?;
        let mut masked = Vec::with_capacity(resolved.len());
        let mut fields: Vec<Arc<Field>> = input.fields().iter().cloned().collect();
        for (index, name, rule) in resolved {
            let masker = Masker::new(rule, key)
                .map_err(|m| Error::fatal(format!("pii-mask: column `{name}`: {m}")))?;
            fields[index] = Arc::new(
                Field::new(name, DataType::Utf8, true)
                    .with_metadata(input.field(index).metadata().clone()),
            );
            let algorithm = match rule {
                Rule::Sha256 => Some(host::Digest::Sha256),
                Rule::HmacSha256 => Some(host::Digest::HmacSha256),
                _ => None,
            };
            let host = algorithm
                .filter(|_| cfg!(target_arch = "wasm32"))
                .map(|algorithm| HostDigest {
                    algorithm,
                    key: key.unwrap_or_default().to_vec(),
                });
            masked.push(MaskedColumn {
                index,
                name: name.to_string(),
                masker,
                host,
            });
        }
        Ok(PiiMask {
            schema: Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())),
            input_columns: input.fields().len(),
            masked,
        })
    }

    /// The output schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Mask one batch of the schema given at open.
    pub fn mask(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        if batch.num_columns() != self.input_columns {
            return Err(Error::data(format!(
                "pii-mask: a batch has {} columns but the stream's schema at open had {}",
                batch.num_columns(),
                self.input_columns
            )));
        }
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        for col in &self.masked {
            let found = batch.schema_ref().field(col.index).name();
            if *found != col.name {
                return Err(Error::data(format!(
                    "pii-mask: column {} of a batch is `{found}`, but the stream's schema at \
                     open had `{}` there",
                    col.index, col.name
                )));
            }
            columns[col.index] = self.mask_column(col, &columns[col.index])?;
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    fn mask_column(&self, col: &MaskedColumn, input: &ArrayRef) -> Result<ArrayRef> {
        if matches!(col.masker, Masker::Null) {
            return Ok(Arc::new(StringArray::new_null(input.len())));
        }
        if let Some(strings) = input.as_any().downcast_ref::<StringArray>() {
            return self.apply(col, strings);
        }
        let text = to_text(input).map_err(|e| {
            Error::data(format!(
                "pii-mask: column `{}` of type {} could not be turned into text: {e}",
                col.name,
                input.data_type()
            ))
        })?;
        self.apply(col, &text)
    }

    fn apply(&self, col: &MaskedColumn, input: &StringArray) -> Result<ArrayRef> {
        Ok(match &col.host {
            Some(digest) => Arc::new(host::digest_hex(digest.algorithm, &digest.key, input)?),
            None => Arc::new(col.masker.apply(input)),
        })
    }
}

/// Where each configured column is in `input`. Every column the schema lacks and every
/// column that cannot be turned into text is reported at once, with the schema's columns.
fn resolve<'c>(config: &'c MaskConfig, input: &Schema) -> Result<Vec<(usize, &'c str, &'c Rule)>> {
    let mut problems = Vec::new();
    let mut resolved = Vec::with_capacity(config.columns.len());
    for (name, rule) in &config.columns {
        let Ok(index) = input.index_of(name) else {
            problems.push(format!("column `{name}` is not in the stream"));
            continue;
        };
        let data_type = input.field(index).data_type();
        if *rule != Rule::Null && !can_display(data_type) {
            problems.push(format!(
                "column `{name}` has type {data_type}, which cannot be turned into text to \
                 mask; mask it with `null` or drop it upstream"
            ));
            continue;
        }
        resolved.push((index, name.as_str(), rule));
    }
    if problems.is_empty() {
        return Ok(resolved);
    }
    let have: Vec<String> = input
        .fields()
        .iter()
        .map(|f| format!("`{}`", f.name()))
        .collect();
    Err(Error::config(format!(
        "pii-mask config `columns`: {}; the stream's columns are: {}",
        problems.join("; "),
        have.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, LargeStringArray, TimestampSecondArray};
    use arrow_schema::TimeUnit;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("email", DataType::Utf8, true),
            Field::new("phone", DataType::LargeUtf8, true),
            Field::new("ssn", DataType::Int64, true),
            Field::new("notes", DataType::Utf8, true),
            Field::new(
                "seen",
                DataType::Timestamp(TimeUnit::Second, Some("UTC".into())),
                true,
            ),
        ])
    }

    fn batch() -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(schema()),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("alice@example.com"), None])),
                Arc::new(LargeStringArray::from(vec![Some("+1 555-0100"), None])),
                Arc::new(Int64Array::from(vec![Some(123456789), None])),
                Arc::new(StringArray::from(vec![Some("n1"), Some("n2")])),
                Arc::new(
                    TimestampSecondArray::from(vec![Some(1_704_499_200), None])
                        .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap()
    }

    fn config(json: &str) -> MaskConfig {
        MaskConfig::from_json(json).unwrap()
    }

    #[test]
    fn masks_configured_columns_and_passes_others_through() {
        let t = PiiMask::new(
            &config(
                r#"{"key_secret":"k","columns":{"email":"hmac-sha256","phone":"keep-last-4",
                    "ssn":"sha256","notes":"null","seen":{"rule":"keep-last","n":1}}}"#,
            ),
            &schema(),
            Some(b"k"),
        )
        .unwrap();
        let input = batch();
        let out = t.mask(&input).unwrap();
        assert!(Arc::ptr_eq(out.column(0), input.column(0)));
        for name in ["email", "phone", "ssn", "notes"] {
            let f = out.schema_ref().field_with_name(name).unwrap().clone();
            assert_eq!(f.data_type(), &DataType::Utf8, "{name}");
            assert!(f.is_nullable(), "{name}");
        }
        let s = |i: usize| {
            out.column(i)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
        };
        assert_eq!(s(1).value(0).len(), 64);
        assert!(s(1).is_null(1));
        assert_eq!(s(2).value(0), "*******0100");
        assert!(s(2).is_null(1));
        // SHA-256 of the integer's text form.
        assert_eq!(
            s(3).value(0),
            "15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225"
        );
        assert!(s(3).is_null(1));
        assert_eq!(s(4).null_count(), 2);
        // A timestamp in a named zone is masked in its UTC text form.
        assert_eq!(s(5).value(0), "*******************Z");
        assert_eq!(s(5).value(0).len(), "2024-01-06T00:00:00Z".len());
        assert!(s(5).is_null(1));
    }

    #[test]
    fn missing_columns_are_named_with_the_schema_columns() {
        let err = PiiMask::new(
            &config(r#"{"columns":{"mail":"sha256","fax":"redact","email":"sha256"}}"#),
            &schema(),
            None,
        )
        .unwrap_err();
        let Error::InvalidConfig(m) = err else {
            panic!("expected invalid-config, got {err:?}")
        };
        assert!(m.contains("`mail`") && m.contains("`fax`"), "{m}");
        assert!(
            m.contains("`id`, `email`, `phone`, `ssn`, `notes`, `seen`"),
            "{m}"
        );
    }

    #[test]
    fn a_batch_that_does_not_fit_is_a_data_error() {
        let t = PiiMask::new(
            &config(r#"{"columns":{"email":"sha256"}}"#),
            &schema(),
            None,
        )
        .unwrap();
        let other = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![1]))],
        )
        .unwrap();
        assert!(matches!(t.mask(&other), Err(Error::Data(_))));
    }

    #[test]
    fn empty_batches_pass() {
        let t = PiiMask::new(
            &config(r#"{"columns":{"email":"redact"}}"#),
            &schema(),
            None,
        )
        .unwrap();
        let out = t.mask(&RecordBatch::new_empty(Arc::new(schema()))).unwrap();
        assert_eq!(out.num_rows(), 0);
        assert_eq!(out.schema_ref(), t.schema());
    }
}

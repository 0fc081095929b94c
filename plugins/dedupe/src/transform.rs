//! The transform: binds the validated config to one stream's schema at `open`, keeps each
//! batch's rows whose key is new (in input order, with arrow-select's filter kernel), and
//! checkpoints the window with every epoch.

use arrow_array::{BooleanArray, RecordBatch};
use arrow_schema::SchemaRef;
use arrow_select::filter::filter_record_batch;
use ingest_sdk::host::Level;
use ingest_sdk::transform::{Output, Transform};
use ingest_sdk::{Error, Result};

use crate::config::{json_schema, DedupeConfig};
use crate::key::KeyColumns;
use crate::window::{Restored, Window};

/// One stream's dedupe transformer.
#[derive(Debug)]
pub struct Dedupe {
    key: KeyColumns,
    window: Window,
    /// Number of input columns, to catch batches that do not fit the schema given at open.
    input_columns: usize,
    /// Scratch space for one row's encoded key.
    buffer: Vec<u8>,
    /// Rows kept and dropped since the last checkpoint, for the log.
    kept: u64,
    dropped: u64,
}

impl Transform for Dedupe {
    fn spec() -> String {
        json_schema()
    }

    fn check(config: &str) -> Result<()> {
        DedupeConfig::from_json(config).map(|_| ())
    }

    fn open(config: &str, schema: SchemaRef) -> Result<Self> {
        Dedupe::new(&DedupeConfig::from_json(config)?, &schema)
    }

    fn process(&mut self, batch: RecordBatch) -> Result<Output> {
        match self.dedupe(&batch)? {
            Some(kept) => Ok(Output::batch(kept)),
            None => Ok(Output::default()),
        }
    }

    fn checkpoint(&mut self) -> Result<Vec<u8>> {
        log(
            Level::Debug,
            &format!(
                "dedupe: {} rows kept, {} repeats dropped in this epoch; the window holds {} of \
                 {} keys",
                self.kept,
                self.dropped,
                self.window.len(),
                self.window.capacity()
            ),
        );
        self.kept = 0;
        self.dropped = 0;
        Ok(self.checkpoint_bytes())
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let restored = self.restore_bytes(state)?;
        match restored {
            Restored::Whole { .. } => {}
            Restored::Shrunk {
                was,
                kept,
                forgotten,
            } => log(
                Level::Info,
                &format!(
                    "dedupe: `window` shrank from {was} to {kept}; the {forgotten} oldest \
                     checkpointed keys are forgotten"
                ),
            ),
            Restored::OtherKey => log(
                Level::Warn,
                "dedupe: the checkpointed window was kept for other `key` columns; it is \
                 dropped and the window starts empty, so rows repeating earlier runs' rows \
                 pass this once",
            ),
        }
        Ok(())
    }
}

impl Dedupe {
    /// Bind `config` to `input`. Fails with `invalid-config` naming every key column the
    /// schema lacks (and the columns it has) and every column whose type cannot be a key.
    pub fn new(config: &DedupeConfig, input: &SchemaRef) -> Result<Self> {
        Ok(Dedupe {
            key: KeyColumns::resolve(&config.key, input)?,
            window: Window::new(config.window),
            input_columns: input.fields().len(),
            buffer: Vec::new(),
            kept: 0,
            dropped: 0,
        })
    }

    /// The rows of `batch` whose key is new, in order; none when every row is a repeat.
    /// A batch without repeats is returned as it came, without a copy.
    pub fn dedupe(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        if batch.num_columns() != self.input_columns {
            return Err(Error::data(format!(
                "dedupe: a batch has {} columns but the stream's schema at open had {}",
                batch.num_columns(),
                self.input_columns
            )));
        }
        let mut keep = Vec::with_capacity(batch.num_rows());
        let window = &mut self.window;
        self.key.hash_rows(batch, &mut self.buffer, |hash| {
            keep.push(window.insert(hash))
        })?;
        let kept = keep.iter().filter(|k| **k).count();
        self.kept += kept as u64;
        self.dropped += (keep.len() - kept) as u64;
        if kept == batch.num_rows() {
            return Ok(Some(batch.clone()));
        }
        if kept == 0 {
            return Ok(None);
        }
        Ok(Some(filter_record_batch(batch, &BooleanArray::from(keep))?))
    }

    /// The window as [`Transform::checkpoint`] returns it; nothing while it is empty.
    pub fn checkpoint_bytes(&self) -> Vec<u8> {
        if self.window.is_empty() {
            Vec::new()
        } else {
            self.window.checkpoint(self.key.fingerprint())
        }
    }

    /// Replace the window by a checkpoint's, keeping this config's window size.
    pub fn restore_bytes(&mut self, state: &[u8]) -> Result<Restored> {
        let (window, restored) =
            Window::restore(state, self.window.capacity(), self.key.fingerprint()).map_err(
                |reason| {
                    Error::fatal(format!(
                        "dedupe: the checkpointed state handed back by the host cannot be \
                         restored: {reason}. It is kept under this transform's name in the \
                         pipeline's state; if another plugin of the same name wrote it, rename \
                         this transform, or run `host state reset` to start over"
                    ))
                },
            )?;
        self.window = window;
        Ok(restored)
    }

    /// The remembered keys, oldest first.
    pub fn window(&self) -> &Window {
        &self.window
    }
}

/// The host log inside the component; natively (unit tests) there is no host to log to.
fn log(level: Level, message: &str) {
    #[cfg(target_family = "wasm")]
    ingest_sdk::host::log(level, message);
    #[cfg(not(target_family = "wasm"))]
    let _ = (level, message);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("part", DataType::Utf8, true),
            Field::new("seq", DataType::Int64, false),
        ]))
    }

    /// Rows (id, part) numbered by `seq` from `first`.
    fn batch(first: i64, rows: &[(Option<i64>, Option<&str>)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from_iter_values(
                    first..first + rows.len() as i64,
                )),
            ],
        )
        .unwrap()
    }

    fn open(config: &str) -> Dedupe {
        Dedupe::open(config, schema()).unwrap()
    }

    fn seqs(out: Option<RecordBatch>) -> Vec<i64> {
        out.map(|b| b.column(2).as_primitive::<Int64Type>().values().to_vec())
            .unwrap_or_default()
    }

    fn ids(keys: &[i64]) -> Vec<(Option<i64>, Option<&'static str>)> {
        keys.iter().map(|k| (Some(*k), Some("x"))).collect()
    }

    #[test]
    fn repeats_within_a_batch_are_dropped_and_first_occurrences_kept_in_order() {
        let mut t = open(r#"{"key":["id"]}"#);
        let out = t.dedupe(&batch(0, &ids(&[5, 3, 5, 9, 3, 3, 1]))).unwrap();
        assert_eq!(seqs(out), [0, 1, 3, 6]);
    }

    #[test]
    fn repeats_across_batches_are_dropped() {
        let mut t = open(r#"{"key":["id"]}"#);
        assert_eq!(
            seqs(t.dedupe(&batch(0, &ids(&[1, 2, 3]))).unwrap()),
            [0, 1, 2]
        );
        assert_eq!(
            seqs(t.dedupe(&batch(3, &ids(&[3, 4, 1, 5]))).unwrap()),
            [4, 6]
        );
        assert!(t.dedupe(&batch(7, &ids(&[2, 4, 2]))).unwrap().is_none());
    }

    #[test]
    fn a_batch_without_repeats_passes_untouched() {
        let mut t = open(r#"{"key":["id"]}"#);
        let input = batch(0, &ids(&[1, 2, 3]));
        let out = t.dedupe(&input).unwrap().unwrap();
        assert!(Arc::ptr_eq(out.column(0), input.column(0)));
        assert!(t
            .dedupe(&RecordBatch::new_empty(schema()))
            .unwrap()
            .is_some());
    }

    #[test]
    fn the_window_forgets_the_oldest_keys_first() {
        let mut t = open(r#"{"key":["id"],"window":3}"#);
        // 1 2 3 fill the window; 4 evicts 1, so the second 1 is kept and evicts 2; 3 and 4
        // are still remembered; 2 is not.
        let out = t
            .dedupe(&batch(0, &ids(&[1, 2, 3, 4, 1, 3, 4, 2])))
            .unwrap();
        assert_eq!(seqs(out), [0, 1, 2, 3, 4, 7]);
    }

    #[test]
    fn the_output_does_not_depend_on_batch_boundaries() {
        let keys: Vec<i64> = (0..500).map(|i| (i * 7919) % 97).collect();
        let mut whole = open(r#"{"key":["id"],"window":40}"#);
        let expected = seqs(whole.dedupe(&batch(0, &ids(&keys))).unwrap());
        let mut pieces = open(r#"{"key":["id"],"window":40}"#);
        let mut got = Vec::new();
        for (n, chunk) in keys.chunks(13).enumerate() {
            got.extend(seqs(
                pieces.dedupe(&batch(n as i64 * 13, &ids(chunk))).unwrap(),
            ));
        }
        assert_eq!(got, expected);
        assert_eq!(
            pieces.window().keys().collect::<Vec<_>>(),
            whole.window().keys().collect::<Vec<_>>()
        );
    }

    #[test]
    fn composite_keys_are_not_ambiguous() {
        let mut t = open(r#"{"key":["part","id"]}"#);
        let rows = [
            (Some(1), Some("a")),
            (Some(1), Some("b")),
            (Some(2), Some("a")),
            (Some(1), Some("a")),
        ];
        assert_eq!(seqs(t.dedupe(&batch(0, &rows)).unwrap()), [0, 1, 2]);

        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, false),
            Field::new("b", DataType::Utf8, false),
        ]));
        let split_differently = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["a", "ab"])),
                Arc::new(StringArray::from(vec!["bc", "c"])),
            ],
        )
        .unwrap();
        let mut t = Dedupe::open(r#"{"key":["a","b"]}"#, schema).unwrap();
        let out = t.dedupe(&split_differently).unwrap().unwrap();
        assert_eq!(out.num_rows(), 2);
    }

    #[test]
    fn nulls_in_keys_equal_each_other_and_nothing_else() {
        let mut t = open(r#"{"key":["id","part"]}"#);
        let rows = [
            (None, Some("a")),
            (Some(0), Some("a")),
            (None, Some("a")),
            (None, None),
            (Some(0), None),
            (None, None),
            (Some(0), Some("")),
        ];
        assert_eq!(seqs(t.dedupe(&batch(0, &rows)).unwrap()), [0, 1, 3, 4, 6]);
    }

    #[test]
    fn checkpoint_and_restore_carry_the_window_across_instances() {
        let mut first = open(r#"{"key":["id"],"window":4}"#);
        assert!(first.checkpoint().unwrap().is_empty(), "an empty window");
        first.dedupe(&batch(0, &ids(&[1, 2, 3, 4, 5]))).unwrap();
        let state = first.checkpoint().unwrap();
        assert_eq!(state.len(), 42 + 4 * 16);

        let mut second = open(r#"{"key":["id"],"window":4}"#);
        second.restore(&state).unwrap();
        // 1 was evicted before the checkpoint, 2..=5 are remembered; the new 1 evicts 2.
        let out = second.dedupe(&batch(5, &ids(&[5, 1, 3, 2, 6]))).unwrap();
        assert_eq!(seqs(out), [6, 8, 9]);
        // The restored window evicts in the same order as the original would have.
        first.dedupe(&batch(5, &ids(&[5, 1, 3, 2, 6]))).unwrap();
        assert_eq!(second.checkpoint().unwrap(), first.checkpoint().unwrap());
    }

    #[test]
    fn restore_after_the_window_shrank_keeps_the_newest_keys() {
        let mut first = open(r#"{"key":["id"],"window":10}"#);
        first.dedupe(&batch(0, &ids(&[1, 2, 3, 4, 5, 6]))).unwrap();
        let state = first.checkpoint().unwrap();

        let mut smaller = open(r#"{"key":["id"],"window":3}"#);
        let restored = smaller.restore_bytes(&state).unwrap();
        assert_eq!(
            restored,
            Restored::Shrunk {
                was: 10,
                kept: 3,
                forgotten: 3
            }
        );
        let out = smaller.dedupe(&batch(6, &ids(&[4, 5, 6, 1]))).unwrap();
        assert_eq!(seqs(out), [9], "4, 5, 6 are remembered");
        let mut again = open(r#"{"key":["id"],"window":3}"#);
        again.restore(&state).unwrap();
        let out = again.dedupe(&batch(6, &ids(&[3, 2, 1]))).unwrap();
        assert_eq!(seqs(out), [6, 7, 8], "1, 2, 3 were forgotten");

        let mut larger = open(r#"{"key":["id"],"window":100}"#);
        larger.restore(&state).unwrap();
        assert!(larger.dedupe(&batch(6, &ids(&[1, 6]))).unwrap().is_none());
        assert_eq!(larger.window().capacity(), 100);
    }

    #[test]
    fn restore_for_other_key_columns_starts_empty() {
        let mut by_id = open(r#"{"key":["id"]}"#);
        by_id.dedupe(&batch(0, &ids(&[1, 2]))).unwrap();
        let state = by_id.checkpoint().unwrap();
        let mut by_both = open(r#"{"key":["id","part"]}"#);
        assert_eq!(by_both.restore_bytes(&state).unwrap(), Restored::OtherKey);
        assert_eq!(
            seqs(by_both.dedupe(&batch(2, &ids(&[1, 2]))).unwrap()),
            [2, 3]
        );
    }

    #[test]
    fn a_corrupt_or_foreign_state_is_a_fatal_error_that_says_why() {
        let mut t = open(r#"{"key":["id"]}"#);
        t.dedupe(&batch(0, &ids(&[1, 2]))).unwrap();
        let mut state = t.checkpoint().unwrap();
        state[50] ^= 0x40;
        for (bytes, reason) in [
            (&state[..], "checksum"),
            (&b"file-source position"[..], "not a dedupe window"),
        ] {
            let mut fresh = open(r#"{"key":["id"]}"#);
            match fresh.restore(bytes) {
                Err(Error::Fatal(m)) => {
                    assert!(m.contains(reason), "{m}");
                    assert!(m.contains("host state reset"), "{m}");
                }
                other => panic!("expected a fatal error, got {other:?}"),
            }
        }
    }

    #[test]
    fn open_names_a_missing_key_column_and_lists_the_stream_columns() {
        let err = Dedupe::open(r#"{"key":["order_id"]}"#, schema()).unwrap_err();
        let Error::InvalidConfig(m) = err else {
            panic!("expected invalid-config, got {err:?}")
        };
        assert!(m.contains("`order_id` is not in the stream"), "{m}");
        assert!(m.contains("`id`, `part`, `seq`"), "{m}");
        assert!(matches!(
            Dedupe::open(r#"{"key":["id"],"window":0}"#, schema()),
            Err(Error::InvalidConfig(_))
        ));
    }

    #[test]
    fn a_batch_that_does_not_fit_is_a_data_error() {
        let mut t = open(r#"{"key":["id"]}"#);
        let other = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![1]))],
        )
        .unwrap();
        assert!(matches!(t.dedupe(&other), Err(Error::Data(_))));
        let renamed = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("key", DataType::Int64, true),
                Field::new("part", DataType::Utf8, true),
                Field::new("seq", DataType::Int64, false),
            ])),
            batch(0, &ids(&[1])).columns().to_vec(),
        )
        .unwrap();
        match t.dedupe(&renamed) {
            Err(Error::Data(m)) => assert!(m.contains("`id`") && m.contains("`key`"), "{m}"),
            other => panic!("expected a data error, got {other:?}"),
        }
        assert_eq!(t.window().len(), 0);
    }
}

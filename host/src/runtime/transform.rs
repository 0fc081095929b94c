//! The transform stage: passes every message through one transform plugin, checks what
//! it returns against the schema it declared, adds its checkpoint to each barrier, and —
//! when it is the pipeline's masker under `[dlq] protect = "mask"` — masks the dead
//! letters of the stages before it as they pass.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use wasmtime::component::ResourceAny;

use super::channel::{Receiver, Sender};
use super::instances::Transform;
use super::message::{tapped, Message, RejectBatch, Rejected};
use super::RunError;
use crate::checkpoint::Opaque;
use crate::config::OnError;
use crate::plugin::bindings::transform::exports::ingest::plugin::transform::Output;
use crate::plugin::bindings::types::Reject;
use crate::{batch, dlq};

/// One transform of the run, with what the stage needs to know about it.
pub(super) struct TransformStage {
    pub transform: Transform,
    /// The transform's name in the pipeline, which keys its checkpoints in the state.
    pub name: String,
    /// Its checkpoints at the last committed epoch, by stream.
    pub states: std::collections::BTreeMap<String, Opaque>,
    pub on_error: OnError,
    /// Dead letters passing this stage are masked by it (`[dlq] protect = "mask"` and
    /// the plugin is `builtin:pii-mask`).
    pub masks_letters: bool,
    /// The plugin is `builtin:pii-mask`: it masks what `host tap` samples before it.
    pub masker: bool,
}

/// The stream the transform has open.
struct Open {
    handle: ResourceAny,
    stream: String,
    input: SchemaRef,
    declared: SchemaRef,
}

/// Run the stage until the end of input (or an error).
pub(super) async fn transform_stage(
    mut stage: TransformStage,
    mut rx: Receiver<Message>,
    tx: Sender<Message>,
) -> Result<(), RunError> {
    let label = stage.transform.label.clone();
    let mut open: Option<Open> = None;
    loop {
        let Some((message, permit)) = rx.recv().await else {
            return Err(RunError::Stopped);
        };
        match message {
            Message::Stream {
                name,
                schema,
                primary_key,
            } => {
                if let Some(previous) = open.take() {
                    stage.transform.close(previous.handle).await?;
                }
                let state = stage.states.get(&name).map(|s| s.0.clone());
                let (handle, output) = stage.transform.open(&schema, state.as_ref()).await?;
                let unreadable = |what: &str, e: arrow::error::ArrowError| RunError::Contract {
                    plugin: label.to_string(),
                    message: format!("declared an unreadable {what} schema: {e}"),
                };
                open = Some(Open {
                    handle,
                    stream: name.clone(),
                    input: batch::decode_schema(&schema).map_err(|e| unreadable("input", e))?,
                    declared: batch::decode_schema(&output).map_err(|e| unreadable("output", e))?,
                });
                let size = output.len();
                let stream = Message::Stream {
                    name,
                    schema: output,
                    primary_key,
                };
                tx.send(stream, size).await?;
            }
            Message::Data { batch: input, .. } => {
                let Some(open) = &open else {
                    return Err(out_of_order("data before a stream"));
                };
                let output = stage.transform.process(open.handle, &input).await?;
                drop(permit);
                forward(&mut stage, open, output, Some(&input), &tx).await?;
            }
            Message::Barrier(mut barrier) => {
                if let Some(open) = &open {
                    let output = stage.transform.flush(open.handle).await?;
                    forward(&mut stage, open, output, None, &tx).await?;
                    let state = stage.transform.checkpoint(open.handle).await?;
                    if state.is_empty() {
                        stage.states.remove(&open.stream);
                    } else {
                        stage.states.insert(open.stream.clone(), Opaque(state));
                    }
                }
                if !stage.states.is_empty() {
                    barrier
                        .transforms
                        .insert(stage.name.clone(), stage.states.clone());
                }
                tx.send(Message::Barrier(barrier), 0).await?;
            }
            Message::Rejects(mut rejects) => {
                if let Some(open) = &open {
                    if stage.masks_letters && rejects.on_error == OnError::Dlq {
                        mask_letters(&mut stage.transform, open, &mut rejects.letters).await?;
                    }
                }
                tx.send(Message::Rejects(rejects), 0).await?;
            }
            Message::Tap {
                stage: tapped,
                rows,
            } => {
                let rows = match &open {
                    Some(open) if stage.masker => {
                        mask_sample(&mut stage.transform, open, rows).await?
                    }
                    _ => rows,
                };
                tx.send(
                    Message::Tap {
                        stage: tapped,
                        rows,
                    },
                    0,
                )
                .await?;
            }
            Message::Finish => {
                // What the transform holds back belongs before the end of the stream.
                if let Some(open) = &open {
                    let output = stage.transform.flush(open.handle).await?;
                    forward(&mut stage, open, output, None, &tx).await?;
                }
                tx.send(Message::Finish, 0).await?;
            }
            Message::End => {
                if let Some(open) = open.take() {
                    stage.transform.close(open.handle).await?;
                }
                tx.send(Message::End, 0).await?;
                return Ok(());
            }
        }
    }
}

fn out_of_order(what: &str) -> RunError {
    RunError::Fatal {
        plugin: "host".into(),
        message: what.into(),
    }
}

/// Send a transform's output on, after checking it against the declared schema.
async fn forward(
    stage: &mut TransformStage,
    open: &Open,
    output: Output,
    input: Option<&Vec<u8>>,
    tx: &Sender<Message>,
) -> Result<(), RunError> {
    let label = stage.transform.label.clone();
    for out in output.batches {
        stage.transform.check_batch_size(out.len())?;
        let (schema, rows) = batch::inspect(&out).map_err(|e| RunError::Contract {
            plugin: label.to_string(),
            message: format!("returned a batch that is not valid Arrow IPC: {e}"),
        })?;
        if !batch::same_columns(&open.declared, &schema) {
            return Err(RunError::Contract {
                plugin: label.to_string(),
                message: format!(
                    "declared output columns [{}] but returned [{}]",
                    batch::describe(&open.declared),
                    batch::describe(&schema)
                ),
            });
        }
        if rows > 0 {
            if let Some(tap) = tapped(&stage.name, &out, rows) {
                tx.send(tap, 0).await?;
            }
            let size = out.len();
            crate::metrics::get().transformed(&stage.name, &open.stream, rows, size as u64);
            tx.send(Message::Data { batch: out, rows }, size).await?;
        }
    }
    if output.rejects.is_empty() {
        return Ok(());
    }
    let decoded = input.and_then(|b| batch::decode(b).ok());
    let mut letters: Vec<Rejected> = output
        .rejects
        .into_iter()
        .map(|mut r| Rejected {
            record: rejected_record(&mut r, decoded.as_ref()),
            location: r.location,
            reason: r.reason,
            masked: false,
        })
        .collect();
    if stage.masks_letters && stage.on_error == OnError::Dlq {
        mask_letters(&mut stage.transform, open, &mut letters).await?;
    }
    let reject = RejectBatch {
        plugin: label,
        on_error: stage.on_error,
        stream: open.stream.clone(),
        letters,
    };
    tx.send(Message::Rejects(reject), 0).await?;
    Ok(())
}

/// The record a transform rejected, for the dead-letter queue: the original it gave, or
/// its row of the input batch as JSON.
pub(super) fn rejected_record(reject: &mut Reject, input: Option<&RecordBatch>) -> String {
    match (reject.original.take(), reject.row, input) {
        (Some(original), _, _) => original,
        (None, Some(row), Some(batch)) => batch::row_as_json(batch, row as usize),
        _ => String::new(),
    }
}

/// Mask dead letters with the masking transform itself, so a letter keeps exactly what
/// the pipeline's output would: the record's columns that this transform reads go through
/// it as a one-row batch, and the values it changes replace the originals (which are also
/// cut out of the reason). A record that does not fit the transform's input — raw text a
/// source could not parse, a row the masker rejects — keeps nothing of its values.
async fn mask_letters(
    transform: &mut Transform,
    open: &Open,
    letters: &mut [Rejected],
) -> Result<(), RunError> {
    for letter in letters.iter_mut().filter(|l| !l.masked) {
        let masked = match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(
            &letter.record,
        ) {
            Ok(row) => mask_row(transform, open, row).await?,
            Err(_) => None,
        };
        let (record, originals) = match masked {
            Some(masked) => masked,
            None => (
                dlq::withheld(&letter.record),
                dlq::fields_of(&letter.record),
            ),
        };
        letter.reason = dlq::scrub(&letter.reason, &originals);
        letter.record = record;
        letter.masked = true;
    }
    Ok(())
}

/// Rows sampled for `host tap` before this masking transform, masked as it masks the data:
/// a row that cannot go through it keeps none of its values.
async fn mask_sample(
    transform: &mut Transform,
    open: &Open,
    rows: Vec<String>,
) -> Result<Vec<String>, RunError> {
    let mut masked = Vec::with_capacity(rows.len());
    for row in rows {
        let through = match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&row)
        {
            Ok(object) => mask_row(transform, open, object).await?,
            Err(_) => None,
        };
        masked.push(match through {
            Some((masked, _)) => in_order_of(&row, &masked),
            None => serde_json::json!({ "_withheld": dlq::withheld(&row) }).to_string(),
        });
    }
    Ok(masked)
}

/// `masked` (a JSON object) with its keys in the order `original` has them, so a masked
/// sample reads like the rows around it.
fn in_order_of(original: &str, masked: &str) -> String {
    let (Ok(mut values), Ok(order)) = (
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(masked),
        serde_json::from_str::<Ordered>(original),
    ) else {
        return masked.to_string();
    };
    let mut out = String::from("{");
    for key in order
        .0
        .iter()
        .chain(values.keys().cloned().collect::<Vec<_>>().iter())
    {
        let Some(value) = values.remove(key) else {
            continue;
        };
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::String(key.clone()).to_string());
        out.push(':');
        out.push_str(&value.to_string());
    }
    out.push('}');
    out
}

/// The keys of a JSON object, in the order it has them.
struct Ordered(Vec<String>);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Ordered, A::Error> {
                let mut keys = Vec::new();
                while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                    keys.push(key);
                }
                Ok(Ordered(keys))
            }
        }
        deserializer.deserialize_map(Keys)
    }
}

/// One row (a JSON object) through the masking transform: the masked row as JSON and the
/// original values it changed, or `None` when the row cannot go through it.
async fn mask_row(
    transform: &mut Transform,
    open: &Open,
    mut row: serde_json::Map<String, serde_json::Value>,
) -> Result<Option<(String, Vec<String>)>, RunError> {
    let input: serde_json::Map<String, serde_json::Value> = open
        .input
        .fields()
        .iter()
        .filter_map(|f| row.get(f.name()).map(|v| (f.name().clone(), v.clone())))
        .collect();
    let text = serde_json::Value::Object(input).to_string();
    let Ok(ipc) = batch::from_json_rows(&open.input, &[text.as_str()]) else {
        return Ok(None);
    };
    let output = match transform.process(open.handle, &ipc).await {
        Ok(output) => output,
        // The plugin refused the row (its own error, the instance lives on).
        Err(e) if !e.is_retryable() && !matches!(e, RunError::Cancelled { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let rows: Vec<RecordBatch> = output
        .batches
        .iter()
        .filter_map(|b| batch::decode(b).ok())
        .filter(|b| b.num_rows() > 0)
        .collect();
    if !output.rejects.is_empty() || rows.len() != 1 || rows[0].num_rows() != 1 {
        return Ok(None);
    }
    let Ok(serde_json::Value::Object(masked)) =
        serde_json::from_str::<serde_json::Value>(&batch::row_as_json(&rows[0], 0))
    else {
        return Ok(None);
    };
    let mut originals = Vec::new();
    for field in open.declared.fields() {
        // The JSON of a row leaves out null columns: a column masked to null is absent.
        let column = field.name().clone();
        let value = masked.get(&column).cloned().unwrap_or_default();
        if let Some(original) = row.get(&column).filter(|v| **v != value) {
            originals.push(match original {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        }
        row.insert(column, value);
    }
    Ok(Some((
        serde_json::Value::Object(row).to_string(),
        originals,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masked_sample_keeps_the_column_order_of_its_row() {
        let original = r#"{"order_id":1,"email":"a@b.c","amount":2.5}"#;
        let masked = r#"{"amount":2.5,"email":"5c0e","order_id":1}"#;
        assert_eq!(
            in_order_of(original, masked),
            r#"{"order_id":1,"email":"5c0e","amount":2.5}"#
        );
        // A column only the masked row has goes last; text that is not an object stays.
        assert_eq!(
            in_order_of(r#"{"b":1}"#, r#"{"a":"x","b":1}"#),
            r#"{"b":1,"a":"x"}"#
        );
        assert_eq!(in_order_of("not json", r#"{"a":1}"#), r#"{"a":1}"#);
    }
}

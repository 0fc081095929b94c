//! `host plugins conform`: the contract checked call by call against every plugin of a
//! (test) pipeline, whatever language it was written in. The source's first batches are
//! read, resumed from a position and acknowledged; they go through each transform (output
//! against the declared schema, rejects pointing at real rows, flush, checkpoint, a reopen
//! from the checkpoint); the sink writes them, aborts one epoch and commits another twice,
//! which must publish the same names. Each plugin must also describe its config as a JSON
//! object and refuse a config with an unknown key as `invalid-config`.
//!
//! The sink publishes test epochs (recorded in the pipeline's state as such, positions
//! unchanged): point it at a test pipeline, not at production data.

use std::sync::Arc;

use super::{state_store, wit_write_mode, Prepared, RunError};
use crate::batch;
use crate::checkpoint::StateStore;
use crate::plugin::bindings::types::StreamInfo;

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub plugin: String,
    pub check: String,
    /// `None` when the check passed; why not otherwise.
    pub failure: Option<String>,
}

/// Batches the source hands on, at most.
const SAMPLE_BATCHES: usize = 3;
/// Rows per sample batch.
const SAMPLE_ROWS: u32 = 64;

struct Report {
    findings: Vec<Finding>,
}

impl Report {
    fn note(&mut self, plugin: &str, check: &str, outcome: Result<(), String>) -> bool {
        let passed = outcome.is_ok();
        self.findings.push(Finding {
            plugin: plugin.to_string(),
            check: check.to_string(),
            failure: outcome.err(),
        });
        passed
    }
}

/// The plugin's config with one key no plugin knows.
fn with_unknown_key(config: &str) -> String {
    let mut value: serde_json::Value =
        serde_json::from_str(config).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(object) = value.as_object_mut() {
        object.insert("conformance_unknown_key".into(), serde_json::json!(true));
    }
    value.to_string()
}

fn spec_is_a_json_object(spec: Result<String, RunError>) -> Result<(), String> {
    let spec = spec.map_err(|e| e.to_string())?;
    match serde_json::from_str::<serde_json::Value>(&spec) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(other) => Err(format!("spec() is JSON but not an object: {other}")),
        Err(e) => Err(format!("spec() is not JSON: {e}")),
    }
}

fn refuses_unknown_key(result: Result<(), RunError>) -> Result<(), String> {
    match result {
        Err(RunError::InvalidConfig { message, .. }) => {
            if message.contains("conformance_unknown_key") {
                Ok(())
            } else {
                Err(format!(
                    "refused the key as invalid-config, but the message does not name it: {message}"
                ))
            }
        }
        Err(other) => Err(format!("refused it, but not as invalid-config: {other}")),
        Ok(()) => Err("accepted a config with an unknown key (`conformance_unknown_key`); users' typos would go unnoticed".into()),
    }
}

/// Check every plugin of `prepared` against the contract.
pub async fn conform(prepared: Arc<Prepared>) -> Result<Vec<Finding>, RunError> {
    let mut report = Report {
        findings: Vec::new(),
    };
    let runtime = &prepared.runtime;
    let cancel = &prepared.cancel;

    // The source.
    let mut source = prepared.source.start(runtime, cancel).await?;
    let label = source.label.to_string();
    let spec = source.spec().await;
    report.note(
        &label,
        "spec() describes the config as a JSON object",
        spec_is_a_json_object(spec),
    );
    let good = source.config().to_string();
    source.set_config(with_unknown_key(&good));
    let refused = source.check().await;
    source.set_config(good);
    report.note(
        &label,
        "check() refuses an unknown config key as invalid-config",
        refuses_unknown_key(refused),
    );
    let Some(info) = prepared.streams.first().cloned() else {
        report.note(
            &label,
            "discover() offers a stream",
            Err("no stream".into()),
        );
        return Ok(report.findings);
    };
    report.note(
        &label,
        "discover() offers a stream with a readable schema",
        Ok(()),
    );
    let declared = batch::decode_schema(&info.schema).map_err(|e| RunError::Contract {
        plugin: label.clone(),
        message: format!("unreadable schema: {e}"),
    })?;
    let splits = source.splits(&info.name).await?;
    let mut samples: Vec<Vec<u8>> = Vec::new();
    if let Some(split) = splits.first() {
        let reader = source.open(&info.name, split, None).await?;
        let mut chunks = Vec::new();
        while chunks.len() < SAMPLE_BATCHES {
            match source.next(reader, SAMPLE_ROWS).await? {
                Some(chunk) => chunks.push(chunk),
                None => break,
            }
        }
        let mut shape = Ok(());
        for chunk in &chunks {
            match batch::decode(&chunk.batch) {
                Ok(b) if b.num_rows() > 0 && !batch::same_columns(&declared, &b.schema()) => {
                    shape = Err(format!(
                        "declared [{}] but a batch has [{}]",
                        batch::describe(&declared),
                        batch::describe(&b.schema())
                    ))
                }
                Ok(b) if b.num_rows() > SAMPLE_ROWS as usize * 2 => {
                    shape = Err(format!(
                        "asked for about {SAMPLE_ROWS} rows, got {}",
                        b.num_rows()
                    ))
                }
                Err(e) => shape = Err(format!("a chunk is not Arrow IPC: {e}")),
                Ok(_) if chunk.position.is_empty() => {
                    shape = Err("a chunk has an empty position".into())
                }
                Ok(_) => {}
            }
        }
        report.note(
            &label,
            "next() returns batches in the declared schema, about max-rows each, with positions",
            shape,
        );
        if chunks.len() >= 2 {
            // A fresh instance resumed after the first chunk reads what the second held.
            let mut fresh = prepared.source.start(runtime, cancel).await?;
            let resumed = fresh
                .open(&info.name, split, Some(&chunks[0].position))
                .await?;
            let next = fresh.next(resumed, SAMPLE_ROWS).await?;
            let same = match next {
                Some(c) => {
                    let (a, b) = (batch::decode(&c.batch), batch::decode(&chunks[1].batch));
                    match (a, b) {
                        (Ok(a), Ok(b)) if a == b => Ok(()),
                        (Ok(a), Ok(b)) => Err(format!(
                            "resumed after chunk 1, got {} rows that differ from chunk 2's {}",
                            a.num_rows(),
                            b.num_rows()
                        )),
                        _ => Err("unreadable batch".into()),
                    }
                }
                None => Err("resumed after chunk 1, the split was over".into()),
            };
            report.note(
                &label,
                "open(position) resumes exactly after the chunk",
                same,
            );
            fresh.close(resumed).await?;
        }
        if let Some(last) = chunks.last() {
            let acked = source.ack(reader, &last.position).await;
            report.note(
                &label,
                "ack(position) is accepted",
                acked.map_err(|e| e.to_string()),
            );
        }
        source.close(reader).await?;
        samples = chunks.into_iter().map(|c| c.batch).collect();
    } else {
        report.note(
            &label,
            "splits() offers a split to read",
            Err("no split".into()),
        );
    }

    // Each transform, fed with what the stage before it produced.
    let mut schema_ipc = info.schema.clone();
    for loaded in &prepared.transforms {
        let mut t = loaded.start(runtime, cancel).await?;
        let label = t.label.to_string();
        let spec = t.spec().await;
        report.note(
            &label,
            "spec() describes the config as a JSON object",
            spec_is_a_json_object(spec),
        );
        let good = t.config().to_string();
        t.set_config(with_unknown_key(&good));
        let refused = t.check().await;
        t.set_config(good);
        report.note(
            &label,
            "check() refuses an unknown config key as invalid-config",
            refuses_unknown_key(refused),
        );
        let (handle, output_ipc) = t.open(&schema_ipc, None).await?;
        let output = batch::decode_schema(&output_ipc).map_err(|e| RunError::Contract {
            plugin: label.clone(),
            message: format!("unreadable output schema: {e}"),
        })?;
        let mut next_samples = Vec::new();
        let mut shape = Ok(());
        for input in &samples {
            let rows = batch::decode(input).map(|b| b.num_rows()).unwrap_or(0);
            let out = t.process(handle, input).await?;
            for reject in &out.rejects {
                if reject.original.is_none() && reject.row.is_none_or(|r| r as usize >= rows) {
                    shape = Err(format!(
                        "a reject points at row {:?} of a {rows}-row batch and carries no record",
                        reject.row
                    ));
                }
            }
            for b in out.batches {
                match batch::decode(&b) {
                    Ok(d) if !batch::same_columns(&output, &d.schema()) => {
                        shape = Err(format!(
                            "declared [{}] but returned [{}]",
                            batch::describe(&output),
                            batch::describe(&d.schema())
                        ))
                    }
                    Ok(_) => next_samples.push(b),
                    Err(e) => shape = Err(format!("returned bytes that are not Arrow IPC: {e}")),
                }
            }
        }
        let flushed = t.flush(handle).await?;
        next_samples.extend(flushed.batches);
        report.note(
            &label,
            "process() and flush() return batches in the declared output schema, rejects pointing at rows",
            shape,
        );
        let state = t.checkpoint(handle).await?;
        let mut reopened = loaded.start(runtime, cancel).await?;
        let resumed = reopened
            .open(&schema_ipc, (!state.is_empty()).then_some(&state))
            .await
            .map(|_| ());
        report.note(
            &label,
            "checkpoint() state reopens a fresh instance",
            resumed.map_err(|e| e.to_string()),
        );
        t.close(handle).await?;
        samples = next_samples;
        schema_ipc = output_ipc;
    }

    // The sink: abort one epoch, commit another twice.
    let mut sink = prepared.sink.start(runtime, cancel).await?;
    let label = sink.label.to_string();
    let spec = sink.spec().await;
    report.note(
        &label,
        "spec() describes the config as a JSON object",
        spec_is_a_json_object(spec),
    );
    let good = sink.config().to_string();
    sink.set_config(with_unknown_key(&good));
    let refused = sink.check().await;
    sink.set_config(good);
    report.note(
        &label,
        "check() refuses an unknown config key as invalid-config",
        refuses_unknown_key(refused),
    );

    let store = state_store(&prepared.pipeline);
    let mut state = store.load()?;
    if !state.committed && state.epoch > 0 {
        return Err(RunError::Fatal {
            plugin: "host".into(),
            message:
                "the pipeline has a prepared epoch waiting for its commit; `host run` it first"
                    .into(),
        });
    }
    let (aborted, committed) = (state.epoch + 1, state.epoch + 2);
    let mode = wit_write_mode(&prepared.pipeline.sink.write_mode);
    let info = StreamInfo {
        schema: schema_ipc,
        ..info
    };
    let writer = sink.open(&info, &mode).await?;
    for b in &samples {
        sink.write(writer, b).await?;
    }
    sink.prepare(writer, aborted).await?;
    let abort = sink.abort(writer, aborted).await;
    report.note(
        &label,
        "abort() drops a prepared epoch",
        abort.map_err(|e| e.to_string()),
    );
    for b in &samples {
        sink.write(writer, b).await?;
    }
    let token = sink.prepare(writer, committed).await?;
    // Record the test epochs so that the pipeline's next run numbers its epochs after them.
    state.epoch = committed;
    state.committed = true;
    store.save(&state)?;
    let first = sink.commit(writer, committed, &token).await?;
    sink.close(writer).await?;
    let mut fresh = prepared.sink.start(runtime, cancel).await?;
    let writer = fresh.open(&info, &mode).await?;
    let again = fresh.commit(writer, committed, &token).await?;
    report.note(
        &label,
        "commit() is idempotent: a repeat from a fresh writer publishes the same names",
        if first == again {
            Ok(())
        } else {
            Err(format!("first {first:?}, then {again:?}"))
        },
    );
    fresh.close(writer).await?;
    Ok(report.findings)
}

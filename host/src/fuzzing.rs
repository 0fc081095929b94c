//! The checks the fuzz targets (`fuzz/`) run on arbitrary input, shared with the test that
//! replays their corpus (`fuzz/corpus/<target>/`) in every test run. Each panics only when
//! the code under test misbehaves: a panic of its own, or two readings of the same bytes
//! that disagree.

use std::path::Path;

use arrow::error::ArrowError;

use crate::{batch, config};

/// `pipeline.toml` as a user writes it: parsing and validation never panic, and a file
/// either builds a pipeline or reports at least one problem, each saying something.
pub fn pipeline_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::parse(Path::new("/nonexistent/fuzz/pipeline.toml"), text) {
        Ok(pipeline) => assert!(!pipeline.name.is_empty()),
        Err(error) => {
            assert!(!error.problems.is_empty(), "an error without a problem");
            for problem in &error.problems {
                assert!(!problem.trim().is_empty(), "an empty problem: {error}");
            }
        }
    }
}

/// Bytes a plugin returns as a batch: the fast header reading (`inspect`) and the full
/// decoding agree — on the schema and row count, or on the error. `inspect` reads the
/// message headers only (framing, schema, row count, null counts, buffer bounds); the
/// contents of the buffers (offsets, UTF-8, buffer sizes against the row count) are
/// validated by the plugin that decodes the batch, so a stream may pass `inspect` and fail
/// decoding only on such contents — an `InvalidArgumentError` — never on its framing.
pub fn plugin_ipc(data: &[u8]) {
    match (batch::inspect(data), batch::decode(data)) {
        (Ok((schema, rows)), Ok(decoded)) => {
            assert_eq!(schema.as_ref(), decoded.schema().as_ref());
            assert_eq!(rows, decoded.num_rows() as u64);
        }
        (Err(fast), Err(full)) => assert_eq!(fast.to_string(), full.to_string()),
        (Ok(_), Err(ArrowError::InvalidArgumentError(_))) => {}
        (fast, full) => panic!(
            "inspect and decode disagree: {:?} against {:?}",
            fast.map(|(_, rows)| rows),
            full.map(|b| b.num_rows())
        ),
    }
    let _ = batch::decode_schema(data);
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// Every file of the corpus `target` gathered by fuzzing, plus its seeds.
    fn corpus(target: &str) -> Vec<PathBuf> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut files = Vec::new();
        for dir in [
            root.join("corpus").join(target),
            root.join("seeds").join(target),
        ] {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                files.extend(entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()));
            }
        }
        files.sort();
        files
    }

    fn replay(target: &str, check: fn(&[u8])) {
        let files = corpus(target);
        assert!(!files.is_empty(), "no corpus for {target} under fuzz/");
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "fuzz input {} fails", file.display());
        }
    }

    #[test]
    fn the_pipeline_toml_corpus_replays_without_a_failure() {
        replay("pipeline_toml", super::pipeline_toml);
    }

    #[test]
    fn the_plugin_ipc_corpus_replays_without_a_failure() {
        replay("plugin_ipc", super::plugin_ipc);
    }

    /// Found by fuzzing, each a stream a plugin could return: the header reading let it
    /// through (or the Arrow reader panicked on it) where decoding refuses it; now the host
    /// refuses it where it is returned, naming what is wrong, and never panics.
    #[test]
    fn malformed_batches_found_by_fuzzing_are_refused_where_they_are_returned() {
        let cases = [
            // More nulls than values in a column.
            ("null-count-over-length.arrow", "null_count"),
            // Fewer field nodes than the schema has columns.
            ("fewer-nodes-than-columns.arrow", "node not found"),
            // A dictionary batch whose buffer lies past its body: the reader panicked.
            ("dictionary-buffer-past-body.arrow", "malformed IPC stream"),
            // A buffer of values cut mid-value: the reader panicked.
            ("partial-value-buffer.arrow", "malformed IPC stream"),
            // A schema with a negative fixed size: the reader panicked.
            ("negative-fixed-size.arrow", "malformed IPC stream"),
            // A map whose entries are booleans, not key-value structs: the reader panicked.
            ("map-of-booleans.arrow", "malformed IPC stream"),
        ];
        for (file, wanted) in cases {
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../fuzz/seeds/plugin_ipc")
                .join(file);
            let bytes = std::fs::read(path).unwrap();
            let error = crate::batch::inspect(&bytes).unwrap_err().to_string();
            assert!(error.contains(wanted), "{file}: {error}");
            assert!(
                !crate::batch::in_guarded_read(),
                "the guard is lifted again"
            );
        }
    }
}

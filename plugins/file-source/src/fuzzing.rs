//! The checks the fuzz targets (`fuzz/`) run on arbitrary input, shared with the tests that
//! replay their corpus (`fuzz/corpus/<target>/`, `fuzz/seeds/<target>/`) and mutate samples
//! in every test run. Each panics only when the code under test misbehaves: a panic of its
//! own, or a reading that differs from the independent one it is checked against.

use std::io::Cursor;

use csv_core::ReadRecordResult;

use crate::config::CsvDialect;
use crate::csv::Framer;
use crate::json_object;
use crate::jsonl::{RawObject, Text};

/// The records of a CSV file as fields of bytes.
type Records = Vec<Vec<Vec<u8>>>;

/// The dialect the first byte of fuzz input picks, so one target covers them all: the
/// default, `;` with `'` quotes, `#` comments, a `\` escape (which turns the fast path off).
fn dialect(selector: u8) -> CsvDialect {
    let mut dialect = CsvDialect::default();
    match selector % 4 {
        0 => {}
        1 => {
            dialect.delimiter = b';';
            dialect.quote = b'\'';
        }
        2 => dialect.comment = Some(b'#'),
        _ => dialect.escape = Some(b'\\'),
    }
    dialect
}

/// The CSV framer: its fast path and its `csv-core` path, through a small and a large
/// buffer, frame every input into the same records as `csv-core` alone, and end at the end
/// of the input.
pub fn csv_framer(data: &[u8]) {
    let Some((&selector, data)) = data.split_first() else {
        return;
    };
    let dialect = dialect(selector);
    let oracle = by_csv_core(data, &dialect);
    // A buffer smaller than most records, and one larger than any fuzz input.
    for buffer in [64, 1 << 16] {
        let mut framer = Framer::with_buffer(Cursor::new(data), &dialect, 0, 1, buffer);
        let mut records: Records = Vec::new();
        let mut last_offset = 0;
        while framer.read().expect("reading from memory cannot fail") {
            records.push(
                (0..framer.fields())
                    .map(|i| framer.field(i).to_vec())
                    .collect(),
            );
            assert!(framer.offset() >= last_offset, "the offset went back");
            last_offset = framer.offset();
        }
        assert_eq!(
            records, oracle,
            "buffer {buffer}: the framer and csv-core disagree"
        );
        assert_eq!(framer.offset(), data.len() as u64, "buffer {buffer}");
    }
}

/// Every record `csv-core` reads from `data`, given all at once.
fn by_csv_core(data: &[u8], dialect: &CsvDialect) -> Records {
    let mut reader = csv_core::ReaderBuilder::new()
        .delimiter(dialect.delimiter)
        .quote(dialect.quote)
        .escape(dialect.escape)
        .comment(dialect.comment)
        .build();
    let mut out = vec![0; data.len() + 1];
    let mut ends = vec![0; data.len() + 2];
    let (mut input, mut outlen, mut endlen) = (data, 0, 0);
    let mut records = Vec::new();
    loop {
        let (result, nin, nout, nend) =
            reader.read_record(input, &mut out[outlen..], &mut ends[endlen..]);
        input = &input[nin..];
        outlen += nout;
        endlen += nend;
        match result {
            ReadRecordResult::InputEmpty => {}
            ReadRecordResult::OutputFull | ReadRecordResult::OutputEndsFull => {
                unreachable!("the buffers hold the whole input")
            }
            ReadRecordResult::Record => {
                let mut start = 0;
                records.push(
                    ends[..endlen]
                        .iter()
                        .map(|&end| {
                            let field = out[start..end].to_vec();
                            start = end;
                            field
                        })
                        .collect(),
                );
                (outlen, endlen) = (0, 0);
            }
            ReadRecordResult::End => return records,
        }
    }
}

/// The JSON Lines fast path: whatever line of `data` it reads, serde_json reads to the
/// same keys and values.
pub fn jsonl_fast_path(data: &[u8]) {
    for line in data.split(|&b| b == b'\n') {
        if let Some(scanned) = by_scan(line) {
            assert_eq!(
                Some(scanned),
                by_serde(line),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }
}

/// The entries serde_json reads from `line` (key, value as written), if it reads it.
pub(crate) fn by_serde(line: &[u8]) -> Option<Vec<(String, String)>> {
    let RawObject(entries) = serde_json::from_slice::<RawObject>(line).ok()?;
    Some(
        entries
            .into_iter()
            .map(|(Text(key), value)| (key.into_owned(), value.get().to_string()))
            .collect(),
    )
}

/// The entries the fast path reads from `line`, if it reads it; each entry's `escaped`
/// flag must say whether its value is a string holding escapes.
pub(crate) fn by_scan(line: &[u8]) -> Option<Vec<(String, String)>> {
    let mut entries = Vec::new();
    let text = json_object::scan(line, &mut entries)?;
    for e in &entries {
        let value = &text[e.value.0..e.value.1];
        assert_eq!(
            e.escaped,
            value.starts_with('"') && value.contains('\\'),
            "{value}"
        );
    }
    Some(
        entries
            .iter()
            .map(|e| {
                let key = &text[e.key.0..e.key.1];
                (key.to_string(), text[e.value.0..e.value.1].to_string())
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::testutil::Rng;

    /// Every file of the corpus `target` gathered by fuzzing, plus its seeds.
    fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
        let mut files = Vec::new();
        for dir in [
            root.join("corpus").join(target),
            root.join("seeds").join(target),
        ] {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries {
                    let path = entry.unwrap().path();
                    if path.is_file() {
                        let bytes = std::fs::read(&path).unwrap();
                        files.push((path, bytes));
                    }
                }
            }
        }
        files
    }

    /// `count` mutations of `samples`: bytes that matter to the format inserted, deleted,
    /// replaced, and the input cut short; each handed to `check`.
    fn mutate(samples: &[Vec<u8>], alphabet: &[u8], count: usize, check: fn(&[u8])) {
        let mut rng = Rng(0x5eed_2026);
        for _ in 0..count {
            let mut input = samples[rng.below(samples.len())].clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(input.len() + 1);
                let byte = alphabet[rng.below(alphabet.len())];
                match rng.below(4) {
                    0 => input.insert(at, byte),
                    1 if at < input.len() => {
                        input.remove(at);
                    }
                    2 if at < input.len() => input[at] = byte,
                    _ => input.truncate(at),
                }
            }
            check(&input);
        }
    }

    /// Every input of `target` passes `check`; at least `seeds` of them.
    fn replay(target: &str, seeds: usize, check: fn(&[u8])) {
        let files = corpus(target);
        assert!(files.len() >= seeds, "the seeds of {target} are missing");
        for (path, bytes) in &files {
            let outcome = std::panic::catch_unwind(|| check(bytes));
            assert!(outcome.is_ok(), "{} fails the check", path.display());
        }
    }

    /// The inputs of `target`, as samples to mutate.
    fn samples(target: &str) -> Vec<Vec<u8>> {
        corpus(target).into_iter().map(|(_, bytes)| bytes).collect()
    }

    #[test]
    fn the_csv_corpus_frames_as_csv_core_does() {
        replay("csv_framer", 5, csv_framer);
    }

    #[test]
    fn mutated_csv_frames_as_csv_core_does() {
        mutate(
            &samples("csv_framer"),
            b"\",;'#\\\n\r a1\xef",
            5_000,
            csv_framer,
        );
    }

    #[test]
    fn the_json_lines_corpus_reads_as_serde_json_does() {
        replay("jsonl_fast_path", 3, jsonl_fast_path);
    }

    #[test]
    fn mutated_json_lines_read_as_serde_json_does() {
        mutate(
            &samples("jsonl_fast_path"),
            b"\"\\,:{}[]0-.e+ \x01\xffnu\n",
            5_000,
            jsonl_fast_path,
        );
    }
}

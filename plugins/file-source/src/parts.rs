//! Parts of one large CSV or JSON Lines file, so that several readers can read it at once
//! (`split_bytes`): byte ranges that start exactly where a record starts, with the line
//! they start on.
//!
//! A part boundary is the first record start at or after each multiple of `split_bytes`.
//! JSON Lines records end at a line feed, so finding one is a scan for line feeds. A CSV
//! line feed may sit inside a quoted field, so CSV boundaries come from framing the file
//! once with the same framer the readers use: exact whatever the quoting. Boundaries
//! depend only on the bytes before them, so a file that grows keeps the parts it had
//! (the last one reaches further) and gains new ones: positions saved for a part stay
//! valid across runs.

use std::fs::File;
use std::io::Read;

use ingest_sdk::Result;

use crate::config::{Format, Settings};
use crate::csv::Framer;
use crate::files;
use crate::scan::ByteSet;

/// Bytes read at a time while looking for line feeds.
const SCAN_BUFFER: usize = 1 << 20;

/// A byte range of a file that starts at a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// Offset of the part's first record.
    pub start: u64,
    /// The 1-based line `start` lies on.
    pub line: u64,
    /// Offset where the next part starts; `None` for the last part, which reads to the
    /// end of the file (however far it has grown).
    pub end: Option<u64>,
    /// The `split_bytes` the part was planned with; `None` for a whole file.
    pub split_bytes: Option<u64>,
}

impl Part {
    /// A whole file, read without `split_bytes`.
    pub const WHOLE: Part = Part {
        start: 0,
        line: 1,
        end: None,
        split_bytes: None,
    };

    /// Whether a record starting at `offset` belongs to the next part.
    pub fn is_past(&self, offset: u64) -> bool {
        self.end.is_some_and(|end| offset >= end)
    }
}

/// The parts of `path` for `split_bytes`: one part when the file is smaller.
pub fn plan(path: &str, settings: &Settings, split_bytes: u64) -> Result<Vec<Part>> {
    let file = File::open(path).map_err(|e| files::io_error(path, "open", e))?;
    let starts = match settings.format {
        Format::Csv => csv_starts(path, file, settings, split_bytes)?,
        _ => line_starts(path, file, split_bytes)?,
    };
    let split_bytes = Some(split_bytes);
    let mut parts = vec![Part {
        split_bytes,
        ..Part::WHOLE
    }];
    for (start, line) in starts {
        if let Some(last) = parts.last_mut() {
            last.end = Some(start);
        }
        parts.push(Part {
            start,
            line,
            end: None,
            split_bytes,
        });
    }
    Ok(parts)
}

/// The first record start (and its line) at or after each multiple of `split_bytes`,
/// for records split by the CSV framer; none at the end of the file.
fn csv_starts(
    path: &str,
    file: File,
    settings: &Settings,
    split_bytes: u64,
) -> Result<Vec<(u64, u64)>> {
    let mut framer = Framer::new(file, &settings.csv, 0, 1);
    let mut next = split_bytes;
    let mut starts = Vec::new();
    let quote = settings.csv.quote;
    while framer.read().map_err(|e| e.into_error(path, quote))? {
        let offset = framer.offset();
        if offset >= next {
            starts.push((offset, framer.line()));
            next = (offset / split_bytes + 1) * split_bytes;
        }
    }
    // A boundary at the very end of the file would start an empty part.
    let end = framer.offset();
    if starts.last().is_some_and(|&(s, _)| s >= end) {
        starts.pop();
    }
    Ok(starts)
}

/// The first line start (and its number) at or after each multiple of `split_bytes`;
/// none at the end of the file.
fn line_starts(path: &str, mut file: File, split_bytes: u64) -> Result<Vec<(u64, u64)>> {
    let newline = ByteSet::new([b'\n'; 4]);
    let mut buf = vec![0u8; SCAN_BUFFER];
    let (mut base, mut line) = (0u64, 1u64);
    let mut next = split_bytes;
    let mut starts = Vec::new();
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(files::io_error(path, "read", e)),
        };
        let mut i = 0;
        while let Some(k) = newline.find(&buf[i..n]) {
            i += k + 1;
            line += 1;
            let start = base + i as u64;
            if start >= next {
                starts.push((start, line));
                next = (start / split_bytes + 1) * split_bytes;
            }
        }
        base += n as u64;
    }
    if starts.last().is_some_and(|&(s, _)| s >= base) {
        starts.pop();
    }
    Ok(starts)
}

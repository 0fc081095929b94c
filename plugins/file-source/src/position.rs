//! The positions this source hands the host, as small JSON documents, and how a position
//! read back is checked before reading resumes from it.
//!
//! CSV and JSON Lines: `{"offset":B,"line":L,"rows":R}` — `B` is the byte offset of the
//! next unread record, `L` the 1-based line `B` lies on, `R` the rows returned so far.
//! Reading resumes by seeking to `B`, so a file that grew since yields its new records.
//! A file read in parts (`split_bytes = S`) adds `"split_bytes":S`, and `R` counts the
//! part's rows: a position is only taken back under the same `split_bytes`.
//!
//! Parquet: `{"row_group":G,"row":N,"rows":R}` — the next unread row is row `N` of row
//! group `G`.

use ingest_sdk::{Error, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::parts::Part;

/// Where reading a text file resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextPosition {
    pub offset: u64,
    pub line: u64,
    pub rows: u64,
    /// The `split_bytes` the file was read in parts with, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_bytes: Option<u64>,
}

impl TextPosition {
    /// Where reading `part` of `path` starts: at the saved `position` if there is one,
    /// else at the part's first record. A saved position written under another
    /// `split_bytes`, or outside the part, is refused: reading on from it would skip or
    /// repeat rows.
    pub fn resume(path: &str, position: Option<&[u8]>, part: &Part) -> Result<TextPosition> {
        let split_bytes = part.split_bytes;
        let Some(bytes) = position else {
            return Ok(TextPosition {
                offset: part.start,
                line: part.line,
                rows: 0,
                split_bytes,
            });
        };
        let at: TextPosition = decode(bytes, path)?;
        let show = |s: Option<u64>| match s {
            Some(n) => format!("`split_bytes = {n}`"),
            None => "no `split_bytes`".to_string(),
        };
        if at.split_bytes != split_bytes {
            return Err(Error::fatal(format!(
                "the saved position for `{path}` was written with {} and the config now has \
                 {}; reading on would skip or repeat rows. Put back the earlier setting, or \
                 reset the stream's state to read the file again from the start",
                show(at.split_bytes),
                show(split_bytes)
            )));
        }
        if at.offset < part.start || part.end.is_some_and(|end| at.offset > end) {
            return Err(Error::fatal(format!(
                "the saved position for `{path}` (byte {}) lies outside the part it was saved \
                 for (from byte {}{}): the file changed before that point since it was read; \
                 reset the stream's state to read it again from the start",
                at.offset,
                part.start,
                part.end.map(|e| format!(" to {e}")).unwrap_or_default()
            )));
        }
        Ok(at)
    }
}

/// Where reading a Parquet file resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetPosition {
    pub row_group: usize,
    pub row: usize,
    pub rows: u64,
}

/// The bytes of a position.
pub fn encode<T: Serialize>(position: &T) -> Vec<u8> {
    // Serializing plain integers cannot fail.
    serde_json::to_vec(position).unwrap_or_default()
}

/// Read back a position this source wrote for `path`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], path: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::fatal(format!(
            "the saved position for `{path}` ({}) is not one the file source writes for this \
             format: {e}; reset the stream's state to read the file from the start",
            String::from_utf8_lossy(bytes)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_as_json() {
        let p = TextPosition {
            offset: 1234,
            line: 17,
            rows: 15,
            split_bytes: None,
        };
        let bytes = encode(&p);
        assert_eq!(bytes, br#"{"offset":1234,"line":17,"rows":15}"#);
        assert_eq!(decode::<TextPosition>(&bytes, "a.csv").unwrap(), p);
    }

    #[test]
    fn a_foreign_position_is_refused_by_file() {
        match decode::<TextPosition>(br#"{"row_group":1,"row":2,"rows":3}"#, "a.csv") {
            Err(Error::Fatal(m)) => assert!(m.contains("`a.csv`"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}

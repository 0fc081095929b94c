//! The positions this source hands the host, as small JSON documents, and how a position
//! read back is checked before reading resumes from it.
//!
//! CSV and JSON Lines: `{"offset":B,"line":L,"rows":R}` — `B` is the byte offset of the
//! next unread record, `L` the 1-based line `B` lies on, `R` the rows returned so far.
//! Reading resumes by seeking to `B`, so a file that grew since yields its new records.
//!
//! Parquet: `{"row_group":G,"row":N,"rows":R}` — the next unread row is row `N` of row
//! group `G`.

use ingest_sdk::{Error, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Where reading a text file resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextPosition {
    pub offset: u64,
    pub line: u64,
    pub rows: u64,
}

impl TextPosition {
    /// The start of a file.
    pub const START: TextPosition = TextPosition {
        offset: 0,
        line: 1,
        rows: 0,
    };
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

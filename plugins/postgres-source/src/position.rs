//! Where a stream's read stands: what a chunk leaves behind and `open` resumes from.
//! Stored by the host as JSON bytes it does not read.

use serde::{Deserialize, Serialize};

/// The position after a chunk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Full refresh: the primary-key values (as text) of the last row delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<String>>,
    /// Full refresh: the plan of splits this read belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Full refresh: the whole split was delivered. A later plan reads it again; its
    /// own plan (a resumed run) reads nothing more of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub done: bool,
    /// Rows delivered in this read (full refresh).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rows: u64,
    /// Incremental: the greatest cursor value delivered, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Incremental: the keys of the rows delivered at exactly `cursor`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Position {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a position serialises")
    }

    pub fn decode(bytes: &[u8]) -> Result<Position, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

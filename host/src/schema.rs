//! Schema evolution: how a stream's schema changed since the version the state recorded,
//! and whether the pipeline's `[schema] on_change` policy accepts the change. A change is
//! checked when a stream opens, before any of its rows are written.

use std::fmt;

use arrow::datatypes::{DataType, Schema};
use serde::Deserialize;

/// What to do when a stream's schema differs from the recorded one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnChange {
    /// Accept new nullable columns and safe widenings; refuse anything else.
    #[default]
    Evolve,
    /// Refuse any change.
    Freeze,
}

/// One difference between two schemas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added {
        name: String,
        data_type: DataType,
        nullable: bool,
    },
    Removed {
        name: String,
        data_type: DataType,
    },
    Retyped {
        name: String,
        from: DataType,
        to: DataType,
    },
    BecameRequired {
        name: String,
    },
}

impl Change {
    /// Whether readers of the old data keep working: a new nullable column, a widening
    /// that loses no value, or a required column becoming nullable (not listed).
    pub fn is_safe(&self) -> bool {
        match self {
            Change::Added { nullable, .. } => *nullable,
            Change::Retyped { from, to, .. } => widens(from, to),
            Change::Removed { .. } | Change::BecameRequired { .. } => false,
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Added {
                name,
                data_type,
                nullable,
            } => write!(
                f,
                "+ {name}: {data_type}{}",
                if *nullable { "" } else { " (not nullable)" }
            ),
            Change::Removed { name, data_type } => write!(f, "- {name}: {data_type}"),
            Change::Retyped { name, from, to } => write!(
                f,
                "~ {name}: {from} -> {to}{}",
                if widens(from, to) {
                    " (widening)"
                } else {
                    " (not a safe widening)"
                }
            ),
            Change::BecameRequired { name } => write!(f, "~ {name}: nullable -> not nullable"),
        }
    }
}

/// Whether every value of `from` is exactly representable in `to`.
pub fn widens(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    matches!(
        (from, to),
        (Int8, Int16 | Int32 | Int64 | Float32 | Float64)
            | (Int16, Int32 | Int64 | Float32 | Float64)
            | (Int32, Int64 | Float64)
            | (
                UInt8,
                UInt16 | UInt32 | UInt64 | Int16 | Int32 | Int64 | Float32 | Float64
            )
            | (UInt16, UInt32 | UInt64 | Int32 | Int64 | Float32 | Float64)
            | (UInt32, UInt64 | Int64 | Float64)
            | (Float32, Float64)
            | (Utf8, LargeUtf8)
            | (Binary, LargeBinary)
            | (Date32, Date64)
    ) || (from == &Int64 && to == &Float64)
}

/// The changes from `old` to `new`, columns matched by name.
pub fn diff(old: &Schema, new: &Schema) -> Vec<Change> {
    let mut changes = Vec::new();
    for field in old.fields() {
        match new.field_with_name(field.name()) {
            Err(_) => changes.push(Change::Removed {
                name: field.name().clone(),
                data_type: field.data_type().clone(),
            }),
            Ok(now) => {
                if now.data_type() != field.data_type() {
                    changes.push(Change::Retyped {
                        name: field.name().clone(),
                        from: field.data_type().clone(),
                        to: now.data_type().clone(),
                    });
                }
                if field.is_nullable() && !now.is_nullable() {
                    changes.push(Change::BecameRequired {
                        name: field.name().clone(),
                    });
                }
            }
        }
    }
    for field in new.fields() {
        if old.field_with_name(field.name()).is_err() {
            changes.push(Change::Added {
                name: field.name().clone(),
                data_type: field.data_type().clone(),
                nullable: field.is_nullable(),
            });
        }
    }
    changes
}

/// Why a schema change was refused.
#[derive(Debug, thiserror::Error)]
#[error("the schema of stream `{stream}` changed since version {version}, and [schema] on_change = \"{policy}\" does not accept {what}:\n{}\n{hint}", .changes.iter().map(|c| format!("  {c}")).collect::<Vec<_>>().join("\n"))]
pub struct Refused {
    pub stream: String,
    pub version: u32,
    pub policy: &'static str,
    pub what: &'static str,
    pub changes: Vec<Change>,
    pub hint: &'static str,
}

/// Check `changes` against `policy`.
pub fn check(
    stream: &str,
    version: u32,
    policy: OnChange,
    changes: Vec<Change>,
) -> Result<(), Refused> {
    if changes.is_empty() {
        return Ok(());
    }
    match policy {
        OnChange::Freeze => Err(Refused {
            stream: stream.to_string(),
            version,
            policy: "freeze",
            what: "any change",
            changes,
            hint: "set on_change = \"evolve\" to accept new nullable columns and safe widenings",
        }),
        OnChange::Evolve if changes.iter().all(Change::is_safe) => Ok(()),
        OnChange::Evolve => Err(Refused {
            stream: stream.to_string(),
            version,
            policy: "evolve",
            what: "these changes (only new nullable columns and widenings are safe)",
            changes,
            hint: "restore the old columns or types (e.g. with a [source.config.schema] override), or write the stream to a new destination",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;

    fn schema(fields: &[(&str, DataType, bool)]) -> Schema {
        Schema::new(
            fields
                .iter()
                .map(|(n, t, null)| Field::new(*n, t.clone(), *null))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn a_new_nullable_column_and_a_widening_evolve() {
        let old = schema(&[
            ("id", DataType::Int64, false),
            ("amount", DataType::Int32, true),
        ]);
        let new = schema(&[
            ("id", DataType::Int64, false),
            ("amount", DataType::Int64, true),
            ("discount", DataType::Float64, true),
        ]);
        let changes = diff(&old, &new);
        assert_eq!(changes.len(), 2);
        assert!(check("s", 1, OnChange::Evolve, changes.clone()).is_ok());
        let refused = check("s", 1, OnChange::Freeze, changes)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("+ discount: Float64"), "{refused}");
        assert!(
            refused.contains("~ amount: Int32 -> Int64 (widening)"),
            "{refused}"
        );
    }

    #[test]
    fn a_removed_column_or_a_narrowing_is_refused_even_when_evolving() {
        let old = schema(&[
            ("id", DataType::Int64, false),
            ("amount", DataType::Float64, true),
        ]);
        let new = schema(&[("amount", DataType::Utf8, true)]);
        let refused = check("orders", 3, OnChange::Evolve, diff(&old, &new))
            .unwrap_err()
            .to_string();
        assert!(refused.contains("- id: Int64"), "{refused}");
        assert!(
            refused.contains("~ amount: Float64 -> Utf8 (not a safe widening)"),
            "{refused}"
        );
        assert!(refused.contains("since version 3"), "{refused}");
    }

    #[test]
    fn an_unchanged_schema_passes_any_policy() {
        let s = schema(&[("id", DataType::Int64, false)]);
        assert!(check("s", 1, OnChange::Freeze, diff(&s, &s)).is_ok());
    }
}

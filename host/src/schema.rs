//! Schema evolution: how a stream's schema changed since the version the state recorded,
//! and whether the pipeline's `[schema] on_change` policy accepts the change. A change is
//! checked when a stream opens, before any of its rows are written.

use std::fmt;

use arrow::array::{new_null_array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions};
use arrow::compute::kernels::cmp::not_distinct;
use arrow::compute::{cast_with_options, filter_record_batch, CastOptions};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::error::ArrowError;
use serde::Deserialize;

/// What to do when a stream's schema differs from the recorded one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnChange {
    /// Accept new nullable columns and safe widenings; refuse anything else.
    #[default]
    Evolve,
    /// Refuse any change.
    Freeze,
    /// Keep the recorded schema: rows that fit it are written in it, rows that do not (a
    /// value in a new column, a value that does not convert exactly) go to the dead-letter
    /// queue.
    Quarantine,
}

impl OnChange {
    pub fn name(self) -> &'static str {
        match self {
            OnChange::Evolve => "evolve",
            OnChange::Freeze => "freeze",
            OnChange::Quarantine => "quarantine",
        }
    }
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
    /// that loses no value (to text too, when `to_text` allows it), or a required column
    /// becoming nullable (not listed).
    pub fn is_safe(&self, to_text: bool) -> bool {
        match self {
            Change::Added { nullable, .. } => *nullable,
            Change::Retyped { from, to, .. } => {
                widens(from, to) || (to_text && matches!(to, DataType::Utf8 | DataType::LargeUtf8))
            }
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

/// Whether every value of `from` is exactly representable in `to`. A struct widens into a
/// struct that has each of its fields (the same or widened, as nullable as before or more)
/// and new fields only when they are nullable: a before-image gaining a column.
pub fn widens(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    if let (Struct(old), Struct(new)) = (from, to) {
        let kept = old.iter().all(|f| {
            new.find(f.name()).is_some_and(|(_, g)| {
                (g.data_type() == f.data_type() || widens(f.data_type(), g.data_type()))
                    && (g.is_nullable() || !f.is_nullable())
            })
        });
        let added_nullable = new
            .iter()
            .all(|g| old.find(g.name()).is_some() || g.is_nullable());
        return kept && added_nullable;
    }
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

/// Check `changes` against `policy`; `to_text` makes a change of any type to text safe.
/// Under `quarantine` every change is accepted here: the rows are checked one by one.
pub fn check(
    stream: &str,
    version: u32,
    policy: OnChange,
    to_text: bool,
    changes: Vec<Change>,
) -> Result<(), Refused> {
    if changes.is_empty() {
        return Ok(());
    }
    match policy {
        OnChange::Quarantine => Ok(()),
        OnChange::Freeze => Err(Refused {
            stream: stream.to_string(),
            version,
            policy: "freeze",
            what: "any change",
            changes,
            hint: "set on_change = \"evolve\" to accept new nullable columns and safe widenings, or \"quarantine\" to keep the schema and send rows that do not fit it to the dead-letter queue",
        }),
        OnChange::Evolve if changes.iter().all(|c| c.is_safe(to_text)) => Ok(()),
        OnChange::Evolve => Err(Refused {
            stream: stream.to_string(),
            version,
            policy: "evolve",
            what: "these changes (only new nullable columns and widenings are safe)",
            changes,
            hint: "restore the old columns or types (e.g. with a [source.config.schema] override), set on_change = \"quarantine\" to send rows that do not fit to the dead-letter queue, or write the stream to a new destination",
        }),
    }
}

/// A batch brought to a stream's recorded schema, and the rows that do not fit it.
pub struct Conformed {
    /// The rows that fit, in `target`.
    pub batch: RecordBatch,
    /// Rows of the input that do not fit, with why.
    pub misfits: Vec<(usize, String)>,
}

/// Bring `batch` to `target`, row by row: a column `target` lacks must be null, a column
/// `batch` lacks must be nullable in `target`, and a value of another type must convert to
/// the target type and back unchanged.
pub fn conform(batch: &RecordBatch, target: &SchemaRef) -> Result<Conformed, ArrowError> {
    let rows = batch.num_rows();
    let mut reasons: Vec<Option<String>> = vec![None; rows];
    let mut misfit = |row: usize, reason: String| {
        reasons[row].get_or_insert(reason);
    };
    let schema = batch.schema();
    for (i, field) in schema.fields().iter().enumerate() {
        if target.field_with_name(field.name()).is_err() {
            let column = batch.column(i);
            for row in (0..rows).filter(|&r| column.is_valid(r)) {
                misfit(
                    row,
                    format!(
                        "has a value in column `{}`, which the recorded schema lacks",
                        field.name()
                    ),
                );
            }
        }
    }
    let options = CastOptions {
        safe: true,
        ..CastOptions::default()
    };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    for field in target.fields() {
        let Some((_, source_field)) = schema.column_with_name(field.name()) else {
            if !field.is_nullable() {
                for row in 0..rows {
                    misfit(row, format!("lacks the required column `{}`", field.name()));
                }
            }
            columns.push(new_null_array(field.data_type(), rows));
            continue;
        };
        let column = batch.column_by_name(field.name()).expect("column exists");
        if source_field.data_type() == field.data_type() {
            columns.push(column.clone());
            continue;
        }
        let converted = cast_with_options(column, field.data_type(), &options)?;
        let back = cast_with_options(&converted, source_field.data_type(), &options)?;
        let same = not_distinct(column, &back)?;
        for row in (0..rows).filter(|&r| column.is_valid(r)) {
            if converted.is_null(row) || !same.value(row) {
                misfit(
                    row,
                    format!(
                        "column `{}`: the value does not convert exactly from {} to the recorded {}",
                        field.name(),
                        source_field.data_type(),
                        field.data_type()
                    ),
                );
            }
        }
        columns.push(converted);
    }
    let keep: BooleanArray = reasons.iter().map(|r| Some(r.is_none())).collect();
    let whole = RecordBatch::try_new_with_options(
        target.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )?;
    let batch = filter_record_batch(&whole, &keep)?;
    let misfits = reasons
        .into_iter()
        .enumerate()
        .filter_map(|(row, r)| r.map(|r| (row, r)))
        .collect();
    Ok(Conformed { batch, misfits })
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
    fn a_struct_widens_by_a_new_nullable_field_and_by_widened_fields_only() {
        let fields = |f: &[(&str, DataType, bool)]| {
            DataType::Struct(
                f.iter()
                    .map(|(n, t, null)| Field::new(*n, t.clone(), *null))
                    .collect(),
            )
        };
        let old = fields(&[
            ("id", DataType::Int32, true),
            ("qty", DataType::Int32, true),
        ]);
        let grown = fields(&[
            ("id", DataType::Int32, true),
            ("qty", DataType::Int64, true),
            ("colour", DataType::Utf8, true),
        ]);
        assert!(widens(&old, &grown));
        let required = fields(&[
            ("id", DataType::Int32, true),
            ("qty", DataType::Int32, true),
            ("colour", DataType::Utf8, false),
        ]);
        assert!(!widens(&old, &required), "a new field must be nullable");
        let dropped = fields(&[("id", DataType::Int32, true)]);
        assert!(!widens(&old, &dropped), "a field may not go");
        let narrowed = fields(&[("id", DataType::Int32, true), ("qty", DataType::Int8, true)]);
        assert!(!widens(&old, &narrowed));
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
        assert!(check("s", 1, OnChange::Evolve, false, changes.clone()).is_ok());
        let refused = check("s", 1, OnChange::Freeze, false, changes)
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
        let refused = check("orders", 3, OnChange::Evolve, false, diff(&old, &new))
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
    fn any_type_becomes_text_only_when_configured() {
        let old = schema(&[("amount", DataType::Float64, true)]);
        let new = schema(&[("amount", DataType::Utf8, true)]);
        assert!(check("s", 1, OnChange::Evolve, false, diff(&old, &new)).is_err());
        assert!(check("s", 1, OnChange::Evolve, true, diff(&old, &new)).is_ok());
    }

    #[test]
    fn quarantine_keeps_the_rows_that_fit_the_recorded_schema() {
        use arrow::array::{Array, Float64Array, Int64Array, StringArray};
        use std::sync::Arc;
        let target: SchemaRef = Arc::new(schema(&[
            ("sku", DataType::Utf8, true),
            ("amount", DataType::Int64, true),
            ("note", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::new(schema(&[
                ("sku", DataType::Utf8, true),
                ("amount", DataType::Float64, true),
                ("discount", DataType::Float64, true),
            ])),
            vec![
                Arc::new(StringArray::from(vec!["A", "B", "C", "D"])),
                Arc::new(Float64Array::from(vec![
                    Some(10.0),
                    Some(30.5),
                    None,
                    Some(7.0),
                ])),
                Arc::new(Float64Array::from(vec![None, None, None, Some(0.1)])),
            ],
        )
        .unwrap();
        let c = conform(&batch, &target).unwrap();
        assert_eq!(c.batch.schema(), target);
        assert_eq!(c.batch.num_rows(), 2);
        let amount = c
            .batch
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(amount.value(0), 10);
        assert!(amount.is_null(1), "a null converts to null");
        assert_eq!(
            c.batch.column(2).null_count(),
            2,
            "a missing column is null"
        );
        let rows: Vec<usize> = c.misfits.iter().map(|(r, _)| *r).collect();
        assert_eq!(rows, vec![1, 3]);
        assert!(
            c.misfits[0].1.contains("column `amount`"),
            "{}",
            c.misfits[0].1
        );
        assert!(
            c.misfits[1].1.contains("column `discount`"),
            "{}",
            c.misfits[1].1
        );
    }

    #[test]
    fn an_unchanged_schema_passes_any_policy() {
        let s = schema(&[("id", DataType::Int64, false)]);
        assert!(check("s", 1, OnChange::Freeze, false, diff(&s, &s)).is_ok());
    }
}

//! PostgreSQL types as Arrow types, both ways: the catalog's type of a column (after
//! domains are resolved to their base type, enums to text, arrays to lists) as the Arrow
//! type a source reads it into, and an Arrow type as the column type a sink creates.
//!
//! | Postgres | Arrow |
//! |---|---|
//! | bool | Boolean |
//! | int2, int4, int8, oid | Int16, Int32, Int64, Int64 |
//! | float4, float8 | Float32, Float64 |
//! | numeric(p,s), p ≤ 38 | Decimal128(p, s) |
//! | numeric without a precision, or p > 38 | Utf8 (the exact decimal text) |
//! | text, varchar, char(n), name, "char", citext, enums, xml | Utf8 |
//! | json, jsonb | Utf8 (the JSON text) |
//! | bytea | Binary |
//! | date | Date32 |
//! | time | Time64(µs) |
//! | timestamp | Timestamp(µs) |
//! | timestamptz | Timestamp(µs, "+00:00"): UTC, named by its offset so that readers need no time-zone database |
//! | interval | Utf8: an ISO 8601 duration with Postgres's signed parts, `P1Y2M3DT4H5M6.5S` (exact; Parquet has no type for it) |
//! | uuid | FixedSizeBinary(16), extension `arrow.uuid` |
//! | one-dimensional arrays of the above | List |
//! | domains | their base type |
//!
//! numeric without a precision, interval, json and jsonb carry their Postgres type in the
//! field's `postgres.type` metadata, so a Postgres sink creates the same column type.
//!
//! Any other type is an error naming the column and type, or with `unknown_types =
//! "text"` is read as its text form (the column is cast with `::text`).

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, TimeUnit};

use crate::conn::Connection;
use crate::error::PgError;
use crate::sql;

/// The field metadata key naming the Postgres type of a text column that holds a typed
/// value (`numeric`, `interval`, `json`, `jsonb`).
pub const TYPE_METADATA: &str = "postgres.type";

/// The time zone of timestamptz columns: UTC, written as an offset, which every Arrow
/// reader understands without a time-zone database (`"UTC"` needs one in arrow-rs).
pub const UTC: &str = "+00:00";

/// How a value of a column travels in binary COPY, and which Arrow type holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgKind {
    Bool,
    Int2,
    Int4,
    Int8,
    /// `oid` (an unsigned 32-bit number), read into Int64.
    Oid,
    Float4,
    Float8,
    /// numeric with a precision of at most 38: Decimal128.
    Numeric {
        precision: u8,
        scale: i8,
    },
    /// numeric without a declared precision (or above 38): its exact decimal text.
    NumericText,
    /// Text in the wire's UTF-8: text, varchar, bpchar, name, enums, json, xml, citext.
    Text,
    /// `"char"`: one byte.
    Char,
    /// json: the JSON text.
    Json,
    /// jsonb: a version byte (1) and the JSON text.
    Jsonb,
    Bytea,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Interval,
    Uuid,
    /// A one-dimensional array of the element kind; `elem_oid` is the element type the
    /// server expects in binary input (the array type's `typelem`).
    Array {
        elem: Box<PgKind>,
        elem_oid: u32,
    },
}

impl PgKind {
    /// The Arrow type values of this kind are read into.
    pub fn arrow_type(&self) -> DataType {
        match self {
            PgKind::Bool => DataType::Boolean,
            PgKind::Int2 => DataType::Int16,
            PgKind::Int4 => DataType::Int32,
            PgKind::Int8 | PgKind::Oid => DataType::Int64,
            PgKind::Float4 => DataType::Float32,
            PgKind::Float8 => DataType::Float64,
            PgKind::Numeric { precision, scale } => DataType::Decimal128(*precision, *scale),
            PgKind::NumericText | PgKind::Text | PgKind::Char | PgKind::Json | PgKind::Jsonb => {
                DataType::Utf8
            }
            PgKind::Bytea => DataType::Binary,
            PgKind::Date => DataType::Date32,
            PgKind::Time => DataType::Time64(TimeUnit::Microsecond),
            PgKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            PgKind::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            PgKind::Interval => DataType::Utf8,
            PgKind::Uuid => DataType::FixedSizeBinary(16),
            PgKind::Array { elem, .. } => DataType::List(Arc::new(elem.field("item"))),
        }
    }

    /// A nullable field of this kind, with the uuid extension name where it applies, and
    /// for text that holds a typed value (numeric, interval, json, jsonb) the Postgres
    /// type in [`TYPE_METADATA`], so that a Postgres sink creates the same column type.
    pub fn field(&self, name: &str) -> Field {
        let field = Field::new(name, self.arrow_type(), true);
        let (key, value) = match self {
            PgKind::Uuid => ("ARROW:extension:name", "arrow.uuid"),
            PgKind::NumericText => (TYPE_METADATA, "numeric"),
            PgKind::Interval => (TYPE_METADATA, "interval"),
            PgKind::Json => (TYPE_METADATA, "json"),
            PgKind::Jsonb => (TYPE_METADATA, "jsonb"),
            _ => return field,
        };
        field.with_metadata(HashMap::from([(key.to_string(), value.to_string())]))
    }

    /// The kind a value of `field`'s Arrow type is written as, and the column type a sink
    /// creates for it. `None` for Arrow types Postgres has no column type for.
    pub fn for_arrow(field: &Field) -> Option<PgKind> {
        if field.data_type() == &DataType::Utf8 {
            match field.metadata().get(TYPE_METADATA).map(String::as_str) {
                Some("numeric") => return Some(PgKind::NumericText),
                Some("interval") => return Some(PgKind::Interval),
                Some("json") => return Some(PgKind::Json),
                Some("jsonb") => return Some(PgKind::Jsonb),
                _ => {}
            }
        }
        Some(match field.data_type() {
            DataType::Boolean => PgKind::Bool,
            DataType::Int8 | DataType::Int16 | DataType::UInt8 => PgKind::Int2,
            DataType::Int32 | DataType::UInt16 => PgKind::Int4,
            DataType::Int64 | DataType::UInt32 => PgKind::Int8,
            DataType::UInt64 => PgKind::Numeric {
                precision: 20,
                scale: 0,
            },
            DataType::Float16 | DataType::Float32 => PgKind::Float4,
            DataType::Float64 => PgKind::Float8,
            DataType::Decimal128(p, s) if *s >= 0 => PgKind::Numeric {
                precision: *p,
                scale: *s,
            },
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => PgKind::Text,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => PgKind::Bytea,
            DataType::FixedSizeBinary(16)
                if field
                    .metadata()
                    .get("ARROW:extension:name")
                    .map(String::as_str)
                    == Some("arrow.uuid") =>
            {
                PgKind::Uuid
            }
            DataType::FixedSizeBinary(_) => PgKind::Bytea,
            DataType::Date32 | DataType::Date64 => PgKind::Date,
            DataType::Time32(_) | DataType::Time64(_) => PgKind::Time,
            DataType::Timestamp(_, None) => PgKind::Timestamp,
            DataType::Timestamp(_, Some(_)) => PgKind::Timestamptz,
            DataType::List(inner) | DataType::LargeList(inner) => {
                let elem = PgKind::for_arrow(inner)?;
                if matches!(elem, PgKind::Array { .. }) {
                    return None;
                }
                PgKind::Array {
                    elem_oid: elem.oid(),
                    elem: Box::new(elem),
                }
            }
            DataType::Dictionary(_, value) => {
                PgKind::for_arrow(&Field::new(field.name(), (**value).clone(), true))?
            }
            _ => return None,
        })
    }

    /// The column type in DDL, e.g. `numeric(12,2)` or `text[]`.
    pub fn ddl(&self) -> String {
        match self {
            PgKind::Bool => "boolean".into(),
            PgKind::Int2 => "smallint".into(),
            PgKind::Int4 => "integer".into(),
            PgKind::Int8 => "bigint".into(),
            PgKind::Oid => "oid".into(),
            PgKind::Float4 => "real".into(),
            PgKind::Float8 => "double precision".into(),
            PgKind::Numeric { precision, scale } => format!("numeric({precision},{scale})"),
            PgKind::NumericText => "numeric".into(),
            PgKind::Text => "text".into(),
            PgKind::Char => "\"char\"".into(),
            PgKind::Json => "json".into(),
            PgKind::Jsonb => "jsonb".into(),
            PgKind::Bytea => "bytea".into(),
            PgKind::Date => "date".into(),
            PgKind::Time => "time".into(),
            PgKind::Timestamp => "timestamp".into(),
            PgKind::Timestamptz => "timestamptz".into(),
            PgKind::Interval => "interval".into(),
            PgKind::Uuid => "uuid".into(),
            PgKind::Array { elem, .. } => format!("{}[]", elem.ddl()),
        }
    }

    /// The built-in type oid of a value of this kind (for array elements in binary input).
    pub fn oid(&self) -> u32 {
        match self {
            PgKind::Bool => 16,
            PgKind::Bytea => 17,
            PgKind::Char => 18,
            PgKind::Int8 => 20,
            PgKind::Int2 => 21,
            PgKind::Int4 => 23,
            PgKind::Text => 25,
            PgKind::Json => 114,
            PgKind::Oid => 26,
            PgKind::Float4 => 700,
            PgKind::Float8 => 701,
            PgKind::Date => 1082,
            PgKind::Time => 1083,
            PgKind::Timestamp => 1114,
            PgKind::Timestamptz => 1184,
            PgKind::Interval => 1186,
            PgKind::Numeric { .. } | PgKind::NumericText => 1700,
            PgKind::Uuid => 2950,
            PgKind::Jsonb => 3802,
            PgKind::Array { elem, .. } => match elem.oid() {
                16 => 1000,
                17 => 1001,
                18 => 1002,
                20 => 1016,
                21 => 1005,
                23 => 1007,
                25 => 1009,
                26 => 1028,
                700 => 1021,
                701 => 1022,
                1082 => 1182,
                1083 => 1183,
                1114 => 1115,
                1184 => 1185,
                1186 => 1187,
                1700 => 1231,
                2950 => 2951,
                3802 => 3807,
                _ => 0,
            },
        }
    }
}

/// A column as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgColumn {
    pub name: String,
    /// The type as `format_type` writes it, for messages and DDL.
    pub type_name: String,
    pub kind: PgKind,
    /// The type has no Arrow mapping and is read as text (`unknown_types = "text"`).
    pub as_text: bool,
}

impl PgColumn {
    /// The column in a SELECT list: quoted, and cast to text when read as text.
    pub fn select_expr(&self) -> String {
        if self.as_text {
            format!("{}::text", sql::ident(&self.name))
        } else {
            sql::ident(&self.name)
        }
    }
}

/// What to do with a column whose type has no Arrow mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownTypes {
    /// Fail, naming the column and its type.
    #[default]
    Error,
    /// Read the column's text form as Utf8, with a warning.
    Text,
}

/// A column whose type has no Arrow mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmapped {
    pub column: String,
    pub type_name: String,
}

/// The columns of `relation_sql` (a table name or a parenthesised query), with their
/// kinds. Columns of unmapped types are read as text under [`UnknownTypes::Text`] and
/// returned in the second list; under [`UnknownTypes::Error`] the first is an error.
pub fn describe(
    conn: &mut Connection,
    relation_sql: &str,
    unknown: UnknownTypes,
) -> Result<(Vec<PgColumn>, Vec<Unmapped>), DescribeError> {
    let rows = conn
        .query(&format!(
            "SELECT * FROM {relation_sql} AS _ingest_describe LIMIT 0"
        ))
        .map_err(DescribeError::Pg)?;
    let fields = rows.types.clone();
    let mut oids: Vec<u32> = fields.iter().map(|(oid, _)| *oid).collect();
    oids.sort_unstable();
    oids.dedup();
    let catalog = TypeCatalog::load(conn, &oids).map_err(DescribeError::Pg)?;
    let mut columns = Vec::with_capacity(fields.len());
    let mut unmapped = Vec::new();
    for (name, (oid, typmod)) in rows.columns.iter().zip(fields) {
        let type_name = catalog.format(oid, typmod);
        match catalog.kind(oid, typmod) {
            Some(kind) => columns.push(PgColumn {
                name: name.clone(),
                type_name,
                kind,
                as_text: false,
            }),
            None => {
                let missing = Unmapped {
                    column: name.clone(),
                    type_name: type_name.clone(),
                };
                if unknown == UnknownTypes::Error {
                    return Err(DescribeError::Unmapped(missing));
                }
                unmapped.push(missing);
                columns.push(PgColumn {
                    name: name.clone(),
                    type_name,
                    kind: PgKind::Text,
                    as_text: true,
                });
            }
        }
    }
    Ok((columns, unmapped))
}

/// Why [`describe`] failed.
#[derive(Debug)]
pub enum DescribeError {
    Pg(PgError),
    Unmapped(Unmapped),
}

/// Rows of `pg_type` for the types in play, enough to resolve domains, enums and arrays.
struct TypeCatalog {
    types: HashMap<u32, TypeRow>,
}

#[derive(Debug, Clone)]
struct TypeRow {
    name: String,
    /// b base, d domain, e enum, c composite, r range, p pseudo, m multirange.
    typtype: char,
    base: u32,
    base_typmod: i32,
    elem: u32,
    category: char,
}

impl TypeCatalog {
    fn load(conn: &mut Connection, oids: &[u32]) -> Result<TypeCatalog, PgError> {
        let mut types = HashMap::new();
        let mut wanted: Vec<u32> = oids.to_vec();
        // Domains and arrays point at further types; a few rounds resolve any chain.
        for _ in 0..8 {
            wanted.retain(|oid| *oid != 0 && !types.contains_key(oid));
            if wanted.is_empty() {
                break;
            }
            let list: Vec<String> = wanted.iter().map(u32::to_string).collect();
            let rows = conn.query(&format!(
                "SELECT oid, typname, typtype, typbasetype, typtypmod, typelem, typcategory \
                 FROM pg_catalog.pg_type WHERE oid IN ({})",
                list.join(",")
            ))?;
            wanted.clear();
            for row in rows.rows {
                let text = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
                let num = |i: usize| text(i).parse::<i64>().unwrap_or(0);
                let t = TypeRow {
                    name: text(1),
                    typtype: text(2).chars().next().unwrap_or('b'),
                    base: num(3) as u32,
                    base_typmod: num(4) as i32,
                    elem: num(5) as u32,
                    category: text(6).chars().next().unwrap_or('X'),
                };
                wanted.push(t.base);
                wanted.push(t.elem);
                types.insert(num(0) as u32, t);
            }
        }
        Ok(TypeCatalog { types })
    }

    fn kind(&self, oid: u32, typmod: i32) -> Option<PgKind> {
        self.kind_at(oid, typmod, 0)
    }

    fn kind_at(&self, oid: u32, typmod: i32, depth: u8) -> Option<PgKind> {
        if depth > 8 {
            return None;
        }
        if let Some(kind) = builtin(oid, typmod) {
            return Some(kind);
        }
        let row = self.types.get(&oid)?;
        match row.typtype {
            'd' => self.kind_at(row.base, row.base_typmod, depth + 1),
            'e' => Some(PgKind::Text),
            'b' if row.name == "citext" => Some(PgKind::Text),
            'b' if row.category == 'A' && row.elem != 0 => {
                let elem = self.kind_at(row.elem, typmod, depth + 1)?;
                if matches!(elem, PgKind::Array { .. }) {
                    return None;
                }
                Some(PgKind::Array {
                    elem: Box::new(elem),
                    elem_oid: row.elem,
                })
            }
            _ => None,
        }
    }

    fn format(&self, oid: u32, typmod: i32) -> String {
        let name = self
            .types
            .get(&oid)
            .map(|t| t.name.clone())
            .unwrap_or_else(|| format!("type {oid}"));
        if name == "numeric" && typmod >= 4 {
            let (p, s) = numeric_typmod(typmod);
            return format!("numeric({p},{s})");
        }
        name
    }
}

/// The precision and scale in a numeric column's type modifier.
fn numeric_typmod(typmod: i32) -> (i32, i32) {
    let t = typmod - 4;
    ((t >> 16) & 0xffff, t & 0xffff)
}

fn builtin(oid: u32, typmod: i32) -> Option<PgKind> {
    Some(match oid {
        16 => PgKind::Bool,
        17 => PgKind::Bytea,
        18 => PgKind::Char,
        19 | 25 | 142 | 1042 | 1043 => PgKind::Text,
        114 => PgKind::Json,
        20 => PgKind::Int8,
        21 => PgKind::Int2,
        23 => PgKind::Int4,
        26 => PgKind::Oid,
        700 => PgKind::Float4,
        701 => PgKind::Float8,
        1082 => PgKind::Date,
        1083 => PgKind::Time,
        1114 => PgKind::Timestamp,
        1184 => PgKind::Timestamptz,
        1186 => PgKind::Interval,
        1700 => {
            if typmod < 4 {
                PgKind::NumericText
            } else {
                let (p, s) = numeric_typmod(typmod);
                if (1..=38).contains(&p) && (0..=p).contains(&s) {
                    PgKind::Numeric {
                        precision: p as u8,
                        scale: s as i8,
                    }
                } else {
                    PgKind::NumericText
                }
            }
        }
        2950 => PgKind::Uuid,
        3802 => PgKind::Jsonb,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_type_modifiers_give_decimal128_up_to_38_digits() {
        // numeric(12,2): typmod = (12 << 16 | 2) + 4
        assert_eq!(
            builtin(1700, (12 << 16 | 2) + 4),
            Some(PgKind::Numeric {
                precision: 12,
                scale: 2
            })
        );
        assert_eq!(builtin(1700, -1), Some(PgKind::NumericText));
        assert_eq!(builtin(1700, (60 << 16 | 2) + 4), Some(PgKind::NumericText));
    }

    #[test]
    fn arrow_types_map_to_column_types_and_back() {
        for kind in [
            PgKind::Bool,
            PgKind::Int2,
            PgKind::Int4,
            PgKind::Int8,
            PgKind::Float4,
            PgKind::Float8,
            PgKind::Numeric {
                precision: 12,
                scale: 2,
            },
            PgKind::Text,
            PgKind::Bytea,
            PgKind::Date,
            PgKind::Time,
            PgKind::Timestamp,
            PgKind::Timestamptz,
            PgKind::Uuid,
            PgKind::NumericText,
            PgKind::Interval,
            PgKind::Json,
            PgKind::Jsonb,
            PgKind::Array {
                elem: Box::new(PgKind::Int4),
                elem_oid: 23,
            },
        ] {
            assert_eq!(
                PgKind::for_arrow(&kind.field("c")),
                Some(kind.clone()),
                "{kind:?}"
            );
        }
    }
}

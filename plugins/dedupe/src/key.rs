//! Row keys: the key columns of each row encoded without ambiguity, then hashed into 128 bits
//! with XXH3-128 and a fixed seed, so equal keys give equal hashes in every run and build.
//!
//! The encoding is part of the checkpoint format (the window stores hashes of it), so it must
//! never change within a format version. Each value is a tag byte and a payload:
//!
//! | tag | values | payload |
//! |---|---|---|
//! | `0x00` | null, of any type | none |
//! | `0x01` | boolean | one byte, 0 or 1 |
//! | `0x02` | any integer that fits `i64` | `i64` |
//! | `0x03` | an unsigned integer above `i64::MAX` | `u64` |
//! | `0x04` | float16/32/64, widened to `f64`; `-0.0` as `0.0`, one NaN | `f64` bits |
//! | `0x05` | string (`Utf8`, `LargeUtf8`, `Utf8View`) | `u64` byte length, UTF-8 bytes |
//! | `0x06` | binary (`Binary`, `LargeBinary`, `BinaryView`, `FixedSizeBinary`) | `u64` byte length, bytes |
//! | `0x07` | date, time, timestamp, duration | unit byte (below), `i64` |
//! | `0x08` | `Decimal128`, trailing zeros removed (`1.50` = `1.5`) | `i128` digits, `i32` scale |
//! | `0x09` | any other type arrow can display | `u64` byte length, its text |
//!
//! Integers are little-endian. Integers of every width share one tag, and so do the string
//! and binary layouts, so a safe widening of a key column (`int32` → `int64`) keeps its keys.
//! Every value is self-delimiting, so the concatenation over the key columns is unambiguous:
//! `("a", "bc")` and `("ab", "c")` encode, and hash, differently.

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{
    new_empty_array, Array, ArrayRef, ArrowPrimitiveType, BinaryViewArray, BooleanArray,
    FixedSizeBinaryArray, GenericBinaryArray, GenericStringArray, OffsetSizeTrait, PrimitiveArray,
    RecordBatch, StringArray, StringViewArray,
};
use arrow_schema::{DataType, IntervalUnit, Schema, TimeUnit};
use ingest_sdk::text::{can_display, to_text};
use ingest_sdk::{Error, Result};
use twox_hash::XxHash3_128;

/// Seed of the key hash. Changing it forgets every checkpointed window.
const SEED: u64 = 0x6465_6475_7065_0001;

const NULL: u8 = 0x00;
const BOOL: u8 = 0x01;
const INT: u8 = 0x02;
const UINT: u8 = 0x03;
const FLOAT: u8 = 0x04;
const STRING: u8 = 0x05;
const BINARY: u8 = 0x06;
const TEMPORAL: u8 = 0x07;
const DECIMAL: u8 = 0x08;
const TEXT: u8 = 0x09;

/// The one NaN every NaN is hashed as.
const CANONICAL_NAN: u64 = 0x7ff8_0000_0000_0000;

/// The 128-bit hash of an encoded key.
pub fn hash(encoded: &[u8]) -> u128 {
    XxHash3_128::oneshot_with_seed(SEED, encoded)
}

/// The key columns of one stream, resolved against its schema.
#[derive(Debug, Clone)]
pub struct KeyColumns {
    columns: Vec<(usize, String)>,
    /// Identifies the key (its column names, in order) in a checkpoint.
    fingerprint: u64,
}

impl KeyColumns {
    /// Find `key` in `schema`. Fails with `invalid-config` naming every column the schema
    /// lacks (with the columns it has) and every column whose type cannot be a key.
    pub fn resolve(key: &[String], schema: &Schema) -> Result<Self> {
        let mut problems = Vec::new();
        let mut columns = Vec::with_capacity(key.len());
        for name in key {
            let Ok(index) = schema.index_of(name) else {
                problems.push(format!("column `{name}` is not in the stream"));
                continue;
            };
            let data_type = schema.field(index).data_type();
            if encoder(&new_empty_array(data_type)).is_none() {
                problems.push(format!(
                    "column `{name}` has type {data_type}, which cannot be part of a key; key \
                     on columns of plain types (integers, strings, dates, ...)"
                ));
                continue;
            }
            columns.push((index, name.clone()));
        }
        if !problems.is_empty() {
            let have: Vec<String> = schema
                .fields()
                .iter()
                .map(|f| format!("`{}`", f.name()))
                .collect();
            return Err(Error::config(format!(
                "dedupe config `key`: {}; the stream's columns are: {}",
                problems.join("; "),
                have.join(", ")
            )));
        }
        let mut names = Vec::new();
        for name in key {
            names.extend_from_slice(&(name.len() as u64).to_le_bytes());
            names.extend_from_slice(name.as_bytes());
        }
        Ok(KeyColumns {
            columns,
            fingerprint: hash(&names) as u64,
        })
    }

    /// Identifies this key (its column names, in order) in a checkpoint.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Call `each(hash)` for every row of `batch`, in order, once every key column was
    /// found in it. `buffer` is scratch space, reused across calls.
    pub fn hash_rows(
        &self,
        batch: &RecordBatch,
        buffer: &mut Vec<u8>,
        mut each: impl FnMut(u128),
    ) -> Result<()> {
        let mut encoders = Vec::with_capacity(self.columns.len());
        for (index, name) in &self.columns {
            let field = batch.schema_ref().fields().get(*index).cloned();
            match field {
                Some(f) if f.name() == name => {}
                found => {
                    return Err(Error::data(format!(
                        "dedupe: key column `{name}` was column {index} of the stream's schema \
                         at open, but a batch has {} there",
                        found.map_or("no column".to_string(), |f| format!("`{}`", f.name()))
                    )))
                }
            }
            let column = batch.column(*index);
            encoders.push(encoder(column).ok_or_else(|| {
                Error::data(format!(
                    "dedupe: key column `{name}` has type {} in a batch, which cannot be part of \
                     a key",
                    column.data_type()
                ))
            })?);
        }
        for row in 0..batch.num_rows() {
            buffer.clear();
            for e in &encoders {
                e.encode(row, buffer);
            }
            each(hash(buffer));
        }
        Ok(())
    }
}

/// Appends the encoding of one value of a column.
trait Encode {
    fn encode(&self, row: usize, out: &mut Vec<u8>);
}

/// The encoder of `array`'s values, or none when its type cannot be part of a key.
fn encoder(array: &ArrayRef) -> Option<Box<dyn Encode + '_>> {
    use DataType as D;
    Some(match array.data_type() {
        D::Boolean => Box::new(Bools(array.as_boolean())),
        D::Int8 => ints::<Int8Type>(array),
        D::Int16 => ints::<Int16Type>(array),
        D::Int32 => ints::<Int32Type>(array),
        D::Int64 => ints::<Int64Type>(array),
        D::UInt8 => ints::<UInt8Type>(array),
        D::UInt16 => ints::<UInt16Type>(array),
        D::UInt32 => ints::<UInt32Type>(array),
        D::UInt64 => ints::<UInt64Type>(array),
        D::Float16 => Box::new(Floats(array.as_primitive::<Float16Type>(), f64::from)),
        D::Float32 => Box::new(Floats(array.as_primitive::<Float32Type>(), f64::from)),
        D::Float64 => Box::new(Floats(array.as_primitive::<Float64Type>(), |v| v)),
        D::Utf8 => strings::<i32>(array),
        D::LargeUtf8 => strings::<i64>(array),
        D::Utf8View => Box::new(StringViews(array.as_string_view())),
        D::Binary => binaries::<i32>(array),
        D::LargeBinary => binaries::<i64>(array),
        D::BinaryView => Box::new(BinaryViews(array.as_binary_view())),
        D::FixedSizeBinary(_) => Box::new(FixedBinaries(array.as_fixed_size_binary())),
        D::Date32 => temporal::<Date32Type>(array, 0),
        D::Date64 => temporal::<Date64Type>(array, 1),
        D::Timestamp(TimeUnit::Second, _) => temporal::<TimestampSecondType>(array, 2),
        D::Timestamp(TimeUnit::Millisecond, _) => temporal::<TimestampMillisecondType>(array, 3),
        D::Timestamp(TimeUnit::Microsecond, _) => temporal::<TimestampMicrosecondType>(array, 4),
        D::Timestamp(TimeUnit::Nanosecond, _) => temporal::<TimestampNanosecondType>(array, 5),
        D::Time32(TimeUnit::Second) => temporal::<Time32SecondType>(array, 6),
        D::Time32(TimeUnit::Millisecond) => temporal::<Time32MillisecondType>(array, 7),
        D::Time64(TimeUnit::Microsecond) => temporal::<Time64MicrosecondType>(array, 8),
        D::Time64(TimeUnit::Nanosecond) => temporal::<Time64NanosecondType>(array, 9),
        D::Duration(TimeUnit::Second) => temporal::<DurationSecondType>(array, 10),
        D::Duration(TimeUnit::Millisecond) => temporal::<DurationMillisecondType>(array, 11),
        D::Duration(TimeUnit::Microsecond) => temporal::<DurationMicrosecondType>(array, 12),
        D::Duration(TimeUnit::Nanosecond) => temporal::<DurationNanosecondType>(array, 13),
        D::Interval(IntervalUnit::YearMonth) => temporal::<IntervalYearMonthType>(array, 14),
        D::Decimal128(_, scale) => Box::new(Decimals(array.as_primitive(), *scale)),
        other if can_display(other) => Box::new(Text(to_text(array).ok()?)),
        _ => return None,
    })
}

fn ints<T>(array: &ArrayRef) -> Box<dyn Encode + '_>
where
    T: ArrowPrimitiveType,
    T::Native: Into<i128>,
{
    Box::new(Ints(array.as_primitive::<T>()))
}

fn temporal<T>(array: &ArrayRef, unit: u8) -> Box<dyn Encode + '_>
where
    T: ArrowPrimitiveType,
    T::Native: Into<i64>,
{
    Box::new(Temporal(array.as_primitive::<T>(), unit))
}

fn strings<O: OffsetSizeTrait>(array: &ArrayRef) -> Box<dyn Encode + '_> {
    Box::new(Strings(array.as_string::<O>()))
}

fn binaries<O: OffsetSizeTrait>(array: &ArrayRef) -> Box<dyn Encode + '_> {
    Box::new(Binaries(array.as_binary::<O>()))
}

fn put_bytes(tag: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Bools<'a>(&'a BooleanArray);

impl Encode for Bools<'_> {
    fn encode(&self, row: usize, out: &mut Vec<u8>) {
        if self.0.is_null(row) {
            out.push(NULL);
        } else {
            out.extend_from_slice(&[BOOL, self.0.value(row) as u8]);
        }
    }
}

struct Ints<'a, T: ArrowPrimitiveType>(&'a PrimitiveArray<T>);

impl<T: ArrowPrimitiveType> Encode for Ints<'_, T>
where
    T::Native: Into<i128>,
{
    fn encode(&self, row: usize, out: &mut Vec<u8>) {
        if self.0.is_null(row) {
            out.push(NULL);
            return;
        }
        let value: i128 = self.0.value(row).into();
        match i64::try_from(value) {
            Ok(v) => {
                out.push(INT);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Err(_) => {
                // Only a u64 above i64::MAX gets here.
                out.push(UINT);
                out.extend_from_slice(&(value as u64).to_le_bytes());
            }
        }
    }
}

struct Floats<'a, T: ArrowPrimitiveType>(&'a PrimitiveArray<T>, fn(T::Native) -> f64);

impl<T: ArrowPrimitiveType> Encode for Floats<'_, T> {
    fn encode(&self, row: usize, out: &mut Vec<u8>) {
        if self.0.is_null(row) {
            out.push(NULL);
            return;
        }
        let value = (self.1)(self.0.value(row));
        let bits = if value.is_nan() {
            CANONICAL_NAN
        } else if value == 0.0 {
            0
        } else {
            value.to_bits()
        };
        out.push(FLOAT);
        out.extend_from_slice(&bits.to_le_bytes());
    }
}

struct Strings<'a, O: OffsetSizeTrait>(&'a GenericStringArray<O>);

impl<O: OffsetSizeTrait> Encode for Strings<'_, O> {
    fn encode(&self, row: usize, out: &mut Vec<u8>) {
        if self.0.is_null(row) {
            out.push(NULL);
        } else {
            put_bytes(STRING, self.0.value(row).as_bytes(), out);
        }
    }
}

struct StringViews<'a>(&'a StringViewArray);

impl Encode for StringViews<'_> {
    fn encode(&self, row: usize, out: &mut Vec<u8>) {
        if self.0.is_null(row) {
            out.push(NULL);
        } else {
            put_bytes(STRING, self.0.value(row).as_bytes(), out);
        }
    }
}

struct Binaries<'a, O: OffsetSizeTrait>(&'a GenericBinaryArray<O>);

impl<O: OffsetSizeTrait> Encode for Binaries<'_, O> {
    fn encode(&self, row: usize, out: &mut Vec<u8>) {
        if self.0.is_null(row) {
            out.push(NULL);
        } else {
            put_bytes(BINARY, self.0.value(row), out);
        }
    }
}

struct BinaryViews<'a>(&'a BinaryViewArray);

impl Encode for BinaryViews<'_> {
    fn encode(&self, row: usize, out: &mut Vec<u8>) {
        if self.0.is_null(row) {
            out.push(NULL);
        } else {
            put_bytes(BINARY, self.0.value(row), out);
        }
    }
}

struct FixedBinaries<'a>(&'a FixedSizeBinaryArray);

impl Encode for FixedBinaries<'_> {
    fn encode(&self, row: usize, out: &mut Vec<u8>) {
        if self.0.is_null(row) {
            out.push(NULL);
        } else {
            put_bytes(BINARY, self.0.value(row), out);
        }
    }
}

struct Temporal<'a, T: ArrowPrimitiveType>(&'a PrimitiveArray<T>, u8);

impl<T: ArrowPrimitiveType> Encode for Temporal<'_, T>
where
    T::Native: Into<i64>,
{
    fn encode(&self, row: usize, out: &mut Vec<u8>) {
        if self.0.is_null(row) {
            out.push(NULL);
            return;
        }
        let value: i64 = self.0.value(row).into();
        out.extend_from_slice(&[TEMPORAL, self.1]);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

struct Decimals<'a>(&'a PrimitiveArray<Decimal128Type>, i8);

impl Encode for Decimals<'_> {
    fn encode(&self, row: usize, out: &mut Vec<u8>) {
        if self.0.is_null(row) {
            out.push(NULL);
            return;
        }
        let (mut digits, mut scale) = (self.0.value(row), i32::from(self.1));
        if digits == 0 {
            scale = 0;
        }
        while digits != 0 && digits % 10 == 0 {
            digits /= 10;
            scale -= 1;
        }
        out.push(DECIMAL);
        out.extend_from_slice(&digits.to_le_bytes());
        out.extend_from_slice(&scale.to_le_bytes());
    }
}

/// Values of other types, by their text form (as arrow-cast displays them).
struct Text(StringArray);

impl Encode for Text {
    fn encode(&self, row: usize, out: &mut Vec<u8>) {
        if self.0.is_null(row) {
            out.push(NULL);
        } else {
            put_bytes(TEXT, self.0.value(row).as_bytes(), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{
        Date32Array, Decimal128Array, Float32Array, Float64Array, Int32Array, Int64Array,
        LargeStringArray, ListArray, UInt64Array,
    };
    use arrow_schema::Field;
    use std::sync::Arc;

    /// The encoded key of every row of `columns`.
    fn encode_rows(columns: &[ArrayRef]) -> Vec<Vec<u8>> {
        let encoders: Vec<_> = columns
            .iter()
            .map(|c| encoder(c).expect("a key type"))
            .collect();
        let rows = columns.first().map_or(0, |c| c.len());
        (0..rows)
            .map(|row| {
                let mut out = Vec::new();
                for e in &encoders {
                    e.encode(row, &mut out);
                }
                out
            })
            .collect()
    }

    /// The hash of every row of `columns`.
    fn hash_rows(columns: &[ArrayRef]) -> Vec<u128> {
        encode_rows(columns).iter().map(|k| hash(k)).collect()
    }

    fn column(array: impl Array + 'static) -> ArrayRef {
        Arc::new(array)
    }

    #[test]
    fn composite_keys_are_not_ambiguous() {
        let a = column(StringArray::from(vec!["a", "ab", "", "abc"]));
        let b = column(StringArray::from(vec!["bc", "c", "abc", ""]));
        let h = hash_rows(&[a, b]);
        for i in 0..h.len() {
            for j in i + 1..h.len() {
                assert_ne!(h[i], h[j], "rows {i} and {j}");
            }
        }
    }

    #[test]
    fn null_is_distinct_from_every_value_and_equal_to_itself() {
        let s = column(StringArray::from(vec![None, Some(""), None, Some("\0")]));
        let h = hash_rows(&[s]);
        assert_eq!(h[0], h[2]);
        assert_ne!(h[0], h[1]);
        assert_ne!(h[0], h[3]);
        assert_ne!(h[1], h[3]);
        // A null moves between columns: (null, "a") is not ("a", null).
        let x = column(StringArray::from(vec![None, Some("a")]));
        let y = column(StringArray::from(vec![Some("a"), None]));
        let h = hash_rows(&[x, y]);
        assert_ne!(h[0], h[1]);
        let i = column(Int64Array::from(vec![None, Some(0)]));
        let h = hash_rows(&[i]);
        assert_ne!(h[0], h[1]);
    }

    #[test]
    fn integer_widths_and_string_layouts_share_their_keys() {
        let narrow = hash_rows(&[column(Int32Array::from(vec![-5, 0, 7]))]);
        let wide = hash_rows(&[column(Int64Array::from(vec![-5, 0, 7]))]);
        let unsigned = hash_rows(&[column(UInt64Array::from(vec![0, 7, u64::MAX]))]);
        assert_eq!(narrow, wide);
        assert_eq!(unsigned[..2], wide[1..]);
        assert_ne!(
            unsigned[2],
            hash_rows(&[column(Int64Array::from(vec![-1]))])[0]
        );
        let utf8 = hash_rows(&[column(StringArray::from(vec!["x", "y"]))]);
        let large = hash_rows(&[column(LargeStringArray::from(vec!["x", "y"]))]);
        let view = hash_rows(&[column(StringViewArray::from(vec!["x", "y"]))]);
        assert_eq!(utf8, large);
        assert_eq!(utf8, view);
    }

    #[test]
    fn types_are_tagged_so_equal_bytes_of_different_types_differ() {
        let int = hash_rows(&[column(Int64Array::from(vec![1]))]);
        let float = hash_rows(&[column(Float64Array::from(vec![1.0]))]);
        let date = hash_rows(&[column(Date32Array::from(vec![1]))]);
        let text = hash_rows(&[column(StringArray::from(vec!["1"]))]);
        let all = [int[0], float[0], date[0], text[0]];
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                assert_ne!(all[i], all[j]);
            }
        }
    }

    #[test]
    fn floats_and_decimals_are_normalised() {
        let f = hash_rows(&[column(Float64Array::from(vec![
            0.0,
            -0.0,
            f64::NAN,
            -f64::NAN,
            1.5,
        ]))]);
        assert_eq!(f[0], f[1]);
        assert_eq!(f[2], f[3]);
        let narrow = hash_rows(&[column(Float32Array::from(vec![1.5]))]);
        assert_eq!(narrow[0], f[4]);
        let d2 = Decimal128Array::from(vec![150, 0])
            .with_precision_and_scale(10, 2)
            .unwrap();
        let d1 = Decimal128Array::from(vec![15, 0])
            .with_precision_and_scale(10, 1)
            .unwrap();
        assert_eq!(hash_rows(&[column(d2)]), hash_rows(&[column(d1)]));
    }

    #[test]
    fn other_displayable_types_are_keyed_by_their_text() {
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            Some(vec![Some(1), Some(2)]),
            Some(vec![Some(12)]),
            None,
        ]);
        let h = hash_rows(&[column(list)]);
        assert_eq!(h[0], h[1]);
        assert_ne!(h[0], h[2]);
        assert_ne!(h[2], h[3]);
    }

    /// The hash is part of the checkpoint: a restored window only works if the same key
    /// hashes to the same value in every build. If this changes, bump the state version.
    #[test]
    fn the_key_hash_is_pinned() {
        let id = column(Int64Array::from(vec![Some(42), None]));
        let name = column(StringArray::from(vec![Some("Zoë"), Some("")]));
        assert_eq!(
            encode_rows(&[id.clone(), name.clone()])[0],
            [
                &[INT][..],
                &42i64.to_le_bytes(),
                &[STRING],
                &4u64.to_le_bytes(),
                "Zoë".as_bytes()
            ]
            .concat()
        );
        let h = hash_rows(&[id, name]);
        assert_eq!(format!("{:032x}", h[0]), "7531cefd4bc477b1d4a0415dcfd66df2");
        assert_eq!(format!("{:032x}", h[1]), "cce39957c606f186260f1671f16971dd");
    }

    #[test]
    fn missing_columns_are_named_with_the_stream_columns() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(
                "tags",
                DataType::Map(
                    Arc::new(Field::new(
                        "entries",
                        DataType::Struct(
                            vec![
                                Field::new("k", DataType::Utf8, false),
                                Field::new("v", DataType::Null, true),
                            ]
                            .into(),
                        ),
                        false,
                    )),
                    false,
                ),
                true,
            ),
        ]);
        let err = KeyColumns::resolve(&["order_id".into(), "id".into()], &schema).unwrap_err();
        let Error::InvalidConfig(m) = err else {
            panic!("expected invalid-config, got {err:?}")
        };
        assert!(m.contains("column `order_id` is not in the stream"), "{m}");
        assert!(m.contains("the stream's columns are: `id`, `tags`"), "{m}");
        // A nested column is keyed by its text.
        assert!(KeyColumns::resolve(&["id".into(), "tags".into()], &schema).is_ok());
    }

    #[test]
    fn the_fingerprint_follows_the_column_names_and_their_order() {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("b", DataType::Int64, false),
        ]);
        let f = |key: &[&str]| {
            let key: Vec<String> = key.iter().map(|s| s.to_string()).collect();
            KeyColumns::resolve(&key, &schema).unwrap().fingerprint()
        };
        assert_eq!(f(&["a", "b"]), f(&["a", "b"]));
        assert_ne!(f(&["a", "b"]), f(&["b", "a"]));
        assert_ne!(f(&["a"]), f(&["a", "b"]));
    }
}

//! Arrow values as text, the way arrow-cast displays them (what a cast to `Utf8` gives),
//! for plugins that mask, partition or print values of any column type.
//!
//! Uses the display formatter rather than the general `cast` kernel, which would bring every
//! conversion between every pair of types into the component. Timestamps in a named time
//! zone, which this build cannot resolve (arrow's `chrono-tz` feature is off), are rendered
//! at offset `+00:00` (as `...Z`): the instant stays the same.

use std::fmt::Write as _;

use arrow_array::builder::StringBuilder;
use arrow_array::timezone::Tz;
use arrow_array::{make_array, new_empty_array, Array, ArrayRef, StringArray};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::DataType;

/// A 32-byte digest (SHA-256, HMAC-SHA256) as lowercase hex, written into `out`, without
/// allocating.
pub fn hex_into<'a>(digest: &[u8], out: &'a mut [u8; 64]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, &b) in out.chunks_exact_mut(2).zip(digest) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
    // Only ASCII digits were written; the check is a few word-wide compares.
    std::str::from_utf8(out).unwrap_or_default()
}

/// `data_type` as it is turned into text: a named time zone becomes `+00:00`.
pub fn text_safe_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Timestamp(unit, Some(tz)) if tz.parse::<Tz>().is_err() => {
            DataType::Timestamp(*unit, Some("+00:00".into()))
        }
        other => other.clone(),
    }
}

/// `array` relabelled with [`text_safe_type`]: the values are not touched.
pub fn text_safe(array: &ArrayRef) -> Result<ArrayRef, String> {
    let safe = text_safe_type(array.data_type());
    if &safe == array.data_type() {
        return Ok(array.clone());
    }
    let data = array
        .to_data()
        .into_builder()
        .data_type(safe)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(make_array(data))
}

/// Whether values of `data_type` can be turned into text by [`to_text`].
pub fn can_display(data_type: &DataType) -> bool {
    let safe = text_safe_type(data_type);
    ArrayFormatter::try_new(new_empty_array(&safe).as_ref(), &FormatOptions::new()).is_ok()
}

/// `array` as text, value by value, with nulls kept.
pub fn to_text(array: &ArrayRef) -> Result<StringArray, String> {
    let array = text_safe(array)?;
    let formatter = ArrayFormatter::try_new(array.as_ref(), &FormatOptions::new())
        .map_err(|e| e.to_string())?;
    let mut out = StringBuilder::with_capacity(array.len(), array.len() * 16);
    for i in 0..array.len() {
        if array.is_null(i) {
            out.append_null();
        } else {
            write!(out, "{}", formatter.value(i)).map_err(|e| e.to_string())?;
            out.append_value("");
        }
    }
    Ok(out.finish())
}

//! The protocol's primitive types: big-endian integers, strings and byte strings with
//! 16- or 32-bit lengths (-1 for null), arrays with a 32-bit count, and the zig-zag
//! varints of record batches. [`Encoder`] appends to a buffer; [`Decoder`] reads a
//! response and says which field ran short.

use crate::{Error, Result};

/// Appends fields to a request body.
#[derive(Default)]
pub struct Encoder {
    pub buf: Vec<u8>,
}

impl Encoder {
    pub fn i8(&mut self, v: i8) -> &mut Self {
        self.buf.push(v as u8);
        self
    }
    pub fn i16(&mut self, v: i16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.buf.push(v as u8);
        self
    }
    /// A string with a 16-bit length.
    pub fn string(&mut self, s: &str) -> &mut Self {
        self.i16(s.len() as i16);
        self.buf.extend_from_slice(s.as_bytes());
        self
    }
    /// A string that may be null (length -1).
    pub fn nullable_string(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.string(s),
            None => self.i16(-1),
        }
    }
    /// Bytes with a 32-bit length.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.i32(b.len() as i32);
        self.buf.extend_from_slice(b);
        self
    }
    /// An array's count; its items follow.
    pub fn count(&mut self, n: usize) -> &mut Self {
        self.i32(n as i32)
    }
    /// A zig-zag varint (32-bit range).
    pub fn varint(&mut self, v: i32) -> &mut Self {
        self.unsigned_varint(((v << 1) ^ (v >> 31)) as u32 as u64)
    }
    /// A zig-zag varlong.
    pub fn varlong(&mut self, v: i64) -> &mut Self {
        self.unsigned_varint(((v << 1) ^ (v >> 63)) as u64)
    }
    fn unsigned_varint(&mut self, mut v: u64) -> &mut Self {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
        self
    }
}

/// Reads fields from a response, in order.
pub struct Decoder<'a> {
    buf: &'a [u8],
    at: usize,
    /// What is being read, for errors.
    what: &'static str,
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Decoder<'a> {
        Decoder { buf, at: 0, what }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.at
    }

    fn short(&self, field: &str) -> Error {
        Error::Protocol(format!(
            "{} response ends early, at byte {} of {}, reading {field}",
            self.what,
            self.at,
            self.buf.len()
        ))
    }

    pub fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(self.short(field));
        }
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    pub fn i8(&mut self) -> Result<i8> {
        Ok(self.take(1, "an int8")?[0] as i8)
    }
    pub fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(
            self.take(2, "an int16")?.try_into().unwrap(),
        ))
    }
    pub fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(
            self.take(4, "an int32")?.try_into().unwrap(),
        ))
    }
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(
            self.take(8, "an int64")?.try_into().unwrap(),
        ))
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(
            self.take(4, "a uint32")?.try_into().unwrap(),
        ))
    }
    pub fn bool(&mut self) -> Result<bool> {
        Ok(self.i8()? != 0)
    }
    pub fn string(&mut self) -> Result<String> {
        Ok(self.nullable_string()?.unwrap_or_default())
    }
    pub fn nullable_string(&mut self) -> Result<Option<String>> {
        let n = self.i16()?;
        if n < 0 {
            return Ok(None);
        }
        let raw = self.take(n as usize, "a string")?;
        String::from_utf8(raw.to_vec())
            .map(Some)
            .map_err(|_| Error::Protocol(format!("{} response: a string is not UTF-8", self.what)))
    }
    pub fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(None);
        }
        self.take(n as usize, "bytes").map(Some)
    }
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        Ok(self.nullable_bytes()?.unwrap_or_default())
    }
    /// An array's count (a null array counts 0).
    pub fn count(&mut self) -> Result<usize> {
        let n = self.i32()?;
        // Every item takes at least one byte: a larger count is a broken response, not a
        // reason to reserve memory.
        if n > 0 && n as usize > self.remaining() {
            return Err(Error::Protocol(format!(
                "{} response: an array of {n} items in {} bytes",
                self.what,
                self.remaining()
            )));
        }
        Ok(n.max(0) as usize)
    }
    pub fn varint(&mut self) -> Result<i32> {
        let v = self.unsigned_varint(5)?;
        Ok(((v >> 1) as u32 as i32) ^ -((v & 1) as i32))
    }
    pub fn varlong(&mut self) -> Result<i64> {
        let v = self.unsigned_varint(10)?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }
    fn unsigned_varint(&mut self, max_bytes: usize) -> Result<u64> {
        let mut v = 0u64;
        for i in 0..max_bytes {
            let b = self.take(1, "a varint")?[0];
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Error::Protocol(format!(
            "{} response: a varint longer than {max_bytes} bytes",
            self.what
        )))
    }
    /// A varint-length byte string (-1 for null), as in records and their headers.
    pub fn varbytes(&mut self) -> Result<Option<&'a [u8]>> {
        let n = self.varint()?;
        if n < 0 {
            return Ok(None);
        }
        self.take(n as usize, "a record field").map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_with_zigzag() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i32::MAX as i64,
            i64::MIN,
            i64::MAX,
        ] {
            let mut e = Encoder::default();
            e.varlong(v);
            let mut d = Decoder::new(&e.buf, "test");
            assert_eq!(d.varlong().unwrap(), v);
            assert_eq!(d.remaining(), 0);
        }
        let mut e = Encoder::default();
        e.varint(-1).varint(150);
        // Zig-zag: -1 is 1, 150 is 300 = 0xac 0x02.
        assert_eq!(e.buf, [0x01, 0xac, 0x02]);
        let mut d = Decoder::new(&e.buf, "test");
        assert_eq!((d.varint().unwrap(), d.varint().unwrap()), (-1, 150));
    }

    #[test]
    fn a_short_response_names_the_field() {
        let mut d = Decoder::new(&[0, 5, b'a'], "Metadata");
        let e = d.string().unwrap_err().to_string();
        assert!(
            e.contains("Metadata response ends early") && e.contains("a string"),
            "{e}"
        );
        let mut d = Decoder::new(&[0x7f, 0, 0, 0], "Fetch");
        assert!(d.count().unwrap_err().to_string().contains("array of"));
    }
}

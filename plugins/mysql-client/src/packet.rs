//! The protocol's framing and encodings: packets (a 3-byte length and a sequence id before
//! each payload), length-encoded integers and strings, and a reader over a payload.

/// A payload of this length continues in the next packet.
pub const MAX_PAYLOAD: usize = 0xff_ffff;

/// Reads the fields of one payload, front to back.
pub struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

/// A payload ended before a field it should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Short;

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, at: 0 }
    }

    /// Bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        &self.data[self.at..]
    }

    pub fn is_empty(&self) -> bool {
        self.at >= self.data.len()
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Short> {
        if self.data.len() - self.at < n {
            return Err(Short);
        }
        let out = &self.data[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, Short> {
        Ok(self.bytes(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, Short> {
        let b = self.bytes(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u24(&mut self) -> Result<u32, Short> {
        let b = self.bytes(3)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], 0]))
    }

    pub fn u32(&mut self) -> Result<u32, Short> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, Short> {
        let b = self.bytes(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// A length-encoded integer; `None` for the NULL marker (0xfb) of a text row.
    pub fn lenenc(&mut self) -> Result<Option<u64>, Short> {
        Ok(match self.u8()? {
            0xfb => None,
            0xfc => Some(u64::from(self.u16()?)),
            0xfd => Some(u64::from(self.u24()?)),
            0xfe => Some(self.u64()?),
            n => Some(u64::from(n)),
        })
    }

    /// A length-encoded string; `None` for NULL.
    pub fn lenenc_bytes(&mut self) -> Result<Option<&'a [u8]>, Short> {
        match self.lenenc()? {
            None => Ok(None),
            Some(n) => self.bytes(n as usize).map(Some),
        }
    }

    /// A string ended by a NUL byte (or by the payload's end).
    pub fn nul_str(&mut self) -> Result<&'a [u8], Short> {
        let rest = self.rest();
        match rest.iter().position(|b| *b == 0) {
            Some(end) => {
                self.at += end + 1;
                Ok(&rest[..end])
            }
            None => {
                self.at = self.data.len();
                Ok(rest)
            }
        }
    }
}

/// Append a length-encoded integer.
pub fn put_lenenc(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=250 => out.push(n as u8),
        251..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_encoded_integers_read_back_as_written() {
        for n in [
            0,
            250,
            251,
            0xffff,
            0x1_0000,
            0xff_ffff,
            0x100_0000,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_lenenc(&mut out, n);
            assert_eq!(Reader::new(&out).lenenc(), Ok(Some(n)), "{n}");
        }
        assert_eq!(Reader::new(&[0xfb]).lenenc(), Ok(None));
        assert_eq!(Reader::new(&[0xfc, 1]).lenenc(), Err(Short));
    }

    #[test]
    fn strings_end_at_nul_or_at_the_payload_end() {
        let mut r = Reader::new(b"abc\0de");
        assert_eq!(r.nul_str(), Ok(&b"abc"[..]));
        assert_eq!(r.nul_str(), Ok(&b"de"[..]));
        assert!(r.is_empty());
    }
}

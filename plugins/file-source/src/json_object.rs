//! The fast path for the common JSON Lines row: one flat object whose keys are plain
//! strings and whose values are strings, numbers, `true`, `false` or `null`. One pass finds
//! each key and the text of each value as written, strings 16 bytes at a time
//! ([`crate::scan`]), and checks what JSON requires of them: the grammar of numbers, no
//! control character inside a string, only the escapes below, UTF-8 throughout.
//!
//! Anything else — a nested value, a key with an escape, a `\u` escape, anything JSON does
//! not allow — is not read here, and the line goes to serde_json, which reads every line
//! the fast path reads to the same keys and values (the tests check it), and explains the
//! lines JSON does not allow.

use crate::scan::ByteSet;

/// Where one entry lies in its line: the key between its quotes, the value as written (a
/// string with its quotes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub key: (usize, usize),
    pub value: (usize, usize),
    /// The value is a string holding escapes (its text is not the bytes between its quotes).
    pub escaped: bool,
}

/// The line as text, with its entries in `entries` in the order written, when it is a flat
/// object this path reads; `None` otherwise (`entries` is then meaningless).
pub fn scan<'a>(line: &'a [u8], entries: &mut Vec<Entry>) -> Option<&'a str> {
    entries.clear();
    let mut i = skip_space(line, 0);
    if line.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_space(line, i + 1);
    if line.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if line.get(i) != Some(&b'"') {
                return None;
            }
            let (key_end, _) = string_end(line, i + 1, false)?;
            let key = (i + 1, key_end);
            i = skip_space(line, key_end + 1);
            if line.get(i) != Some(&b':') {
                return None;
            }
            i = skip_space(line, i + 1);
            let (value_end, escaped) = value_end(line, i)?;
            entries.push(Entry {
                key,
                value: (i, value_end),
                escaped,
            });
            i = skip_space(line, value_end);
            match line.get(i) {
                Some(b',') => i = skip_space(line, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    if skip_space(line, i) != line.len() {
        return None;
    }
    // Every entry starts and ends at an ASCII byte, so each lies on character boundaries.
    std::str::from_utf8(line).ok()
}

/// The index of the first byte at or after `i` that is not JSON whitespace.
fn skip_space(line: &[u8], mut i: usize) -> usize {
    while matches!(line.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The index of the quote that ends the string whose text starts at `i`, and whether the
/// text holds escapes. With `escapes`, it may hold `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`
/// and `\t`.
fn string_end(line: &[u8], mut i: usize, escapes: bool) -> Option<(usize, bool)> {
    let stops = ByteSet::with_controls([b'"', b'\\', b'"', b'"']);
    let mut escaped = false;
    loop {
        let k = i + stops.find(&line[i..])?;
        if line[k] == b'"' {
            return Some((k, escaped));
        }
        // A backslash, or a control character, which JSON allows in no string.
        match line.get(k + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't')
                if escapes && line[k] == b'\\' =>
            {
                escaped = true;
                i = k + 2;
            }
            _ => return None,
        }
    }
}

/// The index after the value that starts at `i`, and whether it is a string with escapes.
fn value_end(line: &[u8], i: usize) -> Option<(usize, bool)> {
    let literal = |word: &[u8]| {
        line[i..]
            .starts_with(word)
            .then_some((i + word.len(), false))
    };
    match *line.get(i)? {
        b'"' => string_end(line, i + 1, true).map(|(end, escaped)| (end + 1, escaped)),
        b't' => literal(b"true"),
        b'f' => literal(b"false"),
        b'n' => literal(b"null"),
        b'-' | b'0'..=b'9' => number_end(line, i).map(|end| (end, false)),
        _ => None,
    }
}

/// The index after the number that starts at `i`:
/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn number_end(line: &[u8], mut i: usize) -> Option<usize> {
    if line[i] == b'-' {
        i += 1;
    }
    match line.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits_end(line, i),
        _ => return None,
    }
    if line.get(i) == Some(&b'.') {
        let end = digits_end(line, i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if matches!(line.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(line.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let end = digits_end(line, i);
        if end == i {
            return None;
        }
        i = end;
    }
    Some(i)
}

/// The index of the first byte at or after `i` that is not an ASCII digit.
fn digits_end(line: &[u8], mut i: usize) -> usize {
    while line.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use crate::fuzzing::{by_scan, by_serde};

    /// Lines the fast path reads.
    const FLAT: &[&str] = &[
        r#"{}"#,
        r#" { } "#,
        r#"{"order_id": 1, "customer_email": "ana.haddad1@example1.com", "amount": "1559.82", "created_at": "2026-10-18T07:02:33Z", "notes": "deliver to the back door\n(the front one is broken)"}"#,
        r#"{"a":1,"b":-0.5,"c":2e10,"d":-3.25E-7,"e":0,"f":true,"g":false,"h":null}"#,
        "{\"a\" :\t\"x\" ,\r\n \"b\":null}",
        r#"{"s": "quotes \" and \\ and \/ and \b\f\n\r\t", "t": "été, naïve, 東京"}"#,
        r#"{"a": 1, "a": 2}"#,
        r#"{"": ""}"#,
    ];

    /// Lines the fast path leaves to serde_json, which reads them.
    const LEFT_TO_SERDE: &[&str] = &[
        r#"{"nested": {"a": 1}}"#,
        r#"{"list": [1, 2]}"#,
        r#"{"k\"ey": 1}"#,
        r#"{"u": "\u00e9"}"#,
    ];

    /// Lines JSON does not allow.
    const INVALID: &[&str] = &[
        r#"{"a": 01}"#,
        r#"{"a": 1.}"#,
        r#"{"a": .5}"#,
        r#"{"a": 1e}"#,
        r#"{"a": +1}"#,
        r#"{"a": -}"#,
        r#"{"a": tru}"#,
        r#"{"a": truex}"#,
        r#"{"a": 1,}"#,
        r#"{"a" 1}"#,
        r#"{a: 1}"#,
        r#"{"a": "x\qy"}"#,
        "{\"a\": \"tab\tinside\"}",
        r#"{"a": 1} x"#,
        r#"{"a": 1"#,
        r#"[1, 2]"#,
        r#""a""#,
        r#""#,
    ];

    #[test]
    fn the_fast_path_reads_flat_objects_as_serde_json_does() {
        for line in FLAT {
            let scanned = by_scan(line.as_bytes());
            assert!(scanned.is_some(), "the fast path should read {line}");
            assert_eq!(scanned, by_serde(line.as_bytes()), "{line}");
        }
        for line in LEFT_TO_SERDE {
            assert_eq!(by_scan(line.as_bytes()), None, "{line}");
            assert!(by_serde(line.as_bytes()).is_some(), "{line}");
        }
        for line in INVALID {
            assert_eq!(by_scan(line.as_bytes()), None, "{line}");
            assert_eq!(by_serde(line.as_bytes()), None, "{line}");
        }
        assert_eq!(by_scan(b"{\"a\": \"\xff\"}"), None, "not UTF-8");
    }

    #[test]
    fn a_line_the_fast_path_reads_is_read_the_same_by_serde_json_whatever_the_damage() {
        // Every truncation, every deletion of a byte and every insertion of a byte that
        // matters to JSON, of every line above: whatever the fast path reads, serde_json
        // reads the same.
        let inserts: &[&[u8]] = &[
            b"\"",
            b"\\",
            b",",
            b":",
            b"{",
            b"}",
            b"[",
            b"0",
            b"-",
            b".",
            b"e",
            b"+",
            b" ",
            b"\x01",
            b"\x7f",
            b"\xff",
            "é".as_bytes(),
            b"n",
            b"u",
        ];
        let mut checked = 0;
        for line in FLAT.iter().chain(LEFT_TO_SERDE).chain(INVALID) {
            let line = line.as_bytes();
            let mut variants: Vec<Vec<u8>> = Vec::new();
            for at in 0..=line.len() {
                variants.push(line[..at].to_vec());
                if at < line.len() {
                    variants.push([&line[..at], &line[at + 1..]].concat());
                }
                for insert in inserts {
                    variants.push([&line[..at], insert, &line[at..]].concat());
                }
            }
            for variant in variants {
                if let Some(scanned) = by_scan(&variant) {
                    assert_eq!(
                        Some(scanned),
                        by_serde(&variant),
                        "{}",
                        String::from_utf8_lossy(&variant)
                    );
                    checked += 1;
                }
            }
        }
        assert!(
            checked > 1000,
            "only {checked} variants were read by the fast path"
        );
    }
}

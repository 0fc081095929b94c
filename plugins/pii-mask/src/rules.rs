//! The masking rules, applied to whole Arrow string arrays. Pure functions of their input
//! (and, for HMAC, of the key): no host call, so they run and are tested natively.
//!
//! Every rule maps null to null. The hashing rules keep one keyed HMAC state and one hex
//! buffer for the whole array; they are the hot path (millions of rows per run).

use arrow_array::builder::StringBuilder;
use arrow_array::{Array, StringArray};
use hmac::{Hmac, Mac};
use ingest_sdk::text::hex_into;
use sha2::{Digest, Sha256};

/// What `redact` writes when the config gives no `with`.
pub const DEFAULT_REDACTION: &str = "[REDACTED]";

/// Length of a SHA-256 digest in lowercase hex.
const HEX_LEN: usize = 64;

/// A column's masking rule, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Lowercase hex HMAC-SHA256 keyed by the secret named in `key_secret`.
    HmacSha256,
    /// Lowercase hex SHA-256.
    Sha256,
    /// A fixed replacement text.
    Redact(String),
    /// Every character but the last N becomes `*`.
    KeepLast(usize),
    /// Only what follows the last `@`; null when there is no `@`.
    EmailDomain,
    /// Always null.
    Null,
}

/// A rule ready to run: for HMAC, the key is already absorbed.
#[derive(Clone)]
pub enum Masker {
    HmacSha256(Hmac<Sha256>),
    Sha256,
    Redact(String),
    KeepLast(usize),
    EmailDomain,
    Null,
}

impl std::fmt::Debug for Masker {
    // Never print the keyed state: it is derived from the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Masker::HmacSha256(_) => f.write_str("HmacSha256(<keyed>)"),
            Masker::Sha256 => f.write_str("Sha256"),
            Masker::Redact(with) => write!(f, "Redact({with:?})"),
            Masker::KeepLast(n) => write!(f, "KeepLast({n})"),
            Masker::EmailDomain => f.write_str("EmailDomain"),
            Masker::Null => f.write_str("Null"),
        }
    }
}

impl Masker {
    /// Prepare `rule`; `key` is the HMAC key and is only read for [`Rule::HmacSha256`].
    pub fn new(rule: &Rule, key: Option<&[u8]>) -> Result<Self, String> {
        Ok(match rule {
            Rule::HmacSha256 => {
                let key = key.ok_or("hmac-sha256 needs a key")?;
                // HMAC accepts keys of any length; the error case cannot happen but is not
                // worth a panic.
                Masker::HmacSha256(
                    Hmac::<Sha256>::new_from_slice(key).map_err(|e| format!("HMAC key: {e}"))?,
                )
            }
            Rule::Sha256 => Masker::Sha256,
            Rule::Redact(with) => Masker::Redact(with.clone()),
            Rule::KeepLast(n) => Masker::KeepLast(*n),
            Rule::EmailDomain => Masker::EmailDomain,
            Rule::Null => Masker::Null,
        })
    }

    /// Mask every value of `input`. The result has the same length; null stays null.
    pub fn apply(&self, input: &StringArray) -> StringArray {
        let rows = input.len();
        match self {
            Masker::Null => StringArray::new_null(rows),
            Masker::HmacSha256(keyed) => {
                let mut hex = [0u8; HEX_LEN];
                map_values(input, rows * HEX_LEN, |value, out| {
                    let mut mac = keyed.clone();
                    mac.update(value.as_bytes());
                    out.append_value(hex_into(&mac.finalize().into_bytes(), &mut hex));
                })
            }
            Masker::Sha256 => {
                let mut hex = [0u8; HEX_LEN];
                map_values(input, rows * HEX_LEN, |value, out| {
                    out.append_value(hex_into(&Sha256::digest(value.as_bytes()), &mut hex));
                })
            }
            Masker::Redact(with) => map_values(input, rows * with.len(), |_, out| {
                out.append_value(with);
            }),
            Masker::KeepLast(n) => {
                let mut buf = String::new();
                map_values(input, input.value_data().len(), |value, out| {
                    out.append_value(keep_last(value, *n, &mut buf));
                })
            }
            Masker::EmailDomain => {
                map_values(
                    input,
                    input.value_data().len(),
                    |value, out| match email_domain(value) {
                        Some(domain) => out.append_value(domain),
                        None => out.append_null(),
                    },
                )
            }
        }
    }
}

/// Build a string array from `input`, calling `f` for each non-null value (it appends exactly
/// one entry) and appending null for null.
fn map_values(
    input: &StringArray,
    data_capacity: usize,
    mut f: impl FnMut(&str, &mut StringBuilder),
) -> StringArray {
    let mut out = StringBuilder::with_capacity(input.len(), data_capacity);
    if input.null_count() == 0 {
        for i in 0..input.len() {
            f(input.value(i), &mut out);
        }
    } else {
        for value in input.iter() {
            match value {
                Some(value) => f(value, &mut out),
                None => out.append_null(),
            }
        }
    }
    out.finish()
}

/// `value` with every character but the last `n` replaced by `*`, keeping its length in
/// characters. A value of `n` characters or fewer is returned unchanged.
pub fn keep_last<'a>(value: &'a str, n: usize, buf: &'a mut String) -> &'a str {
    let (masked, tail) = if value.is_ascii() {
        if value.len() <= n {
            return value;
        }
        (value.len() - n, value.len() - n)
    } else {
        let chars = value.chars().count();
        if chars <= n {
            return value;
        }
        let masked = chars - n;
        let tail = value
            .char_indices()
            .nth(masked)
            .map_or(value.len(), |(at, _)| at);
        (masked, tail)
    };
    buf.clear();
    buf.extend(std::iter::repeat_n('*', masked));
    buf.push_str(&value[tail..]);
    buf
}

/// What follows the last `@`, or `None` when there is no `@` (the whole value could be the
/// address itself, so it is never passed through).
pub fn email_domain(value: &str) -> Option<&str> {
    value.rfind('@').map(|at| &value[at + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rule: Rule, key: Option<&[u8]>, input: Vec<Option<&str>>) -> Vec<Option<String>> {
        let masker = Masker::new(&rule, key).unwrap();
        let out = masker.apply(&StringArray::from(input));
        out.iter().map(|v| v.map(str::to_string)).collect()
    }

    fn one(rule: Rule, key: Option<&[u8]>, value: &str) -> Option<String> {
        run(rule, key, vec![Some(value)]).remove(0)
    }

    #[test]
    fn hmac_matches_an_independent_computation() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
        mac.update(b"alice@example.com");
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let got = one(Rule::HmacSha256, Some(b"k"), "alice@example.com").unwrap();
        assert_eq!(got, expected);
        assert_eq!(got.len(), 64);
    }

    #[test]
    fn hmac_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            one(
                Rule::HmacSha256,
                Some(b"Jefe"),
                "what do ya want for nothing?"
            )
            .unwrap(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hmac_depends_on_the_key_and_is_deterministic() {
        let input = vec![Some("x"), Some("y"), Some("x")];
        let a = run(Rule::HmacSha256, Some(b"k1"), input.clone());
        let b = run(Rule::HmacSha256, Some(b"k2"), input.clone());
        assert_eq!(a[0], a[2]);
        assert_ne!(a[0], a[1]);
        assert_ne!(a[0], b[0]);
        assert_eq!(a, run(Rule::HmacSha256, Some(b"k1"), input));
    }

    #[test]
    fn sha256_known_vectors() {
        assert_eq!(
            one(Rule::Sha256, None, "abc").unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            one(Rule::Sha256, None, "").unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn keep_last_masks_all_but_the_tail() {
        let keep4 = |v| one(Rule::KeepLast(4), None, v).unwrap();
        assert_eq!(keep4("+1 555-0100"), "*******0100");
        assert_eq!(keep4("0100"), "0100");
        assert_eq!(keep4("100"), "100");
        assert_eq!(keep4(""), "");
        // Characters, not bytes: length in characters is kept.
        assert_eq!(keep4("Zoë Müller"), "******ller");
        assert_eq!(keep4("日本語テキスト"), "***テキスト");
        assert_eq!(one(Rule::KeepLast(0), None, "abc").unwrap(), "***");
        assert_eq!(one(Rule::KeepLast(2), None, "äöü").unwrap(), "*öü");
    }

    #[test]
    fn email_domain_keeps_what_follows_the_last_at() {
        let dom = |v| one(Rule::EmailDomain, None, v);
        assert_eq!(dom("alice@example.com").as_deref(), Some("example.com"));
        assert_eq!(dom("\"a@b\"@corp.example").as_deref(), Some("corp.example"));
        assert_eq!(dom("alice@").as_deref(), Some(""));
        assert_eq!(dom("not an address"), None);
    }

    #[test]
    fn redact_and_null() {
        assert_eq!(
            one(Rule::Redact(DEFAULT_REDACTION.into()), None, "Alice").as_deref(),
            Some("[REDACTED]")
        );
        assert_eq!(
            one(Rule::Redact("XXX".into()), None, "Alice").as_deref(),
            Some("XXX")
        );
        assert_eq!(one(Rule::Null, None, "Alice"), None);
    }

    #[test]
    fn null_in_null_out_for_every_rule() {
        for rule in [
            Rule::HmacSha256,
            Rule::Sha256,
            Rule::Redact("X".into()),
            Rule::KeepLast(4),
            Rule::EmailDomain,
            Rule::Null,
        ] {
            let out = run(rule.clone(), Some(b"k"), vec![None, Some("a@b.c"), None]);
            assert_eq!(out[0], None, "{rule:?}");
            assert_eq!(out[2], None, "{rule:?}");
            assert_eq!(out.len(), 3);
            if rule != Rule::Null {
                assert!(out[1].is_some(), "{rule:?}");
            }
        }
    }

    #[test]
    fn debug_hides_the_key() {
        let m = Masker::new(&Rule::HmacSha256, Some(b"topsecret")).unwrap();
        assert_eq!(format!("{m:?}"), "HmacSha256(<keyed>)");
    }
}

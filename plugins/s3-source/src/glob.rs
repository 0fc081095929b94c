//! Globs over object keys: `*` matches within one `/`-separated segment, `**` across
//! segments, `?` one character other than `/`.

/// Whether `key` (relative to the prefix) matches `pattern`.
pub fn matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[u8], k: &[u8]) -> bool {
        match p.first() {
            None => k.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => {
                // `**/` also matches no directory at all.
                let rest = &p[2..];
                let rest_after_slash = rest.strip_prefix(b"/").unwrap_or(rest);
                (0..=k.len()).any(|i| go(rest, &k[i..]))
                    || (rest.len() != rest_after_slash.len() && go(rest_after_slash, k))
            }
            Some(b'*') => {
                let rest = &p[1..];
                for i in 0..=k.len() {
                    if go(rest, &k[i..]) {
                        return true;
                    }
                    if k.get(i) == Some(&b'/') {
                        break;
                    }
                }
                false
            }
            Some(b'?') => k.first().is_some_and(|c| *c != b'/') && go(&p[1..], &k[1..]),
            Some(c) => k.first() == Some(c) && go(&p[1..], &k[1..]),
        }
    }
    go(pattern.as_bytes(), key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn stars_stay_in_their_segment_and_double_stars_cross() {
        assert!(matches("*.csv", "a.csv"));
        assert!(!matches("*.csv", "2024/a.csv"));
        assert!(matches("**/*.csv", "2024/05/a.csv"));
        assert!(matches("**/*.csv", "a.csv"));
        assert!(matches("2024/*/a?.jsonl", "2024/05/ab.jsonl"));
        assert!(!matches("2024/*/a?.jsonl", "2024/05/06/ab.jsonl"));
        assert!(matches("**", "anything/at/all"));
        assert!(!matches("*.csv", "a.csv.gz"));
        assert!(matches("*.csv*", "a.csv.gz"));
    }
}

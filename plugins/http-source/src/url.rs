//! The little of URLs the source needs: `http(s)://authority/path?query`, query
//! parameters set (percent-encoded) and read back, and references resolved against a page's
//! URL (absolute, `//authority/…`, `/path`, `?query`, `relative/path`). The host checks
//! every URL against the plugin's `http` grant whatever this code makes of it.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `http` or `https`.
    scheme: String,
    authority: String,
    /// Starts with `/`.
    path: String,
    /// Parameters as sent (already encoded), in order.
    query: Vec<(String, String)>,
}

impl Url {
    pub fn parse(text: &str) -> Result<Url, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("give an http:// or https:// URL")?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err("give an http:// or https:// URL".into());
        }
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..end];
        if authority.is_empty() || authority.contains('@') {
            return Err("the URL needs a host (and no user name in it)".into());
        }
        let (path, query) = match rest[end..].split_once('?') {
            Some((p, q)) => (p, q),
            None => (&rest[end..], ""),
        };
        Ok(Url {
            scheme,
            authority: authority.to_string(),
            path: if path.is_empty() {
                "/".into()
            } else {
                path.into()
            },
            query: split_query(query),
        })
    }

    /// Set query parameter `name` to `value` (encoded here), replacing it where present.
    pub fn set_query(&mut self, name: &str, value: &str) {
        let name = encode(name);
        let value = encode(value);
        match self.query.iter_mut().find(|(k, _)| *k == name) {
            Some(pair) => pair.1 = value,
            None => self.query.push((name, value)),
        }
    }

    /// The decoded value of query parameter `name`.
    pub fn query(&self, name: &str) -> Option<String> {
        let name = encode(name);
        self.query
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| decode(v))
    }

    /// Resolve `reference` (from a Link header or a page) against this URL.
    pub fn join(&self, reference: &str) -> Result<Url, String> {
        let reference = reference.trim();
        if reference.contains("://") {
            return Url::parse(reference);
        }
        if let Some(rest) = reference.strip_prefix("//") {
            return Url::parse(&format!("{}://{rest}", self.scheme));
        }
        let origin = format!("{}://{}", self.scheme, self.authority);
        if reference.starts_with('/') {
            return Url::parse(&format!("{origin}{reference}"));
        }
        if let Some(query) = reference.strip_prefix('?') {
            let mut u = self.clone();
            u.query = split_query(query);
            return Ok(u);
        }
        let dir = &self.path[..self.path.rfind('/').map_or(0, |i| i + 1)];
        Url::parse(&format!("{origin}{dir}{reference}"))
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.path)?;
        for (i, (k, v)) in self.query.iter().enumerate() {
            let sep = if i == 0 { '?' } else { '&' };
            if v.is_empty() && !k.is_empty() {
                write!(f, "{sep}{k}=")?;
            } else {
                write!(f, "{sep}{k}={v}")?;
            }
        }
        Ok(())
    }
}

fn split_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

/// Percent-encode all but unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_replaced_or_added_encoded() {
        let mut u = Url::parse("https://API.test:8443/v1/items?a=1&b=two#frag").unwrap();
        u.set_query("b", "2024-05-01T00:00:00+02:00");
        u.set_query("c", "x y");
        assert_eq!(
            u.to_string(),
            "https://API.test:8443/v1/items?a=1&b=2024-05-01T00%3A00%3A00%2B02%3A00&c=x%20y"
        );
        assert_eq!(u.query("b").as_deref(), Some("2024-05-01T00:00:00+02:00"));
        assert_eq!(u.query("z"), None);
    }

    #[test]
    fn references_resolve_against_the_page() {
        let u = Url::parse("http://h:1/api/v1/items?page=2").unwrap();
        let j = |r: &str| u.join(r).unwrap().to_string();
        assert_eq!(j("http://other/x?y=1"), "http://other/x?y=1");
        assert_eq!(j("//h2/p"), "http://h2/p");
        assert_eq!(j("/api/v1/items?page=3"), "http://h:1/api/v1/items?page=3");
        assert_eq!(j("?page=4"), "http://h:1/api/v1/items?page=4");
        assert_eq!(j("more?after=abc"), "http://h:1/api/v1/more?after=abc");
        assert!(Url::parse("ftp://x/").is_err());
        assert!(Url::parse("http://user@h/").is_err());
    }
}

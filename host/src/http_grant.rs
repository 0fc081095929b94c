//! `http` grants: the URL prefixes a plugin may send `wasi:http` requests under, parsed as
//! URLs (with the `url` crate), and the check every outgoing request passes before it
//! leaves the host.
//!
//! A request is allowed when its scheme, host and port equal a grant's (the default port
//! made explicit, the host compared after the parser's normalisation) and its path lies
//! under the grant's path at a segment boundary. Before that, its raw path — as the plugin
//! wrote it, before anything normalises it — is refused if it holds anything a server or a
//! proxy on the way might resolve to another path: a dot segment (`.`, `..`, plain or
//! percent-encoded in any case, also before a `;` parameter), an encoded slash or
//! backslash (`%2f`, `%5c`), a backslash, a NUL, or percent-encoded bytes that are not
//! UTF-8. Userinfo in the authority is refused too.

use std::fmt;

use url::{Host, Url};

/// A URL prefix a plugin may send HTTP requests under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGrant {
    scheme: String,
    host: Host<String>,
    port: u16,
    /// The path without a trailing `/` (`""` for the whole origin).
    path: String,
    /// As written in pipeline.toml, for messages.
    text: String,
}

impl fmt::Display for HttpGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a grant or a request was refused: the rule, for the message.
pub type Refusal = String;

impl HttpGrant {
    /// Parse a grant as written in pipeline.toml: an `http://` or `https://` URL with a
    /// host, and neither userinfo, query, fragment nor anything a raw request would be
    /// refused for in its path.
    pub fn parse(text: &str) -> Result<HttpGrant, Refusal> {
        let trimmed = text.trim();
        // The URL standard reads `http:///x` as host `x`, and `http:\\h` as `http://h`:
        // a grant says its host plainly after `://`.
        let written_host = trimmed
            .split_once("://")
            .is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with(['/', '\\']));
        if !written_host {
            return Err("it does not name its host after `scheme://`".into());
        }
        let url = Url::parse(trimmed).map_err(|e| format!("not a URL ({e})"))?;
        let scheme = url.scheme().to_string();
        if scheme != "http" && scheme != "https" {
            return Err(format!(
                "the scheme is `{scheme}`; only http and https are granted"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("it holds a user name or password; give credentials as a secret".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(
                "it has a query or a fragment; a grant is a scheme, host, port and path".into(),
            );
        }
        let host = url.host().ok_or("it names no host")?.to_owned();
        let port = url
            .port_or_known_default()
            .ok_or("it names no port and its scheme has none by default")?;
        // The path as written: the parser has already resolved dot segments in `url`.
        let raw_path = raw_path(trimmed);
        check_raw_path(raw_path)?;
        Ok(HttpGrant {
            scheme,
            host,
            port,
            path: url.path().trim_end_matches('/').to_string(),
            text: trimmed.to_string(),
        })
    }

    /// Whether a request to `url` (already past [`check_request`]'s raw checks) lies
    /// under this grant.
    fn covers(&self, url: &Url) -> bool {
        let Some(host) = url.host() else {
            return false;
        };
        url.scheme() == self.scheme
            && host.to_owned() == self.host
            && url.port_or_known_default() == Some(self.port)
            && under(url.path(), &self.path)
    }
}

/// Whether `path` is `prefix` or lies below it, at a segment boundary.
fn under(path: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The path of an absolute URL as written: from the first `/` after the authority to the
/// query or fragment.
fn raw_path(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme
        .find(['/', '\\'])
        .map_or("", |i| &after_scheme[i..]);
    path.split(['?', '#']).next().unwrap_or("")
}

/// Refuse a raw path that a server or proxy could resolve to another path.
fn check_raw_path(path: &str) -> Result<(), Refusal> {
    if path.contains('\\') {
        return Err("its path holds a backslash".into());
    }
    for segment in path.split('/') {
        let decoded = percent_decode(segment)?;
        let lowered = decoded.to_ascii_lowercase();
        if lowered.contains('/') || lowered.contains('\\') {
            return Err(format!(
                "its path holds an encoded slash or backslash (`{segment}`)"
            ));
        }
        if decoded.contains('\0') {
            return Err("its path holds an encoded NUL".into());
        }
        // `..;x` is `..` to servers that strip path parameters.
        let name = decoded.split(';').next().unwrap_or("");
        if name == "." || name == ".." {
            return Err(format!("its path holds the dot segment `{segment}`"));
        }
    }
    Ok(())
}

/// `%XX` escapes decoded; the result must be UTF-8.
fn percent_decode(segment: &str) -> Result<String, Refusal> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                None => return Err(format!("its path holds a malformed escape (`{segment}`)")),
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out)
        .map_err(|_| format!("its path holds escaped bytes that are not UTF-8 (`{segment}`)"))
}

/// Check an outgoing request against a plugin's grants: `Ok` when it may leave, else the
/// rule that refuses it. `host_header` is the request's `Host`, if any.
pub fn check_request(
    grants: &[HttpGrant],
    uri: &http::Uri,
    host_header: Option<&http::HeaderValue>,
) -> Result<(), Refusal> {
    let authority = uri.authority().ok_or("the request names no host")?;
    if authority.as_str().contains('@') {
        return Err("the request's authority holds a user name".into());
    }
    check_raw_path(uri.path())?;
    if let Some(host) = host_header {
        if host.as_bytes() != authority.as_str().as_bytes() {
            return Err(format!(
                "its Host header ({}) differs from its URL's authority ({authority})",
                String::from_utf8_lossy(host.as_bytes())
            ));
        }
    }
    let url = Url::parse(&uri.to_string()).map_err(|e| format!("not a URL ({e})"))?;
    if grants.iter().any(|g| g.covers(&url)) {
        Ok(())
    } else {
        Err("not under the plugin's `http` grant".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (grant, request, allowed)
    const CASES: &[(&str, &str, bool)] = &[
        // Scheme, host and port.
        (
            "http://127.0.0.1:8080/api/",
            "http://127.0.0.1:8080/api/orders",
            true,
        ),
        (
            "http://127.0.0.1:8080/api/",
            "https://127.0.0.1:8080/api/orders",
            false,
        ),
        (
            "http://127.0.0.1:8080/api/",
            "http://127.0.0.1:8081/api/orders",
            false,
        ),
        (
            "http://127.0.0.1:8080/api/",
            "http://127.0.0.2:8080/api/orders",
            false,
        ),
        (
            "http://api.example.com/v1/",
            "http://API.Example.COM/v1/x",
            true,
        ),
        (
            "http://API.example.com/v1/",
            "http://api.example.com/v1/x",
            true,
        ),
        (
            "http://api.example.com/v1/",
            "http://api.example.com:80/v1/x",
            true,
        ),
        (
            "http://api.example.com:80/v1/",
            "http://api.example.com/v1/x",
            true,
        ),
        (
            "https://api.example.com/v1/",
            "https://api.example.com:443/v1/x",
            true,
        ),
        (
            "https://api.example.com/v1/",
            "https://api.example.com:8443/v1/x",
            false,
        ),
        (
            "http://api.example.com/v1/",
            "http://api.example.com.evil.org/v1/x",
            false,
        ),
        ("http://[::1]:8080/api/", "http://[::1]:8080/api/x", true),
        (
            "http://[::1]:8080/api/",
            "http://[0:0:0:0:0:0:0:1]:8080/api/x",
            true,
        ),
        ("http://[::1]:8080/api/", "http://[::2]:8080/api/x", false),
        (
            "http://[::1]:8080/api/",
            "http://127.0.0.1:8080/api/x",
            false,
        ),
        // Path at a segment boundary, with or without a trailing slash.
        ("http://h/api/", "http://h/api", true),
        ("http://h/api/", "http://h/api/", true),
        ("http://h/api", "http://h/api/x/y", true),
        ("http://h/api", "http://h/apix", false),
        ("http://h/api/", "http://h/apix/y", false),
        ("http://h/api", "http://h/admin", false),
        ("http://h", "http://h/anything/at/all", true),
        ("http://h/", "http://h/", true),
        // Query and fragment do not move the path.
        ("http://h/api", "http://h/api?page=2", true),
        ("http://h/api", "http://h/api/x?next=/admin", true),
        ("http://h/api", "http://h/apix?x=/api", false),
        // Dot segments, plain or encoded in any case, and their look-alikes.
        ("http://h/api/", "http://h/api/../admin", false),
        ("http://h/api/", "http://h/api/./x", false),
        ("http://h/api/", "http://h/api/%2e%2e/secret", false),
        ("http://h/api/", "http://h/api/%2E%2E/secret", false),
        ("http://h/api/", "http://h/api/.%2e/secret", false),
        ("http://h/api/", "http://h/api/%2e./secret", false),
        ("http://h/api/", "http://h/api/%2e/x", false),
        ("http://h/api/", "http://h/api/..;/admin", false),
        ("http://h/api/", "http://h/api/..", false),
        ("http://h/api/", "http://h/api/...", true),
        ("http://h/api/", "http://h/api/.well-known", true),
        ("http://h/api/", "http://h/api/%c0%ae%c0%ae/admin", false),
        // Encoded slashes and backslashes.
        ("http://h/api/", "http://h/api/..%2fother", false),
        ("http://h/api/", "http://h/api/x%2F..%2F..%2Fadmin", false),
        ("http://h/api/", "http://h/api/x%5cy", false),
        ("http://h/api/", "http://h/api/x%5Cy", false),
        ("http://h/api/", "http://h/api/%00", false),
        ("http://h/api/", "http://h/api/%zz", false),
        ("http://h/api/", "http://h/api/%41BC", true),
    ];

    #[test]
    fn every_request_is_judged_as_the_table_says() {
        let mut wrong = Vec::new();
        for (grant, request, allowed) in CASES {
            let grant = HttpGrant::parse(grant).unwrap_or_else(|e| panic!("{grant}: {e}"));
            let uri: http::Uri = request.parse().unwrap_or_else(|e| panic!("{request}: {e}"));
            let got = check_request(std::slice::from_ref(&grant), &uri, None);
            if got.is_ok() != *allowed {
                wrong.push(format!("{grant} {request}: {got:?}"));
            }
        }
        assert!(wrong.is_empty(), "misjudged:\n{}", wrong.join("\n"));
        assert!(CASES.len() >= 30);
    }

    #[test]
    fn a_request_with_userinfo_or_a_foreign_host_header_is_refused() {
        let grant = HttpGrant::parse("http://127.0.0.1:8080/api/").unwrap();
        let grants = [grant];
        let with_user: http::Uri = "http://user@127.0.0.1:8080/api/x".parse().unwrap();
        let refused = check_request(&grants, &with_user, None).unwrap_err();
        assert!(refused.contains("user name"), "{refused}");
        let uri: http::Uri = "http://127.0.0.1:8080/api/x".parse().unwrap();
        let other = http::HeaderValue::from_static("internal.admin");
        let refused = check_request(&grants, &uri, Some(&other)).unwrap_err();
        assert!(refused.contains("Host header"), "{refused}");
        let same = http::HeaderValue::from_static("127.0.0.1:8080");
        assert!(check_request(&grants, &uri, Some(&same)).is_ok());
    }

    #[test]
    fn grants_that_are_not_plain_url_prefixes_are_refused_with_the_reason() {
        for (text, reason) in [
            ("ftp://h/x", "scheme"),
            ("http://user:pw@h/x", "user name"),
            ("http://h/x?q=1", "query"),
            ("http://h/x#f", "fragment"),
            ("http://h/api/../admin", "dot segment"),
            ("http://h/api/%2e%2e/", "dot segment"),
            ("http://h/a%2fb/", "encoded slash"),
            ("not a url", "does not name its host"),
            ("http:///x", "does not name its host"),
            ("http:\\\\h\\x", "does not name its host"),
        ] {
            let error = HttpGrant::parse(text).unwrap_err();
            assert!(error.contains(reason), "{text}: {error}");
        }
    }
}

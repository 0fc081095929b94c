//! The S3 requests the `s3` plugins send, signed (SigV4, [`sigv4`]) and sent over
//! wasi:http: for the sink, multipart uploads (create, upload part, complete with
//! `If-None-Match: *`, abort, list); for the source, listing objects and reading one as it
//! was listed (`If-Match` its ETag); HEAD of an object and of the bucket. Responses are
//! small XML documents; the few fields read are found by their tags.

pub mod sigv4;

use http_client::{Failure, Method, Request, Response};
use ingest_sdk::{Error, Result};

use crate::sigv4::Credentials;

/// The largest byte range one GET asks for. Object stores answer a long range as fast as a
/// short one once it has started, and some (moto among them) spend time in proportion to
/// the object's size on every ranged GET: fewer, longer ranges.
pub const RANGE_BYTES: u64 = 64 << 20;

/// The largest response body read: a range, or a page of a listing.
const MAX_BODY: usize = RANGE_BYTES as usize + (1 << 20);

/// One bucket at one endpoint.
pub struct Bucket {
    /// `http` or `https`.
    pub scheme: String,
    /// The endpoint's `host[:port]`.
    pub authority: String,
    pub name: String,
    pub region: String,
    pub path_style: bool,
    pub creds: Credentials,
    pub timeout_ms: u64,
}

/// Where a bucket is and how to reach it: the config keys the `s3` source and sink share.
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
pub struct BucketConfig {
    /// The endpoint, `https://s3.<region>.amazonaws.com` or a local server's
    /// `http://host:port`; grant it in the plugin's `http`.
    pub endpoint: String,
    /// The bucket's region (signed into every request).
    #[serde(default)]
    #[schemars(extend("default" = "us-east-1"))]
    pub region: Option<String>,
    pub bucket: String,
    /// Address the bucket in the path (`endpoint/bucket/key`), as local servers want,
    /// instead of in the host name (`bucket.endpoint/key`).
    #[serde(default)]
    pub path_style: Option<bool>,
    /// The granted secret holding the access key id.
    pub access_key_id_secret: String,
    /// The granted secret holding the secret access key.
    pub secret_access_key_secret: String,
    /// The granted secret holding a session token, for temporary credentials.
    #[serde(default)]
    pub session_token_secret: Option<String>,
    /// Milliseconds a request may take to connect, to its first byte, and between bytes.
    #[serde(default)]
    #[schemars(range(min = 100), extend("default" = 60000))]
    pub timeout_ms: Option<u64>,
}

impl BucketConfig {
    /// The keys of this part of a config, for configs that pass the others on.
    pub const KEYS: [&'static str; 8] = [
        "endpoint",
        "region",
        "bucket",
        "path_style",
        "access_key_id_secret",
        "secret_access_key_secret",
        "session_token_secret",
        "timeout_ms",
    ];

    /// What is wrong with it, added to `problems`.
    pub fn check(&self, problems: &mut Vec<String>) {
        if let Err(why) = split_endpoint(&self.endpoint) {
            problems.push(why);
        }
        if let Err(why) = check_bucket_name(&self.bucket) {
            problems.push(why);
        }
        if self.timeout_ms.is_some_and(|t| t < 100) {
            problems.push("`timeout_ms`: give at least 100".into());
        }
    }

    /// The bucket, with the credentials from the granted secrets (after [`Self::check`]).
    pub fn bucket(&self) -> Result<Bucket> {
        let (scheme, authority) = split_endpoint(&self.endpoint).map_err(Error::config)?;
        Ok(Bucket {
            scheme,
            authority,
            name: self.bucket.clone(),
            region: self.region.clone().unwrap_or_else(|| "us-east-1".into()),
            path_style: self.path_style.unwrap_or(false),
            creds: credentials(
                &self.access_key_id_secret,
                &self.secret_access_key_secret,
                self.session_token_secret.as_deref(),
            )?,
            timeout_ms: self.timeout_ms.unwrap_or(60_000),
        })
    }
}

/// `endpoint` as `(scheme, authority)`: `https://host` or `http://host:port`, no path.
pub fn split_endpoint(endpoint: &str) -> std::result::Result<(String, String), String> {
    let bad = || {
        format!(
            "`endpoint = {endpoint:?}`: give `https://host` or `http://host:port`, without a path"
        )
    };
    let (scheme, rest) = endpoint.split_once("://").ok_or_else(bad)?;
    let authority = rest.trim_end_matches('/');
    if !(scheme == "http" || scheme == "https") || authority.is_empty() || authority.contains('/') {
        return Err(bad());
    }
    Ok((scheme.to_string(), authority.to_string()))
}

/// Whether `name` is a valid bucket name; the problem otherwise.
pub fn check_bucket_name(name: &str) -> std::result::Result<(), String> {
    let ok = (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`bucket = {name:?}`: a bucket name is 3 to 63 lowercase letters, digits, `-` and `.`"
        ))
    }
}

/// The credentials held by the granted secrets named.
pub fn credentials(
    access_key_id_secret: &str,
    secret_access_key_secret: &str,
    session_token_secret: Option<&str>,
) -> Result<Credentials> {
    let secret = ingest_sdk::host::secret;
    Ok(Credentials {
        access_key_id: secret(access_key_id_secret)?,
        secret_access_key: secret(secret_access_key_secret)?,
        session_token: session_token_secret.map(secret).transpose()?,
    })
}

/// An object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    /// As S3 gives it, quotes included.
    pub etag: String,
    pub size: u64,
}

/// How a completion ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Completed {
    /// The object was made now.
    Now,
    /// The object was there already (an earlier commit made it).
    Already,
}

/// The text between `<tag>` and `</tag>`, first match after `from`.
fn tag<'a>(xml: &'a str, tag: &str, from: usize) -> Option<(&'a str, usize)> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml[from..].find(&open)? + from + open.len();
    let end = xml[start..].find(&close)? + start;
    Some((&xml[start..end], end + close.len()))
}

/// XML text as written in S3 responses: the five predefined entities and numeric
/// character references (`&#34;` in ETags).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let decoded = match entity {
            "quot" => Some('"'),
            "apos" => Some('\''),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            _ => entity
                .strip_prefix("#x")
                .map(|h| u32::from_str_radix(h, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse::<u32>))
                .and_then(|n| n.ok())
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

impl Bucket {
    /// `s3://bucket/key`, for messages and the names a commit returns.
    pub fn url_of(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.name)
    }

    /// Send a signed request for `key` (`None`: the bucket itself).
    fn send(
        &self,
        method: Method,
        key: Option<&str>,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Response> {
        self.send_into(method, key, query, headers, body, None)
    }

    /// As [`Bucket::send`], a 2xx body written to `into` as it arrives.
    fn send_into(
        &self,
        method: Method,
        key: Option<&str>,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
        into: Option<&mut dyn std::io::Write>,
    ) -> Result<Response> {
        let encoded = key.map(|k| sigv4::uri_encode(k, true)).unwrap_or_default();
        let (host, path) = if self.path_style {
            (
                self.authority.clone(),
                match key {
                    Some(_) => format!("/{}/{encoded}", self.name),
                    None => format!("/{}", self.name),
                },
            )
        } else {
            (
                format!("{}.{}", self.name, self.authority),
                format!("/{encoded}"),
            )
        };
        let query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let method_name = match method {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
        };
        let mut all = headers.clone();
        all.extend(sigv4::sign(
            &sigv4::Signed {
                method: method_name,
                host: &host,
                path: &path,
                query: &query,
                headers: &headers,
                payload: sigv4::UNSIGNED_PAYLOAD,
            },
            &self.creds,
            &self.region,
            now,
        ));
        let query_text = query
            .iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    sigv4::uri_encode(k, false)
                } else {
                    format!(
                        "{}={}",
                        sigv4::uri_encode(k, false),
                        sigv4::uri_encode(v, false)
                    )
                }
            })
            .collect::<Vec<_>>()
            .join("&");
        let url = format!(
            "{}://{host}{path}{}{query_text}",
            self.scheme,
            if query_text.is_empty() { "" } else { "?" }
        );
        let what = match key {
            Some(k) => self.url_of(k),
            None => format!("s3://{}", self.name),
        };
        let request = Request {
            method,
            url,
            headers: all,
            body,
            timeout_ms: self.timeout_ms,
        };
        http_client::send_into(&request, MAX_BODY, into).map_err(|e| match e {
            Failure::Denied(why) => Error::AccessDenied(format!(
                "{what}: {why} (grant the endpoint in the sink's `http`)"
            )),
            Failure::Transport(why) => Error::Transient {
                message: format!("{what}: {why}"),
                retry_after_ms: None,
            },
            Failure::TooLarge(n) => Error::fatal(format!("{what}: a response over {n} bytes")),
        })
    }

    /// The error for a response that is not 2xx: the S3 error code and message.
    fn refused(&self, what: &str, r: &Response) -> Error {
        let body = String::from_utf8_lossy(&r.body);
        let code = tag(&body, "Code", 0).map_or("", |(c, _)| c);
        let message = tag(&body, "Message", 0).map_or("", |(m, _)| m);
        let text = format!(
            "{what}: S3 answered {} {code}{}{message}",
            r.status,
            if message.is_empty() { "" } else { ": " }
        );
        match (r.status, code) {
            (403, _) | (_, "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied") => {
                Error::AccessDenied(format!("{text} (check the credentials' secrets)"))
            }
            (404, "NoSuchBucket") => Error::config(text),
            (429 | 500..=599, _) => Error::Transient {
                message: text,
                retry_after_ms: None,
            },
            _ => Error::fatal(text),
        }
    }

    /// The bucket exists and the credentials may use it.
    pub fn check(&self) -> Result<()> {
        let r = self.send(Method::Head, None, &[], &[], None)?;
        match r.status {
            200..=299 => Ok(()),
            404 => Err(Error::config(format!(
                "s3://{}: no such bucket at {}://{}",
                self.name, self.scheme, self.authority
            ))),
            403 => Err(Error::AccessDenied(format!(
                "s3://{}: S3 answered 403 (check the credentials' secrets)",
                self.name
            ))),
            _ => Err(self.refused(&format!("s3://{}", self.name), &r)),
        }
    }

    /// Start a multipart upload of `key`; its upload id.
    pub fn create_upload(&self, key: &str) -> Result<String> {
        let r = self.send(
            Method::Post,
            Some(key),
            &[("uploads", "")],
            &[],
            Some(Vec::new()),
        )?;
        if !(200..300).contains(&r.status) {
            return Err(self.refused(&self.url_of(key), &r));
        }
        let body = String::from_utf8_lossy(&r.body);
        tag(&body, "UploadId", 0)
            .map(|(id, _)| unescape(id))
            .ok_or_else(|| Error::fatal(format!("{}: no UploadId in: {body}", self.url_of(key))))
    }

    /// Upload part `number` (from 1); its ETag.
    pub fn upload_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        bytes: Vec<u8>,
    ) -> Result<String> {
        let n = number.to_string();
        let r = self.send(
            Method::Put,
            Some(key),
            &[("partNumber", &n), ("uploadId", upload)],
            &[],
            Some(bytes),
        )?;
        if !(200..300).contains(&r.status) {
            return Err(self.refused(&format!("{} part {number}", self.url_of(key)), &r));
        }
        r.header("etag")
            .map(str::to_string)
            .ok_or_else(|| Error::fatal(format!("{} part {number}: no ETag", self.url_of(key))))
    }

    /// Complete an upload, only if `key` does not exist yet.
    pub fn complete(&self, key: &str, upload: &str, etags: &[String]) -> Result<Completed> {
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (i, etag) in etags.iter().enumerate() {
            xml.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                i + 1,
                etag.replace('&', "&amp;").replace('"', "&quot;")
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let r = self.send(
            Method::Post,
            Some(key),
            &[("uploadId", upload)],
            &[("if-none-match", "*")],
            Some(xml.into_bytes()),
        )?;
        let body = String::from_utf8_lossy(&r.body);
        // S3 may answer 200 with an error document for a completion that failed late.
        let error = tag(&body, "Code", 0).map(|(c, _)| c.to_string());
        match (r.status, error.as_deref()) {
            (200..=299, None) => Ok(Completed::Now),
            (412, _) | (_, Some("PreconditionFailed")) => Ok(Completed::Already),
            (404, Some("NoSuchUpload")) | (_, Some("NoSuchUpload")) => {
                // Completed (or aborted) before: the object tells which.
                if self.exists(key)? {
                    Ok(Completed::Already)
                } else {
                    Err(Error::fatal(format!(
                        "{}: upload {upload} is gone and the object was never made; this epoch's rows for it are lost (was the upload aborted outside the pipeline?)",
                        self.url_of(key)
                    )))
                }
            }
            _ => Err(self.refused(&format!("completing {}", self.url_of(key)), &r)),
        }
    }

    /// Abort an upload; one that is gone already is no error.
    pub fn abort(&self, key: &str, upload: &str) -> Result<()> {
        let r = self.send(
            Method::Delete,
            Some(key),
            &[("uploadId", upload)],
            &[],
            None,
        )?;
        if (200..300).contains(&r.status) || r.status == 404 {
            Ok(())
        } else {
            Err(self.refused(&format!("aborting {}", self.url_of(key)), &r))
        }
    }

    /// The uploads in progress under `prefix`: (key, upload id).
    pub fn uploads(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let r = self.send(
            Method::Get,
            None,
            &[("uploads", ""), ("prefix", prefix)],
            &[],
            None,
        )?;
        if !(200..300).contains(&r.status) {
            return Err(self.refused(
                &format!("listing uploads under s3://{}/{prefix}", self.name),
                &r,
            ));
        }
        let body = String::from_utf8_lossy(&r.body);
        let mut out = Vec::new();
        let mut at = 0;
        while let Some((upload, next)) = tag(&body, "Upload", at) {
            if let (Some((key, _)), Some((id, _))) =
                (tag(upload, "Key", 0), tag(upload, "UploadId", 0))
            {
                out.push((unescape(key), unescape(id)));
            }
            at = next;
        }
        Ok(out)
    }

    /// The objects under `prefix`, every page of the listing, in key order.
    pub fn list(&self, prefix: &str) -> Result<Vec<Object>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2"), ("prefix", prefix)];
            if let Some(t) = &token {
                query.push(("continuation-token", t));
            }
            let r = self.send(Method::Get, None, &query, &[], None)?;
            if !(200..300).contains(&r.status) {
                return Err(self.refused(&format!("listing s3://{}/{prefix}", self.name), &r));
            }
            let body = String::from_utf8_lossy(&r.body);
            let mut at = 0;
            while let Some((item, next)) = tag(&body, "Contents", at) {
                let field = |name: &str| tag(item, name, 0).map(|(v, _)| unescape(v));
                if let (Some(key), Some(etag), Some(size)) =
                    (field("Key"), field("ETag"), field("Size"))
                {
                    out.push(Object {
                        key,
                        etag,
                        size: size.parse().unwrap_or(0),
                    });
                }
                at = next;
            }
            match tag(&body, "NextContinuationToken", 0) {
                Some((t, _)) if tag(&body, "IsTruncated", 0).is_some_and(|(v, _)| v == "true") => {
                    token = Some(unescape(t));
                }
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Bytes `start..end` of `key` written to `into` as they arrive, as long as it is
    /// still the version `etag` names (a changed object is a transient error). A response
    /// shorter or longer than the range asked for is a transient error too.
    pub fn read_range_into(
        &self,
        key: &str,
        etag: &str,
        start: u64,
        end: u64,
        into: &mut dyn std::io::Write,
    ) -> Result<()> {
        struct Counted<'a> {
            into: &'a mut dyn std::io::Write,
            n: u64,
        }
        impl std::io::Write for Counted<'_> {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let n = self.into.write(buf)?;
                self.n += n as u64;
                Ok(n)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                self.into.flush()
            }
        }
        let range = format!("bytes={start}-{}", end.saturating_sub(1));
        let mut counted = Counted { into, n: 0 };
        let r = self.send_into(
            Method::Get,
            Some(key),
            &[],
            &[("range", &range), ("if-match", etag)],
            None,
            Some(&mut counted),
        )?;
        match r.status {
            200..=299 if counted.n == end - start => Ok(()),
            200..=299 => Err(Error::Transient {
                message: format!(
                    "{}: asked for bytes {start}..{end}, got {}",
                    self.url_of(key),
                    counted.n
                ),
                retry_after_ms: None,
            }),
            412 => Err(self.changed(key, etag)),
            _ => Err(self.refused(&self.url_of(key), &r)),
        }
    }

    fn changed(&self, key: &str, etag: &str) -> Error {
        Error::Transient {
            message: format!(
                "{}: the object changed while it was read (its ETag is no longer {etag}); it is listed and read again",
                self.url_of(key)
            ),
            retry_after_ms: None,
        }
    }

    /// Whether `key` exists.
    pub fn exists(&self, key: &str) -> Result<bool> {
        let r = self.send(Method::Head, Some(key), &[], &[], None)?;
        match r.status {
            200..=299 => Ok(true),
            404 => Ok(false),
            _ => Err(self.refused(&self.url_of(key), &r)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_found_in_order_and_unescaped() {
        let xml = "<ListMultipartUploadsResult><Upload><Key>a/b&amp;c</Key><UploadId>1</UploadId></Upload><Upload><Key>d</Key><UploadId>2</UploadId></Upload></ListMultipartUploadsResult>";
        let (first, next) = tag(xml, "Upload", 0).unwrap();
        assert_eq!(unescape(tag(first, "Key", 0).unwrap().0), "a/b&c");
        let (second, _) = tag(xml, "Upload", next).unwrap();
        assert_eq!(tag(second, "UploadId", 0).unwrap().0, "2");
        assert!(tag(xml, "Nothing", 0).is_none());
        assert_eq!(
            unescape("&#34;e1&#x22; &lt;&amp;&gt; &bogus; &"),
            "\"e1\" <&> &bogus; &"
        );
    }
}

//! AWS Signature Version 4 for S3 requests, in headers: the canonical request, the string
//! to sign and the derived key, with the payload left unsigned (`UNSIGNED-PAYLOAD`, which
//! S3 accepts), so a part is not hashed twice.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Credentials, resolved from granted secrets.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(..)")
    }
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Percent-encode as SigV4 wants: unreserved characters as they are, `/` kept when
/// `keep_slash` (object keys in paths).
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` for `unix_seconds`.
pub fn amz_date(unix_seconds: u64) -> String {
    let days = (unix_seconds / 86_400) as i64;
    let secs = unix_seconds % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The payload hash this signer sends: S3 accepts requests whose body is not hashed, so a
/// part is not read twice.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// What is signed: the request line, the headers sent (signed too) and the payload's hash.
pub struct Signed<'a> {
    pub method: &'a str,
    pub host: &'a str,
    /// Already encoded.
    pub path: &'a str,
    /// Raw (encoded here).
    pub query: &'a [(String, String)],
    pub headers: &'a [(String, String)],
    /// The payload's SHA-256 in hex, or [`UNSIGNED_PAYLOAD`].
    pub payload: &'a str,
}

/// The headers that sign `request`: `x-amz-date`, `x-amz-content-sha256`, the session
/// token when there is one, and `authorization`.
pub fn sign(
    request: &Signed,
    creds: &Credentials,
    region: &str,
    unix_seconds: u64,
) -> Vec<(String, String)> {
    let Signed {
        method,
        host,
        path,
        query,
        headers,
        payload,
    } = *request;
    let date_time = amz_date(unix_seconds);
    let date = &date_time[..8];
    let mut signed: Vec<(String, String)> = vec![
        ("host".into(), host.to_string()),
        ("x-amz-content-sha256".into(), payload.into()),
        ("x-amz-date".into(), date_time.clone()),
    ];
    if let Some(token) = &creds.session_token {
        signed.push(("x-amz-security-token".into(), token.clone()));
    }
    for (k, v) in headers {
        signed.push((k.to_ascii_lowercase(), v.trim().to_string()));
    }
    signed.sort();
    let mut q: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    q.sort();
    let canonical_query = q
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let canonical_headers: String = signed.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_names = signed
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical = format!(
        "{method}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed_names}\n{payload}"
    );
    let scope = format!("{date}/{region}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date_time}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let key = hmac(
        &hmac(
            &hmac(
                &hmac(format!("AWS4{}", creds.secret_access_key).as_bytes(), date),
                region,
            ),
            "s3",
        ),
        "aws4_request",
    );
    let signature = hex(&hmac(&key, &to_sign));
    let mut out: Vec<(String, String)> = signed
        .into_iter()
        .filter(|(k, _)| k.starts_with("x-amz-"))
        .collect();
    out.push((
        "authorization".into(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_names}, Signature={signature}",
            creds.access_key_id
        ),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(1_369_353_600), "20130524T000000Z");
        assert_eq!(amz_date(1_709_251_199), "20240229T235959Z");
    }

    #[test]
    fn the_signature_matches_the_documented_example() {
        // AWS's S3 SigV4 example "GET Object": a ranged GET of /test.txt on 2013-05-24.
        let creds = Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let h = sign(
            &Signed {
                method: "GET",
                host: "examplebucket.s3.amazonaws.com",
                path: "/test.txt",
                query: &[],
                headers: &[("Range".into(), "bytes=0-9".into())],
                payload: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            },
            &creds,
            "us-east-1",
            1_369_353_600,
        );
        let auth = &h.iter().find(|(k, _)| k == "authorization").unwrap().1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        assert!(h
            .iter()
            .any(|(k, v)| k == "x-amz-date" && v == "20130524T000000Z"));
    }
}

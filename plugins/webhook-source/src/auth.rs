//! Who may deliver: HMAC-SHA256 signatures of the body (GitHub's, Stripe's, or any header
//! holding the hex digest) and bearer tokens, compared in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Signature;
use ingest_sdk::webhook::Request;

/// The value of header `name` (lower case), if the request has it.
pub fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Check `request`'s signature under `key`; the reason when it does not hold.
pub fn verify_signature(scheme: &Signature, key: &[u8], request: &Request) -> Result<(), String> {
    match scheme {
        Signature::Body {
            header: name,
            prefix,
        } => {
            let given = header(request, name).ok_or_else(|| format!("no `{name}` header"))?;
            let given = given
                .strip_prefix(prefix.as_str())
                .ok_or_else(|| format!("the `{name}` header does not start with `{prefix}`"))?;
            let expected = hmac_hex(key, &[&request.body]);
            if equal(
                given.trim().to_ascii_lowercase().as_bytes(),
                expected.as_bytes(),
            ) {
                Ok(())
            } else {
                Err(format!("the `{name}` signature does not match the body"))
            }
        }
        Signature::Stripe { tolerance_secs } => {
            let given = header(request, "stripe-signature")
                .ok_or_else(|| "no `stripe-signature` header".to_string())?;
            let mut time = None;
            let mut signatures = Vec::new();
            for part in given.split(',') {
                match part.trim().split_once('=') {
                    Some(("t", t)) => time = t.parse::<i64>().ok(),
                    Some(("v1", s)) => signatures.push(s.to_ascii_lowercase()),
                    _ => {}
                }
            }
            let time =
                time.ok_or_else(|| "the `stripe-signature` header has no `t=` time".to_string())?;
            let age = request.received_us / 1_000_000 - time;
            if age.unsigned_abs() > *tolerance_secs {
                return Err(format!(
                    "the signature's time is {age} s from now, outside the tolerance of {tolerance_secs} s"
                ));
            }
            let expected = hmac_hex(key, &[time.to_string().as_bytes(), b".", &request.body]);
            if signatures
                .iter()
                .any(|s| equal(s.as_bytes(), expected.as_bytes()))
            {
                Ok(())
            } else {
                Err("no `v1` signature of the `stripe-signature` header matches the body".into())
            }
        }
    }
}

/// Check that `request` carries `Authorization: Bearer <token>`.
pub fn verify_bearer(token: &str, request: &Request) -> Result<(), String> {
    let given =
        header(request, "authorization").ok_or_else(|| "no `authorization` header".to_string())?;
    let given = given
        .strip_prefix("Bearer ")
        .or_else(|| given.strip_prefix("bearer "))
        .ok_or_else(|| "the `authorization` header is not `Bearer <token>`".to_string())?;
    if equal(given.trim().as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err("the bearer token is not the one granted".into())
    }
}

/// The lowercase hex HMAC-SHA256 of the concatenated `parts` under `key`.
pub fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    let mut hex = [0u8; 64];
    ingest_sdk::text::hex_into(&mac.finalize().into_bytes(), &mut hex).to_string()
}

/// Whether `a` equals `b`, in time that depends on their lengths only.
fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)], body: &str) -> Request {
        crate::test_request(headers, body)
    }

    #[test]
    fn github_signatures_are_the_hmac_of_the_body() {
        // The example of GitHub's documentation.
        let key = b"It's a Secret to Everybody";
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let github = Signature::Body {
            header: "x-hub-signature-256".into(),
            prefix: "sha256=".into(),
        };
        let ok = request(&[("x-hub-signature-256", good)], "Hello, World!");
        assert_eq!(verify_signature(&github, key, &ok), Ok(()));
        let tampered = request(&[("x-hub-signature-256", good)], "Hello, World?");
        assert!(verify_signature(&github, key, &tampered)
            .unwrap_err()
            .contains("does not match"));
        let unsigned = request(&[], "Hello, World!");
        assert!(verify_signature(&github, key, &unsigned)
            .unwrap_err()
            .contains("no `x-hub-signature-256`"));
    }

    #[test]
    fn stripe_signatures_cover_the_time_and_expire() {
        let key = b"whsec_test";
        let scheme = Signature::Stripe {
            tolerance_secs: 300,
        };
        let sign = |t: i64| hmac_hex(key, &[t.to_string().as_bytes(), b".", b"{}"]);
        let now = 1_700_000_000;
        let header = format!("t={now},v1=ffff,v1={}", sign(now));
        assert_eq!(
            verify_signature(
                &scheme,
                key,
                &request(&[("stripe-signature", &header)], "{}")
            ),
            Ok(())
        );
        let old = now - 301;
        let stale = format!("t={old},v1={}", sign(old));
        assert!(verify_signature(
            &scheme,
            key,
            &request(&[("stripe-signature", &stale)], "{}")
        )
        .unwrap_err()
        .contains("tolerance"));
        let moved = format!("t={},v1={}", now - 1, sign(now));
        assert!(verify_signature(
            &scheme,
            key,
            &request(&[("stripe-signature", &moved)], "{}")
        )
        .is_err());
    }

    #[test]
    fn bearer_tokens_must_match_exactly() {
        assert_eq!(
            verify_bearer("t0k", &request(&[("authorization", "Bearer t0k")], "")),
            Ok(())
        );
        assert!(verify_bearer("t0k", &request(&[("authorization", "Bearer t0k2")], "")).is_err());
        assert!(verify_bearer("t0k", &request(&[("authorization", "Basic t0k")], "")).is_err());
        assert!(verify_bearer("t0k", &request(&[], "")).is_err());
    }
}

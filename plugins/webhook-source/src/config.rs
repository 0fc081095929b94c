//! The config of the webhook source: what the user wrote ([`RawConfig`], whose JSON Schema
//! is the source's `spec`) and the validated form ([`SourceConfig`]).

use std::collections::BTreeMap;

use ingest_sdk::payload::Payload;
use ingest_sdk::{config, Error, Result};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::rows::OWN_COLUMNS;

/// The config as written in pipeline.toml. The address comes from the stage's `listen`
/// grant, not from here.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "webhook source config")]
pub struct RawConfig {
    /// The paths served, each starting with `/`, e.g. `["/hooks/github"]`. Requests to
    /// other paths are answered 404 by the host.
    pub paths: Vec<String>,
    /// The name of the stream the pipeline sees (default `webhook`).
    #[serde(default)]
    pub stream: Option<String>,
    /// What the body becomes: `binary` (a `payload` column of bytes), `text` (UTF-8) or
    /// `json` (an object whose fields fill the columns `columns` declares). A body that
    /// does not fit is answered 400 with the reason.
    #[serde(default)]
    #[schemars(extend("default" = "json"))]
    pub payload: Option<String>,
    /// For `payload = "json"`: each field to keep and its type (`int64`, `float64`,
    /// `boolean`, `utf8`, `timestamp`). A missing field is null. Without `columns`, a JSON
    /// body is kept whole as text in a `payload` column (after checking it is JSON).
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// The header that carries the sender's delivery id, which fills `_delivery_id` (pair
    /// it with `builtin:dedupe` on `_delivery_id`: a sender retries what was not answered
    /// 2xx). Default: the first of `webhook-id`, `x-github-delivery`, `idempotency-key`,
    /// `x-delivery-id` that a request has.
    #[serde(default)]
    pub delivery_id_header: Option<String>,
    /// Answer 400 to a request without a delivery id.
    #[serde(default)]
    pub require_delivery_id: bool,
    /// Check an HMAC-SHA256 signature of the body.
    #[serde(default)]
    pub signature: Option<RawSignature>,
    /// The name of a granted secret holding a token: requests must carry
    /// `Authorization: Bearer <token>`.
    #[serde(default)]
    pub bearer_secret: Option<String>,
    /// Headers kept, as a JSON object, in `_headers` (names in any case). Signature and
    /// authorization headers are never kept.
    #[serde(default)]
    pub keep_headers: Vec<String>,
    /// The largest body accepted, in bytes (default 1 MiB, at most 64 MiB); larger ones
    /// are answered 413.
    #[serde(default)]
    #[schemars(range(min = 1, max = 67108864), extend("default" = 1048576))]
    pub max_body_bytes: Option<u32>,
    /// Requests held at most, waiting for their epoch to commit (default 10,000). More
    /// are answered 429 with `Retry-After`.
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000000), extend("default" = 10000))]
    pub max_in_flight: Option<u32>,
    /// The status answered once a request's epoch has committed (default 200).
    #[serde(default)]
    #[schemars(range(min = 200, max = 299), extend("default" = 200))]
    pub status: Option<u16>,
}

/// How a signature is checked.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSignature {
    /// `github` (`X-Hub-Signature-256: sha256=<hex>`), `stripe` (`Stripe-Signature:
    /// t=<time>,v1=<hex>` over `<time>.<body>`, within `tolerance_secs`) or `hmac-sha256`
    /// (`header` holds the hex digest of the body, after `prefix`).
    pub style: String,
    /// The name of a granted secret holding the signing key.
    pub secret: String,
    /// For `hmac-sha256`: the header holding the signature.
    #[serde(default)]
    pub header: Option<String>,
    /// For `hmac-sha256`: text before the hex digest in the header, e.g. `sha256=`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// For `stripe`: how old a signature's time may be, in seconds (default 300).
    #[serde(default)]
    pub tolerance_secs: Option<u64>,
}

/// A signature scheme, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// The hex HMAC of the body in `header`, after `prefix`.
    Body { header: String, prefix: String },
    /// Stripe's: `t=<unix time>,v1=<hex HMAC of "<t>.<body>">` in `stripe-signature`.
    Stripe { tolerance_secs: u64 },
}

/// The validated config.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub paths: Vec<String>,
    pub stream: String,
    pub payload: Payload,
    /// A JSON body kept whole as text (`payload = "json"` without `columns`).
    pub json_text: bool,
    pub delivery_id_headers: Vec<String>,
    pub require_delivery_id: bool,
    /// The signature scheme and the name of its key's secret.
    pub signature: Option<(Signature, String)>,
    pub bearer_secret: Option<String>,
    pub keep_headers: Vec<String>,
    pub max_body_bytes: u32,
    pub max_in_flight: u32,
    pub status: u16,
}

/// Headers whose values are credentials: never copied into rows.
pub const SECRET_HEADERS: [&str; 6] = [
    "authorization",
    "x-hub-signature",
    "x-hub-signature-256",
    "stripe-signature",
    "webhook-signature",
    "cookie",
];

impl SourceConfig {
    /// Parse and check the config, reporting every problem at once.
    pub fn parse(json: &str) -> Result<SourceConfig> {
        let raw: RawConfig = config::parse(json)?;
        let mut problems = Vec::new();
        if raw.paths.is_empty() {
            problems
                .push("`paths` is empty; give the paths to serve, e.g. [\"/hooks/github\"]".into());
        }
        for path in &raw.paths {
            if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
                problems.push(format!(
                    "`paths`: {path:?} is not a path; write e.g. \"/hooks/github\""
                ));
            }
        }
        let stream = raw.stream.clone().unwrap_or_else(|| "webhook".into());
        if stream.is_empty() {
            problems.push("`stream` is empty".into());
        }
        // JSON is what webhooks send; without declared columns the body is kept whole.
        let json_text =
            raw.payload.as_deref().unwrap_or("json") == "json" && raw.columns.is_empty();
        let payload = if json_text {
            Payload::Text
        } else {
            Payload::from_config(
                Some(raw.payload.as_deref().unwrap_or("json")),
                &raw.columns,
                &OWN_COLUMNS,
                &mut problems,
            )
        };
        let signature = match &raw.signature {
            None => None,
            Some(s) => {
                let scheme = match s.style.as_str() {
                    "github" => Some(Signature::Body {
                        header: "x-hub-signature-256".into(),
                        prefix: "sha256=".into(),
                    }),
                    "stripe" => Some(Signature::Stripe {
                        tolerance_secs: s.tolerance_secs.unwrap_or(300),
                    }),
                    "hmac-sha256" => match &s.header {
                        Some(header) => Some(Signature::Body {
                            header: header.to_ascii_lowercase(),
                            prefix: s.prefix.clone().unwrap_or_default(),
                        }),
                        None => {
                            problems.push("`signature.style = \"hmac-sha256\"` needs `signature.header`, the header holding the digest".into());
                            None
                        }
                    },
                    other => {
                        problems.push(format!(
                            "`signature.style = {other:?}`; accepted: github, stripe, hmac-sha256"
                        ));
                        None
                    }
                };
                if s.style != "hmac-sha256" && (s.header.is_some() || s.prefix.is_some()) {
                    problems.push(format!(
                        "`signature.header` and `signature.prefix` are for style \"hmac-sha256\"; style {:?} fixes them",
                        s.style
                    ));
                }
                if s.style != "stripe" && s.tolerance_secs.is_some() {
                    problems.push("`signature.tolerance_secs` is for style \"stripe\"".into());
                }
                scheme.map(|scheme| (scheme, s.secret.clone()))
            }
        };
        let max_body_bytes = raw.max_body_bytes.unwrap_or(1 << 20);
        if max_body_bytes == 0 || max_body_bytes > 64 << 20 {
            problems.push(format!(
                "`max_body_bytes = {max_body_bytes}`: give 1 to 67108864 (64 MiB)"
            ));
        }
        let max_in_flight = raw.max_in_flight.unwrap_or(10_000);
        if max_in_flight == 0 || max_in_flight > 1_000_000 {
            problems.push(format!(
                "`max_in_flight = {max_in_flight}`: give 1 to 1000000"
            ));
        }
        let status = raw.status.unwrap_or(200);
        if !(200..=299).contains(&status) {
            problems.push(format!("`status = {status}`: give a 2xx status"));
        }
        let keep_headers: Vec<String> = raw
            .keep_headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        for h in &keep_headers {
            if SECRET_HEADERS.contains(&h.as_str()) {
                problems.push(format!(
                    "`keep_headers`: `{h}` carries credentials and is never kept"
                ));
            }
        }
        let delivery_id_headers = match &raw.delivery_id_header {
            Some(h) => vec![h.to_ascii_lowercase()],
            None => [
                "webhook-id",
                "x-github-delivery",
                "idempotency-key",
                "x-delivery-id",
            ]
            .map(String::from)
            .to_vec(),
        };
        if !problems.is_empty() {
            return Err(Error::config(problems.join("; ")));
        }
        Ok(SourceConfig {
            paths: raw.paths,
            stream,
            payload,
            json_text,
            delivery_id_headers,
            require_delivery_id: raw.require_delivery_id,
            signature,
            bearer_secret: raw.bearer_secret,
            keep_headers,
            max_body_bytes,
            max_in_flight,
            status,
        })
    }
}

/// The JSON Schema of the config.
pub fn spec() -> String {
    config::spec::<RawConfig>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(json: &str) -> String {
        match SourceConfig::parse(json) {
            Err(Error::InvalidConfig(m)) => m,
            other => panic!("expected invalid-config, got {other:?}"),
        }
    }

    #[test]
    fn defaults_keep_json_bodies_whole() {
        let c = SourceConfig::parse(r#"{"paths":["/hooks"]}"#).unwrap();
        assert_eq!(c.stream, "webhook");
        assert!(c.json_text);
        assert_eq!(c.payload, Payload::Text);
        assert_eq!(
            (c.max_body_bytes, c.max_in_flight, c.status),
            (1 << 20, 10_000, 200)
        );
        assert_eq!(c.delivery_id_headers[0], "webhook-id");
        assert!(c.signature.is_none());
    }

    #[test]
    fn signature_styles_fix_their_headers() {
        let c = SourceConfig::parse(
            r#"{"paths":["/gh"],"signature":{"style":"github","secret":"gh"}}"#,
        )
        .unwrap();
        assert_eq!(
            c.signature,
            Some((
                Signature::Body {
                    header: "x-hub-signature-256".into(),
                    prefix: "sha256=".into()
                },
                "gh".into()
            ))
        );
        let c = SourceConfig::parse(
            r#"{"paths":["/s"],"signature":{"style":"hmac-sha256","secret":"k","header":"X-Sig"}}"#,
        )
        .unwrap();
        assert!(
            matches!(c.signature, Some((Signature::Body { ref header, .. }, _)) if header == "x-sig")
        );
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let m = problems(
            r#"{"paths":["hooks"],"payload":"json","columns":{"id":"int32"},"signature":{"style":"md5","secret":"s"},"max_body_bytes":0,"status":404,"keep_headers":["Authorization"]}"#,
        );
        for part in [
            "\"hooks\" is not a path",
            "`columns.id = \"int32\"`",
            "`signature.style = \"md5\"`",
            "max_body_bytes = 0",
            "`status = 404`",
            "`authorization` carries credentials",
        ] {
            assert!(m.contains(part), "{part} missing from: {m}");
        }
        assert!(
            problems(r#"{"paths":["/a"],"signature":{"style":"hmac-sha256","secret":"s"}}"#)
                .contains("needs `signature.header`")
        );
        assert!(problems(r#"{"paths":["/a"],"listen":"x"}"#).contains("listen"));
    }
}

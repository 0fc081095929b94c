//! The built-in `webhook` source: HTTP requests the host receives for the pipeline, at the
//! address of the stage's `listen` grant, on the paths the config lists.
//!
//! - **Checks.** A request whose signature (`signature`: GitHub's, Stripe's or a plain
//!   HMAC-SHA256 header) or bearer token (`bearer_secret`) does not hold is answered 401;
//!   a body that does not parse, 400 with the reason. Neither becomes a row.
//! - **Answers.** An accepted request is answered 2xx (`status`) only once the epoch that
//!   holds its row has committed: in `ack`. A sender whose request was not answered 2xx
//!   (the run stopped, the host was killed) sends it again; `builtin:dedupe` on
//!   `_delivery_id` then keeps one copy of what was committed twice.
//! - **Position.** The id of the last request taken (`{"id":N}`); it only orders answers.
//!   There is nothing to resume: what was not answered is with its sender.
//! - **Backpressure.** The host holds at most `max_in_flight` requests and answers the
//!   rest 429 with `Retry-After`; the source takes requests only when the pipeline has room.

pub mod auth;
pub mod config;
pub mod rows;

use std::time::Duration;

use ingest_sdk::host::{self, Level};
use ingest_sdk::source::{Chunk, Reader, Source, Split, StreamInfo, SyncMode};
use ingest_sdk::webhook::{Endpoint, Limits, Request};
use ingest_sdk::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::config::SourceConfig;
use crate::rows::Rows;

/// How long a `next` waits for the first request when none is waiting. Short, so that the
/// host closes epochs on time and answers arrive soon after a commit.
const WAIT: Duration = Duration::from_millis(20);
/// Requests taken per `next` at most.
const MAX_TAKE: usize = 10_000;

/// The last request taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookPosition {
    pub id: u64,
}

pub struct WebhookSource;

/// The value of granted secret `name`, named in the error when it is not granted.
fn secret(name: &str, what: &str) -> Result<String> {
    host::secret(name).map_err(|e| match e {
        Error::AccessDenied(m) => Error::AccessDenied(format!("{what}: {m}")),
        other => other,
    })
}

fn check_name(cfg: &SourceConfig, stream: &str) -> Result<()> {
    ingest_sdk::source::check_stream("webhook", &cfg.stream, stream)
}

impl Source for WebhookSource {
    type Reader = WebhookReader;

    fn spec() -> String {
        config::spec()
    }

    fn check(config: &str) -> Result<()> {
        let cfg = SourceConfig::parse(config)?;
        if let Some((_, name)) = &cfg.signature {
            secret(name, "the signature key")?;
        }
        if let Some(name) = &cfg.bearer_secret {
            secret(name, "the bearer token")?;
        }
        Ok(())
    }

    fn discover(config: &str) -> Result<Vec<StreamInfo>> {
        let cfg = SourceConfig::parse(config)?;
        Ok(vec![StreamInfo {
            name: cfg.stream.clone(),
            schema: rows::schema(&cfg),
            primary_key: Vec::new(),
            cursor_field: None,
            sync_modes: vec![SyncMode::Incremental],
        }])
    }

    fn splits(config: &str, stream: &str) -> Result<Vec<Split>> {
        let cfg = SourceConfig::parse(config)?;
        check_name(&cfg, stream)?;
        Ok(vec![Split {
            id: cfg.paths.join(","),
            descriptor: Vec::new(),
        }])
    }

    fn open(
        config: &str,
        stream: &str,
        _split: Split,
        position: Option<Vec<u8>>,
    ) -> Result<WebhookReader> {
        let cfg = SourceConfig::parse(config)?;
        check_name(&cfg, stream)?;
        // Only the order of ids matters; an unreadable position starts from nothing.
        let at = position
            .and_then(|p| serde_json::from_slice::<WebhookPosition>(&p).ok())
            .unwrap_or_default();
        let key = match &cfg.signature {
            Some((_, name)) => Some(secret(name, "the signature key")?.into_bytes()),
            None => None,
        };
        let token = match &cfg.bearer_secret {
            Some(name) => Some(secret(name, "the bearer token")?),
            None => None,
        };
        let endpoint = Endpoint::open(
            &cfg.paths,
            Limits {
                max_body_bytes: cfg.max_body_bytes,
                max_in_flight: cfg.max_in_flight,
            },
        )?;
        Ok(WebhookReader {
            rows: Rows::new(&cfg),
            cfg,
            endpoint,
            key,
            token,
            at,
        })
    }
}

/// Takes the requests of the source's paths.
pub struct WebhookReader {
    cfg: SourceConfig,
    endpoint: Endpoint,
    rows: Rows,
    key: Option<Vec<u8>>,
    token: Option<String>,
    at: WebhookPosition,
}

impl WebhookReader {
    /// Why `request` is refused, with the status to answer, if it is.
    fn refuse(&mut self, request: &Request) -> Option<(u16, String)> {
        if let (Some((scheme, _)), Some(key)) = (&self.cfg.signature, &self.key) {
            if let Err(why) = auth::verify_signature(scheme, key, request) {
                return Some((401, why));
            }
        }
        if let Some(token) = &self.token {
            if let Err(why) = auth::verify_bearer(token, request) {
                return Some((401, why));
            }
        }
        match self.rows.push(&self.cfg, request) {
            Ok(()) => None,
            Err(why) => Some((400, why)),
        }
    }
}

impl Reader for WebhookReader {
    fn next(&mut self, max_rows: usize) -> Result<Option<Chunk>> {
        let requests = self.endpoint.take(max_rows.clamp(1, MAX_TAKE) as u32, WAIT);
        for request in &requests {
            self.at.id = request.id;
            if let Some((status, why)) = self.refuse(request) {
                let level = if status == 401 {
                    Level::Warn
                } else {
                    Level::Debug
                };
                host::log(
                    level,
                    &format!(
                        "{} {}: answered {status}: {why}",
                        request.method, request.path
                    ),
                );
                self.endpoint.reject(request.id, status, &why);
            }
        }
        Ok(Some(Chunk {
            batch: self.rows.finish()?,
            position: serde_json::to_vec(&self.at).expect("a position serializes"),
            rejects: Vec::new(),
        }))
    }

    fn ack(&mut self, position: &[u8]) {
        if let Ok(at) = serde_json::from_slice::<WebhookPosition>(position) {
            self.endpoint.accept(at.id, self.cfg.status);
        }
    }
}

/// A request as the host would hand it over, for tests.
#[cfg(test)]
pub(crate) fn test_request(headers: &[(&str, &str)], body: &str) -> Request {
    Request {
        id: 1,
        method: "POST".into(),
        path: "/hooks".into(),
        query: "source=test".into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.as_bytes().to_vec(),
        received_us: 1_700_000_000_000_000,
    }
}

// Exported only in the component: natively (unit tests) the export names cannot link.
#[cfg(target_family = "wasm")]
ingest_sdk::export_source!(WebhookSource);
